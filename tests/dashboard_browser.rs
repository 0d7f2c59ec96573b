//! The dashboard in a real browser: headless Chromium, driven by
//! web/e2e/dashboard.mjs (playwright-core), against `streamstock all` on
//! Valkey + PostgreSQL with an API token. The script checks the header
//! (backends, workers), the live figures while the page's simulator runs,
//! creating a product, an invalid form's error at its field, placing an
//! order and following it to its final status, shipping one and cancelling
//! another, receiving stock and a purchase order, replaying and purging
//! dead letters, rendering at most a few times a second under the load of
//! `simulate --profile max`, reconnecting after this test restarts the
//! server, and listing the events the log lost (made to look lost while
//! the server is down); it
//! saves screenshots at 1440 and 390 px in both themes under
//! target/tmp/dashboard/. `scripts/test.sh` installs Chromium when missing.

use crate::common;

use chrono::Utc;
use common::process::{free_port, Role, SharedDeployment};
use common::Api;
use serde_json::json;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use streamstock::domain::events::StockReceived;
use streamstock::domain::DomainEvent;
use streamstock::stream::valkey::ValkeyLog;
use streamstock::stream::EventLog;

const TOKEN: &str = "dashboard-e2e-token";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_operates_the_pipeline_in_chromium() {
    let chromium =
        std::env::var("STREAMSTOCK_TEST_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        std::path::Path::new(&chromium).exists(),
        "no Chromium at {chromium}: run the suite with ./scripts/test.sh (it installs Debian's chromium) \
         or set STREAMSTOCK_TEST_CHROMIUM"
    );
    let deployment = SharedDeployment::new()
        .await
        .with("STREAMSTOCK_API_TOKEN", TOKEN)
        .with("STREAMSTOCK_RETRY_BACKOFF_MS", "50")
        // The subscriptions panel's webhook goes to the server itself.
        .with("STREAMSTOCK_WEBHOOK_ALLOW", "127.0.0.0/8");
    let env = deployment.env.clone();
    let listen = format!("127.0.0.1:{}", free_port());
    let start = || {
        Role::start(
            "all",
            &["all", "--profile", "none", "--listen", &listen],
            &env,
        )
    };
    let mut server = Some(start());
    let base = format!("http://{listen}");
    let api = Api::with_token(&base, TOKEN);
    api.wait_healthy().await;

    let a = api.create_product("DASH-A", 10.00, 5).await;
    api.create_product("DASH-B", 2.50, 1).await;
    for i in 0..3 {
        api.place_order(&json!({ "customer_email": format!("d{i}@example.com"), "items": [{ "product_id": a, "quantity": 2 }] }))
            .await
            .expect(202);
    }
    // An event no worker understands: dead-lettered, for the page to replay.
    let var = |name: &str| env.iter().find(|(k, _)| k == name).unwrap().1.clone();
    let log = ValkeyLog::connect(
        &var("STREAMSTOCK_VALKEY_URL"),
        &var("STREAMSTOCK_VALKEY_NAMESPACE"),
        var("STREAMSTOCK_PARTITIONS").parse().unwrap(),
        streamstock::stream::Durability::Strict,
    )
    .await
    .unwrap();
    let mut odd = DomainEvent::StockReceived(StockReceived {
        location_id: None,
        product_id: a.into(),
        quantity: 1,
        purchase_order_id: None,
    })
    .into_envelope(Utc::now());
    odd.event_type = "stock.teleported".into();
    log.append(&odd).await.unwrap();
    api.wait_for("the dead letter", || async {
        !api.dead_letters().await.expect(200).is_empty()
    })
    .await;

    let shots = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard");
    std::fs::create_dir_all(&shots).unwrap();
    let mut node = Command::new("node")
        .arg("e2e/dashboard.mjs")
        .arg(&base)
        .arg(TOKEN)
        .arg(&shots)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/web"))
        .env("STREAMSTOCK_TEST_CHROMIUM", &chromium)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("run node (Node.js 20+ is needed for the dashboard build and this test)");
    let mut to_node = node.stdin.take().unwrap();
    let mut said = Vec::new();
    let mut load = None;
    for line in BufReader::new(node.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if line == "load" {
            // As hard as this machine goes: the page must not try to keep up
            // render by render.
            load = Some(
                Command::new(common::process::BIN)
                    .args(["simulate", "--profile", "max", "--concurrency", "32"])
                    .args(["--duration", "8s", "--mix", "place=1", "--target", &base])
                    .env("STREAMSTOCK_API_TOKEN", TOKEN)
                    .env("RUST_LOG", "error")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap(),
            );
            writeln!(to_node, "started").unwrap();
        }
        if line == "restart" {
            if let Some(mut load) = load.take() {
                load.wait().unwrap();
            }
            // The page must notice the server going away and coming back.
            eprintln!("restarting the server");
            assert!(server.take().unwrap().terminate().success());
            // While it is down, the log "forgets" its trims: each stream's
            // record of the newest entry it trimmed goes back to nothing,
            // so the entries trimmed after they were applied look as if a
            // failover had lost them. The restarted worker's audit finds
            // them, and the page lists them.
            forget_trims(
                &var("STREAMSTOCK_VALKEY_URL"),
                &var("STREAMSTOCK_VALKEY_NAMESPACE"),
                var("STREAMSTOCK_PARTITIONS").parse().unwrap(),
            );
            server = Some(start());
            api.wait_healthy().await;
            eprintln!("the server is back");
            writeln!(to_node, "restarted").unwrap();
        }
        said.push(line);
    }
    let status = node.wait().unwrap();
    let said = said.join("\n");
    assert!(status.success(), "browser check failed:\n{said}");
    assert!(said.contains("\"ok\":true"), "{said}");
    for name in [
        "dashboard-1440-light.png",
        "dashboard-1440-dark.png",
        "dashboard-390-light.png",
        "dashboard-390-dark.png",
    ] {
        let size = std::fs::metadata(shots.join(name))
            .map(|m| m.len())
            .unwrap_or(0);
        assert!(size > 10_000, "screenshot {name}: {size} bytes");
    }
    eprintln!("dashboard screenshots: {}", shots.display());
    assert!(server.take().unwrap().terminate().success());
}

/// Sets each partition's stream's `max-deleted-entry-id` back to the
/// beginning: the entries trimmed so far then look lost, not trimmed, to
/// the log audit (`/api/lost-log-entries`).
fn forget_trims(url: &str, namespace: &str, partitions: u32) {
    let address = url.trim_start_matches("redis://");
    let (host, port) = address.rsplit_once(':').unwrap();
    let port: u16 = port.trim_end_matches('/').parse().unwrap();
    for p in 0..partitions {
        let key = format!("{namespace}:events:{p}");
        let Some(last) = common::cluster::stream_info(host, port, &key, "last-generated-id") else {
            continue;
        };
        let answer =
            common::cluster::cli_at(host, port, &["xsetid", &key, &last, "maxdeletedid", "0-1"]);
        assert_eq!(answer.trim(), "OK", "XSETID {key}: {answer}");
    }
}
