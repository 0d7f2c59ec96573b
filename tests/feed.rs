//! The integration feed (`GET /api/feed`): on each backend pair, pages in
//! `seq` order with a cursor that goes on where the last page ended, a type
//! filter that keeps the order, a long poll the next commit ends at once,
//! Server-Sent Events that resume from `Last-Event-ID`, bad input refused,
//! and `seq` the same after `rebuild`. Across processes: followers of both
//! kinds see every archived event exactly once, in order, while workers
//! are killed with kill -9 under load; and the control, with batches that
//! number their archive rows at insert (the archive before the feed), shows
//! the same followers skip events.

use crate::common;

use common::feed::{archive, compare, follow_long_poll, follow_stream};
use common::process::{owners, status_report, Role, ServeAndWorker, SharedDeployment};
use common::{Api, Backend, TestApp};
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};
use streamstock::store::Store;
use tokio_util::sync::CancellationToken;

/// Waits until the archive's head has not moved for `quiet`.
async fn archive_settled(store: &Store, quiet: Duration) -> i64 {
    let mut head = store.feed_head().await.unwrap();
    let mut since = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(60);
    while since.elapsed() < quiet {
        assert!(Instant::now() < deadline, "the archive never settled");
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = store.feed_head().await.unwrap();
        if now != head {
            (head, since) = (now, Instant::now());
        }
    }
    head
}

async fn the_feed_reads_the_archive_in_order(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let store = app.store().await;
    let a = app.create_product("FEED-A", 2.50, 50).await;
    let b = app.create_product("FEED-B", 9.00, 1).await;
    for i in 0..12 {
        let product = if i % 4 == 3 { b } else { a };
        app.place_order(&json!({ "customer_email": "f@example.com",
                                  "items": [{ "product_id": product, "quantity": 1 }] }))
            .await
            .expect(202);
    }
    let head = archive_settled(&store, Duration::from_millis(500)).await;
    let everything = archive(&store, None).await;
    assert_eq!(everything.last().map(|e| e.0), Some(head));

    // Pages of 7 from the beginning: each goes on where the last ended,
    // and together they are the archive.
    let mut after = 0;
    let mut paged = Vec::new();
    loop {
        let (status, page) = app.get(&format!("/api/feed?after={after}&limit=7")).await;
        assert_eq!(status, 200, "{page}");
        assert_eq!(page["head"], head);
        let events = page["events"].as_array().unwrap().clone();
        for event in &events {
            paged.push((
                event["seq"].as_i64().unwrap(),
                event["event_id"].as_str().unwrap().parse().unwrap(),
            ));
            for field in ["event_type", "key", "occurred_at", "payload", "archived_at"] {
                assert!(!event[field].is_null(), "{field} in {event}");
            }
        }
        let next = page["next"].as_i64().unwrap();
        if events.is_empty() {
            assert_eq!(next, head);
            break;
        }
        after = next;
    }
    assert_eq!(paged, everything);
    // New archives number every event: 1, 2, 3, …
    let seqs: Vec<i64> = paged.iter().map(|e| e.0).collect();
    assert_eq!(seqs, (1..=head).collect::<Vec<_>>());

    // A filter keeps the order: the same events as filtering the whole.
    let types = ["order.confirmed", "order.rejected", "stock.low"];
    let (status, page) = app
        .get("/api/feed?limit=1000&types=order.confirmed,order.rejected,stock.*")
        .await;
    assert_eq!(status, 200, "{page}");
    let filtered: Vec<(i64, uuid::Uuid)> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["seq"].as_i64().unwrap(),
                e["event_id"].as_str().unwrap().parse().unwrap(),
            )
        })
        .collect();
    let stock_types: Vec<&str> = streamstock::domain::events::EventType::ALL
        .iter()
        .map(|t| t.name())
        .filter(|name| name.starts_with("stock.") || types.contains(name))
        .collect();
    assert_eq!(filtered, archive(&store, Some(&stock_types)).await);
    assert!(filtered.len() >= 12, "{filtered:?}");
    assert_eq!(page["next"], head);

    // At the head a long poll waits, and the next commit ends it at once.
    let waiting = {
        let api = Api::new(&app.api.base);
        tokio::spawn(async move {
            let started = Instant::now();
            let (status, page) = api.get(&format!("/api/feed?after={head}&wait=20")).await;
            (status, page, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let placed = Instant::now();
    app.place_order(&json!({ "customer_email": "late@example.com",
                              "items": [{ "product_id": a, "quantity": 1 }] }))
        .await
        .expect(202);
    let (status, page, waited) = waiting.await.unwrap();
    assert_eq!(status, 200, "{page}");
    let first = &page["events"][0];
    assert_eq!(
        (first["seq"].as_i64(), first["event_type"].as_str()),
        (Some(head + 1), Some("order.placed"))
    );
    assert!(
        waited < Duration::from_secs(5) && placed.elapsed() < Duration::from_secs(5),
        "the long poll ended {waited:?} after it started"
    );
    // With nothing newer it waits its `wait` and answers an empty page.
    let head = archive_settled(&store, Duration::from_millis(500)).await;
    let started = Instant::now();
    let (status, page) = app.get(&format!("/api/feed?after={head}&wait=1")).await;
    assert_eq!(
        (status, page["events"].as_array().map(Vec::len)),
        (200, Some(0))
    );
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(page["next"], head);

    // Bad input: 422 naming the parameter; a cursor beyond the head 409.
    for (query, field) in [
        ("after=-1", "after"),
        ("after=x", "after"),
        ("wait=31", "wait"),
        ("limit=0", "limit"),
        ("types=order.teleported", "types"),
        ("types=*", "types"),
    ] {
        let (status, body) = app.get(&format!("/api/feed?{query}")).await;
        assert!(status == 422 || status == 400, "{query}: {status} {body}");
        if status == 422 {
            let message = body["error"]["message"].as_str().unwrap_or_default();
            assert!(message.starts_with(&format!("{field}:")), "{query}: {body}");
        }
    }
    let (status, body) = app.get(&format!("/api/feed?after={}", head + 1000)).await;
    assert_eq!(status, 409, "{body}");

    // The stream: the same events, resumed after a reconnect.
    let stop = CancellationToken::new();
    stop.cancel();
    let streamed = follow_stream(&app.api, stop, 5, || head).await;
    let everything = archive(&store, None).await;
    assert_eq!(compare(&streamed, &everything), Vec::<String>::new());
    assert!(streamed.requests >= 3, "{} connections", streamed.requests);
    let (status, body) = {
        let r = app
            .http
            .get(app.url("/api/feed"))
            .header("accept", "text/event-stream")
            .header("last-event-id", "seven")
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json::<serde_json::Value>().await.unwrap())
    };
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        status == 422 && message.starts_with("Last-Event-ID:"),
        "{status} {body}"
    );

    // rebuild replays the archive without renumbering it.
    let violations = common::invariants::invariant_violations(&store)
        .await
        .unwrap();
    assert_eq!(violations, Vec::<String>::new());
    let common = app.common.clone();
    let _dir = app.stop().await;
    common::process::assert_rebuild_identical_for(&common);
    assert_eq!(archive(&store, None).await, everything);
}

backend_pairs!(the_feed_reads_the_archive_in_order);

/// What the followers of a kill -9 run got wrong, each against the archive.
struct FollowersReport {
    long_poll: Vec<String>,
    filtered: Vec<String>,
    stream: Vec<String>,
    events: usize,
    stream_connections: u64,
}

/// Two workers sharing the partitions (one killed with kill -9 and
/// replaced, three times) apply orders while three clients follow the feed: a long poll, a long poll of
/// the order decisions only, and a stream that reconnects every 50 events.
async fn follow_through_kill_9(extra_env: &[(&str, &str)]) -> FollowersReport {
    let mut deployment = SharedDeployment::new()
        .await
        .with("STREAMSTOCK_LEASE_TTL_MS", "1500");
    for (key, value) in extra_env {
        deployment = deployment.with(key, value);
    }
    let env = &deployment.env;
    // Many products, so two workers' batches seldom lock the same stock
    // rows (which would order their commits anyway), as in a real shop.
    let skus: Vec<String> = (0..48).map(|i| format!("FD-{i}")).collect();
    let catalog: Vec<(&str, f64, i64)> = skus.iter().map(|sku| (sku.as_str(), 2.50, 500)).collect();
    let stage = ServeAndWorker::start(env, &catalog).await;
    let (api, products) = (stage.api.clone(), stage.product_ids());
    let store = Store::connect(&deployment.database).await.unwrap();

    let stop = CancellationToken::new();
    let decisions = "order.confirmed,order.rejected";
    let followers = {
        let spawn_poll = |types: Option<&'static str>| {
            let (api, stop) = (Api::new(&api.base), stop.clone());
            tokio::spawn(async move { follow_long_poll(&api, stop, types, 5).await })
        };
        let (poll, filtered) = (spawn_poll(None), spawn_poll(Some(decisions)));
        let head = Arc::new(std::sync::atomic::AtomicI64::new(i64::MAX));
        let stream = {
            let (api, stop, head) = (Api::new(&api.base), stop.clone(), head.clone());
            tokio::spawn(async move {
                follow_stream(&api, stop, 50, move || {
                    head.load(std::sync::atomic::Ordering::SeqCst)
                })
                .await
            })
        };
        (poll, filtered, stream, head)
    };

    let mut accepted = std::collections::HashSet::new();
    for round in 0..3 {
        let victim = Role::start("worker", &["worker", "--listen", "127.0.0.1:0"], env);
        // Both workers commit batches at once, as two hosts would.
        api.wait_for("two workers sharing the partitions", || async {
            owners(&status_report(env)).len() == 2
        })
        .await;
        let stop_at = Instant::now() + Duration::from_millis(3000);
        let load = tokio::spawn(common::load::place_orders_until(
            api.clone(),
            6,
            products.clone(),
            stop_at,
        ));
        tokio::time::sleep(Duration::from_millis(2000 + 300 * round)).await;
        victim.kill_hard();
        accepted.extend(load.await.unwrap().accepted);
    }
    assert!(accepted.len() > 20, "too few orders: {}", accepted.len());
    common::load::assert_accepted_orders_processed_once(&api, &store, &accepted, &stage.stock)
        .await;
    let head = archive_settled(&store, Duration::from_secs(2)).await;
    followers.3.store(head, std::sync::atomic::Ordering::SeqCst);
    stop.cancel();
    let within = Duration::from_secs(60);
    let poll = tokio::time::timeout(within, followers.0)
        .await
        .expect("the long poll caught up")
        .unwrap();
    let filtered = tokio::time::timeout(within, followers.1)
        .await
        .expect("the filtered poll caught up")
        .unwrap();
    let stream = tokio::time::timeout(within, followers.2)
        .await
        .expect("the stream caught up")
        .unwrap();
    let everything = archive(&store, None).await;
    eprintln!(
        "archive: {} events; the long poll got {}, the stream {} over {} connections",
        everything.len(),
        poll.events.len(),
        stream.events.len(),
        stream.requests
    );
    let decided = archive(&store, Some(&["order.confirmed", "order.rejected"])).await;
    stage.stop();
    FollowersReport {
        long_poll: compare(&poll, &everything),
        filtered: compare(&filtered, &decided),
        stream: compare(&stream, &everything),
        events: everything.len(),
        stream_connections: stream.requests,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feed_followers_see_every_event_once_in_order_through_kill_9() {
    let report = follow_through_kill_9(&[]).await;
    assert_eq!(report.long_poll, Vec::<String>::new(), "the long poll");
    assert_eq!(
        report.filtered,
        Vec::<String>::new(),
        "the filtered long poll"
    );
    assert_eq!(report.stream, Vec::<String>::new(), "the stream");
    assert!(report.events > 100, "{} events", report.events);
    assert!(
        report.stream_connections > 2,
        "{} connections",
        report.stream_connections
    );
}

/// The control: with batches numbering their archive rows when they insert
/// them (not in commit order), the same followers miss events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_followers_skip_events_when_seq_is_given_at_insert() {
    let report =
        follow_through_kill_9(&[("STREAMSTOCK_FAULT_ARCHIVE_NUMBERED_AT_INSERT", "1")]).await;
    let missed = |problems: &[String]| problems.iter().any(|p| p.contains("never received"));
    assert!(
        missed(&report.long_poll) || missed(&report.stream),
        "the followers saw every event despite the fault: {:?} {:?}",
        report.long_poll,
        report.stream
    );
}
