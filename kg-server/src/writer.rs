//! Group commit: one task per node turns concurrent writes into batches, one transaction each;
//! a second task then updates the cache and publishes each batch's change events, in commit
//! order, before anyone is answered. The next batch commits meanwhile.
//!
//! A lease's end (expiry or revoke), a prefix delete and a multi-key transaction go through the
//! same task, so that their changes are published in revision order with everyone else's
//! writes. Transactions that queued up together share one commit, as single writes do.
//!
//! Every write takes the cluster-wide revision lock until its commit is durable, so writes
//! committed one by one are bound by fsync latency (measured here: ~720 serialised commits/s
//! against ~6,500 unserialised upserts/s). Batching everything that queued up while the
//! previous commit was in flight pays the lock and the fsync once per batch instead.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::cache::{Cache, EntryRef};
use crate::events::{change_event, Events};
use crate::store::{
    Change, Ended, Idempotent, LeaseEnd, MarkKeys, OpResult, PrefixDelete, Store, StoreError,
    TxnOutcome, TxnPlan, WriteOp, WriteOutcome,
};

/// The most writes one transaction carries; a bound on how long the revision lock is held.
pub const MAX_BATCH: usize = 256;

/// The most keys of failed commits that wait for a later commit to settle them (see
/// [`InDoubt`]). Past it a failure fences the whole cache, as every failure once did: the
/// settling reads are one per key, and a prefix delete can mark thousands.
const MAX_IN_DOUBT: usize = 16 * MAX_BATCH;

/// How many of those keys are read from the database at once when they are settled: half the
/// default pool, so that requests keep connections meanwhile.
const SETTLE_READS: usize = 8;

/// Hands writes to the node's batching task.
#[derive(Debug, Clone)]
pub struct Writer {
    queue: mpsc::Sender<Pending>,
}

#[derive(Debug)]
enum Pending {
    Write {
        op: WriteOp,
        reply: oneshot::Sender<Result<OpResult, Arc<StoreError>>>,
    },
    EndLeases {
        end: LeaseEnd,
        idempotent: Option<Idempotent>,
        reply: oneshot::Sender<EndResult>,
    },
    DeletePrefix {
        prefix: String,
        idempotent: Option<Idempotent>,
        reply: oneshot::Sender<PrefixResult>,
    },
    Txn {
        plan: TxnPlan,
        reply: oneshot::Sender<TxnReply>,
    },
}

type PrefixResult = Result<PrefixDelete, Arc<StoreError>>;

type TxnReply = Result<TxnOutcome, Arc<StoreError>>;

/// What a lease's end did (see [`Store::end_leases`]).
type EndResult = Result<Ended, Arc<StoreError>>;

/// Why a write did not get an outcome.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error(transparent)]
    Store(Arc<StoreError>),
    /// The batching task is gone: the node is shutting down.
    #[error("writer stopped")]
    Stopped,
}

/// What the batching task needs besides the store.
#[derive(Debug, Clone)]
pub struct WriterContext {
    pub node_id: Arc<str>,
    pub cache: Option<Arc<Cache>>,
    pub events: Arc<Events>,
    /// Test hook: a pause between a batch's commit and its cache update.
    pub cache_update_delay: Option<Duration>,
    /// Bound on the reads that settle failed commits' keys (see [`InDoubt`]).
    pub db_timeout: Duration,
}

impl Writer {
    /// Starts the batching task; it runs until every `Writer` clone is dropped.
    pub fn spawn(store: Arc<dyn Store>, context: WriterContext) -> Self {
        let (queue, receiver) = mpsc::channel(MAX_BATCH * 4);
        tokio::spawn(run(store, context, receiver));
        Self { queue }
    }

    /// Queues one write and waits for its batch to commit.
    pub async fn write(&self, op: WriteOp) -> Result<OpResult, WriteError> {
        let (reply, outcome) = oneshot::channel();
        self.queue
            .send(Pending::Write { op, reply })
            .await
            .map_err(|_| WriteError::Stopped)?;
        match outcome.await {
            Ok(result) => result.map_err(WriteError::Store),
            Err(_) => Err(WriteError::Stopped),
        }
    }

    /// Deletes every live key under `prefix` at one revision (see [`Store::delete_prefix`])
    /// and waits until the deletes are published.
    pub async fn delete_prefix(
        &self,
        prefix: String,
        idempotent: Option<Idempotent>,
    ) -> Result<PrefixDelete, WriteError> {
        let (reply, outcome) = oneshot::channel();
        self.queue
            .send(Pending::DeletePrefix {
                prefix,
                idempotent,
                reply,
            })
            .await
            .map_err(|_| WriteError::Stopped)?;
        match outcome.await {
            Ok(result) => result.map_err(WriteError::Store),
            Err(_) => Err(WriteError::Stopped),
        }
    }

    /// Runs a transaction (see [`Store::txns`]) and waits until its changes are published.
    pub async fn txn(&self, plan: TxnPlan) -> Result<TxnOutcome, WriteError> {
        let (reply, outcome) = oneshot::channel();
        self.queue
            .send(Pending::Txn { plan, reply })
            .await
            .map_err(|_| WriteError::Stopped)?;
        match outcome.await {
            Ok(result) => result.map_err(WriteError::Store),
            Err(_) => Err(WriteError::Stopped),
        }
    }

    /// Ends leases (see [`Store::end_leases`]) and waits until their deletes are published.
    pub async fn end_leases(
        &self,
        end: LeaseEnd,
        idempotent: Option<Idempotent>,
    ) -> Result<Ended, WriteError> {
        let (reply, outcome) = oneshot::channel();
        self.queue
            .send(Pending::EndLeases {
                end,
                idempotent,
                reply,
            })
            .await
            .map_err(|_| WriteError::Stopped)?;
        match outcome.await {
            Ok(result) => result.map_err(WriteError::Store),
            Err(_) => Err(WriteError::Stopped),
        }
    }
}

/// A committed batch on its way to the cache, the event bus and its writers.
enum Committed {
    Writes {
        ops: Vec<WriteOp>,
        outcomes: Vec<OpResult>,
        epoch: i64,
        replies: Vec<oneshot::Sender<Result<OpResult, Arc<StoreError>>>>,
    },
    Ended {
        ended: Ended,
        epoch: i64,
        reply: oneshot::Sender<EndResult>,
    },
    Prefix {
        result: PrefixDelete,
        reply: oneshot::Sender<PrefixResult>,
    },
    Txns {
        outcomes: Vec<TxnOutcome>,
        epoch: i64,
        replies: Vec<oneshot::Sender<TxnReply>>,
    },
    /// Not a commit: a commit that failed, whose keys wait for the next one to settle them.
    InDoubt(InDoubt),
}

impl Committed {
    /// Whether the batch took the revision lock, after every commit this node tried before
    /// it, so that each of those has landed or never will: every write does, and a prefix
    /// delete or a lease's end that found nothing to delete may not.
    fn settles(&self) -> bool {
        match self {
            Committed::Writes { .. } | Committed::Txns { .. } => true,
            Committed::Ended { ended, .. } => matches!(ended, Ended::Deleted { .. }),
            Committed::Prefix { result, .. } => matches!(result, PrefixDelete::Deleted { .. }),
            Committed::InDoubt(_) => false,
        }
    }
}

/// The keys of a commit that failed, marked pending in `epoch` (a key written twice, twice).
///
/// Such a commit may have landed all the same (a connection lost in COMMIT, a leader that
/// died after its commit reached the standby), so the keys' cached entries may be older than
/// the database. Their marks stay: no node serves them from the cache meanwhile, while every
/// other key is still served, through a failover of the database too. The next commit of this
/// node takes the revision lock after the failed one, so once it has committed the failed one
/// has landed or never will; the keys are then read from the database and stored as the
/// failed commit's cache update, which takes the marks away. A failure whose keys are not
/// all marked fences the whole cache instead ([`Cache::fence`]).
#[derive(Debug)]
struct InDoubt {
    epoch: i64,
    keys: Vec<String>,
}

/// Commits batches one after the other. Each committed batch goes to `publish`, so the next
/// batch commits while the previous one's cache update and events are still in flight.
async fn run(store: Arc<dyn Store>, context: WriterContext, mut receiver: mpsc::Receiver<Pending>) {
    // Two batches may wait for publishing; past that the committer waits too, so a slow Redis
    // slows writes down instead of piling them up.
    let (committed_tx, committed_rx) = mpsc::channel(2);
    tokio::spawn(publish(store.clone(), context.clone(), committed_rx));
    let mut batch: Vec<Pending> = Vec::with_capacity(MAX_BATCH);
    while receiver.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let mut ops = Vec::with_capacity(batch.len());
        let mut replies = Vec::with_capacity(batch.len());
        let mut ends = Vec::new();
        let mut prefixes = Vec::new();
        let (mut plans, mut txn_replies) = (Vec::new(), Vec::new());
        for pending in batch.drain(..) {
            match pending {
                Pending::Write { op, reply } => {
                    ops.push(op);
                    replies.push(reply);
                }
                Pending::EndLeases {
                    end,
                    idempotent,
                    reply,
                } => ends.push((end, idempotent, reply)),
                Pending::DeletePrefix {
                    prefix,
                    idempotent,
                    reply,
                } => prefixes.push((prefix, idempotent, reply)),
                Pending::Txn { plan, reply } => {
                    plans.push(plan);
                    txn_replies.push(reply);
                }
            }
        }
        if !plans.is_empty() {
            metrics::histogram!("kg_txn_batch_size").record(plans.len() as f64);
            let (mark, marks) = mark_hook(&context);
            match store.txns(&context.node_id, &plans, &*mark).await {
                Ok((outcomes, epoch)) => {
                    let committed = Committed::Txns {
                        outcomes,
                        epoch,
                        replies: txn_replies,
                    };
                    if committed_tx.send(committed).await.is_err() {
                        return;
                    }
                }
                Err(err) => {
                    fail_all(&context, &committed_tx, err, txn_replies, marks.in_doubt()).await;
                }
            }
        }
        // Before the batch's writes: all of them were in flight at once, so any order is one
        // a client could have seen.
        for (prefix, idempotent, reply) in prefixes {
            let (mark, marks) = mark_hook(&context);
            match store
                .delete_prefix(&context.node_id, &prefix, idempotent.as_ref(), &*mark)
                .await
            {
                Ok(result) => {
                    if committed_tx
                        .send(Committed::Prefix { result, reply })
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                Err(err) => {
                    fail_all(&context, &committed_tx, err, [reply], marks.in_doubt()).await;
                }
            }
        }
        for (end, idempotent, reply) in ends {
            // No marks: a leased key is never served from the cache (see cache.rs), so there
            // is no cached value for the delete to race.
            let epoch = context
                .cache
                .as_ref()
                .map_or(0, |cache| cache.known_epoch());
            match store
                .end_leases(&context.node_id, end, idempotent.as_ref())
                .await
            {
                Ok(ended) => {
                    let committed = Committed::Ended {
                        ended,
                        epoch,
                        reply,
                    };
                    if committed_tx.send(committed).await.is_err() {
                        return;
                    }
                }
                // Fenced: a lease's end is rare, and its keys carry no marks to keep.
                Err(err) => fail_all(&context, &committed_tx, err, [reply], None).await,
            }
        }
        if ops.is_empty() {
            continue;
        }
        metrics::histogram!("kg_write_batch_size").record(ops.len() as f64);
        // Mark the keys pending before the commit makes the new values visible, and keep the
        // epoch they were marked in: the cache refuses this batch's updates if a recovery
        // bumped the epoch meanwhile (see cache.rs).
        let (epoch, held) = match &context.cache {
            Some(cache) => {
                let keys: Vec<&str> = ops.iter().map(|op| op.key.as_str()).collect();
                let marked = cache.mark(&keys).await;
                (marked.epoch, marked.held)
            }
            None => (0, false),
        };
        match store.apply(&context.node_id, &ops).await {
            Ok(outcomes) => {
                let committed = Committed::Writes {
                    ops,
                    outcomes,
                    epoch,
                    replies,
                };
                if committed_tx.send(committed).await.is_err() {
                    return;
                }
            }
            Err(err) => {
                let in_doubt = held.then(|| InDoubt {
                    epoch,
                    keys: ops.into_iter().map(|op| op.key).collect(),
                });
                fail_all(&context, &committed_tx, err, replies, in_doubt).await;
            }
        }
    }
}

/// Answers every writer of a commit that failed. It may have landed all the same, so the
/// keys' cached values may be old: their marks wait for the next commit to settle them (see
/// [`InDoubt`]), or, when there are none to keep, every cache entry is retired.
async fn fail_all<T>(
    context: &WriterContext,
    committed_tx: &mpsc::Sender<Committed>,
    err: StoreError,
    replies: impl IntoIterator<Item = oneshot::Sender<Result<T, Arc<StoreError>>>>,
    in_doubt: Option<InDoubt>,
) {
    if let Some(cache) = &context.cache {
        match in_doubt {
            Some(in_doubt) if in_doubt.keys.is_empty() => {}
            // Through the publishing task, after the batches committed before this one.
            Some(in_doubt) => {
                if let Err(mpsc::error::SendError(_)) =
                    committed_tx.send(Committed::InDoubt(in_doubt)).await
                {
                    cache.fence().await;
                }
            }
            None => {
                cache.fence().await;
            }
        }
    }
    let err = Arc::new(err);
    for reply in replies {
        let _ = reply.send(Err(err.clone()));
    }
}

/// Publishes committed batches in commit order, then answers their writers. Failed commits'
/// keys wait here for a batch that settles them (see [`InDoubt`]).
async fn publish(
    store: Arc<dyn Store>,
    context: WriterContext,
    mut committed: mpsc::Receiver<Committed>,
) {
    let mut in_doubt: Vec<InDoubt> = Vec::new();
    while let Some(batch) = committed.recv().await {
        if let Committed::InDoubt(failed) = batch {
            in_doubt.push(failed);
            if in_doubt
                .iter()
                .map(|failed| failed.keys.len())
                .sum::<usize>()
                > MAX_IN_DOUBT
            {
                if let Some(cache) = &context.cache {
                    cache.fence().await;
                }
                // Their marks were made in an epoch that no longer counts.
                in_doubt.clear();
            }
            continue;
        }
        if let Some(delay) = context.cache_update_delay {
            tokio::time::sleep(delay).await;
        }
        // Before this batch's writers are answered: a client that wrote after an outage then
        // finds the cache serving the failed writes' keys again.
        if !in_doubt.is_empty() && batch.settles() {
            settle(&*store, &context, &mut in_doubt).await;
        }
        match batch {
            Committed::Writes {
                ops,
                outcomes,
                epoch,
                replies,
            } => {
                // The plant: a write whose caller gave up before its commit landed (a
                // timeout) is taken to have changed nothing, so its key's mark goes without
                // its new value, and the cache serves the old one.
                let abandoned: Vec<bool> = if crate::planted::active("abandoned-writes-uncached") {
                    replies.iter().map(|reply| reply.is_closed()).collect()
                } else {
                    Vec::new()
                };
                after_commit(&context, ops, &outcomes, &abandoned, epoch).await;
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    // A caller that gave up (timeout, disconnect) no longer listens; its write
                    // still committed, which is why a timeout's outcome is "unknown".
                    let _ = reply.send(Ok(outcome));
                }
            }
            Committed::Ended {
                ended,
                epoch,
                reply,
            } => {
                if let Ended::Deleted { changes, .. } = &ended {
                    deliver(&context, changes, &[], epoch).await;
                }
                let _ = reply.send(Ok(ended));
            }
            Committed::Prefix { result, reply } => {
                if let PrefixDelete::Deleted { changes, epoch } = &result {
                    deliver(&context, changes, &[], *epoch).await;
                }
                let _ = reply.send(Ok(result));
            }
            Committed::Txns {
                outcomes,
                epoch,
                replies,
            } => {
                // In revision order: the transactions ran one after the other.
                let changes: Vec<Change> = outcomes
                    .iter()
                    .filter_map(|outcome| match outcome {
                        TxnOutcome::Done { changes, .. } => Some(changes.iter().cloned()),
                        _ => None,
                    })
                    .flatten()
                    .collect();
                if !changes.is_empty() {
                    deliver(&context, &changes, &[], epoch).await;
                }
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    let _ = reply.send(Ok(outcome));
                }
            }
            Committed::InDoubt(_) => unreachable!("handled above"),
        }
    }
}

/// Settles failed commits' keys, after a commit that came after them (see [`InDoubt`]): reads
/// each key from the database and stores it as the failed commit's cache update, which takes
/// its marks away. Keys that could not be read stay in doubt, marked, for the next commit.
///
/// A key the database does not hold is stored as a tombstone at the revision read after that
/// commit: no fill of a value older than the failed commit can then land over it (the cache
/// never lowers a revision), and any later write of the key outranks it.
async fn settle(store: &dyn Store, context: &WriterContext, in_doubt: &mut Vec<InDoubt>) {
    let Some(cache) = &context.cache else {
        in_doubt.clear();
        return;
    };
    let Ok(Ok(floor)) = tokio::time::timeout(context.db_timeout, store.current_revision()).await
    else {
        return;
    };
    while let Some(failed) = in_doubt.pop() {
        let mut keys: Vec<&str> = failed.keys.iter().map(String::as_str).collect();
        keys.sort_unstable();
        keys.dedup();
        // Several at a time: the settling batch's writers wait for them all, and each is a
        // round trip (with the read fence, a synchronous commit, which concurrent ones share).
        let mut reads = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(SETTLE_READS) {
            let chunk_reads = futures::future::join_all(
                chunk
                    .iter()
                    .map(|key| tokio::time::timeout(context.db_timeout, store.get(key))),
            )
            .await;
            reads.extend(chunk.iter().copied().zip(chunk_reads));
        }
        if !reads.iter().all(|(_, read)| matches!(read, Ok(Ok(_)))) {
            drop(reads);
            in_doubt.push(failed);
            return;
        }
        let records: std::collections::HashMap<&str, _> = reads
            .into_iter()
            .filter_map(|(key, read)| match read {
                Ok(Ok(record)) => Some((key, record)),
                _ => None,
            })
            .collect();
        // Each key as often as it was marked: every entry takes one mark away.
        let entries: Vec<EntryRef<'_>> = failed
            .keys
            .iter()
            .map(
                |key| match records.get(key.as_str()).and_then(Option::as_ref) {
                    Some(record) => EntryRef {
                        key,
                        revision: record.mod_revision,
                        value: record.value.as_deref(),
                        create_revision: record.create_revision,
                        version: record.version,
                        leased: record.lease.is_some(),
                    },
                    None => EntryRef {
                        key,
                        revision: floor,
                        value: None,
                        create_revision: 0,
                        version: 0,
                        leased: false,
                    },
                },
            )
            .collect();
        // Not landing is safe: Redis is then degraded and its recovery moves the epoch, or the
        // epoch has moved already, and marks of an older epoch count for nothing.
        for chunk in entries.chunks(MAX_BATCH) {
            cache.store(chunk, &[], failed.epoch, redis::pipe()).await;
        }
        metrics::counter!("kg_cache_settled_keys_total").increment(failed.keys.len() as u64);
    }
}

/// [`Store::delete_prefix`]'s and [`Store::txns`]'s hook: marks the keys pending in the
/// cache, [`MAX_BATCH`] at a time so that Redis is never held up by one script over a whole
/// range. Every key must be marked in the epoch the update will use, so if the epoch moved
/// between two calls the keys are marked again. The second half keeps what was marked, for a
/// commit that fails.
fn mark_hook(context: &WriterContext) -> (Box<MarkKeys>, Arc<MarkLog>) {
    let cache = context.cache.clone();
    let log = Arc::new(MarkLog::default());
    let marks = log.clone();
    let hook = Box::new(move |keys: Vec<String>| {
        let cache = cache.clone();
        let log = log.clone();
        Box::pin(async move {
            let Some(cache) = cache else {
                return 0;
            };
            let mut epoch = cache.known_epoch();
            let mut held = false;
            for _ in 0..3 {
                let mut marks = Vec::new();
                for chunk in keys.chunks(MAX_BATCH) {
                    let chunk: Vec<&str> = chunk.iter().map(String::as_str).collect();
                    marks.push(cache.mark(&chunk).await);
                }
                epoch = marks.last().map_or(epoch, |marked| marked.epoch);
                held = marks.iter().all(|marked| marked.held);
                if marks.iter().all(|marked| marked.epoch == epoch) {
                    break;
                }
                held = false;
            }
            log.record(InDoubt { epoch, keys }, held);
            epoch
        }) as futures::future::BoxFuture<'static, i64>
    });
    (hook, marks)
}

/// What a [`mark_hook`] marked: `None` until it ran, then the keys it holds marks on, or
/// `Some(None)` when it could not hold them all.
#[derive(Debug, Default)]
struct MarkLog(Mutex<Option<Option<InDoubt>>>);

impl MarkLog {
    fn record(&self, marked: InDoubt, held: bool) {
        if let Ok(mut slot) = self.0.lock() {
            *slot = Some(held.then_some(marked));
        }
    }

    /// The keys a failed commit leaves in doubt: none when the hook never ran (the commit
    /// failed before it changed anything), so an empty set. `None` when they are not all
    /// marked, and the cache must be fenced.
    fn in_doubt(&self) -> Option<InDoubt> {
        let Ok(mut slot) = self.0.lock() else {
            return None;
        };
        match slot.take() {
            None => Some(InDoubt {
                epoch: 0,
                keys: Vec::new(),
            }),
            Some(marked) => marked,
        }
    }
}

/// Updates the cache and publishes events for a committed batch, in revision order, before
/// the writers are answered: a write is acknowledged only once the cache holds its revision,
/// or the cache epoch has moved past every entry that could be older than it (see
/// [`Cache::fence`]), or Redis cannot be reached.
async fn after_commit(
    context: &WriterContext,
    ops: Vec<WriteOp>,
    outcomes: &[OpResult],
    abandoned: &[bool],
    epoch: i64,
) {
    let at_ms = chrono::Utc::now().timestamp_millis();
    let mut changes: Vec<Change> = Vec::with_capacity(ops.len());
    // Keys marked for a write that changed nothing: their marks go.
    let mut released: Vec<String> = Vec::new();
    for (index, (op, result)) in ops.into_iter().zip(outcomes).enumerate() {
        match result.outcome {
            // A replay wrote nothing: no cache update, no event.
            WriteOutcome::Applied {
                revision,
                create_revision,
                version,
            } if !result.replayed && abandoned.get(index) != Some(&true) => changes.push(Change {
                lease: op.value.as_ref().and(op.lease),
                key: op.key,
                value: op.value,
                revision,
                create_revision,
                version,
                node: context.node_id.to_string(),
                at_ms,
                reason: None,
                value_bytes: None,
            }),
            _ => released.push(op.key),
        }
    }
    let released: Vec<&str> = released.iter().map(String::as_str).collect();
    deliver(context, &changes, &released, epoch).await;
}

/// Stores committed changes in the cache and publishes their events; takes away the marks of
/// `released`, the keys marked for writes that changed nothing.
///
/// A revision that changed several keys (a prefix delete, a transaction) has its events counted in
/// `revision_events`, so that watchers know when they hold all of them. Its cache update goes
/// [`MAX_BATCH`] entries at a time, each with its events' PUBLISHes.
async fn deliver(context: &WriterContext, changes: &[Change], released: &[&str], epoch: i64) {
    // A revision's changes are next to each other: a batch's writes each have their own.
    let events: Vec<_> = changes
        .chunk_by(|a, b| a.revision == b.revision)
        .flat_map(|shared| {
            let count = (shared.len() > 1).then(|| u32::try_from(shared.len()).unwrap_or(u32::MAX));
            shared.iter().map(move |change| {
                let mut event = change_event(change);
                event.revision_events = count;
                Arc::new(event)
            })
        })
        .collect();
    if let Some(cache) = &context.cache {
        let mut landed = true;
        let mut released = Some(released);
        for (changes, events) in changes.chunks(MAX_BATCH).zip(events.chunks(MAX_BATCH)) {
            let entries: Vec<EntryRef<'_>> = changes
                .iter()
                .map(|change| EntryRef {
                    key: &change.key,
                    revision: change.revision,
                    value: change.value.as_deref(),
                    create_revision: change.create_revision,
                    version: change.version,
                    leased: change.lease.is_some(),
                })
                .collect();
            landed &= cache
                .store(
                    &entries,
                    released.take().unwrap_or_default(),
                    epoch,
                    context.events.redis_publishes(events),
                )
                .await;
        }
        if let Some(released) = released {
            // No changes: only marks to take away.
            cache.store(&[], released, epoch, redis::pipe()).await;
        } else if !landed {
            cache.fence().await;
        }
    }
    if !events.is_empty() {
        context.events.publish_local(events);
    }
}
