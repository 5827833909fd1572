//! A shard's index of topics: which of its connections are members, and
//! which other shards have members (so a publish is sent only there).
//!
//! Knowledge of other shards travels in messages: when a topic gets its
//! first local member the shard announces it to every other shard and waits
//! for each to confirm before acking the join (or sending the welcome, for a
//! user topic). From then on any publish on any shard includes this shard.
//! An announcement carries a sequence number so a confirmation that arrives
//! after the topic was left and joined again is not mistaken for the new one.
//!
//! Members are stored as slot numbers in a vector per topic for a tight
//! fan-out loop; each slot remembers its position in every topic it is in,
//! so leaving is O(1) (swap-remove, then fix the moved member's position).
//!
//! Most topics are small — every connection has its user's own, usually
//! with that one member — and most connections are in a topic or two, so
//! both vectors keep their first elements inline: an idle connection costs
//! the index no allocation beyond its topic's entry (memory per connection
//! in `docs/benchmarks.md`).

use hashbrown::HashMap;
use slab::Slab;
use smallvec::SmallVec;

use super::{Topic, TopicRef};

/// Someone to answer once a topic's announcement is confirmed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waiter {
    /// Ack a join (`id` from the request, if any).
    Ack {
        /// The connection's slot.
        slot: u32,
        /// The connection's id, so a reused slot is not answered.
        conn: u64,
        /// The join request's id.
        id: Option<u64>,
    },
    /// Send the welcome frame (the user topic is ready).
    Welcome {
        /// The connection's slot.
        slot: u32,
        /// The connection's id.
        conn: u64,
    },
}

/// The outcome of a join.
#[derive(Debug, PartialEq, Eq)]
pub enum Joined {
    /// Already a member: answer now.
    Already,
    /// Added; every shard already knows: answer now.
    Ready,
    /// Added as the first local member: announce `seq` to the other shards;
    /// the waiter is answered when all confirm.
    Announce {
        /// The announcement's sequence number.
        seq: u64,
    },
    /// Added; an announcement is in flight and the waiter will be answered with it.
    Waiting,
    /// The connection is in too many topics already.
    TooMany,
}

/// The outcome of a leave.
#[derive(Debug, PartialEq, Eq)]
pub enum Left {
    /// Was not a member.
    NotMember,
    /// Removed; other local members remain.
    OthersRemain,
    /// Removed the last local member: tell the other shards. The joins
    /// still waiting for the topic's announcement to be confirmed (this
    /// connection's or others' that left before it) are answered now: they
    /// took effect, and were undone.
    LastLocal(Vec<Waiter>),
}

#[derive(Debug)]
enum Announce {
    /// No local members.
    None,
    /// Announced, waiting for confirmations (boxed: an announcement is
    /// brief, an entry lives as long as its topic).
    Pending(Box<Pending>),
    /// Every other shard knows.
    Confirmed,
}

/// An announcement in flight.
#[derive(Debug)]
struct Pending {
    seq: u64,
    /// Confirmations still to come.
    remaining: usize,
    waiters: Vec<Waiter>,
}

/// Members of a topic, the first few inline.
type Members = SmallVec<[u32; 4]>;
/// Topics of a slot, the first two inline (the user's own and a room).
type Subs = SmallVec<[Sub; 2]>;

#[derive(Debug)]
struct Entry {
    topic: Topic,
    /// Local members messages are fanned out to.
    members: Members,
    /// Local members not admitted yet (a room with history: they wait for
    /// the room's owner shard to say where they start).
    pending: u32,
    /// Bit `s` set: shard `s` has members.
    remote: u64,
    announce: Announce,
}

/// One subscription of a slot: the entry and the slot's index in its
/// members (`PENDING` while not admitted).
#[derive(Debug, Clone, Copy)]
struct Sub {
    entry: u32,
    pos: u32,
}

/// `Sub::pos` of a member not admitted yet.
const PENDING: u32 = u32::MAX;

impl Entry {
    /// Whether the shard has members of it, admitted or not.
    fn has_local(&self) -> bool {
        !self.members.is_empty() || self.pending > 0
    }
}

/// A shard's topic index.
#[derive(Debug)]
pub struct RoomIndex {
    shard: usize,
    shards: usize,
    max_per_conn: usize,
    entries: Slab<Entry>,
    by_topic: HashMap<Topic, u32>,
    /// Subscriptions of each slot, indexed by slot.
    subs: Vec<Subs>,
    next_seq: u64,
    /// Rooms this shard counts for the node: see `counted_rooms`.
    rooms: usize,
    /// Confirmations expected besides the other shards' (the Redis link's).
    extra: usize,
}

impl RoomIndex {
    /// An empty index for shard `shard` of `shards` (at most 64); a
    /// connection may be in at most `max_per_conn` topics.
    pub fn new(shard: usize, shards: usize, max_per_conn: usize) -> RoomIndex {
        assert!(shards <= 64 && shard < shards, "shard masks are 64 bits");
        RoomIndex {
            shard,
            shards,
            max_per_conn,
            entries: Slab::new(),
            by_topic: HashMap::new(),
            subs: Vec::new(),
            next_seq: 1,
            rooms: 0,
            extra: 0,
        }
    }

    /// Sets how many confirmations besides the other shards' an announcement
    /// waits for (1 with a Redis link: the subscription).
    pub fn set_extra_confirmations(&mut self, extra: usize) {
        self.extra = extra;
    }

    /// Rooms this shard counts in the node's `roomcast_rooms`: those with
    /// members here and, as far as this shard has heard, on no
    /// lower-numbered shard. Summed over shards, every room with members
    /// counts once (after the shards' interest messages have settled).
    pub fn counted_rooms(&self) -> usize {
        self.rooms
    }

    /// Whether entry `e` is one of `counted_rooms`.
    fn counts(&self, e: u32) -> bool {
        let entry = &self.entries[e as usize];
        let lower = (1u64 << self.shard) - 1;
        matches!(entry.topic, Topic::Room(_)) && entry.has_local() && entry.remote & lower == 0
    }

    /// Topics this shard tracks (local members or remote interest).
    #[cfg(test)]
    pub fn entries(&self) -> usize {
        self.entries.len()
    }

    fn entry_for(&mut self, topic: &Topic) -> u32 {
        if let Some(&e) = self.by_topic.get(topic) {
            return e;
        }
        let e = self.entries.insert(Entry {
            topic: topic.clone(),
            members: Members::new(),
            pending: 0,
            remote: 0,
            announce: Announce::None,
        }) as u32;
        self.by_topic.insert(topic.clone(), e);
        e
    }

    fn free_if_unused(&mut self, e: u32) {
        let entry = &self.entries[e as usize];
        if !entry.has_local() && entry.remote == 0 {
            let entry = self.entries.remove(e as usize);
            self.by_topic.remove(&entry.topic);
        }
    }

    /// Adds connection `slot` to `topic`; `waiter` is answered per [`Joined`].
    pub fn join(&mut self, slot: u32, topic: &Topic, waiter: Waiter) -> Joined {
        self.join_as(slot, topic, waiter, false)
    }

    /// Adds connection `slot` to `topic` without admitting it: it counts as
    /// a local member (announced, kept) but gets no message until
    /// [`RoomIndex::admit`].
    pub fn join_pending(&mut self, slot: u32, topic: &Topic, waiter: Waiter) -> Joined {
        self.join_as(slot, topic, waiter, true)
    }

    /// Admits a member that joined pending; `false` if it is not one (it
    /// left, or was admitted already).
    pub fn admit(&mut self, slot: u32, topic: &Topic) -> bool {
        let Some(&e) = self.by_topic.get(topic) else {
            return false;
        };
        let Some(sub) = self
            .subs
            .get_mut(slot as usize)
            .and_then(|subs| subs.iter_mut().find(|sub| sub.entry == e && sub.pos == PENDING))
        else {
            return false;
        };
        let entry = &mut self.entries[e as usize];
        sub.pos = entry.members.len() as u32;
        entry.members.push(slot);
        entry.pending -= 1;
        true
    }

    /// Whether `slot` joined `topic` pending and is not admitted yet.
    pub fn is_pending(&self, slot: u32, topic: &Topic) -> bool {
        let Some(&e) = self.by_topic.get(topic) else {
            return false;
        };
        self.subs
            .get(slot as usize)
            .is_some_and(|subs| subs.iter().any(|sub| sub.entry == e && sub.pos == PENDING))
    }

    fn join_as(&mut self, slot: u32, topic: &Topic, waiter: Waiter, pending: bool) -> Joined {
        let s = slot as usize;
        if self.subs.len() <= s {
            self.subs.resize_with(s + 1, Subs::new);
        }
        if let Some(&e) = self.by_topic.get(topic) {
            if self.subs[s].iter().any(|sub| sub.entry == e) {
                return Joined::Already;
            }
        }
        if self.subs[s].len() >= self.max_per_conn {
            return Joined::TooMany;
        }
        let e = self.entry_for(topic);
        let counted = self.counts(e);
        let entry = &mut self.entries[e as usize];
        let pos = if pending {
            entry.pending += 1;
            PENDING
        } else {
            entry.members.push(slot);
            entry.members.len() as u32 - 1
        };
        self.subs[s].push(Sub { entry: e, pos });
        if !counted && self.counts(e) {
            self.rooms += 1;
        }
        let entry = &mut self.entries[e as usize];
        match &mut entry.announce {
            Announce::Confirmed => Joined::Ready,
            Announce::Pending(pending) => {
                pending.waiters.push(waiter);
                Joined::Waiting
            }
            Announce::None if self.shards == 1 && self.extra == 0 => {
                entry.announce = Announce::Confirmed;
                Joined::Ready
            }
            Announce::None => {
                let seq = self.next_seq;
                self.next_seq += 1;
                entry.announce = Announce::Pending(Box::new(Pending {
                    seq,
                    remaining: self.shards - 1 + self.extra,
                    waiters: vec![waiter],
                }));
                Joined::Announce { seq }
            }
        }
    }

    /// Removes connection `slot` from `topic`.
    pub fn leave(&mut self, slot: u32, topic: &Topic) -> Left {
        let Some(&e) = self.by_topic.get(topic) else {
            return Left::NotMember;
        };
        let Some(subs) = self.subs.get_mut(slot as usize) else {
            return Left::NotMember;
        };
        let Some(i) = subs.iter().position(|sub| sub.entry == e) else {
            return Left::NotMember;
        };
        let sub = subs.swap_remove(i);
        match self.remove_member(slot, sub) {
            Some((_, waiters)) => Left::LastLocal(waiters),
            None => Left::OthersRemain,
        }
    }

    /// The rooms (not the user topic) `slot` is a member of, in no order.
    pub fn rooms_of(&self, slot: u32) -> impl Iterator<Item = &Topic> + '_ {
        self.subs
            .get(slot as usize)
            .into_iter()
            .flatten()
            .map(|sub| &self.entries[sub.entry as usize].topic)
            .filter(|topic| matches!(topic, Topic::Room(_)))
    }

    /// Removes `slot` from every topic; `on_last` gets each topic it was the
    /// last local member of, with the joins still waiting for it (see
    /// [`Left::LastLocal`]).
    pub fn leave_all(&mut self, slot: u32, mut on_last: impl FnMut(Topic, Vec<Waiter>)) {
        let Some(subs) = self.subs.get_mut(slot as usize) else {
            return;
        };
        for sub in std::mem::take(subs) {
            if let Some((topic, waiters)) = self.remove_member(slot, sub) {
                on_last(topic, waiters);
            }
        }
    }

    /// Takes `slot` out of one entry; if no local member is left, the topic
    /// and the joins that were waiting for its announcement.
    fn remove_member(&mut self, slot: u32, sub: Sub) -> Option<(Topic, Vec<Waiter>)> {
        let counted = self.counts(sub.entry);
        let entry = &mut self.entries[sub.entry as usize];
        if sub.pos == PENDING {
            entry.pending -= 1;
        } else {
            debug_assert_eq!(entry.members[sub.pos as usize], slot);
            entry.members.swap_remove(sub.pos as usize);
            if let Some(&moved) = entry.members.get(sub.pos as usize) {
                if let Some(m) = self.subs[moved as usize].iter_mut().find(|m| m.entry == sub.entry) {
                    m.pos = sub.pos;
                }
            }
        }
        if entry.has_local() {
            return None;
        }
        if counted {
            self.rooms -= 1;
        }
        let waiters = match std::mem::replace(&mut entry.announce, Announce::None) {
            Announce::Pending(pending) => pending.waiters,
            Announce::None | Announce::Confirmed => Vec::new(),
        };
        entry.members = Members::new();
        let topic = entry.topic.clone();
        self.free_if_unused(sub.entry);
        Some((topic, waiters))
    }

    /// Another shard says it has (or no longer has) members of `topic`.
    pub fn set_remote(&mut self, topic: &Topic, shard: usize, on: bool) {
        let e = self.entry_for(topic);
        let counted = self.counts(e);
        let entry = &mut self.entries[e as usize];
        if on {
            entry.remote |= 1 << shard;
        } else {
            entry.remote &= !(1 << shard);
        }
        match (counted, self.counts(e)) {
            (false, true) => self.rooms += 1,
            (true, false) => self.rooms -= 1,
            _ => {}
        }
        self.free_if_unused(e);
    }

    /// Another shard confirmed announcement `seq` of `topic`; returns the
    /// waiters to answer when it was the last confirmation.
    pub fn confirmed(&mut self, topic: &Topic, seq: u64) -> Vec<Waiter> {
        let Some(&e) = self.by_topic.get(topic) else {
            return Vec::new();
        };
        let entry = &mut self.entries[e as usize];
        if let Announce::Pending(pending) = &mut entry.announce {
            if pending.seq == seq {
                pending.remaining -= 1;
                if pending.remaining == 0 {
                    let waiters = std::mem::take(&mut pending.waiters);
                    entry.announce = Announce::Confirmed;
                    return waiters;
                }
            }
        }
        Vec::new()
    }

    /// Local member slots and the mask of other shards with members.
    #[cfg(test)]
    pub fn route(&self, topic: &Topic) -> Option<(&[u32], u64)> {
        let &e = self.by_topic.get(topic)?;
        let entry = &self.entries[e as usize];
        Some((&entry.members, entry.remote))
    }

    /// Local member slots and the mask of other shards with members, by
    /// borrowed name, with the owned topic (for batches to other shards).
    pub fn lookup(&self, topic: TopicRef<'_>) -> Option<(&Topic, &[u32], u64)> {
        let &e = self.by_topic.get(&topic)?;
        let entry = &self.entries[e as usize];
        Some((&entry.topic, &entry.members, entry.remote))
    }
}

#[cfg(test)]
#[path = "index_tests.rs"]
mod tests;
