//! What keeps a long-running worker's footprint flat: trimming the log
//! entries every consumer group has acked from the partitions it owns, and
//! pruning throughput windows past their retention. Both are amortised (a
//! command per owned partition each second, a prune each minute), never a
//! command per event. With the prune, the stock ledger's self-audit. And the audit of the read model against the log
//! (`log_audit`) at start and after each reconnect, which trimming waits
//! for.

use super::log_audit::{self, LogAudit};
use crate::store::analytics::WindowRetention;
use crate::store::Store;
use crate::stream::{EventLog, Holdings, Partition};
use futures::{FutureExt, StreamExt};
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
    pub audit: LogAudit,
}

impl Housekeeping {
    pub async fn run(self, owned: watch::Receiver<Holdings>, stop: CancellationToken) {
        let mut trim_tick = tokio::time::interval(TRIM_EVERY);
        let mut prune_tick = tokio::time::interval(self.prune_every);
        trim_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        prune_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut reconnects = self.log.reconnects();
        // The first audit covers a failover while no worker was running.
        let mut audit_due = Some(log_audit::now_ms());
        loop {
            // Before any trim: see `log_audit` for why.
            if let Some(moment) = audit_due.take() {
                self.audit.audit_until_done(moment, &stop).await;
            }
            let owned_now: Vec<Partition> = owned.borrow().partitions().collect();
            tokio::select! {
                _ = stop.cancelled() => return,
                heard = reconnects.next() => match heard {
                    Some(()) => {
                        let moment = log_audit::now_ms();
                        // Reconnects come in bursts: let it pass (no trim
                        // meanwhile), then take what is left of it.
                        tokio::select! {
                            _ = stop.cancelled() => return,
                            _ = tokio::time::sleep(log_audit::SETTLE) => {}
                        }
                        while reconnects.next().now_or_never().flatten().is_some() {}
                        audit_due = Some(moment);
                    }
                    None => reconnects = Box::pin(futures::stream::pending()),
                },
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
        self.audit_ledger().await;
    }

    /// The stock ledger's self-audit, on the same worker and beat as the
    /// prune: a full pass over the products' stock rows, cheap next to a
    /// minute of batches.
    async fn audit_ledger(&self) {
        match self.store.audit_ledger().await {
            Ok(audit) => {
                crate::telemetry::metrics::ledger_audited(audit.mismatched);
                if audit.mismatched > 0 {
                    tracing::error!(
                        mismatched = audit.mismatched,
                        products = audit.products,
                        examples = ?audit.examples,
                        "invariant broken: stock ledger's last row is not the product's figures"
                    );
                }
            }
            Err(e) => tracing::warn!(error = %e, "auditing the stock ledger failed; will retry"),
        }
    }
}
