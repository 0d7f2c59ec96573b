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

use common::cluster::{self, cli_at};
use common::history::{self, Outcome};
use common::process::{free_port, OwnValkey};
use common::{Backend, TestApp};
use std::sync::Arc;
use std::time::{Duration, Instant};
use streamstock::stream::Durability;

/// Nine nodes on loopback, made a cluster of three primaries with two
/// replicas each.
fn start_cluster() -> Vec<OwnValkey> {
    let nodes: Vec<OwnValkey> = (0..9).map(|_| cluster::node("127.0.0.1", None)).collect();
    cluster::create(&nodes, 2);
    nodes
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
    let victim_port = cluster::primary_of(&nodes[0], &format!("{namespace}:events:0"));
    let victim_partitions: Vec<u32> = (0..6)
        .filter(|p| {
            cluster::primary_of(&nodes[0], &format!("{namespace}:events:{p}")) == victim_port
        })
        .collect();

    let victim = nodes.iter_mut().find(|n| n.port == victim_port).unwrap();
    let run = load_with_a_kill(&app, product, || victim.kill_hard()).await;
    assert!(
        run.ops.iter().any(|op| op.answered < run.fault_at
            && matches!(op.outcome, Outcome::Ok { partition, .. } if victim_partitions.contains(&partition))),
        "no order reached the victim's partitions before the kill"
    );
    let mut verdict = run.check("valkey-cluster, a primary killed", &app).await;
    // Recovery is the dead primary's partitions' own: the others never
    // stopped.
    verdict.recovery_ms = history::recovery_on(&run.ops, run.fault_at, &victim_partitions);
    verdict.report();
    assert!(
        verdict.recovery_ms.is_some(),
        "the dead primary's partitions never took an order again"
    );
    assert!(!verdict.anomalous(), "{verdict:#?}");
    app.stop().await;
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

/// A run of the history's load with a fault.
struct FaultedRun {
    api: Arc<common::Api>,
    ops: Vec<history::Op>,
    fault_at: Instant,
}

impl FaultedRun {
    /// The history's verdict, after the log has drained.
    async fn check(&self, scenario: &str, app: &TestApp) -> history::Verdict {
        let store = app.store().await;
        let verdict = history::check(
            scenario,
            false,
            &self.api,
            &store,
            &self.ops,
            self.fault_at,
            Duration::from_secs(30),
        )
        .await;
        let refused: Vec<_> = self
            .ops
            .iter()
            .filter(|op| matches!(op.outcome, Outcome::Fail(_)))
            .collect();
        assert!(refused.is_empty(), "orders refused with a 4xx: {refused:?}");
        verdict
    }
}

/// Four clients place orders for 16 s (the history's load: every order its
/// own key, unknown outcomes retried with it); `kill` runs 3 s in.
async fn load_with_a_kill(app: &TestApp, product: uuid::Uuid, kill: impl FnOnce()) -> FaultedRun {
    let api = Arc::new(common::Api::new(&app.base));
    let load = tokio::spawn(history::record(
        api.clone(),
        4,
        product,
        Instant::now() + Duration::from_secs(16),
    ));
    tokio::time::sleep(Duration::from_secs(3)).await;
    kill();
    let fault_at = Instant::now();
    let ops = load.await.unwrap();
    FaultedRun { api, ops, fault_at }
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
        while !cli_at("127.0.0.1", port, &["sentinel", "replicas", "streamstock"]).contains("slave")
        {
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

    let run = load_with_a_kill(&app, product, || primary.kill_hard()).await;
    let verdict = run.check("valkey-sentinel, the primary killed", &app).await;
    verdict.report();
    assert!(
        verdict.recovery_ms.is_some(),
        "no order was acknowledged after the kill"
    );
    assert!(!verdict.anomalous(), "{verdict:#?}");
    app.stop().await;
    drop(replicas);
    drop(sentinels);
}
