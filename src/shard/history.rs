//! Rooms with history: each has an owner shard (by a hash of its name),
//! the only one that numbers its messages and keeps them
//! (`history::Store`), so no lock is needed. A publish from another shard
//! hops to the owner in that turn's batch; the owner numbers it, keeps it,
//! fans it out like any publish and answers the publisher with the offset.
//!
//! A join on a shard other than the owner is pending (counted, announced,
//! but fanned out nothing) until the owner says where the member starts:
//! the owner's answer travels in its batch to that shard, in order with the
//! room's frames, so the member gets the replay, then every frame after
//! its position, with no gap and no duplicate at the seam.
//!
//! With a Redis link, Redis numbers and keeps instead (`link::history`):
//! publishes go to the link's publisher, every join is pending until the
//! link's subscriber admits it in order with the room's messages from
//! Redis, and queries are read there. The owner shard has no part.

use std::sync::Arc;

use bytes::Bytes;

use crate::bus::{Admit, ApiPart, Item, Numbered, Query, ReplyTo};
use crate::conn::{Clock, Ctx, JoinAt};
use crate::history::{Limits, Since};
use crate::protocol::encode::{self, Draft};
use crate::protocol::{ErrorCode, OpError};
use crate::rooms::{owner_of, Joined, Topic, TopicRef, Waiter};

use super::Shard;

impl Shard {
    /// The history settings of `room`.
    fn limits(&self, room: &str) -> Limits {
        let o = self.env.config().rooms.options(room);
        Limits {
            size: o.history_size,
            ttl: o.history_ttl,
        }
    }

    /// A connection of this shard publishes to a room with history.
    pub(super) fn publish_numbered(&mut self, room: &str, draft: Draft, reply: ReplyTo, clock: Clock) {
        if self.relay.has_link() {
            let (room, limits) = (Arc::from(room), self.limits(room));
            let msg = Numbered {
                room,
                limits,
                draft,
                reply,
            };
            self.relay.publish_numbered(msg);
            return;
        }
        let owner = owner_of(room, self.env.shards);
        if owner != self.id {
            let room = Arc::from(room);
            self.relay.item(owner, Item::Publish { room, draft, reply });
            return;
        }
        self.number(room, draft, reply, clock);
    }

    /// The owner numbers, keeps and fans out a message, and acks it.
    fn number(&mut self, room: &str, draft: Draft, reply: ReplyTo, clock: Clock) {
        let limits = self.limits(room);
        let (offset, frame) = self.history.append(room, limits, clock.now, |n| draft.finish(n));
        self.publish(TopicRef::Room(room), &frame);
        match reply.req {
            Some(index) if reply.api => self.answer_api(reply, ApiPart::Offset { index, offset }, clock),
            Some(req) => self.answer_to(reply, encode::ack_offset(req, offset)),
            None => {}
        }
    }

    /// Hands a piece of an HTTP API answer to its connection, here or on its shard.
    pub(super) fn answer_api(&mut self, reply: ReplyTo, part: ApiPart, clock: Clock) {
        if reply.shard != self.id {
            let (slot, conn) = (reply.slot, reply.conn);
            self.relay.item(reply.shard, Item::Api { slot, conn, part });
            return;
        }
        self.api_part(reply.slot as usize, reply.conn, part, clock);
    }

    /// A piece of an HTTP API answer for a connection of this shard.
    fn api_part(&mut self, slot: usize, conn: u64, part: ApiPart, clock: Clock) {
        let Some(c) = self.conns.get_mut(slot).filter(|c| c.id() == conn) else {
            return;
        };
        let verdict = c.api_part(
            &mut Ctx::new(&self.env, &mut self.work, &self.pending.frames, clock),
            part,
        );
        if c.mark_dirty() {
            self.pending.dirty.push((slot, conn));
        }
        self.settle(slot, conn, verdict, clock);
    }

    /// Queues `frame` to the connection `reply` names, here or on its shard.
    pub(super) fn answer_to(&mut self, reply: ReplyTo, frame: Bytes) {
        if reply.shard == self.id {
            self.reply(reply.slot as usize, reply.conn, frame);
        } else {
            let (slot, conn) = (reply.slot, reply.conn);
            self.relay.item(reply.shard, Item::Reply { slot, conn, frame });
        }
    }

    /// A connection of this shard joins a room with history.
    pub(super) fn join_numbered(&mut self, slot: usize, conn: u64, topic: Topic, req: Option<u64>, at: JoinAt) {
        let Topic::Room(room) = &topic else { return };
        let room = room.clone();
        let since = match at {
            JoinAt::Since(s) => Some(s),
            JoinAt::Top | JoinAt::Plain => None,
        };
        // The ack comes with the position, not with the confirmations.
        let silent = Waiter::Ack {
            slot: slot as u32,
            conn,
            id: None,
        };
        // With a Redis link no shard owns the room: the link admits.
        let owner = if self.relay.has_link() {
            usize::MAX
        } else {
            owner_of(&room, self.env.shards)
        };
        let joined = if owner == self.id {
            self.rooms.join(slot as u32, &topic, silent)
        } else {
            self.rooms.join_pending(slot as u32, &topic, silent)
        };
        match joined {
            Joined::TooMany => {
                let e = OpError::new(req, ErrorCode::TooLarge, "too many rooms on this connection");
                self.reply(slot, conn, encode::error(&e));
                return;
            }
            Joined::Announce { seq } => self.announce(topic.clone(), seq),
            Joined::Already | Joined::Ready | Joined::Waiting => {}
        }
        if !matches!(joined, Joined::Already) {
            self.joined_presence(slot, conn, &room);
        }
        if owner == self.id {
            // Everything later is fanned out to it from here: the seam is
            // this very point.
            let already = matches!(joined, Joined::Already);
            let (frames, ack, recovered) = self.start_position(&room, req, since, already);
            self.count_recovery(recovered, frames.len());
            for frame in frames {
                self.reply(slot, conn, frame);
            }
            if let Some(ack) = ack {
                self.reply(slot, conn, ack);
            }
            return;
        }
        // A member already in misses nothing: no replay.
        let already = matches!(joined, Joined::Already);
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        self.admissions.insert(
            ticket,
            Admission {
                slot: slot as u32,
                conn,
                topic,
                left: false,
            },
        );
        let from = self.id;
        if self.relay.has_link() {
            let limits = self.limits(&room);
            let admit = Admit {
                room,
                limits,
                shard: from,
                ticket,
                req,
                since,
                already,
            };
            self.relay.link_request(crate::bus::LinkRequest::Admit(admit));
            return;
        }
        self.relay.item(
            owner,
            Item::Admit {
                room,
                ticket,
                from,
                req,
                since,
                already,
            },
        );
    }

    /// The owner: where a new member of `room` starts, what it missed since
    /// `since` (nothing for a member already in), and the join's ack.
    fn start_position(
        &mut self,
        room: &str,
        req: Option<u64>,
        since: Option<Since>,
        already: bool,
    ) -> (Vec<Bytes>, Option<Bytes>, Option<bool>) {
        let (limits, now) = (self.limits(room), std::time::Instant::now());
        let (position, frames, recovered) = match since {
            // Already in: it misses nothing, so nothing is replayed; the
            // ack still says whether its position could be recovered.
            Some(since) if already => {
                let (position, recovered) = self.history.recoverable(room, limits, since, now);
                (position, Vec::new(), Some(recovered))
            }
            Some(since) => {
                let r = self.history.recover(room, limits, since, now);
                (r.position, r.frames, Some(r.recovered))
            }
            None => (self.history.position(room, limits, now), Vec::new(), None),
        };
        let ack = req.map(|id| encode::ack_position(id, position.top, position.epoch.as_str(), recovered));
        (frames, ack, recovered.filter(|_| !already))
    }

    /// Counts a join's recovery: `recovered` (and how many it replayed) or `gap`.
    fn count_recovery(&self, recovered: Option<bool>, replayed: usize) {
        let m = &self.env.metrics;
        match recovered {
            Some(true) => {
                m.recovered.add(1);
                m.replayed.add(replayed as u64);
            }
            Some(false) => m.recovery_gaps.add(1),
            None => {}
        }
    }

    /// A `history` query from a connection of this shard.
    pub(super) fn query_history(
        &mut self,
        room: &str,
        limit: usize,
        since: Option<Since>,
        reply: ReplyTo,
        clock: Clock,
    ) {
        if self.relay.has_link() {
            let (room, limits) = (Arc::from(room), self.limits(room));
            let query = Query {
                room,
                limits,
                limit,
                since,
                reply,
            };
            self.relay.link_request(crate::bus::LinkRequest::Query(query));
            return;
        }
        let owner = owner_of(room, self.env.shards);
        if owner != self.id {
            let room = Arc::from(room);
            self.relay.item(
                owner,
                Item::Query {
                    room,
                    limit,
                    since,
                    reply,
                },
            );
            return;
        }
        let (limits, now) = (self.limits(room), std::time::Instant::now());
        let (position, messages) = self.history.query(room, limits, since, limit, now);
        let id = if reply.api { None } else { reply.req };
        let frame = encode::history(
            id,
            room,
            position.epoch.as_str(),
            position.top,
            messages.iter().map(|k| (k.offset, k.body())),
        );
        if reply.api {
            self.answer_api(reply, ApiPart::Object(frame), clock);
        } else {
            self.answer_to(reply, frame);
        }
    }

    /// A history item from another shard's batch.
    pub(super) fn on_item(&mut self, item: Item, clock: Clock) {
        match item {
            Item::Publish { room, draft, reply } => self.number(&room, draft, reply, clock),
            Item::Admit {
                room,
                ticket,
                from,
                req,
                since,
                already,
            } => {
                let (frames, ack, recovered) = self.start_position(&room, req, since, already);
                self.relay.item(
                    from,
                    Item::Admitted {
                        ticket,
                        frames,
                        ack,
                        recovered,
                    },
                );
            }
            Item::Admitted {
                ticket,
                frames,
                ack,
                recovered,
            } => {
                self.count_recovery(recovered, frames.len());
                self.admitted(ticket, frames, ack);
            }
            Item::Refused { ticket, frame } => self.refused(ticket, frame, clock),
            Item::Presence { room, user, joined } => self.on_presence(&room, &user, joined),
            Item::RemotePresence { room, change } => self.on_remote_presence(&room, change),
            Item::PresenceSnapshot { room, nodes } => self.on_presence_snapshot(&room, nodes),
            Item::NodeGone { node } => self.on_node_gone(&node),
            Item::PresenceResync => self.on_presence_resync(),
            Item::Event { room, user, frame } => self.on_event(&room, &user, &frame),
            Item::PresenceQuery { room, list, reply } => self.query_presence(&room, list, reply, clock),
            Item::Query {
                room,
                limit,
                since,
                reply,
            } => self.query_history(&room, limit, since, reply, clock),
            Item::Reply { slot, conn, frame } => self.reply(slot as usize, conn, frame),
            Item::Api { slot, conn, part } => self.api_part(slot as usize, conn, part, clock),
        }
    }

    /// The owner said where a pending member starts: queue what it missed
    /// and the ack, and let it have the room's frames from now on.
    fn admitted(&mut self, ticket: u64, frames: Vec<Bytes>, ack: Option<Bytes>) {
        let Some(Admission {
            slot,
            conn,
            topic,
            left,
        }) = self.take_admission(ticket)
        else {
            return;
        };
        // A member that left meanwhile gets its join's ack, no more: the
        // join took effect, and its leave undid it.
        if !left && self.rooms.admit(slot, &topic) {
            for frame in frames {
                self.reply(slot as usize, conn, frame);
            }
        }
        if let Some(ack) = ack {
            self.reply(slot as usize, conn, ack);
        }
    }

    /// The link could not admit a pending member (Redis is unreachable):
    /// the join is undone and answered with `frame`, its error.
    fn refused(&mut self, ticket: u64, frame: Option<Bytes>, clock: Clock) {
        let Some(Admission {
            slot,
            conn,
            topic,
            left,
        }) = self.take_admission(ticket)
        else {
            return;
        };
        if !left && self.rooms.is_pending(slot, &topic) {
            self.leave(slot as usize, topic, clock);
        }
        if let Some(frame) = frame {
            self.reply(slot as usize, conn, frame);
        }
    }

    /// The pending join of `ticket`, if its connection is still there.
    fn take_admission(&mut self, ticket: u64) -> Option<Admission> {
        let a = self.admissions.remove(&ticket)?;
        // Its connection may have closed meanwhile.
        self.conns
            .get(a.slot as usize)
            .is_some_and(|c| c.id() == a.conn)
            .then_some(a)
    }

    /// A member left `topic` before the owner admitted it: the owner's
    /// answer will ack the join and admit nothing (a later join of the same
    /// room has its own ticket).
    pub(super) fn left_pending(&mut self, slot: usize, conn: u64, topic: &Topic) {
        if self.admissions.is_empty() {
            return;
        }
        for a in self.admissions.values_mut() {
            if a.slot as usize == slot && a.conn == conn && a.topic == *topic {
                a.left = true;
            }
        }
    }

    /// The sweep's share: expire streams, publish the gauges.
    pub(super) fn sweep_history(&mut self, clock: Clock) {
        if !self.env.config().rooms.any_history() {
            return;
        }
        if clock.now >= self.next_history_expiry {
            self.history.expire(clock.now);
            self.next_history_expiry = clock.now + HISTORY_EXPIRY_INTERVAL;
        }
        let (messages, bytes) = self.history.held();
        let m = &self.env.metrics;
        m.history_messages.set(messages);
        m.history_bytes.set(bytes);
        m.history_evicted.set(self.history.evicted());
    }
}

/// A member joined pending on this shard, until the owner's answer.
#[derive(Debug)]
pub(super) struct Admission {
    slot: u32,
    conn: u64,
    topic: Topic,
    /// It left before the answer came.
    left: bool,
}

/// How often expired streams are looked for (each access also checks).
const HISTORY_EXPIRY_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);
