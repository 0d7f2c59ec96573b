//! The commands an order accepts after its decision (cancel, ship, commit a
//! hold): when each is allowed, the event that asks for it and the one that
//! records it.

use super::events::{OrderCancelRequested, OrderCommitRequested, OrderShipRequested};
use super::status::OrderStatus;
use super::{DomainEvent, OrderId};

/// A command on an order that the worker decides (the gateway checks it
/// first against the read model, with the same rules).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum OrderCommand {
    Cancel,
    Ship,
    /// Payment taken for a held order: it becomes CONFIRMED.
    Commit,
}

impl OrderCommand {
    pub fn verb(self) -> &'static str {
        match self {
            OrderCommand::Cancel => "cancel",
            OrderCommand::Ship => "ship",
            OrderCommand::Commit => "commit",
        }
    }

    /// Why the command is refused for an order in `status`; None when it is
    /// allowed. A cancel is allowed while the order holds a reservation
    /// (confirmed, or partly shipped: what did not ship is released) and
    /// while pending (it is carried out once decided). A ship ships every
    /// unit not shipped yet, of a committed order. A commit confirms a
    /// held order, only while its hold lasts.
    pub fn refusal(self, status: OrderStatus) -> Option<&'static str> {
        use OrderStatus::*;
        match (self, status) {
            (OrderCommand::Cancel, Pending | Held | Backordered | Confirmed | PartiallyShipped) => {
                None
            }
            (OrderCommand::Ship, Confirmed | PartiallyShipped) => None,
            (OrderCommand::Commit, Held) => None,
            (_, Pending) => Some("it is not decided yet"),
            (_, Rejected) => Some("it was rejected, so nothing is reserved"),
            (OrderCommand::Cancel, Cancelled) => Some("it is already cancelled"),
            (_, Cancelled) => Some("it was cancelled"),
            (OrderCommand::Commit, Expired) => {
                Some("its hold expired before the commit and its stock was released; place the order again")
            }
            (_, Expired) => Some("its hold expired, so nothing is reserved"),
            (OrderCommand::Ship, Held) => Some("it is held: commit it (payment taken) first"),
            (OrderCommand::Ship, Backordered) => {
                Some("it waits for stock (backordered): it ships once every unit is reserved")
            }
            (OrderCommand::Commit, Backordered) => Some("it is not held"),
            (OrderCommand::Commit, Confirmed | PartiallyShipped | Shipped) => {
                Some("it is already confirmed")
            }
            (_, Shipped) => Some("it has already shipped"),
        }
    }

    /// The event that asks the worker to carry the command out.
    pub fn request(self, order_id: OrderId) -> DomainEvent {
        match self {
            OrderCommand::Cancel => {
                DomainEvent::OrderCancelRequested(OrderCancelRequested { order_id })
            }
            OrderCommand::Ship => DomainEvent::OrderShipRequested(OrderShipRequested { order_id }),
            OrderCommand::Commit => {
                DomainEvent::OrderCommitRequested(OrderCommitRequested { order_id })
            }
        }
    }
}
