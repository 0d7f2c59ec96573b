//! What every request passes on its way in and out:
//! - an id: `x-request-id` as the client sent it (up to 128 printable
//!   characters) or a fresh one, echoed on the answer and named in every
//!   log line written while the request is handled;
//! - a bound: at most `--max-in-flight-requests` at once; beyond it, 503
//!   with `Retry-After` at once, never a queue (the probes are exempt, so
//!   an overloaded gateway still says it is alive);
//! - a time limit: past `--request-timeout`, 503 with `Retry-After`;
//! - metrics: requests and their latency by route, method and status.

use super::error::ApiError;
use super::AppState;
use crate::telemetry::metrics as names;
use axum::extract::{MatchedPath, Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::time::Instant;
use tracing::Instrument;

pub const REQUEST_ID: &str = "x-request-id";

/// Routes that answer however loaded the gateway is.
const PROBES: [&str; 3] = ["/health", "/ready", "/metrics"];

/// The client's request id if it is a sensible one, else a fresh one.
fn request_id(request: &Request) -> HeaderValue {
    request
        .headers()
        .get(REQUEST_ID)
        .filter(|id| {
            let bytes = id.as_bytes();
            !bytes.is_empty() && bytes.len() <= 128 && bytes.iter().all(|b| b.is_ascii_graphic())
        })
        .cloned()
        .unwrap_or_else(|| {
            HeaderValue::from_str(&uuid::Uuid::now_v7().to_string())
                .expect("a UUID is a header value")
        })
}

pub async fn front_door(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = request.method().as_str().to_owned();
    let id = request_id(&request);
    let span = tracing::info_span!(
        "request",
        id = id.to_str().unwrap_or_default(),
        %method,
        %route
    );
    let limits = state.limits;
    let slots = &state.request_slots;
    let in_flight = || (limits.requests_in_flight - slots.available_permits()) as f64;
    let mut response = async {
        let _slot = if PROBES.contains(&route.as_str()) {
            None
        } else {
            match slots.clone().try_acquire_owned() {
                Ok(slot) => {
                    metrics::gauge!(names::HTTP_IN_FLIGHT).set(in_flight());
                    Some(slot)
                }
                Err(_) => {
                    metrics::counter!(names::REQUESTS_SHED, "reason" => "requests").increment(1);
                    return ApiError::overloaded(format!(
                        "{} requests are already in flight; retry shortly",
                        limits.requests_in_flight
                    ))
                    .into_response();
                }
            }
        };
        match tokio::time::timeout(limits.request_timeout, next.run(request)).await {
            Ok(response) => response,
            Err(_) => {
                tracing::warn!(
                    timeout_ms = limits.request_timeout.as_millis() as u64,
                    "request timed out"
                );
                ApiError::timed_out(format!(
                    "the request took longer than {} s; retry shortly",
                    limits.request_timeout.as_secs_f64()
                ))
                .into_response()
            }
        }
    }
    .instrument(span)
    .await;
    metrics::gauge!(names::HTTP_IN_FLIGHT).set(in_flight());
    response.headers_mut().insert(REQUEST_ID, id);
    let status = response.status().as_u16().to_string();
    let labels = [("route", route), ("method", method), ("status", status)];
    metrics::counter!(names::HTTP_REQUESTS, &labels).increment(1);
    metrics::histogram!(names::HTTP_SECONDS, &labels).record(started.elapsed().as_secs_f64());
    response
}
