//! Admission against `--max-connections`, shared by the acceptor (which
//! admits) and the shards (which release).
//!
//! A connection over the cap is not closed at once: it is held until its
//! upgrade so that a browser can read close code 1013, and so that plain
//! HTTP probes still get answers. Those held connections use the file
//! descriptors left above the cap (64 by default, see
//! `config::default_max_connections`), so at most `MAX_REFUSING` are held at
//! a time and each has `REFUSING_HANDSHAKE` to send its request. Beyond
//! that, a connection is closed as soon as it is accepted: a flood of silent
//! sockets over the cap cannot take the descriptors that health probes,
//! `/metrics` and the Redis link need.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Connections over the cap held at once to be told 1013.
pub const MAX_REFUSING: usize = 32;
/// Time a connection over the cap has to send its request.
pub const REFUSING_HANDSHAKE: Duration = Duration::from_secs(2);

/// What a connection was admitted as; given back with `Admission::release`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ticket {
    /// Under the cap: a full connection.
    Counted,
    /// Over the cap: served a probe or refused with 1013 after its upgrade.
    Refusing,
}

/// The node's connection counts.
#[derive(Debug)]
pub struct Admission {
    max: usize,
    open: AtomicUsize,
    refusing: AtomicUsize,
}

impl Admission {
    /// Admission for at most `max` counted connections.
    pub fn new(max: usize) -> Admission {
        Admission {
            max,
            open: AtomicUsize::new(0),
            refusing: AtomicUsize::new(0),
        }
    }

    /// Admits a new connection; `None` means close it now.
    pub fn admit(&self) -> Option<Ticket> {
        if self.open.fetch_add(1, Ordering::Relaxed) < self.max {
            return Some(Ticket::Counted);
        }
        self.open.fetch_sub(1, Ordering::Relaxed);
        if self.refusing.fetch_add(1, Ordering::Relaxed) < MAX_REFUSING {
            return Some(Ticket::Refusing);
        }
        self.refusing.fetch_sub(1, Ordering::Relaxed);
        None
    }

    /// Gives back what `admit` handed out, once the connection is gone.
    pub fn release(&self, ticket: Ticket) {
        let count = match ticket {
            Ticket::Counted => &self.open,
            Ticket::Refusing => &self.refusing,
        };
        count.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn over_the_cap_a_few_are_held_to_be_refused_and_the_rest_closed() {
        let a = Admission::new(2);
        assert_eq!(a.admit(), Some(Ticket::Counted));
        assert_eq!(a.admit(), Some(Ticket::Counted));
        for _ in 0..MAX_REFUSING {
            assert_eq!(a.admit(), Some(Ticket::Refusing));
        }
        assert_eq!(a.admit(), None);
        a.release(Ticket::Refusing);
        assert_eq!(a.admit(), Some(Ticket::Refusing));
        a.release(Ticket::Counted);
        assert_eq!(a.admit(), Some(Ticket::Counted));
    }
}
