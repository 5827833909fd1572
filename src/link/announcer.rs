//! This node's presence in Redis, written by the publisher thread (on its
//! connection, pipelined with everything else it sends): each change of a
//! user's connections in a room (`presence.rs`'s script, which also
//! publishes it to the other nodes), a refresh every
//! `--presence-refresh-secs` (the node's liveness key and the TTL of every
//! room hash it has users in), and a goodbye at shutdown.
//!
//! Changes are not buffered while Redis is unreachable: each is absolute
//! (a user's connections now), and after a reconnection every owner shard
//! sends all of its rooms' presence again (`Item::PresenceResync`).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::bus::PresenceDelta;
use crate::rooms::Topic;

use super::channel;
use super::presence::{encode_change, goodbye, hash_key, node_key, nodes_channel, PRESENCE_SCRIPT};

/// Changes per pipeline.
const PIPELINE: usize = 1024;

/// The node's presence writer.
#[derive(Debug)]
pub(crate) struct Announcer {
    prefix: String,
    node: Arc<str>,
    refresh: Duration,
    sha: String,
    /// Changes to write.
    changes: Vec<PresenceDelta>,
    /// Rooms this node has users in (their hashes are refreshed).
    rooms: HashSet<Arc<str>>,
    next_refresh: Instant,
}

impl Announcer {
    /// A writer for node `node`, refreshing every `refresh`.
    pub fn new(prefix: &str, node: Arc<str>, refresh: Duration) -> Announcer {
        Announcer {
            prefix: prefix.to_string(),
            node,
            refresh,
            sha: super::history::script_sha(PRESENCE_SCRIPT),
            changes: Vec::new(),
            rooms: HashSet::new(),
            next_refresh: Instant::now(),
        }
    }

    /// The script, to load on every new connection.
    pub fn script() -> &'static str {
        PRESENCE_SCRIPT
    }

    /// Changes from a shard's batch.
    pub fn push(&mut self, changes: Vec<PresenceDelta>) {
        for c in &changes {
            if c.room_empty {
                self.rooms.remove(&c.room);
            } else if !self.rooms.contains(&c.room) {
                self.rooms.insert(c.room.clone());
            }
        }
        self.changes.extend(changes);
    }

    /// Redis is unreachable: the changes are dropped (the resync after the
    /// reconnection sends them again).
    pub fn drop_changes(&mut self) {
        self.changes.clear();
    }

    /// A new connection: refresh at once.
    pub fn connected(&mut self) {
        self.next_refresh = Instant::now();
    }

    /// When the next refresh is due.
    pub fn next_refresh(&self) -> Instant {
        self.next_refresh
    }

    /// Writes the changes, and the refresh if due.
    pub fn write(&mut self, conn: &mut redis::Connection) -> redis::RedisResult<()> {
        let ttl = (self.refresh * 3).as_millis() as u64;
        while !self.changes.is_empty() {
            let n = self.changes.len().min(PIPELINE);
            let mut pipe = redis::pipe();
            for c in self.changes.drain(..n) {
                pipe.cmd("EVALSHA")
                    .arg(&self.sha)
                    .arg(1)
                    .arg(hash_key(&self.prefix, &c.room))
                    .arg(&*self.node)
                    .arg(&*c.user)
                    .arg(c.conns)
                    .arg(c.seq)
                    .arg(ttl)
                    .arg(channel(&self.prefix, &Topic::Room(c.room.clone())))
                    .arg(encode_change(&self.node, c.seq, &c.user, c.conns))
                    .ignore();
            }
            pipe.ignore_errors().query::<()>(conn)?;
        }
        let now = Instant::now();
        if now >= self.next_refresh {
            self.next_refresh = now + self.refresh;
            let mut pipe = redis::pipe();
            let alive = (self.refresh * 2).as_millis() as u64;
            pipe.cmd("SET")
                .arg(node_key(&self.prefix, &self.node))
                .arg(1)
                .arg("PX")
                .arg(alive)
                .ignore();
            for room in &self.rooms {
                pipe.cmd("PEXPIRE").arg(hash_key(&self.prefix, room)).arg(ttl).ignore();
            }
            pipe.ignore_errors().query::<()>(conn)?;
        }
        Ok(())
    }

    /// Shutdown: the node's key goes, and the other nodes hear it is gone
    /// (its rooms' fields went with its connections' last changes).
    pub fn goodbye(&mut self, conn: &mut redis::Connection) -> redis::RedisResult<()> {
        self.write(conn)?;
        let mut pipe = redis::pipe();
        pipe.cmd("DEL").arg(node_key(&self.prefix, &self.node)).ignore();
        pipe.cmd("PUBLISH")
            .arg(nodes_channel(&self.prefix))
            .arg(goodbye(&self.node))
            .ignore();
        pipe.query::<()>(conn)
    }
}
