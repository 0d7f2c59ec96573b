//! Stock adjustments over the HTTP API, on each backend pair: reasons and
//! their causes in the audit trail, compare-and-set refusals with the
//! actual figure (409), an adjustment below reserved refused with an alert
//! naming the orders holding the stock, low stock and a purchase order from
//! an adjustment, paging, a retried request applied once, bad input
//! refused with nothing appended, the invariants, and `rebuild` identical.

use crate::common;

use common::{Api, Backend, TestApp};
use serde_json::json;
use streamstock::domain::status::{
    AdjustmentReason, AdjustmentRefusal, AdjustmentStatus, AlertKind, OrderStatus,
};
use uuid::Uuid;

async fn product(api: &Api, sku: &str, stock: i64, threshold: i64, reorder: i64) -> Uuid {
    let created = api
        .add_product(&json!({ "sku": sku, "name": sku, "price": 4.0, "category_name": "tests",
                              "initial_stock": stock, "low_stock_threshold": threshold, "reorder_quantity": reorder }))
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

/// Asks for an adjustment and long-polls its outcome: the HTTP status of
/// the read (200 applied, 409 refused) and the adjustment.
async fn adjust(
    api: &Api,
    product: Uuid,
    body: serde_json::Value,
) -> (u16, streamstock::store::adjustments::AdjustmentView) {
    let answer = api
        .send(
            api.http
                .post(api.url(&format!("/api/products/{product}/adjustments")))
                .json(&body),
        )
        .await;
    assert_eq!(answer.status, 202, "{}", answer.body);
    let location = answer.header("location").expect("a Location").to_string();
    let id = answer.body["adjustment_id"].as_str().unwrap().to_string();
    assert_eq!(
        location,
        format!("/api/products/{product}/adjustments/{id}")
    );
    let read = api.adjustment(product, &id, 10).await;
    let status = read.status;
    let view = read.expect_as(status);
    (status, view)
}

async fn adjustments_with_reasons_and_compare_and_set(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let a = product(&app, "ADJ-A", 10, 0, 0).await;

    // An adjustment with its reason, reference and note.
    let (status, damaged) = adjust(
        &app,
        a,
        json!({"delta": -2, "reason": "damaged", "reference": "DMG-17", "note": "dropped\nfrom a shelf"}),
    )
    .await;
    assert_eq!(status, 200, "{damaged:?}");
    assert_eq!(damaged.status, AdjustmentStatus::Applied);
    assert_eq!(damaged.reason, AdjustmentReason::Damaged);
    assert_eq!(damaged.reference.as_deref(), Some("DMG-17"));
    assert_eq!(damaged.note.as_deref(), Some("dropped\nfrom a shelf"));
    assert!(damaged.decided_at.is_some());
    assert_eq!(stock(&app, a).await, (8, 0));

    // Compare-and-set on the figure last read: applied.
    let (status, found) = adjust(
        &app,
        a,
        json!({"delta": 3, "reason": "found", "expected_on_hand": 8}),
    )
    .await;
    assert_eq!((status, found.status), (200, AdjustmentStatus::Applied));
    assert_eq!(stock(&app, a).await, (11, 0));

    // On a stale figure: 409 with the actual one, nothing changed.
    let (status, stale) = adjust(
        &app,
        a,
        json!({"delta": -1, "reason": "shrinkage", "expected_on_hand": 8}),
    )
    .await;
    assert_eq!(status, 409, "{stale:?}");
    assert_eq!(stale.status, AdjustmentStatus::Refused);
    let refusal = stale.refusal.expect("a refusal");
    assert_eq!(refusal.code, AdjustmentRefusal::OnHandChanged);
    assert_eq!((refusal.on_hand, refusal.reserved), (11, 0));
    assert!(
        refusal.message.contains("not the 8 expected"),
        "{}",
        refusal.message
    );
    assert_eq!(stock(&app, a).await, (11, 0));

    // Below reserved: refused, naming the order holding the stock.
    let order = app
        .order_of("adj@example.com", &[(a, 6)])
        .await
        .expect(202)
        .order_id;
    assert_eq!(
        app.status_waiting(order, 10).await,
        Some(OrderStatus::Confirmed)
    );
    let (status, below) = adjust(&app, a, json!({"delta": -6, "reason": "shrinkage"})).await;
    assert_eq!(status, 409, "{below:?}");
    let refusal = below.refusal.expect("a refusal");
    assert_eq!(refusal.code, AdjustmentRefusal::BelowReserved);
    assert_eq!((refusal.on_hand, refusal.reserved), (11, 6));
    assert_eq!(refusal.held_by, vec![order]);
    let alerts = app.alerts().await.expect(200);
    let alert = alerts
        .iter()
        .find(|alert| alert.kind == AlertKind::AdjustmentBelowReserved)
        .expect("an alert for the adjustment below reserved");
    assert!(
        alert.message.contains(&order.to_string()),
        "{}",
        alert.message
    );
    assert_eq!(alert.subject, a.to_string());
    // Down to reserved exactly is allowed.
    let (status, _) = adjust(&app, a, json!({"delta": -5, "reason": "transit_loss"})).await;
    assert_eq!(status, 200);
    assert_eq!(stock(&app, a).await, (6, 6));

    // The audit trail holds each request and its decision.
    let events = app.events(&format!("key={a}&limit=100")).await.expect(200);
    let count = |kind: &str| {
        events
            .iter()
            .filter(|e| e.envelope.event_type.as_str() == kind)
            .count()
    };
    assert_eq!(count("stock.adjustment_requested"), 5);
    assert_eq!(count("stock.adjusted"), 3);
    assert_eq!(count("stock.adjustment_refused"), 2);

    // Listed newest first, a page at a time.
    let all = app.adjustments(a, "").await.expect(200);
    assert_eq!(all.len(), 5);
    assert_eq!(all[0].reason, AdjustmentReason::TransitLoss);
    assert_eq!(all[4].adjustment_id, damaged.adjustment_id);
    let first = app.adjustments(a, "?limit=2").await.expect(200);
    let next = app
        .adjustments(a, &format!("?limit=2&after={}", first[1].adjustment_id))
        .await
        .expect(200);
    assert_eq!(next[0].adjustment_id, all[2].adjustment_id);

    // Low stock and a purchase order come from an adjustment too.
    let b = product(&app, "ADJ-B", 8, 5, 20).await;
    let (status, _) = adjust(&app, b, json!({"delta": -4, "reason": "damaged"})).await;
    assert_eq!(status, 200);
    app.wait_for("a purchase order for ADJ-B", || async {
        let open = app.purchase_orders("OPEN").await.expect(200);
        open.iter()
            .any(|po| po.product_id.as_uuid() == b && po.quantity == 20)
    })
    .await;
    assert!(
        app.events(&format!("key={b}&type=stock.low"))
            .await
            .expect(200)
            .len()
            == 1
    );

    check_and_rebuild(app).await;
}

async fn retries_bad_input_and_unknown_ids(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let a = product(&app, "ADJ-C", 5, 0, 0).await;
    let requested = || async {
        app.events(&format!("key={a}&type=stock.adjustment_requested"))
            .await
            .expect(200)
            .len()
    };

    // Each bad field is named, and nothing is appended.
    for (body, field) in [
        (json!({"delta": 0, "reason": "damaged"}), "delta"),
        (json!({"delta": 1_000_001, "reason": "found"}), "delta"),
        (json!({"delta": -1, "reason": "stolen"}), "reason"),
        (json!({"delta": -1}), "reason"),
        (
            json!({"delta": -1, "reason": "damaged", "expected_on_hand": -3}),
            "expected_on_hand",
        ),
        (
            json!({"delta": -1, "reason": "damaged", "reference": "r".repeat(201)}),
            "reference",
        ),
        (
            json!({"delta": -1, "reason": "damaged", "note": "n".repeat(1001)}),
            "note",
        ),
        (
            json!({"delta": -1, "reason": "damaged", "colour": "red"}),
            "colour",
        ),
    ] {
        let error = app.adjust(a, &body).await.error(422);
        assert_eq!(error.code, "invalid_field", "{body}");
        assert!(error.message.contains(field), "{body}: {}", error.message);
    }
    let unknown = Uuid::now_v7();
    let error = app
        .adjust(unknown, &json!({"delta": 1, "reason": "found"}))
        .await
        .error(404);
    assert!(error.message.contains(&unknown.to_string()));
    assert_eq!(requested().await, 0, "bad requests append nothing");

    // A retry with the same key is the same adjustment, applied once.
    let send = || {
        app.send(
            app.http
                .post(app.url(&format!("/api/products/{a}/adjustments")))
                .header("idempotency-key", "count-sheet-9")
                .json(&json!({"delta": -1, "reason": "correction"})),
        )
    };
    let first = send().await;
    let again = send().await;
    assert_eq!((first.status, again.status), (202, 202));
    assert_eq!(first.body["adjustment_id"], again.body["adjustment_id"]);
    let id = first.body["adjustment_id"].as_str().unwrap();
    let applied = app.adjustment(a, id, 10).await.expect(200);
    assert_eq!(applied.status, AdjustmentStatus::Applied);
    app.wait_for("one request archived", || async { requested().await == 1 })
        .await;
    assert_eq!(stock(&app, a).await, (4, 0));

    // An id no gateway issued lately is not found at once; another
    // product's adjustment is not this one's.
    let other = product(&app, "ADJ-D", 1, 0, 0).await;
    app.adjustment(a, Uuid::new_v4(), 0).await.error(404);
    app.adjustment(other, id, 0).await.error(404);
    app.adjustments(Uuid::now_v7(), "").await.error(404);
    app.adjustments(a, "?limit=0").await.error(422);

    check_and_rebuild(app).await;
}

/// Counts: the worker decides the delta against the book as of when the
/// shelf was counted; a count equal to the book is a zero-delta count.
async fn cycle_counts(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let a = product(&app, "COUNT-A", 10, 0, 0).await;
    let count = |body: serde_json::Value| {
        let app = &app;
        async move {
            let answer = app
                .send(
                    app.http
                        .post(app.url(&format!("/api/products/{a}/counts")))
                        .json(&body),
                )
                .await;
            assert_eq!(answer.status, 202, "{}", answer.body);
            let location = answer.header("location").unwrap().to_string();
            let (status, body) = app.get(&format!("{location}?wait=10")).await;
            let view: streamstock::store::adjustments::AdjustmentView =
                serde_json::from_value(body).unwrap();
            (status, view)
        }
    };

    let (status, same) = count(json!({"counted": 10, "reference": "SHEET-1"})).await;
    assert_eq!(status, 200, "{same:?}");
    assert_eq!(
        (same.status, same.delta, same.counted),
        (AdjustmentStatus::Applied, Some(0), Some(10))
    );
    assert_eq!(same.reason, AdjustmentReason::CycleCount);
    assert_eq!(stock(&app, a).await, (10, 0));

    // Counted before a shipment, sent after it: the shipment is added back.
    let counted_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let order = app
        .order_of("c@example.com", &[(a, 3)])
        .await
        .expect(202)
        .order_id;
    assert_eq!(
        app.status_waiting(order, 10).await,
        Some(OrderStatus::Confirmed)
    );
    app.ship(order).await.expect(202);
    app.wait_for("shipped", || async { stock(&app, a).await == (7, 0) })
        .await;
    let (status, late) = count(json!({"counted": 9, "counted_at": counted_at})).await;
    assert_eq!(status, 200, "{late:?}");
    assert_eq!(late.delta, Some(-1), "one unit was missing when counted");
    assert_eq!(stock(&app, a).await, (6, 0));
    let ledger = app.get(&format!("/api/products/{a}/ledger")).await.1;
    let last = ledger.as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        (
            last["kind"].as_str(),
            last["reason"].as_str(),
            last["on_hand"].as_i64()
        ),
        (Some("adjusted"), Some("cycle_count"), Some(6))
    );

    // Below what orders hold: refused.
    let held = app
        .order_of("c@example.com", &[(a, 5)])
        .await
        .expect(202)
        .order_id;
    assert_eq!(
        app.status_waiting(held, 10).await,
        Some(OrderStatus::Confirmed)
    );
    let (status, below) = count(json!({"counted": 2})).await;
    assert_eq!(status, 409, "{below:?}");
    assert_eq!(below.refusal.unwrap().held_by, vec![held]);

    // Bad input is named, and nothing is appended.
    let counts_before = app
        .events(&format!("key={a}&type=stock.counted"))
        .await
        .expect(200)
        .len();
    let future = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    for (body, field) in [
        (json!({"counted": -1}), "counted"),
        (json!({"counted": 1, "counted_at": "noon"}), "counted_at"),
        (json!({"counted": 1, "counted_at": future}), "counted_at"),
        (
            json!({"counted": 1, "expected_on_hand": -2}),
            "expected_on_hand",
        ),
        (json!({}), "counted"),
    ] {
        let (status, answer) = app.post(&format!("/api/products/{a}/counts"), &body).await;
        assert_eq!(status, 422, "{body}: {answer}");
        assert!(
            answer["error"]["message"].as_str().unwrap().contains(field),
            "{answer}"
        );
    }
    assert_eq!(
        app.events(&format!("key={a}&type=stock.counted"))
            .await
            .expect(200)
            .len(),
        counts_before
    );
    check_and_rebuild(app).await;
}

/// The invariants hold, and a rebuild from the archive reproduces every
/// projection table (the adjustments' included).
async fn check_and_rebuild(app: TestApp) {
    let tables = app.assert_invariants_and_rebuild().await;
    let adjustments = tables.iter().find(|t| t.table == "stock_adjustments");
    assert!(adjustments.unwrap().rows > 0);
}

backend_pairs!(
    adjustments_with_reasons_and_compare_and_set,
    retries_bad_input_and_unknown_ids,
    cycle_counts
);
