//! The Redis read cache, built so that it never serves a value older than one it has seen.
//!
//! Each key's entry is a hash `{prefix}:key:<key>` holding the key's state at one revision
//! (`r`), whether that state is a deletion (`d`), the value, create_revision and version, and
//! the cache epoch (`e`) it was written in. One Lua script writes, one pipeline reads:
//!
//! - a read is `HMGET` of the entry then `GET` of the epoch, in one round trip, and the entry
//!   counts only if its epoch is the one read after it. Epochs only rise, so an entry whose
//!   epoch equals a later reading of the epoch was current when it was read: the same check
//!   an atomic script would make, without a script's cost on every hit;
//! - `STORE` writes an entry only if it is newer than the one cached in the current epoch.
//!
//! **Leased keys** are cached as entries marked leased (`d` = 2) without their value: a lookup
//! sends their reads to the database, which alone knows whether the lease's deadline has passed
//! by its own clock. The entry still carries the revision, so that no slow fill of an older,
//! unleased state can land over it.
//!
//! Because `STORE` never lowers a revision, a slow reader that fills the cache after a writer
//! has stored a newer revision is a no-op, and a delete leaves a revisioned tombstone that no
//! slow fill can resurrect. Keys that do not exist are cached as tombstones at revision 0.
//!
//! **The epoch rule.** While a node cannot reach Redis its writes cannot update the cache, so
//! entries written before the outage may be stale. A node that lost Redis therefore does not
//! trust the cache again until it has bumped `{prefix}:epoch`: every entry of an older epoch is
//! then a miss, for every node at once, because every read compares epochs read from Redis.
//! Recovery runs in this order: cache updates resume first (so that no write after recovery
//! is missed), then the epoch is bumped, and only then do reads use the cache again.
//!
//! **Pending writes.** Between a write's commit and its cache update the database already
//! holds the new value while the cache still holds the old one: a precondition checked in the
//! database, or a read that missed, could see the new value and a later cache hit the old.
//! So the writer marks each key before it commits (`MARK` increments the entry's pending
//! count `p`), and its update after the commit, or `UNMARK` for a write that changed nothing,
//! takes the mark away. While `p > 0` a lookup sends the read to the database without a fill,
//! and a fill from a lookup made before the mark is refused: the database alone decides what
//! is visible.
//!
//! **Failed commits.** A commit that fails may have landed all the same, so its keys keep
//! their marks until a later commit of the same node has settled it; the writer then stores
//! the keys as read from the database (writer.rs, `InDoubt`). Every other key is still served
//! from the cache meanwhile, through a failover of the database too. Only a failed write
//! whose keys could not be marked fences the cache: see [`Cache::fence`].

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{RedisResult, Script};

use crate::redis_target::RedisTarget;

// Each script takes a whole batch: KEYS[1] is the epoch, KEYS[2..] the entries, and the
// epoch is checked once, so a batch is applied in one epoch or not at all. Per key they do
// what one call per key did. Under PUT load about half of a call's cost in Redis is the call
// itself, so one call per batch cuts a write's Redis time. The price: Redis runs a batch's
// script without serving anyone else, a few milliseconds for the largest batch (MAX_BATCH
// keys). docs/performance.md, "Figures behind choices in the code", has the measurements.

// ARGV[1] the epoch the data was read or committed in, ARGV[2] the TTL in ms, ARGV[3] '1' for
// a write's update (it takes away the mark its writer set) or '0' for a fill (refused while
// any write of the key is pending), then five per entry: revision, deleted ('1', '0', or '2' for leased), value,
// create_revision, version. Returns -1 if the epoch moved, else how many entries it wrote.
const STORE: &str = r"
local epoch = redis.call('GET', KEYS[1]) or '0'
if epoch ~= ARGV[1] then return -1 end
local write = ARGV[3] == '1'
local stored = 0
for i = 2, #KEYS do
  local key = KEYS[i]
  local a = 3 + (i - 2) * 5
  local current = redis.call('HMGET', key, 'e', 'r', 'p')
  local pending = 0
  if current[1] == epoch then pending = tonumber(current[3] or '0') end
  if write and pending > 0 then pending = pending - 1 end
  if not write and pending > 0 then
    -- a fill while a write of the key is pending: refused
  elseif current[1] == epoch and current[2] and tonumber(current[2]) >= tonumber(ARGV[a + 1]) then
    if write then redis.call('HSET', key, 'p', pending) end
  else
    redis.call('HSET', key, 'e', epoch, 'r', ARGV[a + 1], 'd', ARGV[a + 2], 'v', ARGV[a + 3],
      'c', ARGV[a + 4], 'n', ARGV[a + 5], 'p', pending)
    redis.call('PEXPIRE', key, ARGV[2])
    stored = stored + 1
  end
end
return stored
";

// Before a commit: one more write of each key is pending (a key written twice in the batch
// is marked twice). An entry of an older epoch is replaced by a bare mark, so that no fill
// can slip in before the write's update. ARGV[1] the epoch, ARGV[2] the TTL in ms.
const MARK: &str = r"
local epoch = redis.call('GET', KEYS[1]) or '0'
if epoch ~= ARGV[1] then return -1 end
for i = 2, #KEYS do
  local key = KEYS[i]
  if redis.call('HGET', key, 'e') == epoch then
    redis.call('HINCRBY', key, 'p', 1)
  else
    redis.call('DEL', key)
    redis.call('HSET', key, 'e', epoch, 'p', 1)
  end
  redis.call('PEXPIRE', key, ARGV[2])
end
return 1
";

// After a commit that did not change the keys (a failed precondition, a replay, an error):
// takes their marks away. In another epoch the marks no longer count anyway. ARGV[1] the epoch.
const UNMARK: &str = r"
local epoch = redis.call('GET', KEYS[1]) or '0'
if epoch ~= ARGV[1] then return 0 end
for i = 2, #KEYS do
  local key = KEYS[i]
  if redis.call('HGET', key, 'e') == epoch and tonumber(redis.call('HGET', key, 'p') or '0') > 0 then
    redis.call('HINCRBY', key, 'p', -1)
  end
end
return 1
";

/// `STORE`'s answer when the epoch moved since the entry's data was read from the database.
const STORE_EPOCH_MOVED: i64 = -1;

/// A key's state at one revision, as cached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheEntry {
    /// The key's mod_revision; 0 for a key that has never been written.
    pub revision: i64,
    /// `None` for a deleted or absent key.
    pub value: Option<String>,
    pub create_revision: i64,
    pub version: i64,
    /// The key's lease and the milliseconds left on it; only ever read from the database.
    pub lease: Option<(i64, i64)>,
}

/// The answer of [`Cache::lookup`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    Hit(CacheEntry),
    /// Not cached in `epoch`, the epoch the lookup saw: pass it to the fill.
    Miss {
        epoch: i64,
    },
    /// A write of the key is between its commit and its cache update: read the database,
    /// and do not fill (the fill would be refused).
    Pending,
    /// The cache cannot be used now.
    Degraded,
}

/// What [`Cache::mark`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marked {
    /// The epoch to give the writes' [`Cache::store`].
    pub epoch: i64,
    /// Whether every key carries the mark in `epoch`. While a mark is held no node serves the
    /// key from the cache, so a write whose commit failed need not fence the whole cache; a
    /// write whose marks are not held must (see writer.rs).
    pub held: bool,
}

/// A key's state to store, borrowed from the write or read that produced it.
#[derive(Debug, Clone, Copy)]
pub struct EntryRef<'a> {
    pub key: &'a str,
    pub revision: i64,
    pub value: Option<&'a str>,
    pub create_revision: i64,
    pub version: i64,
    /// Attached to a lease: cached as a marker that sends reads to the database.
    pub leased: bool,
}

/// Settings for [`Cache::new`].
#[derive(Debug, Clone)]
pub struct CacheOptions {
    /// The server, or the Sentinel-watched master, to use.
    pub target: RedisTarget,
    /// Namespace of every key and channel, so that clusters can share one Redis.
    pub prefix: String,
    /// Bound on how long any entry lives, and so on any staleness the design cannot prevent.
    pub ttl: Duration,
    /// Bound on every Redis call; past it the node goes on without the cache.
    pub timeout: Duration,
}

pub struct Cache {
    connection: Mutex<Option<ConnectionManager>>,
    options: CacheOptions,
    epoch_key: String,
    key_prefix: String,
    store_script: Script,
    mark_script: Script,
    unmark_script: Script,
    /// Writes update the cache (also during recovery, before the epoch bump).
    writes_enabled: AtomicBool,
    /// Reads may trust the cache (only after the epoch bump that follows an outage).
    reads_enabled: AtomicBool,
    /// The cache epoch as this node last saw it. Every cache write carries the epoch seen
    /// *before* its database read or commit, and `STORE` refuses it if the epoch has moved
    /// since: a command delayed across a recovery can then never land in the new epoch.
    known_epoch: std::sync::atomic::AtomicI64,
    /// The Redis server's run_id at the last recovery: a new one means Redis restarted, maybe
    /// from a snapshot older than some writes, even if no call of ours failed meanwhile.
    run_id: Mutex<Option<String>>,
    /// Held while recovering: two recoveries at once (the supervisor's and a caller's) would
    /// each bump the epoch, and the second bump would fence writes made after the first.
    recovering: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("prefix", &self.options.prefix)
            .field("healthy", &self.is_healthy())
            .finish_non_exhaustive()
    }
}

impl Cache {
    /// A cache for `options.target`. It starts degraded; [`Cache::recover`] connects it.
    pub fn new(options: CacheOptions) -> anyhow::Result<Self> {
        Ok(Self {
            connection: Mutex::new(None),
            epoch_key: format!("{}:epoch", options.prefix),
            key_prefix: format!("{}:key:", options.prefix),
            options,
            store_script: Script::new(STORE),
            mark_script: Script::new(MARK),
            unmark_script: Script::new(UNMARK),
            writes_enabled: AtomicBool::new(false),
            reads_enabled: AtomicBool::new(false),
            run_id: Mutex::new(None),
            recovering: tokio::sync::Mutex::new(()),
            known_epoch: std::sync::atomic::AtomicI64::new(0),
        })
    }

    /// Where the cache's Redis is; the event bus and heartbeats use the same.
    pub fn target(&self) -> &RedisTarget {
        &self.options.target
    }

    /// True while reads may use the cache.
    pub fn is_healthy(&self) -> bool {
        self.reads_enabled.load(Ordering::Acquire)
    }

    /// The cached state of `key`, or `None` on a miss, a stale epoch or while degraded.
    /// A miss also reports the epoch it saw, for the fill that follows it.
    pub async fn lookup(&self, key: &str) -> Lookup {
        if !self.reads_enabled.load(Ordering::Acquire) {
            return Lookup::Degraded;
        }
        let Some(mut connection) = self.connection() else {
            return Lookup::Degraded;
        };
        // The entry first, then the epoch: see the module comment for why that order is safe.
        type Entry = (
            Option<i64>,
            Option<i64>,
            Option<i64>,
            Option<Vec<u8>>,
            Option<i64>,
            Option<i64>,
            Option<i64>,
        );
        let mut pipeline = redis::pipe();
        pipeline
            .cmd("HMGET")
            .arg(self.entry_key(key))
            .arg(&["e", "r", "d", "v", "c", "n", "p"])
            .cmd("GET")
            .arg(&self.epoch_key);
        let result: RedisResult<(Entry, Option<i64>)> =
            self.call(pipeline.query_async(&mut connection)).await;
        match result {
            Ok((
                (entry_epoch, revision, deleted, value, create_revision, version, pending),
                epoch,
            )) => {
                let epoch = epoch.unwrap_or(0);
                self.known_epoch.store(epoch, Ordering::Release);
                if entry_epoch != Some(epoch) {
                    return Lookup::Miss { epoch };
                }
                // A leased key (d = 2) is read from the database like a pending one.
                if pending.unwrap_or(0) > 0 || deleted == Some(2) {
                    return Lookup::Pending;
                }
                let Some(revision) = revision else {
                    return Lookup::Miss { epoch };
                };
                Lookup::Hit(CacheEntry {
                    revision,
                    value: (deleted == Some(0)).then(|| utf8_value(value.unwrap_or_default())),
                    create_revision: create_revision.unwrap_or(0),
                    version: version.unwrap_or(0),
                    lease: None,
                })
            }
            Err(err) => {
                self.mark_down(&err);
                Lookup::Degraded
            }
        }
    }

    /// The epoch this node last saw; a write snapshots it before committing.
    pub fn known_epoch(&self) -> i64 {
        self.known_epoch.load(Ordering::Acquire)
    }

    /// Marks `keys` as written, before the commit (see "Pending writes" above), in the epoch
    /// this node knows; if that has moved, learns the new one and marks again. Returns the
    /// epoch to give the writes' [`Cache::store`], and whether the marks are held. When Redis
    /// cannot be reached the write goes on unmarked: nothing can be read from the cache then,
    /// and its update will fence.
    pub async fn mark(&self, keys: &[&str]) -> Marked {
        let mut epoch = self.known_epoch();
        let unheld = |epoch| Marked { epoch, held: false };
        if keys.is_empty() {
            return Marked { epoch, held: true };
        }
        if !self.writes_enabled.load(Ordering::Acquire) {
            return unheld(epoch);
        }
        let Some(mut connection) = self.connection() else {
            return unheld(epoch);
        };
        let ttl_ms = u64::try_from(self.options.ttl.as_millis()).unwrap_or(u64::MAX);
        for _ in 0..2 {
            let mut invocation = self.mark_script.key(&self.epoch_key);
            for key in keys {
                invocation.key(self.entry_key(key));
            }
            invocation.arg(epoch).arg(ttl_ms);
            let mut pipeline = redis::pipe();
            pipeline.invoke_script(&invocation);
            let result: RedisResult<(i64,)> =
                self.call(pipeline.query_async(&mut connection)).await;
            match result {
                Ok((reply,)) if reply != STORE_EPOCH_MOVED => return Marked { epoch, held: true },
                Ok(_) => {
                    self.refresh_epoch(&mut connection).await;
                    epoch = self.known_epoch();
                }
                Err(err) => {
                    self.mark_down(&err);
                    return unheld(epoch);
                }
            }
        }
        unheld(epoch)
    }

    /// A write's cache update, after its commit: stores each entry unless the cache already
    /// holds a newer revision of its key, and takes away the marks of `released`, the keys
    /// the writes did not change. Commands are pipelined with `extra` (the change events'
    /// PUBLISHes) in one round trip. Returns true when the cache now holds each entry's
    /// revision or a newer one in the current epoch; false when the update was skipped
    /// (degraded), failed (the cache is then marked degraded) or refused because the epoch
    /// moved. After a false, a write must [`Cache::fence`] before it is acknowledged.
    pub async fn store(
        &self,
        entries: &[EntryRef<'_>],
        released: &[&str],
        epoch: i64,
        extra: redis::Pipeline,
    ) -> bool {
        self.update(entries, released, epoch, extra, true).await
    }

    async fn update(
        &self,
        entries: &[EntryRef<'_>],
        released: &[&str],
        epoch: i64,
        extra: redis::Pipeline,
        write: bool,
    ) -> bool {
        if !self.writes_enabled.load(Ordering::Acquire) {
            return false;
        }
        let Some(mut connection) = self.connection() else {
            return false;
        };
        let mut pipeline = extra;
        let ttl_ms = u64::try_from(self.options.ttl.as_millis()).unwrap_or(u64::MAX);
        if !entries.is_empty() {
            let mut invocation = self.store_script.key(&self.epoch_key);
            invocation
                .arg(epoch)
                .arg(ttl_ms)
                .arg(if write { "1" } else { "0" });
            for entry in entries {
                invocation
                    .key(self.entry_key(entry.key))
                    .arg(entry.revision)
                    .arg(match (entry.value, entry.leased) {
                        (None, _) => 1,
                        (Some(_), false) => 0,
                        (Some(_), true) => 2,
                    })
                    // A leased entry's value is never served, so it is not stored.
                    .arg(if entry.leased {
                        ""
                    } else {
                        entry.value.unwrap_or_default()
                    })
                    .arg(entry.create_revision)
                    .arg(entry.version);
            }
            pipeline.invoke_script(&invocation);
        }
        if !released.is_empty() {
            let mut invocation = self.unmark_script.key(&self.epoch_key);
            for key in released {
                invocation.key(self.entry_key(key));
            }
            invocation.arg(epoch);
            pipeline.invoke_script(&invocation);
        }
        let result: RedisResult<Vec<i64>> = self.call(pipeline.query_async(&mut connection)).await;
        match result {
            Ok(replies) => {
                if replies.contains(&STORE_EPOCH_MOVED) {
                    // Dropped, not retried: the data may predate writes made during another
                    // node's outage. The key now misses and refills from the database.
                    metrics::counter!("kg_cache_fenced_total").increment(1);
                    self.refresh_epoch(&mut connection).await;
                    return false;
                }
                true
            }
            Err(err) => {
                self.mark_down(&err);
                false
            }
        }
    }

    async fn refresh_epoch(&self, connection: &mut ConnectionManager) {
        let epoch: RedisResult<Option<i64>> = self
            .call(
                redis::cmd("GET")
                    .arg(&self.epoch_key)
                    .query_async(connection),
            )
            .await;
        match epoch {
            Ok(epoch) => self
                .known_epoch
                .store(epoch.unwrap_or(0), Ordering::Release),
            Err(err) => self.mark_down(&err),
        }
    }

    /// Run by a write whose cache update did not land, before the write is acknowledged:
    /// increments the epoch, so that no node can read an entry older than the write. Such an
    /// entry can be in the cache when another node filled it from a database read that raced
    /// the write, in an epoch this node could not update: after a Redis restart or flush that
    /// the other node did not notice, say. The increment goes over a fresh connection, because
    /// this node's own may be the one that broke.
    ///
    /// Returns false when Redis cannot be reached within the cache timeout. A refused
    /// connection costs no wait, so writes do not stall while Redis is down; nothing can be
    /// read from a Redis that is down, and one that restarts comes back empty.
    pub async fn fence(&self) -> bool {
        let bumped = self
            .call(async {
                let client = self.options.target.client().await?;
                let mut connection = client.get_multiplexed_async_connection().await?;
                redis::cmd("INCR")
                    .arg(&self.epoch_key)
                    .query_async::<i64>(&mut connection)
                    .await
            })
            .await;
        match bumped {
            Ok(epoch) => {
                metrics::counter!("kg_cache_fences_total").increment(1);
                self.known_epoch.store(epoch, Ordering::Release);
                true
            }
            Err(err) => {
                self.mark_down(&err);
                false
            }
        }
    }

    /// Fills the cache after a database read that followed a miss in `epoch`; the script makes
    /// a stale fill (older revision, or the epoch moved since the miss) a no-op.
    pub async fn fill(&self, entry: EntryRef<'_>, epoch: i64) {
        if self.reads_enabled.load(Ordering::Acquire) {
            self.update(&[entry], &[], epoch, redis::pipe(), false)
                .await;
        }
    }

    /// Connects (or checks the connection) and, after an outage, bumps the epoch before
    /// reads trust the cache again. Returns whether the cache is healthy afterwards.
    pub async fn recover(&self) -> bool {
        if self.is_healthy() {
            return true;
        }
        let _recovering = self.recovering.lock().await;
        if self.is_healthy() {
            return true; // another caller recovered while this one waited
        }
        match self.try_recover().await {
            Ok(()) => true,
            Err(err) => {
                self.mark_down(&err);
                false
            }
        }
    }

    async fn try_recover(&self) -> RedisResult<()> {
        let mut connection = match self.connection() {
            Some(connection) => connection,
            None => {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(self.options.timeout)
                    .set_response_timeout(self.options.timeout)
                    .set_number_of_retries(1);
                // Asked anew at every connection: after a Sentinel failover, the new master.
                let client = self.call(self.options.target.client()).await?;
                let connection = self
                    .call(ConnectionManager::new_with_config(client, config))
                    .await?;
                if let Ok(mut slot) = self.connection.lock() {
                    *slot = Some(connection.clone());
                }
                connection
            }
        };
        let run_id = self.server_run_id(&mut connection).await?;
        // Scripts may be gone after a restart or SCRIPT FLUSH; pipelines do not reload them.
        for script in [&self.store_script, &self.mark_script, &self.unmark_script] {
            self.call(script.prepare_invoke().load_async(&mut connection))
                .await?;
        }
        // Cache writes resume before the bump, fenced with the current epoch: any that run
        // after it are refused, and the key refills from the database.
        if let Ok(Some(current)) = self
            .call(
                redis::cmd("GET")
                    .arg(&self.epoch_key)
                    .query_async::<Option<i64>>(&mut connection),
            )
            .await
        {
            self.known_epoch.store(current, Ordering::Release);
        }
        self.writes_enabled.store(true, Ordering::Release);
        let epoch: i64 = self
            .call(
                redis::cmd("INCR")
                    .arg(&self.epoch_key)
                    .query_async(&mut connection),
            )
            .await?;
        if let Ok(mut slot) = self.run_id.lock() {
            *slot = Some(run_id);
        }
        self.known_epoch.store(epoch, Ordering::Release);
        self.reads_enabled.store(true, Ordering::Release);
        tracing::info!(
            epoch,
            "redis cache connected; entries of earlier epochs are ignored"
        );
        Ok(())
    }

    /// While healthy: notices a Redis restart that no failed call revealed, and degrades so
    /// that the next recovery bumps the epoch.
    pub async fn check_restart(&self) {
        let Some(mut connection) = self.connection() else {
            return;
        };
        let known = self.run_id.lock().ok().and_then(|slot| slot.clone());
        match self.server_run_id(&mut connection).await {
            Ok(current) if known.as_deref() == Some(current.as_str()) => {}
            Ok(_) => self.mark_down(&redis::RedisError::from((
                redis::ErrorKind::IoError,
                "redis restarted",
            ))),
            Err(err) => self.mark_down(&err),
        }
    }

    /// The server's run_id; an error when the server is not a master. A master that was
    /// demoted (Sentinel made another the master while it was away) keeps its run_id and
    /// answers reads from entries the new master may have replaced: it must not be used.
    async fn server_run_id(&self, connection: &mut ConnectionManager) -> RedisResult<String> {
        // ROLE's first element is "master", "slave" or "sentinel" (Redis 2.8.12 and later).
        let role: Vec<redis::Value> = self
            .call(redis::cmd("ROLE").query_async(&mut *connection))
            .await?;
        let is_master = matches!(
            role.first(),
            Some(redis::Value::BulkString(name)) if name.as_slice() == b"master"
        ) || matches!(role.first(), Some(redis::Value::SimpleString(name)) if name == "master");
        if !is_master {
            return Err(redis::RedisError::from((
                redis::ErrorKind::ReadOnly,
                "the redis server is no longer the master",
            )));
        }
        let info: String = self
            .call(redis::cmd("INFO").arg("server").query_async(connection))
            .await?;
        Ok(info
            .lines()
            .find_map(|line| line.strip_prefix("run_id:"))
            .unwrap_or_default()
            .trim()
            .to_owned())
    }

    fn mark_down(&self, err: &redis::RedisError) {
        metrics::counter!("kg_cache_errors_total").increment(1);
        self.writes_enabled.store(false, Ordering::Release);
        if self.options.target.follows_failover() {
            // The next recovery asks the Sentinels which server is the master now.
            if let Ok(mut slot) = self.connection.lock() {
                *slot = None;
            }
        }
        if self.reads_enabled.swap(false, Ordering::AcqRel) {
            tracing::warn!(error = %err, "redis cache unreachable; serving from the database");
        }
    }

    fn connection(&self) -> Option<ConnectionManager> {
        self.connection.lock().ok().and_then(|slot| slot.clone())
    }

    fn entry_key(&self, key: &str) -> String {
        format!("{}{key}", self.key_prefix)
    }

    /// Bounds a Redis call by the cache timeout, so a dead Redis never stalls a request longer.
    async fn call<T>(&self, call: impl Future<Output = RedisResult<T>>) -> RedisResult<T> {
        match tokio::time::timeout(self.options.timeout, call).await {
            Ok(result) => result,
            Err(_) => Err(redis::RedisError::from((
                redis::ErrorKind::IoError,
                "redis call timed out",
            ))),
        }
    }
}

/// Keeps the cache honest: every `interval`, retries recovery while degraded, and checks for
/// a Redis restart while healthy.
pub async fn supervise(cache: std::sync::Arc<Cache>, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if cache.is_healthy() {
            cache.check_restart().await;
        } else {
            cache.recover().await;
        }
    }
}

/// A cached value as text. Values are always written from a JSON string, so the bytes are
/// UTF-8 and are taken as they are, without a copy; anything else is decoded lossily.
fn utf8_value(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes)
        .unwrap_or_else(|err| String::from_utf8_lossy(err.as_bytes()).into_owned())
}
