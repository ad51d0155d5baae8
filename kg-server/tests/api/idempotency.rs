//! `Idempotency-Key` over HTTP: a retried write gets the original answer, marked as a replay,
//! whichever node the retry reaches and however many retries race.

use futures::future::join_all;
use kg_api::Precondition;
use reqwest::StatusCode;

use kg_testkit::{spawn_app, spawn_app_on, AppOptions, Backend, TestApp};

on_both_backends!(retried_writes_are_applied_once_and_answered_alike);

/// Generous: an event normally arrives in milliseconds, and within about a second even when
/// the watcher must fetch it from the database, but CI runs every test at once on two cores.
const EVENT_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

async fn send(
    app: &TestApp,
    method: reqwest::Method,
    key: &str,
    body: Option<&str>,
    idempotency_key: &str,
) -> reqwest::Response {
    let mut request = app
        .http
        .request(method, app.url(&format!("/api/key?key={key}")));
    if let Some(value) = body {
        request =
            request.body(serde_json::json!({"data": {"key": key, "value": value}}).to_string());
    }
    request
        .header("idempotency-key", idempotency_key)
        .send()
        .await
        .unwrap()
}

async fn retried_writes_are_applied_once_and_answered_alike(backend: Backend) {
    let app = spawn_app(backend).await;
    let dir = std::sync::Arc::new(tempfile::tempdir().unwrap());
    let other_node = spawn_app_on(&app.database_url, dir, AppOptions::default()).await;
    let mut watch = app.client.watch(None, Some(0)).await.unwrap();

    let first = send(&app, reqwest::Method::PUT, "k", Some("v"), "req-1").await;
    assert_eq!(first.status(), StatusCode::OK);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let revision = first.headers()["x-keygrid-revision"].clone();

    // The retry lands on another node, as nginx's would.
    let retry = send(&other_node, reqwest::Method::PUT, "k", Some("v"), "req-1").await;
    assert_eq!(retry.status(), StatusCode::OK);
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    assert_eq!(retry.headers()["x-keygrid-revision"], revision);
    assert_eq!(retry.text().await.unwrap(), r#"{"status":"success"}"#);

    // Racing retries: one application, every answer the same revision.
    let racing = (0..8).map(|_| send(&app, reqwest::Method::PUT, "race", Some("x"), "req-2"));
    let revisions: std::collections::BTreeSet<String> = join_all(racing)
        .await
        .into_iter()
        .map(|response| {
            response.headers()["x-keygrid-revision"]
                .to_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(revisions.len(), 1, "{revisions:?}");

    // A retried delete is a 200 again, not a 404.
    assert_eq!(
        send(&app, reqwest::Method::DELETE, "k", None, "req-3")
            .await
            .status(),
        StatusCode::OK
    );
    let retried_delete = send(&other_node, reqwest::Method::DELETE, "k", None, "req-3").await;
    assert_eq!(retried_delete.status(), StatusCode::OK);
    assert_eq!(retried_delete.headers()["idempotent-replayed"], "true");

    // The same key for a different write is refused, and nothing is written.
    let reused = send(&app, reqwest::Method::PUT, "k", Some("different"), "req-1").await;
    assert_eq!(reused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        reused.headers().get("idempotent-replayed").is_none(),
        "a refusal is not the first attempt's answer replayed"
    );
    assert!(reused
        .text()
        .await
        .unwrap()
        .contains("Idempotency-Key was already used"));
    let malformed = send(&app, reqwest::Method::PUT, "k", Some("v"), "has space").await;
    assert_eq!(malformed.status(), StatusCode::BAD_REQUEST);

    // Three writes happened, so three revisions and three events; the retries added none.
    assert_eq!(app.client.status().await.unwrap().revision, Some(3));
    let mut events = Vec::new();
    for _ in 0..3 {
        let event = tokio::time::timeout(EVENT_WAIT, watch.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        events.push((event.key, event.revision));
    }
    assert_eq!(
        events,
        [
            ("k".to_owned(), 1),
            ("race".to_owned(), 2),
            ("k".to_owned(), 3)
        ]
    );
    app.client
        .put("after", "x", Precondition::None)
        .await
        .unwrap();
    let next = tokio::time::timeout(EVENT_WAIT, watch.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        next.revision, 4,
        "no duplicate event was published in between"
    );
}
