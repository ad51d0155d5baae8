-- KeyGrid schema for embedded SQLite; the same model as PostgreSQL's (see that migration).
-- BINARY collation (SQLite's default) compares UTF-8 bytes, so ORDER BY key is byte order.

CREATE TABLE kg_meta (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    revision INTEGER NOT NULL,
    compact_revision INTEGER NOT NULL DEFAULT 0
);
INSERT INTO kg_meta (id, revision) VALUES (1, 0);

CREATE TABLE kg_keys (
    key TEXT PRIMARY KEY,
    -- NULL marks a tombstone: the key was deleted at mod_revision.
    value BLOB,
    create_revision INTEGER NOT NULL,
    mod_revision INTEGER NOT NULL,
    version INTEGER NOT NULL,
    mod_node TEXT NOT NULL,
    -- Unix milliseconds.
    mod_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX kg_keys_mod_revision ON kg_keys (mod_revision);

-- Outcomes of writes sent with an Idempotency-Key (see the PostgreSQL migration).
CREATE TABLE kg_idempotency (
    id TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    status INTEGER NOT NULL,
    revision INTEGER,
    create_revision INTEGER,
    version INTEGER,
    -- Unix milliseconds.
    created_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX kg_idempotency_created_at ON kg_idempotency (created_at);
