//! What keeps a long-running worker's footprint flat: trimming the log
//! entries every consumer group has acked from the partitions it owns, and
//! pruning throughput windows past their retention. Both are amortised (a
//! command per owned partition each second, a prune each minute), never a
//! command per event.

use crate::store::analytics::WindowRetention;
use crate::store::Store;
use crate::stream::{EventLog, Holdings, Partition};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// How often acked entries are trimmed from the owned partitions.
const TRIM_EVERY: Duration = Duration::from_secs(1);

pub struct Housekeeping {
    pub log: Arc<dyn EventLog>,
    pub store: Store,
    pub windows: WindowRetention,
    pub prune_every: Duration,
}

impl Housekeeping {
    pub async fn run(self, owned: watch::Receiver<Holdings>, stop: CancellationToken) {
        let mut trim_tick = tokio::time::interval(TRIM_EVERY);
        let mut prune_tick = tokio::time::interval(self.prune_every);
        trim_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        prune_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let owned_now: Vec<Partition> = owned.borrow().partitions().collect();
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = trim_tick.tick() => self.trim(&owned_now).await,
                // One worker prunes: the owner of partition 0.
                _ = prune_tick.tick(), if owned_now.contains(&Partition(0)) => self.prune().await,
            }
        }
    }

    async fn trim(&self, partitions: &[Partition]) {
        if partitions.is_empty() {
            return;
        }
        match self.log.trim(partitions).await {
            Ok(trimmed) => {
                if trimmed.entries > 0 {
                    tracing::debug!(
                        entries = trimmed.entries,
                        bytes = trimmed.bytes,
                        "trimmed acked log entries"
                    );
                    metrics::counter!(crate::telemetry::metrics::LOG_TRIMMED)
                        .increment(trimmed.entries);
                }
            }
            Err(e) => tracing::warn!(error = %e, "trimming the log failed; will retry"),
        }
    }

    async fn prune(&self) {
        match self.store.prune_windows(&self.windows).await {
            Ok(pruned) => {
                metrics::counter!(crate::telemetry::metrics::WINDOWS_PRUNED).increment(pruned);
            }
            Err(e) => tracing::warn!(error = %e, "pruning throughput windows failed; will retry"),
        }
    }
}
