//! `GET /api/keys`: byte order, pagination, prefixes, tombstones and limits.

use kg_api::{KeyListResponse, Precondition};
use reqwest::StatusCode;

use kg_testkit::{spawn_app, Backend};

on_both_backends!(
    listing_walks_every_page_in_byte_order,
    listing_filters_by_prefix_and_skips_deleted_keys,
    listing_rejects_out_of_range_limits,
    listing_keys_only_leaves_values_out_and_count_only_counts,
    listing_refuses_unknown_parameters_and_control_characters,
    a_page_holds_at_most_16_mib_of_body_however_large_the_values,
    a_node_s_memory_per_request_stays_bounded_however_large_the_values,
);

async fn listing_walks_every_page_in_byte_order(backend: Backend) {
    let app = spawn_app(backend).await;
    // Mixed ASCII and multi-byte keys: byte order puts "Z" < "a" < "é" < "日".
    let mut expected: Vec<String> = (0..23).map(|i| format!("key/{i:02}")).collect();
    expected.extend(["Z", "a", "é", "日本"].map(String::from));
    for key in &expected {
        app.client.put(key, "v", Precondition::None).await.unwrap();
    }
    expected.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));

    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let page = app
            .client
            .list(None, Some(10), after.as_deref())
            .await
            .unwrap();
        pages += 1;
        assert!(page.keys.len() <= 10);
        seen.extend(page.keys.iter().map(|record| record.key.clone()));
        match page.next {
            Some(next) => {
                assert_eq!(Some(&next), seen.last(), "next is the last key of the page");
                after = Some(next);
            }
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, expected);
    assert_eq!(
        app.client.list_all(None, 7).await.unwrap().len(),
        expected.len(),
        "list_all walks the same pages"
    );
}

async fn listing_filters_by_prefix_and_skips_deleted_keys(backend: Backend) {
    let app = spawn_app(backend).await;
    for key in ["user/1", "user/2", "user/3", "user0", "users", "admin"] {
        app.client.put(key, key, Precondition::None).await.unwrap();
    }
    app.client
        .delete("user/2", Precondition::None)
        .await
        .unwrap();
    let page = app.client.list(Some("user/"), None, None).await.unwrap();
    let keys: Vec<_> = page.keys.iter().map(|record| record.key.as_str()).collect();
    assert_eq!(keys, ["user/1", "user/3"]);
    assert_eq!(page.next, None);
    let first = &page.keys[0];
    assert_eq!((first.value.as_deref(), first.version), (Some("user/1"), 1));
    assert_eq!(first.create_revision, first.mod_revision);

    // The raw body has exactly the documented shape.
    let raw: serde_json::Value = app
        .get("/api/keys?prefix=admin")
        .await
        .json()
        .await
        .unwrap();
    let admin_revision = raw["keys"][0]["mod_revision"].clone();
    assert_eq!(
        raw,
        serde_json::json!({"keys":[{"key":"admin","value":"admin","create_revision":admin_revision,"mod_revision":admin_revision,"version":1}],"next":null})
    );
}

async fn listing_rejects_out_of_range_limits(backend: Backend) {
    let app = spawn_app(backend).await;
    for query in ["limit=0", "limit=1001", "limit=-1", "limit=ten"] {
        let response = app.get(&format!("/api/keys?{query}")).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{query}");
        let body: kg_api::ErrorBody = response.json().await.unwrap();
        assert!(body.detail.contains("limit"), "{query}: {}", body.detail);
    }
    let page: KeyListResponse = app.get("/api/keys?limit=1000").await.json().await.unwrap();
    assert!(page.keys.is_empty());
}

async fn listing_keys_only_leaves_values_out_and_count_only_counts(backend: Backend) {
    let app = spawn_app(backend).await;
    for key in ["big/1", "big/2", "big/3", "other"] {
        app.client
            .put(key, &"v".repeat(10_000), Precondition::None)
            .await
            .unwrap();
    }
    let page = app
        .client
        .list_keys_only(Some("big/"), Some(2), None)
        .await
        .unwrap();
    let keys: Vec<_> = page.keys.iter().map(|record| record.key.as_str()).collect();
    assert_eq!(keys, ["big/1", "big/2"]);
    assert!(page.keys.iter().all(|record| record.value.is_none()));
    assert_eq!(page.next.as_deref(), Some("big/2"));
    // Not even a "value" field on the wire: the point is not to send the values.
    let raw = app
        .get("/api/keys?prefix=big/&keys_only=true")
        .await
        .text()
        .await
        .unwrap();
    assert!(!raw.contains("\"value\""), "{raw}");
    assert!(raw.len() < 1_000, "{} bytes", raw.len());

    assert_eq!(app.client.count(Some("big/")).await.unwrap(), 3);
    assert_eq!(app.client.count(None).await.unwrap(), 4);
    app.client
        .delete("big/2", Precondition::None)
        .await
        .unwrap();
    assert_eq!(app.client.count(Some("big/")).await.unwrap(), 2);
    let count_only = |query: &'static str| {
        let request = app
            .http
            .get(app.url(&format!("/api/keys?count_only=true&{query}")));
        async move {
            let raw: serde_json::Value = request.send().await.unwrap().json().await.unwrap();
            raw
        }
    };
    assert_eq!(
        count_only("prefix=big/").await,
        serde_json::json!({"count": 2})
    );
    // As etcd's: the range is counted whatever the page size; after narrows the range.
    assert_eq!(
        count_only("prefix=big/&after=big/1&limit=1").await,
        serde_json::json!({"count": 1})
    );
}

async fn listing_refuses_unknown_parameters_and_control_characters(backend: Backend) {
    let app = spawn_app(backend).await;
    app.client
        .put("ux/1", "v", Precondition::None)
        .await
        .unwrap();
    for (query, detail) in [
        ("prefx=ux/", r#"unknown query parameter "prefx""#),
        (
            "prefix=a%00b",
            r#"query parameter "prefix" must not contain control characters"#,
        ),
        (
            "after=a%00b",
            r#"query parameter "after" must not contain control characters"#,
        ),
        (
            "keys_only=yes",
            r#"query parameter "keys_only" must be true or false"#,
        ),
    ] {
        let response = app.get(&format!("/api/keys?{query}")).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{query}");
        let body: kg_api::ErrorBody = response.json().await.unwrap();
        assert!(body.detail.contains(detail), "{query}: {}", body.detail);
    }
    let long = "k".repeat(513);
    let response = app.get(&format!("/api/keys?prefix={long}")).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    // The same rules on the other routes that take a key or a prefix.
    for path in [
        "/api/key?key=ux/1&extra=1",
        "/api/watch?prefix=a%00b",
        "/api/watch?prefx=ux/",
    ] {
        let response = app.get(path).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{path}");
    }
}

/// A value of `bytes` bytes that JSON escapes six times over: U+0001, `\u0001`.
fn escaped_value(bytes: usize) -> String {
    "\u{1}".repeat(bytes)
}

/// `count` keys `prefix<NNN>`, each with a 1 MiB value of U+0001, and `versions` versions of
/// the key `versioned` like them, written straight into the store at revisions from 1 (the
/// history trigger keeps the versions): a test of reads need not wait for a debug node to
/// parse hundreds of MiB of escaped JSON.
async fn write_large_values(url: &str, prefix: &str, count: usize, versions: usize) {
    use sqlx::Connection as _;
    let value = escaped_value(1024 * 1024).into_bytes();
    let count = i64::try_from(count).unwrap();
    let versions = i64::try_from(versions).unwrap();
    let statements = [
        "INSERT INTO kg_keys (key, value, create_revision, mod_revision, version, mod_node, \
           mod_at) VALUES ($1, $2, $3, $3, 1, 'bulk', {now})",
        "UPDATE kg_keys SET value = $2, mod_revision = $3, version = version + 1 WHERE key = $1",
        "UPDATE kg_meta SET revision = $1",
    ];
    // The same statements on either database; only the clock's type differs.
    macro_rules! fill {
        ($connection:expr, $now:expr) => {{
            let mut connection = $connection;
            let insert = statements[0].replace("{now}", $now);
            let mut revision = 0_i64;
            for index in 0..count {
                revision += 1;
                sqlx::query(&insert)
                    .bind(format!("{prefix}{index:03}"))
                    .bind(value.as_slice())
                    .bind(revision)
                    .execute(&mut connection)
                    .await
                    .unwrap();
            }
            for version in 0..versions {
                revision += 1;
                let statement = if version == 0 { &insert } else { statements[1] };
                sqlx::query(statement)
                    .bind("versioned")
                    .bind(value.as_slice())
                    .bind(revision)
                    .execute(&mut connection)
                    .await
                    .unwrap();
            }
            sqlx::query(statements[2])
                .bind(revision)
                .execute(&mut connection)
                .await
                .unwrap();
        }};
    }
    if url.starts_with("sqlite:") {
        fill!(
            sqlx::SqliteConnection::connect(url).await.unwrap(),
            "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)"
        );
    } else {
        fill!(sqlx::PgConnection::connect(url).await.unwrap(), "now()");
    }
}

/// Listings (current and at a revision) and history pages of 1 MiB values that JSON escapes
/// to 6 MiB each end early, at most `MAX_PAGE_BYTES` of body each, with the cursor to go on
/// from; the typed client walks every page and gets every value whole.
async fn a_page_holds_at_most_16_mib_of_body_however_large_the_values(backend: Backend) {
    let app = spawn_app(backend).await;
    write_large_values(&app.database_url, "big/", 8, 8).await;
    let revision = app.client.status().await.unwrap().revision.unwrap();
    for path in [
        "/api/keys?prefix=big/&limit=1000".to_owned(),
        format!("/api/keys?prefix=big/&limit=1000&revision={revision}"),
        "/api/key/history?key=versioned&limit=1000".to_owned(),
    ] {
        let response = app.get(&path).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let body = response.bytes().await.unwrap();
        assert!(
            body.len() <= kg_api::MAX_PAGE_BYTES,
            "{path}: a page of {} bytes",
            body.len()
        );
        let page: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert!(
            !page["next"].is_null(),
            "{path}: the page ended early, so `next` goes on"
        );
    }
    let listed = app.client.list_all(Some("big/"), 1000).await.unwrap();
    assert_eq!(listed.len(), 8);
    assert!(listed
        .iter()
        .all(|record| record.value.as_ref().map(String::len) == Some(1024 * 1024)));
    let mut versions = 0;
    let mut before = None;
    loop {
        let page = app
            .client
            .history("versioned", before, Some(1000))
            .await
            .unwrap();
        assert!(page.history.iter().all(|version| version
            .value
            .as_ref()
            .is_some_and(|value| value.len() == 1024 * 1024)));
        versions += page.history.len();
        match page.next {
            Some(next) => before = Some(next),
            None => break,
        }
    }
    assert_eq!(versions, 8);
}

/// A node in a process of its own, so that its memory can be read from /proc.
struct NodeProcess {
    child: std::process::Child,
    base: String,
}

impl NodeProcess {
    async fn start(url: &str) -> Self {
        let port = kg_testkit::free_port();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_kg-server"))
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args([
                "--database-url",
                url,
                "--node-id",
                "memory",
                "--db-pool-size",
                "4",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let client = kg_api::Client::new(&base).unwrap();
        let up = std::time::Instant::now() + std::time::Duration::from_secs(15);
        while !matches!(client.ready().await, Ok((StatusCode::OK, _))) {
            assert!(std::time::Instant::now() < up, "the node did not start");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        Self { child, base }
    }

    /// A field of /proc/PID/status, in kB.
    fn status_kb(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|line| line.strip_prefix(field)?.trim().strip_suffix(" kB"))
            .and_then(|kb| kb.trim().parse().ok())
            .unwrap()
    }

    /// Starts measuring the peak from the memory the process holds now.
    fn reset_peak(&self) -> u64 {
        std::fs::write(format!("/proc/{}/clear_refs", self.child.id()), "5").unwrap();
        self.status_kb("VmRSS:")
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What one request costs a node in memory, with values that JSON escapes six times over:
/// each request runs on a node process of its own, and the peak of its resident memory
/// above what it held before is read from /proc.
async fn a_node_s_memory_per_request_stays_bounded_however_large_the_values(backend: Backend) {
    let app = spawn_app(backend).await;
    // 20 MiB of values, 120 MiB once escaped; the history key, 20 versions of its own.
    write_large_values(&app.database_url, "big/", 20, 20).await;
    const MIB: u64 = 1024;
    let checks: [(&str, u64); 4] = [
        ("list", 100 * MIB),
        ("history", 100 * MIB),
        ("snapshot", 100 * MIB),
        // A replay sends no value over 1 KiB: it need not read one.
        ("replay", 8 * MIB),
    ];
    let mut over = Vec::new();
    for (what, bound_kb) in checks {
        let node = NodeProcess::start(&app.database_url).await;
        // Generous: a debug node takes its time over hundreds of MiB.
        let options = kg_api::ClientOptions {
            timeout: std::time::Duration::from_secs(120),
            token: None,
        };
        let client = kg_api::Client::with_options(&node.base, &options).unwrap();
        client.list(Some("big/"), Some(1), None).await.unwrap();
        let before = node.reset_peak();
        match what {
            "list" => {
                let listed = client.list_all(Some("big/"), 1000).await.unwrap();
                assert_eq!(listed.len(), 20);
            }
            "history" => {
                let page = client.history("versioned", None, Some(1000)).await.unwrap();
                assert!(!page.history.is_empty());
            }
            "snapshot" => {
                let mut snapshot = client.snapshot().await.unwrap();
                let mut keys = 0;
                while snapshot.next().await.unwrap().is_some() {
                    keys += 1;
                }
                assert_eq!(keys, 21);
            }
            _ => {
                let mut watch = client.watch(Some("big/"), Some(0)).await.unwrap();
                for _ in 0..20 {
                    let event =
                        tokio::time::timeout(std::time::Duration::from_secs(30), watch.next())
                            .await
                            .unwrap()
                            .unwrap()
                            .unwrap();
                    assert_eq!(event.value_bytes, Some(1024 * 1024));
                }
            }
        }
        let grew = node.status_kb("VmHWM:").saturating_sub(before);
        println!("{what}: the node's peak memory grew {} MiB", grew / MIB);
        if grew > bound_kb {
            over.push(format!(
                "{what}: {} MiB over {} MiB",
                grew / MIB,
                bound_kb / MIB
            ));
        }
    }
    assert!(over.is_empty(), "{over:?}");
}
