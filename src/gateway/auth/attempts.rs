//! Failed token attempts, counted per address over a minute: past the
//! bound the address gets 429 with `Retry-After` until its minute is up,
//! whatever it presents, so guessing tokens costs a minute per few dozen
//! guesses. The table is bounded: addresses whose minute is over are
//! dropped when it fills, and beyond its size new addresses go uncounted
//! rather than grow memory.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failed attempts an address may make in a window.
pub const FAILURES_PER_WINDOW: u32 = 20;
pub const WINDOW: Duration = Duration::from_secs(60);
/// Addresses counted at once, at most.
const MAX_ADDRESSES: usize = 65_536;

#[derive(Debug, Default)]
pub struct FailedAttempts {
    by_address: Mutex<HashMap<IpAddr, Window>>,
}

#[derive(Debug, Clone, Copy)]
struct Window {
    started: Instant,
    failures: u32,
}

impl FailedAttempts {
    /// How long `address` must wait, when it is over its bound.
    pub fn blocked_for(&self, address: IpAddr) -> Option<Duration> {
        let by_address = self.by_address.lock().expect("attempts lock");
        let window = by_address.get(&address)?;
        let left = WINDOW.checked_sub(window.started.elapsed())?;
        (window.failures >= FAILURES_PER_WINDOW).then_some(left)
    }

    /// Counts a failed attempt from `address`.
    pub fn failed(&self, address: IpAddr) {
        let mut by_address = self.by_address.lock().expect("attempts lock");
        if by_address.len() >= MAX_ADDRESSES && !by_address.contains_key(&address) {
            by_address.retain(|_, w| w.started.elapsed() < WINDOW);
            if by_address.len() >= MAX_ADDRESSES {
                return;
            }
        }
        let window = by_address.entry(address).or_insert(Window {
            started: Instant::now(),
            failures: 0,
        });
        if window.started.elapsed() >= WINDOW {
            *window = Window {
                started: Instant::now(),
                failures: 0,
            };
        }
        window.failures += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_blocked_past_the_bound_and_others_are_not() {
        let attempts = FailedAttempts::default();
        let guesser = IpAddr::from([127, 0, 0, 2]);
        for _ in 0..FAILURES_PER_WINDOW - 1 {
            attempts.failed(guesser);
        }
        assert!(attempts.blocked_for(guesser).is_none());
        attempts.failed(guesser);
        let wait = attempts.blocked_for(guesser).expect("blocked");
        assert!(wait <= WINDOW && wait > WINDOW - Duration::from_secs(5));
        assert!(attempts.blocked_for(IpAddr::from([127, 0, 0, 3])).is_none());
    }
}
