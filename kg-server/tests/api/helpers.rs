//! Test fixtures: `spawn_app` starts a real node on a free port over a fresh database, and
//! `ThrowawayPostgres` runs a private PostgreSQL that a test may stop and start.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
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

/// Starts a node on an existing database; `dir` keeps a SQLite file alive across restarts.
pub async fn spawn_app_on(url: &str, dir: Arc<tempfile::TempDir>, options: AppOptions) -> TestApp {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("local addr");
    let mut args = vec![
        "kg-server".to_owned(),
        format!("--listen={address}"),
        format!("--database-url={url}"),
        format!(
            "--node-id={}",
            options.node_id.as_deref().unwrap_or("test-node")
        ),
        "--db-pool-size=8".to_owned(),
    ];
    if let Some((redis_url, prefix)) = &options.redis {
        args.push(format!("--redis-url={redis_url}"));
        args.push(format!("--redis-prefix={prefix}"));
    }
    args.extend(options.extra_args);
    let config = Config::try_parse_from(args).expect("valid test config");
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
    let (shutdown, shutdown_rx) = oneshot::channel::<()>();
    let handle = tokio::spawn(kg_server::serve(listener, state, async move {
        let _ = shutdown_rx.await;
    }));
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

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
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
    };
    store::connect(url, &options).await.expect("open store")
}

/// A private PostgreSQL in a temporary directory, on its own port, that a test may stop and
/// start without touching the machine's shared server.
pub struct ThrowawayPostgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    pub port: u16,
}

impl ThrowawayPostgres {
    pub fn start() -> Self {
        let bin = postgres_bin_dir();
        let dir = tempfile::Builder::new()
            .prefix("kg-pg-")
            .tempdir()
            .expect("tempdir");
        let port = free_port();
        let instance = Self { dir, bin, port };
        let data = instance.data_dir();
        instance.chown_for_postgres(instance.dir.path());
        instance.run(
            "initdb",
            &["-D", &data, "-A", "trust", "-U", "postgres", "--no-sync"],
        );
        instance.start_server();
        instance
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    pub fn stop_server(&self) {
        self.run(
            "pg_ctl",
            &["-D", &self.data_dir(), "-m", "fast", "-w", "stop"],
        );
    }

    pub fn start_server(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("postgres.log");
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data_dir(),
                "-o",
                &options,
                "-l",
                &log.display().to_string(),
                "-w",
                "start",
            ],
        );
    }

    fn data_dir(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn chown_for_postgres(&self, path: &Path) {
        if is_root() {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(path)
                .status()
                .expect("chown");
            assert!(status.success(), "chown of {} failed", path.display());
        }
    }

    /// PostgreSQL refuses to run as root, so as root its tools run as the postgres user.
    fn run(&self, tool: &str, args: &[&str]) {
        let program = self.bin.join(tool);
        let mut command = if is_root() {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(&program);
            command
        } else {
            Command::new(&program)
        };
        let output = command
            .args(args)
            .output()
            .unwrap_or_else(|err| panic!("failed to run {}: {err}", program.display()));
        assert!(
            output.status.success(),
            "{tool} {args:?} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

impl Drop for ThrowawayPostgres {
    fn drop(&mut self) {
        let _ = Command::new(if is_root() { "runuser" } else { "true" })
            .args(if is_root() {
                vec!["-u", "postgres", "--"]
            } else {
                vec![]
            })
            .arg(self.bin.join("pg_ctl"))
            .args(["-D", &self.data_dir(), "-m", "immediate", "stop"])
            .output();
    }
}

fn is_root() -> bool {
    std::env::var("USER")
        .map(|user| user == "root")
        .unwrap_or(false)
        || Command::new("id")
            .arg("-u")
            .output()
            .map(|output| output.stdout.starts_with(b"0\n"))
            .unwrap_or(false)
}

/// `KG_PG_BIN`, or the newest /usr/lib/postgresql/*/bin.
fn postgres_bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("KG_PG_BIN") {
        return PathBuf::from(dir);
    }
    let mut candidates: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|entry| entry.path().join("bin"))
                .filter(|bin| bin.join("initdb").exists())
                .collect()
        })
        .unwrap_or_default();
    candidates.sort();
    candidates.pop().expect(
        "PostgreSQL server binaries (initdb, pg_ctl) are required: apt-get install postgresql",
    )
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("free port")
}

/// A private redis-server on its own port, that a test may kill and restart.
pub struct ThrowawayRedis {
    pub port: u16,
    child: Option<std::process::Child>,
}

impl ThrowawayRedis {
    pub fn start() -> Self {
        let mut redis = Self {
            port: free_port(),
            child: None,
        };
        redis.restart();
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// SIGKILLs the server: everything it held is gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn restart(&mut self) {
        self.kill();
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server is required: apt-get install redis-server");
        self.child = Some(child);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A plain connection for the test's own commands.
    pub async fn connection(&self) -> redis::aio::MultiplexedConnection {
        redis_connection(&self.url()).await
    }
}

impl Drop for ThrowawayRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

pub async fn redis_connection(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .expect("redis url")
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|err| {
            panic!("Redis is required for the tests and is not reachable at {url}: {err}")
        })
}
