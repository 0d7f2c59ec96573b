//! Who may do what. Once any token is configured (`--tokens-file`,
//! `--api-token`), everything under `/api/` and `/ws/`, and `/metrics`,
//! needs one; `/health`, `/ready`, the page's files and the API's docs stay
//! open. A token has a scope (see `tokens`):
//! - `read`: every GET under /api/, /metrics and the dashboard's WebSocket;
//! - `write`: also the commands (POST);
//! - `admin`: also the operator's actions (dead letters, the simulator).
//!
//! `--public-catalog` opens `GET /api/products*` for storefronts. With no
//! token configured everything is open, as in the demo.
//!
//! A missing or wrong token gets 401 with `WWW-Authenticate: Bearer`; too
//! narrow a scope gets 403 with `insufficient_scope` (RFC 6750 §3.1). An
//! address that presents wrong tokens too often gets 429 for a while (see
//! `attempts`). The token's name rides on the request as its `Actor`, and
//! the events a command appends record it.
//!
//! A browser cannot set headers on a WebSocket, so the dashboard's socket
//! may carry the token as a subprotocol instead: `streamstock.bearer.`
//! followed by the token in hex (it never goes into a URL).

mod attempts;
pub mod tokens;

pub use tokens::{Scope, Tokens};

use super::error::ApiError;
use super::AppState;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

pub use attempts::FailedAttempts;

/// The name of the token a request came with: the actor of its events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor(pub Arc<str>);

/// The subprotocol prefix that carries a token on a WebSocket handshake.
pub const WEBSOCKET_BEARER_PREFIX: &str = "streamstock.bearer.";
/// The subprotocol the dashboard's WebSocket speaks (and the server picks,
/// as a browser needs one of those it offered).
pub const DASHBOARD_PROTOCOL: &str = "streamstock.dashboard";

/// Operator actions: POSTs (and DELETEs) under these need `admin`. A
/// webhook subscription sends the events out of the system.
const ADMIN_ACTIONS: [&str; 3] = ["/api/dead-letters", "/api/simulator", "/api/subscriptions"];

/// The scope `method path` needs, or None for an open route.
pub fn needed_scope(method: &Method, path: &str, public_catalog: bool) -> Option<Scope> {
    let guarded = path.starts_with("/api/") || path.starts_with("/ws/") || path == "/metrics";
    // A CORS preflight carries no credentials by design.
    if !guarded || method == Method::OPTIONS {
        return None;
    }
    if method == Method::GET || method == Method::HEAD {
        // The public catalog is what a shop front shows: products and
        // their figures, not the stock's history (notes, who did what).
        let catalog = (path == "/api/products" || path.starts_with("/api/products/"))
            && !path.contains("/adjustments")
            && !path.ends_with("/ledger");
        return (!(public_catalog && catalog)).then_some(Scope::Read);
    }
    // No allocation: this runs on every POST.
    let under = |prefix: &str| {
        path.strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    };
    if ADMIN_ACTIONS.iter().any(|prefix| under(prefix)) {
        Some(Scope::Admin)
    } else {
        Some(Scope::Write)
    }
}

/// The token a request presents: its bearer, or on a WebSocket handshake
/// its bearer subprotocol.
fn presented(headers: &HeaderMap) -> Option<String> {
    if let Some(bearer) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    {
        return Some(bearer.to_string());
    }
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|protocol| protocol.trim().strip_prefix(WEBSOCKET_BEARER_PREFIX))
        .and_then(|hex_token| hex::decode(hex_token).ok())
        .and_then(|bytes| String::from_utf8(bytes).ok())
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No token, or one the gateway does not know.
    Unauthorized,
    /// A known token whose scope is narrower than the route's.
    InsufficientScope(Scope),
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let (status, code, message, challenge) = match self {
            Refusal::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "missing or wrong bearer token".to_string(),
                "Bearer".to_string(),
            ),
            Refusal::InsufficientScope(needed) => (
                StatusCode::FORBIDDEN,
                "insufficient_scope",
                format!("this needs a token with the {} scope", needed.name()),
                format!(
                    "Bearer error=\"insufficient_scope\", scope=\"{}\"",
                    needed.name()
                ),
            ),
        };
        let mut response = ApiError::new(status, code, message).into_response();
        if let Ok(challenge) = HeaderValue::from_str(&challenge) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, challenge);
        }
        response
    }
}

/// The token `headers` present, if it has at least `needed`.
pub fn authorize(tokens: &Tokens, headers: &HeaderMap, needed: Scope) -> Result<Actor, Refusal> {
    let table = tokens.current();
    let token = presented(headers)
        .and_then(|text| table.identify(&text).cloned())
        .ok_or(Refusal::Unauthorized)?;
    if token.scope < needed {
        return Err(Refusal::InsufficientScope(needed));
    }
    Ok(Actor(token.name))
}

fn too_many_attempts(wait: Duration) -> Response {
    let seconds = wait.as_secs().max(1);
    let mut response = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "too_many_failed_attempts",
        format!("too many wrong tokens from this address; retry in {seconds} s"),
    )
    .into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    response
}

pub async fn require_token(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let access = &state.access;
    let Some(needed) = needed_scope(
        request.method(),
        request.uri().path(),
        access.public_catalog,
    ) else {
        return next.run(request).await;
    };
    if !access.tokens.required() {
        return next.run(request).await;
    }
    let address = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::from([0, 0, 0, 0]), |info| info.0.ip());
    if let Some(wait) = access.failed_attempts.blocked_for(address) {
        return too_many_attempts(wait);
    }
    match authorize(&access.tokens, request.headers(), needed) {
        Ok(actor) => {
            request.extensions_mut().insert(actor);
            next.run(request).await
        }
        Err(refusal) => {
            // Only a token that was presented and wrong counts as a guess:
            // a page that has not been given its token yet is not one.
            if refusal == Refusal::Unauthorized && presented(request.headers()).is_some() {
                access.failed_attempts.failed(address);
            }
            metrics::counter!(crate::telemetry::metrics::AUTH_REFUSALS, "reason" => match refusal {
                Refusal::Unauthorized => "unauthorized",
                Refusal::InsufficientScope(_) => "insufficient_scope",
            })
            .increment(1);
            refusal.into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_route_needs_its_scope() {
        let get = Method::GET;
        let post = Method::POST;
        assert_eq!(needed_scope(&get, "/api/orders", false), Some(Scope::Read));
        assert_eq!(
            needed_scope(&get, "/ws/dashboard", false),
            Some(Scope::Read)
        );
        assert_eq!(needed_scope(&get, "/metrics", false), Some(Scope::Read));
        assert_eq!(
            needed_scope(&post, "/api/orders", false),
            Some(Scope::Write)
        );
        assert_eq!(
            needed_scope(&post, "/api/dead-letters/replay", false),
            Some(Scope::Admin)
        );
        assert_eq!(
            needed_scope(&post, "/api/simulator", false),
            Some(Scope::Admin)
        );
        assert_eq!(
            needed_scope(&get, "/api/simulator", false),
            Some(Scope::Read)
        );
        assert_eq!(
            needed_scope(&post, "/api/simulatorx", false),
            Some(Scope::Write)
        );
        assert_eq!(needed_scope(&get, "/health", false), None);
        assert_eq!(needed_scope(&get, "/", false), None);
        assert_eq!(needed_scope(&get, "/docs/", false), None);
        assert_eq!(needed_scope(&Method::OPTIONS, "/api/orders", false), None);
        assert_eq!(needed_scope(&get, "/api/products/x", true), None);
        assert_eq!(
            needed_scope(&get, "/api/products/x/adjustments", true),
            Some(Scope::Read)
        );
        assert_eq!(
            needed_scope(&get, "/api/productsx", true),
            Some(Scope::Read)
        );
        assert_eq!(
            needed_scope(&post, "/api/products", true),
            Some(Scope::Write)
        );
    }

    #[test]
    fn a_websocket_may_carry_its_token_as_a_subprotocol() {
        let mut headers = HeaderMap::new();
        let offered = format!(
            "{DASHBOARD_PROTOCOL}, {WEBSOCKET_BEARER_PREFIX}{}",
            hex::encode("s3cret")
        );
        headers.insert(header::SEC_WEBSOCKET_PROTOCOL, offered.parse().unwrap());
        assert_eq!(presented(&headers).as_deref(), Some("s3cret"));
        headers.insert(header::AUTHORIZATION, "Bearer other".parse().unwrap());
        assert_eq!(presented(&headers).as_deref(), Some("other"));
    }
}
