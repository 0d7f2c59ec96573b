//! TLS to the backends, through rustls, against servers this test starts
//! with certificates it generates: a PostgreSQL with `ssl=on`, and Valkey
//! behind a TLS terminator (stunnel; the valkey-server the suite installs
//! from PyPI is built without TLS). The roles run split, as processes, with
//! `sslmode=verify-full` and a `rediss://` URL trusting the test's CA, and
//! the simulator drives the gateway through `https://`. A
//! wrong CA, or a server that does not speak TLS, is a clear error at once,
//! not a hang and not a wait for the start-up timeout.

use crate::common;

use common::pki::Pki;
use streamstock::domain::status::OrderStatus;

use common::process::{free_port, run_to_end, OwnPostgres, OwnValkey, Role, BIN};
use serde_json::json;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// stunnel accepting TLS on a port of its own, passing plain text on to
/// `target_port` (Valkey; the gateway, as a TLS proxy in front of it would).
struct TlsTerminator {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl TlsTerminator {
    fn start(pki: &Pki, target_port: u16) -> TlsTerminator {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let config = dir.path().join("stunnel.conf");
        std::fs::write(
            &config,
            format!(
                "foreground = yes\npid =\n[service]\naccept = 127.0.0.1:{port}\n\
                 connect = 127.0.0.1:{target_port}\ncert = {}\nkey = {}\n",
                pki.file("server.pem").display(),
                pki.file("server.key").display()
            ),
        )
        .unwrap();
        let program = ["stunnel4", "stunnel"]
            .into_iter()
            .find(|p| {
                Command::new("sh")
                    .args(["-c", &format!("command -v {p}")])
                    .output()
                    .is_ok_and(|o| o.status.success())
            })
            .expect(
                "stunnel not found: run the suite with ./scripts/test.sh, which installs stunnel4",
            );
        let child = Command::new(program)
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start stunnel");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "stunnel did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        TlsTerminator {
            child,
            port,
            _dir: dir,
        }
    }
}

impl Drop for TlsTerminator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_roles_run_over_tls_and_a_wrong_ca_is_refused_at_once() {
    let pki = Pki::new("good");
    let wrong = Pki::new("wrong");
    let postgres = OwnPostgres::start_with(|dir| {
        let (cert, key) = pki.install_server_files(dir);
        vec![
            "ssl=on".to_string(),
            format!("ssl_cert_file={cert}"),
            format!("ssl_key_file={key}"),
        ]
    });
    let valkey = OwnValkey::start();
    let terminator = TlsTerminator::start(&pki, valkey.port);
    let data_dir = tempfile::tempdir().unwrap();
    let database_url = |ca: &str| {
        format!(
            "postgres://postgres@localhost:{}/postgres?sslmode=verify-full&sslrootcert={ca}",
            postgres.port
        )
    };
    let valkey_url = format!("rediss://127.0.0.1:{}", terminator.port);
    let env = vec![
        ("DATABASE_URL", database_url(&pki.ca())),
        ("STREAMSTOCK_VALKEY_URL", valkey_url.clone()),
        ("STREAMSTOCK_VALKEY_CA_FILE", pki.ca()),
        ("STREAMSTOCK_VALKEY_NAMESPACE", "tls".to_string()),
        ("STREAMSTOCK_PARTITIONS", "4".to_string()),
        ("STREAMSTOCK_BATCH_WAIT_MS", "20".to_string()),
        (
            "STREAMSTOCK_DATA_DIR",
            data_dir.path().display().to_string(),
        ),
    ];
    let env_pairs: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();

    // The roles, split, over TLS both ways: an order goes through.
    let listen = format!("127.0.0.1:{}", free_port());
    let gateway = Role::start("serve", &["serve", "--listen", &listen], &env_pairs);
    let worker = Role::start(
        "worker",
        &["worker", "--worker-listen", "127.0.0.1:0"],
        &env_pairs,
    );
    let api = common::Api::new(&format!("http://{listen}"));
    api.wait_healthy().await;
    let product = api.create_product("TLS-1", 4.00, 10).await;
    let queued = api
        .place_order(&json!({"customer_email": "tls@example.com",
                             "items": [{"product_id": product, "quantity": 2}]}))
        .await
        .expect(202);
    let decided = api.status_waiting(queued.order_id, 10).await;
    assert_eq!(decided, Some(OrderStatus::Confirmed));

    // The simulator targets https:// (here stunnel in front of the
    // gateway), trusting the system's CAs; SSL_CERT_FILE names ours.
    let gateway_port: u16 = listen.rsplit(':').next().unwrap().parse().unwrap();
    let front = TlsTerminator::start(&pki, gateway_port);
    let simulated = Command::new(BIN)
        .args(["simulate", "--profile", "burst", "--duration", "3s"])
        .args(["--target", &format!("https://localhost:{}", front.port)])
        .env("SSL_CERT_FILE", pki.ca())
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&simulated.stdout);
    assert!(
        simulated.status.success(),
        "{report} {}",
        String::from_utf8_lossy(&simulated.stderr)
    );
    let accepted: u64 = report
        .split("orders accepted: ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no count in {report}"));
    assert!(accepted > 0, "{report}");
    drop(front);

    // Every client connection PostgreSQL sees is encrypted.
    let store = streamstock::store::Store::connect_with(&database_url(&pki.ca()), 8, None)
        .await
        .unwrap();
    let plain: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
         WHERE a.backend_type = 'client backend' AND NOT s.ssl",
    )
    .fetch_one(store.pool())
    .await
    .unwrap();
    let encrypted: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
         WHERE a.backend_type = 'client backend' AND s.ssl",
    )
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert_eq!(plain, 0);
    assert!(encrypted >= 3, "{encrypted} encrypted connections");
    store.close().await;
    assert!(worker.terminate().success());
    assert!(gateway.terminate().success());

    // A CA that did not sign the server's certificate: refused at once,
    // though the role would wait 60 s for a server that is down.
    let with = |key: &'static str, value: String| {
        let mut env = env.clone();
        env.retain(|(k, _)| *k != key);
        env.push((key, value));
        env
    };
    let worker_args = [
        "worker",
        "--worker-listen",
        "127.0.0.1:0",
        "--startup-timeout",
        "60s",
    ];
    let (code, stderr, took) = run_to_end(
        &worker_args,
        &with("STREAMSTOCK_VALKEY_CA_FILE", wrong.ca()),
    );
    assert_eq!(code, Some(1), "{stderr}");
    assert!(took < 15.0, "took {took} s: {stderr}");
    assert!(stderr.contains("TLS with Valkey failed"), "{stderr}");
    let (code, stderr, took) = run_to_end(
        &worker_args,
        &with("DATABASE_URL", database_url(&wrong.ca())),
    );
    assert_eq!(code, Some(1), "{stderr}");
    assert!(took < 15.0, "took {took} s: {stderr}");
    assert!(stderr.to_lowercase().contains("certificate"), "{stderr}");

    // A server that does not speak TLS. Valkey's plain port never answers
    // the TLS greeting (nor would a slow server yet): each try says so, and
    // the role gives up at its start-up timeout.
    let short = [
        "worker",
        "--worker-listen",
        "127.0.0.1:0",
        "--startup-timeout",
        "6s",
    ];
    let plain_valkey = format!("rediss://127.0.0.1:{}", valkey.port);
    let (code, stderr, took) = run_to_end(&short, &with("STREAMSTOCK_VALKEY_URL", plain_valkey));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(took < 20.0, "took {took} s: {stderr}");
    assert!(
        stderr.contains("is the server speaking TLS on that port?")
            && stderr.contains("did not answer within 6s"),
        "{stderr}"
    );
    // A PostgreSQL without ssl (the suite's) asked for sslmode=require:
    // refused at once.
    let plain_postgres = format!("{}?sslmode=require", common::postgres_admin_url());
    let (code, stderr, took) = run_to_end(&worker_args, &with("DATABASE_URL", plain_postgres));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(took < 15.0, "took {took} s: {stderr}");
    assert!(stderr.contains("TLS"), "{stderr}");
}
