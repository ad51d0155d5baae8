//! The command line: global options and one subcommand per operation. The doc comments are
//! the help text.

use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use kg_api::parse_duration;

/// kg: talk to a KeyGrid cluster.
///
/// Exit codes: 0 ok, 1 key not found (or a node unhealthy, for `health`), 2 usage error or
/// rejected input, 3 precondition failed, 4 server or network unavailable, 130 interrupted.
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
    /// Node or load balancer URL; repeat it or give a comma-separated list to fail over.
    #[arg(
        long,
        short = 'e',
        env = "KG_ENDPOINT",
        default_value = "http://127.0.0.1:8000",
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
    /// Delete a key.
    Delete(DeleteArgs),
    /// List keys in byte order, walking every page.
    List(ListArgs),
    /// Follow changes as they are committed; reconnects by itself.
    Watch(WatchArgs),
    /// Check every endpoint: status, latency, database, cache, revision.
    Health,
    /// Show the answering node's full status.
    Status,
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
}

#[derive(Debug, Args)]
pub struct GetArgs {
    pub key: String,
}

#[derive(Debug, Args)]
pub struct DeleteArgs {
    pub key: String,
    /// Delete only if the key is at this revision (If-Match).
    #[arg(long, value_name = "N")]
    pub if_revision: Option<i64>,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only keys starting with this.
    #[arg(long, default_value = "")]
    pub prefix: String,
    /// Stop after this many keys.
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// Print only the keys, one per line.
    #[arg(long)]
    pub keys_only: bool,
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Only keys starting with this.
    #[arg(long)]
    pub prefix: Option<String>,
    /// Replay every change above this revision first.
    #[arg(long, value_name = "N")]
    pub from_revision: Option<i64>,
    /// Exit after this many events.
    #[arg(long, value_name = "N")]
    pub count: Option<usize>,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    pub shell: clap_complete::Shell,
}
