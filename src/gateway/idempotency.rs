//! `Idempotency-Key` on POST: a client that retries a request (after a
//! timeout, say) with the same key gets the first answer again, with the
//! same ids and status, and nothing is appended twice. The key's first
//! answer is kept (in the read-model database, shared by every gateway of
//! the deployment and surviving restarts) for `--idempotency-ttl`.
//!
//! - The same key with another method, path or body: 422.
//! - Concurrent requests with one key: one does the work, the others wait
//!   for its answer (up to IN_PROGRESS_WAIT, then 409 with Retry-After).
//! - A first request that failed with a 5xx before appending did nothing:
//!   its key is freed.
//! - A first request whose append ended in doubt (`outcome_unknown`), or
//!   that was cut off (the request timeout, a client gone) keeps its key,
//!   for the same request only: the retry takes the key over and, its ids
//!   derived from the key (`write_ids`), appends the same events under the
//!   same ids, which the worker applies once.

use super::error::{ApiError, OutcomeInDoubt};
use super::extract::MAX_BODY_BYTES;
use super::write_ids::WriteIds;
use super::AppState;
use crate::store::idempotency::{KeyClaim, StoredAnswer};
use axum::body::{to_bytes, Body};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::time::Duration;

pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// Marks an answer replayed from an earlier request with the same key.
pub const REPLAYED: &str = "idempotent-replayed";

/// How long a retry waits for the first request with its key to finish.
const IN_PROGRESS_WAIT: Duration = Duration::from_secs(10);
/// The longest key accepted.
const MAX_KEY_LEN: usize = 255;

fn invalid_key(problem: &str) -> Response {
    ApiError::invalid("Idempotency-Key", problem).into_response()
}

/// What identifies a request: method, path and body, hashed.
fn fingerprint(method: &Method, path: &str, body: &[u8]) -> String {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    hasher.update(method.as_str().as_bytes());
    hasher.update(b" ");
    hasher.update(path.as_bytes());
    hasher.update(b"\n");
    hasher.update(body);
    format!("{:032x}", hasher.digest128())
}

fn replay(answer: StoredAnswer) -> Response {
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::OK);
    let mut response = (status, answer.body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(REPLAYED, HeaderValue::from_static("true"));
    if let Some(location) = answer.location.and_then(|l| HeaderValue::from_str(&l).ok()) {
        headers.insert(header::LOCATION, location);
    }
    response
}

pub async fn idempotency(State(state): State<AppState>, request: Request, next: Next) -> Response {
    // An import is idempotent by its file's hash, and its body is larger
    // than a key's fingerprint reads.
    if request.method() != Method::POST || request.uri().path().starts_with("/api/imports/") {
        return next.run(request).await;
    }
    let Some(key) = request.headers().get(IDEMPOTENCY_KEY) else {
        return next.run(request).await;
    };
    let key = match key.to_str() {
        Ok(key) if !key.is_empty() && key.len() <= MAX_KEY_LEN => key.to_string(),
        _ => return invalid_key("must be 1 to 255 visible ASCII characters"),
    };
    let (parts, body) = request.into_parts();
    let body = match to_bytes(body, MAX_BODY_BYTES).await {
        Ok(body) => body,
        Err(_) => {
            return ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("the body is over {MAX_BODY_BYTES} bytes"),
            )
            .into_response()
        }
    };
    let fingerprint = fingerprint(&parts.method, parts.uri.path(), &body);
    let (first_seen_ms, after_doubt) = match claim_key(&state, &key, &fingerprint).await {
        Ok(claimed) => claimed,
        Err(refused) => return refused,
    };
    let mut request = Request::from_parts(parts, Body::from(body));
    request
        .extensions_mut()
        .insert(WriteIds::from_key(&key, first_seen_ms));
    // Dropped before it answers (the request timeout, a client gone): the
    // write may be in the log, so the key stays for this request's retries.
    let cut_off = InDoubtIfDropped {
        state: state.clone(),
        key: Some(key.clone()),
    };
    let response = next.run(request).await;
    cut_off.disarm();
    remember_answer(&state, &key, after_doubt, response).await
}

/// Marks its key in doubt if dropped while armed.
struct InDoubtIfDropped {
    state: AppState,
    key: Option<String>,
}

impl InDoubtIfDropped {
    fn disarm(mut self) {
        self.key = None;
    }
}

impl Drop for InDoubtIfDropped {
    fn drop(&mut self) {
        // Dropped outside a runtime (at shutdown), there is no one to mark
        // it: the key then stays in progress until its TTL, never freed.
        let (Some(key), Ok(runtime)) = (self.key.take(), tokio::runtime::Handle::try_current())
        else {
            return;
        };
        let store = self.state.store.clone();
        runtime.spawn(async move {
            if let Err(e) = store.mark_idempotency_key_in_doubt(&key).await {
                tracing::warn!(error = %e, "could not keep a cut-off request's idempotency key");
            }
        });
    }
}

/// Claims `key` for this request, waiting a moment while another request
/// with it is in progress: Ok with when the key was first claimed and
/// whether an earlier request with it ended in doubt, or Err
/// with the answer to give instead of handling the request (the first
/// answer replayed, or a refusal).
async fn claim_key(
    state: &AppState,
    key: &str,
    fingerprint: &str,
) -> Result<(i64, bool), Response> {
    let ttl_ms = state.limits.idempotency_ttl.as_millis() as i64;
    let deadline = tokio::time::Instant::now() + IN_PROGRESS_WAIT;
    loop {
        let claim = state
            .store
            .claim_idempotency_key(key, fingerprint, ttl_ms)
            .await
            .map_err(|e| ApiError::from(e).into_response())?;
        match claim {
            KeyClaim::Owned {
                first_seen_ms,
                after_doubt,
            } => return Ok((first_seen_ms, after_doubt)),
            KeyClaim::Answered(answer) => return Err(replay(answer)),
            KeyClaim::Mismatch => {
                return Err(ApiError::invalid(
                    "Idempotency-Key",
                    format!(
                        "{key} was used for a different request; a key names one request \
                         (method, path and body)"
                    ),
                )
                .into_response())
            }
            KeyClaim::InProgress if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            KeyClaim::InProgress => {
                let mut busy = ApiError::conflict(format!(
                    "a request with Idempotency-Key {key} is still being handled; retry shortly"
                ));
                busy.retry_after = Some(1);
                return Err(busy.into_response());
            }
        }
    }
}

/// Records the handler's answer under `key` for its retries, and passes it
/// on. A 5xx in doubt keeps the key for the same request's retry; any other
/// 5xx did nothing, and the key is freed so the retry does the work, unless
/// an earlier request with the key ended in doubt (`after_doubt`): that one
/// may still have been recorded, so the key stays in doubt, its ids with it,
/// and the next retry appends the same events again rather than new ones.
async fn remember_answer(
    state: &AppState,
    key: &str,
    after_doubt: bool,
    response: Response,
) -> Response {
    let status = response.status();
    if status.is_server_error() {
        let kept = if after_doubt || response.extensions().get::<OutcomeInDoubt>().is_some() {
            state.store.mark_idempotency_key_in_doubt(key).await
        } else {
            state.store.release_idempotency_key(key).await
        };
        if let Err(e) = kept {
            tracing::warn!(error = %e, "could not keep or free an idempotency key");
        }
        return response;
    }
    let (parts, body) = response.into_parts();
    let body = to_bytes(body, MAX_BODY_BYTES).await.unwrap_or_default();
    let answer = StoredAnswer {
        status: status.as_u16(),
        location: parts
            .headers
            .get(header::LOCATION)
            .and_then(|l| l.to_str().ok())
            .map(str::to_string),
        body: String::from_utf8_lossy(&body).into_owned(),
    };
    if let Err(e) = state.store.record_idempotent_answer(key, &answer).await {
        tracing::warn!(error = %e, "could not record an idempotent answer");
    }
    Response::from_parts(parts, Body::from(body))
}

/// Removes expired keys, and the oldest beyond `idempotency_max_keys`, now
/// and then, until shutdown.
pub(super) fn spawn_pruner(state: AppState) {
    let ttl = state.limits.idempotency_ttl;
    let max_keys = state.limits.idempotency_max_keys;
    let every = (ttl / 2).clamp(Duration::from_millis(100), Duration::from_secs(10));
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = state.shutdown.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            let pruned = match state
                .store
                .prune_idempotency_keys(ttl.as_millis() as i64)
                .await
            {
                Ok(n) => state
                    .store
                    .cap_idempotency_keys(max_keys)
                    .await
                    .map(|m| n + m),
                Err(e) => Err(e),
            };
            match pruned {
                Ok(0) => {}
                Ok(n) => tracing::debug!(keys = n, "expired idempotency keys removed"),
                Err(e) => tracing::warn!(error = %e, "pruning idempotency keys failed; will retry"),
            }
        }
    });
}
