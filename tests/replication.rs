//! Replicated durability on a real Valkey primary and replica: a 2xx means
//! the replica has the event in its AOF, so a failover to it loses nothing
//! acknowledged; with the replica gone, appends get no 2xx. Strict
//! durability is the negative control: it acknowledges what only the
//! primary holds, and the same failover loses it.
//!
//! A worker applies only entries the replica has: one appended while the
//! replica is frozen waits for it (the negative control, with the worker's
//! read confirmation skipped, applies it at once).
//!
//! And the confirmation belongs to its append: a proxy resets the
//! connection right after an XADD's reply, so the wait that follows runs
//! on a new connection. StreamStock answers "outcome unknown"; a plain
//! client (the negative control) takes the new connection's answer as a
//! confirmation of a write it never carried.

use crate::common;

use common::history::Verdict;
use common::process::OwnValkey;
use fred::prelude::*;
use fred::types::{ClusterHash, CustomCommand, InfoKind};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use streamstock::domain::Envelope;
use streamstock::stream::valkey::{ValkeyLog, ValkeyOptions};
use streamstock::stream::{Durability, EventLog, LogError};

const NAMESPACE: &str = "replication";

fn envelope(key: &str) -> Envelope {
    Envelope {
        event_id: uuid::Uuid::now_v7(),
        event_type: "stock.received".into(),
        key: key.to_string(),
        occurred_at: chrono::Utc::now(),
        version: 2,
        payload: serde_json::json!({ "product_id": uuid::Uuid::now_v7(), "quantity": 1 }),
        actor: None,
    }
}

/// A plain fred client, reconnecting by itself as fred's defaults do.
async fn raw_client(url: &str) -> Client {
    let client = Builder::from_config(Config::from_url(url).unwrap())
        .set_policy(ReconnectPolicy::new_constant(0, 50))
        .with_performance_config(|p| p.default_command_timeout = Duration::from_secs(10))
        .build()
        .unwrap();
    client.init().await.unwrap();
    client
}

/// The event ids the server at `url` holds in the namespace's streams.
async fn event_ids_on(url: &str) -> Vec<uuid::Uuid> {
    let client = raw_client(url).await;
    let mut ids = Vec::new();
    for partition in 0..2 {
        let entries: Vec<(String, std::collections::HashMap<String, String>)> = client
            .xrange(format!("{NAMESPACE}:events:{partition}"), "-", "+", None)
            .await
            .unwrap();
        for (_, fields) in entries {
            let envelope: Envelope = serde_json::from_str(&fields["e"]).unwrap();
            ids.push(envelope.event_id);
        }
    }
    client.quit().await.unwrap();
    ids
}

/// Waits until `replica` has finished its first sync with `primary`.
async fn wait_for_replication(primary: &OwnValkey, replica: &OwnValkey) {
    let primary = raw_client(&primary.url()).await;
    let replica = raw_client(&replica.url()).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let on_primary: String = primary.info(Some(InfoKind::Replication)).await.unwrap();
        let on_replica: String = replica.info(Some(InfoKind::Replication)).await.unwrap();
        if on_primary.contains("connected_slaves:1") && on_replica.contains("master_link_status:up")
        {
            return;
        }
        assert!(Instant::now() < deadline, "the replica never synced");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn connect(
    url: &str,
    durability: Durability,
    min_replicas: u32,
) -> Result<ValkeyLog, LogError> {
    let options = ValkeyOptions {
        durability,
        min_replicas,
        ca_file: None,
    };
    ValkeyLog::connect_with(url, NAMESPACE, 2, &options).await
}

/// `connect`, retried while the log is unavailable (a replica's AOF is not
/// up yet after its first sync), as a role's start-up does.
async fn connect_when_ready(url: &str, durability: Durability, min_replicas: u32) -> ValkeyLog {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match connect(url, durability, min_replicas).await {
            Ok(log) => return log,
            Err(LogError::Unavailable(why)) if Instant::now() < deadline => {
                eprintln!("waiting: {why}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("{e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicated_acknowledges_only_what_a_replica_holds_and_strict_loses_it_in_a_failover() {
    let mut primary = OwnValkey::start();
    let mut replica = OwnValkey::replica_of(&primary);
    wait_for_replication(&primary, &replica).await;

    // Start-up checks the replicas exist: two asked for, one there.
    match connect(&primary.url(), Durability::Replicated, 2).await {
        Err(LogError::Unavailable(why)) => assert!(why.contains("1 replica(s) connected"), "{why}"),
        Err(other) => panic!("not a missing replica: {other}"),
        Ok(_) => panic!("started with too few replicas"),
    }
    let replicated = connect_when_ready(&primary.url(), Durability::Replicated, 1).await;
    assert!(
        replicated.describe().contains("replicated to 1"),
        "{}",
        replicated.describe()
    );
    // The default min-replicas-to-write (0) is named: an isolated primary
    // still takes appends. Set, the caveat goes.
    assert!(
        replicated.describe().contains("min-replicas-to-write is 0"),
        "{}",
        replicated.describe()
    );
    let config = raw_client(&primary.url()).await;
    let set = |value: &'static str| {
        let config = config.clone();
        async move {
            let command = CustomCommand::new_static("CONFIG", ClusterHash::Random, false);
            let _: String = config
                .custom(command, vec!["SET", "min-replicas-to-write", value])
                .await
                .unwrap();
        }
    };
    set("1").await;
    let careful = connect_when_ready(&primary.url(), Durability::Replicated, 1).await;
    assert!(
        !careful.describe().contains("min-replicas-to-write"),
        "{}",
        careful.describe()
    );
    // Back to 0: the negative control below needs strict appends to go on
    // while the replica is down.
    set("0").await;
    let strict = connect(&primary.url(), Durability::Strict, 1)
        .await
        .unwrap();

    // Acknowledged: the replica has it the moment the append returns.
    let kept = envelope("kept");
    replicated.append(&kept).await.unwrap();
    assert!(event_ids_on(&replica.url()).await.contains(&kept.event_id));

    // The replica dies: replicated durability gives no 2xx.
    replica.kill_hard();
    let started = Instant::now();
    match replicated.append(&envelope("unconfirmed")).await {
        Err(LogError::OutcomeUnknown(why)) => assert!(why.contains("0 of the 1 replicas"), "{why}"),
        other => panic!("an append no replica confirmed was answered {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(7),
        "{:?}",
        started.elapsed()
    );
    // Negative control: strict durability acknowledges it all the same.
    let only_on_primary = envelope("lost");
    strict.append(&only_on_primary).await.unwrap();

    // The primary's host dies with its disk; the replica is promoted.
    primary.destroy();
    replica.restart();
    let promoted = raw_client(&replica.url()).await;
    let replicaof = CustomCommand::new_static("REPLICAOF", ClusterHash::Random, false);
    let _: String = promoted.custom(replicaof, vec!["NO", "ONE"]).await.unwrap();
    let survivors = event_ids_on(&replica.url()).await;
    let mut verdict = Verdict::counted("valkey, the primary lost with its disk, replicated", false);
    verdict.orders = 2;
    verdict.acknowledged = 1;
    verdict.unknown = 1;
    verdict.lost = usize::from(!survivors.contains(&kept.event_id));
    verdict.report();
    let mut control = Verdict::counted("valkey, the primary lost with its disk, strict", true);
    control.orders = 1;
    control.acknowledged = 1;
    control.lost = usize::from(!survivors.contains(&only_on_primary.event_id));
    control.report();
    assert!(
        survivors.contains(&kept.event_id),
        "replicated: an acknowledged event was lost in the failover"
    );
    assert!(
        !survivors.contains(&only_on_primary.event_id),
        "the negative control did not show its anomaly: strict's acknowledged event survived"
    );
}

/// Under replicated durability a worker applies only entries the replicas
/// have. With the replica frozen (SIGSTOP), an entry written to the
/// primary alone (as an append waiting for its confirmation leaves it) is
/// not applied; once the replica wakes and has it, it is. The negative
/// control is the same worker with its read confirmation skipped (a
/// debug-only fault): it applies the entry at once, and a failover to the
/// replica then would leave the read model holding an event the log lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_applies_only_entries_the_replicas_have() {
    for control in [false, true] {
        let applied_while_frozen = entry_applied_while_the_replica_is_frozen(control).await;
        let mut verdict = Verdict::counted(
            if control {
                "valkey, a worker reading what the replica lacks, confirmation skipped"
            } else {
                "valkey, a worker reading what the replica lacks, replicated"
            },
            control,
        );
        verdict.orders = 1;
        // Applied before any replica had it: what a failover then would
        // leave in the read model and take from the log.
        verdict.applied_unreplicated = usize::from(applied_while_frozen);
        verdict.report();
        assert_eq!(
            applied_while_frozen, control,
            "control {control}: applied while only the primary had it: {applied_while_frozen}"
        );
    }
}

/// Whether a worker (its read confirmation skipped if `skip`) applied an
/// entry the frozen replica lacks; checks it is applied once the replica
/// wakes either way.
async fn entry_applied_while_the_replica_is_frozen(skip: bool) -> bool {
    use common::process::{free_port, Role, SharedDeployment};
    let primary = OwnValkey::start();
    let replica = OwnValkey::replica_of(&primary);
    wait_for_replication(&primary, &replica).await;
    let mut deployment = SharedDeployment::new()
        .await
        .with("STREAMSTOCK_VALKEY_URL", &primary.url())
        .with("STREAMSTOCK_DURABILITY", "replicated")
        .with("STREAMSTOCK_MIN_REPLICAS", "1");
    if skip {
        deployment = deployment.with("STREAMSTOCK_FAULT_SKIP_READ_CONFIRMATION", "1");
    }
    let env = &deployment.env;
    let namespace = env
        .iter()
        .find(|(k, _)| k == "STREAMSTOCK_VALKEY_NAMESPACE")
        .map(|(_, v)| v.clone())
        .unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let all = Role::start(
        "all",
        &["all", "--profile", "none", "--listen", &listen],
        env,
    );
    let api = common::Api::new(&format!("http://{listen}"));
    api.wait_healthy().await;
    let product = api.create_product("FROZEN-1", 2.0, 5).await;

    // The replica freezes; a receipt reaches the primary alone.
    replica.signal("-STOP");
    let receipt = streamstock::domain::DomainEvent::StockReceived(
        streamstock::domain::events::StockReceived {
            location_id: None,
            product_id: product.into(),
            quantity: 7,
            purchase_order_id: None,
        },
    )
    .into_envelope(chrono::Utc::now());
    let partition = streamstock::stream::partition_for(&receipt.key, 4);
    let raw = raw_client(&primary.url()).await;
    let _: String = raw
        .xadd(
            format!("{namespace}:events:{}", partition.0),
            false,
            None,
            "*",
            vec![("e", serde_json::to_string(&receipt).unwrap())],
        )
        .await
        .unwrap();
    let on_hand = || async { api.product(product).await.expect(200).on_hand };
    let deadline = Instant::now() + Duration::from_millis(2500);
    let mut applied = false;
    while Instant::now() < deadline && !applied {
        applied = on_hand().await == 12;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Awake, the replica gets it, and the worker applies it (once).
    replica.signal("-CONT");
    api.wait_for("the receipt applied once the replica has it", || async {
        on_hand().await == 12
    })
    .await;
    assert!(all.terminate().success());
    raw.quit().await.unwrap();
    applied
}

/// A TCP proxy to Valkey that, once armed, resets the client's connection
/// once an XADD sent after arming has reached Valkey, as soon as the next
/// reply comes back (the XADD's own, or one before it: either way its
/// sender never sees the XADD answered). It numbers its
/// connections and notes the one each XADD and WAITAOF came down.
struct ResettingProxy {
    port: u16,
    armed: Arc<AtomicBool>,
    /// (command, connection number) in the order the proxy saw them.
    seen: Arc<Mutex<Vec<(&'static str, usize)>>>,
}

impl ResettingProxy {
    async fn start(valkey_port: u16) -> ResettingProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let armed = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let (armed_, seen_) = (armed.clone(), seen.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let number = connections.fetch_add(1, Ordering::SeqCst) + 1;
                let server = tokio::net::TcpStream::connect(("127.0.0.1", valkey_port))
                    .await
                    .unwrap();
                tokio::spawn(relay(client, server, number, armed_.clone(), seen_.clone()));
            }
        });
        ResettingProxy { port, armed, seen }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

async fn relay(
    client: tokio::net::TcpStream,
    server: tokio::net::TcpStream,
    number: usize,
    armed: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<(&'static str, usize)>>>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let xadd_sent = Arc::new(AtomicBool::new(false));
    let sent = xadd_sent.clone();
    let armed_up = armed.clone();
    let upstream = tokio::spawn(async move {
        let mut buffer = vec![0u8; 64 * 1024];
        while let Ok(n) = client_read.read(&mut buffer).await {
            if n == 0 {
                break;
            }
            let text = String::from_utf8_lossy(&buffer[..n]).to_ascii_uppercase();
            let has = |command: &str| text.contains(&format!("\r\n{command}\r\n"));
            for command in ["XADD", "WAITAOF"] {
                if has(command) {
                    seen.lock().unwrap().push((command, number));
                }
            }
            if server_write.write_all(&buffer[..n]).await.is_err() {
                break;
            }
            // An XADD sent once armed, and only once it is on its way to
            // Valkey: the cut that follows can lose its reply, never the
            // XADD itself.
            if has("XADD") && armed_up.load(Ordering::SeqCst) {
                sent.store(true, Ordering::SeqCst);
            }
        }
    });
    let mut buffer = vec![0u8; 64 * 1024];
    while let Ok(n) = server_read.read(&mut buffer).await {
        if n == 0 || client_write.write_all(&buffer[..n]).await.is_err() {
            break;
        }
        // The XADD's reply has gone back: cut this connection, once.
        if xadd_sent.load(Ordering::SeqCst) && armed.swap(false, Ordering::SeqCst) {
            break;
        }
    }
    upstream.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_on_a_new_connection_never_confirms_an_append() {
    let valkey = OwnValkey::start();
    let proxy = ResettingProxy::start(valkey.port).await;

    // StreamStock: the connection is reset after the XADD's reply; the
    // append is answered "outcome unknown", never confirmed.
    let log = connect(&proxy.url(), Durability::Strict, 1).await.unwrap();
    proxy.armed.store(true, Ordering::SeqCst);
    let reset = envelope("reset");
    let answer = tokio::time::timeout(Duration::from_secs(15), log.append(&reset));
    match answer.await.expect("an answer within 15 s") {
        Err(LogError::OutcomeUnknown(_)) => {}
        other => panic!("an append whose connection was reset was answered {other:?}"),
    }
    assert!(
        !proxy.armed.load(Ordering::SeqCst),
        "the proxy never cut the connection"
    );
    // Once reconnected, appends are confirmed again.
    let deadline = Instant::now() + Duration::from_secs(10);
    while log.append(&envelope("after")).await.is_err() {
        assert!(Instant::now() < deadline, "appends never recovered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Negative control: a plain client sends XADD then WAITAOF 1 0 and takes
    // the answer as its confirmation. The proxy shows the WAITAOF came down
    // another connection than the XADD it "confirmed".
    proxy.seen.lock().unwrap().clear();
    let naive = raw_client(&proxy.url()).await;
    proxy.armed.store(true, Ordering::SeqCst);
    let _: String = naive
        .xadd(
            format!("{NAMESPACE}:naive"),
            false,
            None,
            "*",
            vec![("e", "x")],
        )
        .await
        .unwrap();
    let waitaof = CustomCommand::new_static("WAITAOF", ClusterHash::Random, false);
    let confirmed: Vec<i64> = naive.custom(waitaof, vec![1, 0, 1000]).await.unwrap();
    assert_eq!(confirmed[0], 1, "the plain client got its confirmation");
    let seen = proxy.seen.lock().unwrap().clone();
    let xadd_on = seen.iter().find(|(c, _)| *c == "XADD").unwrap().1;
    let wait_on = seen.iter().rev().find(|(c, _)| *c == "WAITAOF").unwrap().1;
    assert_ne!(
        xadd_on, wait_on,
        "the negative control did not show its anomaly: {seen:?}"
    );
}

/// An order whose append landed but was not confirmed (the proxy resets
/// the connection right after the XADD's reply) is answered 503
/// `outcome_unknown`; its retry with the same Idempotency-Key is answered
/// 202 with the same order id, and one order exists. The negative control
/// retries without a key and gets a second order for the one intent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_with_the_same_key_after_an_unknown_outcome_makes_one_order() {
    use common::{Backend, TestApp};
    let valkey = OwnValkey::start();
    let proxy = ResettingProxy::start(valkey.port).await;
    let dir = tempfile::tempdir().unwrap();
    let mut settings = common::isolated_settings(Backend::ValkeyPostgres, dir.path()).await;
    settings.valkey_url = Some(proxy.url());
    let app = TestApp::spawn_with(settings).await;
    let product = app.create_product("DOUBT-1", 2.00, 10).await;
    app.wait_until_decided(0).await;
    let order = serde_json::json!({
        "customer_email": "doubt@example.com",
        "items": [{ "product_id": product, "quantity": 1 }]
    });
    let post = |key: Option<&str>| {
        let mut request = app.http.post(app.url("/api/orders")).json(&order);
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        app.send(request)
    };

    proxy.armed.store(true, Ordering::SeqCst);
    let first = post(Some("doubt-1")).await;
    assert_eq!(
        (first.status, first.body["error"]["code"].as_str()),
        (503, Some("outcome_unknown")),
        "{}",
        first.text
    );
    assert!(
        !proxy.armed.load(Ordering::SeqCst),
        "the proxy never cut the connection"
    );
    let metrics = app.metrics().await;
    assert!(
        metrics.contains(
            r#"streamstock_events_appended_total{type="order.placed",result="unknown"} 1"#
        ),
        "{metrics}"
    );
    let retry = post(Some("doubt-1")).await;
    assert_eq!(retry.status, 202, "{}", retry.text);
    let order_id = retry.body["order_id"].as_str().unwrap().to_string();
    // Once decided: one order, placed once, whatever the log holds.
    app.wait_for("the order decided", || async {
        app.all_orders().await.is_some_and(|orders| {
            orders.len() == 1
                && orders[0].status != streamstock::domain::status::OrderStatus::Pending
        })
    })
    .await;
    let orders = app.all_orders().await.unwrap();
    assert_eq!(orders[0].order_id.to_string(), order_id);
    let placed = app
        .events(&format!("key={order_id}&type=order.placed"))
        .await;
    assert_eq!(placed.expect(200).len(), 1);

    // Negative control: the same unknown outcome, retried without a key.
    proxy.armed.store(true, Ordering::SeqCst);
    let first = post(None).await;
    assert_eq!(first.status, 503, "{}", first.text);
    assert_eq!(post(None).await.status, 202);
    app.wait_until_decided(3).await;
    assert_eq!(
        app.all_orders().await.unwrap().len(),
        3,
        "the negative control did not show its anomaly: no second order from one intent"
    );
    app.stop().await;
}
