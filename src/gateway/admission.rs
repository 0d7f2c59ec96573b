//! Admission control on the backlog: the events appended but not yet
//! processed by the workers. The append slots bound what the gateway has in
//! flight toward the log, but a log that takes appends faster than the
//! workers drain it lets the backlog (and every decision's wait, and the
//! log's unacked length) grow with the load offered. So the gateway reads
//! the backlog every `SAMPLE_EVERY` and, while it is above `--max-backlog`,
//! refuses every write at once (503 with Retry-After) instead of taking on
//! work it would decide ever later. It takes writes again once the backlog
//! is back below nine tenths of the bound, so it does not flap at the edge.
//!
//! The backlog may pass the bound by what arrives between two samples; a
//! refused request appended nothing, and nothing accepted is dropped.

use super::error::ApiError;
use crate::stream::{EventLog, PROCESSOR_GROUP};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often the gateway reads the backlog.
const SAMPLE_EVERY: Duration = Duration::from_millis(200);
/// How long one read may take; an unreachable log keeps the last figure
/// (appends fail on their own then).
const SAMPLE_WITHIN: Duration = Duration::from_secs(1);

pub struct Admission {
    max_backlog: u64,
    /// The backlog as last read.
    backlog: AtomicU64,
    refusing: AtomicBool,
}

impl Admission {
    pub fn new(max_backlog: u64) -> Admission {
        Admission {
            max_backlog: max_backlog.max(1),
            backlog: AtomicU64::new(0),
            refusing: AtomicBool::new(false),
        }
    }

    /// Err (503, Retry-After) while the backlog is over the bound.
    pub fn admit(&self) -> Result<(), ApiError> {
        if !self.refusing.load(Ordering::Relaxed) {
            return Ok(());
        }
        metrics::counter!(crate::telemetry::metrics::REQUESTS_SHED, "reason" => "backlog")
            .increment(1);
        Err(ApiError::overloaded(format!(
            "the workers are {} events behind (more than --max-backlog {}); retry shortly",
            self.backlog.load(Ordering::Relaxed),
            self.max_backlog
        )))
    }

    /// Takes in a new reading: refusing above the bound, admitting again
    /// below nine tenths of it.
    fn observe(&self, backlog: u64) {
        self.backlog.store(backlog, Ordering::Relaxed);
        metrics::gauge!(crate::telemetry::metrics::GATEWAY_BACKLOG).set(backlog as f64);
        let was = self.refusing.load(Ordering::Relaxed);
        let now = if was {
            backlog.saturating_mul(10) > self.max_backlog.saturating_mul(9)
        } else {
            backlog > self.max_backlog
        };
        if now != was {
            self.refusing.store(now, Ordering::Relaxed);
            if now {
                tracing::warn!(
                    backlog,
                    max_backlog = self.max_backlog,
                    "the workers are behind: refusing writes until the backlog drains"
                );
            } else {
                tracing::info!(backlog, "the backlog drained: taking writes again");
            }
        }
    }
}

/// Reads `log`'s backlog into `admission` every `SAMPLE_EVERY` until
/// `shutdown`.
pub fn spawn_sampler(
    admission: Arc<Admission>,
    log: Arc<dyn EventLog>,
    shutdown: CancellationToken,
) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(SAMPLE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            match tokio::time::timeout(SAMPLE_WITHIN, log.backlog(PROCESSOR_GROUP)).await {
                Ok(Ok(backlog)) => admission.observe(backlog),
                Ok(Err(e)) => tracing::debug!(error = %e, "cannot read the backlog"),
                Err(_) => tracing::debug!("the backlog did not come in time"),
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_above_the_bound_and_admits_again_below_nine_tenths() {
        let admission = Admission::new(100);
        admission.observe(100);
        assert!(admission.admit().is_ok());
        admission.observe(101);
        assert!(admission.admit().is_err());
        admission.observe(95);
        assert!(admission.admit().is_err(), "still above nine tenths");
        admission.observe(90);
        assert!(admission.admit().is_ok());
    }
}
