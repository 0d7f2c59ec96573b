//! What every listener (the gateway's, the worker's probes) does with
//! connections that hold on: header and idle timeouts, connection caps.

use super::duration_in;
use crate::http_server::tls::{Certificate, TlsError};
use crate::http_server::{files, ServerOptions, Timeouts, TlsOptions};
use clap::Args;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct ListenerArgs {
    /// How long a client may take to send a request's head (line and
    /// headers), from connecting or from its first byte; past it the
    /// connection is closed (slow-header attacks). 0s: no limit.
    #[arg(long, env = "STREAMSTOCK_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = duration_in(Duration::ZERO, Duration::from_secs(600)))]
    pub header_read_timeout: Duration,
    /// A keep-alive connection with nothing in flight and no byte either
    /// way for this long is closed. 0s: never.
    #[arg(long, env = "STREAMSTOCK_IDLE_TIMEOUT", default_value = "60s", value_parser = duration_in(Duration::ZERO, Duration::from_secs(86_400)))]
    pub idle_timeout: Duration,
    /// Connections open at once (WebSockets included); more are refused at
    /// once. Unset: three quarters of the open-file limit left after a
    /// reserve of 128 (the soft limit is first raised to the hard one).
    /// 0: no cap.
    #[arg(long, env = "STREAMSTOCK_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Connections one address may hold at once. Unset: a quarter of
    /// --max-connections. 0: no cap (a gateway behind a proxy sees every
    /// client at the proxy's address).
    #[arg(long, env = "STREAMSTOCK_MAX_CONNECTIONS_PER_ADDRESS")]
    pub max_connections_per_address: Option<usize>,
    /// Serve HTTPS with this certificate chain (PEM, the server's first),
    /// HTTP/2 and HTTP/1.1 by ALPN; read again on SIGHUP and when the file
    /// changes. Needs --tls-key.
    #[arg(long, env = "STREAMSTOCK_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "STREAMSTOCK_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// A TLS handshake must finish within this, from accept. 0s: no limit.
    #[arg(long, env = "STREAMSTOCK_TLS_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = duration_in(Duration::ZERO, Duration::from_secs(600)))]
    pub tls_handshake_timeout: Duration,
}

/// The flags' defaults (tests build settings without a command line).
impl Default for ListenerArgs {
    fn default() -> ListenerArgs {
        ListenerArgs {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: None,
            max_connections_per_address: None,
            tls_cert: None,
            tls_key: None,
            tls_handshake_timeout: Duration::from_secs(10),
        }
    }
}

impl ListenerArgs {
    /// The listener's settings, with the caps resolved against the
    /// open-file limit (raised here, once per process) and the certificate
    /// loaded.
    pub fn server_options(&self, listener: &'static str) -> Result<ServerOptions, TlsError> {
        let limit = files::raise_open_file_limit();
        let max_connections = match self.max_connections {
            Some(0) => None,
            Some(max) => Some(max),
            None => Some(files::default_max_connections(limit.soft)),
        };
        let max_per_address = match (self.max_connections_per_address, max_connections) {
            (Some(0), _) | (None, None) => None,
            (Some(max), _) => Some(max),
            (None, Some(total)) => Some(files::default_max_per_address(total)),
        };
        let off_if_zero = |d: Duration| (!d.is_zero()).then_some(d);
        let tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(TlsOptions {
                certificate: Certificate::load(cert, key)?,
                handshake_timeout: off_if_zero(self.tls_handshake_timeout),
            }),
            _ => None,
        };
        let options = ServerOptions {
            listener,
            timeouts: Timeouts {
                header_read: off_if_zero(self.header_read_timeout),
                idle: off_if_zero(self.idle_timeout),
            },
            max_connections,
            max_per_address,
            tls,
        };
        let cap = |cap: Option<usize>| cap.map_or("none".to_string(), |n| n.to_string());
        tracing::info!(
            listener,
            open_file_limit = limit.soft,
            hard_limit = limit.hard,
            raised_from = limit.before,
            max_connections = cap(max_connections),
            max_per_address = cap(max_per_address),
            header_read_timeout = ?options.timeouts.header_read,
            idle_timeout = ?options.timeouts.idle,
            tls = options.tls.is_some(),
            "connection limits"
        );
        Ok(options)
    }
}
