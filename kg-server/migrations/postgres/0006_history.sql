-- History: every version of a key that a write replaced, so that a key or a range can be read
-- as of any revision since the compact revision (GET /api/key?revision=) and a key's versions
-- listed (GET /api/key/history). kg_keys keeps the current version; a version here was the
-- key's state for the revisions [mod_revision, superseded).
CREATE TABLE kg_history (
    key text COLLATE "C" NOT NULL,
    -- NULL: the version was a tombstone (the key was deleted at mod_revision).
    value bytea,
    create_revision bigint NOT NULL,
    mod_revision bigint NOT NULL,
    version bigint NOT NULL,
    mod_node text NOT NULL,
    mod_at timestamptz NOT NULL,
    lease bigint,
    reason text,
    -- The revision of the write that replaced this version, and when that write committed:
    -- compaction drops the versions replaced at or below its revision.
    superseded bigint NOT NULL,
    superseded_at timestamptz NOT NULL,
    PRIMARY KEY (key, mod_revision)
);
-- Rows arrive in the order of `superseded`, and `superseded_at` follows it, so a block range
-- index finds the rows a compaction drops at a fraction of a B-tree's cost on every write.
-- autosummarize has autovacuum summarise each range as it fills, rather than leaving the
-- newest ranges for every compaction to read whole.
CREATE INDEX kg_history_superseded ON kg_history USING brin (superseded, superseded_at)
    WITH (autosummarize = on);

-- Reads below the revision at which history began would miss the versions replaced before
-- it; they are answered 410 as reads below the compact revision are.
ALTER TABLE kg_meta ADD COLUMN history_start bigint NOT NULL DEFAULT 0;
UPDATE kg_meta SET history_start = revision WHERE id = 1;

-- One trigger for every path that writes a key (the write batch, transactions, prefix deletes,
-- a lease's end, restores), so none can forget history. Per statement, with the statement's
-- old and new rows as tables: a batch of writes is one INSERT ... SELECT, not one call per row.
-- An UPDATE that leaves mod_revision alone is not a new version.
CREATE FUNCTION kg_keep_history() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO kg_history (key, value, create_revision, mod_revision, version, mod_node, mod_at,
                            lease, reason, superseded, superseded_at)
    SELECT o.key, o.value, o.create_revision, o.mod_revision, o.version, o.mod_node, o.mod_at,
           o.lease, o.reason, n.mod_revision, n.mod_at
    FROM kg_old_rows o JOIN kg_new_rows n ON n.key = o.key
    WHERE n.mod_revision <> o.mod_revision;
    RETURN NULL;
END
$$;

CREATE TRIGGER kg_keys_history AFTER UPDATE ON kg_keys
    REFERENCING OLD TABLE AS kg_old_rows NEW TABLE AS kg_new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION kg_keep_history();
