//! Node information: readiness, status, metrics, the OpenAPI document and Swagger UI.

use kg_api::{DependencyState, Precondition};
use reqwest::StatusCode;

use kg_testkit::{spawn_app, Backend};

on_both_backends!(
    ready_and_status_report_the_database,
    metrics_count_requests_by_route_and_status,
    openapi_documents_every_route_and_swagger_ui_is_served,
);

async fn ready_and_status_report_the_database(backend: Backend) {
    let app = spawn_app(backend).await;
    let (status, ready) = app.client.ready().await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ready.database, DependencyState::Ok);
    assert_eq!(ready.status.as_deref(), Some("ready"));

    app.client.put("k", "v", Precondition::None).await.unwrap();
    let _ = app.client.get("missing").await;
    let node = app.client.status().await.unwrap();
    assert_eq!(node.node, "test-node");
    assert_eq!(node.listen, app.address.to_string());
    assert_eq!(node.version, env!("CARGO_PKG_VERSION"));
    let kind = match backend {
        Backend::Postgres => "postgres",
        Backend::Sqlite => "sqlite",
    };
    assert_eq!(node.database.kind, kind);
    assert_eq!(node.database.state, DependencyState::Ok);
    // The URL the node was given, and whether it reached a primary (PostgreSQL only).
    assert_eq!(node.database.endpoint, app.database_url);
    let primary = match backend {
        Backend::Postgres => Some(true),
        Backend::Sqlite => None,
    };
    assert_eq!(node.database.primary, primary);
    assert_eq!(node.cache_endpoint, None);
    assert_eq!(node.revision, Some(1));
    // ready, put, get: the status request itself is counted after it is answered.
    assert_eq!(node.requests.total, 3);
    assert_eq!(node.requests.success, 2);
    assert_eq!(node.requests.client_error, 1);
}

async fn metrics_count_requests_by_route_and_status(backend: Backend) {
    let app = spawn_app(backend).await;
    app.client.put("k", "v", Precondition::None).await.unwrap();
    let _ = app.client.get("missing").await;
    // A route with an id in its path is counted under its pattern, not the id.
    let lease = app.client.lease_grant(30).await.unwrap();
    app.client.lease_keepalive(lease.id).await.unwrap();
    let text = app.client.metrics().await.unwrap();
    assert!(
        text.contains(r#"kg_http_requests_total{route="/api/key",method="PUT",status="200"}"#),
        "{text}"
    );
    assert!(text.contains(r#"kg_http_requests_total{route="/api/key",method="GET",status="404"}"#));
    assert!(
        text.contains(r#"kg_http_requests_total{route="/api/leases",method="POST",status="200"}"#)
    );
    assert!(text.contains(
        r#"kg_http_requests_total{route="/api/leases/{id}/keepalive",method="POST",status="200"}"#
    ));
    assert!(
        !text.contains(&format!("/api/leases/{}", lease.id)),
        "{text}"
    );
    assert!(text.contains("kg_http_request_duration_seconds_bucket"));
    assert!(text.contains("kg_write_batch_size"));
}

async fn openapi_documents_every_route_and_swagger_ui_is_served(backend: Backend) {
    let app = spawn_app(backend).await;
    let doc: serde_json::Value = app.get("/api/openapi.json").await.json().await.unwrap();
    let paths = doc["paths"].as_object().unwrap();
    for (path, methods) in [
        ("/api/key", &["get", "put", "delete"][..]),
        ("/api/keys", &["get"]),
        ("/api/health", &["get"]),
        ("/api/ready", &["get"]),
        ("/api/status", &["get"]),
        ("/metrics", &["get"]),
    ] {
        for method in methods {
            assert!(
                paths[path][method].is_object(),
                "{method} {path} documented"
            );
        }
    }
    for status in ["200", "400", "404", "503"] {
        assert!(
            paths["/api/key"]["get"]["responses"][status].is_object(),
            "GET /api/key {status}"
        );
    }
    for status in ["200", "412", "413", "422", "503"] {
        assert!(
            paths["/api/key"]["put"]["responses"][status].is_object(),
            "PUT /api/key {status}"
        );
    }
    // The key's rules are stated exactly, in the query parameter and in the PUT body, so that
    // a schema-driven client (schemathesis in scripts/test.sh) agrees with the node.
    use kg_server::http::input::{KEY_PATTERN, MAX_KEY_CHARS};
    let query_key = paths["/api/key"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "key")
        .unwrap()["schema"]
        .clone();
    let body_key = doc["components"]["schemas"]["KeyValue"]["properties"]["key"].clone();
    for schema in [query_key, body_key] {
        assert_eq!(schema["minLength"], 1, "{schema}");
        assert_eq!(schema["maxLength"], MAX_KEY_CHARS, "{schema}");
        assert_eq!(schema["pattern"], KEY_PATTERN, "{schema}");
    }

    let ui = app.get("/api/docs/").await;
    assert_eq!(ui.status(), StatusCode::OK);
    assert!(ui.text().await.unwrap().contains("swagger-ui"));
}

/// `--web-dir` serves the web view at `/`, with index.html for the single-page app's own
/// paths, while the API's unknown paths keep their JSON 404.
#[tokio::test]
async fn web_dir_serves_the_web_view_and_leaves_the_api_alone() {
    let web = tempfile::tempdir().unwrap();
    std::fs::write(
        web.path().join("index.html"),
        "<!doctype html><title>KeyGrid</title>",
    )
    .unwrap();
    std::fs::create_dir(web.path().join("assets")).unwrap();
    std::fs::write(web.path().join("assets/app.js"), "console.log(1)").unwrap();
    let options = kg_testkit::AppOptions {
        extra_args: vec![format!("--web-dir={}", web.path().display())],
        ..kg_testkit::AppOptions::default()
    };
    let app = kg_testkit::spawn_app_with(Backend::Sqlite, options).await;

    for path in ["/", "/keys/some/page"] {
        let response = app.get(path).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        assert!(response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html"));
        assert!(response
            .text()
            .await
            .unwrap()
            .contains("<title>KeyGrid</title>"));
    }
    let script = app.get("/assets/app.js").await;
    assert_eq!(script.status(), StatusCode::OK);
    assert_eq!(script.text().await.unwrap(), "console.log(1)");

    let unknown = app.get("/api/nope").await;
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    assert_eq!(unknown.text().await.unwrap(), r#"{"detail":"Not Found"}"#);
    app.client.put("k", "v", Precondition::None).await.unwrap();
    assert_eq!(app.client.get("k").await.unwrap().value, "v");
}
