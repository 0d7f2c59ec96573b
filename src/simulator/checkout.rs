//! Shoppers at a checkout (`--profile checkout`): a share of the orders are
//! placed with a hold on their stock; most of those are paid (committed) a
//! moment later, the rest abandoned, so their holds expire and the stock
//! comes back.

use super::{random_order, Product, Simulator, SimulatorReport};
use rand::prelude::*;
use std::collections::VecDeque;
use std::time::Duration;
use tokio::time::Instant;
use uuid::Uuid;

/// Of the orders placed, this share is a checkout's hold.
const HELD_SHARE: f64 = 0.6;
/// Of the holds, this share is paid; the rest are abandoned.
const PAID_SHARE: f64 = 0.7;
/// How long a hold lasts, in seconds.
const HOLD_TTL_S: std::ops::RangeInclusive<u64> = 3..=8;
/// How long a shopper takes to pay, in milliseconds (some pay too late).
const PAY_AFTER_MS: std::ops::Range<u64> = 500..4_000;

/// The holds waiting to be paid, in the order they were placed.
#[derive(Default)]
pub(super) struct Checkouts {
    to_pay: VecDeque<(Uuid, Instant)>,
}

#[derive(serde::Deserialize)]
struct Placed {
    order_id: Uuid,
}

impl Simulator {
    /// Places a random order, held for a checkout or not; a held one is
    /// paid later or abandoned. Whether the gateway accepted it.
    pub(super) async fn place_checkout_order(
        &self,
        rng: &mut StdRng,
        products: &[Product],
        checkouts: &mut Checkouts,
        report: &mut SimulatorReport,
    ) -> Result<bool, reqwest::Error> {
        let mut body = random_order(rng, products);
        let held = rng.random_bool(HELD_SHARE);
        if held {
            body["hold_ttl_s"] = rng.random_range(HOLD_TTL_S).into();
        }
        let response = self.post("/api/orders").json(&body).send().await?;
        if response.status().is_server_error() {
            return response.error_for_status().map(|_| false);
        }
        if !response.status().is_success() {
            return Ok(false);
        }
        if held {
            report.held += 1;
            let placed: Placed = response.json().await?;
            if rng.random_bool(PAID_SHARE) {
                let due = Instant::now() + Duration::from_millis(rng.random_range(PAY_AFTER_MS));
                checkouts.to_pay.push_back((placed.order_id, due));
            }
        }
        Ok(true)
    }

    /// The shoppers whose time came pay: a commit each, answered once the
    /// worker decided it (refused when the hold ran out first, or the
    /// order was rejected for want of stock).
    pub(super) async fn pay_due(&self, checkouts: &mut Checkouts, report: &mut SimulatorReport) {
        let now = Instant::now();
        while let Some(&(order, due)) = checkouts.to_pay.front() {
            if due > now {
                break;
            }
            checkouts.to_pay.pop_front();
            let answer = self
                .post(&format!("/api/orders/{order}/commit?wait=5"))
                .send()
                .await;
            match answer.map(|r| r.status()) {
                Ok(status) if status.is_success() => report.committed += 1,
                Ok(status) if status.is_client_error() => report.commits_refused += 1,
                _ => report.failed += 1,
            }
        }
    }
}
