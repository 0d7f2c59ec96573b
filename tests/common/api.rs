//! The HTTP client tests drive a gateway with: one method per endpoint,
//! each answering a `Reply` typed with the body the gateway documents for
//! its success, and every JSON answer checked against the gateway's own
//! OpenAPI document.

use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use std::fmt::Display;
use std::marker::PhantomData;
use std::time::Duration;
use streamstock::domain::status::OrderStatus;
use streamstock::gateway::responses::{
    AdjustmentQueued, CommandQueued, ErrorBody, ErrorDetail, FulfilmentQueued, OrderQueued,
    ProductQueued, ReceiptQueued, StockQueued,
};
use streamstock::gateway::simulator_control::SimulatorState;
use streamstock::gateway::{PurgeOutcome, ReplayOutcome, Stats};
use streamstock::store::adjustments::AdjustmentView;
use streamstock::store::analytics::{ArchivedEvent, PurchaseOrderView};
use streamstock::store::fulfilments::FulfilmentView;
use streamstock::store::queries::{AlertView, OrderView, ProductView};
use streamstock::stream::dead_letter::DeadLetter;
use uuid::Uuid;

/// What an endpoint answered: its status and JSON body, and `T`, the body
/// the gateway documents for the endpoint's success. `expect` asserts the
/// status and reads the body as `T`; `error` reads an error's code and
/// message; `body` stays for what neither covers.
#[derive(Debug)]
pub struct Reply<T> {
    pub status: u16,
    pub body: Value,
    success: PhantomData<fn() -> T>,
}

impl<T: DeserializeOwned> Reply<T> {
    fn new(status: u16, body: Value) -> Reply<T> {
        Reply {
            status,
            body,
            success: PhantomData,
        }
    }

    /// The body as `T`, asserting the answer was `status`.
    #[track_caller]
    pub fn expect(self, status: u16) -> T {
        assert_eq!(self.status, status, "{}", self.body);
        self.read()
    }

    /// The body as `T` when the answer is 200 (found), else None.
    #[track_caller]
    pub fn found(self) -> Option<T> {
        (self.status == 200).then(|| self.read())
    }

    /// The error the gateway gave, asserting the answer was `status`.
    #[track_caller]
    pub fn error(self, status: u16) -> ErrorDetail {
        assert_eq!(self.status, status, "{}", self.body);
        self.read_as::<ErrorBody>().error
    }

    /// The body as `U`, asserting the answer was `status`: for an
    /// endpoint's second success body (202 while pending, say).
    #[track_caller]
    pub fn expect_as<U: DeserializeOwned>(self, status: u16) -> U {
        assert_eq!(self.status, status, "{}", self.body);
        self.read_as()
    }

    /// The body as `U`, whatever the status.
    #[track_caller]
    pub fn read_as<U: DeserializeOwned>(&self) -> U {
        match serde_json::from_value(self.body.clone()) {
            Ok(value) => value,
            Err(error) => panic!(
                "a {} answer is not a {}: {error}\n{:#}",
                self.status,
                std::any::type_name::<U>(),
                self.body
            ),
        }
    }

    #[track_caller]
    fn read(&self) -> T {
        self.read_as::<T>()
    }
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
    /// The status and the JSON body.
    #[allow(dead_code)] // not every test binary uses it
    pub fn into_parts(self) -> (u16, Value) {
        (self.status, self.body)
    }

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

    /// An API client on a client built by the test (its own address,
    /// timeouts or connection pool).
    #[allow(dead_code)] // not every test binary uses it
    pub fn with_client(base: &str, http: reqwest::Client) -> Api {
        Api {
            http,
            ..Api::new(base)
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
        // On the client the request was built with (its own address or
        // headers), not necessarily this one's.
        let (client, request) = request.build_split();
        let request = request.expect("a well-formed request");
        let method = request.method().as_str().to_ascii_lowercase();
        let path = request.url().path().to_string();
        let response = client.execute(request).await.expect("an answer");
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

    async fn get_reply<T: DeserializeOwned>(&self, path: &str) -> Reply<T> {
        let (status, body) = self.get(path).await;
        Reply::new(status, body)
    }

    async fn post_reply<T: DeserializeOwned>(&self, path: &str, body: &Value) -> Reply<T> {
        let (status, body) = self.post(path, body).await;
        Reply::new(status, body)
    }

    /// `POST /api/orders/{id}/shipments` or `/returns` (`what`) with
    /// `body` as given.
    pub async fn fulfil(
        &self,
        order: impl Display,
        what: &str,
        body: &Value,
    ) -> Reply<FulfilmentQueued> {
        self.post_reply(&format!("/api/orders/{order}/{what}"), body)
            .await
    }

    /// `GET /api/orders/{id}/shipments/{id}` or `/returns/{id}` (`what`)
    /// with `?wait=N`: 200 pending or applied, 409 refused.
    pub async fn fulfilment(
        &self,
        order: impl Display,
        what: &str,
        id: impl Display,
        wait_seconds: u64,
    ) -> Reply<FulfilmentView> {
        self.get_reply(&format!(
            "/api/orders/{order}/{what}/{id}?wait={wait_seconds}"
        ))
        .await
    }

    /// `POST /api/products/{id}/adjustments` with `body` as given.
    pub async fn adjust(&self, product: impl Display, body: &Value) -> Reply<AdjustmentQueued> {
        self.post_reply(&format!("/api/products/{product}/adjustments"), body)
            .await
    }

    /// `GET /api/products/{id}/adjustments/{adjustment}?wait=N`: 200
    /// pending or applied, 409 refused (an `AdjustmentView` either way).
    pub async fn adjustment(
        &self,
        product: impl Display,
        adjustment: impl Display,
        wait_seconds: u64,
    ) -> Reply<AdjustmentView> {
        self.get_reply(&format!(
            "/api/products/{product}/adjustments/{adjustment}?wait={wait_seconds}"
        ))
        .await
    }

    pub async fn adjustments(
        &self,
        product: impl Display,
        query: &str,
    ) -> Reply<Vec<AdjustmentView>> {
        self.get_reply(&format!("/api/products/{product}/adjustments{query}"))
            .await
    }

    /// `POST /api/products` with `body` as given.
    pub async fn add_product(&self, body: &Value) -> Reply<ProductQueued> {
        self.post_reply("/api/products", body).await
    }

    pub async fn products(&self) -> Reply<Vec<ProductView>> {
        self.get_reply("/api/products").await
    }

    /// 200 with the product, or 202 (a `ProductPending`) while it is in
    /// the log.
    pub async fn product(&self, id: impl Display) -> Reply<ProductView> {
        self.get_reply(&format!("/api/products/{id}")).await
    }

    pub async fn receive_stock(&self, id: impl Display, quantity: i64) -> Reply<StockQueued> {
        self.post_reply(
            &format!("/api/products/{id}/stock"),
            &json!({ "quantity": quantity }),
        )
        .await
    }

    /// `POST /api/orders` with `body` as given.
    pub async fn place_order(&self, body: &Value) -> Reply<OrderQueued> {
        self.post_reply("/api/orders", body).await
    }

    /// An order of `items` (product, quantity) for `email`.
    pub async fn order_of(&self, email: &str, items: &[(Uuid, i64)]) -> Reply<OrderQueued> {
        let items: Vec<Value> = items
            .iter()
            .map(|(product, quantity)| json!({ "product_id": product, "quantity": quantity }))
            .collect();
        self.place_order(&json!({ "customer_email": email, "items": items }))
            .await
    }

    /// 200 with the order, or 202 (an `OrderPending`) while it is in the
    /// log.
    pub async fn order(&self, id: impl Display) -> Reply<OrderView> {
        self.get_reply(&format!("/api/orders/{id}")).await
    }

    /// The order, once decided or after `seconds` (`?wait=`).
    pub async fn order_waiting(&self, id: impl Display, seconds: u64) -> Reply<OrderView> {
        self.get_reply(&format!("/api/orders/{id}?wait={seconds}"))
            .await
    }

    /// The order's status once decided or after `seconds`; None while it
    /// is still in the log.
    pub async fn status_waiting(&self, id: impl Display, seconds: u64) -> Option<OrderStatus> {
        let order = self.order_waiting(id, seconds).await.found()?;
        Some(order.status)
    }

    /// `GET /api/orders?{query}` (status, limit, after).
    pub async fn orders(&self, query: &str) -> Reply<Vec<OrderView>> {
        self.get_reply(&format!("/api/orders?{query}")).await
    }

    pub async fn cancel(&self, order: impl Display) -> Reply<CommandQueued> {
        self.post_reply(&format!("/api/orders/{order}/cancel"), &json!({}))
            .await
    }

    pub async fn ship(&self, order: impl Display) -> Reply<CommandQueued> {
        self.post_reply(&format!("/api/orders/{order}/ship"), &json!({}))
            .await
    }

    /// Purchase orders, of one status unless `status` is empty.
    pub async fn purchase_orders(&self, status: &str) -> Reply<Vec<PurchaseOrderView>> {
        self.get_reply(&format!("/api/purchase-orders?status={status}"))
            .await
    }

    pub async fn receive_purchase_order(&self, id: impl Display) -> Reply<ReceiptQueued> {
        self.post_reply(&format!("/api/purchase-orders/{id}/receive"), &json!({}))
            .await
    }

    /// `GET /api/events?{query}` (key, type, after, limit).
    pub async fn events(&self, query: &str) -> Reply<Vec<ArchivedEvent>> {
        self.get_reply(&format!("/api/events?{query}")).await
    }

    pub async fn stats(&self) -> Reply<Stats> {
        self.get_reply("/api/stats").await
    }

    pub async fn alerts(&self) -> Reply<Vec<AlertView>> {
        self.get_reply("/api/alerts").await
    }

    pub async fn dead_letters(&self) -> Reply<Vec<DeadLetter>> {
        self.get_reply("/api/dead-letters").await
    }

    /// `POST /api/dead-letters/replay` with `selection` (`ids` or `all`).
    pub async fn replay_dead_letters(&self, selection: &Value) -> Reply<ReplayOutcome> {
        self.post_reply("/api/dead-letters/replay", selection).await
    }

    /// `POST /api/dead-letters/purge` with `selection` (`ids` or `all`).
    pub async fn purge_dead_letters(&self, selection: &Value) -> Reply<PurgeOutcome> {
        self.post_reply("/api/dead-letters/purge", selection).await
    }

    pub async fn simulator(&self) -> Reply<SimulatorState> {
        self.get_reply("/api/simulator").await
    }

    /// `POST /api/simulator` with `command` (`running`, `profile`).
    pub async fn control_simulator(&self, command: &Value) -> Reply<SimulatorState> {
        self.post_reply("/api/simulator", command).await
    }

    /// Every order in the read model, following the pages.
    pub async fn all_orders(&self) -> Option<Vec<OrderView>> {
        let mut all = Vec::new();
        let mut after: Option<Uuid> = None;
        loop {
            let query = match &after {
                Some(a) => format!("limit=1000&after={a}"),
                None => "limit=1000".to_string(),
            };
            let page = self.orders(&query).await.found()?;
            match page.last() {
                None => return Some(all),
                Some(last) => after = Some(last.order_id.as_uuid()),
            }
            all.extend(page);
        }
    }

    /// Creates a product with initial stock and waits until it is visible.
    pub async fn create_product(&self, sku: &str, price: f64, stock: i64) -> Uuid {
        let created = self
            .add_product(&json!({ "sku": sku, "name": format!("Product {sku}"), "price": price, "initial_stock": stock, "low_stock_threshold": 2 }))
            .await
            .expect(201);
        let id = created.id.as_uuid();
        self.wait_for(&format!("product {sku} with stock {stock}"), || async {
            let product = self.product(id).await.found();
            product.is_some_and(|p| p.on_hand == stock)
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
                let Some(stats) = self.stats().await.found() else {
                    return false;
                };
                let decided: i64 = OrderStatus::ALL
                    .iter()
                    .filter(|s| **s != OrderStatus::Pending)
                    .map(|s| stats.figures.orders_in(*s))
                    .sum();
                decided == expected && stats.backlog == Some(0)
            },
        )
        .await;
    }
}
