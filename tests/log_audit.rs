//! The audit of the read model against the log (check E of the fault
//! tests). A Valkey that comes back without its data (its host died with
//! its disk, with nothing replicated) has lost every entry the worker had
//! applied: the worker finds them all after it reconnects, records each
//! once (`/api/lost-log-entries`) and counts them in the metric that pages.
//! The negative side: a restart that loses nothing (AOF fsynced always) is
//! audited too and reports nothing.

use crate::common;

use common::process::OwnValkey;
use common::{Backend, TestApp};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valkey_that_lost_its_data_is_found_to_have_lost_applied_events() {
    let mut valkey = OwnValkey::start();
    let dir = tempfile::tempdir().unwrap();
    let mut settings = common::isolated_settings(Backend::ValkeyPostgres, dir.path()).await;
    settings.valkey_url = Some(valkey.url());
    let app = TestApp::spawn_with(settings).await;
    let product = app.create_product("AUDIT-1", 2.00, 1000).await;
    for i in 0..20 {
        app.place_order(&order(product, &format!("before{i}")))
            .await
            .expect(202);
    }
    app.wait_until_decided(20).await;
    let store = app.store().await;
    let applied = consumed_events(&store).await;
    assert!(applied >= 21, "{applied} events applied from the log");

    // A restart that loses nothing (AOF, fsync always) is audited and
    // clean: the control of the audit's false alarms.
    valkey.kill_hard();
    valkey.restart();
    app.wait_for("an audit after the reconnect", || async {
        audits(&app).await >= 2.0
    })
    .await;
    let (_, found) = app.get("/api/lost-log-entries").await;
    assert_eq!(found["total"], 0, "{found}");

    // The host dies with its disk: the server comes back empty.
    valkey.destroy();
    valkey.restart();
    app.wait_for("the lost entries reported", || async {
        app.get("/api/lost-log-entries").await.1["total"] == json!(applied)
    })
    .await;
    let (_, found) = app.get("/api/lost-log-entries?limit=5").await;
    assert_eq!(found["entries"].as_array().unwrap().len(), 5, "{found}");
    let types: Vec<&str> = found["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_type"].as_str().unwrap())
        .collect();
    assert!(types.iter().all(|t| t.contains('.')), "{types:?}");
    let counted = metric(&app, "streamstock_log_lost_entries_total").await;
    assert_eq!(counted, applied as f64, "the metric counts each once");

    // Work goes on: new orders are applied and are not reported lost by
    // the audits that follow (a reconnect more).
    for i in 0..5 {
        app.place_order(&order(product, &format!("after{i}")))
            .await
            .expect(202);
    }
    app.wait_until_decided(25).await;
    let audited = audits(&app).await;
    valkey.kill_hard();
    valkey.restart();
    app.wait_for("an audit after the last reconnect", || async {
        audits(&app).await > audited
    })
    .await;
    let (_, found) = app.get("/api/lost-log-entries").await;
    assert_eq!(found["total"], json!(applied), "{found}");
    app.stop().await;
}

fn order(product: uuid::Uuid, customer: &str) -> serde_json::Value {
    json!({
        "customer_email": format!("{customer}@example.com"),
        "items": [{ "product_id": product, "quantity": 1 }],
    })
}

/// Archived events that came from the log (follow-ups are archived before
/// they are published, without an entry).
async fn consumed_events(store: &streamstock::store::Store) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM event_archive WHERE entry_id <> ''")
        .fetch_one(store.pool())
        .await
        .unwrap()
}

async fn audits(app: &TestApp) -> f64 {
    metric(app, "streamstock_log_audits_total").await
}

async fn metric(app: &TestApp, name: &str) -> f64 {
    app.metrics()
        .await
        .lines()
        .find(|line| line.starts_with(name) && !line.starts_with('#'))
        .and_then(|line| line.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}
