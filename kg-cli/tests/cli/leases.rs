//! `kg lease` and `kg lock`: leases through every subcommand, and locks held by real `kg`
//! processes, one holder at a time, freed by the TTL when a holder is SIGKILLed.

use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};

use super::{kg, spawn_node};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_commands_grant_keep_alive_show_list_and_revoke() {
    let node = spawn_node().await;
    let e = node.endpoint.as_str();
    let (code, id) = kg(&["-e", e, "-o", "raw", "lease", "grant", "30s"], "").await;
    assert_eq!(code, 0, "{id}");
    let id = id.trim().to_owned();
    assert_eq!(
        kg(&["-e", e, "put", "svc/a", "up", "--lease", &id], "").await,
        (0, "OK revision 1\n".into())
    );
    let (_, json) = kg(&["-e", e, "-o", "json", "get", "svc/a"], "").await;
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["lease"].as_str().map(str::to_owned), None);
    assert_eq!(json["lease"].as_i64().unwrap().to_string(), id);
    let left = json["ttl_remaining"].as_f64().unwrap();
    assert!(left > 25.0 && left <= 30.0, "{json}");

    let (code, shown) = kg(&["-e", e, "lease", "show", &id], "").await;
    assert_eq!(code, 0);
    assert!(
        shown.starts_with(&format!("lease {id}: TTL 30s, ")),
        "{shown}"
    );
    assert!(shown.contains("\n  svc/a\n"), "{shown}");
    let (_, listed) = kg(&["-e", e, "lease", "list"], "").await;
    assert!(
        listed.lines().next().unwrap().contains("REMAINING"),
        "{listed}"
    );
    assert!(
        listed
            .lines()
            .any(|line| line.trim_start().starts_with(&id)),
        "{listed}"
    );
    assert_eq!(
        kg(&["-e", e, "lease", "keepalive", &id], "").await,
        (0, format!("lease {id} kept alive with TTL 30s\n"))
    );
    assert_eq!(
        kg(&["-e", e, "lease", "revoke", &id], "").await,
        (
            0,
            format!("lease {id} revoked: 1 key deleted (revision 2)\n")
        )
    );
    let (code, _) = kg(&["-e", e, "get", "svc/a"], "").await;
    assert_eq!(code, 1, "the key went with its lease");
    let (_, line) = kg(
        &["-e", e, "watch", "--from-revision", "2", "--count", "1"],
        "",
    )
    .await;
    assert!(
        line.contains("DELETE svc/a  (rev 2, node cli-node, revoked)"),
        "{line}"
    );
    let (code, gone) = kg(&["-e", e, "lease", "keepalive", &id], "").await;
    assert_eq!(code, 1, "{gone}");
    assert!(gone.contains("not found"), "{gone}");

    // A TTL of the key's own; a TTL that is not whole seconds is a usage error.
    let (code, _) = kg(&["-e", e, "put", "tmp", "v", "--ttl", "1s"], "").await;
    assert_eq!(code, 0);
    let (code, err) = kg(&["-e", e, "put", "tmp", "v", "--ttl", "1500ms"], "").await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not a whole number of seconds"), "{err}");
    let gone = Instant::now() + kg_testkit::PATIENCE;
    while kg(&["-e", e, "get", "tmp"], "").await.0 == 0 {
        assert!(Instant::now() < gone, "the TTL never ran out");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `kg lock NAME [--ttl T] -- sh -c SCRIPT` as a real process, in a process group of its own
/// so that a test can kill it and its command together.
fn spawn_lock(endpoint: &str, name: &str, ttl: &str, script: &str) -> tokio::process::Child {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_kg"))
        .args([
            "-e", endpoint, "lock", name, "--ttl", ttl, "--", "sh", "-c", script,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holders_take_a_lock_one_at_a_time_in_order_of_arrival() {
    let node = spawn_node().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("holders.log");
    let go = dir.path().join("go");
    let mut holders = Vec::new();
    for holder in 0..4 {
        // Each holder waits for `go` before it works, so that the first keeps the lock until
        // every other has arrived.
        let script = format!(
            "while [ ! -e {go} ]; do sleep 0.05; done; echo {holder} start $(date +%s%N) >> {log}; \
             sleep 0.3; echo {holder} end $(date +%s%N) >> {log}",
            go = go.display(),
            log = log.display()
        );
        holders.push(spawn_lock(&node.endpoint, "jobs", "5s", &script));
        // The next arrives only once this one is queued (its key written): the order of
        // arrival is then certain, however slow the machine.
        let queued = Instant::now() + kg_testkit::PATIENCE;
        loop {
            let (_, count) = kg(
                &["-e", &node.endpoint, "list", "--prefix", "jobs/", "--count"],
                "",
            )
            .await;
            if count.trim() == (holder + 1).to_string() {
                break;
            }
            assert!(Instant::now() < queued, "holder {holder} never queued");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    std::fs::write(&go, "").unwrap();
    for holder in holders {
        let output = holder.wait_with_output().await.unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let key = String::from_utf8(output.stdout).unwrap();
        assert!(
            key.starts_with("jobs/"),
            "kg lock prints the lock's key: {key}"
        );
    }
    // Each start follows the previous holder's end: no two holders ever overlap.
    let lines = std::fs::read_to_string(&log).unwrap();
    let records: Vec<(u32, String, u128)> = lines
        .lines()
        .map(|line| {
            let mut fields = line.split(' ');
            (
                fields.next().unwrap().parse().unwrap(),
                fields.next().unwrap().to_owned(),
                fields.next().unwrap().parse().unwrap(),
            )
        })
        .collect();
    assert_eq!(records.len(), 8, "{lines}");
    for (index, pair) in records.chunks(2).enumerate() {
        let holder = u32::try_from(index).unwrap();
        assert_eq!(
            (pair[0].0, pair[0].1.as_str(), pair[1].0, pair[1].1.as_str()),
            (holder, "start", holder, "end"),
            "held in order of arrival, start then end: {lines}"
        );
        assert!(pair[0].2 <= pair[1].2, "{lines}");
    }
    for window in records.windows(2) {
        assert!(window[0].2 <= window[1].2, "overlap: {lines}");
    }
    // Released: the lock's keys are gone with their leases.
    let (_, left) = kg(
        &["-e", &node.endpoint, "list", "--prefix", "jobs/", "--count"],
        "",
    )
    .await;
    assert_eq!(left.trim(), "0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_whose_holder_is_killed_frees_itself_when_its_ttl_runs_out() {
    let node = spawn_node().await;
    let mut holder = spawn_lock(&node.endpoint, "db-migrate", "2s", "sleep 60");
    let mut stdout = BufReader::new(holder.stdout.take().unwrap()).lines();
    let key = tokio::time::timeout(kg_testkit::PATIENCE, stdout.next_line())
        .await
        .expect("the lock is taken")
        .unwrap()
        .unwrap();
    assert!(key.starts_with("db-migrate/"), "{key}");
    // SIGKILL kg and its command together: nothing gets to release the lock.
    let group = nix::unistd::Pid::from_raw(-i32::try_from(holder.id().unwrap()).unwrap());
    nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGKILL).unwrap();
    let _ = holder.wait().await;

    // The next holder's command looks for the dead holder's key: it must be gone by then.
    let script = format!(
        "{kg} -e {e} get {key}; echo \"old key: exit $?\"",
        kg = env!("CARGO_BIN_EXE_kg"),
        e = node.endpoint
    );
    let next = spawn_lock(&node.endpoint, "db-migrate", "2s", &script);
    let output = tokio::time::timeout(kg_testkit::PATIENCE, next.wait_with_output())
        .await
        .expect("the next holder gets the lock once the TTL runs out")
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let printed = String::from_utf8(output.stdout).unwrap();
    assert!(
        printed.contains("old key: exit 1"),
        "the next holder ran while the dead one's key was still there: {printed}"
    );
    // Freed by its TTL, not released: nobody was left to release it. (How long that took is
    // a duration, the TTL's business: not asserted here.)
    let (_, history) = kg(&["-e", &node.endpoint, "history", &key], "").await;
    let last = history.lines().nth(1).unwrap_or_default();
    assert!(
        last.contains("delete") && last.contains("(expired)"),
        "{history}"
    );
}
