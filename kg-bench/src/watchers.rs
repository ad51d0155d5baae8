//! Watchers beside a run's load, and a compactor that overtakes them (issue 47's third drill
//! rule): each watcher's streams are recorded (`NAME.watch.jsonl`) and judged against the
//! load's history by [`judge`]: every acknowledged change of the prefix, in order and
//! delivered as it was written, or a compaction notice that ends the stream.
//!
//! Three kinds of watcher take turns by index: a live one that reads as fast as it can; a
//! slow one that replays, again and again, from the lowest revision it may (the run's start,
//! then the compact revision) and reads each event late, so that compactions land inside its
//! replays; and one that drops its stream every so often and resumes from its last id, as a
//! client behind a flaky proxy does. Every stream asks for progress events (1 s): a progress
//! event's revision is a point a client may trust to be complete, and so is the revision of
//! a key's last change once a later one has come (`check_complete`). When the load ends,
//! the watchers read on until a progress event says they have caught up, or a deadline
//! passes.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::history::{HistoryEntry, HistoryOutcome};
use crate::workload::Op;

/// What the watchers and the compactor do beside a load.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct WatchLoad {
    /// How many watchers (the kinds take turns: live, slow replay, resuming).
    pub watchers: usize,
    /// Compact this often while the load runs; `None`: never.
    #[serde(serialize_with = "as_seconds_opt")]
    pub compact_every: Option<Duration>,
    /// Compact no nearer than this many revisions to the newest any watcher has seen.
    pub compact_lag: i64,
    /// The slow watcher waits this long after each change it reads.
    #[serde(serialize_with = "as_seconds")]
    pub slow: Duration,
    /// The slow and the resuming watchers drop their stream this often: the slow one then
    /// replays again from the compact revision, the resuming one resumes from its last id.
    #[serde(serialize_with = "as_seconds")]
    pub resume_every: Duration,
}

impl WatchLoad {
    /// The drills' defaults: three watchers, a compaction a second (and one aimed at each
    /// replay of the slow watcher), at least 20 revisions back.
    pub fn drill() -> Self {
        Self {
            watchers: 3,
            compact_every: Some(Duration::from_secs(1)),
            compact_lag: 20,
            slow: Duration::from_millis(3),
            resume_every: Duration::from_millis(1500),
        }
    }
}

fn as_seconds<S: serde::Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_f64(duration.as_secs_f64())
}

fn as_seconds_opt<S: serde::Serializer>(
    duration: &Option<Duration>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match duration {
        Some(duration) => serializer.serialize_f64(duration.as_secs_f64()),
        None => serializer.serialize_none(),
    }
}

/// What a stream gave, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum Item {
    Put {
        key: String,
        revision: i64,
        /// Absent when the node left it out for its size.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        value: Option<String>,
    },
    Delete {
        key: String,
        revision: i64,
    },
    /// Every change up to `revision` has been sent.
    Progress {
        revision: i64,
    },
}

/// How a stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ending {
    /// A `compacted` event: the watcher starts a new chain from the compact revision.
    Compacted,
    /// 410 when it was opened: the revision asked for was compacted.
    Refused,
    /// The connection broke or the server ended it: resumed from the last id.
    Broken,
    /// The watcher dropped it itself (the resuming kind, or a silent stream).
    Dropped,
    /// A progress event after the load's end: it has caught up.
    Drained,
    /// The drain's deadline passed first.
    Undrained,
}

/// One line of a watch record: a stream from its open to its end, or a compaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "record", rename_all = "snake_case")]
pub enum WatchRecord {
    Stream {
        watcher: usize,
        /// The streams of one chain resume one another; a new chain starts after a
        /// compaction notice or a 410, from a revision the watcher did not read up to.
        chain: u64,
        /// The stream was opened after this revision (`Last-Event-ID`).
        after: i64,
        items: Vec<Item>,
        ended: Ending,
        /// Microseconds since the run's origin.
        opened_us: u64,
        ended_us: u64,
    },
    Compaction {
        revision: i64,
        at_us: u64,
    },
}

/// The record of a history file `NAME.jsonl`: `NAME.watch.jsonl` beside it.
pub fn record_path(history: &Path) -> PathBuf {
    let stem = history
        .file_stem()
        .map_or_else(String::new, |stem| stem.to_string_lossy().into_owned());
    history.with_file_name(format!("{stem}.watch.jsonl"))
}

/// State the watchers and the compactor share.
struct Shared {
    client: kg_api::Client,
    prefix: String,
    load: WatchLoad,
    origin: Instant,
    /// The run's first revision: no stream starts below it.
    start: i64,
    /// The newest revision any watcher has read.
    seen: AtomicI64,
    /// The compact revision, as the compactor last set it.
    compacted: AtomicI64,
    /// The slow watcher has opened a stream: the compactor aims a compaction at its replay.
    replay_opened: tokio::sync::Notify,
    /// Set when the load has ended: the watchers drain from then on.
    drain_started: std::sync::OnceLock<Instant>,
    records: tokio::sync::mpsc::UnboundedSender<WatchRecord>,
}

impl Shared {
    fn micros(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// Where a new chain starts: the lowest revision a watch may resume after.
    fn floor(&self) -> i64 {
        self.start.max(self.compacted.load(Ordering::Relaxed))
    }

    /// Takes the compact revision from a 410's or a `compacted` event's detail (its last
    /// "up to revision N"), which may be ahead of the compactor's own: a compaction whose
    /// call failed may have raised it all the same.
    fn learn_compacted(&self, detail: &str) {
        let revision = detail
            .rsplit("up to revision ")
            .next()
            .filter(|rest| rest.len() < detail.len())
            .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|digits| digits.parse::<i64>().ok());
        if let Some(revision) = revision {
            self.compacted.fetch_max(revision, Ordering::Relaxed);
        }
    }

    /// Whether the load has ended.
    fn draining(&self) -> bool {
        self.drain_started.get().is_some()
    }

    /// Whether the drain's deadline has passed.
    fn drain_over(&self) -> bool {
        self.drain_started
            .get()
            .is_some_and(|started| started.elapsed() >= DRAIN_DEADLINE)
    }

    /// Whether a progress event read now was sent after the load ended: one sent a moment
    /// before may be older than the load's last writes, so the first seconds do not count.
    fn caught_up_by_now(&self) -> bool {
        self.drain_started
            .get()
            .is_some_and(|started| started.elapsed() >= Duration::from_secs(2))
    }
}

/// The watchers and the compactor of one run, running until [`Watchers::finish`].
pub struct Watchers {
    shared: Arc<Shared>,
    tasks: tokio::task::JoinSet<()>,
    writer: tokio::task::JoinHandle<Result<usize, String>>,
}

impl std::fmt::Debug for Watchers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watchers")
            .field("prefix", &self.shared.prefix)
            .field("load", &self.shared.load)
            .field("start", &self.shared.start)
            .finish_non_exhaustive()
    }
}

/// How long the watchers may read on after the load to catch up.
const DRAIN_DEADLINE: Duration = Duration::from_secs(20);
/// How long an open may take before the watcher tries again.
const OPEN_TIMEOUT: Duration = Duration::from_secs(5);
/// The pause before a new chain opens after a compaction notice or a 410.
const REOPEN_PAUSE: Duration = Duration::from_millis(100);
/// A stream that sent nothing, not even a progress event, for this long is dropped and
/// resumed: its node is paused or gone without a reset.
const SILENT: Duration = Duration::from_secs(8);

impl Watchers {
    /// Starts `load.watchers` watchers of `prefix` and the compactor through `client`,
    /// recording to `path`. The run's start revision is a write of a key outside the prefix
    /// (`kg-bench-watch/start`), so that no stream replays an earlier run's writes.
    pub async fn start(
        client: kg_api::Client,
        prefix: &str,
        load: WatchLoad,
        origin: Instant,
        path: &Path,
    ) -> Result<Self, String> {
        let start = start_revision(&client).await?;
        let file = tokio::fs::File::create(path)
            .await
            .map_err(|err| format!("cannot create {}: {err}", path.display()))?;
        let (records, receiver) = tokio::sync::mpsc::unbounded_channel();
        let writer = tokio::spawn(write_records(file, receiver, path.to_owned()));
        let shared = Arc::new(Shared {
            client,
            prefix: prefix.to_owned(),
            load,
            origin,
            start,
            seen: AtomicI64::new(start),
            compacted: AtomicI64::new(0),
            replay_opened: tokio::sync::Notify::new(),
            drain_started: std::sync::OnceLock::new(),
            records,
        });
        let mut tasks = tokio::task::JoinSet::new();
        for watcher in 0..load.watchers {
            tasks.spawn(watch(shared.clone(), watcher));
        }
        if let Some(every) = load.compact_every {
            tasks.spawn(compact(shared.clone(), every));
        }
        Ok(Self {
            shared,
            tasks,
            writer,
        })
    }

    /// Tells the watchers the load has ended, waits for them to catch up (or the drain's
    /// deadline), and returns how many records were written.
    pub async fn finish(self) -> Result<usize, String> {
        let Self {
            shared,
            mut tasks,
            writer,
        } = self;
        let _ = shared.drain_started.set(Instant::now());
        while tasks.join_next().await.is_some() {}
        drop(shared);
        writer
            .await
            .map_err(|err| format!("the watch recorder failed: {err}"))?
    }
}

/// The revision of a write made for the purpose, outside every drill's prefix.
async fn start_revision(client: &kg_api::Client) -> Result<i64, String> {
    let mut last = String::new();
    for _ in 0..20 {
        match client
            .put("kg-bench-watch/start", "start", kg_api::Precondition::None)
            .await
        {
            Ok(written) => return Ok(written.revision),
            Err(err) => last = err.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Err(format!("the watchers found no start revision: {last}"))
}

async fn write_records(
    file: tokio::fs::File,
    mut records: tokio::sync::mpsc::UnboundedReceiver<WatchRecord>,
    path: PathBuf,
) -> Result<usize, String> {
    use tokio::io::AsyncWriteExt as _;
    let mut file = tokio::io::BufWriter::new(file);
    let mut written = 0;
    while let Some(record) = records.recv().await {
        let mut line = serde_json::to_vec(&record).map_err(|err| err.to_string())?;
        line.push(b'\n');
        file.write_all(&line)
            .await
            .map_err(|err| format!("cannot write {}: {err}", path.display()))?;
        written += 1;
    }
    file.flush()
        .await
        .map_err(|err| format!("cannot write {}: {err}", path.display()))?;
    Ok(written)
}

/// The kinds of watcher, by index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Live,
    SlowReplay,
    Resuming,
}

impl Kind {
    fn of(watcher: usize) -> Self {
        match watcher % 3 {
            0 => Self::Live,
            1 => Self::SlowReplay,
            _ => Self::Resuming,
        }
    }
}

/// One watcher: streams, one after another, until it has drained after the load.
async fn watch(shared: Arc<Shared>, watcher: usize) {
    let kind = Kind::of(watcher);
    let mut chain = 0;
    let mut after = shared.start;
    loop {
        if shared.drain_over() {
            return;
        }
        let opened_us = shared.micros();
        // A paused node takes the connection and answers nothing: the open is bounded.
        let stream = tokio::time::timeout(
            OPEN_TIMEOUT,
            shared.client.watch_with(
                Some(&shared.prefix),
                Some(after),
                Some(Duration::from_secs(1)),
            ),
        )
        .await;
        let mut stream = match stream {
            Ok(Ok(stream)) => stream,
            Ok(Err(kg_api::Error::Api { status, detail })) if status == http::StatusCode::GONE => {
                shared.learn_compacted(&detail);
                let _ = shared.records.send(WatchRecord::Stream {
                    watcher,
                    chain,
                    after,
                    items: Vec::new(),
                    ended: Ending::Refused,
                    opened_us,
                    ended_us: shared.micros(),
                });
                chain += 1;
                after = shared.floor();
                tokio::time::sleep(REOPEN_PAUSE).await;
                continue;
            }
            Ok(Err(_)) | Err(_) => {
                // Down or unavailable: as a client would, try again shortly.
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        if kind == Kind::SlowReplay {
            shared.replay_opened.notify_one();
        }
        let (items, ended) = read_stream(&shared, &mut stream, kind).await;
        let _ = shared.records.send(WatchRecord::Stream {
            watcher,
            chain,
            after,
            items,
            ended,
            opened_us,
            ended_us: shared.micros(),
        });
        match ended {
            Ending::Compacted | Ending::Refused => {
                chain += 1;
                after = shared.floor();
                tokio::time::sleep(REOPEN_PAUSE).await;
            }
            // The slow kind starts again from the compact revision: a fresh replay, which
            // the next compaction may overtake.
            Ending::Dropped if kind == Kind::SlowReplay => {
                chain += 1;
                after = shared.floor();
            }
            Ending::Broken | Ending::Dropped => {
                after = stream.resume_after().unwrap_or(after);
            }
            Ending::Drained | Ending::Undrained => return,
        }
    }
}

/// Reads one stream until it ends, or the watcher ends it; returns what it gave.
async fn read_stream(
    shared: &Shared,
    stream: &mut kg_api::WatchStream,
    kind: Kind,
) -> (Vec<Item>, Ending) {
    let opened = Instant::now();
    let mut items = Vec::new();
    let mut heard = Instant::now();
    loop {
        let draining = shared.draining();
        if shared.drain_over() {
            return (items, Ending::Undrained);
        }
        if kind != Kind::Live && !draining && opened.elapsed() >= shared.load.resume_every {
            return (items, Ending::Dropped);
        }
        if heard.elapsed() >= SILENT {
            return (items, Ending::Dropped);
        }
        let next = tokio::time::timeout(Duration::from_millis(250), stream.next_item()).await;
        let Ok(next) = next else { continue };
        heard = Instant::now();
        match next {
            None => return (items, Ending::Broken),
            Some(Ok(kg_api::WatchItem::Change(event))) => {
                shared.seen.fetch_max(event.revision, Ordering::Relaxed);
                items.push(match event.kind {
                    kg_api::EventType::Put => Item::Put {
                        key: event.key,
                        revision: event.revision,
                        value: event.value,
                    },
                    kg_api::EventType::Delete => Item::Delete {
                        key: event.key,
                        revision: event.revision,
                    },
                });
                if kind == Kind::SlowReplay && !draining {
                    tokio::time::sleep(shared.load.slow).await;
                }
            }
            Some(Ok(kg_api::WatchItem::Progress(revision))) => {
                items.push(Item::Progress { revision });
                if shared.caught_up_by_now() {
                    return (items, Ending::Drained);
                }
            }
            Some(Err(kg_api::Error::Api { status, detail }))
                if status == http::StatusCode::GONE =>
            {
                shared.learn_compacted(&detail);
                return (items, Ending::Compacted);
            }
            Some(Err(_)) => return (items, Ending::Broken),
        }
    }
}

/// Compacts every `every`, and a few milliseconds after the slow watcher opens a stream,
/// until the load ends: halfway from the compact revision to the newest revision seen (no
/// nearer to it than `compact_lag`), which is inside the slow watcher's replay, so that the
/// compaction overtakes it. Failures (a database away) are skipped.
async fn compact(shared: Arc<Shared>, every: Duration) {
    use rand::{Rng as _, SeedableRng as _};
    let mut rng = rand::rngs::SmallRng::seed_from_u64(u64::try_from(shared.start).unwrap_or(0));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    while !shared.draining() {
        tokio::select! {
            _ = tick.tick() => {}
            () = shared.replay_opened.notified() => {
                tokio::time::sleep(Duration::from_millis(rng.random_range(0..20))).await;
            }
        }
        let floor = shared.floor();
        let seen = shared.seen.load(Ordering::Relaxed);
        let target = (floor + (seen - floor) / 2).min(seen - shared.load.compact_lag);
        if target <= floor {
            continue;
        }
        if let Ok(done) = shared.client.compact(target).await {
            shared
                .compacted
                .fetch_max(done.compact_revision, Ordering::Relaxed);
            let _ = shared.records.send(WatchRecord::Compaction {
                revision: done.compact_revision,
                at_us: shared.micros(),
            });
        }
    }
}

/// Reads a watch record file.
pub fn read_records(path: &Path) -> Result<Vec<WatchRecord>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|err| format!("cannot read {}: {err}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(n, line)| {
            serde_json::from_str(line).map_err(|err| format!("{}:{}: {err}", path.display(), n + 1))
        })
        .collect()
}

/// The verdict on a run's watchers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WatchVerdict {
    pub streams: usize,
    /// Runs of streams that resume one another.
    pub chains: usize,
    pub events: usize,
    pub compactions: usize,
    /// Streams that ended with a `compacted` event, and opens answered 410.
    pub compacted_notices: usize,
    pub refused: usize,
    pub broken: usize,
    /// Streams that did not catch up after the load.
    pub undrained: usize,
    /// Acknowledged changes that some chain's progress covered, each checked once per chain.
    pub judged: usize,
    pub violations: usize,
    pub examples: Vec<String>,
}

const EXAMPLES: usize = 5;

/// A stream of a chain: what it was opened after, and what it gave.
type Stream<'a> = (i64, &'a [Item]);

/// An acknowledged change of one key, as the history has it.
struct Change<'a> {
    entry: &'a HistoryEntry,
    revision: i64,
}

/// Judges the watchers' records against the load's history: in each stream, revisions only go
/// up and no key comes twice in one revision; every event is a change the load made (a put
/// carries the value written at its revision; a delete is not at the revision of a put);
/// and each chain has every acknowledged change it should have had by the rules of
/// `check_complete`.
pub fn judge(history: &[HistoryEntry], records: &[WatchRecord]) -> WatchVerdict {
    // A write whose first attempt's answer was lost is what its retry's answer says.
    let history = &crate::history::fold_retries(history);
    let mut verdict = WatchVerdict::default();
    let mut problems: Vec<String> = Vec::new();
    let changes = acknowledged_changes(history);
    let by_revision: HashMap<(&str, i64), &HistoryEntry> = changes
        .iter()
        .map(|change| ((change.entry.key.as_str(), change.revision), change.entry))
        .collect();
    // Values written by writes whose revision is not known (unknown outcomes): an event may
    // carry one at any revision. A value acknowledged at a revision belongs there only.
    let written: HashSet<(&str, &str)> = history
        .iter()
        .filter(|entry| matches!(entry.op, Op::Put | Op::Cas))
        .filter(|entry| entry.outcome == HistoryOutcome::Unknown)
        .filter_map(|entry| Some((entry.key.as_str(), entry.value.as_deref()?)))
        .collect();
    let deleters = Deleters::of(history);
    // Acknowledged prefix deletes that deleted keys, by revision: the prefix and how many.
    let swept: HashMap<i64, (&str, u64)> = history
        .iter()
        .filter(|entry| entry.op == Op::DeletePrefix && entry.outcome == HistoryOutcome::Ok)
        .filter_map(|entry| match (entry.revision, entry.deleted) {
            (Some(revision), Some(deleted)) if deleted > 0 => {
                Some((revision, (entry.key.as_str(), deleted)))
            }
            _ => None,
        })
        .collect();

    let mut chains: BTreeMap<(usize, u64), Vec<Stream<'_>>> = BTreeMap::new();
    for record in records {
        match record {
            WatchRecord::Compaction { .. } => verdict.compactions += 1,
            WatchRecord::Stream {
                watcher,
                chain,
                after,
                items,
                ended,
                ..
            } => {
                verdict.streams += 1;
                match ended {
                    Ending::Compacted => verdict.compacted_notices += 1,
                    Ending::Refused => verdict.refused += 1,
                    Ending::Broken => verdict.broken += 1,
                    Ending::Undrained => verdict.undrained += 1,
                    Ending::Dropped | Ending::Drained => {}
                }
                let stream = format!("watcher {watcher} chain {chain} after {after}");
                check_order(*after, items, &stream, &mut problems);
                check_prefix_deletes(items, &swept, &stream, &mut problems);
                for item in items {
                    check_truth(
                        item,
                        &by_revision,
                        &written,
                        &deleters,
                        &stream,
                        &mut problems,
                    );
                }
                verdict.events += items
                    .iter()
                    .filter(|item| !matches!(item, Item::Progress { .. }))
                    .count();
                chains
                    .entry((*watcher, *chain))
                    .or_default()
                    .push((*after, items));
            }
        }
    }
    verdict.chains = chains.len();
    let finals = last_changes(history, &changes);
    for ((watcher, chain), streams) in &chains {
        verdict.judged += check_complete(
            &changes,
            &finals,
            streams,
            &format!("watcher {watcher} chain {chain}"),
            &mut problems,
        );
    }
    if verdict.judged == 0 && !changes.is_empty() && verdict.streams > 0 {
        problems.push(
            "no watcher's progress covered any acknowledged change: nothing was judged".into(),
        );
    }
    verdict.violations = problems.len();
    verdict.examples = problems.into_iter().take(EXAMPLES).collect();
    verdict
}

/// Acknowledged puts, CASes and deletes of one key with their revisions (a retry is its first
/// attempt's change; a prefix delete names no key).
fn acknowledged_changes(history: &[HistoryEntry]) -> Vec<Change<'_>> {
    history
        .iter()
        .filter(|entry| matches!(entry.op, Op::Put | Op::Cas | Op::Delete))
        .filter(|entry| entry.is_acknowledged_write() && !entry.retry)
        .filter_map(|entry| {
            Some(Change {
                entry,
                revision: entry.revision?,
            })
        })
        .collect()
}

fn item_key_revision(item: &Item) -> Option<(&str, i64)> {
    match item {
        Item::Put { key, revision, .. } | Item::Delete { key, revision } => {
            Some((key.as_str(), *revision))
        }
        Item::Progress { .. } => None,
    }
}

/// Revisions above `after` that only go up, no key twice in a revision, and no change at or
/// below a progress revision that came before it.
fn check_order(after: i64, items: &[Item], stream: &str, problems: &mut Vec<String>) {
    let mut last = after;
    let mut progress = after;
    let mut in_revision: HashSet<&str> = HashSet::new();
    for item in items {
        match item {
            Item::Progress { revision } => {
                if *revision < last {
                    problems.push(format!(
                        "{stream}: progress {revision} after a change at revision {last}"
                    ));
                }
                progress = progress.max(*revision);
            }
            Item::Put { key, revision, .. } | Item::Delete { key, revision } => {
                if *revision <= progress {
                    problems.push(format!(
                        "{stream}: {key} at revision {revision}, at or below revision {progress} \
                         that a progress event or the stream's start had covered"
                    ));
                } else if *revision < last {
                    problems.push(format!(
                        "{stream}: {key} at revision {revision} after revision {last}"
                    ));
                } else if *revision == last && !in_revision.insert(key) {
                    problems.push(format!("{stream}: {key} twice at revision {revision}"));
                }
                if *revision > last {
                    in_revision.clear();
                    in_revision.insert(key);
                    last = *revision;
                }
            }
        }
    }
}

/// A prefix delete's revision carries at most as many events as it deleted keys, each a delete
/// under its prefix (a replay may carry fewer: a key put again since shows its later state).
fn check_prefix_deletes(
    items: &[Item],
    swept: &HashMap<i64, (&str, u64)>,
    stream: &str,
    problems: &mut Vec<String>,
) {
    let mut counted: HashMap<i64, u64> = HashMap::new();
    for item in items {
        let Some((key, revision)) = item_key_revision(item) else {
            continue;
        };
        let Some((prefix, deleted)) = swept.get(&revision) else {
            continue;
        };
        if !matches!(item, Item::Delete { .. }) || !key.starts_with(prefix) {
            problems.push(format!(
                "{stream}: {key} at revision {revision}, the revision of a prefix delete of \
                 {prefix:?}, is not one of its deletes"
            ));
            continue;
        }
        let count = counted.entry(revision).or_default();
        *count += 1;
        if *count == deleted + 1 {
            problems.push(format!(
                "{stream}: more than {deleted} delete(s) at revision {revision}, where a prefix \
                 delete of {prefix:?} deleted {deleted}"
            ));
        }
    }
}

/// An event must be a change the load made.
fn check_truth(
    item: &Item,
    by_revision: &HashMap<(&str, i64), &HistoryEntry>,
    written: &HashSet<(&str, &str)>,
    deleters: &Deleters<'_>,
    stream: &str,
    problems: &mut Vec<String>,
) {
    let Some((key, revision)) = item_key_revision(item) else {
        return;
    };
    let acknowledged = by_revision.get(&(key, revision));
    let problem = match (item, acknowledged) {
        (
            Item::Put {
                value: Some(value), ..
            },
            Some(entry),
        ) if entry.op == Op::Delete || entry.value.as_deref() != Some(value) => {
            format!(
                "{stream}: put of {key} = {value:?} at revision {revision}, where the load's {} \
                 wrote {:?}",
                entry.op.name(),
                entry.value
            )
        }
        (
            Item::Put {
                value: Some(value), ..
            },
            None,
        ) if !written.contains(&(key, value.as_str())) => {
            format!(
                "{stream}: put of {key} = {value:?} at revision {revision}, a value no write \
                 of an unknown outcome wrote (and no write was acknowledged there)"
            )
        }
        (Item::Delete { .. }, None) if !deleters.may_delete(key, revision) => format!(
            "{stream}: delete of {key} at revision {revision}, which no delete of the key and \
             no prefix delete over it may have made"
        ),
        (Item::Delete { .. }, Some(entry)) if entry.op != Op::Delete => format!(
            "{stream}: delete of {key} at revision {revision}, where the load's {} wrote {:?}",
            entry.op.name(),
            entry.value
        ),
        _ => return,
    };
    problems.push(problem);
}

/// The deletes of a history that may have made a delete event: single-key deletes that
/// were acknowledged (at their revision) or have an unknown outcome, and prefix deletes
/// likewise (an acknowledged one at its revision).
struct Deleters<'a> {
    acknowledged: HashSet<(&'a str, i64)>,
    unknown_keys: HashSet<&'a str>,
    prefixes: Vec<(&'a str, Option<i64>)>,
}

impl<'a> Deleters<'a> {
    fn of(history: &'a [HistoryEntry]) -> Self {
        let mut deleters = Deleters {
            acknowledged: HashSet::new(),
            unknown_keys: HashSet::new(),
            prefixes: Vec::new(),
        };
        for entry in history {
            let revision = match entry.outcome {
                HistoryOutcome::Ok => entry.revision,
                HistoryOutcome::Unknown => None,
                HistoryOutcome::Fail | HistoryOutcome::Refused => continue,
            };
            match (entry.op, revision) {
                (Op::Delete, Some(revision)) => {
                    deleters.acknowledged.insert((entry.key.as_str(), revision));
                }
                (Op::Delete, None) => {
                    deleters.unknown_keys.insert(entry.key.as_str());
                }
                (Op::DeletePrefix, revision) => {
                    deleters.prefixes.push((entry.key.as_str(), revision));
                }
                _ => {}
            }
        }
        deleters
    }

    fn may_delete(&self, key: &str, revision: i64) -> bool {
        self.acknowledged.contains(&(key, revision))
            || self.unknown_keys.contains(key)
            || self
                .prefixes
                .iter()
                .any(|(prefix, at)| key.starts_with(prefix) && at.is_none_or(|at| at == revision))
    }
}

/// Two rules, for each chain of streams that resumed one another:
/// - every acknowledged change that the chain's highest progress revision covers, above the
///   chain's start, reached the chain, or a later change of its key (up to that revision)
///   did: a replay sends a key's latest state only;
/// - a key's last change in the whole run (no write of it after, nor one that may have
///   landed after) is its latest state forever, so a chain that has read past its revision
///   has it, exactly: a replay sends revisions in order, and so does a live stream. This one
///   needs no progress event, which a busy stream never gets.
///
/// Returns how many changes were judged.
fn check_complete(
    changes: &[Change<'_>],
    finals: &HashSet<(&str, i64)>,
    streams: &[Stream<'_>],
    chain: &str,
    problems: &mut Vec<String>,
) -> usize {
    let start = streams.first().map_or(0, |(after, _)| *after);
    let covered = streams
        .iter()
        .flat_map(|(_, items)| items.iter())
        .filter_map(|item| match item {
            Item::Progress { revision } => Some(*revision),
            _ => None,
        })
        .max()
        .unwrap_or(start);
    let read_past = streams
        .iter()
        .map(|(_, items)| complete_up_to(items))
        .max()
        .unwrap_or(start)
        .max(covered);
    let mut seen: HashMap<&str, Vec<i64>> = HashMap::new();
    for (key, revision) in streams
        .iter()
        .flat_map(|(_, items)| items.iter())
        .filter_map(item_key_revision)
    {
        seen.entry(key).or_default().push(revision);
    }
    let mut judged = 0;
    for change in changes {
        let key = change.entry.key.as_str();
        let revision = change.revision;
        let last = finals.contains(&(key, revision));
        if revision <= start || revision > if last { read_past } else { covered } {
            continue;
        }
        judged += 1;
        let revisions = seen.get(key).map_or(&[][..], Vec::as_slice);
        if last && !revisions.contains(&revision) {
            problems.push(format!(
                "{chain}: the {} of {key} at revision {revision}, the key's last change, \
                 never reached it, though it read past revision {read_past}",
                change.entry.op.name(),
            ));
        } else if !last && !revisions.iter().any(|r| (revision..=covered).contains(r)) {
            problems.push(format!(
                "{chain}: the {} of {key} at revision {revision} (acknowledged) never reached \
                 it, nor a later change of the key, though its progress covered revision \
                 {covered}",
                change.entry.op.name(),
            ));
        }
    }
    judged
}

/// The highest revision a stream is known to have every event of: one that a later event or
/// a progress event came after (the last revision's events may have been cut short).
fn complete_up_to(items: &[Item]) -> i64 {
    let mut complete = i64::MIN;
    let mut last = None;
    for item in items {
        match item {
            Item::Progress { revision } => {
                complete = complete.max(*revision);
                if let Some(last) = last {
                    complete = complete.max(last);
                }
            }
            Item::Put { revision, .. } | Item::Delete { revision, .. } => {
                if let Some(last) = last.filter(|last| last < revision) {
                    complete = complete.max(last);
                }
                last = Some(*revision);
            }
        }
    }
    complete
}

/// The acknowledged changes that are their key's last: no other write of the key, nor a
/// prefix delete over it, has a later revision or may have landed after it (any unknown
/// outcome).
fn last_changes<'a>(
    history: &'a [HistoryEntry],
    changes: &[Change<'a>],
) -> HashSet<(&'a str, i64)> {
    let writes: Vec<&HistoryEntry> = history
        .iter()
        .filter(|entry| entry.is_write())
        .filter(|entry| matches!(entry.outcome, HistoryOutcome::Ok | HistoryOutcome::Unknown))
        .collect();
    let mut by_key: HashMap<&str, Vec<&HistoryEntry>> = HashMap::new();
    let mut prefix_deletes = Vec::new();
    for entry in writes {
        if entry.op == Op::DeletePrefix {
            if entry.deleted != Some(0) {
                prefix_deletes.push(entry);
            }
        } else {
            by_key.entry(entry.key.as_str()).or_default().push(entry);
        }
    }
    // An unknown outcome may land at any time after its call, even after its caller gave up
    // and a later write of the key was acknowledged (a write queued behind a held lock).
    let may_follow = |change: &Change<'_>, other: &HistoryEntry| match other.revision {
        Some(revision) => revision > change.revision,
        None => true,
    };
    changes
        .iter()
        .filter(|change| {
            let key = change.entry.key.as_str();
            let rewritten = by_key.get(key).is_some_and(|entries| {
                entries.iter().any(|other| {
                    other.revision != Some(change.revision) && may_follow(change, other)
                })
            });
            let swept = prefix_deletes
                .iter()
                .any(|delete| key.starts_with(delete.key.as_str()) && may_follow(change, delete));
            !rewritten && !swept
        })
        .map(|change| (change.entry.key.as_str(), change.revision))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(op: Op, key: &str, value: Option<&str>, revision: i64) -> HistoryEntry {
        HistoryEntry {
            client: 0,
            op,
            key: key.to_owned(),
            value: value.map(str::to_owned),
            expected: None,
            revision: Some(revision),
            invoke_us: 0,
            complete_us: 1,
            outcome: HistoryOutcome::Ok,
            error: None,
            node: None,
            deleted: None,
            txn: None,
            idempotency_key: None,
            retry: false,
            at_revision: None,
        }
    }

    fn put(key: &str, value: &str, revision: i64) -> Item {
        Item::Put {
            key: key.into(),
            revision,
            value: Some(value.into()),
        }
    }

    fn delete(key: &str, revision: i64) -> Item {
        Item::Delete {
            key: key.into(),
            revision,
        }
    }

    fn stream(chain: u64, after: i64, items: Vec<Item>, ended: Ending) -> WatchRecord {
        WatchRecord::Stream {
            watcher: 0,
            chain,
            after,
            items,
            ended,
            opened_us: 0,
            ended_us: 0,
        }
    }

    fn history() -> Vec<HistoryEntry> {
        vec![
            write(Op::Put, "k/a", Some("a1"), 11),
            write(Op::Put, "k/b", Some("b1"), 12),
            write(Op::Delete, "k/a", None, 13),
            write(Op::Cas, "k/b", Some("b2"), 14),
        ]
    }

    fn everything() -> Vec<Item> {
        vec![
            put("k/a", "a1", 11),
            put("k/b", "b1", 12),
            delete("k/a", 13),
            put("k/b", "b2", 14),
            Item::Progress { revision: 14 },
        ]
    }

    #[test]
    fn a_stream_with_every_change_in_order_passes() {
        let verdict = judge(&history(), &[stream(0, 10, everything(), Ending::Drained)]);
        assert_eq!(verdict.violations, 0, "{:?}", verdict.examples);
        assert_eq!((verdict.judged, verdict.events), (4, 4));
    }

    #[test]
    fn a_replay_that_skips_a_superseded_change_passes() {
        // A replay sends each key's latest state: b1 at 12 is superseded by b2 at 14.
        let items = vec![
            delete("k/a", 13),
            put("k/b", "b2", 14),
            Item::Progress { revision: 14 },
        ];
        let verdict = judge(&history(), &[stream(0, 10, items, Ending::Drained)]);
        assert_eq!(verdict.violations, 0, "{:?}", verdict.examples);
    }

    #[test]
    fn a_lost_delete_is_found() {
        // Issue 47 item 4: a compaction mid-replay purged a tombstone the replay then missed.
        let items = vec![put("k/b", "b2", 14), Item::Progress { revision: 14 }];
        let verdict = judge(&history(), &[stream(0, 10, items, Ending::Drained)]);
        let text = verdict.examples.join("\n");
        assert_eq!(verdict.violations, 2, "{text}");
        assert!(text.contains("put of k/a at revision 11"), "{text}");
        assert!(text.contains("delete of k/a at revision 13"), "{text}");
    }

    #[test]
    fn a_change_above_every_progress_is_not_judged_and_a_notice_ends_a_chain_cleanly() {
        // Chain 0 was told it was compacted after 11; nothing it missed counts against it.
        // Chain 1 starts at the compact revision, 12, and catches up.
        let records = [
            stream(0, 10, vec![put("k/a", "a1", 11)], Ending::Compacted),
            WatchRecord::Compaction {
                revision: 12,
                at_us: 5,
            },
            stream(
                1,
                12,
                vec![
                    delete("k/a", 13),
                    put("k/b", "b2", 14),
                    Item::Progress { revision: 14 },
                ],
                Ending::Drained,
            ),
        ];
        let verdict = judge(&history(), &records);
        assert_eq!(verdict.violations, 0, "{:?}", verdict.examples);
        assert_eq!(
            (verdict.chains, verdict.judged, verdict.compacted_notices),
            (2, 2, 1)
        );
    }

    #[test]
    fn a_resumed_chain_is_judged_as_one() {
        let records = [
            stream(0, 10, vec![put("k/a", "a1", 11)], Ending::Dropped),
            stream(
                0,
                11,
                vec![
                    put("k/b", "b1", 12),
                    delete("k/a", 13),
                    put("k/b", "b2", 14),
                ],
                Ending::Broken,
            ),
            stream(
                0,
                14,
                vec![Item::Progress { revision: 14 }],
                Ending::Drained,
            ),
        ];
        let verdict = judge(&history(), &records);
        assert_eq!(verdict.violations, 0, "{:?}", verdict.examples);
        assert_eq!(verdict.judged, 4);
    }

    #[test]
    fn a_busy_stream_without_progress_still_owes_each_keys_last_change() {
        // No progress event: only the keys' last changes (k/a's delete at 13, k/b's at 14)
        // are owed, up to the last revision known complete (14: the event at 15 came after).
        let mut history = history();
        history.push(write(Op::Put, "k/c", Some("c1"), 15));
        let records = [stream(
            0,
            10,
            vec![
                put("k/a", "a1", 11),
                put("k/b", "b1", 12),
                put("k/b", "b2", 14),
                put("k/c", "c1", 15),
            ],
            Ending::Dropped,
        )];
        let verdict = judge(&history, &records);
        assert_eq!(verdict.violations, 1, "{:?}", verdict.examples);
        assert!(verdict.examples[0].contains("delete of k/a at revision 13, the key's last change"));
        assert_eq!(verdict.judged, 2);
        // A key written again afterwards (or perhaps: an unknown outcome) owes nothing here.
        let mut unknown = write(Op::Put, "k/a", Some("a2"), 0);
        unknown.revision = None;
        unknown.outcome = HistoryOutcome::Unknown;
        history.push(unknown);
        assert_eq!(judge(&history, &records).violations, 0);
    }

    #[test]
    fn an_old_value_at_a_new_revision_and_a_delete_no_write_made_are_found() {
        // a1 was acknowledged at 11: at 15 it is an old value sent again. No delete of k/b
        // was ever sent, and no prefix delete.
        let mut history = history();
        history.push(write(Op::Put, "k/c", Some("c1"), 15));
        let items = vec![
            put("k/a", "a1", 15),
            delete("k/b", 16),
            Item::Progress { revision: 16 },
        ];
        let verdict = judge(&history, &[stream(0, 13, items, Ending::Drained)]);
        let text = verdict.examples.join("\n");
        assert!(
            text.contains("put of k/a = \"a1\" at revision 15, a value no write of an unknown"),
            "{text}"
        );
        assert!(
            text.contains("delete of k/b at revision 16, which no delete"),
            "{text}"
        );
        // An unknown outcome's value may land at any revision, and a prefix delete whose
        // outcome is unknown may have deleted k/b.
        let mut unknown = write(Op::Put, "k/a", Some("a9"), 0);
        unknown.revision = None;
        unknown.outcome = HistoryOutcome::Unknown;
        let mut sweep = write(Op::DeletePrefix, "k/", None, 0);
        sweep.revision = None;
        sweep.outcome = HistoryOutcome::Unknown;
        history.extend([unknown, sweep]);
        let items = vec![put("k/a", "a9", 17), delete("k/b", 18)];
        let verdict = judge(&history, &[stream(0, 16, items, Ending::Dropped)]);
        // Nothing judged for completeness here (no progress, no key's last change), which is
        // a problem of its own; the events themselves are right.
        assert_eq!(verdict.violations, 1, "{:?}", verdict.examples);
        assert!(verdict.examples[0].contains("nothing was judged"));
    }

    #[test]
    fn the_compact_revision_is_read_from_a_notice() {
        let (records, _) = tokio::sync::mpsc::unbounded_channel();
        let shared = Shared {
            client: kg_api::Client::new("http://127.0.0.1:1").unwrap(),
            prefix: "k/".into(),
            load: WatchLoad::drill(),
            origin: Instant::now(),
            start: 1,
            seen: AtomicI64::new(1),
            compacted: AtomicI64::new(0),
            replay_opened: tokio::sync::Notify::new(),
            drain_started: std::sync::OnceLock::new(),
            records,
        };
        shared.learn_compacted(
            "this watch was compacted: it had every change up to revision 40, and deletes up \
             to revision 812 have been purged since; list the keys again",
        );
        assert_eq!(shared.floor(), 812);
        shared.learn_compacted("revision 3 is compacted: deletes up to revision 900 are gone");
        assert_eq!(shared.floor(), 900);
        shared.learn_compacted("no number here");
        assert_eq!(shared.floor(), 900);
    }

    #[test]
    fn a_prefix_deletes_revision_holds_only_its_deletes() {
        let mut history = history();
        let mut sweep = write(Op::DeletePrefix, "k/", None, 15);
        sweep.deleted = Some(1);
        history.push(sweep);
        let right = vec![
            put("k/b", "b2", 14),
            delete("k/b", 15),
            Item::Progress { revision: 15 },
        ];
        let verdict = judge(&history, &[stream(0, 13, right, Ending::Drained)]);
        assert_eq!(verdict.violations, 0, "{:?}", verdict.examples);
        let wrong = vec![
            delete("k/a", 15),
            delete("k/b", 15),
            put("k/c", "c1", 15),
            Item::Progress { revision: 15 },
        ];
        let verdict = judge(&history, &[stream(0, 14, wrong, Ending::Drained)]);
        let text = verdict.examples.join("\n");
        assert!(
            text.contains("more than 1 delete(s) at revision 15"),
            "{text}"
        );
        assert!(
            text.contains("k/c at revision 15, the revision of a prefix delete"),
            "{text}"
        );
    }

    #[test]
    fn revisions_that_go_back_or_repeat_are_found() {
        let items = vec![
            put("k/b", "b1", 12),
            put("k/a", "a1", 11),
            delete("k/a", 13),
            delete("k/a", 13),
            put("k/b", "b2", 14),
            Item::Progress { revision: 14 },
            put("k/b", "b2", 14),
        ];
        let verdict = judge(&history(), &[stream(0, 10, items, Ending::Drained)]);
        let text = verdict.examples.join("\n");
        assert_eq!(verdict.violations, 3, "{text}");
        assert!(
            text.contains("k/a at revision 11 after revision 12"),
            "{text}"
        );
        assert!(text.contains("k/a twice at revision 13"), "{text}");
        assert!(text.contains("at or below revision 14"), "{text}");
    }

    #[test]
    fn an_event_no_write_made_is_found() {
        let mut items = everything();
        items.insert(4, put("k/c", "never", 15));
        items.insert(0, delete("k/b", 12));
        let verdict = judge(&history(), &[stream(0, 10, items, Ending::Drained)]);
        let text = verdict.examples.join("\n");
        assert!(
            text.contains("a value no write of an unknown outcome wrote"),
            "{text}"
        );
        assert!(
            text.contains("delete of k/b at revision 12, where the load's put"),
            "{text}"
        );
    }

    #[test]
    fn watchers_that_never_caught_up_judged_nothing_and_fail() {
        let verdict = judge(
            &history(),
            &[stream(0, 10, vec![put("k/a", "a1", 11)], Ending::Undrained)],
        );
        assert_eq!((verdict.judged, verdict.undrained), (0, 1));
        assert_eq!(verdict.violations, 1);
    }
}
