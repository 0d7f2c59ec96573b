//! Roles on several hosts, as an operator would spread them: two gateways
//! and three workers, each on its own address (127.0.0.2 to 127.0.0.6, one
//! per "host"), all on one Valkey and one PostgreSQL, with the API token
//! set on every role and client as it must be off loopback. A simulator
//! drives each gateway; meanwhile one worker is stopped gracefully, one is
//! killed with SIGKILL, and one gateway is killed with SIGKILL. Then: the
//! partitions have moved to the survivor, every order the gateways took is
//! decided exactly once, the invariants hold, and `rebuild` is identical.

use crate::common;
use streamstock::domain::status::OrderStatus;

use common::process::{
    assert_rebuild_identical, free_port, owners, status_report, Role, SharedDeployment, BIN,
};
use common::Api;
use std::process::{Command, Stdio};
use std::time::Duration;

const TOKEN: &str = "multi-host-secret-token";

/// `host:port` on a loopback address of its own.
fn address(host: &str) -> String {
    format!("{host}:{}", free_port())
}

/// `orders accepted: N` from a simulator's report.
fn accepted(report: &str) -> u64 {
    report
        .split("orders accepted: ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("unexpected simulator report: {report}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_on_several_hosts_survive_stops_and_kills() {
    let deployment = SharedDeployment::new()
        .await
        .with("STREAMSTOCK_API_TOKEN", TOKEN)
        .with("STREAMSTOCK_LEASE_TTL_MS", "1500");
    let env = &deployment.env;
    let (a, b) = (address("127.0.0.2"), address("127.0.0.3"));
    let gateway_a = Role::start("gateway a", &["serve", "--listen", &a], env);
    let gateway_b = Role::start("gateway b", &["serve", "--listen", &b], env);
    let workers: Vec<Role> = ["127.0.0.4", "127.0.0.5", "127.0.0.6"]
        .iter()
        .map(|host| {
            let listen = address(host);
            Role::start("worker", &["worker", "--worker-listen", &listen], env)
        })
        .collect();
    let api_a = Api::with_token(&format!("http://{a}"), TOKEN);
    let api_b = Api::with_token(&format!("http://{b}"), TOKEN);
    api_a.wait_healthy().await;
    api_b.wait_healthy().await;

    // The token is required: a write without it is refused.
    let refused = Api::new(&format!("http://{a}"))
        .add_product(&serde_json::json!({"sku": "NOPE-1", "name": "n", "price": 1.0}))
        .await;
    assert_eq!(refused.status, 401);
    api_a
        .wait_for("three workers sharing the four partitions", || async {
            owners(&status_report(env)).len() == 3
        })
        .await;

    // A simulator per gateway, for 10 s.
    let simulate = |target: &str| {
        Command::new(BIN)
            .args(["simulate", "--profile", "burst", "--duration", "10s"])
            .args(["--target", &format!("http://{target}")])
            .env("STREAMSTOCK_API_TOKEN", TOKEN)
            .env("RUST_LOG", "error")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let sim_a = simulate(&a);
    let sim_b = simulate(&b);
    let mut workers = workers.into_iter();
    let (stopped, killed, survivor) = (
        workers.next().unwrap(),
        workers.next().unwrap(),
        workers.next().unwrap(),
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(stopped.terminate().success(), "graceful stop exits 0");
    tokio::time::sleep(Duration::from_secs(1)).await;
    killed.kill_hard();
    tokio::time::sleep(Duration::from_secs(1)).await;
    gateway_b.kill_hard();

    let report_a = String::from_utf8(sim_a.wait_with_output().unwrap().stdout).unwrap();
    let report_b = String::from_utf8(sim_b.wait_with_output().unwrap().stdout).unwrap();
    let (taken_a, taken_b) = (accepted(&report_a), accepted(&report_b));
    assert!(taken_a > 0 && taken_b > 0, "{report_a}\n{report_b}");

    // The survivor owns every partition and drains what the others left.
    api_a
        .wait_for("the survivor owning all four partitions", || async {
            let report = status_report(env);
            owners(&report).len() == 1
                && report["partitions"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|p| p["owner"].is_string())
        })
        .await;
    api_a
        .wait_for("the log drained", || async {
            let report = status_report(env);
            report["lag"] == 0 && report["pending"] == 0
        })
        .await;

    // Every order a gateway took (202) is there and decided, once: the
    // invariants (stock, reservations, running totals) would show an
    // order applied twice or lost.
    let store = streamstock::store::Store::connect(&deployment.database)
        .await
        .unwrap();
    let orders = api_a.all_orders().await.expect("the orders");
    assert!(
        orders.len() as u64 >= taken_a + taken_b,
        "{} orders for {taken_a} + {taken_b} accepted",
        orders.len()
    );
    assert!(orders.iter().all(|o| o.status != OrderStatus::Pending));
    let violations = common::invariants::invariant_violations(&store)
        .await
        .unwrap();
    assert!(violations.is_empty(), "{violations:#?}");
    assert_eq!(status_report(env)["dead_letters"], 0);
    // The simulators' world: three locations, the stock spread over them.
    let locations = api_a.get("/api/locations").await.1;
    let holding = locations
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["on_hand"].as_i64().unwrap_or(0) + l["reserved"].as_i64().unwrap_or(0) > 0)
        .count();
    assert_eq!(
        (locations.as_array().unwrap().len(), holding),
        (3, 3),
        "{locations}"
    );
    store.close().await;

    assert!(survivor.terminate().success());
    assert!(gateway_a.terminate().success());
    assert_rebuild_identical(&[], env);
}
