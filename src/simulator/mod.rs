//! The traffic simulator: seeds a demo catalog through the API when it is
//! empty, then places orders with random items and quantities at the pace of
//! a profile. It also plays the warehouse (ships most confirmed orders),
//! customers who change their mind (cancel some), the stock keeper (writes
//! off a damaged or missing unit now and then, and books one found), and
//! the supplier (delivers the purchase orders the workers draft when stock
//! runs low), in three locations with a clerk moving stock between them
//! (`locations.rs`). It talks to the gateway over HTTP only, like any
//! client.

mod checkout;
pub mod flash_sale;
pub mod load;
mod locations;
mod recorder;
pub mod schedule;
pub mod summary;
pub mod trust;

use crate::retry::{pause, Backoff};
use rand::prelude::*;
use serde::Deserialize;
use serde_json::json;
use std::ops::Range;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// How much traffic the simulator makes (`--profile`, `SIM_PROFILE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Profile {
    /// No simulator (only with `all`).
    None,
    /// 2–5 s between orders.
    Normal,
    /// 0.1–0.5 s between orders.
    Burst,
    /// A shop's checkouts at the burst's pace: 60% of orders held for
    /// 3–8 s, 70% of those paid (committed) within 4 s, the rest
    /// abandoned to expire.
    Checkout,
    /// Many clients at one product with little stock, holds and
    /// backorders on, for `--duration` (`simulate` only): the report
    /// counts the orders held, committed, expired, backordered and filled.
    FlashSale,
    /// Open loop at `--rate` requests/s, latency from each request's
    /// intended send time (`simulate` only).
    Steady,
    /// Closed loop: `--concurrency` connections, each as fast as answered
    /// (`simulate` only).
    Max,
}

impl Profile {
    /// Milliseconds between two orders.
    fn pause_ms(self) -> Option<Range<u64>> {
        match self {
            Profile::None | Profile::Steady | Profile::Max | Profile::FlashSale => None,
            Profile::Normal => Some(2_000..5_000),
            Profile::Burst | Profile::Checkout => Some(100..500),
        }
    }
}

/// The demo catalog: (sku, name, category, price in cents, initial stock).
const DEMO_CATALOG: &[(&str, &str, &str, i64, i64)] = &[
    ("LAP-001", "Laptop Pro 14", "Electronics", 129_999, 40),
    ("PHN-001", "Smartphone X", "Electronics", 79_900, 60),
    (
        "HDP-001",
        "Noise-cancelling Headphones",
        "Electronics",
        24_950,
        80,
    ),
    ("KBD-001", "Mechanical Keyboard", "Accessories", 8_999, 120),
    ("MSE-001", "Wireless Mouse", "Accessories", 2_999, 150),
    ("MON-001", "27\" 4K Monitor", "Electronics", 38_900, 30),
    ("CHR-001", "Ergonomic Chair", "Furniture", 34_900, 25),
    ("DSK-001", "Standing Desk", "Furniture", 49_900, 20),
    ("CBL-001", "USB-C Cable 2 m", "Accessories", 1_299, 300),
    ("BAG-001", "Laptop Backpack", "Accessories", 5_999, 70),
];

const CUSTOMERS: &[&str] = &[
    "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy",
];

#[derive(Debug, Deserialize)]
struct Product {
    id: Uuid,
    on_hand: i64,
    /// When the figures were read (a count is made as of then).
    #[serde(skip, default = "chrono::Utc::now")]
    read_at: chrono::DateTime<chrono::Utc>,
    available: i64,
    low_stock_threshold: i64,
    reorder_quantity: i64,
}

pub struct Simulator {
    http: reqwest::Client,
    /// How an https:// target is trusted (its feed too).
    trust: trust::GatewayTrust,
    target: String,
    /// The gateway's bearer token, when it has one.
    token: Option<secrecy::SecretString>,
    profile: Profile,
}

#[derive(Debug, Deserialize)]
struct OrderSummary {
    order_id: Uuid,
}

/// An order's lines as `GET /api/orders/{id}` gives them.
#[derive(Debug, Deserialize)]
struct OrderDetail {
    #[serde(default)]
    items: Vec<OrderItem>,
}

#[derive(Debug, Deserialize)]
struct OrderItem {
    product_id: Uuid,
    quantity: i64,
    shipped: i64,
    returned: i64,
}

#[derive(Debug, Deserialize)]
struct PurchaseOrder {
    id: Uuid,
    product_id: Uuid,
    drafted_at: chrono::DateTime<chrono::Utc>,
}

/// Of the confirmed orders the warehouse handles each round, this share is
/// cancelled by the customer instead of shipped.
const CANCEL_SHARE: f64 = 0.15;
/// Confirmed orders handled per round (a round every 10 placed orders).
const ORDERS_PER_ROUND: usize = 10;
/// The chance that a round also books an adjustment (damage, shrinkage, a
/// unit found) of one product.
const ADJUSTMENT_SHARE: f64 = 0.3;
/// Of the confirmed orders the warehouse ships, this share goes out in two
/// parts: the first line (or half of it) now, the rest next round.
const PARTIAL_SHARE: f64 = 0.2;
/// The chance that a round also takes back a unit of a recently shipped
/// order (restocked, or now and then damaged).
const RETURN_SHARE: f64 = 0.25;
/// The chance that a round also moves stock between locations (and
/// receives the transfers in transit).
const TRANSFER_SHARE: f64 = 0.2;
/// Recently shipped orders a customer may return from (the newest kept).
const RETURNABLE_KEPT: usize = 100;
const RETURN_REASONS: &[&str] = &[
    "wrong size",
    "changed mind",
    "arrived late",
    "not as described",
];

#[derive(Debug, Default, Clone, Copy)]
pub struct SimulatorReport {
    pub accepted: u64,
    pub refused: u64,
    pub failed: u64,
    pub shipped: u64,
    /// Shipments of part of an order (the rest ships a round later).
    pub partial_shipments: u64,
    pub cancelled: u64,
    /// Returns booked (the workers refuse one of more than was shipped).
    pub returns: u64,
    /// Adjustments and counts booked (the workers may refuse some: a stale
    /// on-hand, or stock held by orders).
    pub adjustments: u64,
    /// Purchase orders delivered.
    pub deliveries: u64,
    /// Direct receipts for products low without a purchase order.
    pub restocks: u64,
    /// Transfers between locations requested, and receipts of them.
    pub transfers: u64,
    pub transfers_received: u64,
    /// Orders placed with a hold (checkout profile), holds paid in time,
    /// and commits refused (the hold ran out first, or no stock).
    pub held: u64,
    pub committed: u64,
    pub commits_refused: u64,
}

impl Simulator {
    pub fn new(
        target: &str,
        token: Option<secrecy::SecretString>,
        profile: Profile,
        trust: trust::GatewayTrust,
    ) -> Simulator {
        Simulator {
            http: trust.http_client(Duration::from_secs(10)),
            trust,
            target: target.trim_end_matches('/').to_string(),
            token,
            profile,
        }
    }

    fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.authorized(self.http.post(format!("{}{path}", self.target)))
    }

    /// `request` with the bearer token, when the gateway has one: reads
    /// need it too once tokens are configured.
    fn authorized(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(token) => request.bearer_auth(secrecy::ExposeSecret::expose_secret(token)),
            None => request,
        }
    }

    async fn products(&self) -> reqwest::Result<Vec<Product>> {
        self.get("/api/products?limit=1000").await
    }

    /// Runs until `shutdown` (or forever). Returns what it did.
    pub async fn run(&self, shutdown: CancellationToken) -> SimulatorReport {
        let mut report = SimulatorReport::default();
        let Some(pause) = self.profile.pause_ms() else {
            return report;
        };
        let Some(mut products) = self.prepare(&shutdown).await else {
            return report;
        };
        tracing::info!(profile = ?self.profile, products = products.len(), target = %self.target, "simulator placing orders");
        let mut rng = StdRng::from_os_rng();
        let mut placed: u64 = 0;
        let mut shipped = std::collections::VecDeque::with_capacity(RETURNABLE_KEPT);
        let mut checkouts = checkout::Checkouts::default();
        loop {
            let wait = Duration::from_millis(rng.random_range(pause.clone()));
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(wait) => {}
            }
            let placed_one = if self.profile == Profile::Checkout {
                self.pay_due(&mut checkouts, &mut report).await;
                self.place_checkout_order(&mut rng, &products, &mut checkouts, &mut report)
                    .await
            } else {
                self.place_random_order(&mut rng, &products).await
            };
            match placed_one {
                Ok(true) => report.accepted += 1,
                Ok(false) => report.refused += 1,
                Err(e) => {
                    report.failed += 1;
                    tracing::warn!(error = %e, "simulator could not reach the gateway");
                }
            }
            placed += 1;
            if placed.is_multiple_of(10) {
                self.warehouse_round(&mut rng, &mut report, &mut shipped)
                    .await;
                if rng.random_bool(RETURN_SHARE) {
                    self.returns_round(&mut rng, &shipped, &mut report).await;
                }
                if rng.random_bool(ADJUSTMENT_SHARE) {
                    self.stock_keeper_round(&mut rng, &products, &mut report)
                        .await;
                }
                if rng.random_bool(TRANSFER_SHARE) {
                    let ids: Vec<Uuid> = products.iter().map(|p| p.id).collect();
                    self.logistics_round(&mut rng, &ids, &mut report).await;
                }
                if let Ok(fresh) = self.products().await {
                    self.supplier_round(&fresh, Duration::ZERO, &mut report)
                        .await;
                    if !fresh.is_empty() {
                        products = fresh;
                    }
                }
            }
            if placed.is_multiple_of(50) {
                tracing::info!(?report, "simulator progress");
            }
        }
        tracing::info!(?report, "simulator stopped");
        report
    }

    async fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> reqwest::Result<T> {
        self.authorized(self.http.get(format!("{}{path}", self.target)))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await
    }

    /// The warehouse ships confirmed orders, some of them in two parts (the
    /// rest of a partly shipped one goes out the next round); some
    /// customers cancel instead. Orders shipped are noted in `shipped` (the
    /// newest `RETURNABLE_KEPT`), for returns.
    async fn warehouse_round(
        &self,
        rng: &mut StdRng,
        report: &mut SimulatorReport,
        shipped: &mut std::collections::VecDeque<Uuid>,
    ) {
        let mut note_shipped = |order: Uuid| {
            if shipped.len() == RETURNABLE_KEPT {
                shipped.pop_front();
            }
            shipped.push_back(order);
        };
        let path = format!("/api/orders?status=PARTIALLY_SHIPPED&limit={ORDERS_PER_ROUND}");
        for order in self
            .get::<Vec<OrderSummary>>(&path)
            .await
            .unwrap_or_default()
        {
            if self
                .sent_ok(&format!("/api/orders/{}/ship", order.order_id), None)
                .await
            {
                report.shipped += 1;
                note_shipped(order.order_id);
            }
        }
        let path = format!("/api/orders?status=CONFIRMED&limit={ORDERS_PER_ROUND}");
        let Ok(confirmed) = self.get::<Vec<OrderSummary>>(&path).await else {
            return;
        };
        for order in confirmed {
            let id = order.order_id;
            if rng.random_bool(CANCEL_SHARE) {
                if self
                    .sent_ok(&format!("/api/orders/{id}/cancel"), None)
                    .await
                {
                    report.cancelled += 1;
                }
            } else if rng.random_bool(PARTIAL_SHARE) {
                let Ok(detail) = self.get::<OrderDetail>(&format!("/api/orders/{id}")).await else {
                    continue;
                };
                let Some(first) = detail.items.first() else {
                    continue;
                };
                // Half of the first line (at least one unit): the rest of
                // the order ships next round.
                let quantity = (first.quantity / 2).max(1);
                let body =
                    json!({"lines": [{"product_id": first.product_id, "quantity": quantity}]});
                if self
                    .sent_ok(&format!("/api/orders/{id}/shipments"), Some(body))
                    .await
                {
                    report.partial_shipments += 1;
                }
            } else if self.sent_ok(&format!("/api/orders/{id}/ship"), None).await {
                report.shipped += 1;
                note_shipped(id);
            }
        }
    }

    /// A customer sends back one unit of a recently shipped order: mostly
    /// restocked, one time in five damaged.
    async fn returns_round(
        &self,
        rng: &mut StdRng,
        shipped: &std::collections::VecDeque<Uuid>,
        report: &mut SimulatorReport,
    ) {
        let Some(&id) = shipped.get(rng.random_range(0..shipped.len().max(1))) else {
            return;
        };
        let Ok(detail) = self.get::<OrderDetail>(&format!("/api/orders/{id}")).await else {
            return;
        };
        let Some(line) = detail.items.iter().find(|l| l.shipped > l.returned) else {
            return;
        };
        let disposition = if rng.random_bool(0.2) {
            "damaged"
        } else {
            "restock"
        };
        let reason = RETURN_REASONS
            .choose(rng)
            .copied()
            .unwrap_or("changed mind");
        let body = json!({
            "lines": [{"product_id": line.product_id, "quantity": 1, "disposition": disposition}],
            "reason": reason,
        });
        if self
            .sent_ok(&format!("/api/orders/{id}/returns"), Some(body))
            .await
        {
            report.returns += 1;
        }
    }

    /// POSTs `body` (if any) to `path`; whether the gateway accepted it.
    async fn sent_ok(&self, path: &str, body: Option<serde_json::Value>) -> bool {
        let request = self.post(path);
        let request = match body {
            Some(body) => request.json(&body),
            None => request,
        };
        matches!(request.send().await, Ok(r) if r.status().is_success())
    }

    /// The stock keeper books one adjustment of a random product, on the
    /// on-hand last read (a compare-and-set: refused if it moved since),
    /// or, one time in three, counts its shelf (the book's figure, now and
    /// then a unit short): the worker compares it with the book as of then.
    async fn stock_keeper_round(
        &self,
        rng: &mut StdRng,
        products: &[Product],
        report: &mut SimulatorReport,
    ) {
        let Some(product) = products.choose(rng) else {
            return;
        };
        let (path, body) = if rng.random_bool(1.0 / 3.0) {
            let short = i64::from(rng.random_bool(0.3));
            let body = json!({
                "counted": (product.on_hand - short).max(0),
                "counted_at": product.read_at.to_rfc3339(),
                "note": "counted by the simulator",
            });
            ("counts", body)
        } else {
            let mut body = write_off(rng);
            body["expected_on_hand"] = json!(product.on_hand);
            ("adjustments", body)
        };
        let sent = self
            .post(&format!("/api/products/{}/{path}", product.id))
            .json(&body)
            .send()
            .await;
        if matches!(sent, Ok(ref r) if r.status().is_success()) {
            report.adjustments += 1;
        }
    }

    /// The supplier delivers every open purchase order at least `min_age`
    /// old, and restocks directly a product that is low without one (it
    /// never crossed its threshold, e.g. created empty).
    async fn supplier_round(
        &self,
        products: &[Product],
        min_age: Duration,
        report: &mut SimulatorReport,
    ) {
        let Ok(open) = self
            .get::<Vec<PurchaseOrder>>("/api/purchase-orders?status=OPEN&limit=1000")
            .await
        else {
            return;
        };
        let now = chrono::Utc::now();
        for po in open
            .iter()
            .filter(|po| (now - po.drafted_at).to_std().unwrap_or_default() >= min_age)
        {
            let sent = self
                .post(&format!("/api/purchase-orders/{}/receive", po.id))
                .send()
                .await;
            if matches!(sent, Ok(ref r) if r.status().is_success()) {
                report.deliveries += 1;
            }
        }
        let on_order: Vec<Uuid> = open.iter().map(|po| po.product_id).collect();
        let without_po: Vec<&Product> = products
            .iter()
            .filter(|p| !on_order.contains(&p.id))
            .collect();
        report.restocks += self.restock_low(&without_po).await;
    }

    /// Waits for the gateway, seeds the catalog if empty, and waits until the
    /// products are visible (workers have applied them).
    async fn prepare(&self, shutdown: &CancellationToken) -> Option<Vec<Product>> {
        let mut seeded = false;
        // Waiting for a gateway that is starting: soon at first, then less often.
        let mut delays = Backoff {
            first: Duration::from_millis(200),
            max: Duration::from_secs(3),
        }
        .delays();
        loop {
            match self.products().await {
                Ok(products) if !products.is_empty() => return Some(products),
                Ok(_) if !seeded => {
                    self.seed().await;
                    seeded = true;
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::info!(error = %e, target = %self.target, "waiting for the gateway")
                }
            }
            pause(delays.next().unwrap_or_default(), shutdown)
                .await
                .ok()?;
        }
    }

    /// The demo catalog, each product's stock spread over the three
    /// locations (a third at the default one, with its creation).
    async fn seed(&self) {
        tracing::info!(products = DEMO_CATALOG.len(), "seeding the demo catalog");
        self.seed_locations().await;
        let others: Vec<Uuid> = self.active_locations().await.into_iter().skip(1).collect();
        for &(sku, name, category, cents, stock) in DEMO_CATALOG {
            let here = stock / (others.len() as i64 + 1);
            let body = json!({
                "sku": sku,
                "name": name,
                "category_name": category,
                "price": cents as f64 / 100.0,
                "low_stock_threshold": stock / 5,
                "reorder_quantity": stock,
                "initial_stock": stock - here * others.len() as i64,
            });
            match self.post("/api/products").json(&body).send().await {
                Ok(r) if r.status().is_success() => {
                    let created: serde_json::Value = r.json().await.unwrap_or_default();
                    if let Some(id) = created["id"].as_str().and_then(|id| id.parse().ok()) {
                        self.receive_spread(id, here * others.len() as i64, &others)
                            .await;
                    }
                }
                Ok(r) if r.status() == reqwest::StatusCode::CONFLICT => {}
                Ok(r) => tracing::warn!(status = %r.status(), sku, "seeding a product was refused"),
                Err(e) => tracing::warn!(error = %e, sku, "seeding a product failed"),
            }
        }
    }

    /// Ok(true) when the gateway accepted the order, Ok(false) when it
    /// refused it (4xx), Err when it could not be reached or failed.
    async fn place_random_order(
        &self,
        rng: &mut StdRng,
        products: &[Product],
    ) -> Result<bool, reqwest::Error> {
        let body = random_order(rng, products);
        let response = self.post("/api/orders").json(&body).send().await?;
        if response.status().is_server_error() {
            return response.error_for_status().map(|_| false);
        }
        Ok(response.status().is_success())
    }
}

/// An adjustment's body as a stock keeper books them: mostly a unit or two
/// damaged or missing, now and then one found.
fn write_off(rng: &mut StdRng) -> serde_json::Value {
    let (delta, reason) = match rng.random_range(0..10) {
        0..=5 => (-rng.random_range(1..=2), "damaged"),
        6..=8 => (-1, "shrinkage"),
        _ => (1, "found"),
    };
    json!({ "delta": delta, "reason": reason, "note": "booked by the simulator" })
}

/// An order of 1–3 random products, 1–4 units each, from a random customer.
fn random_order(rng: &mut StdRng, products: &[Product]) -> serde_json::Value {
    let lines = rng.random_range(1..=3.min(products.len()));
    let ids: Vec<Uuid> = products.choose_multiple(rng, lines).map(|p| p.id).collect();
    order_body(rng, &ids)
}

/// `POST /api/orders`'s body: a line of 1–4 units of each product in
/// `ids`, from a random customer.
fn order_body(rng: &mut StdRng, ids: &[Uuid]) -> serde_json::Value {
    let items: Vec<_> = ids
        .iter()
        .map(|id| json!({ "product_id": id, "quantity": rng.random_range(1..=4) }))
        .collect();
    let customer = CUSTOMERS.choose(rng).expect("non-empty");
    json!({ "customer_email": format!("{customer}@example.com"), "items": items })
}

impl Simulator {
    /// Products below their threshold get their reorder quantity
    /// delivered, spread over the active locations.
    async fn restock_low(&self, products: &[&Product]) -> u64 {
        let mut restocked = 0;
        let low: Vec<&&Product> = products
            .iter()
            .filter(|p| p.available < p.low_stock_threshold)
            .collect();
        if low.is_empty() {
            return 0;
        }
        let locations = self.active_locations().await;
        for p in low {
            let quantity = p.reorder_quantity.max(1);
            if self.receive_spread(p.id, quantity, &locations).await {
                restocked += 1;
            }
        }
        restocked
    }
}
