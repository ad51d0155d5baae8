//! Building a node: open the store, start the writer, the cache and the background tasks, and
//! hold them in [`AppState`], which every handler gets. Nothing here knows HTTP: a store or
//! writer failure is a [`CallError`], which `http` maps to a status (`http::serve` puts the
//! state behind a listener).

use std::future::Future;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use kg_api::{DependencyState, NodeHealth};

use crate::breaker::Breaker;
use crate::cache::{self, Cache, CacheOptions};
use crate::config::Config;
use crate::contact::Contact;
use crate::events::{self, Events};
use crate::keepalive::KeepAlives;
use crate::redis_target::RedisTarget;
use crate::store::{
    self, ConnectOptions, Ended, Idempotent, LeaseEnd, OpResult, PrefixDelete, Store, StoreError,
    TxnOutcome, TxnPlan, WriteOp,
};
use crate::tokens::Tokens;
use crate::writer::{WriteError, Writer, WriterContext};

/// How often a degraded cache retries its connection.
const CACHE_RECOVERY_INTERVAL: Duration = Duration::from_millis(500);
/// How often a node publishes its heartbeat.
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
/// How often the histograms' samples are folded into their buckets (the exporter's own
/// upkeep task uses 5 s; a second keeps a busy node's backlog to one second of samples).
const METRICS_UPKEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Everything a handler needs. Cloned per request by axum, so it is one `Arc`.
#[derive(Debug, Clone)]
pub struct AppState(Arc<NodeState>);

impl std::ops::Deref for AppState {
    type Target = NodeState;

    fn deref(&self) -> &NodeState {
        &self.0
    }
}

/// How many snapshots one node streams at once.
pub const MAX_SNAPSHOTS: usize = 2;

/// The node's shared state, behind [`AppState`].
#[derive(Debug)]
pub struct NodeState {
    /// The node's id; visible ASCII, so that it can go in a response header.
    pub node_id: Arc<str>,
    pub listen: String,
    pub store: Arc<dyn Store>,
    /// The database URL, password masked, for /api/status.
    pub database_endpoint: String,
    pub writer: Writer,
    /// Renews leases in batches (`POST /api/leases/{id}/keepalive`).
    pub keepalives: KeepAlives,
    /// One permit per snapshot this node may stream at once (`GET /api/snapshot`): each holds
    /// a database session for as long as its client reads.
    pub snapshots: Arc<tokio::sync::Semaphore>,
    /// The Redis read cache, when `--redis-url` is given.
    pub cache: Option<Arc<Cache>>,
    pub events: Arc<Events>,
    /// Test hook: pause between a cache miss's database read and its fill.
    pub cache_fill_delay: Option<Duration>,
    /// Test hook: pause between a write's commit and its answer.
    pub write_reply_delay: Option<Duration>,
    /// The web view's files, served at `/` when given.
    pub web_dir: Option<std::path::PathBuf>,
    /// The accepted bearer tokens; `None` leaves the API open.
    pub auth: Option<Tokens>,
    pub max_value_bytes: usize,
    pub db_timeout: Duration,
    /// Open while the database is known to be down: database calls then fail at once.
    pub db_breaker: Arc<Breaker>,
    pub started: Instant,
    pub counters: Arc<RequestCounters>,
    pub metrics: PrometheusHandle,
    /// Flips to true when the node starts shutting down; long-lived streams end on it, since
    /// graceful shutdown waits for every connection to close.
    pub shutting_down: tokio::sync::watch::Sender<bool>,
    /// This node's contact with the database: after it lost the database, its next database
    /// call first gives the leases that were live at its last contact their full TTL back
    /// (see [`Store::refresh_leases`] and `contact.rs`).
    pub contact: Arc<Contact>,
}

/// Requests answered since start, by status class, for `/api/status`.
#[derive(Debug, Default)]
pub struct RequestCounters {
    pub total: AtomicU64,
    pub success: AtomicU64,
    pub client_error: AtomicU64,
    pub server_error: AtomicU64,
}

impl AppState {
    /// The largest request body the node reads: JSON may escape one byte of value as six
    /// (`\u0000`), so it leaves room for a value of the largest size in any encoding; the value
    /// itself is checked after parsing.
    pub fn body_limit(&self) -> usize {
        self.max_value_bytes
            .saturating_mul(6)
            .saturating_add(64 * 1024)
    }

    /// Opens the configured store and starts the node's writer.
    pub async fn build(config: &Config) -> anyhow::Result<Self> {
        let (url, _) = config.database_url();
        let options = ConnectOptions {
            max_connections: config.db_pool_size,
            acquire_timeout: config.db_timeout,
            read_fence: config.read_fence,
        };
        let store = store::connect(&url, &options).await?;
        Self::with_store(config, store)
    }

    /// A state over an already-open store; starts the writer and, with Redis, the cache
    /// supervisor, the event subscriber and the heartbeat.
    pub fn with_store(config: &Config, store: Arc<dyn Store>) -> anyhow::Result<Self> {
        let node_id: Arc<str> = config.node_id().into();
        // Every answer names the node in X-KeyGrid-Node, so the id must be a header value.
        if node_id.is_empty() || !node_id.bytes().all(|byte| byte.is_ascii_graphic()) {
            anyhow::bail!("node id {node_id:?} must be visible ASCII, as it goes in a header");
        }
        let auth = config
            .auth_tokens_file
            .as_deref()
            .map(Tokens::load)
            .transpose()?;
        let events = Arc::new(Events::new(&config.redis_prefix));
        let target = match (&config.redis_url, config.sentinel.redis_sentinel.is_empty()) {
            (Some(_), false) => {
                anyhow::bail!("give --redis-url or --redis-sentinel, not both")
            }
            (Some(url), true) => Some(RedisTarget::url(url)?),
            (None, false) => Some(RedisTarget::sentinel(
                &config.sentinel.redis_sentinel,
                &config.sentinel.redis_master,
            )?),
            (None, true) => None,
        };
        let cache = match target {
            Some(target) => {
                let cache = Arc::new(Cache::new(CacheOptions {
                    target,
                    prefix: config.redis_prefix.clone(),
                    ttl: config.cache_ttl,
                    timeout: config.cache_timeout,
                })?);
                tokio::spawn(cache::supervise(cache.clone(), CACHE_RECOVERY_INTERVAL));
                tokio::spawn(events::subscribe_redis(
                    cache.target().clone(),
                    events.clone(),
                    node_id.clone(),
                ));
                Some(cache)
            }
            None => None,
        };
        let writer = Writer::spawn(
            store.clone(),
            WriterContext {
                node_id: node_id.clone(),
                cache: cache.clone(),
                events: events.clone(),
                cache_update_delay: config.cache_update_delay,
                db_timeout: config.db_timeout,
            },
        );
        let keepalives = KeepAlives::spawn(store.clone(), config.keepalive_window);
        let contact = Arc::new(Contact::default());
        let state = AppState(Arc::new(NodeState {
            node_id,
            listen: config.listen.to_string(),
            writer,
            keepalives,
            snapshots: Arc::new(tokio::sync::Semaphore::new(MAX_SNAPSHOTS)),
            cache,
            events,
            cache_fill_delay: config.cache_fill_delay,
            write_reply_delay: config.write_reply_delay,
            web_dir: config.web_dir.clone(),
            auth,
            database_endpoint: store::redact_url(&config.database_url().0),
            store,
            max_value_bytes: config.max_value_bytes,
            db_timeout: config.db_timeout,
            db_breaker: Arc::new(Breaker::new(contact.clone())),
            started: Instant::now(),
            counters: Arc::default(),
            metrics: metrics_handle(),
            shutting_down: tokio::sync::watch::Sender::new(false),
            contact,
        }));
        tokio::spawn(sweep_leases(state.clone(), config.lease_sweep_interval));
        tokio::spawn(compact_history(
            state.store.clone(),
            config.history_retention,
        ));
        tokio::spawn(metrics_upkeep(state.metrics.clone()));
        if let Some(cache) = &state.cache {
            let probe = state.clone();
            tokio::spawn(events::heartbeat(
                cache.target().clone(),
                state.events.clone(),
                move || {
                    let state = probe.clone();
                    async move {
                        // Bounded well inside the interval, so a dead database makes the
                        // heartbeat say "degraded" on time rather than go quiet.
                        let revision = tokio::time::timeout(
                            HEARTBEAT_INTERVAL / 2,
                            state.store.current_revision(),
                        )
                        .await
                        .ok()
                        .and_then(Result::ok);
                        let healthy =
                            revision.is_some() && state.cache_state() == DependencyState::Ok;
                        let health = if healthy {
                            NodeHealth::Ok
                        } else {
                            NodeHealth::Degraded
                        };
                        (health, revision)
                    }
                },
                state.node_id.clone(),
                state.listen.clone(),
                HEARTBEAT_INTERVAL,
                config.cache_timeout,
            ));
        }
        Ok(state)
    }

    /// The cache's state for `/api/ready`, `/api/status` and heartbeats.
    pub fn cache_state(&self) -> DependencyState {
        match &self.cache {
            None => DependencyState::Disabled,
            Some(cache) if cache.is_healthy() => DependencyState::Ok,
            Some(_) => DependencyState::Degraded,
        }
    }

    /// Runs a store call with the database timeout; running out of time means the database
    /// is unavailable. While it is known to be down the call is not made, and the answer
    /// comes at once.
    pub async fn db<T, E>(&self, call: impl Future<Output = Result<T, E>>) -> Result<T, CallError>
    where
        CallError: From<E>,
    {
        if self.db_breaker.is_open() {
            metrics::counter!("kg_db_errors_total", "kind" => "breaker_open").increment(1);
            return Err(CallError::DatabaseUnavailable);
        }
        self.settle_leases().await?;
        let result = match tokio::time::timeout(self.db_timeout, call).await {
            Ok(result) => result.map_err(CallError::from),
            Err(_) => {
                metrics::counter!("kg_db_errors_total", "kind" => "timeout").increment(1);
                Err(CallError::DatabaseUnavailable)
            }
        };
        if matches!(result, Err(CallError::DatabaseUnavailable)) {
            if crate::planted::active("lease-refresh-revives-expired") {
                // Issue 47 item 1, planted back (with the refresh's in store/sql.rs): any
                // failed call, a busy database's too, makes the leases' refresh due.
                self.contact.lost();
            }
            // Not yet a loss of the database: the breaker's probe finds out (see breaker.rs).
            self.db_breaker.trip(self.store.clone(), self.db_timeout);
        } else {
            self.contact.answered();
        }
        result
    }

    /// After this node lost the database: gives the leases that were live when it last
    /// reached it their full TTL back, before anything else is read or written, so that an
    /// outage, during which no keep-alive could land through this node, never makes a lease
    /// expire. A lease whose deadline had passed by then is left alone: this node may have
    /// read it as expired, and an expired key never comes back (see `contact.rs`).
    /// Idempotent, so every node that saw the outage may run it.
    async fn settle_leases(&self) -> Result<(), CallError> {
        let Some(due) = self.contact.unsettled() else {
            return Ok(());
        };
        match tokio::time::timeout(self.db_timeout, self.store.refresh_leases(due.since)).await {
            Ok(Ok(extended)) => {
                self.contact.settled(due);
                if extended > 0 {
                    tracing::info!(extended, "leases given their full TTL after an outage");
                }
                Ok(())
            }
            Ok(Err(err)) => Err(CallError::from(err)),
            Err(_) => Err(CallError::DatabaseUnavailable),
        }
    }

    /// Queues a write for the next batch and waits, within the database timeout, for its commit.
    /// Deletes every live key under `prefix` at one revision, through the writer.
    pub async fn delete_prefix(
        &self,
        prefix: String,
        idempotent: Option<Idempotent>,
    ) -> Result<PrefixDelete, CallError> {
        self.db(self.writer.delete_prefix(prefix, idempotent)).await
    }

    /// Runs a multi-key transaction through the writer.
    pub async fn txn(&self, plan: TxnPlan) -> Result<TxnOutcome, CallError> {
        self.db(self.writer.txn(plan)).await
    }

    pub async fn write(&self, op: WriteOp) -> Result<OpResult, CallError> {
        let result = self.db(self.writer.write(op)).await?;
        if let Some(delay) = self.write_reply_delay {
            tokio::time::sleep(delay).await;
        }
        Ok(result)
    }
}

/// How a call through the node's state failed; `http` maps each to a status.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The database cannot be reached, did not answer in time, or is known to be down.
    #[error("database unavailable")]
    DatabaseUnavailable,
    /// The node is shutting down and takes no more writes.
    #[error("node is shutting down")]
    ShuttingDown,
    /// A bug or an unexpected database error.
    #[error("{0}")]
    Internal(#[source] anyhow::Error),
}

impl From<&StoreError> for CallError {
    fn from(err: &StoreError) -> Self {
        match err {
            StoreError::Unavailable(cause) => {
                metrics::counter!("kg_db_errors_total", "kind" => "unavailable").increment(1);
                tracing::warn!(error = %cause, "database unavailable");
                CallError::DatabaseUnavailable
            }
            StoreError::Internal(cause) => {
                metrics::counter!("kg_db_errors_total", "kind" => "internal").increment(1);
                CallError::Internal(anyhow::anyhow!("{cause}"))
            }
        }
    }
}

impl From<StoreError> for CallError {
    fn from(err: StoreError) -> Self {
        CallError::from(&err)
    }
}

impl From<WriteError> for CallError {
    fn from(err: WriteError) -> Self {
        match err {
            // The same error may be shared by every write of a failed batch.
            WriteError::Store(err) => CallError::from(&*err),
            WriteError::Stopped => CallError::ShuttingDown,
        }
    }
}

/// Purges tombstones older than `retention`, checking every half retention (1 s to 10 min).
/// Deletes the keys of leases whose deadline has passed, through the writer so that the deletes
/// are published in revision order. Every node runs this; `end_leases` makes each expiry
/// happen once, on whichever node gets there first.
async fn sweep_leases(state: AppState, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if *state.shutting_down.borrow() {
            return;
        }
        // Straight to the store, not through `db`: a check that fails while the database
        // changes hands must not trip the breaker and turn away the requests behind it.
        match tokio::time::timeout(state.db_timeout, state.store.leases_due()).await {
            Ok(Ok(due)) => {
                state.contact.checked();
                if !due {
                    continue;
                }
            }
            // A check that failed is a loss only if the database cannot be reached at all: a
            // slow read, or a pool that slow reads hold, gives no lease a new TTL.
            Ok(Err(_)) | Err(_) => {
                state
                    .db_breaker
                    .suspect(state.store.clone(), state.db_timeout);
                continue;
            }
        }
        // Batches until none is left, so that a burst of expiries is not spread over ticks.
        loop {
            match state
                .db(state
                    .writer
                    .end_leases(LeaseEnd::Expired(EXPIRE_BATCH), None))
                .await
            {
                Ok(Ended::Deleted { changes, .. }) if !changes.is_empty() => {
                    metrics::counter!("kg_lease_expired_keys_total")
                        .increment(changes.len() as u64);
                }
                Ok(_) => break,
                Err(err) => {
                    tracing::warn!(error = %err, "lease expiry failed");
                    break;
                }
            }
        }
    }
}

/// The most leases one expiry transaction ends.
const EXPIRE_BATCH: u32 = 64;

async fn compact_history(store: Arc<dyn Store>, retention: Duration) {
    let interval = (retention / 2).clamp(Duration::from_secs(1), Duration::from_secs(600));
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        match store.compact(retention).await {
            Ok(done) if done.tombstones == 0 && done.versions == 0 => {}
            Ok(done) => tracing::info!(
                revision = done.revision,
                tombstones = done.tombstones,
                versions = done.versions,
                "compacted the history past its retention"
            ),
            Err(err) => tracing::warn!(error = %err, "compaction failed"),
        }
    }
}

/// Folds the samples each histogram has collected into its buckets. `build_recorder` leaves
/// this to its caller, and the recorder keeps every sample until then: a node that nobody
/// scraped grew without bound (docs/performance.md has the measurement).
async fn metrics_upkeep(handle: PrometheusHandle) {
    let mut ticker = tokio::time::interval(METRICS_UPKEEP_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        handle.run_upkeep();
    }
}

/// The process-wide Prometheus recorder; the `metrics` macros write to it from anywhere.
fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let buckets = [
                0.000_25, 0.000_5, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ];
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full("kg_http_request_duration_seconds".to_owned()),
                    &buckets,
                )
                .and_then(|builder| {
                    builder.set_buckets_for_metric(
                        Matcher::Full("kg_write_batch_size".to_owned()),
                        &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0],
                    )
                })
                .and_then(|builder| {
                    builder.set_buckets_for_metric(
                        Matcher::Full("kg_keepalive_batch_size".to_owned()),
                        &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 1024.0],
                    )
                })
                .map(PrometheusBuilder::build_recorder);
            match recorder {
                Ok(recorder) => {
                    let handle = recorder.handle();
                    // Fails only if another recorder is installed; the handle still renders.
                    let _ = metrics::set_global_recorder(recorder);
                    handle
                }
                // Bucket lists are literals above, so this is unreachable in practice; a
                // recorder without custom buckets is still a working one.
                Err(_) => PrometheusBuilder::new().build_recorder().handle(),
            }
        })
        .clone()
}

/// Resolves on SIGTERM or ctrl-c.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown signal received; draining in-flight requests");
}
