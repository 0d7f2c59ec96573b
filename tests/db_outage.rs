//! PostgreSQL stopped hard under load and started again: orders are still
//! accepted (the gateway prices them from memory and appends them to the
//! log, which is up), reads answer 503 with a JSON error while it is down
//! (never a hang), workers back off and resume, and every order answered
//! 202 is processed exactly once.

use crate::common;

use common::load::{assert_accepted_orders_processed_once, outage_under_load, Outage};
use common::process::OwnPostgres;
use common::{Backend, TestApp};
use std::collections::HashSet;
use std::time::Duration;

impl Outage for OwnPostgres {
    fn stop_hard(&mut self) {
        OwnPostgres::stop_hard(self);
    }

    fn restart(&mut self) {
        OwnPostgres::restart(self);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_under_load_loses_no_accepted_order() {
    let mut postgres = OwnPostgres::start();
    let dir = tempfile::tempdir().unwrap();
    let mut settings = common::isolated_settings(Backend::ValkeyPostgres, dir.path()).await;
    settings.database_url = Some(postgres.url());
    let app = TestApp::spawn_with(settings).await;
    let product = app.create_product("DB-OUT-1", 2.00, 1000).await;

    // 4 clients for 8 s; PostgreSQL stopped once orders flow, restarted 3 s later.
    let placed_during_outage = std::sync::Mutex::new(None::<uuid::Uuid>);
    let report = outage_under_load(
        &app,
        product,
        Duration::from_secs(8),
        &mut postgres,
        Duration::from_secs(3),
        async || {
            // Accepted without the database.
            let queued = app
                .order_of("outage@example.com", &[(product, 1)])
                .await
                .expect(202);
            let id = queued.order_id;
            let error = app.order(id).await.error(503);
            assert_eq!(error.code, "database_unavailable", "{error:?}");
            *placed_during_outage.lock().unwrap() = Some(id.as_uuid());
        },
    )
    .await;
    assert!(
        report
            .error_codes
            .is_subset(&HashSet::from(["database_unavailable".to_string()])),
        "503s name the database: {:?}",
        report.error_codes
    );
    let mut accepted = report.accepted.clone();
    accepted.extend(placed_during_outage.lock().unwrap().take());
    let store = app.store().await;
    assert_accepted_orders_processed_once(&app, &store, &accepted, &[(product, 1000)]).await;
    app.stop().await;
}
