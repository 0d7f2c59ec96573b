//! Valkey killed with SIGKILL under load and restarted from its AOF: the
//! gateway answers 503 with a JSON error while the log is unreachable (never
//! a hang, never a 5xx other than 503), workers back off and resume, and
//! every order answered 202 is processed exactly once.

mod common;

use common::load::{assert_accepted_orders_processed_once, outage_under_load, Outage};
use common::process::free_port;
use common::{Backend, TestApp};
use std::process::{Child, Command, Stdio};
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

impl Outage for OwnValkey {
    fn stop_hard(&mut self) {
        self.kill_hard();
    }

    fn restart(&mut self) {
        OwnValkey::restart(self);
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

    // 4 clients for 7 s; Valkey killed 1.5 s in, restarted 2.5 s later.
    let report = outage_under_load(
        &app,
        product,
        Duration::from_secs(7),
        &mut valkey,
        Duration::from_millis(2500),
    )
    .await;
    let store = app.store().await;
    assert_accepted_orders_processed_once(&app, &store, &report.accepted, &[(product, 1000)]).await;
    app.stop().await;
}
