//! The publish stage: a committed batch's follow-up events (its decisions)
//! are appended to the log, its outbox row removed, and the batch acked, in
//! commit order. When no batch comes for a while, the outbox is checked for
//! follow-ups a crash left unpublished.

use super::apply::Committed;
use super::WorkerOptions;
use crate::domain::Envelope;
use crate::retry::{Stopped, OUTAGE};
use crate::store::outbox::OutboxRows;
use crate::store::Store;
use crate::stream::EventLog;
use crate::telemetry::metrics as names;
use std::time::Instant;
use tokio_util::sync::CancellationToken;

/// Publishes a committed batch's follow-ups, then acks it. Stopped leaves
/// the follow-ups safe in the outbox and the entries pending.
pub(super) async fn publish_and_ack(
    log: &dyn EventLog,
    store: &Store,
    options: &WorkerOptions,
    committed: Committed,
    stop: &CancellationToken,
) -> Result<(), Stopped> {
    let finishing = Instant::now();
    OUTAGE
        .until_done("publishing follow-up events", stop, || {
            publish(log, store, &committed.follow_ups, &committed.outbox)
        })
        .await?;
    let not_held = OUTAGE
        .until_done("acking a batch", stop, || {
            log.ack_fenced(&options.consumer, &committed.ids, &committed.epochs)
        })
        .await?;
    if !not_held.is_empty() {
        tracing::info!(
            partitions = ?not_held,
            "not acking entries of partitions held by another worker since; it acks them"
        );
    }
    tracing::debug!(
        size = committed.ids.len(),
        apply_ms = committed.applied_in.as_millis() as u64,
        publish_and_ack_ms = finishing.elapsed().as_millis() as u64,
        "batch done"
    );
    metrics::histogram!(names::BATCH_SECONDS).record(committed.started.elapsed().as_secs_f64());
    let now = chrono::Utc::now();
    for occurred in committed.occurred {
        let latency = (now - occurred).num_microseconds().unwrap_or(0).max(0) as f64 / 1e6;
        metrics::histogram!(names::EVENT_LATENCY_SECONDS).record(latency);
    }
    Ok(())
}

/// Why publishing a batch's follow-ups did not finish: an append or the
/// outbox's removal failed (both are retried; the follow-ups stay in the
/// outbox until then).
#[derive(Debug, thiserror::Error)]
pub(super) enum PublishError {
    #[error(transparent)]
    Log(#[from] crate::stream::LogError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

async fn publish(
    log: &dyn EventLog,
    store: &Store,
    events: &[Envelope],
    outbox: &OutboxRows,
) -> Result<(), PublishError> {
    let appends = events.iter().map(|e| log.append(e));
    for result in futures::future::join_all(appends).await {
        result?;
    }
    if !outbox.is_empty() {
        store.remove_from_outbox(outbox).await?;
    }
    Ok(())
}

/// Republishes follow-ups that a crash between commit and publish left in
/// the outbox. Best effort: what fails stays there for the next time.
pub(super) async fn relay_outbox(log: &dyn EventLog, store: &Store) {
    match store.pending_outbox(1000).await {
        Ok((events, rows)) if !rows.is_empty() => {
            tracing::info!(
                count = events.len(),
                "republishing follow-up events left in the outbox"
            );
            if let Err(e) = publish(log, store, &events, &rows).await {
                tracing::warn!(error = %e, "republishing the outbox failed; will retry");
            }
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "reading the outbox failed; will retry"),
    }
}
