//! Rooms and users as fan-out topics: naming rules and each shard's index
//! of who is subscribed where.

pub(crate) mod index;

use std::hash::{Hash, Hasher};
use std::sync::Arc;

pub(crate) use index::{Joined, Left, RoomIndex, Waiter};

/// The longest room name, in bytes.
pub const MAX_ROOM_BYTES: usize = 128;

/// Something messages are fanned out to: a room, or all connections of a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Topic {
    /// A named room.
    Room(Arc<str>),
    /// Every connection of one user (for `send`).
    User(Arc<str>),
}

impl Topic {
    /// The room's or user's name.
    pub fn name(&self) -> &str {
        match self {
            Topic::Room(n) | Topic::User(n) => n,
        }
    }

    /// The borrowed form, for lookups.
    pub fn as_ref(&self) -> TopicRef<'_> {
        match self {
            Topic::Room(n) => TopicRef::Room(n),
            Topic::User(n) => TopicRef::User(n),
        }
    }
}

/// A topic by borrowed name: looks up a [`Topic`] without allocating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicRef<'a> {
    /// A room name.
    Room(&'a str),
    /// A user id.
    User(&'a str),
}

impl TopicRef<'_> {
    /// The owned form (allocates).
    pub fn to_topic(self) -> Topic {
        match self {
            TopicRef::Room(n) => Topic::Room(Arc::from(n)),
            TopicRef::User(n) => Topic::User(Arc::from(n)),
        }
    }

    fn kind(&self) -> u8 {
        match self {
            TopicRef::Room(_) => 0,
            TopicRef::User(_) => 1,
        }
    }

    fn name(&self) -> &str {
        match self {
            TopicRef::Room(n) | TopicRef::User(n) => n,
        }
    }
}

// Both forms hash identically, so a `TopicRef` finds its `Topic` in a map.
impl Hash for TopicRef<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u8(self.kind());
        self.name().hash(state);
    }
}

impl Hash for Topic {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_ref().hash(state);
    }
}

impl hashbrown::Equivalent<Topic> for TopicRef<'_> {
    fn equivalent(&self, key: &Topic) -> bool {
        *self == key.as_ref()
    }
}

/// The shard that owns `room` (its history and its presence): the same on
/// every shard and every thread, for the life of the process.
pub fn owner_of(room: &str, shards: usize) -> usize {
    use std::hash::{Hash, Hasher};
    // SipHash with fixed keys: deterministic, and spreads rooms evenly.
    #[allow(deprecated)]
    let mut h = std::hash::SipHasher::new();
    room.hash(&mut h);
    (h.finish() % shards as u64) as usize
}

/// Whether `name` is a valid room name: 1–128 bytes of UTF-8 with no
/// control characters (U+0000–U+001F, U+007F–U+009F).
pub fn valid_room(name: &str) -> bool {
    // Printable ASCII, the usual case, has no control character; other
    // bytes need decoding (C1 controls are two-byte sequences).
    let printable = |b: &u8| (0x20..0x7F).contains(b);
    !name.is_empty()
        && name.len() <= MAX_ROOM_BYTES
        && (name.as_bytes().iter().all(printable) || !name.chars().any(char::is_control))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_room_has_one_owner_spread_over_the_shards() {
        let mut per_shard = [0; 4];
        for i in 0..4000 {
            let room = format!("room-{i}");
            let owner = owner_of(&room, 4);
            assert_eq!(owner, owner_of(&room, 4), "stable");
            per_shard[owner] += 1;
        }
        assert!(per_shard.iter().all(|&n| n > 800), "{per_shard:?}");
    }

    #[test]
    fn room_names_follow_the_rules() {
        for ok in ["a", "lobby", "game-42", "über ☃", &"x".repeat(128)] {
            assert!(valid_room(ok), "{ok}");
        }
        for bad in ["", "a\nb", "tab\t", "nul\0", "del\u{7f}", "c1\u{85}", &"x".repeat(129)] {
            assert!(!valid_room(bad), "{bad:?}");
        }
    }
}
