//! StreamStock's integration tests: one test binary, a module per concern,
//! so the crate is linked once for all of them (nextest still runs each
//! test in its own process). `./scripts/test.sh` starts the servers they
//! need; `common` holds the helpers they share, among them `common::Api`,
//! the HTTP client whose endpoint methods answer typed `Reply`s.

#[macro_use]
mod common;

mod adjustments;
mod admission;
mod api_errors;
mod architecture;
mod auth;
mod backorders;
mod crash;
mod dashboard_browser;
mod dashboard_feed;
mod db_outage;
mod decisions;
mod disk_faults;
mod failover;
mod feed;
mod fencing;
mod front_door;
mod fulfilments;
mod gateway_tls;
mod held_connections;
mod holds;
mod idempotency;
mod imports;
mod ledger;
mod lifecycle;
mod load_generator;
mod locations;
mod log_audit;
mod log_conformance;
mod malformed_input;
mod multi_host;
mod openapi;
mod operations;
mod outage;
mod outbox;
mod partition;
mod pg_failover;
mod pipeline;
mod poison;
mod power_loss;
mod product_search;
mod read_your_writes;
mod reference_spellings;
mod replication;
mod retention;
mod split_roles;
mod tls;
mod upgrade;
mod valkey_cluster;
mod webhooks;
