//! Change events and heartbeats: the node-local fan-out that watchers subscribe to, the Redis
//! publisher and subscriber that join the nodes' fan-outs, and the heartbeat task.
//!
//! Every committed write becomes a [`ChangeEvent`]. The writer hands each batch's events to
//! [`Events::publish_local`] (after PUBLISHing them on Redis, in the same pipeline as the cache
//! update), so watchers on the writing node see them at once. The subscriber task forwards
//! events committed by *other* nodes from Redis into the same fan-out. Redis pub/sub is
//! at-most-once, so watchers never rely on this for completeness: see `http/watch.rs`.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kg_api::{
    ChangeEvent, EventType, NodeHealth, NodeHeartbeat, PeerStatus, EVENTS_CHANNEL_SUFFIX,
    EVENT_VALUE_MAX_BYTES, NODES_CHANNEL_SUFFIX,
};
use tokio::sync::broadcast;

use crate::redis_target::RedisTarget;
use crate::store::Change;

/// What watchers receive from the fan-out.
#[derive(Debug, Clone)]
pub enum Signal {
    Event(Arc<ChangeEvent>),
    /// Events may have been lost (the Redis subscription was re-established): replay.
    Resync,
}

/// The node's event fan-out, and the highest revision it has seen.
#[derive(Debug)]
pub struct Events {
    sender: broadcast::Sender<Signal>,
    pub events_channel: String,
    pub nodes_channel: String,
    last_revision: AtomicI64,
    /// The last heartbeat of each node, and when it arrived.
    peers:
        std::sync::Mutex<std::collections::BTreeMap<String, (NodeHeartbeat, std::time::Instant)>>,
    /// The database's revision as last read for watchers, and when that read began: idle
    /// watchers share it (see [`Events::database_revision`]).
    database_revision: tokio::sync::Mutex<Option<(i64, std::time::Instant)>>,
}

/// How many signals a slow watcher may fall behind before it must replay from the database.
const FAN_OUT_CAPACITY: usize = 4096;

impl Events {
    pub fn new(prefix: &str) -> Self {
        let (sender, _) = broadcast::channel(FAN_OUT_CAPACITY);
        Self {
            sender,
            events_channel: format!("{prefix}:{EVENTS_CHANNEL_SUFFIX}"),
            nodes_channel: format!("{prefix}:{NODES_CHANNEL_SUFFIX}"),
            last_revision: AtomicI64::new(0),
            peers: std::sync::Mutex::default(),
            database_revision: tokio::sync::Mutex::new(None),
        }
    }

    /// The database's current revision for watchers that ask whether they missed anything:
    /// read with `read` at most once per `max_age`, however many watchers ask, and shared.
    /// A watcher that asks while another's read runs waits for it and takes its answer. So
    /// idle watchers cost the database one read per `max_age` per node, not one each; the
    /// price is that a revision may be seen up to `max_age` late. `None` when the read failed.
    pub async fn database_revision<F, Fut>(&self, max_age: Duration, read: F) -> Option<i64>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Option<i64>>,
    {
        let mut last = self.database_revision.lock().await;
        if let Some((revision, read_at)) = *last {
            if read_at.elapsed() < max_age {
                return Some(revision);
            }
        }
        let started = std::time::Instant::now();
        let revision = read().await?;
        *last = Some((revision, started));
        Some(revision)
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Signal> {
        self.sender.subscribe()
    }

    /// Delivers events to this node's watchers, in the order given.
    pub fn publish_local(&self, events: Vec<Arc<ChangeEvent>>) {
        for event in events {
            self.observe(event.revision);
            // No receivers is not an error: nobody is watching.
            let _ = self.sender.send(Signal::Event(event));
        }
    }

    /// PUBLISH commands for `events`, to pipeline with the cache update.
    pub fn redis_publishes(&self, events: &[Arc<ChangeEvent>]) -> redis::Pipeline {
        let mut pipeline = redis::pipe();
        for event in events {
            if let Ok(json) = serde_json::to_string(event.as_ref()) {
                pipeline.publish(&self.events_channel, json).ignore();
            }
        }
        pipeline
    }

    /// The highest revision this node has committed or seen.
    pub fn last_revision(&self) -> i64 {
        self.last_revision.load(Ordering::Relaxed)
    }

    pub fn observe(&self, revision: i64) {
        self.last_revision.fetch_max(revision, Ordering::Relaxed);
    }

    /// Every node heard from on `<prefix>:nodes`, with the age of its last heartbeat.
    pub fn peers(&self) -> Vec<PeerStatus> {
        let Ok(peers) = self.peers.lock() else {
            return Vec::new();
        };
        peers
            .values()
            .map(|(beat, received)| PeerStatus {
                node: beat.node.clone(),
                listen: beat.listen.clone(),
                status: beat.status,
                revision: beat.revision,
                heartbeat_age_ms: u64::try_from(received.elapsed().as_millis()).unwrap_or(u64::MAX),
            })
            .collect()
    }

    fn record_heartbeat(&self, beat: NodeHeartbeat) {
        if let Ok(mut peers) = self.peers.lock() {
            peers.insert(beat.node.clone(), (beat, std::time::Instant::now()));
        }
    }

    fn resync(&self) {
        let _ = self.sender.send(Signal::Resync);
    }
}

/// The event of a committed write. Values over 1 KiB are left out of events.
pub fn change_event(change: &Change) -> ChangeEvent {
    ChangeEvent {
        kind: if change.value.is_some() || change.value_bytes.is_some() {
            EventType::Put
        } else {
            EventType::Delete
        },
        key: change.key.clone(),
        revision: change.revision,
        version: change.version,
        node: change.node.clone(),
        at: chrono::DateTime::from_timestamp_millis(change.at_ms).unwrap_or_default(),
        value: change
            .value
            .as_ref()
            .filter(|value| value.len() <= EVENT_VALUE_MAX_BYTES)
            .cloned(),
        value_bytes: change.value_bytes.or_else(|| {
            change
                .value
                .as_ref()
                .filter(|value| value.len() > EVENT_VALUE_MAX_BYTES)
                .map(|value| value.len() as u64)
        }),
        reason: change.reason,
        revision_events: None,
    }
}

/// Forwards other nodes' events from Redis into the local fan-out, reconnecting forever.
/// Each (re)subscription tells watchers to resync, since events may have been missed.
pub async fn subscribe_redis(target: RedisTarget, events: Arc<Events>, node_id: Arc<str>) {
    let mut first = true;
    loop {
        // The master now: after a Sentinel failover, the promoted replica.
        let pubsub = match target.client().await {
            Ok(client) => client.get_async_pubsub().await,
            Err(err) => Err(err),
        };
        match pubsub {
            Ok(mut pubsub) => match pubsub
                .subscribe(&[&events.events_channel, &events.nodes_channel])
                .await
            {
                Ok(()) => {
                    if !first {
                        tracing::info!("redis event subscription restored");
                    }
                    first = false;
                    events.resync();
                    let mut messages = pubsub.on_message();
                    while let Some(message) = messages.next().await {
                        let Ok(payload) = message.get_payload::<String>() else {
                            continue;
                        };
                        if message.get_channel_name() == events.nodes_channel {
                            if let Ok(beat) = serde_json::from_str::<NodeHeartbeat>(&payload) {
                                events.record_heartbeat(beat);
                            }
                            continue;
                        }
                        match serde_json::from_str::<ChangeEvent>(&payload) {
                            Ok(event) if *event.node != *node_id => {
                                events.observe(event.revision);
                                let _ = events.sender.send(Signal::Event(Arc::new(event)));
                            }
                            Ok(_) => {}
                            Err(err) => {
                                tracing::warn!(error = %err, "ignoring malformed change event")
                            }
                        }
                    }
                    tracing::warn!("redis event subscription lost; reconnecting");
                }
                Err(err) => tracing::debug!(error = %err, "redis subscribe failed"),
            },
            Err(err) => tracing::debug!(error = %err, "redis pubsub connect failed"),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Publishes a heartbeat on `<prefix>:nodes` every `interval`; `status` reports the node's
/// health and, when the database answered, its current revision.
pub async fn heartbeat<F, Fut>(
    target: RedisTarget,
    events: Arc<Events>,
    status: F,
    node_id: Arc<str>,
    listen: String,
    interval: Duration,
    timeout: Duration,
) where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = (NodeHealth, Option<i64>)>,
{
    let mut connection = None;
    let mut ticker = tokio::time::interval(interval);
    loop {
        ticker.tick().await;
        if connection.is_none() {
            connection = tokio::time::timeout(timeout, async {
                target
                    .client()
                    .await?
                    .get_multiplexed_async_connection()
                    .await
            })
            .await
            .ok()
            .and_then(Result::ok);
        }
        let Some(active) = connection.as_mut() else {
            continue;
        };
        let (health, database_revision) = status().await;
        if let Some(revision) = database_revision {
            events.observe(revision);
        }
        let beat = NodeHeartbeat {
            node: node_id.to_string(),
            listen: listen.clone(),
            status: health,
            revision: events.last_revision(),
            at: chrono::Utc::now(),
        };
        let Ok(json) = serde_json::to_string(&beat) else {
            continue;
        };
        let mut command = redis::cmd("PUBLISH");
        command.arg(&events.nodes_channel).arg(json);
        let publish = command.query_async::<i64>(active);
        if !matches!(tokio::time::timeout(timeout, publish).await, Ok(Ok(_))) {
            connection = None;
        }
    }
}
