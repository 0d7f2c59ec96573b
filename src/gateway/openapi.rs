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
        (name = "orders", description = "Orders and their lifecycle"),
        (name = "restock", description = "Purchase orders drafted when stock runs low"),
        (name = "operations", description = "Alerts, the audit trail, dead letters, figures"),
        (name = "probes", description = "Health, readiness and metrics")
    ),
    modifiers(&BearerToken)
)]
pub struct ApiDoc;

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
