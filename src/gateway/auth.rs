//! Who may do what. With `--api-token` set, a request needs
//! `Authorization: Bearer <token>` when it writes (any POST under /api/),
//! or when it reads what exposes customers' data or the system's internals:
//! the audit trail (`/api/events`), the dead letters and `/metrics`. The
//! catalog, orders, purchase orders, alerts, stats, the dashboard and its
//! WebSocket stay open, as the reference's clients and the page expect.

use super::error::ApiError;
use super::AppState;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

/// Reads that need the token as writes do.
const PROTECTED_READS: [&str; 3] = ["/api/events", "/api/dead-letters", "/metrics"];

pub fn needs_token(method: &Method, path: &str) -> bool {
    match *method {
        // A CORS preflight carries no credentials by design.
        Method::OPTIONS => false,
        Method::GET | Method::HEAD => PROTECTED_READS.contains(&path),
        _ => path.starts_with("/api/"),
    }
}

/// Compares in constant time, so the answer's timing says nothing about
/// how much of a guess was right.
fn token_matches(presented: Option<&str>, token: &str) -> bool {
    presented.is_some_and(|p| bool::from(p.as_bytes().ct_eq(token.as_bytes())))
}

/// None when `headers` carry `Authorization: Bearer <token>`; else the 401.
pub fn bearer_refusal(headers: &axum::http::HeaderMap, token: &str) -> Option<Response> {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if token_matches(presented, token) {
        return None;
    }
    let mut refused = ApiError::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "missing or wrong bearer token",
    )
    .into_response();
    refused
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    Some(refused)
}

pub async fn require_token(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    if let Some(token) = &state.access.api_token {
        if needs_token(request.method(), request.uri().path()) {
            let token = secrecy::ExposeSecret::expose_secret(token);
            if let Some(refused) = bearer_refusal(request.headers(), token) {
                return refused;
            }
        }
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_and_sensitive_reads_need_the_token() {
        assert!(needs_token(&Method::POST, "/api/orders"));
        assert!(needs_token(&Method::GET, "/api/events"));
        assert!(needs_token(&Method::GET, "/metrics"));
        assert!(!needs_token(&Method::GET, "/api/products"));
        assert!(!needs_token(&Method::GET, "/api/stats"));
        assert!(!needs_token(&Method::GET, "/ws/dashboard"));
        assert!(!needs_token(&Method::OPTIONS, "/api/orders"));
    }

    #[test]
    fn tokens_match_exactly() {
        assert!(token_matches(Some("s3cret"), "s3cret"));
        assert!(!token_matches(Some("s3cre"), "s3cret"));
        assert!(!token_matches(Some("s3cret!"), "s3cret"));
        assert!(!token_matches(None, "s3cret"));
    }
}
