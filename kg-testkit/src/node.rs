//! A real node on a free port: `spawn_app` over a fresh database (a `kgtest_*` PostgreSQL
//! database or a SQLite file), `spawn_app_on` over a given one, and `spawn_node_in` for tests
//! that only need an endpoint for as long as their runtime lives.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use kg_server::store::{self, ConnectOptions, Store};
use kg_server::{AppState, Config};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Which store a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

/// The machine's PostgreSQL, used to create one fresh database per test.
pub fn admin_database_url() -> String {
    std::env::var("KG_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A database URL for `backend` that no other test uses. PostgreSQL databases are named
/// `kgtest_*`; scripts/test.sh drops leftovers before each run.
pub async fn fresh_database(backend: Backend, dir: &Path) -> String {
    match backend {
        Backend::Sqlite => format!("sqlite://{}", dir.join("keygrid.db").display()),
        Backend::Postgres => {
            let admin = admin_database_url();
            let name = format!("kgtest_{}", uuid::Uuid::new_v4().simple());
            let mut connection = sqlx::PgConnection::connect(&admin).await.unwrap_or_else(|err| {
                panic!("PostgreSQL is required for the tests and is not reachable at {admin}: {err}")
            });
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(&mut connection)
                .await
                .expect("create test database");
            let mut url = url::Url::parse(&admin).expect("KG_TEST_DATABASE_URL is a URL");
            url.set_path(&name);
            url.to_string()
        }
    }
}

use sqlx::Connection as _;

/// A running node and what a test needs to talk to it.
pub struct TestApp {
    pub address: SocketAddr,
    pub base: String,
    pub client: kg_api::Client,
    pub http: reqwest::Client,
    pub database_url: String,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<anyhow::Result<()>>>,
    _dir: Arc<tempfile::TempDir>,
}

impl std::fmt::Debug for TestApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestApp").field("base", &self.base).finish()
    }
}

/// Options a test may change from the defaults.
#[derive(Debug, Clone, Default)]
pub struct AppOptions {
    pub extra_args: Vec<String>,
    pub node_id: Option<String>,
    /// Redis for the cache and events, with a key prefix of its own (see `with_redis`).
    pub redis: Option<(String, String)>,
}

impl AppOptions {
    /// Options for a node on `url`'s Redis, under `prefix` so that parallel tests sharing one
    /// Redis never see each other's keys or events.
    ///
    /// The cache timeout is 2 s rather than the default 250 ms: with every test running at
    /// once on two cores, a healthy Redis can take longer than 250 ms to answer, and the node
    /// would rightly call the cache degraded and fail tests that expect a hit. Tests of a dead
    /// or paused Redis still see the timeout; it is only longer.
    pub fn with_redis(url: &str, prefix: &str) -> Self {
        Self {
            redis: Some((url.to_owned(), prefix.to_owned())),
            extra_args: vec!["--cache-timeout=2s".to_owned()],
            ..Self::default()
        }
    }
}

/// The machine's Redis, for tests that do not stop it.
pub fn test_redis_url() -> String {
    std::env::var("KG_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// A Redis key prefix no other test uses.
pub fn unique_prefix() -> String {
    format!("kgtest-{}", uuid::Uuid::new_v4().simple())
}

/// Starts a node with `options` over a fresh database.
pub async fn spawn_app_with(backend: Backend, options: AppOptions) -> TestApp {
    let dir = Arc::new(tempfile::tempdir().expect("tempdir"));
    let url = fresh_database(backend, dir.path()).await;
    spawn_app_on(&url, dir, options).await
}

pub async fn spawn_app(backend: Backend) -> TestApp {
    let dir = Arc::new(tempfile::tempdir().expect("tempdir"));
    let url = fresh_database(backend, dir.path()).await;
    spawn_app_on(&url, dir, AppOptions::default()).await
}

/// The arguments of a node on `url` listening on `address`, with `options`.
fn node_args(address: SocketAddr, url: &str, options: &AppOptions) -> Vec<String> {
    let mut args = vec![
        "kg-server".to_owned(),
        format!("--listen={address}"),
        format!("--database-url={url}"),
        format!(
            "--node-id={}",
            options.node_id.as_deref().unwrap_or("test-node")
        ),
    ];
    // A test may size the pool itself (one session, say, to know which session runs what).
    if !options
        .extra_args
        .iter()
        .any(|arg| arg.starts_with("--db-pool-size"))
    {
        args.push("--db-pool-size=8".to_owned());
    }
    if let Some((redis_url, prefix)) = &options.redis {
        args.push(format!("--redis-url={redis_url}"));
        args.push(format!("--redis-prefix={prefix}"));
    }
    args.extend(options.extra_args.iter().cloned());
    args
}

/// Builds a node on `url` and serves it on a free port until `shutdown` resolves.
async fn launch(
    url: &str,
    options: &AppOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> (SocketAddr, JoinHandle<anyhow::Result<()>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("local addr");
    let config =
        Config::try_parse_from(node_args(address, url, options)).expect("valid test config");
    let state = AppState::build(&config).await.expect("build app state");
    if let Some(cache) = &state.cache {
        // Wait for the first connection so tests start from a healthy cache.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !cache.recover().await {
            assert!(
                std::time::Instant::now() < deadline,
                "redis not reachable for the test"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    (
        address,
        tokio::spawn(kg_server::serve(listener, state, shutdown)),
    )
}

/// Starts a node on an existing database; `dir` keeps a SQLite file alive across restarts.
pub async fn spawn_app_on(url: &str, dir: Arc<tempfile::TempDir>, options: AppOptions) -> TestApp {
    let (shutdown, shutdown_rx) = oneshot::channel::<()>();
    let (address, handle) = launch(url, &options, async move {
        let _ = shutdown_rx.await;
    })
    .await;
    let base = format!("http://{address}");
    TestApp {
        address,
        client: kg_api::Client::new(&base).expect("client"),
        http: reqwest::Client::new(),
        base,
        database_url: url.to_owned(),
        shutdown: Some(shutdown),
        handle: Some(handle),
        _dir: dir,
    }
}

/// Starts a node on `database` (a SQLite file in `dir` when `None`, where the test keeps its
/// other files too) that serves until the test's runtime ends, and returns its endpoint.
/// For tests that only talk to a node; `spawn_app` gives one that can be stopped.
pub async fn spawn_node_in(dir: &Path, database: Option<&str>, options: AppOptions) -> String {
    let url = database.map_or_else(
        || format!("sqlite://{}", dir.join("kg.db").display()),
        str::to_owned,
    );
    let (address, _) = launch(&url, &options, std::future::pending()).await;
    format!("http://{address}")
}

/// An endpoint where nothing listens: a port that was free a moment ago.
pub fn dead_endpoint() -> String {
    format!("http://127.0.0.1:{}", crate::free_port())
}

/// An HTTP server that is not KeyGrid, for as long as the test's runtime lives: it answers
/// every request with `status` (e.g. `"404 Not Found"`) and `body`, without KeyGrid's
/// headers, as another service on a mistyped port would. Returns its endpoint.
pub async fn stranger_endpoint(status: &'static str, body: &'static str) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                // The request's head is read (bodies are not sent to it), then one answer.
                let mut head = Vec::new();
                let mut buffer = [0_u8; 1024];
                while !head.windows(4).any(|window| window == b"\r\n\r\n") {
                    match stream.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(read) => head.extend_from_slice(&buffer[..read]),
                    }
                }
                let answer = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\
                     connection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(answer.as_bytes()).await;
            });
        }
    });
    format!("http://{address}")
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A plain GET of `path` (with its query), for tests that look at the raw answer.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(self.url(path))
            .send()
            .await
            .unwrap_or_else(|err| panic!("GET {path}: {err}"))
    }

    /// The key as the database holds it, read directly rather than through the node.
    pub async fn state_store_get(&self, key: &str) -> kg_api::KeyRecord {
        open_store(&self.database_url)
            .await
            .get(key)
            .await
            .expect("store read")
            .expect("key exists")
    }

    /// Stops the node gracefully and waits for it to finish.
    pub async fn stop(mut self) -> Arc<tempfile::TempDir> {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(handle) = self.handle.take() {
            handle
                .await
                .expect("server task")
                .expect("server ran cleanly");
        }
        self._dir.clone()
    }
}

/// Opens a store directly, bypassing HTTP.
pub async fn open_store(url: &str) -> Arc<dyn Store> {
    let options = ConnectOptions {
        max_connections: 8,
        acquire_timeout: Duration::from_secs(5),
        read_fence: false,
    };
    store::connect(url, &options).await.expect("open store")
}
