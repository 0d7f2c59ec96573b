//! PostgreSQL stopped hard under load and started again: orders are still
//! accepted (the gateway prices them from memory and appends them to the
//! log, which is up), reads answer 503 with a JSON error while it is down
//! (never a hang), workers back off and resume, and every order answered
//! 202 is processed exactly once.

mod common;

use common::load::{assert_accepted_orders_processed_once, outage_under_load, Outage};
use common::{Backend, TestApp};
use std::collections::HashSet;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// A PostgreSQL server of this test's own, which it may stop at will.
struct OwnPostgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
}

impl OwnPostgres {
    fn start() -> OwnPostgres {
        let bin = std::env::var("STREAMSTOCK_TEST_PG_BIN").map(PathBuf::from).unwrap_or_else(|_| {
            let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
                .expect("PostgreSQL server binaries in /usr/lib/postgresql (apt-get install postgresql)")
                .flatten()
                .map(|e| e.path().join("bin"))
                .collect();
            found.sort();
            found.pop().expect("a PostgreSQL version under /usr/lib/postgresql")
        });
        let dir = tempfile::tempdir().unwrap();
        if is_root() {
            // initdb refuses root: the server runs as the postgres user.
            Command::new("chown")
                .args(["-R", "postgres"])
                .arg(dir.path())
                .status()
                .unwrap();
        }
        let pg = OwnPostgres {
            dir,
            bin,
            port: common::process::free_port(),
        };
        let data = pg.data();
        pg.run(
            "initdb",
            &["-D", &data, "-A", "trust", "-U", "postgres", "--no-sync"],
        );
        pg.restart();
        pg
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let program = self.bin.join(tool);
        let mut command = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&program);
            c
        } else {
            Command::new(&program)
        };
        let out = command
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("{tool}: {e}"));
        assert!(
            out.status.success(),
            "{tool} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn restart(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("postgres.log").display().to_string();
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-l",
                &log,
                "-w",
                "-t",
                "60",
                "-o",
                &options,
                "start",
            ],
        );
    }

    fn stop_hard(&self) {
        self.run("pg_ctl", &["-D", &self.data(), "-m", "immediate", "stop"]);
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Outage for OwnPostgres {
    fn stop_hard(&mut self) {
        OwnPostgres::stop_hard(self);
    }

    fn restart(&mut self) {
        OwnPostgres::restart(self);
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let this: &OwnPostgres = self;
        let _ = std::panic::catch_unwind(|| OwnPostgres::stop_hard(this));
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0\n"))
        .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_under_load_loses_no_accepted_order() {
    let mut postgres = OwnPostgres::start();
    let dir = tempfile::tempdir().unwrap();
    let mut settings = common::isolated_settings(Backend::ValkeyPostgres, dir.path()).await;
    settings.database_url = Some(postgres.url());
    let app = TestApp::spawn_with(settings).await;
    let product = app.create_product("DB-OUT-1", 2.00, 1000).await;

    // 4 clients for 8 s; PostgreSQL stopped once orders flow, restarted 3 s later.
    let placed_during_outage = std::sync::Mutex::new(None::<uuid::Uuid>);
    let report = outage_under_load(
        &app,
        product,
        Duration::from_secs(8),
        &mut postgres,
        Duration::from_secs(3),
        async || {
            let (status, body) = app.order_of("outage@example.com", &[(product, 1)]).await;
            assert_eq!(
                status, 202,
                "an order is accepted without the database: {body}"
            );
            let id = body["order_id"].as_str().unwrap().to_string();
            let (status, body) = app.get(&format!("/api/orders/{id}")).await;
            assert_eq!(status, 503, "{body}");
            assert_eq!(body["error"]["code"], "database_unavailable", "{body}");
            *placed_during_outage.lock().unwrap() = Some(id.parse().unwrap());
        },
    )
    .await;
    assert!(
        report
            .error_codes
            .is_subset(&HashSet::from(["database_unavailable".to_string()])),
        "503s name the database: {:?}",
        report.error_codes
    );
    let mut accepted = report.accepted.clone();
    accepted.extend(placed_during_outage.lock().unwrap().take());
    let store = app.store().await;
    assert_accepted_orders_processed_once(&app, &store, &accepted, &[(product, 1000)]).await;
    app.stop().await;
}
