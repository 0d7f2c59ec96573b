//! The OpenAPI 3.1 document of the gateway, generated from the handlers'
//! `#[utoipa::path]` annotations and the request and response types, and
//! the interactive docs at `/docs` (Swagger UI, vendored in the binary: no
//! CDN, nothing downloaded). The API's routes are registered through
//! `utoipa_axum::routes!`, so a route cannot be served without being
//! documented.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "StreamStock",
        description = "Event-driven inventory: products, stock, orders and their lifecycle, \
                       restocking, and the operations views. Writes are answered once their \
                       event is durable in the log; workers apply them. With --api-token, \
                       writes, /api/events, /api/dead-letters and /metrics need \
                       `Authorization: Bearer <token>`. Every answer carries an x-request-id; \
                       overload and timeouts get 503 with Retry-After."
    ),
    tags(
        (name = "products", description = "The catalog and its stock"),
        (name = "stock", description = "Adjustments and counts of a product's stock"),
        (name = "locations", description = "The places stock is kept in"),
        (name = "orders", description = "Orders and their lifecycle"),
        (name = "restock", description = "Purchase orders drafted when stock runs low"),
        (name = "operations", description = "Alerts, the audit trail, dead letters, figures"),
        (name = "integrations", description = "Every event in order, resumable: the feed (a long poll or Server-Sent Events) and signed webhooks"),
        (name = "probes", description = "Health, readiness and metrics")
    ),
    components(schemas(
        super::dashboard::Snapshot,
        super::dashboard::StatusChanges,
        crate::domain::ShipmentId,
        crate::domain::ReturnId
    )),
    modifiers(&BearerToken)
)]
pub struct ApiDoc;

/// The refusals any route can give before its handler runs, written here
/// once instead of in every handler's annotation: a path, query or body
/// that does not parse (400); without the token where one is required
/// (401, see `auth::needs_token`); for writes, a body over 64 KiB (413) or
/// not JSON (415); and, beyond the gateway's bounds or with a backend out of
/// reach, 503. Applied once the routes have added their paths (see
/// `gateway::router`); a handler's own answer for a status comes first.
pub struct CommonErrors;

impl Modify for CommonErrors {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{ContentBuilder, HttpMethod, Ref, ResponseBuilder};
        let error = |description: &str| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("ErrorBody")))
                        .build(),
                )
                .build()
        };
        for (path, item) in openapi.paths.paths.iter_mut() {
            for (method, operation) in [
                (HttpMethod::Get, item.get.as_mut()),
                (HttpMethod::Post, item.post.as_mut()),
                (HttpMethod::Patch, item.patch.as_mut()),
                (HttpMethod::Delete, item.delete.as_mut()),
            ] {
                let Some(operation) = operation else { continue };
                let mut statuses = vec![
                    ("400", "A path, query or body that does not parse"),
                    (
                        "503",
                        "A backend is unreachable, or the gateway is overloaded or timed out (Retry-After)",
                    ),
                ];
                let http_method = match method {
                    HttpMethod::Post => axum::http::Method::POST,
                    HttpMethod::Patch => axum::http::Method::PATCH,
                    HttpMethod::Delete => axum::http::Method::DELETE,
                    _ => axum::http::Method::GET,
                };
                if let Some(scope) = super::auth::needed_scope(&http_method, path, false) {
                    statuses.push(("401", "A token is required (once any is configured)"));
                    statuses.push((
                        "429",
                        "Too many wrong tokens from this address (Retry-After)",
                    ));
                    if scope > super::auth::Scope::Read {
                        statuses.push(("403", "The token's scope is too narrow"));
                    }
                }
                if method != HttpMethod::Get && method != HttpMethod::Delete {
                    statuses.push(("413", "A body over 64 KiB"));
                    statuses.push(("415", "A body that is not JSON"));
                }
                if method == HttpMethod::Post {
                    statuses.push((
                        "409",
                        "The Idempotency-Key's first request is still being handled",
                    ));
                    statuses.push(("422", "The Idempotency-Key was used for another request"));
                }
                for (status, description) in statuses {
                    operation
                        .responses
                        .responses
                        .entry(status.to_string())
                        .or_insert_with(|| error(description).into());
                }
            }
        }
    }
}

/// The bearer token, as a security scheme the docs page can fill in.
struct BearerToken;

impl Modify for BearerToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}
