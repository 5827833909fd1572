//! A shard: one thread, one `mio::Poll`, and the connections it alone owns in
//! a `Slab`, indexed by their poll token; plus its room index.
//!
//! Each loop iteration: poll; give connections left with input (held back
//! by congestion, or out of read budget) another read; handle socket events
//! (each followed by the actions the connection asked for) and the inbox;
//! flush every connection that got frames this turn (one `writev` each) and
//! send this turn's batches to other shards (one channel send and one wake
//! per destination). While the relay is congested (see `relay`), client
//! input is not read: that is the shard's backpressure. Every
//! `SWEEP_INTERVAL`, one pass over all connections checks timeouts and
//! heartbeats instead of a timer per connection.

mod actions;
pub mod bench;
mod history;
mod presence;
mod relay;

use std::collections::VecDeque;
use std::io;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::Receiver;
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;

use crate::bus::{Batch, LinkHandle, ShardHandle, ShardMsg, INBOX_CAPACITY};
use crate::conn::turn::TurnLog;
pub(crate) use crate::conn::Shared;
use crate::conn::{Clock, Conn, Ctx, Env, Stream, Verdict, Work};
use crate::limits::{Permit, Ticket, MAX_REFUSING};
use crate::metrics::{DropReason, ShardMetrics};
use crate::rooms::RoomIndex;
use relay::Relay;

/// The poll token of the shard's waker; connection tokens are slab keys.
const WAKER: Token = Token(usize::MAX);
/// Size of the read buffer every connection of the shard shares.
const SCRATCH_BYTES: usize = 64 * 1024;
/// How often timeouts and heartbeats are checked.
const SWEEP_INTERVAL: Duration = Duration::from_millis(250);
/// Poll timeout while messages wait for room in another inbox.
const BACKLOG_RETRY: Duration = Duration::from_millis(1);

/// What fan-out leaves for the end of the loop turn.
#[derive(Debug, Default)]
struct Pending {
    /// The frames fanned out this turn; outboxes queue their indexes.
    frames: TurnLog,
    /// Compresses a frame once for the members that negotiated
    /// permessage-deflate (`bus::Encoded`).
    deflater: crate::ws::deflate::Deflater,
    /// Deliveries of compressed frames this turn.
    compressed: u64,
    /// Connections with frames queued this turn: (slot, id).
    dirty: Vec<(usize, u64)>,
    /// Slow consumers to cut at the end of the turn: (slot, id).
    kill: Vec<(usize, u64)>,
}

/// One event loop and its connections.
pub(crate) struct Shard {
    id: usize,
    poll: Poll,
    inbox: Receiver<ShardMsg>,
    /// The shard's read-only surroundings, lent to connections.
    env: Env,
    conns: Slab<Conn>,
    rooms: RoomIndex,
    relay: Relay,
    work: Work,
    /// The read buffer all connections of the shard share.
    scratch: Vec<u8>,
    /// What this turn's fan-out left for its end.
    pending: Pending,
    /// Connections to read again next turn: (slot, id) so a reused slot is skipped.
    again: Vec<(usize, u64)>,
    /// The history of the rooms this shard owns (`history.rs`).
    history: crate::history::Store,
    /// The presence of the rooms this shard owns (`presence.rs`).
    presence: crate::presence::Index,
    /// Number of this shard's last presence change sent to Redis.
    presence_seq: u64,
    /// Members joined pending on this shard, by ticket: (slot, id, room).
    admissions: hashbrown::HashMap<u64, history::Admission>,
    next_ticket: u64,
    next_history_expiry: Instant,
    /// Connections over a cap (`limits::admission`), oldest first; may
    /// list some already gone.
    refusing: VecDeque<(usize, u64)>,
    /// Readable connections not read while the relay was congested, read
    /// once it has drained (readiness is edge-triggered: nothing else would
    /// bring them back).
    held_back: Vec<(usize, u64)>,
    /// The sweep's list of slots, kept to avoid an allocation every sweep.
    swept: Vec<usize>,
    next_id: u64,
    next_sweep: Instant,
    /// Shutdown phase 1: client input is no longer read.
    quiesced: bool,
    /// Shutdown phase 2: close frames sent; exit when empty or at this time.
    going_away: Option<Instant>,
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Shard {
    /// Creates shard `id`'s poll, waker and inbox; `connect` it before running.
    pub fn new(id: usize, shared: Shared) -> io::Result<(Shard, ShardHandle)> {
        let poll = Poll::new()?;
        let waker = std::sync::Arc::new(Waker::new(poll.registry(), WAKER)?);
        let (tx, rx) = crossbeam_channel::bounded(INBOX_CAPACITY);
        let env = Env::new(id, shared);
        // Each shard owns a share of the rooms, and of the budget.
        let env_history_budget = env.config().history_max_bytes / env.shards;
        let shard = Shard {
            id,
            poll,
            inbox: rx,
            // One more than the room cap: the user's own topic is a subscription too.
            rooms: RoomIndex::new(id, env.shards, env.config().max_rooms_per_connection + 1),
            env,
            conns: Slab::new(),
            relay: Relay::new(id, Vec::new(), None),
            work: Work::default(),
            scratch: vec![0; SCRATCH_BYTES],
            pending: Pending::default(),
            again: Vec::new(),
            held_back: Vec::new(),
            refusing: VecDeque::new(),
            history: crate::history::Store::new(env_history_budget),
            presence: crate::presence::Index::new(),
            presence_seq: 0,
            admissions: hashbrown::HashMap::new(),
            next_ticket: 1,
            next_history_expiry: Instant::now(),
            swept: Vec::new(),
            next_id: 1,
            next_sweep: Instant::now() + SWEEP_INTERVAL,
            quiesced: false,
            going_away: None,
        };
        Ok((shard, ShardHandle::new(tx, waker)))
    }

    /// Gives the shard every shard's handle (its own included), in order,
    /// and the Redis link if there is one.
    pub fn connect(&mut self, peers: Vec<ShardHandle>, link: Option<LinkHandle>) {
        let extra = usize::from(link.is_some());
        self.relay = Relay::new(self.id, peers, link);
        // The link confirms announcements like another shard would.
        self.rooms.set_extra_confirmations(extra);
    }

    /// Runs the event loop until the graceful shutdown's deadline, or until
    /// every connection has closed after it began.
    pub fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        loop {
            let timeout = if self.relay.has_backlog() {
                BACKLOG_RETRY
            } else if !self.again.is_empty() || !self.held_back.is_empty() {
                Duration::ZERO
            } else {
                self.next_sweep.saturating_duration_since(Instant::now())
            };
            match self.poll.poll(&mut events, Some(timeout)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            let clock = Clock {
                now: Instant::now(),
                unix: unix_now(),
            };
            let now = clock.now;
            if self.input_paused() {
                for (slot, id) in self.again.drain(..).chain(self.held_back.drain(..)) {
                    if let Some(c) = self.conns.get_mut(slot).filter(|c| c.id() == id) {
                        c.unqueue_read();
                    }
                }
            }
            // Connections left with input to read go first: those held back
            // by congestion, then those that ran out of read budget.
            self.read_again(clock);
            for event in events.iter() {
                match event.token() {
                    WAKER => self.drain_inbox(clock),
                    Token(slot) => {
                        // Errors and hang-ups surface as a failed or empty read.
                        let hangup = event.is_read_closed() || event.is_error();
                        // While quiesced, client input waits in the kernel (phase 2 reads it).
                        let mut readable = (event.is_readable() || hangup) && !self.input_paused();
                        if readable && self.relay.congested() {
                            self.hold_back(slot);
                            readable = false;
                        }
                        let writable = event.is_writable();
                        if readable || writable {
                            self.dispatch(slot, clock, |c, ctx, scratch| {
                                c.on_ready(ctx, scratch, readable, writable)
                            });
                        }
                    }
                }
            }
            if now >= self.next_sweep {
                self.sweep(clock);
                self.next_sweep = now + SWEEP_INTERVAL;
            }
            self.end_turn(clock);
            if let Some(deadline) = self.going_away {
                if self.conns.is_empty() || now >= deadline {
                    if !self.conns.is_empty() {
                        tracing::warn!(
                            shard = self.id,
                            left = self.conns.len(),
                            "shutdown timeout: cutting the rest"
                        );
                    }
                    return Ok(());
                }
            }
        }
    }

    /// Reads the connections held back by congestion, then those that ran
    /// out of read budget; any found while the relay is congested are held
    /// back (again) instead.
    fn read_again(&mut self, clock: Clock) {
        if self.again.is_empty() && self.held_back.is_empty() {
            return;
        }
        let mut retry = std::mem::take(&mut self.held_back);
        retry.append(&mut self.again);
        for (slot, id) in retry {
            let Some(conn) = self.conns.get_mut(slot).filter(|c| c.id() == id) else {
                continue;
            };
            if self.relay.congested() {
                // Still listed (`read_queued` stays set).
                self.held_back.push((slot, id));
                continue;
            }
            conn.unqueue_read();
            self.dispatch(slot, clock, |c, ctx, scratch| c.on_ready(ctx, scratch, true, false));
        }
    }

    /// Backpressure: leaves a readable connection's input in the kernel
    /// until the relay has drained (see `relay`).
    fn hold_back(&mut self, slot: usize) {
        if let Some(conn) = self.conns.get_mut(slot) {
            if conn.queue_read() {
                self.held_back.push((slot, conn.id()));
            }
        }
    }

    fn input_paused(&self) -> bool {
        self.quiesced && self.going_away.is_none()
    }

    /// Shutdown phase 2: every WebSocket gets 1001 after what is already
    /// queued to it; everything else is closed.
    fn go_away(&mut self, deadline: Instant, clock: Clock) {
        self.going_away = Some(deadline);
        let slots: Vec<usize> = self.conns.iter().map(|(slot, _)| slot).collect();
        for slot in slots {
            // Read what waited during phase 1: close replies, or EOF.
            self.dispatch(slot, clock, |c, ctx, scratch| {
                c.go_away(ctx);
                c.on_ready(ctx, scratch, true, true)
            });
        }
    }

    /// Handles every queued message.
    fn drain_inbox(&mut self, clock: Clock) {
        while let Ok(msg) = self.inbox.try_recv() {
            match msg {
                ShardMsg::Accept { stream, peer, permit } => self.adopt(stream, peer, permit, clock),
                ShardMsg::Frames(Batch { mut frames, items }) => {
                    // History items in their places among the frames.
                    let mut items = items.into_iter().peekable();
                    for (i, (topic, frame)) in frames.iter_mut().enumerate() {
                        while let Some((_, item)) = items.next_if(|(at, _)| *at <= i) {
                            self.on_item(item, clock);
                        }
                        self.fan_out_local(topic, frame);
                    }
                    for (_, item) in items {
                        self.on_item(item, clock);
                    }
                }
                ShardMsg::Interest { topic, from, on, seq } => {
                    self.rooms.set_remote(&topic, from, on);
                    if on {
                        self.relay.control(from, ShardMsg::Confirm { topic, seq });
                    }
                }
                ShardMsg::Confirm { topic, seq } => {
                    for waiter in self.rooms.confirmed(&topic, seq) {
                        self.answer(waiter, clock);
                    }
                }
                ShardMsg::Quiesce(done) => {
                    self.quiesced = true;
                    let _ = done.send(self.id);
                }
                ShardMsg::GoAway { deadline } => self.go_away(deadline, clock),
            }
        }
    }

    /// Takes ownership of an accepted socket, and reads it at once: under
    /// load its request is usually there already.
    fn adopt(&mut self, stream: mio::net::TcpStream, peer: std::net::SocketAddr, permit: Permit, clock: Clock) {
        let id = self.next_id;
        self.next_id += 1;
        let slot = self.conns.vacant_key();
        let stream = match &self.env.shared.tls {
            None => Stream::Plain(stream),
            Some(tls) => match tls.accept(stream) {
                Ok(s) => Stream::Tls(Box::new(s)),
                Err(e) => {
                    tracing::warn!(shard = self.id, peer = %peer, error = %e, "cannot start TLS");
                    return;
                }
            },
        };
        let mut conn = Conn::new(stream, peer, id, permit, self.env.config(), clock.now);
        let interest = Interest::READABLE | Interest::WRITABLE;
        if let Err(e) = self
            .poll
            .registry()
            .register(conn.stream_mut().socket(), Token(slot), interest)
        {
            tracing::warn!(shard = self.id, peer = %peer, error = %e, "cannot register connection");
            return;
        }
        let over_cap = conn.ticket() != Ticket::Counted;
        self.conns.insert(conn);
        if self.input_paused() {
            return;
        }
        if self.relay.congested() {
            self.hold_back(slot);
        } else {
            self.dispatch(slot, clock, |c, ctx, scratch| c.on_ready(ctx, scratch, true, true));
        }
        if over_cap {
            self.refusing.push_back((slot, id));
            self.evict_silent(clock);
        }
    }

    /// Keeps the connections over a cap that this shard holds within its
    /// share of `MAX_REFUSING`: while over it, closes the oldest one that
    /// has not sent a byte (never one being answered). Silent sockets thus
    /// cannot keep the reserve from probes that speak.
    fn evict_silent(&mut self, clock: Clock) {
        let share = (MAX_REFUSING / (2 * self.env.shards)).max(2);
        let conns = &self.conns;
        self.refusing
            .retain(|&(slot, id)| conns.get(slot).is_some_and(|c| c.id() == id));
        while self.refusing.len() > share {
            let conns = &self.conns;
            let Some(i) = self.refusing.iter().position(|&(slot, _)| conns[slot].is_silent()) else {
                return;
            };
            let (slot, _) = self.refusing.remove(i).expect("found");
            ShardMetrics::drop(&self.env.metrics, DropReason::ConnectionLimit);
            tracing::debug!(
                shard = self.id,
                "over the connection cap: closing a silent socket for a newer one"
            );
            self.remove(slot, clock);
        }
    }

    /// Runs `f` on the connection in `slot` (with the shard's read buffer),
    /// applies the actions it asked for, then its verdict.
    fn dispatch(&mut self, slot: usize, clock: Clock, f: impl FnOnce(&mut Conn, &mut Ctx<'_>, &mut [u8]) -> Verdict) {
        let Some(conn) = self.conns.get_mut(slot) else { return };
        let id = conn.id();
        let verdict = {
            let mut ctx = Ctx::new(&self.env, &mut self.work, &self.pending.frames, clock);
            f(conn, &mut ctx, &mut self.scratch)
        };
        if !self.work.actions.is_empty() {
            self.apply_actions(slot, clock);
        }
        self.settle(slot, id, verdict, clock);
    }

    /// Acts on a verdict for the connection `(slot, id)`.
    fn settle(&mut self, slot: usize, id: u64, verdict: Verdict, clock: Clock) {
        match verdict {
            Verdict::Keep => {}
            Verdict::ReadAgain => {
                if self.conns.get_mut(slot).is_some_and(Conn::queue_read) {
                    self.again.push((slot, id));
                }
            }
            Verdict::Remove => self.remove(slot, clock),
        }
    }

    /// Closes and frees the connection in `slot`.
    fn remove(&mut self, slot: usize, clock: Clock) {
        let Some(conn) = self.conns.get_mut(slot) else { return };
        conn.finish(&Ctx::new(&self.env, &mut self.work, &self.pending.frames, clock));
        let _ = self.poll.registry().deregister(conn.stream_mut().socket());
        let user = conn.user().cloned();
        self.conns.remove(slot);
        self.presence_closing(slot, user.as_ref());
        self.leave_rooms(slot, clock);
    }

    /// Takes the connection in `slot` out of every room and user topic,
    /// telling the other shards about topics it was the last member of and
    /// answering the joins that still waited for them.
    fn leave_rooms(&mut self, slot: usize, clock: Clock) {
        let mut gone = Vec::new();
        self.rooms
            .leave_all(slot as u32, |topic, waiters| gone.push((topic, waiters)));
        for (topic, unanswered) in gone {
            self.last_left(topic, unanswered, clock);
        }
    }

    /// Timeouts and heartbeats for every connection; samples the bytes
    /// queued in their outboxes.
    fn sweep(&mut self, clock: Clock) {
        let mut slots = std::mem::take(&mut self.swept);
        slots.extend(self.conns.iter().map(|(slot, _)| slot));
        let mut queued = 0;
        for &slot in &slots {
            self.dispatch(slot, clock, |c, ctx, _| c.tick(ctx));
            // Nothing is adopted during a sweep: an empty slot is one the
            // tick just removed.
            queued += self.conns.get(slot).map_or(0, Conn::queued_bytes);
        }
        slots.clear();
        self.swept = slots;
        self.env.metrics.queued_bytes.set(queued as u64);
        self.sweep_history(clock);
        self.sweep_presence();
    }

    /// End of a turn: cut slow consumers, flush every connection that got
    /// frames, and send this turn's batches to other shards.
    fn end_turn(&mut self, clock: Clock) {
        for (slot, id) in std::mem::take(&mut self.pending.kill) {
            if let Some(conn) = self.conns.get_mut(slot).filter(|c| c.id() == id) {
                let verdict =
                    conn.cut_slow_consumer(&mut Ctx::new(&self.env, &mut self.work, &self.pending.frames, clock));
                // It gets nothing more: out of every room now, removed once
                // its close frame is out.
                self.leave_rooms(slot, clock);
                self.settle(slot, id, verdict, clock);
            }
        }
        // Batches go out before this turn's acks are written: once a client
        // has an ack, the publish is already in every other shard's inbox,
        // and the room count its join or leave changed is in `/metrics`.
        self.relay.flush(&self.env.metrics);
        self.shared_gauges();
        for (slot, id) in std::mem::take(&mut self.pending.dirty) {
            let Some(conn) = self.conns.get_mut(slot).filter(|c| c.id() == id) else {
                continue;
            };
            let verdict = conn.flush_dirty(&mut Ctx::new(&self.env, &mut self.work, &self.pending.frames, clock));
            self.settle(slot, id, verdict, clock);
        }
        // Control messages from connections removed just above.
        self.relay.flush(&self.env.metrics);
        // Every outbox still holding this turn's frames was detached above.
        self.pending.frames.clear();
        let compressed = std::mem::take(&mut self.pending.compressed);
        if compressed > 0 {
            self.env.metrics.compressed_deliveries.add(compressed);
        }
        self.work.names.clear();
        self.shared_gauges();
    }

    /// Publishes this shard's room count for `/metrics`.
    fn shared_gauges(&self) {
        self.env.metrics.rooms.set(self.rooms.counted_rooms() as u64);
    }
}
