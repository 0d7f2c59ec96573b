//! Admission control on the backlog (`--max-backlog`): with the worker
//! frozen (SIGSTOP) the backlog passes its bound and every write is refused
//! at once (503 with Retry-After) while reads still answer; no accepted
//! order is lost; after SIGCONT the backlog drains and writes are taken
//! again.

use crate::common::process::{free_port, Role, SharedDeployment};
use crate::common::Api;
use serde_json::json;
use std::time::{Duration, Instant};
use streamstock::domain::status::OrderStatus;

const MAX_BACKLOG: u64 = 300;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_past_its_bound_refuses_writes_until_it_drains() {
    let deployment = SharedDeployment::new()
        .await
        .with("STREAMSTOCK_MAX_BACKLOG", &MAX_BACKLOG.to_string());
    let env = &deployment.env;
    let listen = format!("127.0.0.1:{}", free_port());
    let gateway = Role::start("serve", &["serve", "--listen", &listen], env);
    let worker = Role::start("worker", &["worker", "--listen", "127.0.0.1:0"], env);
    let base = format!("http://{listen}");
    let api = Api::new(&base);
    api.wait_healthy().await;
    let product = api.create_product("ADMIT-A", 1.00, 100_000).await;
    let order = json!({ "customer_email": "a@example.com",
                        "items": [{ "product_id": product, "quantity": 1 }] });

    // While the worker keeps up, every order is taken.
    for _ in 0..20 {
        let placed = api.place_order(&order).await.expect(202);
        assert!(api.status_waiting(placed.order_id, 20).await.is_some());
    }

    worker.pause();
    // Four clients place orders until the gateway has refused for a while
    // (bounded: 60 s).
    let http = reqwest::Client::new();
    let until = Instant::now() + Duration::from_secs(60);
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (http, url, order) = (http.clone(), format!("{base}/api/orders"), order.clone());
            tokio::spawn(async move {
                let (mut accepted, mut refused) = (Vec::new(), Vec::new());
                while Instant::now() < until && refused.len() < 25 {
                    let response = http.post(&url).json(&order).send().await.unwrap();
                    let status = response.status().as_u16();
                    let retry_after = response.headers().get("retry-after").is_some();
                    let body: serde_json::Value = response.json().await.unwrap();
                    match status {
                        202 => accepted.push(body["order_id"].as_str().unwrap().to_string()),
                        503 => {
                            assert!(retry_after, "503 without Retry-After: {body}");
                            refused.push(body);
                        }
                        other => panic!("{other}: {body}"),
                    }
                }
                (accepted, refused)
            })
        })
        .collect();
    let (mut accepted, mut refused) = (Vec::new(), Vec::new());
    for client in clients {
        let (a, r) = client.await.unwrap();
        accepted.extend(a);
        refused.extend(r);
    }
    eprintln!(
        "frozen worker: {} orders accepted, then {} refused",
        accepted.len(),
        refused.len()
    );
    assert_eq!(refused.len(), 100, "refusals did not start");
    let message = refused[0]["error"]["message"].as_str().unwrap();
    assert!(
        refused[0]["error"]["code"] == "overloaded" && message.contains("--max-backlog"),
        "{}",
        refused[0]
    );
    // The backlog passed the bound by at most what came in between two of
    // the gateway's readings of it (generously bounded here).
    assert!(
        (accepted.len() as u64) >= MAX_BACKLOG && (accepted.len() as u64) < MAX_BACKLOG * 3,
        "{} accepted with a bound of {MAX_BACKLOG}",
        accepted.len()
    );
    // Reads still answer.
    api.products().await.expect(200);
    let metrics = api.metrics().await;
    assert!(
        metrics.contains("streamstock_requests_shed_total{reason=\"backlog\"}"),
        "{metrics}"
    );

    worker.resume();
    // Nothing accepted is lost: every order is decided.
    for id in &accepted {
        let status = api.status_waiting(id, 30).await;
        assert!(
            matches!(status, Some(s) if s != OrderStatus::Pending),
            "{id}: {status:?}"
        );
    }
    // And writes are taken again once the backlog drained.
    api.wait_for("orders taken again", || async {
        api.place_order(&order).await.status == 202
    })
    .await;
    assert!(worker.terminate().success());
    assert!(gateway.terminate().success());
}
