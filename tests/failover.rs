//! A Valkey Cluster failover under load, with replicated durability: three
//! primaries with two replicas each, started by this test (node timeout
//! 2 s), and `--min-replicas 1`: after a failover the new primary still has
//! a replica to confirm appends (with one replica per primary it would
//! have none, and replicated durability would refuse every append to it
//! until the lost node came back).
//! One primary is killed with SIGKILL while orders flow; its replica takes
//! over. The gateway and the worker ride through: appends to the dead
//! primary's partitions get 503s until the failover, then 2xx again. The
//! time from the kill to the first 2xx for those partitions is measured and
//! printed. Every order answered 2xx is decided exactly once, the
//! invariants hold, and lease epochs stay correct (the worker's commits are
//! fenced by them).

use crate::common;

use common::process::{free_port, OwnValkey};
use common::{Backend, TestApp};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use streamstock::stream::Durability;

fn valkey_cli() -> PathBuf {
    let server = PathBuf::from(
        std::env::var("STREAMSTOCK_TEST_VALKEY_SERVER")
            .expect("STREAMSTOCK_TEST_VALKEY_SERVER: run the suite with ./scripts/test.sh"),
    );
    let beside = server.with_file_name("valkey-cli");
    if beside.exists() {
        beside
    } else {
        PathBuf::from("redis-cli")
    }
}

fn cli(port: u16, args: &[&str]) -> String {
    let output = std::process::Command::new(valkey_cli())
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .expect("valkey-cli");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Nine nodes, made a cluster of three primaries with two replicas each.
fn start_cluster() -> Vec<OwnValkey> {
    let nodes: Vec<OwnValkey> = (0..9)
        .map(|_| {
            let bus = free_port().to_string();
            OwnValkey::start_with(
                free_port(),
                &[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "2000",
                    "--cluster-port",
                    &bus,
                ],
            )
        })
        .collect();
    let addresses: Vec<String> = nodes
        .iter()
        .map(|n| format!("127.0.0.1:{}", n.port))
        .collect();
    let mut create = vec!["--cluster", "create"];
    create.extend(addresses.iter().map(String::as_str));
    create.extend(["--cluster-replicas", "2", "--cluster-yes"]);
    let output = std::process::Command::new(valkey_cli())
        .args(&create)
        .output()
        .expect("valkey-cli --cluster create");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    for node in &nodes {
        while !cli(node.port, &["cluster", "info"]).contains("cluster_state:ok") {
            assert!(Instant::now() < deadline, "the cluster never became ready");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    // Every primary has its replicas connected (replicated durability
    // waits for that at start-up, but the load should not).
    for node in &nodes {
        let info = cli(node.port, &["info", "replication"]);
        if info.contains("role:master") {
            while !cli(node.port, &["info", "replication"]).contains("connected_slaves:2") {
                assert!(
                    Instant::now() < deadline,
                    "a primary never got its replicas"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
    nodes
}

/// The port of the primary serving `key`.
fn primary_of(nodes: &[OwnValkey], key: &str) -> u16 {
    let slot: u32 = cli(nodes[0].port, &["cluster", "keyslot", key])
        .trim()
        .parse()
        .unwrap();
    let table = cli(nodes[0].port, &["cluster", "nodes"]);
    for line in table.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if !fields.get(2).is_some_and(|flags| flags.contains("master")) {
            continue;
        }
        let port: u16 = fields[1].split(['@', ':']).nth(1).unwrap().parse().unwrap();
        for range in &fields[8..] {
            let (low, high) = match range.split_once('-') {
                Some((low, high)) => (low.parse().unwrap(), high.parse().unwrap()),
                None => match range.parse::<u32>() {
                    Ok(slot) => (slot, slot),
                    Err(_) => continue,
                },
            };
            if (low..=high).contains(&slot) {
                return port;
            }
        }
    }
    panic!("no primary serves slot {slot}: {table}");
}

/// One answer of the load: when its request was sent and answered, its
/// status, and the order and partition of a 2xx.
struct Answer {
    sent: Instant,
    at: Instant,
    status: u16,
    accepted: Option<(uuid::Uuid, u32)>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_killed_under_load_fails_over_and_loses_nothing_acknowledged() {
    let mut nodes = start_cluster();
    let seeds: Vec<String> = nodes[..3]
        .iter()
        .map(|n| format!("127.0.0.1:{}", n.port))
        .collect();
    let url = format!(
        "valkey-cluster://{}?node={}&node={}",
        seeds[0], seeds[1], seeds[2]
    );
    let dir = tempfile::tempdir().unwrap();
    let (app, namespace) = replicated_app(url, dir.path()).await;
    let stats = app.stats().await.expect(200);
    assert!(
        stats.event_log.contains("replicated to 1"),
        "{}",
        stats.event_log
    );
    let product = app.create_product("FAILOVER-1", 1.00, 1_000_000).await;

    // The victim: the primary of partition 0's stream.
    let victim_port = primary_of(&nodes, &format!("{namespace}:events:0"));
    let victim_partitions: Vec<u32> = (0..6)
        .filter(|p| primary_of(&nodes, &format!("{namespace}:events:{p}")) == victim_port)
        .collect();

    let victim = nodes.iter_mut().find(|n| n.port == victim_port).unwrap();
    let (answers, killed_at) = load_with_a_kill(&app, product, || victim.kill_hard()).await;
    let on_victim = |a: &Answer| {
        a.accepted
            .is_some_and(|(_, p)| victim_partitions.contains(&p))
    };
    report_recovery(&answers, killed_at, on_victim);
    assert_acknowledged_decided_once(app, &answers).await;
}

/// `all` on the Valkey at `url` with replicated durability and six
/// partitions; returns it and its Valkey namespace.
async fn replicated_app(url: String, data_dir: &std::path::Path) -> (TestApp, String) {
    let mut settings = common::isolated_settings(Backend::ValkeyPostgres, data_dir).await;
    settings.valkey_url = Some(url);
    settings.durability = Durability::Replicated;
    settings.partitions = 6;
    let namespace = settings.valkey_namespace.clone();
    (TestApp::spawn_with(settings).await, namespace)
}

/// Every order answered 2xx is decided exactly once (and the invariants
/// hold), and no Idempotency-Key (each its own customer) made two orders,
/// retries of unknown outcomes included; then stops the app.
async fn assert_acknowledged_decided_once(app: TestApp, answers: &[Answer]) {
    let accepted: std::collections::HashSet<uuid::Uuid> = answers
        .iter()
        .filter_map(|a| a.accepted.map(|(id, _)| id))
        .collect();
    let store = app.store().await;
    common::load::assert_accepted_orders_processed_once(&app, &store, &accepted, &[]).await;
    let orders = app.all_orders().await.unwrap();
    let mut per_key = std::collections::HashMap::<&str, usize>::new();
    for order in &orders {
        *per_key.entry(order.customer_email.as_str()).or_default() += 1;
    }
    let doubled: Vec<_> = per_key.iter().filter(|(_, n)| **n > 1).collect();
    assert!(doubled.is_empty(), "keys that made two orders: {doubled:?}");
    let retried = answers
        .windows(2)
        .filter(|w| w[0].status == 503 && w[1].accepted.is_some())
        .count();
    eprintln!(
        "failover: {} orders, {retried} answers after a 503",
        orders.len()
    );
    app.stop().await;
}

/// Four clients place orders for 16 s; `kill` runs 3 s in. Returns every
/// answer and when the kill was.
async fn load_with_a_kill(
    app: &TestApp,
    product: uuid::Uuid,
    kill: impl FnOnce(),
) -> (Vec<Answer>, Instant) {
    let api = Arc::new(common::Api::new(&app.base));
    let stop = Instant::now() + Duration::from_secs(16);
    let clients = (0..4).map(|c| {
        let api = api.clone();
        tokio::spawn(async move {
            let mut answers = Vec::new();
            let mut i = 0;
            // Each order has its own customer and Idempotency-Key; an
            // unknown outcome is retried with the same key, as a careful
            // client does (one order per key, whatever happened).
            let mut retrying = None;
            while Instant::now() < stop {
                let n = retrying.take().unwrap_or_else(|| {
                    i += 1;
                    i
                });
                let email = format!("failover{c}-{n}@example.com");
                let body = serde_json::json!({
                    "customer_email": email,
                    "items": [{ "product_id": product, "quantity": 1 }]
                });
                let request = api
                    .http
                    .post(api.url("/api/orders"))
                    .header("Idempotency-Key", format!("failover-{c}-{n}"))
                    .json(&body);
                let sent = Instant::now();
                let reply = api.send(request).await;
                let accepted = (reply.status == 202).then(|| {
                    let queued: streamstock::gateway::responses::OrderQueued =
                        serde_json::from_value(reply.body.clone()).unwrap();
                    let partition = queued.msg_id.split(':').next().unwrap().parse().unwrap();
                    (queued.order_id.as_uuid(), partition)
                });
                assert!(
                    reply.status == 202 || reply.status == 503,
                    "{} {}",
                    reply.status,
                    reply.text
                );
                if reply.body["error"]["code"] == "outcome_unknown" {
                    retrying = Some(n);
                }
                answers.push(Answer {
                    sent,
                    at: Instant::now(),
                    status: reply.status,
                    accepted,
                });
                if reply.status == 503 {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            answers
        })
    });
    let clients: Vec<_> = clients.collect();
    tokio::time::sleep(Duration::from_secs(3)).await;
    kill();
    let killed_at = Instant::now();
    let mut answers = Vec::new();
    for client in clients {
        answers.extend(client.await.unwrap());
    }
    (answers, killed_at)
}

/// Prints the time from the kill to the first 2xx that `on_victim`
/// selects among requests sent after the kill, and fails if there is none
/// (or none before the kill).
fn report_recovery(answers: &[Answer], killed_at: Instant, on_victim: impl Fn(&Answer) -> bool) {
    let before = answers
        .iter()
        .filter(|a| a.at < killed_at && on_victim(a))
        .count();
    assert!(
        before > 0,
        "no order reached the victim's partitions before the kill"
    );
    let recovered = answers
        .iter()
        .filter(|a| a.sent > killed_at && on_victim(a))
        .map(|a| a.at - killed_at)
        .min()
        .expect("the dead primary's partitions never took an order again");
    let refused = answers.iter().filter(|a| a.status == 503).count();
    eprintln!(
        "failover: first 2xx on the dead primary's partitions {recovered:?} after the kill; \
         {refused} answers 503 of {}",
        answers.len()
    );
}

/// A Sentinel process, killed when dropped (a failed test leaves none).
struct Sentinel(std::process::Child);

impl Drop for Sentinel {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A Sentinel watching `primary` as `streamstock`, calling it down after
/// 1 s without an answer.
fn start_sentinel(primary: u16, dir: &std::path::Path) -> (u16, Sentinel) {
    let port = free_port();
    let config = dir.join(format!("sentinel-{port}.conf"));
    std::fs::write(
        &config,
        format!(
            "port {port}\nbind 127.0.0.1\ndir {}\n\
             sentinel monitor streamstock 127.0.0.1 {primary} 2\n\
             sentinel down-after-milliseconds streamstock 1000\n\
             sentinel failover-timeout streamstock 10000\n",
            dir.display()
        ),
    )
    .unwrap();
    let server = std::env::var("STREAMSTOCK_TEST_VALKEY_SERVER").unwrap();
    let child = std::process::Command::new(server)
        .arg(&config)
        .arg("--sentinel")
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("start a sentinel");
    (port, Sentinel(child))
}

/// Sentinel: a primary with two replicas and three Sentinels. The primary
/// is killed under load; the Sentinels promote a replica, and StreamStock,
/// given the Sentinels' addresses (`valkey-sentinel://`), follows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_promotes_a_replica_and_streamstock_follows() {
    let mut primary = OwnValkey::start();
    let replicas = [
        OwnValkey::replica_of(&primary),
        OwnValkey::replica_of(&primary),
    ];
    let dir = tempfile::tempdir().unwrap();
    let sentinels: Vec<(u16, Sentinel)> = (0..3)
        .map(|_| start_sentinel(primary.port, dir.path()))
        .collect();
    let ports: Vec<u16> = sentinels.iter().map(|(port, _)| *port).collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    for &port in &ports {
        while !cli(port, &["sentinel", "replicas", "streamstock"]).contains("slave") {
            assert!(
                Instant::now() < deadline,
                "the Sentinels never saw the replicas"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let url = format!(
        "valkey-sentinel://127.0.0.1:{}/0?sentinelServiceName=streamstock&node=127.0.0.1:{}&node=127.0.0.1:{}",
        ports[0], ports[1], ports[2]
    );
    let data = tempfile::tempdir().unwrap();
    let (app, _) = replicated_app(url, data.path()).await;
    let product = app.create_product("SENTINEL-1", 1.00, 1_000_000).await;

    let (answers, killed_at) = load_with_a_kill(&app, product, || primary.kill_hard()).await;
    report_recovery(&answers, killed_at, |a| a.accepted.is_some());
    assert_acknowledged_decided_once(app, &answers).await;
    drop(replicas);
    drop(sentinels);
}
