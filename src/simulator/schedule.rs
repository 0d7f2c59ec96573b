//! The load generator's clock and dice: when each request of an open-loop
//! run is due, how its latency is measured, and which product an order
//! names.
//!
//! Open loop (the `steady` profile) sends request `i` at `start + i/rate`,
//! whatever happened to the ones before, and measures each latency from
//! that *intended* time, not from when it actually left. When the gateway
//! stalls, the requests that should have gone out meanwhile wait, and their
//! wait is counted: the stall shows in the percentiles instead of being
//! hidden ("coordinated omission", as wrk2 corrects it).

use rand::Rng;
use rand_distr::{Distribution, Zipf};
use std::time::Duration;
use tokio::time::Instant;

/// The intended send times of an open-loop run at `rate` requests/s.
#[derive(Debug, Clone, Copy)]
pub struct OpenLoop {
    start: Instant,
    period_nanos: f64,
}

impl OpenLoop {
    pub fn new(start: Instant, rate: u32) -> OpenLoop {
        OpenLoop {
            start,
            period_nanos: 1e9 / f64::from(rate.max(1)),
        }
    }

    /// When request `i` (from 0) is due.
    pub fn intended(&self, i: u64) -> Instant {
        self.start + Duration::from_nanos((i as f64 * self.period_nanos) as u64)
    }
}

/// A request's latency as an open-loop run counts it: from when it was due
/// to when its answer came, however late it was sent.
pub fn corrected_latency(intended: Instant, answered: Instant) -> Duration {
    answered.saturating_duration_since(intended)
}

/// Which product an order line names: a few products sell most (Zipf with
/// exponent `ZIPF_EXPONENT` over the popularity ranks), as in real shops.
#[derive(Debug, Clone)]
pub struct Popularity {
    zipf: Zipf<f64>,
}

/// Rank 1 sells about twice as much as rank 2, three times rank 3, ...
pub const ZIPF_EXPONENT: f64 = 1.0;

impl Popularity {
    /// Over `products` products (at least one).
    pub fn new(products: usize) -> Popularity {
        Popularity {
            zipf: Zipf::new(products.max(1) as f64, ZIPF_EXPONENT)
                .expect("n >= 1 and a positive exponent are valid"),
        }
    }

    /// An index into the product list, 0 the most popular.
    pub fn pick(&self, rng: &mut impl Rng) -> usize {
        self.zipf.sample(rng) as usize - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn requests_are_due_evenly_from_the_start() {
        let start = Instant::now();
        let schedule = OpenLoop::new(start, 200);
        assert_eq!(schedule.intended(0), start);
        assert_eq!(schedule.intended(1) - start, Duration::from_millis(5));
        assert_eq!(schedule.intended(200) - start, Duration::from_secs(1));
        // No drift over a long run: the 1,000,000th is due at exactly 5,000 s.
        assert_eq!(
            schedule.intended(1_000_000) - start,
            Duration::from_secs(5_000)
        );
    }

    #[test]
    fn a_stall_counts_against_every_request_due_during_it() {
        // 100/s; the gateway stalls for 1 s from the start, then answers
        // every waiting request at once. A closed-loop tool would see one
        // slow request; the open loop sees the 100 that were due, each
        // late by the rest of the stall.
        let start = Instant::now();
        let schedule = OpenLoop::new(start, 100);
        let answered = start + Duration::from_secs(1);
        let latencies: Vec<Duration> = (0..100)
            .map(|i| corrected_latency(schedule.intended(i), answered))
            .collect();
        assert_eq!(latencies[0], Duration::from_secs(1));
        assert_eq!(latencies[50], Duration::from_millis(500));
        assert_eq!(latencies[99], Duration::from_millis(10));
        let mean = latencies.iter().sum::<Duration>() / 100;
        assert_eq!(mean, Duration::from_millis(505));
        // An answer before it was due (clock granularity) is no latency.
        assert_eq!(
            corrected_latency(schedule.intended(500), answered),
            Duration::ZERO
        );
    }

    #[test]
    fn popularity_is_skewed_and_reproducible_with_a_seed() {
        let popularity = Popularity::new(10);
        let mut counts = [0u32; 10];
        let mut rng = StdRng::seed_from_u64(42);
        for _ in 0..100_000 {
            counts[popularity.pick(&mut rng)] += 1;
        }
        // Zipf(1) over 10: rank 1 takes 1/H(10) = 34% of the picks, rank
        // 2 half of that, rank 10 a tenth.
        let share = |i: usize| f64::from(counts[i]) / 100_000.0;
        assert!((share(0) - 0.341).abs() < 0.01, "{counts:?}");
        assert!((share(1) - 0.171).abs() < 0.01, "{counts:?}");
        assert!((share(9) - 0.034).abs() < 0.005, "{counts:?}");
        assert!(counts.windows(2).all(|w| w[0] > w[1]), "{counts:?}");

        let mut again = StdRng::seed_from_u64(42);
        let mut first = StdRng::seed_from_u64(42);
        let a: Vec<usize> = (0..50).map(|_| popularity.pick(&mut first)).collect();
        let b: Vec<usize> = (0..50).map(|_| popularity.pick(&mut again)).collect();
        assert_eq!(a, b, "the same seed, the same picks");
    }

    #[test]
    fn one_product_is_always_picked() {
        let popularity = Popularity::new(1);
        let mut rng = StdRng::seed_from_u64(1);
        assert!((0..100).all(|_| popularity.pick(&mut rng) == 0));
    }
}
