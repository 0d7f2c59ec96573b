//! Announcements: the orders whose status a worker has just committed,
//! told to every gateway the moment the transaction commits, so a client
//! waiting on an order (the long poll, the dashboard) hears of its decision
//! at once instead of at its next poll of the read model. Every committed
//! batch is announced, with no change if it changed no status: a reader of
//! the integration feed waits for the archive to grow.
//!
//! Within one process (the embedded log) they go through a broadcast
//! channel; across processes (Valkey) through Valkey pub/sub. They are best
//! effort by design: the read model stays the truth, and a waiter that
//! misses one (a subscriber reconnecting, a lagging receiver) finds the
//! decision at its next fallback check.

use crate::domain::status::OrderStatus;
use crate::domain::OrderId;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use tokio::sync::broadcast;

/// One order's new status, as committed to the read model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StatusChange {
    pub order_id: OrderId,
    pub status: OrderStatus,
}

/// What one committed batch changed.
pub type Announcement = Arc<[StatusChange]>;

/// Announcements a receiver may fall behind by before it skips the oldest.
const BUFFERED: usize = 1024;

/// The in-process side of announcements: what this process heard, from its
/// own workers or from another process's, handed to every receiver.
#[derive(Debug, Clone)]
pub struct LocalAnnouncements {
    sender: broadcast::Sender<Announcement>,
}

impl Default for LocalAnnouncements {
    fn default() -> LocalAnnouncements {
        LocalAnnouncements {
            sender: broadcast::channel(BUFFERED).0,
        }
    }
}

impl LocalAnnouncements {
    pub fn send(&self, announcement: Announcement) {
        // No receiver (no gateway in this process) is not an error.
        let _ = self.sender.send(announcement);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Announcement> {
        self.sender.subscribe()
    }

    pub fn has_receivers(&self) -> bool {
        self.sender.receiver_count() > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announcements_round_trip_as_json() {
        let change = StatusChange {
            order_id: OrderId::new(),
            status: OrderStatus::Confirmed,
        };
        let json = serde_json::to_string(&[change]).unwrap();
        assert!(json.contains("\"CONFIRMED\""), "{json}");
        let back: Vec<StatusChange> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, vec![change]);
    }
}
