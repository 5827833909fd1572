//! The subscriber thread: the link's pub/sub connections, driven by a
//! small mio loop so that subscription changes from shards (through a
//! channel and a `Waker`) are sent while messages keep streaming in. (The
//! `redis` crate's blocking pub/sub cannot be interrupted to subscribe.)
//!
//! It speaks to one Redis, or to the masters of a Redis Cluster, through
//! *lanes*: a lane is one Redis node's pair of connections (pub/sub, and an
//! ordinary one for reads) with its own books (`ledger::Ledger`: which
//! shards want which channel, which subscriptions are confirmed, which
//! joins wait). One Redis is one lane. On a cluster, each master has a
//! lane, and a channel lives on the lane of its slot's master
//! (`SSUBSCRIBE`: a node subscribes only where its rooms are), and when the cluster
//! changes — a master drops a subscription on its own (`sunsubscribe`: its
//! slot moved, or it was demoted), refuses one (`MOVED`), or its lane fails
//! — the slot map is asked for again and the channels whose master changed
//! move, with their waiting joins, to the new master's lane. A lane that
//! fails costs only its own channels: the others keep streaming.
//!
//! RESP is the `redis` crate's (`wire.rs`). While a lane is unreachable,
//! joins of its channels are confirmed at once and every wanted channel is
//! subscribed when it is back.
//!
//! Rooms with history also need reads (a joining member's position, a
//! recovery's replay, history queries): each lane's second connection
//! carries them, and `reads::Reads` places each admission at its exact
//! point in the room's message stream. Their numbered messages come from
//! Redis for every node, this one included.

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
use crate::metrics::link::{unix_nanos, RedisShard};
use crate::metrics::LinkState;
use crate::rooms::Topic;
use redis::Value;

use super::backoff::Backoff;
use super::ledger::{Command, Confirm, Ledger, Mode};
use super::reads::{Reads, Route};
use super::slot_map::{NodeAddr, Redirect};
use super::socket::{Dial, Socket};
use super::target::Spec;
use super::topology::Topology;
use super::wire::{self, Wire};
use super::{envelope, history, presence, probe_channel, slot};

const WAKER: Token = Token(0);
/// Messages from other nodes that may wait for room in shard inboxes;
/// Redis cannot be paused, so past this they are dropped and counted.
const HELD_FRAMES: usize = 64 * 1024;
/// Channels per SUBSCRIBE command when restoring subscriptions (one Redis;
/// a cluster takes one channel per SSUBSCRIBE: channels of different
/// slots in one command are refused).
const SUBSCRIBE_CHUNK: usize = 256;
/// How often a cluster lane is pinged, and how long its answer may take
/// before the lane counts as stalled.
const HEARTBEAT: Duration = Duration::from_secs(1);
const HEARTBEAT_STALLED: Duration = Duration::from_secs(3);
/// The ping that ends a lane's restore: its pong comes after every
/// confirmation of the subscriptions sent before it.
const RESTORED: &[u8] = b"restored";
/// A heartbeat ping's argument.
const BEAT: &[u8] = b"hb";
/// While a cluster lane is down, how often the map is asked for (its
/// replica may have been promoted: the lane then moves there).
const DOWN_REFRESH: Duration = Duration::from_millis(500);
/// How often the per-node figures in `/metrics` are updated.
const STATS_EVERY: Duration = Duration::from_millis(250);

/// The lane of a token, and whether it is the lane's reads connection.
fn lane_of_token(t: Token) -> (usize, bool) {
    ((t.0 - 1) / 2, (t.0 - 1) % 2 == 1)
}

fn sub_token(lane: usize) -> Token {
    Token(1 + 2 * lane)
}

fn reads_token(lane: usize) -> Token {
    Token(2 + 2 * lane)
}

struct Link {
    stream: Socket,
    connected: bool,
    /// Redis has answered on it (TCP, TLS and AUTH went through).
    answered: bool,
    wire: Wire,
    wbuf: Vec<u8>,
}

impl Link {
    fn new(stream: Socket) -> Link {
        Link {
            stream,
            connected: false,
            answered: false,
            wire: Wire::new(),
            wbuf: Vec::new(),
        }
    }
}

/// One Redis node's connections and books.
struct Lane {
    addr: NodeAddr,
    link: Option<Link>,
    /// The connection for reads (up with `link`).
    reads_link: Option<Link>,
    ledger: Ledger,
    backoff: Backoff,
    next_try: Instant,
    /// Every subscription of the last restore is confirmed.
    ready: bool,
    /// It was ready before (becoming ready again is a reconnection).
    was_ready: bool,
    /// Its mode was `Up` at the last turn.
    was_up: bool,
    /// The node's own channels (probe, goodbyes) that live here.
    always: Vec<Vec<u8>>,
    /// A heartbeat sent and not answered, since (a cluster's lanes).
    beat_since: Option<Instant>,
    next_beat: Instant,
    messages_in: u64,
}

impl Lane {
    fn new(addr: NodeAddr, seed: u64) -> Lane {
        Lane {
            addr,
            link: None,
            reads_link: None,
            ledger: Ledger::default(),
            backoff: Backoff::new(seed),
            next_try: Instant::now(),
            ready: false,
            was_ready: false,
            was_up: false,
            always: Vec::new(),
            beat_since: None,
            next_beat: Instant::now(),
            messages_in: 0,
        }
    }

    fn connected(&self) -> bool {
        self.link.as_ref().is_some_and(|l| l.connected)
    }

    /// How far this lane can be trusted; `probe_stalled`: one Redis whose
    /// probes stopped coming back.
    fn mode(&self, probe_stalled: bool) -> Mode {
        let beat_late = self.beat_since.is_some_and(|t| t.elapsed() > HEARTBEAT_STALLED);
        if !self.connected() {
            Mode::Down
        } else if !self.ready || probe_stalled || beat_late {
            Mode::Degraded
        } else {
            Mode::Up
        }
    }
}

/// Reads go to the lane of their key's master, while it is up.
struct Lanes<'a> {
    lanes: &'a mut Vec<Option<Lane>>,
    cluster: Option<&'a Topology>,
    probe_stalled: bool,
}

/// The lane of the node at `addr`, opened (not yet connected) if it has none.
fn lane_for(lanes: &mut Vec<Option<Lane>>, addr: &NodeAddr) -> usize {
    if let Some(i) = lanes.iter().position(|l| l.as_ref().is_some_and(|l| &l.addr == addr)) {
        return i;
    }
    let lane = Lane::new(addr.clone(), unix_nanos() ^ lanes.len() as u64);
    match lanes.iter().position(Option::is_none) {
        Some(i) => {
            lanes[i] = Some(lane);
            i
        }
        None => {
            lanes.push(Some(lane));
            lanes.len() - 1
        }
    }
}

impl Lanes<'_> {
    /// The lane of `key` (opening one for a master not used yet); `None`
    /// when no master serves its slot.
    fn index(&mut self, key: &[u8]) -> Option<usize> {
        let Some(topology) = self.cluster else {
            return Some(0);
        };
        let addr = &topology.map().master(slot::of(key))?.addr;
        Some(lane_for(self.lanes, addr))
    }
}

impl Route for Lanes<'_> {
    fn lane(&mut self, key: &[u8]) -> Option<(usize, &mut Vec<u8>)> {
        let i = self.index(key)?;
        let stalled = self.probe_stalled;
        let lane = self.lanes[i].as_mut()?;
        if lane.mode(stalled) != Mode::Up {
            return None;
        }
        let link = lane.reads_link.as_mut().filter(|l| l.connected)?;
        Some((i, &mut link.wbuf))
    }
}

/// The subscriber's state.
pub(crate) struct Subscriber {
    /// With `rediss://`: the roots trusted.
    tls: Option<Arc<rustls::ClientConfig>>,
    username: Option<String>,
    password: Option<String>,
    /// A cluster's map; `None` for one Redis (lane 0).
    cluster: Option<Topology>,
    /// The map must be asked for again (not before `next_refresh`).
    refresh_due: bool,
    next_refresh: Instant,
    refresh_backoff: Backoff,
    /// While a lane is down, when to ask for the map again.
    next_poll: Instant,
    prefix: String,
    node_id: Arc<str>,
    probe: Vec<u8>,
    rx: Receiver<LinkRequest>,
    state: Arc<LinkState>,
    poll: Poll,
    lanes: Vec<Option<Lane>>,
    /// Channels wanted while no master is known for them (a cluster whose
    /// map could not be read yet): subscribed once it can.
    homeless: Ledger,
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
    /// Confirmations the ledgers owe, posted at the end of the turn.
    confirms: Vec<Confirm>,
    /// Frames and confirmations for the shards, sent at the end of each turn.
    post: Post,
    next_stats: Instant,
    /// What the per-node figures last published looked like.
    stats_shape: u64,
}

impl Subscriber {
    /// Prepares the subscriber (it connects when run).
    pub fn new(
        spec: &Spec,
        cfg: &RedisConfig,
        node_id: Arc<str>,
        shards: Vec<ShardHandle>,
        rx: Receiver<LinkRequest>,
        state: Arc<LinkState>,
    ) -> io::Result<(Subscriber, Arc<Waker>)> {
        let (tls, username, password, cluster, lanes) = match spec {
            Spec::One(client) => {
                let info = client.get_connection_info();
                let (host, port, tls) = match info.addr() {
                    redis::ConnectionAddr::Tcp(host, port) => (host.clone(), *port, false),
                    redis::ConnectionAddr::TcpTls { host, port, .. } => (host.clone(), *port, true),
                    _ => {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidInput,
                            "--redis-url: only redis://host:port and rediss://host:port are supported",
                        ))
                    }
                };
                let settings = info.redis_settings();
                let lane = Lane::new(NodeAddr { host, port }, unix_nanos());
                (
                    tls,
                    settings.username().map(str::to_string),
                    settings.password().map(str::to_string),
                    None,
                    vec![Some(lane)],
                )
            }
            Spec::Cluster(topology) => {
                let (user, pass) = topology.credentials();
                (
                    topology.tls(),
                    user.map(str::to_string),
                    pass.map(str::to_string),
                    Some(topology.clone()),
                    Vec::new(),
                )
            }
        };
        let tls = if tls {
            Some(
                crate::tls::client::client_config(cfg.tls_ca.as_deref())
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("--redis-tls-ca: {e}")))?,
            )
        } else {
            None
        };
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let probe_node = node_id.clone();
        let sub = Subscriber {
            tls,
            username,
            password,
            refresh_due: cluster.is_some(),
            next_refresh: Instant::now(),
            next_poll: Instant::now(),
            refresh_backoff: Backoff::new(unix_nanos() ^ 0xc1),
            cluster,
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
            lanes,
            homeless: Ledger::default(),
            confirms: Vec::new(),
            post: Post::new(shards, HELD_FRAMES),
            next_stats: Instant::now(),
            stats_shape: 0,
        };
        Ok((sub, waker))
    }

    /// Runs until the shards are gone; an error if its poll fails.
    pub fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(64);
        loop {
            let now = Instant::now();
            if self.cluster.is_some() && now >= self.next_poll && self.lanes.iter().flatten().any(|l| l.link.is_none())
            {
                // A lane down: is another node serving its slots by now?
                self.refresh_due = true;
                self.next_poll = now + DOWN_REFRESH;
            }
            if self.refresh_due && now >= self.next_refresh {
                self.refresh();
            }
            self.connect_lanes(now);
            let timeout = self.timeout();
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
            let mut lost: Vec<(usize, io::Error)> = Vec::new();
            for event in events.iter() {
                if event.token() == WAKER {
                    continue;
                }
                let (lane, is_reads) = lane_of_token(event.token());
                let result = if is_reads {
                    self.on_reads_socket(lane, event.is_writable())
                } else {
                    self.on_socket(lane, event.is_writable())
                };
                if let Err(e) = result {
                    lost.push((lane, e));
                }
            }
            self.check_modes();
            loop {
                match self.rx.try_recv() {
                    Ok(LinkRequest::Interest(msg)) => self.on_interest(msg),
                    Ok(LinkRequest::Admit(a)) => self.on_admit(a),
                    Ok(LinkRequest::PresenceSnapshot { room, owner }) => self.on_presence_snapshot(room, owner),
                    Ok(LinkRequest::PresenceQuery { room, list, cap, reply }) => {
                        let (reads, post, mut route) = self.route();
                        reads.presence_query(room, list, cap, reply, &mut route, post);
                    }
                    Ok(LinkRequest::Query(q)) => {
                        let (reads, post, mut route) = self.route();
                        reads.query(q, &mut route, post);
                    }
                    Err(crossbeam_channel::TryRecvError::Empty) => break,
                    Err(crossbeam_channel::TryRecvError::Disconnected) => return Ok(()),
                }
            }
            let now = Instant::now();
            for (i, lane) in self.lanes.iter_mut().enumerate() {
                let Some(lane) = lane else { continue };
                let Some(link) = lane.link.as_mut().filter(|l| l.connected) else {
                    continue;
                };
                self.reads.fence(i, &mut link.wbuf);
                if self.cluster.is_some() && lane.ready && lane.beat_since.is_none() && now >= lane.next_beat {
                    wire::command(&mut link.wbuf, &[b"PING", BEAT]);
                    lane.beat_since = Some(now);
                    lane.next_beat = now + HEARTBEAT;
                }
            }
            self.check_nodes();
            for (i, lane) in self.lanes.iter_mut().enumerate() {
                let Some(lane) = lane else { continue };
                if lost.iter().any(|(l, _)| *l == i) {
                    continue;
                }
                for link in [lane.link.as_mut(), lane.reads_link.as_mut()].into_iter().flatten() {
                    if let Err(e) = flush_link(link) {
                        lost.push((i, e));
                        break;
                    }
                }
            }
            for (lane, error) in lost {
                self.lose(lane, error);
            }
            self.update_state();
            self.send_to_shards();
        }
    }

    /// How long the next poll may wait.
    fn timeout(&self) -> Duration {
        if self.post.has_backlog() {
            return Duration::from_millis(1);
        }
        let now = Instant::now();
        let mut wake = now + Duration::from_millis(500);
        if self.refresh_due {
            wake = wake.min(self.next_refresh);
        }
        if self.cluster.is_some() && self.lanes.iter().flatten().any(|l| l.link.is_none()) {
            wake = wake.min(self.next_poll);
        }
        for lane in self.lanes.iter().flatten() {
            if lane.link.is_none() {
                wake = wake.min(lane.next_try);
            } else if self.cluster.is_some() {
                wake = wake.min(lane.next_beat);
            }
        }
        if self.presence_check.is_some() {
            // Wake for the next liveness check.
            wake = wake.min(self.next_check);
        }
        wake.saturating_duration_since(now).max(Duration::from_millis(10))
    }

    fn probe_stalled(&self) -> bool {
        self.cluster.is_none() && self.state.stalled_for().is_some()
    }

    /// The reads' books, the post, and the lanes to route reads by.
    fn route(&mut self) -> (&mut Reads, &mut Post, Lanes<'_>) {
        let probe_stalled = self.probe_stalled();
        (
            &mut self.reads,
            &mut self.post,
            Lanes {
                lanes: &mut self.lanes,
                cluster: self.cluster.as_ref(),
                probe_stalled,
            },
        )
    }

    /// The lane of channel or key `name`; `None` while no master is known.
    fn lane_index(&mut self, name: &[u8]) -> Option<usize> {
        let (_, _, mut lanes) = self.route();
        lanes.index(name)
    }

    /// Opens the lanes that are due.
    fn connect_lanes(&mut self, now: Instant) {
        for i in 0..self.lanes.len() {
            let Some(lane) = self.lanes[i].as_mut() else { continue };
            if lane.link.is_some() || now < lane.next_try {
                continue;
            }
            let dial = Dial {
                host: lane.addr.host.clone(),
                port: lane.addr.port,
                tls: self.tls.clone(),
            };
            let opened = (|| {
                let addr = (dial.host.as_str(), dial.port)
                    .to_socket_addrs()?
                    .next()
                    .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "redis host has no address"))?;
                let mut stream = Socket::connect(addr, &dial)?;
                let mut reads = Socket::connect(addr, &dial)?;
                let registry = self.poll.registry();
                registry.register(stream.tcp(), sub_token(i), Ready::READABLE | Ready::WRITABLE)?;
                registry.register(reads.tcp(), reads_token(i), Ready::READABLE | Ready::WRITABLE)?;
                Ok::<_, io::Error>((stream, reads))
            })();
            match opened {
                Ok((stream, reads)) => {
                    lane.link = Some(Link::new(stream));
                    lane.reads_link = Some(Link::new(reads));
                }
                Err(e) => {
                    let delay = lane.backoff.next_delay();
                    lane.next_try = now + delay;
                    tracing::debug!(error = %e, node = %lane.addr, "redis link: subscriber cannot connect");
                    if self.cluster.is_some() {
                        self.refresh_due = true;
                    }
                }
            }
        }
    }

    /// Asks a cluster for its map again and moves the channels whose
    /// master changed.
    fn refresh(&mut self) {
        let Some(topology) = self.cluster.as_mut() else {
            self.refresh_due = false;
            return;
        };
        match topology.refresh() {
            Ok(_) => {
                self.refresh_due = false;
                self.refresh_backoff.reset();
                self.rehome();
            }
            Err(why) => {
                let delay = self.refresh_backoff.next_delay();
                self.next_refresh = Instant::now() + delay;
                tracing::warn!(%why, retry_in_ms = delay.as_millis() as u64, "redis cluster: no node gave the slot map");
            }
        }
    }

    /// After a new map: every channel to the lane of its slot's master,
    /// subscribed there; lanes of nodes that are no masters any more closed.
    fn rehome(&mut self) {
        let Some(topology) = self.cluster.as_ref() else { return };
        let map = topology.map().clone();
        let owner = |name: &[u8]| map.master(slot::of(name)).map(|n| n.addr.clone());
        let mut moving = self.homeless.take_where(|_, _| true);
        for lane in self.lanes.iter_mut().flatten() {
            let connected = lane.connected();
            let addr = lane.addr.clone();
            moving.extend(
                lane.ledger
                    .take_where(|name, subscribed| owner(name).as_ref() != Some(&addr) || (connected && !subscribed)),
            );
            lane.always.retain(|name| owner(name).as_ref() == Some(&addr));
        }
        // Lanes of nodes that serve no slot any more have no channel left.
        let masters: Vec<NodeAddr> = map.masters().into_iter().map(|n| n.addr.clone()).collect();
        for i in 0..self.lanes.len() {
            if self.lanes[i].as_ref().is_some_and(|l| !masters.contains(&l.addr)) {
                self.close(i);
                self.lanes[i] = None;
            }
        }
        // A lane for every master, so a join of any room finds its lane up.
        for addr in &masters {
            lane_for(&mut self.lanes, addr);
        }
        let probe_stalled = self.probe_stalled();
        for m in moving {
            let Some(i) = self.lane_index(&m.name) else {
                self.homeless.adopt(m, Mode::Down, &mut self.confirms);
                continue;
            };
            let lane = self.lanes[i].as_mut().expect("lane_index gives a lane");
            let name = m.name.clone();
            let mode = lane.mode(probe_stalled);
            if lane.ledger.adopt(m, mode, &mut self.confirms) == Some(Command::Subscribe) {
                if let Some(link) = lane.link.as_mut() {
                    wire::command(&mut link.wbuf, &[b"SSUBSCRIBE", &name]);
                }
            }
        }
        for name in self.always() {
            let Some(i) = self.lane_index(&name) else { continue };
            let lane = self.lanes[i].as_mut().expect("lane_index gives a lane");
            if !lane.always.contains(&name) {
                if let Some(link) = lane.link.as_mut().filter(|l| l.connected) {
                    wire::command(&mut link.wbuf, &[b"SSUBSCRIBE", &name]);
                }
                lane.always.push(name);
            }
        }
        self.publish_shards();
    }

    /// The node's own channels: its probe, and the goodbyes.
    fn always(&self) -> Vec<Vec<u8>> {
        let mut always = vec![self.probe.clone()];
        if let Some(nodes) = &self.nodes {
            always.push(nodes.clone());
        }
        always
    }

    /// A lane's reads connection is readable or writable.
    fn on_reads_socket(&mut self, i: usize, writable: bool) -> io::Result<()> {
        let auth = self.password.clone().map(|p| (self.username.clone(), p));
        let Some(link) = self
            .lanes
            .get_mut(i)
            .and_then(Option::as_mut)
            .and_then(|l| l.reads_link.as_mut())
        else {
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
            let auth = auth.as_ref().map(|(u, p)| (u.as_deref(), p.as_str()));
            self.reads.connected(i, auth, &mut link.wbuf);
        }
        let mut values = Vec::new();
        link.wire.read_all(&mut link.stream, |v| {
            values.push(v);
            Ok(())
        })?;
        for v in values {
            let (reads, post, mut route) = self.route();
            reads.on_reply(i, v, post, &mut route);
        }
        Ok(())
    }

    /// A member joined a room with history: read where it starts once the
    /// room's subscription is in place; refused while its Redis is not up.
    fn on_admit(&mut self, admit: crate::bus::Admit) {
        let name = super::channel(&self.prefix, &Topic::Room(admit.room.clone()));
        let probe_stalled = self.probe_stalled();
        let live = match self.lane_index(&name).and_then(|i| self.lanes[i].as_ref()) {
            Some(lane) if lane.mode(probe_stalled) == Mode::Up => lane.ledger.is_live(&name),
            _ => {
                self.reads.refuse_admit(admit, &mut self.post);
                return;
            }
        };
        let (reads, post, mut route) = self.route();
        reads.admit(admit, name, live, &mut route, post);
    }

    /// An owner shard starts following a room's presence.
    fn on_presence_snapshot(&mut self, room: Arc<str>, owner: usize) {
        let name = super::channel(&self.prefix, &Topic::Room(room.clone()));
        let probe_stalled = self.probe_stalled();
        let live = self
            .lane_index(&name)
            .and_then(|i| self.lanes[i].as_ref())
            .is_some_and(|l| l.mode(probe_stalled) == Mode::Up && l.ledger.is_live(&name));
        // Not live: read once the room is subscribed again.
        let (reads, post, mut route) = self.route();
        reads.presence_snapshot(room, owner, name, live, &mut route, post);
    }

    /// Closes lane `i`'s connections: its pending joins are confirmed now
    /// (waiting would only delay local delivery), its reads answered
    /// `unavailable`, and its subscriptions restored when it is back.
    fn close(&mut self, i: usize) {
        let Some(lane) = self.lanes.get_mut(i).and_then(Option::as_mut) else {
            return;
        };
        for link in [lane.link.take(), lane.reads_link.take()].into_iter().flatten() {
            let mut link = link;
            let _ = self.poll.registry().deregister(link.stream.tcp());
        }
        lane.ready = false;
        lane.beat_since = None;
        lane.ledger.disconnected(&mut self.confirms);
        let ledger = &lane.ledger;
        self.reads.disconnected(i, |ch| ledger.contains(ch), &mut self.post);
    }

    /// Lane `i`'s connection failed: closed, and tried again after a backoff.
    fn lose(&mut self, i: usize, error: io::Error) {
        let Some(lane) = self.lanes.get_mut(i).and_then(Option::as_mut) else {
            return;
        };
        let delay = lane.backoff.next_delay();
        if lane.link.as_ref().is_some_and(|l| l.answered) {
            tracing::warn!(%error, node = %lane.addr, "redis link: subscriber lost its connection");
        } else {
            // It never had one: say what it tries to reach.
            tracing::warn!(
                %error,
                retry_in_ms = delay.as_millis() as u64,
                "cannot connect to Redis at {} (retrying in {:.1} s)",
                lane.addr,
                delay.as_secs_f64()
            );
        }
        lane.next_try = Instant::now() + delay;
        self.close(i);
        if self.cluster.is_some() {
            // Its replica may be taking over: where do its slots live now?
            self.refresh_due = true;
        }
    }

    /// Pub/sub connection readiness of lane `i`.
    fn on_socket(&mut self, i: usize, writable: bool) -> io::Result<()> {
        let Some(lane) = self.lanes.get_mut(i).and_then(Option::as_mut) else {
            return Ok(());
        };
        let Some(link) = lane.link.as_mut() else {
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
            self.on_connected(i);
        }
        let link = self.lanes[i].as_mut().and_then(|l| l.link.as_mut()).expect("connected");
        let mut values = Vec::new();
        link.wire.read_all(&mut link.stream, |v| {
            values.push(v);
            Ok(())
        })?;
        link.answered |= !values.is_empty();
        for value in values {
            self.on_value(i, value)?;
        }
        Ok(())
    }

    /// Lane `i` just connected: authenticate, then subscribe to everything
    /// it carries, then the ping whose pong says all is in place.
    fn on_connected(&mut self, i: usize) {
        let sharded = self.cluster.is_some();
        let always = if sharded {
            let topology = self.cluster.as_ref().expect("a cluster");
            let addr = &self.lanes[i].as_ref().expect("lane").addr;
            let mine: Vec<Vec<u8>> = self
                .always()
                .into_iter()
                .filter(|n| topology.map().master(slot::of(n)).is_some_and(|m| &m.addr == addr))
                .collect();
            mine
        } else {
            self.always()
        };
        let lane = self.lanes[i].as_mut().expect("lane");
        lane.always = always;
        let mut out = Vec::new();
        match (&self.username, &self.password) {
            (Some(u), Some(p)) => wire::command(&mut out, &[b"AUTH", u.as_bytes(), p.as_bytes()]),
            (None, Some(p)) => wire::command(&mut out, &[b"AUTH", p.as_bytes()]),
            _ => {}
        }
        let always: Vec<&[u8]> = lane.always.iter().map(Vec::as_slice).collect();
        let names = lane.ledger.restore(&always);
        if sharded {
            for name in &names {
                wire::command(&mut out, &[b"SSUBSCRIBE", name]);
            }
        } else {
            for chunk in names.chunks(SUBSCRIBE_CHUNK) {
                let mut args: Vec<&[u8]> = vec![b"SUBSCRIBE"];
                args.extend(chunk.iter().map(Vec::as_slice));
                wire::command(&mut out, &args);
            }
        }
        wire::command(&mut out, &[b"PING", RESTORED]);
        let link = lane.link.as_mut().expect("connected");
        link.wbuf.extend_from_slice(&out);
    }

    /// Handles one reply or message on lane `i`'s pub/sub connection.
    fn on_value(&mut self, i: usize, value: Value) -> io::Result<()> {
        let items = match value {
            Value::Array(items) | Value::Push { data: items, .. } => items,
            // A ping on a connection with no subscription is answered plainly.
            Value::BulkString(arg) => {
                self.on_pong(i, &arg);
                return Ok(());
            }
            Value::ServerError(e) => return self.on_refused(i, e),
            _ => return Ok(()),
        };
        let (Some(Value::BulkString(kind)), Some(Value::BulkString(name))) = (items.first(), items.get(1)) else {
            return Ok(());
        };
        match kind.as_slice() {
            b"message" | b"smessage" => {
                if let Some(Value::BulkString(payload)) = items.get(2) {
                    self.on_message(i, name, payload);
                }
            }
            b"pong" => self.on_pong(i, name),
            b"subscribe" | b"ssubscribe" => {
                let lane = self.lanes[i].as_mut().expect("lane");
                lane.ledger.subscribed(name, &mut self.confirms);
                if lane.ledger.is_live(name) {
                    let (reads, post, mut route) = self.route();
                    reads.subscribed(name, &mut route, post);
                }
            }
            b"sunsubscribe" => {
                // Unasked (the slot moved, or the master was demoted): the
                // channel is subscribed again wherever its slot is now.
                let lane = self.lanes[i].as_mut().expect("lane");
                let always = lane.always.iter().position(|n| n == name);
                let wanted = lane.ledger.route(name).is_some() && lane.ledger.is_live(name);
                if wanted || always.is_some() {
                    tracing::info!(channel = %String::from_utf8_lossy(name), node = %lane.addr, "redis cluster: a master dropped a subscription; asking where its slot is now");
                    lane.ledger.dropped(name);
                    if let Some(k) = always {
                        lane.always.remove(k);
                    }
                    self.refresh_due = true;
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn on_pong(&mut self, i: usize, arg: &[u8]) {
        let lane = self.lanes[i].as_mut().expect("lane");
        match arg {
            RESTORED => {
                lane.ready = true;
                lane.backoff.reset();
                if lane.was_ready {
                    self.state.reconnects.fetch_add(1, Relaxed);
                }
                lane.was_ready = true;
                tracing::info!(node = %lane.addr, channels = lane.ledger.len(), "redis link: subscribed");
            }
            BEAT => lane.beat_since = None,
            _ => self.reads.on_pong(i, arg, &mut self.post),
        }
    }

    /// An error on a pub/sub connection. On a cluster, a `MOVED` answers a
    /// SSUBSCRIBE sent to a master that no longer owns the slot: the
    /// channels of that slot still unanswered are subscribed again where
    /// it lives now. Anything else ends the connection.
    fn on_refused(&mut self, i: usize, e: redis::ServerError) -> io::Result<()> {
        let redirect = Redirect::parse(&e);
        let (Some(Redirect::Moved { slot: moved, .. } | Redirect::Ask { slot: moved, .. }), Some(_)) =
            (redirect, self.cluster.as_ref())
        else {
            return Err(io::Error::other(format!("redis refused: {e:?}")));
        };
        let lane = self.lanes[i].as_mut().expect("lane");
        for name in lane.ledger.in_flight(|n| slot::of(n) == moved) {
            lane.ledger.dropped(&name);
        }
        lane.always.retain(|n| slot::of(n) != moved);
        self.refresh_due = true;
        Ok(())
    }

    fn on_message(&mut self, i: usize, name: &[u8], payload: &[u8]) {
        let lane = self.lanes[i].as_mut().expect("lane");
        lane.messages_in += 1;
        if payload.first().is_some_and(u8::is_ascii_digit) {
            return self.on_numbered(i, name, payload);
        }
        if payload.first() == Some(&presence::CHANGE) {
            return self.on_presence_change(i, name, payload);
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
        let Some((topic, mask)) = self.lanes[i].as_ref().and_then(|l| l.ledger.route(name)) else {
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
    fn on_numbered(&mut self, i: usize, name: &[u8], payload: &[u8]) {
        let Some(messages) = history::decode_published(payload) else {
            return;
        };
        let Some((topic, mask)) = self.lanes[i].as_ref().and_then(|l| l.ledger.route(name)) else {
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
    fn on_presence_change(&mut self, i: usize, name: &[u8], payload: &[u8]) {
        let Some(change) = presence::decode_change(payload) else {
            return;
        };
        if change.node == self.node_id {
            return;
        }
        let Some((Topic::Room(room), _)) = self.lanes[i].as_ref().and_then(|l| l.ledger.route(name)) else {
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
    fn check_nodes(&mut self) {
        let (Some(every), Some(_)) = (self.presence_check, self.ready_since) else {
            return;
        };
        let now = Instant::now();
        if !self.state.subscriber_up.load(Relaxed) || now < self.next_check || now < self.check_from {
            return;
        }
        self.next_check = now + every;
        let (reads, _, mut route) = self.route();
        reads.check_nodes(&mut route);
    }

    /// A lane that stopped answering in time releases its waiting joins
    /// and answers its reads `unavailable`.
    fn check_modes(&mut self) {
        let probe_stalled = self.probe_stalled();
        for i in 0..self.lanes.len() {
            let Some(lane) = self.lanes[i].as_mut() else { continue };
            let mode = lane.mode(probe_stalled);
            if mode != Mode::Up && lane.was_up {
                // Redis stopped answering: joins waiting for it go ahead.
                tracing::warn!(?mode, node = %lane.addr, "redis link: not answering; joins no longer wait for it");
                lane.ledger.release_waiters(&mut self.confirms);
                let ledger = &lane.ledger;
                self.reads.stalled(i, |ch| ledger.contains(ch), &mut self.post);
            }
            lane.was_up = mode == Mode::Up;
        }
    }

    fn on_interest(&mut self, msg: TopicInterest) {
        let name = super::channel(&self.prefix, &msg.topic);
        let probe_stalled = self.probe_stalled();
        tracing::debug!(topic = ?msg.topic, on = msg.on, shard = msg.shard, "redis link: interest");
        let Some(i) = self.lane_index(&name) else {
            // No master known yet: subscribed once one is.
            self.homeless.interest(&name, msg, Mode::Down, &mut self.confirms);
            self.refresh_due = true;
            return;
        };
        let sharded = self.cluster.is_some();
        let lane = self.lanes[i].as_mut().expect("lane_index gives a lane");
        let command = lane
            .ledger
            .interest(&name, msg, lane.mode(probe_stalled), &mut self.confirms);
        let verb: &[u8] = match (command, sharded) {
            (None, _) => return,
            (Some(Command::Subscribe), false) => b"SUBSCRIBE",
            (Some(Command::Unsubscribe), false) => b"UNSUBSCRIBE",
            (Some(Command::Subscribe), true) => b"SSUBSCRIBE",
            (Some(Command::Unsubscribe), true) => b"SUNSUBSCRIBE",
        };
        if let Some(link) = lane.link.as_mut() {
            wire::command(&mut link.wbuf, &[verb, &name]);
        }
    }

    /// The link's health for `/readyz` and `/metrics`: up while every lane
    /// it needs has its subscriptions in place and answers.
    fn update_state(&mut self) {
        let probe_stalled = self.probe_stalled();
        let lanes: Vec<&Lane> = self.lanes.iter().flatten().collect();
        let all_up = !lanes.is_empty()
            && self.homeless.len() == 0
            && !self.refresh_due
            // Connected, restored, answering its heartbeat (a stalled probe
            // is `LinkState::health`'s to judge).
            && lanes.iter().all(|l| l.mode(false) == Mode::Up);
        let subscriptions: usize = lanes.iter().map(|l| l.ledger.subscriptions()).sum();
        self.state.subscriptions.store(subscriptions as u64, Relaxed);
        let was_up = self.state.subscriber_up.load(Relaxed);
        if all_up && !was_up {
            let now = Instant::now();
            self.ready_since = Some(now);
            if self.was_connected {
                // A refresh interval is `presence_check` × 4.
                self.check_from = now + self.presence_check.unwrap_or_default() * 12;
            }
            self.was_connected = true;
            self.state.last_probe_nanos.store(unix_nanos(), Relaxed);
            self.state.resubscribed.fetch_add(1, Relaxed);
            tracing::info!(nodes = lanes.len(), "redis link: every subscription in place");
        }
        if !all_up && was_up {
            self.ready_since = None;
        }
        self.state.subscriber_up.store(all_up, Relaxed);
        // At once when a node's state changes; its message count, now and then.
        let shape: u64 = self
            .lanes
            .iter()
            .flatten()
            .map(|l| (l.ledger.subscriptions() as u64) << 2 | u64::from(l.mode(probe_stalled) == Mode::Up) << 1 | 1)
            .fold(self.lanes.len() as u64, |h, x| h.wrapping_mul(31).wrapping_add(x));
        if shape != self.stats_shape || Instant::now() >= self.next_stats {
            self.stats_shape = shape;
            self.publish_shards();
        }
    }

    /// The per-node figures for `/metrics`.
    fn publish_shards(&mut self) {
        self.next_stats = Instant::now() + STATS_EVERY;
        let probe_stalled = self.probe_stalled();
        let shards: Vec<RedisShard> = self
            .lanes
            .iter()
            .flatten()
            .map(|l| RedisShard {
                node: l.addr.to_string(),
                up: l.mode(probe_stalled) == Mode::Up,
                subscriptions: l.ledger.subscriptions() as u64,
                messages_in: l.messages_in,
            })
            .collect();
        *self.state.shards.lock().unwrap_or_else(|e| e.into_inner()) = shards;
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
