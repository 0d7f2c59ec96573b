//! A real HTTP receiver for webhooks, started by a test on loopback: it
//! records every request (headers and body), answers 200, or what the
//! test commands (500 for a while, slowly, or not at all: `stop` closes
//! the listener and `start` opens it again on the same port).

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use streamstock::domain::webhooks;

/// One request received.
#[derive(Debug, Clone)]
pub struct Received {
    pub subscription: String,
    pub seq: i64,
    pub event_id: String,
    pub attempt: i64,
    pub signature: String,
    pub body: Bytes,
    /// The status it was answered.
    pub answered: u16,
}

impl Received {
    /// Whether its signature is valid under `secret`, and the headers say
    /// what the body does.
    pub fn verifies(&self, secret: &str) -> bool {
        let body: serde_json::Value = serde_json::from_slice(&self.body).unwrap_or_default();
        webhooks::verify(secret, &self.signature, &self.body)
            && body["seq"].as_i64() == Some(self.seq)
            && body["event_id"].as_str() == Some(self.event_id.as_str())
    }
}

#[derive(Default)]
struct Shared {
    received: Mutex<Vec<Received>>,
    /// The status to answer (0: 200).
    status: AtomicU16,
    /// How long to take before answering.
    delay_ms: AtomicU64,
    /// Where a 3xx answer points (`Location`).
    redirect_to: Mutex<Option<String>>,
    /// Whether the answer's body never ends.
    endless_body: std::sync::atomic::AtomicBool,
}

pub struct Receiver {
    ip: std::net::IpAddr,
    pub port: u16,
    shared: Arc<Shared>,
    server: Option<tokio::task::JoinHandle<()>>,
}

async fn receive(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let answered = match shared.status.load(Ordering::SeqCst) {
        0 => 200,
        status => status,
    };
    shared.received.lock().unwrap().push(Received {
        subscription: header(webhooks::SUBSCRIPTION_HEADER),
        seq: header(webhooks::SEQ_HEADER).parse().unwrap_or(-1),
        event_id: header(webhooks::EVENT_ID_HEADER),
        attempt: header(webhooks::ATTEMPT_HEADER).parse().unwrap_or(-1),
        signature: header(webhooks::SIGNATURE_HEADER),
        body,
        answered,
    });
    let delay = shared.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let mut response =
        axum::response::Response::new(if shared.endless_body.load(Ordering::SeqCst) {
            // 64 KiB chunks for as long as anyone reads.
            let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
            axum::body::Body::from_stream(futures::stream::repeat_with(move || {
                Ok::<_, std::io::Error>(chunk.clone())
            }))
        } else {
            axum::body::Body::empty()
        });
    *response.status_mut() = StatusCode::from_u16(answered).unwrap();
    if let Some(to) = shared.redirect_to.lock().unwrap().as_deref() {
        response
            .headers_mut()
            .insert(axum::http::header::LOCATION, to.parse().unwrap());
    }
    response
}

impl Receiver {
    pub async fn start() -> Receiver {
        Receiver::start_on("127.0.0.1", 0).await
    }

    /// Listens on `ip` (a loopback address: 127.0.0.0/8 is all local) and
    /// `port` (0: any free one); `restart` comes back to the same.
    pub async fn start_on(ip: &str, port: u16) -> Receiver {
        let listener = tokio::net::TcpListener::bind((ip, port)).await.unwrap();
        let address = listener.local_addr().unwrap();
        let mut receiver = Receiver {
            ip: address.ip(),
            port: address.port(),
            shared: Default::default(),
            server: None,
        };
        receiver.serve(listener);
        receiver
    }

    /// Accepts connections until `stop`. Its own accept loop, not
    /// `axum::serve`: that one spawns each connection as a task of its own,
    /// which would go on answering after the listener is gone; here the
    /// connections are the server task's, and end with it.
    fn serve(&mut self, listener: tokio::net::TcpListener) {
        use hyper_util::rt::{TokioExecutor, TokioIo};
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(receive))
            .with_state(self.shared.clone());
        self.server = Some(tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let service = hyper_util::service::TowerToHyperService::new(app.clone());
                connections.spawn(async move {
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
                while connections.try_join_next().is_some() {}
            }
        }));
    }

    pub fn url(&self) -> String {
        format!("http://{}:{}/hook", self.ip, self.port)
    }

    /// Closes the listener and every connection: deliveries fail to connect.
    pub fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }

    /// Listens again on the same port.
    pub async fn restart(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match tokio::net::TcpListener::bind((self.ip, self.port)).await {
                Ok(listener) => return self.serve(listener),
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("cannot listen on {} again: {e}", self.port),
            }
        }
    }

    /// Answers `status` from now on (200 with 0).
    pub fn answer(&self, status: u16) {
        self.shared.status.store(status, Ordering::SeqCst);
    }

    /// Answers `status` (a 3xx) pointing at `to`.
    pub fn redirect(&self, status: u16, to: &str) {
        *self.shared.redirect_to.lock().unwrap() = Some(to.to_string());
        self.answer(status);
    }

    /// Answers with a body that never ends (and `answer`'s status).
    pub fn endless_body(&self, on: bool) {
        self.shared.endless_body.store(on, Ordering::SeqCst);
    }

    pub fn slow_down(&self, by: Duration) {
        self.shared
            .delay_ms
            .store(by.as_millis() as u64, Ordering::SeqCst);
    }

    /// Every request received for `subscription`, in arrival order.
    pub fn received(&self, subscription: &str) -> Vec<Received> {
        self.shared
            .received
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.subscription == subscription)
            .cloned()
            .collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What a subscription's deliveries looked like against the events it
/// should have had (`expected`: seqs in order).
#[derive(Debug, Default)]
pub struct DeliveryCheck {
    /// Expected events never answered 200.
    pub missing: Vec<i64>,
    /// Events delivered (answered 200) more than once.
    pub duplicates: usize,
    /// 200-answered deliveries that came before an earlier seq's first one.
    pub out_of_order: usize,
    pub bad_signatures: usize,
    /// Requests with an attempt number above 1.
    pub retries: usize,
}

/// Checks the requests a subscription received against the seqs it should
/// have had; only those answered 200 count as delivered.
pub fn check(received: &[Received], secret: &str, expected: &[i64]) -> DeliveryCheck {
    let mut check = DeliveryCheck::default();
    let mut first_delivery: std::collections::HashMap<i64, usize> = Default::default();
    let mut last_first = i64::MIN;
    for r in received {
        if !r.verifies(secret) {
            check.bad_signatures += 1;
        }
        if r.attempt > 1 {
            check.retries += 1;
        }
        if r.answered != 200 {
            continue;
        }
        let seen = first_delivery.entry(r.seq).or_default();
        *seen += 1;
        if *seen > 1 {
            check.duplicates += 1;
        } else {
            if r.seq < last_first {
                check.out_of_order += 1;
            }
            last_first = last_first.max(r.seq);
        }
    }
    check.missing = expected
        .iter()
        .copied()
        .filter(|seq| !first_delivery.contains_key(seq))
        .collect();
    check
}
