//! What every request passes: an `x-request-id` on every answer, a bound
//! on requests in flight (503 with Retry-After beyond it, the probes still
//! answering), a time limit (503 past it), and request metrics by route and
//! status.

use crate::common;

use common::{Backend, TestApp};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_carries_a_request_id() {
    let app = TestApp::spawn(Backend::EmbeddedSqlite).await;
    // A fresh id when the client sends none, on routes and on 404s alike.
    for path in ["/api/products", "/api/nowhere", "/health"] {
        let answer = app.send(app.http.get(app.url(path))).await;
        let id = answer.header("x-request-id").unwrap();
        assert!(uuid::Uuid::parse_str(id).is_ok(), "{path}: {id}");
    }
    // The client's own id is kept; an unusable one is replaced.
    let answer = app
        .send(
            app.http
                .get(app.url("/api/products"))
                .header("x-request-id", "client-42"),
        )
        .await;
    assert_eq!(answer.header("x-request-id"), Some("client-42"));
    let long = "x".repeat(200);
    let answer = app
        .send(
            app.http
                .get(app.url("/api/products"))
                .header("x-request-id", &long),
        )
        .await;
    assert_ne!(answer.header("x-request-id"), Some(long.as_str()));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_counted_by_route_and_status() {
    let app = TestApp::spawn(Backend::EmbeddedSqlite).await;
    app.products().await.expect(200);
    assert_eq!(app.order(uuid::Uuid::new_v4()).await.status, 404);
    let metrics = app.metrics().await;
    for series in [
        r#"streamstock_http_requests_total{route="/api/products",method="GET",status="200"}"#,
        r#"streamstock_http_requests_total{route="/api/orders/{id}",method="GET",status="404"}"#,
        r#"streamstock_http_request_duration_seconds_count{route="/api/products",method="GET",status="200"}"#,
    ] {
        assert!(
            metrics.contains(series),
            "{series} missing from:\n{metrics}"
        );
    }
    app.stop().await;
}

/// Two slots: two long polls take them, the third request is refused at
/// once, the probes still answer, and the slots come back afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_beyond_the_bound_get_503_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let common = common::isolated_settings(Backend::EmbeddedSqlite, dir.path()).await;
    let app = TestApp::spawn_with_args(common, |args| {
        args.gateway.max_in_flight_requests = 2;
    })
    .await;
    // An order id that may still be in the log but never comes: the
    // gateway holds the request 5 s for it, then answers 202.
    let polls: Vec<_> = (0..2)
        .map(|_| {
            let api = common::Api::new(&app.base);
            tokio::spawn(async move { api.order(uuid::Uuid::now_v7()).await.status })
        })
        .collect();
    // /metrics is a probe: it answers without taking a slot.
    app.wait_for("both slots taken", || async {
        app.metrics()
            .await
            .contains("streamstock_http_requests_in_flight 2")
    })
    .await;
    let started = Instant::now();
    let refused = app.send(app.http.get(app.url("/api/stats"))).await;
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "refused at once"
    );
    assert_eq!(refused.status, 503);
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert_eq!(
        refused.body["error"]["code"], "overloaded",
        "{}",
        refused.text
    );
    assert_eq!(app.get("/health").await.0, 200, "probes stay open");
    assert_eq!(app.get("/ready").await.0, 200, "probes stay open");
    for poll in polls {
        assert_eq!(poll.await.unwrap(), 202);
    }
    assert_eq!(app.products().await.status, 200, "the slots are free again");
    assert!(app
        .metrics()
        .await
        .contains(r#"streamstock_requests_shed_total{reason="requests"}"#));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_past_the_time_limit_gets_503() {
    let dir = tempfile::tempdir().unwrap();
    let common = common::isolated_settings(Backend::EmbeddedSqlite, dir.path()).await;
    let app = TestApp::spawn_with_args(common, |args| {
        args.gateway.request_timeout = Duration::from_millis(500).into();
    })
    .await;
    let started = Instant::now();
    let answer = app
        .send(
            app.http
                .get(app.url(&format!("/api/orders/{}?wait=10", uuid::Uuid::now_v7()))),
        )
        .await;
    let took = started.elapsed();
    assert_eq!(answer.status, 503);
    assert_eq!(answer.header("retry-after"), Some("1"));
    assert_eq!(answer.body["error"]["code"], "timeout", "{}", answer.text);
    assert!(
        took >= Duration::from_millis(500) && took < Duration::from_secs(5),
        "answered after {took:?}"
    );
    app.stop().await;
}
