//! The seed's API examples, byte for byte, plus the headers every response carries.

use reqwest::StatusCode;

use kg_testkit::{spawn_app, Backend};

on_both_backends!(
    health_returns_seed_body,
    put_get_delete_match_seed_bodies_byte_for_byte,
    missing_key_returns_404_with_seed_detail,
    every_response_carries_node_and_request_id,
);

async fn health_returns_seed_body(backend: Backend) {
    let app = spawn_app(backend).await;
    let response = app.get("/api/health").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.text().await.unwrap(), r#"{"status":"ok"}"#);
}

async fn put_get_delete_match_seed_bodies_byte_for_byte(backend: Backend) {
    let app = spawn_app(backend).await;
    let put = app
        .http
        .put(app.url("/api/key"))
        .header("content-type", "application/json")
        .body(r#"{"data":{"key":"foo","value":"bar"}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), StatusCode::OK);
    assert_eq!(put.headers()["etag"], "\"1\"");
    assert_eq!(put.text().await.unwrap(), r#"{"status":"success"}"#);

    let get = app.get("/api/key?key=foo").await;
    assert_eq!(get.status(), StatusCode::OK);
    assert_eq!(get.headers()["etag"], "\"1\"");
    assert_eq!(get.headers()["content-type"], "application/json");
    assert_eq!(get.text().await.unwrap(), r#"{"data":{"value":"bar"}}"#);

    let delete = app
        .http
        .delete(app.url("/api/key?key=foo"))
        .send()
        .await
        .unwrap();
    assert_eq!(delete.status(), StatusCode::OK);
    assert_eq!(delete.text().await.unwrap(), r#"{"status":"success"}"#);

    let gone = app.get("/api/key?key=foo").await;
    assert_eq!(gone.status(), StatusCode::NOT_FOUND);
    assert_eq!(gone.text().await.unwrap(), r#"{"detail":"Key not found"}"#);
}

async fn missing_key_returns_404_with_seed_detail(backend: Backend) {
    let app = spawn_app(backend).await;
    for method in [reqwest::Method::GET, reqwest::Method::DELETE] {
        let response = app
            .http
            .request(method.clone(), app.url("/api/key?key=missing"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{method}");
        assert_eq!(
            response.text().await.unwrap(),
            r#"{"detail":"Key not found"}"#,
            "{method}"
        );
    }
}

async fn every_response_carries_node_and_request_id(backend: Backend) {
    let app = spawn_app(backend).await;
    for (method, path) in [
        (reqwest::Method::GET, "/api/health"),
        (reqwest::Method::GET, "/api/key?key=nope"),
        (reqwest::Method::GET, "/api/key"),
        (reqwest::Method::PATCH, "/api/key"),
        (reqwest::Method::GET, "/no/such/route"),
        (reqwest::Method::GET, "/api/status"),
    ] {
        let response = app
            .http
            .request(method.clone(), app.url(path))
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.headers()["x-keygrid-node"],
            "test-node",
            "{method} {path}"
        );
        let request_id = response.headers()["x-request-id"].to_str().unwrap();
        assert_eq!(request_id.len(), 36, "{method} {path}: uuid request id");
    }
    let response = app
        .http
        .get(app.url("/api/health"))
        .header("x-request-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.headers()["x-request-id"],
        "abc-123",
        "a client's id is echoed"
    );
}
