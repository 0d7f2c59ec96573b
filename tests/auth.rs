//! Tokens and their scopes: once any token is configured, everything under
//! /api/ and /ws/, and /metrics, needs one of enough scope (read < write <
//! admin); wrong tokens past a bound get 429; each command's events name
//! its token; SIGHUP rotates them. `--api-token` (from a file too) is one
//! admin token. CORS opens the API only to the origins named.

use crate::common;

use common::process::{embedded_all, free_port, Role};
use common::{Backend, TestApp};
use reqwest::Method;
use serde_json::json;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use streamstock::gateway::auth::Scope;

const TOKEN: &str = "s3cret-token";

async fn app_with(adjust: impl FnOnce(&mut streamstock::cli::config::AllArgs)) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let common = common::isolated_settings(Backend::EmbeddedSqlite, dir.path()).await;
    let mut app = TestApp::spawn_with_args(common, adjust).await;
    app.keep_data_dir(dir);
    app
}

/// Who may do what: each route (method and path template) and the least
/// scope it needs; None: open to anyone.
const WHO_MAY: &[(&str, &str, Option<Scope>)] = &[
    ("get", "/api/products", Some(Scope::Read)),
    ("post", "/api/products", Some(Scope::Write)),
    ("get", "/api/products/{id}", Some(Scope::Read)),
    ("post", "/api/products/{id}/stock", Some(Scope::Write)),
    ("get", "/api/products/{id}/adjustments", Some(Scope::Read)),
    ("post", "/api/products/{id}/adjustments", Some(Scope::Write)),
    (
        "get",
        "/api/products/{id}/adjustments/{adjustment_id}",
        Some(Scope::Read),
    ),
    ("get", "/api/products/{id}/ledger", Some(Scope::Read)),
    ("get", "/api/products/export.csv", Some(Scope::Read)),
    ("post", "/api/imports/stock", Some(Scope::Write)),
    ("post", "/api/products/{id}/counts", Some(Scope::Write)),
    ("get", "/api/locations", Some(Scope::Read)),
    ("post", "/api/locations", Some(Scope::Write)),
    ("get", "/api/locations/{id}", Some(Scope::Read)),
    ("patch", "/api/locations/{id}", Some(Scope::Write)),
    ("get", "/api/locations/{id}/stock", Some(Scope::Read)),
    ("get", "/api/transfers", Some(Scope::Read)),
    ("post", "/api/transfers", Some(Scope::Write)),
    ("get", "/api/transfers/{id}", Some(Scope::Read)),
    ("post", "/api/transfers/{id}/receive", Some(Scope::Write)),
    ("get", "/api/orders", Some(Scope::Read)),
    ("post", "/api/orders", Some(Scope::Write)),
    ("get", "/api/orders/{id}", Some(Scope::Read)),
    ("post", "/api/orders/{id}/cancel", Some(Scope::Write)),
    ("post", "/api/orders/{id}/commit", Some(Scope::Write)),
    ("patch", "/api/products/{id}", Some(Scope::Write)),
    ("get", "/api/products/{id}/backorders", Some(Scope::Read)),
    ("post", "/api/orders/{id}/ship", Some(Scope::Write)),
    ("post", "/api/orders/{id}/shipments", Some(Scope::Write)),
    (
        "get",
        "/api/orders/{id}/shipments/{shipment_id}",
        Some(Scope::Read),
    ),
    ("post", "/api/orders/{id}/returns", Some(Scope::Write)),
    (
        "get",
        "/api/orders/{id}/returns/{return_id}",
        Some(Scope::Read),
    ),
    ("get", "/api/purchase-orders", Some(Scope::Read)),
    (
        "post",
        "/api/purchase-orders/{id}/receive",
        Some(Scope::Write),
    ),
    ("get", "/api/events", Some(Scope::Read)),
    ("get", "/api/feed", Some(Scope::Read)),
    ("get", "/api/subscriptions", Some(Scope::Read)),
    ("post", "/api/subscriptions", Some(Scope::Admin)),
    ("get", "/api/subscriptions/{id}", Some(Scope::Read)),
    ("delete", "/api/subscriptions/{id}", Some(Scope::Admin)),
    ("post", "/api/subscriptions/{id}/pause", Some(Scope::Admin)),
    ("post", "/api/subscriptions/{id}/resume", Some(Scope::Admin)),
    ("post", "/api/subscriptions/{id}/rewind", Some(Scope::Admin)),
    (
        "get",
        "/api/subscriptions/{id}/deliveries",
        Some(Scope::Read),
    ),
    ("get", "/api/stats", Some(Scope::Read)),
    ("get", "/api/alerts", Some(Scope::Read)),
    ("get", "/api/dead-letters", Some(Scope::Read)),
    ("post", "/api/dead-letters/replay", Some(Scope::Admin)),
    ("post", "/api/dead-letters/purge", Some(Scope::Admin)),
    ("get", "/api/lost-log-entries", Some(Scope::Read)),
    ("get", "/api/simulator", Some(Scope::Read)),
    ("post", "/api/simulator", Some(Scope::Admin)),
    ("get", "/health", None),
    ("get", "/ready", None),
    ("get", "/metrics", Some(Scope::Read)),
    // Served beside the documented routes.
    ("get", "/ws/dashboard", Some(Scope::Read)),
    ("get", "/", None),
    ("get", "/docs/", None),
    ("get", "/openapi.json", None),
];

const TOKENS: [(&str, Scope, &str); 3] = [
    ("wall-screen", Scope::Read, "read-token-1"),
    ("shop", Scope::Write, "write-token-2"),
    ("ops", Scope::Admin, "admin-token-3"),
];

/// A tokens file holding `tokens` (name, scope, token), by their digests.
fn tokens_file(dir: &Path, tokens: &[(&str, Scope, &str)]) -> PathBuf {
    let mut text = String::new();
    for (name, scope, token) in tokens {
        let digest = hex::encode(streamstock::gateway::auth::tokens::digest_of(token));
        text.push_str(&format!(
            "[[token]]\nname = \"{name}\"\nscope = \"{}\"\nsha256 = \"{digest}\"\n\n",
            scope.name()
        ));
    }
    let path = dir.join("tokens.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// A client whose requests come from `address` (a loopback address of its
/// own, so wrong tokens it sends count against it alone).
fn client_from(address: [u8; 4]) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(std::net::IpAddr::from(address))
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_each_scope_as_the_table_says() {
    // The table covers every documented route, and nothing else.
    let documented = streamstock::gateway::openapi_document();
    let mut listed: BTreeSet<(String, String)> = BTreeSet::new();
    for (path, item) in &documented.paths.paths {
        for (method, operation) in [
            ("get", &item.get),
            ("post", &item.post),
            ("patch", &item.patch),
        ] {
            if operation.is_some() {
                listed.insert((method.to_string(), path.clone()));
            }
        }
    }
    for (method, path) in &listed {
        assert!(
            WHO_MAY.iter().any(|(m, p, _)| m == method && p == path),
            "{method} {path} is a route the scope table does not list: add it to WHO_MAY"
        );
    }

    let dir = tempfile::tempdir().unwrap();
    let file = tokens_file(dir.path(), &TOKENS);
    let app = app_with(|args| args.gateway.tokens_file = Some(file)).await;
    let id = uuid::Uuid::now_v7();
    for (n, (method, template, needed)) in WHO_MAY.iter().enumerate() {
        // A v4 adjustment id was never issued by a gateway: its read
        // answers at once (a recent v7 one would be waited for).
        let path = template
            .replace("{id}", &id.to_string())
            .replace("{adjustment_id}", &uuid::Uuid::new_v4().to_string());
        let websocket = template.starts_with("/ws/");
        let send = |client: &reqwest::Client, token: Option<&str>| {
            let mut request = match *method {
                "post" => client.post(app.url(&path)).json(&json!({})),
                "patch" => client.patch(app.url(&path)).json(&json!({})),
                "delete" => client.delete(app.url(&path)),
                _ => client.get(app.url(&path)),
            };
            if websocket {
                request = request
                    .header("connection", "upgrade")
                    .header("upgrade", "websocket")
                    .header("sec-websocket-version", "13")
                    .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==");
            }
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            app.send(request)
        };
        let own = client_from([127, 0, 1, n as u8 + 1]);
        let refused = |status: u16| status == 401 || status == 403 || status == 429;
        for (who, token) in [("no token", None), ("a wrong token", Some("guess"))] {
            let answer = send(&own, token).await;
            match needed {
                None => assert!(
                    !refused(answer.status),
                    "{method} {template} with {who}: {}",
                    answer.status
                ),
                Some(_) => {
                    assert_eq!(answer.status, 401, "{method} {template} with {who}");
                    assert_eq!(answer.header("www-authenticate"), Some("Bearer"));
                    assert_eq!(answer.body["error"]["code"], "unauthorized");
                }
            }
        }
        for (name, scope, token) in TOKENS {
            let answer = send(&own, Some(token)).await;
            let allowed = needed.is_none_or(|needed| scope >= needed);
            if allowed {
                assert!(
                    !refused(answer.status) && answer.status < 500,
                    "{method} {template} with {name} ({}): {}",
                    scope.name(),
                    answer.status
                );
            } else {
                assert_eq!(answer.status, 403, "{method} {template} with {name}");
                assert_eq!(answer.body["error"]["code"], "insufficient_scope");
                let challenge = answer.header("www-authenticate").unwrap_or_default();
                assert!(challenge.contains("insufficient_scope"), "{challenge}");
            }
        }
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_tokens_past_the_bound_get_429_for_that_address_only() {
    let dir = tempfile::tempdir().unwrap();
    let file = tokens_file(dir.path(), &TOKENS);
    let app = app_with(|args| args.gateway.tokens_file = Some(file)).await;
    let guesser = client_from([127, 0, 2, 1]);
    let customer = client_from([127, 0, 2, 2]);
    let get = |client: &reqwest::Client, token: &str| {
        app.send(client.get(app.url("/api/orders")).bearer_auth(token))
    };
    // A request with no token at all is no guess: a page that has not
    // been given its token yet does not lock itself out.
    for _ in 0..30 {
        assert_eq!(
            app.send(guesser.get(app.url("/api/orders"))).await.status,
            401
        );
    }
    for n in 0..20 {
        assert_eq!(get(&guesser, &format!("guess-{n}")).await.status, 401);
    }
    let blocked = get(&guesser, "read-token-1").await;
    assert_eq!(blocked.status, 429, "the right token after 20 guesses");
    assert_eq!(blocked.body["error"]["code"], "too_many_failed_attempts");
    let wait: u64 = blocked.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&wait), "Retry-After {wait}");
    assert_eq!(get(&customer, "read-token-1").await.status, 200);
    app.stop().await;
}

/// `--public-catalog` opens the catalog's reads to anyone, and nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_public_catalog_opens_the_products_reads_only() {
    let dir = tempfile::tempdir().unwrap();
    let file = tokens_file(dir.path(), &TOKENS);
    let app = app_with(|args| {
        args.gateway.tokens_file = Some(file);
        args.gateway.public_catalog = true;
    })
    .await;
    let ops = common::Api::with_token(&app.base, "admin-token-3");
    let product = ops.create_product("PUBLIC-1", 2.0, 5).await;
    let anonymous = |path: String| {
        let app = &app;
        async move { app.send(app.http.get(app.url(&path))).await.status }
    };
    assert_eq!(anonymous("/api/products".into()).await, 200);
    assert_eq!(anonymous(format!("/api/products/{product}")).await, 200);
    // The stock's history (notes, who adjusted) is not the shop front's.
    assert_eq!(
        anonymous(format!("/api/products/{product}/adjustments")).await,
        401
    );
    assert_eq!(
        anonymous(format!("/api/products/{product}/ledger")).await,
        401
    );
    assert_eq!(anonymous("/api/orders".into()).await, 401);
    assert_eq!(anonymous("/api/stats".into()).await, 401);
    let create = app
        .send(
            app.http
                .post(app.url("/api/products"))
                .json(&json!({"sku": "PUBLIC-2", "name": "x", "price": 1.0})),
        )
        .await;
    assert_eq!(create.status, 401);
    app.stop().await;
}

/// Each command's events name the token that sent it; the workers'
/// decisions name none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_trail_names_the_token_that_sent_each_command() {
    let dir = tempfile::tempdir().unwrap();
    let file = tokens_file(dir.path(), &TOKENS);
    let app = app_with(|args| args.gateway.tokens_file = Some(file)).await;
    let shop = common::Api::with_token(&app.base, "write-token-2");
    let ops = common::Api::with_token(&app.base, "admin-token-3");
    let product = ops.create_product("ACTOR-1", 3.0, 10).await;
    let order = shop
        .order_of("buyer@example.com", &[(product, 2)])
        .await
        .expect(202);
    let decided = shop.order_waiting(order.order_id, 10).await.expect(200);
    assert_eq!(
        decided.status,
        streamstock::domain::status::OrderStatus::Confirmed
    );
    let trail = |key: String| {
        let ops = &ops;
        async move {
            let (status, body) = ops.get(&format!("/api/events?key={key}")).await;
            assert_eq!(status, 200);
            body.as_array().unwrap().clone()
        }
    };
    let order_events = trail(order.order_id.to_string()).await;
    let actor_of = |events: &[serde_json::Value], event_type: &str| {
        events
            .iter()
            .find(|e| e["event_type"] == event_type)
            .unwrap_or_else(|| panic!("no {event_type} in {events:?}"))["actor"]
            .clone()
    };
    assert_eq!(actor_of(&order_events, "order.placed"), "shop");
    assert_eq!(
        actor_of(&order_events, "order.confirmed"),
        serde_json::Value::Null
    );
    let product_events = trail(product.to_string()).await;
    assert_eq!(actor_of(&product_events, "product.created"), "ops");
    app.stop().await;
}

/// SIGHUP reads the tokens file again: a token added works without a
/// restart, and one removed stops working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_rotate_on_sighup_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let old = ("shop", Scope::Write, "old-shop-token");
    let new = ("shop-2", Scope::Write, "new-shop-token");
    let file = tokens_file(dir.path(), &[old]);
    let (role, base) = all_with_file(dir.path(), "--tokens-file", &file);
    let anonymous = common::Api::new(&base);
    anonymous.wait_healthy().await;
    let status_with = |token: &'static str| {
        let api = common::Api::with_token(&base, token);
        async move { api.get("/api/orders").await.0 }
    };
    assert_eq!(status_with(old.2).await, 200);
    assert_eq!(status_with(new.2).await, 401);

    // Both valid for a while: the clients move to the new token.
    tokens_file(dir.path(), &[old, new]);
    role.signal("HUP");
    anonymous
        .wait_for("the new token works", || async {
            status_with(new.2).await == 200
        })
        .await;
    assert_eq!(status_with(old.2).await, 200);

    // The old one removed.
    tokens_file(dir.path(), &[new]);
    role.signal("HUP");
    anonymous
        .wait_for("the old token stops working", || async {
            status_with(old.2).await == 401
        })
        .await;
    assert_eq!(status_with(new.2).await, 200);

    // A broken file keeps the tokens in force.
    std::fs::write(&file, "[[token]]\nname = 1\n").unwrap();
    role.signal("HUP");
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(status_with(new.2).await, 200);
    assert!(role.terminate().success());
}

/// `streamstock all` on embedded backends in `dir`, with `flag file`;
/// gives the role and its base URL.
fn all_with_file(dir: &Path, flag: &str, file: &Path) -> (Role, String) {
    let (role, listen) = embedded_all(&dir.join("data"), &[flag, file.to_str().unwrap()], None);
    (role, format!("http://{listen}"))
}

/// `all --api-token-file`: the token comes from the file's first line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_can_come_from_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, format!("{TOKEN}\n")).unwrap();
    let (role, base) = all_with_file(dir.path(), "--api-token-file", &file);
    let api = common::Api::new(&base);
    api.wait_healthy().await;
    let metrics = |token: Option<&str>| {
        let mut request = api.http.get(api.url("/metrics"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        api.send(request)
    };
    assert_eq!(metrics(None).await.status, 401);
    assert_eq!(metrics(Some(TOKEN)).await.status, 200);
    assert!(role.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_opens_the_api_to_the_named_origins_only() {
    let ops = "https://ops.example.com";
    let preflight = |app: &TestApp, origin: &'static str| {
        app.http
            .request(Method::OPTIONS, app.url("/api/orders"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "content-type,authorization",
            )
    };
    let allowed = |answer: &common::Answer| {
        answer
            .header("access-control-allow-origin")
            .map(str::to_string)
    };

    // Closed by default: no origin is allowed.
    let closed = app_with(|_| {}).await;
    let answer = closed.send(preflight(&closed, ops)).await;
    assert_eq!(allowed(&answer), None);
    closed.stop().await;

    let open = app_with(|args| args.gateway.cors_origins = vec![ops.to_string()]).await;
    let answer = open.send(preflight(&open, ops)).await;
    assert!((200..300).contains(&answer.status), "{}", answer.status);
    assert_eq!(allowed(&answer).as_deref(), Some(ops));
    let answer = open
        .send(
            open.http
                .get(open.url("/api/products"))
                .header("origin", ops),
        )
        .await;
    assert_eq!(allowed(&answer).as_deref(), Some(ops));
    let answer = open
        .send(preflight(&open, "https://elsewhere.example"))
        .await;
    assert_eq!(allowed(&answer), None, "an origin not named stays out");
    open.stop().await;
}

/// A worker's /metrics needs the token too; its /health stays open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workers_metrics_need_the_token() {
    let deployment = common::process::SharedDeployment::new().await;
    let port = free_port();
    let worker = Role::start(
        "worker",
        &[
            "worker",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--api-token",
            TOKEN,
        ],
        &deployment.env,
    );
    let api = common::Api::new(&format!("http://127.0.0.1:{port}"));
    api.wait_healthy().await;
    let metrics = |token: Option<&str>| {
        let mut request = api.http.get(api.url("/metrics"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        api.send(request)
    };
    let refused = metrics(None).await;
    assert_eq!(refused.status, 401);
    assert_eq!(refused.body["error"]["code"], "unauthorized");
    assert_eq!(metrics(Some("wrong")).await.status, 401);
    let answer = metrics(Some(TOKEN)).await;
    assert_eq!(answer.status, 200);
    assert!(
        answer.text.contains("streamstock_worker_up"),
        "{}",
        answer.text
    );
    assert_eq!(api.get("/health").await.0, 200);
    assert!(worker.terminate().success());
}
