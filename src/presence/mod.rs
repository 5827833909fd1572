//! Who is in a room: per room, each user present and how many of their
//! connections are in it. Per user, not per connection: three tabs are one
//! entry with `conns: 3`, and a user's first connection in and last one out
//! are what `joined` and `left` events report.
//!
//! Socket-free and lock-free: a room's owner shard keeps its index (the
//! shard with the room's history, by the same hash), and every other shard
//! sends it the joins and leaves of its connections in its batches. So the
//! count of a room is O(1), its list O(users listed), and a member costs
//! one hash-table entry holding a clone of the connection's user name
//! (shared with the connection, not copied).

use std::sync::Arc;

use hashbrown::HashMap;

/// The users of one room.
#[derive(Debug, Default)]
struct Room {
    /// User → connections in the room.
    users: HashMap<Arc<str>, u32>,
    /// Connections in the room, all users together.
    conns: u64,
}

/// The presence of the rooms a shard owns.
#[derive(Debug, Default)]
pub struct Index {
    rooms: HashMap<Arc<str>, Room>,
    /// Distinct users summed over rooms (a user in two rooms counts twice).
    users: u64,
}

/// What a change did to a user's presence in a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The user's first connection came in: a `joined` event.
    Joined,
    /// The user's last connection went: a `left` event.
    Left,
    /// Another connection of a user already in, or one of several out.
    Same,
}

/// A room's presence as a query sees it.
#[derive(Debug)]
pub struct Snapshot<'a> {
    /// Distinct users.
    pub count: usize,
    /// Up to the cap asked for: each user and their connections.
    pub users: Vec<(&'a str, u32)>,
    /// More users than listed.
    pub truncated: bool,
}

impl Index {
    /// An empty index.
    pub fn new() -> Index {
        Index::default()
    }

    /// A connection of `user` joined `room`.
    pub fn join(&mut self, room: &Arc<str>, user: &Arc<str>) -> Change {
        let r = match self.rooms.get_mut(&**room) {
            Some(r) => r,
            None => self.rooms.entry(room.clone()).or_default(),
        };
        r.conns += 1;
        match r.users.get_mut(&**user) {
            Some(n) => {
                *n += 1;
                Change::Same
            }
            None => {
                r.users.insert(user.clone(), 1);
                self.users += 1;
                Change::Joined
            }
        }
    }

    /// A connection of `user` left `room` (or closed). A leave the index
    /// never saw a join for changes nothing.
    pub fn leave(&mut self, room: &str, user: &str) -> Change {
        let Some(r) = self.rooms.get_mut(room) else {
            return Change::Same;
        };
        let Some(n) = r.users.get_mut(user) else {
            return Change::Same;
        };
        r.conns -= 1;
        *n -= 1;
        if *n > 0 {
            return Change::Same;
        }
        r.users.remove(user);
        self.users -= 1;
        if r.users.is_empty() {
            self.rooms.remove(room);
        }
        Change::Left
    }

    /// Distinct users of `room`: O(1).
    pub fn count(&self, room: &str) -> usize {
        self.rooms.get(room).map_or(0, |r| r.users.len())
    }

    /// `room`'s users, at most `cap` of them listed (in no order).
    pub fn snapshot(&self, room: &str, cap: usize) -> Snapshot<'_> {
        let Some(r) = self.rooms.get(room) else {
            return Snapshot {
                count: 0,
                users: Vec::new(),
                truncated: false,
            };
        };
        let users: Vec<(&str, u32)> = r.users.iter().take(cap).map(|(u, &n)| (&**u, n)).collect();
        Snapshot {
            count: r.users.len(),
            truncated: users.len() < r.users.len(),
            users,
        }
    }

    /// Distinct users summed over the rooms (the `roomcast_presence_users` gauge).
    pub fn users(&self) -> u64 {
        self.users
    }

    /// Bytes the index holds for `room`'s entries (tables, not the shared
    /// user names): what a member costs.
    #[cfg(test)]
    pub fn table_bytes(&self, room: &str) -> usize {
        self.rooms
            .get(room)
            .map_or(0, |r| r.users.allocation_size() + std::mem::size_of::<Room>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> Arc<str> {
        Arc::from(s)
    }

    #[test]
    fn presence_is_per_user_first_in_and_last_out() {
        let mut ix = Index::new();
        let (lobby, ann, bob) = (a("lobby"), a("ann"), a("bob"));
        assert_eq!(ix.join(&lobby, &ann), Change::Joined);
        assert_eq!(ix.join(&lobby, &ann), Change::Same, "a second tab");
        assert_eq!(ix.join(&lobby, &bob), Change::Joined);
        assert_eq!(ix.count("lobby"), 2);
        let mut s = ix.snapshot("lobby", 10).users;
        s.sort_unstable();
        assert_eq!(s, [("ann", 2), ("bob", 1)]);
        assert_eq!(ix.leave("lobby", "ann"), Change::Same);
        assert_eq!(ix.leave("lobby", "ann"), Change::Left);
        assert_eq!(ix.leave("lobby", "ann"), Change::Same, "a stray leave changes nothing");
        assert_eq!(ix.users(), 1);
        assert_eq!(ix.leave("lobby", "bob"), Change::Left);
        assert_eq!(
            (ix.count("lobby"), ix.users(), ix.rooms.len()),
            (0, 0, 0),
            "an empty room is freed"
        );
    }

    /// What a member costs the index: printed for `docs/benchmarks.md`
    /// (`cargo test --release --lib presence -- --nocapture`), and bounded.
    #[test]
    fn a_member_costs_a_bounded_number_of_bytes() {
        let room = a("big");
        let names: Vec<Arc<str>> = (0..100_000).map(|i| a(&format!("user-{i}"))).collect();
        let mut ix = Index::new();
        for n in &names {
            ix.join(&room, n);
        }
        let per_member = ix.table_bytes("big") as f64 / names.len() as f64;
        println!("presence: {per_member:.1} bytes per member of a 100 000-user room (table only)");
        assert!(per_member <= 48.0, "{per_member}");
        let t = std::time::Instant::now();
        let count = (0..1000).map(|_| ix.count("big")).sum::<usize>() / 1000;
        let count_ns = t.elapsed().as_nanos() as f64 / 1000.0;
        let t = std::time::Instant::now();
        let listed = ix.snapshot("big", usize::MAX).users.len();
        println!(
            "presence: count of 100 000 users {count_ns:.0} ns; full list {:.1} ms",
            t.elapsed().as_secs_f64() * 1e3
        );
        assert_eq!((count, listed), (100_000, 100_000));
    }

    #[test]
    fn lists_are_capped_and_say_so() {
        let mut ix = Index::new();
        let room = a("big");
        for i in 0..100 {
            ix.join(&room, &a(&format!("u{i}")));
        }
        let s = ix.snapshot("big", 10);
        assert_eq!((s.count, s.users.len(), s.truncated), (100, 10, true));
        let s = ix.snapshot("big", 100);
        assert_eq!((s.users.len(), s.truncated), (100, false));
        let s = ix.snapshot("nobody", 10);
        assert_eq!((s.count, s.users.len(), s.truncated), (0, 0, false));
    }
}
