//! Reading a request's outcome with `?wait=N`: re-read the read model until
//! a worker has decided, the wait runs out, or the gateway stops. Shared by
//! adjustments, shipments and returns, whose outcomes are rows a worker
//! completes.

use super::error::ApiError;
use super::AppState;
use std::future::Future;
use std::time::Duration;

/// How long a request waits for a worker to apply what this gateway
/// just created (normally a few batch waits, tens of milliseconds).
pub(super) const APPLIED_WAIT: Duration = Duration::from_secs(5);

/// Longest long-poll a client may ask for.
pub(super) const MAX_WAIT_SECS: u64 = 30;
/// How often a long-poll re-reads the read model.
const POLL_EVERY: Duration = Duration::from_millis(25);

/// Reads with `read` until `decided` holds of the record, `wait` seconds
/// (capped) pass, or the gateway stops; returns the last read. A record
/// not there yet whose id this gateway issued lately (`queued`) is waited
/// for at least APPLIED_WAIT: its request may still be in the log.
pub(super) async fn until_decided<T, F, Fut>(
    state: &AppState,
    wait: Option<u64>,
    queued: bool,
    mut read: F,
    decided: impl Fn(&T) -> bool,
) -> Result<Option<T>, ApiError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>, ApiError>>,
{
    let started = tokio::time::Instant::now();
    let wait = Duration::from_secs(wait.unwrap_or(0).min(MAX_WAIT_SECS));
    let wait_for_missing = if queued { wait.max(APPLIED_WAIT) } else { wait };
    loop {
        let record = read().await?;
        let waited = started.elapsed();
        let done = state.shutdown.is_cancelled()
            || match &record {
                Some(record) => decided(record) || waited >= wait,
                None => waited >= wait_for_missing,
            };
        if done {
            return Ok(record);
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL_EVERY) => {}
            _ = state.shutdown.cancelled() => {}
        }
    }
}
