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
    // Receipts applied exactly once (on-hand also moves with shipments,
    // adjustments and returns, which the invariants account for).
    for (id, received) in stock {
        let received_total: i64 =
            sqlx::query_scalar("SELECT received_total FROM inventory WHERE product_id = $1")
                .bind(id.to_string())
                .fetch_one(store.pool())
                .await
                .unwrap();
        assert_eq!(
            received_total, *received,
            "stock of {id} applied exactly once"
        );
    }
}

/// The commands a warehouse client got 202 for: shipments and returns,
/// adjustments and counts, by id.
#[derive(Debug, Default)]
pub struct CommandReport {
    pub fulfilments: HashSet<Uuid>,
    pub adjustments: HashSet<Uuid>,
    /// Transfers requested, and those whose receipt was accepted.
    pub transfers: HashSet<Uuid>,
    pub transfers_received: HashSet<Uuid>,
    pub answered_409: usize,
}

impl CommandReport {
    pub fn absorb(&mut self, other: CommandReport) {
        self.fulfilments.extend(other.fulfilments);
        self.adjustments.extend(other.adjustments);
        self.transfers.extend(other.transfers);
        self.transfers_received.extend(other.transfers_received);
        self.answered_409 += other.answered_409;
    }
}

/// A warehouse and a stock keeper working beside the order traffic, until
/// `running` is cancelled: in turn a partial shipment (one unit of a
/// confirmed order's first line), a ship of the rest, a cancel, a return
/// of a shipped unit (restocked or damaged), an adjustment, a count, a
/// transfer of one unit between the default location and another (made
/// on the first turn that needs it), the receipt of a shipped one (now
/// and then one unit short). An
/// answer other than 202, 409 (the order moved on meanwhile) or 503 fails
/// the test; a request without an answer (a gateway killed) is skipped.
pub async fn run_commands_while(
    api: Arc<Api>,
    products: Vec<Uuid>,
    running: tokio_util::sync::CancellationToken,
) -> CommandReport {
    let mut report = CommandReport::default();
    let mut turn = 0usize;
    while !running.is_cancelled() {
        turn += 1;
        let status = if turn % 8 == 3 {
            "SHIPPED"
        } else {
            "CONFIRMED"
        };
        let orders = listed(&api, &format!("/api/orders?status={status}&limit=20")).await;
        let order = orders
            .get(turn % orders.len().max(1))
            .and_then(|o| o["order_id"].as_str())
            .map(str::to_string);
        let product = products[turn % products.len()];
        let (path, body) = match (turn % 8, order) {
            (0 | 3, Some(order)) => {
                let detail = listed_one(&api, &format!("/api/orders/{order}")).await;
                let Some(first) = detail["items"].get(0).cloned() else {
                    continue;
                };
                let line = json!({"product_id": first["product_id"], "quantity": 1});
                if turn.is_multiple_of(8) {
                    (
                        format!("/api/orders/{order}/shipments"),
                        json!({"lines": [line]}),
                    )
                } else {
                    let mut line = line;
                    line["disposition"] = json!(if turn % 16 == 3 { "damaged" } else { "restock" });
                    (
                        format!("/api/orders/{order}/returns"),
                        json!({"lines": [line], "reason": "kill -9 mix"}),
                    )
                }
            }
            (1, Some(order)) => (format!("/api/orders/{order}/ship"), Value::Null),
            (2, Some(order)) => (format!("/api/orders/{order}/cancel"), Value::Null),
            (4, _) => (
                format!("/api/products/{product}/adjustments"),
                json!({"delta": if turn % 8 == 4 { -1 } else { 1 }, "reason": "correction"}),
            ),
            (6, _) => {
                let locations = listed(&api, "/api/locations").await;
                let Some(other) = locations
                    .iter()
                    .find(|l| l["code"] != "default")
                    .map(|l| l["id"].clone())
                else {
                    // 201, or 409 once another turn made it: either way
                    // the next transfer turn finds it.
                    let _ = api
                        .http
                        .post(api.url("/api/locations"))
                        .json(&json!({"code": "kill9-east", "name": "East"}))
                        .timeout(Duration::from_secs(8))
                        .send()
                        .await;
                    continue;
                };
                let default = json!(streamstock::domain::LocationId::DEFAULT);
                let (from, to) = if turn % 16 == 6 {
                    (default, other)
                } else {
                    (other, default)
                };
                (
                    "/api/transfers".to_string(),
                    json!({"from": from, "to": to, "lines": [{"product_id": product, "quantity": 1}]}),
                )
            }
            (7, _) => {
                let shipped = listed(&api, "/api/transfers?status=shipped&limit=5").await;
                let Some(transfer) = shipped.first() else {
                    continue;
                };
                let lines = if turn % 24 == 7 {
                    json!([{"product_id": transfer["lines"][0]["product_id"], "received": 0}])
                } else {
                    json!([])
                };
                (
                    format!(
                        "/api/transfers/{}/receive",
                        transfer["id"].as_str().unwrap()
                    ),
                    json!({"lines": lines, "discrepancy_reason": "kill -9 mix"}),
                )
            }
            (5, _) => {
                let on_hand =
                    listed_one(&api, &format!("/api/products/{product}")).await["on_hand"].as_i64();
                let Some(on_hand) = on_hand else { continue };
                (
                    format!("/api/products/{product}/counts"),
                    json!({"counted": on_hand}),
                )
            }
            _ => {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let mut request = api
            .http
            .post(api.url(&path))
            .timeout(Duration::from_secs(8));
        if !body.is_null() {
            request = request.json(&body);
        }
        let Ok(answer) = request.send().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let status = answer.status().as_u16();
        let body: Value = answer.json().await.unwrap_or(Value::Null);
        match status {
            202 => {
                let fulfilment = path.ends_with("/shipments") || path.ends_with("/returns");
                if let Some(id) = body["id"].as_str().filter(|_| fulfilment) {
                    report.fulfilments.insert(id.parse().unwrap());
                }
                if let Some(id) = body["adjustment_id"].as_str() {
                    report.adjustments.insert(id.parse().unwrap());
                }
                if path == "/api/transfers" {
                    report
                        .transfers
                        .insert(body["id"].as_str().unwrap().parse().unwrap());
                } else if path.ends_with("/receive") {
                    report
                        .transfers_received
                        .insert(body["id"].as_str().unwrap().parse().unwrap());
                }
            }
            409 => report.answered_409 += 1,
            503 => tokio::time::sleep(Duration::from_millis(100)).await,
            other => panic!("{path}: unexpected status {other}: {body}"),
        }
    }
    eprintln!(
        "commands answered 202: {} shipments and returns, {} adjustments and counts, {} transfers, {} receipts; {} answered 409",
        report.fulfilments.len(),
        report.adjustments.len(),
        report.transfers.len(),
        report.transfers_received.len(),
        report.answered_409
    );
    report
}

/// A JSON array the gateway answers `path` with (empty if it does not).
async fn listed(api: &Api, path: &str) -> Vec<Value> {
    listed_one(api, path)
        .await
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The JSON the gateway answers `path` with (null if it does not answer).
async fn listed_one(api: &Api, path: &str) -> Value {
    let sent = api
        .http
        .get(api.url(path))
        .timeout(Duration::from_secs(8))
        .send()
        .await;
    match sent {
        Ok(answer) if answer.status().is_success() => answer.json().await.unwrap_or(Value::Null),
        _ => Value::Null,
    }
}

/// Every command answered 202 was decided, exactly once: its row is no
/// longer pending, and the archive holds one decision for it.
pub async fn assert_commands_decided_once(store: &Store, commands: &CommandReport) {
    // (ids, their table, the statuses a decided one may have, the decision
    // events of which the archive holds exactly one). A transfer is
    // shipped or refused once; one whose receipt was accepted is received
    // once (a second receipt is refused).
    let decided_once: [(&HashSet<Uuid>, &str, &[&str], &str); 4] = [
        (
            &commands.fulfilments,
            "fulfilments",
            &["applied", "refused"],
            "'order.shipped', 'order.shipment_refused', 'order.returned', 'order.return_refused'",
        ),
        (
            &commands.adjustments,
            "stock_adjustments",
            &["applied", "refused"],
            "'stock.adjusted', 'stock.adjustment_refused'",
        ),
        (
            &commands.transfers,
            "transfers",
            &["shipped", "received", "refused"],
            "'transfer.shipped', 'transfer.refused'",
        ),
        (
            &commands.transfers_received,
            "transfers",
            &["received"],
            "'transfer.received'",
        ),
    ];
    for (ids, table, statuses, decisions) in decided_once {
        for id in ids {
            let status: Option<String> =
                sqlx::query_scalar(&format!("SELECT status FROM {table} WHERE id = $1"))
                    .bind(id.to_string())
                    .fetch_optional(store.pool())
                    .await
                    .unwrap();
            assert!(
                status.as_deref().is_some_and(|s| statuses.contains(&s)),
                "{table} {id} answered 202 is {status:?}"
            );
            let decided: i64 = sqlx::query_scalar(&format!(
                "SELECT COUNT(*) FROM event_archive WHERE event_type IN ({decisions}) AND payload LIKE $1"
            ))
            .bind(format!("%{id}%"))
            .fetch_one(store.pool())
            .await
            .unwrap();
            assert_eq!(decided, 1, "{table} {id}: {decisions} {decided} times");
        }
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
