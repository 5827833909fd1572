//! The publisher thread: every local publish goes to Redis once, many per
//! round trip (a pipeline per wake-up), in publish order.
//!
//! While Redis is unreachable, messages wait in a bounded buffer (overflow
//! is dropped and counted) and are published, in order, once the
//! subscriber has restored its subscriptions (so this node hears replies to
//! what it sends) and the other nodes that were subscribed to the buffered
//! messages' channels are subscribed again (`PUBSUB NUMSUB`, compared with
//! what PUBLISH replies said before the outage: `receivers.rs`), for at
//! most `--redis-resubscribe-wait-secs`. A message that then reaches fewer
//! subscribers than its channel had is counted
//! (`roomcast_redis_unconfirmed_total`): another node may have missed it.
//! A pipeline that fails midway is sent again whole after reconnecting: at
//! least once, never silently lost.
//!
//! On a Redis Cluster (`target.rs`) each message goes to its channel's
//! master (`SPUBLISH`), and the buffer holds slots, not the whole link: a
//! master that cannot be reached, or a slot that moves (`MOVED`:
//! resharding), puts that message in the buffer, and every later message
//! of a slot with messages in the buffer follows it there, while the other
//! slots' messages keep going out. The buffer is published, in order, once
//! the nodes that were subscribed to its channels are subscribed on their
//! slots' masters again (`PUBSUB SHARDNUMSUB` there; after a failover, on
//! the promoted replica), for at most `--redis-resubscribe-wait-secs`,
//! counted if a subscriber is still missing. Rooms with history on a lost
//! master answer `unavailable`; presence is sent again once that master
//! answers.
//!
//! Publishes to rooms with history go through `history.rs`'s script
//! instead (numbered, kept and published at once, pipelined too), and each
//! publisher is acked with its offset through its shard's inbox. They are
//! not buffered: while Redis is unreachable, or if the script fails, the
//! publisher is answered `unavailable` (a publish that failed midway may
//! still have landed: retrying it is at least once).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use redis::{Cmd, RedisResult, Value};

use crate::bus::{ApiPart, LinkBatch, Numbered, Post, ShardHandle};
use crate::protocol::encode;
use crate::rooms::Topic;

use super::announcer::Announcer;
use super::backoff::Backoff;
use super::history::{self, meta_key, stream_key, PUBLISH_MAX_MESSAGES, PUBLISH_SCRIPT};
use super::masters::OnMoved;
use super::presence::PRESENCE_SCRIPT;
use super::reads;
use super::receivers::Receivers;
use super::target::{fate, sharded_script, Fate, Spec, Target};
use super::{channel, envelope, probe_channel, slot};
use crate::config::RedisConfig;
use crate::metrics::link::{unix_nanos, PROBE_INTERVAL};
use crate::metrics::LinkState;

/// Most messages in one pipeline.
const PIPELINE: usize = 1024;
/// Least wait after this node has re-subscribed before flushing the outage
/// buffer when some of its channels had no known subscribers to wait for.
const FLUSH_GRACE: Duration = Duration::from_secs(1);
/// How often `PUBSUB NUMSUB` is asked while the buffer waits.
const NUMSUB_INTERVAL: Duration = Duration::from_millis(100);
/// Channels per `PUBSUB NUMSUB`.
const NUMSUB_CHUNK: usize = 256;

/// One message for Redis: channel and envelope.
type Outgoing = (Vec<u8>, Vec<u8>);

/// The publisher's state.
pub(crate) struct Publisher {
    spec: Spec,
    /// The publish and presence scripts, as this target runs them (loaded
    /// on every connection, and on a master that lost them).
    scripts: Vec<String>,
    prefix: String,
    node_id: Arc<str>,
    rx: Receiver<LinkBatch>,
    state: Arc<LinkState>,
    buffer: VecDeque<Outgoing>,
    /// Publishes to rooms with history, for the script.
    numbered: Vec<Numbered>,
    /// The publish script's SHA1, for `EVALSHA`.
    sha: String,
    /// Acks and errors for publishers of rooms with history.
    post: Post,
    /// This node's presence in Redis, when rooms track presence.
    announcer: Option<Announcer>,
    capacity: usize,
    /// Longest wait for other nodes to re-subscribe after an outage.
    resubscribe_wait: Duration,
    /// Subscriber counts per channel, and the current recovery.
    receivers: Receivers,
    /// Since when the subscriber is up again with messages still buffered.
    ready_since: Option<Instant>,
    /// When to ask `PUBSUB NUMSUB` again.
    next_numsub: Instant,
    /// On a cluster: the slots with messages in the buffer or in
    /// `held_numbered` (their later messages wait behind them).
    held: HashSet<u16>,
    /// On a cluster: publishes to rooms with history whose slot moved,
    /// waiting (like the buffer) for the room's subscribers to follow it.
    held_numbered: VecDeque<Numbered>,
    /// On a cluster: a presence write was lost with a master; every shard
    /// sends its presence again once a write goes through.
    presence_lost: bool,
}

impl Publisher {
    /// A publisher for the Redis at `info`.
    pub fn new(
        spec: Spec,
        cfg: &RedisConfig,
        node_id: Arc<str>,
        shards: Vec<ShardHandle>,
        rx: Receiver<LinkBatch>,
        state: Arc<LinkState>,
    ) -> std::io::Result<Publisher> {
        let announcer_node = node_id.clone();
        let (publish, presence) = match spec {
            Spec::One(_) => (PUBLISH_SCRIPT.to_string(), PRESENCE_SCRIPT.to_string()),
            Spec::Cluster(_) => (sharded_script(PUBLISH_SCRIPT), sharded_script(PRESENCE_SCRIPT)),
        };
        Ok(Publisher {
            spec,
            prefix: cfg.prefix.clone(),
            node_id,
            rx,
            state,
            buffer: VecDeque::new(),
            numbered: Vec::new(),
            sha: super::history::script_sha(&publish),
            // Acks are small and few per publish: held without a count.
            post: Post::new(shards, usize::MAX),
            announcer: cfg
                .presence_refresh
                .map(|refresh| Announcer::new(&cfg.prefix, announcer_node, refresh, &presence)),
            scripts: vec![publish, presence],
            capacity: cfg.buffer_messages,
            resubscribe_wait: cfg.resubscribe_wait,
            receivers: Receivers::default(),
            ready_since: None,
            next_numsub: Instant::now(),
            held: HashSet::new(),
            held_numbered: VecDeque::new(),
            presence_lost: false,
        })
    }

    fn connect(&self) -> RedisResult<Target> {
        Target::connect(&self.spec, &self.scripts)
    }

    /// Runs `cmds` on `target` (loading the scripts again where lost).
    fn run_on(&self, target: &mut Target, cmds: &[(u16, Cmd)], on_moved: OnMoved) -> Vec<RedisResult<Value>> {
        target.run(cmds, on_moved, &self.scripts)
    }

    /// Runs until every shard is gone (the channel disconnects).
    pub fn run(mut self) -> std::io::Result<()> {
        let mut conn: Option<Target> = None;
        let mut backoff = Backoff::new(unix_nanos() ^ 0x5eed);
        let mut next_try = Instant::now();
        let mut next_probe = Instant::now();
        let mut connected_before = false;
        let mut pending: Vec<Outgoing> = Vec::new();
        loop {
            let now = Instant::now();
            if conn.is_none() && now >= next_try {
                match self.connect() {
                    Ok(c) => {
                        if connected_before {
                            self.state.reconnects.fetch_add(1, Relaxed);
                            tracing::info!("redis link: publisher reconnected");
                            // Redis may have lost this node's presence.
                            self.resync_presence();
                        }
                        if let Some(a) = &mut self.announcer {
                            a.connected();
                        }
                        connected_before = true;
                        backoff.reset();
                        conn = Some(c);
                        self.state.publisher_up.store(true, Relaxed);
                    }
                    Err(e) => {
                        next_try = now + backoff.next_delay();
                        tracing::debug!(error = %e, "redis link: publisher cannot connect");
                    }
                }
            }
            let wake_at = if conn.is_none() {
                next_try.min(next_probe)
            } else {
                let refresh = self.announcer.as_ref().map(Announcer::next_refresh);
                refresh.map_or(next_probe, |r| r.min(next_probe))
            };
            let wait = wake_at
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(100));
            match self.rx.recv_timeout(wait) {
                Ok(batch) => {
                    self.push_batch(&mut pending, batch);
                    for _ in 0..64 {
                        let Ok(batch) = self.rx.try_recv() else { break };
                        self.push_batch(&mut pending, batch);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    // Shutdown: the other nodes hear this one is gone.
                    if let (Some(a), Some(c)) = (&mut self.announcer, conn.as_mut()) {
                        if let Err(e) = a.goodbye(c, &self.scripts) {
                            tracing::warn!(error = %e, "redis link: could not say goodbye");
                        }
                    }
                    return Ok(());
                }
            }
            let probe = if Instant::now() >= next_probe {
                next_probe += PROBE_INTERVAL;
                let env = envelope::encode(&self.node_id, unix_nanos(), b"");
                Some((probe_channel(&self.prefix, &self.node_id), env))
            } else {
                None
            };
            let Some(c) = conn.as_mut() else {
                self.hold(&mut pending);
                self.refuse_numbered();
                if let Some(a) = &mut self.announcer {
                    a.drop_changes();
                }
                self.send_to_shards();
                continue;
            };
            let result = self
                .send(c, &mut pending, probe)
                .and_then(|()| self.number(c))
                .and_then(|()| self.announce(c));
            self.send_to_shards();
            if let Err(e) = result {
                tracing::warn!(error = %e, buffered = self.buffer.len(), "redis link: publisher lost its connection");
                conn = None;
                self.state.publisher_up.store(false, Relaxed);
                next_try = Instant::now() + backoff.next_delay();
            }
        }
    }

    /// Writes this node's presence changes; on a cluster, a lost master
    /// costs a resync once it (or its replica) answers, not the link.
    fn announce(&mut self, c: &mut Target) -> RedisResult<()> {
        let Some(a) = self.announcer.as_mut() else {
            return Ok(());
        };
        match a.write(c, &self.scripts) {
            Err(e) if c.sharded() => {
                tracing::debug!(error = %e, "redis link: a presence write was lost with a master");
                self.presence_lost = true;
                // Tried again at the next turn.
                a.connected();
                Ok(())
            }
            Err(e) => Err(e),
            Ok(()) => {
                if std::mem::take(&mut self.presence_lost) {
                    self.resync_presence();
                }
                Ok(())
            }
        }
    }

    /// Every shard sends its rooms' presence again.
    fn resync_presence(&mut self) {
        if self.announcer.is_some() {
            for shard in 0..self.post.len() {
                self.post.item(shard, crate::bus::Item::PresenceResync);
            }
        }
    }

    fn push_batch(&mut self, pending: &mut Vec<Outgoing>, batch: LinkBatch) {
        let now = unix_nanos();
        self.numbered.extend(batch.numbered);
        if let Some(a) = &mut self.announcer {
            a.push(batch.presence);
        }
        pending.extend(batch.frames.into_iter().map(|(topic, frame)| {
            (
                channel(&self.prefix, &topic),
                envelope::encode(&self.node_id, now, &frame),
            )
        }));
    }

    /// Keeps `pending` for later, within the buffer's capacity.
    fn hold(&mut self, pending: &mut Vec<Outgoing>) {
        for msg in pending.drain(..) {
            self.hold_one(msg);
        }
        self.state.buffer_depth.store(self.buffer.len() as u64, Relaxed);
    }

    fn hold_one(&mut self, msg: Outgoing) {
        if self.buffer.len() < self.capacity {
            self.held.insert(slot::of(&msg.0));
            self.buffer.push_back(msg);
        } else {
            self.state.dropped.fetch_add(1, Relaxed);
        }
    }

    /// Whether `msg` must wait in the buffer: with one Redis, while the
    /// buffer holds anything; on a cluster, while it holds its slot.
    fn must_wait(&self, c: &Target, msg: &Outgoing) -> bool {
        self.holding() && (!c.sharded() || self.held.contains(&slot::of(&msg.0)))
    }

    /// Messages wait for their channels' subscribers.
    fn holding(&self) -> bool {
        !self.buffer.is_empty() || !self.held_numbered.is_empty()
    }

    /// Publishes the outage buffer (once the nodes are back), then
    /// `pending`. What cannot go now waits in the buffer, in order. `Err`
    /// if the connection to one Redis failed; on a cluster a lost master
    /// costs only its slots' messages, which wait.
    fn send(&mut self, c: &mut Target, pending: &mut Vec<Outgoing>, probe: Option<Outgoing>) -> RedisResult<()> {
        if let Some(p) = probe {
            // Not kept: the next one follows within a second.
            let results = self.publish(c, std::slice::from_ref(&p));
            if let Some(Err(e)) = results.into_iter().find(|r| fate(r) == Fate::Lost) {
                if !c.sharded() {
                    self.hold(pending);
                    return Err(e);
                }
            }
        }
        if self.holding() && self.ready_to_flush(c)? {
            self.flush(c, pending)?;
        }
        let mut queue = std::mem::take(pending);
        while !queue.is_empty() {
            let n = queue.len().min(PIPELINE);
            let mut chunk: Vec<Outgoing> = Vec::with_capacity(n);
            for msg in queue.drain(..n) {
                if self.must_wait(c, &msg) {
                    self.hold_one(msg);
                } else {
                    chunk.push(msg);
                }
            }
            if chunk.is_empty() {
                continue;
            }
            let results = self.publish(c, &chunk);
            let settled = self.settle(chunk, results);
            if settled.keep.is_empty() {
                continue;
            }
            // Unsent (or possibly half-sent) messages go out again later,
            // before any later one of their slot (of any, with one Redis).
            if c.sharded() {
                for msg in settled.keep {
                    self.hold_one(msg);
                }
                self.wait_again();
                continue;
            }
            let mut rest = settled.keep;
            rest.append(&mut queue);
            self.hold(&mut rest);
            if let Some(e) = settled.lost {
                return Err(e);
            }
            self.wait_again();
            return Ok(());
        }
        self.state.buffer_depth.store(self.buffer.len() as u64, Relaxed);
        Ok(())
    }

    /// Publishes the buffer, in order; what cannot go yet stays in front.
    fn flush(&mut self, c: &mut Target, pending: &mut Vec<Outgoing>) -> RedisResult<()> {
        let mut kept: VecDeque<Outgoing> = VecDeque::new();
        let mut kept_slots: HashSet<u16> = HashSet::new();
        let mut waiting = false;
        while !self.buffer.is_empty() {
            let n = self.buffer.len().min(PIPELINE);
            let mut chunk: Vec<Outgoing> = Vec::with_capacity(n);
            for msg in self.buffer.drain(..n) {
                // A slot already kept back keeps its order.
                if kept_slots.contains(&slot::of(&msg.0)) {
                    kept.push_back(msg);
                } else {
                    chunk.push(msg);
                }
            }
            let results = self.publish(c, &chunk);
            let settled = self.settle(chunk, results);
            waiting |= !settled.keep.is_empty();
            if let (Some(e), false) = (&settled.lost, c.sharded()) {
                // One Redis: all of it waits for the next connection.
                let e = e.clone();
                for m in settled.keep.into_iter().rev() {
                    self.buffer.push_front(m);
                }
                for m in kept.into_iter().rev() {
                    self.buffer.push_front(m);
                }
                self.state.buffer_depth.store(self.buffer.len() as u64, Relaxed);
                self.hold(pending);
                return Err(e);
            }
            kept_slots.extend(settled.keep.iter().map(|m| slot::of(&m.0)));
            kept.extend(settled.keep);
        }
        self.buffer = kept;
        self.held = self.buffer.iter().map(|m| slot::of(&m.0)).collect();
        self.state.buffer_depth.store(self.buffer.len() as u64, Relaxed);
        if waiting {
            self.held
                .extend(self.held_numbered.iter().map(|m| numbered_slot(&self.prefix, m)));
            self.wait_again();
            return Ok(());
        }
        // Publishes to rooms with history go next, before any later one.
        let mut numbered: Vec<Numbered> = self.held_numbered.drain(..).collect();
        numbered.append(&mut self.numbered);
        self.numbered = numbered;
        self.receivers.flushed(Instant::now() + self.resubscribe_wait);
        self.ready_since = None;
        self.state.flush_waiting.store(false, Relaxed);
        tracing::info!("redis link: outage buffer flushed");
        Ok(())
    }

    /// A slot moved or its master was lost: the buffer waits for its
    /// subscribers to be back.
    fn wait_again(&mut self) {
        if self.ready_since.take().is_some() {
            self.state.flush_waiting.store(false, Relaxed);
        }
        tracing::debug!(
            buffered = self.buffer.len(),
            "redis link: messages wait for their slots' subscribers"
        );
    }

    /// One round trip: each message to its channel.
    fn publish(&self, c: &mut Target, msgs: &[Outgoing]) -> Vec<RedisResult<Value>> {
        let cmds: Vec<(u16, Cmd)> = msgs.iter().map(|(ch, env)| c.publish(ch, env)).collect();
        self.run_on(c, &cmds, OnMoved::Return)
    }

    /// Counts what was published; returns what must be sent again.
    fn settle(&mut self, sent: Vec<Outgoing>, results: Vec<RedisResult<Value>>) -> Settled {
        let now = Instant::now();
        let mut settled = Settled {
            keep: Vec::new(),
            lost: None,
            moved: false,
        };
        let (mut published, mut unconfirmed) = (0u64, 0u64);
        for (msg, result) in sent.into_iter().zip(results) {
            match fate(&result) {
                Fate::Done => {
                    let receivers = match result {
                        Ok(Value::Int(n)) => n.max(0) as u64,
                        _ => 0,
                    };
                    published += 1;
                    unconfirmed += u64::from(self.receivers.published(&msg.0, receivers, now));
                }
                Fate::Refused => {
                    tracing::warn!(error = ?result.err(), "redis link: Redis refused a publish; dropped");
                    self.state.dropped.fetch_add(1, Relaxed);
                }
                Fate::Wait => {
                    settled.moved = true;
                    settled.keep.push(msg);
                }
                Fate::Lost => {
                    settled.lost = result.err();
                    settled.keep.push(msg);
                }
            }
        }
        self.state.messages_out.fetch_add(published, Relaxed);
        if unconfirmed > 0 {
            self.state.unconfirmed.fetch_add(unconfirmed, Relaxed);
        }
        settled
    }

    /// Whether the outage buffer may go: the subscriber is back, and so is
    /// every node that was subscribed to its channels (or the wait is over).
    fn ready_to_flush(&mut self, conn: &mut Target) -> RedisResult<bool> {
        if !self.state.subscriber_up.load(Relaxed) {
            self.ready_since = None;
            self.state.flush_waiting.store(false, Relaxed);
            return Ok(false);
        }
        let now = Instant::now();
        let since = match self.ready_since {
            Some(t) => t,
            None => {
                self.ready_since = Some(now);
                let numbered: Vec<Vec<u8>> = self
                    .held_numbered
                    .iter()
                    .map(|m| channel(&self.prefix, &Topic::Room(m.room.clone())))
                    .collect();
                self.receivers.begin(
                    self.buffer
                        .iter()
                        .map(|(ch, _)| &ch[..])
                        .chain(numbered.iter().map(Vec::as_slice)),
                );
                self.state.flush_waiting.store(true, Relaxed);
                self.next_numsub = now;
                now
            }
        };
        let waited = now.saturating_duration_since(since);
        if waited >= self.resubscribe_wait {
            if !self.receivers.all_back() {
                tracing::warn!(
                    waited_ms = waited.as_millis() as u64,
                    "redis link: flushing the outage buffer before every node re-subscribed"
                );
            }
            return Ok(true);
        }
        if !self.receivers.all_back() && now >= self.next_numsub {
            self.next_numsub = now + NUMSUB_INTERVAL;
            let short: Vec<Vec<u8>> = self.receivers.short().map(<[u8]>::to_vec).collect();
            for chunk in short.chunks(NUMSUB_CHUNK) {
                let counts = match conn.numsub(chunk) {
                    Ok(counts) => counts,
                    // A master still unreachable: not back yet.
                    Err(_) if conn.sharded() => return Ok(false),
                    Err(e) => return Err(e),
                };
                for (ch, n) in counts {
                    self.receivers.subscribed(&ch, n);
                }
            }
        }
        let grace = if self.receivers.has_unknown() {
            FLUSH_GRACE
        } else {
            Duration::ZERO
        };
        Ok(self.receivers.all_back() && waited >= grace)
    }

    /// Numbers, keeps and publishes the publishes to rooms with history,
    /// a pipeline at a time, and answers each publisher. A failed pipeline
    /// answers the rest `unavailable`.
    fn number(&mut self, conn: &mut Target) -> RedisResult<()> {
        let sharded = conn.sharded();
        while !self.numbered.is_empty() {
            let n = self.numbered.len().min(PIPELINE);
            // One script call per room (in each room's order), at most
            // PUBLISH_MAX_MESSAGES messages each.
            let mut calls: Vec<Vec<Numbered>> = Vec::new();
            let mut open: HashMap<Arc<str>, usize> = HashMap::new();
            let batch: Vec<Numbered> = self.numbered.drain(..n).collect();
            for m in batch {
                if sharded && self.holding() && self.held.contains(&numbered_slot(&self.prefix, &m)) {
                    // Its slot waits for its subscribers: after the others.
                    self.held_numbered.push_back(m);
                    continue;
                }
                match open.get(&m.room) {
                    Some(&i) if calls[i].len() < PUBLISH_MAX_MESSAGES => calls[i].push(m),
                    _ => {
                        open.insert(m.room.clone(), calls.len());
                        calls.push(vec![m]);
                    }
                }
            }
            let now = unix_nanos();
            let fresh = crate::history::Epoch::fresh();
            let mut cmds: Vec<(u16, Cmd)> = Vec::with_capacity(calls.len());
            for call in &calls {
                let m = &call[0];
                let meta = meta_key(&self.prefix, &m.room);
                let mut cmd = redis::cmd("EVALSHA");
                cmd.arg(&self.sha)
                    .arg(2)
                    .arg(&meta)
                    .arg(stream_key(&self.prefix, &m.room))
                    .arg(fresh.as_str())
                    .arg(m.limits.size)
                    .arg(m.limits.ttl.as_millis().max(1) as u64)
                    .arg(channel(&self.prefix, &Topic::Room(m.room.clone())));
                for m in call {
                    cmd.arg(history::encode_draft(&self.node_id, now, &m.draft));
                }
                cmds.push((slot::of(&meta), cmd));
            }
            let replies = self.run_on(conn, &cmds, OnMoved::Return);
            let mut lost = None;
            let now = Instant::now();
            for (call, reply) in calls.into_iter().zip(replies) {
                let Some((first, _, receivers)) = reply.as_ref().ok().and_then(history::published) else {
                    let fate = fate(&reply);
                    if fate == Fate::Wait && sharded {
                        // The room's slot moved: its messages wait for its
                        // subscribers to follow (none was numbered).
                        self.held.insert(numbered_slot(&self.prefix, &call[0]));
                        self.held_numbered.extend(call);
                        self.wait_again();
                        continue;
                    }
                    if fate == Fate::Lost {
                        lost = reply.err();
                    } else {
                        tracing::warn!(?reply, room = %call[0].room, "redis link: a numbered publish failed");
                    }
                    for m in call {
                        self.refuse(m);
                    }
                    continue;
                };
                self.state.messages_out.fetch_add(call.len() as u64, Relaxed);
                let room = channel(&self.prefix, &Topic::Room(call[0].room.clone()));
                if self.receivers.published(&room, receivers, now) {
                    self.state.unconfirmed.fetch_add(call.len() as u64, Relaxed);
                }
                for (offset, m) in (first..).zip(call) {
                    let Some(req) = m.reply.req else { continue };
                    reads::answer(
                        m.reply,
                        encode::ack_offset(req, offset),
                        || ApiPart::Offset { index: req, offset },
                        &mut self.post,
                    );
                }
            }
            if let Some(e) = lost {
                if conn.sharded() {
                    // Only that master's rooms were answered `unavailable`.
                    continue;
                }
                self.refuse_numbered();
                return Err(e);
            }
        }
        Ok(())
    }

    /// Answers every numbered publish waiting `unavailable`.
    fn refuse_numbered(&mut self) {
        for m in std::mem::take(&mut self.numbered) {
            self.refuse(m);
        }
        for m in std::mem::take(&mut self.held_numbered) {
            self.refuse(m);
        }
    }

    fn refuse(&mut self, m: Numbered) {
        self.state.history_errors.fetch_add(1, Relaxed);
        if m.reply.req.is_some() {
            reads::refuse(m.reply, &mut self.post);
        }
    }

    /// Sends this turn's acks and errors.
    fn send_to_shards(&mut self) {
        // Held without a count: nothing is dropped.
        self.post.flush(|_, _| {});
    }
}

/// The slot of a room with history (its keys' and channel's).
fn numbered_slot(prefix: &str, m: &Numbered) -> u16 {
    slot::of(&meta_key(prefix, &m.room))
}

/// What a round trip left to send again.
struct Settled {
    /// Messages to send again, in order.
    keep: Vec<Outgoing>,
    /// The connection failed.
    lost: Option<redis::RedisError>,
    /// A slot moved.
    moved: bool,
}
