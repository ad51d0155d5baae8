//! Data survives a node restart.

use kg_api::Precondition;

use kg_testkit::{spawn_app, spawn_app_on, AppOptions, Backend};

on_both_backends!(writes_survive_a_restart);

async fn writes_survive_a_restart(backend: Backend) {
    let app = spawn_app(backend).await;
    app.client
        .put("durable", "yes", Precondition::None)
        .await
        .unwrap();
    app.client
        .put("gone", "soon", Precondition::None)
        .await
        .unwrap();
    app.client.delete("gone", Precondition::None).await.unwrap();
    let url = app.database_url.clone();
    let dir = app.stop().await;

    let restarted = spawn_app_on(&url, dir, AppOptions::default()).await;
    let read = restarted.client.get("durable").await.unwrap();
    assert_eq!(read.value, "yes");
    assert_eq!(read.mod_revision, 1);
    assert!(matches!(
        restarted.client.get("gone").await,
        Err(kg_api::Error::NotFound { .. })
    ));
    let next = restarted
        .client
        .put("after", "restart", Precondition::None)
        .await
        .unwrap();
    assert_eq!(
        next.revision, 4,
        "the revision counter survives the restart too"
    );
}
