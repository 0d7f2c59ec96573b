//! StreamStock: an event-driven inventory system in one binary.
//!
//! - `domain`: money, validated inputs, events, the order decision (pure)
//! - `stream`: the partitioned event log trait and its two backends
//! - `store`: the read model, projections with exactly-once effects
//! - `worker`: the processor loop (batch → transaction → publish → ack)
//! - `gateway`: the HTTP API, WebSocket feed and embedded dashboard
//! - `simulator`: the traffic generator
//! - `config`, `app`, `telemetry`, `shutdown`, `memory`: the binary's edges

pub mod admin;
pub mod app;
pub mod bench;
pub mod config;
pub mod domain;
pub mod gateway;
pub mod memory;
pub mod metrics;
pub mod shutdown;
pub mod simulator;
pub mod store;
pub mod stream;
pub mod telemetry;
pub mod worker;
