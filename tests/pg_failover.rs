//! PostgreSQL failover under load: a primary with a standby, reached
//! through one stable address (a TCP proxy here, as HAProxy or a VIP would
//! be in production). While orders flow, the network between the primary
//! and its standby holds for a moment, the primary crashes with what was in
//! flight, the standby is promoted, and the proxy points at it. With a synchronous standby
//! (`synchronous_standby_names`), no commit the workers saw is missing from
//! the promoted standby: every order answered 2xx is decided exactly once.
//! The negative control is an asynchronous standby: the primary kept
//! committing while the standby stalled, the workers acked those events in
//! the log, and the failover loses them: acknowledged orders are never
//! decided.

use crate::common;

use common::process::OwnPostgres;
use common::{Backend, TestApp};
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// A TCP proxy: `hold` stops passing bytes on (a network that holds them),
/// `cut` drops its connections with whatever they held (a partition), and
/// `switch` sends new connections elsewhere (HAProxy or a VIP moved), cutting
/// those to the old target.
struct Proxy {
    port: u16,
    target: Arc<AtomicU16>,
    held: Arc<AtomicBool>,
    relays: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Proxy {
    async fn start(target: u16) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let target = Arc::new(AtomicU16::new(target));
        let held = Arc::new(AtomicBool::new(false));
        let relays = Arc::new(Mutex::new(Vec::<JoinHandle<()>>::new()));
        let (to, hold, all) = (target.clone(), held.clone(), relays.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let port = to.load(Ordering::SeqCst);
                let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
                    continue;
                };
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                let mut relays = all.lock().unwrap();
                relays.push(tokio::spawn(pass(client_read, server_write, hold.clone())));
                relays.push(tokio::spawn(pass(server_read, client_write, hold.clone())));
            }
        });
        Proxy {
            port,
            target,
            held,
            relays,
        }
    }

    fn hold(&self) {
        self.held.store(true, Ordering::SeqCst);
    }

    fn cut(&self) {
        for relay in self.relays.lock().unwrap().drain(..) {
            relay.abort();
        }
    }

    fn switch(&self, target: u16) {
        self.target.store(target, Ordering::SeqCst);
        self.cut();
    }
}

/// Copies `from` to `to`, holding each chunk while `held`.
async fn pass(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    held: Arc<AtomicBool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buffer = vec![0u8; 64 * 1024];
    while let Ok(n) = from.read(&mut buffer).await {
        while held.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if n == 0 || to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
}

/// Waits until the primary streams to the standby, in `sync_state`.
async fn wait_for_standby(primary: &OwnPostgres, sync_state: &str) {
    let store = streamstock::store::Store::connect(&primary.url())
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let state: Option<String> = sqlx::query_scalar(
            "SELECT sync_state FROM pg_stat_replication WHERE application_name = 'standby' AND state = 'streaming'",
        )
        .fetch_optional(store.pool())
        .await
        .unwrap();
        if state.as_deref() == Some(sync_state) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the standby never streamed ({state:?})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs the scenario; returns how many orders answered 2xx were not decided
/// once the log had drained (or 10 s had passed).
async fn failover_under_load(synchronous: bool) -> common::history::Verdict {
    let primary = OwnPostgres::start();
    let replication = Proxy::start(primary.port).await;
    let standby = OwnPostgres::standby_of(&primary, replication.port);
    wait_for_standby(&primary, "async").await;
    if synchronous {
        let store = streamstock::store::Store::connect(&primary.url())
            .await
            .unwrap();
        sqlx::query("ALTER SYSTEM SET synchronous_standby_names = 'standby'")
            .execute(store.pool())
            .await
            .unwrap();
        sqlx::query("SELECT pg_reload_conf()")
            .execute(store.pool())
            .await
            .unwrap();
        wait_for_standby(&primary, "sync").await;
    }
    let proxy = Proxy::start(primary.port).await;
    let dir = tempfile::tempdir().unwrap();
    let mut settings = common::isolated_settings(Backend::ValkeyPostgres, dir.path()).await;
    settings.database_url = Some(format!(
        "postgres://postgres@127.0.0.1:{}/postgres",
        proxy.port
    ));
    let app = TestApp::spawn_with(settings).await;
    let product = app.create_product("PG-FAILOVER-1", 1.00, 1_000_000).await;

    let api = Arc::new(common::Api::new(&app.base));
    let load = tokio::spawn(common::history::record(
        api.clone(),
        4,
        product,
        Instant::now() + Duration::from_secs(9),
    ));
    tokio::time::sleep(Duration::from_secs(3)).await;
    // The network to the standby holds; the primary crashes while it does,
    // and what was in flight is gone with it.
    replication.hold();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let fault_at = Instant::now();
    primary.stop_hard();
    replication.cut();
    standby.promote();
    proxy.switch(standby.port);
    let ops = load.await.unwrap();
    let store = app.store().await;
    let scenario = if synchronous {
        "postgres-failover, synchronous standby"
    } else {
        "postgres-failover, asynchronous standby"
    };
    let verdict = common::history::check(
        scenario,
        !synchronous,
        &api,
        &store,
        &ops,
        fault_at,
        Duration::from_secs(30),
    )
    .await;
    verdict.report();
    assert!(
        verdict.acknowledged > 50,
        "too few orders: {}",
        verdict.acknowledged
    );
    app.stop().await;
    drop(standby);
    verdict
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_synchronous_standby_promoted_loses_no_acknowledged_order() {
    let verdict = failover_under_load(true).await;
    assert!(!verdict.anomalous(), "{verdict:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_control_an_asynchronous_standby_promoted_loses_orders() {
    let verdict = failover_under_load(false).await;
    assert!(
        verdict.lost > 0,
        "the negative control did not show its anomaly: an asynchronous standby lost nothing"
    );
}
