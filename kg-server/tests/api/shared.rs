//! Several nodes over one database, as in the cluster: revisions stay unique and ordered
//! across nodes, and a write through one node is read through another. On SQLite the two
//! nodes are two connection pools on one file, which is what WAL mode and the busy timeout
//! are for.

use std::collections::BTreeSet;

use futures::future::join_all;
use kg_api::Precondition;

use kg_testkit::{fresh_database, spawn_app, spawn_app_on, AppOptions, Backend};

on_both_backends!(
    nodes_sharing_a_database_never_reuse_a_revision,
    nodes_starting_together_on_a_new_database_all_start,
);

/// Nodes started at once on a database no node has opened yet, as a stack's nodes start: each
/// migrates it, and none fails for the others doing the same. (On SQLite, sqlx's migrator
/// takes no lock, and one of two nodes failed its start with "duplicate column name" or a
/// UNIQUE violation in `_sqlx_migrations`, found when the model test started two nodes.)
async fn nodes_starting_together_on_a_new_database_all_start(backend: Backend) {
    for _ in 0..4 {
        let dir = tempfile::tempdir().unwrap();
        let url = fresh_database(backend, dir.path()).await;
        let opened = join_all((0..3).map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                let options = kg_server::store::ConnectOptions {
                    max_connections: 2,
                    acquire_timeout: std::time::Duration::from_secs(30),
                    read_fence: false,
                };
                kg_server::store::connect(&url, &options)
                    .await
                    .map(|_| ())
                    .map_err(|err| format!("{err:#}"))
            })
        }))
        .await;
        for node in opened {
            node.unwrap()
                .unwrap_or_else(|err| panic!("a node failed to start: {err}"));
        }
    }
}

async fn nodes_sharing_a_database_never_reuse_a_revision(backend: Backend) {
    let first = spawn_app(backend).await;
    let options = AppOptions {
        node_id: Some("second-node".to_owned()),
        ..AppOptions::default()
    };
    let dir = std::sync::Arc::new(tempfile::tempdir().unwrap());
    let second = spawn_app_on(&first.database_url, dir, options).await;

    let writes = (0..40).map(|i| {
        let client = if i % 2 == 0 {
            first.client.clone()
        } else {
            second.client.clone()
        };
        async move {
            client
                .put(&format!("k{}", i % 5), &i.to_string(), Precondition::None)
                .await
        }
    });
    let results: Vec<_> = join_all(writes)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let revisions: BTreeSet<i64> = results.iter().map(|result| result.revision).collect();
    assert_eq!(revisions.len(), 40, "every write got its own revision");
    assert_eq!(
        revisions.iter().copied().collect::<Vec<_>>(),
        (1..=40).collect::<Vec<_>>()
    );
    let nodes: BTreeSet<_> = results
        .iter()
        .filter_map(|result| result.meta.node.clone())
        .collect();
    assert_eq!(nodes.len(), 2, "both nodes answered: {nodes:?}");

    first
        .client
        .put("shared", "from first", Precondition::None)
        .await
        .unwrap();
    let read = second.client.get("shared").await.unwrap();
    assert_eq!(read.value, "from first");
    assert_eq!(read.meta.node.as_deref(), Some("second-node"));
}
