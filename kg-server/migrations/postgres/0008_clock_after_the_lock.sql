-- kg_now_ms(), the clock every lease is judged by, is the moment a write took the revision
-- lock, inside a write's transaction; now() (the transaction's start) everywhere else.
--
-- A write transaction (a transaction, a prefix delete, a lease's end) begins, then waits for
-- the revision lock, possibly for seconds behind another write. Judged by now() its leases
-- were judged as of before that wait: a lease that ended during it still counted as live, so
-- a compare saw the key, a get returned it, and a prefix delete tombstoned it as a plain delete
-- instead of leaving it to its expiry. kg_apply already judges by clock_timestamp() after the
-- lock. The store's begin_write sets kg.now_ms, local to the transaction, right after it takes
-- the lock (tests/api/txn.rs: a_transaction_judges_leases_after_waiting_for_the_revision_lock).
CREATE OR REPLACE FUNCTION kg_now_ms() RETURNS bigint LANGUAGE sql STABLE
AS $$ SELECT coalesce(nullif(current_setting('kg.now_ms', true), '')::bigint,
                      (extract(epoch FROM now()) * 1000)::bigint) $$;
