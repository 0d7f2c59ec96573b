//! One connection's life: hyper serves it (HTTP/1.1 or HTTP/2, WebSocket
//! upgrades included) while a watcher closes it when its request head takes
//! too long to arrive or when it sits idle, and drains it on shutdown.
//!
//! hyper's own HTTP/1 header timer also runs while a keep-alive connection
//! waits for its next request, so it would close idle connections at the
//! header timeout; and HTTP/2 has none. So both timers are kept here, from
//! what the socket and the service see: a head is awaited from the first
//! byte a connection sends with no request in flight (or from accept, for
//! its first request) until hyper hands the request to the service.

use super::admission::Slot;
use super::metrics::{closed, CloseReason};
use super::HttpService;
use axum::body::Body;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// The per-connection timers; `None` switches one off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub header_read: Option<Duration>,
    pub idle: Option<Duration>,
}

/// What a connection's socket and service report, read by its watcher.
#[derive(Debug)]
struct Activity {
    started: Instant,
    /// Milliseconds since `started` of the last byte read or written, or
    /// of the last answer finished.
    last_io_ms: AtomicU64,
    /// 1 + milliseconds since `started` at which the awaited request head
    /// began; 0 while none is awaited.
    head_since: AtomicU64,
    requests_in_flight: AtomicUsize,
    /// HTTP/2 multiplexes requests on one connection: no head timer.
    http2: AtomicBool,
}

/// The start of the HTTP/2 connection preface (RFC 9113 §3.4).
const HTTP2_PREFACE: &[u8] = b"PRI * HTTP/2.0";

#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// Keep it; look again after this long (or when nothing can expire).
    Keep(Option<Duration>),
    HeaderTimeout,
    Idle,
}

impl Activity {
    fn new(http2: bool) -> Activity {
        Activity {
            started: Instant::now(),
            last_io_ms: AtomicU64::new(0),
            // The first request's head is awaited from accept.
            head_since: AtomicU64::new(if http2 { 0 } else { 1 }),
            requests_in_flight: AtomicUsize::new(0),
            http2: AtomicBool::new(http2),
        }
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn read(&self, bytes: &[u8]) {
        let now = self.now_ms();
        self.last_io_ms.store(now, Ordering::Relaxed);
        if bytes.starts_with(HTTP2_PREFACE) {
            self.http2.store(true, Ordering::Relaxed);
            self.head_since.store(0, Ordering::Relaxed);
            return;
        }
        if !self.http2.load(Ordering::Relaxed)
            && self.requests_in_flight.load(Ordering::Relaxed) == 0
            && self.head_since.load(Ordering::Relaxed) == 0
        {
            self.head_since.store(now + 1, Ordering::Relaxed);
        }
    }

    fn wrote(&self) {
        self.last_io_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    fn request_started(&self) {
        self.requests_in_flight.fetch_add(1, Ordering::Relaxed);
        self.head_since.store(0, Ordering::Relaxed);
    }

    fn request_finished(&self) {
        self.last_io_ms.store(self.now_ms(), Ordering::Relaxed);
        self.requests_in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    fn verdict(&self, timeouts: &Timeouts) -> Verdict {
        self.verdict_at(self.now_ms(), timeouts)
    }

    /// The verdict at `now` (milliseconds since the connection started).
    fn verdict_at(&self, now: u64, timeouts: &Timeouts) -> Verdict {
        let mut next: Option<u64> = None;
        let mut sooner = |deadline: u64| next = Some(next.map_or(deadline, |n| n.min(deadline)));
        if let Some(limit) = timeouts.header_read {
            let since = self.head_since.load(Ordering::Relaxed);
            if since > 0 {
                let deadline = since - 1 + limit.as_millis() as u64;
                if now >= deadline {
                    return Verdict::HeaderTimeout;
                }
                sooner(deadline);
            }
        }
        if let Some(limit) = timeouts.idle {
            let limit = limit.as_millis() as u64;
            if self.requests_in_flight.load(Ordering::Relaxed) == 0 {
                let deadline = self.last_io_ms.load(Ordering::Relaxed) + limit;
                if now >= deadline {
                    return Verdict::Idle;
                }
                sooner(deadline);
            } else {
                // A request's end wakes no one: look again a period later.
                sooner(now + limit);
            }
        }
        Verdict::Keep(next.map(|at| Duration::from_millis(at.saturating_sub(now).max(1))))
    }
}

/// The socket as hyper sees it: reports reads and writes to the watcher,
/// and holds the connection's admission slot, which so stays taken as long
/// as the socket lives, through a WebSocket upgrade too.
struct TrackedIo<I> {
    inner: I,
    activity: Arc<Activity>,
    _slot: Slot,
}

impl<I: AsyncRead + Unpin> AsyncRead for TrackedIo<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.read(&buf.filled()[before..]);
        }
        polled
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for TrackedIo<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.wrote();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.wrote();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Marks a request in flight from the service's call until its answer's
/// body is sent or dropped.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn new(activity: &Arc<Activity>) -> InFlight {
        activity.request_started();
        InFlight(activity.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.request_finished();
    }
}

/// What one connection is served with.
pub struct Connection<S> {
    pub peer: SocketAddr,
    pub slot: Slot,
    pub service: S,
    pub builder: Arc<auto::Builder<TokioExecutor>>,
    pub timeouts: Timeouts,
    pub shutdown: CancellationToken,
    pub listener: &'static str,
    /// HTTP/2 known from the start (TLS's ALPN said so).
    pub http2: bool,
}

impl<S> Connection<S>
where
    S: HttpService,
{
    /// Serves `io` until the client leaves, a timer closes it, or shutdown
    /// drains it.
    pub async fn serve<I>(self, io: I)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let activity = Arc::new(Activity::new(self.http2));
        let io = TrackedIo {
            inner: io,
            activity: activity.clone(),
            _slot: self.slot,
        };
        let (peer, service, seen) = (self.peer, self.service, activity.clone());
        let hyper_service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            let in_flight = InFlight::new(&seen);
            let mut request = request.map(Body::new);
            request
                .extensions_mut()
                .insert(axum::extract::ConnectInfo(peer));
            let answer = service.clone().oneshot(request);
            async move {
                let response = answer.await?;
                // The request stays in flight until its body is sent.
                Ok::<_, Infallible>(response.map(|body| {
                    Body::new(body.map_frame(move |frame| {
                        let _in_flight = &in_flight;
                        frame
                    }))
                }))
            }
        });
        let connection = self
            .builder
            .serve_connection_with_upgrades(TokioIo::new(io), hyper_service);
        tokio::pin!(connection);
        let mut draining = false;
        let reason = loop {
            let recheck = match activity.verdict(&self.timeouts) {
                Verdict::Keep(after) => after,
                Verdict::HeaderTimeout => break CloseReason::HeaderTimeout,
                Verdict::Idle if draining => None,
                Verdict::Idle => {
                    // hyper closes an idle HTTP/1 connection at once and
                    // sends HTTP/2 a GOAWAY.
                    draining = true;
                    connection.as_mut().graceful_shutdown();
                    closed(self.listener, CloseReason::IdleTimeout);
                    continue;
                }
            };
            tokio::select! {
                served = connection.as_mut() => {
                    if let Err(error) = served {
                        tracing::debug!(%peer, %error, "connection ended with an error");
                    }
                    if !draining {
                        closed(self.listener, CloseReason::Finished);
                    }
                    return;
                }
                _ = self.shutdown.cancelled(), if !draining => {
                    draining = true;
                    connection.as_mut().graceful_shutdown();
                }
                _ = sleep_for(recheck) => {}
            }
        };
        // Dropping the connection closes the socket: no request was
        // accepted on it, so none is cut.
        closed(self.listener, reason);
    }
}

async fn sleep_for(after: Option<Duration>) {
    match after {
        Some(after) => tokio::time::sleep(after).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Events happen now (within a few milliseconds of the start); the
    // verdicts are asked at seconds, so a slow machine cannot blur them.
    const BOTH: Timeouts = Timeouts {
        header_read: Some(Duration::from_secs(10)),
        idle: Some(Duration::from_secs(60)),
    };
    const S: u64 = 1000;

    #[test]
    fn a_head_is_awaited_from_accept_and_times_out() {
        let activity = Activity::new(false);
        assert!(matches!(
            activity.verdict_at(5 * S, &BOTH),
            Verdict::Keep(Some(_))
        ));
        assert_eq!(activity.verdict_at(11 * S, &BOTH), Verdict::HeaderTimeout);
    }

    #[test]
    fn a_served_connection_waits_for_the_idle_timeout_not_the_header_one() {
        let activity = Activity::new(false);
        activity.read(b"GET / HTTP/1.1\r\n\r\n");
        activity.request_started();
        activity.request_finished();
        assert!(matches!(
            activity.verdict_at(30 * S, &BOTH),
            Verdict::Keep(Some(_))
        ));
        assert_eq!(activity.verdict_at(61 * S, &BOTH), Verdict::Idle);
    }

    #[test]
    fn a_request_in_flight_is_never_idle_and_the_next_head_starts_the_timer() {
        let activity = Activity::new(false);
        activity.request_started();
        assert!(matches!(
            activity.verdict_at(120 * S, &BOTH),
            Verdict::Keep(Some(_))
        ));
        activity.request_finished();
        activity.read(b"GET /he");
        assert!(matches!(
            activity.verdict_at(5 * S, &BOTH),
            Verdict::Keep(Some(_))
        ));
        assert_eq!(activity.verdict_at(11 * S, &BOTH), Verdict::HeaderTimeout);
    }

    #[test]
    fn http2_has_no_head_timer_and_timers_switch_off() {
        let activity = Activity::new(false);
        activity.read(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
        assert!(matches!(
            activity.verdict_at(30 * S, &BOTH),
            Verdict::Keep(Some(_))
        ));
        assert_eq!(activity.verdict_at(61 * S, &BOTH), Verdict::Idle);
        let off = Timeouts {
            header_read: None,
            idle: None,
        };
        assert_eq!(
            Activity::new(false).verdict_at(600 * S, &off),
            Verdict::Keep(None)
        );
    }
}
