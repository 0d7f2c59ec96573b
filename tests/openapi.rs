//! The OpenAPI document and the docs page: `/openapi.json` is OpenAPI 3.1
//! and lists every route the gateway serves, each documented route is
//! served, and `/docs` is Swagger UI from the binary itself.

use crate::common;

use common::{Backend, TestApp};
use serde_json::Value;

/// Every route the gateway serves besides the dashboard, its WebSocket and
/// the docs themselves, as (method, path template).
const SERVED: &[(&str, &str)] = &[
    ("get", "/api/products"),
    ("post", "/api/products"),
    ("get", "/api/products/{id}"),
    ("post", "/api/products/{id}/stock"),
    ("get", "/api/products/{id}/adjustments"),
    ("post", "/api/products/{id}/adjustments"),
    ("get", "/api/products/{id}/adjustments/{adjustment_id}"),
    ("get", "/api/products/{id}/ledger"),
    ("get", "/api/products/export.csv"),
    ("post", "/api/imports/stock"),
    ("post", "/api/products/{id}/counts"),
    ("get", "/api/locations"),
    ("post", "/api/locations"),
    ("get", "/api/locations/{id}"),
    ("patch", "/api/locations/{id}"),
    ("get", "/api/locations/{id}/stock"),
    ("get", "/api/transfers"),
    ("post", "/api/transfers"),
    ("get", "/api/transfers/{id}"),
    ("post", "/api/transfers/{id}/receive"),
    ("get", "/api/orders"),
    ("post", "/api/orders"),
    ("get", "/api/orders/{id}"),
    ("post", "/api/orders/{id}/cancel"),
    ("post", "/api/orders/{id}/commit"),
    ("patch", "/api/products/{id}"),
    ("get", "/api/products/{id}/backorders"),
    ("post", "/api/orders/{id}/ship"),
    ("post", "/api/orders/{id}/shipments"),
    ("get", "/api/orders/{id}/shipments/{shipment_id}"),
    ("post", "/api/orders/{id}/returns"),
    ("get", "/api/orders/{id}/returns/{return_id}"),
    ("get", "/api/purchase-orders"),
    ("post", "/api/purchase-orders/{id}/receive"),
    ("get", "/api/events"),
    ("get", "/api/feed"),
    ("get", "/api/subscriptions"),
    ("post", "/api/subscriptions"),
    ("get", "/api/subscriptions/{id}"),
    ("delete", "/api/subscriptions/{id}"),
    ("post", "/api/subscriptions/{id}/pause"),
    ("post", "/api/subscriptions/{id}/resume"),
    ("post", "/api/subscriptions/{id}/rewind"),
    ("get", "/api/subscriptions/{id}/deliveries"),
    ("get", "/api/stats"),
    ("get", "/api/alerts"),
    ("get", "/api/dead-letters"),
    ("post", "/api/dead-letters/replay"),
    ("post", "/api/dead-letters/purge"),
    ("get", "/api/lost-log-entries"),
    ("get", "/api/simulator"),
    ("post", "/api/simulator"),
    ("get", "/health"),
    ("get", "/ready"),
    ("get", "/metrics"),
];

async fn document(app: &TestApp) -> Value {
    let (status, doc) = app.get("/openapi.json").await;
    assert_eq!(status, 200);
    doc
}

fn documented(doc: &Value) -> Vec<(String, String)> {
    let mut routes = Vec::new();
    for (path, operations) in doc["paths"].as_object().unwrap() {
        for method in operations.as_object().unwrap().keys() {
            routes.push((method.clone(), path.clone()));
        }
    }
    routes.sort();
    routes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_lists_exactly_the_routes_served() {
    let app = TestApp::spawn(Backend::EmbeddedSqlite).await;
    let doc = document(&app).await;
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    let mut served: Vec<(String, String)> = SERVED
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    served.sort();
    assert_eq!(documented(&doc), served);

    // Every documented route is routed (not the fallback's 404, not 405).
    let id = uuid::Uuid::new_v4();
    for (method, path) in documented(&doc) {
        let url = app.url(&path.replace("{id}", &id.to_string()));
        let request = match method.as_str() {
            "get" => app.http.get(url),
            "post" => app.http.post(url).json(&serde_json::json!({})),
            "patch" => app.http.patch(url).json(&serde_json::json!({})),
            "delete" => app.http.delete(url),
            other => panic!("unexpected method {other}"),
        };
        let answer = app.send(request).await;
        let (status, body) = (answer.status, answer.body);
        let message = body["error"]["message"].as_str().unwrap_or("");
        assert!(
            status != 405 && !message.starts_with("no route"),
            "{method} {path} is documented but not routed: {status} {body}"
        );
    }

    // Schemas exist for the bodies and the error shape.
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for name in [
        "ErrorBody",
        "OrderView",
        "ProductView",
        "PlaceOrder",
        "CreateProduct",
        "Stats",
    ] {
        assert!(schemas.contains_key(name), "no schema {name}");
    }
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    app.stop().await;
}

/// Routes can only be added with their documentation: the gateway registers
/// its API through `routes!`, never a bare `.route("/api…`.
#[test]
fn api_routes_are_registered_only_with_their_docs() {
    let source = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/gateway/mod.rs"),
    )
    .unwrap();
    for bare in [
        ".route(\"/api",
        ".route(\"/health",
        ".route(\"/ready",
        ".route(\"/metrics",
    ] {
        assert!(
            !source.contains(bare),
            "a route registered without docs: {bare}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docs_are_served_from_the_binary() {
    let app = TestApp::spawn(Backend::EmbeddedSqlite).await;
    let page = app.http.get(app.url("/docs/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("swagger-ui"), "{html}");
    assert!(!html.contains("https://"), "no CDN: {html}");
    let redirect = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(app.url("/docs"))
        .send()
        .await
        .unwrap();
    assert!(redirect.status().is_redirection() || redirect.status() == 200);
    for asset in [
        "/docs/swagger-ui.css",
        "/docs/swagger-ui-bundle.js",
        "/docs/swagger-initializer.js",
    ] {
        let answer = app.http.get(app.url(asset)).send().await.unwrap();
        assert_eq!(answer.status(), 200, "{asset}");
    }
    let init = app
        .http
        .get(app.url("/docs/swagger-initializer.js"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(init.contains("/openapi.json"), "{init}");
    app.stop().await;
}

/// The committed contract files are what the code makes today:
/// `web/openapi.json` is `streamstock openapi`, and `web/src/api.ts` (the
/// dashboard's types) is openapi-typescript's output for it. Run
/// `./scripts/gen-types.sh` after changing a route or a type.
#[test]
fn the_dashboard_types_come_from_the_current_document() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let hint = "out of date: run ./scripts/gen-types.sh";
    let printed = std::process::Command::new(common::process::BIN)
        .arg("openapi")
        .output()
        .unwrap();
    assert!(printed.status.success());
    let current: Value = serde_json::from_slice(&printed.stdout).unwrap();
    let committed: Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("web/openapi.json")).unwrap())
            .unwrap();
    assert!(current == committed, "web/openapi.json is {hint}");

    let generated = tempfile::tempdir().unwrap().keep().join("api.ts");
    let cli = root.join("web/node_modules/openapi-typescript/bin/cli.js");
    let status = std::process::Command::new("node")
        .arg(&cli)
        .arg(root.join("web/openapi.json"))
        .arg("-o")
        .arg(&generated)
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", cli.display()));
    assert!(status.success(), "openapi-typescript failed");
    assert_eq!(
        std::fs::read_to_string(&generated).unwrap(),
        std::fs::read_to_string(root.join("web/src/api.ts")).unwrap(),
        "web/src/api.ts is {hint}"
    );
}

/// Operation ids name the operations in generated clients: one each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operation_ids_are_unique() {
    let app = TestApp::spawn(Backend::EmbeddedSqlite).await;
    let doc = document(&app).await;
    let mut ids = std::collections::BTreeSet::new();
    for operations in doc["paths"].as_object().unwrap().values() {
        for operation in operations.as_object().unwrap().values() {
            let id = operation["operationId"].as_str().unwrap().to_string();
            assert!(ids.insert(id.clone()), "operationId {id} twice");
        }
    }
    app.stop().await;
}
