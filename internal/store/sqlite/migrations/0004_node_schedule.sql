-- Clipper schema, version 4: the operator's say over a node's scheduling
-- ('' = schedulable, 'cordoned', 'draining'), kept apart from its health
-- (nodes.state: ready or down) so a cordoned node that goes down and comes
-- back stays cordoned.
ALTER TABLE nodes ADD COLUMN schedule TEXT NOT NULL DEFAULT '';
