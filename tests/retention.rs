//! Log retention never loses work: entries are trimmed while workers are
//! killed with pending entries, and still every order the gateway accepted
//! is decided exactly once, the invariants hold, and `rebuild` from the
//! archive gives the same read model. On both backend pairs.

use crate::common;

use common::load::{assert_accepted_orders_processed_once, place_orders_until, place_orders_while};
use common::process::{
    assert_rebuild_identical, assert_rebuild_identical_for, free_port, Role, ServeAndWorker,
    SharedDeployment,
};
use common::{Api, Backend, TestApp};
use serde_json::json;
use sqlx::Row;
use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use streamstock::store::Store;
use streamstock::stream::valkey::ValkeyLog;
use streamstock::stream::{EventLog, Partition};
use uuid::Uuid;

const PARTITIONS: u32 = 4;
/// The processor's consumer group (see stream::PROCESSOR_GROUP).
const GROUP: &str = "processor";

/// First offsets of the segment files of each partition of an embedded log.
fn segment_bases(log_dir: &Path) -> Vec<Vec<u64>> {
    (0..PARTITIONS)
        .map(|p| common::segment_bases(log_dir, p))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_trimming_under_kill_9_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_str().unwrap().to_string();
    let log_dir = dir.path().join("log");
    let listen = format!("127.0.0.1:{}", free_port());
    // Segments of 8 KiB (about 20 entries): the worker's trimming deletes
    // segments all through the run, between and around the kills.
    let args = [
        "all",
        "--profile",
        "none",
        "--listen",
        &listen,
        "--data-dir",
        &data_dir,
        "--partitions",
        "4",
        "--batch-wait-ms",
        "20",
        "--log-segment-bytes",
        "8192",
    ];
    let api = Arc::new(Api::new(&format!("http://{listen}")));
    let mut running = Some(Role::start("all", &args, &[]));
    api.wait_healthy().await;
    let stock = vec![
        (api.create_product("TRIM-A", 1.25, 600).await, 600),
        (api.create_product("TRIM-B", 9.99, 50).await, 50),
    ];
    let products: Vec<Uuid> = stock.iter().map(|s| s.0).collect();
    let mut accepted = HashSet::new();
    let mut trimmed_before_a_kill = false;
    for round in 0..3 {
        if running.is_none() {
            running = Some(Role::start("all", &args, &[]));
            api.wait_healthy().await;
        }
        let placing = tokio_util::sync::CancellationToken::new();
        let load = tokio::spawn(place_orders_while(
            api.clone(),
            6,
            products.clone(),
            placing.clone(),
        ));
        // Kill once the worker has trimmed segments under this load (it
        // trims each second), or after 8 s; at least 1.5 s in, later in
        // later rounds, so the kills fall at different points.
        let started = Instant::now();
        let earliest = Duration::from_millis(1500 + 300 * round);
        loop {
            let trimmed = segment_bases(&log_dir)
                .iter()
                .any(|bases| bases.first().is_some_and(|&b| b > 0));
            trimmed_before_a_kill |= trimmed;
            let elapsed = started.elapsed();
            if (trimmed && elapsed >= earliest) || elapsed >= Duration::from_secs(8) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        running.take().expect("started above").kill_hard();
        placing.cancel();
        accepted.extend(load.await.unwrap().accepted);
    }
    assert!(accepted.len() > 50, "too few orders: {}", accepted.len());
    assert!(
        trimmed_before_a_kill,
        "segments were deleted while the load ran: {:?}",
        segment_bases(&log_dir)
    );

    let last = Role::start("all", &args, &[]);
    api.wait_healthy().await;
    let store = Store::connect(&format!("sqlite://{data_dir}/streamstock.db"))
        .await
        .unwrap();
    assert_accepted_orders_processed_once(&api, &store, &accepted, &stock).await;
    // Drained and trimmed: each partition keeps about its newest segment.
    api.wait_for("the drained log trimmed to its newest segments", || async {
        segment_bases(&log_dir).iter().all(|bases| bases.len() <= 2)
    })
    .await;
    assert!(last.terminate().success());
    store.close().await;
    assert_rebuild_identical(&["--data-dir", &data_dir, "--partitions", "4"], &[]);
}

/// A worker frozen (SIGSTOP) with entries delivered to it, then killed:
/// the test trims every partition over and over before the survivor takes
/// the dead worker's partitions over. The pending entries stay, the
/// survivor processes them, and the streams end up empty once all is acked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valkey_trimming_keeps_a_killed_workers_pending_entries() {
    let deployment = SharedDeployment::new()
        .await
        .with("STREAMSTOCK_LEASE_TTL_MS", "1500");
    let env = &deployment.env;
    let namespace = env
        .iter()
        .find(|(k, _)| k == "STREAMSTOCK_VALKEY_NAMESPACE")
        .map(|(_, v)| v.clone())
        .unwrap();
    let log = ValkeyLog::connect(
        &common::valkey_url(),
        &namespace,
        PARTITIONS,
        streamstock::stream::Durability::Strict,
    )
    .await
    .unwrap();
    let all: Vec<Partition> = Partition::all(PARTITIONS).collect();
    let stage = ServeAndWorker::start(env, &[("VTRIM-A", 2.50, 400), ("VTRIM-B", 15.00, 40)]).await;
    let (api, stock, products) = (stage.api.clone(), stage.stock.clone(), stage.product_ids());

    let mut accepted = HashSet::new();
    let mut pending_at_kill = 0;
    for round in 0..2 {
        let victim = Role::start("worker", &["worker", "--listen", "127.0.0.1:0"], env);
        let load = tokio::spawn(place_orders_until(
            api.clone(),
            6,
            products.clone(),
            Instant::now() + Duration::from_millis(2500),
        ));
        // Let the victim take its share of partitions, then freeze it: its
        // blocked read is still served, so entries pile up pending for it.
        tokio::time::sleep(Duration::from_millis(900 + 100 * round)).await;
        victim.pause();
        tokio::time::sleep(Duration::from_millis(400)).await;
        victim.kill_hard();
        let stats = log.partition_stats(GROUP).await.unwrap();
        pending_at_kill += stats.iter().map(|s| s.pending).sum::<u64>();
        // Trim while those entries wait for a new owner.
        let until = Instant::now() + Duration::from_millis(1200);
        while Instant::now() < until {
            log.trim(&all).await.unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        accepted.extend(load.await.unwrap().accepted);
    }
    assert!(accepted.len() > 50, "too few orders: {}", accepted.len());
    assert!(
        pending_at_kill > 0,
        "the killed workers held pending entries while the log was trimmed"
    );

    let store = Store::connect(&deployment.database).await.unwrap();
    assert_accepted_orders_processed_once(&api, &store, &accepted, &stock).await;
    // The survivor trims what it owns: once everything is acked, nothing
    // is left in the streams.
    api.wait_for("the streams trimmed empty", || async {
        let stats = log.partition_stats(GROUP).await.unwrap();
        stats.iter().all(|s| s.length == 0 && s.pending == 0)
    })
    .await;
    stage.stop();
    store.close().await;
    assert_rebuild_identical(&[], env);
}

/// Per-second throughput windows older than their retention (2 s here,
/// behind the newest window) are pruned by the worker while per-minute ones
/// stay; `rebuild` applies the same rule, and its checksums are identical.
async fn throughput_windows_are_pruned_and_rebuild_agrees(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let mut common = common::isolated_settings(backend, dir.path()).await;
    common.retention.per_second_retention = Duration::from_secs(2).into();
    let app = TestApp::spawn_with(common.clone()).await;
    let product = app.create_product("WINDOW-1", 3.00, 100).await;
    let order = |q: i64| {
        json!({
            "customer_email": "w@example.com",
            "items": [{ "product_id": product, "quantity": q }]
        })
    };
    for q in 1..=3 {
        app.place_order(&order(q)).await.expect(202);
    }
    app.wait_until_decided(3).await;
    tokio::time::sleep(Duration::from_millis(3500)).await;
    app.place_order(&order(1)).await.expect(202);
    app.wait_until_decided(4).await;

    let store = app.store().await;
    let span = |granularity: &'static str| {
        let store = store.clone();
        async move {
            let row = sqlx::query(
                "SELECT COUNT(*) AS n, CAST(COALESCE(MIN(window_start), 0) AS BIGINT) AS first, \
                 CAST(COALESCE(MAX(window_start), 0) AS BIGINT) AS last \
                 FROM throughput WHERE granularity = $1",
            )
            .bind(granularity)
            .fetch_one(store.pool())
            .await
            .unwrap();
            let n: i64 = row.get("n");
            let first: i64 = row.get("first");
            let last: i64 = row.get("last");
            (n, last - first)
        }
    };
    app.wait_for("per-second windows older than 2 s pruned", || async {
        let (n, spread) = span("s").await;
        n > 0 && spread <= 2_000
    })
    .await;
    let (minutes, _) = span("m").await;
    assert!(minutes > 0, "per-minute windows are kept for days");
    store.close().await;
    app.stop().await;
    assert_rebuild_identical_for(&common);
}

backend_pairs!(throughput_windows_are_pruned_and_rebuild_agrees);
