-- Clipper schema, version 1: accounts, images, key pairs, instances, nodes.
-- Times are INTEGER milliseconds since the Unix epoch (UTC).

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
INSERT INTO meta (key, value) VALUES ('rev', 0);

CREATE TABLE accounts (
    id      TEXT PRIMARY KEY,
    name    TEXT NOT NULL UNIQUE,
    created INTEGER NOT NULL
);

CREATE TABLE access_keys (
    id         TEXT PRIMARY KEY,
    secret     TEXT NOT NULL,
    account_id TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    created    INTEGER NOT NULL
);

CREATE TABLE blobs (
    sha256  TEXT PRIMARY KEY,
    size    INTEGER NOT NULL,
    created INTEGER NOT NULL
);

CREATE TABLE images (
    id               TEXT PRIMARY KEY,
    owner_id         TEXT NOT NULL REFERENCES accounts(id),
    name             TEXT NOT NULL,
    description      TEXT NOT NULL DEFAULT '',
    state            TEXT NOT NULL,
    location         TEXT NOT NULL,
    manifest         TEXT NOT NULL,
    architecture     TEXT NOT NULL,
    root_device_name TEXT NOT NULL,
    public           INTEGER NOT NULL DEFAULT 0,
    created          INTEGER NOT NULL
);
CREATE UNIQUE INDEX images_owner_name ON images(owner_id, name) WHERE state <> 'deregistered';

CREATE TABLE key_pairs (
    id          TEXT PRIMARY KEY,
    account_id  TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    type        TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    public_key  TEXT NOT NULL,
    created     INTEGER NOT NULL,
    UNIQUE (account_id, name)
);

CREATE TABLE reservations (
    id           TEXT PRIMARY KEY,
    account_id   TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    client_token TEXT NOT NULL DEFAULT '',
    created      INTEGER NOT NULL
);
CREATE UNIQUE INDEX reservations_token ON reservations(account_id, client_token) WHERE client_token <> '';

CREATE TABLE nodes (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    zone       TEXT NOT NULL,
    address    TEXT NOT NULL DEFAULT '',
    state      TEXT NOT NULL,
    vcpus      INTEGER NOT NULL,
    memory_mib INTEGER NOT NULL,
    disk_mib   INTEGER NOT NULL,
    version    TEXT NOT NULL DEFAULT '',
    last_seen  INTEGER NOT NULL,
    created    INTEGER NOT NULL,
    -- What live instances take, kept by the triggers below: vCPU and
    -- memory of instances that are not stopped, disk of every live one.
    used_vcpus      INTEGER NOT NULL DEFAULT 0,
    used_memory_mib INTEGER NOT NULL DEFAULT 0,
    used_disk_mib   INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE instances (
    id              TEXT PRIMARY KEY,
    account_id      TEXT NOT NULL REFERENCES accounts(id),
    reservation_id  TEXT NOT NULL REFERENCES reservations(id),
    image_id        TEXT NOT NULL,
    instance_type   TEXT NOT NULL,
    vcpus           INTEGER NOT NULL,
    memory_mib      INTEGER NOT NULL,
    disk_gib        INTEGER NOT NULL,
    key_name        TEXT NOT NULL DEFAULT '',
    user_data       BLOB,
    launch_index    INTEGER NOT NULL,
    client_token    TEXT NOT NULL DEFAULT '',
    zone            TEXT NOT NULL,
    node_id         TEXT NOT NULL DEFAULT '',
    state           TEXT NOT NULL,
    reason_code     TEXT NOT NULL DEFAULT '',
    reason_message  TEXT NOT NULL DEFAULT '',
    transition_note TEXT NOT NULL DEFAULT '',
    launch_time     INTEGER NOT NULL,
    state_changed   INTEGER NOT NULL,
    power           TEXT NOT NULL,
    reboot_seq      INTEGER NOT NULL DEFAULT 0,
    rev             INTEGER NOT NULL,
    vpc_id          TEXT NOT NULL DEFAULT '',
    subnet_id       TEXT NOT NULL DEFAULT '',
    private_ip      TEXT NOT NULL DEFAULT '',
    mac             TEXT NOT NULL DEFAULT ''
);
CREATE INDEX instances_account ON instances(account_id);
CREATE INDEX instances_node_rev ON instances(node_id, rev);
CREATE INDEX instances_reservation ON instances(reservation_id);
CREATE INDEX instances_terminated ON instances(state_changed) WHERE state = 'terminated';
CREATE INDEX instances_address ON instances(subnet_id, private_ip);

CREATE TABLE tags (
    resource_id TEXT NOT NULL,
    account_id  TEXT NOT NULL,
    key         TEXT NOT NULL,
    value       TEXT NOT NULL,
    PRIMARY KEY (resource_id, key)
);
CREATE INDEX tags_account ON tags(account_id);

CREATE TABLE consoles (
    instance_id TEXT PRIMARY KEY REFERENCES instances(id) ON DELETE CASCADE,
    output      BLOB NOT NULL,
    updated     INTEGER NOT NULL
);

-- Node usage follows instance rows, so placing an instance reads one row
-- per node instead of summing every instance.
CREATE TRIGGER instances_usage_insert AFTER INSERT ON instances BEGIN
    UPDATE nodes SET
        used_vcpus      = used_vcpus      + (CASE WHEN NEW.state IN ('stopped', 'terminated') THEN 0 ELSE NEW.vcpus END),
        used_memory_mib = used_memory_mib + (CASE WHEN NEW.state IN ('stopped', 'terminated') THEN 0 ELSE NEW.memory_mib END),
        used_disk_mib   = used_disk_mib   + (CASE WHEN NEW.state = 'terminated' THEN 0 ELSE NEW.disk_gib * 1024 END)
    WHERE id = NEW.node_id;
END;

CREATE TRIGGER instances_usage_update AFTER UPDATE OF state, node_id, vcpus, memory_mib, disk_gib ON instances BEGIN
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

CREATE TRIGGER instances_usage_delete AFTER DELETE ON instances BEGIN
    UPDATE nodes SET
        used_vcpus      = used_vcpus      - (CASE WHEN OLD.state IN ('stopped', 'terminated') THEN 0 ELSE OLD.vcpus END),
        used_memory_mib = used_memory_mib - (CASE WHEN OLD.state IN ('stopped', 'terminated') THEN 0 ELSE OLD.memory_mib END),
        used_disk_mib   = used_disk_mib   - (CASE WHEN OLD.state = 'terminated' THEN 0 ELSE OLD.disk_gib * 1024 END)
    WHERE id = OLD.node_id;
END;
