//! What orchestrators and scrapers ask every process: `/health` (the
//! process answers), `/ready` (its log and database answer) and `/metrics`
//! (Prometheus text). The gateway serves them beside its API; a worker
//! serves them alone through `probe_router`.

use crate::store::Store;
use crate::stream::{EventLog, PROCESSOR_GROUP};
use crate::telemetry::metrics;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use std::sync::Arc;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Health {
    /// Always `ok`.
    pub status: &'static str,
}

/// Each backend's answer: `"ok"` or the error it gave.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Readiness {
    pub status: &'static str,
    pub event_log: String,
    pub database: String,
}

#[utoipa::path(get, path = "/health", operation_id = "health", tag = "probes",
    responses((status = 200, description = "The process answers", body = Health)))]
pub async fn health() -> Json<Health> {
    Json(Health { status: "ok" })
}

#[utoipa::path(get, path = "/ready", operation_id = "ready", tag = "probes",
    responses((status = 200, description = "The log and the database answer", body = Readiness),
        (status = 503, description = "A backend does not answer", body = Readiness)))]
pub async fn ready(State(state): State<super::AppState>) -> Response {
    readiness(&*state.log, &state.store).await
}

#[utoipa::path(get, path = "/metrics", operation_id = "metrics", tag = "probes",
    responses((status = 200, description = "Prometheus text exposition", content_type = "text/plain", body = String)))]
pub async fn metrics(State(state): State<super::AppState>) -> Response {
    prometheus(&*state.log).await
}

/// How long `/ready` waits for each backend's answer: a probe must answer,
/// and a backend that takes longer than this is not ready.
const READY_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// 200 when both the log and the database answer (within `READY_WAIT`,
/// asked together), else 503.
pub async fn readiness(log: &dyn EventLog, store: &Store) -> Response {
    let within = |answer: Result<Result<(), String>, tokio::time::error::Elapsed>| {
        answer.unwrap_or_else(|_| Err(format!("no answer within {} s", READY_WAIT.as_secs())))
    };
    let (log_ok, db_ok) = tokio::join!(
        tokio::time::timeout(READY_WAIT, async {
            log.ping().await.map_err(|e| e.to_string())
        }),
        tokio::time::timeout(READY_WAIT, async {
            store.ping().await.map_err(|e| e.to_string())
        }),
    );
    let (log_ok, db_ok) = (within(log_ok), within(db_ok));
    let ready = log_ok.is_ok() && db_ok.is_ok();
    let describe = |r: Result<(), String>| r.err().unwrap_or_else(|| "ok".to_string());
    let body = Readiness {
        status: if ready { "ready" } else { "unavailable" },
        event_log: describe(log_ok),
        database: describe(db_ok),
    };
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// The log-derived gauges (lag, pending per partition, dead letters) are
/// read from the log when scraped, so they are never stale.
async fn refresh_log_gauges(log: &dyn EventLog) {
    if let Ok(stats) = log.partition_stats(PROCESSOR_GROUP).await {
        for s in stats {
            let partition = s.partition.to_string();
            ::metrics::gauge!(metrics::PARTITION_LAG, "partition" => partition.clone())
                .set(s.lag as f64);
            ::metrics::gauge!(metrics::PARTITION_PENDING, "partition" => partition.clone())
                .set(s.pending as f64);
            ::metrics::gauge!(metrics::LOG_RETAINED_ENTRIES, "partition" => partition.clone())
                .set(s.length as f64);
            if let Some(bytes) = s.bytes {
                ::metrics::gauge!(metrics::LOG_RETAINED_BYTES, "partition" => partition)
                    .set(bytes as f64);
            }
        }
    }
    if let Ok(n) = log.dead_letter_count(PROCESSOR_GROUP).await {
        ::metrics::gauge!(metrics::DEAD_LETTERS).set(n as f64);
    }
}

/// How long `/metrics` waits for fresh log figures before it answers with
/// the last ones: a scrape must answer while the log is unreachable (a
/// network partition, a failover), which is when it matters most, and
/// within Prometheus' scrape timeout.
const LOG_FIGURES_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// `/metrics`: fresh log figures (or, when the log does not answer within
/// `LOG_FIGURES_WAIT`, the last ones), then the text exposition.
pub async fn prometheus(log: &dyn EventLog) -> Response {
    if tokio::time::timeout(LOG_FIGURES_WAIT, refresh_log_gauges(log))
        .await
        .is_err()
    {
        tracing::debug!("the log's figures did not come in time; /metrics shows the last ones");
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        metrics::render(),
    )
        .into_response()
}

#[derive(Clone)]
struct Backends {
    log: Arc<dyn EventLog>,
    store: Store,
    /// With tokens, /metrics needs one (`read`), as on the gateway.
    tokens: Arc<super::auth::Tokens>,
}

/// `/health`, `/ready` and `/metrics` on their own, for a worker process.
pub fn probe_router(
    log: Arc<dyn EventLog>,
    store: Store,
    tokens: Arc<super::auth::Tokens>,
) -> Router {
    Router::new()
        .route("/health", get(health))
        .route(
            "/ready",
            get(|State(b): State<Backends>| async move { readiness(&*b.log, &b.store).await }),
        )
        .route(
            "/metrics",
            get(
                |State(b): State<Backends>, headers: axum::http::HeaderMap| async move {
                    if b.tokens.required() {
                        if let Err(refused) =
                            super::auth::authorize(&b.tokens, &headers, super::auth::Scope::Read)
                        {
                            return refused.into_response();
                        }
                    }
                    prometheus(&*b.log).await
                },
            ),
        )
        .with_state(Backends { log, store, tokens })
}
