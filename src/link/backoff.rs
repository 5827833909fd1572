//! Reconnect delays: capped exponential backoff with full jitter, so many
//! nodes that lost the same Redis do not reconnect in lockstep.

use std::time::Duration;

/// Delay before the first retry.
pub const BASE: Duration = Duration::from_millis(100);
/// Longest delay between retries.
pub const CAP: Duration = Duration::from_secs(5);

/// Backoff state of one connection.
#[derive(Debug)]
pub struct Backoff {
    attempt: u32,
    seed: u64,
}

impl Backoff {
    /// A fresh backoff; `seed` varies the jitter between instances.
    pub fn new(seed: u64) -> Backoff {
        Backoff {
            attempt: 0,
            seed: seed | 1,
        }
    }

    /// The next delay: uniform in [0, min(CAP, BASE·2^attempt)].
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = BASE.saturating_mul(1u32 << self.attempt.min(16)).min(CAP);
        self.attempt = self.attempt.saturating_add(1);
        // xorshift64: plenty for jitter, no dependency.
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let fraction = (self.seed >> 11) as f64 / (1u64 << 53) as f64;
        ceiling.mul_f64(fraction).max(Duration::from_millis(10))
    }

    /// Connected again: start over.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_the_cap_with_jitter() {
        let mut b = Backoff::new(7);
        let delays: Vec<Duration> = (0..20).map(|_| b.next_delay()).collect();
        assert!(delays.iter().all(|d| *d <= CAP));
        assert!(delays[0] <= BASE);
        assert!(delays.windows(2).any(|w| w[0] != w[1]), "jittered");
        b.reset();
        assert!(b.next_delay() <= BASE);
    }
}
