//! `kg snapshot save` and `kg snapshot restore`: a round trip between real nodes, leases
//! included, and the refusals (a non-empty cluster, a damaged file) that write nothing.

use kg_testkit::AppOptions;

use super::{kg, spawn_node};

/// Every live key of a node: key, value, and the lease it shares with which other keys.
async fn contents(endpoint: &str) -> Vec<(String, String, Option<i64>)> {
    let client = kg_api::Client::new(endpoint).unwrap();
    client
        .list_all(None, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|record| (record.key, record.value.unwrap(), record.lease))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saved_snapshot_restores_every_value_and_lease_into_an_empty_cluster() {
    let source = spawn_node().await;
    let e = source.endpoint.as_str();
    for i in 0..300 {
        let (code, out) = kg(
            &["-e", e, "put", &format!("app/{i:03}"), &format!("v{i}")],
            "",
        )
        .await;
        assert_eq!(code, 0, "{out}");
    }
    kg(&["-e", e, "delete", "app/000"], "").await;
    let (_, lease) = kg(&["-e", e, "-o", "raw", "lease", "grant", "300s"], "").await;
    let lease = lease.trim();
    for key in ["svc/a", "svc/b"] {
        assert_eq!(
            kg(&["-e", e, "put", key, "up", "--lease", lease], "")
                .await
                .0,
            0
        );
    }
    assert_eq!(
        kg(&["-e", e, "put", "session", "s", "--ttl", "120s"], "")
            .await
            .0,
        0
    );
    let (_, revision) = kg(
        &["-e", e, "-o", "raw", "put", "ünï/日本", "line\nbreak"],
        "",
    )
    .await;

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("backup.kgs");
    let file_arg = file.to_str().unwrap();
    let (code, saved) = kg(&["-e", e, "snapshot", "save", file_arg], "").await;
    assert_eq!(code, 0, "{saved}");
    assert!(
        saved.starts_with(&format!(
            "saved 303 keys at revision {} to {file_arg} (",
            revision.trim()
        )),
        "{saved}"
    );
    assert!(!dir.path().join("backup.kgs.part").exists());

    // A cluster that holds keys is refused, and nothing is written to it.
    let busy = spawn_node().await;
    kg(&["-e", &busy.endpoint, "put", "mine", "keep"], "").await;
    let (code, refused) = kg(&["-e", &busy.endpoint, "snapshot", "restore", file_arg], "").await;
    assert_eq!(code, 2, "{refused}");
    assert!(refused.contains("the cluster holds 1 key:"), "{refused}");
    assert_eq!(contents(&busy.endpoint).await.len(), 1);

    let target = spawn_node().await;
    let (code, restored) = kg(
        &[
            "-e",
            &target.endpoint,
            "-o",
            "json",
            "snapshot",
            "restore",
            file_arg,
        ],
        "",
    )
    .await;
    assert_eq!(code, 0, "{restored}");
    let restored: serde_json::Value = serde_json::from_str(&restored).unwrap();
    assert_eq!(restored["keys"], 303);
    assert_eq!(restored["leases"], 2, "svc/a and svc/b share one lease");
    assert_eq!(restored["snapshot_revision"].to_string(), revision.trim());

    let (before, after) = (contents(e).await, contents(&target.endpoint).await);
    let values = |rows: &[(String, String, Option<i64>)]| {
        rows.iter()
            .map(|(key, value, lease)| (key.clone(), value.clone(), lease.is_some()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        values(&after),
        values(&before),
        "every key, value and lease"
    );
    let lease_of = |key: &str| after.iter().find(|row| row.0 == key).unwrap().2;
    assert_eq!(
        lease_of("svc/a"),
        lease_of("svc/b"),
        "keys that shared a lease still do"
    );
    assert_ne!(lease_of("svc/a"), lease_of("session"));
    let (_, shown) = kg(&["-e", &target.endpoint, "-o", "json", "get", "svc/a"], "").await;
    let left = serde_json::from_str::<serde_json::Value>(&shown).unwrap()["ttl_remaining"]
        .as_f64()
        .unwrap();
    assert!(
        left > 250.0 && left <= 300.0,
        "the lease's time left is kept: {left}"
    );

    // --force replaces what is there: the store ends equal to the snapshot.
    let (code, forced) = kg(
        &[
            "-e",
            &busy.endpoint,
            "snapshot",
            "restore",
            "--force",
            file_arg,
        ],
        "",
    )
    .await;
    assert_eq!(code, 0, "{forced}");
    assert!(
        forced.starts_with("restored 303 keys (2 leases) from "),
        "{forced}"
    );
    assert_eq!(values(&contents(&busy.endpoint).await), values(&before));
}

/// The case: a 37-key snapshot restored with --force over a 3-key store (one key in
/// common) leaves the 37 keys and nothing else; --merge keeps the store's other keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forced_restore_replaces_the_store_and_merge_keeps_its_other_keys() {
    let source = spawn_node().await;
    let e = source.endpoint.as_str();
    for i in 0..37 {
        kg(
            &["-e", e, "put", &format!("k/{i:02}"), &format!("v{i}")],
            "",
        )
        .await;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("37.kgs");
    let file_arg = file.to_str().unwrap();
    assert_eq!(kg(&["-e", e, "snapshot", "save", file_arg], "").await.0, 0);
    let wanted = contents(e).await;

    let fill = |endpoint: String| async move {
        for (key, value) in [("k/05", "old"), ("a-extra", "x"), ("z/extra", "y")] {
            kg(&["-e", &endpoint, "put", key, value], "").await;
        }
    };
    let target = spawn_node().await;
    fill(target.endpoint.clone()).await;
    let (code, refused) = kg(
        &["-e", &target.endpoint, "snapshot", "restore", file_arg],
        "",
    )
    .await;
    assert_eq!(code, 2, "{refused}");
    assert!(
        refused.contains("--force") && refused.contains("--merge"),
        "the refusal names both ways on: {refused}"
    );
    let (code, forced) = kg(
        &kg_testkit::argv(&format!(
            "-e {} -o json snapshot restore --force {file_arg}",
            target.endpoint
        )),
        "",
    )
    .await;
    assert_eq!(code, 0, "{forced}");
    let forced: serde_json::Value = serde_json::from_str(&forced).unwrap();
    assert_eq!(
        (forced["keys"].as_u64(), forced["deleted"].as_u64()),
        (Some(37), Some(2))
    );
    assert_eq!(
        contents(&target.endpoint).await,
        wanted,
        "equal to the snapshot"
    );

    let merged = spawn_node().await;
    fill(merged.endpoint.clone()).await;
    let (code, out) = kg(
        &[
            "-e",
            &merged.endpoint,
            "snapshot",
            "restore",
            "--merge",
            file_arg,
        ],
        "",
    )
    .await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.starts_with("restored 37 keys (0 leases) from "),
        "{out}"
    );
    let after = contents(&merged.endpoint).await;
    assert_eq!(after.len(), 39, "{after:?}");
    assert!(after.iter().any(|row| row.0 == "a-extra"));
    assert!(after.contains(&("k/05".to_owned(), "v5".to_owned(), None)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_snapshot_file_is_refused_before_anything_is_written() {
    let source = spawn_node().await;
    let e = source.endpoint.as_str();
    for key in ["a", "b", "c"] {
        kg(&["-e", e, "put", key, key], "").await;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("whole.kgs");
    assert_eq!(
        kg(&["-e", e, "snapshot", "save", file.to_str().unwrap()], "")
            .await
            .0,
        0
    );
    let whole = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<&str> = whole.lines().collect();
    assert_eq!(lines.len(), 5, "header, three keys, end: {whole}");

    let damaged = [
        ("cut", lines[..4].join("\n")),
        ("miscounted", [&lines[..3], &lines[4..]].concat().join("\n")),
        ("repeated", [&lines[..3], &lines[2..]].concat().join("\n")),
        ("not-a-snapshot", "{\"hello\": 1}\n".to_owned()),
    ];
    let target = spawn_node().await;
    for (name, text) in damaged {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        let (code, out) = kg(
            &[
                "-e",
                &target.endpoint,
                "snapshot",
                "restore",
                path.to_str().unwrap(),
            ],
            "",
        )
        .await;
        assert_eq!(code, 2, "{name}: {out}");
        assert!(out.contains("is not a whole snapshot"), "{name}: {out}");
    }
    let (code, out) = kg(
        &[
            "-e",
            &target.endpoint,
            "snapshot",
            "restore",
            "/nonexistent/file",
        ],
        "",
    )
    .await;
    assert_eq!(
        (code, out.contains("cannot read /nonexistent/file")),
        (2, true),
        "{out}"
    );
    assert!(
        contents(&target.endpoint).await.is_empty(),
        "nothing was written"
    );
}

/// A file whose format is whole but whose key the node would refuse, or whose value is over
/// the node's limit, is refused before the first write (by `status` too, for the key): a
/// restore used to write the keys before it and stop there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_the_node_would_refuse_in_part_writes_nothing() {
    let source = spawn_node().await;
    let e = source.endpoint.as_str();
    for key in ["a", "b"] {
        kg(&["-e", e, "put", key, key], "").await;
    }
    kg(&["-e", e, "put", "y", &"v".repeat(2000)], "").await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("whole.kgs");
    let path = file.to_str().unwrap();
    assert_eq!(kg(&["-e", e, "snapshot", "save", path], "").await.0, 0);
    let whole = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<&str> = whole.lines().collect();
    // A control character in the last key: the format is whole, the key is not one.
    let bad_key = lines[3].replacen("\"key\":\"y\"", "\"key\":\"z\\u0001\"", 1);
    assert_ne!(bad_key, lines[3], "{}", lines[3]);
    let bad = dir.path().join("bad-key.kgs");
    std::fs::write(
        &bad,
        [lines[0], lines[1], lines[2], &bad_key, lines[4]].join("\n"),
    )
    .unwrap();
    let bad = bad.to_str().unwrap();
    let (code, out) = kg(&["snapshot", "status", bad], "").await;
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("control characters"), "{out}");

    let dir_small = tempfile::tempdir().unwrap();
    let small = kg_testkit::spawn_node_in(
        dir_small.path(),
        None,
        AppOptions {
            extra_args: vec!["--max-value-bytes=1000".to_owned()],
            ..AppOptions::default()
        },
    )
    .await;
    for file in [bad, path] {
        let (code, out) = kg(&["-e", &small, "snapshot", "restore", file], "").await;
        assert_eq!(code, 2, "{file}: {out}");
        assert!(
            contents(&small).await.is_empty(),
            "{file}: nothing written: {out}"
        );
    }
    let (_, out) = kg(&["-e", &small, "snapshot", "restore", path], "").await;
    assert!(out.contains("over the node's limit"), "{out}");
}

/// `kg snapshot save FILE` replaces only a regular file: a device, a pipe or a link at FILE
/// is refused before the download (a rename used to put a regular file in its place).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_replaces_only_a_regular_file() {
    let node = spawn_node().await;
    let e = node.endpoint.as_str();
    kg(&["-e", e, "put", "a", "1"], "").await;
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo.kgs");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let target = dir.path().join("target.kgs");
    std::fs::write(&target, "old").unwrap();
    let link = dir.path().join("link.kgs");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    for path in [&fifo, &link, &dir.path().to_path_buf()] {
        let (code, out) = kg(&["-e", e, "snapshot", "save", path.to_str().unwrap()], "").await;
        assert_eq!(code, 2, "{}: {out}", path.display());
        assert!(out.contains("is not a regular file"), "{out}");
    }
    use std::os::unix::fs::FileTypeExt as _;
    assert!(std::fs::symlink_metadata(&fifo)
        .unwrap()
        .file_type()
        .is_fifo());
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "old");
    let file = dir.path().join("new.kgs");
    assert_eq!(
        kg(&["-e", e, "snapshot", "save", file.to_str().unwrap()], "")
            .await
            .0,
        0
    );
    assert_eq!(
        kg(&["-e", e, "snapshot", "save", file.to_str().unwrap()], "")
            .await
            .0,
        0
    );
}

/// `kg snapshot save -` writes the snapshot to stdout, `restore -` reads one from stdin, and
/// `kg snapshot status FILE` says what a file holds (keys, revision, size, checksum) after
/// checking it whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_go_through_stdout_and_stdin_and_status_describes_a_file() {
    use sha2::Digest as _;
    let source = spawn_node().await;
    let e = source.endpoint.as_str();
    for key in ["a", "b", "c"] {
        kg(&["-e", e, "put", key, key], "").await;
    }
    let (_, lease) = kg(&["-e", e, "-o", "raw", "lease", "grant", "300s"], "").await;
    kg(&["-e", e, "put", "d", "d", "--lease", lease.trim()], "").await;
    let (code, snapshot) = kg(&["-e", e, "snapshot", "save", "-"], "").await;
    assert_eq!(code, 0, "{snapshot}");
    assert_eq!(
        snapshot.lines().count(),
        6,
        "header, four keys, end: {snapshot}"
    );
    assert!(
        snapshot.starts_with("{\"format\":\"keygrid-snapshot\""),
        "{snapshot}"
    );

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("four.kgs");
    std::fs::write(&file, &snapshot).unwrap();
    let file_arg = file.to_str().unwrap();
    let (code, status) = kg(&["-o", "json", "snapshot", "status", file_arg], "").await;
    assert_eq!(code, 0, "{status}");
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    let sha256 = format!("{:x}", sha2::Sha256::digest(snapshot.as_bytes()));
    assert_eq!(
        (
            status["keys"].as_u64(),
            status["revision"].as_i64(),
            status["leases"].as_u64(),
            status["bytes"].as_u64(),
            status["sha256"].as_str()
        ),
        (
            Some(4),
            Some(4),
            Some(1),
            Some(snapshot.len() as u64),
            Some(sha256.as_str())
        ),
        "{status}"
    );
    let (code, text) = kg(&["snapshot", "status", file_arg], "").await;
    assert_eq!(code, 0, "{text}");
    assert!(text.contains(&sha256) && text.contains("keys"), "{text}");
    std::fs::write(&file, &snapshot[..snapshot.len() - 5]).unwrap();
    let (code, damaged) = kg(&["snapshot", "status", file_arg], "").await;
    assert_eq!(code, 2, "{damaged}");
    assert!(damaged.contains("is not a whole snapshot"), "{damaged}");

    // One key and one lease: counted in the singular.
    let one = spawn_node().await;
    kg(
        &["-e", &one.endpoint, "put", "solo", "v", "--ttl", "300s"],
        "",
    )
    .await;
    let (code, saved) = kg(&["-e", &one.endpoint, "snapshot", "save", "-"], "").await;
    assert_eq!(code, 0, "{saved}");
    let other = spawn_node().await;
    let (code, restored) = kg(&["-e", &other.endpoint, "snapshot", "restore", "-"], &saved).await;
    assert_eq!(code, 0, "{restored}");
    assert!(
        restored.starts_with("restored 1 key (1 lease) from standard input "),
        "{restored}"
    );

    let target = spawn_node().await;
    let (code, restored) = kg(
        &["-e", &target.endpoint, "snapshot", "restore", "-"],
        &snapshot,
    )
    .await;
    assert_eq!(code, 0, "{restored}");
    assert!(
        restored.starts_with("restored 4 keys (") && restored.contains(" from standard input "),
        "{restored}"
    );
    assert_eq!(contents(&target.endpoint).await.len(), 4);
}

/// A restore retries a put the node answered 503 (here: another session holds the write lock
/// past the node's --db-timeout, and the put commits once it is let go); the retry names the
/// same write, so every key is restored once, at version 1, not once per attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_that_retries_a_put_applies_it_once() {
    let source = spawn_node().await;
    for key in ["a", "b", "c"] {
        kg(&["-e", &source.endpoint, "put", key, key], "").await;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("backup.kgs");
    let file_arg = file.to_str().unwrap();
    let (code, saved) = kg(&["-e", &source.endpoint, "snapshot", "save", file_arg], "").await;
    assert_eq!(code, 0, "{saved}");

    let target_dir = tempfile::tempdir().unwrap();
    let options = kg_testkit::AppOptions {
        extra_args: vec!["--db-timeout=300ms".to_owned()],
        ..kg_testkit::AppOptions::default()
    };
    let target = kg_testkit::spawn_node_in(target_dir.path(), None, options).await;
    let database = format!("sqlite://{}", target_dir.path().join("kg.db").display());
    let lock =
        kg_testkit::hold_revision_lock(&database, std::time::Duration::from_millis(1500)).await;
    let (code, restored) = kg(&["-e", &target, "snapshot", "restore", file_arg], "").await;
    lock.await.unwrap();
    assert_eq!(code, 0, "{restored}");
    let client = kg_api::Client::new(&target).unwrap();
    for key in ["a", "b", "c"] {
        let read = client.get(key).await.unwrap();
        assert_eq!(
            (read.value.as_str(), read.version),
            (key, 1),
            "{key} was written once per attempt"
        );
    }
}
