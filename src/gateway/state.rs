//! The gateway's state: what every handler shares (the backends, the
//! dashboard hub, the price list, the long polls) and the bounds on what it
//! takes on; and the one way a handler appends an event.

use super::error::ApiError;
use super::{admission, catalog, dashboard, feed, idempotency, order_watch, simulator_control};
use crate::store::Store;
use crate::stream::EventLog;
use axum::http::HeaderValue;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// How much the gateway takes on at once; beyond it, requests get 503.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Requests being handled at once (the probes aside).
    pub requests_in_flight: usize,
    /// How long a request may take before it is answered 503.
    pub request_timeout: std::time::Duration,
    /// Appends in flight to the log.
    pub in_flight_appends: usize,
    /// Dashboard WebSocket connections.
    pub dashboard_clients: usize,
    /// Feed streams (`GET /api/feed` as Server-Sent Events) open at once.
    pub feed_streams: usize,
    /// How long an Idempotency-Key's first answer is kept.
    pub idempotency_ttl: std::time::Duration,
    /// The most keys kept; beyond, the oldest go first.
    pub idempotency_max_keys: u64,
    /// Products whose price is kept in memory (see `catalog`).
    pub catalog_cache_products: usize,
    /// The most locations that may be created (`--max-locations`).
    pub max_locations: usize,
    /// The backlog (events not yet processed) above which writes are
    /// refused (see `admission`).
    pub max_backlog: u64,
}

/// Who may call the gateway, and from which web pages.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// The tokens in force (see `auth`); with none, everything is open.
    pub tokens: Arc<super::auth::Tokens>,
    /// `GET /api/products*` open to anyone even with tokens.
    pub public_catalog: bool,
    /// Wrong tokens per address (see `auth::attempts`).
    pub failed_attempts: Arc<super::auth::FailedAttempts>,
    /// Origins whose pages may call the API from a browser (CORS); empty:
    /// none, so only same-origin pages (the dashboard) can.
    pub cors_origins: Vec<HeaderValue>,
    /// Where webhooks may be sent (`--webhook-allow`), checked when a
    /// subscription is created.
    pub webhook_allow: crate::domain::webhooks::AllowList,
    /// `--max-subscriptions`.
    pub max_subscriptions: usize,
}

/// How long a request waits for an append slot before it is refused.
const APPEND_SLOT_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

pub struct Gateway {
    pub store: Store,
    pub log: Arc<dyn EventLog>,
    /// The workers' partition leases: who processes what (the dashboard's
    /// header).
    pub leases: Arc<dyn crate::stream::lease::LeaseStore>,
    /// When this gateway started (its uptime on the dashboard).
    pub started_at: chrono::DateTime<chrono::Utc>,
    /// The in-process simulator's controls (`all` only).
    pub simulator: Option<Arc<dyn simulator_control::SimulatorSwitch>>,
    pub access: Access,
    pub dashboard: dashboard::Hub,
    /// Prices of the products orders name, so placing one reads no database.
    pub prices: catalog::PriceList,
    /// Long polls waiting on an order's decision.
    pub(super) order_watch: order_watch::OrderWatch,
    /// Feed readers waiting for the next commit, and the open streams.
    pub(super) feed_wake: feed::FeedWake,
    pub shutdown: CancellationToken,
    /// One permit per append in flight: the bound on what the gateway
    /// queues toward the log, whatever the offered load.
    append_slots: tokio::sync::Semaphore,
    /// One permit per request in flight (see `front_door`).
    pub(super) request_slots: Arc<tokio::sync::Semaphore>,
    /// Writes refused while the workers are too far behind.
    pub(super) admission: Arc<admission::Admission>,
    pub(super) limits: Limits,
}

pub type AppState = Arc<Gateway>;

impl Gateway {
    pub fn new(
        store: Store,
        log: Arc<dyn EventLog>,
        leases: Arc<dyn crate::stream::lease::LeaseStore>,
        simulator: Option<Arc<dyn simulator_control::SimulatorSwitch>>,
        access: Access,
        limits: Limits,
        shutdown: CancellationToken,
    ) -> AppState {
        let gateway = Arc::new(Gateway {
            store,
            log,
            leases,
            started_at: chrono::Utc::now(),
            simulator,
            access,
            dashboard: dashboard::Hub::new(limits.dashboard_clients),
            prices: catalog::PriceList::new(limits.catalog_cache_products),
            order_watch: Default::default(),
            feed_wake: feed::FeedWake::new(limits.feed_streams),
            shutdown,
            append_slots: tokio::sync::Semaphore::new(limits.in_flight_appends.max(1)),
            request_slots: Arc::new(tokio::sync::Semaphore::new(
                limits.requests_in_flight.max(1),
            )),
            admission: Arc::new(admission::Admission::new(limits.max_backlog)),
            limits,
        });
        dashboard::spawn_publisher(gateway.clone());
        admission::spawn_sampler(
            gateway.admission.clone(),
            gateway.log.clone(),
            gateway.shutdown.clone(),
        );
        order_watch::spawn_listener(gateway.clone());
        idempotency::spawn_pruner(gateway.clone());
        crate::telemetry::metrics::handle();
        gateway
    }
}

impl Gateway {
    /// Appends an event durably, recording its latency and outcome. While
    /// the workers are more than `--max-backlog` events behind, or when
    /// every append slot stays taken for a moment, the request is refused
    /// (503, Retry-After) rather than queued without bound.
    pub async fn append(
        &self,
        envelope: &crate::domain::Envelope,
    ) -> Result<crate::stream::AppendReceipt, ApiError> {
        self.admission.admit()?;
        let started = std::time::Instant::now();
        let _slot = match tokio::time::timeout(APPEND_SLOT_WAIT, self.append_slots.acquire()).await
        {
            Ok(Ok(slot)) => slot,
            Ok(Err(_)) => unreachable!("the append semaphore is never closed"),
            Err(_) => {
                metrics::counter!(crate::telemetry::metrics::REQUESTS_SHED, "reason" => "append_slots")
                    .increment(1);
                return Err(ApiError::overloaded(format!(
                    "{} appends are already in flight to the event log; retry shortly",
                    self.limits.in_flight_appends
                )));
            }
        };
        let result = self.log.append(envelope).await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(crate::stream::LogError::OutcomeUnknown(_)) => "unknown",
            Err(_) => "error",
        };
        metrics::counter!(crate::telemetry::metrics::EVENTS_APPENDED, "type" => envelope.event_type.label(), "result" => outcome).increment(1);
        metrics::histogram!(crate::telemetry::metrics::APPEND_SECONDS)
            .record(started.elapsed().as_secs_f64());
        Ok(result?)
    }
}
