//! The stream processor: reads batches from the log, applies each batch to
//! the read model in one transaction (inbox + effects + outbox), publishes
//! the follow-up events, then acks. See store::projections for the
//! exactly-once argument.

use crate::domain::Envelope;
use crate::store::Store;
use crate::stream::{Delivery, EventLog};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The consumer group of the read-model processor.
pub const PROCESSOR_GROUP: &str = "processor";

#[derive(Debug, Clone)]
pub struct WorkerOptions {
    pub group: String,
    /// Unique per process: Valkey tracks pending entries per consumer.
    pub consumer: String,
    pub batch_size: usize,
    pub batch_wait: Duration,
}

impl WorkerOptions {
    pub fn new(batch_size: usize, batch_wait: Duration) -> WorkerOptions {
        WorkerOptions {
            group: PROCESSOR_GROUP.to_string(),
            consumer: format!(
                "{}-{}-{}",
                hostname(),
                std::process::id(),
                &uuid::Uuid::new_v4().simple().to_string()[..8]
            ),
            batch_size,
            batch_wait,
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

pub async fn run(log: Arc<dyn EventLog>, store: Store, options: WorkerOptions, shutdown: CancellationToken) {
    tracing::info!(consumer = %options.consumer, group = %options.group, log = %log.describe(), database = %store.describe(), "worker started");
    relay_outbox(&*log, &store).await;
    let mut idle_rounds = 0u32;
    while !shutdown.is_cancelled() {
        // The read is not cancelled on shutdown: it returns within
        // batch_wait, and dropping it mid-flight could strand entries that
        // Valkey already marked as delivered to us.
        let batch = match log
            .read_group(&options.group, &options.consumer, options.batch_size, options.batch_wait)
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
    tracing::info!(consumer = %options.consumer, "worker stopped");
}

/// Applies, publishes and acks one batch, retrying transient failures.
/// Returns false if shutdown interrupted it before the ack (the entries stay
/// pending and are redelivered; the inbox makes that harmless).
async fn process_batch(log: &dyn EventLog, store: &Store, options: &WorkerOptions, batch: &[Delivery], shutdown: &CancellationToken) -> bool {
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
    tracing::debug!(applied = outcome.applied, duplicates = outcome.duplicates, failed = outcome.failed, "batch committed");

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
            tracing::info!(count = events.len(), "republishing follow-up events left in the outbox");
            if let Err(e) = publish(log, store, &events).await {
                tracing::warn!(error = %e, "republishing the outbox failed; will retry");
            }
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "reading the outbox failed; will retry"),
    }
}
