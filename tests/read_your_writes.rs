//! An id the gateway returns in a 2xx works in the very next request: a
//! product created is stocked and ordered at once, and the `Location` of a
//! creation never answers 404, even while no worker runs.

use crate::common;

use common::process::{free_port, Role, SharedDeployment};
use common::{Api, Backend, TestApp};
use serde_json::json;
use std::time::{Duration, Instant};
use streamstock::domain::status::OrderStatus;
use streamstock::gateway::responses::{OrderPending, Queued};

/// Create, stock, order and read back, with no wait in between.
async fn create_stock_and_order_at_once(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let created = app
        .send(
            app.http
                .post(app.url("/api/products"))
                .json(&json!({ "sku": "RYW-1", "name": "At once", "price": 2.5 })),
        )
        .await;
    assert_eq!(created.status, 201, "readable when answered");
    let location = created.header("location").unwrap().to_string();
    let body = created.body;
    let id = body["id"].as_str().unwrap().to_string();

    assert_eq!(app.get(&location).await.0, 200, "GET of the Location");
    app.receive_stock(&id, 5).await.expect(202);
    let product: uuid::Uuid = id.parse().unwrap();
    let queued = app
        .order_of("now@example.com", &[(product, 1)])
        .await
        .expect(202);
    let order = queued.order_id;
    let location = format!("/api/orders/{order}");
    let (status, placed) = app.get(&location).await;
    assert_eq!(status, 200, "GET of the order's Location: {placed}");
    let decided = app.order_waiting(order, 10).await.expect(200);
    assert_ne!(decided.status, OrderStatus::Pending, "{decided:?}");

    // Initial stock comes with the creation: readable with it.
    let created = app
        .add_product(&json!({ "sku": "RYW-2", "name": "Stocked", "price": 1, "initial_stock": 7 }))
        .await
        .expect(201);
    assert_eq!(created.on_hand, 7, "{created:?}");
    app.stop().await;
}

backend_pairs!(create_stock_and_order_at_once);

/// With no worker running, a creation is answered 202 once the bounded wait
/// is over; its Location answers 202 (not 404) and takes stock, and so does
/// an order's; a worker started later applies them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_worker_the_location_answers_202_not_404() {
    let deployment = SharedDeployment::new().await;
    let env = &deployment.env;
    let listen = format!("127.0.0.1:{}", free_port());
    let gateway = Role::start("serve", &["serve", "--listen", &listen], env);
    let api = Api::new(&format!("http://{listen}"));
    api.wait_healthy().await;
    // One product applied while a worker runs, then no worker.
    let worker = Role::start("worker", &["worker", "--listen", "127.0.0.1:0"], env);
    let early = api.create_product("EARLY-1", 1.0, 10).await;
    assert!(worker.terminate().success());

    let started = Instant::now();
    let created = api
        .send(
            api.http
                .post(api.url("/api/products"))
                .json(&json!({ "sku": "LATE-1", "name": "Late", "price": 3 })),
        )
        .await;
    assert_eq!(created.status, 202);
    assert!(started.elapsed() >= Duration::from_secs(4), "waited first");
    let location = created.header("location").unwrap().to_string();
    let body = created.body;
    assert_eq!(body["status"], "QUEUED");
    let id = body["id"].as_str().unwrap().to_string();

    let (status, pending) = api.get(&location).await;
    assert_eq!(status, 202, "{pending}");
    assert_eq!(pending["sku"], "LATE-1");
    assert_eq!(pending["status"], "QUEUED");
    api.receive_stock(&id, 4).await.expect(202);
    // An id no gateway issued is still unknown.
    assert_eq!(api.product(uuid::Uuid::now_v7()).await.status, 404);

    // An order placed now waits in the log: its Location answers 202; an
    // id that is not a recent one of ours, 404 at once.
    let queued = api
        .order_of("late@example.com", &[(early, 1)])
        .await
        .expect(202);
    let order = queued.order_id;
    let pending: OrderPending = api.order(order).await.expect_as(202);
    assert_eq!(pending.status, Queued::Queued);
    assert_eq!(api.order(uuid::Uuid::new_v4()).await.status, 404);

    let worker = Role::start("worker", &["worker", "--listen", "127.0.0.1:0"], env);
    api.wait_for("the late product applied with its stock", || async {
        let (status, product) = api.get(&location).await;
        status == 200 && product["on_hand"] == 4
    })
    .await;
    api.order_waiting(order, 10).await.expect(200);
    assert!(worker.terminate().success());
    assert!(gateway.terminate().success());
}
