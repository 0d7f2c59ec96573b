//! One way to serve HTTP, for every listener (the gateway, the worker's
//! probes): an accept loop on hyper-util that `axum::serve` does not give.
//! It bounds what held connections can take:
//! - a request head must arrive within `--header-read-timeout` (slowloris);
//! - a connection idle for `--idle-timeout` is closed;
//! - at most `--max-connections` are open, and `--max-connections-per-address`
//!   from one address; beyond, a new connection is refused at once;
//! - the open-file limit is raised to its hard limit at start-up, and the
//!   connection cap is chosen below it;
//! - accept errors (out of files) pause the loop briefly, never spin, and
//!   are logged at most every few seconds.
//!
//! With a certificate (see `tls`), connections speak TLS: a handshake must
//! finish within `--tls-handshake-timeout`, and a client that sends plain
//! HTTP gets a 400 saying so rather than silence.
//!
//! Shutdown stops accepting, drains every connection (requests in flight
//! finish) and returns when they are all closed.

mod admission;
mod connection;
pub mod files;
mod metrics;
pub mod tls;

pub use connection::Timeouts;

use admission::Admission;
use connection::Connection;
use hyper_util::rt::TokioExecutor;
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// What a listener serves: an axum router, or any service like one.
pub trait HttpService:
    tower::Service<
        axum::extract::Request,
        Response = axum::response::Response,
        Error = Infallible,
        Future: Send + 'static,
    > + Clone
    + Send
    + 'static
{
}

impl<S> HttpService for S where
    S: tower::Service<
            axum::extract::Request,
            Response = axum::response::Response,
            Error = Infallible,
            Future: Send + 'static,
        > + Clone
        + Send
        + 'static
{
}

/// How a listener treats its connections; `None` switches a bound off.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// The listener's name in logs and metrics: `gateway` or `worker`.
    pub listener: &'static str,
    pub timeouts: Timeouts,
    pub max_connections: Option<usize>,
    pub max_per_address: Option<usize>,
    /// TLS, when the listener has a certificate.
    pub tls: Option<TlsOptions>,
}

#[derive(Debug, Clone)]
pub struct TlsOptions {
    pub certificate: Arc<tls::Certificate>,
    /// A handshake (from accept) must finish within it; `None`: no limit.
    pub handshake_timeout: Option<Duration>,
}

/// How long the accept loop pauses after an error such as running out of
/// files: long enough not to spin, short enough to take the next
/// connection soon after one closes.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);
/// Accept errors are logged at most this often (with how many there were).
const ACCEPT_ERROR_LOG_EVERY: Duration = Duration::from_secs(10);

/// Serves `service` on `listener` until `shutdown`, then drains.
pub async fn serve<S>(
    listener: TcpListener,
    service: S,
    options: ServerOptions,
    shutdown: CancellationToken,
) -> std::io::Result<()>
where
    S: HttpService,
{
    let admission = Admission::new(
        options.listener,
        options.max_connections,
        options.max_per_address,
    );
    let builder = Arc::new(auto::Builder::new(TokioExecutor::new()));
    let acceptor = options.tls.as_ref().map(|tls| {
        tls.certificate.watch(options.listener, shutdown.clone());
        (tls.certificate.acceptor(), tls.handshake_timeout)
    });
    let connections = TaskTracker::new();
    let mut accept_errors = AcceptErrors::default();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.cancelled() => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                metrics::accept_error(options.listener);
                accept_errors.note(options.listener, &error);
                if !is_per_connection(&error) {
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                }
                continue;
            }
        };
        let slot = match admission.admit(peer.ip()) {
            Ok(slot) => slot,
            Err(refusal) => {
                // Closing at once frees the file for someone else.
                drop(stream);
                metrics::closed(options.listener, refusal);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let connection = Connection {
            peer,
            slot,
            service: service.clone(),
            builder: builder.clone(),
            timeouts: options.timeouts,
            shutdown: shutdown.clone(),
            listener: options.listener,
            http2: false,
        };
        match &acceptor {
            None => connections.spawn(connection.serve(stream)),
            Some((acceptor, timeout)) => {
                connections.spawn(serve_tls(connection, stream, acceptor.clone(), *timeout))
            }
        };
    }
    // Stop accepting at once; the connections drain on the same token.
    drop(listener);
    connections.close();
    connections.wait().await;
    Ok(())
}

/// Completes the TLS handshake within `timeout`, then serves; a client
/// that speaks plain HTTP is told to use https.
async fn serve_tls<S>(
    mut connection: Connection<S>,
    stream: tokio::net::TcpStream,
    acceptor: tokio_rustls::TlsAcceptor,
    timeout: Option<Duration>,
) where
    S: HttpService,
{
    use tokio::io::AsyncWriteExt;
    let handshake = async {
        let mut first = [0u8; 1];
        if stream.peek(&mut first).await? == 0 {
            return Ok(None);
        }
        if !tls::looks_like_tls(first[0]) {
            let mut stream = stream;
            stream.write_all(tls::PLAIN_HTTP_ANSWER).await?;
            stream.shutdown().await?;
            return Ok(None);
        }
        acceptor.accept(stream).await.map(Some)
    };
    let finished = match timeout {
        Some(limit) => tokio::time::timeout(limit, handshake).await.ok(),
        None => Some(handshake.await),
    };
    match finished {
        Some(Ok(Some(stream))) => {
            connection.http2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
            connection.serve(stream).await;
        }
        Some(Err(error)) => {
            tracing::debug!(peer = %connection.peer, %error, "TLS handshake failed");
            metrics::closed(connection.listener, metrics::CloseReason::TlsHandshake);
        }
        // Timed out, or plain HTTP, or closed before a byte.
        _ => metrics::closed(connection.listener, metrics::CloseReason::TlsHandshake),
    }
}

/// Errors that concern one connection only (it was reset before it was
/// accepted): the next accept can follow at once.
fn is_per_connection(error: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        error.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    )
}

/// Logs accept errors at most every `ACCEPT_ERROR_LOG_EVERY`.
#[derive(Default)]
struct AcceptErrors {
    last_logged: Option<Instant>,
    unlogged: u64,
}

impl AcceptErrors {
    fn note(&mut self, listener: &str, error: &std::io::Error) {
        self.unlogged += 1;
        if self
            .last_logged
            .is_some_and(|at| at.elapsed() < ACCEPT_ERROR_LOG_EVERY)
        {
            return;
        }
        tracing::warn!(
            listener,
            %error,
            errors = self.unlogged,
            "cannot accept connections (logged at most every {} s)",
            ACCEPT_ERROR_LOG_EVERY.as_secs()
        );
        self.last_logged = Some(Instant::now());
        self.unlogged = 0;
    }
}
