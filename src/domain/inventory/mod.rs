//! The inventory as a state machine over events. Pure: no I/O.
//!
//! Two functions carry the whole business:
//! - `Inventory::apply` is the projection: what an event does to products,
//!   orders and purchase orders. It never decides anything, so replaying the
//!   event archive through it (`streamstock rebuild`) reproduces the live
//!   read model exactly. An event that cannot apply to the state (shipping a
//!   cancelled order, closing a purchase order twice) is refused with a
//!   reason instead of corrupting a count.
//! - `Inventory::handle` is what a worker does live: apply the event, then
//!   decide the follow-up events it calls for (confirm or reject an order,
//!   ship, cancel with compensation, low stock, purchase orders, refusals of
//!   commands that are not allowed), and handle each of those in turn. The
//!   follow-ups are the recorded decisions: rebuild reads them instead of
//!   deciding again.
//!
//! The store loads the part of the state a batch touches into an
//! `Inventory`, runs this, and writes back what changed. This file holds
//! the state and `apply`; `decide.rs` holds `handle` and the decisions.

mod backorders;
mod decide;
mod fulfilment;
mod holds;
mod ledger;
mod locations;
mod transfers;

pub use ledger::{Cause, Movement};
pub use locations::{AllocationState, LocationState, LocationStock, Shortfall};
pub use transfers::{TransferLine, TransferState};

use super::events::{
    self, OrderLine, OrderPlaced, ProductCreated, PurchaseOrderDrafted, StockAdjusted,
    StockReceived,
};
use super::{DomainEvent, LocationId, Money, OrderId, ProductId, PurchaseOrderId, TransferId};
use std::collections::{BTreeMap, BTreeSet};

pub use super::order_command::OrderCommand;
use super::status;
pub use super::status::{
    AlertKind, AllocationStrategy, MovementKind, OrderStatus, PurchaseOrderStatus, Severity,
};

/// One product: its catalog settings for restocking and its stock.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProductState {
    /// None while only stock is known (a receipt can come before the
    /// catalog entry is applied).
    pub sku: Option<String>,
    pub low_stock_threshold: i64,
    pub reorder_quantity: i64,
    pub on_hand: i64,
    pub reserved: i64,
    pub received_total: i64,
    pub shipped_total: i64,
    /// The sum of applied adjustments' deltas (counts included).
    pub adjusted_total: i64,
    /// Units customers returned that went back on the shelf.
    pub restocked_total: i64,
    /// How many stock movements the product has had: the number of its
    /// ledger's last row.
    pub movements: i64,
    pub open_purchase_order: Option<PurchaseOrderId>,
    /// Units shipped by transfers and not received yet (all locations).
    pub in_transit: i64,
    /// How many units may wait for stock, sold past zero (0: none).
    pub backorder_limit: i64,
    /// Units backordered orders wait for: not reserved, filled first in,
    /// first out as stock arrives.
    pub backordered: i64,
    /// The stock per location; `on_hand`, `reserved` and `in_transit`
    /// are its sums.
    pub locations: BTreeMap<LocationId, LocationStock>,
    /// The latest event time that changed the figures (Unix milliseconds).
    /// A maximum, so it does not depend on the order of events from
    /// different partitions.
    pub updated_at: i64,
}

impl ProductState {
    /// The stock invariants one product can check alone: 0 ≤ reserved ≤
    /// on_hand, at each location and in total; the totals are the
    /// locations' sums; and on_hand = received − shipped + adjusted +
    /// restocked.
    /// The worker checks them on every product a batch touched before
    /// writing it (the database's CHECK constraints back the first up).
    pub fn stock_bounds(&self) -> Result<(), String> {
        if !(0 <= self.reserved && self.reserved <= self.on_hand) {
            return Err(format!(
                "reserved {} outside 0..={}",
                self.reserved, self.on_hand
            ));
        }
        for (location, stock) in &self.locations {
            if !(0 <= stock.reserved && stock.reserved <= stock.on_hand && stock.in_transit >= 0) {
                return Err(format!(
                    "at location {location}: reserved {} outside 0..={} (in transit {})",
                    stock.reserved, stock.on_hand, stock.in_transit
                ));
            }
        }
        let sums = self.locations.values().fold((0, 0, 0), |(h, r, t), s| {
            (h + s.on_hand, r + s.reserved, t + s.in_transit)
        });
        if sums != (self.on_hand, self.reserved, self.in_transit) {
            return Err(format!(
                "on_hand, reserved, in_transit {:?} are not the locations' sums {sums:?}",
                (self.on_hand, self.reserved, self.in_transit)
            ));
        }
        // Transfers move units between on-hand and in-transit: together
        // they are what the book says.
        let book =
            self.received_total - self.shipped_total + self.adjusted_total + self.restocked_total;
        if self.on_hand + self.in_transit != book {
            return Err(format!(
                "on_hand {} + in transit {} != received {} - shipped {} + adjusted {} + restocked {}",
                self.on_hand,
                self.in_transit,
                self.received_total,
                self.shipped_total,
                self.adjusted_total,
                self.restocked_total
            ));
        }
        Ok(())
    }

    pub fn available(&self) -> i64 {
        self.on_hand - self.reserved
    }
}

/// One line of an order: what was ordered, and how much of it has shipped
/// and come back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineState {
    pub product_id: ProductId,
    pub quantity: i64,
    pub unit_price: Money,
    pub shipped: i64,
    /// Units returned (restocked or damaged); never more than shipped.
    pub returned: i64,
    /// Units not reserved yet: the order waits for them (it is
    /// BACKORDERED). Kept as it was when the order was cancelled.
    pub backordered: i64,
}

impl LineState {
    pub fn unshipped(&self) -> i64 {
        self.quantity - self.shipped
    }

    /// Unshipped units that are reserved (not waiting for stock).
    pub fn allocated_unshipped(&self) -> i64 {
        self.unshipped() - self.backordered
    }

    /// Shipped units not returned yet.
    pub fn returnable(&self) -> i64 {
        self.shipped - self.returned
    }
}

impl From<&OrderLine> for LineState {
    fn from(line: &OrderLine) -> LineState {
        LineState {
            product_id: line.product_id,
            quantity: line.quantity,
            unit_price: line.unit_price,
            shipped: 0,
            returned: 0,
            backordered: 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderState {
    pub customer_email: String,
    pub status: OrderStatus,
    pub lines: Vec<LineState>,
    pub total: Money,
    /// Where its units are reserved (set at confirmation).
    pub allocations: Vec<AllocationState>,
    /// Why it was rejected.
    pub reason: Option<String>,
    /// A cancel arrived while the order was pending: cancel it once decided.
    pub cancel_requested: bool,
    /// A checkout's hold (Unix milliseconds): the order is confirmed as
    /// HELD until then. None for an order placed without one.
    pub hold_until: Option<i64>,
    /// Event times (Unix milliseconds), so a rebuild reproduces them.
    pub placed_at: i64,
    pub decided_at: Option<i64>,
    pub updated_at: i64,
}

impl OrderState {
    /// The units of `line` the order holds reserved: its unshipped ones
    /// while the order is open.
    pub fn reserved_units(&self, line: &LineState) -> i64 {
        if self.status.is_open() {
            line.allocated_unshipped()
        } else {
            0
        }
    }

    /// The units of `line` the order waits for (while it is backordered).
    pub fn waiting_units(&self, line: &LineState) -> i64 {
        if self.status == OrderStatus::Backordered {
            line.backordered
        } else {
            0
        }
    }

    /// The units of `line` sold: ordered, less what a cancel released and
    /// what came back. Revenue and best sellers count these.
    pub fn sold_units(&self, line: &LineState) -> i64 {
        match self.status {
            OrderStatus::Confirmed
            | OrderStatus::Backordered
            | OrderStatus::PartiallyShipped
            | OrderStatus::Shipped => line.quantity - line.returned,
            // Cancelled after some shipped: those stay sold.
            OrderStatus::Cancelled => line.shipped - line.returned,
            // A hold is not a sale until it is committed.
            OrderStatus::Pending
            | OrderStatus::Rejected
            | OrderStatus::Held
            | OrderStatus::Expired => 0,
        }
    }

    /// The value of the units sold, in cents.
    pub fn sold_cents(&self) -> i64 {
        self.lines
            .iter()
            .map(|line| self.sold_units(line) * line.unit_price.cents())
            .sum()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurchaseOrderState {
    pub product_id: ProductId,
    pub quantity: i64,
    /// Where it is to be received (None: the default location).
    pub location_id: Option<LocationId>,
    pub status: PurchaseOrderStatus,
    pub drafted_at: i64,
    pub received_at: Option<i64>,
}

/// An event that cannot apply to the state it meets; the message says why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// The state a batch works on: everything it touches, or (in tests and in
/// rebuild) everything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inventory {
    /// Every location when the batch needs them (it allocates or changes
    /// one); else only the default one.
    pub locations: BTreeMap<LocationId, LocationState>,
    /// How this worker allocates orders (a setting, not state: its
    /// decisions are recorded, so apply never reads it).
    pub strategy: AllocationStrategy,
    /// Whether an expiry request is checked against the order's state
    /// (always, except in a fault test's negative control, which turns
    /// it off to show the test sees a hold expire twice).
    pub checks_expiries: bool,
    pub products: BTreeMap<ProductId, ProductState>,
    pub orders: BTreeMap<OrderId, OrderState>,
    pub purchase_orders: BTreeMap<PurchaseOrderId, PurchaseOrderState>,
    pub transfers: BTreeMap<TransferId, TransferState>,
    /// The stock movements applied, in order, not yet written (the store
    /// takes them after each batch or chunk).
    pub journal: Vec<Movement>,
    /// Per product, the last order of its backorder queue the store loaded
    /// when it loaded only the head of a longer queue: no order beyond it
    /// is filled in this batch (earlier unloaded ones may wait).
    pub queue_horizon: BTreeMap<ProductId, backorders::QueueKey>,
    /// The products orders wait for (`backordered > 0`), kept with the
    /// figures so that looking for fills after each event costs only them.
    pub waiting: BTreeSet<ProductId>,
    /// (product, location, moment) → the on-hand moved there by the
    /// product's movements of a later time that are already written (the
    /// store loads it for a count made at that moment); those in `journal`
    /// are added to it.
    pub moved_since: BTreeMap<(ProductId, LocationId, i64), i64>,
}

impl Default for Inventory {
    /// No products or orders, and the default location.
    fn default() -> Inventory {
        Inventory {
            locations: BTreeMap::from([(LocationId::DEFAULT, LocationState::default_location())]),
            strategy: AllocationStrategy::default(),
            checks_expiries: true,
            products: BTreeMap::new(),
            orders: BTreeMap::new(),
            purchase_orders: BTreeMap::new(),
            transfers: BTreeMap::new(),
            journal: Vec::new(),
            queue_horizon: BTreeMap::new(),
            waiting: BTreeSet::new(),
            moved_since: BTreeMap::new(),
        }
    }
}

impl Inventory {
    /// The projection of one event (see the module comment). `at` is the
    /// event's time in Unix milliseconds.
    pub fn apply(&mut self, event: &DomainEvent, at: i64) -> Result<(), Refused> {
        let cause = Cause::of(event);
        match event {
            DomainEvent::ProductCreated(e) => self.create_product(e, at),
            DomainEvent::StockReceived(e) => self.receive_stock(e, at, &cause),
            DomainEvent::OrderPlaced(e) => {
                self.place_order(e, at);
                Ok(())
            }
            DomainEvent::OrderConfirmed(e) => self.reserve(e, at, &cause),
            DomainEvent::OrderRejected(e) => {
                self.transition(
                    e.order_id,
                    &[OrderStatus::Pending],
                    OrderStatus::Rejected,
                    at,
                )?;
                let order = self
                    .orders
                    .get_mut(&e.order_id)
                    .expect("transitioned above");
                order.reason = Some(e.reason.clone());
                order.decided_at = Some(at);
                Ok(())
            }
            DomainEvent::OrderCancelRequested(e) => {
                // Only a pending order changes: it is cancelled once decided.
                // In any other state the decision (cancelled or refused) is
                // its own event.
                if let Some(order) = self.orders.get_mut(&e.order_id) {
                    if order.status == OrderStatus::Pending {
                        order.cancel_requested = true;
                    }
                }
                Ok(())
            }
            DomainEvent::OrderCancelled(e) => self.cancel(e.order_id, at, &cause),
            DomainEvent::OrderShipped(e) => self.ship(e, at, &cause),
            DomainEvent::OrderReturned(e) => self.take_back(e, at, &cause),
            DomainEvent::PurchaseOrderDrafted(e) => self.draft_purchase_order(e, at),
            DomainEvent::StockAdjusted(e) => self.adjust_stock(e, at, &cause),
            DomainEvent::LocationCreated(e) => self.create_location(e),
            DomainEvent::LocationUpdated(e) => self.update_location(e),
            DomainEvent::TransferRequested(e) => {
                self.request_transfer(e, at);
                Ok(())
            }
            DomainEvent::TransferShipped(e) => self.ship_transfer(e, at, &cause),
            DomainEvent::TransferRefused(e) => self.refuse_transfer(e),
            DomainEvent::TransferReceived(e) => self.receive_transfer(e, at, &cause),
            DomainEvent::OrderCommitted(e) => self.commit(e.order_id, at),
            DomainEvent::ProductPolicySet(e) => self.set_policy(e, at),
            DomainEvent::OrderBackorderFilled(e) => self.fill(e, at, &cause),
            DomainEvent::OrderExpired(e) => self.expire(e.order_id, at, &cause),
            // Commands whose outcome is its own event, and notices that
            // change no state (their rows are written from the event).
            DomainEvent::OrderShipRequested(_)
            | DomainEvent::PurchaseOrderReceived(_)
            | DomainEvent::StockLow(_)
            | DomainEvent::AlertRaised(_)
            | DomainEvent::StockAdjustmentRequested(_)
            | DomainEvent::StockAdjustmentRefused(_)
            | DomainEvent::StockCounted(_)
            | DomainEvent::OrderShipmentRequested(_)
            | DomainEvent::OrderShipmentRefused(_)
            | DomainEvent::OrderReturnRequested(_)
            | DomainEvent::OrderReturnRefused(_)
            | DomainEvent::TransferReceiveRequested(_)
            | DomainEvent::OrderCommitRequested(_)
            | DomainEvent::OrderExpireRequested(_)
            | DomainEvent::OrderExpiryRefused(_)
            | DomainEvent::BackorderFillRequested(_)
            // Subscriptions are rows written from their events.
            | DomainEvent::SubscriptionCreated(_)
            | DomainEvent::SubscriptionPaused(_)
            | DomainEvent::SubscriptionResumed(_)
            | DomainEvent::SubscriptionRewound(_)
            | DomainEvent::SubscriptionDeleted(_) => Ok(()),
        }
    }

    /// A decided adjustment. The decision kept on-hand at or above
    /// reserved; an adjustment from elsewhere that would not is refused.
    fn adjust_stock(&mut self, e: &StockAdjusted, at: i64, cause: &Cause) -> Result<(), Refused> {
        let location = e.location_id.unwrap_or(LocationId::DEFAULT);
        self.product_mut(e.product_id)?;
        let stock = self.stock_at(e.product_id, location);
        let on_hand = stock.on_hand + e.delta;
        if on_hand < stock.reserved {
            return Err(Refused(format!(
                "stock.adjusted of {} by {} would leave on_hand {on_hand} below reserved {} at location {location}",
                e.product_id, e.delta, stock.reserved
            )));
        }
        self.product_mut(e.product_id)?.adjusted_total += e.delta;
        self.move_stock(
            e.product_id,
            location,
            MovementKind::Adjusted,
            (e.delta, 0),
            at,
            cause,
        )
    }

    /// The open orders holding some of a product's stock at a location,
    /// by id.
    pub fn holders_of(&self, product_id: ProductId, location_id: LocationId) -> Vec<OrderId> {
        self.orders
            .iter()
            .filter(|(_, order)| {
                order.status.is_open()
                    && order.allocations.iter().any(|a| {
                        (a.product_id, a.location_id) == (product_id, location_id)
                            && a.unshipped() > 0
                    })
            })
            .map(|(id, _)| *id)
            .collect()
    }

    fn create_product(&mut self, e: &ProductCreated, at: i64) -> Result<(), Refused> {
        let product = self.products.entry(e.product_id).or_default();
        if product.sku.is_some() {
            return Err(Refused(format!("product {} already exists", e.product_id)));
        }
        product.sku = Some(e.sku.clone());
        product.low_stock_threshold = e.low_stock_threshold;
        product.reorder_quantity = e.reorder_quantity;
        product.updated_at = product.updated_at.max(at);
        Ok(())
    }

    fn receive_stock(&mut self, e: &StockReceived, at: i64, cause: &Cause) -> Result<(), Refused> {
        // The gateway never emits these, but the log is an open interface:
        // a receipt that would take stock away is refused.
        if e.quantity <= 0 {
            return Err(Refused(format!(
                "stock.received for {} has quantity {}; it must be positive",
                e.product_id, e.quantity
            )));
        }
        if let Some(po_id) = e.purchase_order_id {
            let po = self.open_purchase_order(po_id, e.product_id)?;
            po.status = PurchaseOrderStatus::Received;
            po.received_at = Some(at);
        }
        let product = self.products.entry(e.product_id).or_default();
        if e.purchase_order_id.is_some() {
            product.open_purchase_order = None;
        }
        product.received_total += e.quantity;
        self.move_stock(
            e.product_id,
            e.location_id.unwrap_or(LocationId::DEFAULT),
            MovementKind::Received,
            (e.quantity, 0),
            at,
            cause,
        )
    }

    /// A second placement of the same order (under another event id)
    /// changes nothing: the first one is the order.
    fn place_order(&mut self, e: &OrderPlaced, at: i64) {
        self.orders.entry(e.order_id).or_insert_with(|| OrderState {
            customer_email: e.customer_email.clone(),
            status: OrderStatus::Pending,
            lines: e.items.iter().map(LineState::from).collect(),
            allocations: Vec::new(),
            total: e.total,
            reason: None,
            cancel_requested: false,
            hold_until: e.hold_until.map(|t| t.timestamp_millis()),
            placed_at: at,
            decided_at: None,
            updated_at: at,
        });
    }

    /// The confirmation: every line's quantity becomes reserved, where the
    /// allocations say (a line drawing from its product's allocations in
    /// order: one ledger row per line and location). An order placed with
    /// a hold is HELD, any other CONFIRMED.
    fn reserve(
        &mut self,
        e: &events::OrderConfirmed,
        at: i64,
        cause: &Cause,
    ) -> Result<(), Refused> {
        let (order_id, recorded) = (e.order_id, e.allocations.as_deref());
        let decided = match (e.hold_until, e.backordered.is_empty()) {
            (Some(_), true) => OrderStatus::Held,
            (None, true) => OrderStatus::Confirmed,
            (None, false) => OrderStatus::Backordered,
            (Some(_), false) => {
                return Err(Refused(format!(
                    "order {order_id} is confirmed both held and backordered; a hold is for stock in hand"
                )))
            }
        };
        let mut lines = self.transition(order_id, &[OrderStatus::Pending], decided, at)?;
        self.mark_backordered(order_id, &mut lines, &e.backordered)?;
        let allocations = Inventory::allocations_of(&lines, recorded);
        for allocation in &allocations {
            let why = match self.locations.get(&allocation.location_id) {
                _ if allocation.quantity <= 0 => Some("not a quantity to allocate"),
                None => Some("an unknown location"),
                Some(location) if !location.active => Some("an inactive location"),
                Some(_) => None,
            };
            if let Some(why) = why {
                return Err(Refused(format!(
                    "order {order_id} allocates {} of {} at location {}: {why}",
                    allocation.quantity, allocation.product_id, allocation.location_id
                )));
            }
            let stock = self.stock_at(allocation.product_id, allocation.location_id);
            if stock.available() < allocation.quantity {
                return Err(Refused(format!(
                    "order {order_id} allocates {} of {} at location {}, which has {} available",
                    allocation.quantity,
                    allocation.product_id,
                    allocation.location_id,
                    stock.available()
                )));
            }
        }
        let mut pools: BTreeMap<ProductId, Vec<(LocationId, i64)>> = BTreeMap::new();
        for a in &allocations {
            pools
                .entry(a.product_id)
                .or_default()
                .push((a.location_id, a.quantity));
        }
        let mut moves = Vec::new();
        for line in &lines {
            let pool = pools.entry(line.product_id).or_default();
            let taken =
                locations::draw(pool, line.quantity - line.backordered).ok_or_else(|| {
                    Refused(format!(
                        "order {order_id}'s allocations of {} do not cover its lines",
                        line.product_id
                    ))
                })?;
            moves.extend(taken.into_iter().map(|(l, q)| (line.product_id, l, q)));
        }
        if pools.values().flatten().any(|&(_, left)| left != 0) {
            return Err(Refused(format!(
                "order {order_id}'s allocations exceed its lines"
            )));
        }
        for (product_id, location_id, quantity) in moves {
            self.move_stock(
                product_id,
                location_id,
                MovementKind::Reserved,
                (0, quantity),
                at,
                cause,
            )?;
        }
        let order = self.orders.get_mut(&order_id).expect("transitioned above");
        order.allocations = allocations;
        order.decided_at = Some(at);
        order.hold_until = e.hold_until.map(|t| t.timestamp_millis());
        Ok(())
    }

    /// A cancel of an open order: what it holds reserved (its unshipped
    /// units) goes back to available.
    fn cancel(&mut self, order_id: OrderId, at: i64, cause: &Cause) -> Result<(), Refused> {
        let lines = self.transition(order_id, &OrderStatus::OPEN, OrderStatus::Cancelled, at)?;
        self.release_unshipped(order_id, &lines, at, cause)
    }

    /// Releases the reservation of each of `lines`' unshipped units, where
    /// the order's allocations hold them (a cancel, an expiry).
    fn release_unshipped(
        &mut self,
        order_id: OrderId,
        lines: &[LineState],
        at: i64,
        cause: &Cause,
    ) -> Result<(), Refused> {
        let order = &self.orders[&order_id];
        let mut pools: BTreeMap<ProductId, Vec<(LocationId, i64)>> = BTreeMap::new();
        let mut moves = Vec::new();
        let mut no_longer_waiting: BTreeMap<ProductId, i64> = BTreeMap::new();
        for line in lines.iter().filter(|l| l.backordered > 0) {
            *no_longer_waiting.entry(line.product_id).or_default() += line.backordered;
        }
        for line in lines.iter().filter(|l| l.allocated_unshipped() > 0) {
            let pool = pools
                .entry(line.product_id)
                .or_insert_with(|| order.unshipped_at(line.product_id));
            let taken = locations::draw(pool, line.allocated_unshipped()).ok_or_else(|| {
                Refused(format!(
                    "order {order_id}'s allocations of {} hold less than its unshipped units",
                    line.product_id
                ))
            })?;
            moves.extend(taken.into_iter().map(|(l, q)| (line.product_id, l, q)));
        }
        for (product_id, location_id, quantity) in moves {
            self.move_stock(
                product_id,
                location_id,
                MovementKind::Released,
                (0, -quantity),
                at,
                cause,
            )?;
        }
        // What the order waited for leaves the queue.
        for (product_id, units) in no_longer_waiting {
            self.product_mut(product_id)?.backordered -= units;
            self.queue_changed(product_id);
        }
        Ok(())
    }

    fn draft_purchase_order(&mut self, e: &PurchaseOrderDrafted, at: i64) -> Result<(), Refused> {
        let product = self.product_mut(e.product_id)?;
        if let Some(open) = product.open_purchase_order {
            return Err(Refused(format!(
                "product {} already has an open purchase order {open}",
                e.product_id
            )));
        }
        product.open_purchase_order = Some(e.purchase_order_id);
        self.purchase_orders.insert(
            e.purchase_order_id,
            PurchaseOrderState {
                product_id: e.product_id,
                quantity: e.quantity,
                location_id: e.location_id,
                status: PurchaseOrderStatus::Open,
                drafted_at: at,
                received_at: None,
            },
        );
        Ok(())
    }

    /// Moves an order from one of `from` to `to`; returns its lines.
    fn transition(
        &mut self,
        order_id: OrderId,
        from: &[OrderStatus],
        to: OrderStatus,
        at: i64,
    ) -> Result<Vec<LineState>, Refused> {
        let order = self.orders.get_mut(&order_id).ok_or_else(|| {
            Refused(format!(
                "order {order_id} is unknown; it cannot become {}",
                to.as_str()
            ))
        })?;
        if !from.contains(&order.status) {
            let from: Vec<&str> = from.iter().map(|s| s.as_str()).collect();
            return Err(Refused(format!(
                "order {order_id} is {}; only a {} order can become {}",
                order.status.as_str(),
                from.join(" or "),
                to.as_str()
            )));
        }
        order.status = to;
        order.updated_at = at;
        // A cancel noted while pending is carried out at the confirmation
        // (which still needs to see it); any later state ends it.
        if !matches!(to, OrderStatus::Confirmed | OrderStatus::Held) {
            order.cancel_requested = false;
        }
        Ok(order.lines.clone())
    }

    fn product_mut(&mut self, product_id: ProductId) -> Result<&mut ProductState, Refused> {
        self.products
            .get_mut(&product_id)
            .ok_or_else(|| Refused(format!("product {product_id} is unknown")))
    }

    fn open_purchase_order(
        &mut self,
        po_id: PurchaseOrderId,
        product_id: ProductId,
    ) -> Result<&mut PurchaseOrderState, Refused> {
        match self.purchase_orders.get_mut(&po_id) {
            Some(po) if po.status == PurchaseOrderStatus::Open && po.product_id == product_id => {
                Ok(po)
            }
            Some(po) if po.product_id != product_id => Err(Refused(format!(
                "purchase order {po_id} is for product {}, not {product_id}",
                po.product_id
            ))),
            Some(_) => Err(Refused(format!(
                "purchase order {po_id} was already received"
            ))),
            None => Err(Refused(format!("purchase order {po_id} is unknown"))),
        }
    }

    /// The business invariants (docs/architecture.md, "Order lifecycle and
    /// restock") that this state can
    /// check on its own (it holds every order of its products): tests run
    /// it after every step.
    pub fn invariant_violations(&self) -> Vec<String> {
        let mut violations = Vec::new();
        let mut confirmed: BTreeMap<ProductId, i64> = BTreeMap::new();
        let mut waiting: BTreeMap<ProductId, i64> = BTreeMap::new();
        let mut held_at: BTreeMap<(ProductId, LocationId), i64> = BTreeMap::new();
        for (id, order) in &self.orders {
            violations.extend(order.allocation_violations(*id));
            if order.status.is_open() {
                for a in &order.allocations {
                    *held_at.entry((a.product_id, a.location_id)).or_default() += a.unshipped();
                }
            }
            for line in &order.lines {
                *confirmed.entry(line.product_id).or_default() += order.reserved_units(line);
                *waiting.entry(line.product_id).or_default() += order.waiting_units(line);
                if !(0 <= line.backordered && line.backordered <= line.unshipped()) {
                    violations.push(format!(
                        "order {id}: a line of {} waits for {} of {} unshipped",
                        line.product_id,
                        line.backordered,
                        line.unshipped()
                    ));
                }
                if !(0 <= line.returned && line.returned <= line.shipped)
                    || line.shipped > line.quantity
                {
                    violations.push(format!(
                        "order {id}: a line of {} has {} ordered, {} shipped, {} returned",
                        line.product_id, line.quantity, line.shipped, line.returned
                    ));
                }
            }
        }
        let mut open_per_product: BTreeMap<ProductId, BTreeSet<PurchaseOrderId>> = BTreeMap::new();
        for (id, po) in &self.purchase_orders {
            if po.status == PurchaseOrderStatus::Open {
                open_per_product
                    .entry(po.product_id)
                    .or_default()
                    .insert(*id);
            }
        }
        let mut last_movement: BTreeMap<ProductId, &Movement> = BTreeMap::new();
        for movement in &self.journal {
            last_movement.insert(movement.product_id, movement);
        }
        for (id, p) in &self.products {
            if let Err(broken) = p.stock_bounds() {
                violations.push(format!("{id}: {broken}"));
            }
            // The ledger's last row equals the figures (when the journal
            // holds the product's movements, as in the tests).
            if let Some(last) = last_movement.get(id) {
                if (last.seq, last.on_hand, last.reserved) != (p.movements, p.on_hand, p.reserved) {
                    violations.push(format!(
                        "{id}: ledger's last row #{} ({}, {}) != figures #{} ({}, {})",
                        last.seq, last.on_hand, last.reserved, p.movements, p.on_hand, p.reserved
                    ));
                }
            }
            for (location, stock) in &p.locations {
                let held = held_at.remove(&(*id, *location)).unwrap_or(0);
                if stock.reserved != held {
                    violations.push(format!(
                        "{id} at {location}: reserved {} != open orders' unshipped allocations {held}",
                        stock.reserved
                    ));
                }
            }
            if !(0 <= p.backordered && p.backordered <= p.backorder_limit) {
                violations.push(format!(
                    "{id}: backordered {} outside 0..={} (its limit)",
                    p.backordered, p.backorder_limit
                ));
            }
            let wait = waiting.get(id).copied().unwrap_or(0);
            if p.backordered != wait {
                violations.push(format!(
                    "{id}: backordered {} != backordered orders' waiting units {wait}",
                    p.backordered
                ));
            }
            // Stock never sits on the shelf while orders wait for it.
            if p.backordered > 0 && self.active_available(*id) > 0 {
                violations.push(format!(
                    "{id}: {} available at active locations while {} units wait",
                    self.active_available(*id),
                    p.backordered
                ));
            }
            let want = confirmed.get(id).copied().unwrap_or(0);
            if p.reserved != want {
                violations.push(format!(
                    "{id}: reserved {} != open orders' unshipped units {want}",
                    p.reserved
                ));
            }
            let open = open_per_product.remove(id).unwrap_or_default();
            if open.len() > 1
                || p.open_purchase_order
                    .map(|o| !open.contains(&o))
                    .unwrap_or(!open.is_empty())
            {
                violations.push(format!(
                    "{id}: open purchase orders {open:?} vs {:?}",
                    p.open_purchase_order
                ));
            }
        }
        // In transit to a location: what shipped transfers carry there.
        let mut carried: BTreeMap<(ProductId, LocationId), i64> = BTreeMap::new();
        for t in self.transfers.values() {
            if t.status == status::TransferStatus::Shipped {
                for line in &t.lines {
                    *carried.entry((line.product_id, t.to)).or_default() += line.quantity;
                }
            }
        }
        for (id, p) in &self.products {
            for (location, stock) in &p.locations {
                let want = carried.remove(&(*id, *location)).unwrap_or(0);
                if stock.in_transit != want {
                    violations.push(format!(
                        "{id} at {location}: in transit {} != shipped transfers' units {want}",
                        stock.in_transit
                    ));
                }
            }
        }
        for ((product, location), units) in carried.into_iter().filter(|(_, u)| *u != 0) {
            violations.push(format!(
                "{product}: transfers carry {units} to {location}, which shows none in transit"
            ));
        }
        for ((product, location), held) in held_at.into_iter().filter(|(_, h)| *h != 0) {
            violations.push(format!(
                "{product}: open orders hold {held} at {location}, where it has no stock"
            ));
        }
        violations
    }
}

impl OrderState {
    /// An order's allocations against its lines: once decided, they cover
    /// every line's units, per product; and what they have shipped is
    /// what the lines have.
    fn allocation_violations(&self, id: OrderId) -> Vec<String> {
        if matches!(self.status, OrderStatus::Pending | OrderStatus::Rejected) {
            return if self.allocations.is_empty() {
                Vec::new()
            } else {
                vec![format!(
                    "order {id} is {} but holds allocations",
                    self.status
                )]
            };
        }
        let mut lines: BTreeMap<ProductId, (i64, i64)> = BTreeMap::new();
        for line in &self.lines {
            let sums = lines.entry(line.product_id).or_default();
            sums.0 += line.quantity - line.backordered;
            sums.1 += line.shipped;
        }
        let mut allocated: BTreeMap<ProductId, (i64, i64)> = BTreeMap::new();
        for a in &self.allocations {
            let sums = allocated.entry(a.product_id).or_default();
            sums.0 += a.quantity;
            sums.1 += a.shipped;
        }
        // A product wholly backordered has no allocation yet.
        lines.retain(|_, sums| *sums != (0, 0));
        allocated.retain(|_, sums| *sums != (0, 0));
        if lines != allocated {
            return vec![format!(
                "order {id}: lines (ordered, shipped) per product {lines:?} != allocations {allocated:?}"
            )];
        }
        self.allocations
            .iter()
            .filter(|a| !(0 <= a.shipped && a.shipped <= a.quantity))
            .map(|a| violations_of_allocation(id, a))
            .collect()
    }
}

fn violations_of_allocation(id: OrderId, a: &AllocationState) -> String {
    format!(
        "order {id}: an allocation of {} at {} has {} shipped of {}",
        a.product_id, a.location_id, a.shipped, a.quantity
    )
}

#[cfg(test)]
mod backorder_tests;
#[cfg(test)]
mod hold_tests;
#[cfg(test)]
mod location_tests;
#[cfg(test)]
mod tests;
