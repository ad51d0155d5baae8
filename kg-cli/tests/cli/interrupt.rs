//! Ctrl-C: the real `kg` binary, sent SIGINT while it waits (on a watch, holding a lock, on
//! stdin), exits 130 as shells report an interrupted command; and a local file that cannot be
//! written is a usage error (2), not an unavailable server (4).

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::{kg, spawn_node};

/// `kg ARGS` as a real process, stdin, stdout and stderr piped.
fn spawn_kg(args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_kg"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

/// Whether the process has a handler of its own for SIGINT (Linux's `SigCgt` mask): only
/// then does a ctrl-c reach kg rather than end it by default, whatever the machine's speed.
fn catches_sigint(pid: u32) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("SigCgt:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .is_some_and(|mask| mask & (1 << (nix::libc::SIGINT - 1)) != 0)
}

/// Sends SIGINT once kg catches it, and returns its exit code and stderr.
async fn interrupt(mut child: Child) -> (Option<i32>, String) {
    let pid = child.id().unwrap();
    while !catches_sigint(pid) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let target = nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap());
    nix::sys::signal::kill(target, nix::sys::signal::Signal::SIGINT).unwrap();
    let _ = child.stdin.take();
    let output = child.wait_with_output().await.unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The first line kg prints: it is then where the test wants it, waiting.
async fn first_line(child: &mut Child) -> String {
    let stdout = child.stdout.take().unwrap();
    let line = BufReader::new(stdout).lines().next_line().await.unwrap();
    line.unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_exits_130_while_watching_holding_a_lock_or_reading_stdin() {
    let node = spawn_node().await;
    let e = node.endpoint.as_str();
    kg(&["-e", e, "put", "k", "v"], "").await;

    let mut watch = spawn_kg(&["-e", e, "watch", "--from-revision", "1"]);
    assert!(first_line(&mut watch).await.contains("PUT    k = v"));
    assert_eq!(interrupt(watch).await.0, Some(130), "kg watch");

    let mut lock = spawn_kg(&["-e", e, "lock", "held"]);
    assert!(first_line(&mut lock).await.starts_with("held/"));
    let (code, stderr) = interrupt(lock).await;
    assert_eq!(code, Some(130), "kg lock without a command: {stderr}");
    assert_eq!(
        kg(&["-e", e, "list", "--prefix", "held/", "--count"], "").await,
        (0, "0\n".into()),
        "the lock was released before kg exited"
    );

    // Waiting on a stdin that never ends: the read blocks, and ctrl-c still ends kg.
    let put = spawn_kg(&["-e", e, "put", "from-stdin", "-"]);
    assert_eq!(interrupt(put).await.0, Some(130), "kg put KEY -");
    assert_eq!(
        kg(&["-e", e, "get", "from-stdin"], "").await.0,
        1,
        "nothing written"
    );

    let mut keepalive = spawn_kg(&["-e", e, "lease", "grant", "60s"]);
    let grant = first_line(&mut keepalive).await;
    let id = grant.split_whitespace().nth(1).unwrap().to_owned();
    let mut forever = spawn_kg(&["-e", e, "lease", "keepalive", &id, "--forever"]);
    assert!(first_line(&mut forever).await.contains("kept alive"));
    assert_eq!(
        interrupt(forever).await.0,
        Some(130),
        "kg lease keepalive --forever"
    );
}

/// `kg lock` against a node that never answers: ctrl-c while the lease grant waits ends kg
/// with 130 at once, not when the request times out (it handles ctrl-c itself, to release
/// what it holds, and used to look only once it held the lease).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_ends_a_lock_whose_first_request_gets_no_answer() {
    // Connections wait in the backlog, never accepted, never answered.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", silent.local_addr().unwrap());
    for args in [vec!["lock", "HL"], vec!["lock", "HL", "--", "true"]] {
        let mut argv = vec!["-e", endpoint.as_str(), "--timeout", "60s"];
        argv.extend(args.iter().copied());
        // Had kg waited for the request instead, it would end 60 s later with 4 (timed out).
        let (code, stderr) = interrupt(spawn_kg(&argv)).await;
        assert_eq!(code, Some(130), "{args:?}: {stderr}");
    }
}

#[tokio::test]
async fn a_file_that_cannot_be_written_or_read_is_a_usage_error_not_an_unavailable_server() {
    let node = spawn_node().await;
    let e = node.endpoint.as_str();
    let (code, message) = kg(&["-e", e, "snapshot", "save", "/nonexistent/x"], "").await;
    assert_eq!(code, 2, "{message}");
    assert!(
        message.contains("cannot write /nonexistent/x.part"),
        "{message}"
    );
    let (code, message) = kg(&["-e", e, "txn", "/nonexistent/txn"], "").await;
    assert_eq!(code, 2, "{message}");
}
