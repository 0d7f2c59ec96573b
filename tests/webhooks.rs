//! Webhooks against a real HTTP receiver started by each test, on each
//! backend pair: every event arrives in `seq` order with a valid signature,
//! through a receiver answering 500 for a while (the retries carry their
//! attempt number) and a receiver down for 10 s under load; a rewind sends
//! again from a seq; pause, resume and delete; a slow endpoint leaves
//! another subscription's lag near zero; a subscription failing past its
//! allowed time is paused with an alert and resumes from its cursor; the
//! allow-list refuses loopback at creation, and at delivery once the
//! worker's list no longer holds it. Across processes: a worker killed
//! with kill -9 mid-delivery, and its successor resumes from the durable
//! cursor (duplicates counted, nothing skipped).

use crate::common;

use common::receiver::{check, Receiver};
use common::{Api, Backend, TestApp};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};
use streamstock::store::Store;

/// The seqs of every archived event, in order.
async fn archived_seqs(store: &Store) -> Vec<i64> {
    common::feed::archive(store, None)
        .await
        .into_iter()
        .map(|(seq, _)| seq)
        .collect()
}

/// Creates a subscription; returns its id and secret.
async fn subscribe(api: &Api, body: Value) -> (String, String) {
    let (status, created) = api.post("/api/subscriptions", &body).await;
    assert_eq!(status, 201, "{created}");
    (
        created["id"].as_str().unwrap().to_string(),
        created["secret"].as_str().unwrap().to_string(),
    )
}

/// Waits until the subscription's cursor reached the archive's head (and
/// the head stayed put meanwhile).
async fn caught_up(api: &Api, store: &Store, id: &str, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let head = store.feed_head().await.unwrap();
        let (status, view) = api.get(&format!("/api/subscriptions/{id}")).await;
        assert_eq!(status, 200, "{view}");
        if view["cursor"].as_i64() == Some(head) && store.feed_head().await.unwrap() == head {
            return view;
        }
        assert!(
            Instant::now() < deadline,
            "not caught up within {within:?}: {view}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Places `n` orders of one unit of `product`.
async fn place(api: &Api, product: uuid::Uuid, n: usize) {
    for _ in 0..n {
        api.place_order(&json!({ "customer_email": "w@example.com",
                                  "items": [{ "product_id": product, "quantity": 1 }] }))
            .await
            .expect(202);
    }
}

async fn webhooks_deliver_every_event_in_order_through_failures(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let store = app.store().await;
    let mut receiver = Receiver::start().await;
    let product = app.create_product("WH-A", 2.50, 10_000).await;
    let (id, secret) =
        subscribe(&app, json!({ "url": receiver.url(), "start": "beginning" })).await;
    assert!(
        secret.starts_with("whsec_") && secret.len() > 40,
        "{secret}"
    );
    // The secret is shown once: never in a read, nor in an event.
    let (_, view) = app.get(&format!("/api/subscriptions/{id}")).await;
    assert!(view.get("secret").is_none(), "{view}");
    let (_, events) = app.get(&format!("/api/events?key={id}")).await;
    assert!(!events.to_string().contains(&secret), "{events}");

    place(&app, product, 20).await;
    caught_up(&app, &store, &id, Duration::from_secs(20)).await;

    // 500 for a while, then 200: retried, with the attempt counted.
    receiver.answer(500);
    place(&app, product, 5).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    receiver.answer(200);
    let view = caught_up(&app, &store, &id, Duration::from_secs(30)).await;
    assert!(view["failed"].as_i64().unwrap() >= 2, "{view}");
    assert!(
        view["last_error"].as_str().unwrap().contains("500"),
        "{view}"
    );
    assert!(view["failing_since"].is_null(), "{view}");

    // Down for 10 s under load (four clients, up to 100 orders/s in all):
    // nothing lost, order kept.
    receiver.stop();
    let before_down = receiver.received(&id).len();
    let until = Instant::now() + Duration::from_secs(10);
    let load: Vec<_> = (0..4)
        .map(|_| {
            let api = Api::new(&app.api.base);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(40));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut placed = 0;
                while Instant::now() < until {
                    tick.tick().await;
                    place(&api, product, 1).await;
                    placed += 1;
                }
                placed
            })
        })
        .collect();
    let mut placed = 0;
    for client in load {
        placed += client.await.unwrap();
    }
    eprintln!("{placed} orders placed while the receiver was down");
    assert!(placed >= 300, "too light a load: {placed} orders in 10 s");
    assert_eq!(
        receiver.received(&id).len(),
        before_down,
        "received while down"
    );
    let (_, down) = app.get(&format!("/api/subscriptions/{id}")).await;
    assert!(
        down["last_error"].as_str().unwrap().contains("connect"),
        "{down}"
    );
    receiver.restart().await;
    caught_up(&app, &store, &id, Duration::from_secs(60)).await;

    let expected = archived_seqs(&store).await;
    let received = receiver.received(&id);
    let result = check(&received, &secret, &expected);
    assert_eq!(result.missing, Vec::<i64>::new(), "{result:?}");
    assert_eq!(
        (
            result.out_of_order,
            result.bad_signatures,
            result.duplicates
        ),
        (0, 0, 0),
        "{result:?}"
    );
    assert!(result.retries >= 2, "{result:?}");
    let attempts: Vec<i64> = received
        .iter()
        .filter(|r| r.answered == 500)
        .map(|r| r.attempt)
        .collect();
    assert!(
        attempts.windows(2).any(|w| w[1] == w[0] + 1),
        "{attempts:?}"
    );

    // The delivery log: the recent attempts with status and latency.
    let (status, log) = app
        .get(&format!("/api/subscriptions/{id}/deliveries?limit=1000"))
        .await;
    assert_eq!(status, 200, "{log}");
    let log = log.as_array().unwrap();
    assert!(log.len() <= 100 && !log.is_empty(), "{}", log.len());
    assert!(log
        .iter()
        .any(|a| a["status"] == 200 && a["latency_ms"].as_i64().is_some()));

    // Rewind: sent again from a seq.
    let from = expected[expected.len() / 2];
    let before = receiver.received(&id).len();
    let (status, body) = app
        .post(
            &format!("/api/subscriptions/{id}/rewind"),
            &json!({ "seq": from }),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    // (The rewind's own event is one this subscription follows: it may
    // come first, before the deliverer takes the rewind up.)
    let again_expected: Vec<i64> = expected.iter().copied().filter(|s| *s > from).collect();
    let again = || -> Vec<i64> {
        receiver.received(&id)[before..]
            .iter()
            .filter(|r| r.answered == 200)
            .map(|r| r.seq)
            .skip_while(|s| *s != from + 1)
            .take(again_expected.len())
            .collect()
    };
    app.wait_for("the rewound events sent again", || async {
        again().len() == again_expected.len()
    })
    .await;
    assert_eq!(again(), again_expected);
    caught_up(&app, &store, &id, Duration::from_secs(20)).await;

    // Pause: nothing more; resume: from the cursor.
    let (status, paused) = app
        .post(&format!("/api/subscriptions/{id}/pause"), &json!({}))
        .await;
    assert_eq!(
        (status, paused["state"].as_str()),
        (200, Some("paused")),
        "{paused}"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let count = receiver.received(&id).len();
    let (_, paused) = app.get(&format!("/api/subscriptions/{id}")).await;
    let paused_at = paused["cursor"].as_i64().unwrap();
    place(&app, product, 3).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        receiver.received(&id).len(),
        count,
        "delivered while paused"
    );
    let (status, resumed) = app
        .post(&format!("/api/subscriptions/{id}/resume"), &json!({}))
        .await;
    assert_eq!(
        (status, resumed["state"].as_str()),
        (200, Some("active")),
        "{resumed}"
    );
    caught_up(&app, &store, &id, Duration::from_secs(20)).await;
    let after_pause: Vec<i64> = archived_seqs(&store)
        .await
        .into_iter()
        .filter(|s| *s > paused_at)
        .collect();
    let resumed_with: Vec<i64> = receiver.received(&id)[count..]
        .iter()
        .map(|r| r.seq)
        .collect();
    assert_eq!(resumed_with, after_pause, "from the cursor, in order");
    assert!(
        after_pause.len() >= 3 * 2,
        "each order placed and confirmed: {after_pause:?}"
    );

    let metrics = app.metrics().await;
    assert!(
        metrics.contains(&format!(
            "streamstock_webhook_deliveries_total{{subscription=\"{id}\",outcome=\"delivered\"}}"
        )),
        "{metrics}"
    );

    // Bad input, then delete.
    for (body, field) in [
        (json!({ "url": "ftp://example.com/" }), "url"),
        (
            json!({ "url": receiver.url(), "event_types": ["order.teleported"] }),
            "event_types",
        ),
        (
            json!({ "url": receiver.url(), "start": 1_000_000_000 }),
            "start",
        ),
        (
            json!({ "url": receiver.url(), "start": "yesterday" }),
            "start",
        ),
        (
            json!({ "url": receiver.url(), "secret": "short" }),
            "secret",
        ),
    ] {
        let (status, answer) = app.post("/api/subscriptions", &body).await;
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(
            status == 422 && message.starts_with(&format!("{field}:")),
            "{body}: {status} {answer}"
        );
    }
    let response = app
        .http
        .delete(app.url(&format!("/api/subscriptions/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    let (status, _) = app.get(&format!("/api/subscriptions/{id}")).await;
    assert_eq!(status, 404);
    // Its series go with it: /metrics does not grow with the history of
    // subscriptions.
    app.wait_for("the deleted subscription's series gone", || async {
        !app.metrics().await.contains(&id)
    })
    .await;

    // rebuild rewrites the subscriptions from their events and leaves the
    // delivery state alone: nothing would be sent again.
    let cursor: i64 =
        sqlx::query_scalar("SELECT cursor FROM subscription_progress WHERE subscription_id = $1")
            .bind(&id)
            .fetch_one(store.pool())
            .await
            .unwrap();
    let common = app.common.clone();
    let _dir = app.stop().await;
    common::process::assert_rebuild_identical_for(&common);
    let after: i64 =
        sqlx::query_scalar("SELECT cursor FROM subscription_progress WHERE subscription_id = $1")
            .bind(&id)
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert_eq!(after, cursor);
}

async fn a_slow_endpoint_does_not_delay_another(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let store = app.store().await;
    let (slow, fast) = (Receiver::start().await, Receiver::start().await);
    slow.slow_down(Duration::from_millis(400));
    let product = app.create_product("WH-S", 1.00, 10_000).await;
    let (slow_id, _) = subscribe(&app, json!({ "url": slow.url() })).await;
    let (fast_id, fast_secret) = subscribe(
        &app,
        json!({ "url": fast.url(), "event_types": ["order.*"] }),
    )
    .await;
    let api = Arc::new(Api::new(&app.api.base));
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        place(&api, product, 5).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The fast one is up to date within a moment of the last commit; the
    // slow one is far behind.
    let view = caught_up(&app, &store, &fast_id, Duration::from_secs(5)).await;
    assert_eq!(view["lag_events"], 0, "{view}");
    let (_, slow_view) = app.get(&format!("/api/subscriptions/{slow_id}")).await;
    assert!(
        slow_view["lag_events"].as_i64().unwrap() > 20,
        "{slow_view}"
    );
    assert!(
        slow_view["lag_seconds"].as_f64().unwrap() > 0.5,
        "{slow_view}"
    );
    let orders: Vec<i64> = common::feed::archive(&store, None)
        .await
        .into_iter()
        .map(|(seq, _)| seq)
        .collect();
    let order_events: Vec<i64> = {
        let types: Vec<&str> = streamstock::domain::events::EventType::ALL
            .iter()
            .map(|t| t.name())
            .filter(|n| n.starts_with("order."))
            .collect();
        common::feed::archive(&store, Some(&types))
            .await
            .into_iter()
            .map(|(s, _)| s)
            .collect()
    };
    assert!(order_events.len() < orders.len());
    let result = check(&fast.received(&fast_id), &fast_secret, &order_events);
    assert_eq!(result.missing, Vec::<i64>::new(), "{result:?}");
    assert_eq!(
        (result.out_of_order, result.duplicates),
        (0, 0),
        "{result:?}"
    );
    let metrics = app.metrics().await;
    assert!(
        metrics.contains(&format!(
            "streamstock_webhook_lag_events{{subscription=\"{slow_id}\"}}"
        )),
        "{metrics}"
    );
}

async fn a_failing_subscription_is_paused_with_an_alert(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let common = common::isolated_settings(backend, dir.path()).await;
    let app = TestApp::spawn_with_args(common, |args| {
        args.processing.webhook_pause_after = Duration::from_secs(3);
    })
    .await;
    let store = app.store().await;
    let receiver = Receiver::start().await;
    receiver.answer(503);
    let product = app.create_product("WH-F", 1.00, 100).await;
    let (id, secret) = subscribe(&app, json!({ "url": receiver.url() })).await;
    place(&app, product, 2).await;
    app.wait_for("the subscription paused by its deliverer", || async {
        app.get(&format!("/api/subscriptions/{id}")).await.1["state"] == "paused"
    })
    .await;
    let (_, view) = app.get(&format!("/api/subscriptions/{id}")).await;
    assert!(
        view["paused_reason"].as_str().unwrap().contains("503"),
        "{view}"
    );
    let (_, alerts) = app.get("/api/alerts").await;
    assert!(
        alerts
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["kind"] == "webhook_failing" && a["subject"] == id),
        "{alerts}"
    );
    // The cursor stayed: resumed, it delivers from there, everything.
    receiver.answer(200);
    let (status, _) = app
        .post(&format!("/api/subscriptions/{id}/resume"), &json!({}))
        .await;
    assert_eq!(status, 200);
    caught_up(&app, &store, &id, Duration::from_secs(20)).await;
    let expected: Vec<i64> = archived_seqs(&store)
        .await
        .into_iter()
        .filter(|&s| s > view["head"].as_i64().unwrap() - 100)
        .collect();
    let received = receiver.received(&id);
    let first = received.iter().map(|r| r.seq).min().unwrap();
    let expected: Vec<i64> = expected.into_iter().filter(|&s| s >= first).collect();
    let result = check(&received, &secret, &expected);
    assert_eq!(
        (result.missing.len(), result.out_of_order),
        (0, 0),
        "{result:?}"
    );
    app.assert_invariants_and_rebuild().await;
}

/// An endpoint cannot hold the deliverer: a redirect is a failure and is
/// not followed, an answer slower than `--webhook-timeout` is a failure,
/// and an answer whose body never ends is delivered (the body is not
/// read) and the next event follows.
async fn a_hostile_endpoint_cannot_hold_the_deliverer(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let common = common::isolated_settings(backend, dir.path()).await;
    let app = TestApp::spawn_with_args(common, |args| {
        args.processing.webhook_timeout = Duration::from_secs(1);
    })
    .await;
    let store = app.store().await;
    let (receiver, elsewhere) = (Receiver::start().await, Receiver::start().await);
    let product = app.create_product("WH-H", 1.00, 1_000).await;
    let (id, secret) = subscribe(&app, json!({ "url": receiver.url() })).await;
    let error = || async {
        let (_, view) = app.get(&format!("/api/subscriptions/{id}")).await;
        view["last_error"].as_str().unwrap_or_default().to_string()
    };

    // A redirect: a failure, and nothing reaches where it points.
    receiver.redirect(307, &elsewhere.url());
    place(&app, product, 1).await;
    app.wait_for("a redirect counted as a failure", || async {
        error().await.contains("answered 307")
    })
    .await;
    assert!(
        elsewhere.received(&id).is_empty(),
        "the redirect was followed"
    );

    // Slower than the time limit: a failure that says so.
    receiver.answer(200);
    receiver.slow_down(Duration::from_secs(3));
    app.wait_for("a slow answer timed out", || async {
        error().await.contains("timed out")
    })
    .await;

    // A body without end: delivered, one after the other, at once.
    receiver.slow_down(Duration::ZERO);
    receiver.endless_body(true);
    place(&app, product, 20).await;
    // (Were the body read, each answer would run out the time limit and
    // count as a failure, and the cursor would never reach the head.)
    caught_up(&app, &store, &id, Duration::from_secs(30)).await;
    let expected: Vec<i64> = archived_seqs(&store).await;
    let received = receiver.received(&id);
    let first = received
        .iter()
        .find(|r| r.answered == 200)
        .map(|r| r.seq)
        .unwrap();
    let expected: Vec<i64> = expected.into_iter().filter(|&s| s >= first).collect();
    let result = check(&received, &secret, &expected);
    assert_eq!(
        (result.missing.len(), result.out_of_order),
        (0, 0),
        "{result:?}"
    );
}

backend_pairs!(
    a_hostile_endpoint_cannot_hold_the_deliverer,
    webhooks_deliver_every_event_in_order_through_failures,
    a_slow_endpoint_does_not_delay_another,
    a_failing_subscription_is_paused_with_an_alert
);

/// Loopback is refused unless listed, at creation; and a subscription
/// created while allowed is refused at delivery once the worker's list no
/// longer holds where its name leads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_allow_list_refuses_at_creation_and_at_delivery() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = common::isolated_settings(Backend::EmbeddedSqlite, dir.path()).await;
    let receiver = Receiver::start().await;
    let named = format!("http://localhost:{}/hook", receiver.port);
    let app = TestApp::spawn_with(settings.clone()).await;
    let (id, _) = subscribe(&app, json!({ "url": named })).await;
    let _ = app.stop().await;
    // (Its own subscription.created may have been delivered meanwhile.)
    let sent_while_allowed = receiver.received(&id).len();

    settings.webhook_allow = Vec::new();
    let app = TestApp::spawn_with(settings).await;
    for url in [
        receiver.url(),
        named.clone(),
        "http://169.254.169.254/latest".into(),
        "http://[::1]:9/".into(),
    ] {
        let (status, body) = app.post("/api/subscriptions", &json!({ "url": url })).await;
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(
            status == 422 && message.contains("--webhook-allow"),
            "{url}: {status} {body}"
        );
    }
    let product = app.create_product("WH-L", 1.00, 10).await;
    place(&app, product, 1).await;
    app.wait_for("the delivery refused", || async {
        let (_, view) = app.get(&format!("/api/subscriptions/{id}")).await;
        view["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("--webhook-allow"))
    })
    .await;
    assert_eq!(
        receiver.received(&id).len(),
        sent_while_allowed,
        "sent despite the allow-list"
    );
    let _ = app.stop().await;
}

/// A name allowed at creation whose DNS then changes to a refused address
/// is refused at delivery: nothing reaches the new address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_whose_dns_changes_to_a_refused_address_is_refused_at_delivery() {
    let seen = dns_change(&[]).await;
    assert_eq!(seen.at_refused_address, 0, "{seen:?}");
    assert!(
        seen.last_error
            .contains("hooks.streamstock.test resolves to a loopback address")
            && seen.last_error.contains("--webhook-allow"),
        "{seen:?}"
    );
    assert_eq!(seen.created_again, 422, "{seen:?}");
}

/// The control: a deliverer that trusts the name's new address delivers
/// there, and the test sees it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_a_resolver_without_the_check_delivers_to_the_new_address() {
    let seen = dns_change(&[("STREAMSTOCK_FAULT_WEBHOOK_RESOLVE_UNCHECKED", "1")]).await;
    assert!(seen.at_refused_address > 0, "{seen:?}");
}

#[derive(Debug)]
struct DnsChangeSeen {
    /// Requests that reached the address the name came to lead to.
    at_refused_address: usize,
    /// The subscription's last error after the change.
    last_error: String,
    /// The status of a new subscription to the same URL after the change.
    created_again: u16,
}

/// `streamstock all` in a mount namespace whose `/etc/hosts` the test
/// writes: `hooks.streamstock.test` leads to 127.0.0.2 (listed in
/// `--webhook-allow`), a subscription to it is created and delivered to;
/// then the name leads to 127.0.0.3 (loopback, not listed), where a second
/// receiver listens on the same port.
async fn dns_change(extra_env: &[(&str, &str)]) -> DnsChangeSeen {
    use common::process::{free_port, Role};
    let dir = tempfile::tempdir().unwrap();
    let hosts = dir.path().join("hosts");
    let lead_to = |ip: &str| {
        // In place (truncate, write): the bind mount shows the same file.
        std::fs::write(
            &hosts,
            format!("127.0.0.1 localhost\n{ip} hooks.streamstock.test\n"),
        )
        .unwrap()
    };
    lead_to("127.0.0.2");
    let mut allowed = Receiver::start_on("127.0.0.2", 0).await;
    let refused = Receiver::start_on("127.0.0.3", allowed.port).await;
    let url = format!("http://hooks.streamstock.test:{}/hook", allowed.port);

    let data_dir = dir.path().join("data");
    let listen = format!("127.0.0.1:{}", free_port());
    let mut env = vec![(
        "STREAMSTOCK_WEBHOOK_ALLOW".to_string(),
        "127.0.0.2/32".to_string(),
    )];
    env.extend(
        extra_env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    let server = Role::start_with_hosts_file(
        "all",
        &[
            "all",
            "--profile",
            "none",
            "--listen",
            &listen,
            "--data-dir",
            data_dir.to_str().unwrap(),
        ],
        &env,
        &hosts,
    );
    let api = Api::new(&format!("http://{listen}"));
    api.wait_healthy().await;
    let product = api.create_product("WH-DNS", 1.00, 100).await;
    let (id, _) = subscribe(&api, json!({ "url": url })).await;
    place(&api, product, 1).await;
    api.wait_for("a delivery to the allowed address", || async {
        allowed.received(&id).iter().any(|r| r.answered == 200)
    })
    .await;

    lead_to("127.0.0.3");
    // Its kept-alive connection closes with it: the next delivery resolves.
    allowed.stop();
    place(&api, product, 2).await;
    api.wait_for("a delivery refused or made", || async {
        let (_, view) = api.get(&format!("/api/subscriptions/{id}")).await;
        !refused.received(&id).is_empty()
            || view["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("--webhook-allow"))
    })
    .await;
    let (_, view) = api.get(&format!("/api/subscriptions/{id}")).await;
    let (created_again, _) = api.post("/api/subscriptions", &json!({ "url": url })).await;
    assert!(server.terminate().success());
    DnsChangeSeen {
        at_refused_address: refused.received(&id).len(),
        last_error: view["last_error"].as_str().unwrap_or_default().to_string(),
        created_again,
    }
}

/// kill -9 of the worker delivering, mid-delivery: its successor (after the
/// lease runs out) resumes from the durable cursor. Events delivered after
/// the last cursor write are sent again (counted); none is skipped, and
/// each event's first delivery is in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_delivery_is_succeeded_from_the_durable_cursor() {
    let result = kill_mid_delivery(&[]).await;
    assert_eq!(result.missing, Vec::<i64>::new(), "{result:?}");
    assert_eq!(
        (result.out_of_order, result.bad_signatures),
        (0, 0),
        "{result:?}"
    );
}

/// The control: a deliverer that writes its cursor before it delivers
/// skips events when it is killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_a_cursor_written_before_delivery_skips_events_on_kill_9() {
    let result = kill_mid_delivery(&[("STREAMSTOCK_FAULT_WEBHOOK_CURSOR_AHEAD", "1")]).await;
    assert!(
        !result.missing.is_empty(),
        "nothing skipped despite the fault: {result:?}"
    );
}

/// A gateway and a worker as processes on Valkey + PostgreSQL, with leases
/// of 1.5 s, webhooks allowed to loopback, and `extra_env`.
struct SplitRoles {
    deployment: common::process::SharedDeployment,
    gateway: common::process::Role,
    worker: common::process::Role,
    api: Api,
    store: Store,
}

async fn split_roles(extra_env: &[(&str, &str)]) -> SplitRoles {
    use common::process::{free_port, Role, SharedDeployment};
    let mut deployment = SharedDeployment::new()
        .await
        .with("STREAMSTOCK_LEASE_TTL_MS", "1500")
        .with("STREAMSTOCK_WEBHOOK_ALLOW", "127.0.0.0/8");
    for (key, value) in extra_env {
        deployment = deployment.with(key, value);
    }
    let env = &deployment.env;
    let listen = format!("127.0.0.1:{}", free_port());
    let gateway = Role::start("serve", &["serve", "--listen", &listen], env);
    let worker = Role::start("worker", &["worker", "--listen", "127.0.0.1:0"], env);
    let api = Api::new(&format!("http://{listen}"));
    api.wait_healthy().await;
    let store = Store::connect(&deployment.database).await.unwrap();
    SplitRoles {
        deployment,
        gateway,
        worker,
        api,
        store,
    }
}

async fn kill_mid_delivery(extra_env: &[(&str, &str)]) -> common::receiver::DeliveryCheck {
    use common::process::Role;
    let SplitRoles {
        deployment,
        gateway,
        worker: victim,
        api,
        store,
    } = split_roles(extra_env).await;
    let env = &deployment.env;
    let receiver = Receiver::start().await;
    receiver.slow_down(Duration::from_millis(20));
    let product = api.create_product("WH-K", 1.00, 10_000).await;
    let (id, secret) =
        subscribe(&api, json!({ "url": receiver.url(), "start": "beginning" })).await;
    place(&api, product, 80).await;
    api.wait_for("deliveries under way", || async {
        receiver.received(&id).len() >= 40
    })
    .await;
    victim.kill_hard();
    let successor = Role::start("worker", &["worker", "--listen", "127.0.0.1:0"], env);
    place(&api, product, 10).await;
    caught_up(&api, &store, &id, Duration::from_secs(60)).await;

    let expected = archived_seqs(&store).await;
    let result = check(&receiver.received(&id), &secret, &expected);
    eprintln!(
        "{} events; {} sent again after the kill",
        expected.len(),
        result.duplicates
    );
    assert!(successor.terminate().success());
    assert!(gateway.terminate().success());
    result
}

/// A second worker joins while deliveries are under way, so partitions and
/// the subscriptions on them move to it from a live worker (which stops
/// delivering them); then the first leaves with SIGTERM and the rest move.
/// Every subscription gets every event, first deliveries in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_move_with_their_partitions_between_live_workers() {
    for (id, result) in move_between_live_workers(&[]).await {
        assert_eq!(result.missing, Vec::<i64>::new(), "{id}: {result:?}");
        assert_eq!(
            (result.out_of_order, result.bad_signatures),
            (0, 0),
            "{id}: {result:?}"
        );
    }
}

/// The control: deliverers that write a page's end before delivering it
/// skip events when their subscriptions move.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_a_cursor_written_before_delivery_skips_events_on_a_move() {
    let results =
        move_between_live_workers(&[("STREAMSTOCK_FAULT_WEBHOOK_CURSOR_AHEAD", "1")]).await;
    assert!(
        results.iter().any(|(_, r)| !r.missing.is_empty()),
        "nothing skipped despite the fault: {results:?}"
    );
}

/// Gateway and one worker on Valkey + PostgreSQL, twelve subscriptions to
/// one slowed receiver; a second worker joins mid-delivery, then the first
/// leaves. Each subscription's deliveries, checked against the archive.
async fn move_between_live_workers(
    extra_env: &[(&str, &str)],
) -> Vec<(String, common::receiver::DeliveryCheck)> {
    use common::process::{free_port, Role};
    let SplitRoles {
        deployment,
        gateway,
        worker: first,
        api,
        store,
    } = split_roles(extra_env).await;
    let env = &deployment.env;
    let receiver = Receiver::start().await;
    receiver.slow_down(Duration::from_millis(30));
    let product = api.create_product("WH-M", 1.00, 10_000).await;
    // Twelve subscriptions over four partitions: the newcomer's half of
    // them holds some (all twelve on one half: 1 in 2,048).
    let mut subscriptions = Vec::new();
    for _ in 0..12 {
        subscriptions
            .push(subscribe(&api, json!({ "url": receiver.url(), "start": "beginning" })).await);
    }
    place(&api, product, 40).await;
    api.wait_for("deliveries under way", || async {
        subscriptions
            .iter()
            .all(|(id, _)| receiver.received(id).len() >= 10)
    })
    .await;

    let second_listen = format!("127.0.0.1:{}", free_port());
    let second = Role::start("worker", &["worker", "--listen", &second_listen], env);
    let second_api = Api::new(&format!("http://{second_listen}"));
    second_api.wait_healthy().await;
    let delivering = |metrics: String| -> usize {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix("streamstock_webhook_subscriptions_delivering "))
            .and_then(|n| n.trim().parse::<f64>().ok())
            .unwrap_or(0.0) as usize
    };
    api.wait_for("subscriptions moved to the newcomer", || async {
        delivering(second_api.metrics().await) > 0
    })
    .await;
    let moved = delivering(second_api.metrics().await);
    place(&api, product, 20).await;
    assert!(first.terminate().success());
    place(&api, product, 10).await;
    for (id, _) in &subscriptions {
        caught_up(&api, &store, id, Duration::from_secs(60)).await;
    }

    let expected = archived_seqs(&store).await;
    let results: Vec<_> = subscriptions
        .iter()
        .map(|(id, secret)| (id.clone(), check(&receiver.received(id), secret, &expected)))
        .collect();
    eprintln!(
        "{moved} of 12 subscriptions moved to the newcomer, the rest when the first left; {} events each, {} deliveries sent again in all",
        expected.len(),
        results.iter().map(|(_, r)| r.duplicates).sum::<usize>()
    );
    assert!(second.terminate().success());
    assert!(gateway.terminate().success());
    results
}
