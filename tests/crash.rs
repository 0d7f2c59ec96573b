//! kill -9 under load, then restart: every order the gateway answered 202 is
//! processed, exactly once, every shipment, return, adjustment, count and
//! transfer (request and receipt) beside them is decided exactly once, and
//! the business invariants (the ledger's and the locations' included)
//! hold.

use crate::common;

use common::load::{
    assert_accepted_orders_processed_once, assert_commands_decided_once, place_orders_until,
    run_commands_while, CommandReport,
};
use common::process::assert_rebuild_identical;
use common::process::{free_port, Role, ServeAndWorker, SharedDeployment};
use common::Api;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};
use streamstock::store::Store;
use uuid::Uuid;

/// Orders from 6 clients and, beside them, the warehouse's and stock
/// keeper's commands (shipments, returns, cancels, adjustments, counts,
/// transfers between two locations and their receipts),
/// for `millis`.
fn load_with_commands(
    api: &Arc<Api>,
    products: &[Uuid],
    millis: u64,
) -> (
    tokio::task::JoinHandle<common::load::LoadReport>,
    tokio::task::JoinHandle<CommandReport>,
) {
    let stop = Instant::now() + Duration::from_millis(millis);
    let load = tokio::spawn(place_orders_until(api.clone(), 6, products.to_vec(), stop));
    let running = tokio_util::sync::CancellationToken::new();
    let warehouse = tokio::spawn(run_commands_while(
        api.clone(),
        products.to_vec(),
        running.clone(),
    ));
    tokio::spawn(async move {
        tokio::time::sleep_until(tokio::time::Instant::from_std(stop)).await;
        running.cancel();
    });
    (load, warehouse)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_all_survives_kill_9_under_load() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_str().unwrap().to_string();
    let listen = format!("127.0.0.1:{}", free_port());
    let args = [
        "all",
        "--profile",
        "none",
        "--listen",
        &listen,
        "--data-dir",
        &data_dir,
        "--batch-wait-ms",
        "20",
    ];
    let api = Arc::new(Api::new(&format!("http://{listen}")));

    let mut running = Some(Role::start("all", &args, &[]));
    api.wait_healthy().await;
    let stock = vec![
        (api.create_product("CRASH-A", 1.25, 500).await, 500),
        (api.create_product("CRASH-B", 9.99, 40).await, 40),
    ];
    let products: Vec<Uuid> = stock.iter().map(|s| s.0).collect();
    let mut accepted = HashSet::new();
    let mut commands = CommandReport::default();
    for round in 0..3 {
        if running.is_none() {
            running = Some(Role::start("all", &args, &[]));
            api.wait_healthy().await;
        }
        let (load, warehouse) = load_with_commands(&api, &products, 1500);
        tokio::time::sleep(Duration::from_millis(700 + 100 * round)).await;
        running.take().expect("started above").kill_hard();
        accepted.extend(load.await.unwrap().accepted);
        commands.absorb(warehouse.await.unwrap());
    }
    assert!(
        accepted.len() > 20,
        "the load produced too few orders ({}) to mean anything",
        accepted.len()
    );

    let last = Role::start("all", &args, &[]);
    api.wait_healthy().await;
    let store = Store::connect(&format!("sqlite://{data_dir}/streamstock.db"))
        .await
        .unwrap();
    assert_accepted_orders_processed_once(&api, &store, &accepted, &stock).await;
    assert_commands_decided_once(&store, &commands).await;
    assert!(last.terminate().success());
    // Replaying the archive the crashes left gives the same read model.
    assert_rebuild_identical(&["--data-dir", &data_dir], &[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valkey_postgres_worker_killed_under_load_loses_nothing() {
    // A killed worker's partitions (and unacked entries) move after 1.5 s.
    let deployment = SharedDeployment::new()
        .await
        .with("STREAMSTOCK_LEASE_TTL_MS", "1500");
    let env = &deployment.env;
    let stage = ServeAndWorker::start(env, &[("VK-A", 2.50, 300), ("VK-B", 15.00, 30)]).await;
    let (api, stock, products) = (stage.api.clone(), stage.stock.clone(), stage.product_ids());

    let mut accepted = HashSet::new();
    let mut commands = CommandReport::default();
    let mut unanswered = 0;
    for round in 0..3 {
        let victim = Role::start("worker", &["worker", "--listen", "127.0.0.1:0"], env);
        let (load, warehouse) = load_with_commands(&api, &products, 1500);
        tokio::time::sleep(Duration::from_millis(600 + 150 * round)).await;
        victim.kill_hard();
        let report = load.await.unwrap();
        accepted.extend(report.accepted);
        unanswered += report.unanswered;
        commands.absorb(warehouse.await.unwrap());
    }
    assert!(accepted.len() > 20, "too few orders: {}", accepted.len());

    let store = Store::connect(&deployment.database).await.unwrap();
    assert_accepted_orders_processed_once(&api, &store, &accepted, &stock).await;
    assert_commands_decided_once(&store, &commands).await;
    // The gateway was never killed: every request that got an answer is
    // accounted for, so the read model holds exactly the orders answered 202
    // (give or take requests that timed out on the client, if any).
    let orders = api.all_orders().await.unwrap().len();
    assert!(
        orders >= accepted.len() && orders <= accepted.len() + unanswered,
        "{orders} orders for {} answered 202 and {unanswered} unanswered",
        accepted.len()
    );
    stage.stop();
    assert_rebuild_identical(&[], env);
}
