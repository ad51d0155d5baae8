//! Servers of a test's own: a throwaway PostgreSQL and Redis on free ports, which a test may
//! stop, kill and start without touching the machine's shared servers.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// A private PostgreSQL in a temporary directory, on its own port, that a test may stop and
/// start without touching the machine's shared server.
#[derive(Debug)]
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
#[derive(Debug)]
pub struct ThrowawayRedis {
    pub port: u16,
    child: Option<std::process::Child>,
    extra: Vec<String>,
}

impl ThrowawayRedis {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// With more of redis-server's arguments (`--replicaof HOST PORT`, say).
    pub fn start_with(extra: &[String]) -> Self {
        let mut redis = Self {
            port: free_port(),
            child: None,
            extra: extra.to_vec(),
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
            .args(&self.extra)
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

/// A Redis primary, one replica and one Sentinel watching them (quorum 1), each on a free
/// port: enough for a real Sentinel failover when the primary is killed.
#[derive(Debug)]
pub struct ThrowawaySentinelGroup {
    pub primary: ThrowawayRedis,
    pub replica: ThrowawayRedis,
    pub sentinel_port: u16,
    sentinel: std::process::Child,
    /// The name the Sentinel knows the group by.
    pub master: String,
    _dir: tempfile::TempDir,
}

impl ThrowawaySentinelGroup {
    pub fn start() -> Self {
        let primary = ThrowawayRedis::start();
        let replica = ThrowawayRedis::start_with(&[
            "--replicaof".to_owned(),
            "127.0.0.1".to_owned(),
            primary.port.to_string(),
        ]);
        let dir = tempfile::Builder::new()
            .prefix("kg-sentinel-")
            .tempdir()
            .expect("tempdir");
        let master = "keygrid".to_owned();
        // A Sentinel rewrites its configuration file, so it gets one of its own, named
        // first on its command line. Short timings: a test waits for the failover.
        let sentinel_port = free_port();
        let conf = dir.path().join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {sentinel_port}\nbind 127.0.0.1\ndir {dir}\n\
                 sentinel monitor {master} 127.0.0.1 {port} 1\n\
                 sentinel down-after-milliseconds {master} 1000\n\
                 sentinel failover-timeout {master} 5000\n\
                 sentinel parallel-syncs {master} 1\n",
                dir = dir.path().display(),
                port = primary.port
            ),
        )
        .expect("sentinel.conf");
        let sentinel = Command::new("redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server is required: apt-get install redis-server");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::net::TcpStream::connect(("127.0.0.1", sentinel_port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "redis sentinel did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Self {
            primary,
            replica,
            sentinel_port,
            sentinel,
            master,
            _dir: dir,
        }
    }

    /// `HOST:PORT` of the Sentinel, as --redis-sentinel takes it.
    pub fn sentinel_address(&self) -> String {
        format!("127.0.0.1:{}", self.sentinel_port)
    }
}

impl Drop for ThrowawaySentinelGroup {
    fn drop(&mut self) {
        let _ = self.sentinel.kill();
        let _ = self.sentinel.wait();
    }
}
