//! Partial shipments and returns over the HTTP API, on each backend pair:
//! a shipment of some lines (PARTIALLY_SHIPPED), the old ship command
//! shipping the rest, shipping more than a line has unshipped refused with
//! its reason (409 on read), a cancel of a partly shipped order releasing
//! only what did not ship, returns restocking or recording damage with the
//! revenue net of them, a return larger than shipped refused, bad input
//! refused with nothing appended, the invariants, and `rebuild` identical.

use crate::common;

use common::{Api, Backend, TestApp};
use serde_json::json;
use streamstock::domain::status::{
    AdjustmentStatus, FulfilmentKind, MovementKind, OrderStatus, ReturnDisposition,
};
use streamstock::store::fulfilments::FulfilmentView;
use streamstock::store::ledger::LedgerEntry;
use uuid::Uuid;

async fn product(api: &Api, sku: &str, stock: i64) -> Uuid {
    let created = api
        .add_product(&json!({ "sku": sku, "name": sku, "price": 2.5, "category_name": "tests",
                              "initial_stock": stock, "low_stock_threshold": 0, "reorder_quantity": 0 }))
        .await
        .expect(201);
    let id = created.id.as_uuid();
    api.wait_for(&format!("{sku} stocked"), || async {
        api.product(id)
            .await
            .found()
            .is_some_and(|p| p.on_hand == stock)
    })
    .await;
    id
}

async fn stock(api: &Api, product: Uuid) -> (i64, i64) {
    let p = api.product(product).await.expect(200);
    (p.on_hand, p.reserved)
}

/// A confirmed order of `lines`.
async fn confirmed(api: &Api, lines: &[(Uuid, i64)]) -> Uuid {
    let order = api
        .order_of("f@example.com", lines)
        .await
        .expect(202)
        .order_id
        .as_uuid();
    assert_eq!(
        api.status_waiting(order, 10).await,
        Some(OrderStatus::Confirmed)
    );
    order
}

/// Asks for a shipment or return (`what`) and long-polls its outcome: the
/// HTTP status of the read (200 applied, 409 refused) and the record.
async fn fulfil(
    api: &Api,
    order: Uuid,
    what: &str,
    body: serde_json::Value,
) -> (u16, FulfilmentView) {
    let queued = api.fulfil(order, what, &body).await;
    let answer_status = queued.status;
    let queued = queued.expect(202);
    assert_eq!(answer_status, 202);
    let read = api.fulfilment(order, what, queued.id, 10).await;
    let status = read.status;
    let view = read.expect_as::<FulfilmentView>(status);
    assert_eq!(view.id, queued.id);
    (status, view)
}

async fn partial_shipments_and_returns(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let a = product(&app, "FUL-A", 10).await;
    let b = product(&app, "FUL-B", 10).await;
    let order = confirmed(&app, &[(a, 3), (b, 2)]).await;
    assert_eq!(stock(&app, a).await, (10, 3));

    // Ship 2 of A: PARTIALLY_SHIPPED, A's on-hand and reserved drop by 2.
    let (status, shipment) = fulfil(
        &app,
        order,
        "shipments",
        json!({"lines": [{"product_id": a, "quantity": 2}]}),
    )
    .await;
    assert_eq!(status, 200, "{shipment:?}");
    assert_eq!(shipment.kind, FulfilmentKind::Shipment);
    assert_eq!(shipment.status, AdjustmentStatus::Applied);
    let allocated = shipment.allocated.expect("allocated lines");
    assert_eq!(
        (allocated.len(), allocated[0].line_no, allocated[0].quantity),
        (1, 0, 2)
    );
    let view = app.order(order).await.expect(200);
    assert_eq!(view.status, OrderStatus::PartiallyShipped);
    let items = view.items.unwrap();
    assert_eq!(
        items
            .iter()
            .map(|i| (i.shipped, i.returned))
            .collect::<Vec<_>>(),
        [(2, 0), (0, 0)]
    );
    assert_eq!(stock(&app, a).await, (8, 1));

    // More than a line has unshipped: refused with its reason, nothing moves.
    let (status, refused) = fulfil(
        &app,
        order,
        "shipments",
        json!({"lines": [{"product_id": a, "quantity": 2}]}),
    )
    .await;
    assert_eq!(status, 409, "{refused:?}");
    assert_eq!(refused.status, AdjustmentStatus::Refused);
    let message = refused.message.expect("a reason");
    assert!(message.contains("has 1 unshipped"), "{message}");
    assert_eq!(stock(&app, a).await, (8, 1));

    // The old ship command ships what is left: SHIPPED.
    app.ship(order).await.expect(202);
    app.wait_for("order shipped", || async {
        app.order(order).await.expect(200).status == OrderStatus::Shipped
    })
    .await;
    assert_eq!(
        (stock(&app, a).await, stock(&app, b).await),
        ((7, 0), (8, 0))
    );
    let sales_before = app.stats().await.expect(200).figures.total_sales.cents();

    // A return: 1 A restocked, 1 B damaged. A's on-hand rises; B's does not.
    let (status, returned) = fulfil(
        &app,
        order,
        "returns",
        json!({"lines": [{"product_id": a, "quantity": 1, "disposition": "restock"},
                         {"product_id": b, "quantity": 1, "disposition": "damaged"}],
               "reason": "wrong colour"}),
    )
    .await;
    assert_eq!(status, 200, "{returned:?}");
    assert_eq!(returned.refund.unwrap().cents(), 500);
    assert_eq!(returned.reason.as_deref(), Some("wrong colour"));
    assert_eq!(
        returned.allocated.unwrap()[1].disposition,
        Some(ReturnDisposition::Damaged)
    );
    assert_eq!(
        (stock(&app, a).await, stock(&app, b).await),
        ((8, 0), (8, 0))
    );
    let view = app.order(order).await.expect(200);
    let items = view.items.unwrap();
    assert_eq!(
        items
            .iter()
            .map(|i| (i.shipped, i.returned))
            .collect::<Vec<_>>(),
        [(3, 1), (2, 1)]
    );
    assert_eq!(
        view.fulfilments.unwrap().len(),
        4,
        "two shipments, a refusal, a return"
    );
    // Revenue is net of returns.
    assert_eq!(
        app.stats().await.expect(200).figures.total_sales.cents(),
        sales_before - 500
    );
    // The restock is a ledger row `returned` naming the order.
    let (status, ledger) = app
        .get(&format!("/api/products/{a}/ledger?order=desc&limit=1"))
        .await;
    assert_eq!(status, 200);
    let ledger: Vec<LedgerEntry> = serde_json::from_value(ledger).unwrap();
    assert_eq!(ledger[0].kind, MovementKind::Returned);
    assert_eq!(ledger[0].order_id.map(|o| o.as_uuid()), Some(order));

    // More than shipped and not returned: refused.
    let (status, refused) = fulfil(
        &app,
        order,
        "returns",
        json!({"lines": [{"product_id": b, "quantity": 2, "disposition": "restock"}], "reason": "again"}),
    )
    .await;
    assert_eq!(status, 409, "{refused:?}");
    assert!(refused
        .message
        .unwrap()
        .contains("1 shipped and not returned"));

    // A partly shipped order cancelled releases only what did not ship.
    let other = confirmed(&app, &[(a, 4)]).await;
    fulfil(
        &app,
        other,
        "shipments",
        json!({"lines": [{"product_id": a, "quantity": 1}]}),
    )
    .await;
    assert_eq!(stock(&app, a).await, (7, 3));
    app.cancel(other).await.expect(202);
    app.wait_for("order cancelled", || async {
        app.order(other).await.expect(200).status == OrderStatus::Cancelled
    })
    .await;
    assert_eq!(stock(&app, a).await, (7, 0));
    check_and_rebuild(app, 6).await;
}

async fn bad_shipments_and_returns_append_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let a = product(&app, "FUL-BAD", 5).await;
    let order = confirmed(&app, &[(a, 2)]).await;
    let events_before = app.events(&format!("key={order}")).await.expect(200).len();
    for (what, body, field) in [
        ("shipments", json!({"lines": []}), "lines"),
        (
            "shipments",
            json!({"lines": [{"product_id": a, "quantity": 0}]}),
            "lines[0].quantity",
        ),
        (
            "shipments",
            json!({"lines": [{"product_id": Uuid::now_v7(), "quantity": 1}]}),
            "lines[0].product_id",
        ),
        (
            "returns",
            json!({"lines": [{"product_id": a, "quantity": 1, "disposition": "restock"}], "reason": " "}),
            "reason",
        ),
    ] {
        let error = app.fulfil(order, what, &body).await.error(422);
        assert!(error.message.contains(field), "{field}: {}", error.message);
    }
    // An unknown disposition or field: 422 from the JSON's shape.
    let (status, _) = app
        .post(
            &format!("/api/orders/{order}/returns"),
            &json!({"lines": [{"product_id": a, "quantity": 1, "disposition": "lost"}], "reason": "x"}),
        )
        .await;
    assert_eq!(status, 422);
    // The order's state: nothing shipped yet, so nothing to return (409);
    // an unknown order: 404.
    let error = app
        .fulfil(
            order,
            "returns",
            &json!({"lines": [{"product_id": a, "quantity": 1, "disposition": "restock"}], "reason": "x"}),
        )
        .await
        .error(409);
    assert!(
        error.message.contains("shipped nothing"),
        "{}",
        error.message
    );
    // (A v4 id: this gateway issues v7 ones, and waits for those.)
    app.fulfil(
        Uuid::new_v4(),
        "shipments",
        &json!({"lines": [{"product_id": a, "quantity": 1}]}),
    )
    .await
    .error(404);
    assert_eq!(
        app.events(&format!("key={order}")).await.expect(200).len(),
        events_before,
        "nothing appended"
    );
    // An unknown shipment id: 404.
    app.fulfilment(order, "shipments", Uuid::new_v4(), 0)
        .await
        .error(404);
    check_and_rebuild(app, 0).await;
}

/// The invariants hold, the read model has `fulfilments` shipments and
/// returns, and a rebuild from the archive reproduces every projection
/// table (theirs included).
async fn check_and_rebuild(app: TestApp, fulfilments: u64) {
    let tables = app.assert_invariants_and_rebuild().await;
    let rows = |table| tables.iter().find(|t| t.table == table).unwrap().rows;
    assert_eq!(rows("fulfilments"), fulfilments);
}

backend_pairs!(
    partial_shipments_and_returns,
    bad_shipments_and_returns_append_nothing
);
