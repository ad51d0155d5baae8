//! kg-server: a KeyGrid node. `main.rs` parses the config and calls [`run`]; everything else
//! lives here so that tests can build the app without a socket or spawn it on a free port.

pub mod breaker;
pub mod cache;
pub mod config;
pub mod contact;
pub mod events;
pub mod http;
pub mod keepalive;
pub mod planted;
pub mod redis_target;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod tokens;
pub mod writer;

use tokio::net::TcpListener;

pub use config::Config;
pub use http::serve;
pub use startup::{shutdown_signal, AppState};

/// Runs a node until SIGTERM or ctrl-c.
pub async fn run(config: Config) -> anyhow::Result<()> {
    use anyhow::Context as _;
    match &config.auth_tokens_file {
        Some(path) => tracing::info!(
            tokens = %path.display(),
            "authentication on: /api/* (but /api/health) needs a bearer token"
        ),
        None => tracing::warn!(
            "authentication off: the API is open to anyone who can reach this node \
             (--auth-tokens-file turns it on)"
        ),
    }
    let (url, embedded) = config.database_url();
    if embedded {
        tracing::info!(
            path = config::DEFAULT_SQLITE_PATH,
            "no --database-url given: using embedded SQLite"
        );
    }
    let state = AppState::build(&config).await?;
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("failed to listen on {}", config.listen))?;
    tracing::info!(
        node = %state.node_id,
        listen = %config.listen,
        database = %store::redact_url(&url),
        kind = %state.store.kind(),
        cache = state.cache.as_ref().map_or("disabled", |cache| cache.target().shown()),
        worker_threads = tokio::runtime::Handle::current().metrics().num_workers(),
        "kg-server ready"
    );
    serve(listener, state, shutdown_signal()).await
}
