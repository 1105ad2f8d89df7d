//! Reconnect back-off: 100 ms doubling to 5 s, each delay shortened by up
//! to a fifth at random, so that the workers of many hosts that lost the
//! same Redis do not knock on it in lockstep when it comes back.
//!
//! Pure: no clock and no random number generator inside. The caller passes
//! `now` (ms on its monotonic clock) and a seed (say, the pid mixed with
//! the start time); the jitter is a hash of the seed and the attempt
//! number, so a run can be replayed exactly in tests.
//!
//! The delay is reset by [`Backoff::succeeded`], which the caller invokes
//! when the link is `Ready` (handshake done), not merely when TCP connects:
//! a Redis that accepts and then refuses the handshake must still be
//! retried slowly.

/// First delay after a failure.
pub const BACKOFF_MIN_MS: u64 = 100;
/// Longest delay: a Redis back from a restart is found within 5 s.
pub const BACKOFF_MAX_MS: u64 = 5_000;

#[derive(Clone, Debug)]
pub struct Backoff {
    seed: u64,
    /// Failures since the last success.
    failures: u32,
}

impl Backoff {
    pub fn new(seed: u64) -> Backoff {
        Backoff { seed, failures: 0 }
    }

    /// Failures since the last success (for `/_status`).
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// A connection attempt failed or an established link was lost: when
    /// to try again. Each call doubles the nominal delay up to the cap.
    pub fn failed(&mut self, now_ms: u64) -> u64 {
        let nominal = BACKOFF_MIN_MS.saturating_mul(1 << self.failures.min(16)).min(BACKOFF_MAX_MS);
        // Jitter only shortens, so the cap holds and the first retry stays
        // near 100 ms: up to a fifth off.
        let jitter = mix(self.seed ^ u64::from(self.failures)) % (nominal / 5 + 1);
        self.failures = self.failures.saturating_add(1);
        now_ms.saturating_add(nominal - jitter)
    }

    /// The handshake completed: the next failure starts from the minimum.
    pub fn succeeded(&mut self) {
        self.failures = 0;
    }
}

/// SplitMix64's finaliser: a cheap, well-spread hash of 64 bits.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_the_cap_with_bounded_jitter() {
        let mut b = Backoff::new(42);
        let delays: Vec<u64> = (0..10).map(|_| b.failed(1_000) - 1_000).collect();
        let nominal = [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000, 5000];
        for (d, n) in delays.iter().zip(nominal) {
            assert!(*d <= n && *d >= n - n / 5, "{d} vs {n}");
        }
        assert_eq!(b.failures(), 10);
    }

    #[test]
    fn success_resets() {
        let mut b = Backoff::new(7);
        for _ in 0..5 {
            b.failed(0);
        }
        b.succeeded();
        assert!(b.failed(0) <= BACKOFF_MIN_MS);
    }

    #[test]
    fn seeds_spread_and_replay() {
        let first = |seed| Backoff::new(seed).failed(0);
        assert_eq!(first(1), first(1));
        let distinct: std::collections::HashSet<u64> = (0..50).map(|s| Backoff::new(s).failed(0) + 1000).collect();
        assert!(distinct.len() > 10, "{distinct:?}");
        // Many failures never overflow or exceed the cap.
        let mut b = Backoff::new(3);
        for _ in 0..1000 {
            assert!(b.failed(0) <= BACKOFF_MAX_MS);
        }
        assert_eq!(b.failed(u64::MAX), u64::MAX);
    }
}
