//! The command line: global options and one subcommand per operation. The doc comments are
//! the help text.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use kg_api::parse_duration;

/// kg: talk to a KeyGrid cluster.
///
/// Exit codes: 0 ok, 1 key not found (or a node unhealthy, for `health` and `status`), 2
/// usage error, rejected input, or a local file that cannot be read or written, 3
/// precondition failed, 4 server or network unavailable (or no KeyGrid API at the endpoint),
/// 130 interrupted (ctrl-c).
#[derive(Debug, Parser)]
#[command(name = "kg", version, about, long_about)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalOptions,

    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes.
#[derive(Debug, Clone, Args)]
pub struct GlobalOptions {
    /// Node or load balancer URL (a bare HOST:PORT is http); repeat it or give a
    /// comma-separated list to fail over.
    #[arg(
        long,
        short = 'e',
        env = "KG_ENDPOINT",
        default_value = kg_api::cli::DEFAULT_ENDPOINT,
        global = true
    )]
    pub endpoint: Vec<String>,

    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Text, global = true)]
    pub output: Output,

    /// Per-request timeout, e.g. 500ms or 5s.
    #[arg(long, default_value = "5s", value_parser = parse_duration, global = true)]
    pub timeout: Duration,

    /// Bearer token for nodes that require authentication.
    #[arg(long, env = "KG_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
}

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Human-friendly.
    Text,
    /// JSON, one document (one line per event for `watch`).
    Json,
    /// The value bytes only, for scripts.
    Raw,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write a key; prints the new revision.
    Put(PutArgs),
    /// Read a key's value.
    Get(GetArgs),
    /// Delete a key, or with --prefix every key under a prefix at one revision.
    #[command(visible_alias = "del")]
    Delete(DeleteArgs),
    /// List keys in byte order, walking every page.
    List(ListArgs),
    /// Run a transaction: compares, then one branch of ops, atomically at one revision.
    ///
    /// Reads the transaction as JSON from FILE, or from standard input without one (or with
    /// `-`), in the body of `POST /api/txn`:
    ///
    ///   {"compare": [{"key": "a", "target": "value", "op": "==", "value": "1"}],
    ///    "success": [{"op": "put", "key": "a", "value": "2"}, {"op": "get", "key": "b"}],
    ///    "failure": [{"op": "get", "key": "a"}]}
    ///
    /// Targets: value, revision, create_revision, version, exists. Ops: put (with an optional
    /// lease), delete, delete_prefix, get. Or in etcdctl's text form: compares, a blank line,
    /// the success ops, a blank line, the failure ops, one per line (each blank line ends a
    /// part, an empty one too):
    ///
    ///   value("a") = "1"
    ///
    ///   put a 2
    ///   get b
    ///
    ///   get a
    ///
    /// (compare targets value, mod, create, ver, exists; ops put KEY VALUE [--lease ID],
    /// get KEY, del KEY, del --prefix PREFIX; words quoted as in a shell). At a terminal
    /// without FILE, prompts for the compares, the success ops and the failure ops in turn,
    /// each ended by an empty line, as etcdctl's interactive txn. Prints SUCCESS or FAILURE
    /// (which branch ran) and the revision, then one line per op; exits 0 either way, as
    /// etcdctl txn does. A transaction with no compare and no op is a usage error.
    // Verbatim: clap would join the examples' lines into one.
    #[command(
        verbatim_doc_comment,
        about = "Run a transaction: compares, then one branch of ops, atomically at one revision"
    )]
    Txn(TxnArgs),
    /// List a key's versions, newest first: every put and delete since the compact revision.
    History(HistoryArgs),
    /// Drop the history below revision N, as etcdctl compact does.
    ///
    /// Reads at a revision below N are refused (410) from then on, and watches cannot resume
    /// below it. Compacting to a revision already compacted changes nothing.
    Compact {
        #[arg(value_parser = clap::value_parser!(i64).range(0..))]
        revision: i64,
    },
    /// Follow changes to a key, a prefix or every key as they are committed; reconnects by
    /// itself, resuming after the last revision seen.
    Watch(WatchArgs),
    /// Check every endpoint: status, latency, database, cache, revision.
    Health,
    /// Show a row per endpoint: node, version, revision, database, cache (etcdctl endpoint
    /// status).
    ///
    /// DB_LEADER says whether the node's database connection reaches the data tier's leader
    /// (the PostgreSQL primary); `-o json` gives each node's whole status. Exits 1 if an
    /// endpoint did not answer.
    Status,
    /// Grant, keep alive, revoke and inspect leases: a leased key is deleted when its lease
    /// expires or is revoked.
    #[command(subcommand)]
    Lease(LeaseCommand),
    /// Hold a lock while a command runs (or until ctrl-c), as etcdctl's lock does.
    ///
    /// Waits until the lock NAME is free: waiters get it in order of arrival, each watching
    /// the one before it. The lock is a key under NAME/ on a lease kept alive while held, and
    /// is released on exit; if kg is killed, it frees itself when the lease's TTL runs out.
    /// Prints the lock's key once held. With a command, exits with the command's status.
    Lock(LockArgs),
    /// Save every live key at one revision to a file, load such a file into a cluster, or
    /// check one.
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
    /// Run the seed's failover drill under load and judge it: PASS exits 0, FAIL exits 1.
    ///
    /// Phases: baseline; stop n1; stop n2; stop n3 (all down); restore all. Each holds a
    /// GET/PUT load through the endpoint and records every request's status, latency and
    /// answering node. PASS needs no failed GET while a node is up, no acknowledged write lost
    /// (all are read back at the end), 502 while all are down, and a GET served within
    /// --max-recovery of the restore.
    FailoverDrill(DrillArgs),
    /// Print a shell completion script.
    Completions(CompletionsArgs),
}

#[derive(Debug, Args)]
pub struct PutArgs {
    pub key: String,
    /// The value; `-` reads it from standard input.
    pub value: String,
    /// Write only if the key is at this revision (If-Match).
    #[arg(long, value_name = "N", conflicts_with = "create_only")]
    pub if_revision: Option<i64>,
    /// Write only if the key does not exist (If-None-Match: *).
    #[arg(long)]
    pub create_only: bool,
    /// Delete the key after this long (whole seconds, e.g. 30s or 5m) unless written again:
    /// the key gets a lease of its own.
    #[arg(long, value_name = "DURATION", value_parser = parse_ttl, conflicts_with = "lease")]
    pub ttl: Option<u64>,
    /// Attach the key to this lease (from `kg lease grant`).
    #[arg(long, value_name = "ID")]
    pub lease: Option<i64>,
}

#[derive(Debug, Subcommand)]
pub enum LeaseCommand {
    /// Grant a lease of TTL (whole seconds, e.g. 30s); prints its id.
    Grant {
        #[arg(value_parser = parse_ttl)]
        ttl: u64,
    },
    /// Keep a lease alive once, or with --forever every third of its TTL until ctrl-c.
    Keepalive {
        id: i64,
        #[arg(long)]
        forever: bool,
    },
    /// Revoke a lease: its keys are deleted at once.
    Revoke { id: i64 },
    /// List the live leases, soonest to expire first.
    List,
    /// Show a lease: its TTL, the time it has left and its keys.
    Show { id: i64 },
}

#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Save every live key, with its value and metadata, as of one revision: JSON lines
    /// (a header, one line per key, an end line that counts them). Written to FILE.part and
    /// renamed to FILE once whole, so FILE is never a snapshot cut short.
    Save {
        /// Where to write the snapshot; `-` writes it to standard output (and what was saved
        /// to standard error).
        file: PathBuf,
    },
    /// Load a saved snapshot into a cluster, keeping every value; prints what it restored.
    ///
    /// The cluster ends holding exactly the snapshot's keys (with --merge, those and the keys
    /// it held that the snapshot lacks). One that already holds keys is refused unless given
    /// --force (replace them) or --merge. The file is checked whole before anything is
    /// written: its format, every key by the node's rules, and its largest value against the
    /// node's limit. Keys get new revisions
    /// (the cluster's own); a leased key gets a new lease with the time its lease had left
    /// when the snapshot was taken, keys that shared a lease sharing the new one.
    Restore {
        /// A file written by `kg snapshot save`; `-` reads it from standard input.
        file: PathBuf,
        /// Load into a cluster that already holds keys, replacing them: the snapshot's keys
        /// are written over them and every key it lacks is deleted.
        #[arg(long, conflicts_with = "merge")]
        force: bool,
        /// Load into a cluster that already holds keys, keeping them: the snapshot's keys are
        /// written over them and keys it lacks are left as they are.
        #[arg(long)]
        merge: bool,
        /// Writes in flight at once.
        #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..=1024))]
        concurrency: u16,
    },
    /// Check a snapshot file whole, as a restore would, and print what it holds: its revision,
    /// when it was taken, its keys and leases, its size and its SHA-256. Needs no cluster.
    Status {
        /// A file written by `kg snapshot save`; `-` reads it from standard input.
        file: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct LockArgs {
    /// The lock's name: its holders' keys live under NAME/.
    pub name: String,
    /// How long the lock outlives a holder that stops keeping it alive (whole seconds).
    #[arg(long, default_value = "10s", value_parser = parse_ttl)]
    pub ttl: u64,
    /// The command to run while holding the lock (after `--`).
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// A lease TTL: a duration of whole seconds within the server's range.
fn parse_ttl(text: &str) -> Result<u64, String> {
    let duration = parse_duration(text)?;
    if duration.subsec_nanos() != 0 {
        return Err(format!("{text:?} is not a whole number of seconds"));
    }
    let seconds = duration.as_secs();
    if (kg_api::MIN_LEASE_TTL_SECONDS..=kg_api::MAX_LEASE_TTL_SECONDS).contains(&seconds) {
        Ok(seconds)
    } else {
        Err(format!(
            "a TTL is {}s to {}s, not {text}",
            kg_api::MIN_LEASE_TTL_SECONDS,
            kg_api::MAX_LEASE_TTL_SECONDS
        ))
    }
}

#[derive(Debug, Args)]
pub struct GetArgs {
    /// The key; with --prefix, the prefix.
    pub key: String,
    /// Read the key as it was at this revision (as etcdctl get --rev).
    #[arg(long, visible_alias = "rev", value_name = "N",
          value_parser = clap::value_parser!(i64).range(1..))]
    pub revision: Option<i64>,
    /// List every key starting with KEY, as `kg list --prefix KEY` (etcdctl get --prefix).
    #[arg(long)]
    pub prefix: bool,
    /// With --prefix: stop after this many keys.
    #[arg(long, value_name = "N", requires = "prefix")]
    pub limit: Option<usize>,
    /// With --prefix: print only the keys.
    #[arg(long, requires = "prefix")]
    pub keys_only: bool,
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    pub key: String,
    /// Show at most this many versions, newest first.
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
}

#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// The key; with --prefix, the prefix.
    #[arg(required_unless_present = "all")]
    pub key: Option<String>,
    /// Delete only if the key is at this revision (If-Match).
    #[arg(long, value_name = "N", conflicts_with_all = ["prefix", "all"])]
    pub if_revision: Option<i64>,
    /// Delete every live key starting with KEY, at one revision (as etcdctl del --prefix).
    #[arg(long)]
    pub prefix: bool,
    /// Delete every key.
    #[arg(long, conflicts_with_all = ["key", "prefix"])]
    pub all: bool,
}

#[derive(Debug, Args)]
pub struct TxnArgs {
    /// A file holding the transaction's JSON; `-` or none reads standard input.
    pub file: Option<PathBuf>,
    /// Name the transaction, so that sending it again (on any node) replays the first answer
    /// instead of applying it twice.
    #[arg(long, value_name = "KEY")]
    pub idempotency_key: Option<String>,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only keys starting with this.
    #[arg(long, default_value = "")]
    pub prefix: String,
    /// Stop after this many keys.
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// Print only the keys, one per line (the values are not fetched).
    #[arg(long, conflicts_with = "count")]
    pub keys_only: bool,
    /// Print only how many keys there are under the prefix.
    #[arg(long, conflicts_with = "limit")]
    pub count: bool,
    /// List the keys as they were at this revision (as etcdctl get --rev).
    #[arg(long, visible_alias = "rev", value_name = "N",
          value_parser = clap::value_parser!(i64).range(1..))]
    pub revision: Option<i64>,
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// The key to watch (with --prefix, every key starting with it); every key without one.
    pub key: Option<String>,
    /// Watch every key starting with KEY, as etcdctl watch --prefix.
    #[arg(long)]
    pub prefix: bool,
    /// Start at revision N: replay the changes from N on first, N included (as etcdctl
    /// watch --rev N). A replay gives each key's latest change since N.
    #[arg(long, visible_alias = "rev", value_name = "N",
          value_parser = clap::value_parser!(i64).range(0..))]
    pub from_revision: Option<i64>,
    /// Exit after this many events.
    #[arg(long, value_name = "N")]
    pub count: Option<usize>,
    /// Ask for a progress line whenever nothing changed under the prefix for this long: the
    /// revision the watch is complete up to (etcd's progress notify). Not counted by --count.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub progress: Option<Duration>,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    pub shell: clap_complete::Shell,
}

/// How `failover-drill` stops and starts nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RuntimeKind {
    /// scripts/node.sh of the local stack (scripts/start.sh).
    Local,
    /// docker compose stop|start backendN.
    Compose,
    /// Your own --stop-cmd and --start-cmd.
    Command,
}

#[derive(Debug, Args)]
pub struct DrillArgs {
    /// How nodes are stopped and started.
    #[arg(long, value_enum, default_value_t = RuntimeKind::Local)]
    pub runtime: RuntimeKind,
    /// The nodes, in the order they are stopped [default: n1,n2,n3; backend1,backend2,backend3
    /// with --runtime compose].
    #[arg(long, value_delimiter = ',', value_name = "NODE,...")]
    pub nodes: Vec<String>,
    /// The local stack's node script.
    #[arg(long, default_value = "scripts/node.sh", value_name = "PATH")]
    pub node_script: PathBuf,
    /// Shell command that stops a node, `{node}` standing for its name (--runtime command).
    #[arg(long, value_name = "CMD", required_if_eq("runtime", "command"))]
    pub stop_cmd: Option<String>,
    /// Shell command that starts a node, `{node}` standing for its name (--runtime command).
    #[arg(long, value_name = "CMD", required_if_eq("runtime", "command"))]
    pub start_cmd: Option<String>,
    /// How long each phase holds the load after its change.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub phase_duration: Duration,
    /// Requests per second, GETs and PUTs together.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub rate: u32,
    /// Share of requests that are PUTs, from 0 to 1.
    #[arg(long, default_value_t = 0.2, value_parser = parse_ratio)]
    pub write_ratio: f64,
    /// The restore phase must serve a GET within this long.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub max_recovery: Duration,
    /// Most requests in flight at once.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub concurrency: u32,
    /// Keep the drill's recorded history (JSON lines, as `kg-bench --record` writes them) in
    /// this file, for `kg-bench judge` or a closer look at a failure.
    #[arg(long, value_name = "FILE")]
    pub keep_history: Option<PathBuf>,
}

fn parse_ratio(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(ratio) if (0.0..=1.0).contains(&ratio) => Ok(ratio),
        _ => Err(format!("{text:?} is not a number from 0 to 1")),
    }
}
