//! The Valkey backend on a Valkey Cluster of three primaries (started by
//! test.sh), as a deployment that outgrew one Valkey runs it: a gateway and
//! two workers, split, with eight partitions whose streams spread over the
//! primaries. Under simulated load one worker is killed with SIGKILL; then
//! the survivor owns every partition, the log drains, every order the
//! gateway took is decided exactly once (the invariants, running totals
//! included), nothing is dead-lettered, and `rebuild` is identical.
//! (log_conformance runs the log's and leases' own tests on the cluster,
//! and checks each append's WAITAOF goes to its stream's primary.)

use crate::common;
use streamstock::domain::status::OrderStatus;

use common::process::{
    assert_rebuild_identical, free_port, owners, status_report, Role, SharedDeployment, BIN,
};
use common::Api;
use std::process::{Command, Stdio};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valkey_cluster_roles_split_survive_a_killed_worker() {
    let deployment = SharedDeployment::new()
        .await
        .with("STREAMSTOCK_VALKEY_URL", &common::valkey_cluster_url())
        .with("STREAMSTOCK_PARTITIONS", "8")
        .with("STREAMSTOCK_LEASE_TTL_MS", "1500");
    let env = &deployment.env;
    let listen = format!("127.0.0.1:{}", free_port());
    let gateway = Role::start("serve", &["serve", "--listen", &listen], env);
    let survivor = Role::start("worker", &["worker", "--worker-listen", "127.0.0.1:0"], env);
    let doomed = Role::start("worker", &["worker", "--worker-listen", "127.0.0.1:0"], env);
    let api = Api::new(&format!("http://{listen}"));
    api.wait_healthy().await;
    let stats = api.stats().await.expect(200);
    assert!(
        stats.event_log.contains("strict durability"),
        "every primary confirms its AOF: {stats:?}"
    );
    api.wait_for("two workers sharing the eight partitions", || async {
        owners(&status_report(env)).len() == 2
    })
    .await;

    let simulator = Command::new(BIN)
        .args(["simulate", "--profile", "burst", "--duration", "8s"])
        .args(["--target", &format!("http://{listen}")])
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    doomed.kill_hard();
    let report = String::from_utf8(simulator.wait_with_output().unwrap().stdout).unwrap();
    let accepted: u64 = report
        .split("orders accepted: ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("unexpected simulator report: {report}"));
    assert!(accepted > 0, "{report}");

    api.wait_for("the survivor owning all eight partitions", || async {
        let report = status_report(env);
        owners(&report).len() == 1
            && report["partitions"]
                .as_array()
                .unwrap()
                .iter()
                .all(|p| p["owner"].is_string())
    })
    .await;
    api.wait_for("the log drained", || async {
        let report = status_report(env);
        report["lag"] == 0 && report["pending"] == 0
    })
    .await;

    let store = streamstock::store::Store::connect(&deployment.database)
        .await
        .unwrap();
    let orders = api.all_orders().await.expect("the orders");
    assert!(
        orders.len() as u64 >= accepted,
        "{} orders for {accepted} accepted",
        orders.len()
    );
    assert!(orders.iter().all(|o| o.status != OrderStatus::Pending));
    let violations = common::invariants::invariant_violations(&store)
        .await
        .unwrap();
    assert!(violations.is_empty(), "{violations:#?}");
    assert_eq!(status_report(env)["dead_letters"], 0);
    store.close().await;

    assert!(survivor.terminate().success());
    assert!(gateway.terminate().success());
    assert_rebuild_identical(&[], env);
}
