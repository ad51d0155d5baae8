//! Compare-and-swap races: many clients, one winner per revision.

use futures::future::join_all;
use kg_api::{Error, Precondition};

use kg_testkit::{spawn_app, Backend};

on_both_backends!(
    concurrent_cas_has_exactly_one_winner_per_revision,
    concurrent_create_only_has_exactly_one_winner,
    concurrent_increments_with_cas_lose_no_update,
);

const CONTENDERS: usize = 24;

async fn concurrent_cas_has_exactly_one_winner_per_revision(backend: Backend) {
    let app = spawn_app(backend).await;
    let start = app
        .client
        .put("cas", "start", Precondition::None)
        .await
        .unwrap();
    let mut revision = start.revision;
    for round in 0..5 {
        let attempts = (0..CONTENDERS).map(|contender| {
            let client = app.client.clone();
            async move {
                client
                    .put(
                        "cas",
                        &format!("round {round} by {contender}"),
                        Precondition::IfRevision(revision),
                    )
                    .await
            }
        });
        let results = join_all(attempts).await;
        let winners: Vec<_> = results
            .iter()
            .filter_map(|result| result.as_ref().ok())
            .collect();
        let losers = results
            .iter()
            .filter(|result| matches!(result, Err(Error::PreconditionFailed { .. })))
            .count();
        assert_eq!(
            winners.len(),
            1,
            "round {round}: exactly one winner, got {results:?}"
        );
        assert_eq!(
            losers,
            CONTENDERS - 1,
            "round {round}: every other contender gets 412"
        );
        assert!(winners[0].revision > revision);
        revision = winners[0].revision;
        assert_eq!(app.client.get("cas").await.unwrap().mod_revision, revision);
    }
    assert_eq!(app.client.get("cas").await.unwrap().version, 6);
}

async fn concurrent_create_only_has_exactly_one_winner(backend: Backend) {
    let app = spawn_app(backend).await;
    let attempts = (0..CONTENDERS).map(|contender| {
        let client = app.client.clone();
        async move {
            client
                .put("lock", &contender.to_string(), Precondition::CreateOnly)
                .await
        }
    });
    let results = join_all(attempts).await;
    assert_eq!(
        results.iter().filter(|result| result.is_ok()).count(),
        1,
        "{results:?}"
    );
}

/// Read-modify-write loops with CAS retries: every increment lands exactly once.
async fn concurrent_increments_with_cas_lose_no_update(backend: Backend) {
    let app = spawn_app(backend).await;
    app.client
        .put("counter", "0", Precondition::None)
        .await
        .unwrap();
    let workers = (0..8).map(|_| {
        let client = app.client.clone();
        async move {
            for _ in 0..10 {
                loop {
                    let current = client.get("counter").await.unwrap();
                    let next = current.value.parse::<u64>().unwrap() + 1;
                    match client
                        .put(
                            "counter",
                            &next.to_string(),
                            Precondition::IfRevision(current.mod_revision),
                        )
                        .await
                    {
                        Ok(_) => break,
                        Err(Error::PreconditionFailed { .. }) => continue,
                        Err(err) => panic!("unexpected error {err}"),
                    }
                }
            }
        }
    });
    join_all(workers).await;
    let final_value = app.client.get("counter").await.unwrap();
    assert_eq!(final_value.value, "80");
    assert_eq!(final_value.version, 81);
}
