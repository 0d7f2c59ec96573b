//! One retry policy for every role: exponential backoff with a cap, and a
//! stop signal that ends the waiting. Workers wait out a backend outage
//! with it, retry a failing event with it, and the simulator waits for the
//! gateway with it. A leaf: it imports no other module of the crate.
//!
//! The schedule and the retry loop are `backon`'s. A stop interrupts only
//! the waits between attempts, never an attempt in flight (a transaction
//! half-sent or an append half-acknowledged is worse than a late stop).

use backon::{BackoffBuilder, ExponentialBuilder, Retryable};
use std::fmt::Display;
use std::future::Future;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The stop signal came before the work was done. For a worker, whatever
/// it had not acked stays pending in the log and is delivered again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("stopped before the work was done")]
pub struct Stopped;

/// Delays that double from `first` up to `max`, without end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub first: Duration,
    pub max: Duration,
}

/// Waiting out a backend outage: 100 ms doubling to 5 s, so an outage is
/// waited out without hammering the backend, and a short one costs little.
pub const OUTAGE: Backoff = Backoff {
    first: Duration::from_millis(100),
    max: Duration::from_secs(5),
};

impl Backoff {
    fn builder(&self) -> ExponentialBuilder {
        ExponentialBuilder::new()
            .with_min_delay(self.first)
            .with_max_delay(self.max)
            .without_max_times()
    }

    /// The delays in order: first, 2×first, … max, max, …
    pub fn delays(&self) -> impl Iterator<Item = Duration> {
        self.builder().build()
    }

    /// The delay before the next try of something that failed `attempts`
    /// times (counted elsewhere, e.g. across restarts).
    pub fn after_attempts(&self, attempts: u32) -> Duration {
        self.delays()
            .nth(attempts.saturating_sub(1).min(64) as usize)
            .unwrap_or(self.max)
    }

    /// Runs `attempt` until it succeeds, waiting between failures and
    /// logging each as `what`; gives up with `Stopped` once `stop` fires.
    pub async fn until_done<T, E, Fut, F>(
        &self,
        what: &str,
        stop: &CancellationToken,
        attempt: F,
    ) -> Result<T, Stopped>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: Display,
    {
        let wake = stop.clone();
        let keep_going = stop.clone();
        attempt
            .retry(self.builder())
            .sleep(move |delay| {
                let wake = wake.clone();
                async move { pause(delay, &wake).await.unwrap_or(()) }
            })
            .when(move |_| !keep_going.is_cancelled())
            .notify(|error, delay| {
                tracing::warn!(%error, retry_in_ms = delay.as_millis() as u64, "{what} failed; retrying")
            })
            .await
            // Only a stop ends the retries with an error: there is no cap.
            .map_err(|_| Stopped)
    }
}

/// Sleeps `delay`, or less if `stop` fires first.
pub async fn pause(delay: Duration, stop: &CancellationToken) -> Result<(), Stopped> {
    tokio::select! {
        _ = tokio::time::sleep(delay) => Ok(()),
        _ = stop.cancelled() => Err(Stopped),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use tokio::time::Instant;

    #[test]
    fn delays_double_up_to_the_cap() {
        let millis: Vec<u64> = OUTAGE
            .delays()
            .take(8)
            .map(|d| d.as_millis() as u64)
            .collect();
        assert_eq!(millis, vec![100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        let poison = Backoff {
            first: Duration::from_millis(200),
            max: Duration::from_secs(30),
        };
        let after: Vec<u64> = (1..=6)
            .map(|a| poison.after_attempts(a).as_millis() as u64)
            .collect();
        assert_eq!(after, vec![200, 400, 800, 1600, 3200, 6400]);
        assert_eq!(poison.after_attempts(40), Duration::from_secs(30));
    }

    /// Measured on tokio's paused clock: the failures are waited out on
    /// the schedule, and the result comes back.
    #[tokio::test(start_paused = true)]
    async fn retries_until_the_attempt_succeeds() {
        let tries = AtomicU32::new(0);
        let started = Instant::now();
        let stop = CancellationToken::new();
        let done = OUTAGE
            .until_done("the test", &stop, || async {
                match tries.fetch_add(1, Ordering::SeqCst) {
                    0..=2 => Err("not yet"),
                    n => Ok(n),
                }
            })
            .await;
        assert_eq!(done, Ok(3));
        // tokio's timer rounds each sleep up to its next millisecond tick.
        let waited = started.elapsed().as_millis();
        assert!((700..=703).contains(&waited), "waited {waited} ms");
    }

    /// A stop during a wait ends the retries at once, without another try.
    #[tokio::test(start_paused = true)]
    async fn a_stop_ends_the_waiting() {
        let tries = AtomicU32::new(0);
        let stop = CancellationToken::new();
        let trigger = stop.clone();
        let started = Instant::now();
        let (done, ()) = tokio::join!(
            OUTAGE.until_done("the test", &stop, || async {
                tries.fetch_add(1, Ordering::SeqCst);
                Err::<(), _>("down")
            }),
            async move {
                tokio::time::sleep(Duration::from_millis(250)).await;
                trigger.cancel();
            }
        );
        assert_eq!(done, Err(Stopped));
        // Tries at 0, 100 and 300 ms would be three; the stop at 250 ms
        // cuts the third wait short and the retry gives up.
        assert_eq!(started.elapsed().as_millis(), 250);
        assert!(tries.load(Ordering::SeqCst) <= 3);
    }
}
