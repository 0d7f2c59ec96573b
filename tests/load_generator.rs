//! `streamstock simulate` as a load generator: an open-loop run at a rate
//! sends what the rate asks for, and its report's counts are what the
//! system recorded (adjustments, partial shipments and returns in the mix
//! included).

use crate::common;
use streamstock::domain::status::OrderStatus;

use common::process::BIN;
use common::{Backend, TestApp};
use serde_json::Value;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_steady_run_reports_what_the_system_recorded() {
    let app = TestApp::spawn(Backend::EmbeddedSqlite).await;
    let output = tokio::process::Command::new(BIN)
        .args([
            "simulate",
            "--target",
            &app.base,
            "--profile",
            "steady",
            "--rate",
            "200",
            "--duration",
            "5",
            "--seed",
            "7",
            "--mix",
            "place=72,ship=12,cancel=3,partial=4,return=4,adjust=5",
            "--report",
            "json",
        ])
        .env("RUST_LOG", "warn")
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "simulate failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&output.stdout)));
    let count = |outcome: &str| report["requests"][outcome].as_i64().unwrap_or(0);

    // 200/s for 5 s: the open loop sends what was due, however the
    // gateway answers.
    let total = report["requests_total"].as_i64().unwrap();
    assert!(
        (950..=1005).contains(&total),
        "{total} requests: {report:#}"
    );
    assert_eq!(report["errors"], 0, "{report:#}");
    assert_eq!(report["profile"], "steady");
    assert_eq!(report["target_rate"], 200);
    assert_eq!(report["seed"], 7);
    let accepted = report["orders_accepted"].as_i64().unwrap();
    assert_eq!(accepted, count("place 202"), "{report:#}");
    assert!(accepted > 700, "{report:#}");
    let latency = &report["latency"];
    assert_eq!(latency["count"].as_i64(), Some(total), "{report:#}");
    for p in ["p50_ms", "p90_ms", "p99_ms", "p99_9_ms", "max_ms"] {
        assert!(latency[p].as_f64().unwrap() > 0.0, "{p}: {report:#}");
    }
    assert!(
        latency["p50_ms"].as_f64() <= latency["p99_ms"].as_f64()
            && latency["p99_ms"].as_f64() <= latency["max_ms"].as_f64(),
        "{report:#}"
    );
    // Every accepted order's decision was heard on the dashboard feed.
    assert_eq!(report["decisions_missing"], 0, "{report:#}");
    assert_eq!(
        report["decision_latency"]["count"].as_i64(),
        Some(accepted),
        "{report:#}"
    );

    // The system recorded exactly what the report counts.
    app.wait_for("every order decided", || async {
        let stats = app.stats().await.expect(200).figures;
        stats.orders_in(OrderStatus::Pending) == 0 && stats.order_count == accepted
    })
    .await;
    let stats = app.stats().await.expect(200).figures;
    assert_eq!(stats.order_count, accepted, "{stats:#?}");
    app.wait_for("ships and cancels applied", || async {
        let stats = app.stats().await.expect(200).figures;
        stats.orders_in(OrderStatus::Shipped) == count("ship 202")
            && stats.orders_in(OrderStatus::Cancelled) == count("cancel 202")
    })
    .await;
    assert!(
        stats.orders_in(OrderStatus::Confirmed) + stats.orders_in(OrderStatus::Shipped) > 0,
        "{stats:#?}"
    );
    // Every adjustment the gateway accepted was decided once.
    let adjusted = count("adjust 202");
    assert!(adjusted > 10, "{report:#}");
    let api: &common::Api = &app;
    let decided = |kind: &'static str| async move {
        api.events(&format!("type={kind}&limit=1000"))
            .await
            .expect(200)
            .len() as i64
    };
    api.wait_for("every adjustment decided", || async {
        decided("stock.adjustment_requested").await == adjusted
            && decided("stock.adjusted").await + decided("stock.adjustment_refused").await
                == adjusted
    })
    .await;
    // Every partial shipment and return accepted was decided once.
    let (partial, returns) = (count("partial 202"), count("return 202"));
    assert!(partial > 5 && returns > 5, "{report:#}");
    api.wait_for("every shipment and return decided", || async {
        decided("order.shipment_requested").await == partial
            && decided("order.return_requested").await == returns
            && decided("order.returned").await + decided("order.return_refused").await == returns
            && decided("order.shipment_refused").await == 0
    })
    .await;
    assert!(decided("order.returned").await > 0, "{report:#}");
    tokio::time::sleep(Duration::from_millis(10)).await;
    app.stop().await;
}
