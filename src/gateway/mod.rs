//! The HTTP gateway: validates commands, appends them as events, answers at
//! once; serves reads from the read model, the live dashboard over a
//! WebSocket, and the embedded React app.

mod adjustments;
mod admission;
mod assets;
pub mod auth;
mod backorders;
pub mod catalog;
mod csv_download;
mod dashboard;
pub mod error;
mod extract;
mod feed;
mod front_door;
mod fulfilments;
pub mod idempotency;
pub mod imports;
mod ledger;
mod locations;
mod long_poll;
pub mod openapi;
mod operations;
mod order_watch;
mod orders;
pub mod probes;
mod products;
pub mod responses;
mod restock;
mod router;
pub mod simulator_control;
mod state;
mod subscriptions;
mod transfers;
pub mod write_ids;

pub use dashboard::{Snapshot, Stats};
pub use extract::{page_limit, ApiJson, ApiPath, ApiQuery, Paging, StatusFilter};
pub use operations::{PurgeOutcome, ReplayOutcome};
pub use router::{documented_routes, openapi_document, router, trim_api_trailing_slash};
pub use state::{Access, AppState, Gateway, Limits};
