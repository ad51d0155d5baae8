-- Leases, as in the PostgreSQL migration 0004: deadlines are Unix milliseconds by the
-- database's clock (SQLite's, which is the machine's that holds the file, whatever a node's
-- clock says), and a key whose lease has expired is gone for reads and writes at once.

CREATE TABLE kg_leases (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ttl INTEGER NOT NULL,
    deadline INTEGER NOT NULL
);
CREATE INDEX kg_leases_deadline ON kg_leases (deadline);

ALTER TABLE kg_keys ADD COLUMN lease INTEGER;
ALTER TABLE kg_keys ADD COLUMN reason TEXT;
CREATE INDEX kg_keys_lease ON kg_keys (lease) WHERE lease IS NOT NULL;
