//! Valkey killed with SIGKILL under load and restarted from its AOF: the
//! gateway answers 503 with a JSON error while the log is unreachable (never
//! a hang, never a 5xx other than 503), workers back off and resume, and
//! every order answered 202 is processed exactly once.

mod common;

use common::load::{assert_accepted_orders_processed_once, place_orders_until};
use common::process::free_port;
use common::{Api, Backend, TestApp};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

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
    let app = TestApp::spawn_with(settings).await;
    let product = app.create_product("OUTAGE-1", 3.00, 1000).await;

    // Load: 4 clients for 7 s, recording what the gateway answered.
    let load = tokio::spawn(place_orders_until(
        Arc::new(Api::new(&app.base)),
        4,
        vec![product],
        Instant::now() + Duration::from_secs(7),
    ));

    tokio::time::sleep(Duration::from_millis(1500)).await;
    valkey.kill_hard();
    // While the log is down: readiness says so, and writes get 503.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, ready) = app.get("/ready").await;
    assert_eq!(status, 503, "{ready}");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    valkey.restart();
    let report = load.await.unwrap();
    assert_eq!(
        report.unanswered, 0,
        "the gateway always answers, within 8 s"
    );
    assert!(report.unavailable > 0, "the outage was not noticed");
    assert!(
        report.accepted.len() > 10,
        "too few orders accepted: {}",
        report.accepted.len()
    );
    let store = app.store().await;
    assert_accepted_orders_processed_once(&app, &store, &report.accepted, &[(product, 1000)]).await;
    app.stop().await;
}
