//! The stock ledger over the HTTP API, on each backend pair: one row per
//! movement (received, reserved, shipped, released, adjusted) with the
//! figures after it and its cause, paged and filtered by time, as JSON and
//! as CSV; `?as_of=` at three moments; the self-audit (in the metrics and
//! `streamstock status`), shown to catch a ledger that disagrees with the
//! figures; and `rebuild` reproducing the ledger row for row.

use crate::common;

use common::process::{assert_rebuild_identical_for, run_cli};
use common::{Api, Backend, TestApp};
use serde_json::json;
use std::time::Duration;
use streamstock::domain::status::{AdjustmentReason, MovementKind, OrderStatus};
use streamstock::store::ledger::LedgerEntry;
use uuid::Uuid;

async fn ledger(api: &Api, product: Uuid, query: &str) -> Vec<LedgerEntry> {
    let (status, body) = api
        .get(&format!("/api/products/{product}/ledger{query}"))
        .await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_value(body).unwrap()
}

/// Now, then a pause: later events get later times than the moment taken.
async fn moment() -> String {
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    tokio::time::sleep(Duration::from_millis(20)).await;
    now
}

async fn until_status(api: &Api, order: streamstock::domain::OrderId, want: OrderStatus) {
    api.wait_for(&format!("order {order} {want:?}"), || async {
        api.status_waiting(order, 10).await == Some(want)
    })
    .await;
}

async fn figures_as_of(api: &Api, product: Uuid, at: &str) -> (i64, i64, i64) {
    let at = at.replace('+', "%2B");
    let (status, body) = api
        .get(&format!("/api/products/{product}?as_of={at}"))
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(body["as_of"].is_string(), "{body}");
    (
        body["on_hand"].as_i64().unwrap(),
        body["reserved"].as_i64().unwrap(),
        body["available"].as_i64().unwrap(),
    )
}

async fn ledger_explains_every_movement(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let mut common = common::isolated_settings(backend, dir.path()).await;
    // The self-audit runs with the window prune: every second here.
    common.retention.per_second_retention = Duration::from_secs(4).into();
    let app = TestApp::spawn_with(common.clone()).await;
    let before_anything = moment().await;
    let a = app.create_product("LEDGER-A", 2.50, 10).await;
    app.wait_for("LEDGER-A stocked", || async {
        app.product(a)
            .await
            .found()
            .is_some_and(|p| p.on_hand == 10)
    })
    .await;
    let after_receipt = moment().await;

    let shipped = app
        .order_of("l@example.com", &[(a, 3)])
        .await
        .expect(202)
        .order_id;
    assert_eq!(
        app.status_waiting(shipped, 10).await,
        Some(OrderStatus::Confirmed)
    );
    let after_reservation = moment().await;
    app.ship(shipped).await.expect(202);
    until_status(&app, shipped, OrderStatus::Shipped).await;
    let cancelled = app
        .order_of("l@example.com", &[(a, 2)])
        .await
        .expect(202)
        .order_id;
    assert_eq!(
        app.status_waiting(cancelled, 10).await,
        Some(OrderStatus::Confirmed)
    );
    app.cancel(cancelled).await.expect(202);
    until_status(&app, cancelled, OrderStatus::Cancelled).await;
    let adjustment = app
        .adjust(a, &json!({"delta": -1, "reason": "damaged"}))
        .await
        .expect(202)
        .adjustment_id;
    app.adjustment(a, adjustment, 10).await.expect(200);

    // One row per movement, with the figures after it and its cause.
    let rows = ledger(&app, a, "").await;
    let shape: Vec<(i64, MovementKind, i64, i64, i64, i64)> = rows
        .iter()
        .map(|r| {
            (
                r.seq,
                r.kind,
                r.on_hand_delta,
                r.reserved_delta,
                r.on_hand,
                r.reserved,
            )
        })
        .collect();
    assert_eq!(
        shape,
        [
            (1, MovementKind::Received, 10, 0, 10, 0),
            (2, MovementKind::Reserved, 0, 3, 10, 3),
            (3, MovementKind::Shipped, -3, -3, 7, 0),
            (4, MovementKind::Reserved, 0, 2, 7, 2),
            (5, MovementKind::Released, 0, -2, 7, 0),
            (6, MovementKind::Adjusted, -1, 0, 6, 0),
        ]
    );
    assert_eq!(rows[0].event_type.as_deref(), Some("stock.received"));
    assert_eq!(rows[2].order_id, Some(shipped));
    assert_eq!(rows[2].event_type.as_deref(), Some("order.shipped"));
    assert_eq!(rows[4].order_id, Some(cancelled));
    assert_eq!(rows[5].adjustment_id, Some(adjustment));
    assert_eq!(rows[5].reason, Some(AdjustmentReason::Damaged));
    let shipment = app
        .events(&format!("key={shipped}&type=order.shipped"))
        .await
        .expect(200);
    assert_eq!(rows[2].event_id, Some(shipment[0].envelope.event_id));
    let product = app.product(a).await.expect(200);
    assert_eq!((product.on_hand, product.reserved), (6, 0));

    // Paged, and filtered by time.
    let page = ledger(&app, a, "?limit=2&after=2").await;
    assert_eq!(page.iter().map(|r| r.seq).collect::<Vec<_>>(), [3, 4]);
    let since = after_reservation.replace('+', "%2B");
    let later = ledger(&app, a, &format!("?from={since}")).await;
    assert_eq!(later.first().map(|r| r.kind), Some(MovementKind::Shipped));
    let until = after_receipt.replace('+', "%2B");
    assert_eq!(ledger(&app, a, &format!("?to={until}")).await.len(), 1);

    // The figures at three moments.
    assert_eq!(figures_as_of(&app, a, &before_anything).await, (0, 0, 0));
    assert_eq!(figures_as_of(&app, a, &after_receipt).await, (10, 0, 10));
    assert_eq!(figures_as_of(&app, a, &after_reservation).await, (10, 3, 7));
    assert_eq!(figures_as_of(&app, a, &moment().await).await, (6, 0, 6));

    // CSV: every row, with a header, as a download.
    let answer = app
        .send(
            app.http
                .get(app.url(&format!("/api/products/{a}/ledger")))
                .header("accept", "text/csv"),
        )
        .await;
    assert_eq!(answer.status, 200);
    assert!(answer
        .header("content-type")
        .unwrap()
        .starts_with("text/csv"));
    assert!(answer
        .header("content-disposition")
        .unwrap()
        .contains("attachment"));
    let mut csv = csv::Reader::from_reader(answer.text.as_bytes());
    let header: Vec<&str> = csv.headers().unwrap().iter().take(3).collect();
    assert_eq!(header, ["seq", "occurred_at", "kind"]);
    let records: Vec<csv::StringRecord> = csv.records().map(Result::unwrap).collect();
    assert_eq!(records.len(), 6);
    assert_eq!(&records[2][2], "shipped");
    assert_eq!(&records[5][5], "6");
    assert_eq!(&records[5][12], "damaged");

    // Bad input is named.
    for (query, field) in [
        ("?from=yesterday", "from"),
        ("?limit=0", "limit"),
        ("?after=-1", "after"),
    ] {
        let (status, body) = app.get(&format!("/api/products/{a}/ledger{query}")).await;
        assert_eq!(status, 422, "{query}: {body}");
        assert!(
            body["error"]["message"].as_str().unwrap().contains(field),
            "{body}"
        );
    }
    let (status, _) = app.get(&format!("/api/products/{a}?as_of=noon")).await;
    assert_eq!(status, 422);
    let (status, _) = app
        .get(&format!("/api/products/{}/ledger", Uuid::now_v7()))
        .await;
    assert_eq!(status, 404);

    // The self-audit holds, in the metrics and the store.
    let store = app.store().await;
    assert_eq!(store.audit_ledger().await.unwrap().mismatched, 0);
    app.wait_for("the ledger audited", || async {
        app.metrics()
            .await
            .contains("streamstock_ledger_mismatched_products 0")
    })
    .await;
    // ... and catches a ledger that disagrees with the figures.
    sqlx::query("UPDATE stock_ledger SET on_hand = on_hand + 1 WHERE product_id = $1 AND seq = 6")
        .bind(a.to_string())
        .execute(store.pool())
        .await
        .unwrap();
    let audit = store.audit_ledger().await.unwrap();
    assert_eq!(
        (audit.mismatched, audit.examples.clone()),
        (1, vec![a.into()])
    );
    app.wait_for("the broken ledger reported", || async {
        app.metrics()
            .await
            .contains("streamstock_ledger_mismatched_products 1")
    })
    .await;
    assert!(!common::invariants::invariant_violations(&store)
        .await
        .unwrap()
        .is_empty());
    // `status` (the embedded log allows one process at a time: stopped).
    let _dir = app.stop().await;
    let status = run_cli(&common, &["status", "--json"]);
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(report["ledger"]["mismatched"], 1, "{report:#}");
    sqlx::query("UPDATE stock_ledger SET on_hand = on_hand - 1 WHERE product_id = $1 AND seq = 6")
        .bind(a.to_string())
        .execute(store.pool())
        .await
        .unwrap();
    assert_eq!(
        common::invariants::invariant_violations(&store)
            .await
            .unwrap(),
        Vec::<String>::new()
    );

    // Rebuilt from the archive, the ledger is the same row for row.
    let before = store.projection_checksums().await.unwrap();
    assert_eq!(
        before
            .iter()
            .find(|t| t.table == "stock_ledger")
            .unwrap()
            .rows,
        6
    );
    assert_rebuild_identical_for(&common);
    assert_eq!(store.projection_checksums().await.unwrap(), before);
}

backend_pairs!(ledger_explains_every_movement);
