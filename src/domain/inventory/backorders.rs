//! Backorders: selling past zero on purpose. A product's `backorder_limit`
//! (`product.policy_set`) says how many units may wait for stock. An order
//! short of stock is confirmed when every shortfall fits under its
//! product's limit: what is in stock is reserved, the rest waits and the
//! order is BACKORDERED. As stock becomes available (a receipt, a positive
//! adjustment, a restocking return, a transfer in, a released
//! reservation, a location reactivated), the worker that applied it fills
//! the waiting orders of that product first in, first out, by placement
//! order, one `order.backorder_filled` at a time; an order is CONFIRMED
//! once every unit is reserved. Each fill is a recorded decision: apply
//! never fills, so `rebuild` replays the fills that were made.
//!
//! The queue's order is (placement time, order id). A batch sees the head
//! of a product's queue (the store loads it; `queue_horizon` marks where a
//! page it loaded ends): it never fills an order beyond that while earlier
//! ones may wait. The workers' sweep asks for such a queue to be taken up
//! again (`product.backorder_fill_requested`), and the batch that applies
//! the request loads the next orders and fills them.

use super::{Cause, Inventory, LineState, MovementKind, OrderStatus, Refused};
use crate::domain::events::{Allocation, Backordered, OrderBackorderFilled, ProductPolicySet};
use crate::domain::{DomainEvent, OrderId, ProductId};
use std::collections::BTreeMap;

/// Where an order stands in a product's queue: placement time, then id.
pub type QueueKey = (i64, OrderId);

impl super::OrderState {
    /// The units of `product` the order's lines wait for.
    pub fn units_waiting_for(&self, product: ProductId) -> i64 {
        self.lines
            .iter()
            .filter(|l| l.product_id == product)
            .map(|l| l.backordered)
            .sum()
    }
}

impl Inventory {
    pub(super) fn set_policy(&mut self, e: &ProductPolicySet, at: i64) -> Result<(), Refused> {
        let product = self.product_mut(e.product_id)?;
        if e.backorder_limit < 0 || e.backorder_limit < product.backordered {
            return Err(Refused(format!(
                "product {}: a backorder limit of {} is below the {} units already waiting (or negative)",
                e.product_id, e.backorder_limit, product.backordered
            )));
        }
        product.backorder_limit = e.backorder_limit;
        product.updated_at = product.updated_at.max(at);
        Ok(())
    }

    /// Keeps `waiting` in step with a product's `backordered`.
    pub(super) fn queue_changed(&mut self, product_id: ProductId) {
        if self
            .products
            .get(&product_id)
            .is_some_and(|p| p.backordered > 0)
        {
            self.waiting.insert(product_id);
        } else {
            self.waiting.remove(&product_id);
        }
    }

    /// A product's units available at its active locations: what an order
    /// or a fill may take.
    pub fn active_available(&self, product_id: ProductId) -> i64 {
        self.products.get(&product_id).map_or(0, |p| {
            p.locations
                .iter()
                .filter(|(id, _)| self.locations.get(id).is_some_and(|l| l.active))
                .map(|(_, stock)| stock.available())
                .sum()
        })
    }

    /// What a new order may take of a product now: nothing while earlier
    /// orders wait for it (it queues behind them).
    pub(super) fn takeable(&self, product_id: ProductId) -> i64 {
        match self.products.get(&product_id) {
            Some(p) if p.backordered > 0 => 0,
            _ => self.active_available(product_id),
        }
    }

    /// A confirmation's units that wait: the last units of the product's
    /// lines (the first lines are reserved first).
    pub(super) fn mark_backordered(
        &mut self,
        order_id: OrderId,
        lines: &mut [LineState],
        backordered: &[Backordered],
    ) -> Result<(), Refused> {
        for b in backordered {
            if b.quantity <= 0 {
                return Err(Refused(format!(
                    "order {order_id} backorders {} of {}",
                    b.quantity, b.product_id
                )));
            }
            let mut left = b.quantity;
            for line in lines
                .iter_mut()
                .rev()
                .filter(|l| l.product_id == b.product_id)
            {
                let take = left.min(line.quantity - line.backordered);
                line.backordered += take;
                left -= take;
            }
            if left > 0 {
                return Err(Refused(format!(
                    "order {order_id} backorders {} of {}, more than it ordered",
                    b.quantity, b.product_id
                )));
            }
            let product = self.product_mut(b.product_id)?;
            product.backordered += b.quantity;
            if product.backordered > product.backorder_limit {
                return Err(Refused(format!(
                    "order {order_id} backorders {} of {}: {} would wait, beyond its limit {}",
                    b.quantity, b.product_id, product.backordered, product.backorder_limit
                )));
            }
            self.queue_changed(b.product_id);
        }
        let order = self.orders.get_mut(&order_id).expect("transitioned before");
        order.lines = lines.to_vec();
        Ok(())
    }

    /// A fill: the units become reserved for the order where the
    /// allocations say; the order is CONFIRMED once nothing waits.
    pub(super) fn fill(
        &mut self,
        e: &OrderBackorderFilled,
        at: i64,
        cause: &Cause,
    ) -> Result<(), Refused> {
        let order_id = e.order_id;
        let quantity: i64 = e.allocations.iter().map(|a| a.quantity).sum();
        let order = self
            .orders
            .get(&order_id)
            .ok_or_else(|| Refused(format!("order {order_id} is unknown; nothing waits")))?;
        if order.status != OrderStatus::Backordered {
            return Err(Refused(format!(
                "order {order_id} is {}; only a BACKORDERED order is filled",
                order.status
            )));
        }
        let waiting = order.units_waiting_for(e.product_id);
        if quantity <= 0 || quantity > waiting {
            return Err(Refused(format!(
                "order {order_id} waits for {waiting} of {}; it cannot be filled with {quantity}",
                e.product_id
            )));
        }
        for a in &e.allocations {
            let usable = self.locations.get(&a.location_id).is_some_and(|l| l.active);
            let stock = self.stock_at(a.product_id, a.location_id);
            if a.product_id != e.product_id
                || a.quantity <= 0
                || !usable
                || stock.available() < a.quantity
            {
                return Err(Refused(format!(
                    "order {order_id}'s fill takes {} of {} at location {}, which has {} available{}",
                    a.quantity,
                    a.product_id,
                    a.location_id,
                    stock.available(),
                    if usable { "" } else { " and is not an active location" }
                )));
            }
        }
        for a in &e.allocations {
            self.move_stock(
                a.product_id,
                a.location_id,
                MovementKind::Reserved,
                (0, a.quantity),
                at,
                cause,
            )?;
        }
        self.product_mut(e.product_id)?.backordered -= quantity;
        self.queue_changed(e.product_id);
        let order = self.orders.get_mut(&order_id).expect("found above");
        // The first lines wait least: they are filled first.
        let mut left = quantity;
        for line in order
            .lines
            .iter_mut()
            .filter(|l| l.product_id == e.product_id)
        {
            let take = left.min(line.backordered);
            line.backordered -= take;
            left -= take;
        }
        for a in &e.allocations {
            match order
                .allocations
                .iter_mut()
                .find(|held| (held.product_id, held.location_id) == (a.product_id, a.location_id))
            {
                Some(held) => held.quantity += a.quantity,
                None => order.allocations.push(super::AllocationState {
                    product_id: a.product_id,
                    location_id: a.location_id,
                    quantity: a.quantity,
                    shipped: 0,
                }),
            }
        }
        order.updated_at = at;
        if order.lines.iter().all(|l| l.backordered == 0) {
            self.transition(
                order_id,
                &[OrderStatus::Backordered],
                OrderStatus::Confirmed,
                at,
            )?;
        }
        Ok(())
    }

    /// The fill due now, one per product that has stock at its active
    /// locations while orders wait for it: the first order of its queue
    /// gets what it waits for, or what there is. None for a product whose
    /// first waiting order is beyond what this batch loaded.
    pub(super) fn fills_due(&self) -> Vec<DomainEvent> {
        let mut fills = Vec::new();
        for &product_id in &self.waiting {
            let available = self.active_available(product_id);
            if available <= 0 {
                continue;
            }
            let horizon = self.queue_horizon.get(&product_id);
            let first = self
                .orders
                .iter()
                .filter(|(_, o)| o.status == OrderStatus::Backordered)
                .filter_map(|(id, o)| {
                    let waiting = o.units_waiting_for(product_id);
                    (waiting > 0).then_some(((o.placed_at, *id), waiting))
                })
                .min_by_key(|(key, _)| *key)
                .filter(|(key, _)| horizon.is_none_or(|h| key <= h));
            if let Some(((_, order_id), waiting)) = first {
                let wanted = BTreeMap::from([(product_id, waiting.min(available))]);
                let allocations: Vec<Allocation> = self
                    .allocate(&wanted, self.strategy)
                    .expect("no more than is available at the active locations");
                fills.push(DomainEvent::OrderBackorderFilled(OrderBackorderFilled {
                    order_id,
                    product_id,
                    allocations,
                }));
            }
        }
        fills
    }
}
