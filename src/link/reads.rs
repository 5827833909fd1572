//! The subscriber's reads of room history (`history.rs`'s `READ_SCRIPT`,
//! on a second, ordinary connection): where a joining member starts, what
//! a recovering one missed, and history queries. Plain books, no I/O: the
//! subscriber writes the commands these methods build and feeds back the
//! replies, the pongs and the room messages it forwards.
//!
//! The seam. A member's join must take effect at one point of its room's
//! message stream, as the subscriber forwards it to the shards: every
//! message after that point reaches the member, none before. So:
//! 1. the read is sent only once the room's SUBSCRIBE is confirmed: any
//!    message published after the read ran comes on the subscription;
//! 2. its reply gives the room's top offset T at that moment; then a
//!    `PING` goes on the subscription connection, and Redis answers it
//!    after every message published before it, so by its pong every
//!    message at or below T has been forwarded;
//! 3. at the pong the member is admitted (an item in its shard's batch, in
//!    order with the frames): it starts after the last message forwarded,
//!    max(T, what came between); a recovering member is first given what
//!    it missed: the read's entries up to T, then those forwarded since the
//!    read (the subscriber keeps them while a read of the room is out).
//!
//! Joins of the same room asking the same thing (a plain join, or a
//! recovery from the same position: what a thousand clients of a dead node
//! send at once) share one read while it is out, and one set of replayed
//! frames: the seam above holds for each of them, as the read ran after the
//! room's subscription was in place for all.
//!
//! If the connections fail, every join and query still waiting is answered
//! `unavailable`: nothing waits for a Redis that is gone.
//!
//! On a Redis Cluster each master has its pair of connections (a *lane*):
//! a read goes to the lane of its key's slot ([`Route`]), which is the lane
//! of the room's subscription, and its fence to that lane's subscription
//! connection. Each lane keeps its own reply order, and losing one lane
//! answers only what waited on it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use bytes::Bytes;

use crate::bus::{Admit, ApiPart, Item, Post, Query, ReplyTo};
use crate::history::{Epoch, Since};
use crate::metrics::LinkState;
use crate::protocol::{encode, ErrorCode, OpError};

use super::history::{meta_key, stream_key, Mode, Read, READ_SCRIPT};
use super::presence::{self, Shares};
use super::wire;

/// Where the subscriber sends a read: the command connection of the node
/// that owns a key.
pub(crate) trait Route {
    /// The lane of `key`'s node and its command buffer; `None` while that
    /// node cannot be reached.
    fn lane(&mut self, key: &[u8]) -> Option<(usize, &mut Vec<u8>)>;
}

/// One Redis: every key on lane 0.
impl Route for Vec<u8> {
    fn lane(&mut self, _key: &[u8]) -> Option<(usize, &mut Vec<u8>)> {
        Some((0, self))
    }
}

/// Nowhere: for what may be skipped when no lane is at hand.
struct NoRoute;

impl Route for NoRoute {
    fn lane(&mut self, _key: &[u8]) -> Option<(usize, &mut Vec<u8>)> {
        None
    }
}

/// The commands sent on one lane's command connection, oldest first.
#[derive(Debug, Default)]
struct Fifo {
    inflight: VecDeque<Pending>,
    /// Sequence number of `inflight`'s front.
    front: u64,
    /// Reads back this turn, for the lane's next fence.
    back: Vec<Fenced>,
    /// Fences sent on the lane's subscription connection, oldest first,
    /// with the joins each admits.
    fences: VecDeque<(u64, Vec<Fenced>)>,
}

impl Fifo {
    fn push(&mut self, p: Pending) -> u64 {
        self.inflight.push_back(p);
        self.front + self.inflight.len() as u64 - 1
    }
}

/// What a reply on the command connection answers.
#[derive(Debug)]
enum Pending {
    /// `AUTH`, `SCRIPT LOAD`, or a read already answered `unavailable`.
    Setup,
    /// The read of joins asking the same thing.
    Admit(Joins),
    /// A query's read.
    Query(Query),
    /// `HGETALL` of a room's presence hash, for presence read `id`.
    Presence(u64),
    /// `EXISTS` of a node's liveness key: for presence read `read`, or the
    /// periodic check of the nodes known (`None`).
    Alive {
        /// The presence read it is part of.
        read: Option<u64>,
        /// The node.
        node: Arc<str>,
    },
}

/// What a presence read is for.
#[derive(Debug)]
enum Target {
    /// The room's owner shard starts following it: the other nodes' shares.
    Owner(usize),
    /// A `presence` query on a node with no user in the room.
    Query { list: bool, cap: usize, reply: ReplyTo },
}

/// A presence read: the hash's shares, then each node's liveness.
#[derive(Debug)]
struct PresenceRead {
    room: Arc<str>,
    target: Target,
    shares: Shares,
    /// Liveness answers still to come.
    waiting: usize,
    dead: Vec<Arc<str>>,
}

/// What makes two joins' reads the same.
type ReadKey = (Vec<u8>, Mode, Option<(u64, Epoch)>);

/// Joins that share a read.
#[derive(Debug)]
struct Joins {
    channel: Vec<u8>,
    mode: Mode,
    since: Option<Since>,
    admits: Vec<Admit>,
}

/// Joins whose read came back, waiting for their pong.
#[derive(Debug)]
struct Fenced {
    joins: Joins,
    read: Read,
    /// For a recovery that could be served: the read's messages after
    /// `since`, finished once for all of the joins.
    replay: Vec<Bytes>,
}

/// Frames of a room forwarded while reads of it are out.
#[derive(Debug, Default)]
struct Watch {
    reads: usize,
    seen: Vec<(u64, Bytes)>,
}

/// The books.
#[derive(Debug)]
pub(crate) struct Reads {
    prefix: String,
    sha: String,
    state: Arc<LinkState>,
    /// Per lane: the commands sent on its command connection, in order.
    lanes: Vec<Fifo>,
    /// Join reads still out, by what they ask, with their lane and
    /// sequence number.
    open: HashMap<ReadKey, (usize, u64)>,
    next_fence: u64,
    /// Joins waiting for their room's SUBSCRIBE to be confirmed.
    parked: HashMap<Vec<u8>, Vec<Admit>>,
    /// This node's id (its own presence is never read back).
    node: Arc<str>,
    /// Presence reads out, by id.
    presence: HashMap<u64, PresenceRead>,
    next_presence: u64,
    /// Owner shards waiting for their room's SUBSCRIBE to read its presence.
    parked_presence: HashMap<Vec<u8>, Vec<(Arc<str>, usize)>>,
    /// Other nodes seen in presence, checked for liveness.
    known: HashSet<Arc<str>>,
    watch: HashMap<Vec<u8>, Watch>,
}

impl Reads {
    /// Books for rooms named under `prefix`, on node `node`.
    pub fn new(prefix: &str, node: Arc<str>, state: Arc<LinkState>) -> Reads {
        Reads {
            prefix: prefix.to_string(),
            sha: super::history::script_sha(READ_SCRIPT),
            state,
            lanes: Vec::new(),
            open: HashMap::new(),
            next_fence: 0,
            parked: HashMap::new(),
            node,
            presence: HashMap::new(),
            next_presence: 0,
            parked_presence: HashMap::new(),
            known: HashSet::new(),
            watch: HashMap::new(),
        }
    }

    fn fifo(&mut self, lane: usize) -> &mut Fifo {
        if self.lanes.len() <= lane {
            self.lanes.resize_with(lane + 1, Fifo::default);
        }
        &mut self.lanes[lane]
    }

    /// A lane's command connection is up: authenticate, load the script.
    pub fn connected(&mut self, lane: usize, auth: Option<(Option<&str>, &str)>, out: &mut Vec<u8>) {
        match auth {
            Some((Some(u), p)) => wire::command(out, &[b"AUTH", u.as_bytes(), p.as_bytes()]),
            Some((None, p)) => wire::command(out, &[b"AUTH", p.as_bytes()]),
            None => {}
        }
        if auth.is_some() {
            self.fifo(lane).push(Pending::Setup);
        }
        wire::command(out, &[b"SCRIPT", b"LOAD", READ_SCRIPT.as_bytes()]);
        self.fifo(lane).push(Pending::Setup);
    }

    /// A join, whose room's subscription is confirmed (`live`) or not yet.
    pub fn admit(&mut self, admit: Admit, channel: Vec<u8>, live: bool, route: &mut impl Route, post: &mut Post) {
        if !live {
            self.parked.entry(channel).or_default().push(admit);
            return;
        }
        let mode = match (admit.since, admit.already) {
            (None, _) => Mode::Position,
            (Some(_), true) => Mode::Check,
            (Some(_), false) => Mode::Recover,
        };
        let key = (channel, mode, admit.since.map(|s| (s.offset, s.epoch)));
        if let Some(&(lane, seq)) = self.open.get(&key) {
            let fifo = self.fifo(lane);
            if let Some(Pending::Admit(joins)) = fifo.inflight.get_mut((seq - fifo.front) as usize) {
                joins.admits.push(admit);
                return;
            }
        }
        let Some((lane, out)) = route.lane(&meta_key(&self.prefix, &admit.room)) else {
            self.refuse_admit(admit, post);
            return;
        };
        self.read(&admit.room, admit.limits.ttl, mode, admit.since, 0, out);
        let channel = key.0.clone();
        self.watch.entry(channel.clone()).or_default().reads += 1;
        let since = admit.since;
        let seq = self.fifo(lane).push(Pending::Admit(Joins {
            channel,
            mode,
            since,
            admits: vec![admit],
        }));
        self.open.insert(key, (lane, seq));
    }

    /// A room's SUBSCRIBE was confirmed: its parked joins read now.
    pub fn subscribed(&mut self, channel: &[u8], route: &mut impl Route, post: &mut Post) {
        // A read sent before this SUBSCRIBE may have run while the channel
        // was not subscribed: later joins do not share it.
        self.open.retain(|key, _| key.0 != channel);
        if let Some(admits) = self.parked.remove(channel) {
            for a in admits {
                self.admit(a, channel.to_vec(), true, route, post);
            }
        }
        if let Some(waiting) = self.parked_presence.remove(channel) {
            for (room, owner) in waiting {
                self.read_presence(room, Target::Owner(owner), route, post);
            }
        }
    }

    /// A history query.
    pub fn query(&mut self, q: Query, route: &mut impl Route, post: &mut Post) {
        let Some((lane, out)) = route.lane(&meta_key(&self.prefix, &q.room)) else {
            self.state.history_errors.fetch_add(1, Relaxed);
            refuse(q.reply, post);
            return;
        };
        let mode = if q.since.is_some() { Mode::After } else { Mode::Latest };
        self.read(&q.room, q.limits.ttl, mode, q.since, q.limit, out);
        self.fifo(lane).push(Pending::Query(q));
    }

    /// Owner shard `owner` starts following `room`: read the other nodes'
    /// shares once the room's subscription is in place.
    pub fn presence_snapshot(
        &mut self,
        room: Arc<str>,
        owner: usize,
        channel: Vec<u8>,
        live: bool,
        route: &mut impl Route,
        post: &mut Post,
    ) {
        if live {
            self.read_presence(room, Target::Owner(owner), route, post);
        } else {
            self.parked_presence.entry(channel).or_default().push((room, owner));
        }
    }

    /// A `presence` query for a room this node has no user in.
    pub fn presence_query(
        &mut self,
        room: Arc<str>,
        list: bool,
        cap: usize,
        reply: ReplyTo,
        route: &mut impl Route,
        post: &mut Post,
    ) {
        self.read_presence(room, Target::Query { list, cap, reply }, route, post);
    }

    fn read_presence(&mut self, room: Arc<str>, target: Target, route: &mut impl Route, post: &mut Post) {
        let key = presence::hash_key(&self.prefix, &room);
        let Some((lane, out)) = route.lane(&key) else {
            // An owner asks again after the link's resync; a query is answered.
            if let Target::Query { reply, .. } = target {
                refuse(reply, post);
            }
            return;
        };
        wire::command(out, &[b"HGETALL", &key]);
        self.next_presence += 1;
        let id = self.next_presence;
        self.fifo(lane).push(Pending::Presence(id));
        self.presence.insert(
            id,
            PresenceRead {
                room,
                target,
                shares: Vec::new(),
                waiting: 0,
                dead: Vec::new(),
            },
        );
    }

    /// Asks whether each node known is still there (every half refresh
    /// interval); [`Reads::on_reply`] reports the ones gone.
    pub fn check_nodes(&mut self, route: &mut impl Route) {
        let known: Vec<Arc<str>> = self.known.iter().cloned().collect();
        for node in known {
            let key = presence::node_key(&self.prefix, &node);
            let Some((lane, out)) = route.lane(&key) else { continue };
            wire::command(out, &[b"EXISTS", &key]);
            self.fifo(lane).push(Pending::Alive { read: None, node });
        }
    }

    /// Another node's change named `node`: it is checked from now on.
    pub fn node_seen(&mut self, node: &str) {
        if !self.known.contains(node) {
            self.known.insert(Arc::from(node));
        }
    }

    /// `node` is gone (it said goodbye, or its key expired): every shard
    /// takes its users out, and it is checked no more.
    pub fn node_gone(&mut self, node: &str, post: &mut Post) {
        self.known.remove(node);
        let node: Arc<str> = Arc::from(node);
        for shard in 0..post.len() {
            post.item(shard, Item::NodeGone { node: node.clone() });
        }
    }

    /// Takes the front of `lane`'s commands, the one a reply answers.
    fn pop(&mut self, lane: usize) -> Option<Pending> {
        let fifo = self.fifo(lane);
        let pending = fifo.inflight.pop_front()?;
        let front = fifo.front;
        fifo.front += 1;
        if let Pending::Admit(j) = &pending {
            let key = (j.channel.clone(), j.mode, j.since.map(|s| (s.offset, s.epoch)));
            if self.open.get(&key) == Some(&(lane, front)) {
                self.open.remove(&key);
            }
        }
        Some(pending)
    }

    fn read(
        &self,
        room: &str,
        ttl: std::time::Duration,
        mode: Mode,
        since: Option<Since>,
        limit: usize,
        out: &mut Vec<u8>,
    ) {
        let (meta, stream) = (meta_key(&self.prefix, room), stream_key(&self.prefix, room));
        let fresh = Epoch::fresh();
        let ttl = ttl.as_millis().max(1).to_string();
        let (since_epoch, since_offset) =
            since.map_or((String::new(), 0), |s| (s.epoch.as_str().to_string(), s.offset));
        let (since_offset, limit) = (since_offset.to_string(), limit.to_string());
        wire::command(
            out,
            &[
                b"EVALSHA",
                self.sha.as_bytes(),
                b"2",
                &meta,
                &stream,
                fresh.as_str().as_bytes(),
                ttl.as_bytes(),
                mode.arg(),
                since_epoch.as_bytes(),
                since_offset.as_bytes(),
                limit.as_bytes(),
            ],
        );
    }

    /// A reply on `lane`'s command connection; `route` takes what it
    /// leads to.
    pub fn on_reply(&mut self, lane: usize, reply: redis::Value, post: &mut Post, route: &mut impl Route) {
        let Some(pending) = self.pop(lane) else {
            return;
        };
        let failed = matches!(reply, redis::Value::ServerError(_));
        if failed {
            tracing::warn!(?reply, "redis link: a history read failed");
        }
        match pending {
            Pending::Setup => {}
            Pending::Admit(joins) => match Read::parse(reply) {
                Some(read) => {
                    let replay = match joins.since {
                        Some(since) if joins.mode == Mode::Recover && read.held => read
                            .entries()
                            .filter(|m| m.offset > since.offset)
                            .filter_map(|m| m.frame())
                            .collect(),
                        _ => Vec::new(),
                    };
                    self.fifo(lane).back.push(Fenced { joins, read, replay });
                }
                None => {
                    self.unwatch(&joins.channel);
                    for a in joins.admits {
                        self.refuse_admit(a, post);
                    }
                }
            },
            Pending::Query(q) => match Read::parse(reply) {
                Some(read) => answer_query(q, &read, post),
                None => {
                    self.state.history_errors.fetch_add(1, Relaxed);
                    refuse(q.reply, post);
                }
            },
            Pending::Presence(id) => {
                let Some(read) = self.presence.get_mut(&id) else { return };
                let me = &self.node;
                read.shares = presence::parse_snapshot(&reply);
                read.shares.retain(|(node, _, _)| node != me);
                let nodes: Vec<Arc<str>> = read.shares.iter().map(|(n, _, _)| n.clone()).collect();
                let mut waiting = 0;
                for node in nodes {
                    if !self.known.contains(&node) {
                        self.known.insert(node.clone());
                    }
                    let key = presence::node_key(&self.prefix, &node);
                    // A node whose liveness cannot be asked now is taken
                    // as alive: the periodic check catches it later.
                    let Some((lane, out)) = route.lane(&key) else { continue };
                    wire::command(out, &[b"EXISTS", &key]);
                    self.fifo(lane).push(Pending::Alive { read: Some(id), node });
                    waiting += 1;
                }
                if let Some(read) = self.presence.get_mut(&id) {
                    read.waiting = waiting;
                }
                if waiting == 0 {
                    self.finish_presence(id, post, route);
                }
            }
            Pending::Alive { read: Some(id), node } => {
                let Some(read) = self.presence.get_mut(&id) else { return };
                if matches!(reply, redis::Value::Int(0)) {
                    read.dead.push(node);
                }
                read.waiting -= 1;
                if read.waiting == 0 {
                    self.finish_presence(id, post, route);
                }
            }
            Pending::Alive { read: None, node } => {
                if matches!(reply, redis::Value::Int(0)) && self.known.contains(&node) {
                    tracing::info!(%node, "redis link: a node is gone (its liveness key expired)");
                    self.node_gone(&node, post);
                }
            }
        }
    }

    /// A presence read is complete: dead nodes' shares are dropped (and
    /// deleted from the hash), the rest delivered.
    fn finish_presence(&mut self, id: u64, post: &mut Post, route: &mut impl Route) {
        let Some(mut read) = self.presence.remove(&id) else {
            return;
        };
        if !read.dead.is_empty() {
            let hash = presence::hash_key(&self.prefix, &read.room);
            for node in &read.dead {
                let Some((_, _, users)) = read.shares.iter().find(|(n, _, _)| n == node) else {
                    continue;
                };
                let fields = presence::node_fields(node, users.iter().map(|(u, _)| &**u));
                let mut args: Vec<&[u8]> = vec![b"HDEL", &hash];
                args.extend(fields.iter().map(Vec::as_slice));
                let Some((lane, out)) = route.lane(&hash) else { continue };
                wire::command(out, &args);
                self.fifo(lane).push(Pending::Setup);
            }
            let dead = std::mem::take(&mut read.dead);
            read.shares.retain(|(n, _, _)| !dead.contains(n));
        }
        match read.target {
            Target::Owner(owner) => post.item(
                owner,
                Item::PresenceSnapshot {
                    room: read.room,
                    nodes: read.shares,
                },
            ),
            Target::Query { list, cap, reply } => {
                let users = presence::merge(&read.shares);
                let id = if reply.api { None } else { reply.req };
                let listed: Vec<(&str, u32)> = users.iter().take(cap).map(|(u, n)| (&**u, *n)).collect();
                let listed = list.then_some(&listed[..]);
                let frame = encode::presence(id, &read.room, users.len(), listed, users.len() > cap);
                let body = frame.clone();
                answer(reply, frame, || ApiPart::Object(body), post);
            }
        }
    }

    /// End of a turn: a fence for the reads that came back on `lane`, to
    /// send on its subscription connection.
    pub fn fence(&mut self, lane: usize, sub_out: &mut Vec<u8>) {
        let Some(fifo) = self.lanes.get_mut(lane) else { return };
        if fifo.back.is_empty() {
            return;
        }
        self.next_fence += 1;
        let id = self.next_fence.to_string();
        wire::command(sub_out, &[b"PING", id.as_bytes()]);
        let back = std::mem::take(&mut fifo.back);
        fifo.fences.push_back((self.next_fence, back));
    }

    /// A pong on `lane`'s subscription connection: the joins its fence
    /// holds start here.
    pub fn on_pong(&mut self, lane: usize, arg: &[u8], post: &mut Post) {
        let Some(id) = std::str::from_utf8(arg).ok().and_then(|s| s.parse::<u64>().ok()) else {
            return;
        };
        let Some(fifo) = self.lanes.get_mut(lane) else { return };
        let mut ready = Vec::new();
        while fifo.fences.front().is_some_and(|(f, _)| *f <= id) {
            let (_, reads) = fifo.fences.pop_front().expect("front");
            ready.extend(reads);
        }
        for f in ready {
            self.start(f, post);
        }
    }

    /// A numbered message of `channel` forwarded to the shards.
    #[inline]
    pub fn forwarded(&mut self, channel: &[u8], offset: u64, frame: &Bytes) {
        if self.watch.is_empty() {
            return;
        }
        if let Some(w) = self.watch.get_mut(channel) {
            w.seen.push((offset, frame.clone()));
        }
    }

    /// `lane`'s connections failed: everything waiting on it (and the
    /// joins parked for channels `on_lane` says are its) is answered
    /// `unavailable`.
    pub fn disconnected(&mut self, lane: usize, on_lane: impl Fn(&[u8]) -> bool, post: &mut Post) {
        self.give_up(lane, &on_lane, post);
        if let Some(fifo) = self.lanes.get_mut(lane) {
            *fifo = Fifo::default();
        }
    }

    /// `lane`'s Redis stopped answering in time (the connections stay):
    /// everything waiting on it is answered `unavailable` now, and the replies that may
    /// still come for it are ignored.
    pub fn stalled(&mut self, lane: usize, on_lane: impl Fn(&[u8]) -> bool, post: &mut Post) {
        self.give_up(lane, &on_lane, post);
    }

    fn give_up(&mut self, lane: usize, on_lane: &dyn Fn(&[u8]) -> bool, post: &mut Post) {
        let mut admits: Vec<Admit> = Vec::new();
        let mut presence_ended: Vec<u64> = Vec::new();
        let mut alive_ended: Vec<u64> = Vec::new();
        // Joins whose read was out: the frames kept for them go too.
        let mut read_out: Vec<Joins> = Vec::new();
        if let Some(fifo) = self.lanes.get_mut(lane) {
            for p in fifo.inflight.iter_mut() {
                match std::mem::replace(p, Pending::Setup) {
                    Pending::Setup | Pending::Alive { read: None, .. } => {}
                    Pending::Presence(id) => presence_ended.push(id),
                    Pending::Alive { read: Some(id), .. } => alive_ended.push(id),
                    Pending::Admit(j) => read_out.push(j),
                    Pending::Query(q) => {
                        self.state.history_errors.fetch_add(1, Relaxed);
                        refuse(q.reply, post);
                    }
                }
            }
            read_out.extend(fifo.back.drain(..).map(|f| f.joins));
            for (_, reads) in fifo.fences.drain(..) {
                read_out.extend(reads.into_iter().map(|f| f.joins));
            }
        }
        for joins in read_out {
            self.watch.remove(&joins.channel);
            admits.extend(joins.admits);
        }
        self.open.retain(|_, (l, _)| *l != lane);
        for id in presence_ended {
            // An owner asks again after the link's resync; a query is answered.
            if let Some(read) = self.presence.remove(&id) {
                if let Target::Query { reply, .. } = read.target {
                    refuse(reply, post);
                }
            }
        }
        for id in alive_ended {
            // Not known to be dead: kept (the periodic check asks again).
            if let Some(read) = self.presence.get_mut(&id) {
                read.waiting -= 1;
                if read.waiting == 0 {
                    self.finish_presence(id, post, &mut NoRoute);
                }
            }
        }
        self.parked_presence.retain(|channel, _| !on_lane(channel));
        let parked: Vec<Vec<u8>> = self.parked.keys().filter(|c| on_lane(c)).cloned().collect();
        for channel in parked {
            admits.extend(self.parked.remove(&channel).unwrap_or_default());
        }
        for a in admits {
            self.refuse_admit(a, post);
        }
    }

    /// A join that cannot be served now (the link is down): refused.
    pub fn refuse_admit(&self, admit: Admit, post: &mut Post) {
        self.state.history_errors.fetch_add(1, Relaxed);
        let frame = admit.req.map(|id| encode::error(&unavailable(Some(id))));
        post.item(
            admit.shard,
            Item::Refused {
                ticket: admit.ticket,
                frame,
            },
        );
    }

    fn unwatch(&mut self, channel: &[u8]) {
        if let Some(w) = self.watch.get_mut(channel) {
            w.reads -= 1;
            if w.reads == 0 {
                self.watch.remove(channel);
            }
        }
    }

    /// Admits the joins of a read at their fence: their replay, their acks.
    fn start(&mut self, f: Fenced, post: &mut Post) {
        let Fenced { joins, read, replay } = f;
        // Forwarded after the read ran, before this point: the members did
        // not get them live.
        let seen: &[(u64, Bytes)] = self.watch.get(&joins.channel).map_or(&[], |w| &w.seen);
        let later: Vec<Bytes> = seen
            .iter()
            .filter(|(n, _)| *n > read.top)
            .map(|(_, f)| f.clone())
            .collect();
        let top = seen.last().map_or(read.top, |(n, _)| (*n).max(read.top));
        self.unwatch(&joins.channel);
        let recovered = match joins.mode {
            Mode::Position => None,
            _ => Some(read.held),
        };
        for admit in joins.admits {
            let frames = if joins.mode == Mode::Recover && read.held {
                replay.iter().chain(&later).cloned().collect()
            } else {
                Vec::new()
            };
            let ack = admit
                .req
                .map(|id| encode::ack_position(id, top, read.epoch.as_str(), recovered));
            post.item(
                admit.shard,
                Item::Admitted {
                    ticket: admit.ticket,
                    frames,
                    ack,
                    recovered: recovered.filter(|_| joins.mode == Mode::Recover),
                },
            );
        }
    }
}

fn unavailable(id: Option<u64>) -> OpError {
    OpError::new(id, ErrorCode::Unavailable, "the history store (Redis) is unreachable")
}

/// Answers `reply` with `unavailable`.
pub(super) fn refuse(reply: ReplyTo, post: &mut Post) {
    match reply.req {
        Some(index) if reply.api => post.item(reply.shard, api(reply, ApiPart::Unavailable { index })),
        None if reply.api => post.item(reply.shard, api(reply, ApiPart::Unavailable { index: 0 })),
        req => post.item(
            reply.shard,
            Item::Reply {
                slot: reply.slot,
                conn: reply.conn,
                frame: encode::error(&unavailable(req)),
            },
        ),
    }
}

/// Answers `reply` with a frame (WebSocket) or an API piece.
pub(super) fn answer(reply: ReplyTo, frame: Bytes, part: impl FnOnce() -> ApiPart, post: &mut Post) {
    let item = if reply.api {
        api(reply, part())
    } else {
        Item::Reply {
            slot: reply.slot,
            conn: reply.conn,
            frame,
        }
    };
    post.item(reply.shard, item);
}

fn api(reply: ReplyTo, part: ApiPart) -> Item {
    Item::Api {
        slot: reply.slot,
        conn: reply.conn,
        part,
    }
}

fn answer_query(q: Query, read: &Read, post: &mut Post) {
    let messages: Vec<_> = read.entries().collect();
    let id = if q.reply.api { None } else { q.reply.req };
    let frame = encode::history(
        id,
        &q.room,
        read.epoch.as_str(),
        read.top,
        messages.iter().map(|m| (m.offset, m.body())),
    );
    let body = frame.clone();
    answer(q.reply, frame, || ApiPart::Object(body), post);
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use redis::Value;

    use super::*;
    use crate::bus::post::test_inbox;
    use crate::bus::ShardMsg;
    use crate::history::{Limits, Since};
    use crate::link::history::encode_draft;

    const EPOCH: &str = "0123456789ab";

    fn admit(ticket: u64, since: Option<u64>) -> Admit {
        Admit {
            room: Arc::from("r"),
            limits: Limits {
                size: 100,
                ttl: Duration::from_secs(60),
            },
            shard: 0,
            ticket,
            req: Some(ticket),
            since: since.map(|offset| Since {
                offset,
                epoch: Epoch::parse(EPOCH).unwrap(),
            }),
            already: false,
        }
    }

    fn read_reply(top: u64, held: bool, entries: impl IntoIterator<Item = u64>) -> Value {
        let entries: Vec<u64> = entries.into_iter().collect();
        let mut packed = match entries.first() {
            Some(first) => format!("{first}:").into_bytes(),
            None => Vec::new(),
        };
        for n in entries {
            let env = encode_draft("n", 1, &encode::message_draft("r", "u", n.to_string().as_bytes()));
            packed.extend_from_slice(format!("{}:", env.len()).as_bytes());
            packed.extend_from_slice(&env);
        }
        Value::Array(vec![
            Value::BulkString(EPOCH.as_bytes().to_vec()),
            Value::Int(top as i64),
            Value::Int(held.into()),
            Value::BulkString(packed),
        ])
    }

    fn frame(n: u64) -> Bytes {
        encode::message_draft("r", "u", n.to_string().as_bytes()).finish(n).0
    }

    /// The items the shard got, flushed from `post`.
    fn items(post: &mut Post, rx: &crossbeam_channel::Receiver<ShardMsg>) -> Vec<Item> {
        post.flush(|_, _| {});
        let mut out = Vec::new();
        while let Ok(msg) = rx.try_recv() {
            if let ShardMsg::Frames(b) = msg {
                out.extend(b.items.into_iter().map(|(_, item)| item));
            }
        }
        out
    }

    fn books() -> (Reads, Post, crossbeam_channel::Receiver<ShardMsg>, mio::Poll) {
        let (shard, rx, poll) = test_inbox(64);
        let reads = Reads::new("rc", Arc::from("me"), Arc::new(LinkState::default()));
        (reads, Post::new(vec![shard], usize::MAX), rx, poll)
    }

    #[test]
    fn a_recovering_join_starts_at_its_fence_with_what_came_between() {
        let (mut reads, mut post, rx, _poll) = books();
        let (mut cmd, mut sub) = (Vec::new(), Vec::new());
        let ch = b"rc:room:{r}".to_vec();
        // Not subscribed yet: it waits, then reads once the SUBSCRIBE is confirmed.
        reads.admit(admit(1, Some(2)), ch.clone(), false, &mut cmd, &mut post);
        assert!(cmd.is_empty());
        reads.subscribed(&ch, &mut cmd, &mut post);
        assert!(cmd.windows(7).any(|w| w == b"EVALSHA"));
        // Offset 5 is forwarded while the read is out (published before it ran).
        reads.forwarded(&ch, 5, &frame(5));
        reads.on_reply(0, read_reply(6, true, 3..=6), &mut post, &mut cmd);
        reads.fence(0, &mut sub);
        assert!(sub.windows(4).any(|w| w == b"PING"));
        // Published after the read ran, forwarded before the pong.
        reads.forwarded(&ch, 6 + 1, &frame(7));
        reads.forwarded(&ch, 8, &frame(8));
        assert!(items(&mut post, &rx).is_empty(), "nothing before the pong");
        reads.on_pong(0, b"1", &mut post);
        let got = items(&mut post, &rx);
        let [Item::Admitted {
            ticket: 1,
            frames,
            ack: Some(ack),
            recovered: Some(true),
        }] = &got[..]
        else {
            panic!("{got:?}")
        };
        assert_eq!(
            frames,
            &(3..=8).map(frame).collect::<Vec<_>>(),
            "the read's, then the later ones"
        );
        assert!(ack.ends_with(br#""offset":8,"epoch":"0123456789ab","recovered":true}"#));
        assert!(reads.watch.is_empty(), "nothing kept once no read is out");
    }

    #[test]
    fn a_stall_answers_every_waiting_join_and_ignores_late_replies() {
        let (mut reads, mut post, rx, _poll) = books();
        let (mut cmd, mut sub) = (Vec::new(), Vec::new());
        let ch = b"rc:room:{r}".to_vec();
        reads.admit(admit(1, None), ch.clone(), true, &mut cmd, &mut post);
        reads.admit(admit(2, Some(5)), ch.clone(), true, &mut cmd, &mut post);
        reads.on_reply(0, read_reply(0, false, []), &mut post, &mut cmd);
        reads.fence(0, &mut sub);
        reads.admit(admit(3, None), b"rc:room:{other}".to_vec(), false, &mut cmd, &mut post);
        reads.stalled(0, |_| true, &mut post);
        let tickets: Vec<u64> = items(&mut post, &rx)
            .into_iter()
            .map(|i| match i {
                Item::Refused { ticket, frame: Some(f) } => {
                    assert!(f.windows(11).any(|w| w == b"unavailable"));
                    ticket
                }
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(tickets, [2, 1, 3]);
        // Redis wakes up: its answers to what was given up change nothing.
        reads.on_reply(0, read_reply(0, false, []), &mut post, &mut cmd);
        reads.fence(0, &mut sub);
        reads.on_pong(0, b"1", &mut post);
        reads.on_pong(0, b"2", &mut post);
        assert!(items(&mut post, &rx).is_empty());
    }

    #[test]
    fn joins_asking_the_same_share_one_read_and_one_replay() {
        let (mut reads, mut post, rx, _poll) = books();
        let (mut cmd, mut sub) = (Vec::new(), Vec::new());
        let ch = b"rc:room:{r}".to_vec();
        for ticket in 1..=3 {
            reads.admit(admit(ticket, Some(2)), ch.clone(), true, &mut cmd, &mut post);
        }
        reads.admit(admit(4, None), ch.clone(), true, &mut cmd, &mut post);
        let evals = cmd.windows(7).filter(|w| w == b"EVALSHA").count();
        assert_eq!(evals, 2, "one read per distinct question");
        reads.on_reply(0, read_reply(4, true, 1..=4), &mut post, &mut cmd);
        reads.on_reply(0, read_reply(4, false, []), &mut post, &mut cmd);
        reads.fence(0, &mut sub);
        reads.on_pong(0, b"1", &mut post);
        let got = items(&mut post, &rx);
        assert_eq!(got.len(), 4);
        let mut replays = Vec::new();
        for item in &got {
            let Item::Admitted {
                frames, ack: Some(ack), ..
            } = item
            else {
                panic!("{item:?}")
            };
            assert!(ack.windows(10).any(|w| w == br#""offset":4"#), "{ack:?}");
            replays.push(frames.clone());
        }
        assert_eq!(replays[0], vec![frame(3), frame(4)]);
        assert!(replays[1..3].iter().all(|r| r == &replays[0]));
        assert!(replays[3].is_empty(), "a plain join replays nothing");
        // The same frames, not copies of them.
        let Item::Admitted { frames: a, .. } = &got[0] else {
            unreachable!()
        };
        let Item::Admitted { frames: b, .. } = &got[2] else {
            unreachable!()
        };
        assert_eq!(a[0].as_ptr(), b[0].as_ptr());
        // Once answered, a new join reads again.
        reads.admit(admit(5, Some(2)), ch.clone(), true, &mut cmd, &mut post);
        assert_eq!(cmd.windows(7).filter(|w| w == b"EVALSHA").count(), 3);
    }

    /// Two lanes: room `r`'s keys on lane 0, every other key on lane 1.
    struct Two(Vec<u8>, Vec<u8>);

    impl Route for Two {
        fn lane(&mut self, key: &[u8]) -> Option<(usize, &mut Vec<u8>)> {
            if key.ends_with(b"{r}") {
                Some((0, &mut self.0))
            } else {
                Some((1, &mut self.1))
            }
        }
    }

    #[test]
    fn each_read_goes_to_its_rooms_lane_and_losing_one_lane_answers_only_its_joins() {
        let (mut reads, mut post, rx, _poll) = books();
        let mut two = Two(Vec::new(), Vec::new());
        let other_channel = b"rc:room:{o}".to_vec();
        let mut other = admit(2, None);
        other.room = Arc::from("o");
        reads.admit(admit(1, None), b"rc:room:{r}".to_vec(), true, &mut two, &mut post);
        reads.admit(other, other_channel.clone(), true, &mut two, &mut post);
        for (lane, out) in [(0, &two.0), (1, &two.1)] {
            assert_eq!(out.windows(7).filter(|w| w == b"EVALSHA").count(), 1, "lane {lane}");
        }
        // Lane 1's master is gone: only its join is refused.
        reads.disconnected(1, |ch| ch == other_channel.as_slice(), &mut post);
        let got = items(&mut post, &rx);
        assert!(matches!(&got[..], [Item::Refused { ticket: 2, .. }]), "{got:?}");
        // Lane 0 goes on: its reply, its fence on lane 0's subscription.
        reads.on_reply(0, read_reply(3, false, []), &mut post, &mut two);
        let mut sub = Vec::new();
        reads.fence(1, &mut sub);
        assert!(sub.is_empty(), "nothing came back on lane 1");
        reads.fence(0, &mut sub);
        reads.on_pong(1, b"1", &mut post);
        assert!(
            items(&mut post, &rx).is_empty(),
            "a pong of another lane admits nothing"
        );
        reads.on_pong(0, b"1", &mut post);
        let got = items(&mut post, &rx);
        assert!(matches!(&got[..], [Item::Admitted { ticket: 1, .. }]), "{got:?}");
    }
}
