-- Clipper schema, version 2: networks (default VPC and subnets), security
-- groups and their rules, instance group membership, instance metadata
-- options and attributes.

CREATE TABLE vpcs (
    id         TEXT PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    cidr       TEXT NOT NULL,
    is_default INTEGER NOT NULL DEFAULT 0,
    created    INTEGER NOT NULL
);
CREATE UNIQUE INDEX vpcs_default ON vpcs(account_id) WHERE is_default = 1;

CREATE TABLE subnets (
    id         TEXT PRIMARY KEY,
    vpc_id     TEXT NOT NULL REFERENCES vpcs(id) ON DELETE CASCADE,
    account_id TEXT NOT NULL,
    zone       TEXT NOT NULL,
    cidr       TEXT NOT NULL,
    is_default INTEGER NOT NULL DEFAULT 0,
    created    INTEGER NOT NULL
);
CREATE INDEX subnets_vpc ON subnets(vpc_id);

CREATE TABLE security_groups (
    id          TEXT PRIMARY KEY,
    account_id  TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    vpc_id      TEXT NOT NULL REFERENCES vpcs(id),
    name        TEXT NOT NULL,
    description TEXT NOT NULL,
    rev         INTEGER NOT NULL,
    created     INTEGER NOT NULL,
    UNIQUE (vpc_id, name)
);

-- One row per peer, as EC2 gives every CIDR or group of a permission its
-- own rule ID.
CREATE TABLE security_group_rules (
    id           TEXT PRIMARY KEY,
    group_id     TEXT NOT NULL REFERENCES security_groups(id) ON DELETE CASCADE,
    egress       INTEGER NOT NULL,
    protocol     TEXT NOT NULL,
    from_port    INTEGER NOT NULL,
    to_port      INTEGER NOT NULL,
    cidr         TEXT NOT NULL DEFAULT '',
    peer_group   TEXT NOT NULL DEFAULT '',
    description  TEXT NOT NULL DEFAULT '',
    created      INTEGER NOT NULL
);
CREATE INDEX sg_rules_group ON security_group_rules(group_id);
CREATE INDEX sg_rules_peer ON security_group_rules(peer_group) WHERE peer_group <> '';

CREATE TABLE instance_groups (
    instance_id TEXT NOT NULL REFERENCES instances(id) ON DELETE CASCADE,
    group_id    TEXT NOT NULL REFERENCES security_groups(id),
    position    INTEGER NOT NULL,
    PRIMARY KEY (instance_id, group_id)
);
CREATE INDEX instance_groups_group ON instance_groups(group_id);

ALTER TABLE instances ADD COLUMN metadata_tokens TEXT NOT NULL DEFAULT 'required';
ALTER TABLE instances ADD COLUMN metadata_endpoint TEXT NOT NULL DEFAULT 'enabled';
ALTER TABLE instances ADD COLUMN metadata_hop_limit INTEGER NOT NULL DEFAULT 1;
ALTER TABLE instances ADD COLUMN metadata_tags TEXT NOT NULL DEFAULT 'disabled';
ALTER TABLE instances ADD COLUMN disable_api_termination INTEGER NOT NULL DEFAULT 0;
ALTER TABLE instances ADD COLUMN disable_api_stop INTEGER NOT NULL DEFAULT 0;
CREATE INDEX instances_vpc_rev ON instances(vpc_id, rev);

-- Which networks and groups each node serves, kept by triggers so that
-- finding them costs a lookup, not a scan of the node's instances.
CREATE TABLE node_vpcs (
    node_id TEXT NOT NULL,
    vpc_id  TEXT NOT NULL,
    n       INTEGER NOT NULL,
    PRIMARY KEY (node_id, vpc_id)
);
CREATE INDEX node_vpcs_vpc ON node_vpcs(vpc_id);

CREATE TABLE node_groups (
    node_id  TEXT NOT NULL,
    group_id TEXT NOT NULL,
    n        INTEGER NOT NULL,
    PRIMARY KEY (node_id, group_id)
);
CREATE INDEX node_groups_group ON node_groups(group_id);
CREATE INDEX security_groups_rev ON security_groups(rev);

CREATE TRIGGER node_vpcs_insert AFTER INSERT ON instances
WHEN NEW.state <> 'terminated' AND NEW.vpc_id <> '' AND NEW.node_id <> '' BEGIN
    INSERT INTO node_vpcs (node_id, vpc_id, n) VALUES (NEW.node_id, NEW.vpc_id, 1)
    ON CONFLICT (node_id, vpc_id) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER node_vpcs_update AFTER UPDATE OF state, node_id, vpc_id ON instances BEGIN
    UPDATE node_vpcs SET n = n - 1
    WHERE node_id = OLD.node_id AND vpc_id = OLD.vpc_id AND OLD.state <> 'terminated';
    INSERT INTO node_vpcs (node_id, vpc_id, n)
    SELECT NEW.node_id, NEW.vpc_id, 1 WHERE NEW.state <> 'terminated' AND NEW.vpc_id <> '' AND NEW.node_id <> ''
    ON CONFLICT (node_id, vpc_id) DO UPDATE SET n = n + 1;
    DELETE FROM node_vpcs WHERE n <= 0;
END;

CREATE TRIGGER node_vpcs_delete AFTER DELETE ON instances WHEN OLD.state <> 'terminated' BEGIN
    UPDATE node_vpcs SET n = n - 1 WHERE node_id = OLD.node_id AND vpc_id = OLD.vpc_id;
    DELETE FROM node_vpcs WHERE n <= 0;
END;

-- Group rows exist only for live instances (termination clears them).
CREATE TRIGGER node_groups_insert AFTER INSERT ON instance_groups BEGIN
    INSERT INTO node_groups (node_id, group_id, n)
    SELECT i.node_id, NEW.group_id, 1 FROM instances i WHERE i.id = NEW.instance_id AND i.node_id <> ''
    ON CONFLICT (node_id, group_id) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER node_groups_delete AFTER DELETE ON instance_groups BEGIN
    UPDATE node_groups SET n = n - 1
    WHERE group_id = OLD.group_id AND node_id = (SELECT node_id FROM instances WHERE id = OLD.instance_id);
    DELETE FROM node_groups WHERE n <= 0;
END;

CREATE TRIGGER node_groups_move AFTER UPDATE OF node_id ON instances BEGIN
    UPDATE node_groups SET n = n - 1
    WHERE node_id = OLD.node_id AND group_id IN (SELECT group_id FROM instance_groups WHERE instance_id = NEW.id);
    INSERT INTO node_groups (node_id, group_id, n)
    SELECT NEW.node_id, group_id, 1 FROM instance_groups WHERE instance_id = NEW.id AND NEW.node_id <> ''
    ON CONFLICT (node_id, group_id) DO UPDATE SET n = n + 1;
    DELETE FROM node_groups WHERE n <= 0;
END;
