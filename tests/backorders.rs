//! Backorders over the HTTP API, on each backend pair: a product's limit
//! set with PATCH; an order past zero confirmed BACKORDERED with what was
//! in stock reserved; receipts filling the waiting orders first in, first
//! out (one by a receipt, three by two receipts), each order CONFIRMED once
//! nothing waits; the queue as the API shows it; a cancel leaving the
//! queue; bad input refused with nothing appended; the invariants; and
//! `rebuild` identical.

use crate::common;

use common::{Api, Backend, TestApp};
use serde_json::json;
use streamstock::domain::status::OrderStatus;
use uuid::Uuid;

async fn set_limit(api: &Api, product: Uuid, limit: i64) {
    let (status, body) = api
        .send(
            api.http
                .patch(api.url(&format!("/api/products/{product}")))
                .json(&json!({ "backorder_limit": limit })),
        )
        .await
        .into_parts();
    assert_eq!(
        (status, body["backorder_limit"].as_i64()),
        (200, Some(limit)),
        "{body}"
    );
}

/// An order of `quantity`, once decided: its status.
async fn order(api: &Api, product: Uuid, quantity: i64) -> (Uuid, OrderStatus) {
    let id = api
        .order_of("b@example.com", &[(product, quantity)])
        .await
        .expect(202)
        .order_id
        .as_uuid();
    let status = api.status_waiting(id, 10).await.expect("decided");
    (id, status)
}

/// (on_hand, reserved, backordered) of the product.
async fn figures(api: &Api, product: Uuid) -> (i64, i64, i64) {
    let p = api.product(product).await.expect(200);
    (p.on_hand, p.reserved, p.backordered)
}

async fn waiting_queue(api: &Api, product: Uuid) -> Vec<(Uuid, i64)> {
    let (status, body) = api
        .get(&format!("/api/products/{product}/backorders"))
        .await;
    assert_eq!(status, 200, "{body}");
    body["orders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["order_id"].as_str().unwrap().parse().unwrap(),
                o["waiting"].as_i64().unwrap(),
            )
        })
        .collect()
}

/// The orders of every `order.backorder_filled`, in the order they were
/// applied.
async fn filled_orders(api: &Api) -> Vec<Uuid> {
    let fills = api
        .events("type=order.backorder_filled&limit=1000")
        .await
        .expect(200);
    fills
        .iter()
        .map(|e| e.envelope.key.parse().unwrap())
        .collect()
}

async fn wait_status(api: &Api, order: Uuid, status: OrderStatus) {
    api.wait_for(&format!("order {order} {status}"), || async {
        api.order(order)
            .await
            .found()
            .is_some_and(|o| o.status == status)
    })
    .await;
}

async fn a_backorder_is_filled_by_a_receipt(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let product = app.create_product("BACK-A", 2.50, 2).await;
    // Without a limit, as before: rejected.
    assert_eq!(order(&app, product, 4).await.1, OrderStatus::Rejected);
    set_limit(&app, product, 5).await;
    let (waits, status) = order(&app, product, 4).await;
    assert_eq!(status, OrderStatus::Backordered);
    assert_eq!(figures(&app, product).await, (2, 2, 2));
    assert_eq!(waiting_queue(&app, product).await, [(waits, 2)]);
    let view = app.order(waits).await.expect(200);
    assert_eq!(view.items.unwrap()[0].backordered, 2);
    // A purchase order covers what waits, besides the reorder quantity.
    let reorder = app.product(product).await.expect(200).reorder_quantity;
    let pos = app.purchase_orders("OPEN").await.expect(200);
    assert_eq!(
        pos.iter()
            .filter(|po| po.product_id.as_uuid() == product)
            .map(|po| po.quantity)
            .collect::<Vec<_>>(),
        [reorder + 2]
    );
    // Not shippable while it waits.
    let (status, body) = app
        .post(&format!("/api/orders/{waits}/ship"), &json!({}))
        .await;
    assert_eq!(status, 409, "{body}");

    app.receive_stock(product, 3).await.expect(202);
    wait_status(&app, waits, OrderStatus::Confirmed).await;
    assert_eq!(figures(&app, product).await, (5, 4, 0));
    assert!(waiting_queue(&app, product).await.is_empty());
    let fills = app
        .events(&format!("key={waits}&type=order.backorder_filled"))
        .await
        .expect(200);
    assert_eq!(fills.len(), 1);
    app.ship(waits).await.expect(202);
    wait_status(&app, waits, OrderStatus::Shipped).await;

    // Bad input: clear errors, nothing appended.
    let events_before = app.events("limit=1000").await.expect(200).len();
    let api: &Api = &app;
    let patch = |id: Uuid, body: serde_json::Value| async move {
        let request = api
            .http
            .patch(api.url(&format!("/api/products/{id}")))
            .json(&body);
        api.send(request).await.into_parts()
    };
    for bad in [
        json!({"backorder_limit": -1}),
        json!({"backorder_limit": 2_000_000_000_i64}),
        json!({"backorder_limit": "lots"}),
        json!({"limit": 3}),
        json!({}),
    ] {
        let (status, body) = patch(product, bad.clone()).await;
        assert_eq!(status, 422, "{bad}: {body}");
    }
    assert_eq!(
        patch(Uuid::new_v4(), json!({"backorder_limit": 1})).await.0,
        404
    );
    assert_eq!(
        app.get(&format!("/api/products/{}/backorders", Uuid::new_v4()))
            .await
            .0,
        404
    );
    // Below what waits: 409.
    let (waiting, _) = order(&app, product, 3).await;
    assert_eq!(
        app.order(waiting).await.expect(200).status,
        OrderStatus::Backordered
    );
    let (status, body) = patch(product, json!({"backorder_limit": 1})).await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("2 units of BACK-A already wait"),
        "{body}"
    );
    let appended = app.events("limit=1000").await.expect(200).len() - events_before;
    assert_eq!(appended, 2, "the last order and its confirmation only");
    // A cancel takes it out of the queue, and gives back what it held.
    app.cancel(waiting).await.expect(202);
    wait_status(&app, waiting, OrderStatus::Cancelled).await;
    assert_eq!(figures(&app, product).await, (1, 0, 0));
    assert!(waiting_queue(&app, product).await.is_empty());

    app.assert_invariants_and_rebuild().await;
}

async fn three_backorders_are_filled_in_order_by_two_receipts(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let product = app.create_product("BACK-B", 2.50, 0).await;
    set_limit(&app, product, 10).await;
    let mut orders = Vec::new();
    for quantity in [2, 3, 1] {
        let (id, status) = order(&app, product, quantity).await;
        assert_eq!(status, OrderStatus::Backordered);
        orders.push(id);
    }
    assert_eq!(
        waiting_queue(&app, product).await,
        [(orders[0], 2), (orders[1], 3), (orders[2], 1)]
    );
    app.receive_stock(product, 4).await.expect(202);
    wait_status(&app, orders[0], OrderStatus::Confirmed).await;
    app.wait_for("the second one half filled", || async {
        waiting_queue(&app, product).await == [(orders[1], 1), (orders[2], 1)]
    })
    .await;
    assert_eq!(figures(&app, product).await, (4, 4, 2));
    app.receive_stock(product, 3).await.expect(202);
    wait_status(&app, orders[1], OrderStatus::Confirmed).await;
    wait_status(&app, orders[2], OrderStatus::Confirmed).await;
    assert_eq!(figures(&app, product).await, (7, 6, 0));
    // The fills in the order they were applied: first in, first out.
    assert_eq!(
        filled_orders(&app).await,
        [orders[0], orders[1], orders[1], orders[2]]
    );

    app.assert_invariants_and_rebuild().await;
}

/// A queue longer than one batch loads (64): one receipt for all of it
/// fills the first 64, the workers' sweep asks for the queue to be taken
/// up again (`product.backorder_fill_requested`), and the batch that
/// applies it fills the rest; every fill in placement order.
async fn a_long_queue_is_filled_over_several_batches(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let product = app.create_product("BACK-C", 2.50, 0).await;
    set_limit(&app, product, 1000).await;
    let placed = futures::future::join_all((0..90).map(|_| order(&app, product, 1))).await;
    assert!(placed.iter().all(|(_, s)| *s == OrderStatus::Backordered));
    app.receive_stock(product, 90).await.expect(202);
    app.wait_for("every order filled", || async {
        figures(&app, product).await == (90, 90, 0)
    })
    .await;
    let continued = app
        .events("type=product.backorder_fill_requested&limit=100")
        .await
        .expect(200);
    assert!(!continued.is_empty(), "the queue was taken up again");
    let filled = filled_orders(&app).await;
    let mut by_placement: Vec<(chrono::DateTime<chrono::Utc>, Uuid)> = Vec::new();
    for (id, _) in &placed {
        let view = app.order(id).await.expect(200);
        assert_eq!(view.status, OrderStatus::Confirmed);
        by_placement.push((view.created_at, *id));
    }
    by_placement.sort();
    assert_eq!(
        filled,
        by_placement.iter().map(|(_, id)| *id).collect::<Vec<_>>()
    );

    app.assert_invariants_and_rebuild().await;
}

/// `simulate --profile flash-sale` against `all`: many clients at one
/// product with little stock, holds and backorders on. Nothing is
/// oversold, every hold ends (committed or expired), every backorder is
/// filled by the supplier's delivery, and the sale's counts are the
/// gateway's: `/api/stats` on a deployment that took no other order.
async fn a_flash_sale_oversells_nothing_and_its_counts_are_the_stats(backend: Backend) {
    use streamstock::simulator::flash_sale::FlashSaleReport;
    let app = TestApp::spawn(backend).await;
    let output = std::process::Command::new(common::process::BIN)
        .args([
            "simulate",
            "--profile",
            "flash-sale",
            "--duration",
            "4s",
            "--concurrency",
            "24",
            "--report",
            "json",
        ])
        .args(["--target", &app.base])
        .env("RUST_LOG", "error")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "simulate failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: FlashSaleReport = serde_json::from_slice(&output.stdout).unwrap();
    eprintln!("{report:#?}");
    assert!(!report.oversold, "{report:#?}");
    assert!(
        report.held > 0 && report.backordered > 0 && report.rejected > 0,
        "the sale exercised holds, backorders and rejections: {report:#?}"
    );
    assert_eq!(
        report.filled, report.backordered,
        "every backorder filled: {report:#?}"
    );
    assert_eq!(
        report.held,
        report.committed + report.expired,
        "every hold ended: {report:#?}"
    );
    assert_eq!(
        report.confirmed,
        report.confirmed_at_once + report.committed + report.filled
    );

    let stats = app.stats().await.expect(200);
    let of = |status: OrderStatus| {
        stats
            .figures
            .orders_by_status
            .get(&status)
            .copied()
            .unwrap_or(0)
    };
    assert_eq!(stats.figures.order_count as u64, report.placed);
    assert_eq!(of(OrderStatus::Confirmed) as u64, report.confirmed);
    assert_eq!(of(OrderStatus::Expired) as u64, report.expired);
    assert_eq!(of(OrderStatus::Rejected) as u64, report.rejected);
    assert_eq!(
        (
            of(OrderStatus::Held),
            of(OrderStatus::Backordered),
            of(OrderStatus::Pending)
        ),
        (0, 0, 0)
    );
    app.assert_invariants_and_rebuild().await;
}

backend_pairs!(
    a_flash_sale_oversells_nothing_and_its_counts_are_the_stats,
    a_backorder_is_filled_by_a_receipt,
    three_backorders_are_filled_in_order_by_two_receipts,
    a_long_queue_is_filled_over_several_batches
);
