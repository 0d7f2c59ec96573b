//! kill -9 under load, then restart: every order the gateway answered 202 is
//! processed, exactly once, and the business invariants hold.

mod common;

use common::process::{free_port, Role, SharedDeployment};
use common::Api;
use serde_json::json;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use streamstock::store::Store;
use uuid::Uuid;

/// Places orders from 6 concurrent clients until `stop`, recording the ids
/// the gateway answered 202 for, and how many requests got no answer (the
/// server died, or a timeout): their fate is unknown to the client.
async fn place_orders_until(
    api: Arc<Api>,
    products: Vec<Uuid>,
    stop: Instant,
) -> (HashSet<Uuid>, usize) {
    let accepted = Arc::new(Mutex::new(HashSet::new()));
    let unanswered = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let clients = (0..6).map(|c| {
        let (api, products, accepted, unanswered) = (api.clone(), products.clone(), accepted.clone(), unanswered.clone());
        tokio::spawn(async move {
            let mut i = 0usize;
            while Instant::now() < stop {
                i += 1;
                let items = json!([{ "product_id": products[(c + i) % products.len()], "quantity": 1 + i % 3 }]);
                let body = json!({ "customer_email": format!("crash{c}@example.com"), "items": items });
                match api.http.post(api.url("/api/orders")).json(&body).timeout(Duration::from_secs(2)).send().await {
                    Ok(r) if r.status() == 202 => {
                        let answer: serde_json::Value = r.json().await.unwrap();
                        accepted.lock().unwrap().insert(answer["order_id"].as_str().unwrap().parse().unwrap());
                    }
                    Ok(r) => assert!(r.status().is_server_error(), "unexpected {}", r.status()),
                    Err(_) => {
                        unanswered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(20)).await
                    }
                }
            }
        })
    });
    futures::future::join_all(clients).await;
    let ids = accepted.lock().unwrap().clone();
    (ids, unanswered.load(std::sync::atomic::Ordering::Relaxed))
}

/// `stock` holds each product's id and the units ever received: a receipt
/// applied twice would show as more on hand.
async fn assert_every_accepted_order_processed_once(
    api: &Api,
    store: &Store,
    accepted: &HashSet<Uuid>,
    stock: &[(Uuid, i64)],
) {
    eprintln!("{} orders were answered 202", accepted.len());
    api.wait_for("every accepted order decided", || async {
        let Some(all) = api.all_orders().await else {
            return false;
        };
        let decided: HashSet<Uuid> = all
            .iter()
            .filter(|o| o["status"] != "PENDING")
            .map(|o| o["order_id"].as_str().unwrap().parse().unwrap())
            .collect();
        accepted.is_subset(&decided) && decided.len() == all.len()
    })
    .await;
    let violations = store.invariant_violations().await.unwrap();
    assert!(violations.is_empty(), "{violations:#?}");
    for (id, received) in stock {
        let (_, product) = api.get(&format!("/api/products/{id}")).await;
        assert_eq!(product["on_hand"].as_i64(), Some(*received), "{product}");
    }
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
    for round in 0..3 {
        if running.is_none() {
            running = Some(Role::start("all", &args, &[]));
            api.wait_healthy().await;
        }
        let load = tokio::spawn(place_orders_until(
            api.clone(),
            products.clone(),
            Instant::now() + Duration::from_millis(1500),
        ));
        tokio::time::sleep(Duration::from_millis(700 + 100 * round)).await;
        running.take().expect("started above").kill_hard();
        accepted.extend(load.await.unwrap().0);
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
    assert_every_accepted_order_processed_once(&api, &store, &accepted, &stock).await;
    assert!(last.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valkey_postgres_worker_killed_under_load_loses_nothing() {
    // A killed worker's partitions (and unacked entries) move after 1.5 s.
    let deployment = SharedDeployment::new()
        .await
        .with("STREAMSTOCK_LEASE_TTL_MS", "1500");
    let env = &deployment.env;
    let listen = format!("127.0.0.1:{}", free_port());
    let gateway = Role::start("serve", &["serve", "--listen", &listen], env);
    let survivor = Role::start("worker", &["worker", "--listen", "127.0.0.1:0"], env);
    let api = Arc::new(Api::new(&format!("http://{listen}")));
    api.wait_healthy().await;
    let stock = vec![
        (api.create_product("VK-A", 2.50, 300).await, 300),
        (api.create_product("VK-B", 15.00, 30).await, 30),
    ];
    let products: Vec<Uuid> = stock.iter().map(|s| s.0).collect();

    let mut accepted = HashSet::new();
    let mut unanswered = 0;
    for round in 0..3 {
        let victim = Role::start("worker", &["worker", "--listen", "127.0.0.1:0"], env);
        let load = tokio::spawn(place_orders_until(
            api.clone(),
            products.clone(),
            Instant::now() + Duration::from_millis(1500),
        ));
        tokio::time::sleep(Duration::from_millis(600 + 150 * round)).await;
        victim.kill_hard();
        let (ids, lost) = load.await.unwrap();
        accepted.extend(ids);
        unanswered += lost;
    }
    assert!(accepted.len() > 20, "too few orders: {}", accepted.len());

    let store = Store::connect(&deployment.database).await.unwrap();
    assert_every_accepted_order_processed_once(&api, &store, &accepted, &stock).await;
    // The gateway was never killed: every request that got an answer is
    // accounted for, so the read model holds exactly the orders answered 202
    // (give or take requests that timed out on the client, if any).
    let orders = api.all_orders().await.unwrap().len();
    assert!(
        orders >= accepted.len() && orders <= accepted.len() + unanswered,
        "{orders} orders for {} answered 202 and {unanswered} unanswered",
        accepted.len()
    );
    assert!(survivor.terminate().success());
    assert!(gateway.terminate().success());
}
