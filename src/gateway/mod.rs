//! The HTTP gateway: validates commands, appends them as events, answers at
//! once; serves reads from the read model, the live dashboard over a
//! WebSocket, and the embedded React app.

mod assets;
pub mod auth;
pub mod catalog;
mod dashboard;
pub mod error;
mod front_door;
pub mod idempotency;
pub mod openapi;
mod operations;
mod order_watch;
mod orders;
pub mod probes;
mod products;
pub mod responses;
mod restock;
pub mod simulator_control;

use crate::domain::status::Named;
use crate::store::Store;
use crate::stream::EventLog;
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts};
use axum::http::{header, HeaderValue};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use error::ApiError;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use dashboard::Snapshot;

/// Request bodies beyond this are refused with 413: no order needs more.
const MAX_BODY_BYTES: usize = 64 * 1024;

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
    /// How long an Idempotency-Key's first answer is kept.
    pub idempotency_ttl: std::time::Duration,
    /// The most keys kept; beyond, the oldest go first.
    pub idempotency_max_keys: u64,
    /// Products whose price is kept in memory (see `catalog`).
    pub catalog_cache_products: usize,
}

/// Who may call the gateway, and from which web pages.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// With a token, writes and the sensitive reads need it (see `auth`).
    pub api_token: Option<String>,
    /// Origins whose pages may call the API from a browser (CORS); empty:
    /// none, so only same-origin pages (the dashboard) can.
    pub cors_origins: Vec<HeaderValue>,
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
    order_watch: order_watch::OrderWatch,
    pub shutdown: CancellationToken,
    /// One permit per append in flight: the bound on what the gateway
    /// queues toward the log, whatever the offered load.
    append_slots: tokio::sync::Semaphore,
    /// One permit per request in flight (see `front_door`).
    request_slots: Arc<tokio::sync::Semaphore>,
    limits: Limits,
}

pub type AppState = Arc<Gateway>;

/// JSON body extractor whose rejections are our JSON errors.
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);

#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct ApiPath<T>(pub T);

#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);

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
            shutdown,
            append_slots: tokio::sync::Semaphore::new(limits.in_flight_appends.max(1)),
            request_slots: Arc::new(tokio::sync::Semaphore::new(
                limits.requests_in_flight.max(1),
            )),
            limits,
        });
        dashboard::spawn_publisher(gateway.clone());
        order_watch::spawn_listener(gateway.clone());
        idempotency::spawn_pruner(gateway.clone());
        crate::telemetry::metrics::handle();
        gateway
    }
}

pub fn router(state: AppState) -> Router {
    let (router, mut api) = documented_routes().split_for_parts();
    utoipa::Modify::modify(&openapi::CommonErrors, &mut api);
    router
        .route("/ws/dashboard", get(dashboard::websocket))
        .merge(utoipa_swagger_ui::SwaggerUi::new("/docs").url("/openapi.json", api))
        .fallback(fallback)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            idempotency::idempotency,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ))
        .layer(tower::util::option_layer(cors(&state.access)))
        // Outermost: every answer, refusals included, gets an id and is
        // counted.
        .layer(middleware::from_fn_with_state(
            state.clone(),
            front_door::front_door,
        ))
        .with_state(state)
}

/// CORS for the configured origins; with none, no CORS layer at all, so
/// browsers keep other sites' pages out.
fn cors(access: &Access) -> Option<tower_http::cors::CorsLayer> {
    use tower_http::cors::{AllowOrigin, CorsLayer};
    if access.cors_origins.is_empty() {
        return None;
    }
    let layer = CorsLayer::new()
        .allow_origin(AllowOrigin::list(access.cors_origins.clone()))
        .allow_methods([axum::http::Method::GET, axum::http::Method::POST])
        .allow_headers([
            header::CONTENT_TYPE,
            header::AUTHORIZATION,
            axum::http::HeaderName::from_static(front_door::REQUEST_ID),
            axum::http::HeaderName::from_static(idempotency::IDEMPOTENCY_KEY),
        ])
        .expose_headers([
            header::LOCATION,
            header::RETRY_AFTER,
            axum::http::HeaderName::from_static(front_door::REQUEST_ID),
        ]);
    Some(layer)
}

/// The OpenAPI document the gateway serves at `/openapi.json`.
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    let (_, mut api) = documented_routes().split_for_parts();
    utoipa::Modify::modify(&openapi::CommonErrors, &mut api);
    api
}

/// Every documented route: the API, the probes and the metrics. Paths are
/// registered without a trailing slash; `serve` strips one from /api/
/// paths before routing, so `/api/orders/` works as the reference's did.
pub fn documented_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(products::list, products::create))
        .routes(routes!(products::one))
        .routes(routes!(products::receive_stock))
        .routes(routes!(orders::list, orders::place))
        .routes(routes!(orders::one))
        .routes(routes!(orders::cancel))
        .routes(routes!(orders::ship))
        .routes(routes!(restock::list))
        .routes(routes!(restock::receive))
        .routes(routes!(operations::events))
        .routes(routes!(dashboard::stats))
        .routes(routes!(operations::alerts))
        .routes(routes!(operations::dead_letters))
        .routes(routes!(operations::replay_dead_letters))
        .routes(routes!(operations::purge_dead_letters))
        .routes(routes!(simulator_control::get, simulator_control::control))
        .routes(routes!(probes::health))
        .routes(routes!(probes::ready))
        .routes(routes!(probes::metrics))
}

/// `/api/orders/` is `/api/orders`, as the reference's routes took both.
/// Only under /api/: the docs page's own paths end in a slash.
pub fn trim_api_trailing_slash(mut request: axum::extract::Request) -> axum::extract::Request {
    let path = request.uri().path();
    if path.starts_with("/api/") && path.len() > "/api/".len() && path.ends_with('/') {
        let trimmed = path.trim_end_matches('/');
        let rebuilt = match request.uri().query() {
            Some(query) => format!("{trimmed}?{query}"),
            None => trimmed.to_string(),
        };
        if let Ok(uri) = rebuilt.parse() {
            *request.uri_mut() = uri;
        }
    }
    request
}

/// Unknown API paths get a JSON 404; everything else is the dashboard's.
async fn fallback(uri: axum::http::Uri) -> Response {
    if uri.path().starts_with("/api/") || uri.path().starts_with("/ws/") {
        return ApiError::not_found(format!("no route {}", uri.path())).into_response();
    }
    assets::serve(uri).await
}

impl Gateway {
    /// Appends an event durably, recording its latency and outcome. When
    /// every append slot stays taken for a moment, the log is behind the
    /// offered load: the request is refused (503, Retry-After) rather than
    /// queued without bound.
    pub async fn append(
        &self,
        envelope: &crate::domain::Envelope,
    ) -> Result<crate::stream::AppendReceipt, ApiError> {
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
        let outcome = if result.is_ok() { "ok" } else { "error" };
        metrics::counter!(crate::telemetry::metrics::EVENTS_APPENDED, "type" => envelope.event_type.clone(), "result" => outcome).increment(1);
        metrics::histogram!(crate::telemetry::metrics::APPEND_SECONDS)
            .record(started.elapsed().as_secs_f64());
        Ok(result?)
    }
}

/// A list route's `?status=` filter: case-insensitive, one of the
/// statuses of what is listed; empty or absent means no filter.
#[derive(Debug, serde::Deserialize)]
pub struct StatusFilter {
    pub status: Option<String>,
}

impl StatusFilter {
    pub fn parse<S: Named>(&self) -> Result<Option<S>, ApiError> {
        match self.status.as_deref() {
            None | Some("") => Ok(None),
            Some(raw) => S::parse(&raw.to_ascii_uppercase())
                .map(Some)
                .ok_or_else(|| {
                    let names: Vec<&str> = S::ALL.iter().map(|s| s.as_str()).collect();
                    ApiError::invalid("status", format!("must be one of {}", names.join(", ")))
                }),
        }
    }
}

/// Every list route's paging, `?limit=` (1–1000, default 100) and
/// `?after=<id of the last item seen>`, read from the query string beside
/// the route's own filters and checked in one place. `Id` is the listed
/// items' id type, so a product id is refused as an order list's cursor.
#[derive(Debug, Clone, Copy)]
pub struct Paging<Id> {
    pub limit: i64,
    pub after: Option<Id>,
}

/// Items per page when `?limit=` is absent, and the most a page may hold.
const DEFAULT_PAGE: i64 = 100;
const MAX_PAGE: i64 = 1000;

#[derive(Debug, serde::Deserialize)]
struct PagingQuery<Id> {
    limit: Option<i64>,
    after: Option<Id>,
}

/// A `?limit=` alone (the alerts and dead letters, which are not paged).
pub fn page_limit(limit: Option<i64>) -> Result<i64, ApiError> {
    match limit {
        None => Ok(DEFAULT_PAGE),
        Some(n) if (1..=MAX_PAGE).contains(&n) => Ok(n),
        Some(_) => Err(ApiError::invalid(
            "limit",
            format!("must be between 1 and {MAX_PAGE}"),
        )),
    }
}

impl<S, Id> FromRequestParts<S> for Paging<Id>
where
    S: Send + Sync,
    Id: serde::de::DeserializeOwned + Send,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Paging<Id>, ApiError> {
        let ApiQuery(query) = ApiQuery::<PagingQuery<Id>>::from_request_parts(parts, state).await?;
        Ok(Paging {
            limit: page_limit(query.limit)?,
            after: query.after,
        })
    }
}
