//! The node's configuration: one clap parser, where every flag also reads a `KG_*` variable.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use kg_api::parse_duration;

/// A KeyGrid node: the REST API over PostgreSQL or embedded SQLite.
#[derive(Debug, Clone, Parser)]
#[command(name = "kg-server", version, about)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "KG_LISTEN", default_value = "127.0.0.1:8000")]
    pub listen: SocketAddr,

    /// This node's id, sent in X-KeyGrid-Node (default: the hostname).
    #[arg(long, env = "KG_NODE_ID")]
    pub node_id: Option<String>,

    /// postgres://... or sqlite://...; without it, an embedded SQLite file at ./data/keygrid.db.
    #[arg(long, env = "KG_DATABASE_URL")]
    pub database_url: Option<String>,

    /// Largest value accepted, in bytes.
    #[arg(long, env = "KG_MAX_VALUE_BYTES", default_value_t = 1024 * 1024)]
    pub max_value_bytes: usize,

    /// Database connections this node may hold.
    #[arg(long, env = "KG_DB_POOL_SIZE", default_value_t = 16)]
    pub db_pool_size: u32,

    /// PostgreSQL: follow each database read with a commit on the same session, which a
    /// primary without its synchronous standby cannot complete, so that no read is answered
    /// by a deposed primary whatever routes the connection (docs/consistency.md). For the
    /// replicated data tier; it costs a synchronous commit per read that misses the cache.
    #[arg(long, env = "KG_READ_FENCE")]
    pub read_fence: bool,

    /// How long a request waits on the database before answering 503, e.g. 2s or 500ms.
    #[arg(long, env = "KG_DB_TIMEOUT", default_value = "2s", value_parser = parse_duration)]
    pub db_timeout: Duration,

    /// redis://... for the read cache and the change-event bus; without it, events stay in-process.
    #[arg(long, env = "KG_REDIS_URL", conflicts_with = "redis_sentinel")]
    pub redis_url: Option<String>,

    #[command(flatten)]
    pub sentinel: kg_api::cli::SentinelArgs,

    /// Namespace of KeyGrid's Redis keys and channels (`<prefix>:events`, `<prefix>:nodes`).
    #[arg(long, env = "KG_REDIS_PREFIX", default_value = kg_api::DEFAULT_REDIS_PREFIX)]
    pub redis_prefix: String,

    /// Lifetime of a cache entry: the bound on any staleness the cache cannot prevent.
    #[arg(long, env = "KG_CACHE_TTL", default_value = "300s", value_parser = parse_duration)]
    pub cache_ttl: Duration,

    /// Bound on every Redis call; past it the node serves without the cache.
    #[arg(long, env = "KG_CACHE_TIMEOUT", default_value = "250ms", value_parser = parse_duration)]
    pub cache_timeout: Duration,

    /// How long history is kept: the versions a write replaced (for reads at a past revision
    /// and `GET /api/key/history`), tombstones (so that watchers can replay a delete) and
    /// idempotency records. `--tombstone-retention`, which it replaces, still works.
    #[arg(long, env = "KG_HISTORY_RETENTION", alias = "tombstone-retention", default_value = "24h", value_parser = parse_duration)]
    pub history_retention: Duration,

    /// How often the node looks for leases whose deadline has passed, and deletes their keys.
    /// Every node looks; the first to find a lease deletes it. Expiry is visible to readers at
    /// the deadline whatever this is: it bounds how late the delete events come.
    #[arg(long, env = "KG_LEASE_SWEEP_INTERVAL", default_value = "200ms", value_parser = parse_duration)]
    pub lease_sweep_interval: Duration,

    /// How long a keep-alive waits for others to join it before they are all renewed with one
    /// statement. Longer windows make each keep-alive cheaper for the node and later to answer;
    /// a client keeps a lease alive every third of its TTL, so tens of milliseconds are nothing
    /// to it (the TTL is at least a second).
    #[arg(long, env = "KG_KEEPALIVE_WINDOW", default_value = "50ms", value_parser = parse_duration)]
    pub keepalive_window: Duration,

    /// Test hook: a pause between a cache miss's database read and its cache fill.
    #[arg(long, hide = true, value_parser = parse_duration)]
    pub cache_fill_delay: Option<Duration>,

    /// A file of `TOKEN ROLE` lines (role `read` or `write`; `#` starts a comment). With it,
    /// every /api/* route but /api/health needs `Authorization: Bearer <token>`; without it,
    /// the API is open to anyone who can reach the node.
    #[arg(long, env = "KG_AUTH_TOKENS_FILE", value_name = "FILE")]
    pub auth_tokens_file: Option<std::path::PathBuf>,

    /// Serve the web view from this directory (the built web/dist) at `/`.
    #[arg(long, env = "KG_WEB_DIR", value_name = "DIR")]
    pub web_dir: Option<std::path::PathBuf>,

    /// Test hook: a pause between a write's commit and its answer, as a node that hangs or
    /// dies right after committing would leave it. The cluster tests use it to check that a
    /// write nginx retries on another node is applied once.
    #[arg(long, hide = true, env = "KG_TEST_WRITE_REPLY_DELAY", value_parser = parse_duration)]
    pub write_reply_delay: Option<Duration>,

    /// Test hook: a pause between a write batch's commit and its cache update, the window in
    /// which the database already holds the new values.
    #[arg(long, hide = true, value_parser = parse_duration)]
    pub cache_update_delay: Option<Duration>,

    /// Threads that run requests (default: one per core). Nodes that share a machine run
    /// faster with the cores split between them: scripts/start.sh gives each of its three
    /// nodes cores / 3, at least 1. A node on one thread runs tokio's current-thread
    /// scheduler.
    #[arg(long, env = "KG_WORKER_THREADS", value_parser = clap::value_parser!(u16).range(1..))]
    pub worker_threads: Option<u16>,

    /// Log format.
    #[arg(long, env = "KG_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// The embedded default store, relative to the working directory.
pub const DEFAULT_SQLITE_PATH: &str = "data/keygrid.db";

impl Config {
    /// The database URL to open, and whether it is the embedded default.
    pub fn database_url(&self) -> (String, bool) {
        match &self.database_url {
            Some(url) => (url.clone(), false),
            None => (format!("sqlite://{DEFAULT_SQLITE_PATH}"), true),
        }
    }

    /// The node id, falling back to the hostname.
    pub fn node_id(&self) -> String {
        self.node_id.clone().unwrap_or_else(|| {
            gethostname::gethostname()
                .into_string()
                .unwrap_or_else(|_| "kg-node".to_owned())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_to_embedded_sqlite_on_localhost_8000() {
        let config = Config::try_parse_from(["kg-server"]).unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:8000");
        assert_eq!(
            config.database_url(),
            ("sqlite://data/keygrid.db".to_owned(), true)
        );
        assert_eq!(config.max_value_bytes, 1024 * 1024);
        assert_eq!(config.worker_threads, None);
    }

    #[test]
    fn worker_threads_must_be_at_least_one() {
        let config = Config::try_parse_from(["kg-server", "--worker-threads", "1"]).unwrap();
        assert_eq!(config.worker_threads, Some(1));
        assert!(Config::try_parse_from(["kg-server", "--worker-threads", "0"]).is_err());
    }
}
