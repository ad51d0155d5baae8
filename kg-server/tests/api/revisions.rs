//! Revisions and HTTP preconditions through the typed client.

use kg_api::{Error, Precondition};
use reqwest::StatusCode;

use crate::helpers::{spawn_app, Backend};

on_both_backends!(
    revisions_increase_and_are_never_reused_across_delete_and_recreate,
    if_match_writes_only_at_the_named_revision,
    if_none_match_star_creates_only,
    if_match_star_requires_an_existing_key,
    get_with_current_etag_returns_304,
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
    let response = app
        .http
        .get(app.url("/api/key?key=k"))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_MODIFIED);
    app.client.put("k", "w", Precondition::None).await.unwrap();
    let changed = app
        .http
        .get(app.url("/api/key?key=k"))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(changed.status(), StatusCode::OK);
}
