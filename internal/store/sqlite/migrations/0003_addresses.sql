-- Clipper schema, version 3: elastic IPs and port forwards.

CREATE TABLE addresses (
    id             TEXT PRIMARY KEY,              -- eipalloc-...
    account_id     TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    public_ip      TEXT NOT NULL UNIQUE,
    association_id TEXT NOT NULL DEFAULT '',      -- eipassoc-... while associated
    instance_id    TEXT NOT NULL DEFAULT '',
    private_ip     TEXT NOT NULL DEFAULT '',
    created        INTEGER NOT NULL
);
CREATE INDEX addresses_account ON addresses(account_id);
CREATE INDEX addresses_instance ON addresses(instance_id) WHERE instance_id <> '';

CREATE TABLE forwards (
    id          TEXT PRIMARY KEY,                 -- fwd-...
    account_id  TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    protocol    TEXT NOT NULL,                    -- tcp | udp
    listen_ip   TEXT NOT NULL,
    listen_port INTEGER NOT NULL,
    target_ip   TEXT NOT NULL,
    target_port INTEGER NOT NULL,
    node_id     TEXT NOT NULL,
    rev         INTEGER NOT NULL,
    created     INTEGER NOT NULL,
    UNIQUE (protocol, listen_ip, listen_port)
);
CREATE INDEX forwards_node ON forwards(node_id);

-- Overlay and bridged networks: each VPC gets a VXLAN identifier; a
-- bridged VPC is attached to an existing host bridge (uplink) and its
-- subnet hands out addresses of the LAN from a range, with the LAN's router
-- as gateway.
ALTER TABLE vpcs ADD COLUMN vni INTEGER NOT NULL DEFAULT 0;
ALTER TABLE vpcs ADD COLUMN uplink TEXT NOT NULL DEFAULT '';
ALTER TABLE subnets ADD COLUMN gateway TEXT NOT NULL DEFAULT '';
ALTER TABLE subnets ADD COLUMN range_first TEXT NOT NULL DEFAULT '';
ALTER TABLE subnets ADD COLUMN range_last TEXT NOT NULL DEFAULT '';
