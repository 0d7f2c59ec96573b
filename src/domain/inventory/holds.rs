//! Holds: an order placed with a `hold_ttl_s` is confirmed as HELD, its
//! stock reserved until `hold_until`. Payment taken, the client commits it
//! (`order.committed`: CONFIRMED, as any order). Not committed in time,
//! the owner of its partition asks for the expiry (`order.expire_requested`,
//! the clock's decision entering the log) and the worker decides from the
//! order's state and that request alone: `order.expired` (the reservation
//! released) or `order.expiry_refused`. Apply never reads a clock, so a
//! rebuild replays the outcome that was recorded.

use super::{Cause, Inventory, OrderStatus, Refused};
use crate::domain::events::{OrderExpireRequested, OrderExpired, OrderExpiryRefused};
use crate::domain::{DomainEvent, Envelope, OrderId};

impl Inventory {
    /// A held order committed: it is CONFIRMED, its reservation unchanged.
    pub(super) fn commit(&mut self, order_id: OrderId, at: i64) -> Result<(), Refused> {
        self.transition(order_id, &[OrderStatus::Held], OrderStatus::Confirmed, at)?;
        Ok(())
    }

    /// A hold that ran out: the order is EXPIRED and what it reserved is
    /// available again.
    pub(super) fn expire(
        &mut self,
        order_id: OrderId,
        at: i64,
        cause: &Cause,
    ) -> Result<(), Refused> {
        let lines = self.transition(order_id, &[OrderStatus::Held], OrderStatus::Expired, at)?;
        self.release_unshipped(order_id, &lines, at, cause)
    }

    /// Expire the order, or record why not. Only the order's state and the
    /// request are read: the request's own time (when its sender's clock
    /// saw the hold run out) must be at or past the hold, and it must name
    /// the order's hold.
    pub(super) fn decide_expiry(&self, cause: &Envelope, e: &OrderExpireRequested) -> DomainEvent {
        let refuse = |reason: String| {
            DomainEvent::OrderExpiryRefused(OrderExpiryRefused {
                order_id: e.order_id,
                reason,
            })
        };
        let Some(order) = self.orders.get(&e.order_id) else {
            return refuse("no such order".into());
        };
        let asked = e.hold_until.timestamp_millis();
        let requested_at = cause.occurred_at.timestamp_millis();
        if !self.checks_expiries {
            return DomainEvent::OrderExpired(OrderExpired {
                order_id: e.order_id,
            });
        }
        match order.status {
            OrderStatus::Held if order.hold_until != Some(asked) => refuse(format!(
                "the request names a hold until {asked}, the order's runs until {:?}",
                order.hold_until
            )),
            OrderStatus::Held if requested_at < asked => refuse(format!(
                "not due: requested at {requested_at}, the hold runs until {asked}"
            )),
            OrderStatus::Held => DomainEvent::OrderExpired(OrderExpired {
                order_id: e.order_id,
            }),
            OrderStatus::Confirmed
            | OrderStatus::Backordered
            | OrderStatus::PartiallyShipped
            | OrderStatus::Shipped => refuse("it was committed before its hold ran out".into()),
            OrderStatus::Expired => refuse("it has already expired".into()),
            OrderStatus::Cancelled => refuse("it was cancelled".into()),
            OrderStatus::Rejected => refuse("it was rejected".into()),
            OrderStatus::Pending => refuse("it is not decided yet".into()),
        }
    }
}
