//! Running as a service: under systemd, before the backends, logging JSON.
//! - the unit files in deploy/systemd pass `systemd-analyze verify`;
//! - a role tells the service manager (sd_notify, through the socket in
//!   NOTIFY_SOCKET) what it waits for, READY=1 only once its backends answer
//!   and it serves, WATCHDOG=1 at half of WATCHDOG_USEC, STOPPING=1 on
//!   SIGTERM;
//! - a role waits at start-up for a backend that is not up yet, and gives up
//!   after --startup-timeout with an error that names it;
//! - with LOG_FORMAT=json every log line is one object with the role, and a
//!   line logged while an event is handled carries the event's span
//!   (partition, entry, event id and type, and the key: the order or
//!   product id);
//! - the Prometheus alert rules in deploy/prometheus name only metrics the
//!   roles export.

use crate::common;

use common::process::{free_port, run_to_end, OwnValkey, Role, SharedDeployment, BIN};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const UNITS: [&str; 4] = [
    "streamstock-serve.service",
    "streamstock-worker@.service",
    "streamstock-simulate.service",
    "streamstock-all.service",
];

#[test]
fn unit_files_pass_systemd_analyze_verify() {
    let analyze = which("systemd-analyze").expect(
        "systemd-analyze not found: run the suite with ./scripts/test.sh, which installs systemd",
    );
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/systemd");
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for unit in UNITS {
        // verify checks that ExecStart's binary exists: point it at ours.
        let text = std::fs::read_to_string(source.join(unit)).unwrap();
        assert!(
            text.contains("ExecStart=/usr/local/bin/streamstock "),
            "{unit}"
        );
        let text = text.replace("/usr/local/bin/streamstock", BIN);
        for (key, want) in [
            ("Type", "notify"),
            ("Restart", "on-failure"),
            ("NoNewPrivileges", "yes"),
            ("ProtectSystem", "strict"),
            ("DynamicUser", "yes"),
        ] {
            assert!(
                text.lines().any(|l| l == format!("{key}={want}")),
                "{unit} lacks {key}={want}"
            );
        }
        let path = dir.path().join(unit);
        std::fs::write(&path, text).unwrap();
        files.push(path);
    }
    // A template is verified through an instance of it.
    let instance = dir.path().join("streamstock-worker@1.service");
    std::os::unix::fs::symlink(dir.path().join("streamstock-worker@.service"), &instance).unwrap();
    files.retain(|f| !f.ends_with("streamstock-worker@.service"));
    files.push(instance);
    let out = Command::new(analyze)
        .arg("verify")
        .arg("--man=no")
        .args(&files)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && !stderr.contains(dir.path().to_str().unwrap()),
        "systemd-analyze verify: {}\n{stderr}",
        out.status
    );
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|path| path.is_file())
    })
}

/// The service manager's end of NOTIFY_SOCKET.
/// A stand-in for systemd's notify socket. A thread reads it all the time,
/// as systemd does: unread, its queue holds only `net.unix.max_dgram_qlen`
/// datagrams (10 here), which the watchdog's pings fill within a second
/// whenever the test is busy elsewhere, and the sender then drops what
/// comes next.
struct NotifySocket {
    path: PathBuf,
    _dir: tempfile::TempDir,
    /// Every message so far, in order.
    heard: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl NotifySocket {
    fn bind() -> NotifySocket {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let heard = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (reader_heard, reader_stop) = (heard.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut buffer = vec![0u8; 4096];
            while !reader_stop.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(n) = socket.recv(&mut buffer) {
                    let message = String::from_utf8_lossy(&buffer[..n]).into_owned();
                    reader_heard.lock().unwrap().push(message);
                }
            }
        });
        NotifySocket {
            path,
            _dir: dir,
            heard,
            stop,
        }
    }

    /// Every message so far.
    fn seen(&self) -> Vec<String> {
        self.heard.lock().unwrap().clone()
    }

    /// Waits until a message contains `wanted`; returns its index in
    /// `seen`. Fails with everything seen if it does not come in time.
    fn wait_for(&mut self, wanted: &str, within: Duration) -> usize {
        let deadline = Instant::now() + within;
        loop {
            let seen = self.seen();
            if let Some(i) = seen.iter().position(|m| m.contains(wanted)) {
                return i;
            }
            assert!(
                Instant::now() < deadline,
                "no `{wanted}` within {within:?}; heard {seen:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Messages containing `wanted` heard over the next `span`.
    fn count_during(&mut self, wanted: &str, span: Duration) -> usize {
        let start = self.seen().len();
        std::thread::sleep(span);
        self.seen()[start..]
            .iter()
            .filter(|m| m.contains(wanted))
            .count()
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_waits_for_valkey_then_notifies_ready_pings_and_stopping() {
    // Valkey's port is handed out before anything listens on it.
    let valkey_port = free_port();
    let mut notify = NotifySocket::bind();
    let listen = format!("127.0.0.1:{}", free_port());
    let deployment = SharedDeployment::new()
        .await
        .with(
            "STREAMSTOCK_VALKEY_URL",
            &format!("redis://127.0.0.1:{valkey_port}"),
        )
        .with("NOTIFY_SOCKET", notify.path.to_str().unwrap())
        .with("WATCHDOG_USEC", "200000");
    let gateway = Role::start("serve", &["serve", "--listen", &listen], &deployment.env);

    // It says what it waits for, and is not ready.
    let waiting = notify.wait_for("STATUS=waiting for Valkey", Duration::from_secs(20));
    assert!(
        !notify.seen()[..=waiting]
            .iter()
            .any(|m| m.contains("READY=1")),
        "READY=1 before Valkey answered: {:?}",
        notify.seen()
    );
    std::thread::sleep(Duration::from_millis(600));
    assert!(
        notify.count_during("READY=1", Duration::from_millis(100)) == 0,
        "READY=1 before Valkey answered: {:?}",
        notify.seen()
    );

    // Valkey comes up; the gateway goes on by itself, then says READY=1.
    let _valkey = OwnValkey::start_on(valkey_port);
    notify.wait_for("READY=1", Duration::from_secs(30));
    // Ready means serving: /ready answers at once.
    let ready = reqwest::Client::new()
        .get(format!("http://{listen}/ready"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .expect("the gateway answers once it said READY=1");
    assert_eq!(ready.status(), 200);

    // WATCHDOG_USEC 200 ms: a ping every 100 ms.
    let pings = notify.count_during("WATCHDOG=1", Duration::from_millis(1000));
    assert!(
        pings >= 4,
        "{pings} watchdog pings in 1 s: {:?}",
        notify.seen()
    );

    assert!(gateway.terminate().success());
    notify.wait_for("STOPPING=1", Duration::from_secs(5));
}

#[test]
fn a_role_gives_up_after_the_startup_timeout_naming_what_it_waited_for() {
    let dir = tempfile::tempdir().unwrap();
    let closed = free_port();
    let data_dir = dir.path().to_str().unwrap();

    // Valkey that never comes: the worker waits 2 s, retrying, then fails.
    let valkey_url = format!("redis://127.0.0.1:{closed}");
    let (code, stderr, took) = run_to_end(
        &[
            "worker",
            "--worker-listen",
            "127.0.0.1:0",
            "--startup-timeout",
            "2s",
        ],
        &[
            ("STREAMSTOCK_VALKEY_URL", valkey_url.as_str()),
            ("STREAMSTOCK_DATA_DIR", data_dir),
        ],
    );
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        (1.5..20.0).contains(&took),
        "gave up after {took} s: {stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "Valkey at redis://127.0.0.1:{closed} did not answer within 2s"
        )),
        "{stderr}"
    );
    assert!(stderr.contains("waiting for Valkey"), "{stderr}");

    // A database that never comes: named with its password masked.
    let database_url = format!("postgres://app:secret@127.0.0.1:{closed}/shop");
    let (code, stderr, _) = run_to_end(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--startup-timeout",
            "2s",
        ],
        &[
            ("DATABASE_URL", database_url.as_str()),
            ("STREAMSTOCK_VALKEY_URL", valkey_url.as_str()),
            ("STREAMSTOCK_DATA_DIR", data_dir),
        ],
    );
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("the database at postgres://"), "{stderr}");
    assert!(stderr.contains("did not answer within 2s"), "{stderr}");
    assert!(!stderr.contains("secret"), "the password leaked: {stderr}");

    // What waiting cannot mend fails at once: a malformed URL.
    let (code, stderr, took) = run_to_end(
        &["worker", "--worker-listen", "127.0.0.1:0"],
        &[
            ("STREAMSTOCK_VALKEY_URL", "redis://127.0.0.1:notaport"),
            ("STREAMSTOCK_DATA_DIR", data_dir),
        ],
    );
    assert_eq!(code, Some(1), "{stderr}");
    assert!(took < 10.0, "waited {took} s on a malformed URL: {stderr}");
    assert!(stderr.contains("invalid --valkey-url"), "{stderr}");
}

#[test]
fn json_logs_are_one_object_per_line_with_time_level_and_role() {
    let dir = tempfile::tempdir().unwrap();
    let valkey_url = format!("redis://127.0.0.1:{}", free_port());
    let out = Command::new(BIN)
        .args([
            "worker",
            "--worker-listen",
            "127.0.0.1:0",
            "--startup-timeout",
            "1s",
        ])
        .env("STREAMSTOCK_VALKEY_URL", &valkey_url)
        .env("STREAMSTOCK_DATA_DIR", dir.path())
        .env("LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(lines.len() >= 2, "{stderr}");
    for line in &lines {
        assert_eq!(line["role"], "worker", "{line}");
        assert!(
            line["timestamp"].is_string() && line["level"].is_string(),
            "{line}"
        );
    }
    assert!(
        lines.iter().any(|l| l["level"] == "WARN"
            && l["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("waiting for Valkey"))),
        "{stderr}"
    );
}

/// A worker logging JSON handles an event that fails (a receipt of -3
/// units): its "event failed" line names the event through its span.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_the_event_span_of_the_event_being_handled() {
    use streamstock::domain::events::StockReceived;
    use streamstock::domain::DomainEvent;
    use streamstock::stream::EventLog;
    let deployment = SharedDeployment::new().await;
    let env = &deployment.env;
    let var = |name: &str| env.iter().find(|(k, _)| k == name).unwrap().1.clone();
    let log = streamstock::stream::valkey::ValkeyLog::connect(
        &var("STREAMSTOCK_VALKEY_URL"),
        &var("STREAMSTOCK_VALKEY_NAMESPACE"),
        var("STREAMSTOCK_PARTITIONS").parse().unwrap(),
        streamstock::stream::Durability::Strict,
    )
    .await
    .unwrap();
    let product = uuid::Uuid::new_v4();
    let failing = DomainEvent::StockReceived(StockReceived {
        location_id: None,
        product_id: product.into(),
        quantity: -3,
        purchase_order_id: None,
    })
    .into_envelope(chrono::Utc::now());
    let receipt = log.append(&failing).await.unwrap();

    let stderr_path = tempfile::NamedTempFile::new().unwrap().into_temp_path();
    let mut worker = Command::new(BIN)
        .args(["worker", "--worker-listen", "127.0.0.1:0"])
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("LOG_FORMAT", "json")
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let failed_line = loop {
        let text = std::fs::read_to_string(&stderr_path).unwrap();
        let found = text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|l| l["fields"]["message"] == "event failed");
        if let Some(line) = found {
            break line;
        }
        assert!(
            Instant::now() < deadline,
            "no \"event failed\" line: {text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    worker.kill().unwrap();
    worker.wait().unwrap();

    assert_eq!(failed_line["role"], "worker", "{failed_line}");
    let spans = failed_line["spans"]
        .as_array()
        .unwrap_or_else(|| panic!("no span list: {failed_line}"));
    let event = spans
        .iter()
        .find(|s| s["name"] == "event")
        .unwrap_or_else(|| panic!("no event span: {failed_line}"));
    assert_eq!(event["partition"], receipt.partition.0, "{failed_line}");
    assert_eq!(event["entry"], receipt.id.to_string(), "{failed_line}");
    assert_eq!(
        event["event_id"],
        failing.event_id.to_string(),
        "{failed_line}"
    );
    assert_eq!(event["event_type"], "stock.received", "{failed_line}");
    assert_eq!(event["key"], product.to_string(), "{failed_line}");
}

/// Every metric the alert rules use is one the roles declare (histogram
/// series by their `_bucket`), and every rule has an expression, a
/// duration and a summary.
#[test]
fn prometheus_alert_rules_name_only_metrics_the_roles_export() {
    let rules = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/prometheus/streamstock-alerts.yml"),
    )
    .unwrap();
    let declared = concat!(
        include_str!("../src/telemetry/metrics.rs"),
        include_str!("../src/telemetry/webhook_series.rs")
    );
    let mut named = std::collections::BTreeSet::new();
    for (at, _) in rules.match_indices("streamstock_") {
        let name: String = rules[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        named.insert(name);
    }
    assert!(named.len() >= 6, "{named:?}");
    for name in &named {
        let base = name.strip_suffix("_bucket").unwrap_or(name);
        assert!(
            declared.contains(&format!("\"{base}\"")),
            "the alert rules use {name}, which no role exports"
        );
    }
    let alerts = rules.matches("- alert:").count();
    assert!(alerts >= 6, "{alerts} alerts");
    for field in ["expr:", "for:", "summary:"] {
        assert_eq!(
            rules.matches(field).count(),
            alerts,
            "every alert has {field}"
        );
    }
}

#[test]
fn admin_commands_read_the_config_file_and_fail_at_once_on_an_unreachable_backend() {
    let dir = tempfile::tempdir().unwrap();
    let closed = free_port();
    let config = dir.path().join("streamstock.toml");
    std::fs::write(
        &config,
        format!(
            "valkey-url = \"redis://127.0.0.1:{closed}\"\n\
             database-url = \"postgres://ops:secret@127.0.0.1:{closed}/shop\"\n\
             data-dir = \"{}\"\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    for (command, names) in [
        (vec!["status"], "Valkey"),
        (vec!["dlq", "list"], "Valkey"),
        (vec!["rebuild"], "Valkey"),
        (vec!["migrate"], "database"),
    ] {
        let mut args = vec!["--config", config];
        args.extend(command.iter().copied());
        let (code, stderr, took) = run_to_end(&args, &[] as &[(&str, &str)]);
        assert_eq!(code, Some(1), "{command:?}: {stderr}");
        assert!(took < 10.0, "{command:?} waited {took} s: {stderr}");
        assert!(
            stderr.contains("cannot ") && stderr.contains(names),
            "{command:?}: {stderr}"
        );
        assert!(
            !stderr.contains("secret"),
            "{command:?} leaked the password: {stderr}"
        );
    }
}
