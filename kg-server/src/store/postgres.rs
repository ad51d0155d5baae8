//! The PostgreSQL store: reads are single prepared statements, and a write batch is one call of
//! the `kg_apply` function (see `migrations/postgres`), so a whole batch costs one round trip
//! and one commit.

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, Postgres};
use sqlx::ConnectOptions as _;
use std::str::FromStr;

use std::sync::OnceLock;

use super::sql::{Dialect, Queries, SqlStore};
use super::{
    Compacted, ConnectOptions, OpResult, StoreError, StoreKind, TxnOutcome, TxnPlan, WriteOp,
    WriteOutcome,
};

/// `id` is one of the comma-separated integers in `$1`. `= ANY` over an array is planned as
/// index lookups whatever its length, where an IN over a set-returning function may be
/// planned as a scan of every lease.
const POSTGRES_ID_IN_LIST: &str = "id = ANY(CAST('{' || CAST($1 AS text) || '}' AS bigint[]))";

/// The store on PostgreSQL.
pub type PostgresStore = SqlStore<Postgres>;

impl PostgresStore {
    pub async fn connect(url: &str, options: &ConnectOptions) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        let connect = PgConnectOptions::from_str(url)
            .with_context(|| format!("invalid postgres url {url:?}"))?
            .application_name("kg-server")
            .log_statements(tracing::log::LevelFilter::Trace);
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections)
            .min_connections(1)
            .acquire_timeout(options.acquire_timeout)
            .connect_with(connect)
            .await
            .with_context(|| {
                format!(
                    "failed to connect to postgres at {}",
                    super::redact_url(url)
                )
            })?;
        sqlx::migrate!("./migrations/postgres")
            .run(&pool)
            .await
            .context("failed to run postgres migrations")?;
        Ok(Self {
            pool,
            read_fence: options.read_fence,
        })
    }
}

#[async_trait]
impl Dialect for Postgres {
    const KIND: StoreKind = StoreKind::Postgres;

    // Not READ ONLY: a fenced snapshot ends with the fence, which writes.
    const SNAPSHOT_BEGIN: &'static str = "BEGIN ISOLATION LEVEL REPEATABLE READ";

    // A transactional WAL record (an empty logical message) makes the statement's implicit
    // transaction commit like a write: with synchronous_commit on, the commit waits for a
    // synchronous standby. (A transaction ID alone writes no WAL and does not wait.) Under
    // Patroni's strict synchronous mode a deposed primary has no standby left (it was
    // promoted, or follows the new leader), so it cannot answer. pg_current_xact_id comes
    // first, as CASE guarantees, because on a standby it fails with SQLSTATE 25006 (a 503)
    // where the message would fail with an internal error.
    const FENCE: Option<&'static str> = Some(
        "SELECT CASE WHEN pg_current_xact_id() IS NOT NULL \
         THEN pg_logical_emit_message(true, 'keygrid-read-fence', '') END",
    );

    // A value no event carries (over EVENT_VALUE_MAX_BYTES) is left out: only its size is
    // read, from its TOAST pointer.
    const CHANGES_SINCE: &'static str =
        "SELECT key, CASE WHEN length(value) <= CAST($6 AS bigint) THEN value END AS value, \
           CAST(length(value) AS bigint) AS value_bytes, create_revision, mod_revision, \
           version, mod_node, \
           (extract(epoch FROM mod_at) * 1000)::bigint AS mod_at_ms, lease, reason FROM kg_keys \
         WHERE mod_revision >= $1 AND (mod_revision > $1 OR key > $5::text) \
           AND key >= $2 AND ($3::text IS NULL OR key < $3) \
         ORDER BY mod_revision, key LIMIT $4";

    async fn apply(
        pool: &PgPool,
        node: &str,
        ops: &[WriteOp],
    ) -> Result<Vec<OpResult>, StoreError> {
        let deletes: Vec<bool> = ops.iter().map(|op| op.value.is_none()).collect();
        let keys: Vec<&str> = ops.iter().map(|op| op.key.as_str()).collect();
        let values: Vec<Option<&[u8]>> = ops
            .iter()
            .map(|op| op.value.as_deref().map(str::as_bytes))
            .collect();
        let expects: Vec<Option<i64>> = ops.iter().map(|op| op.expect.to_sql()).collect();
        let idempotency_keys: Vec<Option<&str>> =
            ops.iter().map(|op| op.idempotency_key.as_deref()).collect();
        let fingerprints: Vec<Option<String>> = ops
            .iter()
            .map(|op| op.idempotency_key.as_ref().map(|_| op.fingerprint()))
            .collect();
        let leases: Vec<Option<i64>> = ops.iter().map(|op| op.lease).collect();
        let rows: Vec<(i16, Option<i64>, Option<i64>, Option<i64>, bool)> =
            sqlx::query_as("SELECT * FROM kg_apply($1, $2, $3, $4, $5, $6, $7, $8)")
                .bind(node)
                .bind(deletes)
                .bind(keys)
                .bind(values)
                .bind(expects)
                .bind(idempotency_keys)
                .bind(fingerprints)
                .bind(leases)
                .fetch_all(pool)
                .await?;
        Ok(rows
            .into_iter()
            .map(|(status, revision, create, version, replayed)| OpResult {
                outcome: WriteOutcome::from_sql(status, revision, create, version),
                replayed,
            })
            .collect())
    }

    async fn compact_cut(pool: &PgPool, retention: std::time::Duration) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT GREATEST( \
                 (SELECT coalesce(max(mod_revision), 0) FROM kg_keys \
                  WHERE value IS NULL AND mod_at < now() - make_interval(secs => $1)), \
                 (SELECT coalesce(max(superseded), 0) FROM kg_history \
                  WHERE superseded_at < now() - make_interval(secs => $1)))",
        )
        .bind(retention.as_secs_f64())
        .fetch_one(pool)
        .await?)
    }

    async fn compact_to(
        pool: &PgPool,
        revision: i64,
        retention: Option<std::time::Duration>,
    ) -> Result<Compacted, StoreError> {
        // Locks are taken in the writers' order, or not at all. A write batch takes the
        // revision lock (kg_meta's row) first, then the rows of its keys, and one that
        // re-creates a purged key needs that key's tombstone row: a compaction that held
        // tombstones while it waited for kg_meta closed a cycle, and PostgreSQL broke it by
        // failing the batch or the compaction.
        //
        // So the compact revision is raised first, in a transaction of its own that holds
        // nothing else. Readers check it after they read (see `after_read_at`), and a
        // replay after each page, so from its commit on nothing below it is answered; what
        // it covers may then be dropped at leisure. The drop never waits for a writer: a
        // tombstone row a writer holds is being re-created, and is skipped.
        let mut tx = pool.begin().await?;
        let revision: i64 = sqlx::query_scalar(
            "UPDATE kg_meta SET compact_revision = GREATEST(compact_revision, $1) WHERE id = 1 \
             RETURNING compact_revision",
        )
        .bind(revision)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        let mut tx = pool.begin().await?;
        if let Some(retention) = retention {
            sqlx::query(
                "DELETE FROM kg_idempotency WHERE created_at < now() - make_interval(secs => $1)",
            )
            .bind(retention.as_secs_f64())
            .execute(&mut *tx)
            .await?;
        }
        let versions = sqlx::query("DELETE FROM kg_history WHERE superseded <= $1")
            .bind(revision)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        let tombstones = sqlx::query(
            "DELETE FROM kg_keys WHERE key IN (SELECT key FROM kg_keys \
               WHERE value IS NULL AND mod_revision <= $1 FOR UPDATE SKIP LOCKED)",
        )
        .bind(revision)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(Compacted {
            revision,
            tombstones,
            versions,
        })
    }

    fn queries() -> &'static Queries {
        static QUERIES: OnceLock<Queries> = OnceLock::new();
        QUERIES.get_or_init(|| {
            Queries::new(
                "kg_now_ms()",
                "now()",
                "GREATEST",
                POSTGRES_ID_IN_LIST,
                true,
                "(extract(epoch FROM mod_at) * 1000)::bigint",
            )
        })
    }

    async fn begin_write(
        pool: &PgPool,
    ) -> Result<(sqlx::Transaction<'_, Postgres>, i64), StoreError> {
        let mut tx = pool.begin().await?;
        // The clock the transaction judges leases by (kg_now_ms) is read once the lock is
        // held, not at BEGIN: the wait for the lock may be long (migration 0008). The outer
        // SELECT's columns are computed above the locking CTE's rows, so after the wait.
        let (revision, _clock): (i64, String) = sqlx::query_as(
            "WITH locked AS (SELECT revision FROM kg_meta WHERE id = 1 FOR UPDATE) \
             SELECT revision, set_config('kg.now_ms', \
               CAST(CAST(extract(epoch FROM clock_timestamp()) * 1000 AS bigint) AS text), \
               true) FROM locked",
        )
        .fetch_one(&mut *tx)
        .await?;
        Ok((tx, revision))
    }

    async fn run_txns(
        tx: &mut sqlx::Transaction<'_, Postgres>,
        node: &str,
        plans: &[TxnPlan],
        revision: &mut i64,
        at_ms: i64,
    ) -> Result<Option<Vec<TxnOutcome>>, StoreError> {
        super::postgres_txn::run(tx, node, plans, revision, at_ms)
            .await
            .map(Some)
    }

    async fn is_primary(pool: &PgPool) -> Result<Option<bool>, StoreError> {
        let primary: bool = sqlx::query_scalar("SELECT NOT pg_is_in_recovery()")
            .fetch_one(pool)
            .await?;
        Ok(Some(primary))
    }
}
