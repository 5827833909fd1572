//! A token bucket per connection, plus flood detection.
//!
//! Every inbound data message takes one token; tokens refill at `rate` per
//! second up to `burst`. A message with no token is rejected (the client
//! gets `rate_limited`). A client that keeps sending regardless — more than
//! `FLOOD_FACTOR × burst` rejections within one second — is a flood, and the
//! connection is closed with 1008.

use std::time::{Duration, Instant};

/// Rejections within one second, in multiples of the burst, that make a flood.
pub const FLOOD_FACTOR: u32 = 10;

/// What to do with one inbound message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Within the limit.
    Yes,
    /// Over the limit: drop it and tell the client.
    Reject,
    /// Over the limit so persistently that the connection should be closed.
    Flood,
}

/// One connection's bucket.
#[derive(Debug, Clone)]
pub struct RateLimiter {
    tokens: f32,
    last: Instant,
    rejected: u32,
    window: Instant,
}

impl RateLimiter {
    /// A full bucket.
    pub fn new(burst: u32, now: Instant) -> RateLimiter {
        RateLimiter {
            tokens: burst as f32,
            last: now,
            rejected: 0,
            window: now,
        }
    }

    /// Takes a token for one message at `now`.
    pub fn admit(&mut self, rate: u32, burst: u32, now: Instant) -> Admit {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f32();
        self.last = now;
        self.tokens = (self.tokens + elapsed * rate as f32).min(burst as f32);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Admit::Yes;
        }
        if now.saturating_duration_since(self.window) >= Duration::from_secs(1) {
            self.window = now;
            self.rejected = 0;
        }
        self.rejected += 1;
        if self.rejected > FLOOD_FACTOR.saturating_mul(burst) {
            Admit::Flood
        } else {
            Admit::Reject
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_the_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut r = RateLimiter::new(4, t0);
        for _ in 0..4 {
            assert_eq!(r.admit(2, 4, t0), Admit::Yes);
        }
        assert_eq!(r.admit(2, 4, t0), Admit::Reject);
        // Half a second at 2/s refills one token.
        let t1 = t0 + Duration::from_millis(500);
        assert_eq!(r.admit(2, 4, t1), Admit::Yes);
        assert_eq!(r.admit(2, 4, t1), Admit::Reject);
        // The bucket never holds more than the burst.
        let t2 = t1 + Duration::from_secs(60);
        for _ in 0..4 {
            assert_eq!(r.admit(2, 4, t2), Admit::Yes);
        }
        assert_eq!(r.admit(2, 4, t2), Admit::Reject);
    }

    #[test]
    fn persistent_flooding_is_detected_within_a_second() {
        let t0 = Instant::now();
        let mut r = RateLimiter::new(2, t0);
        let mut verdicts = Vec::new();
        for _ in 0..30 {
            verdicts.push(r.admit(1, 2, t0));
        }
        assert_eq!(verdicts[..2], [Admit::Yes, Admit::Yes]);
        assert!(verdicts[2..22].iter().all(|v| *v == Admit::Reject));
        assert_eq!(verdicts[22], Admit::Flood);
    }
}
