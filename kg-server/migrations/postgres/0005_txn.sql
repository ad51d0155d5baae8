-- Transactions (POST /api/txn) sent with an Idempotency-Key: a retry is answered with the
-- first attempt's whole answer, which a single-key write's status and revisions cannot hold.
ALTER TABLE kg_idempotency ADD COLUMN response bytea;
