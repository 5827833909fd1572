//! Commands for a Redis Cluster, each sent to the master of its slot: one
//! blocking connection per master, one pipeline per master per call, in
//! order within each slot (so a room's publishes stay in order).
//!
//! When the map is stale a master answers `MOVED`: the map is asked for
//! again and that command, with the later ones of its slot, goes to the
//! new master (a slot's later commands were redirected too, so the order
//! holds). `ASK` (a slot half-way through a migration) sends that one
//! command to the importing node after `ASKING`. A master that cannot be
//! reached costs its connection; the map is asked for again (its replica
//! may have taken over) and the commands it had are answered with the
//! error: the caller decides whether to send them again (at least once)
//! or to refuse them. Until `RETRY_DOWN` has passed (or the map has
//! changed), a master that could not be reached is not tried again: its
//! commands fail at once instead of each waiting for a connect timeout,
//! so the other masters' traffic does not wait for a dead one; meanwhile
//! the map is asked for every `REFRESH_WHILE_DOWN` (from the node that
//! answered last), so a promoted replica is found at once.
//!
//! Runs on the link's publisher thread, never on a shard.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use redis::{Cmd, RedisResult, Value};

use super::slot_map::{NodeAddr, Redirect};
use super::topology::Topology;

/// How long a connect, read or write to a master may take.
const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// Redirections followed for one command before giving up: a slot moving
/// again and again, or nodes that disagree.
const MAX_REDIRECTS: usize = 5;
/// How long a master that could not be reached is not tried again.
const RETRY_DOWN: Duration = Duration::from_secs(2);
/// While a master is down, how often the map is asked for.
const REFRESH_WHILE_DOWN: Duration = Duration::from_millis(250);

/// One connection per master, and the cluster's map.
pub struct Masters {
    topology: Topology,
    conns: HashMap<NodeAddr, redis::Connection>,
    /// Masters that could not be reached, not tried again before then.
    down: HashMap<NodeAddr, Instant>,
    /// While some master is down: when to ask for the map again.
    next_poll: Instant,
    /// Times the map was asked for again.
    refreshes: u64,
}

impl std::fmt::Debug for Masters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Masters")
            .field("topology", &self.topology)
            .field("connected", &self.conns.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// What `run` does with a `MOVED` answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnMoved {
    /// Send the command again to the slot's new master.
    Follow,
    /// Answer it with the `MOVED` error (the map is learnt again all the
    /// same), and an `ASK` (a slot half-way through a migration) with its
    /// error too: the caller holds it until the slot's subscribers have
    /// moved (a script run on the importing node would publish to its
    /// subscribers, who are still on the old one).
    Return,
}

/// Where a command stands during `run`.
enum Step {
    /// To send to the master of its slot.
    Route,
    /// To send once to this node, after `ASKING`.
    Ask(NodeAddr),
    Done(RedisResult<Value>),
}

impl Masters {
    /// Learns the map now; `Err` names why no node could give it.
    pub fn connect(mut topology: Topology) -> Result<Masters, String> {
        topology.refresh()?;
        Ok(Masters {
            topology,
            conns: HashMap::new(),
            down: HashMap::new(),
            next_poll: Instant::now(),
            refreshes: 0,
        })
    }

    /// The cluster's map as last learnt.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// Times the map was asked for again since `connect`.
    pub fn refreshes(&self) -> u64 {
        self.refreshes
    }

    /// Runs `cmds` (each with its key's slot); one reply per command, in
    /// the same order. Commands of one slot reach Redis in the order given.
    pub fn run(&mut self, cmds: &[(u16, Cmd)], on_moved: OnMoved) -> Vec<RedisResult<Value>> {
        if !self.down.is_empty() && Instant::now() >= self.next_poll {
            // Has another node taken over the slots of a master that is down?
            self.next_poll = Instant::now() + REFRESH_WHILE_DOWN;
            let _ = self.refresh();
        }
        let mut steps: Vec<Step> = cmds.iter().map(|_| Step::Route).collect();
        let mut redirects = vec![0usize; cmds.len()];
        loop {
            // Group what is left by destination, keeping input order.
            let mut groups: Vec<(NodeAddr, bool, Vec<usize>)> = Vec::new();
            for (i, step) in steps.iter_mut().enumerate() {
                let (to, asking) = match step {
                    Step::Done(_) => continue,
                    Step::Ask(to) => (to.clone(), true),
                    Step::Route => match self.topology.map().master(cmds[i].0) {
                        Some(node) => (node.addr.clone(), false),
                        None => {
                            *step = Step::Done(Err(no_master(cmds[i].0)));
                            continue;
                        }
                    },
                };
                match groups.iter_mut().find(|(addr, a, _)| *addr == to && *a == asking) {
                    Some((_, _, members)) => members.push(i),
                    None => groups.push((to, asking, vec![i])),
                }
            }
            if groups.is_empty() {
                break;
            }
            let mut refresh = false;
            for (to, asking, members) in groups {
                if self.down.get(&to).is_some_and(|until| Instant::now() < *until) {
                    for &i in &members {
                        steps[i] = Step::Done(Err(down(&to)));
                    }
                    continue;
                }
                let replies = self.send(&to, asking, members.iter().map(|&i| &cmds[i].1));
                match replies {
                    Err(e) => {
                        // Unreachable, or lost mid-pipeline: these commands'
                        // fate is unknown. The map is asked for again for
                        // the next call (a replica may take over).
                        self.conns.remove(&to);
                        self.down.insert(to.clone(), Instant::now() + RETRY_DOWN);
                        refresh = true;
                        for &i in &members {
                            steps[i] = Step::Done(Err(e.clone()));
                        }
                    }
                    Ok(replies) => {
                        for (&i, reply) in members.iter().zip(replies) {
                            steps[i] = match reply {
                                Err(e) => match Redirect::of(&e) {
                                    Some(_) if redirects[i] >= MAX_REDIRECTS => Step::Done(Err(e)),
                                    Some(Redirect::Moved { .. }) if on_moved == OnMoved::Return => {
                                        refresh = true;
                                        Step::Done(Err(e))
                                    }
                                    Some(Redirect::Moved { .. }) => {
                                        redirects[i] += 1;
                                        refresh = true;
                                        Step::Route
                                    }
                                    Some(Redirect::Ask { .. }) if on_moved == OnMoved::Return => Step::Done(Err(e)),
                                    Some(Redirect::Ask { to, .. }) => {
                                        redirects[i] += 1;
                                        Step::Ask(to)
                                    }
                                    None => Step::Done(Err(e)),
                                },
                                Ok(v) => Step::Done(Ok(v)),
                            };
                        }
                    }
                }
            }
            if refresh {
                if let Err(why) = self.refresh() {
                    tracing::warn!(%why, "redis cluster: no node gave the slot map");
                    for step in &mut steps {
                        if !matches!(step, Step::Done(_)) {
                            *step = Step::Done(Err(no_map(&why)));
                        }
                    }
                }
            }
        }
        steps
            .into_iter()
            .map(|s| match s {
                Step::Done(r) => r,
                Step::Route | Step::Ask(_) => unreachable!("every command ends done"),
            })
            .collect()
    }

    /// Runs `cmd` on every master (loading a script, say); `Err` is the
    /// error of the last master that failed (the others have run it).
    pub fn everywhere(&mut self, cmd: &Cmd) -> RedisResult<()> {
        let masters: Vec<NodeAddr> = self
            .topology
            .map()
            .masters()
            .into_iter()
            .map(|n| n.addr.clone())
            .collect();
        let mut result = Ok(());
        for to in masters {
            match self.send(&to, false, std::iter::once(cmd)) {
                Ok(mut replies) => {
                    if let Some(Err(e)) = replies.pop() {
                        result = Err(e);
                    }
                }
                Err(e) => {
                    self.conns.remove(&to);
                    self.down.insert(to, Instant::now() + RETRY_DOWN);
                    result = Err(e);
                }
            }
        }
        result
    }

    /// Asks for the map again; `Err` says why no node gave it. A new map
    /// lets every master be tried again.
    fn refresh(&mut self) -> Result<(), String> {
        self.refreshes += 1;
        let before = self.topology.map().clone();
        if self.topology.refresh()? != &before {
            self.down.clear();
        }
        Ok(())
    }

    /// One pipeline to `to`; per-command results, or `Err` if the
    /// connection failed (then no reply is known).
    fn send<'c>(
        &mut self,
        to: &NodeAddr,
        asking: bool,
        cmds: impl Iterator<Item = &'c Cmd>,
    ) -> RedisResult<Vec<RedisResult<Value>>> {
        if !self.conns.contains_key(to) {
            let client = self.topology.client(to)?;
            let conn = client.get_connection_with_timeout(IO_TIMEOUT)?;
            conn.set_read_timeout(Some(IO_TIMEOUT))?;
            conn.set_write_timeout(Some(IO_TIMEOUT))?;
            self.conns.insert(to.clone(), conn);
        }
        let conn = self.conns.get_mut(to).expect("connected above");
        let mut pipe = redis::pipe();
        let mut n = 0;
        for cmd in cmds {
            if asking {
                pipe.cmd("ASKING").ignore();
            }
            pipe.add_command(cmd.clone());
            n += 1;
        }
        let replies: Vec<RedisResult<Value>> = pipe.ignore_errors().query(conn)?;
        debug_assert_eq!(replies.len(), n);
        Ok(replies)
    }
}

fn down(to: &NodeAddr) -> redis::RedisError {
    redis::RedisError::from((
        redis::ErrorKind::Io,
        "master unreachable; not tried again yet",
        to.to_string(),
    ))
}

fn no_master(slot: u16) -> redis::RedisError {
    redis::RedisError::from((
        redis::ErrorKind::Client,
        "no master serves the slot",
        format!("slot {slot}"),
    ))
}

fn no_map(why: &str) -> redis::RedisError {
    redis::RedisError::from((redis::ErrorKind::Client, "no cluster node answered", why.to_string()))
}
