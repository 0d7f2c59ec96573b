//! StreamStock: an event-driven inventory system in one binary.
//!
//! The layers, each importing only those above it in this list (see
//! docs/architecture.md; `tests/architecture.rs` checks it):
//!
//! - `telemetry`: logging, metric names and secret redaction (a leaf)
//! - `domain`: money, validated inputs, events, the order decision (pure, no I/O)
//! - `stream`: the partitioned event log trait, its two backends, leases
//! - `store`: the read model, projections with exactly-once effects
//! - `worker`: the processor (batch → transaction → publish → ack)
//! - `gateway`: the HTTP API, WebSocket feed, probes and embedded dashboard
//! - `simulator`: the traffic generator, an HTTP client of the gateway
//! - `cli`: settings from flags and environment, the roles and commands
//!
//! Leaves that any layer may use, importing nothing:
//! - `retry`: the one backoff policy and retry loop, interrupted by a stop
//! - `shutdown`: the signal handler that cancels every role
//! - `memory`: allocator limits and returning freed memory to the OS
//! - `faults`: the faults the tests' negative controls inject (debug
//!   builds only)

pub mod cli;
pub mod domain;
pub mod faults;
pub mod gateway;
pub mod http_server;
pub mod memory;
pub mod retry;
pub mod shutdown;
pub mod simulator;
pub mod store;
pub mod stream;
pub mod telemetry;
pub mod worker;
