//! `Inventory::handle` and the decisions it makes: what a worker decides
//! live after applying an event (confirm or reject an order, ship, cancel
//! with compensation, low stock, purchase orders, refusals). Each decision
//! is a follow-up event whose id derives from its cause, so deciding again
//! gives the same events.

use super::{Inventory, OrderCommand, OrderStatus, ProductState, PurchaseOrderStatus, Refused};
use crate::domain::events::{
    AlertRaised, Backordered, OrderCancelled, OrderCommitted, OrderConfirmed, OrderPlaced,
    OrderRejected, PurchaseOrderDrafted, PurchaseOrderReceived, StockAdjusted,
    StockAdjustmentRefused, StockAdjustmentRequested, StockCounted, StockLow, StockReceived,
    HELD_BY_NAMED,
};
use crate::domain::order::requested_quantities;
use crate::domain::status::{AdjustmentReason, AdjustmentRefusal, AlertKind, Severity};
use crate::domain::{DomainEvent, Envelope, LocationId, OrderId, ProductId, PurchaseOrderId};
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;
use uuid::Uuid;

/// Fills' ordinals among an event's follow-ups start here, clear of its
/// decisions' (a handful).
const FILL_ORDINALS: usize = 1 << 16;

impl Inventory {
    /// Live processing: applies `event` (whose envelope is `envelope`), then
    /// decides and handles its follow-ups, breadth first. Returns every
    /// follow-up, causes before effects, each with its envelope (ids derived
    /// from the cause, time `now`). On error nothing is to be kept: the
    /// caller discards this state.
    pub fn handle(
        &mut self,
        envelope: &Envelope,
        event: &DomainEvent,
        now: DateTime<Utc>,
    ) -> Result<Vec<(Envelope, DomainEvent)>, Refused> {
        // Availability, before the event, of the products orders wait for:
        // fills lower it, and a crossing they make is a crossing.
        let waiting_before: BTreeMap<ProductId, i64> = self
            .waiting
            .iter()
            .map(|&p| (p, self.products.get(&p).map_or(0, ProductState::available)))
            .collect();
        let mut follow_ups = self.step(envelope, event, now)?;
        let mut next = 0;
        let mut fills = 0;
        let mut crossings_checked = false;
        loop {
            while next < follow_ups.len() {
                let (cause, follow_up) = &follow_ups[next];
                let decided = self.step(cause, follow_up, now)?;
                follow_ups.extend(decided);
                next += 1;
            }
            // The event and every decision it led to applied (each was
            // decided on the state it is applied to): the stock they made
            // available goes to the orders waiting for it, one fill at a
            // time, before the next event can take it.
            let mut due = self.fills_due();
            if due.is_empty() && fills > 0 && !crossings_checked {
                crossings_checked = true;
                due = self.crossings_of_fills(&waiting_before, &follow_ups, envelope);
            }
            if due.is_empty() {
                return Ok(follow_ups);
            }
            for fill in due {
                follow_ups.push((
                    fill.follow_up_of(envelope, FILL_ORDINALS + fills, now),
                    fill,
                ));
                fills += 1;
            }
        }
    }

    /// Applies one event and returns the decisions it calls for.
    fn step(
        &mut self,
        cause: &Envelope,
        event: &DomainEvent,
        now: DateTime<Utc>,
    ) -> Result<Vec<(Envelope, DomainEvent)>, Refused> {
        let before = self.availability_before(event);
        self.apply_enveloped(cause, event)?;
        Ok(self
            .decide(cause, event, &before)
            .into_iter()
            .enumerate()
            .map(|(ordinal, decision)| (decision.follow_up_of(cause, ordinal, now), decision))
            .collect())
    }

    /// Available stock, before an event, of the products whose availability
    /// it can lower (a reservation, an adjustment), to see a threshold
    /// crossing.
    fn availability_before(&self, event: &DomainEvent) -> BTreeMap<ProductId, i64> {
        let available = |id: ProductId| Some((id, self.products.get(&id)?.available()));
        match event {
            DomainEvent::OrderConfirmed(e) => {
                self.orders
                    .get(&e.order_id)
                    .map_or_else(BTreeMap::new, |order| {
                        order
                            .lines
                            .iter()
                            .filter_map(|l| available(l.product_id))
                            .collect()
                    })
            }
            DomainEvent::StockAdjusted(e) => available(e.product_id).into_iter().collect(),
            // Units in transit are available nowhere.
            DomainEvent::TransferShipped(e) => {
                self.transfers
                    .get(&e.transfer_id)
                    .map_or_else(BTreeMap::new, |t| {
                        t.lines
                            .iter()
                            .filter_map(|l| available(l.product_id))
                            .collect()
                    })
            }
            _ => BTreeMap::new(),
        }
    }

    /// The decisions an event calls for, given the state after it.
    fn decide(
        &self,
        cause: &Envelope,
        event: &DomainEvent,
        before: &BTreeMap<ProductId, i64>,
    ) -> Vec<DomainEvent> {
        match event {
            DomainEvent::OrderPlaced(e) => self.decide_placement(e),
            DomainEvent::OrderConfirmed(e) => self.decide_after_reservation(cause, e, before),
            DomainEvent::OrderRejected(e) => vec![alert(
                cause,
                AlertKind::Rejection,
                Severity::Info,
                e.order_id.as_uuid(),
                format!("order {} rejected: {}", e.order_id, e.reason),
            )],
            DomainEvent::OrderCancelRequested(e) => {
                self.decide_command(cause, e.order_id, OrderCommand::Cancel)
            }
            DomainEvent::OrderShipRequested(e) => {
                self.decide_command(cause, e.order_id, OrderCommand::Ship)
            }
            DomainEvent::PurchaseOrderReceived(e) => self.decide_receipt(cause, e),
            DomainEvent::StockAdjustmentRequested(e) => self.decide_adjustment(cause, e),
            DomainEvent::StockCounted(e) => self.decide_count(cause, e),
            // A transit loss follows its transfer's receipt, which put
            // those units on the shelf a moment before: together they
            // never lower availability, so they cross no threshold.
            DomainEvent::StockAdjusted(e) if e.reason == AdjustmentReason::TransitLoss => {
                Vec::new()
            }
            DomainEvent::StockAdjusted(_) | DomainEvent::TransferShipped(_) => {
                self.decide_crossings(cause, before)
            }
            DomainEvent::OrderShipmentRequested(e) => self.decide_shipment(cause, e),
            DomainEvent::OrderReturnRequested(e) => self.decide_return(cause, e),
            DomainEvent::ProductCreated(_)
            | DomainEvent::StockReceived(_)
            | DomainEvent::OrderCancelled(_)
            | DomainEvent::OrderShipped(_)
            | DomainEvent::StockLow(_)
            | DomainEvent::PurchaseOrderDrafted(_)
            | DomainEvent::AlertRaised(_)
            | DomainEvent::StockAdjustmentRefused(_)
            | DomainEvent::OrderShipmentRefused(_)
            | DomainEvent::OrderReturned(_)
            | DomainEvent::OrderReturnRefused(_)
            | DomainEvent::LocationCreated(_)
            | DomainEvent::LocationUpdated(_)
            | DomainEvent::TransferRefused(_)
            | DomainEvent::TransferReceived(_)
            | DomainEvent::SubscriptionCreated(_)
            | DomainEvent::SubscriptionResumed(_)
            | DomainEvent::SubscriptionRewound(_)
            | DomainEvent::SubscriptionDeleted(_) => Vec::new(),
            DomainEvent::SubscriptionPaused(e) if e.automatic => vec![alert(
                cause,
                AlertKind::WebhookFailing,
                Severity::Warning,
                e.subscription_id,
                format!(
                    "webhook subscription {} paused: {}",
                    e.subscription_id,
                    e.reason.as_deref().unwrap_or("its endpoint kept failing")
                ),
            )],
            DomainEvent::SubscriptionPaused(_) => Vec::new(),
            DomainEvent::OrderCommitRequested(e) => {
                self.decide_command(cause, e.order_id, OrderCommand::Commit)
            }
            DomainEvent::OrderExpireRequested(e) => vec![self.decide_expiry(cause, e)],
            DomainEvent::OrderCommitted(_)
            | DomainEvent::OrderExpired(_)
            | DomainEvent::OrderExpiryRefused(_)
            | DomainEvent::ProductPolicySet(_)
            // Fills come after every event (`handle`), this one's too.
            | DomainEvent::BackorderFillRequested(_)
            | DomainEvent::OrderBackorderFilled(_) => Vec::new(),
            DomainEvent::TransferRequested(e) => self.decide_transfer(cause, e),
            DomainEvent::TransferReceiveRequested(e) => self.decide_transfer_receipt(cause, e),
        }
    }

    /// Confirm or reject a new order, all or nothing.
    fn decide_placement(&self, e: &OrderPlaced) -> Vec<DomainEvent> {
        if self.orders[&e.order_id].status != OrderStatus::Pending {
            return Vec::new(); // a repeated placement of a decided order
        }
        let wanted = requested_quantities(e);
        let reject = |reason| {
            vec![DomainEvent::OrderRejected(OrderRejected {
                order_id: e.order_id,
                reason,
            })]
        };
        let sku_of = |id| self.products.get(&id).and_then(|p| p.sku.as_deref());
        if let Some(unknown) = wanted.keys().find(|&&id| sku_of(id).is_none()) {
            return reject(format!("unknown product {unknown}"));
        }
        // What each product can give the order now, and what it lacks:
        // waiting for stock within the product's backorder limit, or the
        // order is rejected. A hold is for stock in hand: it never waits.
        let mut in_stock = BTreeMap::new();
        let mut backordered = Vec::new();
        for (&product_id, &requested) in &wanted {
            let takeable = self.takeable(product_id);
            let short = (requested - takeable).max(0);
            if short > 0 {
                let product = &self.products[&product_id];
                let room = (product.backorder_limit - product.backordered).max(0);
                if e.hold_until.is_some() || short > room {
                    let why = if product.backorder_limit == 0 || e.hold_until.is_some() {
                        String::new()
                    } else {
                        format!(
                            "; {room} more may wait for stock (backorder limit {}, {} waiting)",
                            product.backorder_limit, product.backordered
                        )
                    };
                    return reject(format!(
                        "insufficient stock for {} ({product_id}): requested {requested}, available {takeable}, short by {short}{why}",
                        sku_of(product_id).unwrap_or_default(),
                    ));
                }
                backordered.push(Backordered {
                    product_id,
                    quantity: short,
                });
            }
            if requested > short {
                in_stock.insert(product_id, requested - short);
            }
        }
        match self.allocate(&in_stock, self.strategy) {
            Ok(allocations) => vec![DomainEvent::OrderConfirmed(OrderConfirmed {
                order_id: e.order_id,
                total: e.total,
                allocations: Some(allocations),
                hold_until: e.hold_until,
                backordered,
            })],
            Err(short) => reject(format!(
                "insufficient stock for {} ({}): requested {}, available {}, short by {}",
                sku_of(short.product_id).unwrap_or_default(),
                short.product_id,
                short.requested,
                short.available,
                short.requested - short.available
            )),
        }
    }

    /// After a reservation: low stock (once per crossing) with a purchase
    /// order and an alert, and the cancel that waited for the decision.
    fn decide_after_reservation(
        &self,
        cause: &Envelope,
        e: &OrderConfirmed,
        before: &BTreeMap<ProductId, i64>,
    ) -> Vec<DomainEvent> {
        let mut decisions = self.decide_crossings(cause, before);
        // Units sold past zero need stock: a purchase order for them (and
        // the reorder quantity), unless one is open or was just drafted.
        for b in &e.backordered {
            let drafted = decisions.iter().any(
                |d| matches!(d, DomainEvent::PurchaseOrderDrafted(po) if po.product_id == b.product_id),
            );
            let product = &self.products[&b.product_id];
            if !drafted && product.open_purchase_order.is_none() {
                decisions.extend(self.draft_purchase(cause, b.product_id, product));
            }
        }
        if self.orders[&e.order_id].cancel_requested {
            decisions.push(DomainEvent::OrderCancelled(OrderCancelled {
                order_id: e.order_id,
            }));
        }
        decisions
    }

    /// Low stock for each product whose availability the fills took below
    /// its threshold from at or above it before the event (unless the
    /// event's own decisions already said so).
    fn crossings_of_fills(
        &self,
        before: &BTreeMap<ProductId, i64>,
        follow_ups: &[(Envelope, DomainEvent)],
        cause: &Envelope,
    ) -> Vec<DomainEvent> {
        let already: Vec<ProductId> = follow_ups
            .iter()
            .filter_map(|(_, e)| match e {
                DomainEvent::StockLow(low) => Some(low.product_id),
                _ => None,
            })
            .collect();
        let crossed: BTreeMap<ProductId, i64> = before
            .iter()
            .filter(|(id, _)| !already.contains(id))
            .map(|(&id, &was)| (id, was))
            .collect();
        self.decide_crossings(cause, &crossed)
    }

    /// Low stock for each product whose availability crossed below its
    /// threshold (from `before` to now).
    fn decide_crossings(
        &self,
        cause: &Envelope,
        before: &BTreeMap<ProductId, i64>,
    ) -> Vec<DomainEvent> {
        let mut decisions = Vec::new();
        for (&product_id, &was) in before {
            let product = &self.products[&product_id];
            let threshold = product.low_stock_threshold;
            if was >= threshold && product.available() < threshold {
                decisions.extend(self.decide_restock(cause, product_id, product));
            }
        }
        decisions
    }

    /// An adjustment: applied, or refused (another on-hand than the one
    /// expected, or less than confirmed orders hold: then an alert names
    /// them).
    fn decide_adjustment(
        &self,
        cause: &Envelope,
        e: &StockAdjustmentRequested,
    ) -> Vec<DomainEvent> {
        let asked = Asked {
            adjustment_id: e.adjustment_id,
            product_id: e.product_id,
            reason: e.reason,
            reference: &e.reference,
            note: &e.note,
            expected_on_hand: e.expected_on_hand,
            location_id: e.location_id,
        };
        self.decide_stock_change(cause, &asked, Change::By(e.delta))
    }

    /// A count: its delta against the book as of when it was made, then
    /// decided as an adjustment with reason `cycle_count`.
    fn decide_count(&self, cause: &Envelope, e: &StockCounted) -> Vec<DomainEvent> {
        let asked = Asked {
            adjustment_id: e.adjustment_id,
            product_id: e.product_id,
            reason: AdjustmentReason::CycleCount,
            reference: &e.reference,
            note: &e.note,
            expected_on_hand: e.expected_on_hand,
            location_id: e.location_id,
        };
        let change = Change::Counted {
            counted: e.counted,
            at: e.counted_at,
        };
        self.decide_stock_change(cause, &asked, change)
    }

    /// The book's on-hand of a product at a location as of `at`: today's
    /// less what movements of a later time moved there (written ones,
    /// loaded by the store, and this batch's).
    pub fn on_hand_as_of(&self, product_id: ProductId, location_id: LocationId, at: i64) -> i64 {
        let written = self
            .moved_since
            .get(&(product_id, location_id, at))
            .copied()
            .unwrap_or(0);
        let unwritten: i64 = self
            .journal
            .iter()
            .filter(|m| m.product_id == product_id && m.location_id == location_id && m.at > at)
            .map(|m| m.on_hand_delta)
            .sum();
        self.stock_at(product_id, location_id).on_hand - written - unwritten
    }

    fn decide_stock_change(
        &self,
        cause: &Envelope,
        asked: &Asked,
        change: Change,
    ) -> Vec<DomainEvent> {
        let product = self
            .products
            .get(&asked.product_id)
            .filter(|p| p.sku.is_some());
        let location = asked.location_id.unwrap_or(LocationId::DEFAULT);
        let stock = self.stock_at(asked.product_id, location);
        let (on_hand, reserved) = (stock.on_hand, stock.reserved);
        let (delta, counted) = match change {
            Change::By(delta) => (delta, None),
            Change::Counted { counted, at } => (
                counted - self.on_hand_as_of(asked.product_id, location, at),
                Some(counted),
            ),
        };
        let refused = |refusal, held_by: Vec<OrderId>, message: String| {
            DomainEvent::StockAdjustmentRefused(StockAdjustmentRefused {
                location_id: asked.location_id,
                adjustment_id: asked.adjustment_id,
                product_id: asked.product_id,
                delta,
                reason: asked.reason,
                refusal,
                on_hand,
                reserved,
                held_by,
                message,
            })
        };
        let Some(product) = product else {
            let message = format!("product {} is unknown", asked.product_id);
            return vec![refused(
                AdjustmentRefusal::UnknownProduct,
                Vec::new(),
                message,
            )];
        };
        if let Some(expected) = asked.expected_on_hand.filter(|&x| x != on_hand) {
            let message = format!("on_hand is {on_hand}, not the {expected} expected");
            return vec![refused(
                AdjustmentRefusal::OnHandChanged,
                Vec::new(),
                message,
            )];
        }
        if on_hand + delta < reserved {
            let holders = self.holders_of(asked.product_id, location);
            let named: Vec<OrderId> = holders.iter().copied().take(HELD_BY_NAMED).collect();
            let mut orders = named
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ");
            if holders.len() > named.len() {
                orders.push_str(" and others");
            }
            let what = match counted {
                Some(counted) => format!("a count of {counted} (a change of {delta})"),
                None => format!("a change of {delta}"),
            };
            let message = format!(
                "{what} to {} would leave on_hand {} below the {reserved} reserved by confirmed orders: {orders}",
                product.sku.as_deref().unwrap_or_default(),
                on_hand + delta,
            );
            return vec![
                refused(AdjustmentRefusal::BelowReserved, named, message.clone()),
                alert(
                    cause,
                    AlertKind::AdjustmentBelowReserved,
                    Severity::Warning,
                    asked.product_id.as_uuid(),
                    message,
                ),
            ];
        }
        vec![DomainEvent::StockAdjusted(StockAdjusted {
            location_id: asked.location_id,
            adjustment_id: asked.adjustment_id,
            product_id: asked.product_id,
            delta,
            reason: asked.reason,
            reference: asked.reference.clone(),
            note: asked.note.clone(),
            counted,
        })]
    }

    /// A product's available stock crossed below its threshold.
    fn decide_restock(
        &self,
        cause: &Envelope,
        product_id: ProductId,
        product: &ProductState,
    ) -> Vec<DomainEvent> {
        let threshold = product.low_stock_threshold;
        let sku = product.sku.clone().unwrap_or_default();
        let mut decisions = vec![DomainEvent::StockLow(StockLow {
            product_id,
            sku: sku.clone(),
            available: product.available(),
            threshold,
        })];
        let mut message = format!(
            "{sku}: available {} fell below the threshold {threshold}",
            product.available()
        );
        if product.open_purchase_order.is_none() {
            if let Some(drafted) = self.draft_purchase(cause, product_id, product) {
                if let DomainEvent::PurchaseOrderDrafted(po) = &drafted {
                    message.push_str(&format!(
                        "; purchase order {} drafted for {}",
                        po.purchase_order_id, po.quantity
                    ));
                }
                decisions.push(drafted);
            }
        }
        decisions.push(alert(
            cause,
            AlertKind::LowStock,
            Severity::Warning,
            product_id.as_uuid(),
            message,
        ));
        decisions
    }

    /// A purchase order for the product's reorder quantity and the units
    /// its backordered orders wait for (none when both are zero).
    fn draft_purchase(
        &self,
        cause: &Envelope,
        product_id: ProductId,
        product: &ProductState,
    ) -> Option<DomainEvent> {
        let quantity = product.reorder_quantity + product.backordered;
        (quantity > 0).then(|| {
            DomainEvent::PurchaseOrderDrafted(PurchaseOrderDrafted {
                purchase_order_id: PurchaseOrderId(Uuid::new_v5(
                    &cause.event_id,
                    format!("purchase-order/{product_id}").as_bytes(),
                )),
                product_id,
                quantity,
                location_id: self.receiving_location(),
            })
        })
    }

    /// A cancel or ship request: carried out, or refused with the reason.
    fn decide_command(
        &self,
        cause: &Envelope,
        order_id: OrderId,
        command: OrderCommand,
    ) -> Vec<DomainEvent> {
        let verb = command.verb();
        let why = match self.orders.get(&order_id) {
            None => "no such order",
            Some(order) => match command.refusal(order.status) {
                Some(why) => why,
                // Pending: apply() noted the cancel; the confirmation will
                // carry it out.
                None if order.status == OrderStatus::Pending => return Vec::new(),
                None => {
                    return vec![match command {
                        OrderCommand::Cancel => {
                            DomainEvent::OrderCancelled(OrderCancelled { order_id })
                        }
                        OrderCommand::Ship => self.decide_ship_all(cause, order_id),
                        OrderCommand::Commit => {
                            DomainEvent::OrderCommitted(OrderCommitted { order_id })
                        }
                    }]
                }
            },
        };
        vec![refusal(
            cause,
            order_id.as_uuid(),
            format!("cannot {verb} order {order_id}: {why}"),
        )]
    }

    /// A supplier's delivery: the stock comes in, or the receipt is refused.
    fn decide_receipt(&self, cause: &Envelope, e: &PurchaseOrderReceived) -> Vec<DomainEvent> {
        let id = e.purchase_order_id;
        let message = match self.purchase_orders.get(&id) {
            Some(po) if po.status == PurchaseOrderStatus::Open && po.product_id == e.product_id => {
                return vec![DomainEvent::StockReceived(StockReceived {
                    location_id: e.location_id.or(po.location_id),
                    product_id: po.product_id,
                    quantity: po.quantity,
                    purchase_order_id: Some(id),
                })];
            }
            Some(po) if po.product_id != e.product_id => {
                format!("purchase order {id} is not for product {}", e.product_id)
            }
            Some(_) => format!("purchase order {id} was already received"),
            None => format!("cannot receive purchase order {id}: no such purchase order"),
        };
        vec![refusal(cause, id.as_uuid(), message)]
    }
}

/// A command that the state does not allow, recorded with its reason.
pub(super) fn refusal(cause: &Envelope, subject: Uuid, message: String) -> DomainEvent {
    alert(
        cause,
        AlertKind::CommandRefused,
        Severity::Warning,
        subject,
        message,
    )
}

/// An alert decided in answer to `cause`; its id derives from the cause, so
/// deciding again gives the same alert.
fn alert(
    cause: &Envelope,
    kind: AlertKind,
    severity: Severity,
    subject: Uuid,
    message: String,
) -> DomainEvent {
    DomainEvent::AlertRaised(AlertRaised {
        alert_id: Uuid::new_v5(
            &cause.event_id,
            format!("alert/{kind}/{subject}").as_bytes(),
        ),
        kind,
        severity,
        subject: subject.to_string(),
        message,
    })
}

/// An adjustment or a count as asked for.
struct Asked<'a> {
    adjustment_id: crate::domain::AdjustmentId,
    product_id: ProductId,
    reason: AdjustmentReason,
    reference: &'a Option<String>,
    note: &'a Option<String>,
    expected_on_hand: Option<i64>,
    /// None: the default location.
    location_id: Option<LocationId>,
}

/// How on-hand is to change: by a delta, or to what a count found.
enum Change {
    By(i64),
    Counted { counted: i64, at: i64 },
}
