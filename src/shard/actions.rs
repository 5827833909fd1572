//! Applying what connections asked for: replies, joins and leaves (with the
//! cross-shard announcement protocol of `rooms::registry`), and fan-out.
//!
//! The fan-out loop is the hot path: the frame joins the turn's log once,
//! then per recipient one index is pushed onto its outbox and the
//! recipient is marked for this turn's flush. No lock, no allocation and no
//! reference count per recipient.

use bytes::Bytes;

use crate::bus::{Encoded, ReplyTo, ShardMsg};
use crate::conn::turn::TurnIndex;
use crate::conn::{Action, Clock, Conn, Ctx, JoinAt};
use crate::protocol::{encode, ErrorCode, OpError};
use crate::rooms::{Joined, Left, Topic, TopicRef, Waiter};

use super::{Pending, Shard};

impl Shard {
    /// Applies the actions connection `slot` queued, in order, including any
    /// that applying them produces (a welcome replays held input).
    pub(super) fn apply_actions(&mut self, slot: usize, clock: Clock) {
        let Some(id) = self.conns.get(slot).map(Conn::id) else {
            self.work.actions.clear();
            return;
        };
        while !self.work.actions.is_empty() {
            let spare = std::mem::take(&mut self.work.applying);
            let mut actions = std::mem::replace(&mut self.work.actions, spare);
            for action in actions.drain(..) {
                self.apply(slot, id, action, clock);
            }
            self.work.applying = actions;
        }
    }

    fn conn(&mut self, slot: usize, id: u64) -> Option<&mut Conn> {
        self.conns.get_mut(slot).filter(|c| c.id() == id)
    }

    /// Queues a frame to the connection itself.
    pub(super) fn reply(&mut self, slot: usize, id: u64, frame: Bytes) {
        let Some(conn) = self.conn(slot, id) else { return };
        conn.push_reply(frame);
        if conn.mark_dirty() {
            self.pending.dirty.push((slot, id));
        }
    }

    fn apply(&mut self, slot: usize, id: u64, action: Action, clock: Clock) {
        match action {
            Action::Reply(frame) => self.reply(slot, id, frame),
            Action::Register => {
                let Some(user) = self.conn(slot, id).and_then(|c| c.user().cloned()) else {
                    return;
                };
                let topic = Topic::User(user);
                match self.rooms.join(
                    slot as u32,
                    &topic,
                    Waiter::Welcome {
                        slot: slot as u32,
                        conn: id,
                    },
                ) {
                    Joined::Already | Joined::Ready => self.answer(
                        Waiter::Welcome {
                            slot: slot as u32,
                            conn: id,
                        },
                        clock,
                    ),
                    Joined::Announce { seq } => self.announce(topic, seq),
                    Joined::Waiting | Joined::TooMany => {}
                }
            }
            Action::Join { topic, id: req, at } if at != JoinAt::Plain => {
                self.join_numbered(slot, id, topic, req, at);
            }
            Action::Join { topic, id: req, .. } => {
                let waiter = Waiter::Ack {
                    slot: slot as u32,
                    conn: id,
                    id: req,
                };
                let joined = self.rooms.join(slot as u32, &topic, waiter);
                if let (Topic::Room(room), Joined::Ready | Joined::Announce { .. } | Joined::Waiting) =
                    (&topic, &joined)
                {
                    let room = room.clone();
                    self.joined_presence(slot, id, &room);
                }
                match joined {
                    Joined::Already | Joined::Ready => self.answer(waiter, clock),
                    Joined::Announce { seq } => self.announce(topic, seq),
                    Joined::Waiting => {}
                    Joined::TooMany => {
                        let e = OpError::new(req, ErrorCode::TooLarge, "too many rooms on this connection");
                        self.reply(slot, id, encode::error(&e));
                    }
                }
            }
            Action::Leave { topic, id: req } => {
                self.left_pending(slot, id, &topic);
                self.leave(slot, topic, clock);
                if let Some(req) = req {
                    self.reply(slot, id, encode::ack(req));
                }
            }
            Action::Recheck { id: req } => {
                let Some(conn) = self.conns.get(slot).filter(|c| c.id() == id) else {
                    return;
                };
                let revoked: Vec<Topic> = self
                    .rooms
                    .rooms_of(slot as u32)
                    .filter(|topic| !conn.may_join(topic.name()))
                    .cloned()
                    .collect();
                for topic in revoked {
                    self.left_pending(slot, id, &topic);
                    self.reply(slot, id, encode::unsubscribed(topic.name(), ErrorCode::Forbidden));
                    self.leave(slot, topic, clock);
                }
                if let Some(req) = req {
                    self.reply(slot, id, encode::ack(req));
                }
            }
            Action::Publish {
                user,
                name,
                frame,
                id: req,
            } => {
                let names = std::mem::take(&mut self.work.names);
                let topic = if user {
                    TopicRef::User(&names[name])
                } else {
                    TopicRef::Room(&names[name])
                };
                self.publish(topic, &frame);
                self.work.names = names;
                if let Some(req) = req {
                    self.reply(slot, id, encode::ack(req));
                }
            }
            Action::PublishNumbered {
                name,
                draft,
                id: req,
                api,
            } => {
                let names = std::mem::take(&mut self.work.names);
                let reply = self.reply_to(slot, id, req, api);
                self.publish_numbered(&names[name], draft, reply, clock);
                self.work.names = names;
            }
            Action::History {
                name,
                limit,
                since,
                id: req,
                api,
            } => {
                let names = std::mem::take(&mut self.work.names);
                let reply = self.reply_to(slot, id, req, api);
                self.query_history(&names[name], limit, since, reply, clock);
                self.work.names = names;
            }
            Action::Presence {
                name,
                list,
                id: req,
                api,
            } => {
                let names = std::mem::take(&mut self.work.names);
                let reply = self.reply_to(slot, id, req, api);
                self.query_presence(&names[name], list, reply, clock);
                self.work.names = names;
            }
            Action::Close { code, reason } => {
                let Some(conn) = self.conns.get_mut(slot).filter(|c| c.id() == id) else {
                    return;
                };
                conn.close_with(
                    &Ctx::new(&self.env, &mut self.work, &self.pending.frames, clock),
                    code,
                    reason,
                );
                if conn.mark_dirty() {
                    self.pending.dirty.push((slot, id));
                }
            }
        }
    }

    /// Takes connection `slot` out of `topic`; if it was the last local
    /// member, answers the joins still waiting and tells the other shards.
    pub(super) fn leave(&mut self, slot: usize, topic: Topic, clock: Clock) {
        let left = self.rooms.leave(slot as u32, &topic);
        if let (Topic::Room(room), Left::LastLocal(_) | Left::OthersRemain) = (&topic, &left) {
            if let Some(user) = self.conns.get(slot).and_then(|c| c.user().cloned()) {
                self.presence_changed(room, &user, false);
            }
        }
        if let Left::LastLocal(unanswered) = left {
            self.last_left(topic, unanswered, clock);
        }
    }

    /// The last local member of `topic` is gone: the joins still waiting
    /// for its announcement are acked first (they took effect, and a leave
    /// undid them), then the other shards are told.
    pub(super) fn last_left(&mut self, topic: Topic, unanswered: Vec<Waiter>, clock: Clock) {
        for waiter in unanswered {
            self.answer(waiter, clock);
        }
        self.renounce(topic);
    }

    /// Where the answer to request `req` of connection `(slot, conn)` goes.
    fn reply_to(&self, slot: usize, conn: u64, req: Option<u64>, api: bool) -> ReplyTo {
        ReplyTo {
            shard: self.id,
            slot: slot as u32,
            conn,
            req,
            api,
        }
    }

    /// Tells every other shard that this one now has members of `topic`.
    pub(super) fn announce(&mut self, topic: Topic, seq: u64) {
        let me = self.id;
        self.relay.control_all(|| ShardMsg::Interest {
            topic: topic.clone(),
            from: me,
            on: true,
            seq,
        });
        self.relay.link_interest(topic, true, seq);
    }

    /// Tells every other shard (and the link) that this one has no member left.
    fn renounce(&mut self, topic: Topic) {
        let me = self.id;
        self.relay.control_all(|| ShardMsg::Interest {
            topic: topic.clone(),
            from: me,
            on: false,
            seq: 0,
        });
        self.relay.link_interest(topic, false, 0);
    }

    /// Answers a join or a registration whose topic is ready everywhere.
    pub(super) fn answer(&mut self, waiter: Waiter, clock: Clock) {
        match waiter {
            Waiter::Ack {
                slot,
                conn,
                id: Some(req),
            } => self.reply(slot as usize, conn, encode::ack(req)),
            Waiter::Ack { id: None, .. } => {}
            Waiter::Welcome { slot, conn } => {
                let slot = slot as usize;
                let Some(c) = self.conns.get_mut(slot).filter(|c| c.id() == conn) else {
                    return;
                };
                let verdict = c.welcome(&mut Ctx::new(&self.env, &mut self.work, &self.pending.frames, clock));
                if c.mark_dirty() {
                    self.pending.dirty.push((slot, conn));
                }
                // The welcome may have replayed held input into new actions.
                self.apply_actions(slot, clock);
                self.settle(slot, conn, verdict, clock);
            }
        }
    }

    /// Delivers `frame` to local members of `topic` and queues it for the
    /// other shards that have members.
    pub(super) fn publish(&mut self, topic: TopicRef<'_>, frame: &Bytes) {
        let Some((owned, members, remote)) = self.rooms.lookup(topic) else {
            // No member on this node; other nodes may have some.
            if self.relay.has_link() {
                self.relay.publish_to_link(&topic.to_topic(), frame);
            }
            return;
        };
        let cap = self.env.config().max_queue_bytes;
        let mut encoded = Encoded::new(frame.clone());
        if remote != 0 && self.env.config().compression {
            // Once here, rather than once on each shard with a member that
            // negotiated compression.
            encoded.twin(&mut self.pending.deflater);
        }
        fan_out(&mut self.conns, &mut self.pending, members, &mut encoded, cap);
        self.env.metrics.deliveries.add(members.len() as u64);
        if remote != 0 {
            self.relay.fan_out(remote, owned, &encoded);
        }
        self.relay.publish_to_link(owned, frame);
    }

    /// Delivers a frame another shard sent to local members of `topic`.
    pub(super) fn fan_out_local(&mut self, topic: &Topic, frame: &mut Encoded) {
        let Some((_, members, _)) = self.rooms.lookup(topic.as_ref()) else {
            return;
        };
        let cap = self.env.config().max_queue_bytes;
        fan_out(&mut self.conns, &mut self.pending, members, frame, cap);
        self.env.metrics.deliveries.add(members.len() as u64);
    }
}

/// The fan-out loop: the frame joins this turn's log once, then each member
/// gets one queue push of its index (no reference count: see `conn::turn`).
#[inline]
pub(super) fn fan_out<S: crate::conn::Transport>(
    conns: &mut slab::Slab<Conn<S>>,
    pending: &mut Pending,
    members: &[u32],
    frame: &mut Encoded,
    cap: usize,
) {
    fan_out_except(conns, pending, members, frame, cap, |_| false);
}

/// [`fan_out`] to the members `skip` does not name (a presence event is
/// not sent to the connections of the user it is about); returns how many
/// were skipped. With `|_| false` it is `fan_out` exactly: the check
/// compiles away.
#[inline]
pub(super) fn fan_out_except<S: crate::conn::Transport>(
    conns: &mut slab::Slab<Conn<S>>,
    pending: &mut Pending,
    members: &[u32],
    frame: &mut Encoded,
    cap: usize,
    skip: impl Fn(&Conn<S>) -> bool,
) -> u64 {
    let (at, len) = (pending.frames.push(&frame.plain), frame.plain.len());
    // The compressed twin's place in the turn's log, once a member wants it.
    let mut twin: Option<(TurnIndex, usize)> = None;
    let mut skipped = 0;
    for &slot in members {
        let slot = slot as usize;
        let Some(conn) = conns.get_mut(slot) else { continue };
        if skip(conn) {
            skipped += 1;
            continue;
        }
        let (at, len) = match conn.deflate() {
            Some(agreement) if agreement.reads(len) => match twin {
                Some(t) => {
                    pending.compressed += 1;
                    t
                }
                None => match frame.twin(&mut pending.deflater) {
                    Some(z) => {
                        pending.compressed += 1;
                        *twin.insert((pending.frames.push(z), z.len()))
                    }
                    None => (at, len),
                },
            },
            _ => (at, len),
        };
        if !conn.push_foreign(at, len, cap) {
            pending.kill.push((slot, conn.id()));
        } else if conn.mark_dirty() {
            pending.dirty.push((slot, conn.id()));
        }
    }
    skipped
}
