//! The gateway's router: the documented routes (and the OpenAPI document
//! made from them), the dashboard's WebSocket, the docs page, and the
//! layers every request passes (front door, CORS, token, idempotency, body
//! limit).

use super::error::ApiError;
use super::extract::MAX_BODY_BYTES;
use super::{
    adjustments, assets, auth, backorders, dashboard, feed, front_door, fulfilments, idempotency,
    imports, ledger, locations, openapi, operations, orders, probes, products, restock,
    simulator_control, subscriptions, transfers, Access, AppState,
};
use axum::extract::DefaultBodyLimit;
use axum::http::header;
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

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
        .allow_methods([
            axum::http::Method::GET,
            axum::http::Method::POST,
            axum::http::Method::PATCH,
        ])
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
        .routes(routes!(products::one, backorders::update))
        .routes(routes!(backorders::queue))
        .routes(routes!(products::export))
        .routes(routes!(products::receive_stock))
        .routes(routes!(adjustments::request, adjustments::list))
        .routes(routes!(adjustments::one))
        .routes(routes!(adjustments::count))
        .routes(routes!(ledger::list))
        .routes(routes!(locations::list, locations::create))
        .routes(routes!(locations::one, locations::update))
        .routes(routes!(locations::stock))
        .routes(routes!(transfers::list, transfers::request))
        .routes(routes!(transfers::one))
        .routes(routes!(transfers::receive))
        .routes(routes!(imports::stock))
        .routes(routes!(orders::list, orders::place))
        .routes(routes!(orders::one))
        .routes(routes!(orders::cancel))
        .routes(routes!(orders::commit))
        .routes(routes!(orders::ship))
        .routes(routes!(fulfilments::ship))
        .routes(routes!(fulfilments::shipment))
        .routes(routes!(fulfilments::take_back))
        .routes(routes!(fulfilments::one_return))
        .routes(routes!(restock::list))
        .routes(routes!(restock::receive))
        .routes(routes!(operations::events))
        .routes(routes!(feed::feed))
        .routes(routes!(subscriptions::list, subscriptions::create))
        .routes(routes!(subscriptions::get, subscriptions::delete))
        .routes(routes!(subscriptions::pause))
        .routes(routes!(subscriptions::resume))
        .routes(routes!(subscriptions::rewind))
        .routes(routes!(subscriptions::deliveries))
        .routes(routes!(dashboard::stats))
        .routes(routes!(operations::alerts))
        .routes(routes!(operations::dead_letters))
        .routes(routes!(operations::replay_dead_letters))
        .routes(routes!(operations::purge_dead_letters))
        .routes(routes!(operations::lost_log_entries))
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
