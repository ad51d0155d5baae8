//! Revisions and HTTP preconditions through the typed client.

use kg_api::{Error, Precondition};
use reqwest::StatusCode;

use kg_testkit::{spawn_app, Backend};

on_both_backends!(
    revisions_increase_and_are_never_reused_across_delete_and_recreate,
    if_match_writes_only_at_the_named_revision,
    if_none_match_star_creates_only,
    if_match_star_requires_an_existing_key,
    get_with_current_etag_returns_304,
    get_honours_if_match_and_if_none_match_star,
);

async fn revisions_increase_and_are_never_reused_across_delete_and_recreate(backend: Backend) {
    let app = spawn_app(backend).await;
    let client = &app.client;
    let first = client.put("a", "1", Precondition::None).await.unwrap();
    assert_eq!(
        (first.revision, first.create_revision, first.version),
        (1, 1, 1)
    );
    let second = client.put("a", "2", Precondition::None).await.unwrap();
    assert_eq!(
        (second.revision, second.create_revision, second.version),
        (2, 1, 2)
    );
    let deleted = client.delete("a", Precondition::None).await.unwrap();
    assert_eq!(deleted.revision, 3);
    let recreated = client.put("a", "3", Precondition::None).await.unwrap();
    assert_eq!(
        (
            recreated.revision,
            recreated.create_revision,
            recreated.version
        ),
        (4, 4, 1),
        "a re-created key starts a new life at a new revision"
    );
    let other = client.put("b", "x", Precondition::None).await.unwrap();
    assert_eq!(other.revision, 5);

    let read = client.get("a").await.unwrap();
    assert_eq!(
        (read.mod_revision, read.create_revision, read.version),
        (4, 4, 1)
    );
    assert_eq!(read.value, "3");
    assert_eq!(client.status().await.unwrap().revision, Some(5));
}

async fn if_match_writes_only_at_the_named_revision(backend: Backend) {
    let app = spawn_app(backend).await;
    let client = &app.client;
    let written = client.put("k", "v1", Precondition::None).await.unwrap();
    let stale = client
        .put("k", "v2", Precondition::IfRevision(written.revision + 7))
        .await;
    assert!(
        matches!(stale, Err(Error::PreconditionFailed { .. })),
        "{stale:?}"
    );
    let fresh = client
        .put("k", "v2", Precondition::IfRevision(written.revision))
        .await
        .unwrap();
    assert!(fresh.revision > written.revision);
    assert_eq!(client.get("k").await.unwrap().value, "v2");

    let stale_delete = client
        .delete("k", Precondition::IfRevision(written.revision))
        .await;
    assert!(
        matches!(stale_delete, Err(Error::PreconditionFailed { .. })),
        "{stale_delete:?}"
    );
    client
        .delete("k", Precondition::IfRevision(fresh.revision))
        .await
        .unwrap();
    let missing = client
        .put("k", "v3", Precondition::IfRevision(fresh.revision))
        .await;
    assert!(
        matches!(missing, Err(Error::PreconditionFailed { .. })),
        "If-Match on a deleted key fails"
    );
}

async fn if_none_match_star_creates_only(backend: Backend) {
    let app = spawn_app(backend).await;
    let client = &app.client;
    client
        .put("once", "first", Precondition::CreateOnly)
        .await
        .unwrap();
    let again = client.put("once", "second", Precondition::CreateOnly).await;
    match again {
        Err(Error::PreconditionFailed { detail }) => {
            assert!(detail.contains("already exists"), "{detail}")
        }
        other => panic!("expected 412, got {other:?}"),
    }
    assert_eq!(client.get("once").await.unwrap().value, "first");
}

async fn if_match_star_requires_an_existing_key(backend: Backend) {
    let app = spawn_app(backend).await;
    let client = &app.client;
    let absent = client.put("k", "v", Precondition::MustExist).await;
    assert!(
        matches!(absent, Err(Error::PreconditionFailed { .. })),
        "{absent:?}"
    );
    client.put("k", "v", Precondition::None).await.unwrap();
    client.put("k", "w", Precondition::MustExist).await.unwrap();
}

async fn get_with_current_etag_returns_304(backend: Backend) {
    let app = spawn_app(backend).await;
    let written = app.client.put("k", "v", Precondition::None).await.unwrap();
    let etag = format!("\"{}\"", written.revision);
    let get_if_changed = || {
        app.http
            .get(app.url("/api/key?key=k"))
            .header("if-none-match", &etag)
            .send()
    };
    let response = get_if_changed().await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_MODIFIED);
    app.client.put("k", "w", Precondition::None).await.unwrap();
    let changed = get_if_changed().await.unwrap();
    assert_eq!(changed.status(), StatusCode::OK);
}

async fn get_honours_if_match_and_if_none_match_star(backend: Backend) {
    let app = spawn_app(backend).await;
    let written = app.client.put("k", "v", Precondition::None).await.unwrap();
    let get = |key: &'static str, header: &'static str, value: String| {
        let request = app
            .http
            .get(app.url(&format!("/api/key?key={key}")))
            .header(header, value);
        async move { request.send().await.unwrap() }
    };
    let current = format!("\"{}\"", written.revision);
    let stale = format!("\"{}\"", written.revision + 100);
    // RFC 9110: If-None-Match: * fails on a key that exists (304 for a GET), holds on a
    // missing one (the ordinary 404).
    assert_eq!(
        get("k", "if-none-match", "*".into()).await.status(),
        StatusCode::NOT_MODIFIED
    );
    assert_eq!(
        get("gone", "if-none-match", "*".into()).await.status(),
        StatusCode::NOT_FOUND
    );
    // If-Match: the current revision or * answers as usual; anything else is 412.
    assert_eq!(
        get("k", "if-match", current.clone()).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        get("k", "if-match", "*".into()).await.status(),
        StatusCode::OK
    );
    let failed = get("k", "if-match", stale).await;
    assert_eq!(failed.status(), StatusCode::PRECONDITION_FAILED);
    let body: kg_api::ErrorBody = failed.json().await.unwrap();
    assert!(body.detail.contains("not at revision"), "{}", body.detail);
    assert_eq!(
        get("gone", "if-match", "*".into()).await.status(),
        StatusCode::PRECONDITION_FAILED
    );
    // An unquoted revision is not an entity tag: 400, on a GET as on a write, and the detail
    // quotes the value once.
    let unquoted = get("k", "if-match", written.revision.to_string()).await;
    assert_eq!(unquoted.status(), StatusCode::BAD_REQUEST);
    let body: kg_api::ErrorBody = unquoted.json().await.unwrap();
    assert!(
        body.detail
            .ends_with(&format!("got `{}`", written.revision)),
        "the value as sent, not escaped twice: {}",
        body.detail
    );
    let put_unquoted = app
        .http
        .put(app.url("/api/key"))
        .header("if-match", written.revision.to_string())
        .json(&serde_json::json!({"data": {"key": "k", "value": "w"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(put_unquoted.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        app.client.get("k").await.unwrap().value,
        "v",
        "nothing was written"
    );
}
