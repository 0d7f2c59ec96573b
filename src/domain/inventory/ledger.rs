//! The stock ledger: every change of a product's on-hand or reserved is a
//! movement, recorded by `Inventory::apply` as it applies the event, with
//! the figures after it and its cause. The live worker and `rebuild` apply
//! the same events in the same order, so they record the same movements.

use super::{Inventory, MovementKind};
use crate::domain::events::EventType;
use crate::domain::status::AdjustmentReason;
use crate::domain::{
    AdjustmentId, DomainEvent, Envelope, LocationId, OrderId, ProductId, PurchaseOrderId,
};
use uuid::Uuid;

/// What caused a movement: the event, and the order, purchase order or
/// adjustment it belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cause {
    pub event_type: EventType,
    pub order_id: Option<OrderId>,
    pub purchase_order_id: Option<PurchaseOrderId>,
    pub adjustment_id: Option<AdjustmentId>,
    pub reason: Option<AdjustmentReason>,
}

impl Cause {
    pub fn of(event: &DomainEvent) -> Cause {
        let mut cause = Cause {
            event_type: event.kind(),
            order_id: None,
            purchase_order_id: None,
            adjustment_id: None,
            reason: None,
        };
        match event {
            DomainEvent::StockReceived(e) => cause.purchase_order_id = e.purchase_order_id,
            DomainEvent::OrderConfirmed(e) => cause.order_id = Some(e.order_id),
            DomainEvent::OrderCancelled(e) => cause.order_id = Some(e.order_id),
            DomainEvent::OrderShipped(e) => cause.order_id = Some(e.order_id),
            DomainEvent::OrderReturned(e) => cause.order_id = Some(e.order_id),
            DomainEvent::StockAdjusted(e) => {
                cause.adjustment_id = Some(e.adjustment_id);
                cause.reason = Some(e.reason);
            }
            _ => {}
        }
        cause
    }
}

/// One row of a product's ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Movement {
    pub product_id: ProductId,
    /// Where the stock moved.
    pub location_id: LocationId,
    /// The product's movement number: 1, 2, ... in the order applied.
    pub seq: i64,
    /// The event's time (Unix milliseconds).
    pub at: i64,
    pub kind: MovementKind,
    pub on_hand_delta: i64,
    pub reserved_delta: i64,
    /// The product's figures (its totals over every location) after the
    /// movement.
    pub on_hand: i64,
    pub reserved: i64,
    pub cause: Cause,
    /// The event that moved the stock (nil until `apply_enveloped` names it).
    pub event_id: Uuid,
}

impl Inventory {
    /// `apply`, naming the event in the movements it records.
    pub fn apply_enveloped(
        &mut self,
        envelope: &Envelope,
        event: &DomainEvent,
    ) -> Result<(), super::Refused> {
        let from = self.journal.len();
        self.apply(event, envelope.occurred_at.timestamp_millis())?;
        for movement in &mut self.journal[from..] {
            movement.event_id = envelope.event_id;
        }
        Ok(())
    }

    /// Records a movement of `product_id` at `location_id` (already
    /// changed by `deltas`: on-hand, reserved).
    pub(super) fn record(
        &mut self,
        product_id: ProductId,
        location_id: LocationId,
        kind: MovementKind,
        (on_hand_delta, reserved_delta): (i64, i64),
        at: i64,
        cause: &Cause,
    ) {
        let product = self
            .products
            .get_mut(&product_id)
            .expect("a movement of a product the state holds");
        product.movements += 1;
        self.journal.push(Movement {
            product_id,
            location_id,
            seq: product.movements,
            at,
            kind,
            on_hand_delta,
            reserved_delta,
            on_hand: product.on_hand,
            reserved: product.reserved,
            cause: *cause,
            event_id: Uuid::nil(),
        });
    }
}
