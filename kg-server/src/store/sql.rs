//! The one `Store` over sqlx: the reads both databases run as the same SQL, and a `Dialect`
//! for what each does its own way (the write batch, compaction, the primary check).
//!
//! One SQL text serves both because both drivers read `$N` as the Nth bound value and
//! `CAST($N AS text)` gives PostgreSQL the type of a parameter that may be NULL.

use async_trait::async_trait;
use kg_api::KeyRecord;
use sqlx::pool::PoolConnection;
use sqlx::{Database, Decode, Encode, Executor, FromRow, IntoArguments, Pool, Type};

use super::{
    prefix_upper_bound, Change, ChangeRow, KeyRow, ListQuery, OpResult, Store, StoreError,
    StoreKind, WriteOp,
};

/// What one database does its own way.
#[async_trait]
pub trait Dialect: Database {
    const KIND: StoreKind;

    /// `changes_since`'s query: the commit time is a timestamp in PostgreSQL and Unix
    /// milliseconds in SQLite.
    const CHANGES_SINCE: &'static str;

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

    async fn compact(pool: &Pool<Self>, retention: std::time::Duration) -> Result<u64, StoreError>;

    async fn is_primary(_pool: &Pool<Self>) -> Result<Option<bool>, StoreError> {
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
    for<'r> (i64,): FromRow<'r, DB::Row>,
{
    fn kind(&self) -> StoreKind {
        DB::KIND
    }

    async fn get(&self, key: &str) -> Result<Option<KeyRecord>, StoreError> {
        let mut session = self.pool.acquire().await?;
        let row: Option<KeyRow> = sqlx::query_as(
            "SELECT key, value, create_revision, mod_revision, version \
             FROM kg_keys WHERE key = $1 AND value IS NOT NULL",
        )
        .bind(key)
        .fetch_optional(&mut *session)
        .await?;
        self.fence(&mut session).await?;
        Ok(row.map(KeyRecord::from))
    }

    async fn list(&self, query: &ListQuery<'_>) -> Result<Vec<KeyRecord>, StoreError> {
        let mut session = self.pool.acquire().await?;
        let rows: Vec<KeyRow> = sqlx::query_as(
            "SELECT key, CASE WHEN $5 THEN value END AS value, create_revision, mod_revision, \
               version FROM kg_keys \
             WHERE key >= $1 AND (CAST($2 AS text) IS NULL OR key < $2) \
               AND (CAST($3 AS text) IS NULL OR key > $3) AND value IS NOT NULL \
             ORDER BY key LIMIT $4",
        )
        .bind(query.prefix)
        .bind(prefix_upper_bound(query.prefix))
        .bind(query.after)
        .bind(i64::from(query.limit))
        .bind(query.with_values)
        .fetch_all(&mut *session)
        .await?;
        self.fence(&mut session).await?;
        Ok(rows.into_iter().map(KeyRecord::from).collect())
    }

    async fn count(&self, prefix: &str, after: Option<&str>) -> Result<u64, StoreError> {
        let mut session = self.pool.acquire().await?;
        let count: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM kg_keys \
             WHERE key >= $1 AND (CAST($2 AS text) IS NULL OR key < $2) \
               AND (CAST($3 AS text) IS NULL OR key > $3) AND value IS NOT NULL",
        )
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
        prefix: &str,
        limit: u32,
    ) -> Result<Vec<Change>, StoreError> {
        let rows: Vec<ChangeRow> = sqlx::query_as(DB::CHANGES_SINCE)
            .bind(after)
            .bind(prefix)
            .bind(prefix_upper_bound(prefix))
            .bind(i64::from(limit))
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

    async fn compact_revision(&self) -> Result<i64, StoreError> {
        self.meta("SELECT compact_revision FROM kg_meta WHERE id = 1")
            .await
    }

    async fn compact(&self, retention: std::time::Duration) -> Result<u64, StoreError> {
        DB::compact(&self.pool, retention).await
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
}
