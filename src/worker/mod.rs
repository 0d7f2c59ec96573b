//! The stream processor: reads batches from the log, applies each batch to
//! the read model in one transaction (inbox + effects + outbox), publishes
//! the follow-up events, then acks. See store::projections for the
//! exactly-once argument.

mod ownership;

use crate::app::LogBackend;
use crate::config::ProcessingArgs;
use crate::domain::Envelope;
use crate::store::Store;
use crate::stream::{Delivery, EventLog};
use ownership::Ownership;
use std::collections::BTreeSet;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// The consumer group of the read-model processor.
pub const PROCESSOR_GROUP: &str = "processor";

#[derive(Debug, Clone)]
pub struct WorkerOptions {
    pub group: String,
    /// Unique per process: Valkey tracks pending entries per consumer, and
    /// leases name their holder.
    pub consumer: String,
    pub batch_size: usize,
    pub batch_wait: Duration,
    pub lease_ttl: Duration,
}

impl WorkerOptions {
    pub fn new(args: &ProcessingArgs) -> WorkerOptions {
        WorkerOptions {
            group: PROCESSOR_GROUP.to_string(),
            consumer: format!(
                "{}-{}-{}",
                hostname(),
                std::process::id(),
                &uuid::Uuid::new_v4().simple().to_string()[..8]
            ),
            batch_size: args.batch_size as usize,
            batch_wait: args.batch_wait(),
            lease_ttl: args.lease_ttl(),
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "worker".to_string())
}

/// Retry delays: 100 ms doubling to 5 s, so an outage is waited out without
/// hammering the backend.
struct Backoff(Duration);

impl Backoff {
    fn new() -> Backoff {
        Backoff(Duration::from_millis(100))
    }
    async fn wait(&mut self, shutdown: &CancellationToken) -> bool {
        let delay = self.0;
        self.0 = (self.0 * 2).min(Duration::from_secs(5));
        tokio::select! {
            _ = tokio::time::sleep(delay) => true,
            _ = shutdown.cancelled() => false,
        }
    }
}

pub async fn run(
    backend: LogBackend,
    store: Store,
    options: WorkerOptions,
    shutdown: CancellationToken,
) {
    let log = backend.log;
    tracing::info!(consumer = %options.consumer, group = %options.group, log = %log.describe(), database = %store.describe(), "worker started");
    let ownership = Ownership {
        leases: backend.leases,
        group: options.group.clone(),
        member: options.consumer.clone(),
        partitions: log.partitions(),
        ttl: options.lease_ttl,
    };
    let (owned_tx, mut owned_rx) = watch::channel(BTreeSet::new());
    // The coordinator outlives the processing loop by design: it stops only
    // after the last batch is acked, then hands the leases back.
    let stop_coordinator = CancellationToken::new();
    let coordinator = {
        let stop = stop_coordinator.clone();
        let ownership = ownership.clone();
        tokio::spawn(async move { ownership.run(owned_tx, stop).await })
    };

    relay_outbox(&*log, &store).await;
    let mut processing: BTreeSet<u32> = BTreeSet::new();
    let mut idle_rounds = 0u32;
    while !shutdown.is_cancelled() {
        let owned = owned_rx.borrow_and_update().clone();
        if owned != processing {
            tracing::info!(partitions = ?owned, "processing partitions");
        }
        // A partition just acquired may hold entries its previous owner read
        // but never acked: they come first, in log order.
        for &p in owned.difference(&processing) {
            match log.take_over(&options.group, &options.consumer, p).await {
                Ok(left_over) if !left_over.is_empty() => {
                    tracing::info!(
                        partition = p,
                        entries = left_over.len(),
                        "taking over unacked entries"
                    );
                    for chunk in left_over.chunks(options.batch_size) {
                        if !process_batch(&*log, &store, &options, chunk, &shutdown).await {
                            break;
                        }
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(partition = p, error = %e, "taking over unacked entries failed; they stay pending")
                }
            }
        }
        processing = owned;
        if processing.is_empty() {
            // Nothing to do until the coordinator hands us a partition.
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = owned_rx.changed() => {}
                _ = tokio::time::sleep(options.batch_wait) => {}
            }
            continue;
        }
        let partitions: Vec<u32> = processing.iter().copied().collect();
        // The read is not cancelled on shutdown: it returns within
        // batch_wait, and dropping it mid-flight could strand entries that
        // Valkey already marked as delivered to us.
        let batch = match log
            .read_group(
                &options.group,
                &options.consumer,
                &partitions,
                options.batch_size,
                options.batch_wait,
            )
            .await
        {
            Ok(batch) => batch,
            Err(e) => {
                tracing::warn!(error = %e, "reading the log failed; retrying");
                if !Backoff::new().wait(&shutdown).await {
                    break;
                }
                continue;
            }
        };
        if batch.is_empty() {
            idle_rounds += 1;
            // Leftovers of a crash between commit and publish, checked when
            // there is nothing else to do.
            if idle_rounds % 5 == 0 {
                relay_outbox(&*log, &store).await;
            }
            continue;
        }
        idle_rounds = 0;
        if !process_batch(&*log, &store, &options, &batch, &shutdown).await {
            break;
        }
    }
    stop_coordinator.cancel();
    let owned = coordinator.await.unwrap_or_default();
    ownership.release_all(&owned).await;
    tracing::info!(consumer = %options.consumer, "worker stopped");
}

/// Applies, publishes and acks one batch, retrying transient failures.
/// Returns false if shutdown interrupted it before the ack (the entries stay
/// pending and are redelivered; the inbox makes that harmless).
async fn process_batch(
    log: &dyn EventLog,
    store: &Store,
    options: &WorkerOptions,
    batch: &[Delivery],
    shutdown: &CancellationToken,
) -> bool {
    let mut backoff = Backoff::new();
    let outcome = loop {
        match store.apply_batch(&options.group, batch).await {
            Ok(outcome) => break outcome,
            Err(e) => {
                if e.is_transient() {
                    tracing::warn!(error = %e, size = batch.len(), "applying a batch failed; retrying");
                } else {
                    tracing::error!(error = %e, size = batch.len(), "applying a batch failed; retrying");
                }
                if !backoff.wait(shutdown).await {
                    return false;
                }
            }
        }
    };
    tracing::debug!(
        applied = outcome.applied,
        duplicates = outcome.duplicates,
        failed = outcome.failed,
        "batch committed"
    );

    // Publishing is retried even during shutdown for a short while: the
    // follow-ups are safe in the outbox either way.
    let mut backoff = Backoff::new();
    while let Err(e) = publish(log, store, &outcome.follow_ups).await {
        tracing::warn!(error = %e, "publishing follow-up events failed; retrying");
        if !backoff.wait(shutdown).await {
            return false;
        }
    }
    let ids: Vec<_> = batch.iter().map(|d| (d.partition, d.id)).collect();
    let mut backoff = Backoff::new();
    while let Err(e) = log.ack(&options.group, &ids).await {
        tracing::warn!(error = %e, "acking a batch failed; retrying");
        if !backoff.wait(shutdown).await {
            return false;
        }
    }
    true
}

async fn publish(log: &dyn EventLog, store: &Store, events: &[Envelope]) -> anyhow::Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let appends = events.iter().map(|e| log.append(e));
    for result in futures::future::join_all(appends).await {
        result?;
    }
    store.remove_from_outbox(events).await?;
    Ok(())
}

async fn relay_outbox(log: &dyn EventLog, store: &Store) {
    match store.pending_outbox(1000).await {
        Ok(events) if !events.is_empty() => {
            tracing::info!(
                count = events.len(),
                "republishing follow-up events left in the outbox"
            );
            if let Err(e) = publish(log, store, &events).await {
                tracing::warn!(error = %e, "republishing the outbox failed; will retry");
            }
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "reading the outbox failed; will retry"),
    }
}
