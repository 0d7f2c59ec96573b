//! Order traffic for crash and outage tests, and the check that follows it:
//! every order the gateway accepted is processed exactly once.

use super::Api;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use streamstock::domain::status::OrderStatus;
use streamstock::store::Store;
use uuid::Uuid;

/// What the clients saw.
#[derive(Debug, Default)]
pub struct LoadReport {
    /// Orders answered 202.
    pub accepted: HashSet<Uuid>,
    /// Answers 503, and the error codes they carried.
    pub unavailable: usize,
    pub error_codes: HashSet<String>,
    /// Requests that got no answer within 8 s (the server died, say): the
    /// client cannot know whether they were recorded.
    pub unanswered: usize,
}

/// `clients` concurrent clients place orders of 1–3 units over `products`
/// until `stop`. Every answer must be a 202 or a 503 with a JSON error.
pub async fn place_orders_until(
    api: Arc<Api>,
    clients: usize,
    products: Vec<Uuid>,
    stop: Instant,
) -> LoadReport {
    let running = tokio_util::sync::CancellationToken::new();
    let timer = {
        let running = running.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(tokio::time::Instant::from_std(stop)).await;
            running.cancel();
        })
    };
    let report = place_orders_while(api, clients, products, running).await;
    timer.abort();
    report
}

/// As `place_orders_until`, until `running` is cancelled.
pub async fn place_orders_while(
    api: Arc<Api>,
    clients: usize,
    products: Vec<Uuid>,
    running: tokio_util::sync::CancellationToken,
) -> LoadReport {
    let report = Arc::new(Mutex::new(LoadReport::default()));
    let tasks = (0..clients).map(|c| {
        let (api, products, report) = (api.clone(), products.clone(), report.clone());
        let running = running.clone();
        tokio::spawn(async move {
            let mut i = 0usize;
            while !running.is_cancelled() {
                i += 1;
                let items = json!([{ "product_id": products[(c + i) % products.len()], "quantity": 1 + i % 3 }]);
                let body = json!({ "customer_email": format!("load{c}@example.com"), "items": items });
                let sent = api.http.post(api.url("/api/orders")).json(&body).timeout(Duration::from_secs(8)).send().await;
                let Ok(answer) = sent else {
                    report.lock().unwrap().unanswered += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                };
                let status = answer.status().as_u16();
                let body: Value = answer.json().await.unwrap_or(Value::Null);
                match status {
                    202 => {
                        report.lock().unwrap().accepted.insert(body["order_id"].as_str().unwrap().parse().unwrap());
                    }
                    503 => {
                        let code = body["error"]["code"].as_str().unwrap_or_else(|| panic!("503 without a JSON error: {body}"));
                        {
                            let mut seen = report.lock().unwrap();
                            seen.unavailable += 1;
                            seen.error_codes.insert(code.to_string());
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    other => panic!("unexpected status {other}: {body}"),
                }
            }
        })
    });
    for task in futures::future::join_all(tasks).await {
        task.unwrap();
    }
    let report = std::mem::take(&mut *report.lock().unwrap());
    eprintln!(
        "{} orders answered 202, {} answered 503, {} unanswered",
        report.accepted.len(),
        report.unavailable,
        report.unanswered
    );
    report
}

/// Waits until every accepted order is decided and none is pending, then
/// checks the invariants and that each product's stock (`stock`: id and
/// units ever received) was applied exactly once.
pub async fn assert_accepted_orders_processed_once(
    api: &Api,
    store: &Store,
    accepted: &HashSet<Uuid>,
    stock: &[(Uuid, i64)],
) {
    api.wait_for("every accepted order decided", || async {
        let Some(all) = api.all_orders().await else {
            return false;
        };
        let decided: HashSet<Uuid> = all
            .iter()
            .filter(|o| o.status != OrderStatus::Pending)
            .map(|o| o.order_id.as_uuid())
            .collect();
        accepted.is_subset(&decided) && decided.len() == all.len()
    })
    .await;
    let violations = crate::common::invariants::invariant_violations(store)
        .await
        .unwrap();
    assert!(violations.is_empty(), "{violations:#?}");
    for (id, received) in stock {
        let product = api.product(id).await.expect(200);
        assert_eq!(
            product.on_hand, *received,
            "stock applied exactly once: {product:?}"
        );
    }
}

/// A backend server a test stops hard and starts again.
pub trait Outage {
    fn stop_hard(&mut self);
    fn restart(&mut self);
}

/// Orders from 4 clients on `product` for `load_for`; once orders are
/// being decided, `server` is stopped hard for `down_for`, then restarted;
/// `during` runs once readiness says 503 (what the test checks while the
/// server is down). Checks what every outage test needs: readiness says 503
/// while it is down, every request got an answer, and enough orders were
/// accepted.
pub async fn outage_under_load(
    app: &super::TestApp,
    product: Uuid,
    load_for: Duration,
    server: &mut impl Outage,
    down_for: Duration,
    during: impl AsyncFnOnce(),
) -> LoadReport {
    let load = tokio::spawn(place_orders_until(
        Arc::new(Api::new(&app.base)),
        4,
        vec![product],
        Instant::now() + load_for,
    ));
    // Orders flow (some are decided) before the outage begins.
    app.wait_for("orders decided before the outage", || async {
        let stats = app.stats().await.found();
        stats.is_some_and(|s| s.figures.order_count >= 10)
    })
    .await;
    server.stop_hard();
    app.wait_for("/ready to answer 503 during the outage", || async {
        app.get("/ready").await.0 == 503
    })
    .await;
    let down_since = Instant::now();
    during().await;
    tokio::time::sleep(down_for.saturating_sub(down_since.elapsed())).await;
    server.restart();
    let report = load.await.unwrap();
    assert_eq!(
        report.unanswered, 0,
        "the gateway always answers, within 8 s"
    );
    assert!(
        report.accepted.len() > 10,
        "too few orders accepted: {}",
        report.accepted.len()
    );
    report
}
