//! The stream processor: reads batches from the log, applies each batch to
//! the read model in one transaction (archive/inbox + effects + outbox),
//! publishes the follow-up events, then acks. See store::projections for
//! the exactly-once argument.
//!
//! - `pipeline`: the three stages (read → apply → publish & ack) and their
//!   channels; `apply` and `publish` the work of the last two
//! - `ownership`: the partition leases; `housekeeping`: trimming the log
//!   and pruning throughput windows; `recent`: follow-ups committed lately
//! - `sweep`: asking for the expiry of holds that ran out, and for the
//!   backorder queues that stock could fill to be taken up
//! - `log_audit`: finding events the read model applied and the log lost
//! - `deliverer`: the webhooks of the subscriptions its partitions own

mod apply;
pub mod deliverer;
#[cfg(test)]
mod fencing_tests;
mod housekeeping;
mod log_audit;
mod ownership;
mod pipeline;
mod publish;
mod recent;
pub mod sweep;

use crate::store::analytics::WindowRetention;
use crate::store::Store;
use crate::stream::{Consumer, Holdings, LogBackend};
use ownership::Ownership;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Follow-up ids a worker remembers as committed (see `recent`): about
/// 10 MB, far more than are ever in flight between publish and delivery.
const RECENT_FOLLOW_UPS: usize = 1 << 18;

#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// The worker's group and its name in it. The name is unique per
    /// process: Valkey tracks pending entries per consumer, and leases name
    /// their holder.
    pub consumer: Consumer,
    pub batch_size: usize,
    pub batch_wait: Duration,
    pub lease_ttl: Duration,
    pub max_attempts: u32,
    pub retry_backoff: Duration,
    /// Dead letters at which a critical alert is raised.
    pub dead_letter_alert: u64,
    pub windows: WindowRetention,
    pub hold_sweep: sweep::SweepSettings,
    /// The webhook deliverer's settings (`--webhook-*`).
    pub webhooks: deliverer::DelivererSettings,
}

/// A consumer name no other process uses: host, process id and a random
/// suffix (a restarted process must not inherit its predecessor's pending
/// entries by name).
pub fn unique_consumer_name() -> String {
    format!(
        "{}-{}-{}",
        hostname(),
        std::process::id(),
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "worker".to_string())
}

/// How long a worker that was asked to stop may take to finish the
/// batches it holds (apply, publish, ack) before it gives up on them; they
/// stay pending in the log for the next owner.
const DRAIN_GRACE: Duration = Duration::from_secs(10);

/// Runs a worker until `shutdown`: partition ownership, housekeeping and
/// the processor pipeline (see `pipeline`), then hands the leases back.
pub async fn run(
    backend: LogBackend,
    store: Store,
    options: WorkerOptions,
    shutdown: CancellationToken,
) {
    let log = backend.log;
    crate::telemetry::metrics::handle();
    tracing::info!(consumer = %options.consumer.name, group = %options.consumer.group, log = %log.describe(), database = %store.describe(), "worker started");
    let ownership = Ownership {
        leases: backend.leases,
        group: options.consumer.group.clone(),
        member: options.consumer.name.clone(),
        partitions: log.partitions(),
        ttl: options.lease_ttl,
        recorded_epochs: Some(store.clone()),
    };
    let (owned_tx, owned_rx) = watch::channel(Holdings::new());
    // The coordinator outlives the processor by design: it stops only
    // after the last batch is acked, then hands the leases back.
    let stop_coordinator = CancellationToken::new();
    let coordinator = {
        let stop = stop_coordinator.clone();
        let ownership = ownership.clone();
        tokio::spawn(async move { ownership.run(owned_tx, stop).await })
    };
    let housekeeping = {
        let chores = housekeeping::Housekeeping {
            log: log.clone(),
            store: store.clone(),
            windows: options.windows,
            // A few times per retention period, at most once a minute.
            prune_every: (options.windows.per_second / 4)
                .clamp(Duration::from_secs(1), Duration::from_secs(60)),
            audit: log_audit::LogAudit {
                log: log.clone(),
                store: store.clone(),
            },
        };
        let (owned, stop) = (owned_rx.clone(), stop_coordinator.clone());
        tokio::spawn(async move { chores.run(owned, stop).await })
    };

    let sweeping = {
        let sweep = sweep::Sweep {
            log: log.clone(),
            store: store.clone(),
            settings: options.hold_sweep,
        };
        let (owned, stop) = (owned_rx.clone(), stop_coordinator.clone());
        tokio::spawn(async move { sweep.run(owned, stop).await })
    };

    let delivering = {
        let deliverer = deliverer::Deliverer {
            log: log.clone(),
            store: store.clone(),
            settings: options.webhooks.clone(),
        };
        let (owned, stop) = (owned_rx.clone(), stop_coordinator.clone());
        tokio::spawn(async move { deliverer.run(owned, stop).await })
    };

    metrics::gauge!(crate::telemetry::metrics::WORKER_UP).set(1.0);
    metrics::gauge!(crate::telemetry::metrics::DEAD_LETTER_ALERT_AT)
        .set(options.dead_letter_alert as f64);
    let processor = pipeline::Processor {
        log,
        store,
        options: options.clone(),
    };
    // Shutdown stops the reading and lets the stages drain; a grace period
    // later, `give_up` makes them stop waiting on a backend that is down.
    let give_up = CancellationToken::new();
    let processing = processor.run(owned_rx, shutdown.clone(), give_up.clone());
    tokio::pin!(processing);
    tokio::select! {
        () = &mut processing => {}
        () = async {
            shutdown.cancelled().await;
            tokio::time::sleep(DRAIN_GRACE).await;
        } => {
            tracing::warn!(grace_secs = DRAIN_GRACE.as_secs(), "batches not finished within the grace period; they stay pending");
            give_up.cancel();
            processing.await;
        }
    }

    stop_coordinator.cancel();
    let _ = housekeeping.await;
    let _ = sweeping.await;
    let _ = delivering.await;
    let owned = coordinator.await.unwrap_or_default();
    ownership.release_all(&owned).await;
    metrics::gauge!(crate::telemetry::metrics::WORKER_UP).set(0.0);
    tracing::info!(consumer = %options.consumer.name, "worker stopped");
}
