//! Start-up that waits: a role started before its database or Valkey (at
//! boot, or by an orchestrator that starts everything at once) retries with
//! backoff and says what it waits for, up to `--startup-timeout`, and only
//! then fails with the last error. Errors that waiting cannot mend (a
//! malformed URL, a partition-count mismatch, a refused password) fail at
//! once.

use super::systemd;
use crate::retry::OUTAGE;
use anyhow::bail;
use std::future::Future;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How long a role waits for its backends, and the signal that stops it.
#[derive(Clone)]
pub struct Startup {
    pub timeout: Duration,
    pub shutdown: CancellationToken,
}

impl Startup {
    /// Runs `attempt` until it succeeds, an error is not `transient`, the
    /// start-up timeout passes (each attempt is also cut off there) or
    /// shutdown begins.
    pub async fn wait_for<T, E, F, Fut>(
        &self,
        what: &str,
        transient: impl Fn(&E) -> bool,
        mut attempt: F,
    ) -> anyhow::Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: std::error::Error + Send + Sync + 'static,
    {
        let started = Instant::now();
        let deadline = started + self.timeout;
        let mut delays = OUTAGE.delays();
        let mut waited = false;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let last_error = match tokio::time::timeout(left, attempt()).await {
                Ok(Ok(value)) => {
                    if waited {
                        tracing::info!(
                            waited_ms = started.elapsed().as_millis() as u64,
                            "{what} answered"
                        );
                    }
                    return Ok(value);
                }
                Ok(Err(e)) if !transient(&e) => return Err(e.into()),
                Ok(Err(e)) => e.to_string(),
                Err(_) => "no answer".to_string(),
            };
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!(
                    "{what} did not answer within {} (--startup-timeout / STREAMSTOCK_STARTUP_TIMEOUT): {last_error}",
                    humantime::format_duration(self.timeout)
                );
            }
            let pause = delays.next().unwrap_or(OUTAGE.max).min(left);
            tracing::warn!(
                error = %last_error,
                retry_in_ms = pause.as_millis() as u64,
                left_s = left.as_secs(),
                "waiting for {what}"
            );
            systemd::status(&format!("waiting for {what}: {last_error}"));
            waited = true;
            tokio::select! {
                _ = self.shutdown.cancelled() => bail!("stopped while waiting for {what}"),
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }
}
