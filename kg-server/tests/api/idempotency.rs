//! `Idempotency-Key` over HTTP: a retried write gets the original answer, marked as a replay,
//! whichever node the retry reaches and however many retries race.

use futures::future::join_all;
use kg_api::Precondition;
use reqwest::StatusCode;

use kg_testkit::{spawn_app, spawn_app_on, AppOptions, Backend, TestApp};

on_both_backends!(
    retried_writes_are_applied_once_and_answered_alike,
    a_retried_prefix_delete_is_replayed_not_applied_again,
    a_retried_compaction_is_replayed,
    a_retried_lease_grant_is_replayed_not_granted_again,
    a_retried_revoke_is_replayed_not_refused,
    a_retried_keepalive_renews_again_and_never_revives_an_expired_lease,
);

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

/// A request to `path` with `body` (JSON) and an Idempotency-Key: its status, whether it was
/// marked a replay, its revision header, and its body.
async fn call(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    body: Option<serde_json::Value>,
    idempotency_key: &str,
) -> (StatusCode, bool, Option<String>, String) {
    let mut request = app
        .http
        .request(method, app.url(path))
        .header("idempotency-key", idempotency_key);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let replayed = response
        .headers()
        .get("idempotent-replayed")
        .is_some_and(|value| value == "true");
    let revision = response
        .headers()
        .get("x-keygrid-revision")
        .map(|value| value.to_str().unwrap().to_owned());
    (
        response.status(),
        replayed,
        revision,
        response.text().await.unwrap(),
    )
}

/// A prefix delete retried with its Idempotency-Key (as nginx retries every DELETE) is
/// answered as the first was and deletes nothing more, though keys were written under the
/// prefix since; the key reused for another prefix is refused.
async fn a_retried_prefix_delete_is_replayed_not_applied_again(backend: Backend) {
    let app = spawn_app(backend).await;
    let client = &app.client;
    client.put("p/1", "v", Precondition::None).await.unwrap();
    let delete = reqwest::Method::DELETE;
    let (status, replayed, revision, body) =
        call(&app, delete.clone(), "/api/keys?prefix=p/", None, "pd-1").await;
    assert_eq!((status, replayed), (StatusCode::OK, false), "{body}");
    let first: kg_api::DeletePrefixResponse = serde_json::from_str(&body).unwrap();
    assert_eq!(first.deleted, 1);
    client.put("p/2", "v", Precondition::None).await.unwrap();

    let retry = call(&app, delete.clone(), "/api/keys?prefix=p/", None, "pd-1").await;
    assert_eq!(
        retry,
        (StatusCode::OK, true, revision.clone(), body.clone()),
        "the retry is the first answer again"
    );
    assert_eq!(client.get("p/2").await.unwrap().value, "v", "p/2 survives");
    // Racing retries of a new delete: one application.
    client.put("r/1", "v", Precondition::None).await.unwrap();
    let racing = (0..6).map(|_| call(&app, delete.clone(), "/api/keys?prefix=r/", None, "pd-2"));
    let answers: std::collections::BTreeSet<(StatusCode, Option<String>, String)> =
        join_all(racing)
            .await
            .into_iter()
            .map(|(status, _, revision, body)| (status, revision, body))
            .collect();
    assert_eq!(answers.len(), 1, "{answers:?}");
    assert!(answers.iter().all(|(status, ..)| *status == StatusCode::OK));
    let (status, _, _, body) = call(&app, delete, "/api/keys?prefix=q/", None, "pd-1").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
}

/// A compaction retried with its Idempotency-Key is answered as the first was (the same
/// counts of what it dropped), marked a replay.
async fn a_retried_compaction_is_replayed(backend: Backend) {
    let app = spawn_app(backend).await;
    let client = &app.client;
    for value in ["1", "2", "3"] {
        client.put("k", value, Precondition::None).await.unwrap();
    }
    let deleted = client.delete("k", Precondition::None).await.unwrap();
    let post = reqwest::Method::POST;
    let body = serde_json::json!({"revision": deleted.revision});
    let first = call(
        &app,
        post.clone(),
        "/api/compact",
        Some(body.clone()),
        "c-1",
    )
    .await;
    assert_eq!((first.0, first.1), (StatusCode::OK, false), "{}", first.3);
    let answer: kg_api::CompactResponse = serde_json::from_str(&first.3).unwrap();
    assert!(answer.tombstones + answer.versions > 0, "{answer:?}");
    let retry = call(&app, post.clone(), "/api/compact", Some(body), "c-1").await;
    assert_eq!(retry, (StatusCode::OK, true, first.2, first.3));
    let other = serde_json::json!({"revision": 1});
    let (status, ..) = call(&app, post, "/api/compact", Some(other), "c-1").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
}

/// A lease grant retried with its Idempotency-Key gets the same lease, not a second one,
/// however many retries race.
async fn a_retried_lease_grant_is_replayed_not_granted_again(backend: Backend) {
    let app = spawn_app(backend).await;
    let post = reqwest::Method::POST;
    let body = serde_json::json!({"ttl": 60});
    let first = call(&app, post.clone(), "/api/leases", Some(body.clone()), "g-1").await;
    assert_eq!((first.0, first.1), (StatusCode::OK, false), "{}", first.3);
    let retry = call(&app, post.clone(), "/api/leases", Some(body.clone()), "g-1").await;
    assert_eq!(retry, (StatusCode::OK, true, None, first.3.clone()));
    let racing = (0..8).map(|_| call(&app, post.clone(), "/api/leases", Some(body.clone()), "g-2"));
    let answers: std::collections::BTreeSet<(StatusCode, String)> = join_all(racing)
        .await
        .into_iter()
        .map(|(status, _, _, body)| (status, body))
        .collect();
    assert_eq!(answers.len(), 1, "{answers:?}");
    assert!(answers.iter().all(|(status, _)| *status == StatusCode::OK));
    assert_eq!(app.client.leases().await.unwrap().len(), 2);
    let other = serde_json::json!({"ttl": 30});
    let (status, ..) = call(&app, post, "/api/leases", Some(other), "g-1").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
}

/// A revoke retried with its Idempotency-Key (nginx gives every DELETE one and retries it) is
/// answered as the first was, not with a 404 for the lease the first revoke ended.
async fn a_retried_revoke_is_replayed_not_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let client = &app.client;
    let lease = client.lease_grant(60).await.unwrap();
    client
        .put_with(
            "held",
            "v",
            Precondition::None,
            kg_api::Attach::Lease(lease.id),
        )
        .await
        .unwrap();
    let path = format!("/api/leases/{}", lease.id);
    let delete = reqwest::Method::DELETE;
    let first = call(&app, delete.clone(), &path, None, "r-1").await;
    assert_eq!((first.0, first.1), (StatusCode::OK, false), "{}", first.3);
    let answer: kg_api::LeaseRevokeResponse = serde_json::from_str(&first.3).unwrap();
    assert_eq!(answer.deleted, 1);
    let retry = call(&app, delete.clone(), &path, None, "r-1").await;
    assert_eq!(retry, (StatusCode::OK, true, None, first.3));
    let other = client.lease_grant(60).await.unwrap();
    let (status, ..) = call(
        &app,
        delete,
        &format!("/api/leases/{}", other.id),
        None,
        "r-1",
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        client.lease(other.id).await.is_ok(),
        "the refused revoke ended nothing"
    );
}

/// A keep-alive is its own retry: "renew this lease now" applied again renews it again, and
/// answers with the lease as it is, so a retry after the lease ended is a 404 and revives
/// nothing. It records no answer to replay (a replayed 200 would say a lease lives that has
/// ended).
async fn a_retried_keepalive_renews_again_and_never_revives_an_expired_lease(backend: Backend) {
    let app = spawn_app(backend).await;
    let client = &app.client;
    let lease = client.lease_grant(1).await.unwrap();
    client
        .put_with(
            "held",
            "v",
            Precondition::None,
            kg_api::Attach::Lease(lease.id),
        )
        .await
        .unwrap();
    let path = format!("/api/leases/{}/keepalive", lease.id);
    let post = reqwest::Method::POST;
    let first = call(&app, post.clone(), &path, None, "k-1").await;
    let retry = call(&app, post.clone(), &path, None, "k-1").await;
    assert_eq!((first.0, retry.0), (StatusCode::OK, StatusCode::OK));
    assert_eq!(first.3, retry.3);
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let late = call(&app, post, &path, None, "k-1").await;
    assert_eq!(late.0, StatusCode::NOT_FOUND, "{}", late.3);
    assert!(matches!(
        client.get("held").await,
        Err(kg_api::Error::NotFound { .. })
    ));
}
