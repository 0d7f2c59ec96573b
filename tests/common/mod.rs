//! Test harness: starts StreamStock on real backends on ephemeral ports and
//! drives it over HTTP, like a client would.
//!
//! The Valkey + PostgreSQL backend pair needs the servers that
//! `scripts/test.sh` starts (it exports their URLs). Running these tests
//! without them is an error with a hint, never a silent skip.

pub mod invariants;
pub mod load;
pub mod process;

use serde_json::{json, Value};
use std::fmt::Display;
use std::time::Duration;
use streamstock::cli::config::{
    AllArgs, CommonArgs, Durability, GatewayArgs, LogFormat, ProcessingArgs, Profile, RetentionArgs,
};
use streamstock::store::Store;
use tokio::net::TcpListener;
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
        log_format: LogFormat::Text,
        startup_timeout: std::time::Duration::from_secs(10).into(),
        retention: RetentionArgs::default(),
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

/// An answer received through `Api::send`, already checked against the
/// OpenAPI document.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
    /// The body as JSON (null when it is not).
    pub body: Value,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// An HTTP client for one gateway, with a method per thing tests do.
/// Every JSON answer it receives through `get` and `post` (and so through
/// the endpoint methods) is checked against the gateway's own OpenAPI
/// document: the status must be documented for the route, and the body
/// must match its schema.
pub struct Api {
    pub base: String,
    pub http: reqwest::Client,
    contract: tokio::sync::OnceCell<Value>,
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
                cors_origins: Vec::new(),
                insecure: false,
                max_in_flight_appends: 2048,
                max_dashboard_clients: 64,
                max_in_flight_requests: 1024,
                request_timeout: Duration::from_secs(35).into(),
                idempotency_ttl: Duration::from_secs(86_400).into(),
                idempotency_max_keys: 1_000_000,
                catalog_cache_products: 10_000,
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
}

impl std::ops::Deref for TestApp {
    type Target = Api;
    fn deref(&self) -> &Api {
        &self.api
    }
}

impl Api {
    pub fn new(base: &str) -> Api {
        Api {
            base: base.trim_end_matches('/').to_string(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            contract: tokio::sync::OnceCell::new(),
        }
    }

    /// An API client that sends `token` as the bearer on every request,
    /// as a client of a gateway started with --api-token does.
    pub fn with_token(base: &str, token: &str) -> Api {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {token}").parse().unwrap(),
        );
        Api {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .default_headers(headers)
                .build()
                .unwrap(),
            ..Api::new(base)
        }
    }

    pub async fn wait_healthy(&self) {
        for _ in 0..200 {
            if let Ok(r) = self.http.get(self.url("/ready")).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the app at {} did not become ready", self.base);
    }

    /// The Prometheus text of `/metrics`.
    pub async fn metrics(&self) -> String {
        self.http
            .get(self.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self.http.get(self.url(path)).send().await.expect("GET");
        let status = r.status().as_u16();
        let body = r.json().await.unwrap_or(Value::Null);
        self.check_against_contract("get", path, status, &body)
            .await;
        (status, body)
    }

    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let r = self
            .http
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("POST");
        let status = r.status().as_u16();
        let body = r.json().await.unwrap_or(Value::Null);
        self.check_against_contract("post", path, status, &body)
            .await;
        (status, body)
    }

    /// Sends `request` (built on `self.http`) and checks its answer against
    /// the OpenAPI document, as `get` and `post` do.
    pub async fn send(&self, request: reqwest::RequestBuilder) -> Answer {
        let request = request.build().expect("a well-formed request");
        let method = request.method().as_str().to_ascii_lowercase();
        let path = request.url().path().to_string();
        let response = self.http.execute(request).await.expect("an answer");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        let json = headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        if json {
            self.check_against_contract(&method, &path, status, &body)
                .await;
        }
        Answer {
            status,
            headers,
            text,
            body,
        }
    }

    /// The gateway's OpenAPI document, fetched once.
    async fn contract(&self) -> &Value {
        self.contract
            .get_or_init(|| async {
                let answer = self.http.get(self.url("/openapi.json")).send().await;
                match answer {
                    Ok(r) if r.status().is_success() => r.json().await.unwrap_or(Value::Null),
                    // A worker's probe port has no document: nothing to check.
                    _ => Value::Null,
                }
            })
            .await
    }

    /// Panics unless `status` is documented for `method path` and `body`
    /// matches the documented schema. Paths the document does not list
    /// (the dashboard, unknown routes) are not checked.
    async fn check_against_contract(&self, method: &str, path: &str, status: u16, body: &Value) {
        let contract = self.contract().await;
        let Some(paths) = contract["paths"].as_object() else {
            return;
        };
        let path = path.split('?').next().unwrap_or(path);
        let path = if path.len() > 5 {
            path.trim_end_matches('/')
        } else {
            path
        };
        let segments: Vec<&str> = path.split('/').collect();
        let Some(operation) = paths.iter().find_map(|(template, operations)| {
            let pattern: Vec<&str> = template.split('/').collect();
            let matches = pattern.len() == segments.len()
                && pattern
                    .iter()
                    .zip(&segments)
                    .all(|(p, s)| p.starts_with('{') || p == s);
            matches.then(|| &operations[method])
        }) else {
            return;
        };
        if operation.is_null() {
            return; // a method the route does not have: the gateway says 405
        }
        let response = &operation["responses"][status.to_string()];
        assert!(
            response.is_object(),
            "{method} {path} answered {status}, which its OpenAPI operation does not list: {body}"
        );
        let Some(schema) = response["content"]["application/json"]["schema"].as_object() else {
            return;
        };
        let root = serde_json::json!({
            "components": contract["components"],
            "allOf": [schema],
        });
        if let Err(error) = jsonschema::draft202012::validate(&root, body) {
            panic!("{method} {path} → {status}: the body does not match the document: {error}\n{body:#}");
        }
    }

    // One method per endpoint, so tests say what they ask for; `get` and
    // `post` stay for requests that are malformed on purpose.

    /// `POST /api/products` with `body` as given.
    pub async fn add_product(&self, body: &Value) -> (u16, Value) {
        self.post("/api/products", body).await
    }

    pub async fn products(&self) -> (u16, Value) {
        self.get("/api/products").await
    }

    pub async fn product(&self, id: impl Display) -> (u16, Value) {
        self.get(&format!("/api/products/{id}")).await
    }

    pub async fn receive_stock(&self, id: impl Display, quantity: i64) -> (u16, Value) {
        self.post(
            &format!("/api/products/{id}/stock"),
            &json!({ "quantity": quantity }),
        )
        .await
    }

    /// `POST /api/orders` with `body` as given.
    pub async fn place_order(&self, body: &Value) -> (u16, Value) {
        self.post("/api/orders", body).await
    }

    /// An order of `items` (product, quantity) for `email`.
    pub async fn order_of(&self, email: &str, items: &[(Uuid, i64)]) -> (u16, Value) {
        let items: Vec<Value> = items
            .iter()
            .map(|(product, quantity)| json!({ "product_id": product, "quantity": quantity }))
            .collect();
        self.place_order(&json!({ "customer_email": email, "items": items }))
            .await
    }

    pub async fn order(&self, id: impl Display) -> (u16, Value) {
        self.get(&format!("/api/orders/{id}")).await
    }

    /// The order, once decided or after `seconds` (`?wait=`).
    pub async fn order_waiting(&self, id: impl Display, seconds: u64) -> (u16, Value) {
        self.get(&format!("/api/orders/{id}?wait={seconds}")).await
    }

    /// `GET /api/orders?{query}` (status, limit, after).
    pub async fn orders(&self, query: &str) -> (u16, Value) {
        self.get(&format!("/api/orders?{query}")).await
    }

    pub async fn cancel(&self, order: impl Display) -> (u16, Value) {
        self.post(&format!("/api/orders/{order}/cancel"), &json!({}))
            .await
    }

    pub async fn ship(&self, order: impl Display) -> (u16, Value) {
        self.post(&format!("/api/orders/{order}/ship"), &json!({}))
            .await
    }

    /// Purchase orders, of one status unless `status` is empty.
    pub async fn purchase_orders(&self, status: &str) -> (u16, Value) {
        self.get(&format!("/api/purchase-orders?status={status}"))
            .await
    }

    pub async fn receive_purchase_order(&self, id: impl Display) -> (u16, Value) {
        self.post(&format!("/api/purchase-orders/{id}/receive"), &json!({}))
            .await
    }

    /// `GET /api/events?{query}` (key, type, after, limit).
    pub async fn events(&self, query: &str) -> (u16, Value) {
        self.get(&format!("/api/events?{query}")).await
    }

    pub async fn stats(&self) -> (u16, Value) {
        self.get("/api/stats").await
    }

    pub async fn alerts(&self) -> (u16, Value) {
        self.get("/api/alerts").await
    }

    pub async fn dead_letters(&self) -> (u16, Value) {
        self.get("/api/dead-letters").await
    }

    /// Every order in the read model, following the pages.
    pub async fn all_orders(&self) -> Option<Vec<Value>> {
        let mut all = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let query = match &after {
                Some(a) => format!("limit=1000&after={a}"),
                None => "limit=1000".to_string(),
            };
            let (status, page) = self.orders(&query).await;
            if status != 200 {
                return None;
            }
            let page = page.as_array()?.clone();
            match page.last() {
                None => return Some(all),
                Some(last) => after = last["order_id"].as_str().map(String::from),
            }
            all.extend(page);
        }
    }

    /// Creates a product with initial stock and waits until it is visible.
    pub async fn create_product(&self, sku: &str, price: f64, stock: i64) -> Uuid {
        let (status, body) = self
            .add_product(&json!({ "sku": sku, "name": format!("Product {sku}"), "price": price, "initial_stock": stock, "low_stock_threshold": 2 }))
            .await;
        assert_eq!(status, 201, "create {sku}: {body}");
        let id: Uuid = body["id"].as_str().unwrap().parse().unwrap();
        self.wait_for(&format!("product {sku} with stock {stock}"), || async {
            let (s, p) = self.product(id).await;
            s == 200 && p["on_hand"].as_i64() == Some(stock)
        })
        .await;
        id
    }

    /// Polls `check` every 50 ms for up to 30 s.
    pub async fn wait_for<F, Fut>(&self, what: &str, check: F)
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        for _ in 0..600 {
            if check().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("timed out waiting for {what}");
    }

    /// Waits until the log is drained and `expected` orders are decided.
    pub async fn wait_until_decided(&self, expected: i64) {
        self.wait_for(
            &format!("{expected} decided orders and an empty backlog"),
            || async {
                let (_, stats) = self.stats().await;
                let by_status = &stats["orders_by_status"];
                let decided: i64 = ["CONFIRMED", "REJECTED", "CANCELLED", "SHIPPED"]
                    .iter()
                    .map(|s| by_status[*s].as_i64().unwrap_or(0))
                    .sum();
                decided == expected && stats["backlog"].as_u64() == Some(0)
            },
        )
        .await;
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
