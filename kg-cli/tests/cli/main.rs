//! kg's tests: the real command dispatch (`Cli::try_parse_from` + `run`) against a real node
//! on a free port, checking output in every mode, stdin values, failover and exit codes.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test, with its location

use clap::Parser;
use kg_cli::{run, Cli, CliError};
use kg_testkit::{dead_endpoint, AppOptions};

mod backup;
#[path = "../common/kg.rs"]
mod common;
use common::kg;
mod interrupt;
mod leases;
mod txn;

/// A node on embedded SQLite in a temporary directory.
struct Node {
    endpoint: String,
    _dir: tempfile::TempDir,
}

async fn spawn_node() -> Node {
    let dir = tempfile::tempdir().unwrap();
    let options = AppOptions {
        node_id: Some("cli-node".to_owned()),
        ..AppOptions::default()
    };
    let endpoint = kg_testkit::spawn_node_in(dir.path(), None, options).await;
    Node {
        endpoint,
        _dir: dir,
    }
}

#[tokio::test]
async fn put_get_delete_in_every_output_mode() {
    let node = spawn_node().await;
    let e = node.endpoint.as_str();
    assert_eq!(
        kg(&["-e", e, "put", "greeting", "hello"], "").await,
        (0, "OK revision 1\n".into())
    );
    assert_eq!(
        kg(&["-e", e, "get", "greeting"], "").await,
        (0, "hello\n".into())
    );
    assert_eq!(
        kg(&["-e", e, "-o", "raw", "get", "greeting"], "").await,
        (0, "hello".into())
    );
    let (code, json) = kg(&["-e", e, "-o", "json", "get", "greeting"], "").await;
    assert_eq!(code, 0);
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"key":"greeting","value":"hello","revision":1,"create_revision":1,
                           "version":1,"node":"cli-node","cache":"miss"})
    );
    let (_, put_json) = kg(&["-e", e, "-o", "json", "put", "greeting", "again"], "").await;
    let put_json: serde_json::Value = serde_json::from_str(&put_json).unwrap();
    assert_eq!(
        (put_json["revision"].as_i64(), put_json["version"].as_i64()),
        (Some(2), Some(2))
    );
    assert_eq!(
        kg(&["-e", e, "-o", "raw", "delete", "greeting"], "").await,
        (0, "3\n".into())
    );
}

#[tokio::test]
async fn delete_prefix_removes_a_range_at_one_revision_and_all_needs_saying() {
    let node = spawn_node().await;
    let e = node.endpoint.as_str();
    for key in ["app/a", "app/b", "apple", "other"] {
        assert_eq!(kg(&["-e", e, "put", key, "v"], "").await.0, 0);
    }
    assert_eq!(
        kg(&["-e", e, "delete", "app/", "--prefix"], "").await,
        (0, "OK deleted 2 keys at revision 5\n".into())
    );
    assert_eq!(
        kg(&["-e", e, "-o", "raw", "list", "--keys-only"], "").await,
        (0, "apple\nother\n".into())
    );
    let (code, json) = kg(&["-e", e, "-o", "json", "delete", "app/", "--prefix"], "").await;
    assert_eq!(code, 0);
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"prefix": "app/", "deleted": 0, "revision": 5})
    );
    // An empty prefix is every key: kg wants that said with --all, in its own words.
    let (code, message) = kg(&["-e", e, "delete", "", "--prefix"], "").await;
    assert_eq!(code, 2, "{message}");
    assert!(
        message.contains("--all") && !message.contains("all=true"),
        "{message}"
    );
    assert_eq!(kg(&["-e", e, "delete", "x", "--all"], "").await.0, 2);
    assert_eq!(
        kg(
            &["-e", e, "delete", "x", "--prefix", "--if-revision", "3"],
            ""
        )
        .await
        .0,
        2
    );
    assert_eq!(
        kg(&["-e", e, "-o", "raw", "delete", "--all"], "").await,
        (0, "2\n".into())
    );
    assert_eq!(
        kg(&["-e", e, "list", "--count"], "").await,
        (0, "0\n".into())
    );
}

#[tokio::test]
async fn txn_reads_json_from_stdin_or_a_file_and_prints_the_branch_that_ran() {
    let node = spawn_node().await;
    let e = node.endpoint.as_str();
    assert_eq!(kg(&["-e", e, "put", "a", "1"], "").await.0, 0);
    let swap = r#"{"compare": [{"key": "a", "target": "value", "op": "==", "value": "1"}],
                   "success": [{"op": "put", "key": "a", "value": "2"},
                               {"op": "put", "key": "b", "value": "x"},
                               {"op": "get", "key": "a"}],
                   "failure": [{"op": "get", "key": "a"}, {"op": "get", "key": "zz"}]}"#;
    assert_eq!(
        kg(&["-e", e, "txn"], swap).await,
        (
            0,
            "SUCCESS revision 2\nput a (version 2)\nput b (version 1)\nget a (revision 2)\n2\n"
                .into()
        )
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("swap.json");
    std::fs::write(&file, swap).unwrap();
    let path = file.to_str().unwrap();
    assert_eq!(
        kg(&["-e", e, "txn", path], "").await,
        (
            0,
            "FAILURE revision 2\nget a (revision 2)\n2\nget zz: not found\n".into()
        ),
        "the compare no longer holds, and a failure exits 0 as etcdctl's does"
    );
    let (code, json) = kg(&["-e", e, "-o", "json", "txn", "-"], swap).await;
    assert_eq!(code, 0);
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        (json["succeeded"].as_bool(), json["revision"].as_i64()),
        (Some(false), Some(2))
    );
    assert_eq!(
        json["results"][1],
        serde_json::json!({"op": "get", "key": "zz", "kv": null})
    );
    // A typo is named before anything is sent; what only the node can refuse exits 2 too.
    let (code, message) = kg(&["-e", e, "txn"], r#"{"sucess": []}"#).await;
    assert_eq!(code, 2, "{message}");
    assert!(message.contains("sucess"), "{message}");
    let twice =
        r#"{"success": [{"op": "put", "key": "a", "value": "3"}, {"op": "delete", "key": "a"}]}"#;
    let (code, message) = kg(&["-e", e, "txn"], twice).await;
    assert_eq!(code, 2, "{message}");
    assert!(message.contains("written twice"), "{message}");
    assert_eq!(kg(&["-e", e, "get", "a"], "").await, (0, "2\n".into()));
    // etcdctl's text form: compares, blank line, success ops, blank line, failure ops.
    let text = "value(\"a\") = \"2\"\n\nput a 'five and more'\nget a\n\nget a\n";
    assert_eq!(
        kg(&["-e", e, "txn"], text).await,
        (
            0,
            "SUCCESS revision 3\nput a (version 3)\nget a (revision 3)\nfive and more\n".into()
        )
    );
    let (code, message) = kg(&["-e", e, "txn"], "value(a) ~ 1\n").await;
    assert_eq!(code, 2, "{message}");
    assert!(message.contains("line 1: expected a compare"), "{message}");
}

#[tokio::test]
async fn history_lists_versions_get_reads_a_past_revision_and_compact_drops_them() {
    let node = spawn_node().await;
    let e = node.endpoint.as_str();
    for args in [
        "put h one",
        "put h two",
        "delete h",
        "put h three",
        "put other x",
    ] {
        assert_eq!(
            kg(&kg_testkit::argv(&format!("-e {e} {args}")), "").await.0,
            0
        );
    }
    assert_eq!(
        kg(&["-e", e, "get", "h", "--revision", "1"], "").await,
        (0, "one\n".into())
    );
    assert_eq!(
        kg(&["-e", e, "get", "h", "--revision", "3"], "").await,
        (1, "error: Key not found".into()),
        "deleted at revision 3"
    );
    assert_eq!(
        kg(&["-e", e, "-o", "raw", "history", "h"], "").await,
        (
            0,
            "4\tput\tthree\n3\tdelete\t\n2\tput\ttwo\n1\tput\tone\n".into()
        )
    );
    assert_eq!(
        kg(&["-e", e, "-o", "raw", "history", "h", "--limit", "2"], "").await,
        (0, "4\tput\tthree\n3\tdelete\t\n".into())
    );
    let (code, table) = kg(&["-e", e, "history", "h"], "").await;
    assert_eq!(code, 0);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 5, "{table}");
    assert!(
        lines[0].starts_with("REVISION  TYPE    VERSION  AT"),
        "{table}"
    );
    assert!(
        lines[1].starts_with("4         put     1        20"),
        "{table}"
    );
    assert!(lines[1].ends_with("cli-node  three"), "{table}");
    let (_, json) = kg(&["-e", e, "-o", "json", "history", "h"], "").await;
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json[1]["type"], "delete");
    assert_eq!(json[3]["value"], "one");

    assert_eq!(
        kg(&["-e", e, "compact", "2"], "").await,
        (
            0,
            "compacted to revision 2: 1 replaced version and 0 tombstones dropped\n".into()
        )
    );
    let (code, message) = kg(&["-e", e, "get", "h", "--revision", "1"], "").await;
    assert_eq!(code, 2, "{message}");
    assert!(message.contains("revision 1 is compacted"), "{message}");
    let (code, message) = kg(&["-e", e, "compact", "99"], "").await;
    assert_eq!(code, 2, "{message}");
    assert!(message.contains("in the future"), "{message}");
    assert_eq!(kg(&["-e", e, "get", "h", "--revision", "0"], "").await.0, 2);
    assert_eq!(
        kg(&["-e", e, "-o", "raw", "compact", "1"], "").await,
        (0, "2\n".into()),
        "already compacted further"
    );
}

#[tokio::test]
async fn put_reads_the_value_from_stdin_with_a_dash() {
    let node = spawn_node().await;
    let e = node.endpoint.as_str();
    let value = "line one\nline two\n\u{e9}";
    assert_eq!(kg(&["-e", e, "put", "doc", "-"], value).await.0, 0);
    assert_eq!(
        kg(&["-e", e, "-o", "raw", "get", "doc"], "").await,
        (0, value.to_owned())
    );
}

#[tokio::test]
async fn exit_codes_are_documented_and_distinct() {
    let node = spawn_node().await;
    let e = node.endpoint.as_str();
    // 1: key not found, with the server's detail.
    assert_eq!(
        kg(&["-e", e, "get", "missing"], "").await,
        (1, "error: Key not found".into())
    );
    assert_eq!(kg(&["-e", e, "delete", "missing"], "").await.0, 1);
    // 2: usage errors, from clap and from the server's 4xx.
    assert_eq!(kg(&["-e", e, "get"], "").await.0, 2);
    assert_eq!(
        kg(
            &[
                "-e",
                e,
                "put",
                "k",
                "v",
                "--if-revision",
                "1",
                "--create-only"
            ],
            ""
        )
        .await
        .0,
        2
    );
    assert_eq!(kg(&["--timeout", "soon", "get", "k"], "").await.0, 2);
    let (code, message) = kg(&["-e", e, "put", "bad\nkey", "v"], "").await;
    assert_eq!(code, 2, "{message}");
    assert!(message.contains("control characters"), "{message}");
    // 3: a lost compare-and-swap.
    kg(&["-e", e, "put", "k", "v"], "").await;
    let (code, message) = kg(&["-e", e, "put", "k", "w", "--if-revision", "99"], "").await;
    assert_eq!(code, 3);
    assert!(
        message.starts_with("error: precondition failed"),
        "{message}"
    );
    assert_eq!(
        kg(&["-e", e, "put", "k", "w", "--create-only"], "").await.0,
        3
    );
    assert_eq!(
        kg(&["-e", e, "delete", "k", "--if-revision", "99"], "")
            .await
            .0,
        3
    );
    assert_eq!(
        kg(&["-e", e, "put", "k", "w", "--if-revision", "1"], "")
            .await
            .0,
        0
    );
    // 4: nothing reachable.
    let (code, message) = kg(&["-e", &dead_endpoint(), "--timeout", "1s", "get", "k"], "").await;
    assert_eq!(code, 4);
    assert!(message.starts_with("error: cannot reach"), "{message}");
}

/// A 404 is "key not found" (exit 1) only when a KeyGrid node said so; a wrong path on a node,
/// or another HTTP service, is "no KeyGrid API" (exit 4, as nothing could serve the request).
#[tokio::test]
async fn a_wrong_endpoint_is_no_keygrid_api_not_a_missing_key() {
    let node = spawn_node().await;
    let with_path = format!("{}/api", node.endpoint);
    let (code, message) = kg(&["-e", &with_path, "get", "a"], "").await;
    assert_eq!(code, 4, "{message}");
    assert!(
        message.starts_with(&format!("error: no KeyGrid API at {with_path}/")),
        "{message}"
    );
    for (status, body) in [
        ("404 Not Found", "Not Found"),
        // Even the seed's body, from a server that is not a KeyGrid node.
        ("404 Not Found", r#"{"detail":"Key not found"}"#),
    ] {
        let stranger = kg_testkit::stranger_endpoint(status, body).await;
        let (code, message) = kg(&["-e", &stranger, "get", "a"], "").await;
        assert_eq!(code, 4, "{body}: {message}");
        assert!(
            message.starts_with(&format!("error: no KeyGrid API at {stranger}/")),
            "{message}"
        );
    }
    assert_eq!(
        kg(&["-e", &node.endpoint, "get", "a"], "").await,
        (1, "error: Key not found".into()),
        "the node's own 404 is still a missing key"
    );
}

/// As etcdctl takes `--endpoints 127.0.0.1:2379`, kg takes a bare HOST:PORT as http.
#[tokio::test]
async fn a_bare_host_and_port_is_an_http_endpoint() {
    let node = spawn_node().await;
    let bare = node.endpoint.strip_prefix("http://").unwrap();
    assert_eq!(
        kg(&["-e", bare, "put", "k", "v"], "").await,
        (0, "OK revision 1\n".into())
    );
    let localhost = bare.replace("127.0.0.1", "localhost");
    assert_eq!(
        kg(&["-e", &localhost, "get", "k"], "").await,
        (0, "v\n".into())
    );
}

#[tokio::test]
async fn a_dead_endpoint_is_skipped_for_the_next_one() {
    let node = spawn_node().await;
    let endpoints = format!("{},{}", dead_endpoint(), node.endpoint);
    assert_eq!(kg(&["-e", &endpoints, "put", "k", "v"], "").await.0, 0);
    let dead = dead_endpoint();
    assert_eq!(
        kg(&["-e", &dead, "-e", &node.endpoint, "get", "k"], "").await,
        (0, "v\n".into())
    );
}

#[tokio::test]
async fn list_walks_every_page_and_prints_an_aligned_table() {
    let node = spawn_node().await;
    let e = node.endpoint.as_str();
    for (key, value) in [
        ("user/1", "ann"),
        ("user/2", "bob"),
        ("user/10", "a longer value"),
        ("other", "x"),
    ] {
        kg(&["-e", e, "put", key, value], "").await;
    }
    let (code, table) = kg(&["-e", e, "list", "--prefix", "user/"], "").await;
    assert_eq!(code, 0);
    insta::assert_snapshot!("list_table", table);
    assert_eq!(
        kg(&["-e", e, "list", "--keys-only", "--limit", "2"], "").await,
        (0, "other\nuser/1\n".into())
    );
    let (_, json) = kg(&["-e", e, "-o", "json", "list"], "").await;
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 4);

    // More keys than one page holds: every page is walked.
    for i in 0..1005 {
        kg(&["-e", e, "put", &format!("bulk/{i:04}"), "v"], "").await;
    }
    let (code, keys) = kg(&["-e", e, "list", "--prefix", "bulk/", "--keys-only"], "").await;
    assert_eq!((code, keys.lines().count()), (0, 1005));
    // --count asks the node to count (count_only): one number, no keys fetched.
    assert_eq!(
        kg(&["-e", e, "list", "--prefix", "bulk/", "--count"], "").await,
        (0, "1005\n".into())
    );
    assert_eq!(
        kg(&["-e", e, "-o", "json", "list", "--count"], "").await,
        (0, "{\"count\":1009}\n".into())
    );
    // --keys-only in JSON: the keys and their revisions, without values.
    let (_, json) = kg(
        &kg_testkit::argv(&format!("-e {e} -o json list --prefix user/ --keys-only")),
        "",
    )
    .await;
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 3);
    assert!(json[0].get("value").is_none(), "{json}");
}

/// What etcdctl users type: `kg list --revision R` lists the keys as they were, `kg get P
/// --prefix` lists a prefix, and `kg del` deletes.
#[tokio::test]
async fn list_at_a_revision_get_prefix_and_del_as_etcdctl_users_type_them() {
    let node = spawn_node().await;
    let e = node.endpoint.as_str();
    for args in ["put p/a 1", "put p/b 2", "put p/a 3", "put q x"] {
        kg(&kg_testkit::argv(&format!("-e {e} {args}")), "").await;
    }
    assert_eq!(
        kg(
            &kg_testkit::argv(&format!("-e {e} -o raw list --prefix p/ --revision 2")),
            ""
        )
        .await,
        (0, "p/a\t1\np/b\t2\n".into())
    );
    assert_eq!(
        kg(
            &kg_testkit::argv(&format!("-e {e} -o raw get p/ --prefix")),
            ""
        )
        .await,
        (0, "p/a\t3\np/b\t2\n".into())
    );
    assert_eq!(
        kg(
            &kg_testkit::argv(&format!("-e {e} -o raw get p/ --prefix --revision 1")),
            ""
        )
        .await,
        (0, "p/a\t1\n".into())
    );
    assert_eq!(
        kg(&kg_testkit::argv(&format!("-e {e} del q")), "").await,
        (0, "OK revision 5\n".into())
    );
    assert_eq!(
        kg(&kg_testkit::argv(&format!("-e {e} del p/ --prefix")), "").await,
        (0, "OK deleted 2 keys at revision 6\n".into())
    );
    let (code, message) = kg(&kg_testkit::argv(&format!("-e {e} list --revision 99")), "").await;
    assert_eq!(code, 2, "{message}");
}

/// `kg list`'s table shows each value and the time its lease has left; at a terminal (here
/// COLUMNS, which kg reads as a terminal's width) a long value is cut to fit the line.
#[tokio::test]
async fn the_list_table_shows_values_and_ttl_cut_to_the_terminal_width() {
    let node = spawn_node().await;
    let e = node.endpoint.as_str();
    kg(&["-e", e, "put", "a", "short"], "").await;
    kg(&["-e", e, "put", "b", &"long value ".repeat(20)], "").await;
    kg(&["-e", e, "put", "c", "two\nlines", "--ttl", "300s"], "").await;
    // The real binary, which reads its terminal's width; the node serves from this runtime
    // while it runs.
    let run = |columns: Option<&'static str>| async move {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_kg"));
        command.args(["-e", e, "list"]).env_remove("COLUMNS");
        if let Some(columns) = columns {
            command.env("COLUMNS", columns);
        }
        let output = command.output().await.unwrap();
        assert!(output.status.success(), "{output:?}");
        String::from_utf8(output.stdout).unwrap()
    };
    let table = run(Some("60")).await;
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 4, "{table}");
    assert!(
        lines[0].contains("TTL") && lines[0].ends_with("VALUE"),
        "{table}"
    );
    for line in &lines {
        assert!(
            columns(line) <= 60,
            "a line wider than the terminal: {line:?}"
        );
    }
    assert!(
        lines[1].ends_with("  -  short") || lines[1].contains(" short"),
        "{table}"
    );
    assert!(
        lines[2].contains("long value long") && lines[2].ends_with('…'),
        "{table}"
    );
    assert!(
        lines[3].ends_with("two\\nlines"),
        "one line per key: {table}"
    );
    let ttl = lines[3].split_whitespace().nth(4).unwrap();
    let seconds: f64 = ttl.strip_suffix('s').unwrap().parse().unwrap();
    assert!(seconds > 0.0 && seconds <= 300.0, "{table}");
    // Not at a terminal, nothing is cut.
    let whole = run(None).await;
    assert!(
        whole.contains(&"long value ".repeat(20).trim_end().to_owned()),
        "{whole}"
    );
}

/// A line's width in terminal columns: every character kg's tables print here is one wide.
fn columns(line: &str) -> usize {
    line.chars().count()
}

/// `kg status` is etcdctl's `endpoint status`: a row per endpoint, with its node, version,
/// revision, database, whether that database is the data tier's leader, and cache.
#[tokio::test]
async fn status_is_a_table_of_every_endpoint() {
    let sqlite = spawn_node().await;
    let postgres = kg_testkit::spawn_app(kg_testkit::Backend::Postgres).await;
    let dead = dead_endpoint();
    kg(&["-e", &sqlite.endpoint, "put", "k", "v"], "").await;
    let args = [
        "--timeout",
        "1s",
        "-e",
        &sqlite.endpoint,
        "-e",
        &postgres.base,
        "-e",
        &dead,
        "status",
    ];
    let (code, table) = kg(&args, "").await;
    assert_eq!(code, 1, "an endpoint that did not answer: {table}");
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 4, "a header and a row per endpoint: {table}");
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(
        header,
        [
            "ENDPOINT",
            "NODE",
            "VERSION",
            "REVISION",
            "DATABASE",
            "DB_LEADER",
            "CACHE",
            "UPTIME"
        ],
        "{table}"
    );
    let cells = |line: &str| {
        line.split_whitespace()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let first = cells(lines[1]);
    assert_eq!(
        (first[0].as_str(), first[1].as_str(), first[3].as_str()),
        (sqlite.endpoint.as_str(), "cli-node", "1"),
        "{table}"
    );
    assert_eq!(
        (first[4].as_str(), first[5].as_str()),
        ("sqlite", "ok"),
        "{table}"
    );
    assert!(
        lines[2].contains("postgres ok") && lines[2].contains(" yes "),
        "{table}"
    );
    assert!(lines[3].contains("down (refused)"), "{table}");
    let (_, json) = kg(&[&["-o", "json"][..], &args].concat(), "").await;
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json[0]["status"]["node"], "cli-node", "{json}");
    assert_eq!(json[1]["status"]["database"]["primary"], true, "{json}");
    assert_eq!(json[2]["cause"], "refused", "{json}");
    let (code, _) = kg(&["-e", &sqlite.endpoint, "status"], "").await;
    assert_eq!(code, 0);
}

/// With KG_ENDPOINT (or KG_TOKEN) set, a usage error's usage line shows the command as it
/// is, not `--endpoint <ENDPOINT>` as if it were required: clap counts a value from the
/// environment as one given on the command line.
#[tokio::test]
async fn usage_lines_do_not_show_options_set_by_the_environment() {
    for (args, usage) in [
        (&["put"][..], "Usage: kg put <KEY> <VALUE>\n"),
        (&["lease", "grant"][..], "Usage: kg lease grant <TTL>\n"),
    ] {
        let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_kg"))
            .args(args)
            .env("KG_ENDPOINT", "http://127.0.0.1:1")
            .env("KG_TOKEN", "secret")
            .output()
            .await
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{output:?}");
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert!(stderr.contains(usage), "{args:?}: {stderr}");
        assert!(!stderr.contains("--endpoint"), "{args:?}: {stderr}");
        assert!(!stderr.contains("secret"), "{args:?}: {stderr}");
    }
}

#[tokio::test]
async fn a_closed_pipe_ends_completions_quietly() {
    // `kg completions fish | head -5`: the write fails, and kg reports it as an output error
    // (which main turns into exit 0) instead of panicking.
    struct ClosedPipe;
    impl std::io::Write for ClosedPipe {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let cli = Cli::try_parse_from(["kg", "completions", "fish"]).unwrap();
    match run(cli, &mut ClosedPipe, &mut std::io::empty()).await {
        Err(CliError::Output(err)) => assert_eq!(err.kind(), std::io::ErrorKind::BrokenPipe),
        other => panic!("expected an output error, got {other:?}"),
    }
}

#[tokio::test]
async fn transport_errors_say_refused_or_timed_out() {
    let (_, refused) = kg(&["-e", &dead_endpoint(), "get", "k"], "").await;
    assert!(refused.contains("connection refused"), "{refused}");
    // A listener that accepts and never answers: the timeout runs out.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_endpoint = format!("http://{}", silent.local_addr().unwrap());
    let (_, timed_out) = kg(
        &["-e", &silent_endpoint, "--timeout", "200ms", "get", "k"],
        "",
    )
    .await;
    assert!(timed_out.contains("timed out"), "{timed_out}");
    drop(silent);
}

#[tokio::test]
async fn watch_names_the_size_of_a_value_left_out_of_an_event() {
    let node = spawn_node().await;
    let e = node.endpoint.as_str();
    kg(&["-e", e, "put", "big", &"x".repeat(5000)], "").await;
    let (code, line) = kg(
        &["-e", e, "watch", "--from-revision", "0", "--count", "1"],
        "",
    )
    .await;
    assert_eq!(code, 0);
    assert!(
        line.contains("big = <5000 bytes, not in the event>"),
        "{line}"
    );
    let (_, json) = kg(
        &kg_testkit::argv(&format!("-e {e} -o json watch --from-revision 0 --count 1")),
        "",
    )
    .await;
    let json: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(json["value_bytes"], 5000, "{json}");
}

/// The real binary, read line by line: the quiet prefix's change is written only once a
/// progress line has come, however long that takes on a busy machine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_progress_lines_name_the_revision_a_quiet_prefix_is_complete_up_to() {
    use tokio::io::AsyncBufReadExt as _;
    let node = spawn_node().await;
    let e = node.endpoint.clone();
    kg(&["-e", &e, "put", "busy/1", "x"], "").await;
    kg(&["-e", &e, "put", "busy/2", "x"], "").await;
    let args_line = format!("-e {e} -o json watch --prefix quiet/ --progress 1s --count 1");
    let mut watch = tokio::process::Command::new(env!("CARGO_BIN_EXE_kg"))
        .args(kg_testkit::argv(&args_line))
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdout = tokio::io::BufReader::new(watch.stdout.take().unwrap()).lines();
    let mut lines = Vec::new();
    let mut written = false;
    // Progress lines do not count: the watch ends with the first change of its own.
    while let Some(line) = tokio::time::timeout(kg_testkit::PATIENCE, stdout.next_line())
        .await
        .expect("a line from the watch")
        .unwrap()
    {
        lines.push(serde_json::from_str::<serde_json::Value>(&line).unwrap());
        if !written {
            written = true;
            kg(&["-e", &e, "put", "quiet/k", "v"], "").await;
        }
    }
    assert!(watch.wait().await.unwrap().success(), "{lines:?}");
    let (last, progress) = lines.split_last().unwrap();
    assert!(!progress.is_empty(), "no progress line: {lines:?}");
    for line in progress {
        assert_eq!(
            (line["type"].as_str(), line["revision"].as_i64()),
            (Some("progress"), Some(2)),
            "{lines:?}"
        );
    }
    assert_eq!(
        (last["type"].as_str(), last["key"].as_str()),
        (Some("put"), Some("quiet/k"))
    );
}

#[tokio::test]
async fn watch_prints_one_line_per_event_and_stops_after_count() {
    let node = spawn_node().await;
    let e = node.endpoint.as_str();
    kg(&["-e", e, "put", "w/1", "one"], "").await;
    kg(&["-e", e, "delete", "w/1"], "").await;
    kg(&["-e", e, "put", "w/2", "two\nlines"], "").await;
    kg(&["-e", e, "put", "other", "x"], "").await;
    // Revisions: w/1 put 1, delete 2, w/2 put 3, other 4.
    let (code, lines) = kg(
        &kg_testkit::argv(&format!(
            "-e {e} watch --prefix w/ --from-revision 0 --count 1"
        )),
        "",
    )
    .await;
    assert_eq!(code, 0);
    // Replay gives each key's latest state: the delete.
    assert!(
        lines.contains("DELETE w/1  (rev 2, node cli-node)"),
        "{lines}"
    );
    let (_, lines) = kg(
        &kg_testkit::argv(&format!(
            "-e {e} watch --prefix w/2 --from-revision 0 --count 1"
        )),
        "",
    )
    .await;
    assert!(
        lines.ends_with("PUT    w/2 = two\\nlines  (rev 3, node cli-node)\n"),
        "one line per event, control characters escaped: {lines}"
    );
    let (code, json) = kg(
        &kg_testkit::argv(&format!("-e {e} -o json watch --from-revision 0 --count 2")),
        "",
    )
    .await;
    assert_eq!(code, 0);
    let events: Vec<serde_json::Value> = json
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(events[0]["type"], "delete");
    assert_eq!(
        (events[1]["key"].as_str(), events[1]["revision"].as_i64()),
        (Some("w/2"), Some(3))
    );
}

/// `--from-revision N` starts at N, as `etcdctl watch --rev N` does; `kg watch KEY` watches
/// that one key, and `--prefix` makes KEY a prefix, as in etcdctl.
#[tokio::test]
async fn watch_from_a_revision_includes_it_and_a_key_is_exact_unless_prefix() {
    let node = spawn_node().await;
    let e = node.endpoint.as_str();
    for (key, value) in [("w", "1"), ("w2", "2"), ("w/x", "3"), ("w", "4")] {
        kg(&["-e", e, "put", key, value], "").await;
    }
    let raw_revisions = |args: String| async move {
        let (code, out) = kg(&kg_testkit::argv(&args), "").await;
        assert_eq!(code, 0, "{args}: {out}");
        out.lines()
            .map(|line| {
                let event: serde_json::Value = serde_json::from_str(line).unwrap();
                (
                    event["key"].as_str().unwrap().to_owned(),
                    event["revision"].as_i64().unwrap(),
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(
        raw_revisions(format!("-e {e} -o json watch --from-revision 2 --count 1")).await,
        [("w2".to_owned(), 2)],
        "revision 2 itself comes first"
    );
    assert_eq!(
        raw_revisions(format!(
            "-e {e} -o json watch w --from-revision 2 --count 1"
        ))
        .await,
        [("w".to_owned(), 4)],
        "only the key w, not w2 or w/x"
    );
    assert_eq!(
        raw_revisions(format!(
            "-e {e} -o json watch w/ --prefix --from-revision 1 --count 1"
        ))
        .await,
        [("w/x".to_owned(), 3)]
    );
    assert_eq!(
        raw_revisions(format!(
            "-e {e} -o json watch --prefix w --from-revision 2 --count 2"
        ))
        .await,
        [("w2".to_owned(), 2), ("w/x".to_owned(), 3)],
        "--prefix before its word reads the same"
    );
}

#[tokio::test]
async fn health_and_status_report_each_node() {
    let node = spawn_node().await;
    let e = node.endpoint.as_str();
    let (code, table) = kg(&["-e", e, "health"], "").await;
    assert_eq!(code, 0, "{table}");
    assert!(table.starts_with("ENDPOINT"), "{table}");
    assert!(table.contains("cli-node  ok"), "{table}");
    let dead = dead_endpoint();
    let (code, table) = kg(&["-e", e, "-e", &dead, "--timeout", "1s", "health"], "").await;
    assert_eq!(code, 1, "a down node makes health exit 1: {table}");
    assert!(table.contains("down"), "{table}");
    kg(&["-e", e, "put", "k", "v"], "").await;
    let (_, json) = kg(&["-e", e, "-o", "json", "health"], "").await;
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json[0]["status"], "ok");
    assert!(
        json[0]["revision"].is_i64(),
        "a number, as everywhere else: {json}"
    );

    let (code, status) = kg(&["-e", e, "status"], "").await;
    assert_eq!(code, 0);
    assert!(status.contains(" cli-node "), "{status}");
    assert!(status.contains(" sqlite ok "), "{status}");
    let (_, json) = kg(&["-e", e, "-o", "json", "status"], "").await;
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json[0]["status"]["node"], "cli-node");
}

/// A node that could not be checked says why in the table, not only `down`: one that wants a
/// token, one that refuses connections, one that never answers, and one that is not KeyGrid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_names_why_each_node_is_down() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, "secret read\n").unwrap();
    let options = AppOptions {
        node_id: Some("locked".to_owned()),
        extra_args: vec![format!("--auth-tokens-file={}", tokens.display())],
        ..AppOptions::default()
    };
    let locked = kg_testkit::spawn_node_in(dir.path(), None, options).await;
    let dead = dead_endpoint();
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_endpoint = format!("http://{}", silent.local_addr().unwrap());
    let stranger = kg_testkit::stranger_endpoint("200 OK", "hello").await;
    let args = [
        "--timeout",
        "300ms",
        "-e",
        &locked,
        "-e",
        &dead,
        "-e",
        &silent_endpoint,
        "-e",
        &stranger,
        "health",
    ];
    let (code, table) = kg(&args, "").await;
    assert_eq!(code, 1, "{table}");
    let row = |endpoint: &str| {
        table
            .lines()
            .find(|line| line.starts_with(endpoint))
            .unwrap_or_else(|| panic!("no row for {endpoint}: {table}"))
            .to_owned()
    };
    for (endpoint, cause) in [
        (&locked, "down (auth required)"),
        (&dead, "down (refused)"),
        (&silent_endpoint, "down (timed out)"),
        (&stranger, "down (not KeyGrid)"),
    ] {
        assert!(row(endpoint).contains(cause), "{endpoint}: {table}");
    }
    let json_args: Vec<&str> = [&["-o", "json"][..], &args].concat();
    let (_, json) = kg(&json_args, "").await;
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        (json[0]["status"].as_str(), json[0]["cause"].as_str()),
        (Some("down"), Some("auth required")),
        "{json}"
    );
    // With the token, the same node is ok.
    let (code, table) = kg(&["--token", "secret", "-e", &locked, "health"], "").await;
    assert_eq!(code, 0, "{table}");
    drop(silent);
}

/// With Redis, `health` given one endpoint also checks every node that node has heard from.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_in_cluster_mode_checks_every_node_the_first_reports() {
    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite://{}", dir.path().join("shared.db").display());
    let prefix = kg_testkit::unique_prefix();
    let options = |node: &str| AppOptions {
        node_id: Some(node.to_owned()),
        ..AppOptions::with_redis(&kg_testkit::test_redis_url(), &prefix)
    };
    let first = Node {
        endpoint: kg_testkit::spawn_node_in(dir.path(), Some(&database), options("node-a")).await,
        _dir: dir,
    };
    let second_dir = tempfile::tempdir().unwrap();
    let _second =
        kg_testkit::spawn_node_in(second_dir.path(), Some(&database), options("node-b")).await;

    // Heartbeats go out every second; give both nodes time to hear each other. Both run in
    // this test's runtime beside the other tests, so a Redis call may miss the cache timeout
    // and mark a cache degraded until its next probe: wait for both to be ok too.
    let deadline = std::time::Instant::now() + kg_testkit::PATIENCE;
    loop {
        let (code, table) = kg(&["-e", &first.endpoint, "health"], "").await;
        if table.contains("node-a") && table.contains("node-b") && code == 0 {
            assert_eq!(
                table.lines().count(),
                3,
                "a header and one row per node: {table}"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "node-b never appeared, or a node never got ok (exit {code}): {table}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
}

#[tokio::test]
async fn help_and_completions() {
    let (code, help) = kg(&["--help"], "").await;
    assert_eq!(code, 0);
    insta::assert_snapshot!("help", help);
    let (code, script) = kg(&["completions", "bash"], "").await;
    assert_eq!(code, 0);
    assert!(
        script.contains("_kg()") && script.contains("watch"),
        "{script}"
    );
}

#[test]
fn errors_map_to_exit_codes() {
    let check = |err: CliError, code: u8| assert_eq!(err.exit_code(), code, "{err}");
    check(CliError::NotFound("x".into()), 1);
    check(CliError::Usage("x".into()), 2);
    check(CliError::Precondition("x".into()), 3);
    check(CliError::Unavailable("x".into()), 4);
    check(CliError::File("x".into()), 2);
    check(CliError::Output(std::io::ErrorKind::StorageFull.into()), 2);
}

/// The drill's verdict logic on a real node: with `--runtime command` the "stop" commands
/// only log the node names, so the all-down phase still gets 200s; the drill must see that,
/// say why, and exit 1. It also runs each command with `{node}` filled in.
#[tokio::test]
async fn failover_drill_fails_when_all_down_does_not_give_502() {
    let node = spawn_node().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("actions.log");
    let stop = format!("echo stop {{node}} >> {}", log.display());
    let start = format!("echo start {{node}} >> {}", log.display());
    // The commands hold spaces: each is one argument.
    let drill = format!(
        "-e {} failover-drill --runtime command --nodes a,b --phase-duration 300ms --rate 50",
        node.endpoint
    );
    let commands = ["--stop-cmd", &stop, "--start-cmd", &start];
    let (code, report) = kg(&[&kg_testkit::argv(&drill)[..], &commands].concat(), "").await;
    assert_eq!(code, 1, "{report}");
    assert!(report.trim_end().ends_with("FAIL"), "{report}");
    assert!(
        report.contains("stop b (all down): ") && report.contains("did not get 502"),
        "{report}"
    );
    assert!(report.contains("acknowledged writes: "), "{report}");
    let actions = std::fs::read_to_string(&log).unwrap();
    let mut started: Vec<&str> = actions.lines().filter(|l| l.starts_with("start")).collect();
    started.sort_unstable();
    assert_eq!(
        actions
            .lines()
            .filter(|l| l.starts_with("stop"))
            .collect::<Vec<_>>(),
        ["stop a", "stop b"]
    );
    assert_eq!(started, ["start a", "start b"]);

    // The JSON report carries the same verdict, phase by phase.
    let (code, json) = kg(
        &kg_testkit::argv(&format!(
            "-e {} -o json failover-drill --runtime command --stop-cmd true \
             --start-cmd true --nodes a --phase-duration 200ms --rate 50",
            node.endpoint
        )),
        "",
    )
    .await;
    assert_eq!(code, 1, "{json}");
    let report: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(report["passed"], false);
    assert_eq!(report["lost_writes"], 0);
    let phases = report["phases"].as_array().unwrap();
    assert_eq!(phases.len(), 3, "baseline, stop a (all down), restore all");
    assert_eq!(phases[0]["passed"], true);
    assert_eq!(phases[1]["passed"], false);
    assert_eq!(phases[1]["expect"], "all_bad_gateway");
}

#[tokio::test]
async fn failover_drill_rejects_bad_arguments_with_exit_2() {
    for args in [
        &kg_testkit::argv("failover-drill --runtime command --start-cmd true")[..],
        &["failover-drill", "--write-ratio", "1.5"],
        &["failover-drill", "--rate", "0"],
        &["failover-drill", "--node-script", "/nonexistent/node.sh"],
    ] {
        let (code, output) = kg(args, "").await;
        assert_eq!(code, 2, "{args:?}: {output}");
    }
    let (code, help) = kg(&["failover-drill", "--help"], "").await;
    assert_eq!(code, 0);
    insta::assert_snapshot!("failover_drill_help", help);
}

/// Against nodes that require a token, the drill's load and its read-back both carry the
/// one given to kg: the drill runs to its verdict (here FAIL, as nothing stops the one node
/// when it stops "every" node) instead of failing to read its keys back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_drill_takes_the_token_to_its_load_and_its_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, "drill-token write\n").unwrap();
    let options = AppOptions {
        node_id: Some("cli-node".to_owned()),
        extra_args: vec![format!("--auth-tokens-file={}", tokens.display())],
        ..AppOptions::default()
    };
    let endpoint = kg_testkit::spawn_node_in(dir.path(), None, options).await;
    let args_line = format!(
        "-e {endpoint} --token drill-token -o json failover-drill --runtime command \
         --stop-cmd true --start-cmd true --nodes n1 --phase-duration 300ms --rate 50"
    );
    let args = kg_testkit::argv(&args_line);
    let (code, out) = kg(&args, "").await;
    assert_eq!(code, 1, "a verdict, FAIL: {out}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["lost_writes"], 0, "{report}");
    assert!(
        report["acknowledged_writes"].as_u64().unwrap() > 1,
        "{report}"
    );
    assert_eq!(report["passed"], false);
}
