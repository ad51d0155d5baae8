//! The read fence (`--read-fence`): a primary that can no longer reach a synchronous standby,
//! as a deposed one under Patroni's strict synchronous mode, must not answer a read from the
//! database. A private PostgreSQL plays that primary by naming a standby that never comes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kg_api::Precondition;
use reqwest::StatusCode;
use sqlx::Connection as _;

use kg_testkit::{spawn_app_on, AppOptions, TestApp, ThrowawayPostgres};

/// Sets the primary's synchronous standby, `''` for none, and reloads its configuration.
async fn synchronous_standby(postgres: &ThrowawayPostgres, names: &str) {
    let mut admin = sqlx::PgConnection::connect(&postgres.url()).await.unwrap();
    sqlx::query(&format!(
        "ALTER SYSTEM SET synchronous_standby_names = '{names}'"
    ))
    .execute(&mut admin)
    .await
    .unwrap();
    sqlx::query("SELECT pg_reload_conf()")
        .execute(&mut admin)
        .await
        .unwrap();
    // The reload is asynchronous: wait until a new session sees it.
    let deadline = Instant::now() + kg_testkit::PATIENCE;
    loop {
        let shown: String = sqlx::query_scalar("SHOW synchronous_standby_names")
            .fetch_one(&mut admin)
            .await
            .unwrap();
        if shown == names {
            break;
        }
        assert!(Instant::now() < deadline, "the reload did not take");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn node(postgres: &ThrowawayPostgres, fenced: bool) -> TestApp {
    let mut extra_args = vec!["--db-timeout=1s".to_owned()];
    if fenced {
        extra_args.push("--read-fence".to_owned());
    }
    let options = AppOptions {
        extra_args,
        ..AppOptions::default()
    };
    let dir = Arc::new(tempfile::tempdir().unwrap());
    spawn_app_on(&postgres.url(), dir, options).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_read_is_refused_by_a_primary_without_its_synchronous_standby() {
    let postgres = ThrowawayPostgres::start();
    let fenced = node(&postgres, true).await;
    let unfenced = node(&postgres, false).await;
    fenced
        .client
        .put("k", "v", Precondition::None)
        .await
        .unwrap();
    // A primary with its standby (here: none required) answers fenced reads as any other.
    assert_eq!(fenced.client.get("k").await.unwrap().value, "v");
    let listed = fenced.get("/api/keys?prefix=k").await;
    assert_eq!(listed.status(), StatusCode::OK);

    synchronous_standby(&postgres, "ghost").await;
    // Without the fence the node still reads the value, as it would from a deposed primary
    // that a proxy still routes to.
    assert_eq!(unfenced.client.get("k").await.unwrap().value, "v");
    // With it, the read waits on a commit that no standby confirms, and the node answers 503
    // when its database timeout runs out: never the value, and never a hang (the client's own
    // timeout would turn one into an error here).
    for path in [
        "/api/key?key=k",
        "/api/keys?prefix=k",
        "/api/keys?count_only=true",
    ] {
        let response = fenced.get(path).await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE, "{path}");
        assert!(
            response.text().await.unwrap().starts_with(r#"{"detail":"#),
            "{path}"
        );
    }

    // The standby is back (a primary that is still the leader): reads answer again, without a
    // restart.
    synchronous_standby(&postgres, "").await;
    let deadline = Instant::now() + kg_testkit::PATIENCE;
    loop {
        match fenced.client.get("k").await {
            Ok(read) => {
                assert_eq!(read.value, "v");
                break;
            }
            Err(err) => assert!(Instant::now() < deadline, "no recovery: {err}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
