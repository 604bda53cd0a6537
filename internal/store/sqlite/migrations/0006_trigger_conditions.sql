-- Clipper schema, version 6: the triggers that keep node usage, node_vpcs
-- and node_groups run only when an update changes what they count. An
-- UPDATE that names a column fires its triggers even when the value stays,
-- and UpdateInstance names them all: every state change a node reported
-- (pending to running) ran eight statements that took away and gave back
-- the same numbers. The bodies are those of versions 1 and 2.

DROP TRIGGER instances_usage_update;
CREATE TRIGGER instances_usage_update AFTER UPDATE OF state, node_id, vcpus, memory_mib, disk_gib ON instances
WHEN OLD.node_id IS NOT NEW.node_id OR OLD.vcpus IS NOT NEW.vcpus OR OLD.memory_mib IS NOT NEW.memory_mib
    OR OLD.disk_gib IS NOT NEW.disk_gib
    OR (OLD.state IN ('stopped', 'terminated')) IS NOT (NEW.state IN ('stopped', 'terminated'))
    OR (OLD.state = 'terminated') IS NOT (NEW.state = 'terminated') BEGIN
    UPDATE nodes SET
        used_vcpus      = used_vcpus      - (CASE WHEN OLD.state IN ('stopped', 'terminated') THEN 0 ELSE OLD.vcpus END),
        used_memory_mib = used_memory_mib - (CASE WHEN OLD.state IN ('stopped', 'terminated') THEN 0 ELSE OLD.memory_mib END),
        used_disk_mib   = used_disk_mib   - (CASE WHEN OLD.state = 'terminated' THEN 0 ELSE OLD.disk_gib * 1024 END)
    WHERE id = OLD.node_id;
    UPDATE nodes SET
        used_vcpus      = used_vcpus      + (CASE WHEN NEW.state IN ('stopped', 'terminated') THEN 0 ELSE NEW.vcpus END),
        used_memory_mib = used_memory_mib + (CASE WHEN NEW.state IN ('stopped', 'terminated') THEN 0 ELSE NEW.memory_mib END),
        used_disk_mib   = used_disk_mib   + (CASE WHEN NEW.state = 'terminated' THEN 0 ELSE NEW.disk_gib * 1024 END)
    WHERE id = NEW.node_id;
END;

DROP TRIGGER node_vpcs_update;
CREATE TRIGGER node_vpcs_update AFTER UPDATE OF state, node_id, vpc_id ON instances
WHEN OLD.node_id IS NOT NEW.node_id OR OLD.vpc_id IS NOT NEW.vpc_id
    OR (OLD.state = 'terminated') IS NOT (NEW.state = 'terminated') BEGIN
    UPDATE node_vpcs SET n = n - 1
    WHERE node_id = OLD.node_id AND vpc_id = OLD.vpc_id AND OLD.state <> 'terminated';
    INSERT INTO node_vpcs (node_id, vpc_id, n)
    SELECT NEW.node_id, NEW.vpc_id, 1 WHERE NEW.state <> 'terminated' AND NEW.vpc_id <> '' AND NEW.node_id <> ''
    ON CONFLICT (node_id, vpc_id) DO UPDATE SET n = n + 1;
    DELETE FROM node_vpcs WHERE n <= 0;
END;

DROP TRIGGER node_groups_move;
CREATE TRIGGER node_groups_move AFTER UPDATE OF node_id ON instances
WHEN OLD.node_id IS NOT NEW.node_id BEGIN
    UPDATE node_groups SET n = n - 1
    WHERE node_id = OLD.node_id AND group_id IN (SELECT group_id FROM instance_groups WHERE instance_id = NEW.id);
    INSERT INTO node_groups (node_id, group_id, n)
    SELECT NEW.node_id, group_id, 1 FROM instance_groups WHERE instance_id = NEW.id AND NEW.node_id <> ''
    ON CONFLICT (node_id, group_id) DO UPDATE SET n = n + 1;
    DELETE FROM node_groups WHERE n <= 0;
END;
