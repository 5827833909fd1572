//! The subscriber thread: one Redis connection in pub/sub mode, driven by a
//! small mio loop so that subscription changes from shards (through a
//! channel and a `Waker`) are sent while messages keep streaming in. (The
//! `redis` crate's blocking pub/sub cannot be interrupted to subscribe.)
//!
//! Its books (which shards want which channel, which SUBSCRIBEs are
//! confirmed, which joins wait) are `ledger::Ledger`; RESP is the `redis`
//! crate's (`wire.rs`). While Redis is unreachable, joins are confirmed at
//! once and every wanted channel is subscribed on reconnect.
//!
//! Rooms with history also need reads (a joining member's position, a
//! recovery's replay, history queries): a second, ordinary connection in
//! the same loop carries them, and `reads::Reads` places each admission at
//! its exact point in the room's message stream. Their numbered messages
//! come from Redis for every node, this one included.

use std::io::{self, Write};
use std::net::ToSocketAddrs;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use mio::{Events, Interest as Ready, Poll, Token, Waker};

use crate::bus::post::shards_in;
use crate::bus::{Encoded, LinkRequest, Post, ShardHandle, ShardMsg, TopicInterest};
use crate::config::RedisConfig;
use crate::metrics::link::unix_nanos;
use crate::metrics::LinkState;
use crate::rooms::Topic;
use redis::Value;

use super::backoff::Backoff;
use super::ledger::{Command, Confirm, Ledger, Mode};
use super::reads::{self, Reads};
use super::socket::{Dial, Socket};
use super::wire::{self, Wire};
use super::{envelope, history, presence, probe_channel};

const SOCKET: Token = Token(0);
const WAKER: Token = Token(1);
/// The connection for history reads.
const READS: Token = Token(2);
/// Messages from other nodes that may wait for room in shard inboxes;
/// Redis cannot be paused, so past this they are dropped and counted.
const HELD_FRAMES: usize = 64 * 1024;
/// Channels per SUBSCRIBE command when restoring subscriptions.
const SUBSCRIBE_CHUNK: usize = 256;

struct Link {
    stream: Socket,
    connected: bool,
    /// Redis has answered on it (TCP, TLS and AUTH went through).
    answered: bool,
    wire: Wire,
    wbuf: Vec<u8>,
}

/// The subscriber's state.
pub(crate) struct Subscriber {
    dial: Dial,
    username: Option<String>,
    password: Option<String>,
    prefix: String,
    node_id: Arc<str>,
    probe: Vec<u8>,
    rx: Receiver<LinkRequest>,
    state: Arc<LinkState>,
    poll: Poll,
    ledger: Ledger,
    link: Option<Link>,
    /// The connection for history reads (up with `link`).
    reads_link: Option<Link>,
    reads: Reads,
    /// The channel of nodes' goodbyes (when rooms track presence).
    nodes: Option<Vec<u8>>,
    /// How often the nodes known are checked for liveness.
    presence_check: Option<Duration>,
    next_check: Instant,
    /// Since when every subscription is in place.
    ready_since: Option<Instant>,
    /// No node is declared gone before this: after a reconnection, Redis
    /// may have restarted empty, and the live nodes need a refresh to set
    /// their keys again.
    check_from: Instant,
    /// The subscriber was connected before (a restore is a reconnection).
    was_connected: bool,
    /// Confirmations the ledger owes, posted at the end of the turn.
    confirms: Vec<Confirm>,
    /// The link was up at the last turn.
    was_up: bool,
    /// Frames and confirmations for the shards, sent at the end of each turn.
    post: Post,
}

impl Subscriber {
    /// Prepares the subscriber (it connects when run).
    pub fn new(
        info: &redis::ConnectionInfo,
        cfg: &RedisConfig,
        node_id: Arc<str>,
        shards: Vec<ShardHandle>,
        rx: Receiver<LinkRequest>,
        state: Arc<LinkState>,
    ) -> io::Result<(Subscriber, Arc<Waker>)> {
        let dial = match info.addr() {
            redis::ConnectionAddr::Tcp(host, port) => Dial {
                host: host.clone(),
                port: *port,
                tls: None,
            },
            redis::ConnectionAddr::TcpTls { host, port, .. } => Dial {
                host: host.clone(),
                port: *port,
                tls: Some(
                    crate::tls::client::client_config(cfg.tls_ca.as_deref())
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("--redis-tls-ca: {e}")))?,
                ),
            },
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "--redis-url: only redis://host:port and rediss://host:port are supported",
                ))
            }
        };
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let probe_node = node_id.clone();
        let sub = Subscriber {
            dial,
            username: info.redis_settings().username().map(str::to_string),
            password: info.redis_settings().password().map(str::to_string),
            probe: probe_channel(&cfg.prefix, &node_id),
            prefix: cfg.prefix.clone(),
            node_id,
            rx,
            reads: Reads::new(&cfg.prefix, probe_node.clone(), state.clone()),
            nodes: cfg.presence_refresh.map(|_| presence::nodes_channel(&cfg.prefix)),
            presence_check: cfg.presence_refresh.map(|r| r / 4),
            next_check: Instant::now(),
            ready_since: None,
            check_from: Instant::now(),
            was_connected: false,
            state,
            poll,
            ledger: Ledger::default(),
            link: None,
            reads_link: None,
            confirms: Vec::new(),
            was_up: false,
            post: Post::new(shards, HELD_FRAMES),
        };
        Ok((sub, waker))
    }

    /// Runs until the shards are gone; an error if its poll fails.
    pub fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(64);
        let mut backoff = Backoff::new(unix_nanos());
        let mut next_try = Instant::now();
        let mut connected_before = false;
        loop {
            if self.link.is_none() && Instant::now() >= next_try {
                if let Err(e) = self.connect() {
                    tracing::debug!(error = %e, "redis link: subscriber cannot connect");
                    next_try = Instant::now() + backoff.next_delay();
                }
            }
            let timeout = if self.post.has_backlog() {
                Duration::from_millis(1)
            } else if self.link.is_none() {
                next_try.saturating_duration_since(Instant::now())
            } else if self.presence_check.is_some() {
                // Wake for the next liveness check.
                self.next_check
                    .saturating_duration_since(Instant::now())
                    .clamp(Duration::from_millis(10), Duration::from_millis(500))
            } else {
                Duration::from_millis(500)
            };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
            let mut lost = false;
            let mut lost_error: Option<io::Error> = None;
            for event in events.iter() {
                if event.token() == READS {
                    if let Err(e) = self.on_reads_socket(event.is_writable()) {
                        lost_error = Some(e);
                        lost = true;
                    }
                }
                if event.token() == SOCKET {
                    match self.on_socket(event.is_writable()) {
                        Ok(became_ready) => {
                            if became_ready {
                                if connected_before {
                                    self.state.reconnects.fetch_add(1, Relaxed);
                                }
                                connected_before = true;
                                backoff.reset();
                            }
                        }
                        Err(e) => {
                            lost_error = Some(e);
                            lost = true;
                        }
                    }
                }
            }
            let mode = self.mode();
            if mode != Mode::Up && self.was_up {
                // Redis stopped answering: joins waiting for it go ahead.
                tracing::warn!(?mode, "redis link: not answering; joins no longer wait for it");
                self.ledger.release_waiters(&mut self.confirms);
                self.reads.stalled(&mut self.post);
            }
            self.was_up = mode == Mode::Up;
            loop {
                match self.rx.try_recv() {
                    Ok(LinkRequest::Interest(msg)) => self.on_interest(msg),
                    Ok(LinkRequest::Admit(a)) => self.on_admit(a),
                    Ok(LinkRequest::PresenceSnapshot { room, owner }) => {
                        let name = super::channel(&self.prefix, &Topic::Room(room.clone()));
                        let up = mode == Mode::Up;
                        match self.reads_link.as_mut().filter(|l| l.connected && up) {
                            Some(l) => {
                                let live = self.ledger.is_live(&name);
                                self.reads.presence_snapshot(room, owner, name, live, &mut l.wbuf);
                            }
                            // Read once the room is subscribed again.
                            None => self.reads.presence_snapshot(room, owner, name, false, &mut Vec::new()),
                        }
                    }
                    Ok(LinkRequest::PresenceQuery { room, list, cap, reply }) => {
                        match self.reads_link.as_mut().filter(|l| l.connected && mode == Mode::Up) {
                            Some(l) => self.reads.presence_query(room, list, cap, reply, &mut l.wbuf),
                            None => reads::refuse(reply, &mut self.post),
                        }
                    }
                    Ok(LinkRequest::Query(q)) => {
                        match self.reads_link.as_mut().filter(|l| l.connected && mode == Mode::Up) {
                            Some(l) => self.reads.query(q, &mut l.wbuf),
                            None => {
                                self.state.history_errors.fetch_add(1, Relaxed);
                                reads::refuse(q.reply, &mut self.post);
                            }
                        }
                    }
                    Err(crossbeam_channel::TryRecvError::Empty) => break,
                    Err(crossbeam_channel::TryRecvError::Disconnected) => return Ok(()),
                }
            }
            if let Some(link) = self.link.as_mut() {
                self.reads.fence(&mut link.wbuf);
            }
            self.check_nodes(mode);
            if !lost {
                if let Err(e) = self.flush() {
                    lost_error = Some(e);
                    lost = true;
                }
            }
            if lost {
                let delay = backoff.next_delay();
                let error = lost_error.take().map(|e| e.to_string()).unwrap_or_default();
                if self.link.as_ref().is_some_and(|l| l.answered) {
                    tracing::warn!(%error, "redis link: subscriber lost its connection");
                } else {
                    // It never had one: say what it tries to reach.
                    tracing::warn!(
                        %error,
                        retry_in_ms = delay.as_millis() as u64,
                        "cannot connect to Redis at {}:{} (retrying in {:.1} s)",
                        self.dial.host,
                        self.dial.port,
                        delay.as_secs_f64()
                    );
                }
                self.disconnect();
                next_try = Instant::now() + delay;
            }
            self.send_to_shards();
        }
    }

    fn connect(&mut self) -> io::Result<()> {
        let addr = (self.dial.host.as_str(), self.dial.port)
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "redis host has no address"))?;
        let mut stream = Socket::connect(addr, &self.dial)?;
        let mut reads = Socket::connect(addr, &self.dial)?;
        self.poll
            .registry()
            .register(stream.tcp(), SOCKET, Ready::READABLE | Ready::WRITABLE)?;
        self.poll
            .registry()
            .register(reads.tcp(), READS, Ready::READABLE | Ready::WRITABLE)?;
        let link = |stream| Link {
            stream,
            connected: false,
            answered: false,
            wire: Wire::new(),
            wbuf: Vec::new(),
        };
        self.link = Some(link(stream));
        self.reads_link = Some(link(reads));
        Ok(())
    }

    /// The history reads' connection is readable or writable.
    fn on_reads_socket(&mut self, writable: bool) -> io::Result<()> {
        let Some(link) = self.reads_link.as_mut() else {
            return Ok(());
        };
        if !link.connected {
            if !writable {
                return Ok(());
            }
            if let Some(e) = link.stream.tcp().take_error()? {
                return Err(e);
            }
            link.stream.tcp().peer_addr()?;
            link.connected = true;
            let auth = self.password.as_deref().map(|p| (self.username.as_deref(), p));
            self.reads.connected(auth, &mut link.wbuf);
        }
        let mut values = Vec::new();
        link.wire.read_all(&mut link.stream, |v| {
            values.push(v);
            Ok(())
        })?;
        for v in values {
            self.reads.on_reply(v, &mut self.post, &mut link.wbuf);
        }
        Ok(())
    }

    /// A member joined a room with history: read where it starts once the
    /// room's subscription is in place; refused while Redis is not up.
    fn on_admit(&mut self, admit: crate::bus::Admit) {
        let up = self.mode() == Mode::Up;
        let Some(l) = self.reads_link.as_mut().filter(|l| l.connected && up) else {
            self.reads.refuse_admit(admit, &mut self.post);
            return;
        };
        let name = super::channel(&self.prefix, &Topic::Room(admit.room.clone()));
        let live = self.ledger.is_live(&name);
        self.reads.admit(admit, name, live, &mut l.wbuf);
    }

    /// The connection failed: every shard's pending join is confirmed now
    /// (the link is down, so waiting would only delay local delivery), and
    /// all subscriptions are restored on reconnect.
    fn disconnect(&mut self) {
        if let Some(mut link) = self.link.take() {
            let _ = self.poll.registry().deregister(link.stream.tcp());
        }
        if let Some(mut link) = self.reads_link.take() {
            let _ = self.poll.registry().deregister(link.stream.tcp());
        }
        self.reads.disconnected(&mut self.post);
        self.state.subscriber_up.store(false, Relaxed);
        self.state.subscriptions.store(0, Relaxed);
        self.ready_since = None;
        self.ledger.disconnected(&mut self.confirms);
    }

    /// Socket readiness; `Ok(true)` when the link just became fully ready.
    fn on_socket(&mut self, writable: bool) -> io::Result<bool> {
        let Some(link) = self.link.as_mut() else {
            return Ok(false);
        };
        if !link.connected {
            if !writable {
                return Ok(false);
            }
            if let Some(e) = link.stream.tcp().take_error()? {
                return Err(e);
            }
            link.stream.tcp().peer_addr()?;
            link.connected = true;
            self.on_connected();
        }
        let mut became_ready = false;
        let mut values = Vec::new();
        let link = self.link.as_mut().expect("connected");
        link.wire.read_all(&mut link.stream, |v| {
            values.push(v);
            Ok(())
        })?;
        link.answered |= !values.is_empty();
        for value in values {
            became_ready |= self.on_value(value)?;
        }
        Ok(became_ready)
    }

    /// Just connected: authenticate, then subscribe to everything wanted.
    fn on_connected(&mut self) {
        let mut out = Vec::new();
        match (&self.username, &self.password) {
            (Some(u), Some(p)) => wire::command(&mut out, &[b"AUTH", u.as_bytes(), p.as_bytes()]),
            (None, Some(p)) => wire::command(&mut out, &[b"AUTH", p.as_bytes()]),
            _ => {}
        }
        let mut always: Vec<&[u8]> = vec![&self.probe];
        if let Some(nodes) = &self.nodes {
            always.push(nodes);
        }
        let names = self.ledger.restore(&always);
        for chunk in names.chunks(SUBSCRIBE_CHUNK) {
            let mut args: Vec<&[u8]> = vec![b"SUBSCRIBE"];
            args.extend(chunk.iter().map(Vec::as_slice));
            wire::command(&mut out, &args);
        }
        self.state
            .subscriptions
            .store(self.ledger.subscriptions() as u64, Relaxed);
        let link = self.link.as_mut().expect("connected");
        link.wbuf.extend_from_slice(&out);
    }

    /// Handles one reply or message; `Ok(true)` when restoring just finished.
    fn on_value(&mut self, value: Value) -> io::Result<bool> {
        let items = match value {
            Value::Array(items) | Value::Push { data: items, .. } => items,
            Value::ServerError(e) => return Err(io::Error::other(format!("redis refused: {e}"))),
            _ => return Ok(false),
        };
        let (Some(Value::BulkString(kind)), Some(Value::BulkString(name))) = (items.first(), items.get(1)) else {
            return Ok(false);
        };
        match kind.as_slice() {
            b"message" => {
                if let Some(Value::BulkString(payload)) = items.get(2) {
                    self.on_message(name, payload);
                }
                Ok(false)
            }
            b"pong" => {
                self.reads.on_pong(name, &mut self.post);
                Ok(false)
            }
            b"subscribe" => {
                let restored = self.ledger.subscribed(name, &mut self.confirms);
                if self.ledger.is_live(name) {
                    if let Some(l) = self.reads_link.as_mut() {
                        self.reads.subscribed(name, &mut l.wbuf);
                    }
                }
                self.state
                    .subscriptions
                    .store(self.ledger.subscriptions() as u64, Relaxed);
                if restored {
                    let now = Instant::now();
                    self.ready_since = Some(now);
                    if self.was_connected {
                        // A refresh interval is `presence_check` × 4.
                        self.check_from = now + self.presence_check.unwrap_or_default() * 12;
                    }
                    self.was_connected = true;
                    self.state.last_probe_nanos.store(unix_nanos(), Relaxed);
                    self.state.subscriber_up.store(true, Relaxed);
                    self.state.resubscribed.fetch_add(1, Relaxed);
                    tracing::info!(channels = self.ledger.len(), "redis link: subscribed");
                }
                Ok(restored)
            }
            _ => Ok(false),
        }
    }

    fn on_message(&mut self, name: &[u8], payload: &[u8]) {
        if payload.first().is_some_and(u8::is_ascii_digit) {
            return self.on_numbered(name, payload);
        }
        if payload.first() == Some(&presence::CHANGE) {
            return self.on_presence_change(name, payload);
        }
        if self.nodes.as_deref() == Some(name) {
            if let Some(node) = presence::parse_goodbye(payload) {
                if node != &*self.node_id {
                    tracing::info!(%node, "redis link: a node said goodbye");
                    self.reads.node_gone(node, &mut self.post);
                }
            }
            return;
        }
        let Some(env) = envelope::decode(payload) else { return };
        if name == self.probe.as_slice() {
            let now = unix_nanos();
            self.state.last_probe_nanos.store(now, Relaxed);
            self.state
                .probe_lag_micros
                .store(now.saturating_sub(env.sent_unix_nanos) / 1000, Relaxed);
            return;
        }
        if env.node == self.node_id.as_bytes() {
            return; // Our own publish, already delivered locally.
        }
        let Some((topic, mask)) = self.ledger.route(name) else {
            return;
        };
        self.state.messages_in.fetch_add(1, Relaxed);
        let frame = Encoded::new(envelope::frame_bytes(&env));
        for s in shards_in(mask) {
            if s < self.post.len() {
                self.post.frame(s, topic, &frame);
            }
        }
    }

    /// A message of a room with history, numbered by Redis: every node
    /// (this one too) finishes its frame once and forwards it.
    fn on_numbered(&mut self, name: &[u8], payload: &[u8]) {
        let Some(messages) = history::decode_published(payload) else {
            return;
        };
        let Some((topic, mask)) = self.ledger.route(name) else {
            return;
        };
        for (node, message) in messages {
            let Some(plain) = message.frame() else { continue };
            let frame = Encoded::new(plain);
            if node != self.node_id.as_bytes() {
                self.state.messages_in.fetch_add(1, Relaxed);
            }
            for s in shards_in(mask) {
                if s < self.post.len() {
                    self.post.frame(s, topic, &frame);
                }
            }
            self.reads.forwarded(name, message.offset, &frame.plain);
        }
    }

    /// Another node's presence change: to the room's owner shard.
    fn on_presence_change(&mut self, name: &[u8], payload: &[u8]) {
        let Some(change) = presence::decode_change(payload) else {
            return;
        };
        if change.node == self.node_id {
            return;
        }
        let Some((Topic::Room(room), _)) = self.ledger.route(name) else {
            return;
        };
        let room = room.clone();
        self.reads.node_seen(&change.node);
        let owner = crate::rooms::owner_of(&room, self.post.len());
        self.post.item(owner, crate::bus::Item::RemotePresence { room, change });
    }

    /// Every quarter refresh interval asks whether the nodes known are
    /// still there; after a reconnection, only once the link has been up
    /// for three intervals (every live node has refreshed its key since).
    fn check_nodes(&mut self, mode: Mode) {
        let (Some(every), Some(_)) = (self.presence_check, self.ready_since) else {
            return;
        };
        let now = Instant::now();
        if mode != Mode::Up || now < self.next_check || now < self.check_from {
            return;
        }
        self.next_check = now + every;
        if let Some(l) = self.reads_link.as_mut().filter(|l| l.connected) {
            self.reads.check_nodes(&mut l.wbuf);
        }
    }

    /// How far the link can be trusted right now.
    fn mode(&self) -> Mode {
        if !self.link.as_ref().is_some_and(|l| l.connected) {
            Mode::Down
        } else if !self.state.subscriber_up.load(Relaxed) || self.state.stalled_for().is_some() {
            Mode::Degraded
        } else {
            Mode::Up
        }
    }

    fn on_interest(&mut self, msg: TopicInterest) {
        let name = super::channel(&self.prefix, &msg.topic);
        let mode = self.mode();
        tracing::debug!(topic = ?msg.topic, on = msg.on, shard = msg.shard, ?mode, "redis link: interest");
        let command = self.ledger.interest(&name, msg, mode, &mut self.confirms);
        self.state
            .subscriptions
            .store(self.ledger.subscriptions() as u64, Relaxed);
        let verb: &[u8] = match command {
            None => return,
            Some(Command::Subscribe) => b"SUBSCRIBE",
            Some(Command::Unsubscribe) => b"UNSUBSCRIBE",
        };
        if let Some(link) = self.link.as_mut() {
            wire::command(&mut link.wbuf, &[verb, &name]);
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        if let Some(link) = self.link.as_mut() {
            flush_link(link)?;
        }
        if let Some(link) = self.reads_link.as_mut() {
            flush_link(link)?;
        }
        Ok(())
    }

    /// Sends this turn's frames and confirmations to the shards; frames
    /// that find an inbox full are counted as `link_inbound` drops.
    fn send_to_shards(&mut self) {
        for Confirm { shard, topic, seq } in self.confirms.drain(..) {
            self.post.control(shard, ShardMsg::Confirm { topic, seq });
        }
        let state = &self.state;
        self.post.flush(|_, n| {
            state.dropped_inbound.fetch_add(n, Relaxed);
        });
    }
}

/// Writes what `link` has to send, as far as the socket takes it.
fn flush_link(link: &mut Link) -> io::Result<()> {
    if !link.connected {
        return Ok(());
    }
    while !link.wbuf.is_empty() {
        match link.stream.write(&link.wbuf) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                link.wbuf.drain(..n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    // With TLS, records sealed but not yet taken by the socket.
    match link.stream.send_pending() {
        Err(e) if e.kind() != io::ErrorKind::WouldBlock => Err(e),
        _ => Ok(()),
    }
}
