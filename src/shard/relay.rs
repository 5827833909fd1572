//! What a shard sends beyond itself during one loop turn, sent at its end:
//! frames and control messages for the other shards (through a
//! `bus::Post`), and publishes and subscription changes for the Redis link.
//!
//! Fan-out frames for other shards are batched, one `Frames` per
//! destination per turn. Nothing is dropped: a batch, announcement or
//! confirmation that finds its inbox (or the link's queue) full waits, in
//! order, until there is room. What bounds the wait is backpressure: while
//! anything waits, or once a turn has batched `TURN_FRAMES` frames, the
//! shard reads no more client input ([`Relay::congested`]), so only the
//! work already read can pile up.

use std::collections::VecDeque;

use bytes::Bytes;

use crate::bus::post::shards_in;
use crate::bus::{
    Encoded, Item, LinkBatch, LinkHandle, LinkRequest, Numbered, Post, ShardHandle, ShardMsg, TopicInterest,
};
use crate::metrics::{DropReason, ShardMetrics};
use crate::rooms::Topic;

/// Frames batched in one turn past which the shard stops reading clients
/// until the end of the turn has sent them.
const TURN_FRAMES: usize = 64 * 1024;

/// A shard's outgoing mail.
#[derive(Debug)]
pub(crate) struct Relay {
    me: usize,
    post: Post,
    link: Option<LinkHandle>,
    link_batch: LinkBatch,
    /// Publish batches the link's queue had no room for, in order.
    link_held: VecDeque<LinkBatch>,
    /// Requests the subscriber's queue had no room for, in order.
    link_backlog: VecDeque<LinkRequest>,
}

impl Relay {
    /// Outgoing mail of shard `me`, given every shard's handle (its own
    /// included) and the Redis link, if any.
    pub fn new(me: usize, peers: Vec<ShardHandle>, link: Option<LinkHandle>) -> Relay {
        Relay {
            me,
            // Held without a count: backpressure bounds what can wait.
            post: Post::new(peers, usize::MAX),
            link,
            link_batch: LinkBatch::default(),
            link_held: VecDeque::new(),
            link_backlog: VecDeque::new(),
        }
    }

    /// Whether a Redis link exists (it confirms announcements too).
    pub fn has_link(&self) -> bool {
        self.link.is_some()
    }

    /// Queues a local publish for the other nodes.
    #[inline]
    pub fn publish_to_link(&mut self, topic: &Topic, frame: &Bytes) {
        if self.link.is_some() {
            self.link_batch.frames.push((topic.clone(), frame.clone()));
        }
    }

    /// Queues a presence change for Redis and the other nodes.
    pub fn presence_delta(&mut self, delta: crate::bus::PresenceDelta) {
        if self.link.is_some() {
            self.link_batch.presence.push(delta);
        }
    }

    /// Queues a publish to a room with history for Redis to number.
    pub fn publish_numbered(&mut self, msg: Numbered) {
        if self.link.is_some() {
            self.link_batch.numbered.push(msg);
        }
    }

    /// Tells the link about a first (`on`) or last local member, never dropping it.
    pub fn link_interest(&mut self, topic: Topic, on: bool, seq: u64) {
        let msg = TopicInterest {
            topic,
            shard: self.me,
            on,
            seq,
        };
        self.link_request(LinkRequest::Interest(msg));
    }

    /// Sends the subscriber a request, in order after the earlier ones,
    /// never dropping it.
    pub fn link_request(&mut self, msg: LinkRequest) {
        let Some(link) = &self.link else { return };
        if !self.link_backlog.is_empty() {
            self.link_backlog.push_back(msg);
        } else if let Err(m) = link.request(msg) {
            self.link_backlog.push_back(m);
        }
    }

    /// Adds a frame for `topic`'s members on each other shard in `mask`.
    #[inline]
    pub fn fan_out(&mut self, mask: u64, topic: &Topic, frame: &Encoded) {
        for s in shards_in(mask & !(1 << self.me)) {
            self.post.frame(s, topic, frame);
        }
    }

    /// Adds a history item for shard `to`, in order with this turn's frames.
    pub fn item(&mut self, to: usize, item: Item) {
        self.post.item(to, item);
    }

    /// Sends a control message to shard `to`, never dropping it.
    pub fn control(&mut self, to: usize, msg: ShardMsg) {
        self.post.control(to, msg);
    }

    /// Sends `msg` (built per destination) to every other shard.
    pub fn control_all(&mut self, mut msg: impl FnMut() -> ShardMsg) {
        for to in 0..self.post.len() {
            if to != self.me {
                self.post.control(to, msg());
            }
        }
    }

    /// Whether messages are waiting for room in some inbox or in the link's queues.
    pub fn has_backlog(&self) -> bool {
        !self.link_backlog.is_empty() || !self.link_held.is_empty() || self.post.has_backlog()
    }

    /// Whether the shard should read no more client input for now: mail is
    /// waiting for room, or this turn already batched `TURN_FRAMES` frames.
    pub fn congested(&self) -> bool {
        self.has_backlog() || self.post.batched() + self.link_batch.len() >= TURN_FRAMES
    }

    /// End of turn: send batches and backlogs, wake each destination once.
    pub fn flush(&mut self, metrics: &ShardMetrics) {
        let me = self.me;
        // Unreachable with an unbounded hold; counted should that change.
        self.post.flush(|to, n| {
            metrics.dropped[DropReason::ChannelFull as usize].add(n);
            tracing::warn!(from = me, to, frames = n, "shard inbox full: fan-out batch dropped");
        });
        if let Some(link) = &self.link {
            while let Some(msg) = self.link_backlog.pop_front() {
                if let Err(m) = link.request(msg) {
                    self.link_backlog.push_front(m);
                    break;
                }
            }
            if !self.link_batch.is_empty() {
                self.link_held.push_back(std::mem::take(&mut self.link_batch));
            }
            while let Some(batch) = self.link_held.pop_front() {
                if let Err(batch) = link.publish(batch) {
                    self.link_held.push_front(batch);
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::metrics::Registry;

    use crate::bus::post::test_inbox as inbox;

    #[test]
    fn congested_while_mail_waits_and_past_a_turns_frames() {
        let metrics = Registry::new(2, false);
        let (me, _rx0, _p0) = inbox(1);
        let (other, rx1, _p1) = inbox(1);
        let mut relay = Relay::new(0, vec![me, other], None);
        let topic = Topic::Room(Arc::from("r"));
        let frame = Encoded::new(Bytes::from_static(b"x"));
        assert!(!relay.congested());
        for _ in 0..TURN_FRAMES {
            relay.fan_out(0b10, &topic, &frame);
        }
        assert!(relay.congested(), "a turn's worth of frames batched");
        relay.flush(&metrics.shards[0]);
        assert!(!relay.congested(), "sent");
        // The inbox holds one message: the next batch waits, unread input with it.
        relay.fan_out(0b10, &topic, &frame);
        relay.flush(&metrics.shards[0]);
        assert!(relay.congested(), "a batch waits for room");
        assert!(matches!(rx1.try_recv(), Ok(ShardMsg::Frames(b)) if b.frames.len() == TURN_FRAMES));
        relay.flush(&metrics.shards[0]);
        assert!(!relay.congested(), "drained");
        assert!(matches!(rx1.try_recv(), Ok(ShardMsg::Frames(b)) if b.frames.len() == 1));
        assert_eq!(metrics.shards[0].dropped[DropReason::ChannelFull as usize].get(), 0);
    }
}
