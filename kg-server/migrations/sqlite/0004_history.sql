-- History: every version of a key that a write replaced (see the PostgreSQL migration 0006).
CREATE TABLE kg_history (
    key TEXT NOT NULL,
    value BLOB,
    create_revision INTEGER NOT NULL,
    mod_revision INTEGER NOT NULL,
    version INTEGER NOT NULL,
    mod_node TEXT NOT NULL,
    -- Unix milliseconds, as superseded_at.
    mod_at INTEGER NOT NULL,
    lease INTEGER,
    reason TEXT,
    superseded INTEGER NOT NULL,
    superseded_at INTEGER NOT NULL,
    PRIMARY KEY (key, mod_revision)
) WITHOUT ROWID;
CREATE INDEX kg_history_superseded ON kg_history (superseded);

ALTER TABLE kg_meta ADD COLUMN history_start INTEGER NOT NULL DEFAULT 0;
UPDATE kg_meta SET history_start = revision WHERE id = 1;

-- SQLite's triggers run per row; an upsert's DO UPDATE fires it as an UPDATE does.
CREATE TRIGGER kg_keys_history AFTER UPDATE ON kg_keys
    WHEN NEW.mod_revision <> OLD.mod_revision
BEGIN
    INSERT INTO kg_history (key, value, create_revision, mod_revision, version, mod_node, mod_at,
                            lease, reason, superseded, superseded_at)
    VALUES (OLD.key, OLD.value, OLD.create_revision, OLD.mod_revision, OLD.version,
            OLD.mod_node, OLD.mod_at, OLD.lease, OLD.reason, NEW.mod_revision, NEW.mod_at);
END;
