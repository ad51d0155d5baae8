//! `kg txn` as an etcdctl user meets it: prompted for each part at a terminal (the real binary
//! in tmux), an empty transaction refused, etcdctl's `--lease=` and `lease("k")` handled, and
//! errors in the JSON's own words.

use kg_testkit::Tmux;

use super::{kg, spawn_node};

/// At a terminal, `kg txn` prompts for the compares, the success ops and the failure ops, each
/// ended by an empty line, as `etcdctl txn -i`; a mistyped line is named and can be typed again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_a_terminal_txn_prompts_for_each_part() {
    let node = spawn_node().await;
    let e = node.endpoint.as_str();
    kg(&["-e", e, "put", "a", "1"], "").await;
    let script = format!(
        "{} -e {e} txn; echo \"exit=$?\"; sleep 600",
        env!("CARGO_BIN_EXE_kg")
    );
    let tmux = Tmux::start_sized("txn", &script, 100, 30);
    let wait = kg_testkit::PATIENCE;
    tmux.wait_for("the compares prompt", wait, |s| s.contains("compares:"))
        .await;
    tmux.line(r#"value("a") = "1""#);
    tmux.line("");
    tmux.wait_for("the success prompt", wait, |s| {
        s.contains("success requests (get, put, del):")
    })
    .await;
    tmux.line("put a 2");
    tmux.line("bogus a");
    tmux.wait_for("the mistake named", wait, |s| {
        s.contains("error: expected put KEY VALUE")
    })
    .await;
    tmux.line("get a");
    tmux.line("");
    tmux.wait_for("the failure prompt", wait, |s| {
        s.contains("failure requests (get, put, del):")
    })
    .await;
    tmux.line("get a");
    tmux.line("");
    let screen = tmux
        .wait_for("the answer", wait, |s| s.contains("exit="))
        .await;
    assert!(screen.contains("exit=0"), "{screen}");
    assert!(
        screen.contains("SUCCESS revision 2\nput a (version 2)\nget a (revision 2)\n2\n"),
        "{screen}"
    );
    assert_eq!(kg(&["-e", e, "get", "a"], "").await, (0, "2\n".into()));
}

#[tokio::test]
async fn an_empty_transaction_is_a_usage_error() {
    let node = spawn_node().await;
    let e = node.endpoint.as_str();
    for (name, input) in [
        ("nothing", ""),
        ("blank lines", "\n\n\n"),
        ("an empty object", "{}"),
        (
            "empty parts",
            r#"{"compare": [], "success": [], "failure": []}"#,
        ),
    ] {
        let (code, message) = kg(&["-e", e, "txn"], input).await;
        assert_eq!(code, 2, "{name}: {message}");
        assert!(message.contains("empty transaction"), "{name}: {message}");
    }
}

/// etcdctl writes `put k v --lease=ID`; kg takes it. etcdctl's `lease("k")` compare has no
/// KeyGrid target: it is refused by its name, not as a line kg cannot read.
#[tokio::test]
async fn etcdctl_lease_flags_work_and_lease_compares_are_refused_by_name() {
    let node = spawn_node().await;
    let e = node.endpoint.as_str();
    let (_, lease) = kg(&["-e", e, "-o", "raw", "lease", "grant", "60s"], "").await;
    let lease = lease.trim();
    let text = format!("\nput svc/a up --lease={lease}\nput svc/b up --lease {lease}\n");
    let (code, out) = kg(&["-e", e, "txn"], &text).await;
    assert_eq!(code, 0, "{out}");
    for key in ["svc/a", "svc/b"] {
        let (_, json) = kg(&["-e", e, "-o", "json", "get", key], "").await;
        let json: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(json["lease"].to_string(), lease, "{key}: {json}");
    }
    let (code, message) = kg(&["-e", e, "txn"], "lease(\"svc/a\") = \"5\"\n\nget svc/a\n").await;
    assert_eq!(code, 2, "{message}");
    assert!(
        message.contains("line 1: lease(\"svc/a\") compares are not supported"),
        "{message}"
    );
}

/// A compare whose value does not fit its target is named in the JSON's words.
#[tokio::test]
async fn txn_errors_name_targets_as_the_json_does() {
    let node = spawn_node().await;
    let e = node.endpoint.as_str();
    let json = r#"{"compare": [{"key": "a", "target": "create_revision", "op": ">", "value": "1"}],
                   "success": [{"op": "get", "key": "a"}]}"#;
    let (code, message) = kg(&["-e", e, "txn"], json).await;
    assert_eq!(code, 2, "{message}");
    assert!(
        message.contains("target create_revision takes an integer value"),
        "{message}"
    );
}
