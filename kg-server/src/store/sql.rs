//! The one `Store` over sqlx: the reads both databases run as the same SQL, and a `Dialect`
//! for what each does its own way (the write batch, compaction, the primary check).
//!
//! One SQL text serves both because both drivers read `$N` as the Nth bound value and
//! `CAST($N AS text)` gives PostgreSQL the type of a parameter that may be NULL. The one part
//! that differs is the database's clock, which leases are judged by: [`Queries`] builds each
//! statement once per dialect around the dialect's `NOW_MS`.

use async_trait::async_trait;
use kg_api::{
    CompactResponse, DeletePrefixResponse, DeleteReason, KeyRecord, LeaseGrant, LeaseInfo,
    LeaseRevokeResponse, TxnOp, TxnResponse, TxnResult, MAX_PAGE_BYTES,
};
use sqlx::pool::PoolConnection;
use sqlx::{Database, Decode, Encode, Executor, FromRow, IntoArguments, Pool, Transaction, Type};

use super::{
    prefix_upper_bound, txn, AtRevision, Change, ChangeRow, CompactTo, Compacted, Ended, Granted,
    HistoryRow, Idempotent, KeyHistory, KeyRow, LeaseEnd, ListQuery, MarkKeys, OpResult,
    PrefixDelete, Replay, Snapshot, Store, StoreError, StoreKind, TxnOutcome, TxnPlan, WriteOp,
    MAX_PREFIX_DELETE,
};

/// Every statement whose text depends on the dialect's clock, built once per dialect.
#[derive(Debug)]
pub struct Queries {
    get: String,
    value_bytes: String,
    list: String,
    count: String,
    get_at: String,
    key_history: String,
    list_at: String,
    count_at: String,
    history_floor: String,
    lease_grant: String,
    lease_keepalive: String,
    lease: String,
    leases: String,
    leases_due: String,
    refresh_leases: String,
    leases_to_refresh: String,
    expire: String,
    revoke: String,
    tombstone: String,
    delete_range: String,
    upsert: String,
    delete_key: String,
    remember_txn: String,
    remember_answer: String,
}

impl Queries {
    /// `now_ms`: the database's clock in Unix milliseconds; `mod_at_now`: the same instant as
    /// `kg_keys.mod_at` stores it; `greatest`: the two-argument maximum; `id_in_list`: a
    /// condition that `id` is one of the comma-separated integers bound as `$1`;
    /// `quick_keepalive`: commit keep-alives without waiting for their WAL (PostgreSQL's
    /// synchronous_commit); `mod_at_ms`: `mod_at` in Unix milliseconds.
    pub fn new(
        now_ms: &str,
        mod_at_now: &str,
        greatest: &str,
        id_in_list: &str,
        quick_keepalive: bool,
        mod_at_ms: &str,
    ) -> Self {
        // A keep-alive need not be durable, as etcd keeps renewals out of its log: at hundreds
        // a second, keep-alives that each waited for a WAL flush (and, with Patroni, for the
        // synchronous standby) would take the flushes the write batches wait on. Losing the
        // last few in a crash or a failover cannot end a lease early: every node that saw the
        // database go away gives every lease that was live then its full TTL back first
        // (settle_leases), and the lost keep-alives' leases were (docs/consistency.md).
        // set_config(.., true) inside the statement applies to its own implicit transaction,
        // so this stays one prepared statement and one round trip.
        let (quick, quick_guard) = if quick_keepalive {
            (
                "WITH quick AS (SELECT set_config('synchronous_commit', 'off', true) AS on_commit) ",
                " AND (SELECT on_commit FROM quick) = 'off'",
            )
        } else {
            ("", "")
        };
        // A key is live while it has a value and either no lease or a lease whose deadline is
        // ahead: an expired key is gone for readers before the sweeper deletes it.
        let live = format!("k.value IS NOT NULL AND (k.lease IS NULL OR l.deadline > {now_ms})");
        let row = format!(
            "k.key, {{value}}, k.create_revision, k.mod_revision, k.version, k.lease, \
             l.deadline - {now_ms} AS ttl_remaining_ms \
             FROM kg_keys k LEFT JOIN kg_leases l ON l.id = k.lease"
        );
        // `live` for the row of kg_keys a write changes, without the join that an UPDATE or
        // an upsert cannot portably make.
        let live_row = format!(
            "kg_keys.value IS NOT NULL AND (kg_keys.lease IS NULL OR EXISTS (SELECT 1 FROM \
             kg_leases l WHERE l.id = kg_keys.lease AND l.deadline > {now_ms}))"
        );
        let range = "k.key >= $1 AND (CAST($2 AS text) IS NULL OR k.key < $2) \
                     AND (CAST($3 AS text) IS NULL OR k.key > $3)";
        // The versions that were the keys' state at revision `{rev}` and satisfy `{cond}`:
        // the current row if it is that old, else the one version in kg_history whose
        // lifetime [mod_revision, superseded) holds it. A current row is judged by its lease
        // as a current read is; a replaced version was live until the write that replaced it.
        let at = format!(
            "SELECT {} WHERE {{cond}} AND k.mod_revision <= {{rev}} AND {live} \
             UNION ALL \
             SELECT k.key, {{value}}, k.create_revision, k.mod_revision, k.version, k.lease, \
               NULL AS ttl_remaining_ms FROM kg_history k \
             WHERE {{cond}} AND k.mod_revision <= {{rev}} AND k.superseded > {{rev}} \
               AND k.value IS NOT NULL",
            row
        );
        // `at` with each version's place and its value's size instead of its row: the
        // first half of `list_at`.
        let at_sizes = format!(
            "SELECT k.key, k.mod_revision, CAST(NULL AS bigint) AS superseded, \
               length(k.value) AS bytes \
             FROM kg_keys k LEFT JOIN kg_leases l ON l.id = k.lease \
             WHERE {{cond}} AND k.mod_revision <= {{rev}} AND {live} \
             UNION ALL \
             SELECT k.key, k.mod_revision, k.superseded, length(k.value) AS bytes \
             FROM kg_history k \
             WHERE {{cond}} AND k.mod_revision <= {{rev}} AND k.superseded > {{rev}} \
               AND k.value IS NOT NULL"
        );
        // Key $1's versions from the newest back to the `{count}`th at or below revision
        // `{target}`, with `n` the number of those met so far. The version a row replaced is
        // the one kg_history keeps under (superseded = the row's mod_revision, key): a probe of
        // its primary key per step. The walk starts at the oldest checkpoint above the target
        // (a version numbered a multiple of 64, or a tombstone: the partial index
        // kg_history_checkpoints, whose predicate the condition repeats word for word so that
        // the planners use it), so it meets at most 63 versions above the target however
        // often the key was written; or at the current row (superseded NULL) when no
        // checkpoint is above the target.
        let walk = "WITH RECURSIVE walk (key, value, create_revision, mod_revision, version, \
                      mod_node, mod_at, lease, reason, superseded, n) AS ( \
                        SELECT key, value, create_revision, mod_revision, version, mod_node, \
                          mod_at, lease, reason, superseded, 0 \
                        FROM (SELECT * FROM kg_history WHERE key = $1 \
                              AND mod_revision > {target} AND version % 64 = 0 \
                              ORDER BY mod_revision LIMIT 1) c \
                      UNION ALL \
                        SELECT key, value, create_revision, mod_revision, version, mod_node, \
                          mod_at, lease, reason, NULL, \
                          CASE WHEN mod_revision <= {target} THEN 1 ELSE 0 END \
                        FROM kg_keys WHERE key = $1 AND NOT EXISTS (SELECT 1 FROM kg_history \
                          WHERE key = $1 AND mod_revision > {target} AND version % 64 = 0) \
                      UNION ALL \
                        SELECT h.key, h.value, h.create_revision, h.mod_revision, h.version, \
                          h.mod_node, h.mod_at, h.lease, h.reason, h.superseded, \
                          w.n + CASE WHEN h.mod_revision <= {target} THEN 1 ELSE 0 END \
                        FROM walk w JOIN kg_history h \
                          ON h.superseded = w.mod_revision AND h.key = w.key \
                        WHERE w.n < {count})";
        Self {
            get: format!(
                "SELECT {} WHERE k.key = $1 AND {live}",
                row.replace("{value}", "k.value")
            ),
            // The size of key $1's live value, from the row's header (see `list`): what a
            // transaction's get would carry, known before anything is read or written.
            value_bytes: format!(
                "SELECT CAST(length(k.value) AS bigint) FROM kg_keys k \
                 LEFT JOIN kg_leases l ON l.id = k.lease WHERE k.key = $1 AND {live}"
            ),
            // A page's keys and their values' sizes first, without the values; then each key
            // with its value while the values before it come to less than $6, and the first
            // key past that without (see `ListQuery`). Sizes come from the row's header
            // (PostgreSQL's TOAST pointer, SQLite's record), so a value left out is never read.
            list: format!(
                "WITH page AS (SELECT k.key, length(k.value) AS bytes \
                   FROM kg_keys k LEFT JOIN kg_leases l ON l.id = k.lease \
                   WHERE {range} AND {live} ORDER BY k.key LIMIT $4), \
                 sized AS ({sized} FROM page) \
                 SELECT k.key, CASE WHEN $5 AND s.before < $6 THEN k.value END AS value, \
                   k.create_revision, k.mod_revision, k.version, k.lease, \
                   l.deadline - {now_ms} AS ttl_remaining_ms \
                 FROM sized s JOIN kg_keys k ON k.key = s.key \
                   LEFT JOIN kg_leases l ON l.id = k.lease \
                 WHERE NOT $5 OR s.before2 < $6 ORDER BY k.key",
                sized = sized("key, bytes", "key"),
            ),
            count: format!(
                "SELECT count(*) FROM kg_keys k LEFT JOIN kg_leases l ON l.id = k.lease \
                 WHERE {range} AND {live}"
            ),
            get_at: format!(
                "{} SELECT {} WHERE k.key = $1 AND k.mod_revision <= $2 AND {live} \
                 UNION ALL \
                 SELECT w.key, w.value, w.create_revision, w.mod_revision, w.version, w.lease, \
                   NULL AS ttl_remaining_ms FROM walk w \
                 WHERE w.mod_revision <= $2 AND w.superseded > $2 AND w.value IS NOT NULL",
                walk.replace("{target}", "$2").replace("{count}", "1"),
                row.replace("{value}", "k.value")
            ),
            // A page of versions ends as a listing's does (see `list`), with `cut` on the first
            // version past $4, where it ends.
            // The running sums go over the versions' sizes alone, then join them back: a
            // window over the values themselves had SQLite copy every value once per row.
            key_history: format!(
                "{}, page AS (SELECT key, value, create_revision, mod_revision, version, \
                   mod_node, mod_at, lease, reason, length(value) AS bytes FROM walk \
                   WHERE mod_revision < $2 ORDER BY mod_revision DESC LIMIT $3), \
                 sized AS ({} FROM page) \
                 SELECT p.key, CASE WHEN s.before < $4 THEN p.value END AS value, \
                   p.create_revision, p.mod_revision, p.version, p.mod_node, \
                   {} AS mod_at_ms, p.lease, p.reason, s.before >= $4 AS cut \
                 FROM page p JOIN sized s ON s.mod_revision = p.mod_revision \
                 WHERE s.before2 < $4 ORDER BY p.mod_revision DESC",
                walk.replace("{target}", "$2 - 1").replace("{count}", "$3"),
                sized("mod_revision, bytes", "mod_revision DESC"),
                mod_at_ms.replace("mod_at", "p.mod_at"),
            ),
            // As `list`, at revision $6: each version is found again by where it lives, the
            // current row (superseded NULL) or kg_history's (superseded, key).
            list_at: format!(
                "WITH page AS ({} ORDER BY key LIMIT $4), sized AS ({} FROM page) \
                 SELECT s.key, CASE WHEN $5 AND s.before < $7 \
                     THEN coalesce(c.value, h.value) END AS value, \
                   coalesce(c.create_revision, h.create_revision) AS create_revision, \
                   s.mod_revision, coalesce(c.version, h.version) AS version, \
                   coalesce(c.lease, h.lease) AS lease, \
                   CASE WHEN s.superseded IS NULL THEN l.deadline - {now_ms} END \
                     AS ttl_remaining_ms \
                 FROM sized s \
                   LEFT JOIN kg_keys c ON s.superseded IS NULL AND c.key = s.key \
                   LEFT JOIN kg_leases l ON l.id = c.lease \
                   LEFT JOIN kg_history h ON h.superseded = s.superseded AND h.key = s.key \
                 WHERE NOT $5 OR s.before2 < $7 ORDER BY s.key",
                at_sizes.replace("{cond}", range).replace("{rev}", "$6"),
                sized("key, mod_revision, superseded, bytes", "key"),
            ),
            count_at: format!(
                "SELECT count(*) FROM ({}) v",
                at.replace("{cond}", range)
                    .replace("{rev}", "$4")
                    .replace("{value}", "k.value")
            ),
            history_floor: format!(
                "SELECT {greatest}(compact_revision, history_start), revision FROM kg_meta \
                 WHERE id = 1"
            ),
            lease_grant: format!(
                "INSERT INTO kg_leases (ttl, deadline) VALUES ($1, {now_ms} + $1 * 1000) \
                 RETURNING id, ttl"
            ),
            lease_keepalive: if quick_keepalive {
                // PostgreSQL judges an UPDATE's WHERE, and computes its SET, before it waits
                // for a row another session holds, and not again after unless that session
                // changed the row: a keep-alive that waited past its lease's deadline on a
                // lock-only holder renewed a lease that had ended during the wait (and the
                // client, answered 503 at --db-timeout, saw a key come back). So the rows are
                // locked first (`locked`), the clock is read once all are held (`clock`
                // aggregates over them), and the deadline is judged by that clock against the
                // version the lock returned (FOR UPDATE follows a row another session updated
                // meanwhile; the UPDATE's own scan would see its snapshot's). Only leases live
                // when the statement began are locked: the sweeper locks expired ones, in its
                // own order, and the two sets then meet only at a deadline's edge. Still one
                // statement and one round trip.
                format!(
                    "{quick}, locked AS (SELECT id, ttl, deadline FROM kg_leases \
                       WHERE {id_in_list} AND deadline > {now_ms} ORDER BY id FOR UPDATE), \
                     clock AS (SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint \
                       AS now_ms FROM (SELECT count(*) FROM locked) c) \
                     UPDATE kg_leases l SET deadline = c.now_ms + k.ttl * 1000 \
                     FROM locked k, clock c \
                     WHERE l.id = k.id AND k.deadline > c.now_ms{quick_guard} \
                     RETURNING l.id, l.ttl"
                )
            } else {
                // SQLite: a write waits for the database's one write lock before its statement
                // runs at all, so the WHERE is judged after any wait.
                format!(
                    "UPDATE kg_leases SET deadline = {now_ms} + ttl * 1000 \
                     WHERE {id_in_list} AND deadline > {now_ms} RETURNING id, ttl"
                )
            },
            lease: format!(
                "SELECT id, ttl, deadline - {now_ms} FROM kg_leases \
                 WHERE id = $1 AND deadline > {now_ms}"
            ),
            leases: format!(
                "SELECT id, ttl, deadline - {now_ms} FROM kg_leases \
                 WHERE deadline > {now_ms} ORDER BY deadline, id"
            ),
            // min() is the first entry of kg_leases_deadline: one index probe, where a LIMIT 1
            // with the deadline in its filter may be planned as a scan of every lease.
            leases_due: format!(
                "SELECT count(*) FROM kg_leases \
                 WHERE deadline = (SELECT min(deadline) FROM kg_leases) AND deadline <= {now_ms}"
            ),
            // $1: how long ago, in ms, the node last reached the database. A lease whose
            // deadline had passed by then stays expired (see `contact.rs`).
            leases_to_refresh: format!(
                "SELECT count(*) FROM kg_leases \
                 WHERE deadline > {now_ms} - $1 AND deadline < {now_ms} + ttl * 1000"
            ),
            refresh_leases: format!(
                "UPDATE kg_leases SET deadline = {greatest}(deadline, {now_ms} + ttl * 1000) \
                 WHERE deadline > {now_ms} - $1 AND deadline < {now_ms} + ttl * 1000 RETURNING id"
            ),
            // The deadline is checked again on the row deleted: a keep-alive that committed
            // after the subquery read it keeps its lease.
            expire: format!(
                "DELETE FROM kg_leases WHERE id IN \
                   (SELECT id FROM kg_leases WHERE deadline <= {now_ms} \
                    ORDER BY deadline, id LIMIT $1) \
                 AND deadline <= {now_ms} RETURNING id"
            ),
            // A lease past its deadline has ended already, whether or not the sweeper has
            // deleted it: revoking it is a 404, and its keys' delete stays the expiry's.
            revoke: format!(
                "DELETE FROM kg_leases WHERE id = $1 AND deadline > {now_ms} RETURNING id"
            ),
            // A key whose lease has run out is already gone for readers, and the sweeper
            // deletes it under its own reason.
            delete_range: format!(
                "UPDATE kg_keys SET value = NULL, create_revision = 0, version = 0, \
                   mod_revision = $1, mod_node = $2, mod_at = {mod_at_now}, lease = NULL, \
                   reason = NULL \
                 WHERE key >= $3 AND (CAST($4 AS text) IS NULL OR key < $4) AND {live_row} \
                 RETURNING key",
            ),
            // A put at revision $3 in one round trip: a live key keeps its create_revision and
            // counts one more version, anything else (new, tombstone, expired) starts again at
            // this revision. SET reads the row as it was on both databases. $5 is cast because
            // PostgreSQL cannot type a NULL parameter in VALUES.
            upsert: format!(
                "INSERT INTO kg_keys (key, value, create_revision, mod_revision, version, \
                   mod_node, mod_at, lease, reason) \
                 VALUES ($1, $2, $3, $3, 1, $4, {mod_at_now}, CAST($5 AS bigint), NULL) \
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value, \
                   create_revision = CASE WHEN {live_row} THEN kg_keys.create_revision \
                     ELSE excluded.create_revision END, \
                   version = CASE WHEN {live_row} THEN kg_keys.version + 1 ELSE 1 END, \
                   mod_revision = excluded.mod_revision, mod_node = excluded.mod_node, \
                   mod_at = excluded.mod_at, lease = excluded.lease, reason = NULL \
                 RETURNING create_revision, version",
            ),
            // A delete of a live key at revision $1 in one round trip; no row when there was
            // none to delete.
            delete_key: format!(
                "UPDATE kg_keys SET value = NULL, create_revision = 0, version = 0, \
                   mod_revision = $1, mod_node = $2, mod_at = {mod_at_now}, lease = NULL, \
                   reason = NULL \
                 WHERE key = $3 AND {live_row} RETURNING key",
            ),
            // Status 0, as an applied write's; the answer itself is in `response`.
            remember_txn: format!(
                "INSERT INTO kg_idempotency \
                   (id, fingerprint, status, revision, created_at, response) \
                 VALUES ($1, $2, 0, $3, {mod_at_now}, $4)"
            ),
            // A route's whole answer (see `Idempotent`); a record already there, committed by
            // a request that raced this one, is kept, and answers both.
            remember_answer: format!(
                "INSERT INTO kg_idempotency \
                   (id, fingerprint, status, revision, created_at, response) \
                 VALUES ($1, $2, 0, $3, {mod_at_now}, $4) ON CONFLICT (id) DO NOTHING \
                 RETURNING id"
            ),
            tombstone: format!(
                "UPDATE kg_keys SET value = NULL, create_revision = 0, version = 0, \
                   mod_revision = $1, mod_node = $2, mod_at = {mod_at_now}, lease = NULL, \
                   reason = $3 \
                 WHERE key = $4"
            ),
        }
    }
}

/// `columns` of a page with, in `order`, the size of the values before each row (`before`)
/// and before the row ahead of it (`before2`): a row is read with its value while `before` is
/// under the budget, and read at all while `before2` is, so that the first row past the
/// budget comes too, without its value, to say where the page ends. Over the page only,
/// after its LIMIT: never over the whole range.
fn sized(columns: &str, order: &str) -> String {
    format!(
        "SELECT {columns}, \
           coalesce(sum(bytes) OVER (ORDER BY {order} \
             ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS before, \
           coalesce(sum(bytes) OVER (ORDER BY {order} \
             ROWS BETWEEN UNBOUNDED PRECEDING AND 2 PRECEDING), 0) AS before2"
    )
}

/// What one database does its own way.
#[async_trait]
pub trait Dialect: Database {
    const KIND: StoreKind;

    /// `changes_since`'s query: the commit time is a timestamp in PostgreSQL and Unix
    /// milliseconds in SQLite.
    const CHANGES_SINCE: &'static str;

    /// How a snapshot's transaction begins: one that sees a single point in time for every
    /// statement in it.
    const SNAPSHOT_BEGIN: &'static str;

    /// A statement that only the current primary can complete, run after a read on the
    /// read's own session when the store is fenced: the read is then known to come from a
    /// server that was still the primary after it ran (as a Raft leader confirms its
    /// leadership before it answers a read). `None` where there is one server.
    const FENCE: Option<&'static str> = None;

    async fn apply(
        pool: &Pool<Self>,
        node: &str,
        ops: &[WriteOp],
    ) -> Result<Vec<OpResult>, StoreError>;

    /// The newest revision committed more than `retention` ago, as far as the tombstones and
    /// replaced versions still kept can tell: where compaction by age cuts.
    async fn compact_cut(
        pool: &Pool<Self>,
        retention: std::time::Duration,
    ) -> Result<i64, StoreError>;

    /// Drops the versions replaced at or below `revision`, the tombstones at or below it, and
    /// the idempotency records older than `retention`, and raises the compact revision to
    /// `revision`, all in one transaction: a reader that checks the compact revision after its
    /// read knows whether the read could have missed a dropped version.
    async fn compact_to(
        pool: &Pool<Self>,
        revision: i64,
        retention: Option<std::time::Duration>,
    ) -> Result<Compacted, StoreError>;

    async fn is_primary(_pool: &Pool<Self>) -> Result<Option<bool>, StoreError> {
        Ok(None)
    }

    /// The statements built around this dialect's clock.
    fn queries() -> &'static Queries;

    /// A transaction holding the revision lock, and the last revision handed out.
    async fn begin_write(pool: &Pool<Self>) -> Result<(Transaction<'_, Self>, i64), StoreError>;

    /// Runs `plans`, a run that [`txn::batchable`] allows, in the batch's transaction `tx` in
    /// a few statements over all of them, with the outcomes of running them one by one.
    /// `revision` is the last revision handed out and rises with every plan that writes.
    /// `None`: this dialect runs each plan alone, as a round trip costs it nothing.
    async fn run_txns(
        _tx: &mut Transaction<'_, Self>,
        _node: &str,
        _plans: &[TxnPlan],
        _revision: &mut i64,
        _at_ms: i64,
    ) -> Result<Option<Vec<TxnOutcome>>, StoreError> {
        Ok(None)
    }
}

/// A store on one sqlx pool; `DB` picks the database.
#[derive(Debug, Clone)]
pub struct SqlStore<DB: Database> {
    pub(super) pool: Pool<DB>,
    /// Whether reads are fenced (`--read-fence`); only where the dialect has a fence.
    pub(super) read_fence: bool,
}

#[async_trait]
impl<DB> Store for SqlStore<DB>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> Option<&'q str>: Encode<'q, DB> + Type<DB>,
    for<'q> Option<String>: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> bool: Encode<'q, DB> + Type<DB>,
    for<'r> KeyRow: FromRow<'r, DB::Row>,
    for<'r> ChangeRow: FromRow<'r, DB::Row>,
    for<'r> HistoryRow: FromRow<'r, DB::Row>,
    for<'r> (i64,): FromRow<'r, DB::Row>,
    for<'r> (i64, i64): FromRow<'r, DB::Row>,
    for<'r> (i64, i64, i64): FromRow<'r, DB::Row>,
    for<'r> (String,): FromRow<'r, DB::Row>,
    for<'r> (String, Option<Vec<u8>>): FromRow<'r, DB::Row>,
    for<'q> &'q [u8]: Encode<'q, DB> + Type<DB>,
    for<'q> Option<i64>: Encode<'q, DB> + Type<DB>,
{
    fn kind(&self) -> StoreKind {
        DB::KIND
    }

    async fn get(&self, key: &str) -> Result<Option<KeyRecord>, StoreError> {
        let mut session = self.pool.acquire().await?;
        let row: Option<KeyRow> = sqlx::query_as(&DB::queries().get)
            .bind(key)
            .fetch_optional(&mut *session)
            .await?;
        self.fence(&mut session).await?;
        Ok(row.map(KeyRecord::from))
    }

    async fn list(&self, query: &ListQuery<'_>) -> Result<Vec<KeyRecord>, StoreError> {
        let mut session = self.pool.acquire().await?;
        let rows: Vec<KeyRow> = sqlx::query_as(&DB::queries().list)
            .bind(query.prefix)
            .bind(prefix_upper_bound(query.prefix))
            .bind(query.after)
            .bind(i64::from(query.limit))
            .bind(query.with_values)
            .bind(i64::try_from(query.value_bytes).unwrap_or(i64::MAX))
            .fetch_all(&mut *session)
            .await?;
        self.fence(&mut session).await?;
        Ok(rows.into_iter().map(KeyRecord::from).collect())
    }

    async fn count(&self, prefix: &str, after: Option<&str>) -> Result<u64, StoreError> {
        let mut session = self.pool.acquire().await?;
        let count: i64 = sqlx::query_scalar(&DB::queries().count)
            .bind(prefix)
            .bind(prefix_upper_bound(prefix))
            .bind(after)
            .fetch_one(&mut *session)
            .await?;
        self.fence(&mut session).await?;
        Ok(count.max(0) as u64)
    }

    async fn apply(&self, node: &str, ops: &[WriteOp]) -> Result<Vec<OpResult>, StoreError> {
        DB::apply(&self.pool, node, ops).await
    }

    async fn changes_since(
        &self,
        after: i64,
        after_key: Option<&str>,
        prefix: &str,
        limit: u32,
    ) -> Result<Vec<Change>, StoreError> {
        let rows: Vec<ChangeRow> = sqlx::query_as(DB::CHANGES_SINCE)
            .bind(after)
            .bind(prefix)
            .bind(prefix_upper_bound(prefix))
            .bind(i64::from(limit))
            .bind(after_key)
            .bind(kg_api::EVENT_VALUE_MAX_BYTES as i64)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(Change::from).collect())
    }

    async fn current_revision(&self) -> Result<i64, StoreError> {
        self.meta("SELECT revision FROM kg_meta WHERE id = 1").await
    }

    async fn is_primary(&self) -> Result<Option<bool>, StoreError> {
        DB::is_primary(&self.pool).await
    }

    async fn reachable(&self) -> Result<(), StoreError> {
        use sqlx::{ConnectOptions as _, Connection as _};
        let mut connection = self.pool.connect_options().connect().await?;
        let _: i64 = sqlx::query_scalar("SELECT revision FROM kg_meta WHERE id = 1")
            .fetch_one(&mut connection)
            .await?;
        let _ = connection.close().await;
        Ok(())
    }

    async fn compact_revision(&self) -> Result<i64, StoreError> {
        self.meta("SELECT compact_revision FROM kg_meta WHERE id = 1")
            .await
    }

    async fn compact(&self, retention: std::time::Duration) -> Result<Compacted, StoreError> {
        let cut = DB::compact_cut(&self.pool, retention).await?;
        DB::compact_to(&self.pool, cut, Some(retention)).await
    }

    async fn compact_to(
        &self,
        revision: i64,
        idempotent: Option<&Idempotent>,
    ) -> Result<CompactTo, StoreError> {
        if let Some(idempotent) = idempotent {
            let mut session = self.pool.acquire().await?;
            if let Some(replay) = recorded::<DB, CompactResponse>(&mut session, idempotent).await? {
                return Ok(CompactTo::Replayed(replay.map(Compacted::from)));
            }
        }
        let current = self.current_revision().await?;
        if revision > current {
            return Ok(CompactTo::Future { current });
        }
        let done = DB::compact_to(&self.pool, revision, None).await?;
        // Recorded after the compaction committed: a compaction is idempotent in itself, so
        // the record only keeps its answer. A retry that raced this one recorded first, and
        // its answer is the one both give.
        if let Some(idempotent) = idempotent {
            let mut session = self.pool.acquire().await?;
            let answer = CompactResponse::from(done);
            let revision = Some(done.revision);
            if let Some(replay) =
                remember::<DB, _>(&mut session, idempotent, revision, &answer).await?
            {
                return Ok(CompactTo::Replayed(replay.map(Compacted::from)));
            }
        }
        Ok(CompactTo::Done(done))
    }

    async fn get_at(
        &self,
        key: &str,
        revision: i64,
    ) -> Result<AtRevision<Option<KeyRecord>>, StoreError> {
        let mut session = self.pool.acquire().await?;
        if let Some(refused) = self.before_read_at(&mut session, revision).await? {
            return Ok(refused);
        }
        let row: Option<KeyRow> = sqlx::query_as(&DB::queries().get_at)
            .bind(key)
            .bind(revision)
            .fetch_optional(&mut *session)
            .await?;
        self.after_read_at(&mut session, revision, row.map(KeyRecord::from))
            .await
    }

    async fn list_at(
        &self,
        query: &ListQuery<'_>,
        revision: i64,
    ) -> Result<AtRevision<Vec<KeyRecord>>, StoreError> {
        let mut session = self.pool.acquire().await?;
        if let Some(refused) = self.before_read_at(&mut session, revision).await? {
            return Ok(refused);
        }
        let rows: Vec<KeyRow> = sqlx::query_as(&DB::queries().list_at)
            .bind(query.prefix)
            .bind(prefix_upper_bound(query.prefix))
            .bind(query.after)
            .bind(i64::from(query.limit))
            .bind(query.with_values)
            .bind(revision)
            .bind(i64::try_from(query.value_bytes).unwrap_or(i64::MAX))
            .fetch_all(&mut *session)
            .await?;
        let records = rows.into_iter().map(KeyRecord::from).collect();
        self.after_read_at(&mut session, revision, records).await
    }

    async fn count_at(
        &self,
        prefix: &str,
        after: Option<&str>,
        revision: i64,
    ) -> Result<AtRevision<u64>, StoreError> {
        let mut session = self.pool.acquire().await?;
        if let Some(refused) = self.before_read_at(&mut session, revision).await? {
            return Ok(refused);
        }
        let count: i64 = sqlx::query_scalar(&DB::queries().count_at)
            .bind(prefix)
            .bind(prefix_upper_bound(prefix))
            .bind(after)
            .bind(revision)
            .fetch_one(&mut *session)
            .await?;
        self.after_read_at(&mut session, revision, count.max(0) as u64)
            .await
    }

    async fn history(
        &self,
        key: &str,
        before: Option<i64>,
        limit: u32,
        value_bytes: u64,
    ) -> Result<KeyHistory, StoreError> {
        let mut session = self.pool.acquire().await?;
        let mut rows: Vec<HistoryRow> = sqlx::query_as(&DB::queries().key_history)
            .bind(key)
            .bind(before.unwrap_or(i64::MAX))
            .bind(i64::from(limit))
            .bind(i64::try_from(value_bytes).unwrap_or(i64::MAX))
            .fetch_all(&mut *session)
            .await?;
        let cut = rows.iter().position(|row| row.cut);
        if let Some(at) = cut {
            rows.truncate(at);
        }
        let (floor, _): (i64, i64) = sqlx::query_as(&DB::queries().history_floor)
            .fetch_one(&mut *session)
            .await?;
        self.fence(&mut session).await?;
        // A compaction raises the compact revision before it drops what it covers (see
        // `PostgresStore::compact_to`), so versions replaced at or below it may still be read
        // here: they are left out, as they are about to be gone, and so is everything older.
        let mut cut = cut.is_some();
        if let Some(gone) = (1..rows.len()).find(|&at| rows[at - 1].change.mod_revision <= floor) {
            rows.truncate(gone);
            cut = false;
        }
        Ok(KeyHistory {
            versions: rows
                .into_iter()
                .map(|row| Change::from(row.change))
                .collect(),
            compact_revision: floor,
            cut,
        })
    }

    async fn snapshot(&self) -> Result<Box<dyn Snapshot>, StoreError> {
        let mut tx = self.pool.begin_with(DB::SNAPSHOT_BEGIN).await?;
        let revision: i64 = sqlx::query_scalar("SELECT revision FROM kg_meta WHERE id = 1")
            .fetch_one(&mut *tx)
            .await?;
        let keys: i64 = sqlx::query_scalar(&DB::queries().count)
            .bind("")
            .bind(None::<String>)
            .bind(None::<&str>)
            .fetch_one(&mut *tx)
            .await?;
        Ok(Box::new(SqlSnapshot {
            tx,
            revision,
            keys: u64::try_from(keys).unwrap_or_default(),
            fence: self.read_fence.then_some(DB::FENCE).flatten(),
        }))
    }

    async fn lease_grant(
        &self,
        ttl: u64,
        idempotent: Option<&Idempotent>,
    ) -> Result<Granted, StoreError> {
        let ttl = i64::try_from(ttl).unwrap_or(i64::MAX);
        let Some(idempotent) = idempotent else {
            let (id, ttl): (i64, i64) = sqlx::query_as(&DB::queries().lease_grant)
                .bind(ttl)
                .fetch_one(&self.pool)
                .await?;
            return Ok(Granted::New(grant(id, ttl)));
        };
        // Under the revision lock, so that racing retries are answered one after the other.
        let (mut tx, _) = DB::begin_write(&self.pool).await?;
        if let Some(replay) = recorded::<DB, LeaseGrant>(&mut tx, idempotent).await? {
            return Ok(Granted::Replayed(replay));
        }
        let (id, ttl): (i64, i64) = sqlx::query_as(&DB::queries().lease_grant)
            .bind(ttl)
            .fetch_one(&mut *tx)
            .await?;
        let granted = grant(id, ttl);
        if let Some(replay) = remember::<DB, _>(&mut tx, idempotent, None, &granted).await? {
            return Ok(Granted::Replayed(replay));
        }
        tx.commit().await?;
        Ok(Granted::New(granted))
    }

    async fn lease_keepalive(&self, ids: &[i64]) -> Result<Vec<LeaseGrant>, StoreError> {
        let list = ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",");
        let rows: Vec<(i64, i64)> = sqlx::query_as(&DB::queries().lease_keepalive)
            .bind(list.as_str())
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(|(id, ttl)| grant(id, ttl)).collect())
    }

    async fn lease(&self, id: i64) -> Result<Option<LeaseInfo>, StoreError> {
        let mut session = self.pool.acquire().await?;
        let row: Option<(i64, i64, i64)> = sqlx::query_as(&DB::queries().lease)
            .bind(id)
            .fetch_optional(&mut *session)
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let keys: Vec<(String,)> = sqlx::query_as(
            "SELECT key FROM kg_keys WHERE lease = $1 AND value IS NOT NULL ORDER BY key",
        )
        .bind(id)
        .fetch_all(&mut *session)
        .await?;
        self.fence(&mut session).await?;
        let mut info = lease_info(row);
        info.keys = Some(keys.into_iter().map(|(key,)| key).collect());
        Ok(Some(info))
    }

    async fn leases(&self) -> Result<Vec<LeaseInfo>, StoreError> {
        let rows: Vec<(i64, i64, i64)> = sqlx::query_as(&DB::queries().leases)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(lease_info).collect())
    }

    async fn end_leases(
        &self,
        node: &str,
        end: LeaseEnd,
        idempotent: Option<&Idempotent>,
    ) -> Result<Ended, StoreError> {
        let (mut tx, mut revision) = DB::begin_write(&self.pool).await?;
        let idempotent = idempotent.filter(|_| matches!(end, LeaseEnd::Revoke(_)));
        if let Some(idempotent) = idempotent {
            if let Some(replay) = recorded::<DB, LeaseRevokeResponse>(&mut tx, idempotent).await? {
                return Ok(Ended::Replayed(replay));
            }
        }
        let (ids, reason): (Vec<(i64,)>, _) = match end {
            LeaseEnd::Expired(limit) => (
                sqlx::query_as(&DB::queries().expire)
                    .bind(i64::from(limit))
                    .fetch_all(&mut *tx)
                    .await?,
                DeleteReason::Expired,
            ),
            LeaseEnd::Revoke(id) => (
                sqlx::query_as(&DB::queries().revoke)
                    .bind(id)
                    .fetch_all(&mut *tx)
                    .await?,
                DeleteReason::Revoked,
            ),
        };
        if ids.is_empty() {
            // Nothing changed: the transaction's rollback only lets the lock go.
            return Ok(match end {
                LeaseEnd::Expired(_) => Ended::Deleted {
                    changes: Vec::new(),
                    revision,
                },
                LeaseEnd::Revoke(_) => Ended::NotFound,
            });
        }
        let at_ms = chrono::Utc::now().timestamp_millis();
        let mut changes = Vec::new();
        for (id,) in ids {
            let keys: Vec<(String,)> = sqlx::query_as(
                "SELECT key FROM kg_keys WHERE lease = $1 AND value IS NOT NULL ORDER BY key",
            )
            .bind(id)
            .fetch_all(&mut *tx)
            .await?;
            for (key,) in keys {
                revision += 1;
                sqlx::query(&DB::queries().tombstone)
                    .bind(revision)
                    .bind(node)
                    .bind(reason.as_str())
                    .bind(key.as_str())
                    .execute(&mut *tx)
                    .await?;
                changes.push(Change::tombstone(key, revision, node, at_ms, Some(reason)));
            }
        }
        if let Some(idempotent) = idempotent {
            let answer = LeaseRevokeResponse {
                deleted: changes.len() as u64,
                revision,
            };
            if let Some(replay) =
                remember::<DB, _>(&mut tx, idempotent, Some(revision), &answer).await?
            {
                return Ok(Ended::Replayed(replay));
            }
        }
        sqlx::query("UPDATE kg_meta SET revision = $1 WHERE id = 1")
            .bind(revision)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Ended::Deleted { changes, revision })
    }

    async fn delete_prefix(
        &self,
        node: &str,
        prefix: &str,
        idempotent: Option<&Idempotent>,
        mark: &MarkKeys,
    ) -> Result<PrefixDelete, StoreError> {
        let upper = prefix_upper_bound(prefix);
        let (mut tx, revision) = DB::begin_write(&self.pool).await?;
        // Under the revision lock: a retry that raced the first attempt waits for its commit
        // and finds its record.
        if let Some(idempotent) = idempotent {
            if let Some(replay) = recorded::<DB, DeletePrefixResponse>(&mut tx, idempotent).await? {
                return Ok(PrefixDelete::Replayed(replay));
            }
        }
        // Counted under the revision lock, so the count is what the delete would remove.
        let live: i64 = sqlx::query_scalar(&DB::queries().count)
            .bind(prefix)
            .bind(upper.clone())
            .bind(None::<&str>)
            .fetch_one(&mut *tx)
            .await?;
        let live = u64::try_from(live).unwrap_or_default();
        if live > MAX_PREFIX_DELETE {
            return Ok(PrefixDelete::TooMany(live));
        }
        if live == 0 {
            // etcd's DeleteRange does not use a revision when it deletes nothing either.
            if let Some(idempotent) = idempotent {
                let answer = DeletePrefixResponse::new(0, revision);
                if let Some(replay) =
                    remember::<DB, _>(&mut tx, idempotent, Some(revision), &answer).await?
                {
                    return Ok(PrefixDelete::Replayed(replay));
                }
                tx.commit().await?;
            }
            return Ok(PrefixDelete::Nothing { revision });
        }
        let revision = revision + 1;
        let deleted: Vec<(String,)> = sqlx::query_as(&DB::queries().delete_range)
            .bind(revision)
            .bind(node)
            .bind(prefix)
            .bind(upper)
            .fetch_all(&mut *tx)
            .await?;
        let mut keys: Vec<String> = deleted.into_iter().map(|(key,)| key).collect();
        keys.sort_unstable();
        if let Some(idempotent) = idempotent {
            let answer = DeletePrefixResponse::new(keys.len() as u64, revision);
            if let Some(replay) =
                remember::<DB, _>(&mut tx, idempotent, Some(revision), &answer).await?
            {
                return Ok(PrefixDelete::Replayed(replay));
            }
        }
        // Marked before the commit makes the deletes visible: see `cache.rs`.
        let epoch = mark(keys.clone()).await;
        sqlx::query("UPDATE kg_meta SET revision = $1 WHERE id = 1")
            .bind(revision)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        let at_ms = chrono::Utc::now().timestamp_millis();
        let changes = keys
            .into_iter()
            .map(|key| Change::tombstone(key, revision, node, at_ms, None))
            .collect();
        Ok(PrefixDelete::Deleted { changes, epoch })
    }

    async fn txns(
        &self,
        node: &str,
        plans: &[TxnPlan],
        mark: &MarkKeys,
    ) -> Result<(Vec<TxnOutcome>, i64), StoreError> {
        let queries = DB::queries();
        let (mut tx, mut revision) = DB::begin_write(&self.pool).await?;
        let at_ms = chrono::Utc::now().timestamp_millis();
        let mut outcomes = Vec::with_capacity(plans.len());
        let mut changed = Vec::new();
        let mut next_plan = 0;
        while next_plan < plans.len() {
            let run = txn::batchable(&plans[next_plan..]);
            if run > 0 {
                let batch = &plans[next_plan..next_plan + run];
                if let Some(done) = DB::run_txns(&mut tx, node, batch, &mut revision, at_ms).await?
                {
                    for outcome in &done {
                        if let TxnOutcome::Done { changes, .. } = outcome {
                            changed.extend(changes.iter().map(|change| change.key.clone()));
                        }
                    }
                    outcomes.extend(done);
                    next_plan += run;
                    continue;
                }
            }
            let plan = &plans[next_plan];
            next_plan += 1;
            let fingerprint = plan.idempotency_key.as_ref().map(|_| plan.fingerprint());
            if let (Some(id), Some(fingerprint)) = (&plan.idempotency_key, &fingerprint) {
                let prior: Option<(String, Option<Vec<u8>>)> = sqlx::query_as(
                    "SELECT fingerprint, response FROM kg_idempotency WHERE id = $1",
                )
                .bind(id.as_str())
                .fetch_optional(&mut *tx)
                .await?;
                if let Some((prior, response)) = prior {
                    outcomes.push(TxnOutcome::replay(&prior, fingerprint, response.as_deref()));
                    continue;
                }
            }
            let request = &plan.request;
            let mut succeeded = true;
            for compare in &request.compare {
                let row: Option<KeyRow> = sqlx::query_as(&queries.get)
                    .bind(compare.key.as_str())
                    .fetch_optional(&mut *tx)
                    .await?;
                let current = row.as_ref().map(txn::Current::from);
                succeeded &= txn::holds(compare, current.as_ref());
            }
            let ops = if succeeded {
                &request.success
            } else {
                &request.failure
            };
            // Every way the branch can be refused is checked before its first write, so a
            // refused transaction writes nothing without a savepoint to roll back to.
            let mut refused = None;
            let mut deleting = 0u64;
            let mut reading = 0u64;
            for op in ops {
                match op {
                    TxnOp::Get { key } => {
                        let bytes: Option<i64> = sqlx::query_scalar(&queries.value_bytes)
                            .bind(key.as_str())
                            .fetch_optional(&mut *tx)
                            .await?;
                        reading += u64::try_from(bytes.unwrap_or_default()).unwrap_or_default();
                        // A get after the branch's own put of the key reads that value.
                        reading += ops
                            .iter()
                            .filter_map(|earlier| match earlier {
                                TxnOp::Put {
                                    key: put, value, ..
                                } if put == key => Some(value.len() as u64),
                                _ => None,
                            })
                            .sum::<u64>();
                    }
                    TxnOp::Put {
                        lease: Some(lease), ..
                    } => {
                        let live: Option<(i64, i64, i64)> = sqlx::query_as(&queries.lease)
                            .bind(*lease)
                            .fetch_optional(&mut *tx)
                            .await?;
                        if live.is_none() {
                            refused = Some(TxnOutcome::LeaseNotFound(*lease));
                            break;
                        }
                    }
                    TxnOp::DeletePrefix { prefix } => {
                        let live: i64 = sqlx::query_scalar(&queries.count)
                            .bind(prefix.as_str())
                            .bind(prefix_upper_bound(prefix))
                            .bind(None::<&str>)
                            .fetch_one(&mut *tx)
                            .await?;
                        deleting += u64::try_from(live).unwrap_or_default();
                    }
                    _ => {}
                }
            }
            if deleting > MAX_PREFIX_DELETE {
                refused = refused.or(Some(TxnOutcome::TooMany(deleting)));
            }
            if reading > MAX_PAGE_BYTES as u64 {
                refused = refused.or(Some(TxnOutcome::TooLarge(reading)));
            }
            if let Some(refused) = refused {
                outcomes.push(refused);
                continue;
            }
            let next = revision + 1;
            let mut results = Vec::with_capacity(ops.len());
            let mut changes = Vec::new();
            let change = |key: &str, value: Option<&str>, create_revision, version, lease| Change {
                key: key.to_owned(),
                value: value.map(str::to_owned),
                revision: next,
                create_revision,
                version,
                node: node.to_owned(),
                at_ms,
                lease,
                reason: None,
                value_bytes: None,
            };
            for op in ops {
                match op {
                    TxnOp::Put { key, value, lease } => {
                        let (create_revision, version): (i64, i64) =
                            sqlx::query_as(&queries.upsert)
                                .bind(key.as_str())
                                .bind(value.as_bytes())
                                .bind(next)
                                .bind(node)
                                .bind(*lease)
                                .fetch_one(&mut *tx)
                                .await?;
                        changes.push(change(key, Some(value), create_revision, version, *lease));
                        results.push(TxnResult::Put {
                            key: key.clone(),
                            create_revision,
                            version,
                        });
                    }
                    TxnOp::Delete { key } => {
                        let deleted: Option<(String,)> = sqlx::query_as(&queries.delete_key)
                            .bind(next)
                            .bind(node)
                            .bind(key.as_str())
                            .fetch_optional(&mut *tx)
                            .await?;
                        if deleted.is_some() {
                            changes.push(change(key, None, 0, 0, None));
                        }
                        results.push(TxnResult::Delete {
                            key: key.clone(),
                            deleted: u64::from(deleted.is_some()),
                        });
                    }
                    TxnOp::DeletePrefix { prefix } => {
                        let deleted: Vec<(String,)> = sqlx::query_as(&queries.delete_range)
                            .bind(next)
                            .bind(node)
                            .bind(prefix.as_str())
                            .bind(prefix_upper_bound(prefix))
                            .fetch_all(&mut *tx)
                            .await?;
                        for (key,) in &deleted {
                            changes.push(change(key, None, 0, 0, None));
                        }
                        results.push(TxnResult::DeletePrefix {
                            prefix: prefix.clone(),
                            deleted: deleted.len() as u64,
                        });
                    }
                    TxnOp::Get { key } => {
                        let row: Option<KeyRow> = sqlx::query_as(&queries.get)
                            .bind(key.as_str())
                            .fetch_optional(&mut *tx)
                            .await?;
                        results.push(TxnResult::Get {
                            key: key.clone(),
                            kv: row.map(KeyRecord::from),
                        });
                    }
                }
            }
            if !changes.is_empty() {
                revision = next;
            }
            // Watchers get a revision's events in key order (see `watch.rs`).
            changes.sort_by(|a, b| a.key.cmp(&b.key));
            let response = TxnResponse {
                succeeded,
                revision,
                results,
            };
            if let (Some(id), Some(fingerprint)) = (&plan.idempotency_key, &fingerprint) {
                let body = serde_json::to_vec(&response)
                    .map_err(|err| StoreError::Internal(sqlx::Error::Decode(err.into())))?;
                sqlx::query(&queries.remember_txn)
                    .bind(id.as_str())
                    .bind(fingerprint.as_str())
                    .bind(revision)
                    .bind(body.as_slice())
                    .execute(&mut *tx)
                    .await?;
            }
            changed.extend(changes.iter().map(|change| change.key.clone()));
            outcomes.push(TxnOutcome::Done {
                response,
                changes,
                replayed: false,
            });
        }
        if changed.is_empty() {
            // Nothing written but idempotency records, if any: they still commit.
            tx.commit().await?;
            return Ok((outcomes, 0));
        }
        // Marked before the commit makes the writes visible: see `cache.rs`.
        changed.sort_unstable();
        changed.dedup();
        let epoch = mark(changed).await;
        sqlx::query("UPDATE kg_meta SET revision = $1 WHERE id = 1")
            .bind(revision)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok((outcomes, epoch))
    }

    async fn leases_due(&self) -> Result<bool, StoreError> {
        let due: i64 = sqlx::query_scalar(&DB::queries().leases_due)
            .fetch_one(&self.pool)
            .await?;
        Ok(due > 0)
    }

    async fn refresh_leases(&self, since: std::time::Duration) -> Result<u64, StoreError> {
        let mut since_ms = i64::try_from(since.as_millis()).unwrap_or(i64::MAX / 2);
        if crate::planted::active("lease-refresh-revives-expired") {
            // Issue 47 item 1, planted back: every lease past its deadline that the sweeper
            // has not deleted yet is given its TTL again.
            since_ms = i64::MAX / 4;
        }
        // A read first: with no lease to extend, a database that takes no writes (read-only,
        // or a standby mid-failover) does not hold up every read behind this refresh.
        let due: i64 = sqlx::query_scalar(&DB::queries().leases_to_refresh)
            .bind(since_ms)
            .fetch_one(&self.pool)
            .await?;
        if due == 0 {
            return Ok(0);
        }
        let extended: Vec<(i64,)> = sqlx::query_as(&DB::queries().refresh_leases)
            .bind(since_ms)
            .fetch_all(&self.pool)
            .await?;
        Ok(extended.len() as u64)
    }
}

/// [`Store::snapshot`] over sqlx: one transaction for every page.
struct SqlSnapshot<DB: Database> {
    tx: Transaction<'static, DB>,
    revision: i64,
    keys: u64,
    fence: Option<&'static str>,
}

#[async_trait]
impl<DB> Snapshot for SqlSnapshot<DB>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> Option<&'q str>: Encode<'q, DB> + Type<DB>,
    for<'q> Option<String>: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> bool: Encode<'q, DB> + Type<DB>,
    for<'r> KeyRow: FromRow<'r, DB::Row>,
{
    fn revision(&self) -> i64 {
        self.revision
    }

    fn keys(&self) -> u64 {
        self.keys
    }

    async fn page(
        &mut self,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<KeyRecord>, StoreError> {
        let mut rows: Vec<KeyRow> = sqlx::query_as(&DB::queries().list)
            .bind("")
            .bind(None::<String>)
            .bind(after)
            .bind(i64::from(limit))
            .bind(true)
            .bind(kg_api::MAX_PAGE_BYTES as i64)
            .fetch_all(&mut *self.tx)
            .await?;
        // The first key read without its value is past the page's byte budget: the next page
        // starts with it.
        if let Some(cut) = rows.iter().position(|row| row.value.is_none()) {
            rows.truncate(cut);
        }
        Ok(rows.into_iter().map(KeyRecord::from).collect())
    }

    async fn finish(mut self: Box<Self>) -> Result<(), StoreError> {
        if let Some(fence) = self.fence {
            sqlx::query(fence).execute(&mut *self.tx).await?;
        }
        // Committing makes the fence wait for the synchronous standby, as a fenced read's
        // does; a server that is no longer the primary cannot.
        self.tx.commit().await?;
        Ok(())
    }
}

/// The answer recorded under `idempotent`'s key, if there is one: the same request's, or a
/// mismatch when the key named another (or another kind of) request.
async fn recorded<DB, T>(
    session: &mut DB::Connection,
    idempotent: &Idempotent,
) -> Result<Option<Replay<T>>, StoreError>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'r> (String, Option<Vec<u8>>): FromRow<'r, DB::Row>,
    T: serde::de::DeserializeOwned,
{
    let prior: Option<(String, Option<Vec<u8>>)> =
        sqlx::query_as("SELECT fingerprint, response FROM kg_idempotency WHERE id = $1")
            .bind(idempotent.key.as_str())
            .fetch_optional(&mut *session)
            .await?;
    Ok(prior.map(|(fingerprint, response)| {
        match response
            .filter(|_| fingerprint == idempotent.fingerprint)
            .and_then(|body| serde_json::from_slice(&body).ok())
        {
            Some(answer) => Replay::Same(answer),
            None => Replay::Mismatch,
        }
    }))
}

/// Records `answer` under `idempotent`'s key. `Some` when a request that raced this one
/// recorded first: its answer, which this one must give too (and roll back what it wrote).
async fn remember<DB, T>(
    session: &mut DB::Connection,
    idempotent: &Idempotent,
    revision: Option<i64>,
    answer: &T,
) -> Result<Option<Replay<T>>, StoreError>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> &'q [u8]: Encode<'q, DB> + Type<DB>,
    for<'q> Option<i64>: Encode<'q, DB> + Type<DB>,
    for<'r> (String,): FromRow<'r, DB::Row>,
    for<'r> (String, Option<Vec<u8>>): FromRow<'r, DB::Row>,
    T: serde::Serialize + serde::de::DeserializeOwned,
{
    let body = serde_json::to_vec(answer)
        .map_err(|err| StoreError::Internal(sqlx::Error::Decode(err.into())))?;
    let inserted: Option<(String,)> = sqlx::query_as(&DB::queries().remember_answer)
        .bind(idempotent.key.as_str())
        .bind(idempotent.fingerprint.as_str())
        .bind(revision)
        .bind(body.as_slice())
        .fetch_optional(&mut *session)
        .await?;
    if inserted.is_some() {
        return Ok(None);
    }
    recorded::<DB, T>(session, idempotent).await
}

fn grant(id: i64, ttl: i64) -> LeaseGrant {
    LeaseGrant {
        id,
        ttl: u64::try_from(ttl).unwrap_or_default(),
    }
}

fn lease_info((id, ttl, remaining_ms): (i64, i64, i64)) -> LeaseInfo {
    LeaseInfo {
        id,
        ttl: u64::try_from(ttl).unwrap_or_default(),
        remaining_ms,
        keys: None,
    }
}

impl<DB> SqlStore<DB>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'r> (i64,): FromRow<'r, DB::Row>,
{
    /// The dialect's fence on `session`, when reads are fenced.
    async fn fence(&self, session: &mut PoolConnection<DB>) -> Result<(), StoreError>
    where
        DB: Dialect,
    {
        if let (true, Some(fence)) = (self.read_fence, DB::FENCE) {
            sqlx::query(fence).execute(&mut **session).await?;
        }
        Ok(())
    }

    /// One counter of the `kg_meta` row.
    async fn meta(&self, sql: &'static str) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(sql).fetch_one(&self.pool).await?)
    }

    /// Refuses a read at a revision not yet handed out. Checked before the read: every write
    /// at or below a revision that `kg_meta` shows has committed, so the read sees them all.
    async fn before_read_at<T>(
        &self,
        session: &mut PoolConnection<DB>,
        revision: i64,
    ) -> Result<Option<AtRevision<T>>, StoreError>
    where
        DB: Dialect,
        for<'r> (i64, i64): FromRow<'r, DB::Row>,
    {
        let (_, current): (i64, i64) = sqlx::query_as(&DB::queries().history_floor)
            .fetch_one(&mut **session)
            .await?;
        Ok((revision > current).then_some(AtRevision::Future { current }))
    }

    /// Answers a read at `revision` once it has run, unless the versions it needs may be gone.
    /// Checked after the read: a compaction that dropped any of them committed its compact
    /// revision with the drop, before the read's view of the database was taken.
    async fn after_read_at<T>(
        &self,
        session: &mut PoolConnection<DB>,
        revision: i64,
        found: T,
    ) -> Result<AtRevision<T>, StoreError>
    where
        DB: Dialect,
        for<'r> (i64, i64): FromRow<'r, DB::Row>,
    {
        let (floor, _): (i64, i64) = sqlx::query_as(&DB::queries().history_floor)
            .fetch_one(&mut **session)
            .await?;
        self.fence(session).await?;
        Ok(if revision < floor {
            AtRevision::Compacted { floor }
        } else {
            AtRevision::Found(found)
        })
    }
}
