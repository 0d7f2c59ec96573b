//! The sweep: every `interval`, a worker
//! - reads the held orders whose hold ran out (by its clock) and appends
//!   `order.expire_requested` for those in the partitions it holds. The
//!   clock's decision enters the log there; the order's owner then decides
//!   `order.expired` or a refusal from the order's state, as for any
//!   command (`domain::inventory::holds`);
//! - reads the products whose orders wait for stock that is available
//!   (a queue longer than one batch fills: `domain::inventory::backorders`)
//!   and appends `product.backorder_fill_requested` for those of its
//!   partitions: the batch that applies it fills the next orders.
//!
//! Bounded: at most `batch` requests per sweep, read through the partial
//! index of held orders a page at a time (at most `MAX_PAGES` pages, when
//! other workers' holds come first). A request is not sent again for
//! `RESEND_AFTER` (it is in the log, waiting for its turn); then, if the
//! order is still held, it is, under the same id, so the read model's inbox
//! takes it once. Its id derives from the order, its hold and the lease
//! epoch: a stale owner's request (a worker frozen past its lease) is
//! another event, decided as a recorded refusal once the order expired.

use crate::domain::events::{BackorderFillRequested, OrderExpireRequested};
use crate::domain::{DomainEvent, OrderId};
use crate::store::holds::DueHold;
use crate::store::Store;
use crate::stream::{EventLog, Holdings};
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Pages of due holds one sweep reads at most (each `batch` long).
const MAX_PAGES: usize = 8;
/// How long a request is left to be applied before it is sent again.
const RESEND_AFTER: Duration = Duration::from_secs(15);

/// How the sweep runs (`--hold-sweep-interval`, `--hold-sweep-batch`).
#[derive(Debug, Clone, Copy)]
pub struct SweepSettings {
    pub interval: Duration,
    pub batch: usize,
}

impl Default for SweepSettings {
    fn default() -> SweepSettings {
        SweepSettings {
            interval: Duration::from_secs(1),
            batch: 1000,
        }
    }
}

pub struct Sweep {
    pub log: Arc<dyn EventLog>,
    pub store: Store,
    pub settings: SweepSettings,
}

impl Sweep {
    pub async fn run(self, owned: watch::Receiver<Holdings>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(self.settings.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut sent: HashMap<OrderId, Instant> = HashMap::new();
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let held = owned.borrow().clone();
            if held.is_empty() {
                continue;
            }
            sent.retain(|_, at| at.elapsed() < RESEND_AFTER);
            if let Err(e) = self.expire_holds(&held, &mut sent).await {
                tracing::warn!(error = %e, "the hold expiry sweep failed; will retry");
            }
            if let Err(e) = self.take_up_queues(&held).await {
                tracing::warn!(error = %e, "the backorder queue sweep failed; will retry");
            }
        }
    }

    /// Requests the expiry of up to `batch` due holds of the partitions
    /// held.
    async fn expire_holds(
        &self,
        held: &Holdings,
        sent: &mut HashMap<OrderId, Instant>,
    ) -> Result<(), SweepError> {
        let now = Utc::now();
        let mut due = Vec::new();
        let mut after = None;
        let mut oldest = None;
        for _ in 0..MAX_PAGES {
            let page = self
                .store
                .due_holds(now.timestamp_millis(), after, self.settings.batch)
                .await?;
            oldest = oldest.or(page.first().map(|h| h.hold_until));
            let full = page.len() == self.settings.batch;
            after = page.last().copied();
            for hold in page {
                let partition = self.log.partition_of(&hold.order_id.to_string());
                if let Some(epoch) = held.epoch_of(partition) {
                    if !sent.contains_key(&hold.order_id) && due.len() < self.settings.batch {
                        due.push((hold, epoch.get()));
                    }
                }
            }
            if !full || due.len() >= self.settings.batch {
                break;
            }
        }
        // How far behind the sweep is: the oldest hold still held past its
        // deadline (of any partition), at this sweep.
        let overdue = oldest.map_or(0.0, |until| {
            (now.timestamp_millis() - until).max(0) as f64 / 1000.0
        });
        metrics::gauge!(crate::telemetry::metrics::HOLDS_OVERDUE_SECONDS).set(overdue);
        if due.is_empty() {
            return Ok(());
        }
        if let Some(stall) = crate::faults::sweep_stall() {
            tracing::warn!(
                count = due.len(),
                stall_ms = stall.as_millis() as u64,
                "fault: stalling the hold expiry sweep with requests in hand"
            );
            tokio::time::sleep(stall).await;
        }
        tracing::debug!(count = due.len(), "requesting the expiry of held orders");
        let requests: Vec<_> = due
            .iter()
            .map(|(hold, epoch)| expire_request(*hold, *epoch, now))
            .collect();
        let appends = requests.iter().map(|e| self.log.append(e));
        let results = futures::future::join_all(appends).await;
        let sent_at = Instant::now();
        let mut failed = None;
        for ((hold, _), result) in due.iter().zip(results) {
            match result {
                Ok(_) => {
                    sent.insert(hold.order_id, sent_at);
                    let lag = (now.timestamp_millis() - hold.hold_until).max(0) as f64 / 1000.0;
                    metrics::histogram!(crate::telemetry::metrics::HOLD_EXPIRY_LAG_SECONDS)
                        .record(lag);
                    metrics::counter!(crate::telemetry::metrics::HOLD_EXPIRIES_REQUESTED)
                        .increment(1);
                }
                Err(e) => failed = Some(e),
            }
        }
        match failed {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }
}

impl Sweep {
    /// Asks for each product of the partitions held whose queue stock could
    /// fill to be taken up (at most `batch`). A request is a note: asking
    /// twice fills nothing twice (each fill is decided from the state).
    async fn take_up_queues(&self, held: &Holdings) -> Result<(), SweepError> {
        let stalled = self
            .store
            .stalled_backorder_queues(self.settings.batch)
            .await?;
        let now = Utc::now();
        let requests: Vec<_> = stalled
            .into_iter()
            .filter(|p| held.holds(self.log.partition_of(&p.to_string())))
            .map(|product_id| {
                DomainEvent::BackorderFillRequested(BackorderFillRequested { product_id })
                    .into_envelope(now)
            })
            .collect();
        if requests.is_empty() {
            return Ok(());
        }
        tracing::debug!(count = requests.len(), "taking up backorder queues");
        for result in futures::future::join_all(requests.iter().map(|e| self.log.append(e))).await {
            result?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
enum SweepError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Log(#[from] crate::stream::LogError),
}

/// The request to expire `hold`, sent at `now` under lease `epoch`. Its id
/// is a UUID v7 whose time is the hold's deadline and whose other bits
/// derive from (order, deadline, epoch): the same owner asking again sends
/// the same event; another owner, another one.
pub fn expire_request(hold: DueHold, epoch: u64, now: DateTime<Utc>) -> crate::domain::Envelope {
    let name = format!("{}/{}/{epoch}", hold.order_id, hold.hold_until);
    let digest = Uuid::new_v5(&EXPIRY_NAMESPACE, name.as_bytes());
    let random: [u8; 10] = digest.as_bytes()[6..16].try_into().expect("10 bytes");
    let id = uuid::Builder::from_unix_timestamp_millis(hold.hold_until.max(0) as u64, &random)
        .into_uuid();
    let hold_until = DateTime::from_timestamp_millis(hold.hold_until).unwrap_or(now);
    DomainEvent::OrderExpireRequested(OrderExpireRequested {
        order_id: hold.order_id,
        hold_until,
        epoch,
    })
    .into_envelope_with_id(id, now)
}

/// The namespace of expiry requests' ids.
const EXPIRY_NAMESPACE: Uuid = Uuid::from_u128(0x6b1c_2a4e_93f0_4d8e_a5c7_1e0f_2b3d_9a41);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_id_depends_on_order_hold_and_epoch_only() {
        let hold = DueHold {
            order_id: OrderId::new(),
            hold_until: 1_700_000_000_000,
        };
        let now = Utc::now();
        let later = now + chrono::Duration::seconds(3);
        let id = |hold, epoch, at| expire_request(hold, epoch, at).event_id;
        assert_eq!(
            id(hold, 4, now),
            id(hold, 4, later),
            "resent: the same event"
        );
        assert_ne!(
            id(hold, 4, now),
            id(hold, 5, now),
            "another owner: another event"
        );
        let other = DueHold {
            hold_until: hold.hold_until + 1,
            ..hold
        };
        assert_ne!(id(hold, 4, now), id(other, 4, now));
        assert_eq!(id(hold, 4, now).get_version_num(), 7);
    }
}
