//! The dashboard's state and every change to it: [`App::update`] takes one [`Msg`] (a key
//! press, a tick, data from Redis or HTTP) and returns the [`Command`]s to run. No I/O here.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use kg_api::{ChangeEvent, DependencyState, KeyRecord, NodeHealth, NodeHeartbeat, NodeStatus};

use crate::tier::TierSnapshot;

/// A heartbeat older than this marks a node stale.
pub const STALE_AFTER: Duration = Duration::from_secs(3);
/// A heartbeat older than this marks a node down.
pub const DOWN_AFTER: Duration = Duration::from_secs(10);
/// Events kept for the events panel.
pub const MAX_EVENTS: usize = 500;
/// Seconds of throughput history.
pub const HISTORY_SECONDS: usize = 60;
/// Keys per page of the key browser (keys only: no values are fetched).
pub const KEY_PAGE: u32 = 500;
/// How far PgUp and PgDn move the key browser's cursor.
pub const KEY_PAGE_STEP: usize = 20;

/// Everything that can change the state.
#[derive(Debug, Clone)]
pub enum Msg {
    Key(KeyEvent),
    /// The clock moved on (every 250 ms): ages and throughput buckets follow it.
    Tick(Instant),
    /// A committed change, from Redis pub/sub or `/api/watch`.
    Change(ChangeEvent, Instant),
    /// A change committed before the dashboard started (the recent history it opens with):
    /// listed among the events, not counted as throughput.
    Recent(ChangeEvent),
    /// A heartbeat from Redis `keygrid:nodes`.
    Heartbeat(NodeHeartbeat, Instant),
    /// The event feed's connection state.
    Feed(FeedState),
    /// One `/api/status` poll of an endpoint.
    Polled {
        endpoint: String,
        result: Result<(NodeStatus, Duration), String>,
    },
    /// A page of the key browser.
    Keys(Result<KeysPage, String>),
    /// A key's value and metadata, for the value view.
    Value(Result<ValueView, String>),
    /// The outcome of a put or delete, as a message for the status line.
    Done(Result<String, String>),
    /// One poll of the data tier (Patroni and the Sentinels), with the wall-clock time.
    Tier(TierSnapshot, chrono::DateTime<chrono::Local>),
}

/// Where an event stands among the events of its revision (see [`App::event_place`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventPlace {
    /// The only event of its revision.
    Alone,
    First,
    Inside,
    Last,
}

/// Where events come from, and whether that works right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeedState {
    Connecting(String),
    Connected(String),
    /// The source, and why it is unreachable; the feed retries by itself.
    Down(String, String),
}

/// One page of the key browser, as fetched for a [`Command::FetchKeys`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeysPage {
    /// The fetch it answers; pages of an older listing are dropped.
    pub generation: u64,
    /// `None` for the first page, which replaces the listing.
    pub after: Option<String>,
    pub keys: Vec<KeyRecord>,
    pub next: Option<String>,
    /// Every key under the prefix (`count_only`), fetched with the first page.
    pub total: Option<u64>,
}

/// Side effects [`App::update`] asks for; the event loop runs them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// A page of keys under `prefix` after `after` (the first page, and the count, when
    /// `after` is `None`), at most `limit`.
    FetchKeys {
        prefix: String,
        after: Option<String>,
        limit: u32,
        generation: u64,
    },
    FetchValue {
        key: String,
    },
    Put {
        key: String,
        value: String,
    },
    Delete {
        key: String,
    },
    Quit,
}

/// A key as the value view shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueView {
    pub key: String,
    pub value: String,
    pub mod_revision: i64,
    pub create_revision: i64,
    pub version: i64,
    pub node: Option<String>,
    pub cache_hit: Option<bool>,
}

/// A node's state as the nodes panel shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum NodeState {
    Ok,
    Degraded,
    Stale,
    Down,
}

impl NodeState {
    pub fn label(self) -> &'static str {
        match self {
            NodeState::Ok => "ok",
            NodeState::Degraded => "degraded",
            NodeState::Stale => "stale",
            NodeState::Down => "down",
        }
    }
}

/// What is known of one node, from heartbeats and polls.
#[derive(Debug, Clone, Default)]
pub struct NodeView {
    pub id: String,
    pub address: String,
    pub heartbeat: Option<(NodeHeartbeat, Instant)>,
    /// The heartbeat age a polled node reported for this one (through `/api/status` peers).
    pub peer_age: Option<(Duration, NodeHealth, Instant)>,
    pub poll: Option<PollView>,
}

/// The last `/api/status` answer (or failure) of a node we poll directly.
#[derive(Debug, Clone)]
pub struct PollView {
    pub endpoint: String,
    pub result: Result<PolledStatus, String>,
}

#[derive(Debug, Clone)]
pub struct PolledStatus {
    pub latency: Duration,
    pub database: DependencyState,
    pub cache: DependencyState,
    pub revision: Option<i64>,
}

impl NodeView {
    /// The heartbeat's age at `now`, from Redis or from a peer list.
    pub fn heartbeat_age(&self, now: Instant) -> Option<Duration> {
        let direct = self
            .heartbeat
            .as_ref()
            .map(|(_, received)| now.saturating_duration_since(*received));
        let via_peer = self
            .peer_age
            .as_ref()
            .map(|(age, _, seen)| *age + now.saturating_duration_since(*seen));
        match (direct, via_peer) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The worst of what the heartbeat and the last poll say.
    pub fn state(&self, now: Instant) -> NodeState {
        let mut state = NodeState::Ok;
        if let Some(age) = self.heartbeat_age(now) {
            let health = self
                .heartbeat
                .as_ref()
                .map(|(beat, _)| beat.status)
                .or(self.peer_age.as_ref().map(|(_, health, _)| *health));
            state = if age > DOWN_AFTER {
                NodeState::Down
            } else if age > STALE_AFTER {
                NodeState::Stale
            } else if health == Some(NodeHealth::Degraded) {
                NodeState::Degraded
            } else {
                NodeState::Ok
            };
        }
        if let Some(poll) = &self.poll {
            let polled = match &poll.result {
                Err(_) => NodeState::Down,
                Ok(status)
                    if status.database != DependencyState::Ok
                        || status.cache == DependencyState::Degraded =>
                {
                    NodeState::Degraded
                }
                Ok(_) => NodeState::Ok,
            };
            state = state.max(polled);
        }
        state
    }

    pub fn revision(&self) -> Option<i64> {
        let polled = self
            .poll
            .as_ref()
            .and_then(|poll| poll.result.as_ref().ok())
            .and_then(|status| status.revision);
        let beat = self.heartbeat.as_ref().map(|(beat, _)| beat.revision);
        match (polled, beat) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }
}

/// The panel that has the keyboard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Panel {
    Nodes,
    Events,
    Keys,
}

impl Panel {
    fn next(self) -> Self {
        match self {
            Panel::Nodes => Panel::Events,
            Panel::Events => Panel::Keys,
            Panel::Keys => Panel::Nodes,
        }
    }
}

/// Which field of the put form has the cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutField {
    Key,
    Value,
}

/// What the screen is doing besides showing the panels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    Normal,
    Help,
    /// Typing a prefix filter for the key browser.
    Filter(String),
    Put {
        key: String,
        value: String,
        field: PutField,
    },
    ConfirmDelete(String),
    /// A key's value, scrolled down by `scroll` lines.
    Value {
        view: ValueView,
        scroll: usize,
    },
}

/// Events per second over the last minute: one bucket per second, oldest first.
#[derive(Debug, Clone)]
pub struct Throughput {
    pub total: VecDeque<u64>,
    pub per_node: BTreeMap<String, VecDeque<u64>>,
    /// Start of the newest bucket.
    bucket_start: Option<Instant>,
    /// Arrival times of the events of the last second, for a "now" that does not read 0
    /// just after a bucket boundary.
    recent: VecDeque<Instant>,
}

impl Default for Throughput {
    fn default() -> Self {
        Self {
            total: VecDeque::from(vec![0; HISTORY_SECONDS]),
            per_node: BTreeMap::new(),
            bucket_start: None,
            recent: VecDeque::new(),
        }
    }
}

impl Throughput {
    /// Moves the window so that its newest bucket holds `now`.
    fn advance(&mut self, now: Instant) {
        let Some(start) = self.bucket_start else {
            self.bucket_start = Some(now);
            return;
        };
        let elapsed = now.saturating_duration_since(start).as_secs();
        if elapsed == 0 {
            return;
        }
        let steps = usize::try_from(elapsed)
            .unwrap_or(HISTORY_SECONDS)
            .min(HISTORY_SECONDS);
        for series in std::iter::once(&mut self.total).chain(self.per_node.values_mut()) {
            for _ in 0..steps {
                series.pop_front();
                series.push_back(0);
            }
        }
        self.bucket_start = Some(start + Duration::from_secs(elapsed));
    }

    fn count(&mut self, node: &str, now: Instant) {
        self.advance(now);
        self.recent.push_back(now);
        self.forget_before(now);
        if let Some(last) = self.total.back_mut() {
            *last += 1;
        }
        let series = self
            .per_node
            .entry(node.to_owned())
            .or_insert_with(|| VecDeque::from(vec![0; HISTORY_SECONDS]));
        if let Some(last) = series.back_mut() {
            *last += 1;
        }
    }

    fn forget_before(&mut self, now: Instant) {
        while self
            .recent
            .front()
            .is_some_and(|at| now.saturating_duration_since(*at) >= Duration::from_secs(1))
        {
            self.recent.pop_front();
        }
    }

    /// Events in the second up to now (a sliding window, not the last bucket).
    pub fn last_second(&self) -> u64 {
        self.recent.len() as u64
    }
}

/// The whole dashboard state.
#[derive(Debug, Clone)]
pub struct App {
    pub endpoints: Vec<String>,
    pub read_only: bool,
    pub now: Instant,
    pub feed: FeedState,
    pub nodes: BTreeMap<String, NodeView>,
    /// Endpoint → node id, learned from polls, so a failed poll marks the right node.
    pub endpoint_nodes: BTreeMap<String, String>,
    /// Newest first, by revision.
    pub events: VecDeque<ChangeEvent>,
    pub paused: bool,
    /// Events that arrived while paused, shown on resume.
    pub held: Vec<ChangeEvent>,
    pub throughput: Throughput,
    /// The key browser's listing: every page fetched so far, from the first.
    pub keys: Vec<KeyRecord>,
    /// Where the next page starts; `None` once the last page is in.
    pub keys_next: Option<String>,
    /// Every key under the prefix, as `count_only` said with the first page.
    pub keys_total: Option<u64>,
    /// When each leased key of the listing expires, on this clock: the time left the listing
    /// said, counted from when the page arrived, so the countdown runs between fetches.
    pub key_deadlines: BTreeMap<String, Instant>,
    /// The listing the pages in flight belong to.
    keys_generation: u64,
    keys_loading: bool,
    /// Keep fetching pages until the listing holds more keys than this (End: all of them).
    keys_wanted: usize,
    pub keys_error: Option<String>,
    pub prefix: String,
    /// Keys changed since the browser was last fetched.
    pub keys_stale: bool,
    last_keys_fetch: Option<Instant>,
    pub focus: Panel,
    pub selected_event: usize,
    pub selected_key: usize,
    pub selected_node: usize,
    pub mode: Mode,
    /// The status line: the last action's outcome, or an error.
    pub message: Option<Result<String, String>>,
    /// When the message was set; it clears after [`MESSAGE_FOR`].
    message_at: Option<Instant>,
    /// The data tier's last poll, when the dashboard was given Patroni or Sentinels.
    pub tier: Option<TierSnapshot>,
    /// The last leader seen of each kind (`postgres`, `redis`), to tell a failover.
    tier_leaders: BTreeMap<&'static str, String>,
    /// Changes of leader, newest first, each with when the poll saw it.
    pub tier_changes: VecDeque<(chrono::DateTime<chrono::Local>, String)>,
}

/// Changes of leader the data-tier panel keeps.
pub const MAX_TIER_CHANGES: usize = 20;

/// How long an action's message stays on the status line.
pub const MESSAGE_FOR: Duration = Duration::from_secs(5);

impl App {
    pub fn new(endpoints: Vec<String>, read_only: bool, feed: FeedState, now: Instant) -> Self {
        Self {
            endpoints,
            read_only,
            now,
            feed,
            nodes: BTreeMap::new(),
            endpoint_nodes: BTreeMap::new(),
            events: VecDeque::new(),
            paused: false,
            held: Vec::new(),
            throughput: Throughput::default(),
            keys: Vec::new(),
            keys_next: None,
            keys_total: None,
            key_deadlines: BTreeMap::new(),
            keys_generation: 0,
            keys_loading: false,
            keys_wanted: 0,
            keys_error: None,
            prefix: String::new(),
            keys_stale: false,
            last_keys_fetch: None,
            focus: Panel::Events,
            selected_event: 0,
            selected_key: 0,
            selected_node: 0,
            mode: Mode::Normal,
            message: None,
            message_at: None,
            tier: None,
            tier_leaders: BTreeMap::new(),
            tier_changes: VecDeque::new(),
        }
    }

    /// Applies one message; returns what the event loop must do next.
    pub fn update(&mut self, msg: Msg) -> Vec<Command> {
        let before = self.message.clone();
        let commands = self.apply(msg);
        if self.message != before {
            self.message_at = self.message.as_ref().map(|_| self.now);
        }
        commands
    }

    fn apply(&mut self, msg: Msg) -> Vec<Command> {
        match msg {
            Msg::Key(key) => self.on_key(key),
            Msg::Tick(now) => {
                self.now = now;
                self.throughput.advance(now);
                self.throughput.forget_before(now);
                if self
                    .message_at
                    .is_some_and(|at| now.saturating_duration_since(at) >= MESSAGE_FOR)
                {
                    self.message = None;
                    self.message_at = None;
                }
                // Refresh the key browser at most once a second while changes arrive.
                let due = self
                    .last_keys_fetch
                    .is_none_or(|at| now.saturating_duration_since(at) >= Duration::from_secs(1));
                if self.keys_stale && due {
                    return self.fetch_keys();
                }
                Vec::new()
            }
            Msg::Change(event, received) => {
                self.now = self.now.max(received);
                self.throughput.count(&event.node, received);
                if event.key.starts_with(&self.prefix) {
                    self.keys_stale = true;
                }
                if self.paused {
                    self.held.push(event);
                } else {
                    self.insert_event(event);
                }
                Vec::new()
            }
            Msg::Recent(event) => {
                self.insert_event(event);
                Vec::new()
            }
            Msg::Heartbeat(beat, received) => {
                let node = self.node_mut(&beat.node);
                node.address.clone_from(&beat.listen);
                node.heartbeat = Some((beat, received));
                Vec::new()
            }
            Msg::Feed(state) => {
                self.feed = state;
                Vec::new()
            }
            Msg::Polled { endpoint, result } => {
                self.on_poll(endpoint, result);
                Vec::new()
            }
            Msg::Keys(result) => self.on_keys(result),
            Msg::Value(result) => {
                match result {
                    Ok(view) => self.mode = Mode::Value { view, scroll: 0 },
                    Err(err) => self.message = Some(Err(err)),
                }
                Vec::new()
            }
            Msg::Done(result) => {
                self.message = Some(result);
                self.fetch_keys()
            }
            Msg::Tier(snapshot, at) => {
                self.on_tier(snapshot, at);
                Vec::new()
            }
        }
    }

    /// A new view of the data tier: a leader that is gone, or another than before, is a
    /// failover, logged in `tier_changes` and on the status line as it happens.
    fn on_tier(&mut self, snapshot: TierSnapshot, at: chrono::DateTime<chrono::Local>) {
        for (kind, label) in [("postgres", "PostgreSQL"), ("redis", "Redis")] {
            let now = snapshot.leader(kind).map(str::to_owned);
            let before = self.tier_leaders.get(kind).cloned();
            let change = match (&before, &now) {
                (Some(old), Some(new)) if old != new => {
                    Some(format!("{label} leader {old} → {new}"))
                }
                (Some(old), None) if self.tier.as_ref().and_then(|t| t.leader(kind)).is_some() => {
                    Some(format!("{label}: no leader (was {old})"))
                }
                _ => None,
            };
            if let Some(change) = change {
                self.message = Some(Ok(change.clone()));
                self.tier_changes.push_front((at, change));
                self.tier_changes.truncate(MAX_TIER_CHANGES);
            }
            if let Some(now) = now {
                self.tier_leaders.insert(kind, now);
            }
        }
        self.tier = Some(snapshot);
    }

    /// What the dashboard needs first: the key browser's first page.
    pub fn start(&mut self) -> Vec<Command> {
        self.fetch_keys()
    }

    /// Fetches the listing again from its first page, then as many pages as it takes to hold
    /// the cursor's key again, so a refresh does not pull the cursor back.
    fn fetch_keys(&mut self) -> Vec<Command> {
        self.keys_stale = false;
        self.last_keys_fetch = Some(self.now);
        self.keys_generation += 1;
        self.keys_loading = true;
        self.keys_wanted = self.selected_key + KEY_PAGE_STEP;
        vec![Command::FetchKeys {
            prefix: self.prefix.clone(),
            after: None,
            limit: KEY_PAGE,
            generation: self.keys_generation,
        }]
    }

    /// The next page, when the listing holds no more than `keys_wanted` keys and one follows.
    fn fetch_more_keys(&mut self) -> Vec<Command> {
        if self.keys_loading || self.keys.len() > self.keys_wanted {
            return Vec::new();
        }
        let Some(after) = self.keys_next.clone() else {
            return Vec::new();
        };
        self.keys_loading = true;
        vec![Command::FetchKeys {
            prefix: self.prefix.clone(),
            after: Some(after),
            limit: KEY_PAGE,
            generation: self.keys_generation,
        }]
    }

    fn on_keys(&mut self, result: Result<KeysPage, String>) -> Vec<Command> {
        let page = match result {
            Ok(page) if page.generation != self.keys_generation => return Vec::new(),
            Ok(page) => page,
            Err(err) => {
                self.keys_loading = false;
                self.keys_error = Some(err);
                return Vec::new();
            }
        };
        self.keys_loading = false;
        self.keys_error = None;
        if page.after.is_none() {
            self.key_deadlines.clear();
        }
        for record in &page.keys {
            if let Some(left) = record.ttl_remaining_ms {
                let left = Duration::from_millis(u64::try_from(left).unwrap_or_default());
                self.key_deadlines
                    .insert(record.key.clone(), self.now + left);
            }
        }
        if page.after.is_none() {
            self.keys = page.keys;
            self.keys_total = page.total;
        } else {
            self.keys.extend(page.keys);
        }
        self.keys_next = page.next;
        if self.keys_wanted == usize::MAX && self.keys_next.is_none() {
            // End: the last page is in.
            self.selected_key = self.keys.len().saturating_sub(1);
        }
        self.selected_key = self.selected_key.min(self.keys.len().saturating_sub(1));
        self.fetch_more_keys()
    }

    /// Moves the key browser's cursor to `index`, asking for the pages it needs.
    fn move_key_cursor(&mut self, index: usize) -> Vec<Command> {
        self.selected_key = index.min(self.keys.len().saturating_sub(1));
        self.keys_wanted = self.keys_wanted.max(index + KEY_PAGE_STEP);
        self.fetch_more_keys()
    }

    /// Keeps events newest first by revision, without duplicates, at most [`MAX_EVENTS`]. A
    /// revision that changed several keys (a transaction, a prefix delete) keeps one event per
    /// key, together and in key order, as watchers receive them.
    fn insert_event(&mut self, event: ChangeEvent) {
        let position = self
            .events
            .iter()
            .position(|existing| {
                existing.revision < event.revision
                    || (existing.revision == event.revision && existing.key >= event.key)
            })
            .unwrap_or(self.events.len());
        if self.events.get(position).is_some_and(|existing| {
            existing.revision == event.revision && existing.key == event.key
        }) {
            return;
        }
        self.events.insert(position, event);
        self.events.truncate(MAX_EVENTS);
    }

    /// Where the event at `index` stands in its revision: alone, or first, inside or last of
    /// the events one revision made together.
    pub fn event_place(&self, index: usize) -> EventPlace {
        let revision = |at: usize| self.events.get(at).map(|event| event.revision);
        let this = revision(index);
        let before = index.checked_sub(1).and_then(revision) == this;
        let after = revision(index + 1) == this;
        match (before, after) {
            (false, false) => EventPlace::Alone,
            (false, true) => EventPlace::First,
            (true, true) => EventPlace::Inside,
            (true, false) => EventPlace::Last,
        }
    }

    fn node_mut(&mut self, id: &str) -> &mut NodeView {
        self.nodes.entry(id.to_owned()).or_insert_with(|| NodeView {
            id: id.to_owned(),
            ..NodeView::default()
        })
    }

    fn on_poll(&mut self, endpoint: String, result: Result<(NodeStatus, Duration), String>) {
        let now = self.now;
        match result {
            Ok((status, latency)) => {
                // A node that was only known by its endpoint now has a name.
                self.nodes.remove(&endpoint);
                self.endpoint_nodes
                    .insert(endpoint.clone(), status.node.clone());
                for peer in &status.peers {
                    let node = self.node_mut(&peer.node);
                    if node.address.is_empty() {
                        node.address.clone_from(&peer.listen);
                    }
                    node.peer_age = Some((
                        Duration::from_millis(peer.heartbeat_age_ms),
                        peer.status,
                        now,
                    ));
                }
                let node = self.node_mut(&status.node);
                node.address.clone_from(&status.listen);
                node.poll = Some(PollView {
                    endpoint,
                    result: Ok(PolledStatus {
                        latency,
                        database: status.database.state,
                        cache: status.cache,
                        revision: status.revision,
                    }),
                });
            }
            Err(err) => {
                let id = self
                    .endpoint_nodes
                    .get(&endpoint)
                    .cloned()
                    .unwrap_or_else(|| endpoint.clone());
                let node = self.node_mut(&id);
                if node.address.is_empty() {
                    node.address.clone_from(&endpoint);
                }
                node.poll = Some(PollView {
                    endpoint,
                    result: Err(err),
                });
            }
        }
    }

    fn on_key(&mut self, key: KeyEvent) -> Vec<Command> {
        if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
            return vec![Command::Quit];
        }
        match std::mem::replace(&mut self.mode, Mode::Normal) {
            Mode::Normal => self.on_normal_key(key),
            Mode::Help => Vec::new(), // any key closes it
            Mode::Value { view, scroll } => {
                // Arrows and pages scroll a long value; any other key closes it.
                let scroll = match key.code {
                    KeyCode::Down | KeyCode::Char('j') => scroll + 1,
                    KeyCode::Up | KeyCode::Char('k') => scroll.saturating_sub(1),
                    KeyCode::PageDown | KeyCode::Char(' ') => scroll + 10,
                    KeyCode::PageUp => scroll.saturating_sub(10),
                    KeyCode::Home => 0,
                    _ => return Vec::new(),
                };
                let last = view.value.lines().count().saturating_sub(1);
                self.mode = Mode::Value {
                    view,
                    scroll: scroll.min(last),
                };
                Vec::new()
            }
            Mode::Filter(mut text) => match key.code {
                KeyCode::Enter => {
                    self.prefix = text;
                    self.selected_key = 0;
                    self.focus = Panel::Keys;
                    self.fetch_keys()
                }
                KeyCode::Esc => Vec::new(),
                KeyCode::Backspace => {
                    text.pop();
                    self.mode = Mode::Filter(text);
                    Vec::new()
                }
                KeyCode::Char(c) => {
                    text.push(c);
                    self.mode = Mode::Filter(text);
                    Vec::new()
                }
                _ => {
                    self.mode = Mode::Filter(text);
                    Vec::new()
                }
            },
            Mode::Put {
                key: mut key_text,
                mut value,
                field,
            } => match key.code {
                KeyCode::Esc => Vec::new(),
                KeyCode::Tab | KeyCode::BackTab | KeyCode::Up | KeyCode::Down => {
                    let field = match field {
                        PutField::Key => PutField::Value,
                        PutField::Value => PutField::Key,
                    };
                    self.mode = Mode::Put {
                        key: key_text,
                        value,
                        field,
                    };
                    Vec::new()
                }
                KeyCode::Enter if key_text.is_empty() => {
                    self.message = Some(Err("a key cannot be empty".to_owned()));
                    self.mode = Mode::Put {
                        key: key_text,
                        value,
                        field: PutField::Key,
                    };
                    Vec::new()
                }
                KeyCode::Enter => vec![Command::Put {
                    key: key_text,
                    value,
                }],
                KeyCode::Backspace | KeyCode::Char(_) => {
                    let target = match field {
                        PutField::Key => &mut key_text,
                        PutField::Value => &mut value,
                    };
                    match key.code {
                        KeyCode::Char(c) => target.push(c),
                        _ => {
                            target.pop();
                        }
                    }
                    self.mode = Mode::Put {
                        key: key_text,
                        value,
                        field,
                    };
                    Vec::new()
                }
                _ => {
                    self.mode = Mode::Put {
                        key: key_text,
                        value,
                        field,
                    };
                    Vec::new()
                }
            },
            Mode::ConfirmDelete(target) => match key.code {
                KeyCode::Char('y') | KeyCode::Char('Y') => vec![Command::Delete { key: target }],
                _ => {
                    self.message = Some(Ok(format!("kept {target}")));
                    Vec::new()
                }
            },
        }
    }

    fn on_normal_key(&mut self, key: KeyEvent) -> Vec<Command> {
        match key.code {
            KeyCode::Char('q') => vec![Command::Quit],
            KeyCode::Char('?') => {
                self.mode = Mode::Help;
                Vec::new()
            }
            KeyCode::Tab => {
                self.focus = self.focus.next();
                Vec::new()
            }
            KeyCode::Char(' ') => {
                self.paused = !self.paused;
                if !self.paused {
                    for event in std::mem::take(&mut self.held) {
                        self.insert_event(event);
                    }
                }
                Vec::new()
            }
            KeyCode::Char('/') => {
                self.mode = Mode::Filter(self.prefix.clone());
                Vec::new()
            }
            KeyCode::Char('r') => self.fetch_keys(),
            KeyCode::Up | KeyCode::Char('k') => {
                let selected = self.selection_mut();
                *selected = selected.saturating_sub(1);
                Vec::new()
            }
            KeyCode::Down | KeyCode::Char('j') if self.focus == Panel::Keys => {
                self.move_key_cursor(self.selected_key + 1)
            }
            KeyCode::PageDown if self.focus == Panel::Keys => {
                self.move_key_cursor(self.selected_key + KEY_PAGE_STEP)
            }
            KeyCode::PageUp if self.focus == Panel::Keys => {
                self.move_key_cursor(self.selected_key.saturating_sub(KEY_PAGE_STEP))
            }
            KeyCode::Home if self.focus == Panel::Keys => self.move_key_cursor(0),
            KeyCode::End if self.focus == Panel::Keys => {
                // Every page is fetched (keys only), and the cursor follows to the last key.
                self.keys_wanted = usize::MAX;
                self.selected_key = self.keys.len().saturating_sub(1);
                self.fetch_more_keys()
            }
            KeyCode::Down | KeyCode::Char('j') => {
                let len = match self.focus {
                    Panel::Nodes => self.nodes.len(),
                    Panel::Events => self.events.len(),
                    Panel::Keys => self.keys.len(),
                };
                let selected = self.selection_mut();
                *selected = (*selected + 1).min(len.saturating_sub(1));
                Vec::new()
            }
            KeyCode::Enter => match self.selected_key_name() {
                Some(key) => vec![Command::FetchValue { key }],
                None => Vec::new(),
            },
            KeyCode::Char('p') if self.read_only => {
                self.message = Some(Err("read-only: p (put) is disabled".to_owned()));
                Vec::new()
            }
            KeyCode::Char('d') if self.read_only => {
                self.message = Some(Err("read-only: d (delete) is disabled".to_owned()));
                Vec::new()
            }
            KeyCode::Char('p') => {
                let key = if self.focus == Panel::Keys {
                    self.selected_key_name().unwrap_or_default()
                } else {
                    String::new()
                };
                let field = if key.is_empty() {
                    PutField::Key
                } else {
                    PutField::Value
                };
                self.mode = Mode::Put {
                    key,
                    value: String::new(),
                    field,
                };
                Vec::new()
            }
            KeyCode::Char('d') => {
                match self.selected_key_name() {
                    Some(key) => self.mode = Mode::ConfirmDelete(key),
                    None => self.message = Some(Err("select a key to delete".to_owned())),
                }
                Vec::new()
            }
            _ => Vec::new(),
        }
    }

    fn selection_mut(&mut self) -> &mut usize {
        match self.focus {
            Panel::Nodes => &mut self.selected_node,
            Panel::Events => &mut self.selected_event,
            Panel::Keys => &mut self.selected_key,
        }
    }

    /// The key under the cursor: in the key browser, or of the selected event.
    pub fn selected_key_name(&self) -> Option<String> {
        match self.focus {
            Panel::Keys => self.keys.get(self.selected_key).map(|k| k.key.clone()),
            Panel::Events => self.events.get(self.selected_event).map(|e| e.key.clone()),
            Panel::Nodes => None,
        }
    }
}
