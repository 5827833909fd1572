//! The subscriber thread: one Redis connection in pub/sub mode, driven by a
//! small mio loop so that subscription changes from shards (through a
//! channel and a `Waker`) are sent while messages keep streaming in. (The
//! `redis` crate's blocking pub/sub cannot be interrupted to subscribe.)
//!
//! Per channel it keeps which shards want it, and counts SUBSCRIBE commands
//! sent and confirmed: a shard's join waits until a subscription that was
//! sent after its request is confirmed. While Redis is unreachable, joins are
//! confirmed at once and every wanted channel is subscribed on reconnect.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::ToSocketAddrs;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use mio::net::TcpStream;
use mio::{Events, Interest as Ready, Poll, Token, Waker};

use crate::bus::post::shards_in;
use crate::bus::{Post, ShardHandle, ShardMsg, TopicInterest};
use crate::config::RedisConfig;
use crate::metrics::link::unix_nanos;
use crate::metrics::LinkState;
use crate::rooms::Topic;

use super::backoff::Backoff;
use super::resp::{self, Value};
use super::{envelope, probe_channel};

const SOCKET: Token = Token(0);
const WAKER: Token = Token(1);
/// Channels per SUBSCRIBE command when restoring subscriptions.
const SUBSCRIBE_CHUNK: usize = 256;

#[derive(Debug)]
struct Chan {
    topic: Topic,
    /// Shards with members.
    mask: u64,
    /// A SUBSCRIBE is in effect (or in flight) on the current connection.
    subscribed: bool,
    sent: u64,
    confirmed: u64,
    /// (shard, seq, SUBSCRIBE count that must be confirmed first).
    waiters: Vec<(usize, u64, u64)>,
}

struct Link {
    stream: TcpStream,
    connected: bool,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    /// Subscribe confirmations still expected before the link counts as up.
    restoring: usize,
}

/// The subscriber's state.
pub(crate) struct Subscriber {
    host: String,
    port: u16,
    username: Option<String>,
    password: Option<String>,
    prefix: String,
    node_id: Arc<str>,
    probe: Vec<u8>,
    rx: Receiver<TopicInterest>,
    state: Arc<LinkState>,
    poll: Poll,
    chans: HashMap<Vec<u8>, Chan>,
    link: Option<Link>,
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
        rx: Receiver<TopicInterest>,
        state: Arc<LinkState>,
    ) -> io::Result<(Subscriber, Arc<Waker>)> {
        let (host, port) = match info.addr() {
            redis::ConnectionAddr::Tcp(host, port) => (host.clone(), *port),
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "--redis-url: only redis://host:port is supported",
                ))
            }
        };
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let sub = Subscriber {
            host,
            port,
            username: info.redis_settings().username().map(str::to_string),
            password: info.redis_settings().password().map(str::to_string),
            probe: probe_channel(&cfg.prefix, &node_id),
            prefix: cfg.prefix.clone(),
            node_id,
            rx,
            state,
            poll,
            chans: HashMap::new(),
            link: None,
            post: Post::new(shards),
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
            } else {
                Duration::from_millis(500)
            };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
            let mut lost = false;
            for event in events.iter() {
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
                            tracing::warn!(error = %e, "redis link: subscriber lost its connection");
                            lost = true;
                        }
                    }
                }
            }
            loop {
                match self.rx.try_recv() {
                    Ok(msg) => self.on_interest(msg),
                    Err(crossbeam_channel::TryRecvError::Empty) => break,
                    Err(crossbeam_channel::TryRecvError::Disconnected) => return Ok(()),
                }
            }
            if !lost {
                if let Err(e) = self.flush() {
                    tracing::warn!(error = %e, "redis link: subscriber lost its connection");
                    lost = true;
                }
            }
            if lost {
                self.disconnect();
                next_try = Instant::now() + backoff.next_delay();
            }
            self.send_to_shards();
        }
    }

    fn connect(&mut self) -> io::Result<()> {
        let addr = (self.host.as_str(), self.port)
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "redis host has no address"))?;
        let mut stream = TcpStream::connect(addr)?;
        self.poll
            .registry()
            .register(&mut stream, SOCKET, Ready::READABLE | Ready::WRITABLE)?;
        self.link = Some(Link {
            stream,
            connected: false,
            rbuf: Vec::new(),
            wbuf: Vec::new(),
            restoring: 0,
        });
        Ok(())
    }

    /// The connection failed: every shard's pending join is confirmed now
    /// (the link is down, so waiting would only delay local delivery), and
    /// all subscriptions are restored on reconnect.
    fn disconnect(&mut self) {
        if let Some(mut link) = self.link.take() {
            let _ = self.poll.registry().deregister(&mut link.stream);
        }
        self.state.subscriber_up.store(false, Relaxed);
        self.state.subscriptions.store(0, Relaxed);
        for chan in self.chans.values_mut() {
            chan.subscribed = false;
            chan.sent = 0;
            chan.confirmed = 0;
            for (shard, seq, _) in chan.waiters.drain(..) {
                self.post.control(
                    shard,
                    ShardMsg::Confirm {
                        topic: chan.topic.clone(),
                        seq,
                    },
                );
            }
        }
        self.chans.retain(|_, c| c.mask != 0);
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
            if let Some(e) = link.stream.take_error()? {
                return Err(e);
            }
            link.stream.peer_addr()?;
            link.connected = true;
            self.on_connected();
        }
        let mut became_ready = false;
        let mut buf = [0u8; 64 * 1024];
        loop {
            let link = self.link.as_mut().expect("connected");
            match link.stream.read(&mut buf) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => link.rbuf.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        let mut rbuf = std::mem::take(&mut self.link.as_mut().expect("connected").rbuf);
        let mut at = 0;
        while let Some((value, used)) =
            resp::parse(&rbuf[at..]).map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "not RESP"))?
        {
            at += used;
            became_ready |= self.on_value(value)?;
        }
        rbuf.drain(..at);
        if let Some(link) = self.link.as_mut() {
            link.rbuf = rbuf;
        }
        Ok(became_ready)
    }

    /// Just connected: authenticate, then subscribe to everything wanted.
    fn on_connected(&mut self) {
        let mut out = Vec::new();
        match (&self.username, &self.password) {
            (Some(u), Some(p)) => resp::command(&mut out, &[b"AUTH", u.as_bytes(), p.as_bytes()]),
            (None, Some(p)) => resp::command(&mut out, &[b"AUTH", p.as_bytes()]),
            _ => {}
        }
        let mut names: Vec<Vec<u8>> = vec![self.probe.clone()];
        for (name, chan) in self.chans.iter_mut() {
            if chan.mask != 0 {
                chan.subscribed = true;
                chan.sent += 1;
                names.push(name.clone());
            }
        }
        for chunk in names.chunks(SUBSCRIBE_CHUNK) {
            let mut args: Vec<&[u8]> = vec![b"SUBSCRIBE"];
            args.extend(chunk.iter().map(Vec::as_slice));
            resp::command(&mut out, &args);
        }
        let link = self.link.as_mut().expect("connected");
        link.restoring = names.len();
        link.wbuf.extend_from_slice(&out);
    }

    /// Handles one reply or message; `Ok(true)` when restoring just finished.
    fn on_value(&mut self, value: Value) -> io::Result<bool> {
        let items = match value {
            Value::Array(Some(items)) => items,
            Value::Error(e) => {
                let text = String::from_utf8_lossy(&e).into_owned();
                return Err(io::Error::other(format!("redis refused: {text}")));
            }
            _ => return Ok(false),
        };
        let kind = match items.first() {
            Some(Value::Bulk(Some(k))) => k.as_slice(),
            _ => return Ok(false),
        };
        let name = match items.get(1) {
            Some(Value::Bulk(Some(n))) => n.as_slice(),
            _ => return Ok(false),
        };
        match kind {
            b"message" => {
                if let Some(Value::Bulk(Some(payload))) = items.get(2) {
                    self.on_message(name, payload);
                }
                Ok(false)
            }
            b"subscribe" => Ok(self.on_subscribed(name)),
            _ => Ok(false),
        }
    }

    fn on_subscribed(&mut self, name: &[u8]) -> bool {
        if let Some(chan) = self.chans.get_mut(name) {
            chan.confirmed += 1;
            let confirmed = chan.confirmed;
            let topic = chan.topic.clone();
            let mut i = 0;
            while i < chan.waiters.len() {
                if chan.waiters[i].2 <= confirmed {
                    let (shard, seq, _) = chan.waiters.swap_remove(i);
                    self.post.control(
                        shard,
                        ShardMsg::Confirm {
                            topic: topic.clone(),
                            seq,
                        },
                    );
                } else {
                    i += 1;
                }
            }
        }
        self.state
            .subscriptions
            .store(self.chans.values().filter(|c| c.subscribed).count() as u64, Relaxed);
        let Some(link) = self.link.as_mut() else { return false };
        if link.restoring > 0 {
            link.restoring -= 1;
            if link.restoring == 0 {
                self.state.last_probe_nanos.store(unix_nanos(), Relaxed);
                self.state.subscriber_up.store(true, Relaxed);
                self.state.resubscribed.fetch_add(1, Relaxed);
                tracing::info!(channels = self.chans.len(), "redis link: subscribed");
                return true;
            }
        }
        false
    }

    fn on_message(&mut self, name: &[u8], payload: &[u8]) {
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
        let Some(chan) = self.chans.get(name) else { return };
        if chan.mask == 0 {
            return;
        }
        self.state.messages_in.fetch_add(1, Relaxed);
        let frame = envelope::frame_bytes(&env);
        for s in shards_in(chan.mask) {
            if s < self.post.len() {
                self.post.frame(s, &chan.topic, &frame);
            }
        }
    }

    fn on_interest(&mut self, msg: TopicInterest) {
        let name = super::channel(&self.prefix, &msg.topic);
        let up = self.link.as_ref().is_some_and(|l| l.connected);
        tracing::debug!(topic = ?msg.topic, on = msg.on, shard = msg.shard, up, "redis link: interest");
        let bit = 1u64 << msg.shard;
        let mut out = Vec::new();
        let chan = self.chans.entry(name.clone()).or_insert_with(|| Chan {
            topic: msg.topic.clone(),
            mask: 0,
            subscribed: false,
            sent: 0,
            confirmed: 0,
            waiters: Vec::new(),
        });
        if msg.on {
            chan.mask |= bit;
            if !up {
                self.post.control(
                    msg.shard,
                    ShardMsg::Confirm {
                        topic: msg.topic,
                        seq: msg.seq,
                    },
                );
                return;
            }
            if !chan.subscribed {
                chan.subscribed = true;
                chan.sent += 1;
                resp::command(&mut out, &[b"SUBSCRIBE", &name]);
            }
            if chan.confirmed >= chan.sent {
                self.post.control(
                    msg.shard,
                    ShardMsg::Confirm {
                        topic: msg.topic,
                        seq: msg.seq,
                    },
                );
            } else {
                chan.waiters.push((msg.shard, msg.seq, chan.sent));
            }
        } else {
            chan.mask &= !bit;
            if chan.mask == 0 && chan.subscribed && up {
                chan.subscribed = false;
                resp::command(&mut out, &[b"UNSUBSCRIBE", &name]);
            }
            if chan.mask == 0 && chan.confirmed >= chan.sent && !up {
                self.chans.remove(&name);
            }
        }
        if let Some(link) = self.link.as_mut() {
            link.wbuf.extend_from_slice(&out);
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        let Some(link) = self.link.as_mut() else { return Ok(()) };
        if !link.connected {
            return Ok(());
        }
        while !link.wbuf.is_empty() {
            match link.stream.write(&link.wbuf) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    link.wbuf.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Sends this turn's frames and confirmations to the shards; frames
    /// that find an inbox full are counted as `link_inbound` drops.
    fn send_to_shards(&mut self) {
        let state = &self.state;
        self.post.flush(|_, n| {
            state.dropped_inbound.fetch_add(n, Relaxed);
        });
    }
}
