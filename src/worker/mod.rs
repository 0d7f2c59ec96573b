//! The stream processor: reads batches from the log, applies each batch to
//! the read model in one transaction (archive/inbox + effects + outbox), publishes
//! the follow-up events, then acks. See store::projections for the
//! exactly-once argument.

mod housekeeping;
mod ownership;
mod recent;

use crate::domain::status::{AlertKind, Severity};
use crate::domain::Envelope;
use crate::store::analytics::WindowRetention;
use crate::store::outbox::OutboxRows;
use crate::store::Store;
use crate::stream::dead_letter::DeadLetter;
use crate::stream::{Decoded, Delivery, EventLog, LogBackend, LogError};
use ownership::Ownership;
use std::collections::BTreeSet;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Follow-up ids a worker remembers as committed (see `recent`): about
/// 10 MB, far more than are ever in flight between publish and delivery.
const RECENT_FOLLOW_UPS: usize = 1 << 18;

#[derive(Debug, Clone)]
pub struct WorkerOptions {
    pub group: String,
    /// Unique per process: Valkey tracks pending entries per consumer, and
    /// leases name their holder.
    pub consumer: String,
    pub batch_size: usize,
    pub batch_wait: Duration,
    pub lease_ttl: Duration,
    pub max_attempts: u32,
    pub retry_backoff: Duration,
    /// Dead letters at which a critical alert is raised.
    pub dead_letter_alert: u64,
    pub windows: WindowRetention,
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

/// The wait before retrying an event that failed `attempts` times: the base
/// doubled per attempt, at most 30 s.
fn retry_delay(base: Duration, attempts: u32) -> Duration {
    base.saturating_mul(1 << attempts.saturating_sub(1).min(16))
        .min(Duration::from_secs(30))
}

pub async fn run(
    backend: LogBackend,
    store: Store,
    options: WorkerOptions,
    shutdown: CancellationToken,
) {
    let log = backend.log;
    crate::telemetry::metrics::handle();
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

    let housekeeping = {
        let chores = housekeeping::Housekeeping {
            log: log.clone(),
            store: store.clone(),
            windows: options.windows,
            // A few times per retention period, at most once a minute.
            prune_every: (options.windows.per_second / 4)
                .clamp(Duration::from_secs(1), Duration::from_secs(60)),
        };
        let (owned, stop) = (owned_rx.clone(), stop_coordinator.clone());
        tokio::spawn(async move { chores.run(owned, stop).await })
    };

    metrics::gauge!(crate::telemetry::metrics::WORKER_UP).set(1.0);
    metrics::gauge!(crate::telemetry::metrics::DEAD_LETTER_ALERT_AT)
        .set(options.dead_letter_alert as f64);
    relay_outbox(&*log, &store).await;
    let mut processing: BTreeSet<u32> = BTreeSet::new();
    let mut prefetch: Option<tokio::task::JoinHandle<Result<Vec<Delivery>, LogError>>> = None;
    let mut finishing: Option<tokio::task::JoinHandle<bool>> = None;
    let mut idle_rounds = 0u32;
    let mut recent = recent::RecentlyCommitted::new(RECENT_FOLLOW_UPS);
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
                        if !process_batch(&*log, &store, &options, chunk, &mut recent, &shutdown)
                            .await
                        {
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
        // Valkey already marked as delivered to us. A batch read ahead
        // (below) is used even if ownership changed meanwhile: its entries
        // were delivered to us, and the archive (the inbox) makes any overlap harmless.
        let read = match prefetch.take() {
            Some(ahead) => ahead
                .await
                .unwrap_or_else(|e| Err(LogError::Unavailable(format!("read task failed: {e}")))),
            None => read_batch(&*log, &options, &partitions).await,
        };
        let batch = match read {
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
            if idle_rounds.is_multiple_of(5) {
                relay_outbox(&*log, &store).await;
            }
            continue;
        }
        // Read the next batch while this one is applied: the read and the
        // database work overlap instead of taking turns.
        prefetch = Some(tokio::spawn(read_ahead(
            log.clone(),
            options.clone(),
            partitions,
        )));
        idle_rounds = 0;
        let Some(committed) =
            apply_phase(&*log, &store, &options, &batch, &mut recent, &shutdown).await
        else {
            break;
        };
        // Publishing and acking batch N overlaps applying batch N+1; batch
        // N+1's follow-ups are published only after batch N's.
        if let Some(previous) = finishing.take() {
            if !previous.await.unwrap_or(false) {
                break;
            }
        }
        finishing = Some(tokio::spawn(finish_owned(
            log.clone(),
            store.clone(),
            options.clone(),
            committed,
            shutdown.clone(),
        )));
    }
    if let Some(previous) = finishing.take() {
        let _ = previous.await;
    }
    // A batch already read ahead is still ours to finish before stopping.
    if let Some(ahead) = prefetch.take() {
        if let Ok(Ok(batch)) = ahead.await {
            if !batch.is_empty() {
                // Bounded: if a backend is down, give up after a grace
                // period; the entries stay pending for the next owner.
                let grace = CancellationToken::new();
                let expire = grace.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_secs(10)).await;
                    expire.cancel();
                });
                process_batch(&*log, &store, &options, &batch, &mut recent, &grace).await;
            }
        }
    }
    stop_coordinator.cancel();
    let _ = housekeeping.await;
    let owned = coordinator.await.unwrap_or_default();
    ownership.release_all(&owned).await;
    metrics::gauge!(crate::telemetry::metrics::WORKER_UP).set(0.0);
    tracing::info!(consumer = %options.consumer, "worker stopped");
}

async fn read_batch(
    log: &dyn EventLog,
    options: &WorkerOptions,
    partitions: &[u32],
) -> Result<Vec<Delivery>, LogError> {
    log.read_group(
        &options.group,
        &options.consumer,
        partitions,
        options.batch_size,
        options.batch_wait,
    )
    .await
}

async fn read_ahead(
    log: std::sync::Arc<dyn EventLog>,
    options: WorkerOptions,
    partitions: Vec<u32>,
) -> Result<Vec<Delivery>, LogError> {
    read_batch(&*log, &options, &partitions).await
}

/// Runs `attempt` until it succeeds, backing off between failures, logged
/// as `what`. False if shutdown came first.
async fn retry_until_done<F, Fut, E>(
    what: &str,
    shutdown: &CancellationToken,
    mut attempt: F,
) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let mut backoff = Backoff::new();
    loop {
        match attempt().await {
            Ok(()) => return true,
            Err(e) => {
                tracing::warn!(error = %e, "{what} failed; retrying");
                if !backoff.wait(shutdown).await {
                    return false;
                }
            }
        }
    }
}

/// A batch whose transaction committed: what remains is publishing its
/// follow-up events and acking it.
struct Committed {
    follow_ups: Vec<Envelope>,
    outbox: OutboxRows,
    ids: Vec<(u32, crate::stream::EntryId)>,
    occurred: Vec<chrono::DateTime<chrono::Utc>>,
    started: std::time::Instant,
    applied_in: Duration,
}

/// Applies, publishes and acks one batch, retrying transient failures.
/// Returns false if shutdown interrupted it before the ack (the entries stay
/// pending and are redelivered; the archive, as inbox, makes that harmless).
async fn process_batch(
    log: &dyn EventLog,
    store: &Store,
    options: &WorkerOptions,
    batch: &[Delivery],
    recent: &mut recent::RecentlyCommitted,
    shutdown: &CancellationToken,
) -> bool {
    match apply_phase(log, store, options, batch, recent, shutdown).await {
        Some(committed) => finish_phase(log, store, options, committed, shutdown).await,
        None => false,
    }
}

/// Dead-letters what can never apply and commits the rest. None if
/// shutdown interrupted.
async fn apply_phase(
    log: &dyn EventLog,
    store: &Store,
    options: &WorkerOptions,
    batch: &[Delivery],
    recent: &mut recent::RecentlyCommitted,
    shutdown: &CancellationToken,
) -> Option<Committed> {
    let started = std::time::Instant::now();
    // Each entry is decoded once; those no handler can ever apply go
    // straight to the dead letters.
    let mut applicable = Vec::with_capacity(batch.len());
    let mut known_applied = 0u64;
    for delivery in batch {
        match delivery.decode() {
            Ok(decoded) if recent.contains(&decoded.envelope.event_id) => known_applied += 1,
            Ok(decoded) => applicable.push(decoded),
            Err(reason) => {
                let letter = DeadLetter::new(
                    delivery.partition,
                    delivery.id,
                    delivery.envelope.as_ref().ok().cloned(),
                    reason,
                    1,
                );
                if !dead_letter(log, options, letter, shutdown).await {
                    return None;
                }
            }
        }
    }
    metrics::counter!(crate::telemetry::metrics::EVENTS_PROCESSED, "status" => "duplicate")
        .increment(known_applied);
    // One transaction for the whole batch. (Per-partition transactions in
    // parallel were measured slower on PostgreSQL: they lock the same
    // product rows and wait on each other.)
    let (follow_ups, outbox) = apply_share(log, store, options, &applicable, shutdown).await?;
    recent.remember(follow_ups.iter().map(|f| f.event_id));
    Some(Committed {
        follow_ups,
        outbox,
        ids: batch.iter().map(|d| (d.partition, d.id)).collect(),
        occurred: applicable.iter().map(|d| d.envelope.occurred_at).collect(),
        started,
        applied_in: started.elapsed(),
    })
}

/// Publishes a committed batch's follow-ups, then acks it. False if
/// shutdown interrupted (the follow-ups are safe in the outbox, the entries
/// stay pending).
async fn finish_phase(
    log: &dyn EventLog,
    store: &Store,
    options: &WorkerOptions,
    committed: Committed,
    shutdown: &CancellationToken,
) -> bool {
    let finishing = std::time::Instant::now();
    if !retry_until_done("publishing follow-up events", shutdown, || {
        publish(log, store, &committed.follow_ups, &committed.outbox)
    })
    .await
    {
        return false;
    }
    if !retry_until_done("acking a batch", shutdown, || {
        log.ack(&options.group, &committed.ids)
    })
    .await
    {
        return false;
    }
    tracing::debug!(
        size = committed.ids.len(),
        apply_ms = committed.applied_in.as_millis() as u64,
        publish_and_ack_ms = finishing.elapsed().as_millis() as u64,
        "batch done"
    );
    metrics::histogram!(crate::telemetry::metrics::BATCH_SECONDS)
        .record(committed.started.elapsed().as_secs_f64());
    let now = chrono::Utc::now();
    for occurred in committed.occurred {
        let latency = (now - occurred).num_microseconds().unwrap_or(0).max(0) as f64 / 1e6;
        metrics::histogram!(crate::telemetry::metrics::EVENT_LATENCY_SECONDS).record(latency);
    }
    true
}

async fn finish_owned(
    log: std::sync::Arc<dyn EventLog>,
    store: Store,
    options: WorkerOptions,
    committed: Committed,
    shutdown: CancellationToken,
) -> bool {
    finish_phase(&*log, &store, &options, committed, &shutdown).await
}

/// Applies events of one transaction's worth, retrying transient failures;
/// if one of them fails for good, falls back to one at a time to isolate
/// it. None when shutdown interrupted.
async fn apply_share(
    log: &dyn EventLog,
    store: &Store,
    options: &WorkerOptions,
    share: &[Decoded],
    shutdown: &CancellationToken,
) -> Option<(Vec<Envelope>, OutboxRows)> {
    let mut backoff = Backoff::new();
    loop {
        match store.apply_batch(share, &|key| log.partition_of(key)).await {
            Ok(outcome) => {
                tracing::debug!(
                    applied = outcome.applied,
                    duplicates = outcome.duplicates,
                    "batch committed"
                );
                record_outcome(&outcome);
                return Some((outcome.follow_ups, outcome.outbox));
            }
            Err(e) if e.is_transient() => {
                tracing::warn!(error = %e, size = share.len(), "applying a batch failed; retrying");
                if !backoff.wait(shutdown).await {
                    return None;
                }
            }
            Err(e) => {
                // Some event fails: apply them one at a time to find it,
                // without holding back the others.
                tracing::warn!(error = %e, size = share.len(), "a batch failed; applying its events one by one");
                return apply_one_by_one(log, store, options, share, shutdown).await;
            }
        }
    }
}

fn record_outcome(outcome: &crate::store::projections::BatchOutcome) {
    metrics::counter!(crate::telemetry::metrics::EVENTS_PROCESSED, "status" => "applied")
        .increment(outcome.applied as u64);
    metrics::counter!(crate::telemetry::metrics::EVENTS_PROCESSED, "status" => "duplicate")
        .increment(outcome.duplicates as u64);
    // Follow-ups (decisions) are applied in the transaction that makes them.
    metrics::counter!(crate::telemetry::metrics::EVENTS_PROCESSED, "status" => "decided")
        .increment(outcome.follow_ups.len() as u64);
}

/// Applies each event in its own transaction, in order. An event whose
/// handler fails is retried with exponential backoff; its attempts are
/// counted in the database (so they survive restarts) and after
/// `max_attempts` it is dead-lettered and the partition moves on.
async fn apply_one_by_one(
    log: &dyn EventLog,
    store: &Store,
    options: &WorkerOptions,
    events: &[Decoded],
    shutdown: &CancellationToken,
) -> Option<(Vec<Envelope>, OutboxRows)> {
    let mut follow_ups = Vec::new();
    let mut outbox = OutboxRows::default();
    for decoded in events {
        let single = std::slice::from_ref(decoded);
        let mut transient = Backoff::new();
        loop {
            let error = match store
                .apply_batch(single, &|key| log.partition_of(key))
                .await
            {
                Ok(outcome) => {
                    record_outcome(&outcome);
                    follow_ups.extend(outcome.follow_ups);
                    outbox.extend(outcome.outbox);
                    break;
                }
                Err(e) if e.is_transient() => {
                    if !transient.wait(shutdown).await {
                        return None;
                    }
                    continue;
                }
                Err(e) => e.to_string(),
            };
            let event_id = decoded.envelope.event_id.to_string();
            let attempts = match store
                .record_failed_attempt(&options.group, &event_id, &error)
                .await
            {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(error = %e, "could not record a failed attempt; retrying");
                    if !transient.wait(shutdown).await {
                        return None;
                    }
                    continue;
                }
            };
            tracing::warn!(%event_id, attempts, max = options.max_attempts, %error, "event failed");
            metrics::counter!(crate::telemetry::metrics::EVENTS_PROCESSED, "status" => "failed_attempt")
                .increment(1);
            if attempts >= options.max_attempts {
                let letter = DeadLetter::new(
                    decoded.partition,
                    decoded.id,
                    Some(decoded.envelope.clone()),
                    error,
                    attempts,
                );
                if !dead_letter(log, options, letter, shutdown).await {
                    return None;
                }
                break;
            }
            let delay = retry_delay(options.retry_backoff, attempts);
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.cancelled() => return None,
            }
        }
    }
    Some((follow_ups, outbox))
}

/// Stores the entry as a dead letter and raises an alert about it. The
/// caller acks the entry afterwards. Returns false if shutdown came first.
async fn dead_letter(
    log: &dyn EventLog,
    options: &WorkerOptions,
    letter: DeadLetter,
    shutdown: &CancellationToken,
) -> bool {
    let stored = retry_until_done("storing a dead letter", shutdown, || async {
        log.dead_letter(&options.group, &letter).await.map(|_| ())
    })
    .await;
    if !stored {
        return false;
    }
    let attempts = letter.attempts;
    metrics::counter!(crate::telemetry::metrics::EVENTS_PROCESSED, "status" => "dead_lettered")
        .increment(1);
    tracing::error!(
        partition = letter.partition,
        entry = %letter.entry_id,
        event_type = letter.event_type(),
        attempts,
        error = %letter.error,
        "event moved to the dead letters"
    );
    let subject = letter
        .envelope
        .as_ref()
        .map(|e| e.event_id.to_string())
        .unwrap_or_else(|| letter.entry_id.clone());
    let message = format!(
        "{} on partition {} dead-lettered after {attempts} attempt(s): {}",
        letter.event_type(),
        letter.partition,
        letter.error
    );
    raise_alert(
        log,
        AlertKind::DeadLetter,
        Severity::Error,
        subject,
        message,
    )
    .await;
    raise_if_dead_letters_pile_up(log, options).await;
    true
}

/// Dead letters are never dropped: they wait for an operator. When their
/// number reaches the threshold, that is worth a critical alert of its own
/// (once per crossing: the count goes up one letter at a time).
async fn raise_if_dead_letters_pile_up(log: &dyn EventLog, options: &WorkerOptions) {
    let count = match log.dead_letter_count(&options.group).await {
        Ok(count) => count,
        Err(e) => {
            tracing::warn!(error = %e, "could not count the dead letters");
            return;
        }
    };
    metrics::gauge!(crate::telemetry::metrics::DEAD_LETTERS).set(count as f64);
    if count != options.dead_letter_alert {
        return;
    }
    tracing::error!(
        count,
        "dead letters reached the alert threshold; see `streamstock dlq list`"
    );
    let message = format!(
        "{count} events wait in the dead letters (alert threshold {}); \
         inspect them with `streamstock dlq list`, then replay or purge",
        options.dead_letter_alert
    );
    raise_alert(
        log,
        AlertKind::DeadLettersPilingUp,
        Severity::Critical,
        "dead-letters".into(),
        message,
    )
    .await;
}

/// Appends an `alert.raised` for the dashboard feed. Best effort: what it
/// reports (a stored dead letter, say) is already safe; only the dashboard
/// misses the alert if the log refuses it.
async fn raise_alert(
    log: &dyn EventLog,
    kind: AlertKind,
    severity: Severity,
    subject: String,
    message: String,
) {
    let alert = crate::domain::DomainEvent::AlertRaised(crate::domain::events::AlertRaised {
        alert_id: uuid::Uuid::now_v7(),
        kind,
        severity,
        subject,
        message,
    })
    .into_envelope(chrono::Utc::now());
    if let Err(e) = log.append(&alert).await {
        tracing::warn!(error = %e, %kind, "could not raise an alert");
    }
}

async fn publish(
    log: &dyn EventLog,
    store: &Store,
    events: &[Envelope],
    outbox: &OutboxRows,
) -> anyhow::Result<()> {
    let appends = events.iter().map(|e| log.append(e));
    for result in futures::future::join_all(appends).await {
        result?;
    }
    if !outbox.is_empty() {
        store.remove_from_outbox(outbox).await?;
    }
    Ok(())
}

async fn relay_outbox(log: &dyn EventLog, store: &Store) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Instant;

    #[test]
    fn retry_delays_double_up_to_a_cap() {
        let base = Duration::from_millis(200);
        let delays: Vec<u64> = (1..=6)
            .map(|a| retry_delay(base, a).as_millis() as u64)
            .collect();
        assert_eq!(delays, vec![200, 400, 800, 1600, 3200, 6400]);
        assert_eq!(retry_delay(base, 40), Duration::from_secs(30));
    }

    /// The backoff waits 100 ms, 200 ms, 400 ms… up to 5 s, measured on
    /// tokio's paused clock, and gives up at once on shutdown.
    #[tokio::test(start_paused = true)]
    async fn backoff_grows_and_stops_on_shutdown() {
        let shutdown = CancellationToken::new();
        let mut backoff = Backoff::new();
        let mut waited = Vec::new();
        for _ in 0..8 {
            let started = Instant::now();
            assert!(backoff.wait(&shutdown).await);
            waited.push(started.elapsed().as_millis() as u64);
        }
        assert_eq!(waited, vec![100, 200, 400, 800, 1600, 3200, 5000, 5000]);

        let stop = shutdown.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            stop.cancel();
        });
        let started = Instant::now();
        assert!(
            !backoff.wait(&shutdown).await,
            "shutdown interrupts the wait"
        );
        assert_eq!(started.elapsed().as_millis(), 10);
    }
}
