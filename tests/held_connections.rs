//! Connections that hold on cannot lock customers out: slow headers
//! (slowloris) and stalled TLS handshakes from one address against a role
//! whose open-file limit is 1,024, and idle keep-alive connections. Each with a negative control:
//! the same siege with the timeouts and caps switched off locks the
//! customer out, so the test can see what it looks for.
//!
//! The attacker and the customer are different loopback addresses
//! (127.0.0.2 and 127.0.0.3), as they would be different hosts.

use crate::common;

use common::pki::Pki;
use common::process::{embedded_all, Role};
use common::Api;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use streamstock::domain::status::OrderStatus;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use uuid::Uuid;

const ATTACKER: [u8; 4] = [127, 0, 0, 2];
const CUSTOMER: [u8; 4] = [127, 0, 0, 3];

/// A connection from `from` to `to`, or None when it is not made in 3 s.
async fn connect_from(from: [u8; 4], to: SocketAddr) -> Option<TcpStream> {
    let socket = TcpSocket::new_v4().ok()?;
    socket.bind(SocketAddr::new(IpAddr::from(from), 0)).ok()?;
    tokio::time::timeout(Duration::from_secs(3), socket.connect(to))
        .await
        .ok()?
        .ok()
}

/// How an attacker holds its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Attack {
    /// A request line, then a header every 2 s, never the blank line.
    SlowHeaders,
    /// The header of a TLS handshake record, then a byte of it every 2 s,
    /// never the whole record.
    StalledHandshakes,
}

/// One attacker: opens a connection and holds it as `attack` says; when
/// the server closes it, waits a second and opens another, until `until`.
async fn hold_slowly(attack: Attack, to: SocketAddr, until: Instant, opened: Arc<AtomicU64>) {
    let (first, then): (&[u8], &[u8]) = match attack {
        Attack::SlowHeaders => (
            b"GET /health HTTP/1.1\r\nHost: streamstock\r\n",
            b"X-Slow: still-here\r\n",
        ),
        // A handshake record (22), TLS 1.0 framing, 512 bytes to come.
        Attack::StalledHandshakes => (&[22, 3, 1, 2, 0], &[1]),
    };
    while Instant::now() < until {
        let Some(mut stream) = connect_from(ATTACKER, to).await else {
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        opened.fetch_add(1, Ordering::Relaxed);
        let mut line = first;
        let mut buffer = [0u8; 512];
        loop {
            if stream.write_all(line).await.is_err() {
                break;
            }
            line = then;
            tokio::select! {
                // The server closed it (or answered): reopen after a pause.
                _ = stream.read(&mut buffer) => break,
                _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            }
            if Instant::now() >= until {
                return;
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// What a customer saw during a siege.
#[derive(Debug)]
struct CustomerView {
    attempts: usize,
    answered_in_time: usize,
    longest_gap: Duration,
    accepted_orders: Vec<Uuid>,
}

impl CustomerView {
    fn success_share(&self) -> f64 {
        self.answered_in_time as f64 / self.attempts.max(1) as f64
    }
}

/// Every second, on a fresh connection from the customer's address: reads
/// /health and places an order, each answered within 2 s or failed.
async fn customer(base: &str, product: Uuid, until: Instant, pki: Option<&Pki>) -> CustomerView {
    let http = trusting(pki, reqwest::Client::builder())
        .local_address(IpAddr::from(CUSTOMER))
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let mut view = CustomerView {
        attempts: 0,
        answered_in_time: 0,
        longest_gap: Duration::ZERO,
        accepted_orders: Vec::new(),
    };
    let mut last_success = Instant::now();
    let mut answered = |view: &mut CustomerView| {
        view.answered_in_time += 1;
        view.longest_gap = view.longest_gap.max(last_success.elapsed());
        last_success = Instant::now();
    };
    let mut n = 0;
    while Instant::now() < until {
        let second = tokio::time::sleep(Duration::from_secs(1));
        view.attempts += 2;
        let health = http.get(format!("{base}/health")).send().await;
        if health.is_ok_and(|r| r.status().is_success()) {
            answered(&mut view);
        }
        n += 1;
        let order = http
            .post(format!("{base}/api/orders"))
            .json(&serde_json::json!({
                "customer_email": format!("customer{n}@example.com"),
                "items": [{ "product_id": product, "quantity": 1 }],
            }))
            .send()
            .await;
        if let Ok(order) = order.and_then(|r| r.error_for_status()) {
            if let Ok(queued) = order.json::<serde_json::Value>().await {
                answered(&mut view);
                let id = queued["order_id"].as_str().expect("an order id");
                view.accepted_orders.push(id.parse().unwrap());
            }
        }
        second.await;
    }
    view.longest_gap = view.longest_gap.max(last_success.elapsed());
    view
}

/// `builder` trusting the CA of `pki`, when the role serves TLS.
fn trusting(pki: Option<&Pki>, mut builder: reqwest::ClientBuilder) -> reqwest::ClientBuilder {
    if let Some(pki) = pki {
        let pem = std::fs::read(pki.file("ca.pem")).unwrap();
        builder = builder.add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap());
    }
    builder
}

/// A role with its open-file limit at 1,024 (soft and hard), besieged by
/// 1,100 connections held by `attack` from one address for `siege`, while
/// a customer on another address works. `flags` are the role's extra
/// flags; with `pki` it serves TLS with that CA's certificate.
async fn siege(attack: Attack, flags: &[&str], siege: Duration, pki: Option<&Pki>) -> CustomerView {
    // The attacker itself needs more than 1,024 files.
    streamstock::http_server::files::raise_open_file_limit();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = pki.map_or((String::new(), String::new()), |pki| {
        (
            pki.file("server.pem").display().to_string(),
            pki.file("server.key").display().to_string(),
        )
    });
    let mut args = vec!["--batch-wait", "20ms"];
    if pki.is_some() {
        args.extend(["--tls-cert", &cert, "--tls-key", &key]);
    }
    args.extend_from_slice(flags);
    let (role, listen) = embedded_all(dir.path(), &args, Some(1024));
    let base = format!(
        "{}://{listen}",
        if pki.is_some() { "https" } else { "http" }
    );
    let api = Api::with_client(
        &base,
        trusting(pki, reqwest::Client::builder()).build().unwrap(),
    );
    api.wait_healthy().await;
    let product = api.create_product("SIEGE-1", 2.5, 1_000_000).await;

    let until = Instant::now() + siege;
    let opened = Arc::new(AtomicU64::new(0));
    let attackers: Vec<_> = (0..1100)
        .map(|_| tokio::spawn(hold_slowly(attack, listen, until, opened.clone())))
        .collect();
    // Let the siege take hold before the customer comes.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let view = customer(&base, product, until, pki).await;
    for attacker in attackers {
        attacker.await.unwrap();
    }
    eprintln!(
        "{attack:?} with {flags:?}: {} connections opened; customer: {} of {} answered within 2 s ({:.0} %), longest gap {:?}, {} orders accepted",
        opened.load(Ordering::Relaxed),
        view.answered_in_time,
        view.attempts,
        view.success_share() * 100.0,
        view.longest_gap,
        view.accepted_orders.len()
    );

    // Every order the customer got accepted is decided once the siege is over.
    for id in &view.accepted_orders {
        let status = api.status_waiting(id, 20).await;
        assert!(
            matches!(status, Some(OrderStatus::Confirmed | OrderStatus::Rejected)),
            "order {id} accepted during the siege ended {status:?}"
        );
    }
    assert!(role.terminate().success());
    view
}

/// The flags that switch every timeout and cap off: the negative controls.
const UNBOUNDED: [&str; 10] = [
    "--header-read-timeout",
    "0s",
    "--idle-timeout",
    "0s",
    "--max-connections",
    "0",
    "--max-connections-per-address",
    "0",
    "--tls-handshake-timeout",
    "0s",
];

fn assert_served(view: &CustomerView) {
    assert!(
        view.success_share() >= 0.95,
        "only {:.0} % of the customer's requests were answered within 2 s",
        view.success_share() * 100.0
    );
    assert!(
        view.longest_gap <= Duration::from_secs(5),
        "the customer went {:?} without an answer",
        view.longest_gap
    );
    assert!(!view.accepted_orders.is_empty());
}

fn assert_locked_out(view: &CustomerView) {
    assert!(
        view.success_share() < 0.5,
        "the unprotected role still answered {:.0} % of the customer's requests: the siege is too weak to test anything",
        view.success_share() * 100.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_from_one_address_cannot_lock_a_customer_out() {
    assert_served(&siege(Attack::SlowHeaders, &[], Duration::from_secs(40), None).await);
}

/// The negative control: with the timeouts and caps switched off, the same
/// siege locks the customer out, so the test above can fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_timeouts_and_caps_the_same_siege_locks_the_customer_out() {
    let view = siege(
        Attack::SlowHeaders,
        &UNBOUNDED,
        Duration::from_secs(20),
        None,
    )
    .await;
    assert_locked_out(&view);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_tls_handshakes_cannot_lock_a_customer_out() {
    let pki = Pki::new("siege");
    let view = siege(
        Attack::StalledHandshakes,
        &[],
        Duration::from_secs(40),
        Some(&pki),
    )
    .await;
    assert_served(&view);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_handshake_timeout_and_caps_stalled_handshakes_lock_the_customer_out() {
    let pki = Pki::new("siege");
    let view = siege(
        Attack::StalledHandshakes,
        &UNBOUNDED,
        Duration::from_secs(20),
        Some(&pki),
    )
    .await;
    assert_locked_out(&view);
}

/// Opens `count` keep-alive connections from the attacker's address, each
/// making one request and then holding on in silence; gives each one's
/// close time, as seen by a task that reads it to its end.
async fn idle_keep_alive(to: SocketAddr, count: usize) -> Vec<tokio::task::JoinHandle<Instant>> {
    let mut held = Vec::new();
    for _ in 0..count {
        let mut stream = connect_from(ATTACKER, to).await.expect("connect");
        stream
            .write_all(b"GET /health HTTP/1.1\r\nHost: streamstock\r\n\r\n")
            .await
            .unwrap();
        let mut answer = [0u8; 1024];
        let read = stream.read(&mut answer).await.unwrap();
        assert!(answer[..read].starts_with(b"HTTP/1.1 200"));
        held.push(tokio::spawn(async move {
            let mut rest = [0u8; 1024];
            // Ok(0) or an error: the server closed the connection.
            while let Ok(n) = stream.read(&mut rest).await {
                if n == 0 {
                    break;
                }
            }
            Instant::now()
        }));
    }
    held
}

async fn idle_role(idle_timeout: &str) -> (Role, SocketAddr, tempfile::TempDir) {
    streamstock::http_server::files::raise_open_file_limit();
    let dir = tempfile::tempdir().unwrap();
    let flags = [
        "--idle-timeout",
        idle_timeout,
        "--max-connections-per-address",
        "0",
    ];
    let (role, listen) = embedded_all(dir.path(), &flags, None);
    Api::new(&format!("http://{listen}")).wait_healthy().await;
    (role, listen, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connections_are_closed_while_new_clients_are_served() {
    let (role, listen, _dir) = idle_role("4s").await;
    let base = format!("http://{listen}");
    let opened = Instant::now();
    let held = idle_keep_alive(listen, 900).await;
    let all_open = Instant::now();
    // New clients are served while the 900 are held and as they close.
    let http = reqwest::Client::builder()
        .local_address(IpAddr::from(CUSTOMER))
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    while all_open.elapsed() < Duration::from_secs(6) {
        let health = http.get(format!("{base}/health")).send().await.unwrap();
        assert!(health.status().is_success());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut latest = opened;
    for connection in held {
        let closed_at = tokio::time::timeout(Duration::from_secs(10), connection)
            .await
            .expect("an idle connection was still open 16 s after it was last used")
            .unwrap();
        latest = latest.max(closed_at);
    }
    eprintln!(
        "900 idle connections opened in {:?}, the last closed {:?} after they were all open",
        all_open - opened,
        latest.saturating_duration_since(all_open)
    );
    let metrics = Api::new(&base).metrics().await;
    let idle_closes = metrics
        .lines()
        .find(|l| {
            l.starts_with("streamstock_http_connections_closed_total")
                && l.contains("reason=\"idle_timeout\"")
        })
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(idle_closes >= 900.0, "{idle_closes} idle closes counted");
    assert!(role.terminate().success());
}

/// The negative control: with no idle timeout the same connections are
/// still open when the test above found them all closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_idle_timeout_idle_connections_stay_open() {
    let (role, listen, _dir) = idle_role("0s").await;
    let held = idle_keep_alive(listen, 50).await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let still_open = held.iter().filter(|c| !c.is_finished()).count();
    assert_eq!(still_open, 50, "connections closed with no idle timeout");
    assert!(role.terminate().success());
}
