//! Admission against `--max-connections`: the acceptor takes a [`Permit`]
//! for each connection, and the permit gives its place back when it is
//! dropped, wherever the connection ends — no path can leak a count.
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
use std::sync::Arc;
use std::time::Duration;

/// Connections over the cap held at once to be told 1013.
pub(crate) const MAX_REFUSING: usize = 32;
/// Time a connection over the cap has to send its request.
pub(crate) const REFUSING_HANDSHAKE: Duration = Duration::from_secs(2);

/// What a connection was admitted as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ticket {
    /// Under the cap: a full connection.
    Counted,
    /// Over the cap: served a probe or refused with 1013 after its upgrade.
    Refusing,
}

/// A connection's place in the node's counts, released on drop (like
/// tokio's `OwnedSemaphorePermit`). One pointer: every `Conn` holds one.
#[derive(Debug)]
pub(crate) struct Permit {
    count: Arc<Count>,
}

impl Permit {
    /// What the connection was admitted as.
    pub fn ticket(&self) -> Ticket {
        self.count.ticket
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.count.held.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Connections held of one kind.
#[derive(Debug)]
struct Count {
    held: AtomicUsize,
    ticket: Ticket,
}

impl Count {
    fn new(ticket: Ticket) -> Arc<Count> {
        Arc::new(Count {
            held: AtomicUsize::new(0),
            ticket,
        })
    }

    /// Takes a place if fewer than `max` are held.
    fn take(self: &Arc<Count>, max: usize) -> Option<Permit> {
        if self.held.fetch_add(1, Ordering::Relaxed) < max {
            return Some(Permit { count: self.clone() });
        }
        self.held.fetch_sub(1, Ordering::Relaxed);
        None
    }
}

/// The node's connection counts.
#[derive(Debug)]
pub(crate) struct Admission {
    max: usize,
    open: Arc<Count>,
    refusing: Arc<Count>,
}

impl Admission {
    /// Admission for at most `max` counted connections.
    pub fn new(max: usize) -> Admission {
        Admission {
            max,
            open: Count::new(Ticket::Counted),
            refusing: Count::new(Ticket::Refusing),
        }
    }

    /// Admits a new connection; `None` means close it now.
    pub fn admit(&self) -> Option<Permit> {
        self.open.take(self.max).or_else(|| self.refusing.take(MAX_REFUSING))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ticket(p: &Option<Permit>) -> Option<Ticket> {
        p.as_ref().map(Permit::ticket)
    }

    #[test]
    fn over_the_cap_a_few_are_held_to_be_refused_and_the_rest_closed() {
        let a = Arc::new(Admission::new(2));
        let first = a.admit();
        let _second = a.admit();
        assert_eq!(ticket(&first), Some(Ticket::Counted));
        let mut refusing: Vec<_> = (0..MAX_REFUSING).map(|_| a.admit()).collect();
        assert!(refusing.iter().all(|p| ticket(p) == Some(Ticket::Refusing)));
        assert!(a.admit().is_none());
        refusing.pop();
        assert_eq!(
            ticket(&a.admit()),
            Some(Ticket::Refusing),
            "a dropped permit frees its place"
        );
        drop(first);
        assert_eq!(ticket(&a.admit()), Some(Ticket::Counted));
    }

    #[test]
    fn every_permit_dropped_leaves_the_counts_at_zero() {
        let a = Arc::new(Admission::new(1));
        let permits: Vec<_> = (0..10).filter_map(|_| a.admit()).collect();
        assert_eq!(permits.len(), 1 + MAX_REFUSING.min(9));
        drop(permits);
        assert_eq!(a.open.held.load(Ordering::Relaxed), 0);
        assert_eq!(a.refusing.held.load(Ordering::Relaxed), 0);
    }
}
