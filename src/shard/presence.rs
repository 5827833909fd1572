//! Rooms that track presence: each has an owner shard (the same hash as
//! history's owner), the only one that keeps the room's `presence::Index`,
//! so no lock is needed. Every shard tells the owner, in its batches, when
//! a connection joins or leaves such a room (or closes); the owner answers
//! `presence` queries and, in rooms with `join_leave`, sends `joined` and
//! `left` events when a user's first connection comes in or its last goes.
//!
//! An event goes to every member of the room except the connections of the
//! user it is about: the connection whose join made it (its ack says it is
//! in) is the only one that user has in the room. The owner sends a room's
//! events in the order it saw the changes, and each shard's batches keep
//! that order, so a user's `left` never overtakes its `joined`.

use std::sync::Arc;

use bytes::Bytes;

use crate::bus::{ApiPart, Item, ReplyTo};
use crate::conn::Clock;
use crate::presence::Change;
use crate::protocol::encode;
use crate::rooms::{Topic, TopicRef};

use super::history::owner_of;
use super::Shard;

impl Shard {
    /// A connection of this shard joined (`joined`) or left `room`: tell
    /// the room's owner, if the room tracks presence.
    pub(super) fn presence_changed(&mut self, room: &Arc<str>, user: &Arc<str>, joined: bool) {
        if !self.env.config().rooms.tracks_presence(room) {
            return;
        }
        let owner = owner_of(room, self.env.shards);
        if owner != self.id {
            let (room, user) = (room.clone(), user.clone());
            self.relay.item(owner, Item::Presence { room, user, joined });
            return;
        }
        self.on_presence(room, user, joined);
    }

    /// Connection `(slot, conn)` of this shard joined `room`.
    pub(super) fn joined_presence(&mut self, slot: usize, conn: u64, room: &Arc<str>) {
        if let Some(user) = self
            .conns
            .get(slot)
            .filter(|c| c.id() == conn)
            .and_then(|c| c.user().cloned())
        {
            self.presence_changed(room, &user, true);
        }
    }

    /// The owner: a user's connection came or went.
    pub(super) fn on_presence(&mut self, room: &Arc<str>, user: &Arc<str>, joined: bool) {
        let change = if joined {
            self.presence.join(room, user)
        } else {
            self.presence.leave(room, user)
        };
        if change == Change::Same || !self.env.config().rooms.options(room).join_leave {
            return;
        }
        let joined = change == Change::Joined;
        let m = &self.env.metrics;
        if joined {
            m.joined_events.add(1);
        } else {
            m.left_events.add(1);
        }
        let frame = encode::presence_event(joined, room, user);
        let topic = TopicRef::Room(room);
        let Some((_, _, remote)) = self.rooms.lookup(topic) else {
            return;
        };
        for s in crate::bus::post::shards_in(remote & !(1 << self.id)) {
            let (room, user, frame) = (room.clone(), user.clone(), frame.clone());
            self.relay.item(s, Item::Event { room, user, frame });
        }
        self.on_event(room, user, &frame);
    }

    /// An event for this shard's members of `room`, except `user`'s.
    pub(super) fn on_event(&mut self, room: &str, user: &str, frame: &Bytes) {
        let Some((_, members, _)) = self.rooms.lookup(TopicRef::Room(room)) else {
            return;
        };
        let cap = self.env.config().max_queue_bytes;
        let (at, len) = (self.pending.frames.push(frame), frame.len());
        let mut sent = 0;
        for &slot in members {
            let slot = slot as usize;
            let Some(conn) = self.conns.get_mut(slot) else { continue };
            if conn.user().is_some_and(|u| &**u == user) {
                continue;
            }
            sent += 1;
            if !conn.push_foreign(at, len, cap) {
                self.pending.kill.push((slot, conn.id()));
            } else if conn.mark_dirty() {
                self.pending.dirty.push((slot, conn.id()));
            }
        }
        self.env.metrics.deliveries.add(sent);
    }

    /// A `presence` query from a connection of this shard (or the API).
    pub(super) fn query_presence(&mut self, room: &str, list: bool, reply: ReplyTo, clock: Clock) {
        let owner = owner_of(room, self.env.shards);
        if owner != self.id {
            let room = Arc::from(room);
            self.relay.item(owner, Item::PresenceQuery { room, list, reply });
            return;
        }
        self.env.metrics.presence_queries.add(1);
        let id = if reply.api { None } else { reply.req };
        let frame = if list {
            let snapshot = self.presence.snapshot(room, self.env.config().presence_max_users);
            let users = Some(snapshot.users.iter().copied());
            encode::presence(id, room, snapshot.count, users, snapshot.truncated)
        } else {
            let none: Option<std::iter::Empty<(&str, u32)>> = None;
            encode::presence(id, room, self.presence.count(room), none, false)
        };
        if reply.api {
            self.answer_api(reply, ApiPart::Object(frame), clock);
        } else {
            self.answer_to(reply, frame);
        }
    }

    /// Connection `slot` of `user` is leaving every room (it closed): its
    /// presence goes with it. Called before the rooms forget it.
    pub(super) fn presence_closing(&mut self, slot: usize, user: Option<&Arc<str>>) {
        let Some(user) = user else { return };
        if !self.env.config().rooms.any_presence() {
            return;
        }
        let rooms: Vec<Arc<str>> = self
            .rooms
            .rooms_of(slot as u32)
            .filter_map(|t| match t {
                Topic::Room(r) => Some(r.clone()),
                Topic::User(_) => None,
            })
            .collect();
        for room in rooms {
            self.presence_changed(&room, user, false);
        }
    }

    /// The sweep's share: the gauge.
    pub(super) fn sweep_presence(&mut self) {
        self.env.metrics.presence_users.set(self.presence.users());
    }
}
