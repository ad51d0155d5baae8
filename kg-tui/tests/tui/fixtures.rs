//! A fixed dashboard state shared by the update and snapshot tests.

use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use kg_api::{
    ChangeEvent, DatabaseStatus, DependencyState, EventType, KeyRecord, NodeHealth, NodeHeartbeat,
    NodeStatus, PeerStatus, RequestCounters,
};
use kg_tui::app::{App, Command, FeedState, KeysPage, Msg};

pub fn key(code: KeyCode) -> Msg {
    Msg::Key(KeyEvent::new(code, KeyModifiers::NONE))
}

pub fn typed(app: &mut App, text: &str) {
    for c in text.chars() {
        app.update(key(KeyCode::Char(c)));
    }
}

pub fn event(kind: EventType, key: &str, revision: i64, node: &str) -> ChangeEvent {
    ChangeEvent {
        kind,
        key: key.to_owned(),
        revision,
        version: if kind == EventType::Put { 1 } else { 0 },
        node: node.to_owned(),
        at: Utc
            .with_ymd_and_hms(2026, 11, 23, 12, 0, 0)
            .unwrap()
            .checked_add_signed(chrono::TimeDelta::milliseconds(revision * 250))
            .unwrap(),
        value: None,
        value_bytes: None,
        reason: None,
        revision_events: None,
    }
}

pub fn heartbeat(node: &str, port: u16, status: NodeHealth, revision: i64) -> NodeHeartbeat {
    NodeHeartbeat {
        node: node.to_owned(),
        listen: format!("127.0.0.1:{port}"),
        status,
        revision,
        at: Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap(),
    }
}

pub fn status(node: &str, port: u16, cache: DependencyState, revision: i64) -> NodeStatus {
    NodeStatus {
        node: node.to_owned(),
        listen: format!("127.0.0.1:{port}"),
        version: "0.1.0".to_owned(),
        uptime_seconds: 60,
        database: DatabaseStatus {
            kind: "postgres".to_owned(),
            state: DependencyState::Ok,
            endpoint: "postgres://postgres@127.0.0.1:5442/postgres".to_owned(),
            primary: Some(true),
        },
        cache,
        cache_endpoint: Some("redis://127.0.0.1:6389".to_owned()),
        revision: Some(revision),
        requests: RequestCounters::default(),
        peers: Vec::<PeerStatus>::new(),
    }
}

pub fn record(key: &str, revision: i64) -> KeyRecord {
    KeyRecord {
        key: key.to_owned(),
        value: Some(format!("value of {key}")),
        create_revision: revision,
        mod_revision: revision,
        version: 1,
        lease: None,
        ttl_remaining_ms: None,
    }
}

/// Three nodes (n1 fresh and ok, n2 degraded cache, n3 with an old heartbeat), seven events
/// from two nodes over three seconds (the newest a lease's expiry), and four keys (one
/// leased, 30 s left), seen at `base + 12 s`.
pub fn populated(base: Instant) -> App {
    let mut app = App::new(
        vec!["http://127.0.0.1:8000".to_owned()],
        false,
        FeedState::Connected("redis".to_owned()),
        base,
    );
    app.update(Msg::Heartbeat(
        heartbeat("n1", 8001, NodeHealth::Ok, 6),
        base + Duration::from_millis(11_500),
    ));
    app.update(Msg::Heartbeat(
        heartbeat("n2", 8002, NodeHealth::Degraded, 6),
        base + Duration::from_millis(11_800),
    ));
    app.update(Msg::Heartbeat(
        heartbeat("n3", 8003, NodeHealth::Ok, 2),
        base + Duration::from_secs(6),
    ));
    app.update(Msg::Polled {
        endpoint: "http://127.0.0.1:8001/".to_owned(),
        result: Ok((
            status("n1", 8001, DependencyState::Ok, 6),
            Duration::from_micros(1_250),
        )),
    });
    app.update(Msg::Polled {
        endpoint: "http://127.0.0.1:8002/".to_owned(),
        result: Ok((
            status("n2", 8002, DependencyState::Degraded, 6),
            Duration::from_micros(2_500),
        )),
    });
    for (revision, (kind, key, node)) in [
        (EventType::Put, "user/1", "n1"),
        (EventType::Put, "user/2", "n2"),
        (EventType::Put, "config/mode", "n1"),
        (EventType::Delete, "user/2", "n1"),
        (EventType::Put, "user/3", "n2"),
        (EventType::Put, "user/1", "n1"),
    ]
    .into_iter()
    .enumerate()
    {
        let revision = i64::try_from(revision).unwrap() + 1;
        let received = base + Duration::from_millis(9_000 + 500 * revision as u64);
        app.update(Msg::Change(event(kind, key, revision, node), received));
    }
    // A session whose lease ran out, and one still held with 30 s left.
    let mut expired = event(EventType::Delete, "session/bob", 7, "n2");
    expired.reason = Some(kg_api::DeleteReason::Expired);
    app.update(Msg::Change(expired, base + Duration::from_millis(10_800)));
    let mut leased = record("user/4", 2);
    leased.lease = Some(2);
    leased.ttl_remaining_ms = Some(30_000);
    app.update(Msg::Keys(Ok(first_page(
        0,
        vec![
            record("config/mode", 3),
            record("user/1", 6),
            record("user/3", 5),
            leased,
        ],
    ))));
    app.update(Msg::Tick(base + Duration::from_secs(12)));
    app
}

/// The whole listing as one first page, for the fetch numbered `generation`.
pub fn first_page(generation: u64, keys: Vec<KeyRecord>) -> KeysPage {
    KeysPage {
        generation,
        after: None,
        total: Some(keys.len() as u64),
        keys,
        next: None,
    }
}

/// The generation of the key fetch among `commands`.
pub fn fetch_generation(commands: &[Command]) -> u64 {
    commands
        .iter()
        .find_map(|command| match command {
            Command::FetchKeys { generation, .. } => Some(*generation),
            _ => None,
        })
        .expect("a key fetch")
}
