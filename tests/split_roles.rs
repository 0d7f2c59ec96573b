//! Roles in separate processes, as in production: one `serve`, two
//! `worker`s and a `simulate`, each a real `streamstock` process, sharing a
//! real Valkey and PostgreSQL. Also checks SIGTERM gives a clean exit 0, and
//! that a split role without Valkey is refused with a clear error.

use crate::common;
use streamstock::domain::status::OrderStatus;

use common::Api;
use serde_json::json;
use std::process::Command;

use common::process::{free_port, Role, SharedDeployment, BIN};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_workers_and_simulator_as_separate_processes() {
    let deployment = SharedDeployment::new().await;
    let env = &deployment.env;
    let migrate = Command::new(BIN)
        .arg("migrate")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    assert!(
        migrate.status.success(),
        "{}",
        String::from_utf8_lossy(&migrate.stderr)
    );

    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let gateway = Role::start("serve", &["serve", "--listen", &listen], env);
    let worker_a = Role::start("worker a", &["worker", "--listen", "127.0.0.1:0"], env);
    let worker_b = Role::start("worker b", &["worker", "--listen", "127.0.0.1:0"], env);
    let api = Api::new(&format!("http://{listen}"));
    api.wait_healthy().await;

    // The two workers split the 4 partitions 2/2, each owned by one of them.
    let status = || common::process::status_report(env);
    let owner_counts = |report: &serde_json::Value| {
        let mut counts = std::collections::BTreeMap::<String, usize>::new();
        for p in report["partitions"].as_array().unwrap() {
            if let Some(owner) = p["owner"].as_str() {
                *counts.entry(owner.to_string()).or_default() += 1;
            }
        }
        counts
    };
    api.wait_for("two workers owning two partitions each", || async {
        owner_counts(&status())
            .values()
            .copied()
            .collect::<Vec<_>>()
            == vec![2, 2]
    })
    .await;

    let tea = api.create_product("TEA-1", 4.20, 15).await;
    let pot = api.create_product("POT-1", 35.00, 3).await;
    let answers = futures::future::join_all((0..40).map(|i| {
        let items = if i % 5 == 0 {
            json!([{ "product_id": tea, "quantity": 1 }, { "product_id": pot, "quantity": 1 }])
        } else {
            json!([{ "product_id": tea, "quantity": 1 + i % 2 }])
        };
        let api = &api;
        async move {
            api.place_order(
                &json!({ "customer_email": format!("s{i}@example.com"), "items": items }),
            )
            .await
        }
    }))
    .await;
    assert!(
        answers.iter().all(|answer| answer.status == 202),
        "{answers:?}"
    );
    api.wait_until_decided(40).await;

    let store = streamstock::store::Store::connect(&deployment.database)
        .await
        .unwrap();
    let violations = common::invariants::invariant_violations(&store)
        .await
        .unwrap();
    assert!(violations.is_empty(), "{violations:#?}");
    let stats = api.stats().await.expect(200).figures;
    assert_eq!(stats.order_count, 40);
    assert!(stats.orders_in(OrderStatus::Rejected) > 0, "{stats:?}");

    // The simulator as its own process against the same gateway.
    let simulated = Command::new(BIN)
        .args([
            "simulate",
            "--target",
            &format!("http://{listen}"),
            "--profile",
            "burst",
            "--duration-secs",
            "5",
        ])
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        simulated.status.success(),
        "{}",
        String::from_utf8_lossy(&simulated.stderr)
    );
    let report = String::from_utf8_lossy(&simulated.stdout);
    let accepted: u64 = report
        .split("orders accepted: ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected simulator report: {report}"));
    assert!(accepted > 0, "{report}");
    // Every ten orders it also played the warehouse and the customers.
    let count = |label: &str| -> u64 {
        report
            .split(label)
            .nth(1)
            .and_then(|rest| rest.split([',', ';']).next())
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {label} in the simulator report: {report}"))
    };
    assert!(count("shipped: ") + count("cancelled: ") > 0, "{report}");
    api.wait_until_decided(40 + accepted as i64).await;
    assert!(common::invariants::invariant_violations(&store)
        .await
        .unwrap()
        .is_empty());

    let report = status();
    assert_eq!(report["lag"], 0, "{report}");
    assert_eq!(report["pending"], 0, "{report}");
    assert_eq!(report["dead_letters"], 0, "{report}");

    // A worker stopped with SIGTERM hands its partitions over at once.
    assert!(worker_a.terminate().success());
    api.wait_for("the other worker owning all four partitions", || async {
        owner_counts(&status())
            .values()
            .copied()
            .collect::<Vec<_>>()
            == vec![4]
    })
    .await;

    for role in [worker_b, gateway] {
        let name = role.name;
        let status = role.terminate();
        assert!(
            status.success(),
            "{name} exited with {status} after SIGTERM"
        );
    }
}

#[test]
fn split_roles_without_valkey_are_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    for role in ["worker", "serve"] {
        let out = Command::new(BIN)
            .args([
                role,
                "--data-dir",
                dir.path().to_str().unwrap(),
                "--listen",
                "127.0.0.1:0",
            ])
            .env_remove("STREAMSTOCK_VALKEY_URL")
            .output()
            .unwrap();
        assert!(!out.status.success(), "{role} started without a shared log");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("needs a shared event log") && stderr.contains("--valkey-url"),
            "{stderr}"
        );
    }
}
