//! With `--api-token`: every write and the sensitive reads (audit trail,
//! dead letters, metrics) need the bearer token; the rest stays open. The
//! token can come from a file; CORS opens the API only to the origins named.

use crate::common;

use common::process::{free_port, Role};
use common::{Backend, TestApp};
use reqwest::Method;
use serde_json::json;

const TOKEN: &str = "s3cret-token";

async fn app_with(adjust: impl FnOnce(&mut streamstock::cli::config::AllArgs)) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let common = common::isolated_settings(Backend::EmbeddedSqlite, dir.path()).await;
    let mut app = TestApp::spawn_with_args(common, adjust).await;
    app.keep_data_dir(dir);
    app
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protected_routes_need_the_token_and_open_ones_do_not() {
    let app = app_with(|args| args.gateway.api_token = Some(TOKEN.into())).await;
    let id = uuid::Uuid::now_v7();
    let protected: Vec<(Method, String, serde_json::Value)> = vec![
        (
            Method::POST,
            "/api/products".into(),
            json!({"sku": "AUTH-1", "name": "Auth", "price": 1.0}),
        ),
        (
            Method::POST,
            format!("/api/products/{id}/stock"),
            json!({"quantity": 1}),
        ),
        (
            Method::POST,
            "/api/orders".into(),
            json!({"customer_email": "a@example.com", "items": [{"product_id": id, "quantity": 1}]}),
        ),
        (Method::POST, format!("/api/orders/{id}/cancel"), json!({})),
        (Method::POST, format!("/api/orders/{id}/ship"), json!({})),
        (
            Method::POST,
            format!("/api/purchase-orders/{id}/receive"),
            json!({}),
        ),
        (Method::GET, "/api/events".into(), json!(null)),
        (Method::GET, "/api/dead-letters".into(), json!(null)),
        (Method::GET, "/metrics".into(), json!(null)),
    ];
    for (method, path, body) in &protected {
        let send = |token: Option<&str>| {
            let mut request = app.http.request(method.clone(), app.url(path));
            if method == Method::POST {
                request = request.json(body);
            }
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            app.send(request)
        };
        for token in [None, Some("wrong"), Some("s3cret-token-and-more")] {
            let answer = send(token).await;
            assert_eq!(answer.status, 401, "{method} {path} with {token:?}");
            assert_eq!(answer.header("www-authenticate"), Some("Bearer"));
            assert_eq!(
                answer.body["error"]["code"], "unauthorized",
                "{method} {path}"
            );
        }
        let answer = send(Some(TOKEN)).await;
        assert_ne!(answer.status, 401, "{method} {path} with the token");
        assert!(answer.status < 500, "{method} {path}: {}", answer.status);
    }
    for path in [
        "/api/products",
        "/api/orders",
        "/api/stats",
        "/api/alerts",
        "/health",
        "/",
    ] {
        let answer = app.send(app.http.get(app.url(path))).await;
        assert_eq!(answer.status, 200, "GET {path} stays open");
    }
    app.stop().await;
}

/// `all --api-token-file`: the token comes from the file's first line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_can_come_from_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, format!("{TOKEN}\n")).unwrap();
    let port = free_port();
    let role = Role::start(
        "all",
        &[
            "all",
            "--profile",
            "none",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--api-token-file",
            file.to_str().unwrap(),
        ],
        &[(
            "STREAMSTOCK_DATA_DIR".to_string(),
            dir.path().join("data").display().to_string(),
        )],
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
