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
//!
//! With a Redis link the index also holds what other nodes have in the
//! rooms this node has members of: each node's users with their
//! connections, as that node last said (its changes come numbered, so a
//! late or repeated one is ignored). A user is present while any node has
//! a connection of theirs; `joined` and `left` follow the merged view.

use std::sync::Arc;

use hashbrown::HashMap;

/// One user of a room.
#[derive(Debug, Default, Clone, Copy)]
struct Entry {
    /// Connections on this node.
    local: u32,
    /// Other nodes with connections of the user.
    nodes: u32,
    /// Connections on other nodes.
    remote: u32,
}

impl Entry {
    fn present(&self) -> bool {
        self.local > 0 || self.nodes > 0
    }
}

/// What another node has in a room.
#[derive(Debug, Default)]
struct Node {
    /// The last of its changes applied.
    seq: u64,
    users: HashMap<Arc<str>, u32>,
}

/// The users of one room.
#[derive(Debug, Default)]
struct Room {
    users: HashMap<Arc<str>, Entry>,
    /// Users with a connection on this node.
    local_users: u32,
    /// Other nodes' shares (with a Redis link).
    nodes: HashMap<Arc<str>, Node>,
    /// Waiting for the first snapshot of the other nodes' shares: their
    /// changes wait here, to be applied after it.
    pending: Option<Vec<Remote>>,
}

/// Other nodes' shares of a room, as Redis has them: (node, the number of
/// its last change, its users and their connections).
pub type Shares = Vec<(Arc<str>, u64, Vec<(Arc<str>, u32)>)>;

/// Another node's change, as it came.
#[derive(Debug, Clone)]
pub struct Remote {
    /// The node.
    pub node: Arc<str>,
    /// Its change number.
    pub seq: u64,
    /// Whose connections.
    pub user: Arc<str>,
    /// How many the user now has on that node.
    pub conns: u32,
}

/// The presence of the rooms a shard owns.
#[derive(Debug, Default)]
pub struct Index {
    rooms: HashMap<Arc<str>, Room>,
    /// Users with a connection on this node, summed over rooms.
    local_users: u64,
}

/// What a change did to a user's presence in a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Change {
    /// The user's first connection came in: a `joined` event.
    Joined,
    /// The user's last connection went: a `left` event.
    Left,
    /// Another connection of a user already in, or one of several out, or
    /// a change already known.
    Same,
}

/// A local join or leave: what it did, and where the room stands on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Local {
    /// What it did to the user's presence (all nodes merged).
    pub change: Change,
    /// The user's connections on this node now.
    pub conns: u32,
    /// The room had no user on this node before (a join) or has none now
    /// (a leave).
    pub edge: bool,
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

fn change(before: bool, after: bool) -> Change {
    match (before, after) {
        (false, true) => Change::Joined,
        (true, false) => Change::Left,
        _ => Change::Same,
    }
}

impl Index {
    /// An empty index.
    pub fn new() -> Index {
        Index::default()
    }

    /// A connection of `user` on this node joined `room`. With
    /// `follow_others`, a room the node had no user in waits for a
    /// snapshot of the other nodes' shares ([`Index::remote_snapshot`]).
    pub fn join(&mut self, room: &Arc<str>, user: &Arc<str>, follow_others: bool) -> Local {
        let r = match self.rooms.get_mut(&**room) {
            Some(r) => r,
            None => {
                let r = self.rooms.entry(room.clone()).or_default();
                if follow_others {
                    r.pending = Some(Vec::new());
                }
                r
            }
        };
        let edge = r.local_users == 0;
        let e = match r.users.get_mut(&**user) {
            Some(e) => e,
            None => r.users.entry(user.clone()).or_default(),
        };
        let before = e.present();
        if e.local == 0 {
            r.local_users += 1;
            self.local_users += 1;
        }
        e.local += 1;
        Local {
            change: change(before, true),
            conns: e.local,
            edge,
        }
    }

    /// A connection of `user` on this node left `room` (or closed); `None`
    /// if the index never saw it join. When the room has no user left on
    /// this node, what other nodes have in it is forgotten too (the node
    /// no longer follows the room).
    pub fn leave(&mut self, room: &str, user: &str) -> Option<Local> {
        let r = self.rooms.get_mut(room)?;
        let e = r.users.get_mut(user).filter(|e| e.local > 0)?;
        e.local -= 1;
        let conns = e.local;
        if conns == 0 {
            r.local_users -= 1;
            self.local_users -= 1;
        }
        let gone = !e.present();
        if gone {
            r.users.remove(user);
        }
        let edge = r.local_users == 0;
        if edge {
            self.rooms.remove(room);
        }
        Some(Local {
            change: if gone { Change::Left } else { Change::Same },
            conns,
            edge,
        })
    }

    /// Another node says `user` has `conns` connections in `room` as of
    /// its change `seq`. Ignored unless this node follows the room (has a
    /// user in it) and the change is newer than the last one applied; kept
    /// for later while the room waits for its first snapshot.
    pub fn remote(&mut self, room: &str, change: Remote) -> Change {
        let Some(r) = self.rooms.get_mut(room) else {
            return Change::Same;
        };
        if let Some(waiting) = &mut r.pending {
            waiting.push(change);
            return Change::Same;
        }
        apply(r, change)
    }

    /// The other nodes' shares of `room` as Redis had them (each with the
    /// number of its last change), replacing what is known of each where
    /// newer. The room's first snapshot starts its view, silently, then
    /// applies the changes that came meanwhile; a later one (after Redis
    /// was unreachable) also drops the nodes it no longer lists. Returns
    /// the users whose presence changed, for events.
    pub fn remote_snapshot(&mut self, room: &str, nodes: Shares) -> Vec<(Arc<str>, Change)> {
        let Some(r) = self.rooms.get_mut(room) else {
            return Vec::new();
        };
        let first = r.pending.is_some();
        let mut changes = Vec::new();
        if !first {
            let listed: Vec<&Arc<str>> = nodes.iter().map(|(n, _, _)| n).collect();
            let gone: Vec<Arc<str>> = r.nodes.keys().filter(|n| !listed.contains(n)).cloned().collect();
            for node in gone {
                let n = r.nodes.remove(&node).expect("listed above");
                for (user, conns) in n.users {
                    let c = set_remote(&mut r.users, &user, conns, 0);
                    changes.push((user, c));
                }
            }
        }
        for (node, seq, users) in nodes {
            let n = r.nodes.entry(node.clone()).or_default();
            if seq <= n.seq {
                continue;
            }
            n.seq = seq;
            let old = std::mem::take(&mut n.users);
            let mut news: HashMap<Arc<str>, u32> = users.into_iter().filter(|(_, c)| *c > 0).collect();
            for (user, conns) in &old {
                let new = news.remove(&**user).unwrap_or(0);
                changes.push((user.clone(), set_remote(&mut r.users, user, *conns, new)));
                if new > 0 {
                    r.nodes
                        .get_mut(&*node)
                        .expect("inserted")
                        .users
                        .insert(user.clone(), new);
                }
            }
            for (user, conns) in news {
                changes.push((user.clone(), set_remote(&mut r.users, &user, 0, conns)));
                r.nodes.get_mut(&*node).expect("inserted").users.insert(user, conns);
            }
        }
        if let Some(waiting) = r.pending.take() {
            changes.clear(); // where the view starts: no events
            for c in waiting {
                let user = c.user.clone();
                changes.push((user, apply(r, c)));
            }
        }
        changes.retain(|(_, c)| *c != Change::Same);
        changes
    }

    /// Node `node` is gone: its users leave every room; returns, per room,
    /// those no other node has.
    pub fn drop_node(&mut self, node: &str) -> Vec<(Arc<str>, Vec<Arc<str>>)> {
        let mut left = Vec::new();
        for (room, r) in self.rooms.iter_mut() {
            let Some(n) = r.nodes.remove(node) else { continue };
            let gone: Vec<Arc<str>> = n
                .users
                .into_iter()
                .filter(|(user, conns)| set_remote(&mut r.users, user, *conns, 0) == Change::Left)
                .map(|(user, _)| user)
                .collect();
            if !gone.is_empty() {
                left.push((room.clone(), gone));
            }
        }
        left
    }

    /// Distinct users of `room`, every node's: O(1).
    pub fn count(&self, room: &str) -> usize {
        self.rooms.get(room).map_or(0, |r| r.users.len())
    }

    /// Whether this node has a user in `room` (so it follows the room).
    pub fn follows(&self, room: &str) -> bool {
        self.rooms.contains_key(room)
    }

    /// `room`'s users, at most `cap` of them listed (in no order), each
    /// with their connections on every node.
    pub fn snapshot(&self, room: &str, cap: usize) -> Snapshot<'_> {
        let Some(r) = self.rooms.get(room) else {
            return Snapshot {
                count: 0,
                users: Vec::new(),
                truncated: false,
            };
        };
        let users: Vec<(&str, u32)> = r
            .users
            .iter()
            .take(cap)
            .map(|(u, e)| (&**u, e.local + e.remote))
            .collect();
        Snapshot {
            count: r.users.len(),
            truncated: users.len() < r.users.len(),
            users,
        }
    }

    /// The users this node has in each room, with their connections: what
    /// it tells Redis again after Redis lost it.
    pub fn local(&self) -> impl Iterator<Item = (&Arc<str>, &Arc<str>, u32)> {
        self.rooms.iter().flat_map(|(room, r)| {
            r.users
                .iter()
                .filter(|(_, e)| e.local > 0)
                .map(move |(user, e)| (room, user, e.local))
        })
    }

    /// Users with a connection on this node, summed over rooms (the
    /// `roomcast_presence_users` gauge).
    pub fn users(&self) -> u64 {
        self.local_users
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

/// Applies another node's change to a room, if newer than its last.
fn apply(r: &mut Room, c: Remote) -> Change {
    let n = match r.nodes.get_mut(&*c.node) {
        Some(n) => n,
        None => r.nodes.entry(c.node.clone()).or_default(),
    };
    if c.seq <= n.seq {
        return Change::Same;
    }
    n.seq = c.seq;
    let old = if c.conns == 0 {
        n.users.remove(&*c.user).unwrap_or(0)
    } else {
        n.users.insert(c.user.clone(), c.conns).unwrap_or(0)
    };
    set_remote(&mut r.users, &c.user, old, c.conns)
}

/// Moves `user`'s connections on one other node from `old` to `new`.
fn set_remote(users: &mut HashMap<Arc<str>, Entry>, user: &Arc<str>, old: u32, new: u32) -> Change {
    let e = match users.get_mut(&**user) {
        Some(e) => e,
        None if new == 0 => return Change::Same,
        None => users.entry(user.clone()).or_default(),
    };
    let before = e.present();
    e.remote = e.remote + new - old;
    match (old, new) {
        (0, n) if n > 0 => e.nodes += 1,
        (o, 0) if o > 0 => e.nodes -= 1,
        _ => {}
    }
    let after = e.present();
    if !after {
        users.remove(&**user);
    }
    change(before, after)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> Arc<str> {
        Arc::from(s)
    }

    fn remote(node: &str, seq: u64, user: &str, conns: u32) -> Remote {
        Remote {
            node: a(node),
            seq,
            user: a(user),
            conns,
        }
    }

    #[test]
    fn presence_is_per_user_first_in_and_last_out() {
        let mut ix = Index::new();
        let (lobby, ann, bob) = (a("lobby"), a("ann"), a("bob"));
        let first = ix.join(&lobby, &ann, false);
        assert_eq!((first.change, first.conns, first.edge), (Change::Joined, 1, true));
        assert_eq!(ix.join(&lobby, &ann, false).change, Change::Same, "a second tab");
        assert_eq!(ix.join(&lobby, &bob, false).change, Change::Joined);
        assert_eq!(ix.count("lobby"), 2);
        let mut s = ix.snapshot("lobby", 10).users;
        s.sort_unstable();
        assert_eq!(s, [("ann", 2), ("bob", 1)]);
        assert_eq!(ix.leave("lobby", "ann").unwrap().change, Change::Same);
        assert_eq!(ix.leave("lobby", "ann").unwrap().change, Change::Left);
        assert_eq!(ix.leave("lobby", "ann"), None, "a stray leave changes nothing");
        assert_eq!(ix.users(), 1);
        let last = ix.leave("lobby", "bob").unwrap();
        assert_eq!((last.change, last.edge), (Change::Left, true));
        assert_eq!(
            (ix.count("lobby"), ix.users(), ix.rooms.len()),
            (0, 0, 0),
            "an empty room is freed"
        );
    }

    #[test]
    fn other_nodes_merge_by_user_and_their_old_news_is_ignored() {
        let mut ix = Index::new();
        let room = a("r");
        assert_eq!(
            ix.remote("r", remote("n2", 1, "bob", 1)),
            Change::Same,
            "a room not followed"
        );
        ix.join(&room, &a("ann"), true);
        // Changes before the first snapshot wait for it.
        assert_eq!(ix.remote("r", remote("n2", 5, "bob", 2)), Change::Same);
        let first = ix.remote_snapshot(
            "r",
            vec![(a("n2"), 4, vec![(a("eve"), 1)]), (a("n3"), 7, vec![(a("bob"), 1)])],
        );
        assert_eq!(
            first,
            [],
            "the first snapshot starts the view silently; bob came meanwhile but was there already"
        );
        assert_eq!(ix.count("r"), 3);
        assert_eq!(ix.remote("r", remote("n2", 5, "bob", 0)), Change::Same, "an old change");
        assert_eq!(
            ix.remote("r", remote("n2", 6, "ann", 1)),
            Change::Same,
            "ann is here too"
        );
        assert_eq!(ix.remote("r", remote("n2", 7, "cat", 1)), Change::Joined);
        let mut s = ix.snapshot("r", 10).users;
        s.sort_unstable();
        assert_eq!(s, [("ann", 2), ("bob", 3), ("cat", 1), ("eve", 1)]);
        assert_eq!(ix.join(&room, &a("dan"), true).change, Change::Joined);
        assert_eq!(ix.leave("r", "ann").unwrap().change, Change::Same, "still on n2");
        assert_eq!(ix.remote("r", remote("n2", 8, "bob", 0)), Change::Same, "still on n3");
        // n3 dies: bob goes.
        assert_eq!(ix.drop_node("n3"), vec![(a("r"), vec![a("bob")])]);
        // A later snapshot (after an outage) says what changed: n2 lost eve.
        let mut later = ix.remote_snapshot("r", vec![(a("n2"), 9, vec![(a("ann"), 1), (a("cat"), 1)])]);
        later.sort();
        assert_eq!(later, [(a("eve"), Change::Left)]);
        assert_eq!(
            ix.remote_snapshot("r", vec![(a("n2"), 9, vec![])]),
            [],
            "not newer: ignored"
        );
        // ... and drops nodes it no longer lists.
        let mut gone = ix.remote_snapshot("r", vec![]);
        gone.sort();
        assert_eq!(gone, [(a("ann"), Change::Left), (a("cat"), Change::Left)]);
        // The last local user going: the room is no longer followed.
        assert!(ix.leave("r", "dan").unwrap().edge);
        assert!(!ix.follows("r"));
    }

    /// What a member costs the index: printed for `docs/benchmarks.md`
    /// (`cargo test --release --lib presence -- --nocapture`), and bounded.
    #[test]
    fn a_member_costs_a_bounded_number_of_bytes() {
        let room = a("big");
        let names: Vec<Arc<str>> = (0..100_000).map(|i| a(&format!("user-{i}"))).collect();
        let mut ix = Index::new();
        for n in &names {
            ix.join(&room, n, false);
        }
        let per_member = ix.table_bytes("big") as f64 / names.len() as f64;
        println!("presence: {per_member:.1} bytes per member of a 100 000-user room (table only)");
        assert!(per_member <= 56.0, "{per_member}");
        assert_eq!(ix.count("big"), 100_000);
        assert_eq!(ix.snapshot("big", usize::MAX).users.len(), 100_000);
    }

    #[test]
    fn lists_are_capped_and_say_so() {
        let mut ix = Index::new();
        let room = a("big");
        for i in 0..100 {
            ix.join(&room, &a(&format!("u{i}")), false);
        }
        let s = ix.snapshot("big", 10);
        assert_eq!((s.count, s.users.len(), s.truncated), (100, 10, true));
        let s = ix.snapshot("big", 100);
        assert_eq!((s.users.len(), s.truncated), (100, false));
        let s = ix.snapshot("nobody", 10);
        assert_eq!((s.count, s.users.len(), s.truncated), (0, 0, false));
    }
}
