//! The gateway's flags (`all` and `serve`): where it listens, who may call
//! it, and the bounds on what it takes on.

use super::{parse_secret, ConfigError};
use clap::Args;
use secrecy::SecretString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Args)]
pub struct GatewayArgs {
    /// Address the gateway listens on.
    #[arg(long, env = "STREAMSTOCK_LISTEN", default_value = "127.0.0.1:8000")]
    pub listen: SocketAddr,
    /// A bearer token with every scope (`admin`), named `api-token`; with
    /// it (or --tokens-file) the API, the WebSocket and /metrics need a
    /// token. Unset: no auth.
    #[arg(long, env = "STREAMSTOCK_API_TOKEN", hide_env_values = true, value_parser = parse_secret)]
    pub api_token: Option<SecretString>,
    /// A file holding the token (its first line), so it stays out of `ps`
    /// and of the environment.
    #[arg(long, env = "STREAMSTOCK_API_TOKEN_FILE", conflicts_with = "api_token")]
    pub api_token_file: Option<PathBuf>,
    /// Named tokens with scopes (read, write, admin), each known by its
    /// SHA-256 (see docs/operations.md); read again on SIGHUP.
    #[arg(long, env = "STREAMSTOCK_TOKENS_FILE")]
    pub tokens_file: Option<PathBuf>,
    /// Open `GET /api/products*` to anyone even when tokens are configured
    /// (a storefront's catalog).
    #[arg(long, env = "STREAMSTOCK_PUBLIC_CATALOG")]
    pub public_catalog: bool,
    /// Origins whose web pages may call the API (CORS), comma-separated,
    /// e.g. https://ops.example.com; unset: none.
    #[arg(
        long = "cors-origin",
        env = "STREAMSTOCK_CORS_ORIGIN",
        value_delimiter = ','
    )]
    pub cors_origins: Vec<String>,
    /// Allow a non-loopback --listen without --api-token.
    #[arg(long)]
    pub insecure: bool,
    /// Appends the gateway has in flight to the log, at most. A request
    /// that finds them all taken waits up to a second, then gets 503 with
    /// Retry-After: the log is behind, and nothing queues without bound.
    #[arg(long, env = "STREAMSTOCK_MAX_IN_FLIGHT_APPENDS", default_value_t = 2048, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_in_flight_appends: u32,
    /// Events appended but not yet processed by the workers, at most: above
    /// it every write gets 503 with Retry-After at once, until the backlog
    /// is back below nine tenths of it. Bounds how far behind the decisions
    /// fall (and the log's unprocessed length) whatever the load offered.
    #[arg(long, env = "STREAMSTOCK_MAX_BACKLOG", default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000_000))]
    pub max_backlog: u64,
    /// Requests the gateway handles at once; more get 503 with
    /// Retry-After at once (the probes /health, /ready and /metrics aside).
    #[arg(long, env = "STREAMSTOCK_MAX_IN_FLIGHT_REQUESTS", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_in_flight_requests: u32,
    /// How long a request may take before it is answered 503 (longer than
    /// the 30 s an order's `?wait=` may take).
    #[arg(long, env = "STREAMSTOCK_REQUEST_TIMEOUT", default_value = "35s")]
    pub request_timeout: humantime::Duration,
    /// How long the first answer to a POST with an Idempotency-Key is kept
    /// for its retries.
    #[arg(long, env = "STREAMSTOCK_IDEMPOTENCY_TTL", default_value = "24h")]
    pub idempotency_ttl: humantime::Duration,
    /// The most idempotency keys kept; beyond, the oldest are removed
    /// (checked every few seconds), so load cannot grow the table unbounded.
    #[arg(long, env = "STREAMSTOCK_IDEMPOTENCY_MAX_KEYS", default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub idempotency_max_keys: u64,
    /// Products whose price the gateway keeps in memory, so an order needs
    /// no database read (the least recently ordered fall out beyond it).
    #[arg(long, env = "STREAMSTOCK_CATALOG_CACHE_PRODUCTS", default_value_t = 100_000, value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    pub catalog_cache_products: u32,
    /// The most locations a deployment may create (the default one
    /// included); a worker loads them all to allocate an order.
    #[arg(long, env = "STREAMSTOCK_MAX_LOCATIONS", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub max_locations: u32,
    /// Dashboard WebSocket connections served at once; more get 503.
    #[arg(long, env = "STREAMSTOCK_MAX_DASHBOARD_CLIENTS", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_dashboard_clients: u32,
    /// Integration feed streams (Server-Sent Events of `GET /api/feed`)
    /// served at once; more get 503.
    #[arg(long, env = "STREAMSTOCK_MAX_FEED_STREAMS", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_feed_streams: u32,
    #[command(flatten)]
    pub connections: super::ListenerArgs,
}

/// The token in `path`: its first line, trimmed; an empty one is refused.
pub fn read_token_file(path: &Path) -> Result<SecretString, ConfigError> {
    read_secret_file(path, "--api-token-file")
}

/// The first line of the secret file `path` (given as `flag`), trimmed.
pub fn read_secret_file(path: &Path, flag: &'static str) -> Result<SecretString, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::SecretFile {
        flag,
        path: path.to_path_buf(),
        source,
    })?;
    let secret = text.lines().next().unwrap_or("").trim();
    if secret.is_empty() {
        return Err(ConfigError::EmptySecret {
            flag,
            path: path.to_path_buf(),
        });
    }
    Ok(SecretString::from(secret.to_string()))
}

impl GatewayArgs {
    /// Reads `--api-token-file` into the token.
    pub fn load_token_file(&mut self) -> Result<(), ConfigError> {
        if let Some(path) = &self.api_token_file {
            self.api_token = Some(read_token_file(path)?);
        }
        Ok(())
    }

    /// Who may call the gateway (see gateway::auth), once the token file
    /// is loaded.
    pub fn access(&self) -> Result<crate::gateway::Access, ConfigError> {
        let cors_origins = self
            .cors_origins
            .iter()
            .map(|origin| {
                axum::http::HeaderValue::from_str(origin.trim())
                    .map_err(|_| ConfigError::CorsOrigin(origin.clone()))
            })
            .collect::<Result<_, _>>()?;
        let tokens = crate::gateway::auth::Tokens::load(
            self.tokens_file.as_deref(),
            self.api_token.clone(),
            self.api_token_file.as_deref(),
        )?;
        Ok(crate::gateway::Access {
            tokens: std::sync::Arc::new(tokens),
            public_catalog: self.public_catalog,
            failed_attempts: Default::default(),
            cors_origins,
            // Set from the common settings (`CommonArgs::webhook_allow`).
            webhook_allow: Default::default(),
            max_subscriptions: 100,
        })
    }

    pub fn limits(&self) -> crate::gateway::Limits {
        crate::gateway::Limits {
            requests_in_flight: self.max_in_flight_requests as usize,
            request_timeout: *self.request_timeout,
            in_flight_appends: self.max_in_flight_appends as usize,
            dashboard_clients: self.max_dashboard_clients as usize,
            feed_streams: self.max_feed_streams as usize,
            idempotency_ttl: *self.idempotency_ttl,
            idempotency_max_keys: self.idempotency_max_keys,
            catalog_cache_products: self.catalog_cache_products as usize,
            max_locations: self.max_locations as usize,
            max_backlog: self.max_backlog,
        }
    }

    /// Refuses to expose an unauthenticated API beyond this machine.
    pub fn check_exposure(&self) -> Result<(), ConfigError> {
        let any_token = self.api_token.is_some() || self.tokens_file.is_some();
        if !self.listen.ip().is_loopback() && !any_token && !self.insecure {
            return Err(ConfigError::Unprotected(self.listen));
        }
        Ok(())
    }
}
