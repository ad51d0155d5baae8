//! kg-bench, a load tool for KeyGrid: what k6, oha and wrk2 do, plus what they cannot see
//! here: the node behind nginx that answered, cache hits, and per-operation latency.
//! `run` drives the load, `stats` measures, `threshold` judges and compares, `report` prints,
//! `history` is the recorded history, `check` tests it for linearizability and `judge` runs
//! every judge over it (lost writes, reused revisions, stale reads, recovery).

pub mod chaos;
pub mod check;
pub mod fault;
pub mod history;
pub mod html;
pub mod invariant;
pub mod judge;
pub mod lease_edges;
pub mod leases;
pub mod netem;
pub mod report;
pub mod run;
pub mod stats;
pub mod suite;
pub mod threshold;
pub mod untouched;
pub mod watchers;
pub mod workload;

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use kg_api::parse_duration;

use run::{RunOptions, Target};
use stats::Report;
use threshold::Threshold;
use workload::{KeyDist, Mix, ValueSize};

/// Exit code when a threshold fails (k6's convention).
pub const EXIT_THRESHOLD_FAILED: u8 = 99;
/// Exit code of a run in which every request failed (a dead endpoint, say).
pub const EXIT_ALL_FAILED: u8 = 1;

/// kg-bench: load-test KeyGrid and measure it honestly.
///
/// Closed model by default (--concurrency workers back to back); --rate switches to an open
/// model with latency measured from each request's scheduled start. Exit codes: 0 ok, 1
/// regression (compare), 2 usage or run error, 99 a threshold failed.
#[derive(Debug, Parser)]
#[command(
    name = "kg-bench",
    version,
    about,
    long_about,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Tool>,

    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Subcommand)]
pub enum Tool {
    /// Compare two JSON reports and flag regressions.
    Compare(CompareArgs),
    /// Check a `--record` history for linearizability, per key against a register; exits 1
    /// on a violation, 3 when the search gave up on a key.
    Check(CheckArgs),
    /// Judge a `--record` history: acknowledged writes lost (against --state, what the store
    /// holds afterwards), revisions handed out twice, stale reads, linearizability, and the
    /// time to recover from a fault. Exits 1 when the run misses a bar.
    Judge(JudgeArgs),
    /// The table of one scripts/bench.sh run: reads its raw outputs (kg-bench, wrk, pgbench,
    /// redis-benchmark), prints rates, latencies, ratios and targets, and writes them as JSON.
    /// Exits 1 when a row or baseline got errors or measured nothing.
    Summarize(SummarizeArgs),
    /// The fault drills against a running stack: each fault under load, injected through the
    /// fault runtime, then judged (lost writes, stale reads, linearizability; the PostgreSQL
    /// faults also on 503-only errors and a 2 s recovery). Exits 1 when a fault fails.
    Chaos(ChaosArgs),
    /// Grant many leases and keep each alive every third of its TTL, spread evenly, for a
    /// while: the background load of scripts/bench-leases.sh. Prints a JSON line once all
    /// are granted and one with the totals; exits 1 if any keep-alive failed.
    Leases(LeasesArgs),
    /// Load on keys whose short leases (1 to 3 s) end while it reads them: puts under a
    /// lease, keep-alives at gaps around the TTL, revokes, reads by GET and by transaction
    /// through the deadline. Records the history (`--record`) for `kg-bench judge`, prints
    /// the totals as JSON; exits 1 when a transaction's compare disagreed with its own get.
    LeaseEdges(LeaseEdgesArgs),
    /// Delay the packets netfilter queues (NFQUEUE) in network namespaces: scripts/net.sh's
    /// `delay`, where the kernel has no netem. Runs until killed; prints `ready` once the
    /// queue is bound in every namespace. Needs root.
    Netem(NetemArgs),
}

#[derive(Debug, Args)]
pub struct NetemArgs {
    /// The network namespaces (by `ip netns` name) whose queue to read.
    #[arg(long, value_delimiter = ',', required = true, value_name = "NS,...")]
    pub netns: Vec<String>,
    /// The NFQUEUE number the rules send packets to.
    #[arg(long)]
    pub queue: u16,
    /// How long each packet is held.
    #[arg(long, value_parser = parse_duration)]
    pub delay: Duration,
    /// Plus or minus this much, drawn uniformly per packet.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub jitter: Duration,
    /// Seed of the jitter's draws [default: from the clock].
    #[arg(long)]
    pub seed: Option<u64>,
}

#[derive(Debug, Args)]
pub struct LeasesArgs {
    /// Also write an HTML report (settings, totals, grant and keep-alive latencies) to this
    /// file; checked before any lease is granted.
    #[arg(long, value_name = "FILE.html")]
    pub report: Option<PathBuf>,
    /// The node (or nginx) to hold the leases on.
    #[arg(long, short = 'e', default_value = kg_api::cli::DEFAULT_ENDPOINT)]
    pub endpoint: String,
    /// How many leases.
    #[arg(long, default_value_t = 10_000)]
    pub count: u64,
    /// Their TTL, in whole seconds.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub ttl: u64,
    /// How long to keep them alive.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Leases per keep-alive request: 1 sends `POST /api/leases/{id}/keepalive` for each,
    /// more sends that many ids together to `POST /api/leases/keepalive`, as a client holding
    /// many leases does. Each lease is still kept alive every third of its TTL.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub per_request: u64,
}

#[derive(Debug, Args)]
pub struct LeaseEdgesArgs {
    /// The node to load.
    #[arg(long, short = 'e', default_value = kg_api::cli::DEFAULT_ENDPOINT)]
    pub endpoint: String,
    /// How long to start new rounds for (the last ones end up to 10 s later).
    #[arg(long, short = 'd', default_value = "20s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Clients, each on keys of its own.
    #[arg(long, short = 'c', default_value_t = 8)]
    pub clients: usize,
    /// The history, one JSON line per operation.
    #[arg(long, value_name = "FILE")]
    pub record: PathBuf,
    /// The random draws' seed.
    #[arg(long, default_value_t = 47)]
    pub seed: u64,
    /// A request without an answer after this long failed.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
}

#[derive(Debug, Args)]
pub struct ChaosArgs {
    /// nginx (or a node) of the stack under test.
    #[arg(
        long,
        short = 'e',
        env = "KG_ENDPOINT",
        default_value = kg_api::cli::DEFAULT_ENDPOINT
    )]
    pub endpoint: String,
    /// The faults, in order [default: all of them]; a fault named twice runs twice. With the
    /// replicated data tier (`start.sh --ha`, --node-script scripts/ha.sh) also
    /// pg-primary-kill, pg-primary-pause, pg-zombie (its stack started with
    /// KG_HA_TEST_HOOKS=1), pg-switchover, redis-master-kill, etcd-member-kill, and the
    /// negative controls pg-async-kill and pg-zombie-control (on a stack of Debian's Patroni
    /// 3.0.2: KG_HA_PATRONI=debian).
    #[arg(long, value_delimiter = ',', value_name = "FAULT,...")]
    pub faults: Vec<String>,
    /// The local stack's scripts/node.sh, through which faults are injected.
    #[arg(long, default_value = "scripts/node.sh")]
    pub node_script: PathBuf,
    /// The node the node faults act on (nginx sends writes to it first).
    #[arg(long, default_value = "n1")]
    pub node: String,
    /// Load per fault.
    #[arg(long, default_value = "12s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Requests per second.
    #[arg(long, default_value_t = 400.0)]
    pub rate: f64,
    /// Histories, reports, states and verdicts go here.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Bearer token for nodes that require authentication.
    #[arg(long, env = "KG_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Instead of --faults: the network faults of the --hosts drills in a random order for
    /// this long (the nemesis), seeded by --seed, under one load judged at the end.
    #[arg(long, value_parser = parse_duration, conflicts_with = "faults")]
    pub nemesis: Option<Duration>,
    /// The nemesis schedule's seed [default: from the clock; printed, so that a run can be
    /// replayed].
    #[arg(long, requires = "nemesis")]
    pub seed: Option<u64>,
}

#[derive(Debug, Args)]
pub struct SummarizeArgs {
    /// The run's directory, as scripts/bench.sh (or bench.sh --ha) lays it out.
    pub run_dir: PathBuf,
    /// What the table's heading names (date, profile, rounds, ...), as a JSON object.
    #[arg(long, default_value = "{}")]
    pub meta: String,
    /// Write the table as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub save: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct JudgeArgs {
    /// The JSON-lines history written by `--record`.
    pub history: PathBuf,
    /// What the store holds after the run, as one JSON object: {"KEY": {"value": "...",
    /// "revision": N}, ...}, keys without a row left out. Without it lost writes are not
    /// looked for.
    #[arg(long, value_name = "FILE")]
    pub state: Option<PathBuf>,
    /// kg-bench's JSON report of the run, for its request and error counts.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// The watchers' record of the run (`--watchers`), judged against the history
    /// [default: NAME.watch.jsonl beside the history NAME.jsonl, when there is one].
    #[arg(long, value_name = "FILE")]
    pub watch: Option<PathBuf>,
    /// The run's name in the verdict [default: the history's file name].
    #[arg(long)]
    pub name: Option<String>,
    /// When the fault was repaired, in seconds since the run started; the recovery time is
    /// counted from here.
    #[arg(long, value_name = "SECONDS")]
    pub repaired_at: Option<f64>,
    /// The only error kinds allowed (as the report counts them: status_503, timeout, ...).
    #[arg(long, value_delimiter = ',', value_name = "KIND,...")]
    pub allow_errors: Option<Vec<String>>,
    /// A failure later than this after the repair fails the run.
    #[arg(long, value_parser = parse_duration)]
    pub max_recovery: Option<Duration>,
    /// A stretch longer than this after the repair with no write acknowledged fails the run.
    #[arg(long, value_parser = parse_duration)]
    pub max_write_gap: Option<Duration>,
    /// States the linearizability search may explore per key before it gives up on that key.
    #[arg(long, default_value_t = check::DEFAULT_STATE_LIMIT)]
    pub state_limit: usize,
    /// States the searches of all keys may explore together; the keys left when it is spent
    /// are undecided.
    #[arg(long, default_value_t = check::DEFAULT_RUN_BUDGET)]
    pub search_budget: usize,
    /// A multi-key invariant the state (--state) must keep; repeat for more:
    /// sum:KEY,KEY,...=TOTAL (integer values, an absent key counting 0) or together:KEY,KEY,...
    /// (one value in all, or all absent).
    #[arg(long, value_name = "RULE", requires = "state")]
    pub invariant: Vec<invariant::Invariant>,
    /// Also write the verdict as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub save: Option<PathBuf>,
    /// Report format (csv is not offered here).
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The JSON-lines history written by `--record`.
    pub history: PathBuf,
    /// States the search may explore per key before it gives up on that key.
    #[arg(long, default_value_t = check::DEFAULT_STATE_LIMIT)]
    pub state_limit: usize,
    /// States the searches of all keys may explore together; the keys left when it is spent
    /// are undecided.
    #[arg(long, default_value_t = check::DEFAULT_RUN_BUDGET)]
    pub search_budget: usize,
    /// Report format (csv is not offered here).
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

/// Exit code of `check` when the search gave up on a key without a violation elsewhere.
pub const EXIT_CHECK_UNDECIDED: u8 = 3;

#[derive(Debug, Args)]
pub struct CompareArgs {
    pub base: PathBuf,
    pub new: PathBuf,
    /// Changes worse than this are regressions.
    #[arg(long, default_value = "5%", value_parser = parse_percent)]
    pub tolerance: f64,
    /// Also write the two runs' charts, overlaid, to this self-contained HTML file.
    #[arg(long, value_name = "FILE.html")]
    pub report: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
    Csv,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The nodes (workers are spread over them in kg-bench; kg-tui polls each).
    #[command(flatten)]
    pub endpoints: kg_api::cli::EndpointArgs,

    /// Connections, each with one request in flight.
    #[arg(long, short = 'c', default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub concurrency: u32,

    /// Open model: this many requests per second in all, at constant arrival.
    #[arg(long, short = 'r')]
    pub rate: Option<f64>,

    /// How long to measure [default: 10s unless --requests is given].
    #[arg(long, short = 'd', value_parser = parse_duration)]
    pub duration: Option<Duration>,

    /// Stop after this many measured requests.
    #[arg(long, short = 'n', conflicts_with = "duration")]
    pub requests: Option<u64>,

    /// Load before measuring, excluded from the figures.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub warmup: Duration,

    /// Operation weights of get, put, delete; cas (a GET, then a PUT with If-Match on the
    /// revision read; a 412 counts as a lost race, not an error); delete_prefix (DELETE
    /// /api/keys?prefix= of the ten keys that share the sampled key's prefix); txn (a transfer
    /// between two accounts: one POST /api/txn reads them, a second moves 1 if neither
    /// changed; a failure branch counts as refused, not an error).
    #[arg(long, default_value = "get=90,put=9,delete=1")]
    pub mix: Mix,

    /// How many distinct keys (bench/00000000 ...).
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub keys: u64,

    /// uniform, or zipf:S (key 0 hottest).
    #[arg(long, default_value = "uniform")]
    pub key_dist: KeyDist,

    /// Value size in bytes, or a range such as 64..4096.
    #[arg(long, default_value = "128")]
    pub value_size: ValueSize,

    /// Write every key once before the run, so GETs find them.
    #[arg(long)]
    pub preload: bool,

    /// A request without an answer after this long is a timeout error.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub timeout: Duration,

    /// Bearer token for nodes that require authentication.
    #[arg(long, env = "KG_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// k6-style pass/fail criteria: a percentile (p95, p(95), p99.9, any pNN or pNN.N) or
    /// max or mean < or > 5ms, errors<0.1%, rps>10000, dropped<1. Repeatable; any failure
    /// exits 99.
    #[arg(long = "threshold")]
    pub thresholds: Vec<Threshold>,

    /// Send this share of the writes (0 to 1) a second time with the same Idempotency-Key
    /// (every write then carries one), after up to --retry-delay. The history records both
    /// attempts, and `kg-bench judge` fails a retry the node applied again.
    #[arg(long, value_parser = parse_share, value_name = "SHARE")]
    pub retry_share: Option<f64>,

    /// The longest wait before a retry (drawn uniformly from zero to it).
    #[arg(long, default_value = "200ms", value_parser = parse_duration, requires = "retry_share")]
    pub retry_delay: Duration,

    /// The share of retried writes (0 to 1) whose first attempt is cut: its connection is
    /// dropped 1 to 20 ms after it was sent, answered or not.
    #[arg(long, default_value_t = 0.0, value_parser = parse_share, requires = "retry_share")]
    pub retry_cut: f64,

    /// Write every operation to this JSON-lines file (client, op, key, value, invoke and
    /// complete time, outcome), for the linearizability check.
    #[arg(long, value_name = "FILE")]
    pub record: Option<PathBuf>,

    /// Watch the load's keys with this many watchers beside it (they take turns: live, slow
    /// and replaying from the compact revision, resuming from their last id), recorded to
    /// NAME.watch.jsonl beside --record's NAME.jsonl for `kg-bench judge`. After the load
    /// they read on until a progress event says they caught up (up to 20 s).
    #[arg(long, default_value_t = 0, requires = "record", conflicts_with = "preload", value_parser = clap::value_parser!(u16).range(0..=64))]
    pub watchers: u16,

    /// Compact (`POST /api/compact`) this often during the load, and just after the slow
    /// watcher opens a stream: halfway from the compact revision to the newest revision a
    /// watcher has seen, so that the compaction overtakes the slow watcher's replay.
    #[arg(long, value_parser = parse_positive_duration, requires = "watchers")]
    pub compact_every: Option<Duration>,

    /// No compaction goes nearer than this to the newest revision seen.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(i64).range(0..))]
    pub compact_lag: i64,

    /// How long the slow watcher waits after each change it reads during the load.
    #[arg(long, default_value = "3ms", value_parser = parse_duration)]
    pub slow_watch: Duration,

    /// How often the slow and the resuming watchers drop their stream (the slow one starts a
    /// new replay from the compact revision; the resuming one resumes from its last id).
    #[arg(long, default_value = "1500ms", value_parser = parse_positive_duration)]
    pub watch_restart: Duration,

    /// Also write a self-contained HTML report (charts of latency over time, throughput and
    /// errors per second, latency distributions per operation and node) to this file.
    #[arg(long, value_name = "FILE.html")]
    pub report: Option<PathBuf>,

    /// Report format.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

fn parse_positive_duration(text: &str) -> Result<Duration, String> {
    match parse_duration(text)? {
        duration if duration.is_zero() => Err(format!("{text:?} must be longer than zero")),
        duration => Ok(duration),
    }
}

fn parse_share(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(share) if (0.0..=1.0).contains(&share) => Ok(share),
        _ => Err(format!("{text:?} is not a share from 0 to 1")),
    }
}

fn parse_percent(text: &str) -> Result<f64, String> {
    threshold::parse_ratio(text).ok_or_else(|| format!("{text:?} is not a percentage"))
}

/// Runs the command; returns the exit code, or an error message (exit 2).
pub async fn main_with(cli: Cli, out: &mut dyn Write) -> Result<u8, String> {
    match cli.command {
        Some(Tool::Compare(args)) => {
            let read = |path: &PathBuf| -> Result<Report, String> {
                let text = std::fs::read_to_string(path)
                    .map_err(|err| format!("cannot read {}: {err}", path.display()))?;
                serde_json::from_str(&text).map_err(|err| {
                    format!("{} is not a kg-bench JSON report: {err}", path.display())
                })
            };
            let (base, new) = (read(&args.base)?, read(&args.new)?);
            let differences = threshold::settings_differences(&base.settings, &new.settings);
            if !differences.is_empty() {
                writeln!(
                    out,
                    "warning: the runs were made differently: {}; their figures may not \
                     compare\n",
                    differences.join(", ")
                )
                .map_err(|err| err.to_string())?;
            }
            if let Some(path) = &args.report {
                let name = |path: &PathBuf| {
                    path.file_stem().map_or_else(
                        || path.display().to_string(),
                        |stem| stem.to_string_lossy().into_owned(),
                    )
                };
                write_html(
                    path,
                    &[(&name(&args.base), &base), (&name(&args.new), &new)],
                )?;
            }
            let changes = threshold::compare(&base, &new, args.tolerance);
            report::print_changes(out, &changes, args.tolerance).map_err(|e| e.to_string())?;
            Ok(u8::from(changes.iter().any(|c| c.regression)))
        }
        Some(Tool::Check(args)) => check_history(&args, out),
        Some(Tool::Leases(args)) => {
            // Before any lease is granted: a report that cannot be written wastes no run.
            let page = args.report.as_deref().map(create_report).transpose()?;
            let load = leases::hold(
                &args.endpoint,
                args.count,
                args.ttl,
                args.duration,
                args.per_request,
                out,
            )
            .await?;
            writeln!(
                out,
                "{}",
                serde_json::to_string(&load).map_err(|e| e.to_string())?
            )
            .map_err(|err| err.to_string())?;
            if let (Some(mut page), Some(path)) = (page, &args.report) {
                html::write_leases(&mut page, &args.endpoint, args.per_request, &load)
                    .and_then(|()| page.flush())
                    .map_err(|err| format!("cannot write {}: {err}", path.display()))?;
            }
            Ok(u8::from(load.failed > 0))
        }
        Some(Tool::Judge(args)) => judge_history(&args, out),
        Some(Tool::LeaseEdges(args)) => {
            let load = lease_edges::run(&lease_edges::LeaseEdgesOptions {
                endpoint: args.endpoint,
                duration: args.duration,
                clients: args.clients.max(1),
                record: args.record,
                seed: args.seed,
                timeout: args.timeout,
            })
            .await?;
            writeln!(
                out,
                "{}",
                serde_json::to_string(&load).map_err(|e| e.to_string())?
            )
            .map_err(|err| err.to_string())?;
            Ok(u8::from(load.txn_disagreements > 0))
        }
        Some(Tool::Netem(args)) => {
            let netem = netem::Netem {
                namespaces: args.netns,
                queue: args.queue,
                delay: args.delay,
                jitter: args.jitter,
                seed: args.seed.unwrap_or_else(|| {
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |elapsed| elapsed.as_nanos() as u64)
                }),
            };
            // On this thread, which it never leaves: setns acts on one thread, and `out` is
            // stdout held locked by this thread (a thread of its own that printed to stdout
            // waited for that lock forever, before it read one packet).
            netem::run(&netem, out)?;
            Ok(0)
        }
        Some(Tool::Summarize(args)) => summarize_suite(&args, out),
        Some(Tool::Chaos(args)) => {
            let faults: Vec<String> = if args.faults.is_empty() {
                chaos::FAULTS.iter().map(|f| (*f).to_owned()).collect()
            } else {
                args.faults
            };
            if !args.node_script.is_file() {
                return Err(format!(
                    "{} not found: run from the KeyGrid checkout or pass --node-script",
                    args.node_script.display()
                ));
            }
            if !(args.rate.is_finite() && args.rate > 0.0) {
                return Err(format!("--rate {} must be above 0", args.rate));
            }
            let runtime = fault::Runtime::local(args.node_script);
            let load = chaos::Load {
                duration: args.duration,
                rate: args.rate,
                token: args.token,
            };
            let node = args.node.parse()?;
            let passed = match args.nemesis {
                Some(duration) => {
                    let seed = args.seed.unwrap_or_else(|| {
                        std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .map_or(0, |elapsed| elapsed.as_secs())
                    });
                    writeln!(
                        out,
                        "nemesis seed {seed} (replay with --nemesis {}s --seed {seed})",
                        duration.as_secs()
                    )
                    .map_err(|err| err.to_string())?;
                    let scenario = chaos::nemesis(duration, seed);
                    chaos::run_scenarios(
                        &args.endpoint,
                        &runtime,
                        vec![scenario],
                        &load,
                        &args.out,
                        out,
                    )
                    .await?
                }
                None => {
                    chaos::run_all(
                        &args.endpoint,
                        &runtime,
                        &faults,
                        &node,
                        &load,
                        &args.out,
                        out,
                    )
                    .await?
                }
            };
            Ok(u8::from(!passed))
        }
        None => bench(cli.run, out).await,
    }
}

/// The watchers of `bench`'s run, on the clock of its history.
async fn start_watchers(
    endpoint: &str,
    token: Option<String>,
    watch: watchers::WatchLoad,
    options: &RunOptions,
    record: &std::path::Path,
) -> Result<watchers::Watchers, String> {
    let client = kg_api::Client::with_options(
        endpoint.trim(),
        &kg_api::ClientOptions {
            timeout: options.timeout,
            token,
        },
    )
    .map_err(|err| err.to_string())?;
    watchers::Watchers::start(
        client,
        &options.key_prefix,
        watch,
        options.origin.unwrap_or_else(std::time::Instant::now),
        &watchers::record_path(record),
    )
    .await
}

fn write_html(path: &std::path::Path, runs: &[(&str, &Report)]) -> Result<(), String> {
    write_html_to(create_report(path)?, path, runs)
}

/// Creates an HTML report's file, so that a path that cannot be written is known before a run.
fn create_report(path: &std::path::Path) -> Result<std::io::BufWriter<std::fs::File>, String> {
    std::fs::File::create(path)
        .map(std::io::BufWriter::new)
        .map_err(|err| format!("cannot create {}: {err}", path.display()))
}

fn write_html_to(
    mut file: std::io::BufWriter<std::fs::File>,
    path: &std::path::Path,
    runs: &[(&str, &Report)],
) -> Result<(), String> {
    html::write_report(&mut file, runs)
        .and_then(|()| file.flush())
        .map_err(|err| format!("cannot write {}: {err}", path.display()))
}

fn check_history(args: &CheckArgs, out: &mut dyn Write) -> Result<u8, String> {
    let history = history::read_history_file(&args.history)?;
    let keys = check::registers(&history);
    let results = check::check_history(&keys, args.state_limit, args.search_budget);
    let printed = match args.output {
        Output::Text => report::print_check(out, &results),
        Output::Json => serde_json::to_writer_pretty(&mut *out, &results)
            .map_err(std::io::Error::other)
            .and_then(|()| writeln!(out)),
        Output::Csv => return Err("check prints text or json".into()),
    };
    printed.map_err(|err| format!("cannot write the verdict: {err}"))?;
    Ok(match check::tally(&results) {
        (0, 0) => 0,
        (0, _) => EXIT_CHECK_UNDECIDED,
        _ => 1,
    })
}

fn summarize_suite(args: &SummarizeArgs, out: &mut dyn Write) -> Result<u8, String> {
    let meta: serde_json::Value =
        serde_json::from_str(&args.meta).map_err(|err| format!("--meta: {err}"))?;
    // bench.sh --ha lays out its run with put-ha/put-single rounds instead.
    let suite = if args.run_dir.join("put-ha.r1.json").exists() {
        suite::summarize_ha(&args.run_dir, meta)?
    } else {
        suite::summarize(&args.run_dir, meta)?
    };
    suite::print(out, &suite).map_err(|err| format!("cannot write the table: {err}"))?;
    if let Some(path) = &args.save {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|err| format!("cannot create {}: {err}", parent.display()))?;
        }
        let json = serde_json::to_vec_pretty(&suite).map_err(|err| err.to_string())?;
        std::fs::write(path, json)
            .map_err(|err| format!("cannot write {}: {err}", path.display()))?;
        writeln!(out, "\nwritten to {}", path.display()).map_err(|err| err.to_string())?;
    }
    let unsound = suite::unsound_rows(&suite);
    for row in &unsound {
        writeln!(out, "measured the wrong thing: {row}").map_err(|err| err.to_string())?;
    }
    Ok(u8::from(!unsound.is_empty()))
}

fn judge_history(args: &JudgeArgs, out: &mut dyn Write) -> Result<u8, String> {
    fn read_json<T: serde::de::DeserializeOwned>(path: &std::path::Path) -> Result<T, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|err| format!("cannot read {}: {err}", path.display()))?;
        serde_json::from_str(&text).map_err(|err| format!("{}: {err}", path.display()))
    }
    let history = history::read_history_file(&args.history)?;
    let state: Option<judge::StoreState> = args.state.as_deref().map(read_json).transpose()?;
    let counts: Option<judge::RunCounts> = args.report.as_deref().map(read_json).transpose()?;
    let name = args.name.clone().unwrap_or_else(|| {
        args.history.file_stem().map_or_else(
            || args.history.display().to_string(),
            |stem| stem.to_string_lossy().into_owned(),
        )
    });
    let expect = judge::Expectations {
        repaired_at_s: args.repaired_at,
        allowed_errors: args.allow_errors.clone(),
        max_recovery: args.max_recovery,
        max_write_gap: args.max_write_gap,
        state_limit: args.state_limit,
        search_budget: Some(args.search_budget),
    };
    let mut verdict = judge::judge(&name, &history, state.as_ref(), counts.as_ref(), &expect)?;
    if let Some(state) = &state {
        verdict.hold_invariants(state, &args.invariant);
    }
    let beside = watchers::record_path(&args.history);
    let watch = args
        .watch
        .clone()
        .or_else(|| beside.exists().then_some(beside));
    if let Some(path) = watch {
        verdict.judge_watchers(&history, &watchers::read_records(&path)?);
    }
    if let Some(path) = &args.save {
        let json = serde_json::to_vec_pretty(&verdict).map_err(|err| err.to_string())?;
        std::fs::write(path, json)
            .map_err(|err| format!("cannot write {}: {err}", path.display()))?;
    }
    let printed = match args.output {
        Output::Text => report::print_judgements(out, std::slice::from_ref(&verdict)),
        Output::Json => serde_json::to_writer_pretty(&mut *out, &verdict)
            .map_err(std::io::Error::other)
            .and_then(|()| writeln!(out)),
        Output::Csv => return Err("judge prints text or json".into()),
    };
    printed.map_err(|err| format!("cannot write the verdict: {err}"))?;
    Ok(u8::from(!verdict.passed))
}

async fn bench(args: RunArgs, out: &mut dyn Write) -> Result<u8, String> {
    if let Some(rate) = args.rate {
        if !(rate.is_finite() && rate > 0.0) {
            return Err(format!("--rate {rate} must be above 0"));
        }
    }
    // Before any load (the preload included): a report that cannot be written wastes no run.
    let page = args.report.as_deref().map(create_report).transpose()?;
    let mut targets = Vec::new();
    for endpoint in &args.endpoints.endpoint {
        targets.push(Target::resolve(endpoint.trim()).await?);
    }
    let duration = match (args.duration, args.requests) {
        (None, None) => Some(Duration::from_secs(10)),
        (duration, _) => duration,
    };
    let retries = args.retry_share.map(|share| run::Retries {
        share,
        delay: args.retry_delay,
        cut: args.retry_cut,
    });
    let watch = (args.watchers > 0).then_some(watchers::WatchLoad {
        watchers: usize::from(args.watchers),
        compact_every: args.compact_every,
        compact_lag: args.compact_lag,
        slow: args.slow_watch,
        resume_every: args.watch_restart,
    });
    let settings = serde_json::json!({
        "endpoints": args.endpoints.endpoint,
        "concurrency": args.concurrency,
        "rate": args.rate,
        "model": if args.rate.is_some() { "open" } else { "closed" },
        "duration_s": duration.map(|d| d.as_secs_f64()),
        "requests": args.requests,
        "warmup_s": args.warmup.as_secs_f64(),
        "mix": args.mix,
        "keys": args.keys,
        "key_dist": args.key_dist,
        "value_size": args.value_size,
        "preload": args.preload,
        "timeout_s": args.timeout.as_secs_f64(),
        "retries": retries,
        "watch": watch,
        "started_at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "version": env!("CARGO_PKG_VERSION"),
    });
    let options = RunOptions {
        targets,
        concurrency: args.concurrency as usize,
        rate: args.rate,
        duration,
        requests: args.requests,
        warmup: args.warmup,
        mix: args.mix,
        keys: args.keys,
        key_dist: args.key_dist,
        value_size: args.value_size,
        preload: args.preload,
        timeout: args.timeout,
        token: args.token,
        record: args.record,
        // The live line goes to stderr, and only when a person is watching.
        progress: std::io::stdout().is_terminal() && std::io::stderr().is_terminal(),
        key_prefix: workload::DEFAULT_KEY_PREFIX.to_owned(),
        stop: None,
        // The watchers' record and the history count from one instant.
        origin: watch.map(|_| std::time::Instant::now()),
        retries,
    };
    let watching = match (watch, &options.record) {
        (Some(watch), Some(record)) => Some(
            start_watchers(
                &args.endpoints.endpoint[0],
                options.token.clone(),
                watch,
                &options,
                record,
            )
            .await?,
        ),
        _ => None,
    };
    let ran = run::run(options, settings).await;
    if let Some(watching) = watching {
        watching.finish().await?;
    }
    let (mut report, latency) = match ran {
        Ok(done) => done,
        Err(err) => {
            if let Some(path) = &args.report {
                let _ = std::fs::remove_file(path);
            }
            return Err(err);
        }
    };
    report.thresholds = args
        .thresholds
        .iter()
        .map(|t| t.check(&report, &latency))
        .collect();
    let printed = match args.output {
        Output::Text => report::print_text(out, &report),
        Output::Json => report::print_json(out, &report),
        Output::Csv => report::print_csv(out, &report),
    };
    printed.map_err(|err| format!("cannot write the report: {err}"))?;
    if let (Some(page), Some(path)) = (page, &args.report) {
        write_html_to(page, path, &[("this run", &report)])?;
    }
    Ok(if report.requests > 0 && report.successes == 0 {
        // A run in which nothing succeeded measured nothing about the store.
        EXIT_ALL_FAILED
    } else if report.thresholds.iter().all(|t| t.passed) {
        0
    } else {
        EXIT_THRESHOLD_FAILED
    })
}
