-- Clipper schema, version 5: the latest overlay self-check of each node
-- (internal/agent/selfcheck.go): when it ran, the underlay MTU it checked
-- and how many peer nodes it probed, and the conditions it found (none on
-- a healthy node). Each self-check a node reports replaces its rows.
CREATE TABLE node_self_checks (
    node_id TEXT PRIMARY KEY REFERENCES nodes(id) ON DELETE CASCADE,
    checked INTEGER NOT NULL,
    mtu     INTEGER NOT NULL,
    peers   INTEGER NOT NULL
);

CREATE TABLE node_conditions (
    node_id  TEXT NOT NULL REFERENCES node_self_checks(node_id) ON DELETE CASCADE,
    seq      INTEGER NOT NULL,
    type     TEXT NOT NULL,
    status   TEXT NOT NULL,
    peer     TEXT NOT NULL DEFAULT '',
    mtu      INTEGER NOT NULL,
    path_mtu INTEGER NOT NULL DEFAULT 0,
    message  TEXT NOT NULL,
    PRIMARY KEY (node_id, seq)
);
