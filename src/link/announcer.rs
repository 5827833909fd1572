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

use redis::Cmd;

use crate::bus::PresenceDelta;
use crate::rooms::Topic;

use super::masters::OnMoved;
use super::presence::{encode_change, goodbye, hash_key, node_key, nodes_channel};
use super::target::{fate, Fate, Target};
use super::{channel, slot};

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
    /// A writer for node `node`, refreshing every `refresh`, with the
    /// presence script `script` (loaded on every connection).
    pub fn new(prefix: &str, node: Arc<str>, refresh: Duration, script: &str) -> Announcer {
        Announcer {
            prefix: prefix.to_string(),
            node,
            refresh,
            sha: super::history::script_sha(script),
            changes: Vec::new(),
            rooms: HashSet::new(),
            next_refresh: Instant::now(),
        }
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

    /// Writes the changes, and the refresh if due; `Err` if the
    /// connection (or a master's) failed.
    pub fn write(&mut self, target: &mut Target, scripts: &[String]) -> redis::RedisResult<()> {
        let ttl = (self.refresh * 3).as_millis() as u64;
        while !self.changes.is_empty() {
            let n = self.changes.len().min(PIPELINE);
            let mut cmds: Vec<(u16, Cmd)> = Vec::with_capacity(n);
            for c in self.changes.drain(..n) {
                let key = hash_key(&self.prefix, &c.room);
                let mut cmd = redis::cmd("EVALSHA");
                cmd.arg(&self.sha)
                    .arg(1)
                    .arg(&key)
                    .arg(&*self.node)
                    .arg(&*c.user)
                    .arg(c.conns)
                    .arg(c.seq)
                    .arg(ttl)
                    .arg(channel(&self.prefix, &Topic::Room(c.room.clone())))
                    .arg(encode_change(&self.node, c.seq, &c.user, c.conns));
                cmds.push((slot::of(&key), cmd));
            }
            settle(target.run(&cmds, OnMoved::Follow, scripts))?;
        }
        let now = Instant::now();
        if now >= self.next_refresh {
            self.next_refresh = now + self.refresh;
            let alive = (self.refresh * 2).as_millis() as u64;
            let key = node_key(&self.prefix, &self.node);
            let mut set = redis::cmd("SET");
            set.arg(&key).arg(1).arg("PX").arg(alive);
            let mut cmds = vec![(slot::of(&key), set)];
            for room in &self.rooms {
                let key = hash_key(&self.prefix, room);
                let mut cmd = redis::cmd("PEXPIRE");
                cmd.arg(&key).arg(ttl);
                cmds.push((slot::of(&key), cmd));
            }
            settle(target.run(&cmds, OnMoved::Follow, scripts))?;
        }
        Ok(())
    }

    /// Shutdown: the node's key goes, and the other nodes hear it is gone
    /// (its rooms' fields went with its connections' last changes).
    pub fn goodbye(&mut self, target: &mut Target, scripts: &[String]) -> redis::RedisResult<()> {
        self.write(target, scripts)?;
        let key = node_key(&self.prefix, &self.node);
        let mut del = redis::cmd("DEL");
        del.arg(&key);
        let cmds = [
            (slot::of(&key), del),
            target.publish(&nodes_channel(&self.prefix), &goodbye(&self.node)),
        ];
        settle(target.run(&cmds, OnMoved::Follow, scripts))
    }
}

/// `Err` if a command's connection failed (the rest is at most once:
/// presence changes are absolute, and resent after a reconnection).
fn settle(results: Vec<redis::RedisResult<redis::Value>>) -> redis::RedisResult<()> {
    for r in results {
        match fate(&r) {
            Fate::Lost => return r.map(drop),
            Fate::Refused | Fate::Wait => {
                tracing::warn!(error = ?r.err(), "redis link: a presence write was refused");
            }
            Fate::Done => {}
        }
    }
    Ok(())
}
