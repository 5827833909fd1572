//! A shard: one thread, one `mio::Poll`, and the connections it alone owns in
//! a `Slab`, indexed by their poll token.
//!
//! Each loop iteration: poll, handle socket events and the inbox, give
//! connections that ran out of read budget another turn, and every
//! `SWEEP_INTERVAL` sweep all connections for timeouts and heartbeats (one
//! pass over the slab instead of a timer per connection).

pub mod inbox;

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;

use crate::config::Config;
use crate::conn::{Conn, Ctx, Verdict};
use crate::metrics::{Registry, ShardMetrics};
pub use inbox::{ShardHandle, ShardMsg};

/// The poll token of the shard's waker; connection tokens are slab keys.
const WAKER: Token = Token(usize::MAX);
/// Size of the read buffer every connection of the shard shares.
pub const SCRATCH_BYTES: usize = 64 * 1024;
/// How often timeouts and heartbeats are checked.
pub const SWEEP_INTERVAL: Duration = Duration::from_millis(250);

/// One event loop and its connections.
pub struct Shard {
    id: usize,
    poll: Poll,
    conns: Slab<Conn>,
    inbox: Receiver<ShardMsg>,
    config: Arc<Config>,
    metrics: Arc<ShardMetrics>,
    registry: Registry,
    open: Arc<AtomicUsize>,
    scratch: Vec<u8>,
    /// Connections to read again next turn: (slot, id) so a reused slot is skipped.
    again: Vec<(usize, u64)>,
    next_id: u64,
    next_sweep: Instant,
}

impl Shard {
    /// Creates shard `id` with its poll, waker and inbox.
    pub fn new(
        id: usize,
        config: Arc<Config>,
        registry: Registry,
        open: Arc<AtomicUsize>,
    ) -> io::Result<(Shard, ShardHandle)> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let (tx, rx) = crossbeam_channel::bounded(inbox::INBOX_CAPACITY);
        let shard = Shard {
            id,
            poll,
            conns: Slab::new(),
            inbox: rx,
            config,
            metrics: registry.shards[id].clone(),
            registry,
            open,
            scratch: vec![0; SCRATCH_BYTES],
            again: Vec::new(),
            next_id: 1,
            next_sweep: Instant::now() + SWEEP_INTERVAL,
        };
        Ok((shard, ShardHandle::new(tx, waker)))
    }

    /// Runs the event loop until a `Shutdown` message.
    pub fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        loop {
            let timeout = if self.again.is_empty() {
                self.next_sweep.saturating_duration_since(Instant::now())
            } else {
                Duration::ZERO
            };
            match self.poll.poll(&mut events, Some(timeout)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            let now = Instant::now();
            for event in events.iter() {
                match event.token() {
                    WAKER => {
                        if !self.drain_inbox(now) {
                            return Ok(());
                        }
                    }
                    Token(slot) => {
                        // Errors and hang-ups surface as a failed or empty read.
                        let readable = event.is_readable() || event.is_read_closed() || event.is_error();
                        self.dispatch(slot, now, |c, ctx| c.on_ready(ctx, readable, event.is_writable()));
                    }
                }
            }
            for (slot, id) in std::mem::take(&mut self.again) {
                if self.conns.get(slot).is_some_and(|c| c.id() == id) {
                    self.dispatch(slot, now, |c, ctx| c.on_ready(ctx, true, false));
                }
            }
            if now >= self.next_sweep {
                self.sweep(now);
                self.next_sweep = now + SWEEP_INTERVAL;
            }
        }
    }

    /// Handles every queued message; `false` on `Shutdown`.
    fn drain_inbox(&mut self, now: Instant) -> bool {
        while let Ok(msg) = self.inbox.try_recv() {
            match msg {
                ShardMsg::Accept { stream, peer, counted } => self.adopt(stream, peer, counted, now),
                ShardMsg::Shutdown => return false,
            }
        }
        true
    }

    /// Takes ownership of an accepted socket.
    fn adopt(&mut self, stream: mio::net::TcpStream, peer: std::net::SocketAddr, counted: bool, now: Instant) {
        let id = self.next_id;
        self.next_id += 1;
        let entry = self.conns.vacant_entry();
        let slot = entry.key();
        let mut conn = {
            let ctx = Ctx {
                shard: self.id,
                now,
                config: &self.config,
                metrics: &self.metrics,
                registry: &self.registry,
                scratch: &mut [],
                open: &self.open,
            };
            Conn::new(stream, peer, id, counted, &ctx)
        };
        let interest = Interest::READABLE | Interest::WRITABLE;
        if let Err(e) = self.poll.registry().register(conn.stream_mut(), Token(slot), interest) {
            tracing::warn!(shard = self.id, peer = %peer, error = %e, "cannot register connection");
            if counted {
                self.open.fetch_sub(1, Ordering::Relaxed);
            }
            return;
        }
        entry.insert(conn);
    }

    /// Runs `f` on the connection in `slot` with the shard's context, then
    /// applies its verdict.
    fn dispatch(&mut self, slot: usize, now: Instant, f: impl FnOnce(&mut Conn, &mut Ctx<'_>) -> Verdict) {
        let Shard {
            id,
            conns,
            config,
            metrics,
            registry,
            scratch,
            open,
            again,
            poll,
            ..
        } = self;
        let Some(conn) = conns.get_mut(slot) else { return };
        let mut ctx = Ctx {
            shard: *id,
            now,
            config,
            metrics,
            registry,
            scratch,
            open,
        };
        match f(conn, &mut ctx) {
            Verdict::Keep => {}
            Verdict::ReadAgain => again.push((slot, conn.id())),
            Verdict::Remove => {
                conn.finish(&ctx);
                let _ = poll.registry().deregister(conn.stream_mut());
                conns.remove(slot);
            }
        }
    }

    /// Timeouts and heartbeats for every connection.
    fn sweep(&mut self, now: Instant) {
        let slots: Vec<usize> = self.conns.iter().map(|(slot, _)| slot).collect();
        for slot in slots {
            self.dispatch(slot, now, |c, ctx| c.tick(ctx));
        }
    }
}
