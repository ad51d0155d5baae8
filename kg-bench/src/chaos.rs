//! `kg-bench chaos`: the fault drills as scenarios over the fault runtime. Each fault runs
//! under kg-bench's own load (its history recorded), is injected 2 s in as a list of steps,
//! and is judged afterwards against what the store holds: lost acknowledged writes, stale
//! reads, linearizability, and for the PostgreSQL faults a clean (503 only) and quick
//! recovery.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::fault::{Action, Member, Runtime, Step};
use crate::history;
use crate::judge::{self, Expectations, Judgement, RunCounts, StoreState, StoredKey};
use crate::run::{self, RunOptions, Target};
use crate::stats::Report;
use crate::untouched;
use crate::workload::{KeyDist, ValueSize, DEFAULT_KEY_PREFIX};

/// Every fault, in the order a full run takes them.
pub const FAULTS: [&str; 8] = [
    "kill",
    "pause",
    "redis-restart",
    "redis-flush",
    "pg-restart",
    "pg-down",
    "pg-lock-revision",
    "pg-lock-table",
];

/// The faults of the replicated data tier (`scripts/start.sh --ha`, through scripts/ha.sh).
pub const HA_FAULTS: [&str; 8] = [
    "pg-primary-kill",
    "pg-primary-pause",
    "pg-zombie",
    "pg-switchover",
    "redis-master-kill",
    "etcd-member-kill",
    "pg-async-kill",
    "pg-zombie-control",
];

/// The network faults between the hosts of `scripts/start.sh --hosts`, through scripts/net.sh
/// (beside scripts/ha.sh, the runtime's script); each heals at its end.
pub const HOSTS_FAULTS: [&str; 7] = [
    "pg-leader-isolated",
    "pg-leader-cut-from-dcs",
    "node-cut-from-redis",
    "node-cut-from-pg",
    "redis-master-isolated",
    "zone-minority",
    "flaky-links",
];

/// How long a network fault that takes a failover holds: past Patroni's ttl, so that the
/// failover happens inside it, with room for its promotion.
const NET_FAILOVER_HOLD: Duration = Duration::from_secs(30);
/// How long the other network faults hold.
const NET_HOLD: Duration = Duration::from_secs(15);
/// Requests must succeed again this soon after `heal` (the issue's bound; its aim is 5 s).
const AFTER_HEAL: Duration = Duration::from_secs(10);

/// Patroni's ttl in scripts/ha.sh: the leader key outlives its last renewal by this much, so
/// a failover takes about this long. Patroni 3.2 and later accept no less.
const PATRONI_TTL: Duration = Duration::from_secs(20);

/// The zombie drill's pause: the leader's key has expired and another member leads well
/// before it wakes (ttl + 6 s, as the report of the lost writes had it).
const PG_PAUSE: Duration = Duration::from_secs(26);

/// A paused leader: its ttl runs out, another member leads, and the paused one wakes up to
/// find itself deposed; the bound counts from the pause, so it takes in the pause itself,
/// the wake-up, and room for a loaded machine.
const PG_PAUSE_BOUND: Duration = Duration::from_secs(45);

/// No request may fail later than this after the PostgreSQL leader dies: Patroni's ttl, the
/// promotion, a synchronous standby for the new leader, and the node's database timeout for
/// the requests queued meanwhile, with room for a loaded machine. The measured times are in
/// docs/high-availability.md.
const PG_FAILOVER_BOUND: Duration = Duration::from_secs(35);

/// Writes must be acknowledged again this soon after the PostgreSQL leader dies: the data
/// tier's target (issue 45). A write held until the new leader has a synchronous standby
/// fails nothing while it waits, so the last failure alone would not show it.
const PG_WRITES_BACK: Duration = Duration::from_secs(30);

/// After the deterministic zombie wakes (the repair), requests may fail only this long: it
/// finds itself deposed and demotes, and no client was on it.
const PG_ZOMBIE_RECOVERY: Duration = Duration::from_secs(10);

/// How long after the leader key must have expired a killed leader is started again.
const AFTER_TTL: Duration = Duration::from_secs(10);

/// The load of a drill whose fault takes a failover must outlast the failover, the wake-up
/// or the repair, and show the store serving again after it.
const FAILOVER_LOAD: Duration = Duration::from_secs(50);

/// Keys of the data tier's drills, and of the others.
const HA_KEYS: u64 = 50;
const KEYS: u64 = 10;

/// The data tier's drills spread their load over at least a key per this many requests a
/// second. A failover of Patroni's ttl leaves every request sent meanwhile with an unknown
/// outcome, and what the linearizability search pays for is how many of them one key has:
/// at 100 requests/s over 50 keys each key's history is decided, at 200 over 50 many were
/// not (26 of 50 undecided in a pg-primary-kill run); over 100 they are as at 100 over 50.
const HA_RATE_PER_KEY: f64 = 2.0;

/// The share of reads of untouched keys a database fault must leave answered.
const UNTOUCHED_BAR: f64 = 0.999;

/// How long the load runs before the fault, so that the history has a healthy start.
const BEFORE_FAULT: Duration = Duration::from_secs(2);
/// A PostgreSQL fault must stop failing requests this soon after its repair.
const PG_MAX_RECOVERY: Duration = Duration::from_secs(2);

/// A switchover is over when Patroni names the new leader, but HAProxy sees the change only
/// at its next checks (every 500 ms, two failed to mark the old leader down: scripts/ha.sh),
/// and a request sent before it does waits out the node's database timeout (2 s) before its
/// 503. Under synchronous_mode_strict the new leader commits nothing until it has a
/// synchronous standby again: the old leader restarted as its replica, or the third member
/// named at Patroni's next loop. Until then every write and fenced read waits out that
/// timeout too. The bound is the three added, with room for a loaded machine.
const PG_SWITCHOVER_BOUND: Duration = Duration::from_secs(10);

/// A fault: its steps, and what its verdict asks beyond the judges' own bars.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: String,
    pub steps: Vec<Step>,
    pub allowed_errors: Option<Vec<String>>,
    pub max_recovery: Option<Duration>,
    /// The step whose end counts as the repair, from which recovery is measured; the last
    /// step when `None`.
    pub repair_step: Option<usize>,
    /// Keys the load spreads over. A failover leaves hundreds of writes with an unknown
    /// outcome, each of which the linearizability search may place anywhere: spread over few
    /// keys they are too many per key for the search to finish (it answers undecided).
    pub keys: u64,
    /// A negative control, with what makes it lose writes: the fault must lose acknowledged
    /// writes, and the drill passes only when the judge finds them (and so fails the run).
    pub control: Option<&'static str>,
    /// The least share of reads of untouched keys (see [`crate::untouched`]) that must be
    /// answered from the fault to the last failed request or the first write acknowledged
    /// again, whichever is later. Every drill makes such reads, and fails on a wrong answer
    /// whatever this says.
    pub untouched_bar: Option<f64>,
    /// The longest the run may go after the repair without acknowledging a write.
    pub max_write_gap: Option<Duration>,
    /// The least the load runs, whatever the run's duration: a failover must fit in it.
    pub min_load: Duration,
    /// Whether the keys grow with the rate (see `keys_at`).
    pub keys_grow_with_rate: bool,
}

impl Scenario {
    /// A fault judged by the judges' own bars only, over the drills' few keys.
    fn new(name: &str, steps: Vec<Step>) -> Self {
        Scenario {
            name: name.to_owned(),
            steps,
            allowed_errors: None,
            max_recovery: None,
            repair_step: None,
            keys: KEYS,
            control: None,
            untouched_bar: None,
            max_write_gap: None,
            min_load: Duration::ZERO,
            keys_grow_with_rate: false,
        }
    }

    /// How long the load runs when asked for `duration`.
    pub fn load_duration(&self, duration: Duration) -> Duration {
        duration.max(self.min_load)
    }

    /// A fault that takes a failover: the load outlasts it (see `FAILOVER_LOAD`).
    fn through_a_failover(mut self) -> Self {
        self.min_load = FAILOVER_LOAD;
        self
    }

    /// While the database cannot take writes, the cache still answers reads of keys no write
    /// touched: 99.9% of them, the data tier's target.
    fn serving_untouched_keys(mut self) -> Self {
        self.untouched_bar = Some(UNTOUCHED_BAR);
        self
    }

    /// See `control`: `premise` says why the fault must lose writes.
    fn negative_control(mut self, premise: &'static str) -> Self {
        self.control = Some(premise);
        self
    }

    /// Whether the drill passed: the verdict passed, or for a negative control, the judge
    /// found lost writes.
    pub fn passed(&self, verdict: &Judgement) -> bool {
        if self.control.is_some() {
            verdict.lost_acknowledged_writes.unwrap_or(0) > 0
        } else {
            verdict.passed
        }
    }

    /// Requests may fail only as 503 (a JSON detail), and none later than `bound` after the
    /// repair.
    fn only_503s_until(mut self, bound: Duration) -> Self {
        self.allowed_errors = Some(vec!["status_503".to_owned()]);
        self.max_recovery = Some(bound);
        self
    }

    /// Writes must be acknowledged again within `bound` of the repair.
    fn writes_back_within(mut self, bound: Duration) -> Self {
        self.max_write_gap = Some(bound);
        self
    }

    /// No request may fail at all.
    fn without_errors(mut self) -> Self {
        self.allowed_errors = Some(Vec::new());
        self
    }

    /// Recovery counted from the end of the first step: for a fault that repairs itself (a
    /// failover), whatever the later steps do.
    fn repaired_at_first_step(mut self) -> Self {
        self.repair_step = Some(0);
        self
    }

    /// The data tier's faults: a load over more keys (see `keys`), and more as the rate
    /// grows (see `HA_RATE_PER_KEY`).
    fn over_many_keys(mut self) -> Self {
        self.keys = HA_KEYS;
        self.keys_grow_with_rate = true;
        self
    }

    /// The keys the load spreads over at `rate` requests a second.
    pub fn keys_at(&self, rate: f64) -> u64 {
        if !self.keys_grow_with_rate {
            return self.keys;
        }
        // A finite, positive rate: kg-bench chaos refuses any other.
        let by_rate = (rate / HA_RATE_PER_KEY).ceil();
        if by_rate.is_finite() && by_rate > self.keys as f64 {
            by_rate as u64
        } else {
            self.keys
        }
    }
}

/// The scenario of fault `name`, acting on `node` where it acts on a node.
pub fn scenario(name: &str, node: &Member) -> Result<Scenario, String> {
    let wait = |ms| Step::Wait(Duration::from_millis(ms));
    let role = |name: &str| Member::Node(name.to_owned());
    // A fault, a wait, and its repair: the member comes back.
    let outage = |down: Action, member: Member, ms, up: Action| {
        vec![
            Step::Do(down, member.clone()),
            wait(ms),
            Step::Do(up, member),
        ]
    };
    let scenario = match name {
        // A crash of the node nginx sends writes to first, and its start 3 s later.
        "kill" => Scenario::new(
            name,
            outage(Action::Kill, node.clone(), 3000, Action::Start),
        ),
        // Past nginx's 5 s read timeout: requests in flight on it time out.
        "pause" => Scenario::new(
            name,
            outage(Action::Pause, node.clone(), 7000, Action::Resume),
        ),
        // Persistence is off: Redis comes back empty.
        "redis-restart" => Scenario::new(
            name,
            outage(Action::Stop, Member::Redis, 1000, Action::Start),
        ),
        "redis-flush" => Scenario::new(name, vec![Step::Do(Action::Flush, Member::Redis)]),
        "pg-restart" => Scenario::new(
            name,
            vec![
                Step::Do(Action::Kill, Member::Postgres),
                Step::Do(Action::Start, Member::Postgres),
            ],
        )
        .only_503s_until(PG_MAX_RECOVERY)
        .serving_untouched_keys(),
        "pg-down" => Scenario::new(
            name,
            outage(Action::Kill, Member::Postgres, 3000, Action::Start),
        )
        .only_503s_until(PG_MAX_RECOVERY)
        .serving_untouched_keys(),
        // Faults inside the database's timing: another session holds a lock for 3 s, past
        // the nodes' 2 s --db-timeout. Writes (and, under the table lock, reads that miss the
        // cache) wait, are answered 503, and the writes already sent commit when the lock is
        // let go: their answer is lost after they landed, an unknown outcome to the judges.
        "pg-lock-revision" => Scenario::new(
            name,
            outage(Action::LockRevision, Member::Postgres, 3000, Action::Unlock),
        )
        .only_503s_until(PG_MAX_RECOVERY)
        .serving_untouched_keys(),
        "pg-lock-table" => Scenario::new(
            name,
            outage(Action::LockTable, Member::Postgres, 3000, Action::Unlock),
        )
        .only_503s_until(PG_MAX_RECOVERY)
        .serving_untouched_keys(),
        // The leader's postmaster and Patroni die together; a standby is promoted once the
        // leader key expires. The old leader comes back (as a replica) once its key has
        // expired for sure: started earlier, it would find its own key and lead again, and
        // there would be no failover to judge. The bound counts from the kill: nothing may
        // fail later than this after it.
        "pg-primary-kill" => Scenario::new(
            name,
            outage(
                Action::Kill,
                role("pg-leader"),
                millis(PATRONI_TTL + AFTER_TTL),
                Action::Start,
            ),
        )
        .only_503s_until(PG_FAILOVER_BOUND)
        .writes_back_within(PG_WRITES_BACK)
        .repaired_at_first_step()
        .over_many_keys()
        .through_a_failover()
        .serving_untouched_keys(),
        // The zombie primary: the leader's Patroni, postmaster and backends stopped for longer
        // than Patroni's ttl, so that another member leads while the old one still holds
        // sessions, and wakes up believing for a moment that it leads. No read may be stale,
        // no acknowledged write lost. Where in its loop the pause lands is chance: pg-zombie
        // lands it in the one place that lost writes on Patroni 3.0.2.
        "pg-primary-pause" => Scenario::new(
            name,
            outage(
                Action::Pause,
                role("pg-leader"),
                millis(PG_PAUSE),
                Action::Resume,
            ),
        )
        .only_503s_until(PG_PAUSE_BOUND)
        .writes_back_within(PG_PAUSE_BOUND)
        .repaired_at_first_step()
        .over_many_keys()
        .through_a_failover()
        .serving_untouched_keys(),
        // The deterministic zombie: the leader frozen inside its leader-key update (with its
        // postmaster) until another member leads and has committed writes, then woken there,
        // with the cluster view it had before the freeze. Patroni 3.0.2 then overwrote the new
        // leader's key and took the cluster back on its old timeline, losing every write of
        // the new one; a fixed Patroni finds the key taken and demotes.
        "pg-zombie" => zombie(name).serving_untouched_keys(),
        // The same against Debian's Patroni 3.0.2 (`KG_HA_PATRONI=debian`): it must lose the
        // new leader's writes, and the judge must say so.
        "pg-zombie-control" => {
            zombie(name).negative_control("Patroni 3.0.2 took the leader key back")
        }
        // A planned change of leader (patronictl switchover) under load.
        "pg-switchover" => {
            Scenario::new(name, vec![Step::Do(Action::Switchover, Member::Postgres)])
                .only_503s_until(PG_SWITCHOVER_BOUND)
                .writes_back_within(PG_SWITCHOVER_BOUND)
                .over_many_keys()
                .serving_untouched_keys()
        }
        // Sentinel promotes the replica; the nodes read from the database meanwhile, so no
        // request may fail at all.
        "redis-master-kill" => Scenario::new(
            name,
            outage(Action::Kill, role("redis-master"), 5000, Action::Start),
        )
        .without_errors()
        .over_many_keys(),
        // etcd's leader dies: the other two elect another within an election timeout, and
        // Patroni's leader renews its key through them well inside its ttl, so nothing a client
        // sees may change: no request may fail.
        "etcd-member-kill" => Scenario::new(
            name,
            outage(Action::Kill, role("etcd-leader"), 5000, Action::Start),
        )
        .without_errors()
        .over_many_keys(),
        // The negative control: pg-primary-kill with synchronous replication off and the
        // leader's WAL senders stopped for 4 s before the kill, so that the writes the leader
        // acknowledges meanwhile reach no standby and die with it (the kill takes the stopped
        // senders too). The old leader rejoins (pg_rewind drops what it alone had), and
        // synchronous replication is turned back on for the drills after it.
        "pg-async-kill" => {
            let leader = role("pg-leader");
            Scenario::new(
                name,
                vec![
                    Step::Do(Action::Async, Member::Postgres),
                    Step::Do(Action::Pause, role("pg-walsenders")),
                    wait(4000),
                    Step::Do(Action::Kill, leader.clone()),
                    wait(millis(PATRONI_TTL + AFTER_TTL)),
                    Step::Do(Action::Start, leader),
                    Step::Do(Action::Sync, Member::Postgres),
                ],
            )
            .over_many_keys()
            .through_a_failover()
            .negative_control("synchronous replication was off")
        }
        other => match hosts_scenario(other) {
            Some(scenario) => scenario,
            None => {
                return Err(format!(
                    "unknown fault {other:?} (the faults are {}; with --ha also {}; with --hosts also {})",
                    FAULTS.join(", "),
                    HA_FAULTS.join(", "),
                    HOSTS_FAULTS.join(", ")
                ))
            }
        },
    };
    Ok(scenario)
}

/// A fault named more than once runs once per mention; its second and later runs are named
/// `NAME#2`, `NAME#3`, ..., so that each keeps its own files and verdict.
fn number_repeats(scenarios: &mut [Scenario]) {
    let mut seen: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for scenario in scenarios {
        let count = seen.entry(scenario.name.clone()).or_insert(0);
        *count += 1;
        if *count > 1 {
            scenario.name = format!("{}#{count}", scenario.name);
        }
    }
}

/// The network fault `name` of `start.sh --hosts`: a cut, a slow or lossy link, held and
/// healed; `None` for a name that is not one.
fn hosts_scenario(name: &str) -> Option<Scenario> {
    let held =
        |fault: &str, hold: Duration| vec![Step::net(fault), Step::Wait(hold), Step::net("heal")];
    let scenario = match name {
        // The PostgreSQL leader's host cut from every other host: a standby takes over once
        // the leader key expires; the old leader, cut from etcd and from every member, demotes
        // itself. Only 503s, writes back within the failover bound, all back after the heal.
        "pg-leader-isolated" => Scenario::new(name, held("isolate pg-leader", NET_FAILOVER_HOLD))
            .only_503s_until(PG_FAILOVER_BOUND)
            .writes_back_within(PG_WRITES_BACK)
            .repaired_at_first_step()
            .through_a_failover(),
        // The leader cut from every etcd member but not from the nodes or the standbys: where
        // Patroni's failsafe mode (the leader keeps leading while it reaches every member) and
        // the nodes' read fence meet.
        "pg-leader-cut-from-dcs" => Scenario::new(
            name,
            held("partition pg-leader / etcd1,etcd2,etcd3", NET_FAILOVER_HOLD),
        )
        .only_503s_until(PG_FAILOVER_BOUND)
        .writes_back_within(PG_WRITES_BACK)
        .repaired_at_first_step()
        .through_a_failover(),
        // One node loses Redis and its Sentinels; it keeps the database. No read anywhere
        // may be stale because of the writes it made meanwhile.
        "node-cut-from-redis" => Scenario::new(
            name,
            held(
                "partition n1 / redis1,redis2,sentinel1,sentinel2,sentinel3",
                NET_HOLD,
            ),
        )
        .only_503s_until(AFTER_HEAL),
        // One node loses every PostgreSQL host (its sidecar's too).
        "node-cut-from-pg" => Scenario::new(name, held("partition n1 / pg1,pg2,pg3", NET_HOLD))
            .only_503s_until(AFTER_HEAL),
        // The Redis master cut from the Sentinels, its replica and two nodes, still reached
        // by n1: the Sentinels promote the replica while n1 keeps writing cache entries and
        // marks to the old master.
        "redis-master-isolated" => Scenario::new(
            name,
            held(
                "partition redis-master / redis-replicas,sentinel1,sentinel2,sentinel3,n2,n3",
                NET_HOLD,
            ),
        )
        .only_503s_until(AFTER_HEAL),
        // A zone without the PostgreSQL leader cut from the other two.
        "zone-minority" => Scenario::new(
            name,
            held(
                "partition zone-without-pg-leader / zones-with-pg-leader",
                NET_FAILOVER_HOLD,
            ),
        )
        .only_503s_until(AFTER_HEAL)
        .through_a_failover(),
        // 5% loss and 20 ms +/- 10 ms on every link, for the whole load.
        "flaky-links" => Scenario::new(
            name,
            vec![
                Step::net("loss all 5"),
                Step::net("delay all 20 10"),
                Step::Wait(NET_FAILOVER_HOLD),
                Step::net("heal"),
            ],
        )
        .through_a_failover(),
        _ => return None,
    };
    Some(scenario.over_many_keys().serving_untouched_keys())
}

/// The nemesis: for `duration`, the network faults of the --hosts drills one after another in
/// an order, on hosts and for times drawn from `seed`, each healed and followed by a rest, all
/// under one load judged once at the end. The same seed gives the same schedule, so that a
/// failure can be replayed.
pub fn nemesis(duration: Duration, seed: u64) -> Scenario {
    let mut rng = fastrand::Rng::with_seed(seed);
    let node = |rng: &mut fastrand::Rng| format!("n{}", rng.u8(1..=3));
    let mut steps = Vec::new();
    let mut planned = Duration::ZERO;
    while planned < duration {
        let (fault, hold): (Vec<String>, Duration) = match rng.u8(0..7) {
            0 => (vec!["isolate pg-leader".into()], NET_FAILOVER_HOLD),
            1 => (
                vec!["partition pg-leader / etcd1,etcd2,etcd3".into()],
                NET_FAILOVER_HOLD,
            ),
            2 => (
                vec![format!(
                    "partition {} / redis1,redis2,sentinel1,sentinel2,sentinel3",
                    node(&mut rng)
                )],
                Duration::from_secs(rng.u64(5..=20)),
            ),
            3 => (
                vec![format!("partition {} / pg1,pg2,pg3", node(&mut rng))],
                Duration::from_secs(rng.u64(5..=20)),
            ),
            4 => (
                vec![
                    "partition redis-master / redis-replicas,sentinel1,sentinel2,sentinel3,n2,n3"
                        .into(),
                ],
                Duration::from_secs(rng.u64(5..=20)),
            ),
            5 => (
                vec!["partition zone-without-pg-leader / zones-with-pg-leader".into()],
                NET_FAILOVER_HOLD,
            ),
            _ => (
                vec![
                    format!("loss all {}", rng.u8(1..=5)),
                    format!("delay all {} {}", rng.u8(5..=30), rng.u8(0..=10)),
                ],
                Duration::from_secs(rng.u64(10..=30)),
            ),
        };
        let rest = Duration::from_secs(rng.u64(5..=15));
        steps.extend(fault.iter().map(|words| Step::net(words)));
        steps.push(Step::Wait(hold));
        steps.push(Step::net("heal"));
        steps.push(Step::Wait(rest));
        planned += hold + rest;
    }
    let mut scenario = Scenario::new(&format!("nemesis-{seed}"), steps)
        .only_503s_until(AFTER_HEAL)
        .over_many_keys();
    // The load covers the schedule, and shows the store serving after its last heal.
    scenario.min_load = planned + AFTER_HEAL + BEFORE_FAULT;
    scenario
}

/// Milliseconds of `duration`, for a wait step.
fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// The deterministic zombie primary (`scripts/ha.sh zombie`): the step returns once another
/// member leads and has committed writes; the frozen leader wakes 2 s later, inside its
/// leader-key update. The repair is the wake-up.
fn zombie(name: &str) -> Scenario {
    let leader = Member::Node("pg-leader".to_owned());
    Scenario::new(
        name,
        vec![
            Step::Do(Action::Zombie, leader.clone()),
            Step::Wait(Duration::from_secs(2)),
            Step::Do(Action::Resume, leader),
        ],
    )
    .only_503s_until(PG_ZOMBIE_RECOVERY)
    .over_many_keys()
    .through_a_failover()
}

/// The load each fault runs under.
#[derive(Debug, Clone)]
pub struct Load {
    pub duration: Duration,
    pub rate: f64,
    /// Bearer token for nodes that require one: the load and the read-back both send it.
    pub token: Option<String>,
}

/// Runs `scenario` under `load` against `endpoint`, writing the history, kg-bench's report,
/// the store's state and the verdict to `out/NAME.{jsonl,json,state.json,verdict.json}`.
pub async fn run_fault(
    endpoint: &str,
    runtime: &Runtime,
    scenario: &Scenario,
    load: &Load,
    out: &Path,
) -> Result<Judgement, String> {
    let file = |suffix: &str| out.join(format!("{}.{suffix}", scenario.name));
    let client = kg_api::Client::with_options(
        endpoint,
        &kg_api::ClientOptions {
            timeout: Duration::from_secs(10),
            token: load.token.clone(),
        },
    )
    .map_err(|err| err.to_string())?;
    untouched::seed(&client).await?;
    let origin = Instant::now();
    // Watchers of the load's keys and a compactor that overtakes them, in every drill.
    let watch_path = crate::watchers::record_path(&file("jsonl"));
    let watching = crate::watchers::Watchers::start(
        client.clone(),
        DEFAULT_KEY_PREFIX,
        crate::watchers::WatchLoad::drill(),
        origin,
        &watch_path,
    )
    .await?;
    let options = RunOptions {
        targets: vec![Target::resolve(endpoint).await?],
        // Sequential clients: each history entry is one client's call, as the checker wants.
        concurrency: 8,
        rate: Some(load.rate),
        duration: Some(scenario.load_duration(load.duration)),
        requests: None,
        warmup: Duration::ZERO,
        // Every write path the nodes have: single keys, compare-and-swaps, prefix deletes
        // and transactions, each judged by every judge.
        mix: "get=38,put=35,cas=20,delete_prefix=2,txn=5".parse::<crate::workload::Mix>()?,
        keys: scenario.keys_at(load.rate),
        key_dist: KeyDist::Uniform,
        value_size: "128".parse::<ValueSize>()?,
        preload: false,
        // Longer than any fault, so that an answer that comes is recorded as such.
        timeout: Duration::from_secs(10),
        token: load.token.clone(),
        record: Some(file("jsonl")),
        progress: false,
        key_prefix: DEFAULT_KEY_PREFIX.to_owned(),
        stop: None,
        origin: Some(origin),
        retries: None,
    };
    let settings = serde_json::json!({"fault": scenario.name, "rate": load.rate});
    let load_task = tokio::spawn(run::run(options, settings));
    let (reader, until) = (
        client.clone(),
        origin + scenario.load_duration(load.duration),
    );
    let untouched_task =
        tokio::spawn(async move { untouched::read_until(&reader, origin, until).await });
    tokio::time::sleep_until((origin + BEFORE_FAULT).into()).await;
    let injected = runtime.run(&scenario.steps, origin).await;
    let (report, _) = load_task
        .await
        .map_err(|err| format!("the load failed: {err}"))??;
    let untouched_reads = untouched_task
        .await
        .map_err(|err| format!("the untouched keys' reader failed: {err}"))?;
    watching.finish().await?;
    let repaired = injected?;
    write_json(&file("json"), &report)?;

    let state = read_state(&client, DEFAULT_KEY_PREFIX).await?;
    write_json(&file("state.json"), &state)?;
    let history = history::read_history_file(&file("jsonl"))?;
    let expect = Expectations {
        repaired_at_s: scenario
            .repair_step
            .map_or_else(|| repaired.last(), |step| repaired.get(step))
            .map(Duration::as_secs_f64),
        allowed_errors: scenario.allowed_errors.clone(),
        max_recovery: scenario.max_recovery,
        max_write_gap: scenario.max_write_gap,
        state_limit: crate::check::DEFAULT_STATE_LIMIT,
        search_budget: None,
    };
    let mut verdict = judge::judge(
        &scenario.name,
        &history,
        Some(&state),
        Some(&counts(&report)),
        &expect,
    )?;
    verdict.judge_watchers(&history, &crate::watchers::read_records(&watch_path)?);
    verdict.negative_control = scenario.control.is_some();
    // From the fault to the load's last failure or its first write acknowledged again,
    // whichever is later: while the store could not take writes.
    let repaired_at = expect.repaired_at_s.unwrap_or(BEFORE_FAULT.as_secs_f64());
    let window = (
        BEFORE_FAULT.as_secs_f64(),
        repaired_at
            + verdict
                .recovery_s
                .unwrap_or(0.0)
                .max(verdict.write_gap_s.unwrap_or(0.0)),
    );
    verdict.judge_untouched(
        untouched::tally(&untouched_reads, window),
        scenario.untouched_bar,
    );
    write_json(&file("verdict.json"), &verdict)?;
    Ok(verdict)
}

fn counts(report: &Report) -> RunCounts {
    RunCounts {
        requests: report.requests,
        errors_by_kind: report.errors_by_kind.clone(),
        precondition_failed: report.precondition_failed,
    }
}

/// What the store holds under `prefix`, listed through the API with `client` (its token, if
/// the nodes want one) once it answers again (the listing reads the database, never the
/// cache).
pub async fn read_state(client: &kg_api::Client, prefix: &str) -> Result<StoreState, String> {
    let mut attempt = 0;
    let records = loop {
        match client.list_all(Some(prefix), kg_api::MAX_PAGE_SIZE).await {
            Ok(records) => break records,
            // Members may still be coming back from the fault.
            Err(_) if attempt < 40 => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(err) => return Err(format!("cannot read the keys back: {err}")),
        }
    };
    Ok(records
        .into_iter()
        .map(|record| {
            let stored = StoredKey {
                value: record.value,
                revision: record.mod_revision,
            };
            (record.key, stored)
        })
        .collect())
}

fn write_json(path: &PathBuf, value: &impl serde::Serialize) -> Result<(), String> {
    let json = serde_json::to_vec_pretty(value).map_err(|err| err.to_string())?;
    std::fs::write(path, json).map_err(|err| format!("cannot write {}: {err}", path.display()))
}

/// Runs every fault in turn, printing each verdict as it comes and the table at the end;
/// writes `out/summary.json`. Returns whether every fault passed.
pub async fn run_all(
    endpoint: &str,
    runtime: &Runtime,
    faults: &[String],
    node: &Member,
    load: &Load,
    out_dir: &Path,
    out: &mut dyn Write,
) -> Result<bool, String> {
    let scenarios = faults
        .iter()
        .map(|name| scenario(name, node))
        .collect::<Result<Vec<_>, _>>()?;
    run_scenarios(endpoint, runtime, scenarios, load, out_dir, out).await
}

/// Runs each scenario in turn, as [`run_all`] does for faults by name.
pub async fn run_scenarios(
    endpoint: &str,
    runtime: &Runtime,
    mut scenarios: Vec<Scenario>,
    load: &Load,
    out_dir: &Path,
    out: &mut dyn Write,
) -> Result<bool, String> {
    number_repeats(&mut scenarios);
    std::fs::create_dir_all(out_dir)
        .map_err(|err| format!("cannot create {}: {err}", out_dir.display()))?;
    let io = |err: std::io::Error| format!("cannot write the verdict: {err}");
    let mut verdicts = Vec::new();
    let mut passed = true;
    for scenario in &scenarios {
        let steps: Vec<String> = scenario.steps.iter().map(ToString::to_string).collect();
        writeln!(
            out,
            "==> {}: {:.0}s of load at {} req/s; {} s in: {}",
            scenario.name,
            scenario.load_duration(load.duration).as_secs_f64(),
            load.rate,
            BEFORE_FAULT.as_secs(),
            steps.join(", ")
        )
        .map_err(io)?;
        let started = Instant::now();
        let verdict = run_fault(endpoint, runtime, scenario, load, out_dir).await?;
        crate::report::print_judgements(out, std::slice::from_ref(&verdict)).map_err(io)?;
        if let Some(premise) = scenario.control {
            let lost = verdict.lost_acknowledged_writes.unwrap_or(0);
            if scenario.passed(&verdict) {
                writeln!(out, "negative control: the judge found the {lost} lost acknowledged write(s) it must find: PASS")
            } else {
                writeln!(out, "negative control: {premise}, yet the judge found no lost write: FAIL")
            }
            .map_err(io)?;
        }
        writeln!(
            out,
            "{} took {:.0} s",
            scenario.name,
            started.elapsed().as_secs_f64()
        )
        .map_err(io)?;
        passed &= scenario.passed(&verdict);
        verdicts.push(verdict);
    }
    writeln!(out, "\nall faults:").map_err(io)?;
    crate::report::print_judgements(out, &verdicts).map_err(io)?;
    write_json(&out_dir.join("summary.json"), &verdicts)?;
    writeln!(
        out,
        "histories, reports, states and verdicts in {}",
        out_dir.display()
    )
    .map_err(io)?;
    Ok(passed)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The negative control passes exactly when the judge finds a lost write, which fails
    /// the verdict; every other drill passes with its verdict.
    #[test]
    fn the_negative_control_passes_only_when_the_judge_sees_a_loss() {
        let n1: Member = "n1".parse().unwrap();
        let history = history::read_history(
            &br#"{"client":0,"op":"put","key":"k","value":"v1","revision":7,"invoke_us":0,"complete_us":10,"outcome":"ok"}"#[..],
        )
        .unwrap();
        let expect = Expectations {
            state_limit: crate::check::DEFAULT_STATE_LIMIT,
            ..Expectations::default()
        };
        let kept = StoreState::from([(
            "k".to_owned(),
            StoredKey {
                value: Some("v1".to_owned()),
                revision: 7,
            },
        )]);
        let clean = judge::judge("c", &history, Some(&kept), None, &expect).unwrap();
        let lost = judge::judge("c", &history, Some(&StoreState::new()), None, &expect).unwrap();
        assert!(clean.passed && !lost.passed);

        let control = scenario("pg-async-kill", &n1).unwrap();
        assert!(control.control.is_some());
        assert!(control.passed(&lost), "a loss is what the control must see");
        assert!(!control.passed(&clean), "no loss means the judge is blind");
        let shown: Vec<String> = control.steps.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "async postgres",
                "pause pg-walsenders",
                "wait 4000 ms",
                "kill pg-leader",
                "wait 30000 ms",
                "start pg-leader",
                "sync postgres"
            ]
        );
        let drill = scenario("pg-primary-kill", &n1).unwrap();
        assert!(drill.passed(&clean) && !drill.passed(&lost));

        // The table says what a control's verdict means, not a bare FAIL.
        let shown = |verdict: &Judgement| {
            let mut control = verdict.clone();
            control.negative_control = true;
            let mut text = Vec::new();
            crate::report::print_judgements(&mut text, &[control]).unwrap();
            String::from_utf8(text).unwrap()
        };
        assert!(
            shown(&lost).contains("FAIL (control: PASS)"),
            "{}",
            shown(&lost)
        );
        assert!(
            shown(&clean).contains("NO LOSS (control: FAIL)"),
            "{}",
            shown(&clean)
        );
    }

    /// The same seed gives the same schedule (a failure can be replayed), another seed another
    /// one; every fault is healed before the next, and the schedule fills the duration.
    #[test]
    fn the_nemesis_schedule_is_the_seeds_and_heals_every_fault() {
        let shown = |scenario: &Scenario| -> Vec<String> {
            scenario.steps.iter().map(ToString::to_string).collect()
        };
        let once = nemesis(Duration::from_secs(300), 42);
        assert_eq!(shown(&once), shown(&nemesis(Duration::from_secs(300), 42)));
        assert_ne!(shown(&once), shown(&nemesis(Duration::from_secs(300), 43)));
        let steps = shown(&once);
        let faults = steps
            .iter()
            .filter(|s| s.starts_with("net ") && *s != "net heal");
        let heals = steps.iter().filter(|s| *s == "net heal").count();
        assert!(heals >= 5, "{steps:?}");
        // Each fault group is followed by its wait and a heal before the next fault.
        for window in steps.windows(2) {
            if window[0] == "net heal" {
                assert!(window[1].starts_with("wait "), "{steps:?}");
            }
        }
        assert!(faults.count() >= heals);
        let held: Duration = once
            .steps
            .iter()
            .filter_map(|step| match step {
                Step::Wait(duration) => Some(*duration),
                _ => None,
            })
            .sum();
        assert!(held >= Duration::from_secs(300), "{held:?}");
        assert!(once.min_load > held);
    }

    #[test]
    fn a_fault_named_again_runs_again_under_a_numbered_name() {
        let n1: Member = "n1".parse().unwrap();
        let mut scenarios: Vec<Scenario> = ["pg-primary-pause", "kill", "pg-primary-pause"]
            .iter()
            .chain(&["pg-primary-pause"])
            .map(|name| scenario(name, &n1).unwrap())
            .collect();
        number_repeats(&mut scenarios);
        let names: Vec<&str> = scenarios.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "pg-primary-pause",
                "kill",
                "pg-primary-pause#2",
                "pg-primary-pause#3"
            ]
        );
    }

    #[test]
    fn every_fault_has_a_scenario_and_the_postgres_ones_have_their_bar() {
        let n1: Member = "n1".parse().unwrap();
        let failover = scenario("pg-primary-kill", &n1).unwrap();
        assert_eq!(
            (failover.repair_step, failover.max_recovery),
            (Some(0), Some(PG_FAILOVER_BOUND))
        );
        for name in ["redis-master-kill", "etcd-member-kill"] {
            let quiet = scenario(name, &n1).unwrap();
            assert_eq!(quiet.allowed_errors, Some(Vec::new()), "{name}");
        }
        let etcd = scenario("etcd-member-kill", &n1).unwrap();
        let shown: Vec<String> = etcd.steps.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            ["kill etcd-leader", "wait 5000 ms", "start etcd-leader"]
        );
        for name in HA_FAULTS {
            assert!(!scenario(name, &n1).unwrap().steps.is_empty(), "{name}");
        }
        assert!(HA_FAULTS
            .iter()
            .all(|name| scenario(name, &n1).unwrap().keys == HA_KEYS));
        assert_eq!(scenario("kill", &n1).unwrap().keys, KEYS);
        // The quick run's rate keeps the data tier's keys; twice the rate, twice the keys.
        let kill = scenario("pg-primary-kill", &n1).unwrap();
        assert_eq!((kill.keys_at(100.0), kill.keys_at(200.0)), (50, 100));
        assert_eq!(scenario("kill", &n1).unwrap().keys_at(400.0), KEYS);
        let pause = scenario("pg-primary-pause", &n1).unwrap();
        let shown: Vec<String> = pause.steps.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            ["pause pg-leader", "wait 26000 ms", "resume pg-leader"]
        );
        for name in FAULTS {
            let s = scenario(name, &n1).unwrap();
            assert!(!s.steps.is_empty(), "{name}");
            assert_eq!(s.max_recovery.is_some(), name.starts_with("pg-"), "{name}");
        }
        // Every fault that takes the database away while the cache stays must keep serving
        // the keys no write touched; the negative control is judged on its loss alone.
        for name in FAULTS.iter().chain(&HA_FAULTS) {
            let s = scenario(name, &n1).unwrap();
            let database = name.starts_with("pg-") && s.control.is_none();
            assert_eq!(s.untouched_bar.is_some(), database, "{name}");
        }
        // A failover takes Patroni's ttl: every drill through one runs its load long enough,
        // and a killed leader comes back only after its key has expired.
        for name in [
            "pg-primary-kill",
            "pg-primary-pause",
            "pg-zombie",
            "pg-async-kill",
            "pg-zombie-control",
        ] {
            let s = scenario(name, &n1).unwrap();
            assert!(
                s.load_duration(Duration::from_secs(1)) >= FAILOVER_LOAD,
                "{name}"
            );
        }
        let kill = scenario("pg-primary-kill", &n1).unwrap();
        assert_eq!(kill.steps[1], Step::Wait(PATRONI_TTL + AFTER_TTL));
        assert!(PG_PAUSE > PATRONI_TTL && PG_WRITES_BACK > PATRONI_TTL);
        let zombie = scenario("pg-zombie", &n1).unwrap();
        let shown: Vec<String> = zombie.steps.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            ["zombie pg-leader", "wait 2000 ms", "resume pg-leader"]
        );
        assert!(zombie.control.is_none());
        let control = scenario("pg-zombie-control", &n1).unwrap();
        assert_eq!(control.steps, zombie.steps);
        assert!(control.control.is_some());
        let kill = scenario("kill", &n1).unwrap();
        let shown: Vec<String> = kill.steps.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["kill n1", "wait 3000 ms", "start n1"]);
        let down = scenario("pg-down", &n1).unwrap();
        assert_eq!(down.allowed_errors, Some(vec!["status_503".to_owned()]));
        let err = scenario("meteor", &n1).unwrap_err();
        assert!(err.contains("unknown fault \"meteor\""), "{err}");
    }
}
