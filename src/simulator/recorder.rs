//! What a load run records as it goes: each request's outcome and
//! latency, and each accepted order's decision as the dashboard feed
//! reports it; bounded, whatever the run's length.

use super::schedule::corrected_latency;
use super::summary::{latency_histogram, record};
use crate::domain::status::OrderStatus;
use hdrhistogram::Histogram;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;
use uuid::Uuid;

/// The kind of a request, as the summary counts them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Verb {
    Place,
    Ship,
    Cancel,
    Partial,
    Return,
    Adjust,
}

impl Verb {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Verb::Place => "place",
            Verb::Ship => "ship",
            Verb::Cancel => "cancel",
            Verb::Partial => "partial",
            Verb::Return => "return",
            Verb::Adjust => "adjust",
        }
    }
}

/// How a request ended: its HTTP status, or why there was none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Answer {
    Status(u16),
    Timeout,
    Connect,
    Error,
}

/// A request's kind and how it ended: what the summary counts, shown as
/// `place 202` or `ship timeout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Outcome {
    pub verb: Verb,
    pub answer: Answer,
}

impl Outcome {
    pub(super) fn accepted(self) -> bool {
        self.answer == Answer::Status(202)
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let verb = self.verb.as_str();
        match self.answer {
            Answer::Status(code) => write!(f, "{verb} {code}"),
            Answer::Timeout => write!(f, "{verb} timeout"),
            Answer::Connect => write!(f, "{verb} connect"),
            Answer::Error => write!(f, "{verb} error"),
        }
    }
}

/// Orders tracked for their decision at most (beyond, they are not timed).
const MAX_TRACKED: usize = 200_000;
/// Confirmed orders kept for the warehouse and customers to act on.
const MAX_CONFIRMED: usize = 10_000;

/// Accepted orders waiting for their decision, and the decisions heard.
#[derive(Default)]
pub(super) struct Decisions {
    /// Accepted, not decided yet: when each was due.
    pub pending: HashMap<Uuid, Instant>,
    /// Decisions heard before their order's 202 was read (the WebSocket
    /// can beat the HTTP answer): when each was heard.
    pub early: HashMap<Uuid, Instant>,
    pub latency: Option<Histogram<u64>>,
    pub confirmed: VecDeque<Uuid>,
    /// The product of each accepted order's first line and the order's
    /// units (for a partial shipment); cleared when it holds MAX_TRACKED.
    pub first_product: HashMap<Uuid, (Uuid, i64)>,
    /// Orders shipped (wholly or in part), with a product shipped: a
    /// return may take one back. The newest MAX_CONFIRMED.
    pub shipped: VecDeque<(Uuid, Uuid)>,
}

impl Decisions {
    pub(super) fn accepted(&mut self, order: Uuid, due: Instant) {
        let latency = self.latency.get_or_insert_with(latency_histogram);
        match self.early.remove(&order) {
            Some(heard) => record(latency, corrected_latency(due, heard)),
            None if self.pending.len() < MAX_TRACKED => {
                self.pending.insert(order, due);
            }
            None => {}
        }
    }

    pub(super) fn note_first_product(&mut self, order: Uuid, product: Uuid, units: i64) {
        if self.first_product.len() >= MAX_TRACKED {
            self.first_product.clear();
        }
        self.first_product.insert(order, (product, units));
    }

    pub(super) fn shipped(&mut self, order: Uuid, product: Uuid) {
        if self.shipped.len() == MAX_CONFIRMED {
            self.shipped.pop_front();
        }
        self.shipped.push_back((order, product));
    }

    pub(super) fn heard(&mut self, order: Uuid, status: OrderStatus, at: Instant) {
        if status == OrderStatus::Confirmed {
            if self.confirmed.len() == MAX_CONFIRMED {
                self.confirmed.pop_front();
            }
            self.confirmed.push_back(order);
        }
        if !matches!(status, OrderStatus::Confirmed | OrderStatus::Rejected) {
            return;
        }
        match self.pending.remove(&order) {
            Some(due) => record(
                self.latency.get_or_insert_with(latency_histogram),
                corrected_latency(due, at),
            ),
            None => {
                // Another client's order, or ours before its 202: bounded.
                if self.early.len() >= MAX_TRACKED {
                    self.early.clear();
                }
                self.early.insert(order, at);
            }
        }
    }
}

/// Everything the run's tasks record into.
pub(super) struct Recorder {
    pub started: Instant,
    /// Every latency but the most recent ones, which `recent` holds until
    /// the next progress line folds them in: a request records once.
    pub latency: Mutex<Histogram<u64>>,
    /// Since the last progress line.
    pub recent: Mutex<Histogram<u64>>,
    /// The latencies of the answers that took the request (2xx) only: at
    /// capacity the fast refusals would flatter the whole run's.
    pub accepted_latency: Mutex<Histogram<u64>>,
    pub outcomes: Mutex<BTreeMap<Outcome, u64>>,
    pub accepted: AtomicU64,
    pub orders_sent: AtomicU64,
    pub errors: AtomicU64,
    pub purchase_orders_received: AtomicU64,
    pub decisions: Mutex<Decisions>,
    /// Whether the dashboard feed answered (else no decision latency).
    pub feed_connected: std::sync::atomic::AtomicBool,
}

impl Recorder {
    pub(super) fn new() -> Recorder {
        Recorder {
            started: Instant::now(),
            latency: Mutex::new(latency_histogram()),
            recent: Mutex::new(latency_histogram()),
            accepted_latency: Mutex::new(latency_histogram()),
            outcomes: Mutex::default(),
            accepted: AtomicU64::new(0),
            orders_sent: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            purchase_orders_received: AtomicU64::new(0),
            decisions: Mutex::default(),
            feed_connected: Default::default(),
        }
    }

    /// Folds the recent latencies into the run's; returns the run's count.
    pub(super) fn fold_recent(&self, recent: &mut Histogram<u64>) -> u64 {
        let mut latency = self.latency.lock().expect("lock");
        latency
            .add(&*recent)
            .expect("histograms of the same bounds add");
        recent.reset();
        latency.len()
    }

    pub(super) fn outcome(&self, outcome: Outcome, latency: Duration) {
        record(&mut self.recent.lock().expect("lock"), latency);
        if matches!(outcome.answer, Answer::Status(200..=299)) {
            record(&mut self.accepted_latency.lock().expect("lock"), latency);
        }
        *self
            .outcomes
            .lock()
            .expect("lock")
            .entry(outcome)
            .or_insert(0) += 1;
    }

    /// The outcomes counted so far, by their labels.
    pub(super) fn outcomes_by_label(
        &self,
        keep: impl Fn(Outcome) -> bool,
    ) -> BTreeMap<String, u64> {
        self.outcomes
            .lock()
            .expect("lock")
            .iter()
            .filter(|(outcome, _)| keep(**outcome))
            .map(|(outcome, n)| (outcome.to_string(), *n))
            .collect()
    }
}
