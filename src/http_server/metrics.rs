//! The listeners' metrics: open connections, connections closed by reason,
//! accept errors; each labelled with its listener (`gateway`, `worker`).

use crate::telemetry::metrics as names;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The client left, or the connection ended after a drain.
    Finished,
    /// Refused at accept: every connection slot was taken.
    MaxConnections,
    /// Refused at accept: the address had all the slots it may have.
    MaxPerAddress,
    /// Its request head did not arrive within --header-read-timeout.
    HeaderTimeout,
    /// Nothing happened on it for --idle-timeout.
    IdleTimeout,
    /// Its TLS handshake failed or did not finish within
    /// --tls-handshake-timeout, or it spoke plain HTTP to a TLS port.
    TlsHandshake,
}

impl CloseReason {
    pub fn label(self) -> &'static str {
        match self {
            CloseReason::Finished => "finished",
            CloseReason::MaxConnections => "max_connections",
            CloseReason::MaxPerAddress => "max_per_address",
            CloseReason::HeaderTimeout => "header_timeout",
            CloseReason::IdleTimeout => "idle_timeout",
            CloseReason::TlsHandshake => "tls_handshake",
        }
    }
}

pub fn closed(listener: &'static str, reason: CloseReason) {
    metrics::counter!(names::HTTP_CONNECTIONS_CLOSED, "listener" => listener, "reason" => reason.label())
        .increment(1);
}

pub fn open_connections(listener: &'static str, open: usize) {
    metrics::gauge!(names::HTTP_CONNECTIONS_OPEN, "listener" => listener).set(open as f64);
}

pub fn accept_error(listener: &'static str) {
    metrics::counter!(names::HTTP_ACCEPT_ERRORS, "listener" => listener).increment(1);
}
