//! The data tasks that feed the event loop's channel: the Redis subscriber (events and
//! heartbeats), the `/api/watch` follower used without Redis, the status poller, and the
//! one-shot HTTP commands (list, get, put, delete).

use std::time::{Duration, Instant};

use futures::StreamExt;
use kg_api::{
    ChangeEvent, Client, Endpoints, NodeHeartbeat, Precondition, EVENTS_CHANNEL_SUFFIX,
    NODES_CHANNEL_SUFFIX,
};
use tokio::sync::mpsc::UnboundedSender;

use crate::app::{Command, FeedState, KeysPage, Msg, ValueView};
use crate::tier::TierSources;

/// How often each endpoint's `/api/status` is polled.
pub const POLL_INTERVAL: Duration = Duration::from_secs(2);
/// Pause before reconnecting a lost feed.
const RECONNECT_DELAY: Duration = Duration::from_secs(1);
/// Bound on connecting to Redis, so an unreachable one is reported quickly.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Polls the data tier every [`POLL_INTERVAL`], forever.
pub async fn poll_tier(sources: TierSources, tx: UnboundedSender<Msg>) {
    let http = reqwest::Client::new();
    loop {
        let snapshot = sources.poll(&http).await;
        if tx.send(Msg::Tier(snapshot, chrono::Local::now())).is_err() {
            return;
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Follows `<prefix>:events` and `<prefix>:nodes`, reconnecting forever.
pub async fn subscribe_redis(url: String, prefix: String, tx: UnboundedSender<Msg>) {
    let events = format!("{prefix}:{EVENTS_CHANNEL_SUFFIX}");
    let nodes = format!("{prefix}:{NODES_CHANNEL_SUFFIX}");
    loop {
        let _ = tx.send(Msg::Feed(FeedState::Connecting("redis".to_owned())));
        let reason = match follow_redis(&url, &events, &nodes, &tx).await {
            Ok(()) => "connection closed".to_owned(),
            Err(err) => err,
        };
        if tx
            .send(Msg::Feed(FeedState::Down("redis".to_owned(), reason)))
            .is_err()
        {
            return;
        }
        tokio::time::sleep(RECONNECT_DELAY).await;
    }
}

async fn follow_redis(
    url: &str,
    events: &str,
    nodes: &str,
    tx: &UnboundedSender<Msg>,
) -> Result<(), String> {
    let client = redis::Client::open(url).map_err(|err| err.to_string())?;
    let mut pubsub = tokio::time::timeout(CONNECT_TIMEOUT, client.get_async_pubsub())
        .await
        .map_err(|_| "connect timed out".to_owned())?
        .map_err(|err| err.to_string())?;
    pubsub
        .subscribe(&[events, nodes])
        .await
        .map_err(|err| err.to_string())?;
    let _ = tx.send(Msg::Feed(FeedState::Connected("redis".to_owned())));
    let mut messages = pubsub.on_message();
    while let Some(message) = messages.next().await {
        let payload: Vec<u8> = message.get_payload_bytes().to_vec();
        let msg = if message.get_channel_name() == events {
            serde_json::from_slice::<ChangeEvent>(&payload)
                .ok()
                .map(|event| Msg::Change(event, Instant::now()))
        } else {
            serde_json::from_slice::<NodeHeartbeat>(&payload)
                .ok()
                .map(|beat| Msg::Heartbeat(beat, Instant::now()))
        };
        if let Some(msg) = msg {
            if tx.send(msg).is_err() {
                return Ok(());
            }
        }
    }
    Ok(())
}

/// How many revisions back the event list starts: the recent history shown at start.
pub const RECENT_REVISIONS: i64 = 100;

/// The cluster's revision now, from the first endpoint that answers.
async fn current_revision(endpoints: &Endpoints) -> Option<i64> {
    endpoints
        .call(|client| async move { client.status().await })
        .await
        .ok()
        .and_then(|status| status.revision)
}

/// With Redis, whose pub/sub has only what happens from now on: the changes of the last
/// [`RECENT_REVISIONS`] revisions, from a watch replay (each key's latest change among them),
/// sent as [`Msg::Recent`]. The replay ends once a later change or a progress event (nothing
/// more to replay) comes; if it cannot be had, the list starts empty as before.
pub async fn recent_history(endpoints: Endpoints, tx: UnboundedSender<Msg>) {
    use kg_api::WatchItem;
    let Some(current) = current_revision(&endpoints).await else {
        return;
    };
    let after = (current - RECENT_REVISIONS).max(0);
    let stream = endpoints
        .call(|client| async move {
            client
                .watch_with(None, Some(after), Some(Duration::from_secs(1)))
                .await
        })
        .await;
    let Ok(mut stream) = stream else {
        return;
    };
    while let Some(Ok(WatchItem::Change(event))) = stream.next_item().await {
        if event.revision > current || tx.send(Msg::Recent(event)).is_err() {
            return;
        }
    }
}

/// Without Redis: follows `/api/watch`, resuming after the last revision seen. The first
/// connection starts [`RECENT_REVISIONS`] back, so that the event list opens with the recent
/// history; what the replay brings up to the revision of the start is [`Msg::Recent`].
pub async fn follow_watch(endpoints: Endpoints, tx: UnboundedSender<Msg>) {
    let history_until = current_revision(&endpoints).await;
    let mut last: Option<i64> = history_until.map(|current| (current - RECENT_REVISIONS).max(0));
    loop {
        let _ = tx.send(Msg::Feed(FeedState::Connecting("watch".to_owned())));
        let stream = endpoints
            .call(|client| async move { client.watch(None, last).await })
            .await;
        let reason = match stream {
            Ok(mut stream) => {
                let _ = tx.send(Msg::Feed(FeedState::Connected("watch".to_owned())));
                loop {
                    match stream.next().await {
                        Some(Ok(event)) => {
                            last = stream.resume_after();
                            let msg = if history_until.is_some_and(|until| event.revision <= until)
                            {
                                Msg::Recent(event)
                            } else {
                                Msg::Change(event, Instant::now())
                            };
                            if tx.send(msg).is_err() {
                                return;
                            }
                        }
                        Some(Err(err)) => break compacted(err, &mut last),
                        None => break "stream ended".to_owned(),
                    }
                }
            }
            // History compacted below where the list would start: from now on instead.
            Err(err) if err.status() == Some(reqwest::StatusCode::GONE) && last.is_some() => {
                last = None;
                continue;
            }
            Err(err) => compacted(err, &mut last),
        };
        if tx
            .send(Msg::Feed(FeedState::Down("watch".to_owned(), reason)))
            .is_err()
        {
            return;
        }
        tokio::time::sleep(RECONNECT_DELAY).await;
    }
}

/// Why the watch feed went down. A watch that history it needed was compacted out of (410)
/// cannot resume where it was: the feed starts again from the current revision.
fn compacted(err: kg_api::Error, last: &mut Option<i64>) -> String {
    if err.status().is_some_and(|status| status.as_u16() == 410) {
        *last = None;
    }
    err.to_string()
}

/// Polls `/api/status` of one endpoint every [`POLL_INTERVAL`].
pub async fn poll_status(client: Client, tx: UnboundedSender<Msg>) {
    let endpoint = client.endpoint().to_string();
    let mut ticker = tokio::time::interval(POLL_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let started = Instant::now();
        let result = client
            .status()
            .await
            .map(|status| (status, started.elapsed()))
            .map_err(|err| err.to_string());
        if tx
            .send(Msg::Polled {
                endpoint: endpoint.clone(),
                result,
            })
            .is_err()
        {
            return;
        }
    }
}

/// Runs one command's HTTP call and sends its result back as a message.
pub async fn execute(command: Command, endpoints: Endpoints, tx: UnboundedSender<Msg>) {
    let msg = match command {
        Command::FetchKeys {
            prefix,
            after,
            limit,
            generation,
        } => {
            // Keys only: the browser shows names and revisions, and a page of large values
            // would cost megabytes.
            let result = endpoints
                .call(|client| {
                    let (prefix, after) = (prefix.clone(), after.clone());
                    async move {
                        let page = client
                            .list_keys_only(Some(&prefix), Some(limit), after.as_deref())
                            .await?;
                        let total = match after {
                            None => Some(client.count(Some(&prefix)).await?),
                            Some(_) => None,
                        };
                        Ok::<_, kg_api::Error>((page, total))
                    }
                })
                .await
                .map(|(page, total)| KeysPage {
                    generation,
                    after: after.clone(),
                    keys: page.keys,
                    next: page.next,
                    total,
                })
                .map_err(|err| err.to_string());
            Msg::Keys(result)
        }
        Command::FetchValue { key } => {
            let result = endpoints
                .call(|client| {
                    let key = key.clone();
                    async move { client.get(&key).await }
                })
                .await
                .map(|read| ValueView {
                    key: key.clone(),
                    value: read.value,
                    mod_revision: read.mod_revision,
                    create_revision: read.create_revision,
                    version: read.version,
                    node: read.meta.node,
                    cache_hit: read.meta.cache_hit,
                })
                .map_err(|err| format!("{key}: {err}"));
            Msg::Value(result)
        }
        Command::Put { key, value } => {
            let result = endpoints
                .call(|client| {
                    let (key, value) = (key.clone(), value.clone());
                    async move { client.put(&key, &value, Precondition::None).await }
                })
                .await
                .map(|written| format!("put {key} at revision {}", written.revision))
                .map_err(|err| format!("put {key}: {err}"));
            Msg::Done(result)
        }
        Command::Delete { key } => {
            let result = endpoints
                .call(|client| {
                    let key = key.clone();
                    async move { client.delete(&key, Precondition::None).await }
                })
                .await
                .map(|written| format!("deleted {key} at revision {}", written.revision))
                .map_err(|err| format!("delete {key}: {err}"));
            Msg::Done(result)
        }
        Command::Quit => return,
    };
    let _ = tx.send(msg);
}
