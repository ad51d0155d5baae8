//! The PostgreSQL store: reads are single prepared statements, and a write batch is one call of
//! the `kg_apply` function (see `migrations/postgres`), so a whole batch costs one round trip
//! and one commit.

use async_trait::async_trait;
use kg_api::KeyRecord;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::ConnectOptions as _;
use std::str::FromStr;

use super::{
    prefix_upper_bound, Change, ChangeRow, ConnectOptions, KeyRow, OpResult, Store, StoreError,
    StoreKind, WriteOp, WriteOutcome,
};

#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
}

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
        Ok(Self { pool })
    }
}

#[async_trait]
impl Store for PostgresStore {
    fn kind(&self) -> StoreKind {
        StoreKind::Postgres
    }

    async fn get(&self, key: &str) -> Result<Option<KeyRecord>, StoreError> {
        let row: Option<KeyRow> = sqlx::query_as(
            "SELECT key, value, create_revision, mod_revision, version \
             FROM kg_keys WHERE key = $1 AND value IS NOT NULL",
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
            "SELECT key, CASE WHEN $5 THEN value END AS value, create_revision, mod_revision, version FROM kg_keys \
             WHERE key >= $1 AND ($2::text IS NULL OR key < $2) AND ($3::text IS NULL OR key > $3) \
               AND value IS NOT NULL \
             ORDER BY key LIMIT $4",
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
             WHERE key >= $1 AND ($2::text IS NULL OR key < $2) AND ($3::text IS NULL OR key > $3) AND value IS NOT NULL",
        )
        .bind(prefix)
        .bind(prefix_upper_bound(prefix))
        .bind(after)
        .fetch_one(&self.pool)
        .await?;
        Ok(count.max(0) as u64)
    }

    async fn apply(&self, node: &str, ops: &[WriteOp]) -> Result<Vec<OpResult>, StoreError> {
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
        let rows: Vec<(i16, Option<i64>, Option<i64>, Option<i64>, bool)> =
            sqlx::query_as("SELECT * FROM kg_apply($1, $2, $3, $4, $5, $6, $7)")
                .bind(node)
                .bind(deletes)
                .bind(keys)
                .bind(values)
                .bind(expects)
                .bind(idempotency_keys)
                .bind(fingerprints)
                .fetch_all(&self.pool)
                .await?;
        Ok(rows
            .into_iter()
            .map(|(status, revision, create, version, replayed)| OpResult {
                outcome: WriteOutcome::from_sql(status, revision, create, version),
                replayed,
            })
            .collect())
    }

    async fn changes_since(
        &self,
        after: i64,
        prefix: &str,
        limit: u32,
    ) -> Result<Vec<Change>, StoreError> {
        let rows: Vec<ChangeRow> = sqlx::query_as(
            "SELECT key, value, create_revision, mod_revision, version, mod_node, \
               (extract(epoch FROM mod_at) * 1000)::bigint AS mod_at_ms FROM kg_keys \
             WHERE mod_revision > $1 AND key >= $2 AND ($3::text IS NULL OR key < $3) \
             ORDER BY mod_revision LIMIT $4",
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
        // A concurrent re-create of a purged key is safe: the DELETE re-checks `value IS NULL`
        // on the row version it waited for, and skips a row that is live again.
        sqlx::query(
            "DELETE FROM kg_idempotency WHERE created_at < now() - make_interval(secs => $1)",
        )
        .bind(retention.as_secs_f64())
        .execute(&self.pool)
        .await?;
        let purged: i64 = sqlx::query_scalar(
            "WITH purged AS ( \
                 DELETE FROM kg_keys \
                 WHERE value IS NULL AND mod_at < now() - make_interval(secs => $1) \
                 RETURNING mod_revision) \
             UPDATE kg_meta SET compact_revision = \
                 GREATEST(compact_revision, (SELECT coalesce(max(mod_revision), 0) FROM purged)) \
             WHERE id = 1 \
             RETURNING (SELECT count(*) FROM purged)",
        )
        .bind(retention.as_secs_f64())
        .fetch_one(&self.pool)
        .await?;
        Ok(u64::try_from(purged).unwrap_or_default())
    }

    async fn current_revision(&self) -> Result<i64, StoreError> {
        let revision = sqlx::query_scalar("SELECT revision FROM kg_meta WHERE id = 1")
            .fetch_one(&self.pool)
            .await?;
        Ok(revision)
    }

    async fn is_primary(&self) -> Result<Option<bool>, StoreError> {
        let primary: bool = sqlx::query_scalar("SELECT NOT pg_is_in_recovery()")
            .fetch_one(&self.pool)
            .await?;
        Ok(Some(primary))
    }
}
