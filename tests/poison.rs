//! Poison events (an unknown type, a newer version, an invalid payload, a
//! handler that always fails, bytes that are not an event) end in the dead
//! letters with their reason and an alert, and do not stop their partition;
//! `streamstock dlq` lists, replays and purges them.

use crate::common;

use chrono::Utc;
use common::process::run_cli_ok;
use common::{Backend, TestApp};
use serde_json::{json, Value};
use std::sync::Arc;
use streamstock::domain::events::StockReceived;
use streamstock::domain::status::{AlertKind, Severity};
use streamstock::domain::{DomainEvent, Envelope};
use streamstock::store::queries::AlertView;
use streamstock::stream::dead_letter::DeadLetter;
use streamstock::stream::embedded::EmbeddedLog;
use streamstock::stream::EventLog;
use uuid::Uuid;

/// Poison for `product`, then a good receipt of 2 units after it in the
/// same partition (same key).
fn poison_then_good(product: Uuid) -> Vec<Envelope> {
    let receipt = |quantity| {
        DomainEvent::StockReceived(StockReceived {
            location_id: None,
            product_id: product.into(),
            quantity,
            purchase_order_id: None,
        })
        .into_envelope(Utc::now())
    };
    let mut unknown = receipt(1);
    unknown.event_type = "product.teleported".into();
    let mut newer = receipt(1);
    newer.version = 99;
    let mut invalid = receipt(1);
    invalid.payload = json!({ "product_id": product, "quantity": "lots" });
    let always_fails = receipt(-3);
    vec![unknown, newer, invalid, always_fails, receipt(2)]
}

async fn dead_letters(app: &TestApp, want: usize) -> Vec<DeadLetter> {
    app.wait_for(&format!("{want} dead letters"), || async {
        app.dead_letters().await.found().map_or(0, |l| l.len()) >= want
    })
    .await;
    app.dead_letters().await.expect(200)
}

/// The alerts of `kind` that `/api/alerts` lists.
async fn alerts_of_kind(app: &TestApp, kind: AlertKind) -> Vec<AlertView> {
    let alerts = app.alerts().await.expect(200);
    alerts.into_iter().filter(|a| a.kind == kind).collect()
}

async fn check_dead_letters(app: &TestApp, product: Uuid, extra: usize) {
    // The good event behind the poison was applied: the partition moved on.
    app.wait_for("the receipt behind the poison", || async {
        let p = app.product(product).await.found();
        p.is_some_and(|p| p.on_hand == 7)
    })
    .await;
    let letters = dead_letters(app, 4 + extra).await;
    assert_eq!(letters.len(), 4 + extra, "{letters:#?}");
    let find = |needle: &str| {
        letters
            .iter()
            .find(|l| l.error.contains(needle))
            .unwrap_or_else(|| panic!("no dead letter mentioning {needle}: {letters:#?}"))
    };
    assert_eq!(find("unknown event type `product.teleported`").attempts, 1);
    assert_eq!(find("version 99").attempts, 1);
    assert_eq!(find("invalid payload for `stock.received`").attempts, 1);
    let failing = find("must be positive");
    assert_eq!(failing.attempts, 3, "retried up to --max-attempts");
    assert_eq!(failing.envelope.as_ref().unwrap().payload["quantity"], -3);

    app.wait_for("an alert per dead letter", || async {
        alerts_of_kind(app, AlertKind::DeadLetter).await.len() == 4 + extra
    })
    .await;
    // The fourth dead letter reached the test app's alert threshold (4):
    // one critical alert, raised once, however many letters follow.
    app.wait_for("the dead letters piling up alert", || async {
        !alerts_of_kind(app, AlertKind::DeadLettersPilingUp)
            .await
            .is_empty()
    })
    .await;
    let piling = alerts_of_kind(app, AlertKind::DeadLettersPilingUp).await;
    assert_eq!(piling.len(), 1, "{piling:#?}");
    assert_eq!(piling[0].severity, Severity::Critical);
    assert!(piling[0].message.contains("4 events wait"));
    let violations = common::invariants::invariant_violations(&app.store().await)
        .await
        .unwrap();
    assert!(violations.is_empty(), "{violations:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_poison_goes_to_dead_letters_and_dlq_commands_work() {
    let dir = tempfile::tempdir().unwrap();
    let common = common::isolated_settings(Backend::EmbeddedSqlite, dir.path()).await;
    let app = TestApp::spawn_with(common.clone()).await;
    let product = app.create_product("POISON-1", 1.00, 5).await;
    app.stop().await;

    // The embedded log belongs to one process: write the poison while the
    // app is down, as another producer would have.
    {
        let log = EmbeddedLog::open(&dir.path().join("log"), common.partitions).unwrap();
        for envelope in poison_then_good(product) {
            log.append(&envelope).await.unwrap();
        }
    }
    let app = TestApp::spawn_with(common.clone()).await;
    check_dead_letters(&app, product, 0).await;
    app.stop().await;

    // The operator's commands, against the stopped deployment.
    let dlq = |args: &[&str]| run_cli_ok(&common, &[&["dlq"], args].concat());
    let listed: Vec<Value> = serde_json::from_str(&dlq(&["list", "--json"])).unwrap();
    assert_eq!(listed.len(), 4);
    let table = dlq(&["list"]);
    assert!(
        table.contains("product.teleported") && table.contains("must be positive"),
        "{table}"
    );
    let unknown_id = listed
        .iter()
        .find(|l| l["envelope"]["event_type"] == "product.teleported")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(dlq(&["purge", &unknown_id]).contains("purged 1"));
    assert!(dlq(&["replay", "--all"]).contains("replayed 3"));
    assert!(dlq(&["list"]).contains("no dead letters"));

    // `--all` goes through more letters than one page holds, a page at a
    // time.
    {
        use streamstock::stream::dead_letter::DeadLetter;
        let log = EmbeddedLog::open(&dir.path().join("log"), common.partitions).unwrap();
        let many = streamstock::store::dead_letters::ALL_PAGE + 203;
        for n in 0..many {
            let letter = DeadLetter::new(0, "1-0".parse().unwrap(), None, format!("{n}"), 1);
            log.dead_letter(streamstock::stream::PROCESSOR_GROUP, &letter)
                .await
                .unwrap();
        }
    }
    let purged = dlq(&["purge", "--all"]);
    assert!(purged.contains("purged 1203"), "{purged}");
    assert!(dlq(&["list"]).contains("no dead letters"));
    // The replay above appended the three again: the app dead-letters them
    // anew below.

    // Replayed, they are processed anew (and, still poison, fail anew).
    let app = TestApp::spawn_with(common).await;
    let letters = dead_letters(&app, 3).await;
    assert_eq!(letters.len(), 3);
    assert!(
        letters.iter().any(|l| l.attempts == 3),
        "the failing one got all its attempts again"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valkey_poison_goes_to_dead_letters() {
    let app = TestApp::spawn(Backend::ValkeyPostgres).await;
    let product = app.create_product("POISON-2", 1.00, 5).await;
    let log = Arc::new(app.valkey_log().await);
    for envelope in poison_then_good(product) {
        log.append(&envelope).await.unwrap();
    }
    // Bytes that are not an event at all, straight into a partition stream.
    let raw = fred::prelude::Builder::from_config(
        fred::prelude::Config::from_url(&common::valkey_url()).unwrap(),
    )
    .build()
    .unwrap();
    fred::prelude::ClientLike::init(&raw).await.unwrap();
    let _: String = fred::prelude::StreamsInterface::xadd(
        &raw,
        format!("{}:events:0", app.common.valkey_namespace),
        false,
        None,
        "*",
        vec![("e", "{not json")],
    )
    .await
    .unwrap();
    check_dead_letters(&app, product, 1).await;
    let letters = dead_letters(&app, 5).await;
    assert!(
        letters
            .iter()
            .any(|l| l.envelope.is_none() && l.error.contains("undecodable")),
        "{letters:#?}"
    );

    // The operator's commands work against Valkey while the app runs.
    let common = &app.common;
    let dlq = |args: &[&str]| run_cli_ok(common, &[&["dlq"], args].concat());
    let listed: Vec<Value> = serde_json::from_str(&dlq(&["list", "--json"])).unwrap();
    assert_eq!(listed.len(), 5);
    let undecodable = listed.iter().find(|l| l["envelope"].is_null()).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(dlq(&["purge", &undecodable]).contains("purged 1"));
    assert!(dlq(&["replay", "--all"]).contains("replayed 4"));
    // Replayed, the four are processed anew and, still poison, fail anew.
    let again = dead_letters(&app, 4).await;
    assert_eq!(again.len(), 4, "{again:#?}");
    app.stop().await;
}

/// The attempt count lives in the database: a restart does not give a
/// poison event a fresh set of attempts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attempts_survive_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let mut common = common::isolated_settings(Backend::EmbeddedSqlite, dir.path()).await;
    common.partitions = 4;
    let app = TestApp::spawn_with(common.clone()).await;
    let product = app.create_product("POISON-3", 1.00, 5).await;
    app.stop().await;
    {
        let log = EmbeddedLog::open(&dir.path().join("log"), 4).unwrap();
        log.append(
            &DomainEvent::StockReceived(StockReceived {
                location_id: None,
                product_id: product.into(),
                quantity: -1,
                purchase_order_id: None,
            })
            .into_envelope(Utc::now()),
        )
        .await
        .unwrap();
    }
    let attempts = |app: &TestApp| {
        let url = app.common.database_url();
        async move {
            let store = streamstock::store::Store::connect(&url).await.unwrap();
            let row: Option<(i64,)> = sqlx::query_as("SELECT attempts FROM event_attempts")
                .fetch_optional(store.pool())
                .await
                .unwrap();
            row.map(|r| r.0).unwrap_or(0)
        }
    };
    // Two runs that each fail once and then wait a long backoff.
    for run in 1..=2 {
        let app = TestApp::spawn_with_processing(common.clone(), 10, 60_000).await;
        app.wait_for(&format!("attempt {run}"), || attempts(&app).await_eq(run))
            .await;
        app.stop().await;
    }
    // Third run allows 2 attempts: the count is already 2, so one more
    // failure (the third) dead-letters it. A reset count would stop at 2.
    let app = TestApp::spawn_with_processing(common, 2, 10).await;
    let letters = dead_letters(&app, 1).await;
    assert_eq!(letters[0].attempts, 3, "{letters:#?}");
    app.stop().await;
}

trait AwaitEq {
    async fn await_eq(self, want: i64) -> bool;
}

impl<F: std::future::Future<Output = i64>> AwaitEq for F {
    async fn await_eq(self, want: i64) -> bool {
        self.await == want
    }
}

/// The dashboard's buttons: `POST /api/dead-letters/replay` and `/purge`
/// act on the letters named (or all), refuse an unknown id or an empty
/// selection without touching anything, and a replayed letter is processed
/// anew (still poison, it comes back with its attempts counted afresh).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_replayed_and_purged_through_the_api() {
    let app = TestApp::spawn(Backend::ValkeyPostgres).await;
    let product = app.create_product("POISON-API", 1.00, 5).await;
    let log = app.valkey_log().await;
    for envelope in poison_then_good(product) {
        log.append(&envelope).await.unwrap();
    }
    check_dead_letters(&app, product, 0).await;
    let letters = dead_letters(&app, 4).await;
    let ids: Vec<String> = letters.iter().map(|l| l.id.clone()).collect();

    let refused = app
        .replay_dead_letters(&json!({ "ids": [ids[0], "no-such-letter"] }))
        .await
        .error(404);
    assert!(refused.message.contains("no-such-letter"));
    for bad in [json!({}), json!({ "ids": [ids[0]], "all": true })] {
        let reply = app.purge_dead_letters(&bad).await;
        assert_eq!(reply.status, 422, "{bad}: {reply:?}");
    }
    assert_eq!(dead_letters(&app, 4).await.len(), 4, "nothing was touched");

    let replay = app
        .replay_dead_letters(&json!({ "ids": [ids[0]] }))
        .await
        .expect(200);
    assert_eq!(replay.replayed[0].id, ids[0]);
    assert!(!replay.replayed[0].msg_id.is_empty());
    // Still poison: it fails anew and comes back as a new letter.
    app.wait_for("the replayed letter to come back", || async {
        let now = app.dead_letters().await.expect(200);
        now.len() == 4 && !now.iter().any(|l| l.id == ids[0])
    })
    .await;

    let purge = app
        .purge_dead_letters(&json!({ "all": true }))
        .await
        .expect(200);
    assert_eq!((purge.purged, purge.remaining), (4, 0));
    assert!(app.dead_letters().await.expect(200).is_empty());
    app.stop().await;
}
