//! Holds over the HTTP API, on each backend pair: a hold that expires by
//! itself (the sweep asks, a worker decides, the stock comes back) within
//! the sweep's interval of its deadline; a hold committed in time; a
//! commit after the expiry refused with what to do; a commit and an
//! expiry racing in the log, decided once each way; bad input refused with
//! nothing appended; the invariants; and `rebuild` identical.

use crate::common;

use common::{Api, Backend, TestApp};
use serde_json::json;
use std::time::{Duration, Instant};
use streamstock::domain::events::{OrderCommitRequested, OrderExpireRequested};
use streamstock::domain::status::{AlertKind, OrderStatus};
use streamstock::domain::{DomainEvent, Envelope, OrderId};
use streamstock::stream::EventLog;
use uuid::Uuid;

/// A held order of `quantity` of `product` for `ttl` seconds; waits until
/// the worker confirmed it as HELD. Returns it and its deadline.
async fn held(
    api: &Api,
    product: Uuid,
    quantity: i64,
    ttl: i64,
) -> (Uuid, chrono::DateTime<chrono::Utc>) {
    let placed = api
        .place_order(
            &json!({ "customer_email": "h@example.com", "hold_ttl_s": ttl,
                              "items": [{ "product_id": product, "quantity": quantity }] }),
        )
        .await;
    let body = placed.body.clone();
    let queued = placed.expect(202);
    let until: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(body["hold_until"].clone()).expect("hold_until in the answer");
    let order = queued.order_id.as_uuid();
    let view = api.order_waiting(order, 10).await.expect(200);
    assert_eq!(view.status, OrderStatus::Held);
    assert_eq!(view.hold_until, Some(until));
    (order, until)
}

/// A 409 whose message says `what`.
#[track_caller]
fn assert_conflict(status: u16, body: &serde_json::Value, what: &str) {
    assert_eq!(status, 409, "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains(what), "{body}");
}

async fn stock(api: &Api, product: Uuid) -> (i64, i64) {
    let p = api.product(product).await.expect(200);
    (p.on_hand, p.reserved)
}

/// How many events of `event_type` the archive holds for `order`.
async fn events_of(api: &Api, order: Uuid, event_type: &str) -> usize {
    api.events(&format!("key={order}&type={event_type}"))
        .await
        .expect(200)
        .len()
}

async fn holds_expire_or_are_committed(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let product = app.create_product("HOLD-A", 2.50, 5).await;

    let (lapsing, until) = held(&app, product, 3, 2).await;
    let (paid, _) = held(&app, product, 2, 600).await;
    assert_eq!(stock(&app, product).await, (5, 5));
    let (status, listed) = app.get("/api/orders?status=held").await;
    assert_eq!((status, listed.as_array().map(Vec::len)), (200, Some(2)));

    // Payment taken in time: 200 with the confirmed order; again, 200.
    for _ in 0..2 {
        let (status, body) = app
            .post(&format!("/api/orders/{paid}/commit?wait=5"), &json!({}))
            .await;
        assert_eq!(
            (status, body["status"].as_str()),
            (200, Some("CONFIRMED")),
            "{body}"
        );
    }
    assert_eq!(events_of(&app, paid, "order.committed").await, 1);

    // Not committed: it expires by itself, soon after its deadline.
    app.wait_for("the lapsing hold expired", || async {
        app.order(lapsing)
            .await
            .found()
            .is_some_and(|o| o.status == OrderStatus::Expired)
    })
    .await;
    let expired = app.order(lapsing).await.expect(200);
    let lag = (expired.updated_at - until).num_milliseconds();
    eprintln!("expired {lag} ms after its deadline");
    // The sweep runs every 200 ms here; a batch waits at most 50 ms.
    assert!((0..2_000).contains(&lag), "expiry lag {lag} ms");
    assert_eq!(stock(&app, product).await, (5, 2), "its 3 units are back");
    assert_eq!(events_of(&app, lapsing, "order.expired").await, 1);

    // A commit after the expiry: 409, saying what to do.
    let (status, body) = app
        .post(&format!("/api/orders/{lapsing}/commit?wait=5"), &json!({}))
        .await;
    assert_conflict(status, &body, "place the order again");

    // The committed order ships as any; the stock it held leaves.
    app.ship(paid).await.expect(202);
    app.wait_for("the paid order shipped", || async {
        app.order(paid)
            .await
            .found()
            .is_some_and(|o| o.status == OrderStatus::Shipped)
    })
    .await;
    assert_eq!(stock(&app, product).await, (3, 0));

    // Bad input: clear errors, nothing appended.
    let events_before = app.events("limit=1000").await.expect(200).len();
    for ttl in [json!(0), json!(-5), json!(604_801), json!("soon")] {
        let (status, body) = app
            .post(
                "/api/orders",
                &json!({ "customer_email": "h@example.com", "hold_ttl_s": ttl,
                                          "items": [{ "product_id": product, "quantity": 1 }] }),
            )
            .await;
        assert_eq!(status, 422, "{ttl}: {body}");
        assert!(body.to_string().contains("hold_ttl_s"), "{ttl}: {body}");
    }
    let plain = app
        .order_of("p@example.com", &[(product, 1)])
        .await
        .expect(202)
        .order_id;
    assert_eq!(
        app.status_waiting(plain, 10).await,
        Some(OrderStatus::Confirmed)
    );
    let (status, body) = app
        .post(&format!("/api/orders/{plain}/commit"), &json!({}))
        .await;
    assert_conflict(status, &body, "without a hold");
    let (status, _) = app
        .post(
            &format!("/api/orders/{}/commit", Uuid::new_v4()),
            &json!({}),
        )
        .await;
    assert_eq!(status, 404);
    let placed_since = app.events("limit=1000").await.expect(200).len() - events_before;
    assert_eq!(placed_since, 2, "the plain order and its confirmation only");

    app.assert_invariants_and_rebuild().await;
}

/// Appends `events` to the stopped app's log, as the sweep and a gateway
/// would have.
async fn append_while_stopped(common: &streamstock::cli::config::CommonArgs, events: &[Envelope]) {
    match &common.valkey_url {
        Some(url) => {
            let log = streamstock::stream::valkey::ValkeyLog::connect(
                url,
                &common.valkey_namespace,
                common.partitions,
                streamstock::stream::Durability::Strict,
            )
            .await
            .unwrap();
            for event in events {
                log.append(event).await.unwrap();
            }
        }
        None => {
            let log = streamstock::stream::embedded::EmbeddedLog::open(
                &common.data_dir.join("log"),
                common.partitions,
            )
            .unwrap();
            for event in events {
                log.append(event).await.unwrap();
            }
        }
    }
}

fn expire_request(order: Uuid, until: chrono::DateTime<chrono::Utc>) -> Envelope {
    DomainEvent::OrderExpireRequested(OrderExpireRequested {
        order_id: OrderId(order),
        hold_until: until,
        epoch: 1,
    })
    .into_envelope(chrono::Utc::now().max(until))
}

fn commit_request(order: Uuid) -> Envelope {
    DomainEvent::OrderCommitRequested(OrderCommitRequested {
        order_id: OrderId(order),
    })
    .into_envelope(chrono::Utc::now())
}

/// A commit and an expiry of one hold meet in the log (the commit sent
/// as the hold ran out): whichever is first decides, the other is refused
/// with its reason recorded. The app is stopped while they are written, so
/// their order in the log is the test's.
async fn commit_and_expiry_race_in_the_log(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let common = common::isolated_settings(backend, dir.path()).await;
    // No sweep of the app's own in the way: every expiry here is the test's.
    let quiet = |args: &mut streamstock::cli::config::AllArgs| {
        args.processing.hold_sweep_interval = Duration::from_secs(60);
    };
    let app = TestApp::spawn_with_args(common.clone(), quiet).await;
    let product = app.create_product("HOLD-RACE", 2.50, 4).await;
    let (loses, loses_until) = held(&app, product, 2, 1).await;
    let (wins, wins_until) = held(&app, product, 2, 1).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    app.stop().await;

    append_while_stopped(
        &common,
        &[
            expire_request(loses, loses_until),
            commit_request(loses),
            commit_request(wins),
            expire_request(wins, wins_until),
        ],
    )
    .await;
    let mut app = TestApp::spawn_with_args(common.clone(), quiet).await;
    app.keep_data_dir(dir);
    let started = Instant::now();
    app.wait_for("both decided", || async {
        let status = |o: Option<streamstock::store::queries::OrderView>| o.map(|o| o.status);
        status(app.order(loses).await.found()) == Some(OrderStatus::Expired)
            && status(app.order(wins).await.found()) == Some(OrderStatus::Confirmed)
    })
    .await;
    eprintln!("decided in {:?}", started.elapsed());
    assert_eq!(
        stock(&app, product).await,
        (4, 2),
        "only the committed hold holds stock"
    );
    // The loser's commit is refused with the reason, recorded as an alert.
    app.wait_for("the refusals recorded", || async {
        events_of(&app, wins, "order.expiry_refused").await == 1
    })
    .await;
    let alerts = app.alerts().await.expect(200);
    let refused: Vec<_> = alerts
        .iter()
        .filter(|a| a.kind == AlertKind::CommandRefused && a.subject == loses.to_string())
        .collect();
    assert_eq!(refused.len(), 1, "{alerts:#?}");
    assert!(
        refused[0]
            .message
            .contains("its hold expired before the commit"),
        "{}",
        refused[0].message
    );
    assert_eq!(events_of(&app, loses, "order.expired").await, 1);
    assert_eq!(events_of(&app, wins, "order.committed").await, 1);
    assert_eq!(events_of(&app, wins, "order.expired").await, 0);

    app.assert_invariants_and_rebuild().await;
}

backend_pairs!(
    holds_expire_or_are_committed,
    commit_and_expiry_race_in_the_log
);

/// What the zombie scenario saw.
#[derive(Debug)]
struct ZombieReport {
    holds: usize,
    /// `order.expired` events per hold (each must be 1).
    expired_per_hold: Vec<usize>,
    /// Expiry requests the frozen worker appended after it woke.
    zombie_requests: u64,
    /// `order.expiry_refused` events in the archive.
    refused: usize,
    /// Requests whose epoch is below the one that expired the same hold.
    stale_requests: usize,
    dead_letters: u64,
    invariant_violations: Vec<String>,
}

/// A worker freezes (SIGSTOP) with expiry requests in hand for holds of its
/// partitions (its sweep is made to pause between reading them and
/// sending them, the window a frozen host would leave); its lease runs
/// out, the other worker takes every partition and expires every hold;
/// then the frozen one carries on (SIGCONT) and sends its requests, with
/// its old epoch. `faults`: extra variables for both workers (the
/// negative control's). Valkey + PostgreSQL, three processes.
async fn zombie_expiries(faults: &[(&str, &str)]) -> ZombieReport {
    use common::process::{free_port, Role, SharedDeployment};

    let mut deployment = SharedDeployment::new()
        .await
        .with("STREAMSTOCK_LEASE_TTL_MS", "1000")
        .with("STREAMSTOCK_HOLD_SWEEP_INTERVAL", "200ms");
    for (key, value) in faults {
        deployment = deployment.with(key, value);
    }
    let env = &deployment.env;
    let listen = format!("127.0.0.1:{}", free_port());
    let gateway = Role::start("serve", &["serve", "--listen", &listen], env);
    let mut zombie_env = env.clone();
    zombie_env.push(("STREAMSTOCK_FAULT_SWEEP_STALL_MS".into(), "2500".into()));
    let zombie_listen = format!("127.0.0.1:{}", free_port());
    let zombie_log = tempfile::NamedTempFile::new().unwrap();
    let zombie = Role::start_with_log(
        "worker (to be frozen)",
        &["worker", "--worker-listen", &zombie_listen],
        &zombie_env,
        zombie_log.reopen().unwrap(),
    );
    let survivor = Role::start("worker", &["worker", "--worker-listen", "127.0.0.1:0"], env);
    let api = Api::new(&format!("http://{listen}"));
    api.wait_healthy().await;
    let owners = || common::process::owners(&common::process::status_report(env));
    api.wait_for("both workers holding partitions", || async {
        owners().len() == 2
    })
    .await;

    let product = api.create_product("HOLD-ZOMBIE", 2.50, 100).await;
    // Placed together, so they run out together.
    let holds: Vec<Uuid> = futures::future::join_all((0..16).map(|_| held(&api, product, 1, 2)))
        .await
        .into_iter()
        .map(|(order, _)| order)
        .collect();
    // The zombie's sweep has read its due holds and pauses: freeze it now.
    let stalled = || std::fs::read_to_string(zombie_log.path()).unwrap_or_default();
    let started = Instant::now();
    while !stalled().contains("stalling the hold expiry sweep") {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the zombie never swept:\n{}",
            stalled()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    zombie.pause();
    api.wait_for("the survivor holding every partition", || async {
        owners().len() == 1
    })
    .await;
    api.wait_for("every hold decided by the survivor", || async {
        let mut decided = 0;
        for order in &holds {
            if api
                .order(order)
                .await
                .found()
                .is_some_and(|o| o.status != OrderStatus::Held)
            {
                decided += 1;
            }
        }
        decided == holds.len()
    })
    .await;
    zombie.resume();
    api.wait_for("the partitions shared again", || async {
        owners().len() == 2
    })
    .await;
    let zombie_requests = || async {
        reqwest::get(format!("http://{zombie_listen}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("streamstock_hold_expiries_requested_total "))
            .map_or(0, |n| n.trim().parse::<u64>().unwrap())
    };
    // Its requests are in the log now; let the workers drain it.
    tokio::time::sleep(Duration::from_secs(1)).await;
    api.wait_for("the log drained", || async {
        let report = common::process::status_report(env);
        report["lag"] == 0 && report["pending"] == 0
    })
    .await;

    let mut expired_per_hold = Vec::new();
    let mut refused = 0;
    let mut stale_requests = 0;
    for order in &holds {
        let events = api
            .events(&format!("key={order}&limit=100"))
            .await
            .expect(200);
        let of = |t: &'static str| {
            events
                .iter()
                .filter(move |e| e.envelope.event_type.as_str() == t)
        };
        expired_per_hold.push(of("order.expired").count());
        refused += of("order.expiry_refused").count();
        let epochs: Vec<u64> = of("order.expire_requested")
            .map(|e| e.envelope.payload["epoch"].as_u64().unwrap())
            .collect();
        if let Some(newest) = epochs.iter().max() {
            stale_requests += epochs.iter().filter(|e| *e < newest).count();
        }
    }
    let status = common::process::status_report(env);
    let store = streamstock::store::Store::connect(&deployment.database)
        .await
        .unwrap();
    let invariant_violations = common::invariants::invariant_violations(&store)
        .await
        .unwrap();
    store.close().await;
    let report = ZombieReport {
        holds: holds.len(),
        expired_per_hold,
        zombie_requests: zombie_requests().await,
        refused,
        stale_requests,
        dead_letters: status["dead_letters"].as_u64().unwrap(),
        invariant_violations,
    };
    assert!(zombie.terminate().success());
    assert!(survivor.terminate().success());
    assert!(gateway.terminate().success());
    if faults.is_empty() {
        common::process::assert_rebuild_identical(&[], env);
    }
    eprintln!("{report:?}");
    report
}

/// Each hold expires once, and the frozen worker's late requests are each
/// refused, recorded, naming an older epoch; nothing is dead-lettered, the
/// invariants hold, and `rebuild` is identical.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_workers_late_expiries_are_refused() {
    let report = zombie_expiries(&[]).await;
    assert!(
        report.expired_per_hold.iter().all(|n| *n == 1),
        "{report:?}"
    );
    assert!(
        report.zombie_requests > 0,
        "the zombie sent nothing: {report:?}"
    );
    assert_eq!(report.refused as u64, report.zombie_requests, "{report:?}");
    assert_eq!(
        report.stale_requests as u64, report.zombie_requests,
        "{report:?}"
    );
    assert_eq!(report.dead_letters, 0, "{report:?}");
    assert!(report.invariant_violations.is_empty(), "{report:?}");
    assert_eq!(report.expired_per_hold.len(), report.holds);
}

/// The negative control: with the workers deciding every expiry request as
/// an expiry (no check of the order's state), the same run shows the
/// anomaly the test looks for: the zombie's requests are not refused, and
/// expiring a hold a second time fails and is dead-lettered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_a_frozen_workers_late_expiries_take_effect_without_the_check() {
    let report = zombie_expiries(&[("STREAMSTOCK_FAULT_EXPIRE_UNCHECKED", "1")]).await;
    assert!(
        report.zombie_requests > 0,
        "the zombie sent nothing: {report:?}"
    );
    assert!(
        (report.refused as u64) < report.zombie_requests || report.dead_letters > 0,
        "the test did not see the zombie's expiries take effect: {report:?}"
    );
}
