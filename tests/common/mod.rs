//! Test harness: starts StreamStock on real backends on ephemeral ports and
//! drives it over HTTP, like a client would.
//!
//! The Valkey + PostgreSQL backend pair needs the servers that
//! `scripts/test.sh` starts (it exports their URLs). Running these tests
//! without them is an error with a hint, never a silent skip.

pub mod all_in_one;
pub mod api;
pub mod cluster;
pub mod feed;
pub mod history;
pub mod invariants;
pub mod load;
pub mod network;
pub mod pki;
pub mod process;
pub mod receiver;

use std::time::Duration;
use streamstock::cli::config::{
    AllArgs, CommonArgs, Durability, GatewayArgs, LogFormat, ProcessingArgs, Profile, RetentionArgs,
};
use streamstock::store::Store;
use tokio::net::TcpListener;

pub use api::{Answer, Api};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    EmbeddedSqlite,
    ValkeyPostgres,
}

/// One test per backend pair for each scenario `async fn name(Backend)`:
/// `embedded_sqlite::name` and `valkey_postgres::name`, so a scenario never
/// runs on one pair only by accident.
#[macro_export]
macro_rules! backend_pairs {
    ($($scenario:ident),* $(,)?) => {
        mod embedded_sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::$scenario($crate::common::Backend::EmbeddedSqlite).await;
                }
            )*
        }
        mod valkey_postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::$scenario($crate::common::Backend::ValkeyPostgres).await;
                }
            )*
        }
    };
}

/// One test per database for each scenario `async fn name(Store)` that
/// works on the read model alone: `sqlite::name` (a fresh file) and
/// `postgres::name` (a fresh database).
#[macro_export]
macro_rules! database_pairs {
    ($($scenario:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    let dir = tempfile::tempdir().unwrap();
                    let url = format!("sqlite://{}/test.db", dir.path().display());
                    let store = streamstock::store::Store::connect(&url).await.unwrap();
                    super::$scenario(store).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    let url = $crate::common::fresh_postgres_database().await;
                    let store = streamstock::store::Store::connect(&url).await.unwrap();
                    super::$scenario(store).await;
                }
            )*
        }
    };
}

pub fn valkey_url() -> String {
    std::env::var("STREAMSTOCK_TEST_VALKEY_URL").expect(
        "STREAMSTOCK_TEST_VALKEY_URL is not set: run the suite with ./scripts/test.sh, which starts Valkey and PostgreSQL",
    )
}

/// A Valkey Cluster of three primaries (`valkey-cluster://...`).
#[allow(dead_code)] // not every test binary uses it
pub fn valkey_cluster_url() -> String {
    std::env::var("STREAMSTOCK_TEST_VALKEY_CLUSTER_URL").expect(
        "STREAMSTOCK_TEST_VALKEY_CLUSTER_URL is not set: run the suite with ./scripts/test.sh, which starts a Valkey Cluster",
    )
}

pub fn postgres_admin_url() -> String {
    std::env::var("STREAMSTOCK_TEST_DATABASE_URL").expect(
        "STREAMSTOCK_TEST_DATABASE_URL is not set: run the suite with ./scripts/test.sh, which starts Valkey and PostgreSQL",
    )
}

/// A fresh, empty PostgreSQL database for one test.
pub async fn fresh_postgres_database() -> String {
    let name = format!("streamstock_test_{}", Uuid::new_v4().simple());
    Store::create_database(&postgres_admin_url(), &name)
        .await
        .expect("create a test database")
}

/// Settings for one isolated deployment on `backend`: its own data dir,
/// database and Valkey namespace.
pub async fn isolated_settings(backend: Backend, data_dir: &std::path::Path) -> CommonArgs {
    let (valkey_url, database_url) = match backend {
        Backend::EmbeddedSqlite => (None, None),
        Backend::ValkeyPostgres => (Some(valkey_url()), Some(fresh_postgres_database().await)),
    };
    CommonArgs {
        valkey_url,
        redis_url: None,
        valkey_ca_file: None,
        config: None,
        database_url,
        database_password_file: None,
        data_dir: data_dir.to_path_buf(),
        partitions: 4,
        valkey_namespace: format!("test-{}", Uuid::new_v4().simple()),
        durability: Durability::Strict,
        min_replicas: 1,
        log_format: LogFormat::Text,
        startup_timeout: std::time::Duration::from_secs(10).into(),
        retention: RetentionArgs::default(),
        // The tests' webhook receivers listen on loopback.
        webhook_allow: vec!["127.0.0.0/8".into()],
        max_subscriptions: 100,
    }
}

/// The first offsets of the segment files of one partition of an embedded
/// log in `log_dir`, oldest first (empty if the partition has no folder).
pub fn segment_bases(log_dir: &std::path::Path, partition: u32) -> Vec<u64> {
    let mut bases: Vec<u64> = std::fs::read_dir(log_dir.join(format!("partition-{partition}")))
        .map(|dir| {
            dir.filter_map(|e| {
                let path = e.ok()?.path();
                (path.extension()? == "seg").then(|| path.file_stem()?.to_str()?.parse().ok())?
            })
            .collect()
        })
        .unwrap_or_default();
    bases.sort();
    bases
}

pub struct TestApp {
    pub api: Api,
    pub common: CommonArgs,
    shutdown: CancellationToken,
    task: Option<JoinHandle<anyhow::Result<()>>>,
    _data_dir: Option<tempfile::TempDir>,
}

impl TestApp {
    /// `streamstock all --profile none` on a fresh deployment.
    pub async fn spawn(backend: Backend) -> TestApp {
        let dir = tempfile::tempdir().expect("temp dir");
        let common = isolated_settings(backend, dir.path()).await;
        let mut app = TestApp::spawn_with(common).await;
        app._data_dir = Some(dir);
        app
    }

    /// Starts `all` with given settings (e.g. again on the same data dir).
    pub async fn spawn_with(common: CommonArgs) -> TestApp {
        TestApp::spawn_with_processing(common, 3, 20).await
    }

    /// As `spawn_with`, with the worker's retry settings.
    pub async fn spawn_with_processing(
        common: CommonArgs,
        max_attempts: u32,
        retry_backoff_ms: u64,
    ) -> TestApp {
        TestApp::spawn_with_args(common, |args| {
            args.processing.max_attempts = max_attempts;
            args.processing.retry_backoff = Duration::from_millis(retry_backoff_ms);
        })
        .await
    }

    /// Keeps `dir` (the deployment's data dir) alive as long as the app.
    pub fn keep_data_dir(&mut self, dir: tempfile::TempDir) {
        self._data_dir = Some(dir);
    }

    /// As `spawn_with`, after `adjust` changed the role's settings.
    pub async fn spawn_with_args(common: CommonArgs, adjust: impl FnOnce(&mut AllArgs)) -> TestApp {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().unwrap());
        let mut args = AllArgs {
            gateway: GatewayArgs {
                listen: listener.local_addr().unwrap(),
                api_token: None,
                api_token_file: None,
                tokens_file: None,
                public_catalog: false,
                cors_origins: Vec::new(),
                insecure: false,
                max_in_flight_appends: 2048,
                max_dashboard_clients: 64,
                max_feed_streams: 64,
                max_in_flight_requests: 1024,
                request_timeout: Duration::from_secs(35).into(),
                idempotency_ttl: Duration::from_secs(86_400).into(),
                idempotency_max_keys: 1_000_000,
                catalog_cache_products: 10_000,
                max_locations: 100,
                max_backlog: 100_000,
                connections: Default::default(),
            },
            processing: ProcessingArgs {
                batch_size: 64,
                batch_wait: Duration::from_millis(50),
                batch_wait_ms: None,
                lease_ttl: Duration::from_secs(3),
                lease_ttl_ms: None,
                max_attempts: 3,
                retry_backoff: Duration::from_millis(20),
                retry_backoff_ms: None,
                // The poison tests make four dead letters: the fourth
                // raises the piling-up alert.
                dead_letter_alert: 4,
                allocation_strategy: Default::default(),
                // Holds expire within a fifth of a second of their deadline.
                hold_sweep_interval: Duration::from_millis(200),
                hold_sweep_batch: 1000,
                webhook_timeout: Duration::from_secs(2),
                // Longer than the webhook tests' outages; one test shortens it.
                webhook_pause_after: Duration::from_secs(60),
            },
            profile: Profile::None,
        };
        adjust(&mut args);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(streamstock::cli::roles::run_all_on(
            common.clone(),
            args,
            listener,
            shutdown.clone(),
        ));
        let app = TestApp {
            api: Api::new(&base),
            common,
            shutdown,
            task: Some(task),
            _data_dir: None,
        };
        app.wait_healthy().await;
        app
    }

    /// Graceful shutdown; returns the data dir so a test can restart on it.
    pub async fn stop(mut self) -> Option<tempfile::TempDir> {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .expect("shutdown finished in time")
                .expect("app task did not panic")
                .expect("app exited cleanly");
        }
        self._data_dir.take()
    }

    /// The app's Valkey log, opened again: for a test to write into it
    /// what another producer would (poison, old versions).
    #[allow(dead_code)] // not every test binary uses it
    pub async fn valkey_log(&self) -> streamstock::stream::valkey::ValkeyLog {
        streamstock::stream::valkey::ValkeyLog::connect(
            self.common.valkey_url.as_deref().expect("a Valkey app"),
            &self.common.valkey_namespace,
            self.common.partitions,
            streamstock::stream::Durability::Strict,
        )
        .await
        .unwrap()
    }

    pub async fn store(&self) -> Store {
        Store::connect(&self.common.database_url())
            .await
            .expect("connect to the app's database")
    }

    /// The end of a scenario: the business invariants hold; then, with
    /// the app stopped, `streamstock rebuild` reproduces every projection
    /// table. Returns the tables' checksums (for their row counts).
    #[allow(dead_code)] // not every test binary uses it
    pub async fn assert_invariants_and_rebuild(
        self,
    ) -> Vec<streamstock::store::rebuild::TableChecksum> {
        let store = self.store().await;
        assert_eq!(
            invariants::invariant_violations(&store).await.unwrap(),
            Vec::<String>::new()
        );
        let common = self.common.clone();
        let _dir = self.stop().await;
        let before = store.projection_checksums().await.unwrap();
        process::assert_rebuild_identical_for(&common);
        assert_eq!(store.projection_checksums().await.unwrap(), before);
        before
    }
}

impl std::ops::Deref for TestApp {
    type Target = Api;
    fn deref(&self) -> &Api {
        &self.api
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Holdings written out as (partition, epoch) pairs, for tests.
pub fn held(pairs: &[(u32, u64)]) -> streamstock::stream::Holdings {
    pairs
        .iter()
        .map(|&(partition, epoch)| {
            let epoch = streamstock::stream::Epoch::new(epoch).expect("epochs start at 1");
            (streamstock::stream::Partition(partition), epoch)
        })
        .collect()
}
