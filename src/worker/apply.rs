//! The apply stage: a batch read from the log becomes one committed
//! transaction in the read model (see store::projections), or, for the
//! events that can never apply, dead letters. A batch whose events fail
//! together is retried one event at a time, so one poison event holds back
//! only itself.

use super::recent::RecentlyCommitted;
use super::WorkerOptions;
use crate::domain::events::AlertRaised;
use crate::domain::status::OrderStatus;
use crate::domain::status::{AlertKind, Severity};
use crate::domain::{DomainEvent, Envelope};
use crate::retry::{pause, Backoff, Stopped, OUTAGE};
use crate::store::outbox::OutboxRows;
use crate::store::projections::BatchOutcome;
use crate::store::{Store, StoreError};
use crate::stream::announce::StatusChange;
use crate::stream::dead_letter::DeadLetter;
use crate::stream::{Decoded, Delivery, EntryId, Epoch, EventLog, Holdings, Partition};
use crate::telemetry::metrics as names;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// The longest wait between two tries of an event that keeps failing.
const MAX_EVENT_RETRY: Duration = Duration::from_secs(30);

/// A batch whose transaction committed: what remains is publishing its
/// follow-up events and acking it.
pub(super) struct Committed {
    pub follow_ups: Vec<Envelope>,
    pub outbox: OutboxRows,
    pub ids: Vec<(Partition, EntryId)>,
    /// The epoch each partition's entries were committed under.
    pub epochs: Holdings,
    pub occurred: Vec<chrono::DateTime<chrono::Utc>>,
    pub started: Instant,
    pub applied_in: Duration,
}

impl Committed {
    /// `self` and the batch committed after it, published and acked as one
    /// (in commit order): when the publish stage falls behind the apply
    /// stage, it catches up with one round of appends, outbox removal and
    /// acks instead of one per batch.
    pub fn merge(mut self, next: Committed) -> Committed {
        self.follow_ups.extend(next.follow_ups);
        self.outbox.extend(next.outbox);
        self.ids.extend(next.ids);
        self.epochs.extend(next.epochs);
        self.occurred.extend(next.occurred);
        self.applied_in += next.applied_in;
        self
    }
}

/// The apply stage's state: the log (for dead letters and routing), the
/// read model, the follow-ups this worker committed lately, and the
/// partitions whose batches were fenced (with the epoch refused).
pub(super) struct Applier<'a> {
    pub log: &'a dyn EventLog,
    pub store: &'a Store,
    pub options: &'a WorkerOptions,
    pub recent: RecentlyCommitted,
    pub fenced: HashMap<Partition, Epoch>,
}

/// A commit refused because the partition's lease moved on.
struct Fenced {
    partition: Partition,
    epoch: Epoch,
    recorded: Epoch,
}

/// Why a batch, or one of its events, was not applied.
enum NotApplied {
    /// The worker is stopping.
    Stopped,
    /// A partition's commit was refused: its lease moved on.
    Fenced(Fenced),
}

impl From<Stopped> for NotApplied {
    fn from(_: Stopped) -> NotApplied {
        NotApplied::Stopped
    }
}

impl From<Fenced> for NotApplied {
    fn from(fenced: Fenced) -> NotApplied {
        NotApplied::Fenced(fenced)
    }
}

/// How one transaction ended, once outages were waited out.
enum Attempt {
    Committed(BatchOutcome),
    /// Refused by the fence: nothing of it was applied.
    Fenced(Fenced),
    /// A failure that retrying cannot mend (an event the domain refuses).
    Failed(StoreError),
}

impl From<Result<BatchOutcome, StoreError>> for Attempt {
    fn from(result: Result<BatchOutcome, StoreError>) -> Attempt {
        match result {
            Ok(outcome) => Attempt::Committed(outcome),
            Err(StoreError::Fenced {
                partition,
                epoch,
                recorded,
            }) => Attempt::Fenced(Fenced {
                partition,
                epoch,
                recorded,
            }),
            Err(e) => Attempt::Failed(e),
        }
    }
}

/// How applying one event on its own ended.
enum EventOutcome {
    Applied(BatchOutcome),
    /// It kept failing: it is in the dead letters now.
    DeadLettered,
}

/// The orders whose status the committed follow-ups set: the decisions,
/// cancellations and shipments.
fn status_changes(follow_ups: &[Envelope]) -> Vec<StatusChange> {
    use crate::domain::events::EventType;
    follow_ups
        .iter()
        .filter_map(|envelope| {
            let status = match envelope.event_type.known()? {
                // A hold says so (`hold_until`).
                EventType::OrderConfirmed => match envelope.payload.get("hold_until") {
                    Some(until) if !until.is_null() => OrderStatus::Held,
                    _ => OrderStatus::Confirmed,
                },
                EventType::OrderCommitted => OrderStatus::Confirmed,
                EventType::OrderExpired => OrderStatus::Expired,
                EventType::OrderRejected => OrderStatus::Rejected,
                EventType::OrderCancelled => OrderStatus::Cancelled,
                // A partial shipment says so (`complete: false`).
                EventType::OrderShipped => match envelope.payload.get("complete") {
                    Some(serde_json::Value::Bool(false)) => OrderStatus::PartiallyShipped,
                    _ => OrderStatus::Shipped,
                },
                _ => return None,
            };
            let order_id = envelope.key.parse().ok()?;
            Some(StatusChange { order_id, status })
        })
        .collect()
}

/// A span naming one event, so every line logged while it is handled can
/// be traced to it. At ERROR level so that it is on whatever RUST_LOG lets
/// through (at INFO, RUST_LOG=warn would drop it from the warnings it is
/// for); it is only made for events applied one at a time, which is rare.
fn event_span(decoded: &Decoded) -> tracing::Span {
    tracing::error_span!(
        "event",
        partition = decoded.partition.0,
        entry = %decoded.id,
        event_id = %decoded.envelope.event_id,
        event_type = %decoded.envelope.event_type,
        // The aggregate: an order's id for order events, a product's else.
        key = %decoded.envelope.key,
    )
}

/// A span naming one batch: its partitions and entries.
/// Its fields are only computed when debug spans are on.
pub(super) fn batch_span(batch: &[Delivery]) -> tracing::Span {
    tracing::debug_span!(
        "batch",
        size = batch.len(),
        partitions = ?batch
            .iter()
            .map(|d| d.partition)
            .collect::<std::collections::BTreeSet<Partition>>(),
        first = %batch.first().map(|d| d.id.to_string()).unwrap_or_default(),
        last = %batch.last().map(|d| d.id.to_string()).unwrap_or_default(),
    )
}

impl Applier<'_> {
    /// Dead-letters what can never apply and commits the rest. `epochs`:
    /// the lease epoch each partition was read under. A partition whose
    /// commit is fenced (its lease moved on to another worker) is dropped
    /// from this batch and from every later one read under that epoch: its
    /// entries are neither applied nor acked here; the new holder takes
    /// them over.
    pub async fn apply(
        &mut self,
        batch: &[Delivery],
        epochs: &Holdings,
        stop: &CancellationToken,
    ) -> Result<Committed, Stopped> {
        let started = Instant::now();
        let mut batch: Vec<&Delivery> = batch.iter().collect();
        // Entries dead-lettered on an earlier pass (a pass refused by the
        // fence is retried without the fenced partition): once is enough.
        let mut lettered = HashSet::new();
        loop {
            let fenced = &self.fenced;
            batch.retain(|d| {
                fenced
                    .get(&d.partition)
                    .is_none_or(|&refused| epochs.epoch_of(d.partition) > Some(refused))
            });
            match self
                .apply_read(&batch, epochs, &mut lettered, started, stop)
                .await
            {
                Ok(committed) => return Ok(committed),
                Err(NotApplied::Stopped) => return Err(Stopped),
                Err(NotApplied::Fenced(fenced)) => {
                    tracing::warn!(
                        partition = fenced.partition.0,
                        epoch = fenced.epoch.get(),
                        recorded = fenced.recorded.get(),
                        "lost this partition: another worker committed for it under a newer lease; \
                         dropping the batches read under the old one"
                    );
                    metrics::counter!(names::FENCED_BATCHES).increment(1);
                    self.fenced.insert(fenced.partition, fenced.epoch);
                }
            }
        }
    }

    async fn apply_read(
        &mut self,
        batch: &[&Delivery],
        epochs: &Holdings,
        lettered: &mut HashSet<(Partition, EntryId)>,
        started: Instant,
        stop: &CancellationToken,
    ) -> Result<Committed, NotApplied> {
        let (applicable, known_applied) = self.decode_or_dead_letter(batch, lettered, stop).await?;
        let batch_epochs = epochs.only(batch.iter().map(|d| d.partition));
        // One transaction for the whole batch. (Per-partition transactions
        // in parallel were measured slower on PostgreSQL: they lock the same
        // product rows and wait on each other.)
        let (follow_ups, outbox) = self
            .apply_together(&applicable, &batch_epochs, stop)
            .await?;
        metrics::counter!(names::EVENTS_PROCESSED, "status" => "duplicate")
            .increment(known_applied);
        self.recent.remember(follow_ups.iter().map(|f| f.event_id));
        // Committed: whoever waits on these orders, or follows the feed,
        // may look now (an empty announcement says the archive grew).
        let changes = status_changes(&follow_ups);
        if !changes.is_empty() || !applicable.is_empty() {
            self.log.announce(changes.into());
        }
        Ok(Committed {
            follow_ups,
            outbox,
            ids: batch.iter().map(|d| (d.partition, d.id)).collect(),
            epochs: batch_epochs,
            occurred: applicable.iter().map(|d| d.envelope.occurred_at).collect(),
            started,
            applied_in: started.elapsed(),
        })
    }

    /// Each entry decoded once: those no handler can ever apply go straight
    /// to the dead letters (once, by `lettered`), those this worker
    /// committed lately are counted as known; the rest are returned.
    async fn decode_or_dead_letter(
        &self,
        batch: &[&Delivery],
        lettered: &mut HashSet<(Partition, EntryId)>,
        stop: &CancellationToken,
    ) -> Result<(Vec<Decoded>, u64), Stopped> {
        let mut applicable = Vec::with_capacity(batch.len());
        let mut known_applied = 0u64;
        for delivery in batch {
            match delivery.decode() {
                Ok(decoded) if self.recent.contains(&decoded.envelope.event_id) => {
                    known_applied += 1
                }
                Ok(decoded) => applicable.push(decoded),
                Err(_) if lettered.contains(&(delivery.partition, delivery.id)) => {}
                Err(reason) => {
                    lettered.insert((delivery.partition, delivery.id));
                    let letter = DeadLetter::new(
                        delivery.partition.0,
                        delivery.id,
                        delivery.envelope.as_ref().ok().cloned(),
                        reason,
                        1,
                    );
                    self.dead_letter(letter, stop).await?;
                }
            }
        }
        Ok((applicable, known_applied))
    }

    /// Applies `events` in one transaction, retrying transient failures; if
    /// one of them fails for good, falls back to one at a time to isolate it.
    async fn apply_together(
        &self,
        events: &[Decoded],
        epochs: &Holdings,
        stop: &CancellationToken,
    ) -> Result<(Vec<Envelope>, OutboxRows), NotApplied> {
        match self.apply_retrying(events, epochs, stop).await? {
            Attempt::Committed(outcome) => {
                tracing::debug!(
                    applied = outcome.applied,
                    duplicates = outcome.duplicates,
                    "batch committed"
                );
                Ok((outcome.follow_ups, outcome.outbox))
            }
            Attempt::Fenced(fenced) => Err(fenced.into()),
            Attempt::Failed(e) => {
                // Some event fails: apply them one at a time to find it,
                // without holding back the others.
                tracing::warn!(error = %e, size = events.len(), "a batch failed; applying its events one by one");
                self.apply_one_by_one(events, epochs, stop).await
            }
        }
    }

    /// One transaction for `events`, retried while the database is out of
    /// reach.
    async fn apply_retrying(
        &self,
        events: &[Decoded],
        epochs: &Holdings,
        stop: &CancellationToken,
    ) -> Result<Attempt, Stopped> {
        let partition_of = |key: &str| self.log.partition_of(key);
        let group = &self.options.consumer.group;
        let outcome = OUTAGE
            .until_done("applying a batch", stop, || async {
                match self
                    .store
                    .apply_batch(events, &partition_of, group, epochs)
                    .await
                {
                    Err(e) if e.is_transient() => Err(e),
                    done => Ok(done),
                }
            })
            .await?;
        if let Ok(outcome) = &outcome {
            record_outcome(outcome);
        }
        Ok(Attempt::from(outcome))
    }

    /// Applies each event in its own transaction, in order. An event whose
    /// handler fails is retried with exponential backoff; its attempts are
    /// counted in the database (so they survive restarts) and after
    /// `max_attempts` it is dead-lettered and the partition moves on.
    async fn apply_one_by_one(
        &self,
        events: &[Decoded],
        epochs: &Holdings,
        stop: &CancellationToken,
    ) -> Result<(Vec<Envelope>, OutboxRows), NotApplied> {
        let mut follow_ups = Vec::new();
        let mut outbox = OutboxRows::default();
        for decoded in events {
            let epoch = epochs.only([decoded.partition]);
            let outcome = self
                .apply_alone(decoded, &epoch, stop)
                .instrument(event_span(decoded));
            // A fenced event ends the loop: committed events stay
            // committed; the caller retries the batch without the fenced
            // partition, and they are found archived.
            if let EventOutcome::Applied(outcome) = outcome.await? {
                follow_ups.extend(outcome.follow_ups);
                outbox.extend(outcome.outbox);
            }
        }
        Ok((follow_ups, outbox))
    }

    /// One event until it applies or is dead-lettered, or its partition's
    /// commit is fenced.
    async fn apply_alone(
        &self,
        decoded: &Decoded,
        epochs: &Holdings,
        stop: &CancellationToken,
    ) -> Result<EventOutcome, NotApplied> {
        let event_retry = Backoff {
            first: self.options.retry_backoff,
            max: MAX_EVENT_RETRY,
        };
        let event_id = decoded.envelope.event_id.to_string();
        loop {
            let error = match self
                .apply_retrying(std::slice::from_ref(decoded), epochs, stop)
                .await?
            {
                Attempt::Committed(outcome) => return Ok(EventOutcome::Applied(outcome)),
                Attempt::Fenced(fenced) => return Err(fenced.into()),
                Attempt::Failed(e) => e.to_string(),
            };
            let attempts = OUTAGE
                .until_done("recording a failed attempt", stop, || {
                    self.store.record_failed_attempt(
                        &self.options.consumer.group,
                        &event_id,
                        &error,
                    )
                })
                .await?;
            tracing::warn!(attempts, max = self.options.max_attempts, %error, "event failed");
            metrics::counter!(names::EVENTS_PROCESSED, "status" => "failed_attempt").increment(1);
            if attempts >= self.options.max_attempts {
                let letter = DeadLetter::new(
                    decoded.partition.0,
                    decoded.id,
                    Some(decoded.envelope.clone()),
                    error,
                    attempts,
                );
                self.dead_letter(letter, stop).await?;
                return Ok(EventOutcome::DeadLettered);
            }
            pause(event_retry.after_attempts(attempts), stop).await?;
        }
    }

    /// Stores the entry as a dead letter and raises an alert about it. The
    /// batch's ack acks the entry afterwards.
    async fn dead_letter(
        &self,
        letter: DeadLetter,
        stop: &CancellationToken,
    ) -> Result<(), Stopped> {
        OUTAGE
            .until_done("storing a dead letter", stop, || async {
                self.log
                    .dead_letter(&self.options.consumer.group, &letter)
                    .await
                    .map(|_| ())
            })
            .await?;
        let attempts = letter.attempts;
        metrics::counter!(names::EVENTS_PROCESSED, "status" => "dead_lettered").increment(1);
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
            self.log,
            AlertKind::DeadLetter,
            Severity::Error,
            subject,
            message,
        )
        .await;
        self.raise_if_dead_letters_pile_up().await;
        Ok(())
    }

    /// Dead letters are never dropped: they wait for an operator. When
    /// their number reaches the threshold, that is worth a critical alert
    /// of its own (once per crossing: the count goes up one at a time).
    async fn raise_if_dead_letters_pile_up(&self) {
        let count = match self
            .log
            .dead_letter_count(&self.options.consumer.group)
            .await
        {
            Ok(count) => count,
            Err(e) => {
                tracing::warn!(error = %e, "could not count the dead letters");
                return;
            }
        };
        metrics::gauge!(names::DEAD_LETTERS).set(count as f64);
        let threshold = self.options.dead_letter_alert;
        if count != threshold {
            return;
        }
        tracing::error!(
            count,
            "dead letters reached the alert threshold; see `streamstock dlq list`"
        );
        let message = format!(
            "{count} events wait in the dead letters (alert threshold {threshold}); \
             inspect them with `streamstock dlq list`, then replay or purge"
        );
        raise_alert(
            self.log,
            AlertKind::DeadLettersPilingUp,
            Severity::Critical,
            "dead-letters".into(),
            message,
        )
        .await;
    }
}

fn record_outcome(outcome: &BatchOutcome) {
    metrics::counter!(names::EVENTS_PROCESSED, "status" => "applied")
        .increment(outcome.applied as u64);
    metrics::counter!(names::EVENTS_PROCESSED, "status" => "duplicate")
        .increment(outcome.duplicates as u64);
    // Follow-ups (decisions) are applied in the transaction that makes them.
    metrics::counter!(names::EVENTS_PROCESSED, "status" => "decided")
        .increment(outcome.follow_ups.len() as u64);
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
    let alert = DomainEvent::AlertRaised(AlertRaised {
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
