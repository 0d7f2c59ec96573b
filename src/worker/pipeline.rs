//! The processor as a pipeline of three stages, each a task, joined by
//! bounded channels:
//!
//! ```text
//!   read ──batch──▶ apply ──committed──▶ publish & ack
//! ```
//!
//! - **read** follows the partitions this worker owns: a partition just
//!   acquired first yields the entries its previous owner read but never
//!   acked (in log order), then new entries, a batch at a time;
//! - **apply** commits each batch to the read model in one transaction;
//! - **publish & ack** appends each batch's follow-ups and acks it, in
//!   commit order, and relays the outbox when the pipeline is idle. The
//!   batches committed while it was busy go out together in one round
//!   (`Committed::merge`): publishing (appends, outbox removal, acks) took
//!   longer than applying in a profile at 1,000 orders/s, and merging cut
//!   the decision latency by a fifth.
//!
//! Order: one batch at a time through each stage, in the order read, so a
//! partition's events are applied, and their decisions published, in log
//! order. Backpressure: the first channel holds one batch, and a batch is
//! read only once there is room for it, so reading runs at most one batch
//! ahead of applying, and only with a backlog (when caught up it reads once
//! the apply stage is idle, for latency); the second holds four committed
//! batches, so applying runs at most five ahead of acking.
//!
//! Shutdown: `shutdown` stops the reading; the stages then finish what
//! they hold and return in turn as their input closes. `stop` makes them
//! give up instead (what was not acked stays pending in the log, to be
//! delivered again); the worker fires it a grace period after shutdown.

use super::apply::{batch_span, Applier, Committed};
use super::publish::{publish_and_ack, relay_outbox};
use super::recent::RecentlyCommitted;
use super::{WorkerOptions, RECENT_FOLLOW_UPS};
use crate::retry::{Stopped, OUTAGE};
use crate::store::Store;
use crate::stream::{Delivery, Epoch, EventLog, Holdings, LogError, Partition};
use std::sync::Arc;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Idle batch waits after which the outbox is checked for leftovers.
const IDLE_WAITS_BEFORE_RELAY: u32 = 5;

#[derive(Clone)]
pub(super) struct Processor {
    pub log: Arc<dyn EventLog>,
    pub store: Store,
    pub options: WorkerOptions,
}

impl Processor {
    /// Runs the three stages until shutdown has drained them, or `stop`.
    pub async fn run(
        self,
        owned: watch::Receiver<Holdings>,
        shutdown: CancellationToken,
        stop: CancellationToken,
    ) {
        // Follow-ups a crash left unpublished go out before anything new.
        relay_outbox(&*self.log, &self.store).await;
        let (batches, to_apply) = mpsc::channel(1);
        let (apply_idle, idle) = watch::channel(true);
        // Up to 4 committed batches wait for the publish stage, which
        // publishes whatever waits in one round.
        let (commits, to_publish) = mpsc::channel(4);
        let read = tokio::spawn(self.clone().read(owned.clone(), batches, idle, shutdown));
        let publish = tokio::spawn(self.clone().publish(to_publish, stop.clone()));
        self.apply(to_apply, commits, apply_idle, &stop).await;
        // Each stage ends when its input closes or a stage after it is gone.
        for (stage, done) in [("read", read.await), ("publish", publish.await)] {
            if let Err(e) = done {
                tracing::error!(stage, error = %e, "a worker stage panicked");
            }
        }
    }

    /// The read stage: the owned partitions' entries, batch by batch.
    async fn read(
        self,
        mut owned: watch::Receiver<Holdings>,
        batches: mpsc::Sender<ReadBatch>,
        mut apply_idle: watch::Receiver<bool>,
        shutdown: CancellationToken,
    ) {
        let options = &self.options;
        // The partitions read, each with the epoch of the lease it is read
        // under; every batch carries them to the commit (fencing).
        let mut processing = Holdings::new();
        let mut last_sweep = tokio::time::Instant::now();
        // Whether the last read filled a batch: a backlog to work through.
        let mut behind = false;
        while !shutdown.is_cancelled() {
            let now_owned = owned.borrow_and_update().clone();
            if now_owned != processing {
                tracing::info!(partitions = ?now_owned.partitions().collect::<Vec<_>>(), "processing partitions");
            }
            // Newly held (or held again under a new epoch): first what the
            // previous holder left unacked, a partition at a time, so the
            // apply stage starts on one while the next is taken over. A
            // partition whose take-over failed is not read (its entries
            // would come after newer ones): it is taken over again next
            // round.
            let mut taken = Vec::new();
            let mut failed = false;
            for (partition, epoch) in now_owned.iter() {
                if processing.epoch_of(partition) == Some(epoch) {
                    taken.push(partition);
                    continue;
                }
                match self.left_over(partition, epoch).await {
                    Some(left_over) => {
                        if send_all(&batches, left_over, &now_owned).await.is_err() {
                            return;
                        }
                        taken.push(partition);
                    }
                    None => failed = true,
                }
            }
            processing = now_owned.only(taken);
            // Every lease period: entries of our partitions stranded with a
            // worker that read them after losing the partition (see
            // EventLog::reclaim_stale).
            if last_sweep.elapsed() >= options.lease_ttl {
                last_sweep = tokio::time::Instant::now();
                for (partition, epoch) in processing.clone().iter() {
                    match self.stranded(partition, epoch).await {
                        Some(stranded) => {
                            if send_all(&batches, stranded, &processing).await.is_err() {
                                return;
                            }
                        }
                        // Claimed perhaps, but not handed over: taken over
                        // again, in order, next round.
                        None => {
                            processing = processing.only(
                                processing
                                    .partitions()
                                    .filter(|p| *p != partition)
                                    .collect::<Vec<_>>(),
                            )
                        }
                    }
                }
            }
            if failed
                && crate::retry::pause(OUTAGE.delays().next().unwrap_or_default(), &shutdown)
                    .await
                    .is_err()
            {
                return;
            }
            if processing.is_empty() {
                // Nothing to do until the coordinator hands us a partition.
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = owned.changed() => {}
                    _ = tokio::time::sleep(options.batch_wait) => {}
                }
                continue;
            }
            let Some(slot) = room_to_read(&batches, &mut apply_idle, behind, &shutdown).await
            else {
                return;
            };
            // The read is not cancelled on shutdown: it returns within
            // batch_wait, and dropping it mid-flight could strand entries
            // that Valkey already marked as delivered to us.
            match self.read_batch(&processing).await {
                Ok(batch) if batch.is_empty() => behind = false,
                Ok(batch) => {
                    behind = batch.len() >= options.batch_size;
                    slot.send(ReadBatch {
                        deliveries: batch,
                        epochs: processing.clone(),
                    })
                }
                Err(e) => {
                    tracing::warn!(error = %e, "reading the log failed; retrying");
                    // What the read may have handed out (a read answered
                    // after all, entries not confirmed on the replicas)
                    // is pending with us: taking every partition over
                    // again delivers it before anything newer.
                    processing = Holdings::new();
                    let pause = OUTAGE.delays().next().unwrap_or_default();
                    if crate::retry::pause(pause, &shutdown).await.is_err() {
                        return;
                    }
                }
            }
        }
    }

    /// The entries of a just-acquired partition that its previous owner
    /// (or this worker, before a failed read) read but never acked, in
    /// batches, to be processed before any new one. None when the take-over
    /// failed: the partition is not to be read until it succeeds.
    async fn left_over(&self, partition: Partition, epoch: Epoch) -> Option<Vec<Vec<Delivery>>> {
        let options = &self.options;
        match self
            .log
            .take_over(&options.consumer, partition, epoch)
            .await
        {
            Ok(left_over) => {
                if !left_over.is_empty() {
                    tracing::info!(
                        partition = partition.0,
                        entries = left_over.len(),
                        "taking over unacked entries"
                    );
                }
                Some(in_batches(left_over, options.batch_size))
            }
            Err(e @ LogError::LeaseLost { .. }) => {
                tracing::info!(partition = partition.0, reason = %e, "not taking over a partition whose lease moved on");
                Some(Vec::new())
            }
            Err(e) => {
                tracing::warn!(partition = partition.0, error = %e, "taking over unacked entries failed; the partition waits for a retry");
                None
            }
        }
    }

    /// Entries of `partition` left unacked by another worker for a lease
    /// period, in batches; None when the sweep failed.
    async fn stranded(&self, partition: Partition, epoch: Epoch) -> Option<Vec<Vec<Delivery>>> {
        let options = &self.options;
        let reclaimed = self
            .log
            .reclaim_stale(&options.consumer, partition, epoch, options.lease_ttl)
            .await;
        match reclaimed {
            Ok(stranded) => {
                if !stranded.is_empty() {
                    tracing::warn!(
                        partition = partition.0,
                        entries = stranded.len(),
                        "reclaiming entries another worker read after losing the partition"
                    );
                }
                Some(in_batches(stranded, options.batch_size))
            }
            Err(e) => {
                tracing::debug!(partition = partition.0, error = %e, "sweeping for stranded entries failed");
                None
            }
        }
    }

    async fn read_batch(&self, held: &Holdings) -> Result<Vec<Delivery>, LogError> {
        let options = &self.options;
        self.log
            .read_fenced(
                &options.consumer,
                held,
                options.batch_size,
                options.batch_wait,
            )
            .await
    }

    /// The apply stage, on the worker's own task.
    async fn apply(
        &self,
        mut to_apply: mpsc::Receiver<ReadBatch>,
        commits: mpsc::Sender<Committed>,
        idle: watch::Sender<bool>,
        stop: &CancellationToken,
    ) {
        let mut applier = Applier {
            log: &*self.log,
            store: &self.store,
            options: &self.options,
            recent: RecentlyCommitted::new(RECENT_FOLLOW_UPS),
            fenced: Default::default(),
        };
        loop {
            idle.send_replace(true);
            let Some(batch) = to_apply.recv().await else {
                return;
            };
            idle.send_replace(false);
            let committed = applier
                .apply(&batch.deliveries, &batch.epochs, stop)
                .instrument(batch_span(&batch.deliveries));
            let Ok(committed) = committed.await else {
                return; // Stopped: the entries stay pending.
            };
            if commits.send(committed).await.is_err() {
                return;
            }
        }
    }

    /// The publish-and-ack stage. It acks only the entries of partitions
    /// still held under the epoch they were committed under (checked by the
    /// log, see `EventLog::ack_fenced`): a partition taken over meanwhile is
    /// the new holder's to ack (it takes the entries over, and finds them
    /// archived).
    async fn publish(self, mut to_publish: mpsc::Receiver<Committed>, stop: CancellationToken) {
        let (log, store) = (&*self.log, &self.store);
        let idle = self.options.batch_wait * IDLE_WAITS_BEFORE_RELAY;
        loop {
            let committed = tokio::select! {
                next = to_publish.recv() => match next {
                    Some(committed) => committed,
                    None => return,
                },
                // Leftovers of a crash between commit and publish, checked
                // when there is nothing else to do.
                _ = tokio::time::sleep(idle) => {
                    relay_outbox(log, store).await;
                    continue;
                }
            };
            // Batches committed meanwhile go out together with this one.
            let mut committed = committed;
            while let Ok(next) = to_publish.try_recv() {
                committed = committed.merge(next);
            }
            let done: Result<(), Stopped> =
                publish_and_ack(log, store, &self.options, committed, &stop).await;
            if done.is_err() {
                return;
            }
        }
    }
}

/// Waits until a batch may be read: the apply stage has room for it (the
/// backpressure: a batch read earlier would wait in hand while newer
/// entries pile up behind it, which added a whole apply cycle to every
/// decision's latency) and, when caught up (`behind` false), is idle: a
/// batch read ahead waits a whole apply cycle in the channel, and the
/// entries that arrive meanwhile another one behind it, which made a
/// decision's latency two to three apply cycles instead of one to two.
/// With a backlog it reads ahead: the read then overlaps the apply and the
/// batches are full anyway. None on shutdown, or once the stage is gone.
async fn room_to_read<'a>(
    batches: &'a mpsc::Sender<ReadBatch>,
    apply_idle: &mut watch::Receiver<bool>,
    behind: bool,
    shutdown: &CancellationToken,
) -> Option<mpsc::Permit<'a, ReadBatch>> {
    let slot = tokio::select! {
        _ = shutdown.cancelled() => return None,
        slot = batches.reserve() => slot.ok()?,
    };
    if !behind {
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            idle = apply_idle.wait_for(|&idle| idle) => idle.ok()?,
        };
    }
    Some(slot)
}

/// Entries read, and the epochs of the leases they were read under: what
/// the read stage hands the apply stage.
pub(super) struct ReadBatch {
    pub deliveries: Vec<Delivery>,
    pub epochs: Holdings,
}

/// Sends each of `batches` on, read under `epochs`; Err once the apply
/// stage is gone.
async fn send_all(
    to_apply: &mpsc::Sender<ReadBatch>,
    batches: Vec<Vec<Delivery>>,
    epochs: &Holdings,
) -> Result<(), mpsc::error::SendError<ReadBatch>> {
    for deliveries in batches {
        let epochs = epochs.clone();
        to_apply.send(ReadBatch { deliveries, epochs }).await?;
    }
    Ok(())
}

/// `deliveries` cut into batches of at most `size`, in order (moved, not
/// copied).
fn in_batches(mut deliveries: Vec<Delivery>, size: usize) -> Vec<Vec<Delivery>> {
    let size = size.max(1);
    let mut batches = Vec::with_capacity(deliveries.len().div_ceil(size));
    while deliveries.len() > size {
        let rest = deliveries.split_off(size);
        batches.push(std::mem::replace(&mut deliveries, rest));
    }
    if !deliveries.is_empty() {
        batches.push(deliveries);
    }
    batches
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::EntryId;

    #[test]
    fn batches_keep_the_order_and_the_size() {
        let deliveries: Vec<Delivery> = (0..7)
            .map(|seq| Delivery {
                partition: Partition(0),
                id: EntryId { ms: 1, seq },
                envelope: Err(String::new()),
            })
            .collect();
        let sizes = |size| -> Vec<Vec<u64>> {
            in_batches(deliveries.clone(), size)
                .iter()
                .map(|b| b.iter().map(|d| d.id.seq).collect())
                .collect()
        };
        assert_eq!(sizes(3), vec![vec![0, 1, 2], vec![3, 4, 5], vec![6]]);
        assert_eq!(sizes(7), vec![(0..7).collect::<Vec<_>>()]);
        assert!(in_batches(Vec::new(), 3).is_empty());
    }
}
