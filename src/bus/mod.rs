//! Every message and handle that crosses threads: what the acceptor, other
//! shards and the Redis link send a shard, and what shards send the link.
//!
//! A leaf module: it names no thread's internals, so the shard, the link and
//! the acceptor all depend on it and never on each other. Every channel is
//! bounded and every sender batches: many `send`s, then one `wake`. Senders
//! never block: a full channel hands the message back (`post::Post` keeps
//! control messages for the next try).

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use crossbeam_channel::{Sender, TrySendError};

pub(crate) mod post;
use mio::net::TcpStream;
use mio::Waker;
pub(crate) use post::Post;

use crate::history::{Limits, Since};
use crate::limits::Permit;
use crate::metrics::LinkState;
use crate::protocol::encode::Draft;
use crate::rooms::Topic;

/// Work for a shard.
#[derive(Debug)]
pub(crate) enum ShardMsg {
    /// A socket the acceptor took; a permit over the cap means it is over
    /// `--max-connections` and must be refused with 1013.
    Accept {
        /// The accepted socket (non-blocking, `TCP_NODELAY` set).
        stream: TcpStream,
        /// The client's address.
        peer: SocketAddr,
        /// Its place in `--max-connections`, given back when dropped.
        permit: Permit,
    },
    /// Shard `from` got its first (`on`) or lost its last local member of
    /// `topic`. An `on` is answered with `Confirm`.
    Interest {
        /// The room or user.
        topic: Topic,
        /// The announcing shard.
        from: usize,
        /// Members appeared (true) or are all gone (false).
        on: bool,
        /// The announcement's sequence number, echoed in `Confirm`.
        seq: u64,
    },
    /// The sender (another shard, or the Redis link once its SUBSCRIBE is
    /// confirmed) applied announcement `seq` of `topic`.
    Confirm {
        /// The room or user.
        topic: Topic,
        /// The announcement's sequence number.
        seq: u64,
    },
    /// Frames for local members of each topic, in publish order (another
    /// shard's fan-out, or messages of other nodes from the Redis link),
    /// with the history items of the same turn in their places.
    Frames(Batch),
    /// Graceful shutdown, phase 1: stop reading client input (so nothing new
    /// is accepted), then report on the channel.
    Quiesce(Sender<usize>),
    /// Graceful shutdown, phase 2: close every connection (1001 for
    /// WebSockets, after what is queued) and exit when all are closed or at
    /// `deadline`.
    GoAway {
        /// When to give up on close handshakes.
        deadline: std::time::Instant,
    },
}

/// A message frame as fan-out queues it: the plain frame, and its
/// permessage-deflate twin for members that negotiated compression, made
/// at most once per message (`ws::deflate`) and carried along to the
/// other shards so that they do not compress it again.
#[derive(Debug, Clone)]
pub(crate) struct Encoded {
    /// The frame every member can read.
    pub plain: Bytes,
    /// The compressed twin, once known.
    pub twin: Twin,
}

/// Whether a frame's compressed twin was made.
#[derive(Debug, Clone, Default)]
pub(crate) enum Twin {
    /// Not tried yet: no member that wants it was met.
    #[default]
    Untried,
    /// Tried: too short, or compression did not make it smaller.
    Plain,
    /// The compressed frame.
    Deflated(Bytes),
}

impl Encoded {
    /// A frame whose twin is made when a member first wants it.
    pub fn new(plain: Bytes) -> Encoded {
        Encoded {
            plain,
            twin: Twin::Untried,
        }
    }

    /// The compressed twin, made now with `deflater` if not tried yet.
    #[inline]
    pub fn twin(&mut self, deflater: &mut crate::ws::deflate::Deflater) -> Option<&Bytes> {
        if matches!(self.twin, Twin::Untried) {
            self.twin = match deflater.compress_frame(&self.plain) {
                Some(z) => Twin::Deflated(z),
                None => Twin::Plain,
            };
        }
        match &self.twin {
            Twin::Deflated(z) => Some(z),
            _ => None,
        }
    }
}

/// What one shard sends another in a loop turn, in the order it happened.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    /// Frames for local members of each topic.
    pub frames: Vec<(Topic, Encoded)>,
    /// History items, each with the number of `frames` that come before it.
    pub items: Vec<(usize, Item)>,
}

impl Batch {
    /// Frames and items.
    pub fn len(&self) -> usize {
        self.frames.len() + self.items.len()
    }
}

/// Who to answer, on which shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ReplyTo {
    /// The connection's shard.
    pub shard: usize,
    /// Its slot there.
    pub slot: u32,
    /// Its id (a reused slot is not answered).
    pub conn: u64,
    /// The request's id; `None`: answer nothing. For the HTTP API, the
    /// item's index in its request.
    pub req: Option<u64>,
    /// An HTTP API request (`POST /api/publish`, `GET /api/history`), not a
    /// WebSocket op: answered with an [`ApiPart`].
    pub api: bool,
}

/// A piece of the answer to an HTTP API request waiting on an owner shard.
#[derive(Debug)]
pub(crate) enum ApiPart {
    /// Item `index` of a `POST /api/publish` landed at `offset`.
    Offset {
        /// The item's index in the request.
        index: u64,
        /// Its offset.
        offset: u64,
    },
    /// The answer to `GET /api/history` or `GET /api/presence`: a
    /// `history` or `presence` frame, whose payload is the response body.
    Object(Bytes),
    /// Item `index` of a `POST /api/publish` (or the `GET /api/history`)
    /// could not be served: the history store (Redis) is unreachable.
    Unavailable {
        /// The item's index in the request.
        index: u64,
    },
}

/// Work on a room with history, between a shard and the room's owner
/// shard (the one that numbers its messages and keeps them). Carried in
/// batches, in order with the frames, so a member admitted at an offset
/// gets every later message and no earlier one.
#[derive(Debug)]
pub(crate) enum Item {
    /// A publish for the owner to number, keep and fan out.
    Publish {
        /// The room.
        room: Arc<str>,
        /// The message frame, finished once numbered.
        draft: Draft,
        /// The publisher, for the ack with the offset.
        reply: ReplyTo,
    },
    /// A member joined on the sending shard (pending): where does it start?
    Admit {
        /// The room.
        room: Arc<str>,
        /// Matches the answer to the join.
        ticket: u64,
        /// The sending shard.
        from: usize,
        /// The join's id, for the ack.
        req: Option<u64>,
        /// Where the client stopped, to recover from.
        since: Option<Since>,
        /// The connection is in the room already: nothing to replay.
        already: bool,
    },
    /// The owner's (or the Redis link's) answer: queue `frames` (what the
    /// member missed), then `ack`, and admit the member.
    Admitted {
        /// The join's ticket.
        ticket: u64,
        /// Messages to replay, oldest first.
        frames: Vec<Bytes>,
        /// The join's ack, with the position.
        ack: Option<Bytes>,
        /// Whether the join recovered from its `since` (`None`: it asked
        /// no recovery, or was a member already), for the metrics.
        recovered: Option<bool>,
    },
    /// The join could not be served (the history store is unreachable):
    /// undo the pending join and queue `frame`, its error.
    Refused {
        /// The join's ticket.
        ticket: u64,
        /// The error for the client (`None`: the join had no id).
        frame: Option<Bytes>,
    },
    /// A `history` query for the owner.
    Query {
        /// The room.
        room: Arc<str>,
        /// Most messages.
        limit: usize,
        /// From after this position.
        since: Option<Since>,
        /// Who asked.
        reply: ReplyTo,
    },
    /// A connection of `user` joined (`joined`) or left `room` (or
    /// closed), for the room's owner shard, which keeps its presence.
    Presence {
        /// The room.
        room: Arc<str>,
        /// The connection's user.
        user: Arc<str>,
        /// Joined, or left.
        joined: bool,
    },
    /// The owner's `joined`/`left` event for the receiving shard's members
    /// of `room`, except `user`'s own connections.
    Event {
        /// The room.
        room: Arc<str>,
        /// Whom it is about.
        user: Arc<str>,
        /// The event's frame.
        frame: Bytes,
    },
    /// Another node's presence change in `room`, from Redis, for the
    /// room's owner shard on this node.
    RemotePresence {
        /// The room.
        room: Arc<str>,
        /// The change.
        change: crate::presence::Remote,
    },
    /// The other nodes' shares of `room`'s presence as Redis has them:
    /// (node, its last change's number, its users and their connections).
    PresenceSnapshot {
        /// The room.
        room: Arc<str>,
        /// Each node's share.
        nodes: crate::presence::Shares,
    },
    /// Node `node` is gone (it said so, or its liveness key expired): its
    /// users leave every room.
    NodeGone {
        /// The node's id.
        node: Arc<str>,
    },
    /// Redis may have lost this node's presence (the link reconnected):
    /// tell it again, and read the other nodes' shares again.
    PresenceResync,
    /// A `presence` query for the owner.
    PresenceQuery {
        /// The room.
        room: Arc<str>,
        /// List the users, or count them only.
        list: bool,
        /// Who asked.
        reply: ReplyTo,
    },
    /// A piece of an HTTP API answer for one connection of the receiving shard.
    Api {
        /// The connection's slot.
        slot: u32,
        /// Its id.
        conn: u64,
        /// The piece.
        part: ApiPart,
    },
    /// A frame for one connection of the receiving shard (an ack with an
    /// offset, a history answer).
    Reply {
        /// The connection's slot.
        slot: u32,
        /// Its id.
        conn: u64,
        /// The frame.
        frame: Bytes,
    },
}

/// Capacity of a shard's inbox.
pub(crate) const INBOX_CAPACITY: usize = 16 * 1024;

/// The sending side of a shard's inbox.
#[derive(Debug, Clone)]
pub(crate) struct ShardHandle {
    tx: Sender<ShardMsg>,
    waker: Arc<Waker>,
}

impl ShardHandle {
    /// Wraps a channel and the shard's waker.
    pub fn new(tx: Sender<ShardMsg>, waker: Arc<Waker>) -> ShardHandle {
        ShardHandle { tx, waker }
    }

    /// Queues a message without waking the shard; call [`ShardHandle::wake`] after a batch.
    pub fn send(&self, msg: ShardMsg) -> Result<(), TrySendError<ShardMsg>> {
        self.tx.try_send(msg)
    }

    /// Wakes the shard so it drains its inbox.
    pub fn wake(&self) {
        // A failed wake means the shard's poll is gone: it is shutting down.
        let _ = self.waker.wake();
    }
}

/// A subscription change from a shard to the Redis link.
#[derive(Debug)]
pub(crate) struct TopicInterest {
    /// The room or user.
    pub topic: Topic,
    /// The shard that gained its first (`on`) or lost its last member.
    pub shard: usize,
    /// Members appeared or are all gone.
    pub on: bool,
    /// Echoed in the `Confirm` the shard waits for (when `on`).
    pub seq: u64,
}

/// What a shard asks of the Redis link's subscriber thread, in order on
/// one queue: a join of a room with history is answered after the
/// subscription it announced is in place.
#[derive(Debug)]
pub(crate) enum LinkRequest {
    /// A first or last local member.
    Interest(TopicInterest),
    /// A member joined a room with history (pending on its shard): where
    /// does it start, and what did it miss? Answered with
    /// [`Item::Admitted`] or [`Item::Refused`], in order with the room's
    /// messages from Redis.
    Admit(Admit),
    /// A `history` query (or `GET /api/history`), answered with
    /// [`Item::Reply`] or [`Item::Api`].
    Query(Query),
    /// The owner shard of `room` starts following it (its first local
    /// user): read the other nodes' shares once the room's subscription is
    /// in place, answered with [`Item::PresenceSnapshot`].
    PresenceSnapshot {
        /// The room.
        room: Arc<str>,
        /// The asking owner shard.
        owner: usize,
    },
    /// A `presence` query for a room this node has no user in: read from
    /// Redis, answered like [`Item::Reply`] or [`Item::Api`].
    PresenceQuery {
        /// The room.
        room: Arc<str>,
        /// List the users, or count them only.
        list: bool,
        /// Most users listed.
        cap: usize,
        /// Who asked.
        reply: ReplyTo,
    },
}

/// A join of a room with history, for the link (see [`LinkRequest::Admit`]).
#[derive(Debug)]
pub(crate) struct Admit {
    /// The room.
    pub room: Arc<str>,
    /// Its history settings (a stream created now expires after the TTL).
    pub limits: Limits,
    /// The joining connection's shard.
    pub shard: usize,
    /// Matches the answer to the join.
    pub ticket: u64,
    /// The join's id, for the ack.
    pub req: Option<u64>,
    /// Where the client stopped, to recover from.
    pub since: Option<Since>,
    /// The connection is in the room already: nothing to replay.
    pub already: bool,
}

/// A history query, for the link (see [`LinkRequest::Query`]).
#[derive(Debug)]
pub(crate) struct Query {
    /// The room.
    pub room: Arc<str>,
    /// Its history settings.
    pub limits: Limits,
    /// Most messages.
    pub limit: usize,
    /// From after this position.
    pub since: Option<Since>,
    /// Who asked.
    pub reply: ReplyTo,
}

/// A publish to a room with history, for Redis to number, keep and
/// publish (one script call), and the publisher to ack with the offset.
#[derive(Debug)]
pub(crate) struct Numbered {
    /// The room.
    pub room: Arc<str>,
    /// Its history settings.
    pub limits: Limits,
    /// The message, to be finished with its offset by every node.
    pub draft: Draft,
    /// The publisher, for the ack.
    pub reply: ReplyTo,
}

/// A change of this node's presence in a room, for Redis and the other
/// nodes: `user` now has `conns` connections here.
#[derive(Debug)]
pub(crate) struct PresenceDelta {
    /// The room.
    pub room: Arc<str>,
    /// The user.
    pub user: Arc<str>,
    /// Their connections on this node now (0: gone from it).
    pub conns: u32,
    /// The change's number (grows per room on this node).
    pub seq: u64,
    /// The room has no user on this node any more.
    pub room_empty: bool,
}

/// One shard turn's publishes for the link's publisher thread.
#[derive(Debug, Default)]
pub(crate) struct LinkBatch {
    /// Frames of rooms without history and of users, for other nodes.
    pub frames: Vec<(Topic, Bytes)>,
    /// Publishes to rooms with history.
    pub numbered: Vec<Numbered>,
    /// Presence changes.
    pub presence: Vec<PresenceDelta>,
}

impl LinkBatch {
    /// Messages in the batch.
    pub fn len(&self) -> usize {
        self.frames.len() + self.numbered.len() + self.presence.len()
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty() && self.numbered.is_empty() && self.presence.is_empty()
    }
}

/// How shards reach the Redis link's two threads.
#[derive(Debug, Clone)]
pub(crate) struct LinkHandle {
    requests: Sender<LinkRequest>,
    publish: Sender<LinkBatch>,
    waker: Arc<Waker>,
    state: Arc<LinkState>,
}

impl LinkHandle {
    /// A handle over the link's two queues and the subscriber's waker.
    pub fn new(
        requests: Sender<LinkRequest>,
        publish: Sender<LinkBatch>,
        waker: Arc<Waker>,
        state: Arc<LinkState>,
    ) -> LinkHandle {
        LinkHandle {
            requests,
            publish,
            waker,
            state,
        }
    }

    /// Tells the subscriber about a first/last local member, or asks it
    /// for a position or history; `Err` gives the message back when its
    /// queue is full (the caller retries, never drops).
    pub fn request(&self, msg: LinkRequest) -> Result<(), LinkRequest> {
        match self.requests.try_send(msg) {
            Ok(()) => {
                let _ = self.waker.wake();
                Ok(())
            }
            Err(TrySendError::Full(m)) => Err(m),
            // The link is gone (shutting down): nothing to subscribe.
            Err(TrySendError::Disconnected(_)) => Ok(()),
        }
    }

    /// Hands a turn's publishes to the publisher; `Err` gives the batch
    /// back when its queue is full (the caller holds it and stops taking
    /// new work until it goes).
    pub fn publish(&self, batch: LinkBatch) -> Result<(), LinkBatch> {
        match self.publish.try_send(batch) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(b)) => Err(b),
            // The link is gone (shutting down): count what it will not carry.
            Err(TrySendError::Disconnected(b)) => {
                self.state
                    .dropped
                    .fetch_add(b.len() as u64, std::sync::atomic::Ordering::Relaxed);
                Ok(())
            }
        }
    }
}
