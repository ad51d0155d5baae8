-- History keyed by the revision that replaced each version, with checkpoints indexed by key
-- (see the PostgreSQL migration 0007). SQLite cannot change a primary key in place: the table
-- is rebuilt, and the trigger that writes it is dropped first, because renaming a table
-- checks every trigger's body against the schema.
DROP TRIGGER kg_keys_history;
CREATE TABLE kg_history_by_revision (
    key TEXT NOT NULL,
    value BLOB,
    create_revision INTEGER NOT NULL,
    mod_revision INTEGER NOT NULL,
    version INTEGER NOT NULL,
    mod_node TEXT NOT NULL,
    mod_at INTEGER NOT NULL,
    lease INTEGER,
    reason TEXT,
    superseded INTEGER NOT NULL,
    superseded_at INTEGER NOT NULL,
    PRIMARY KEY (superseded, key)
) WITHOUT ROWID;
INSERT INTO kg_history_by_revision
    SELECT key, value, create_revision, mod_revision, version, mod_node, mod_at, lease, reason,
           superseded, superseded_at
    FROM kg_history;
DROP TABLE kg_history;
ALTER TABLE kg_history_by_revision RENAME TO kg_history;
CREATE INDEX kg_history_checkpoints ON kg_history (key, mod_revision) WHERE version % 64 = 0;

CREATE TRIGGER kg_keys_history AFTER UPDATE ON kg_keys
    WHEN NEW.mod_revision <> OLD.mod_revision
BEGIN
    INSERT INTO kg_history (key, value, create_revision, mod_revision, version, mod_node, mod_at,
                            lease, reason, superseded, superseded_at)
    VALUES (OLD.key, OLD.value, OLD.create_revision, OLD.mod_revision, OLD.version,
            OLD.mod_node, OLD.mod_at, OLD.lease, OLD.reason, NEW.mod_revision, NEW.mod_at);
END;
