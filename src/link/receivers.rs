//! Who should hear a channel: the publisher learns, from each PUBLISH's
//! reply (the number of subscribers that got the message), how many a
//! channel had while Redis was healthy. After an outage that number is what
//! the outage buffer waits for before it is flushed (the nodes that lost
//! the same Redis reconnect on their own jittered backoff), and a message
//! that reaches fewer subscribers than that is counted: another node may
//! have missed it.
//!
//! Socket-free: the publisher does the I/O (`PUBSUB NUMSUB`, pipelines) and
//! tells this what Redis answered.

use std::collections::HashMap;
use std::time::Instant;

/// Channels whose subscriber count is remembered; past it the memory is
/// cleared (a recovery then waits only for what was learned since).
const MAX_CHANNELS: usize = 64 * 1024;

/// Subscriber counts per channel, and an outage's recovery.
#[derive(Debug, Default)]
pub(crate) struct Receivers {
    /// Subscribers of each channel at its last publish while healthy.
    known: HashMap<Box<[u8]>, u64>,
    /// After an outage: channels not yet back to their count, with it.
    short: HashMap<Box<[u8]>, u64>,
    /// Whether a buffered channel had no known count (nothing to wait for).
    unknown: bool,
    /// When a flushed recovery stops counting shortfalls.
    watch_until: Option<Instant>,
}

impl Receivers {
    /// Records a PUBLISH to `channel` that `receivers` subscribers got;
    /// `true` if it may have been missed (a channel not back to its count
    /// since the outage).
    pub fn published(&mut self, channel: &[u8], receivers: u64, now: Instant) -> bool {
        if self.watch_until.is_some_and(|end| now >= end) {
            // Whoever is not back by now is taken to have left.
            self.short.clear();
            self.watch_until = None;
        }
        if let Some(&want) = self.short.get(channel) {
            if receivers < want {
                return true;
            }
            self.short.remove(channel);
        }
        match self.known.get_mut(channel) {
            Some(n) => *n = receivers,
            None => {
                if self.known.len() >= MAX_CHANNELS {
                    self.known.clear();
                }
                self.known.insert(channel.into(), receivers);
            }
        }
        false
    }

    /// An outage is over and these channels have buffered messages: each
    /// must get back the subscribers it had before.
    pub fn begin<'a>(&mut self, channels: impl IntoIterator<Item = &'a [u8]>) {
        self.short.clear();
        self.watch_until = None;
        self.unknown = false;
        for ch in channels {
            match self.known.get(ch) {
                Some(&want) if want > 0 => {
                    self.short.insert(ch.into(), want);
                }
                Some(_) => {}
                None => self.unknown = true,
            }
        }
    }

    /// The channels still short of subscribers.
    pub fn short(&self) -> impl Iterator<Item = &[u8]> {
        self.short.keys().map(|k| &**k)
    }

    /// `PUBSUB NUMSUB` says `channel` has `n` subscribers now.
    pub fn subscribed(&mut self, channel: &[u8], n: u64) {
        if self.short.get(channel).is_some_and(|&want| n >= want) {
            self.short.remove(channel);
        }
    }

    /// Whether every channel with a known count is back to it.
    pub fn all_back(&self) -> bool {
        self.short.is_empty()
    }

    /// Whether a buffered channel had no count to wait for.
    pub fn has_unknown(&self) -> bool {
        self.unknown
    }

    /// The buffer is flushed now: channels still short keep being
    /// counted until `until`, or until their subscribers are back.
    pub fn flushed(&mut self, until: Instant) {
        self.watch_until = Some(until);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn waits_for_the_count_each_channel_had_then_counts_shortfalls() {
        let t0 = Instant::now();
        let mut r = Receivers::default();
        assert!(!r.published(b"a", 2, t0));
        assert!(!r.published(b"b", 1, t0));
        assert!(!r.published(b"gone", 0, t0));
        r.begin([&b"a"[..], b"b", b"gone", b"new"]);
        assert!(r.has_unknown(), "nothing was ever published to `new`");
        let mut short: Vec<&[u8]> = r.short().collect();
        short.sort();
        assert_eq!(short, [&b"a"[..], b"b"], "a channel nobody heard is not waited for");
        r.subscribed(b"b", 1);
        r.subscribed(b"a", 1);
        assert!(!r.all_back());
        // Flushed anyway (the wait ran out): `a` lacks a node.
        r.flushed(t0 + Duration::from_secs(10));
        assert!(r.published(b"a", 1, t0), "one of two nodes got it");
        assert!(!r.published(b"b", 1, t0));
        assert!(!r.published(b"a", 2, t0), "back");
        assert!(!r.published(b"a", 1, t0), "and then a node may leave");
    }

    #[test]
    fn shortfalls_are_counted_only_for_a_while_after_the_flush() {
        let t0 = Instant::now();
        let mut r = Receivers::default();
        r.published(b"a", 3, t0);
        r.begin([&b"a"[..]]);
        r.flushed(t0 + Duration::from_secs(1));
        assert!(r.published(b"a", 2, t0));
        assert!(!r.published(b"a", 2, t0 + Duration::from_secs(1)), "taken as left");
    }
}
