//! The acceptor thread: takes connections off the listener and deals them to
//! shards round-robin, so load spreads evenly whatever the client addresses
//! (see `docs/architecture.md` for why not `SO_REUSEPORT`).
//!
//! It also enforces `--max-connections` and `--max-connections-per-ip`
//! (`limits::admission`): a connection past a cap is handed to a shard to
//! be upgraded and closed with 1013, or, when too many such are already
//! held, closed at once.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::TrySendError;
use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token, Waker};

use crate::bus::{ShardHandle, ShardMsg};
use crate::limits::{Admission, TrustedProxies};
use crate::metrics::AcceptorMetrics;

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);
/// Pause after `accept` fails for lack of resources (e.g. out of file
/// descriptors) before trying again; the backlog holds clients meanwhile.
const RESOURCE_BACKOFF: Duration = Duration::from_millis(100);

/// Accepts connections and hands them to shards.
pub(crate) struct Acceptor {
    poll: Poll,
    listener: TcpListener,
    shards: Vec<ShardHandle>,
    next: usize,
    admission: Arc<Admission>,
    /// Connections from these are counted per address once their client is known.
    trusted_proxies: TrustedProxies,
    stop: Arc<AtomicBool>,
    metrics: Arc<AcceptorMetrics>,
}

impl Acceptor {
    /// Registers the listener; returns the acceptor and the waker that stops it.
    pub fn new(
        mut listener: TcpListener,
        shards: Vec<ShardHandle>,
        admission: Arc<Admission>,
        trusted_proxies: TrustedProxies,
        stop: Arc<AtomicBool>,
        metrics: Arc<AcceptorMetrics>,
    ) -> io::Result<(Acceptor, Arc<Waker>)> {
        let poll = Poll::new()?;
        poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let acceptor = Acceptor {
            poll,
            listener,
            shards,
            next: 0,
            admission,
            trusted_proxies,
            stop,
            metrics,
        };
        Ok((acceptor, waker))
    }

    /// Accepts until `stop` is set and the waker fires.
    pub fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(64);
        let mut woken = vec![false; self.shards.len()];
        let mut backoff = false;
        loop {
            let timeout = backoff.then_some(RESOURCE_BACKOFF);
            match self.poll.poll(&mut events, timeout) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            if self.stop.load(Ordering::Acquire) {
                return Ok(());
            }
            // After a backoff the listener may hold connections with no new
            // edge to announce them, so accept whether or not it fired.
            backoff = self.accept_all(&mut woken);
            for (shard, w) in self.shards.iter().zip(woken.iter_mut()) {
                if std::mem::take(w) {
                    shard.wake();
                }
            }
        }
    }

    /// Accepts until `WouldBlock`; `true` if it stopped for lack of resources.
    fn accept_all(&mut self, woken: &mut [bool]) -> bool {
        loop {
            let (stream, peer) = match self.listener.accept() {
                Ok(pair) => pair,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed; pausing accepts for 100 ms");
                    return true;
                }
            };
            self.metrics.accepted.add(1);
            if let Err(e) = stream.set_nodelay(true) {
                tracing::debug!(peer = %peer, error = %e, "cannot set TCP_NODELAY");
            }
            let proxied = self.trusted_proxies.contains(peer.ip());
            let Some(permit) = self.admission.admit(peer.ip(), proxied) else {
                // Over the cap with enough already waiting to be refused.
                self.metrics.refused.add(1);
                tracing::debug!(peer = %peer, "over --max-connections: closed at accept");
                continue;
            };
            self.deal(ShardMsg::Accept { stream, peer, permit }, woken);
        }
    }

    /// Gives a connection to the next shard with room in its inbox.
    fn deal(&mut self, mut msg: ShardMsg, woken: &mut [bool]) {
        let n = self.shards.len();
        for _ in 0..n {
            let i = self.next;
            self.next = (self.next + 1) % n;
            match self.shards[i].send(msg) {
                Ok(()) => {
                    woken[i] = true;
                    return;
                }
                Err(TrySendError::Full(m) | TrySendError::Disconnected(m)) => msg = m,
            }
        }
        // Every inbox is full: the shards are far behind. Refuse this one
        // (dropping it gives its permit back).
        self.metrics.channel_full.add(1);
        drop(msg);
        tracing::warn!("every shard inbox is full; dropping a new connection");
    }
}
