//! A decision reaches the clients waiting on it the moment a worker commits
//! it: the long poll is woken by the worker's announcement (in-process with
//! the embedded log, Valkey pub/sub across processes), and the dashboard's
//! WebSocket carries the status change between its snapshots.

use crate::common;

use common::process::{ServeAndWorker, SharedDeployment};
use common::{Api, Backend, TestApp};
use futures::StreamExt;
use serde_json::Value;
use std::time::Duration;
use streamstock::domain::status::OrderStatus;
use tokio_tungstenite::tungstenite::Message;

/// How many announcements the gateway says it heard.
async fn announcements_heard(api: &Api) -> u64 {
    api.metrics()
        .await
        .lines()
        .find_map(|line| line.strip_prefix("streamstock_announcements_heard_total "))
        .map(|n| n.trim().parse().unwrap())
        .unwrap_or(0)
}

/// Places an order and long-polls it; the answer is its decision, and the
/// gateway heard the worker announce it.
async fn assert_long_poll_woken_by_announcement(api: &Api, product: uuid::Uuid) {
    let before = announcements_heard(api).await;
    let queued = api
        .order_of("waits@example.com", &[(product, 1)])
        .await
        .expect(202);
    let decided = api.order_waiting(queued.order_id, 10).await.expect(200);
    assert_eq!(decided.status, OrderStatus::Confirmed, "{decided:?}");
    api.wait_for("the decision's announcement counted", || async {
        announcements_heard(api).await > before
    })
    .await;
}

async fn long_polls_hear_the_decision(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let product = app.create_product("ANN-1", 2.0, 10).await;
    assert_long_poll_woken_by_announcement(&app, product).await;
    app.stop().await;
}

/// The dashboard feed names the order with its new status, without waiting
/// for the next snapshot to list it.
async fn the_dashboard_feed_carries_status_changes(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let product = app.create_product("ANN-WS-1", 2.0, 10).await;
    let ws_url = format!("{}/ws/dashboard", app.base.replacen("http", "ws", 1));
    let (mut socket, _) = tokio_tungstenite::connect_async(ws_url).await.unwrap();
    let first = socket.next().await.unwrap().unwrap();
    let first: Value = serde_json::from_str(first.to_text().unwrap()).unwrap();
    assert!(
        first.get("generated_at").is_some(),
        "a snapshot first: {first}"
    );

    let queued = app
        .order_of("feed@example.com", &[(product, 1)])
        .await
        .expect(202);
    let order = queued.order_id.to_string();
    let heard = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(message) = socket.next().await {
            let Ok(Message::Text(text)) = message else {
                continue;
            };
            let message: Value = serde_json::from_str(&text).unwrap();
            let Some(changes) = message.get("status_changes") else {
                continue;
            };
            if let Some(change) = changes
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["order_id"] == order.as_str())
            {
                return change.clone();
            }
        }
        panic!("the feed closed")
    })
    .await
    .expect("a status change for the order within 10 s");
    assert_eq!(heard["status"], "CONFIRMED", "{heard}");
    app.stop().await;
}

backend_pairs!(
    long_polls_hear_the_decision,
    the_dashboard_feed_carries_status_changes
);

/// `serve` and `worker` in two processes: the announcement crosses them
/// through Valkey pub/sub.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn announcements_cross_processes_through_valkey() {
    let deployment = SharedDeployment::new().await;
    let roles = ServeAndWorker::start(&deployment.env, &[("ANN-SPLIT-1", 1.5, 10)]).await;
    assert_long_poll_woken_by_announcement(&roles.api, roles.stock[0].0).await;
    roles.stop();
}
