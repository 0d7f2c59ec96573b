//! The commands an order accepts after its decision (cancel, ship): when
//! each is allowed, the event that asks for it and the one that records it.

use super::events::{OrderCancelRequested, OrderShipRequested};
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
}

impl OrderCommand {
    pub fn verb(self) -> &'static str {
        match self {
            OrderCommand::Cancel => "cancel",
            OrderCommand::Ship => "ship",
        }
    }

    /// Why the command is refused for an order in `status`; None when it is
    /// allowed. A cancel is allowed while the order holds a reservation
    /// (confirmed, or partly shipped: what did not ship is released) and
    /// while pending (it is carried out once decided). A ship ships every
    /// unit not shipped yet.
    pub fn refusal(self, status: OrderStatus) -> Option<&'static str> {
        match (self, status) {
            (
                OrderCommand::Cancel,
                OrderStatus::Pending | OrderStatus::Confirmed | OrderStatus::PartiallyShipped,
            ) => None,
            (OrderCommand::Cancel, OrderStatus::Rejected) => {
                Some("it was rejected, so nothing is reserved")
            }
            (OrderCommand::Cancel, OrderStatus::Cancelled) => Some("it is already cancelled"),
            (OrderCommand::Ship, OrderStatus::Confirmed | OrderStatus::PartiallyShipped) => None,
            (OrderCommand::Ship, OrderStatus::Pending) => Some("it is not decided yet"),
            (OrderCommand::Ship, OrderStatus::Rejected) => Some("it was rejected"),
            (OrderCommand::Ship, OrderStatus::Cancelled) => Some("it was cancelled"),
            (_, OrderStatus::Shipped) => Some("it has already shipped"),
        }
    }

    /// The event that asks the worker to carry the command out.
    pub fn request(self, order_id: OrderId) -> DomainEvent {
        match self {
            OrderCommand::Cancel => {
                DomainEvent::OrderCancelRequested(OrderCancelRequested { order_id })
            }
            OrderCommand::Ship => DomainEvent::OrderShipRequested(OrderShipRequested { order_id }),
        }
    }
}
