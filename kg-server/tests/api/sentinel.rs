//! Redis under Sentinel (`--redis-sentinel`): a real primary, replica and Sentinel. When the
//! primary is killed, the node reads and writes on from the database, never returning an old
//! value, and once Sentinel has promoted the replica it uses the cache on the new primary.

use std::time::{Duration, Instant};

use kg_api::{DependencyState, Precondition};
use kg_testkit::{spawn_app_with, unique_prefix, AppOptions, Backend, ThrowawaySentinelGroup};

/// The master the Sentinel names now, as `HOST:PORT`.
async fn master_address(group: &ThrowawaySentinelGroup) -> Option<String> {
    let mut connection =
        kg_testkit::redis_connection(&format!("redis://{}", group.sentinel_address())).await;
    let address: Option<(String, String)> = redis::cmd("SENTINEL")
        .arg("get-master-addr-by-name")
        .arg(&group.master)
        .query_async(&mut connection)
        .await
        .ok()?;
    address.map(|(host, port)| format!("{host}:{port}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_follows_a_sentinel_failover_and_never_reads_an_old_value() {
    let mut group = ThrowawaySentinelGroup::start();
    let options = AppOptions {
        extra_args: vec![
            format!("--redis-sentinel={}", group.sentinel_address()),
            format!("--redis-master={}", group.master),
            format!("--redis-prefix={}", unique_prefix()),
            "--cache-timeout=2s".to_owned(),
        ],
        ..AppOptions::default()
    };
    let app = spawn_app_with(Backend::Sqlite, options).await;
    assert_eq!(
        master_address(&group).await,
        Some(format!("127.0.0.1:{}", group.primary.port))
    );
    assert_eq!(
        app.client.status().await.unwrap().cache_endpoint,
        Some(format!(
            "sentinel master keygrid via {}",
            group.sentinel_address()
        ))
    );
    app.client.put("k", "v0", Precondition::None).await.unwrap();
    assert_eq!(
        app.client.get("k").await.unwrap().meta.cache_hit,
        Some(true),
        "the cache works on the first primary"
    );

    group.primary.kill();
    let killed = Instant::now();
    // One client, each GET after an acknowledged PUT: it must see that PUT's value, from
    // the database while no primary serves, and from the new primary's cache afterwards.
    let mut last = "v0".to_owned();
    let mut promoted_at = None;
    let mut hits_after = 0;
    for i in 1.. {
        assert!(
            killed.elapsed() < kg_testkit::PATIENCE,
            "no failover and cache recovery within {:?} (master {:?}, {} hits after)",
            kg_testkit::PATIENCE,
            master_address(&group).await,
            hits_after
        );
        let value = format!("v{i}");
        app.client
            .put("k", &value, Precondition::None)
            .await
            .unwrap();
        last = value;
        let read = app.client.get("k").await.unwrap();
        assert_eq!(
            read.value, last,
            "a read after an acknowledged write saw an old value"
        );
        if promoted_at.is_none()
            && master_address(&group).await == Some(format!("127.0.0.1:{}", group.replica.port))
        {
            promoted_at = Some(killed.elapsed());
        }
        if promoted_at.is_some() && read.meta.cache_hit == Some(true) {
            hits_after += 1;
            if hits_after >= 3 {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "promoted {:?} after the kill; cache hits again {:?} after it",
        promoted_at.unwrap(),
        killed.elapsed()
    );
    assert_eq!(app.client.get("k").await.unwrap().value, last);
    assert_eq!(
        app.client.status().await.unwrap().cache,
        DependencyState::Ok
    );
}
