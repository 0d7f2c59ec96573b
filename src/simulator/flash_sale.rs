//! A flash sale (`simulate --profile flash-sale`): many clients at once at
//! one product with little stock, holds and backorders on. Each client
//! places one-unit orders as fast as answered, half of them held for a
//! checkout; most holds are paid in time, the rest run out. When the rush
//! is over the holds are left to expire, then the supplier delivers what
//! the backorders wait for, and the run counts how every order ended.
//! Nothing is oversold: the counts must match the gateway's `/api/stats`
//! on a deployment that took no other orders.

use super::Simulator;
use rand::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Units on the shelf when the sale opens.
const STOCK: i64 = 20;
/// Units that may be sold past zero.
const BACKORDER_LIMIT: i64 = 30;
/// Of the orders, this share is a checkout's hold (3 s).
const HELD_SHARE: f64 = 0.5;
const HOLD_TTL_S: u64 = 3;
/// Of the holds, this share is paid, within 0–2.5 s (some too late).
const PAID_SHARE: f64 = 0.6;
const PAY_AFTER_MS: std::ops::Range<u64> = 0..2_500;
/// How long the end of the run waits for holds and fills to settle.
const SETTLE: Duration = Duration::from_secs(30);

/// Why the sale could not be run or counted: the gateway did not answer,
/// or answered what cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum FlashSaleError {
    #[error("the gateway: {0}")]
    Http(#[from] reqwest::Error),
    #[error("an answer of the gateway: {0}")]
    Answer(#[from] serde_json::Error),
}

/// How every order of the sale ended, and the product's figures.
#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq)]
pub struct FlashSaleReport {
    pub product_id: Option<Uuid>,
    /// Orders the gateway accepted.
    pub placed: u64,
    /// Answered other than 202 (503 when overloaded), or unreachable.
    pub failed: u64,
    /// Decisions: rejected (no stock, no room to wait), held, confirmed
    /// at once, backordered.
    pub rejected: u64,
    pub held: u64,
    pub confirmed_at_once: u64,
    pub backordered: u64,
    /// Holds paid in time; commits refused (the hold ran out first).
    pub committed: u64,
    pub commits_refused: u64,
    /// Holds that ran out (abandoned, or paid too late).
    pub expired: u64,
    /// Backorders filled by the supplier's delivery.
    pub filled: u64,
    /// Orders CONFIRMED in the end: at once, committed, or filled.
    pub confirmed: u64,
    /// Units the supplier delivered for the backorders.
    pub delivered: i64,
    /// The product's figures in the end: reserved must equal the units of
    /// the confirmed orders, and never exceed on hand.
    pub on_hand: i64,
    pub reserved: i64,
    pub oversold: bool,
}

/// One order as the client saw it: its decision, then how it ended.
#[derive(Debug, Clone, Copy)]
struct Tracked {
    id: Uuid,
    decided: Status,
    committed: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
enum Status {
    Pending,
    Held,
    Backordered,
    Confirmed,
    PartiallyShipped,
    Shipped,
    Rejected,
    Cancelled,
    Expired,
}

#[derive(Deserialize)]
struct Order {
    status: Status,
}

#[derive(Deserialize)]
struct Placed {
    order_id: Uuid,
}

#[derive(Deserialize)]
struct Figures {
    on_hand: i64,
    reserved: i64,
    #[serde(default)]
    backordered: i64,
}

impl Simulator {
    /// Runs the sale with `clients` clients for `duration`, then settles it
    /// and counts.
    pub async fn flash_sale(
        &self,
        clients: u32,
        duration: Duration,
        shutdown: CancellationToken,
    ) -> Result<FlashSaleReport, FlashSaleError> {
        let product = self.open_sale().await?;
        let deadline = Instant::now() + duration;
        let tracked = Arc::new(Mutex::new(Vec::new()));
        let failed = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let mut tasks = tokio::task::JoinSet::new();
        for client in 0..clients {
            let (tracked, failed, stop) = (tracked.clone(), failed.clone(), shutdown.clone());
            let simulator = self.clone_for_client();
            tasks.spawn(async move {
                let mut rng = StdRng::seed_from_u64(rand::random::<u64>() ^ u64::from(client));
                while Instant::now() < deadline && !stop.is_cancelled() {
                    match simulator.buy(&mut rng, product).await {
                        Some(order) => tracked.lock().expect("tracked").push(order),
                        None => {
                            failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                }
            });
        }
        while tasks.join_next().await.is_some() {}
        let tracked = std::mem::take(&mut *tracked.lock().expect("tracked"));
        let mut report = FlashSaleReport {
            product_id: Some(product),
            failed: failed.load(std::sync::atomic::Ordering::Relaxed),
            ..FlashSaleReport::default()
        };
        self.settle(product, &tracked, &mut report).await?;
        Ok(report)
    }

    /// A simulator for one client: its own handle on the same connection
    /// pool.
    fn clone_for_client(&self) -> Simulator {
        Simulator {
            http: self.http.clone(),
            trust: self.trust.clone(),
            target: self.target.clone(),
            token: self.token.clone(),
            profile: self.profile,
        }
    }

    /// The product on sale: a new one with `STOCK` units and room for
    /// `BACKORDER_LIMIT` more to wait.
    async fn open_sale(&self) -> Result<Uuid, FlashSaleError> {
        let sku = format!("FLASH-{}", &Uuid::new_v4().simple().to_string()[..8]);
        let created = self
            .post("/api/products")
            .json(&json!({"sku": sku, "name": "Flash sale item", "price": 9.99, "category_name": "Flash sale",
                          "initial_stock": STOCK, "low_stock_threshold": 0, "reorder_quantity": 0}))
            .send()
            .await?
            .error_for_status()?;
        let id: Uuid =
            serde_json::from_value(created.json::<serde_json::Value>().await?["id"].clone())?;
        self.authorized(
            self.http
                .patch(format!("{}/api/products/{id}", self.target)),
        )
        .json(&json!({"backorder_limit": BACKORDER_LIMIT}))
        .send()
        .await?
        .error_for_status()?;
        Ok(id)
    }

    /// One order of a unit, held or not, waited for; a hold paid or not.
    /// None when the gateway did not take it.
    async fn buy(&self, rng: &mut StdRng, product: Uuid) -> Option<Tracked> {
        let mut body = json!({"customer_email": format!("shopper{}@example.com", rng.random_range(0..1000)),
                              "items": [{"product_id": product, "quantity": 1}]});
        if rng.random_bool(HELD_SHARE) {
            body["hold_ttl_s"] = HOLD_TTL_S.into();
        }
        let placed = self.post("/api/orders").json(&body).send().await.ok()?;
        if !placed.status().is_success() {
            return None;
        }
        let id = placed.json::<Placed>().await.ok()?.order_id;
        let decided = self
            .get::<Order>(&format!("/api/orders/{id}?wait=5"))
            .await
            .map_or(Status::Pending, |o| o.status);
        let mut order = Tracked {
            id,
            decided,
            committed: None,
        };
        if decided == Status::Held && rng.random_bool(PAID_SHARE) {
            tokio::time::sleep(Duration::from_millis(rng.random_range(PAY_AFTER_MS))).await;
            let answer = self
                .post(&format!("/api/orders/{id}/commit?wait=5"))
                .send()
                .await
                .ok()?;
            order.committed = Some(answer.status().is_success());
        }
        Some(order)
    }

    /// After the rush: the holds run out, the supplier delivers what the
    /// backorders wait for, and every order's end is read.
    async fn settle(
        &self,
        product: Uuid,
        tracked: &[Tracked],
        report: &mut FlashSaleReport,
    ) -> Result<(), FlashSaleError> {
        let until = Instant::now() + SETTLE;
        let path = format!("/api/products/{product}");
        let figures = || self.get::<Figures>(&path);
        // Holds last `HOLD_TTL_S`: wait for every one to end.
        loop {
            let mut open = 0;
            for order in tracked.iter().filter(|o| o.decided == Status::Held) {
                let now = self
                    .get::<Order>(&format!("/api/orders/{}", order.id))
                    .await?;
                open += u64::from(now.status == Status::Held);
            }
            if open == 0 || Instant::now() > until {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let waiting = figures().await?.backordered;
        if waiting > 0 {
            self.post(&format!("/api/products/{product}/stock"))
                .json(&json!({"quantity": waiting}))
                .send()
                .await?
                .error_for_status()?;
            report.delivered = waiting;
        }
        while figures().await?.backordered > 0 && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        for order in tracked {
            report.placed += 1;
            match order.decided {
                Status::Rejected => report.rejected += 1,
                Status::Held => report.held += 1,
                Status::Backordered => report.backordered += 1,
                Status::Confirmed => report.confirmed_at_once += 1,
                _ => {}
            }
            match order.committed {
                Some(true) => report.committed += 1,
                Some(false) => report.commits_refused += 1,
                None => {}
            }
            let end = match order.decided {
                Status::Rejected | Status::Confirmed => order.decided,
                _ => {
                    self.get::<Order>(&format!("/api/orders/{}", order.id))
                        .await?
                        .status
                }
            };
            match end {
                Status::Expired => report.expired += 1,
                Status::Confirmed => report.confirmed += 1,
                _ => {}
            }
            if order.decided == Status::Backordered && end == Status::Confirmed {
                report.filled += 1;
            }
        }
        let end = figures().await?;
        report.on_hand = end.on_hand;
        report.reserved = end.reserved;
        // Each confirmed order holds its one unit; nothing shipped.
        report.oversold = end.reserved > end.on_hand || end.reserved != report.confirmed as i64;
        Ok(())
    }
}

impl std::fmt::Display for FlashSaleReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "flash sale of {} ({STOCK} in stock, {BACKORDER_LIMIT} may wait)",
            self.product_id.map(|p| p.to_string()).unwrap_or_default()
        )?;
        writeln!(
            f,
            "  orders placed     {:>7}   failed {}",
            self.placed, self.failed
        )?;
        writeln!(f, "  rejected          {:>7}", self.rejected)?;
        writeln!(f, "  confirmed at once {:>7}", self.confirmed_at_once)?;
        writeln!(
            f,
            "  held              {:>7}   committed {}, commits refused {}, expired {}",
            self.held, self.committed, self.commits_refused, self.expired
        )?;
        writeln!(
            f,
            "  backordered       {:>7}   filled {} (the supplier delivered {})",
            self.backordered, self.filled, self.delivered
        )?;
        writeln!(f, "  confirmed in all  {:>7}", self.confirmed)?;
        write!(
            f,
            "  on hand {}, reserved {}: {}",
            self.on_hand,
            self.reserved,
            if self.oversold {
                "OVERSOLD"
            } else {
                "nothing oversold"
            }
        )
    }
}
