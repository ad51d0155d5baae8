//! The embedded SQLite store: the same model as PostgreSQL's, with the batch logic of
//! `kg_apply` written in Rust inside one `BEGIN IMMEDIATE` transaction.
//!
//! WAL mode plus a busy timeout lets several processes share one file; `BEGIN IMMEDIATE` takes
//! the write lock up front so a read-then-write batch never fails to upgrade its lock.

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context as _;
use async_trait::async_trait;
use sqlx::sqlite::{
    Sqlite, SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};

use std::sync::OnceLock;

use super::sql::{Dialect, Queries, SqlStore};
use super::{
    Compacted, ConnectOptions, Expect, OpResult, StoreError, StoreKind, WriteOp, WriteOutcome,
};

/// The embedded store on SQLite.
pub type SqliteStore = SqlStore<Sqlite>;

impl SqliteStore {
    pub async fn connect(url: &str, options: &ConnectOptions) -> anyhow::Result<Self> {
        let connect = SqliteConnectOptions::from_str(url)
            .with_context(|| format!("invalid sqlite url {url:?}"))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: an acknowledged write survives power loss, as it does on PostgreSQL.
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        if let Some(parent) = connect.get_filename().parent() {
            if !parent.as_os_str().is_empty() {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("failed to create {}", parent.display()))?;
            }
        }
        // Nodes starting together on a new file race for it: turning on WAL takes a lock that
        // may answer "database is locked" without waiting out the busy timeout, and sqlx's
        // SQLite migrator takes no lock at all (its PostgreSQL one takes an advisory lock), so
        // both apply the same migration and the loser's fails ("table kg_meta already
        // exists"). Each migration is one transaction with its record in `_sqlx_migrations`,
        // so the loser's rolled back whole; opening again finds it applied and goes on.
        let mut attempt = 0;
        let pool = loop {
            attempt += 1;
            match Self::open(url, connect.clone(), options).await {
                Ok(pool) => break pool,
                Err(err) if attempt < 10 => {
                    let err = format!("{err:#}");
                    tracing::debug!(%err, attempt, "opening sqlite raced another node; again");
                    tokio::time::sleep(Duration::from_millis(50 * attempt)).await;
                }
                Err(err) => return Err(err),
            }
        };
        Ok(Self {
            pool,
            read_fence: false,
        })
    }

    /// A pool on the file, migrated.
    async fn open(
        url: &str,
        connect: SqliteConnectOptions,
        options: &ConnectOptions,
    ) -> anyhow::Result<SqlitePool> {
        let pool = SqlitePoolOptions::new()
            .max_connections(options.max_connections)
            .acquire_timeout(options.acquire_timeout)
            .connect_with(connect)
            .await
            .with_context(|| format!("failed to open sqlite database {url}"))?;
        sqlx::migrate!("./migrations/sqlite")
            .run(&pool)
            .await
            .context("failed to run sqlite migrations")?;
        Ok(pool)
    }
}

#[async_trait]
impl Dialect for Sqlite {
    const KIND: StoreKind = StoreKind::Sqlite;

    // A deferred transaction in WAL mode reads one snapshot of the file, taken at its first
    // read, whatever commits meanwhile.
    const SNAPSHOT_BEGIN: &'static str = "BEGIN";

    // A value no event carries (over EVENT_VALUE_MAX_BYTES) is left out: only its size is
    // read, which SQLite takes from the record without loading the value.
    const CHANGES_SINCE: &'static str =
        "SELECT key, CASE WHEN length(value) <= CAST($6 AS bigint) THEN value END AS value, \
           CAST(length(value) AS bigint) AS value_bytes, create_revision, mod_revision, \
           version, mod_node, \
           mod_at AS mod_at_ms, lease, reason FROM kg_keys \
         WHERE mod_revision >= $1 AND (mod_revision > $1 OR key > $5) \
           AND key >= $2 AND ($3 IS NULL OR key < $3) \
         ORDER BY mod_revision, key LIMIT $4";

    async fn apply(
        pool: &SqlitePool,
        node: &str,
        ops: &[WriteOp],
    ) -> Result<Vec<OpResult>, StoreError> {
        let now_ms = chrono::Utc::now().timestamp_millis();
        let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
        let mut revision: i64 = sqlx::query_scalar("SELECT revision FROM kg_meta WHERE id = 1")
            .fetch_one(&mut *tx)
            .await?;
        let mut results = Vec::with_capacity(ops.len());
        for op in ops {
            let fingerprint = op.idempotency_key.as_ref().map(|_| op.fingerprint());
            if let (Some(id), Some(fingerprint)) = (&op.idempotency_key, &fingerprint) {
                let prior: Option<(String, i16, Option<i64>, Option<i64>, Option<i64>)> =
                    sqlx::query_as(
                        "SELECT fingerprint, status, revision, create_revision, version \
                         FROM kg_idempotency WHERE id = ?1",
                    )
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await?;
                if let Some((prior_fingerprint, status, prior_revision, create, version)) = prior {
                    let outcome = if prior_fingerprint == *fingerprint {
                        WriteOutcome::from_sql(status, prior_revision, create, version)
                    } else {
                        WriteOutcome::IdempotencyMismatch
                    };
                    results.push(OpResult {
                        outcome,
                        replayed: true,
                    });
                    continue;
                }
            }
            let outcome = apply_one(&mut tx, node, now_ms, op, &mut revision).await?;
            if let (Some(id), Some(fingerprint)) = (&op.idempotency_key, &fingerprint) {
                let (status, recorded_revision, create, version) = outcome.to_sql();
                sqlx::query(
                    "INSERT INTO kg_idempotency \
                       (id, fingerprint, status, revision, create_revision, version, created_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )
                .bind(id)
                .bind(fingerprint)
                .bind(status)
                .bind(recorded_revision)
                .bind(create)
                .bind(version)
                .bind(now_ms)
                .execute(&mut *tx)
                .await?;
            }
            results.push(OpResult {
                outcome,
                replayed: false,
            });
        }
        sqlx::query("UPDATE kg_meta SET revision = ?1 WHERE id = 1")
            .bind(revision)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(results)
    }

    fn queries() -> &'static Queries {
        static QUERIES: OnceLock<Queries> = OnceLock::new();
        QUERIES.get_or_init(|| {
            Queries::new(
                SQLITE_NOW_MS,
                SQLITE_NOW_MS,
                "max",
                SQLITE_ID_IN_LIST,
                false,
                "mod_at",
            )
        })
    }

    async fn begin_write(
        pool: &SqlitePool,
    ) -> Result<(sqlx::Transaction<'_, Sqlite>, i64), StoreError> {
        let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
        let revision: i64 = sqlx::query_scalar("SELECT revision FROM kg_meta WHERE id = 1")
            .fetch_one(&mut *tx)
            .await?;
        Ok((tx, revision))
    }

    async fn compact_cut(
        pool: &SqlitePool,
        retention: std::time::Duration,
    ) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT max( \
                 (SELECT coalesce(max(mod_revision), 0) FROM kg_keys \
                  WHERE value IS NULL AND mod_at < ?1), \
                 (SELECT coalesce(max(superseded), 0) FROM kg_history WHERE superseded_at < ?1))",
        )
        .bind(cutoff_ms(retention))
        .fetch_one(pool)
        .await?)
    }

    async fn compact_to(
        pool: &SqlitePool,
        revision: i64,
        retention: Option<std::time::Duration>,
    ) -> Result<Compacted, StoreError> {
        let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
        if let Some(retention) = retention {
            sqlx::query("DELETE FROM kg_idempotency WHERE created_at < ?1")
                .bind(cutoff_ms(retention))
                .execute(&mut *tx)
                .await?;
        }
        let versions = sqlx::query("DELETE FROM kg_history WHERE superseded <= ?1")
            .bind(revision)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        let tombstones =
            sqlx::query("DELETE FROM kg_keys WHERE value IS NULL AND mod_revision <= ?1")
                .bind(revision)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        let revision: i64 = sqlx::query_scalar(
            "UPDATE kg_meta SET compact_revision = max(compact_revision, ?1) WHERE id = 1 \
             RETURNING compact_revision",
        )
        .bind(revision)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Compacted {
            revision,
            tombstones,
            versions,
        })
    }
}

/// Unix milliseconds `retention` ago, by this machine's clock (SQLite's own, for one node).
fn cutoff_ms(retention: std::time::Duration) -> i64 {
    let retention_ms = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
    chrono::Utc::now()
        .timestamp_millis()
        .saturating_sub(retention_ms)
}

/// SQLite's clock in Unix milliseconds: `julianday('now')` is fixed for the length of one
/// statement, as PostgreSQL's `now()` is for a transaction.
const SQLITE_NOW_MS: &str = "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)";

/// `id` is one of the comma-separated integers in `$1`: SQLite has no arrays, but reads a
/// list as a JSON array, and an IN over the lease's rowid is one lookup per id.
const SQLITE_ID_IN_LIST: &str = "id IN (SELECT value FROM json_each('[' || $1 || ']'))";

/// Applies one write inside the batch's transaction: `kg_apply`'s loop body, in Rust.
async fn apply_one(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    node: &str,
    now_ms: i64,
    op: &WriteOp,
    revision: &mut i64,
) -> Result<WriteOutcome, StoreError> {
    // (create_revision, mod_revision, version) of the live key, if it is live: a key whose
    // lease has expired is absent, whether or not the sweeper has deleted it yet.
    let current: Option<(i64, i64, i64)> = sqlx::query_as(&format!(
        "SELECT k.create_revision, k.mod_revision, k.version \
         FROM kg_keys k LEFT JOIN kg_leases l ON l.id = k.lease \
         WHERE k.key = ?1 AND k.value IS NOT NULL \
           AND (k.lease IS NULL OR l.deadline > {SQLITE_NOW_MS})"
    ))
    .bind(&op.key)
    .fetch_optional(&mut **tx)
    .await?;
    let holds = match (op.expect, current) {
        (Expect::Any, _) => true,
        (Expect::Absent, current) => current.is_none(),
        (Expect::Exists, current) => current.is_some(),
        (Expect::Revision(expected), Some((_, mod_revision, _))) => mod_revision == expected,
        (Expect::Revision(_), None) => false,
    };
    if !holds {
        return Ok(WriteOutcome::PreconditionFailed);
    }
    if let (Some(lease), Some(_)) = (op.lease, &op.value) {
        let live: Option<i64> = sqlx::query_scalar(&format!(
            "SELECT id FROM kg_leases WHERE id = ?1 AND deadline > {SQLITE_NOW_MS}"
        ))
        .bind(lease)
        .fetch_optional(&mut **tx)
        .await?;
        if live.is_none() {
            return Ok(WriteOutcome::LeaseNotFound);
        }
    }
    // A delete leaves a tombstone: no value, create_revision and version 0.
    let (create_revision, version) = match (&op.value, current) {
        (None, None) => return Ok(WriteOutcome::NotFound),
        (None, Some(_)) => (0, 0),
        (Some(_), Some((create_revision, _, version))) => (create_revision, version + 1),
        (Some(_), None) => (*revision + 1, 1),
    };
    *revision += 1;
    sqlx::query(
        "INSERT INTO kg_keys \
           (key, value, create_revision, mod_revision, version, mod_node, mod_at, lease, reason) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, NULL) \
         ON CONFLICT (key) DO UPDATE SET value = excluded.value, \
           create_revision = excluded.create_revision, \
           mod_revision = excluded.mod_revision, version = excluded.version, \
           mod_node = excluded.mod_node, mod_at = excluded.mod_at, lease = excluded.lease, \
           reason = NULL",
    )
    .bind(&op.key)
    .bind(op.value.as_deref().map(str::as_bytes))
    .bind(create_revision)
    .bind(*revision)
    .bind(version)
    .bind(node)
    .bind(now_ms)
    .bind(op.value.as_ref().and(op.lease))
    .execute(&mut **tx)
    .await?;
    Ok(WriteOutcome::Applied {
        revision: *revision,
        create_revision,
        version,
    })
}
