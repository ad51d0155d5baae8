//! The durable store: a `Store` trait with a PostgreSQL and an embedded SQLite implementation.
//!
//! Both keep one row per key, with deleted keys left as revisioned tombstones, and a single
//! revision counter that every write batch bumps under a lock. Holding that lock across the
//! batch's commit is what makes revisions strictly increasing in commit order; the
//! [`crate::writer`] batches concurrent writes so the lock is taken once per commit, not once
//! per write.

mod postgres;
mod postgres_txn;
mod sql;
mod sqlite;
mod txn;

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use kg_api::{DeleteReason, KeyRecord, LeaseGrant, LeaseInfo};

pub use postgres::PostgresStore;
pub use sql::SqlStore;
pub use sqlite::SqliteStore;
pub use txn::{batchable, TxnOutcome, TxnPlan};

/// Which backend a store is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    Postgres,
    Sqlite,
}

impl fmt::Display for StoreKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StoreKind::Postgres => "postgres",
            StoreKind::Sqlite => "sqlite",
        })
    }
}

/// One write in a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteOp {
    pub key: String,
    /// `Some(value)` for a put, `None` for a delete.
    pub value: Option<String>,
    pub expect: Expect,
    /// The client's Idempotency-Key, if it sent one.
    pub idempotency_key: Option<String>,
    /// The lease a put attaches the key to; `None` detaches it from any.
    pub lease: Option<i64>,
    /// The TTL a put asked for, when the node granted `lease` for it. The fingerprint covers
    /// this instead of the lease id: a retry is granted a new lease, and is the same write.
    pub ttl: Option<u64>,
}

impl WriteOp {
    /// SHA-256 over everything that makes this write what it is, so that an idempotency key
    /// reused for a different write can be refused. Stable across nodes and versions.
    pub fn fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut hasher = Sha256::new();
        hasher.update(if self.value.is_some() {
            b"put\0"
        } else {
            b"del\0"
        });
        hasher.update(self.expect.to_sql().unwrap_or(i64::MIN).to_be_bytes());
        hasher.update((self.key.len() as u64).to_be_bytes());
        hasher.update(self.key.as_bytes());
        if let Some(value) = &self.value {
            hasher.update(value.as_bytes());
        }
        // Only when set, so that an idempotency record written before leases existed still
        // matches a retry of the same write.
        match (self.ttl, self.lease) {
            (Some(ttl), _) => {
                hasher.update(b"\0ttl\0");
                hasher.update(ttl.to_be_bytes());
            }
            (None, Some(lease)) => {
                hasher.update(b"\0lease\0");
                hasher.update(lease.to_be_bytes());
            }
            (None, None) => {}
        }
        hasher
            .finalize()
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect()
    }
}

/// A request's Idempotency-Key with the fingerprint of the request it names, for the routes
/// whose answer is recorded whole (a prefix delete, a compaction, a lease's grant and revoke):
/// a retry gets the first answer back, and the key reused for another request is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Idempotent {
    pub key: String,
    pub fingerprint: String,
}

impl Idempotent {
    /// `key` naming a request to `route` whose parts are `request`, in a canonical form. The
    /// route's name goes first, so that no two routes' requests share a fingerprint, nor with
    /// a single-key write's (`put`, `del`) or a transaction's (`txn`).
    pub fn new(key: String, route: &str, request: &[u8]) -> Self {
        use sha2::{Digest, Sha256};
        let mut hasher = Sha256::new();
        hasher.update(route.as_bytes());
        hasher.update(b"\0");
        hasher.update(request);
        let fingerprint = hasher
            .finalize()
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect();
        Self { key, fingerprint }
    }
}

/// What a retry's Idempotency-Key found: the answer recorded for the same request, or that
/// it names another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replay<T> {
    Same(T),
    Mismatch,
}

/// The condition a write must meet, from the HTTP precondition headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Expect {
    #[default]
    Any,
    /// `If-None-Match: *`.
    Absent,
    /// `If-Match: *`.
    Exists,
    /// `If-Match: "<rev>"`.
    Revision(i64),
}

impl Expect {
    /// The encoding the stores' SQL uses: NULL, -1, -2 or the revision itself.
    fn to_sql(self) -> Option<i64> {
        match self {
            Expect::Any => None,
            Expect::Absent => Some(-1),
            Expect::Exists => Some(-2),
            Expect::Revision(revision) => Some(revision),
        }
    }
}

/// What happened to one write in a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    Applied {
        revision: i64,
        create_revision: i64,
        version: i64,
    },
    /// A delete of a key that does not exist.
    NotFound,
    PreconditionFailed,
    /// The idempotency key was already used for a different write.
    IdempotencyMismatch,
    /// A put named a lease that does not exist or has expired.
    LeaseNotFound,
}

/// The outcome of one write of a batch, and whether it is a replay: the outcome recorded for
/// the write's idempotency key, with nothing written this time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpResult {
    pub outcome: WriteOutcome,
    pub replayed: bool,
}

impl WriteOutcome {
    fn from_sql(
        status: i16,
        revision: Option<i64>,
        create: Option<i64>,
        version: Option<i64>,
    ) -> Self {
        match (status, revision) {
            (0, Some(revision)) => WriteOutcome::Applied {
                revision,
                create_revision: create.unwrap_or_default(),
                version: version.unwrap_or_default(),
            },
            (1, _) => WriteOutcome::NotFound,
            (3, _) => WriteOutcome::IdempotencyMismatch,
            (4, _) => WriteOutcome::LeaseNotFound,
            _ => WriteOutcome::PreconditionFailed,
        }
    }

    /// The encoding `from_sql` reads: status, revision, create_revision, version.
    fn to_sql(self) -> (i16, Option<i64>, Option<i64>, Option<i64>) {
        match self {
            WriteOutcome::Applied {
                revision,
                create_revision,
                version,
            } => (0, Some(revision), Some(create_revision), Some(version)),
            WriteOutcome::NotFound => (1, None, None, None),
            WriteOutcome::PreconditionFailed => (2, None, None, None),
            WriteOutcome::IdempotencyMismatch => (3, None, None, None),
            WriteOutcome::LeaseNotFound => (4, None, None, None),
        }
    }
}

/// Up to `limit` live keys starting with `prefix` and greater than `after`; their values only
/// `with_values`, and then only until they add up to `value_bytes`: a key is read with its
/// value while the values before it come to less than that, and the first key past it comes
/// without its value, to say that the page ends before it (a live key always has a value).
/// So a page holds at most `value_bytes` plus one value, whatever the values are.
#[derive(Debug, Clone, Copy)]
pub struct ListQuery<'a> {
    pub prefix: &'a str,
    pub after: Option<&'a str>,
    pub limit: u32,
    pub with_values: bool,
    pub value_bytes: u64,
}

/// A live row as both stores read it; converted to the wire type explicitly.
#[derive(Debug, Clone, sqlx::FromRow)]
struct KeyRow {
    key: String,
    /// `None` when the query left values out (a keys-only listing).
    value: Option<Vec<u8>>,
    create_revision: i64,
    mod_revision: i64,
    version: i64,
    lease: Option<i64>,
    ttl_remaining_ms: Option<i64>,
}

impl From<KeyRow> for KeyRecord {
    fn from(row: KeyRow) -> Self {
        KeyRecord {
            key: row.key,
            // Values are stored as the UTF-8 bytes of a validated `String`, so this is lossless
            // and takes the bytes as they are, without a copy; bytes rather than text because
            // PostgreSQL's text cannot hold U+0000.
            value: row.value.map(utf8),
            create_revision: row.create_revision,
            mod_revision: row.mod_revision,
            version: row.version,
            lease: row.lease,
            ttl_remaining_ms: row.ttl_remaining_ms,
        }
    }
}

/// A stored value as text: the bytes as they are when they are UTF-8 (they always are: see
/// `KeyRecord`'s conversion), decoded lossily otherwise.
fn utf8(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes)
        .unwrap_or_else(|err| String::from_utf8_lossy(err.as_bytes()).into_owned())
}

/// A key's latest change, as replay reads it: a live value or a tombstone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub key: String,
    /// `None` for a delete.
    pub value: Option<String>,
    pub revision: i64,
    pub create_revision: i64,
    pub version: i64,
    /// The node that committed the change.
    pub node: String,
    /// Commit time, Unix milliseconds.
    pub at_ms: i64,
    /// The lease a put attached the key to.
    pub lease: Option<i64>,
    /// Set on a delete made by a lease's end.
    pub reason: Option<DeleteReason>,
    /// A put's value size in bytes, when `value` was left out for its size (a replay reads
    /// only the values an event carries).
    pub value_bytes: Option<u64>,
}

impl Change {
    /// The delete of `key` at `revision`: no value, create_revision and version 0.
    pub fn tombstone(
        key: String,
        revision: i64,
        node: &str,
        at_ms: i64,
        reason: Option<DeleteReason>,
    ) -> Self {
        Change {
            key,
            value: None,
            revision,
            create_revision: 0,
            version: 0,
            node: node.to_owned(),
            at_ms,
            lease: None,
            reason,
            value_bytes: None,
        }
    }
}

#[derive(Debug, sqlx::FromRow)]
struct ChangeRow {
    key: String,
    value: Option<Vec<u8>>,
    create_revision: i64,
    mod_revision: i64,
    version: i64,
    mod_node: String,
    mod_at_ms: i64,
    lease: Option<i64>,
    reason: Option<String>,
    /// A put's value size, where the query left large values out (`changes_since`).
    #[sqlx(default)]
    value_bytes: Option<i64>,
}

/// A version as a history page reads it: `cut` on the first version past the page's byte
/// budget, read without its value, where the page ends.
#[derive(Debug, sqlx::FromRow)]
struct HistoryRow {
    #[sqlx(flatten)]
    change: ChangeRow,
    cut: bool,
}

impl From<ChangeRow> for Change {
    fn from(row: ChangeRow) -> Self {
        Change {
            value_bytes: row
                .value_bytes
                .filter(|_| row.value.is_none())
                .and_then(|bytes| u64::try_from(bytes).ok()),
            key: row.key,
            value: row.value.map(utf8),
            revision: row.mod_revision,
            create_revision: row.create_revision,
            version: row.version,
            node: row.mod_node,
            at_ms: row.mod_at_ms,
            lease: row.lease,
            reason: row.reason.as_deref().and_then(DeleteReason::parse),
        }
    }
}

/// Why a store call failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or is refusing connections: a 503, and worth retrying.
    #[error("database unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    /// Anything else: a bug or a schema problem, logged and answered with a 500.
    #[error("database error: {0}")]
    Internal(#[source] sqlx::Error),
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        if is_unavailable(&err) {
            StoreError::Unavailable(err)
        } else {
            StoreError::Internal(err)
        }
    }
}

/// Errors that mean "the database is not there right now" rather than "the query is wrong".
fn is_unavailable(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(db) => {
            let code = db.code();
            let code = code.as_deref().unwrap_or_default();
            // PostgreSQL: class 08 connection exceptions, 57P0x shutdown/cannot connect now,
            // 53300 too many connections, and 25006 read-only transaction: during a failover a
            // connection can reach a member that is not (or no longer) the primary, which is
            // the database being unavailable for writes, not a bad query. 40P01: a deadlock
            // PostgreSQL broke by aborting this statement (lock orders meet only at a lease's
            // deadline edge); nothing was written, and a retry is safe. SQLite: 5
            // SQLITE_BUSY, 6 SQLITE_LOCKED.
            code.starts_with("08")
                || code == "40P01"
                || code.starts_with("57P0")
                || code == "53300"
                || code == "25006"
                || code == "5"
                || code == "6"
        }
        _ => false,
    }
}

/// The durable key-value store behind a node.
#[async_trait]
pub trait Store: Send + Sync + fmt::Debug + 'static {
    fn kind(&self) -> StoreKind;

    /// The live key, or `None` for a missing or deleted one.
    async fn get(&self, key: &str) -> Result<Option<KeyRecord>, StoreError>;

    /// A page of live keys, in byte order: see [`ListQuery`].
    async fn list(&self, query: &ListQuery<'_>) -> Result<Vec<KeyRecord>, StoreError>;

    /// How many live keys start with `prefix` and are greater than `after`.
    async fn count(&self, prefix: &str, after: Option<&str>) -> Result<u64, StoreError>;

    /// Applies `ops` by `node` in order in one transaction, returning one result per op. An op
    /// whose idempotency key was seen before is not applied; its recorded outcome is returned.
    async fn apply(&self, node: &str, ops: &[WriteOp]) -> Result<Vec<OpResult>, StoreError>;

    /// The latest change of each key under `prefix` whose revision is above `after`, deletes
    /// included, in (revision, key) order: what a watcher that has seen `after` missed. With
    /// `after_key`, also those at revision `after` whose key is above it: the next page. A
    /// value over `EVENT_VALUE_MAX_BYTES`, which no event carries, is left out and only its
    /// size read ([`Change::value_bytes`]), so a page costs the node little whatever the values.
    async fn changes_since(
        &self,
        after: i64,
        after_key: Option<&str>,
        prefix: &str,
        limit: u32,
    ) -> Result<Vec<Change>, StoreError>;

    /// The last revision handed out.
    async fn current_revision(&self) -> Result<i64, StoreError>;

    /// Reads the revision over a new connection of its own, outside the pool: whether the
    /// database can be reached at all, when the pool's connections may all be busy.
    async fn reachable(&self) -> Result<(), StoreError>;

    /// Whether the connection is to a primary; `None` where there is no such notion.
    async fn is_primary(&self) -> Result<Option<bool>, StoreError> {
        Ok(None)
    }

    /// The revision compaction has reached: tombstones and replaced versions at or below it
    /// are gone, so replay and reads cannot start below it.
    async fn compact_revision(&self) -> Result<i64, StoreError>;

    /// Compacts by age: to the newest revision committed more than `retention` ago, dropping
    /// idempotency records older than that too.
    async fn compact(&self, retention: std::time::Duration) -> Result<Compacted, StoreError>;

    /// `POST /api/compact`: drops the history below `revision`. Compacting to a revision at or
    /// below the compact revision changes nothing; `Future` above the current revision. With
    /// `idempotent`, its answer is recorded, and a retry gets it back.
    async fn compact_to(
        &self,
        revision: i64,
        idempotent: Option<&Idempotent>,
    ) -> Result<CompactTo, StoreError>;

    /// The live key as of `revision`.
    async fn get_at(
        &self,
        key: &str,
        revision: i64,
    ) -> Result<AtRevision<Option<KeyRecord>>, StoreError>;

    /// A page of the keys live at `revision`, as [`Store::list`] pages the current ones.
    async fn list_at(
        &self,
        query: &ListQuery<'_>,
        revision: i64,
    ) -> Result<AtRevision<Vec<KeyRecord>>, StoreError>;

    /// How many keys under `prefix` (and above `after`) were live at `revision`.
    async fn count_at(
        &self,
        prefix: &str,
        after: Option<&str>,
        revision: i64,
    ) -> Result<AtRevision<u64>, StoreError>;

    /// Up to `limit` versions of `key` below revision `before` (all when `None`), newest
    /// first, deletes included: every version since the compact revision, and the one that
    /// was current at it. The versions end early where their values come to `value_bytes`
    /// (see [`ListQuery`]), with [`KeyHistory::cut`] set.
    async fn history(
        &self,
        key: &str,
        before: Option<i64>,
        limit: u32,
        value_bytes: u64,
    ) -> Result<KeyHistory, StoreError>;

    /// Opens a read of every live key at one revision, for `GET /api/snapshot`. It holds a
    /// database session (and on PostgreSQL a REPEATABLE READ transaction) until it is finished
    /// or dropped.
    async fn snapshot(&self) -> Result<Box<dyn Snapshot>, StoreError>;

    /// A new lease of `ttl` seconds, its deadline set by the database's clock. With
    /// `idempotent`, the grant is recorded, and a retry gets the same lease back.
    async fn lease_grant(
        &self,
        ttl: u64,
        idempotent: Option<&Idempotent>,
    ) -> Result<Granted, StoreError>;

    /// Sets each live lease's deadline a full TTL ahead again, in one statement, and returns
    /// the grants of those renewed: a lease missing from them has expired or been revoked.
    async fn lease_keepalive(&self, ids: &[i64]) -> Result<Vec<LeaseGrant>, StoreError>;

    /// A live lease with its keys; `None` once it has expired or been revoked.
    async fn lease(&self, id: i64) -> Result<Option<LeaseInfo>, StoreError>;

    /// Every live lease, soonest deadline first, without their keys.
    async fn leases(&self) -> Result<Vec<LeaseInfo>, StoreError>;

    /// Ends leases and deletes their keys under the revision lock, in one transaction: one
    /// revision per key, each tombstone marked with why. The lease row and its keys go
    /// together, so whichever node ends a lease first is the only one that deletes its keys.
    /// A revoke with `idempotent` records its answer, and a retry gets it back.
    async fn end_leases(
        &self,
        node: &str,
        end: LeaseEnd,
        idempotent: Option<&Idempotent>,
    ) -> Result<Ended, StoreError>;

    /// Deletes every live key under `prefix` (all keys for an empty one) at one new revision,
    /// one tombstone per key. `mark` is called with the keys, in byte order, after they are
    /// deleted and before the commit makes that visible: the writer marks them pending in the
    /// cache there, and its answer comes back in [`PrefixDelete::Deleted`]. With
    /// `idempotent`, the answer is recorded in the same transaction, and a retry gets it back
    /// and deletes nothing.
    async fn delete_prefix(
        &self,
        node: &str,
        prefix: &str,
        idempotent: Option<&Idempotent>,
        mark: &MarkKeys,
    ) -> Result<PrefixDelete, StoreError>;

    /// Runs transactions one after the other, each at its own revision (when it writes), all
    /// in one database transaction under the revision lock, so that they share one commit.
    /// `mark` is called once, before that commit, with every key they changed; its answer
    /// comes back with the outcomes.
    async fn txns(
        &self,
        node: &str,
        plans: &[TxnPlan],
        mark: &MarkKeys,
    ) -> Result<(Vec<TxnOutcome>, i64), StoreError>;

    /// Whether any lease's deadline has passed: a cheap check without the revision lock.
    async fn leases_due(&self) -> Result<bool, StoreError>;

    /// Gives every lease that was still live `since` ago at least its full TTL from now, as
    /// etcd does when a new leader takes over: run after this node lost the database, `since`
    /// being how long ago it last reached it, so that an outage, during which no keep-alive
    /// could land, never makes a lease expire. A lease whose deadline had passed by then is
    /// not extended: it may have been read as expired. Returns how many it extended.
    async fn refresh_leases(&self, since: std::time::Duration) -> Result<u64, StoreError>;
}

/// A read of every live key as of one revision: [`Store::snapshot`].
#[async_trait]
pub trait Snapshot: Send {
    /// The revision every page shows.
    fn revision(&self) -> i64;

    /// How many live keys the snapshot holds.
    fn keys(&self) -> u64;

    /// Up to `limit` live keys greater than `after` (from the first without it), with their
    /// values, in byte order; fewer where their values come to `kg_api::MAX_PAGE_BYTES` (see
    /// [`ListQuery`]), and none only past the last key.
    async fn page(&mut self, after: Option<&str>, limit: u32)
        -> Result<Vec<KeyRecord>, StoreError>;

    /// Ends the read. Where reads are fenced, this first confirms that the server was still
    /// the primary, so that the snapshot held every write acknowledged before it was taken.
    async fn finish(self: Box<Self>) -> Result<(), StoreError>;
}

/// The most keys one prefix delete removes. Its tombstones, events and cache marks are held
/// in memory at once, and it holds the revision lock for all of them, which must end well
/// within the node's database timeout; a larger range is refused with nothing written.
pub const MAX_PREFIX_DELETE: u64 = 10_000;

/// [`Store::delete_prefix`]'s hook: marks keys pending in the cache, returning the epoch.
pub type MarkKeys = dyn Fn(Vec<String>) -> futures::future::BoxFuture<'static, i64> + Send + Sync;

/// What [`Store::delete_prefix`] did.
#[derive(Debug)]
pub enum PrefixDelete {
    /// One tombstone per key, in byte order, all at one revision; `epoch` is what the mark
    /// hook answered.
    Deleted { changes: Vec<Change>, epoch: i64 },
    /// No live key under the prefix: nothing written, and `revision` is the current one.
    Nothing { revision: i64 },
    /// More live keys than [`MAX_PREFIX_DELETE`]: nothing written.
    TooMany(u64),
    /// A retry: the first attempt's answer, or that its key named another request. Nothing
    /// written.
    Replayed(Replay<kg_api::DeletePrefixResponse>),
}

/// A read at a revision, or why it cannot be answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AtRevision<T> {
    Found(T),
    /// Below `floor`, the compact revision (or the revision history began at): versions the
    /// read needs may have been dropped.
    Compacted {
        floor: i64,
    },
    /// Above the last revision handed out, `current`.
    Future {
        current: i64,
    },
}

/// What a compaction did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Compacted {
    /// The compact revision now.
    pub revision: i64,
    /// Tombstones purged.
    pub tombstones: u64,
    /// Replaced versions dropped from the history.
    pub versions: u64,
}

/// What [`Store::compact_to`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CompactTo {
    Done(Compacted),
    /// The revision is above the last one handed out, `current`: nothing was dropped.
    Future {
        current: i64,
    },
    /// A retry: the first attempt's answer, or that its key named another request.
    Replayed(Replay<Compacted>),
}

/// What [`Store::lease_grant`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Granted {
    New(LeaseGrant),
    /// A retry: the lease the first attempt granted, or that its key named another request.
    Replayed(Replay<LeaseGrant>),
}

/// What [`Store::end_leases`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// The keys deleted, one revision each, and the last revision handed out after them.
    Deleted { changes: Vec<Change>, revision: i64 },
    /// The lease to revoke does not exist (or has expired): nothing written.
    NotFound,
    /// A retried revoke: the first attempt's answer, or that its key named another request.
    Replayed(Replay<kg_api::LeaseRevokeResponse>),
}

/// [`Store::history`]'s answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyHistory {
    /// Newest first.
    pub versions: Vec<Change>,
    /// Versions replaced at or below this may be gone.
    pub compact_revision: i64,
    /// The versions ended early, at the byte budget: older ones follow.
    pub cut: bool,
}

impl From<Compacted> for kg_api::CompactResponse {
    fn from(done: Compacted) -> Self {
        kg_api::CompactResponse {
            compact_revision: done.revision,
            tombstones: done.tombstones,
            versions: done.versions,
        }
    }
}

impl From<kg_api::CompactResponse> for Compacted {
    fn from(answer: kg_api::CompactResponse) -> Self {
        Compacted {
            revision: answer.compact_revision,
            tombstones: answer.tombstones,
            versions: answer.versions,
        }
    }
}

impl<T> Replay<T> {
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Replay<U> {
        match self {
            Replay::Same(answer) => Replay::Same(f(answer)),
            Replay::Mismatch => Replay::Mismatch,
        }
    }
}

/// Which leases [`Store::end_leases`] ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseEnd {
    /// Up to this many leases whose deadline has passed, soonest first.
    Expired(u32),
    /// This lease, now.
    Revoke(i64),
}

/// Opens the store a database URL names and runs its migrations.
pub async fn connect(url: &str, options: &ConnectOptions) -> anyhow::Result<Arc<dyn Store>> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(PostgresStore::connect(url, options).await?))
    } else if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::connect(url, options).await?))
    } else {
        anyhow::bail!("unsupported database url {url:?}: expected postgres://... or sqlite://...")
    }
}

/// The URL without its password, for logs and errors.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}

/// Pool settings shared by both backends.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    pub max_connections: u32,
    /// How long a query waits for a pooled connection before the node answers 503.
    pub acquire_timeout: std::time::Duration,
    /// PostgreSQL: follow every read with a commit on the same session (see
    /// `Dialect::FENCE`).
    pub read_fence: bool,
}

/// The smallest string greater than every string that starts with `prefix`, in byte order, or
/// `None` when no such bound exists (empty prefix, or one made only of `char::MAX`).
///
/// UTF-8 byte order equals code point order, so bumping the last code point that can be bumped
/// (and dropping what follows it) gives an exclusive upper bound for a range scan.
pub fn prefix_upper_bound(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let next = match last {
            char::MAX => continue,
            // Skip the surrogate gap, which no `char` can hold.
            '\u{D7FF}' => '\u{E000}',
            other => char::from_u32(other as u32 + 1)?,
        };
        chars.push(next);
        return Some(chars.into_iter().collect());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::prefix_upper_bound;

    fn check(prefix: &str, expected: Option<&str>) {
        assert_eq!(
            prefix_upper_bound(prefix).as_deref(),
            expected,
            "prefix {prefix:?}"
        );
    }

    #[test]
    fn prefix_upper_bound_bumps_the_last_code_point() {
        check("", None);
        check("a", Some("b"));
        check("user/", Some("user0"));
        check("z\u{7F}", Some("z\u{80}"));
        check("\u{D7FF}", Some("\u{E000}"));
        check("a\u{10FFFF}", Some("b"));
        check("\u{10FFFF}", None);
    }

    #[test]
    fn prefix_upper_bound_is_above_every_extension_in_byte_order() {
        for prefix in ["a", "é", "user/", "\u{7F}", "日本"] {
            let bound = prefix_upper_bound(prefix).unwrap();
            for suffix in ["", "\u{0}", "zzz", "\u{10FFFF}\u{10FFFF}"] {
                let key = format!("{prefix}{suffix}");
                assert!(key.as_bytes() < bound.as_bytes(), "{key:?} !< {bound:?}");
            }
            assert!(prefix.as_bytes() < bound.as_bytes());
        }
    }
}
