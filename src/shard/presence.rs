//! Rooms that track presence: each has an owner shard (the same hash as
//! history's owner), the only one that keeps the room's `presence::Index`,
//! so no lock is needed. Every shard tells the owner, in its batches, when
//! a connection joins or leaves such a room (or closes); the owner answers
//! `presence` queries and, in rooms with `join_leave`, sends `joined` and
//! `left` events when a user's first connection comes in or its last goes.
//!
//! With a Redis link, the owner also tells Redis and the other nodes about
//! this node's changes (numbered), follows the other nodes' changes in the
//! rooms this node has users in (`presence::Index` merges them), and the
//! link reports nodes that are gone; events follow the merged view, so a
//! user who moves to another node produces none.
//!
//! An event goes to every member of the room except the connections of the
//! user it is about: the connection whose join made it (its ack says it is
//! in) is the only one that user has in the room. The owner sends a room's
//! events in the order it saw the changes, and each shard's batches keep
//! that order, so a user's `left` never overtakes its `joined`.

use std::sync::Arc;

use bytes::Bytes;

use crate::bus::{ApiPart, Encoded, Item, LinkRequest, PresenceDelta, ReplyTo};
use crate::conn::Clock;
use crate::presence::{Change, Remote};
use crate::protocol::encode;
use crate::rooms::{owner_of, Topic, TopicRef};

use super::actions::fan_out_except;
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

    /// The owner: a user's connection on this node came or went. With a
    /// Redis link the change goes to Redis and the other nodes, and a room
    /// this node starts following asks for the other nodes' shares.
    pub(super) fn on_presence(&mut self, room: &Arc<str>, user: &Arc<str>, joined: bool) {
        let link = self.relay.has_link();
        let local = if joined {
            Some(self.presence.join(room, user, link))
        } else {
            self.presence.leave(room, user)
        };
        let Some(local) = local else { return };
        if link {
            self.presence_seq += 1;
            self.relay.presence_delta(PresenceDelta {
                room: room.clone(),
                user: user.clone(),
                conns: local.conns,
                seq: self.presence_seq,
                room_empty: !joined && local.edge,
            });
            if joined && local.edge {
                let (room, owner) = (room.clone(), self.id);
                self.relay.link_request(LinkRequest::PresenceSnapshot { room, owner });
            }
        }
        if local.change != Change::Same {
            self.emit(room, user, local.change == Change::Joined);
        }
    }

    /// Another node's change, from Redis.
    pub(super) fn on_remote_presence(&mut self, room: &Arc<str>, change: Remote) {
        let user = change.user.clone();
        match self.presence.remote(room, change) {
            Change::Same => {}
            c => self.emit(room, &user, c == Change::Joined),
        }
    }

    /// The other nodes' shares of `room`, read from Redis.
    pub(super) fn on_presence_snapshot(&mut self, room: &Arc<str>, nodes: crate::presence::Shares) {
        for (user, c) in self.presence.remote_snapshot(room, nodes) {
            self.emit(room, &user, c == Change::Joined);
        }
    }

    /// Node `node` is gone: its users leave.
    pub(super) fn on_node_gone(&mut self, node: &str) {
        for (room, users) in self.presence.drop_node(node) {
            for user in users {
                self.emit(&room, &user, false);
            }
        }
    }

    /// Redis may have lost this node's presence: tell it all again, and
    /// read the other nodes' shares of every room followed again.
    pub(super) fn on_presence_resync(&mut self) {
        let local: Vec<(Arc<str>, Arc<str>, u32)> = self
            .presence
            .local()
            .map(|(r, u, n)| (r.clone(), u.clone(), n))
            .collect();
        let mut rooms: Vec<Arc<str>> = Vec::new();
        for (room, user, conns) in local {
            self.presence_seq += 1;
            // `local()` gives each room's users together.
            if rooms.last() != Some(&room) {
                rooms.push(room.clone());
            }
            let seq = self.presence_seq;
            self.relay.presence_delta(PresenceDelta {
                room,
                user,
                conns,
                seq,
                room_empty: false,
            });
        }
        for room in rooms {
            let owner = self.id;
            self.relay.link_request(LinkRequest::PresenceSnapshot { room, owner });
        }
    }

    /// A `joined` or `left` event about `user`, in a room with `join_leave`:
    /// to this shard's members and, as an item, to every other shard with
    /// members, none of them the user's own connections.
    fn emit(&mut self, room: &Arc<str>, user: &Arc<str>, joined: bool) {
        if !self.env.config().rooms.options(room).join_leave {
            return;
        }
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
        let own = |c: &crate::conn::Conn| c.user().is_some_and(|u| &**u == user);
        let mut frame = Encoded::new(frame.clone());
        let skipped = fan_out_except(&mut self.conns, &mut self.pending, members, &mut frame, cap, own);
        self.env.metrics.deliveries.add(members.len() as u64 - skipped);
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
        if self.relay.has_link() && !self.presence.follows(room) {
            // No user here: the node does not follow the room; Redis knows.
            let (room, cap) = (Arc::from(room), self.env.config().presence_max_users);
            let cap = if list { cap } else { 0 };
            self.relay
                .link_request(LinkRequest::PresenceQuery { room, list, cap, reply });
            return;
        }
        let id = if reply.api { None } else { reply.req };
        let frame = if list {
            let snapshot = self.presence.snapshot(room, self.env.config().presence_max_users);
            encode::presence(id, room, snapshot.count, Some(&snapshot.users), snapshot.truncated)
        } else {
            encode::presence(id, room, self.presence.count(room), None, false)
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
