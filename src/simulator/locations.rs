//! The simulator's warehouses: three locations of different priorities
//! (the default one first, then east, then west), receipts spread over
//! them, and a logistics clerk who now and then moves units from the
//! fullest location of a product to its emptiest and receives what is in
//! transit (one unit short now and then). With stock split so, orders are
//! allocated across locations and some lines split.

use super::{Simulator, SimulatorReport};
use rand::prelude::*;
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

/// The locations the simulator creates besides the default one: (code,
/// name, priority). The default location has priority 0.
const LOCATIONS: &[(&str, &str, i64)] = &[
    ("east", "East warehouse", 10),
    ("west", "West warehouse", 20),
];

/// The most units one transfer moves.
const MAX_TRANSFER: i64 = 5;

#[derive(Debug, Deserialize)]
pub(super) struct Location {
    pub id: Uuid,
    #[allow(dead_code)]
    pub code: String,
    pub active: bool,
}

#[derive(Debug, Deserialize)]
struct StockAt {
    location_id: Uuid,
    available: i64,
}

#[derive(Debug, Deserialize)]
struct ProductStock {
    #[serde(default)]
    locations: Vec<StockAt>,
}

#[derive(Debug, Deserialize)]
struct Transfer {
    id: Uuid,
    lines: Vec<TransferLine>,
}

#[derive(Debug, Deserialize)]
struct TransferLine {
    product_id: Uuid,
    quantity: i64,
}

impl Simulator {
    /// Creates the simulator's locations (409 when they exist: kept).
    pub(super) async fn seed_locations(&self) {
        for &(code, name, priority) in LOCATIONS {
            let body = json!({"code": code, "name": name, "priority": priority});
            match self.post("/api/locations").json(&body).send().await {
                Ok(r) if r.status().is_success() || r.status() == reqwest::StatusCode::CONFLICT => {
                }
                Ok(r) => {
                    tracing::warn!(status = %r.status(), code, "creating a location was refused")
                }
                Err(e) => tracing::warn!(error = %e, code, "creating a location failed"),
            }
        }
    }

    /// The active locations, the default one first.
    pub(super) async fn active_locations(&self) -> Vec<Uuid> {
        self.get::<Vec<Location>>("/api/locations")
            .await
            .unwrap_or_default()
            .into_iter()
            .filter(|l| l.active)
            .map(|l| l.id)
            .collect()
    }

    /// Receives `quantity` of `product` spread over `locations` in equal
    /// parts (the first takes what does not divide). Whether all arrived.
    pub(super) async fn receive_spread(
        &self,
        product: Uuid,
        quantity: i64,
        locations: &[Uuid],
    ) -> bool {
        if locations.is_empty() {
            return self
                .sent_ok(
                    &format!("/api/products/{product}/stock"),
                    Some(json!({"quantity": quantity})),
                )
                .await;
        }
        let share = quantity / locations.len() as i64;
        let mut all = true;
        for (i, location) in locations.iter().enumerate() {
            let part = if i == 0 {
                quantity - share * (locations.len() as i64 - 1)
            } else {
                share
            };
            if part > 0 {
                all &= self
                    .sent_ok(
                        &format!("/api/products/{product}/stock"),
                        Some(json!({"quantity": part, "location_id": location})),
                    )
                    .await;
            }
        }
        all
    }

    /// Moves a few units of a random product from its fullest location to
    /// its emptiest, and receives what is in transit.
    pub(super) async fn logistics_round(
        &self,
        rng: &mut StdRng,
        products: &[Uuid],
        report: &mut SimulatorReport,
    ) {
        let shipped = self
            .get::<Vec<Transfer>>("/api/transfers?status=shipped&limit=10")
            .await
            .unwrap_or_default();
        for transfer in shipped {
            // One time in five a unit is lost on the way.
            let lines = match transfer.lines.first() {
                Some(line) if rng.random_bool(0.2) => {
                    json!([{"product_id": line.product_id, "received": line.quantity - 1}])
                }
                _ => json!([]),
            };
            let body = json!({"lines": lines, "discrepancy_reason": "counted at the dock"});
            if self
                .sent_ok(
                    &format!("/api/transfers/{}/receive", transfer.id),
                    Some(body),
                )
                .await
            {
                report.transfers_received += 1;
            }
        }
        let Some(&product) = products.choose(rng) else {
            return;
        };
        let Ok(stock) = self
            .get::<ProductStock>(&format!("/api/products/{product}"))
            .await
        else {
            return;
        };
        let active = self.active_locations().await;
        let at = |id: Uuid| {
            stock
                .locations
                .iter()
                .find(|s| s.location_id == id)
                .map_or(0, |s| s.available)
        };
        let (Some(&fullest), Some(&emptiest)) = (
            active.iter().max_by_key(|&&l| at(l)),
            active.iter().min_by_key(|&&l| at(l)),
        ) else {
            return;
        };
        let quantity = ((at(fullest) - at(emptiest)) / 2).min(MAX_TRANSFER);
        if fullest == emptiest || quantity < 1 {
            return;
        }
        let body = json!({"from": fullest, "to": emptiest,
                          "lines": [{"product_id": product, "quantity": quantity}]});
        if self.sent_ok("/api/transfers", Some(body)).await {
            report.transfers += 1;
        }
    }
}
