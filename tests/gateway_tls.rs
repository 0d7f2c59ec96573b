//! The gateway's own TLS (`--tls-cert`, `--tls-key`): the right CA works
//! and a wrong one fails; HTTP/2 is offered by ALPN beside HTTP/1.1; plain
//! HTTP to the port gets an answer saying so, not a hang; a certificate
//! replaced under load (SIGHUP, or its files changing) drops no request;
//! the simulator reaches an https:// gateway with `--ca-file`.

use crate::common;

use common::pki::Pki;
use common::process::{embedded_all, free_port, run_to_end, Role};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `streamstock all` on embedded backends in `dir`, serving HTTPS with the
/// certificate and key at `cert` and `key`; gives the role and its port.
fn https_role(dir: &Path, cert: &Path, key: &Path) -> (Role, u16) {
    let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let tls = ["--tls-cert", cert, "--tls-key", key];
    let (role, listen) = embedded_all(&dir.join("data"), &tls, None);
    (role, listen.port())
}

/// A client that trusts the CAs of `pkis` (and no system CA matters here).
fn client_trusting(pkis: &[&Pki], fresh_connections: bool) -> reqwest::Client {
    let mut builder = reqwest::Client::builder().timeout(Duration::from_secs(5));
    for pki in pkis {
        let pem = std::fs::read(pki.file("ca.pem")).unwrap();
        builder = builder.add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap());
    }
    if fresh_connections {
        builder = builder.pool_max_idle_per_host(0);
    }
    builder.build().unwrap()
}

async fn wait_served(client: &reqwest::Client, url: &str) {
    for _ in 0..200 {
        if client
            .get(url)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{url} was not served over TLS");
}

/// The protocol a TLS client offering `alpn` agrees on with the gateway,
/// and, for h2, the first frame the server sends after the preface.
async fn negotiate(pki: &Pki, port: u16, alpn: &[u8]) -> (Vec<u8>, Option<u8>) {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(pki.file("ca.pem")).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    let agreed = tls.get_ref().1.alpn_protocol().unwrap_or_default().to_vec();
    if agreed != b"h2" {
        return (agreed, None);
    }
    // The HTTP/2 preface and an empty SETTINGS frame; the server answers
    // with its own SETTINGS (frame type 4).
    tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .unwrap();
    let mut header = [0u8; 9];
    tls.read_exact(&mut header).await.unwrap();
    (agreed, Some(header[3]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_trusts_the_right_ca_refuses_a_wrong_one_and_tells_plain_http() {
    let (ours, other) = (Pki::new("gateway"), Pki::new("other"));
    let dir = tempfile::tempdir().unwrap();
    let (role, port) = https_role(
        dir.path(),
        &ours.file("server.pem"),
        &ours.file("server.key"),
    );
    let url = format!("https://127.0.0.1:{port}/health");
    wait_served(&client_trusting(&[&ours], false), &url).await;

    let wrong = client_trusting(&[&other], false).get(&url).send().await;
    assert!(wrong.is_err(), "a client trusting another CA got {wrong:?}");

    // HTTP/2 by ALPN, HTTP/1.1 beside it.
    assert_eq!(
        negotiate(&ours, port, b"h2").await,
        (b"h2".to_vec(), Some(4))
    );
    assert_eq!(negotiate(&ours, port, b"http/1.1").await.0, b"http/1.1");

    // Plain HTTP to the TLS port: an answer at once, not a hang.
    let started = Instant::now();
    let plain = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
        .get(format!("http://127.0.0.1:{port}/health"))
        .send()
        .await
        .expect("plain HTTP gets an answer");
    assert_eq!(plain.status(), 400);
    assert!(plain.text().await.unwrap().contains("https://"));
    assert!(started.elapsed() < Duration::from_secs(2));

    // The simulator reaches it with --ca-file, and cannot without.
    let target = format!("https://localhost:{port}");
    let ca = ours.ca();
    let run = |with_ca: bool| {
        let mut args = vec![
            "--startup-timeout",
            "3s",
            "simulate",
            "--target",
            &target,
            "--profile",
            "steady",
            "--rate",
            "50",
            "--duration",
            "2s",
        ];
        if with_ca {
            args.extend(["--ca-file", ca.as_str()]);
        }
        run_to_end(&args, &[] as &[(&str, &str)])
    };
    let (code, log, _) = run(true);
    assert_eq!(code, Some(0), "{log}");
    let (code, log, _) = run(false);
    assert_ne!(
        code,
        Some(0),
        "without the CA the simulator reached the gateway: {log}"
    );
    assert!(role.terminate().success());
}

/// Requests in a loop, on kept and on fresh connections, until `stop`;
/// gives (answered, failed).
async fn load(url: String, client: reqwest::Client, stop: Instant) -> (u64, u64) {
    let (mut answered, mut failed) = (0, 0);
    while Instant::now() < stop {
        match client.get(&url).send().await {
            Ok(r) if r.status().is_success() => answered += 1,
            other => {
                eprintln!("a request failed during the reload: {other:?}");
                failed += 1
            }
        }
    }
    (answered, failed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_replaced_under_load_drops_no_request() {
    let (first, second) = (Pki::new("first"), Pki::new("second"));
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (
        dir.path().join("gateway.pem"),
        dir.path().join("gateway.key"),
    );
    let install = |pki: &Pki| {
        // Written beside and renamed into place, as a certificate manager
        // does, so no reader sees half a file.
        for (from, to) in [("server.pem", &cert), ("server.key", &key)] {
            let staged = to.with_extension("new");
            std::fs::copy(pki.file(from), &staged).unwrap();
            std::fs::rename(&staged, to).unwrap();
        }
    };
    install(&first);
    let (role, port) = https_role(dir.path(), &cert, &key);
    let url = format!("https://127.0.0.1:{port}/api/stats");
    let both = [&first, &second];
    wait_served(&client_trusting(&both, false), &url).await;

    let stop = Instant::now() + Duration::from_secs(5);
    let loads: Vec<_> = [false, false, true, true]
        .into_iter()
        .map(|fresh| tokio::spawn(load(url.clone(), client_trusting(&both, fresh), stop)))
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    install(&second);
    role.signal("HUP");
    let (mut answered, mut failed) = (0, 0);
    for load in loads {
        let (a, f) = load.await.unwrap();
        answered += a;
        failed += f;
    }
    eprintln!("{answered} requests answered across the reload, {failed} failed");
    assert_eq!(failed, 0);
    assert!(
        answered > 100,
        "only {answered} requests: too little load to mean anything"
    );
    // New connections get the new certificate: only its CA is needed now.
    let only_second = client_trusting(&[&second], true);
    assert!(only_second
        .get(&url)
        .send()
        .await
        .unwrap()
        .status()
        .is_success());
    assert!(client_trusting(&[&first], true)
        .get(&url)
        .send()
        .await
        .is_err());

    // The files changing is enough, without a signal.
    install(&first);
    let only_first = client_trusting(&[&first], true);
    let seen = Arc::new(AtomicU64::new(0));
    for _ in 0..100 {
        if only_first.get(&url).send().await.is_ok() {
            seen.fetch_add(1, Ordering::Relaxed);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        seen.load(Ordering::Relaxed),
        1,
        "the changed files were not picked up in 10 s"
    );
    assert!(role.terminate().success());
}

#[test]
fn a_missing_or_mismatched_key_is_a_clear_start_up_error() {
    let (ours, other) = (Pki::new("ours"), Pki::new("other"));
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let start = |cert: &Path, key: &Path| {
        run_to_end(
            &[
                "all",
                "--profile",
                "none",
                "--listen",
                &format!("127.0.0.1:{}", free_port()),
                "--data-dir",
                data.to_str().unwrap(),
                "--tls-cert",
                cert.to_str().unwrap(),
                "--tls-key",
                key.to_str().unwrap(),
            ],
            &[] as &[(&str, &str)],
        )
    };
    let (code, log, seconds) = start(&ours.file("server.pem"), &other.file("server.key"));
    assert_ne!(code, Some(0));
    assert!(log.contains("does not go with --tls-cert"), "{log}");
    assert!(seconds < 10.0);
    let (code, log, _) = start(&ours.file("server.pem"), &dir.path().join("missing.key"));
    assert_ne!(code, Some(0));
    assert!(log.contains("cannot read --tls-key"), "{log}");
}

/// A worker's probes serve TLS with the same flags, and need a `read`
/// token on /metrics as the gateway's do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_serves_its_probes_over_tls() {
    let pki = Pki::new("worker");
    let deployment = common::process::SharedDeployment::new().await;
    let port = free_port();
    let worker = Role::start(
        "worker",
        &[
            "worker",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--tls-cert",
            pki.file("server.pem").to_str().unwrap(),
            "--tls-key",
            pki.file("server.key").to_str().unwrap(),
            "--api-token",
            "worker-metrics-token",
        ],
        &deployment.env,
    );
    let client = client_trusting(&[&pki], false);
    wait_served(&client, &format!("https://127.0.0.1:{port}/health")).await;
    let metrics = format!("https://127.0.0.1:{port}/metrics");
    assert_eq!(client.get(&metrics).send().await.unwrap().status(), 401);
    // The probes answer as soon as the listener is up; the worker's own
    // gauge appears once its task has started: wait for it (bounded).
    let started = std::time::Instant::now();
    loop {
        let answer = client
            .get(&metrics)
            .bearer_auth("worker-metrics-token")
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200);
        if answer
            .text()
            .await
            .unwrap()
            .contains("streamstock_worker_up")
        {
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "the worker's metrics never showed streamstock_worker_up"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(worker.terminate().success());
}
