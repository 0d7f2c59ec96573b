//! The Python reference's settings, as its README and compose file write
//! them, keep working: `REDIS_URL` for the Valkey URL, `postgresql://`
//! database URLs and `SIM_PROFILE=NORMAL`.

use crate::common;

use common::process::{free_port, Role, BIN};
use std::process::Command;
use std::time::{Duration, Instant};
use streamstock::store::Store;

#[tokio::test]
async fn redis_url_points_at_the_shared_log() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["status", "--json", "--partitions", "4"])
        .args(["--data-dir", dir.path().to_str().unwrap()])
        .args([
            "--valkey-namespace",
            &format!("spellings-{}", uuid::Uuid::new_v4().simple()),
        ])
        .env_remove("STREAMSTOCK_VALKEY_URL")
        .env("REDIS_URL", common::valkey_url())
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let log = report["event_log"].as_str().unwrap();
    assert!(log.starts_with("Valkey"), "REDIS_URL was ignored: {log}");
}

#[tokio::test]
async fn postgresql_urls_are_accepted() {
    let url = common::fresh_postgres_database().await;
    let spelled = url.replacen("postgres://", "postgresql://", 1);
    assert_ne!(spelled, url);
    let store = Store::connect(&spelled).await.unwrap();
    store.migrate().await.unwrap();
    assert!(
        store.describe().starts_with("PostgreSQL"),
        "{}",
        store.describe()
    );
    store.close().await;
}

/// `all` starts with the reference's capitalised profile and its simulator
/// places orders.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_starts_with_sim_profile_normal() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let role = Role::start(
        "all",
        &["all", "--listen", &format!("127.0.0.1:{port}")],
        &[
            ("SIM_PROFILE".to_string(), "NORMAL".to_string()),
            (
                "STREAMSTOCK_DATA_DIR".to_string(),
                dir.path().display().to_string(),
            ),
        ],
    );
    let api = common::Api::new(&format!("http://127.0.0.1:{port}"));
    api.wait_healthy().await;
    // The simulator seeds the demo catalog through the API once it is up.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let products = api.products().await.found();
        if products.is_some_and(|p| !p.is_empty()) {
            break;
        }
        assert!(Instant::now() < deadline, "the simulator never seeded");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(role.terminate().success());
}
