//! The per-subscription webhook series (`streamstock_webhook_lag_events`,
//! `_lag_seconds`, `_deliveries_total`), kept apart from the recorder: the
//! `metrics` recorder never forgets a label set, so a series per
//! subscription would outlive every subscription deleted, paused or moved
//! to another worker, and `/metrics` would grow with the history of
//! subscriptions. Here a series lives exactly as long as the task that
//! delivers its subscription in this process, so there are at most
//! `--max-subscriptions` of them; a counter starts again from zero when its
//! subscription comes back (a counter reset, which Prometheus' `rate` and
//! `increase` expect).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

pub const LAG_EVENTS: &str = "streamstock_webhook_lag_events";
pub const LAG_SECONDS: &str = "streamstock_webhook_lag_seconds";
pub const DELIVERIES: &str = "streamstock_webhook_deliveries_total";

#[derive(Default)]
struct Row {
    /// Which handle owns the row: a stale task of the same subscription
    /// ending late must not remove its successor's row.
    owner: u64,
    lag_events: i64,
    lag_seconds: f64,
    delivered: u64,
    failed: u64,
}

static ROWS: Mutex<BTreeMap<String, Row>> = Mutex::new(BTreeMap::new());
static NEXT_OWNER: AtomicU64 = AtomicU64::new(1);

fn rows() -> std::sync::MutexGuard<'static, BTreeMap<String, Row>> {
    // A panic while holding the lock leaves plain numbers behind: usable.
    ROWS.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// One subscription's series, held by the task delivering it: they are
/// shown while it lives and removed when it is dropped.
pub struct SubscriptionSeries {
    subscription: String,
    owner: u64,
}

impl SubscriptionSeries {
    pub fn open(subscription: String) -> SubscriptionSeries {
        let owner = NEXT_OWNER.fetch_add(1, Ordering::Relaxed);
        rows().insert(
            subscription.clone(),
            Row {
                owner,
                ..Row::default()
            },
        );
        SubscriptionSeries {
            subscription,
            owner,
        }
    }

    fn update(&self, change: impl FnOnce(&mut Row)) {
        if let Some(row) = rows().get_mut(&self.subscription) {
            if row.owner == self.owner {
                change(row);
            }
        }
    }

    /// How far behind the head its deliveries are: in archive positions,
    /// and the time the oldest undelivered event has waited.
    pub fn set_lag(&self, events: i64, seconds: f64) {
        self.update(|row| {
            row.lag_events = events;
            row.lag_seconds = seconds;
        });
    }

    /// Counts one delivery attempt: answered 2xx or failed.
    pub fn count_attempt(&self, delivered: bool) {
        self.update(|row| {
            if delivered {
                row.delivered += 1;
            } else {
                row.failed += 1;
            }
        });
    }
}

impl Drop for SubscriptionSeries {
    fn drop(&mut self) {
        let mut rows = rows();
        if rows
            .get(&self.subscription)
            .is_some_and(|row| row.owner == self.owner)
        {
            rows.remove(&self.subscription);
        }
    }
}

/// The series in Prometheus' text format, to follow the recorder's.
pub fn render() -> String {
    let rows = rows();
    let mut text = String::new();
    // (Writing to a String cannot fail.)
    let _ = writeln!(
        text,
        "# HELP {LAG_EVENTS} Archive positions a subscription's deliveries are behind the head, by subscription\n# TYPE {LAG_EVENTS} gauge"
    );
    for (subscription, row) in rows.iter() {
        let _ = writeln!(
            text,
            "{LAG_EVENTS}{{subscription=\"{subscription}\"}} {}",
            row.lag_events
        );
    }
    let _ = writeln!(
        text,
        "# HELP {LAG_SECONDS} How long the oldest event a subscription has yet to deliver has waited, by subscription\n# TYPE {LAG_SECONDS} gauge"
    );
    for (subscription, row) in rows.iter() {
        let _ = writeln!(
            text,
            "{LAG_SECONDS}{{subscription=\"{subscription}\"}} {}",
            row.lag_seconds
        );
    }
    let _ = writeln!(
        text,
        "# HELP {DELIVERIES} Webhook delivery attempts by subscription and outcome (delivered: answered 2xx; failed), while this process delivers the subscription\n# TYPE {DELIVERIES} counter"
    );
    for (subscription, row) in rows.iter() {
        for (outcome, n) in [("delivered", row.delivered), ("failed", row.failed)] {
            let _ = writeln!(
                text,
                "{DELIVERIES}{{subscription=\"{subscription}\",outcome=\"{outcome}\"}} {n}"
            );
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_series_lives_as_long_as_its_handle() {
        let first = SubscriptionSeries::open("s-test-1".into());
        first.set_lag(7, 1.5);
        first.count_attempt(true);
        first.count_attempt(false);
        let text = render();
        assert!(text.contains("streamstock_webhook_lag_events{subscription=\"s-test-1\"} 7"));
        assert!(text.contains("streamstock_webhook_lag_seconds{subscription=\"s-test-1\"} 1.5"));
        assert!(text.contains(
            "streamstock_webhook_deliveries_total{subscription=\"s-test-1\",outcome=\"failed\"} 1"
        ));
        // A successor of the same subscription takes the row over; the
        // stale handle's end leaves it be.
        let second = SubscriptionSeries::open("s-test-1".into());
        drop(first);
        assert!(render().contains("{subscription=\"s-test-1\"} 0"));
        drop(second);
        assert!(!render().contains("s-test-1"));
    }
}
