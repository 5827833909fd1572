//! Mail for a set of shard inboxes, collected during one loop turn and sent
//! at its end: one `Frames` batch per destination, one channel send and one
//! wake each. Both the shards (to each other) and the Redis link's
//! subscriber (to the shards) send through a `Post`.
//!
//! Nothing is dropped while it fits: a message that finds its inbox full
//! waits in a per-destination backlog, retried at every flush, in order —
//! control messages (interest announcements and confirmations: a lost one
//! would leave a room deaf on some shard) always, frame batches up to
//! `max_held` frames. A sender with a backlog should stop taking new work
//! (a shard stops reading its clients) until it drains: that is what
//! bounds it. Only a frame batch past `max_held` is dropped, and handed to
//! the caller's `dropped` callback, which counts it.

use std::collections::VecDeque;

use crossbeam_channel::TrySendError;

use crate::rooms::Topic;

use super::{Batch, Encoded, Item, ShardHandle, ShardMsg};

/// Per-destination frame batches and control backlogs.
#[derive(Debug)]
pub(crate) struct Post {
    to: Vec<ShardHandle>,
    batches: Vec<Batch>,
    backlog: Vec<VecDeque<ShardMsg>>,
    /// Frames waiting in backlogs.
    held: usize,
    /// Frames in this turn's batches, not yet flushed.
    batched: usize,
    /// Most frames that may wait in backlogs; a batch beyond is dropped.
    max_held: usize,
    /// Destinations that got a message since the last flush, as bits.
    wake: u64,
}

/// The shard indexes set in `mask`, lowest first.
#[inline]
pub(crate) fn shards_in(mut mask: u64) -> impl Iterator<Item = usize> {
    std::iter::from_fn(move || {
        if mask == 0 {
            return None;
        }
        let s = mask.trailing_zeros() as usize;
        mask &= mask - 1;
        Some(s)
    })
}

impl Post {
    /// Mail for these inboxes, addressed by their index; at most
    /// `max_held` frames wait for room before batches are dropped.
    pub fn new(to: Vec<ShardHandle>, max_held: usize) -> Post {
        let n = to.len();
        Post {
            to,
            batches: (0..n).map(|_| Batch::default()).collect(),
            backlog: (0..n).map(|_| VecDeque::new()).collect(),
            held: 0,
            batched: 0,
            max_held,
            wake: 0,
        }
    }

    /// Number of destinations.
    pub fn len(&self) -> usize {
        self.to.len()
    }

    /// Adds `frame` for `topic`'s members on shard `to` to this turn's batch.
    #[inline]
    pub fn frame(&mut self, to: usize, topic: &Topic, frame: &Encoded) {
        self.batches[to].frames.push((topic.clone(), frame.clone()));
        self.batched += 1;
    }

    /// Adds a history item for shard `to` to this turn's batch, after the
    /// frames already in it.
    pub fn item(&mut self, to: usize, item: Item) {
        let batch = &mut self.batches[to];
        batch.items.push((batch.frames.len(), item));
        self.batched += 1;
    }

    /// Frames in this turn's batches so far.
    pub fn batched(&self) -> usize {
        self.batched
    }

    /// Sends a control message to shard `to` now, or keeps it (in order)
    /// until its inbox has room; never drops it.
    pub fn control(&mut self, to: usize, msg: ShardMsg) {
        if !self.backlog[to].is_empty() {
            // Keep the order: behind what is already waiting.
            self.backlog[to].push_back(msg);
            return;
        }
        match self.to[to].send(msg) {
            Ok(()) => self.wake |= 1 << to,
            Err(TrySendError::Full(m)) => self.backlog[to].push_back(m),
            // The shard is gone (shutting down): nobody to tell.
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    /// Whether messages wait for room in some inbox.
    pub fn has_backlog(&self) -> bool {
        self.backlog.iter().any(|b| !b.is_empty())
    }

    /// Sends what waits — backlogs first, then this turn's frame batches —
    /// and wakes each destination once. A batch that finds its inbox full
    /// waits behind the backlog, unless `max_held` frames already wait: then
    /// it is dropped, and `dropped(to, frames)` counts it.
    pub fn flush(&mut self, mut dropped: impl FnMut(usize, u64)) {
        self.batched = 0;
        for to in 0..self.to.len() {
            while let Some(msg) = self.backlog[to].pop_front() {
                let n = frames_in(&msg);
                match self.to[to].send(msg) {
                    Ok(()) => {
                        self.wake |= 1 << to;
                        self.held -= n;
                    }
                    Err(TrySendError::Full(m)) => {
                        self.backlog[to].push_front(m);
                        break;
                    }
                    Err(TrySendError::Disconnected(_)) => {
                        self.held -= n + self.backlog[to].iter().map(frames_in).sum::<usize>();
                        self.backlog[to].clear();
                    }
                }
            }
            if self.batches[to].len() == 0 {
                continue;
            }
            let batch = ShardMsg::Frames(std::mem::take(&mut self.batches[to]));
            let result = if self.backlog[to].is_empty() {
                self.to[to].send(batch)
            } else {
                // Keep the order: behind what is already waiting.
                Err(TrySendError::Full(batch))
            };
            match result {
                Ok(()) => self.wake |= 1 << to,
                Err(TrySendError::Full(batch)) => {
                    let n = frames_in(&batch);
                    if self.held + n <= self.max_held {
                        self.held += n;
                        self.backlog[to].push_back(batch);
                    } else if let ShardMsg::Frames(b) = batch {
                        // Frames may go (counted); history items (a join's
                        // admission, an ack) wait: they are few, and a lost
                        // one would leave a client unanswered.
                        dropped(to, b.frames.len() as u64);
                        if !b.items.is_empty() {
                            let items = b.items.into_iter().map(|(_, item)| (0, item)).collect();
                            let rest = ShardMsg::Frames(Batch {
                                frames: Vec::new(),
                                items,
                            });
                            self.held += frames_in(&rest);
                            self.backlog[to].push_back(rest);
                        }
                    }
                }
                Err(TrySendError::Disconnected(_)) => {}
            }
        }
        for s in shards_in(std::mem::take(&mut self.wake)) {
            self.to[s].wake();
        }
    }
}

/// An inbox of `cap` messages with its own poll (one waker per poll), for
/// tests of whatever sends to shards.
#[cfg(test)]
pub(crate) fn test_inbox(cap: usize) -> (ShardHandle, crossbeam_channel::Receiver<ShardMsg>, mio::Poll) {
    let poll = mio::Poll::new().unwrap();
    let (tx, rx) = crossbeam_channel::bounded(cap);
    let waker = std::sync::Arc::new(mio::Waker::new(poll.registry(), mio::Token(0)).unwrap());
    (ShardHandle::new(tx, waker), rx, poll)
}

/// Frames carried by a message (a `Frames` batch's length, else 0).
fn frames_in(msg: &ShardMsg) -> usize {
    match msg {
        ShardMsg::Frames(batch) => batch.len(),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;

    use super::*;

    use super::test_inbox as inbox;

    fn confirm(seq: u64) -> ShardMsg {
        ShardMsg::Confirm {
            topic: Topic::Room(Arc::from("r")),
            seq,
        }
    }

    #[test]
    fn shards_in_lists_set_bits_lowest_first() {
        assert_eq!(shards_in(0b1010_0001).collect::<Vec<_>>(), [0, 5, 7]);
        assert_eq!(shards_in(0).count(), 0);
        assert_eq!(shards_in(1 << 63).collect::<Vec<_>>(), [63]);
    }

    #[test]
    fn frames_go_in_one_batch_per_destination() {
        let (a, rx_a, _pa) = inbox(4);
        let (b, rx_b, _pb) = inbox(4);
        let mut post = Post::new(vec![a, b], 0);
        let topic = Topic::Room(Arc::from("r"));
        for i in 0..3u8 {
            post.frame(1, &topic, &Encoded::new(Bytes::from(vec![i])));
        }
        post.flush(|_, _| panic!("nothing is full"));
        assert!(rx_a.try_recv().is_err());
        match rx_b.try_recv().unwrap() {
            ShardMsg::Frames(batch) => {
                assert_eq!(
                    batch.frames.iter().map(|(_, f)| f.plain[0]).collect::<Vec<_>>(),
                    [0, 1, 2]
                )
            }
            other => panic!("{other:?}"),
        }
        assert!(rx_b.try_recv().is_err(), "one send per destination per flush");
    }

    #[test]
    fn control_messages_wait_in_order_and_frames_past_the_hold_are_counted() {
        let (a, rx, _poll) = inbox(1);
        let mut post = Post::new(vec![a], 0);
        post.control(0, confirm(1));
        post.control(0, confirm(2));
        post.control(0, confirm(3));
        assert!(post.has_backlog());
        post.frame(0, &Topic::Room(Arc::from("r")), &Encoded::new(Bytes::from_static(b"x")));
        let mut dropped = 0;
        post.flush(|_, n| dropped += n);
        assert_eq!(dropped, 1, "nothing may wait: the batch is dropped and counted");
        let mut seen = Vec::new();
        for _ in 0..3 {
            match rx.try_recv().unwrap() {
                ShardMsg::Confirm { seq, .. } => seen.push(seq),
                other => panic!("{other:?}"),
            }
            post.flush(|_, _| {});
        }
        assert_eq!(seen, [1, 2, 3]);
        assert!(!post.has_backlog());
    }

    #[test]
    fn frame_batches_wait_behind_control_messages_in_order() {
        let (a, rx, _poll) = inbox(1);
        let mut post = Post::new(vec![a], 10);
        let topic = Topic::Room(Arc::from("r"));
        post.control(0, confirm(1));
        post.control(0, confirm(2));
        post.frame(0, &topic, &Encoded::new(Bytes::from_static(b"a")));
        post.frame(0, &topic, &Encoded::new(Bytes::from_static(b"b")));
        post.flush(|_, _| panic!("the batch fits in the hold"));
        post.control(0, confirm(3));
        post.frame(0, &topic, &Encoded::new(Bytes::from_static(b"c")));
        post.flush(|_, _| panic!("still fits"));
        let mut seen = Vec::new();
        while seen.len() < 5 {
            match rx.try_recv() {
                Ok(ShardMsg::Confirm { seq, .. }) => seen.push(format!("c{seq}")),
                Ok(ShardMsg::Frames(b)) => seen.push(b.frames.iter().map(|(_, f)| f.plain[0] as char).collect()),
                Ok(other) => panic!("{other:?}"),
                Err(_) => post.flush(|_, _| panic!("nothing is dropped")),
            }
        }
        assert_eq!(seen, ["c1", "c2", "ab", "c3", "c"], "one order, whatever waited");
        assert!(!post.has_backlog());
        assert_eq!(post.held, 0);
    }
}
