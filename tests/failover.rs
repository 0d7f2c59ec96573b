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
//! The harder fault, on the cluster and with Sentinel: the replicas frozen
//! for 1.5 s before the primary is killed, so the one promoted missed the
//! primary's last appends. Replicated durability acknowledged none of them;
//! strict, the negative control, did, and its worker had applied them:
//! the read model holds events the log lost (check E), and StreamStock's
//! audit must report each one.

use crate::common;

use common::cluster::{self, cli_at};
use common::history::{self, Outcome};
use common::process::{free_port, OwnValkey};
use common::{Backend, TestApp};
use std::collections::HashSet;
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
    let (app, namespace) = app_keeping_the_log(url, dir.path(), Durability::Replicated).await;
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
    let witness = nodes.iter().find(|n| n.port != victim_port).unwrap();
    let store = app.store().await;
    verdict
        .check_log(&run.api, &store, &run.ops, |p| {
            cluster::stream_ids(witness, &format!("{namespace}:events:{p}"))
        })
        .await;
    verdict.report();
    assert!(
        verdict.recovery_ms.is_some(),
        "the dead primary's partitions never took an order again"
    );
    assert!(!verdict.anomalous(), "{verdict:#?}");
    app.stop().await;
}

/// A failover to replicas that missed the last appends: both replicas of
/// a primary are frozen (SIGSTOP) for 1.5 s under load, the primary is
/// killed at the end of it, and they are woken. One of them is promoted
/// without what the primary took meanwhile.
/// - `replicated`: none of that was acknowledged (each append waited for a
///   replica, and got a 503 that the client retried), so nothing
///   acknowledged is lost.
/// - `strict` is the negative control: the primary's own AOF was enough
///   for a 2xx, so acknowledged events are lost from the log. The worker
///   had applied nearly all of them within milliseconds (those orders are
///   decided, so A rarely sees a loss): the read model holds events the
///   log lost (E), and StreamStock's audit must report every one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_to_lagging_replicas_loses_nothing_acknowledged_when_replicated() {
    let verdict = failover_to_lagging_replicas(Durability::Replicated).await;
    assert!(!verdict.anomalous(), "{verdict:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_a_failover_to_lagging_replicas_loses_applied_events_when_strict() {
    let verdict = failover_to_lagging_replicas(Durability::Strict).await;
    assert_lost_by_the_log_and_reported(&verdict);
}

/// What a strict control of a lagging-replica failover must show: the read
/// model holds events the log lost (E), and the audit reported each one.
fn assert_lost_by_the_log_and_reported(verdict: &history::Verdict) {
    assert!(
        verdict.read_model_lost_acknowledged > Some(0),
        "the read model held no acknowledged event the log lost: {verdict:#?}"
    );
    assert_eq!(
        verdict.unreported_losses(),
        0,
        "the audit missed lost entries: {verdict:#?}"
    );
}

async fn failover_to_lagging_replicas(durability: Durability) -> history::Verdict {
    let mut nodes = start_cluster();
    let url = format!(
        "valkey-cluster://127.0.0.1:{}?node=127.0.0.1:{}",
        nodes[0].port, nodes[1].port
    );
    let dir = tempfile::tempdir().unwrap();
    let (app, namespace) = app_keeping_the_log(url, dir.path(), durability).await;
    let product = app.create_product("LAGGING-1", 1.00, 1_000_000).await;
    let key = |p: u32| format!("{namespace}:events:{p}");
    let victim_port = cluster::primary_of(&nodes[0], &key(0));
    let replica_ports = cluster::replicas_of(&nodes[0], victim_port);
    assert_eq!(replica_ports.len(), 2, "the victim's replicas");
    // A node that lives through it all, to ask about the cluster.
    let witness = nodes
        .iter()
        .position(|n| n.port != victim_port && !replica_ports.contains(&n.port))
        .unwrap();

    let (replicas, mut others): (Vec<&mut OwnValkey>, Vec<&mut OwnValkey>) = nodes
        .iter_mut()
        .partition(|n| replica_ports.contains(&n.port));
    let victim = others.iter_mut().find(|n| n.port == victim_port).unwrap();
    let replicas: Vec<&OwnValkey> = replicas.into_iter().map(|r| &*r).collect();
    let run = load_with_lagging_replicas(&app, product, &replicas, victim).await;
    let verdict = run
        .check_lagging(
            "valkey-cluster, failover to lagging replicas",
            durability,
            &app,
            |p| cluster::stream_ids(&nodes[witness], &key(p)),
        )
        .await;
    app.stop().await;
    verdict
}

/// `all` on the Valkey at `url` with `durability` and six partitions, its
/// log keeping every entry of the run, so that the check reads it back
/// whole: an applied entry absent from it was lost. (StreamStock's own
/// audit, with the default of trimming at once, is the subject of
/// log_audit.rs.) Returns it and its Valkey namespace.
async fn app_keeping_the_log(
    url: String,
    data_dir: &std::path::Path,
    durability: Durability,
) -> (TestApp, String) {
    let mut settings = common::isolated_settings(Backend::ValkeyPostgres, data_dir).await;
    settings.valkey_url = Some(url);
    settings.durability = durability;
    settings.partitions = 6;
    settings.retention.log_retention = Duration::from_secs(600).into();
    let namespace = settings.valkey_namespace.clone();
    (TestApp::spawn_with(settings).await, namespace)
}

/// Four clients place orders for 16 s; 3 s in, `replicas` are frozen
/// (SIGSTOP) for 1.5 s, `primary` is killed at the end of it (the fault's
/// moment), and the replicas are woken.
async fn load_with_lagging_replicas(
    app: &TestApp,
    product: uuid::Uuid,
    replicas: &[&OwnValkey],
    primary: &mut OwnValkey,
) -> FaultedRun {
    let api = Arc::new(common::Api::new(&app.base));
    let load = tokio::spawn(history::record(
        api.clone(),
        4,
        product,
        Instant::now() + Duration::from_secs(16),
    ));
    tokio::time::sleep(Duration::from_secs(3)).await;
    for replica in replicas {
        replica.signal("-STOP");
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    primary.kill_hard();
    let fault_at = Instant::now();
    for replica in replicas {
        replica.signal("-CONT");
    }
    let ops = load.await.unwrap();
    FaultedRun { api, ops, fault_at }
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

    /// The verdict of a lagging-replica run: `strict` is the negative
    /// control (named so), and check E reads the log through `log` (per
    /// partition: the entry ids it holds, the highest it deleted).
    async fn check_lagging(
        &self,
        scenario: &str,
        durability: Durability,
        app: &TestApp,
        log: impl Fn(u32) -> (HashSet<(u64, u64)>, (u64, u64)),
    ) -> history::Verdict {
        let control = durability != Durability::Replicated;
        let name = if control {
            format!("{scenario} (control: strict)")
        } else {
            scenario.to_string()
        };
        let mut verdict = self.check(&name, app).await;
        verdict.control = control;
        let store = app.store().await;
        verdict.check_log(&self.api, &store, &self.ops, log).await;
        verdict.report();
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

/// Sentinel: a primary with two replicas and three Sentinels, and the
/// fault of the lagging-replica scenario above: under load, the replicas
/// are frozen for 1.5 s and the primary is killed at the end of it. The
/// Sentinels promote one of the replicas, and StreamStock, given the
/// Sentinels' addresses (`valkey-sentinel://`), follows it.
/// - `replicated` loses nothing acknowledged;
/// - `strict`, the negative control, acknowledged events the new primary
///   never got: the read model holds events the log lost (E), every one of
///   them reported by StreamStock's audit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_promotes_a_lagging_replica_and_streamstock_follows() {
    let verdict = sentinel_failover(Durability::Replicated).await;
    assert!(
        verdict.recovery_ms.is_some(),
        "no order was acknowledged after the kill"
    );
    assert!(!verdict.anomalous(), "{verdict:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_sentinel_promotes_a_lagging_replica_and_strict_loses_events() {
    let verdict = sentinel_failover(Durability::Strict).await;
    assert_lost_by_the_log_and_reported(&verdict);
}

async fn sentinel_failover(durability: Durability) -> history::Verdict {
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
    for replica in &replicas {
        cluster::wait_first_sync(replica);
    }
    let url = format!(
        "valkey-sentinel://127.0.0.1:{}/0?sentinelServiceName=streamstock&node=127.0.0.1:{}&node=127.0.0.1:{}",
        ports[0], ports[1], ports[2]
    );
    let data = tempfile::tempdir().unwrap();
    let (app, namespace) = app_keeping_the_log(url, data.path(), durability).await;
    let product = app.create_product("SENTINEL-1", 1.00, 1_000_000).await;

    let run = load_with_lagging_replicas(
        &app,
        product,
        &replicas.iter().collect::<Vec<_>>(),
        &mut primary,
    )
    .await;
    let promoted = replicas
        .iter()
        .find(|r| cluster::cli(r, &["info", "replication"]).contains("role:master"))
        .expect("a replica was promoted");
    let verdict = run
        .check_lagging(
            "valkey-sentinel, a lagging replica promoted",
            durability,
            &app,
            |p| {
                cluster::stream_ids_at(
                    &promoted.host,
                    promoted.port,
                    &format!("{namespace}:events:{p}"),
                )
            },
        )
        .await;
    app.stop().await;
    drop(replicas);
    drop(sentinels);
    verdict
}
