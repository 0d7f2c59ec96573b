//! `Idempotency-Key`: a retried POST gets its first answer again and
//! appends nothing twice: across concurrent duplicates, a gateway restart,
//! and two gateways on one deployment; another request under the same key
//! is refused; keys expire.

use crate::common;

use common::process::{free_port, Role, SharedDeployment};
use common::{Api, Backend, TestApp};
use serde_json::{json, Value};
use std::time::Duration;

/// POST `body` to `path` with `key`: status, body and whether it was a
/// replay.
async fn post_with_key(api: &Api, path: &str, key: &str, body: &Value) -> (u16, Value, bool) {
    let answer = api
        .send(
            api.http
                .post(api.url(path))
                .header("idempotency-key", key)
                .json(body),
        )
        .await;
    let replayed = answer.header("idempotent-replayed").is_some();
    (answer.status, answer.body, replayed)
}

fn order_body(product: &str, quantity: i64) -> Value {
    json!({ "customer_email": "idem@example.com", "items": [{ "product_id": product, "quantity": quantity }] })
}

/// How many `type` events the archive holds for `key`, once applied.
async fn archived(api: &Api, key: &str, event_type: &str) -> usize {
    let events = api.events(&format!("key={key}&type={event_type}")).await;
    events.expect(200).len()
}

async fn retries_get_the_first_answer(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let key = format!("product-{}", uuid::Uuid::new_v4());
    let product_body = json!({ "sku": "IDEM-1", "name": "Idem", "price": 4, "initial_stock": 50 });
    let (status, first, replayed) = post_with_key(&app, "/api/products", &key, &product_body).await;
    assert_eq!((status, replayed), (201, false), "{first}");
    let (status, again, replayed) = post_with_key(&app, "/api/products", &key, &product_body).await;
    assert_eq!((status, replayed), (201, true), "{again}");
    assert_eq!(again, first, "the same answer, the same id");
    let product = first["id"].as_str().unwrap().to_string();

    let key = format!("order-{}", uuid::Uuid::new_v4());
    let (status, first, _) =
        post_with_key(&app, "/api/orders", &key, &order_body(&product, 2)).await;
    assert_eq!(status, 202, "{first}");
    let (status, again, replayed) =
        post_with_key(&app, "/api/orders", &key, &order_body(&product, 2)).await;
    assert_eq!((status, replayed), (202, true));
    assert_eq!(again["order_id"], first["order_id"]);
    let order = first["order_id"].as_str().unwrap().to_string();
    app.order_waiting(&order, 10).await;
    assert_eq!(archived(&app, &order, "order.placed").await, 1);

    // The same key for another request: refused, naming the conflict.
    let (status, refused, _) =
        post_with_key(&app, "/api/orders", &key, &order_body(&product, 3)).await;
    assert_eq!(status, 422, "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("different request"),
        "{refused}"
    );

    // Concurrent duplicates: one order, the same answer for all.
    let key = format!("burst-{}", uuid::Uuid::new_v4());
    let body = order_body(&product, 1);
    let answers =
        futures::future::join_all((0..8).map(|_| post_with_key(&app, "/api/orders", &key, &body)))
            .await;
    let ids: std::collections::HashSet<String> = answers
        .iter()
        .map(|(status, body, _)| {
            assert_eq!(*status, 202, "{body}");
            body["order_id"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(ids.len(), 1, "{answers:?}");
    let order = ids.into_iter().next().unwrap();
    app.order_waiting(&order, 10).await;
    assert_eq!(archived(&app, &order, "order.placed").await, 1);
    let stats = app.stats().await.expect(200);
    assert_eq!(stats.figures.order_count, 2, "{stats:?}");
    app.stop().await;
}

backend_pairs!(retries_get_the_first_answer);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_survives_a_gateway_restart() {
    let dir = tempfile::tempdir().unwrap();
    let common = common::isolated_settings(Backend::EmbeddedSqlite, dir.path()).await;
    let app = TestApp::spawn_with(common.clone()).await;
    let product = app.create_product("RESTART-1", 1.0, 10).await.to_string();
    let key = "restart-key";
    let (status, first, _) =
        post_with_key(&app, "/api/orders", key, &order_body(&product, 1)).await;
    assert_eq!(status, 202);
    app.stop().await;

    let again = TestApp::spawn_with(common).await;
    let (status, second, replayed) =
        post_with_key(&again, "/api/orders", key, &order_body(&product, 1)).await;
    assert_eq!((status, replayed), (202, true));
    assert_eq!(second["order_id"], first["order_id"]);
    again.stop().await;
}

/// Two gateways on one Valkey and PostgreSQL: the retry sent to the other
/// gateway gets the first one's answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_holds_across_gateways() {
    let deployment = SharedDeployment::new().await;
    let env = &deployment.env;
    let (a, b) = (free_port(), free_port());
    let gateway_a = Role::start(
        "serve a",
        &["serve", "--listen", &format!("127.0.0.1:{a}")],
        env,
    );
    let gateway_b = Role::start(
        "serve b",
        &["serve", "--listen", &format!("127.0.0.1:{b}")],
        env,
    );
    let worker = Role::start("worker", &["worker", "--listen", "127.0.0.1:0"], env);
    let api_a = Api::new(&format!("http://127.0.0.1:{a}"));
    let api_b = Api::new(&format!("http://127.0.0.1:{b}"));
    api_a.wait_healthy().await;
    api_b.wait_healthy().await;
    let product = api_a.create_product("TWO-1", 1.0, 10).await.to_string();
    let key = "two-gateways";
    let (status, first, _) =
        post_with_key(&api_a, "/api/orders", key, &order_body(&product, 1)).await;
    assert_eq!(status, 202);
    let (status, second, replayed) =
        post_with_key(&api_b, "/api/orders", key, &order_body(&product, 1)).await;
    assert_eq!((status, replayed), (202, true));
    assert_eq!(second["order_id"], first["order_id"]);
    for role in [worker, gateway_b, gateway_a] {
        assert!(role.terminate().success());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_expire() {
    let dir = tempfile::tempdir().unwrap();
    let common = common::isolated_settings(Backend::EmbeddedSqlite, dir.path()).await;
    let app = TestApp::spawn_with_args(common, |args| {
        args.gateway.idempotency_ttl = Duration::from_millis(500).into();
    })
    .await;
    let product = app.create_product("EXPIRE-1", 1.0, 10).await.to_string();
    let (_, first, _) =
        post_with_key(&app, "/api/orders", "short-lived", &order_body(&product, 1)).await;
    // Time passing is the point here: past the TTL the key is new again.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let (status, second, replayed) =
        post_with_key(&app, "/api/orders", "short-lived", &order_body(&product, 1)).await;
    assert_eq!((status, replayed), (202, false));
    assert_ne!(second["order_id"], first["order_id"]);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_keys_are_refused() {
    let app = TestApp::spawn(Backend::EmbeddedSqlite).await;
    let (status, body, _) = post_with_key(&app, "/api/orders", &"k".repeat(300), &json!({})).await;
    assert_eq!(status, 422, "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("Idempotency-Key"));
    app.stop().await;
}

/// However many keys the load brings, only the newest
/// `--idempotency-max-keys` are kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_bounded_in_number() {
    let dir = tempfile::tempdir().unwrap();
    let common = common::isolated_settings(Backend::EmbeddedSqlite, dir.path()).await;
    let app = TestApp::spawn_with_args(common, |args| {
        args.gateway.idempotency_max_keys = 3;
    })
    .await;
    let product = app.create_product("BOUND-1", 1.0, 100).await.to_string();
    for n in 0..6 {
        let (status, _, _) = post_with_key(
            &app,
            "/api/orders",
            &format!("bounded-{n}"),
            &order_body(&product, 1),
        )
        .await;
        assert_eq!(status, 202);
    }
    let store = app.store().await;
    app.wait_for("at most 3 keys kept", || async {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM idempotency_keys")
            .fetch_one(store.pool())
            .await
            .unwrap();
        sqlx::Row::get::<i64, _>(&row, "n") <= 3
    })
    .await;
    // The newest key still answers as before.
    let (status, _, replayed) =
        post_with_key(&app, "/api/orders", "bounded-5", &order_body(&product, 1)).await;
    assert_eq!((status, replayed), (202, true));
    store.close().await;
    app.stop().await;
}

/// A key whose request ended in doubt is taken over by its retry, which
/// learns so (and, as the gateway does after a retry that recorded
/// nothing, can put it back in doubt): its ids stay those of the first
/// claim however many retries it takes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_taken_over_after_doubt_keeps_its_first_claim() {
    use streamstock::store::idempotency::KeyClaim;
    let dir = tempfile::tempdir().unwrap();
    let store = streamstock::store::Store::connect(&format!(
        "sqlite://{}",
        dir.path().join("keys.db").display()
    ))
    .await
    .unwrap();
    store.migrate().await.unwrap();
    let ttl = 86_400_000;
    let KeyClaim::Owned {
        first_seen_ms,
        after_doubt: false,
    } = store.claim_idempotency_key("k", "fp", ttl).await.unwrap()
    else {
        panic!("a new key is owned, with no doubt behind it")
    };
    assert_eq!(
        store.claim_idempotency_key("k", "fp", ttl).await.unwrap(),
        KeyClaim::InProgress
    );
    for retry in 0..3 {
        store.mark_idempotency_key_in_doubt("k").await.unwrap();
        assert_eq!(
            store.claim_idempotency_key("k", "fp", ttl).await.unwrap(),
            KeyClaim::Owned {
                first_seen_ms,
                after_doubt: true
            },
            "retry {retry}"
        );
    }
}
