//! Mail for a set of shard inboxes, collected during one loop turn and sent
//! at its end: one `Frames` batch per destination, one channel send and one
//! wake each. Both the shards (to each other) and the Redis link's
//! subscriber (to the shards) send through a `Post`.
//!
//! Control messages (interest announcements and confirmations) must never
//! be lost — a lost one would leave a room deaf on some shard — so a full
//! inbox keeps them in a per-destination backlog, retried at every flush,
//! in order. A frame batch that finds its inbox full is handed back to the
//! caller's `dropped` callback, which counts it.

use std::collections::VecDeque;

use bytes::Bytes;
use crossbeam_channel::TrySendError;

use crate::rooms::Topic;

use super::{ShardHandle, ShardMsg};

/// Per-destination frame batches and control backlogs.
#[derive(Debug)]
pub(crate) struct Post {
    to: Vec<ShardHandle>,
    frames: Vec<Vec<(Topic, Bytes)>>,
    backlog: Vec<VecDeque<ShardMsg>>,
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
    /// Mail for these inboxes, addressed by their index.
    pub fn new(to: Vec<ShardHandle>) -> Post {
        let n = to.len();
        Post {
            to,
            frames: (0..n).map(|_| Vec::new()).collect(),
            backlog: (0..n).map(|_| VecDeque::new()).collect(),
            wake: 0,
        }
    }

    /// Number of destinations.
    pub fn len(&self) -> usize {
        self.to.len()
    }

    /// Adds `frame` for `topic`'s members on shard `to` to this turn's batch.
    #[inline]
    pub fn frame(&mut self, to: usize, topic: &Topic, frame: &Bytes) {
        self.frames[to].push((topic.clone(), frame.clone()));
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

    /// Whether control messages wait for room in some inbox.
    pub fn has_backlog(&self) -> bool {
        self.backlog.iter().any(|b| !b.is_empty())
    }

    /// Sends what waits — backlogs first, then this turn's frame batches —
    /// and wakes each destination once. A batch that finds its inbox full
    /// is dropped: `dropped(to, frames)` counts it.
    pub fn flush(&mut self, mut dropped: impl FnMut(usize, u64)) {
        for to in 0..self.to.len() {
            while let Some(msg) = self.backlog[to].pop_front() {
                match self.to[to].send(msg) {
                    Ok(()) => self.wake |= 1 << to,
                    Err(TrySendError::Full(m)) => {
                        self.backlog[to].push_front(m);
                        break;
                    }
                    Err(TrySendError::Disconnected(_)) => self.backlog[to].clear(),
                }
            }
            if self.frames[to].is_empty() {
                continue;
            }
            let batch = std::mem::take(&mut self.frames[to]);
            let n = batch.len() as u64;
            match self.to[to].send(ShardMsg::Frames(batch)) {
                Ok(()) => self.wake |= 1 << to,
                Err(TrySendError::Full(_)) => dropped(to, n),
                Err(TrySendError::Disconnected(_)) => {}
            }
        }
        for s in shards_in(std::mem::take(&mut self.wake)) {
            self.to[s].wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use mio::{Poll, Token, Waker};

    use super::*;

    /// An inbox with its own poll (one waker per poll).
    fn inbox(cap: usize) -> (ShardHandle, crossbeam_channel::Receiver<ShardMsg>, Poll) {
        let poll = Poll::new().unwrap();
        let (tx, rx) = crossbeam_channel::bounded(cap);
        let waker = Arc::new(Waker::new(poll.registry(), Token(0)).unwrap());
        (ShardHandle::new(tx, waker), rx, poll)
    }

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
        let mut post = Post::new(vec![a, b]);
        let topic = Topic::Room(Arc::from("r"));
        for i in 0..3u8 {
            post.frame(1, &topic, &Bytes::from(vec![i]));
        }
        post.flush(|_, _| panic!("nothing is full"));
        assert!(rx_a.try_recv().is_err());
        match rx_b.try_recv().unwrap() {
            ShardMsg::Frames(batch) => assert_eq!(batch.iter().map(|(_, f)| f[0]).collect::<Vec<_>>(), [0, 1, 2]),
            other => panic!("{other:?}"),
        }
        assert!(rx_b.try_recv().is_err(), "one send per destination per flush");
    }

    #[test]
    fn control_messages_wait_in_order_and_frames_are_counted_when_full() {
        let (a, rx, _poll) = inbox(1);
        let mut post = Post::new(vec![a]);
        post.control(0, confirm(1));
        post.control(0, confirm(2));
        post.control(0, confirm(3));
        assert!(post.has_backlog());
        post.frame(0, &Topic::Room(Arc::from("r")), &Bytes::from_static(b"x"));
        let mut dropped = 0;
        post.flush(|_, n| dropped += n);
        assert_eq!(dropped, 1, "a full inbox drops the batch and says how many frames");
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
}
