-- Relay tables, generated secrets and the persistent cache tier.
CREATE TABLE settings (
    key        TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

CREATE TABLE relay_instances (
    id           INTEGER PRIMARY KEY,
    instance_id  TEXT NOT NULL UNIQUE,
    public_key   BLOB NOT NULL CHECK (length(public_key) = 32),
    direct_urls  TEXT NOT NULL DEFAULT '[]',
    public_ip    TEXT,
    last_seen_at TEXT,
    online       INTEGER NOT NULL DEFAULT 0,
    inserted_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    updated_at   TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

CREATE TABLE relay_claims (
    id                    TEXT PRIMARY KEY,
    code                  TEXT NOT NULL UNIQUE,
    instance_id           INTEGER NOT NULL REFERENCES relay_instances(id) ON DELETE CASCADE,
    user_id               TEXT NOT NULL,
    expires_at            TEXT NOT NULL,
    consumed_at           TEXT,
    consumed_by_device_id TEXT,
    inserted_at           TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    updated_at            TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE INDEX relay_claims_instance ON relay_claims(instance_id);
CREATE INDEX relay_claims_expires ON relay_claims(expires_at);

-- Persistent cache tier: one row per cache key; kept past expiry for stale-if-error.
CREATE TABLE cache_entries (
    key          TEXT PRIMARY KEY,
    status       INTEGER NOT NULL,
    content_type TEXT NOT NULL,
    body         BLOB NOT NULL,
    gzip_body    BLOB,
    etag         TEXT NOT NULL,
    stored_at    REAL NOT NULL,
    expires_at   REAL NOT NULL,
    purge_at     REAL NOT NULL
);
CREATE INDEX cache_entries_purge ON cache_entries(purge_at);
