//! What a load run measured: requests by outcome, latencies in HDR
//! histograms (microsecond resolution, 3 significant digits, as wrk2 and
//! k6 keep them), and the summary printed at the end, as text or JSON.

use hdrhistogram::Histogram;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// Latencies from 1 µs to 10 minutes, 3 significant digits.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("static bounds are valid")
}

pub fn record(histogram: &mut Histogram<u64>, latency: Duration) {
    histogram.saturating_record((latency.as_micros() as u64).max(1));
}

/// Percentiles of one histogram, in milliseconds.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Percentiles {
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p99_9_ms: f64,
    pub max_ms: f64,
}

impl Percentiles {
    pub fn of(histogram: &Histogram<u64>) -> Option<Percentiles> {
        if histogram.is_empty() {
            return None;
        }
        let ms = |micros: u64| micros as f64 / 1000.0;
        Some(Percentiles {
            count: histogram.len(),
            p50_ms: ms(histogram.value_at_quantile(0.50)),
            p90_ms: ms(histogram.value_at_quantile(0.90)),
            p99_ms: ms(histogram.value_at_quantile(0.99)),
            p99_9_ms: ms(histogram.value_at_quantile(0.999)),
            max_ms: ms(histogram.max()),
        })
    }
}

/// The end-of-run summary (`--report json` prints it as JSON).
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub profile: String,
    /// Open loop: the rate asked for; closed loop: null.
    pub target_rate: Option<u32>,
    /// Closed loop: connections; open loop: the most requests in flight.
    pub concurrency: usize,
    pub seed: u64,
    pub elapsed_s: f64,
    /// Every request sent, by what it did and how it was answered
    /// (`place 202`, `ship 409`, `cancel error`, ...).
    pub requests: BTreeMap<String, u64>,
    pub requests_total: u64,
    /// Requests per second over the run.
    pub achieved_rate: f64,
    pub orders_accepted: u64,
    /// Answers that were neither 2xx nor 4xx (5xx, timeouts, refused
    /// connections).
    pub errors: u64,
    /// Request latency; open loop: from each request's intended send time.
    pub latency: Option<Percentiles>,
    /// Request latency of the answers that took the request (2xx) only.
    pub accepted_latency: Option<Percentiles>,
    /// From an order's POST (its intended time) to its decision heard on
    /// the dashboard's WebSocket; null when the feed was unreachable.
    pub decision_latency: Option<Percentiles>,
    /// Accepted orders whose decision was not heard by the end of the run.
    pub decisions_missing: u64,
    pub purchase_orders_received: u64,
}

impl Summary {
    pub fn text(&self) -> String {
        let mut out = String::new();
        let rate = match self.target_rate {
            Some(rate) => format!("open loop at {rate}/s"),
            None => format!("closed loop, {} connections", self.concurrency),
        };
        out.push_str(&format!(
            "profile {} ({rate}), seed {}, {:.1} s\n",
            self.profile, self.seed, self.elapsed_s
        ));
        out.push_str(&format!(
            "requests: {} ({:.0}/s), orders accepted: {}, errors: {}, purchase orders received: {}\n",
            self.requests_total,
            self.achieved_rate,
            self.orders_accepted,
            self.errors,
            self.purchase_orders_received
        ));
        for (outcome, count) in &self.requests {
            out.push_str(&format!("  {outcome:<16} {count}\n"));
        }
        let line = |name: &str, p: &Option<Percentiles>| {
            match p {
            Some(p) => format!(
                "{name:<17} p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms  max {:.2} ms  ({} samples)\n",
                p.p50_ms, p.p90_ms, p.p99_ms, p.p99_9_ms, p.max_ms, p.count
            ),
            None => format!("{name:<17} none measured\n"),
        }
        };
        out.push_str(&line("request latency", &self.latency));
        if self.accepted_latency.as_ref().map(|p| p.count) != self.latency.as_ref().map(|p| p.count)
        {
            out.push_str(&line("  of those 2xx", &self.accepted_latency));
        }
        out.push_str(&line("decision latency", &self.decision_latency));
        if self.decisions_missing > 0 {
            out.push_str(&format!(
                "decisions not heard by the end: {}\n",
                self.decisions_missing
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_from_the_histogram() {
        let mut histogram = latency_histogram();
        assert_eq!(Percentiles::of(&histogram), None);
        for ms in 1..=1000u64 {
            record(&mut histogram, Duration::from_millis(ms));
        }
        let p = Percentiles::of(&histogram).unwrap();
        assert_eq!(p.count, 1000);
        assert!((p.p50_ms - 500.0).abs() < 1.0, "{p:?}");
        assert!((p.p99_ms - 990.0).abs() < 1.0, "{p:?}");
        assert!((p.max_ms - 1000.0).abs() < 1.0, "{p:?}");
    }
}
