//! Admission against `--max-connections` and `--max-connections-per-ip`:
//! the acceptor takes a [`Permit`] for each connection, and the permit
//! gives its places back when it is dropped, wherever the connection ends —
//! no path can leak a count.
//!
//! A connection over a cap is not closed at once: it is held until its
//! upgrade so that a browser can read close code 1013, and so that plain
//! HTTP probes still get answers. Those held connections use the file
//! descriptors left above the cap (64 by default, see
//! `config::default_max_connections`), so at most `MAX_REFUSING` are held at
//! a time and each has `REFUSING_HANDSHAKE` to send its request. Beyond
//! that, a connection is closed as soon as it is accepted. Silent sockets
//! cannot keep that reserve to themselves: a shard holding more than its
//! share of them closes the oldest one that has not sent a byte whenever a
//! new one arrives (`shard::Shard::adopt`), so a probe that speaks gets its
//! answer under any flood of silent sockets.
//!
//! The per-address count is kept only when `--max-connections-per-ip` is
//! set; a connection over it is refused like one over the global cap (its
//! own close reason and drop label), so a single address cannot take the
//! cap from everybody else.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// Connections over the cap held at once to be told 1013.
pub(crate) const MAX_REFUSING: usize = 32;
/// Time a connection over the cap has to send its request.
pub(crate) const REFUSING_HANDSHAKE: Duration = Duration::from_secs(2);

/// What a connection was admitted as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ticket {
    /// Under the caps: a full connection.
    Counted,
    /// Over `--max-connections`: served a probe or refused with 1013 after
    /// its upgrade.
    Refusing,
    /// Over `--max-connections-per-ip`: the same, with its own reason.
    OverIpLimit,
}

/// A connection's places in the node's counts, released on drop (like
/// tokio's `OwnedSemaphorePermit`). Kept inline in every `Conn`: boxed,
/// it cost each connection an allocation of its own.
#[derive(Debug)]
pub(crate) struct Permit {
    held: Held,
}

#[derive(Debug)]
struct Held {
    pool: Arc<AtomicUsize>,
    ticket: Ticket,
    /// From a trusted proxy: the client's address is counted once known.
    proxied: bool,
    /// The client address's count, when one is kept.
    ip: Option<Arc<AtomicUsize>>,
}

impl Permit {
    /// What the connection was admitted as.
    pub fn ticket(&self) -> Ticket {
        self.held.ticket
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.pool.fetch_sub(1, Ordering::Relaxed);
        if let Some(ip) = &self.ip {
            ip.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Takes a place in `pool` if fewer than `max` are held.
fn take(pool: &AtomicUsize, max: usize) -> bool {
    if pool.fetch_add(1, Ordering::Relaxed) < max {
        return true;
    }
    pool.fetch_sub(1, Ordering::Relaxed);
    false
}

/// Connections per client address; entries nobody holds are pruned as the
/// map grows, so it stays proportional to the addresses connected.
#[derive(Debug, Default)]
struct ByIp {
    counts: HashMap<IpAddr, Arc<AtomicUsize>>,
    prune_at: usize,
}

impl ByIp {
    fn count(&mut self, ip: IpAddr) -> Arc<AtomicUsize> {
        if self.counts.len() >= self.prune_at {
            // Only the map holds an entry whose connections are all gone.
            self.counts.retain(|_, c| Arc::strong_count(c) > 1);
            self.prune_at = (self.counts.len() * 2).max(1024);
        }
        self.counts.entry(ip).or_default().clone()
    }
}

/// The node's connection counts.
#[derive(Debug)]
pub(crate) struct Admission {
    max: usize,
    per_ip: Option<usize>,
    open: Arc<AtomicUsize>,
    refusing: Arc<AtomicUsize>,
    /// Locked only by the acceptor, once per accepted connection.
    by_ip: Mutex<ByIp>,
}

impl Admission {
    /// Admission for at most `max` counted connections, and at most
    /// `per_ip` from one address if given.
    pub fn new(max: usize, per_ip: Option<usize>) -> Admission {
        Admission {
            max,
            per_ip,
            open: Arc::default(),
            refusing: Arc::default(),
            by_ip: Mutex::default(),
        }
    }

    /// Admits a new connection from `ip`; `None` means close it now. A
    /// connection from a trusted proxy (`proxied`) is not counted against
    /// the proxy's address: [`Admission::rebind`] counts its client's.
    pub fn admit(&self, ip: IpAddr, proxied: bool) -> Option<Permit> {
        let mut ticket = Ticket::Refusing;
        if proxied {
            if take(&self.open, self.max) {
                let mut permit = self.permit(&self.open, Ticket::Counted, None);
                permit.held.proxied = true;
                return Some(permit);
            }
        } else if let Some(limit) = self.per_ip {
            let count = self.by_ip().count(ip);
            if !take(&count, limit) {
                ticket = Ticket::OverIpLimit;
            } else if take(&self.open, self.max) {
                return Some(self.permit(&self.open, Ticket::Counted, Some(count)));
            } else {
                count.fetch_sub(1, Ordering::Relaxed);
            }
        } else if take(&self.open, self.max) {
            return Some(self.permit(&self.open, Ticket::Counted, None));
        }
        take(&self.refusing, MAX_REFUSING).then(|| self.permit(&self.refusing, ticket, None))
    }

    /// The client behind a trusted proxy is `ip`: it takes a place in
    /// that address's count, or the permit becomes over the per-address
    /// limit (refused like one at accept). Once per permit.
    pub fn rebind(&self, permit: &mut Permit, ip: IpAddr) {
        let held = &mut permit.held;
        if !held.proxied || held.ip.is_some() || held.ticket != Ticket::Counted {
            return;
        }
        held.proxied = false;
        let Some(limit) = self.per_ip else { return };
        let count = self.by_ip().count(ip);
        if take(&count, limit) {
            held.ip = Some(count);
        } else {
            held.ticket = Ticket::OverIpLimit;
        }
    }

    fn by_ip(&self) -> MutexGuard<'_, ByIp> {
        // Nothing panics while holding it; a poisoned map is still consistent.
        self.by_ip.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A permit for a place already taken in `pool` (and in `ip`).
    fn permit(&self, pool: &Arc<AtomicUsize>, ticket: Ticket, ip: Option<Arc<AtomicUsize>>) -> Permit {
        Permit {
            held: Held {
                pool: pool.clone(),
                ticket,
                proxied: false,
                ip,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    const A: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));

    fn ticket(p: &Option<Permit>) -> Option<Ticket> {
        p.as_ref().map(Permit::ticket)
    }

    #[test]
    fn over_the_cap_a_few_are_held_to_be_refused_and_the_rest_closed() {
        let a = Admission::new(2, None);
        let first = a.admit(A, false);
        let _second = a.admit(A, false);
        assert_eq!(ticket(&first), Some(Ticket::Counted));
        let mut refusing: Vec<_> = (0..MAX_REFUSING).map(|_| a.admit(A, false)).collect();
        assert!(refusing.iter().all(|p| ticket(p) == Some(Ticket::Refusing)));
        assert!(a.admit(A, false).is_none());
        refusing.pop();
        assert_eq!(
            ticket(&a.admit(A, false)),
            Some(Ticket::Refusing),
            "a dropped permit frees its place"
        );
        drop(first);
        assert_eq!(ticket(&a.admit(A, false)), Some(Ticket::Counted));
    }

    #[test]
    fn every_permit_dropped_leaves_the_counts_at_zero() {
        let a = Admission::new(1, Some(1));
        let permits: Vec<_> = (0..10)
            .filter_map(|i| a.admit(if i % 2 == 0 { A } else { B }, false))
            .collect();
        assert_eq!(permits.len(), 1 + MAX_REFUSING.min(9));
        drop(permits);
        assert_eq!(a.open.load(Ordering::Relaxed), 0);
        assert_eq!(a.refusing.load(Ordering::Relaxed), 0);
        let mut by_ip = a.by_ip();
        assert!(by_ip.counts.values().all(|c| c.load(Ordering::Relaxed) == 0));
        by_ip.prune_at = 0;
        by_ip.count(A);
        assert_eq!(by_ip.counts.len(), 1, "entries nobody holds are pruned");
    }

    #[test]
    fn one_address_over_its_limit_is_refused_while_others_get_in() {
        let a = Admission::new(10, Some(2));
        let held: Vec<_> = (0..2).map(|_| a.admit(A, false)).collect();
        assert!(held.iter().all(|p| ticket(p) == Some(Ticket::Counted)));
        let over = a.admit(A, false);
        assert_eq!(ticket(&over), Some(Ticket::OverIpLimit));
        assert_eq!(ticket(&a.admit(B, false)), Some(Ticket::Counted));
        drop(over);
        drop(held);
        assert_eq!(ticket(&a.admit(A, false)), Some(Ticket::Counted), "places given back");
    }

    #[test]
    fn a_refusal_for_the_global_cap_gives_the_address_its_place_back() {
        let a = Admission::new(1, Some(5));
        let _in = a.admit(B, false);
        for _ in 0..5 {
            assert_eq!(ticket(&a.admit(A, false)), Some(Ticket::Refusing));
        }
        assert_eq!(a.by_ip().counts[&A].load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_proxied_connection_counts_its_client_not_the_proxy() {
        let a = Admission::new(10, Some(1));
        let proxy = A;
        let mut first = a.admit(proxy, true).unwrap();
        let mut second = a.admit(proxy, true).unwrap();
        assert_eq!(
            (first.ticket(), second.ticket()),
            (Ticket::Counted, Ticket::Counted),
            "not the proxy's count"
        );
        a.rebind(&mut first, B);
        assert_eq!(first.ticket(), Ticket::Counted);
        a.rebind(&mut second, B);
        assert_eq!(second.ticket(), Ticket::OverIpLimit, "B's one place is taken");
        drop(first);
        let mut third = a.admit(proxy, true).unwrap();
        a.rebind(&mut third, B);
        assert_eq!(third.ticket(), Ticket::Counted, "given back");
        a.rebind(&mut third, A);
        assert_eq!(third.ticket(), Ticket::Counted, "once per permit");
    }
}
