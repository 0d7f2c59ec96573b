//! What the dashboard's header and controls read: the pipeline in each
//! snapshot on /ws/dashboard (backends, version, the workers and their
//! partitions, the log's counters, lag and dead letters) and the in-process
//! simulator's switch, `GET`/`POST /api/simulator`.

use crate::common;

use common::process::{free_port, Role, SharedDeployment};
use common::{Api, Backend, TestApp};
use futures::StreamExt;
use serde_json::{json, Value};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

/// The next snapshot (not a status change) on the feed.
async fn next_snapshot<S>(socket: &mut S) -> Value
where
    S: futures::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let Some(Ok(Message::Text(text))) = socket.next().await else {
                continue;
            };
            let message: Value = serde_json::from_str(&text).unwrap();
            if message.get("pipeline").is_some() {
                return message;
            }
        }
    })
    .await
    .expect("a snapshot within 10 s")
}

async fn pipeline_is_in_every_snapshot(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let product = app.create_product("FEED-1", 2.0, 100).await;
    for i in 0..5 {
        app.order_of(&format!("feed{i}@example.com"), &[(product, 1)])
            .await
            .expect(202);
    }
    app.wait_until_decided(5).await;
    let ws_url = format!("{}/ws/dashboard", app.base.replacen("http", "ws", 1));
    let (mut socket, _) = tokio_tungstenite::connect_async(ws_url).await.unwrap();
    // Once the worker caught up: everything appended is processed.
    let mut pipeline = next_snapshot(&mut socket).await["pipeline"].clone();
    for _ in 0..10 {
        if pipeline["lag"] == 0 {
            break;
        }
        pipeline = next_snapshot(&mut socket).await["pipeline"].clone();
    }
    let partitions = app.common.partitions as u64;
    assert_eq!(pipeline["partitions"], partitions, "{pipeline}");
    assert_eq!(pipeline["version"], env!("CARGO_PKG_VERSION"));
    assert!(pipeline["started_at"].is_string());
    let workers = pipeline["workers"].as_array().unwrap();
    assert_eq!(workers.len(), 1, "one worker in `all`: {pipeline}");
    assert_eq!(
        workers[0]["partitions"].as_array().unwrap().len() as u64,
        partitions,
        "{pipeline}"
    );
    assert_eq!(pipeline["unowned_partitions"], json!([]));
    // A product creation (with its stock) and five orders, their decisions
    // and follow-ups: at least eleven entries appended, all processed.
    let appended = pipeline["appended"].as_u64().unwrap();
    assert!(appended >= 11, "{pipeline}");
    assert_eq!(
        pipeline["processed"].as_u64().unwrap(),
        appended,
        "{pipeline}"
    );
    assert_eq!(pipeline["lag"], 0);
    assert_eq!(pipeline["dead_letters"], 0);
    let described = pipeline["event_log"].as_str().unwrap();
    match backend {
        Backend::EmbeddedSqlite => assert!(described.starts_with("embedded log"), "{described}"),
        Backend::ValkeyPostgres => assert!(described.starts_with("Valkey streams"), "{described}"),
    }

    // More orders: the counter moves on.
    app.order_of("later@example.com", &[(product, 1)])
        .await
        .expect(202);
    let mut later = next_snapshot(&mut socket).await["pipeline"].clone();
    for _ in 0..10 {
        if later["appended"].as_u64().unwrap() > appended {
            break;
        }
        later = next_snapshot(&mut socket).await["pipeline"].clone();
    }
    assert!(later["appended"].as_u64().unwrap() > appended, "{later}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_pipeline_is_in_every_snapshot() {
    pipeline_is_in_every_snapshot(Backend::EmbeddedSqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valkey_pipeline_is_in_every_snapshot() {
    pipeline_is_in_every_snapshot(Backend::ValkeyPostgres).await;
}

/// `all` hands its simulator to the page: start with a profile, switch,
/// stop; an unknown profile is refused. Orders flow while it runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulator_of_all_starts_and_stops_from_the_api() {
    let app = TestApp::spawn(Backend::EmbeddedSqlite).await;
    let state = app.simulator().await.expect(200);
    assert!(state.available);
    assert!(!state.running);
    assert_eq!(state.profiles, ["normal", "burst", "checkout"]);

    let refused = app
        .control_simulator(&json!({ "running": true, "profile": "turbo" }))
        .await
        .error(422);
    assert!(refused.message.starts_with("profile:"));

    let state = app
        .control_simulator(&json!({ "running": true, "profile": "burst" }))
        .await
        .expect(200);
    assert_eq!(
        (state.running, state.profile.as_deref()),
        (true, Some("burst"))
    );
    app.wait_for("orders from the simulator", || async {
        let stats = app.stats().await.found();
        stats.is_some_and(|s| s.figures.order_count >= 3)
    })
    .await;

    let state = app
        .control_simulator(&json!({ "running": true, "profile": "normal" }))
        .await
        .expect(200);
    assert_eq!(state.profile.as_deref(), Some("normal"), "switched");
    let state = app
        .control_simulator(&json!({ "running": false }))
        .await
        .expect(200);
    assert!(!state.running);
    assert!(!app.simulator().await.expect(200).running);
    app.stop().await;
}

/// `serve` has no simulator: the page hides the control, and a command
/// gets 409 saying where the simulator is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_has_no_simulator_to_control() {
    let deployment = SharedDeployment::new().await;
    let listen = format!("127.0.0.1:{}", free_port());
    let gateway = Role::start("serve", &["serve", "--listen", &listen], &deployment.env);
    let api = Api::new(&format!("http://{listen}"));
    api.wait_healthy().await;
    assert!(!api.simulator().await.expect(200).available);
    let refused = api
        .control_simulator(&json!({ "running": true }))
        .await
        .error(409);
    assert!(refused.message.contains("streamstock simulate"));
    assert!(gateway.terminate().success());
}
