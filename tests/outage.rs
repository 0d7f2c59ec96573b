//! Valkey killed with SIGKILL under load and restarted from its AOF: the
//! gateway answers 503 with a JSON error while the log is unreachable (never
//! a hang, never a 5xx other than 503), workers back off and resume, and
//! every order answered 202 is processed exactly once.

use crate::common;

use common::load::{assert_accepted_orders_processed_once, outage_under_load, Outage};
use common::process::OwnValkey;
use common::{Backend, TestApp};
use std::time::{Duration, Instant};

impl Outage for OwnValkey {
    fn stop_hard(&mut self) {
        self.kill_hard();
    }

    fn restart(&mut self) {
        OwnValkey::restart(self);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valkey_killed_under_load_loses_no_accepted_order() {
    let mut valkey = OwnValkey::start();
    let dir = tempfile::tempdir().unwrap();
    let mut settings = common::isolated_settings(Backend::ValkeyPostgres, dir.path()).await;
    settings.valkey_url = Some(valkey.url());
    let app = TestApp::spawn_with(settings).await;
    let product = app.create_product("OUTAGE-1", 3.00, 1000).await;

    // 4 clients for 7 s; Valkey killed once orders flow, restarted 2.5 s later.
    let report = outage_under_load(
        &app,
        product,
        Duration::from_secs(7),
        &mut valkey,
        Duration::from_millis(2500),
        async || {},
    )
    .await;
    assert!(report.unavailable > 0, "the outage was not noticed");
    let store = app.store().await;
    assert_accepted_orders_processed_once(&app, &store, &report.accepted, &[(product, 1000)]).await;
    app.stop().await;
}

/// With the log frozen (Valkey stopped with SIGSTOP), appends pile up: the
/// gateway holds at most `--max-in-flight-appends` of them, and every other
/// order waits a second at most, then gets 503 `overloaded` with
/// `Retry-After`, never a hang. Once Valkey runs again, orders are accepted
/// and processed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_log_sheds_requests_with_503_and_retry_after() {
    let valkey = OwnValkey::start();
    let dir = tempfile::tempdir().unwrap();
    let mut settings = common::isolated_settings(Backend::ValkeyPostgres, dir.path()).await;
    settings.valkey_url = Some(valkey.url());
    let app = TestApp::spawn_with_args(settings, |args| {
        args.gateway.max_in_flight_appends = 2;
    })
    .await;
    let product = app.create_product("SHED-1", 1.00, 100).await;
    let order = serde_json::json!({
        "customer_email": "shed@example.com",
        "items": [{ "product_id": product, "quantity": 1 }]
    });

    valkey.signal("-STOP");
    let started = Instant::now();
    let api = std::sync::Arc::new(common::Api::new(&app.base));
    let requests = (0..8).map(|_| {
        let request = api
            .http
            .post(api.url("/api/orders"))
            .json(&order)
            .timeout(Duration::from_secs(20));
        let api = api.clone();
        async move {
            let answer = api.send(request).await;
            let retry_after = answer.header("retry-after").map(str::to_string);
            (answer.status, retry_after, answer.body, started.elapsed())
        }
    });
    let shed = tokio::spawn(futures::future::join_all(requests));
    // The six without a slot are answered within about a second.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    valkey.signal("-CONT");
    let answers = shed.await.unwrap();
    let overloaded: Vec<_> = answers
        .iter()
        .filter(|(status, _, body, _)| *status == 503 && body["error"]["code"] == "overloaded")
        .collect();
    assert_eq!(overloaded.len(), 6, "{answers:#?}");
    for (_, retry_after, _, elapsed) in &overloaded {
        assert_eq!(retry_after.as_deref(), Some("1"));
        assert!(
            *elapsed < Duration::from_millis(2500),
            "shed after {elapsed:?}"
        );
    }
    // The two that held the slots were either appended once Valkey ran
    // again, or timed out: their XADD was sent, so the answer says the
    // outcome is unknown (or, had it not been sent, that the log is
    // unavailable): nothing else.
    for (status, _, body, _) in answers
        .iter()
        .filter(|(_, _, b, _)| b["error"]["code"] != "overloaded")
    {
        let code = &body["error"]["code"];
        assert!(
            *status == 202
                || (*status == 503
                    && (code == "outcome_unknown" || code == "event_log_unavailable")),
            "{status} {body}"
        );
    }

    // Running again: orders go through and are decided.
    app.place_order(&order).await.expect(202);
    let accepted = answers.iter().filter(|(s, ..)| *s == 202).count() as i64 + 1;
    app.wait_until_decided(accepted).await;
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("streamstock_requests_shed_total{reason=\"append_slots\"} 6"),
        "{metrics}"
    );
    app.stop().await;
}
