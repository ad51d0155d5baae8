//! The embedded SQLite store: the same model as PostgreSQL's, with the batch logic of
//! `kg_apply` written in Rust inside one `BEGIN IMMEDIATE` transaction.
//!
//! WAL mode plus a busy timeout lets several processes share one file; `BEGIN IMMEDIATE` takes
//! the write lock up front so a read-then-write batch never fails to upgrade its lock.

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context as _;
use async_trait::async_trait;
use kg_api::KeyRecord;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use super::{
    prefix_upper_bound, Change, ChangeRow, ConnectOptions, Expect, KeyRow, OpResult, Store,
    StoreError, StoreKind, WriteOp, WriteOutcome,
};

#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

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
        Ok(Self { pool })
    }
}

#[async_trait]
impl Store for SqliteStore {
    fn kind(&self) -> StoreKind {
        StoreKind::Sqlite
    }

    async fn get(&self, key: &str) -> Result<Option<KeyRecord>, StoreError> {
        let row: Option<KeyRow> = sqlx::query_as(
            "SELECT key, value, create_revision, mod_revision, version \
             FROM kg_keys WHERE key = ?1 AND value IS NOT NULL",
        )
        .bind(key)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(KeyRecord::from))
    }

    async fn list(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: u32,
        with_values: bool,
    ) -> Result<Vec<KeyRecord>, StoreError> {
        let rows: Vec<KeyRow> = sqlx::query_as(
            "SELECT key, CASE WHEN ?5 THEN value END AS value, create_revision, mod_revision, version FROM kg_keys \
             WHERE key >= ?1 AND (?2 IS NULL OR key < ?2) AND (?3 IS NULL OR key > ?3) \
               AND value IS NOT NULL \
             ORDER BY key LIMIT ?4",
        )
        .bind(prefix)
        .bind(prefix_upper_bound(prefix))
        .bind(after)
        .bind(i64::from(limit))
        .bind(with_values)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(KeyRecord::from).collect())
    }

    async fn count(&self, prefix: &str, after: Option<&str>) -> Result<u64, StoreError> {
        let count: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM kg_keys \
             WHERE key >= ?1 AND (?2 IS NULL OR key < ?2) AND (?3 IS NULL OR key > ?3) AND value IS NOT NULL",
        )
        .bind(prefix)
        .bind(prefix_upper_bound(prefix))
        .bind(after)
        .fetch_one(&self.pool)
        .await?;
        Ok(count.max(0) as u64)
    }

    async fn apply(&self, node: &str, ops: &[WriteOp]) -> Result<Vec<OpResult>, StoreError> {
        let now_ms = chrono::Utc::now().timestamp_millis();
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
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

    async fn changes_since(
        &self,
        after: i64,
        prefix: &str,
        limit: u32,
    ) -> Result<Vec<Change>, StoreError> {
        let rows: Vec<ChangeRow> = sqlx::query_as(
            "SELECT key, value, create_revision, mod_revision, version, mod_node, \
               mod_at AS mod_at_ms FROM kg_keys \
             WHERE mod_revision > ?1 AND key >= ?2 AND (?3 IS NULL OR key < ?3) \
             ORDER BY mod_revision LIMIT ?4",
        )
        .bind(after)
        .bind(prefix)
        .bind(prefix_upper_bound(prefix))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(Change::from).collect())
    }

    async fn compact_revision(&self) -> Result<i64, StoreError> {
        let revision = sqlx::query_scalar("SELECT compact_revision FROM kg_meta WHERE id = 1")
            .fetch_one(&self.pool)
            .await?;
        Ok(revision)
    }

    async fn compact(&self, retention: std::time::Duration) -> Result<u64, StoreError> {
        let retention_ms = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
        let cutoff = chrono::Utc::now()
            .timestamp_millis()
            .saturating_sub(retention_ms);
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let (purged, newest): (i64, Option<i64>) = sqlx::query_as(
            "SELECT count(*), max(mod_revision) FROM kg_keys WHERE value IS NULL AND mod_at < ?1",
        )
        .bind(cutoff)
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM kg_idempotency WHERE created_at < ?1")
            .bind(cutoff)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM kg_keys WHERE value IS NULL AND mod_at < ?1")
            .bind(cutoff)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE kg_meta SET compact_revision = max(compact_revision, ?1) WHERE id = 1")
            .bind(newest.unwrap_or_default())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(u64::try_from(purged).unwrap_or_default())
    }

    async fn current_revision(&self) -> Result<i64, StoreError> {
        let revision = sqlx::query_scalar("SELECT revision FROM kg_meta WHERE id = 1")
            .fetch_one(&self.pool)
            .await?;
        Ok(revision)
    }
}

/// Applies one write inside the batch's transaction: `kg_apply`'s loop body, in Rust.
async fn apply_one(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    node: &str,
    now_ms: i64,
    op: &WriteOp,
    revision: &mut i64,
) -> Result<WriteOutcome, StoreError> {
    // (create_revision, mod_revision, version) of the live key, if it is live.
    let current: Option<(i64, i64, i64)> = sqlx::query_as(
        "SELECT create_revision, mod_revision, version FROM kg_keys \
         WHERE key = ?1 AND value IS NOT NULL",
    )
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
    match (&op.value, current) {
        (None, None) => Ok(WriteOutcome::NotFound),
        (None, Some(_)) => {
            *revision += 1;
            sqlx::query(
                "UPDATE kg_keys SET value = NULL, create_revision = 0, \
                 mod_revision = ?2, version = 0, mod_node = ?3, mod_at = ?4 WHERE key = ?1",
            )
            .bind(&op.key)
            .bind(*revision)
            .bind(node)
            .bind(now_ms)
            .execute(&mut **tx)
            .await?;
            Ok(WriteOutcome::Applied {
                revision: *revision,
                create_revision: 0,
                version: 0,
            })
        }
        (Some(value), current) => {
            *revision += 1;
            let (create_revision, version) = match current {
                Some((create_revision, _, version)) => (create_revision, version + 1),
                None => (*revision, 1),
            };
            sqlx::query(
                "INSERT INTO kg_keys \
                   (key, value, create_revision, mod_revision, version, mod_node, mod_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value, \
                   create_revision = excluded.create_revision, \
                   mod_revision = excluded.mod_revision, version = excluded.version, \
                   mod_node = excluded.mod_node, mod_at = excluded.mod_at",
            )
            .bind(&op.key)
            .bind(value.as_bytes())
            .bind(create_revision)
            .bind(*revision)
            .bind(version)
            .bind(node)
            .bind(now_ms)
            .execute(&mut **tx)
            .await?;
            Ok(WriteOutcome::Applied {
                revision: *revision,
                create_revision,
                version,
            })
        }
    }
}
