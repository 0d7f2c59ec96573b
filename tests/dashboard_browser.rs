//! The dashboard in a real browser: headless Chromium, driven by
//! web/e2e/dashboard.mjs (playwright-core), against a running StreamStock.
//! The page must show the server's figures and alerts and update live over
//! the WebSocket. It runs on Valkey + PostgreSQL. `scripts/test.sh`
//! installs Chromium when it is missing.

mod common;

use chrono::Utc;
use common::{Backend, TestApp};
use serde_json::json;
use std::process::Command;
use streamstock::domain::events::StockReceived;
use streamstock::domain::DomainEvent;
use streamstock::stream::valkey::ValkeyLog;
use streamstock::stream::EventLog;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_shows_live_figures_in_chromium() {
    let chromium =
        std::env::var("STREAMSTOCK_TEST_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        std::path::Path::new(&chromium).exists(),
        "no Chromium at {chromium}: run the suite with ./scripts/test.sh (it installs Debian's chromium) \
         or set STREAMSTOCK_TEST_CHROMIUM"
    );
    let app = TestApp::spawn(Backend::ValkeyPostgres).await;
    let a = app.create_product("DASH-A", 10.00, 5).await;
    app.create_product("DASH-B", 2.50, 1).await;
    for i in 0..3 {
        let (status, _) = app
            .place_order(&json!({ "customer_email": format!("d{i}@example.com"), "items": [{ "product_id": a, "quantity": 2 }] }))
            .await;
        assert_eq!(status, 202);
    }
    app.wait_until_decided(3).await;
    // DASH-A went from 3 available to 1, below its threshold of 2: a
    // purchase order is open for the page to show.
    let (_, open) = app.purchase_orders("OPEN").await;
    assert_eq!(open.as_array().unwrap().len(), 1, "{open}");

    // An event no worker understands: dead-lettered, with an alert that the
    // page must show.
    let log = ValkeyLog::connect(
        &common::valkey_url(),
        &app.common.valkey_namespace,
        app.common.partitions,
        true,
    )
    .await
    .unwrap();
    let mut odd = DomainEvent::StockReceived(StockReceived {
        product_id: a.into(),
        quantity: 1,
        purchase_order_id: None,
    })
    .into_envelope(Utc::now());
    odd.event_type = "stock.teleported".into();
    log.append(&odd).await.unwrap();
    app.wait_for("the dead-letter alert", || async {
        !app.alerts().await.1.as_array().unwrap().is_empty()
    })
    .await;

    // Kept under target/tmp so a person can look at what the browser saw.
    let screenshot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    let base = app.base.clone();
    let shot = screenshot.clone();
    let output = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg("e2e/dashboard.mjs")
            .arg(&base)
            .arg(&shot)
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/web"))
            .env("STREAMSTOCK_TEST_CHROMIUM", &chromium)
            .output()
            .expect("run node (Node.js 20+ is needed for the dashboard build and this test)")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "browser check failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("\"ok\":true"), "{stdout}");
    assert!(
        std::fs::metadata(&screenshot)
            .map(|m| m.len() > 10_000)
            .unwrap_or(false),
        "no screenshot"
    );
    eprintln!("dashboard screenshot: {}", screenshot.display());
    app.stop().await;
}
