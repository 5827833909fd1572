//! The subscriber's books, as plain data: which channels the shards want,
//! which SUBSCRIBE commands are sent and confirmed on the current
//! connection, and which shard joins wait for a confirmation. No I/O: the
//! subscriber thread turns what these methods return into RESP commands
//! and shard messages.
//!
//! Invariants:
//! - While the link is up, a join is confirmed to its shard only after a
//!   SUBSCRIBE sent after the join's request is confirmed by Redis (counted
//!   per channel: `sent`, `confirmed`). While it is down or degraded
//!   (connected but not answering in time), joins are confirmed at once:
//!   waiting would stall logins and joins for as long as Redis does.
//! - Every operation is O(1) per channel (the `subscribed` gauge is kept,
//!   not recounted), so restoring N channels after a reconnect is O(N).
//! - A channel no shard wants is forgotten once no SUBSCRIBE for it is in
//!   flight, so room churn does not grow the table.

use std::collections::HashMap;

use crate::bus::TopicInterest;
use crate::rooms::Topic;

/// A join that waits for Redis: (shard, announcement seq, SUBSCRIBEs that
/// must be confirmed first).
#[derive(Debug, Clone, Copy)]
struct Waiter {
    shard: usize,
    seq: u64,
    after: u64,
}

#[derive(Debug)]
struct Chan {
    topic: Topic,
    /// Shards with members.
    mask: u64,
    /// A SUBSCRIBE is in effect (or in flight) on the current connection.
    subscribed: bool,
    sent: u64,
    confirmed: u64,
    waiters: Vec<Waiter>,
}

impl Chan {
    fn forgettable(&self) -> bool {
        self.mask == 0 && !self.subscribed && self.confirmed >= self.sent && self.waiters.is_empty()
    }
}

/// A confirmation owed to a shard: its announcement `seq` of `topic` is in
/// effect as far as Redis is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Confirm {
    /// The shard that asked.
    pub shard: usize,
    /// The room or user.
    pub topic: Topic,
    /// The announcement's sequence number.
    pub seq: u64,
}

/// A channel on its way from one lane's ledger to another's.
#[derive(Debug)]
pub(crate) struct Moving {
    /// The channel.
    pub name: Vec<u8>,
    topic: Topic,
    mask: u64,
    waiters: Vec<Waiter>,
}

/// How far the link can be trusted right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// No connection: nothing is sent; joins are confirmed at once, and
    /// their channels subscribed when a connection is restored.
    Down,
    /// Connected but not answering in time (restoring its subscriptions, or
    /// its probes stopped coming back): commands are sent, joins are
    /// confirmed at once.
    Degraded,
    /// Connected and answering: a join waits for its SUBSCRIBE's confirmation.
    Up,
}

/// A command to send for a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Command {
    /// `SUBSCRIBE`
    Subscribe,
    /// `UNSUBSCRIBE`
    Unsubscribe,
}

/// The subscriber's channel table.
#[derive(Debug, Default)]
pub(crate) struct Ledger {
    chans: HashMap<Vec<u8>, Chan>,
    /// Channels with `subscribed` set.
    subscribed: usize,
    /// SUBSCRIBE confirmations expected before a restore is complete.
    restoring: usize,
}

impl Ledger {
    /// Applies a shard's interest change for channel `name` in link `mode`;
    /// returns the command to send, if any, and adds the confirmations now
    /// owed to `confirms`.
    pub fn interest(
        &mut self,
        name: &[u8],
        msg: TopicInterest,
        mode: Mode,
        confirms: &mut Vec<Confirm>,
    ) -> Option<Command> {
        let bit = 1u64 << msg.shard;
        if !self.chans.contains_key(name) {
            if !msg.on {
                return None;
            }
            self.chans.insert(
                name.to_vec(),
                Chan {
                    topic: msg.topic.clone(),
                    mask: 0,
                    subscribed: false,
                    sent: 0,
                    confirmed: 0,
                    waiters: Vec::new(),
                },
            );
        }
        let chan = self.chans.get_mut(name).expect("inserted above");
        let mut command = None;
        if msg.on {
            chan.mask |= bit;
            let confirm = Confirm {
                shard: msg.shard,
                topic: msg.topic,
                seq: msg.seq,
            };
            if mode == Mode::Down {
                // Nothing to wait for; the restore subscribes it.
                confirms.push(confirm);
                return None;
            }
            if !chan.subscribed {
                chan.subscribed = true;
                self.subscribed += 1;
                chan.sent += 1;
                command = Some(Command::Subscribe);
            }
            if mode == Mode::Degraded || chan.confirmed >= chan.sent {
                confirms.push(confirm);
            } else {
                chan.waiters.push(Waiter {
                    shard: msg.shard,
                    seq: msg.seq,
                    after: chan.sent,
                });
            }
        } else {
            chan.mask &= !bit;
            if chan.mask == 0 && chan.subscribed {
                chan.subscribed = false;
                self.subscribed -= 1;
                if mode != Mode::Down {
                    command = Some(Command::Unsubscribe);
                }
            }
            if chan.forgettable() {
                self.chans.remove(name);
            }
        }
        command
    }

    /// A new connection: every wanted channel is subscribed again. Returns
    /// their names (after `always`, the node's own channels: its probe,
    /// the nodes' goodbyes) and expects that many confirmations before
    /// [`Ledger::subscribed`] reports the restore complete.
    pub fn restore(&mut self, always: &[&[u8]]) -> Vec<Vec<u8>> {
        let mut names = Vec::with_capacity(always.len() + self.chans.len());
        names.extend(always.iter().map(|n| n.to_vec()));
        for (name, chan) in self.chans.iter_mut() {
            if chan.mask != 0 {
                chan.subscribed = true;
                chan.sent += 1;
                names.push(name.clone());
            }
        }
        self.subscribed = names.len() - always.len();
        self.restoring = names.len();
        names
    }

    /// Redis confirmed a SUBSCRIBE of `name`; adds the confirmations now
    /// owed to `confirms`. `true` when this completes a restore.
    pub fn subscribed(&mut self, name: &[u8], confirms: &mut Vec<Confirm>) -> bool {
        if let Some(chan) = self.chans.get_mut(name) {
            chan.confirmed += 1;
            let confirmed = chan.confirmed;
            let topic = &chan.topic;
            chan.waiters.retain(|w| {
                if w.after > confirmed {
                    return true;
                }
                confirms.push(Confirm {
                    shard: w.shard,
                    topic: topic.clone(),
                    seq: w.seq,
                });
                false
            });
            if chan.forgettable() {
                self.chans.remove(name);
            }
        }
        if self.restoring == 0 {
            return false;
        }
        self.restoring -= 1;
        self.restoring == 0
    }

    /// The link stopped answering: every waiting join is confirmed now. Its
    /// SUBSCRIBE stays in flight and is counted when Redis answers.
    pub fn release_waiters(&mut self, confirms: &mut Vec<Confirm>) {
        for chan in self.chans.values_mut() {
            for w in chan.waiters.drain(..) {
                confirms.push(Confirm {
                    shard: w.shard,
                    topic: chan.topic.clone(),
                    seq: w.seq,
                });
            }
        }
    }

    /// The connection is gone: every waiting join is confirmed now (waiting
    /// would only delay local delivery) and nothing is in flight any more.
    pub fn disconnected(&mut self, confirms: &mut Vec<Confirm>) {
        self.release_waiters(confirms);
        for chan in self.chans.values_mut() {
            chan.subscribed = false;
            chan.sent = 0;
            chan.confirmed = 0;
        }
        self.chans.retain(|_, c| c.mask != 0);
        self.subscribed = 0;
        self.restoring = 0;
    }

    /// Takes out every channel a shard wants for which `moves(name,
    /// subscribed)` holds (a Redis Cluster slot that now lives on another
    /// master, or a subscription Redis dropped), with its waiting joins, to
    /// be adopted by another lane's ledger; channels no shard wants are
    /// forgotten.
    pub fn take_where(&mut self, mut moves: impl FnMut(&[u8], bool) -> bool) -> Vec<Moving> {
        let names: Vec<Vec<u8>> = self
            .chans
            .iter()
            .filter(|(name, c)| moves(name, c.subscribed))
            .map(|(name, _)| name.clone())
            .collect();
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            let chan = self.chans.remove(&name).expect("listed above");
            if chan.subscribed {
                self.subscribed -= 1;
            }
            if chan.mask != 0 {
                out.push(Moving {
                    name,
                    topic: chan.topic,
                    mask: chan.mask,
                    waiters: chan.waiters,
                });
            }
        }
        out
    }

    /// A channel taken from another ledger, in link `mode`: the command to
    /// send (its SUBSCRIBE), and the confirmations now owed. Its waiting
    /// joins wait for this SUBSCRIBE while the link is up.
    pub fn adopt(&mut self, m: Moving, mode: Mode, confirms: &mut Vec<Confirm>) -> Option<Command> {
        let chan = self.chans.entry(m.name).or_insert_with(|| Chan {
            topic: m.topic,
            mask: 0,
            subscribed: false,
            sent: 0,
            confirmed: 0,
            waiters: Vec::new(),
        });
        chan.mask |= m.mask;
        let mut command = None;
        if mode != Mode::Down && !chan.subscribed {
            chan.subscribed = true;
            self.subscribed += 1;
            chan.sent += 1;
            command = Some(Command::Subscribe);
        }
        for w in m.waiters {
            if mode == Mode::Up && chan.confirmed < chan.sent {
                chan.waiters.push(Waiter { after: chan.sent, ..w });
            } else {
                confirms.push(Confirm {
                    shard: w.shard,
                    topic: chan.topic.clone(),
                    seq: w.seq,
                });
            }
        }
        command
    }

    /// Redis ended `name`'s subscription on its own (its slot moved to
    /// another master), or refused its SUBSCRIBE (`MOVED`): still wanted,
    /// not subscribed here. `true` if a shard still wants it.
    pub fn dropped(&mut self, name: &[u8]) -> bool {
        let Some(chan) = self.chans.get_mut(name) else {
            return false;
        };
        if chan.subscribed {
            chan.subscribed = false;
            self.subscribed -= 1;
        }
        chan.confirmed = chan.sent;
        if chan.forgettable() {
            self.chans.remove(name);
            return false;
        }
        chan.mask != 0
    }

    /// Channels whose SUBSCRIBE is still unanswered, among those `pick` selects.
    pub fn in_flight(&self, mut pick: impl FnMut(&[u8]) -> bool) -> Vec<Vec<u8>> {
        self.chans
            .iter()
            .filter(|(name, c)| c.subscribed && c.confirmed < c.sent && pick(name))
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// Whether `name` is in the table.
    pub fn contains(&self, name: &[u8]) -> bool {
        self.chans.contains_key(name)
    }

    /// The topic of channel `name` and the shards that want its messages,
    /// if any shard does.
    pub fn route(&self, name: &[u8]) -> Option<(&Topic, u64)> {
        self.chans.get(name).filter(|c| c.mask != 0).map(|c| (&c.topic, c.mask))
    }

    /// Whether `name` is subscribed on this connection and Redis confirmed
    /// its latest SUBSCRIBE: every message published to it from now on
    /// comes in.
    pub fn is_live(&self, name: &[u8]) -> bool {
        self.chans
            .get(name)
            .is_some_and(|c| c.subscribed && c.confirmed >= c.sent)
    }

    /// Channels subscribed (or being subscribed) on this connection.
    pub fn subscriptions(&self) -> usize {
        self.subscribed
    }

    /// Channels in the table.
    pub fn len(&self) -> usize {
        self.chans.len()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use super::*;

    fn room(n: &str) -> Topic {
        Topic::Room(Arc::from(n))
    }

    fn on(shard: usize, name: &str, seq: u64) -> TopicInterest {
        TopicInterest {
            topic: room(name),
            shard,
            on: true,
            seq,
        }
    }

    fn off(shard: usize, name: &str) -> TopicInterest {
        TopicInterest {
            topic: room(name),
            shard,
            on: false,
            seq: 0,
        }
    }

    #[test]
    fn a_join_waits_for_the_subscribe_sent_after_it() {
        let mut l = Ledger::default();
        let mut c = Vec::new();
        assert_eq!(
            l.interest(b"a", on(0, "a", 1), Mode::Up, &mut c),
            Some(Command::Subscribe)
        );
        assert!(c.is_empty(), "waits for Redis");
        assert_eq!(
            l.interest(b"a", on(1, "a", 7), Mode::Up, &mut c),
            None,
            "one SUBSCRIBE per channel"
        );
        assert!(c.is_empty(), "the second shard waits for the same confirmation");
        assert!(!l.subscribed(b"a", &mut c));
        assert_eq!(c.len(), 2);
        assert_eq!((c[0].shard, c[0].seq, c[1].shard, c[1].seq), (0, 1, 1, 7));
        c.clear();
        assert_eq!(l.interest(b"a", on(2, "a", 3), Mode::Up, &mut c), None);
        assert_eq!(c.len(), 1, "already confirmed: at once");
        assert_eq!(l.route(b"a"), Some((&room("a"), 0b111)));
        assert_eq!(l.subscriptions(), 1);
    }

    #[test]
    fn the_last_leave_unsubscribes_and_forgets_the_channel() {
        let mut l = Ledger::default();
        let mut c = Vec::new();
        l.interest(b"a", on(0, "a", 1), Mode::Up, &mut c);
        l.subscribed(b"a", &mut c);
        l.interest(b"a", on(1, "a", 1), Mode::Up, &mut c);
        assert_eq!(l.interest(b"a", off(0, "a"), Mode::Up, &mut c), None);
        assert_eq!(
            l.interest(b"a", off(1, "a"), Mode::Up, &mut c),
            Some(Command::Unsubscribe)
        );
        assert_eq!(
            (l.len(), l.subscriptions()),
            (0, 0),
            "room churn does not grow the table"
        );
        assert_eq!(l.route(b"a"), None);
        assert_eq!(
            l.interest(b"a", off(1, "a"), Mode::Up, &mut c),
            None,
            "a stray leave is harmless"
        );
    }

    #[test]
    fn a_channel_left_mid_subscribe_is_kept_until_its_confirmation() {
        let mut l = Ledger::default();
        let mut c = Vec::new();
        l.interest(b"a", on(0, "a", 1), Mode::Up, &mut c);
        assert_eq!(
            l.interest(b"a", off(0, "a"), Mode::Up, &mut c),
            Some(Command::Unsubscribe)
        );
        assert_eq!(l.len(), 1, "the SUBSCRIBE's confirmation is still coming");
        assert_eq!(
            l.interest(b"a", on(0, "a", 2), Mode::Up, &mut c),
            Some(Command::Subscribe)
        );
        l.subscribed(b"a", &mut c);
        // The first SUBSCRIBE's confirmation must not answer the join made
        // after the UNSUBSCRIBE: only the second SUBSCRIBE's may.
        assert_eq!(c.iter().filter(|x| x.seq == 2).count(), 0);
        l.subscribed(b"a", &mut c);
        assert_eq!(c.iter().filter(|x| x.seq == 2).count(), 1);
    }

    #[test]
    fn while_down_joins_are_confirmed_at_once_and_restored_on_reconnect() {
        let mut l = Ledger::default();
        let mut c = Vec::new();
        l.interest(b"a", on(0, "a", 1), Mode::Up, &mut c);
        l.disconnected(&mut c);
        assert_eq!(c.len(), 1, "a waiting join is released when the link drops");
        c.clear();
        assert_eq!(l.interest(b"b", on(1, "b", 4), Mode::Down, &mut c), None);
        assert_eq!(c.len(), 1);
        let mut names = l.restore(&[b"probe"]);
        names.sort();
        assert_eq!(names, [b"a".to_vec(), b"b".to_vec(), b"probe".to_vec()]);
        assert_eq!(l.subscriptions(), 2);
        assert!(!l.subscribed(b"probe", &mut c));
        assert!(!l.subscribed(b"a", &mut c));
        assert!(
            l.subscribed(b"b", &mut c),
            "the last confirmation completes the restore"
        );
        assert!(!l.subscribed(b"b", &mut c), "only once");
    }

    #[test]
    fn a_degraded_link_confirms_at_once_and_a_stall_releases_waiting_joins() {
        let mut l = Ledger::default();
        let mut c = Vec::new();
        assert_eq!(
            l.interest(b"a", on(0, "a", 1), Mode::Up, &mut c),
            Some(Command::Subscribe)
        );
        assert!(c.is_empty());
        // Redis stops answering: the waiting join is released...
        l.release_waiters(&mut c);
        assert_eq!(c.len(), 1);
        c.clear();
        // ...and new joins are confirmed at once, their SUBSCRIBE still sent.
        assert_eq!(
            l.interest(b"b", on(1, "b", 2), Mode::Degraded, &mut c),
            Some(Command::Subscribe)
        );
        assert_eq!(c.len(), 1);
        // When Redis answers again, the counts are right.
        l.subscribed(b"a", &mut c);
        l.subscribed(b"b", &mut c);
        assert_eq!(c.len(), 1, "nothing was left waiting");
        assert_eq!(l.subscriptions(), 2);
    }

    #[test]
    fn restoring_100_000_channels_is_linear() {
        let n = 100_000;
        let mut l = Ledger::default();
        let mut c = Vec::new();
        let names: Vec<String> = (0..n).map(|i| format!("rc:room:{{r{i}}}")).collect();
        for (i, name) in names.iter().enumerate() {
            l.interest(name.as_bytes(), on(i % 4, name, 1), Mode::Down, &mut c);
        }
        let start = Instant::now();
        let restored = l.restore(&[b"probe"]);
        assert_eq!(restored.len(), n + 1);
        let mut done = l.subscribed(b"probe", &mut c);
        for name in &names {
            done = l.subscribed(name.as_bytes(), &mut c);
        }
        let took = start.elapsed();
        assert!(done);
        assert_eq!(l.subscriptions(), n);
        // Quadratic bookkeeping took minutes here; linear takes tens of
        // milliseconds, even unoptimised.
        assert!(took < Duration::from_secs(1), "restore took {took:?}");
    }

    #[test]
    fn a_channel_moved_to_another_master_keeps_its_shards_and_waiting_joins() {
        let (mut old, mut new) = (Ledger::default(), Ledger::default());
        let mut c = Vec::new();
        old.interest(b"a", on(0, "a", 1), Mode::Up, &mut c);
        old.subscribed(b"a", &mut c);
        c.clear();
        // A second shard joins; its SUBSCRIBE is out when the slot moves.
        old.interest(b"b", on(1, "b", 5), Mode::Up, &mut c);
        old.interest(b"a", on(2, "a", 3), Mode::Up, &mut c);
        assert_eq!(c.len(), 1, "a is confirmed already, b waits");
        c.clear();
        // The old master refuses b's SUBSCRIBE (MOVED): still wanted.
        assert!(old.dropped(b"b"));
        assert_eq!(old.in_flight(|_| true), Vec::<Vec<u8>>::new());
        let moving = old.take_where(|_, _| true);
        assert_eq!((old.len(), old.subscriptions()), (0, 0));
        assert_eq!(moving.len(), 2);
        for m in moving {
            assert_eq!(new.adopt(m, Mode::Up, &mut c), Some(Command::Subscribe));
        }
        assert!(c.is_empty(), "the join of b waits for the new master");
        assert_eq!(new.route(b"a"), Some((&room("a"), 0b101)), "both shards of a");
        assert!(!new.is_live(b"b"));
        new.subscribed(b"b", &mut c);
        assert_eq!((c.len(), c[0].shard, c[0].seq), (1, 1, 5));
        assert!(new.is_live(b"b"));
        assert_eq!(new.subscriptions(), 2);
    }

    #[test]
    fn a_channel_moved_to_a_master_that_is_down_is_confirmed_at_once() {
        let (mut old, mut new) = (Ledger::default(), Ledger::default());
        let mut c = Vec::new();
        old.interest(b"a", on(0, "a", 1), Mode::Up, &mut c);
        let moving = old.take_where(|name, _| name == b"a");
        assert_eq!(new.adopt(moving.into_iter().next().unwrap(), Mode::Down, &mut c), None);
        assert_eq!(c.len(), 1, "nothing to wait for: the restore subscribes it");
        assert_eq!(new.restore(&[]), [b"a".to_vec()]);
    }

    #[test]
    fn a_channel_nobody_wants_is_forgotten_not_moved() {
        let mut l = Ledger::default();
        let mut c = Vec::new();
        l.interest(b"a", on(0, "a", 1), Mode::Up, &mut c);
        l.interest(b"a", off(0, "a"), Mode::Up, &mut c);
        assert_eq!(l.len(), 1, "its SUBSCRIBE is unanswered");
        assert!(l.take_where(|_, _| true).is_empty());
        assert_eq!(l.len(), 0);
    }
}
