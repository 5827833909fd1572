//! One client connection: its socket, its outbox and the state machine that
//! takes it from HTTP request to WebSocket to closed (see `LIFECYCLE.md`).
//!
//! A `Conn` never blocks and never outlives its shard: the shard calls
//! [`Conn::on_ready`] for socket events and [`Conn::tick`] from its timer
//! sweep, and removes the connection when either answers [`Verdict::Remove`].
//! Reads go into the shard's scratch buffer; a connection keeps bytes of its
//! own only while a request head or a frame is incomplete.

pub(crate) mod action;
mod awaiting;
pub(crate) mod ctx;
mod http;
#[cfg(test)]
mod lifecycle_tests;
pub(crate) mod outbox;
mod queue;
mod session;
#[cfg(test)]
mod testing;
pub(crate) mod transport;
pub(crate) mod turn;
mod ws;

use std::io;
use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;

use crate::config::Config;
use crate::http::Route;
use crate::limits::{Permit, Ticket, REFUSING_HANDSHAKE};
use crate::metrics::DropReason;
use crate::protocol::encode;
use crate::tls::Outcome;
use crate::ws::deflate::Agreement;
use crate::ws::{frame, CloseCode, Decoder, OpCode};
pub(crate) use action::{Action, JoinAt};
pub(crate) use ctx::{Clock, Ctx, Env, Shared, Work};
use outbox::Outbox;
use session::Session;
pub(crate) use transport::{Stream, Transport};
use turn::TurnIndex;

/// Reads per readiness event before other connections get a turn; the
/// shard comes back to this one on its next loop iteration.
const READS_PER_TURN: usize = 16;

/// What the shard should do with a connection after a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Wait for the next event.
    Keep,
    /// The read budget ran out with data maybe left: call `on_ready` again soon.
    ReadAgain,
    /// Close the socket and free the slot.
    Remove,
}

/// Where the connection is in its life.
#[derive(Debug)]
enum Phase {
    /// Reading HTTP requests; `head` holds bytes not served yet (a partial
    /// head or body, or pipelined requests held while replies back up);
    /// `served` once a request was answered and the connection kept alive.
    /// `awaiting`: an API answer waiting for owner shards (`awaiting.rs`).
    Http {
        head: Vec<u8>,
        served: bool,
        awaiting: Option<Box<awaiting::Awaiting>>,
    },
    /// A WebSocket; `close_sent` once our close frame is queued.
    Ws {
        route: Route,
        decoder: Decoder,
        close_sent: bool,
    },
    /// Everything final is queued. Flush it; then, with `drain`, shut our side
    /// and read until the peer's FIN (a peer still sending when we close
    /// would get a reset that can destroy our last bytes in flight), else
    /// close at once (the close handshake completed: the peer sends no more).
    Linger { drain: bool, shut: bool },
}

/// A client connection owned by one shard, over any [`Transport`].
#[derive(Debug)]
pub(crate) struct Conn<S = Stream> {
    stream: S,
    peer: SocketAddr,
    /// Shard-unique id; also the generation that makes a stale handle harmless.
    id: u64,
    phase: Phase,
    outbox: Outbox,
    last_seen: Instant,
    /// When the connection next needs the sweep: the current phase's
    /// timeout (handshake, close handshake, linger), or on an open
    /// WebSocket the next heartbeat ping (the phases never need both).
    deadline: Instant,
    /// The first close code exchanged, recorded in metrics when removed.
    close_code: Option<CloseCode>,
    /// Its place in `--max-connections`, given back when the `Conn` drops.
    permit: Permit,
    /// Completed the upgrade (counted in the connection gauge).
    upgraded: bool,
    /// Reading stopped until the outbox drains (see `Conn::pause_limit`) or
    /// until the welcome is sent.
    read_paused: bool,
    /// Queued to the shard's list of connections to flush this turn.
    dirty: bool,
    /// On the shard's list of connections to read again (at most once).
    read_queued: bool,
    /// The broker session on `/ws`.
    session: Option<Box<Session>>,
    /// permessage-deflate, if negotiated: fan-out queues compressed frames.
    deflate: Option<Agreement>,
}

impl<S: Transport> Conn<S> {
    /// A freshly accepted connection; a permit over the cap means it is over
    /// `--max-connections` and will be refused with 1013 after its upgrade.
    pub fn new(stream: S, peer: SocketAddr, id: u64, permit: Permit, config: &Config, now: Instant) -> Conn<S> {
        let handshake = match permit.ticket() {
            Ticket::Counted => config.handshake_timeout,
            Ticket::Refusing | Ticket::OverIpLimit => config.handshake_timeout.min(REFUSING_HANDSHAKE),
        };
        Conn {
            stream,
            peer,
            id,
            phase: Phase::Http {
                head: Vec::new(),
                served: false,
                awaiting: None,
            },
            outbox: Outbox::default(),
            last_seen: now,
            deadline: now + handshake,
            close_code: None,
            permit,
            upgraded: false,
            read_paused: false,
            dirty: false,
            read_queued: false,
            session: None,
            deflate: None,
        }
    }

    /// What was agreed for permessage-deflate, if it was negotiated.
    #[inline]
    pub fn deflate(&self) -> Option<Agreement> {
        self.deflate
    }

    /// What the connection was admitted as.
    pub fn ticket(&self) -> Ticket {
        self.permit.ticket()
    }

    /// Whether the client has sent nothing yet: no byte of a request, and
    /// nothing is being answered.
    pub fn is_silent(&self) -> bool {
        matches!(&self.phase, Phase::Http { head, served: false, .. } if head.is_empty()) && self.outbox.is_empty()
    }

    /// Whether this connection's token allows `room` (false before a session).
    pub fn may_join(&self, room: &str) -> bool {
        self.session.as_ref().is_some_and(|s| s.allows(room))
    }

    /// The broker user, once authenticated on `/ws`.
    pub fn user(&self) -> Option<&std::sync::Arc<str>> {
        self.session.as_ref().map(|s| &s.user)
    }

    /// Bytes waiting in the outbox.
    pub fn queued_bytes(&self) -> usize {
        self.outbox.len_bytes()
    }

    /// Whether frames may still be queued (no close frame sent or received).
    pub fn accepts_frames(&self) -> bool {
        matches!(self.phase, Phase::Ws { close_sent: false, .. })
    }

    /// Queues a reply to this connection's own request (not capped: reads
    /// pause instead, see `pause_limit`).
    pub fn push_reply(&mut self, frame: Bytes) {
        if self.accepts_frames() {
            self.outbox.push(frame);
        }
    }

    /// Queues frame `at` of this turn (`len` bytes) from someone else;
    /// `false` when it would take the outbox past `cap`: the caller cuts
    /// this slow consumer. The caller also marks the connection dirty, so
    /// that `flush_dirty` runs before the turn ends.
    #[inline]
    pub fn push_foreign(&mut self, at: TurnIndex, len: usize, cap: usize) -> bool {
        if !self.accepts_frames() {
            return true;
        }
        if self.outbox.len_bytes() + len > cap {
            return false;
        }
        self.outbox.push_turn(at, len);
        true
    }

    /// Marks the connection as needing a flush this turn; `true` the first time.
    #[inline]
    pub fn mark_dirty(&mut self) -> bool {
        !std::mem::replace(&mut self.dirty, true)
    }

    /// Marks the connection as on the shard's list to read again; `true`
    /// if it was not already (a connection is listed once, however many
    /// times it asked: one that asked every turn would otherwise be read
    /// once more per turn, and end up owning the shard).
    #[inline]
    pub fn queue_read(&mut self) -> bool {
        !std::mem::replace(&mut self.read_queued, true)
    }

    /// Takes the connection off the shard's list to read again.
    #[inline]
    pub fn unqueue_read(&mut self) {
        self.read_queued = false;
    }

    /// Flushes a connection from the shard's dirty list at the end of the
    /// turn; what is left keeps its frames past the turn.
    pub fn flush_dirty(&mut self, ctx: &mut Ctx<'_>) -> Verdict {
        self.dirty = false;
        let verdict = self.flush(ctx);
        if !self.outbox.is_empty() {
            self.outbox.detach(ctx.turn);
        }
        verdict
    }

    /// Queues the welcome (the user topic is ready on every shard), resumes
    /// reading and replays bytes held since the upgrade.
    pub fn welcome(&mut self, ctx: &mut Ctx<'_>) -> Verdict {
        let Some(session) = self.session.as_mut() else {
            return Verdict::Keep;
        };
        if session.welcomed {
            return Verdict::Keep;
        }
        session.welcomed = true;
        let frame = encode::welcome(&session.user, session.number);
        let mut held = std::mem::take(&mut session.held);
        self.push_reply(frame);
        self.read_paused = false;
        if !held.is_empty() && self.on_ws_bytes(ctx, &mut held) == Verdict::Remove {
            return Verdict::Remove;
        }
        Verdict::ReadAgain
    }

    /// Cuts a slow consumer: every frame it has not started to receive is
    /// freed, then a 4008 close frame follows whatever frame is half on the
    /// wire, so the client can read it; the connection then drains like
    /// after a protocol error (bounded by `--close-timeout-secs`).
    pub fn cut_slow_consumer(&mut self, ctx: &mut Ctx<'_>) -> Verdict {
        if !self.accepts_frames() {
            // Already closing (or cut earlier this turn).
            return Verdict::Keep;
        }
        ctx.metrics().drop(DropReason::SlowConsumer);
        self.outbox.drop_unsent(ctx.turn);
        self.close_code = Some(CloseCode::SLOW_CONSUMER);
        self.outbox
            .push(frame::encode_close(CloseCode::SLOW_CONSUMER, "slow consumer"));
        tracing::info!(shard = ctx.env.shard, conn = self.number(ctx.env), peer = %self.peer, user = self.user().map(|u| &**u),
            code = 4008, "slow consumer: outbox over --max-queue-bytes, cut");
        self.linger(ctx, true);
        self.flush(ctx)
    }

    /// Shutdown: WebSockets get 1001 "going away" behind what is queued;
    /// other connections are closed once their response is out.
    pub fn go_away(&mut self, ctx: &mut Ctx<'_>) {
        match self.phase {
            Phase::Ws { close_sent: false, .. } => self.start_close(ctx, CloseCode::GOING_AWAY, "going away"),
            Phase::Http { .. } => self.linger(ctx, true),
            Phase::Ws { close_sent: true, .. } | Phase::Linger { .. } => {}
        }
    }

    /// Starts the close handshake on behalf of the shard (e.g. a flood);
    /// a connection already closing is left as it is, and logged once.
    pub fn close_with(&mut self, ctx: &Ctx<'_>, code: CloseCode, reason: &str) {
        if !self.accepts_frames() {
            return;
        }
        tracing::info!(shard = ctx.env.shard, conn = self.number(ctx.env), peer = %self.peer, user = self.user().map(|u| &**u),
            code = code.0, reason, "closing");
        self.start_close(ctx, code, reason);
    }

    /// The socket, for registration with the shard's poll.
    pub fn stream_mut(&mut self) -> &mut S {
        &mut self.stream
    }

    /// The shard-unique id of this connection.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The node-unique number of this connection, as its welcome says
    /// (`conn`): the one log lines use.
    pub(crate) fn number(&self, env: &Env) -> u64 {
        self.id * env.shards as u64 + env.shard as u64
    }

    /// Handles a readiness event (or a retry after `ReadAgain`); reads land
    /// in `scratch`, the shard's buffer shared by all its connections.
    pub fn on_ready(&mut self, ctx: &mut Ctx<'_>, scratch: &mut [u8], readable: bool, writable: bool) -> Verdict {
        let mut verdict = Verdict::Keep;
        if writable {
            // A flush that drains a paused connection asks for a read
            // (`ReadAgain`): keep that, the socket may have nothing new.
            verdict = self.flush(ctx);
            if verdict == Verdict::Remove {
                return verdict;
            }
        }
        if readable {
            verdict = self.read(ctx, scratch);
            if verdict == Verdict::Remove {
                return verdict;
            }
        }
        match self.flush(ctx) {
            Verdict::Keep => verdict,
            other => other,
        }
    }

    /// Reads until `WouldBlock`, the turn's budget, or a pause.
    fn read(&mut self, ctx: &mut Ctx<'_>, scratch: &mut [u8]) -> Verdict {
        if !self.read_paused && matches!(&self.phase, Phase::Http { head, .. } if !head.is_empty()) {
            // Requests held while replies backed up (or a partial one: it
            // stays partial) are served before anything new is read.
            if self.serve_http(ctx, &[]) == Verdict::Remove {
                return Verdict::Remove;
            }
        }
        for _ in 0..READS_PER_TURN {
            if self.read_paused {
                return Verdict::Keep;
            }
            let read = self.stream.read(scratch);
            if let Some(outcome) = self.stream.take_outcome() {
                self.on_tls(ctx, outcome);
            }
            match read {
                Ok(0) => return self.on_eof(ctx),
                Ok(n) => {
                    ctx.metrics().bytes_received.add(n as u64);
                    self.last_seen = ctx.now;
                    if self.on_bytes(ctx, &mut scratch[..n]) == Verdict::Remove {
                        return Verdict::Remove;
                    }
                    if self.outbox.len_bytes() > pause_limit(ctx.config()) {
                        self.read_paused = true;
                    }
                    if self.input_ignored() {
                        // Read only to see the peer's FIN: one buffer a
                        // turn, so a client still flooding after its close
                        // costs the shard next to nothing.
                        return Verdict::ReadAgain;
                    }
                    if n < scratch.len() && self.stream.short_read_drains() {
                        // The socket is empty: skip the read that would say
                        // so (a request/response client saves one syscall
                        // per message, `docs/benchmarks.md`).
                        return Verdict::Keep;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Verdict::Keep,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return self.cut(ctx, &e),
            }
        }
        Verdict::ReadAgain
    }

    /// Counts the end of a TLS handshake.
    #[cold]
    fn on_tls(&mut self, ctx: &Ctx<'_>, outcome: Outcome) {
        match outcome {
            Outcome::Established => ctx.metrics().tls_handshakes.add(1),
            Outcome::Failed(failure) => {
                ctx.metrics().tls_failure(failure);
                tracing::debug!(shard = ctx.env.shard, conn = self.number(ctx.env), peer = %self.peer,
                    reason = failure.label(), "TLS handshake failed");
            }
        }
    }

    /// Whether what the peer sends now is discarded unread.
    fn input_ignored(&self) -> bool {
        match &self.phase {
            Phase::Ws { decoder, .. } => decoder.is_done(),
            Phase::Linger { .. } => true,
            Phase::Http { .. } => false,
        }
    }

    /// Routes bytes just read to the current phase.
    fn on_bytes(&mut self, ctx: &mut Ctx<'_>, input: &mut [u8]) -> Verdict {
        match &mut self.phase {
            Phase::Http { .. } => self.serve_http(ctx, input),
            Phase::Ws { .. } => self.on_ws_bytes(ctx, input),
            // The peer's last bytes after our FIN are read only to see its FIN.
            Phase::Linger { .. } => Verdict::Keep,
        }
    }

    /// The peer closed its side of the TCP connection.
    fn on_eof(&mut self, ctx: &mut Ctx<'_>) -> Verdict {
        match self.phase {
            Phase::Ws { close_sent: false, .. } => {
                self.close_code.get_or_insert(CloseCode::ABNORMAL);
                tracing::debug!(shard = ctx.env.shard, conn = self.number(ctx.env), peer = %self.peer, user = self.user().map(|u| &**u), "peer closed without a close frame");
            }
            Phase::Ws { close_sent: true, .. } => {}
            Phase::Http { .. } | Phase::Linger { .. } => {}
        }
        Verdict::Remove
    }

    /// A socket error: the connection is gone.
    fn cut(&mut self, ctx: &Ctx<'_>, err: &io::Error) -> Verdict {
        if matches!(self.phase, Phase::Ws { .. }) {
            self.close_code.get_or_insert(CloseCode::ABNORMAL);
        }
        tracing::debug!(shard = ctx.env.shard, conn = self.number(ctx.env), peer = %self.peer, user = self.user().map(|u| &**u), error = %err, "socket error");
        Verdict::Remove
    }

    /// Queues a frame or response produced by this connection's own traffic.
    fn queue(&mut self, bytes: Bytes) {
        self.outbox.push(bytes);
    }

    /// Writes the outbox until it is empty or the socket is full.
    pub fn flush(&mut self, ctx: &mut Ctx<'_>) -> Verdict {
        if self.outbox.is_empty()
            && !self.stream.holds_output()
            && !matches!(self.phase, Phase::Linger { shut: false, .. })
        {
            return Verdict::Keep;
        }
        match self.outbox.flush(&mut self.stream, &mut ctx.work.stage, ctx.turn) {
            Ok(f) => ctx.metrics().bytes_sent.add(f.written as u64),
            Err(e) => {
                // `Other` is never a socket's error: the outbox refused its
                // own state (a turn index that outlived its turn), a bug.
                if e.kind() == io::ErrorKind::Other {
                    tracing::error!(shard = ctx.env.shard, conn = self.number(ctx.env), error = %e, "outbox invariant broken; connection cut");
                }
                return self.cut(ctx, &e);
            }
        }
        // Sealed TLS records the socket did not take (none for plain TCP).
        let held = match self.stream.send_held() {
            Ok(held) => held,
            Err(e) => return self.cut(ctx, &e),
        };
        // Reads paused for the welcome stay paused until it is sent.
        let resume = self.read_paused
            && self.session.as_ref().is_none_or(|s| s.welcomed)
            && !self.is_awaiting()
            && self.outbox.len_bytes() <= pause_limit(ctx.config()) / 2;
        if resume {
            self.read_paused = false;
        }
        if !self.outbox.is_empty() || held {
            return if resume { Verdict::ReadAgain } else { Verdict::Keep };
        }
        if let Phase::Linger { drain, shut } = &mut self.phase {
            if !*drain {
                return Verdict::Remove;
            }
            if !*shut {
                *shut = true;
                // Our FIN follows the last byte we queued. Errors mean the
                // peer is already gone; the next read will tell.
                let _ = self.stream.shutdown_write();
            }
        }
        if resume {
            Verdict::ReadAgain
        } else {
            Verdict::Keep
        }
    }

    /// Enters the final phase: flush what is queued, then close (after the
    /// peer's FIN when `drain`).
    fn linger(&mut self, ctx: &Ctx<'_>, drain: bool) {
        self.phase = Phase::Linger { drain, shut: false };
        self.deadline = ctx.now + ctx.config().close_timeout;
    }

    /// Starts the close handshake with `code`: queue the close frame, keep
    /// reading (and discarding data) until the peer's close frame or timeout.
    fn start_close(&mut self, ctx: &Ctx<'_>, code: CloseCode, reason: &str) {
        if let Phase::Ws { close_sent, .. } = &mut self.phase {
            if *close_sent {
                return;
            }
            *close_sent = true;
            self.close_code.get_or_insert(code);
            self.outbox.push(frame::encode_close(code, reason));
            self.deadline = ctx.now + ctx.config().close_timeout;
        }
    }

    /// The periodic sweep: timeouts and heartbeats.
    pub fn tick(&mut self, ctx: &mut Ctx<'_>) -> Verdict {
        self.outbox.trim();
        match self.phase {
            Phase::Http { ref head, served, .. } => {
                if ctx.now >= self.deadline {
                    if served && head.is_empty() {
                        // An idle keep-alive connection between requests.
                        tracing::debug!(shard = ctx.env.shard, conn = self.number(ctx.env), peer = %self.peer, user = self.user().map(|u| &**u), "idle keep-alive connection closed");
                    } else {
                        ctx.metrics().drop(DropReason::HandshakeTimeout);
                        if self.stream.timed_out_handshake() {
                            ctx.metrics().tls_failure(crate::tls::Failure::Timeout);
                        }
                        tracing::debug!(shard = ctx.env.shard, conn = self.number(ctx.env), peer = %self.peer, user = self.user().map(|u| &**u), "request timed out");
                    }
                    return Verdict::Remove;
                }
            }
            Phase::Ws { close_sent: false, .. } => {
                let exp = self
                    .session
                    .as_ref()
                    .map(|s| s.exp)
                    .filter(|&exp| exp != session::NEVER);
                if let Some((auth, exp)) = ctx.env.auth().zip(exp) {
                    if auth.is_expired(exp, ctx.unix_now) {
                        ctx.metrics().auth_failures.add(1);
                        self.close_with(ctx, CloseCode::UNAUTHORIZED, "token expired");
                        return self.flush(ctx);
                    }
                }
                let hb = ctx.config().heartbeat;
                if ctx.now.duration_since(self.last_seen) >= hb * 2 {
                    ctx.metrics().drop(DropReason::HeartbeatTimeout);
                    self.close_code = Some(CloseCode::ABNORMAL);
                    tracing::info!(shard = ctx.env.shard, conn = self.number(ctx.env), peer = %self.peer, user = self.user().map(|u| &**u), "no traffic for two heartbeats: cut");
                    return Verdict::Remove;
                }
                if ctx.now >= self.deadline {
                    self.deadline = ctx.now + hb;
                    self.outbox.push(frame::encode(OpCode::Ping, b""));
                    return self.flush(ctx);
                }
            }
            Phase::Ws { close_sent: true, .. } | Phase::Linger { .. } => {
                if ctx.now >= self.deadline {
                    tracing::debug!(shard = ctx.env.shard, conn = self.number(ctx.env), peer = %self.peer, user = self.user().map(|u| &**u), "close handshake timed out");
                    return Verdict::Remove;
                }
            }
        }
        Verdict::Keep
    }

    /// Records the end of the connection; the shard drops it right after
    /// (which gives its permit back).
    pub fn finish(&mut self, ctx: &Ctx<'_>) {
        if self.upgraded {
            ctx.metrics().connections.sub(1);
            ctx.metrics().close(self.close_code.unwrap_or(CloseCode::ABNORMAL).0);
        }
        // Best effort: a failed flush of a dying socket has no one to tell.
        let _ = self.stream.flush();
    }
}

/// Outbox size past which a connection's own requests stop being read: the
/// client is not reading its replies, so TCP backpressure takes over.
fn pause_limit(config: &Config) -> usize {
    config.max_queue_bytes / 2
}

#[cfg(test)]
mod size_tests {
    /// An idle connection must cost at most 700 B of RSS all told (slab
    /// slot, session, user name, room index); the `Conn` itself is the
    /// largest part, the session one malloc size class (112 B). Measured:
    /// 660 B per idle connection in one room (docs/benchmarks.md).
    #[test]
    fn a_connection_stays_small() {
        let size = std::mem::size_of::<super::Conn>();
        assert!(size <= 296, "Conn is {size} bytes");
        assert!(std::mem::size_of::<super::Session>() <= 104);
    }
}
