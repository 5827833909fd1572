//! What a shard sends beyond itself during one loop turn, sent at its end:
//! frames and control messages for the other shards (through a
//! `bus::Post`), and publishes and subscription changes for the Redis link.
//!
//! Fan-out frames for other shards are batched, one `Frames` per
//! destination per turn; a full inbox drops the batch and counts it
//! (issue 11 item 1 will hold it instead, with backpressure). Interest
//! announcements and confirmations are never dropped: they wait in order
//! until there is room.

use std::collections::VecDeque;

use bytes::Bytes;

use crate::bus::post::shards_in;
use crate::bus::{LinkHandle, Post, ShardHandle, ShardMsg, TopicInterest};
use crate::metrics::{DropReason, ShardMetrics};
use crate::rooms::Topic;

/// A shard's outgoing mail.
#[derive(Debug)]
pub(crate) struct Relay {
    me: usize,
    post: Post,
    link: Option<LinkHandle>,
    link_batch: Vec<(Topic, Bytes)>,
    link_backlog: VecDeque<TopicInterest>,
}

impl Relay {
    /// Outgoing mail of shard `me`, given every shard's handle (its own
    /// included) and the Redis link, if any.
    pub fn new(me: usize, peers: Vec<ShardHandle>, link: Option<LinkHandle>) -> Relay {
        Relay {
            me,
            post: Post::new(peers, 0),
            link,
            link_batch: Vec::new(),
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
            self.link_batch.push((topic.clone(), frame.clone()));
        }
    }

    /// Tells the link about a first (`on`) or last local member, never dropping it.
    pub fn link_interest(&mut self, topic: Topic, on: bool, seq: u64) {
        let Some(link) = &self.link else { return };
        let msg = TopicInterest {
            topic,
            shard: self.me,
            on,
            seq,
        };
        if !self.link_backlog.is_empty() {
            self.link_backlog.push_back(msg);
        } else if let Err(m) = link.interest(msg) {
            self.link_backlog.push_back(m);
        }
    }

    /// Adds a frame for `topic`'s members on each other shard in `mask`.
    #[inline]
    pub fn fan_out(&mut self, mask: u64, topic: &Topic, frame: &Bytes) {
        for s in shards_in(mask & !(1 << self.me)) {
            self.post.frame(s, topic, frame);
        }
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

    /// Whether messages are waiting for room in some inbox.
    pub fn has_backlog(&self) -> bool {
        !self.link_backlog.is_empty() || self.post.has_backlog()
    }

    /// End of turn: send batches and backlogs, wake each destination once.
    pub fn flush(&mut self, metrics: &ShardMetrics) {
        let me = self.me;
        self.post.flush(|to, n| {
            metrics.dropped[DropReason::ChannelFull as usize].add(n);
            tracing::warn!(from = me, to, frames = n, "shard inbox full: fan-out batch dropped");
        });
        if let Some(link) = &self.link {
            while let Some(msg) = self.link_backlog.pop_front() {
                if let Err(m) = link.interest(msg) {
                    self.link_backlog.push_front(m);
                    break;
                }
            }
            if !self.link_batch.is_empty() {
                link.publish(std::mem::take(&mut self.link_batch));
            }
        }
    }
}
