//! PostgreSQL stopped hard under load and started again: the gateway answers
//! 503 with a JSON error while it is down (never a hang), workers back off
//! and resume, and every order answered 202 is processed exactly once.

mod common;

use common::{Backend, TestApp};
use serde_json::json;
use std::collections::HashSet;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use uuid::Uuid;

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

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let _ = std::panic::catch_unwind(|| self.stop_hard());
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
    let postgres = OwnPostgres::start();
    let dir = tempfile::tempdir().unwrap();
    let mut settings = common::isolated_settings(Backend::ValkeyPostgres, dir.path()).await;
    settings.database_url = Some(postgres.url());
    let app = Arc::new(TestApp::spawn_with(settings).await);
    let product = app.create_product("DB-OUT-1", 2.00, 1000).await;

    let accepted = Arc::new(Mutex::new(HashSet::<Uuid>::new()));
    let unavailable = Arc::new(Mutex::new(0u32));
    let stop = Instant::now() + Duration::from_secs(8);
    let clients: Vec<_> = (0..4)
        .map(|c| {
            let (app, accepted, unavailable) = (app.clone(), accepted.clone(), unavailable.clone());
            tokio::spawn(async move {
                while Instant::now() < stop {
                    let body = json!({ "customer_email": format!("d{c}@example.com"), "items": [{ "product_id": product, "quantity": 1 }] });
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
                            assert_eq!(v["error"]["code"], "database_unavailable", "{v}");
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
    postgres.stop_hard();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, ready) = app.get("/ready").await;
    assert_eq!(status, 503, "{ready}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    postgres.restart();
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
    assert_eq!(p["on_hand"], 1000, "{p}");
    match Arc::try_unwrap(app) {
        Ok(app) => {
            app.stop().await;
        }
        Err(_) => panic!("the app is still shared"),
    }
}
