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
