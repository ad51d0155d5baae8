-- Transactions sent with an Idempotency-Key, as in the PostgreSQL migration 0005.
ALTER TABLE kg_idempotency ADD COLUMN response BLOB;
