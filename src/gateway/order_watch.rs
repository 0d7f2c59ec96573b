//! Clients waiting on an order's decision (`GET /api/orders/{id}?wait=N`)
//! are woken by the workers' announcements (see `stream::announce`) the
//! moment a status change commits, instead of polling the read model.
//!
//! Each waiting request registers its order here; one task per gateway
//! listens to the announcements and wakes the waiters of the orders named.
//! Waiters still re-read the read model now and then (`FALLBACK_CHECK`):
//! announcements are best effort, the read model is the truth.

use super::AppState;
use crate::domain::OrderId;
use crate::stream::announce::Announcement;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{broadcast, Notify};

/// How often a waiter re-reads the read model with no announcement: what a
/// lost announcement costs at most.
pub const FALLBACK_CHECK: Duration = Duration::from_millis(250);

/// The orders someone is waiting on. Its size is bounded by the requests in
/// flight (each holds at most one entry).
#[derive(Default)]
pub struct OrderWatch {
    waiting: Mutex<HashMap<OrderId, Arc<Notify>>>,
}

/// One request's interest in an order; it ends when dropped.
pub struct Watching<'a> {
    watch: &'a OrderWatch,
    order: OrderId,
    notify: Arc<Notify>,
}

impl OrderWatch {
    pub fn watch(&self, order: OrderId) -> Watching<'_> {
        let notify = self
            .waiting
            .lock()
            .expect("order watch lock")
            .entry(order)
            .or_default()
            .clone();
        Watching {
            watch: self,
            order,
            notify,
        }
    }

    /// Wakes whoever waits on an order the announcement names.
    pub fn heard(&self, announcement: &Announcement) {
        let waiting = self.waiting.lock().expect("order watch lock");
        if waiting.is_empty() {
            return;
        }
        for change in announcement.iter() {
            if let Some(notify) = waiting.get(&change.order_id) {
                notify.notify_waiters();
            }
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.waiting.lock().expect("order watch lock").len()
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Watching<'_> {
    /// Waits for an announcement about the order, or `at_most`. Call it,
    /// then check the read model, then await it: an announcement made
    /// between the check and the await is not lost.
    pub fn changed(&self, at_most: Duration) -> impl std::future::Future<Output = ()> + '_ {
        let mut notified = Box::pin(self.notify.notified());
        notified.as_mut().enable();
        async move {
            let _ = tokio::time::timeout(at_most, notified).await;
        }
    }
}

impl Drop for Watching<'_> {
    fn drop(&mut self) {
        let mut waiting = self.watch.waiting.lock().expect("order watch lock");
        // The map's reference and ours: nobody else waits on this order.
        if Arc::strong_count(&self.notify) == 2 {
            waiting.remove(&self.order);
        }
    }
}

/// Listens to the announcements for the life of the gateway: wakes the
/// long polls and the integration feed's readers, and passes the changes
/// to the dashboard's feed.
pub fn spawn_listener(state: AppState) {
    let mut announcements = state.log.announcements();
    tokio::spawn(async move {
        loop {
            let announcement = tokio::select! {
                _ = state.shutdown.cancelled() => return,
                heard = announcements.recv() => match heard {
                    Ok(announcement) => announcement,
                    // Skipped ones are found by the waiters' fallback check;
                    // the feed's readers can look at once.
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        state.feed_wake.committed();
                        continue;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
            };
            metrics::counter!(crate::telemetry::metrics::ANNOUNCEMENTS_HEARD).increment(1);
            state.feed_wake.committed();
            if !announcement.is_empty() {
                state.order_watch.heard(&announcement);
                state.dashboard.status_changed(announcement);
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::status::OrderStatus;
    use crate::stream::announce::StatusChange;

    fn announcement(order: OrderId) -> Announcement {
        Arc::from(vec![StatusChange {
            order_id: order,
            status: OrderStatus::Confirmed,
        }])
    }

    #[tokio::test]
    async fn an_announcement_wakes_its_order_waiters_only() {
        let watch = OrderWatch::default();
        let (mine, other) = (OrderId::new(), OrderId::new());
        let watching = watch.watch(mine);
        // Armed before the announcement: it is not lost even though the
        // await comes after it.
        let changed = watching.changed(Duration::from_secs(10));
        watch.heard(&announcement(other));
        watch.heard(&announcement(mine));
        tokio::time::timeout(Duration::from_secs(1), changed)
            .await
            .expect("woken by the announcement");
    }

    #[tokio::test(start_paused = true)]
    async fn without_an_announcement_the_wait_ends_at_its_limit() {
        let watch = OrderWatch::default();
        let watching = watch.watch(OrderId::new());
        let started = tokio::time::Instant::now();
        watching.changed(FALLBACK_CHECK).await;
        assert!(started.elapsed() >= FALLBACK_CHECK);
    }

    #[test]
    fn entries_go_with_their_last_waiter() {
        let watch = OrderWatch::default();
        let order = OrderId::new();
        let first = watch.watch(order);
        let second = watch.watch(order);
        assert_eq!(watch.len(), 1);
        drop(first);
        assert_eq!(watch.len(), 1);
        drop(second);
        assert!(watch.is_empty());
    }
}
