//! End to end over the real HTTP API, on each backend pair: products, stock,
//! concurrent orders that must partly be rejected, then the business
//! invariants (docs/architecture.md) checked against the read model.

use crate::common;

use common::{Backend, TestApp};
use serde_json::{json, Value};
use std::collections::HashMap;
use streamstock::domain::status::OrderStatus;
use streamstock::gateway::responses::Queued;
use uuid::Uuid;

async fn concurrent_orders_keep_the_invariants(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let widget = app.create_product("WIDGET-1", 12.50, 10).await;
    let gadget = app.create_product("GADGET-1", 99.99, 4).await;
    let gizmo = app.create_product("GIZMO-1", 0.35, 0).await;

    // Stock received after creation lands on top of the initial stock.
    let queued = app.receive_stock(gizmo, 6).await.expect(202);
    assert_eq!(queued.status, Queued::Queued);
    app.wait_for("gizmo stock", || async {
        let product = app.product(gizmo).await.found();
        product.is_some_and(|p| p.on_hand == 6)
    })
    .await;

    // 60 orders at once, asking for far more than the 20 units in stock.
    let products = [widget, gadget, gizmo];
    let orders: Vec<Value> = (0..60)
        .map(|i| {
            let mut items = vec![json!({ "product_id": products[i % 3], "quantity": 1 + (i % 2) })];
            if i % 4 == 0 {
                items.push(json!({ "product_id": products[(i + 1) % 3], "quantity": 1 }));
            }
            json!({ "customer_email": format!("buyer{i}@example.com"), "items": items })
        })
        .collect();
    let answers = futures::future::join_all(orders.iter().map(|o| app.place_order(o))).await;
    let mut totals: HashMap<Uuid, i64> = HashMap::new();
    for answer in answers {
        let queued = answer.expect(202);
        assert_eq!(queued.status, Queued::Queued);
        assert!(!queued.msg_id.is_empty());
        totals.insert(queued.order_id.as_uuid(), queued.total.cents());
    }
    assert_eq!(totals.len(), 60, "every order got its own id");

    app.wait_until_decided(60).await;

    // Every accepted order exists once and is decided.
    let listed = app.orders("limit=1000").await.expect(200);
    assert_eq!(listed.len(), 60);
    let mut confirmed_cents = 0;
    let (mut confirmed, mut rejected) = (0, 0);
    for order in &listed {
        let id = order.order_id.as_uuid();
        assert!(totals.contains_key(&id), "unexpected order {id}");
        match order.status {
            OrderStatus::Confirmed => {
                confirmed += 1;
                confirmed_cents += totals[&id];
            }
            OrderStatus::Rejected => {
                rejected += 1;
                let reason = order.reason.as_deref().unwrap();
                assert!(reason.contains("insufficient stock for"), "{reason}");
                assert!(
                    ["WIDGET-1", "GADGET-1", "GIZMO-1"]
                        .iter()
                        .any(|s| reason.contains(s)),
                    "{reason}"
                );
            }
            other => panic!("order {id} ended {other:?}"),
        }
    }
    assert!(
        confirmed > 0 && rejected > 0,
        "confirmed {confirmed}, rejected {rejected}"
    );

    // No oversell, reservations match confirmed orders, revenue exact.
    let store = app.store().await;
    let violations = common::invariants::invariant_violations(&store)
        .await
        .unwrap();
    assert!(violations.is_empty(), "{violations:#?}");
    let products = app.products().await.expect(200);
    let mut reserved_total = 0;
    for p in &products {
        let (on_hand, reserved, available) = (p.on_hand, p.reserved, p.available);
        assert!(0 <= reserved && reserved <= on_hand, "{p:?}");
        assert_eq!(available, on_hand - reserved);
        reserved_total += reserved;
    }
    assert!(reserved_total <= 20);
    let stats = app.stats().await.expect(200).figures;
    assert_eq!(stats.total_sales.cents(), confirmed_cents);
    assert_eq!(stats.order_count, 60);
    assert_eq!(stats.orders_in(OrderStatus::Confirmed), confirmed);
    assert_eq!(stats.orders_in(OrderStatus::Rejected), rejected);

    // Prometheus metrics of both roles (gateway and worker run in `all`).
    let metrics = app.metrics().await;
    let value = |prefix: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no metric {prefix} in:\n{metrics}"))
    };
    // 5 product/stock events and 60 orders applied from the log; their 60
    // decisions were applied when made, so the log's copies are duplicates.
    assert!(value("streamstock_events_processed_total{status=\"applied\"}") >= 65.0);
    assert!(value("streamstock_events_processed_total{status=\"duplicate\"}") >= 60.0);
    assert!(value("streamstock_events_processed_total{status=\"decided\"}") >= 60.0);
    assert_eq!(
        value("streamstock_events_appended_total{type=\"order.placed\",result=\"ok\"}"),
        60.0
    );
    assert_eq!(value("streamstock_worker_up"), 1.0);
    assert_eq!(value("streamstock_dead_letters"), 0.0);
    assert!(value("streamstock_batch_duration_seconds_count") > 0.0);
    assert!(
        metrics.contains("streamstock_partition_owned{partition=\"3\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("streamstock_partition_lag{partition=\"0\"} 0"),
        "{metrics}"
    );

    // One order in full, with its lines at the catalog price.
    let order = app.order(listed[0].order_id).await.expect(200);
    assert!(!order.items.unwrap().is_empty());

    app.stop().await;
}

/// Everything survives a restart, and nothing is applied twice: the
/// embedded log and the SQLite database both live in the data dir.
async fn restart_loses_nothing(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let common = common::isolated_settings(backend, dir.path()).await;
    let app = TestApp::spawn_with(common.clone()).await;
    let product = app.create_product("KEEP-1", 5.00, 3).await;
    for i in 0..5 {
        app.order_of(&format!("r{i}@example.com"), &[(product, 1)])
            .await
            .expect(202);
    }
    app.wait_until_decided(5).await;
    app.stop().await;

    let again = TestApp::spawn_with(common).await;
    // New work after the restart is processed, and the old is still there once.
    let (status, _) = again
        .post(
            "/api/products/",
            &json!({ "sku": "KEEP-2", "name": "Second", "price": 1 }),
        )
        .await;
    assert_eq!(status, 201);
    again.receive_stock(product, 2).await.expect(202);
    again
        .wait_for("stock after restart", || async {
            let p = again.product(product).await.found();
            p.is_some_and(|p| p.on_hand == 5)
        })
        .await;
    let p = again.product(product).await.expect(200);
    assert_eq!(
        p.reserved, 3,
        "3 of the 5 orders were confirmed before the restart: {p:?}"
    );
    let stats = again.stats().await.expect(200).figures;
    assert_eq!(stats.orders_in(OrderStatus::Confirmed), 3);
    assert_eq!(stats.orders_in(OrderStatus::Rejected), 2);
    let violations = common::invariants::invariant_violations(&again.store().await)
        .await
        .unwrap();
    assert!(violations.is_empty(), "{violations:#?}");
    again.stop().await;
}

backend_pairs!(concurrent_orders_keep_the_invariants, restart_loses_nothing);
