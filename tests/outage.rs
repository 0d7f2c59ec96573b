//! Valkey killed with SIGKILL under load and restarted from its AOF: the
//! gateway answers 503 with a JSON error while the log is unreachable (never
//! a hang, never a 5xx other than 503), workers back off and resume, and
//! every order answered 202 is processed exactly once.

mod common;

use common::process::free_port;
use common::{Backend, TestApp};
use serde_json::json;
use std::collections::HashSet;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// A valkey-server of this test's own, with AOF fsynced on every write.
struct OwnValkey {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
}

impl OwnValkey {
    fn start() -> OwnValkey {
        let mut valkey = OwnValkey {
            dir: tempfile::tempdir().unwrap(),
            port: free_port(),
            child: None,
        };
        valkey.restart();
        valkey
    }

    fn restart(&mut self) {
        let bin = std::env::var("STREAMSTOCK_TEST_VALKEY_SERVER").expect(
            "STREAMSTOCK_TEST_VALKEY_SERVER is not set: run the suite with ./scripts/test.sh",
        );
        let child = Command::new(bin)
            .args([
                "--bind",
                "127.0.0.1",
                "--port",
                &self.port.to_string(),
                "--dir",
                self.dir.path().to_str().unwrap(),
            ])
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ])
            .stdout(Stdio::null())
            .spawn()
            .expect("start valkey-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "valkey-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill_hard(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for OwnValkey {
    fn drop(&mut self) {
        self.kill_hard();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valkey_killed_under_load_loses_no_accepted_order() {
    let mut valkey = OwnValkey::start();
    let dir = tempfile::tempdir().unwrap();
    let mut settings = common::isolated_settings(Backend::ValkeyPostgres, dir.path()).await;
    settings.valkey_url = Some(valkey.url());
    let app = Arc::new(TestApp::spawn_with(settings).await);
    let product = app.create_product("OUTAGE-1", 3.00, 1000).await;

    // Load: 4 clients for 7 s, recording what the gateway answered.
    let accepted = Arc::new(Mutex::new(HashSet::<Uuid>::new()));
    let unavailable = Arc::new(Mutex::new(0u32));
    let stop = Instant::now() + Duration::from_secs(7);
    let clients: Vec<_> = (0..4)
        .map(|c| {
            let (app, accepted, unavailable) = (app.clone(), accepted.clone(), unavailable.clone());
            tokio::spawn(async move {
                while Instant::now() < stop {
                    let body = json!({ "customer_email": format!("o{c}@example.com"), "items": [{ "product_id": product, "quantity": 1 }] });
                    let sent = Instant::now();
                    let r = app.http.post(app.url("/api/orders")).json(&body).send().await.expect("the gateway always answers");
                    assert!(sent.elapsed() < Duration::from_secs(8), "an answer took {:?}", sent.elapsed());
                    match r.status().as_u16() {
                        202 => {
                            let v: serde_json::Value = r.json().await.unwrap();
                            accepted.lock().unwrap().insert(v["order_id"].as_str().unwrap().parse().unwrap());
                        }
                        503 => {
                            let v: serde_json::Value = r.json().await.unwrap();
                            assert!(v["error"]["code"].as_str().is_some(), "{v}");
                            *unavailable.lock().unwrap() += 1;
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                        other => panic!("unexpected status {other}: {}", r.text().await.unwrap_or_default()),
                    }
                }
            })
        })
        .collect();

    tokio::time::sleep(Duration::from_millis(1500)).await;
    valkey.kill_hard();
    // While the log is down: readiness says so, and writes get 503.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, ready) = app.get("/ready").await;
    assert_eq!(status, 503, "{ready}");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    valkey.restart();
    for client in clients {
        client.await.unwrap();
    }
    let accepted = accepted.lock().unwrap().clone();
    let unavailable = *unavailable.lock().unwrap();
    eprintln!(
        "{} orders accepted, {unavailable} answered 503",
        accepted.len()
    );
    assert!(unavailable > 0, "the outage was not noticed");
    assert!(
        accepted.len() > 10,
        "too few orders accepted: {}",
        accepted.len()
    );

    // After the restart from the AOF every accepted order is decided once.
    app.wait_for("every accepted order decided", || async {
        let Some(orders) = app.all_orders().await else {
            return false;
        };
        let decided: HashSet<Uuid> = orders
            .iter()
            .filter(|o| o["status"] != "PENDING")
            .map(|o| o["order_id"].as_str().unwrap().parse().unwrap())
            .collect();
        accepted.is_subset(&decided)
    })
    .await;
    let violations = app.store().await.invariant_violations().await.unwrap();
    assert!(violations.is_empty(), "{violations:#?}");
    let (_, p) = app.get(&format!("/api/products/{product}")).await;
    assert_eq!(p["on_hand"], 1000, "stock applied exactly once: {p}");
    match Arc::try_unwrap(app) {
        Ok(app) => {
            app.stop().await;
        }
        Err(_) => panic!("the app is still shared"),
    }
}
