-- Clipper schema, version 7: live migration of instances between nodes.
-- move_to is the node an instance is moving to (its vCPUs, memory and disk
-- are held there for the move), move_addr where that node's VM waits for the
-- instance's state, and drop_node a node that must delete its copy of the
-- instance (the source after a move, or the destination of one that failed).
ALTER TABLE instances ADD COLUMN move_to TEXT NOT NULL DEFAULT '';
ALTER TABLE instances ADD COLUMN move_addr TEXT NOT NULL DEFAULT '';
ALTER TABLE instances ADD COLUMN drop_node TEXT NOT NULL DEFAULT '';
CREATE INDEX instances_move_to ON instances(move_to) WHERE move_to <> '';
CREATE INDEX instances_drop_node ON instances(drop_node) WHERE drop_node <> '';

CREATE TRIGGER instances_move_usage AFTER UPDATE OF move_to ON instances
WHEN OLD.move_to IS NOT NEW.move_to BEGIN
    UPDATE nodes SET used_vcpus = used_vcpus - OLD.vcpus, used_memory_mib = used_memory_mib - OLD.memory_mib,
        used_disk_mib = used_disk_mib - OLD.disk_gib * 1024
    WHERE id = OLD.move_to;
    UPDATE nodes SET used_vcpus = used_vcpus + NEW.vcpus, used_memory_mib = used_memory_mib + NEW.memory_mib,
        used_disk_mib = used_disk_mib + NEW.disk_gib * 1024
    WHERE id = NEW.move_to;
END;
