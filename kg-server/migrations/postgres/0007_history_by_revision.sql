-- History keyed by the revision that replaced each version, not by (key, mod_revision): every
-- write appends its versions at the right edge of (superseded, key), where a by-key B-tree took
-- an insert at a random leaf per version, the biggest part of what history cost a PUT.
--
-- A key's versions stay reachable from its row in kg_keys: the version a row replaced is the
-- one kg_history holds under (superseded = that row's mod_revision, key), so one index probe
-- steps one version back. Checkpoints bound the walk: every version whose number is a multiple
-- of 64, and every tombstone (version 0), is also indexed by (key, mod_revision), so a read at
-- a revision starts at the oldest checkpoint above it and walks at most 63 versions back. That
-- index takes a 64th of the versions of a key that is rewritten, plus its deletes.
ALTER TABLE kg_history DROP CONSTRAINT kg_history_pkey;
ALTER TABLE kg_history ADD PRIMARY KEY (superseded, key);
CREATE INDEX kg_history_checkpoints ON kg_history (key, mod_revision) WHERE version % 64 = 0;
-- Compaction's DELETE ... WHERE superseded <= R now has the primary key; the block range index
-- stays for the cut by age (superseded_at).
