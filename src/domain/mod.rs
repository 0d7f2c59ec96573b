//! The domain: money, validated inputs, events and the order decision.
//! Pure logic, no I/O: everything here is unit-tested without a database.

pub mod catalog;
pub mod events;
pub mod money;
pub mod order;

pub use events::{DomainEvent, Envelope};
pub use money::Money;
