//! The domain: money, validated inputs, events, the order decision and the
//! inventory state machine (order lifecycle, restock cycle).
//! Pure logic, no I/O: everything here is unit-tested without a database.

pub mod catalog;
pub mod events;
pub mod ids;
pub mod inventory;
pub mod money;
pub mod order;
pub mod order_command;
pub mod payloads;
pub mod status;
pub mod webhooks;

pub use events::{DomainEvent, Envelope, EnvelopeType};
pub use ids::{
    AdjustmentId, LocationId, OrderId, ProductId, PurchaseOrderId, ReturnId, ShipmentId, TransferId,
};
pub use money::Money;
