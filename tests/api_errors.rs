//! Bad input gets a 4xx with a JSON error naming the problem, never a 5xx,
//! and records nothing.

use crate::common;

use common::{Backend, TestApp};
use serde_json::{json, Value};
use streamstock::domain::status::OrderStatus;

fn error_code(body: &Value) -> &str {
    body["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("not a JSON error: {body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clear_json_errors() {
    let app = TestApp::spawn(Backend::EmbeddedSqlite).await;
    let product = app.create_product("ERR-1", 19.99, 5).await;

    // Duplicate sku.
    let error = app
        .add_product(&json!({ "sku": "ERR-1", "name": "Again", "price": 1 }))
        .await
        .error(409);
    assert_eq!(error.code, "conflict");

    // Field validation names the field.
    let cases = [
        (json!({ "sku": "", "name": "x", "price": 1 }), "sku"),
        (
            json!({ "sku": "OK-1", "name": "x", "price": 1.234 }),
            "price",
        ),
        (json!({ "sku": "OK-1", "name": "x", "price": -5 }), "price"),
        (json!({ "sku": "OK-1", "name": "  ", "price": 5 }), "name"),
        (
            json!({ "sku": "OK-1", "name": "x", "price": 5, "initial_stock": -1 }),
            "initial_stock",
        ),
        (json!({ "sku": "OK-1", "name": "x" }), "price"),
    ];
    for (body, field) in cases {
        let error = app.add_product(&body).await.error(422);
        assert!(error.message.contains(field), "{body} → {error:?}");
    }

    let order = |items: Value| json!({ "customer_email": "a@example.com", "items": items });
    let cases = [
        (
            json!({ "customer_email": "nope", "items": [{ "product_id": product, "quantity": 1 }] }),
            "customer_email",
        ),
        (order(json!([])), "items"),
        (
            order(json!([{ "product_id": product, "quantity": 0 }])),
            "items[0].quantity",
        ),
        (
            order(json!([{ "product_id": product, "quantity": "2" }])),
            "items[0].quantity",
        ),
        (
            order(json!([{ "product_id": "not-a-uuid", "quantity": 1 }])),
            "items[0].product_id",
        ),
        (
            order(json!([{ "product_id": uuid::Uuid::now_v7(), "quantity": 1 }])),
            "unknown product",
        ),
        (
            order(json!([{ "product_id": product, "quantity": 1, "unit_price": 20.00 }])),
            "catalog price",
        ),
    ];
    for (body, needle) in cases {
        let error = app.place_order(&body).await.error(422);
        assert!(error.message.contains(needle), "{body} → {error:?}");
    }
    // The right unit price is accepted.
    app.place_order(&order(
        json!([{ "product_id": product, "quantity": 1, "unit_price": 19.99 }]),
    ))
    .await
    .expect(202);

    // Malformed JSON, wrong content type, oversized body.
    let raw = |body: &'static str, content_type: &'static str| {
        app.send(
            app.http
                .post(app.url("/api/orders"))
                .header("content-type", content_type)
                .body(body),
        )
    };
    let r = raw("{not json", "application/json").await;
    assert_eq!(r.status, 400);
    assert_eq!(error_code(&r.body), "invalid_json");
    let r = raw("{}", "text/plain").await;
    assert_eq!(r.status, 415);
    let big = "x".repeat(100 * 1024);
    let r = app
        .send(
            app.http
                .post(app.url("/api/orders"))
                .header("content-type", "application/json")
                .body(format!("{{\"customer_email\":\"{big}\"}}")),
        )
        .await;
    assert_eq!(r.status, 413);

    // Unknown things.
    let error = app.product(uuid::Uuid::now_v7()).await.error(404);
    assert_eq!(error.code, "not_found");
    let (status, body) = app.get("/api/products/123").await;
    assert_eq!((status, error_code(&body)), (400, "invalid_path"));
    let (status, body) = app.get("/api/nothing-here").await;
    assert_eq!((status, error_code(&body)), (404, "not_found"));
    for query in ["status=LOST", "limit=0"] {
        let error = app.orders(query).await.error(422);
        assert_eq!(error.code, "invalid_field", "{query}");
    }
    let refused = app.receive_stock(uuid::Uuid::now_v7(), 1).await;
    assert_eq!(refused.status, 404);

    // The lifecycle, restock and audit routes.
    let empty = json!({});
    let (status, body) = app.post("/api/orders/123/ship", &empty).await;
    assert_eq!((status, error_code(&body)), (400, "invalid_path"));
    let error = app.cancel(uuid::Uuid::new_v4()).await.error(404);
    assert_eq!(error.code, "not_found");
    let error = app
        .receive_purchase_order(uuid::Uuid::now_v7())
        .await
        .error(404);
    assert_eq!(error.code, "not_found");
    let (status, body) = app.post("/api/purchase-orders/x/receive", &empty).await;
    assert_eq!((status, error_code(&body)), (400, "invalid_path"));
    for path in [
        "/api/purchase-orders?status=LOST",
        "/api/purchase-orders?limit=5000",
        "/api/events?limit=0",
        &format!("/api/events?key={}", "k".repeat(201)),
        &format!("/api/events?after={}", uuid::Uuid::now_v7()),
    ] {
        let (status, body) = app.get(path).await;
        assert_eq!(
            (status, error_code(&body)),
            (422, "invalid_field"),
            "{path}"
        );
    }
    let (status, body) = app.get("/api/events?after=yesterday").await;
    assert_eq!(status, 400, "{body}");
    error_code(&body);

    // Nothing invalid was recorded: one order, the valid one.
    app.wait_until_decided(1).await;
    let stats = app.stats().await.expect(200);
    assert_eq!(stats.figures.order_count, 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_returns_the_decision_and_paging_works() {
    let app = TestApp::spawn(Backend::EmbeddedSqlite).await;
    let product = app.create_product("POLL-1", 3.00, 2).await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let (status, body) = app
            .post("/api/orders/", &json!({ "customer_email": format!("p{i}@example.com"), "items": [{ "product_id": product, "quantity": 1 }] }))
            .await;
        assert_eq!(status, 202);
        ids.push(body["order_id"].as_str().unwrap().to_string());
    }
    let order = app.order_waiting(&ids[2], 10).await.expect(200);
    assert_ne!(order.status, OrderStatus::Pending);
    app.wait_until_decided(3).await;

    let first_page = app.orders("limit=2").await.expect(200);
    assert_eq!(first_page.len(), 2);
    let after = first_page[1].order_id;
    let second_page = app.orders(&format!("limit=2&after={after}")).await;
    assert_eq!(second_page.expect(200).len(), 1);
    let rejected = app.orders("status=rejected").await.expect(200);
    assert_eq!(rejected.len(), 1);
    app.stop().await;
}

/// Sends a WebSocket upgrade request for the dashboard feed on a raw
/// connection and returns the connection and the answer's head (status
/// line and headers, lowercased).
async fn open_dashboard_socket(address: &str) -> (tokio::net::TcpStream, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let request = format!(
        "GET /ws/dashboard HTTP/1.1\r\nHost: {address}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    (
        stream,
        String::from_utf8(head).unwrap().to_ascii_lowercase(),
    )
}

/// The dashboard feed serves at most `--max-dashboard-clients` sockets;
/// one more gets 503 with Retry-After, and a slot freed is taken again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_sockets_beyond_the_limit_get_503() {
    let dir = tempfile::tempdir().unwrap();
    let common = common::isolated_settings(Backend::EmbeddedSqlite, dir.path()).await;
    let app = TestApp::spawn_with_args(common, |args| {
        args.gateway.max_dashboard_clients = 1;
    })
    .await;
    let address = app.base.trim_start_matches("http://").to_string();
    let (first, head) = open_dashboard_socket(&address).await;
    assert!(head.starts_with("http/1.1 101 "), "{head}");
    let (_, head) = open_dashboard_socket(&address).await;
    assert!(head.starts_with("http/1.1 503 "), "{head}");
    assert!(head.contains("\r\nretry-after: 1\r\n"), "{head}");

    // The first client leaves: its slot is free again.
    drop(first);
    app.wait_for("the freed dashboard slot", || async {
        open_dashboard_socket(&address)
            .await
            .1
            .starts_with("http/1.1 101 ")
    })
    .await;
    app.stop().await;
}
