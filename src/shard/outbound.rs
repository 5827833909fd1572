//! What a shard sends other shards during one loop turn, sent at its end.
//!
//! Data (fan-out frames) is batched: one `Deliver` per destination per turn,
//! one channel send and one wake. A full inbox drops the batch and counts
//! it. Control messages (interest announcements and confirmations) must
//! never be lost — a lost one would leave a room deaf on some shard — so a
//! full inbox keeps them in a per-destination backlog, retried every turn,
//! in order.

use std::collections::VecDeque;

use bytes::Bytes;
use crossbeam_channel::TrySendError;

use crate::cluster::{Interest, LinkHandle};
use crate::metrics::{DropReason, ShardMetrics};
use crate::rooms::Topic;

use super::{ShardHandle, ShardMsg};

/// Per-destination batches and backlogs of one shard.
#[derive(Debug)]
pub struct Outbound {
    me: usize,
    peers: Vec<ShardHandle>,
    batches: Vec<Vec<(Topic, Bytes)>>,
    backlog: Vec<VecDeque<ShardMsg>>,
    wake: u64,
    link: Option<LinkHandle>,
    link_batch: Vec<(Topic, Bytes)>,
    link_backlog: VecDeque<Interest>,
}

impl Outbound {
    /// Outbound state of shard `me`, given every shard's handle (its own
    /// included) and the Redis link, if any.
    pub fn new(me: usize, peers: Vec<ShardHandle>, link: Option<LinkHandle>) -> Outbound {
        let n = peers.len();
        Outbound {
            me,
            peers,
            batches: (0..n).map(|_| Vec::new()).collect(),
            backlog: (0..n).map(|_| VecDeque::new()).collect(),
            wake: 0,
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
    pub fn to_link(&mut self, topic: &Topic, frame: &Bytes) {
        if self.link.is_some() {
            self.link_batch.push((topic.clone(), frame.clone()));
        }
    }

    /// Tells the link about a first (`on`) or last local member, never dropping it.
    pub fn link_interest(&mut self, topic: Topic, on: bool, seq: u64) {
        let Some(link) = &self.link else { return };
        let msg = Interest {
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

    /// Number of shards.
    pub fn shards(&self) -> usize {
        self.peers.len()
    }

    /// Adds a frame for `topic`'s members on each shard in `mask`.
    #[inline]
    pub fn deliver(&mut self, mask: u64, topic: &Topic, frame: &Bytes) {
        let mut m = mask & !(1 << self.me);
        while m != 0 {
            let s = m.trailing_zeros() as usize;
            m &= m - 1;
            self.batches[s].push((topic.clone(), frame.clone()));
        }
    }

    /// Sends a control message to shard `to`, never dropping it.
    pub fn control(&mut self, to: usize, msg: ShardMsg) {
        if !self.backlog[to].is_empty() {
            // Keep the order: behind what is already waiting.
            self.backlog[to].push_back(msg);
            return;
        }
        match self.peers[to].send(msg) {
            Ok(()) => self.wake |= 1 << to,
            Err(TrySendError::Full(m)) => self.backlog[to].push_back(m),
            // The shard is gone (shutting down): nobody to tell.
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    /// Sends `msg` (built per destination) to every other shard.
    pub fn control_all(&mut self, mut msg: impl FnMut() -> ShardMsg) {
        for to in 0..self.peers.len() {
            if to != self.me {
                self.control(to, msg());
            }
        }
    }

    /// Whether control messages are waiting for room in some inbox.
    pub fn has_backlog(&self) -> bool {
        !self.link_backlog.is_empty() || self.backlog.iter().any(|b| !b.is_empty())
    }

    /// End of turn: send batches and backlogs, wake each destination once.
    pub fn flush(&mut self, metrics: &ShardMetrics) {
        for to in 0..self.peers.len() {
            while let Some(msg) = self.backlog[to].pop_front() {
                match self.peers[to].send(msg) {
                    Ok(()) => self.wake |= 1 << to,
                    Err(TrySendError::Full(m)) => {
                        self.backlog[to].push_front(m);
                        break;
                    }
                    Err(TrySendError::Disconnected(_)) => self.backlog[to].clear(),
                }
            }
            if self.batches[to].is_empty() {
                continue;
            }
            let batch = std::mem::take(&mut self.batches[to]);
            let n = batch.len() as u64;
            match self.peers[to].send(ShardMsg::Deliver(batch)) {
                Ok(()) => self.wake |= 1 << to,
                Err(_) => {
                    metrics.dropped[DropReason::ChannelFull as usize].add(n);
                    tracing::warn!(
                        from = self.me,
                        to,
                        frames = n,
                        "shard inbox full: fan-out batch dropped"
                    );
                }
            }
        }
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
        while self.wake != 0 {
            let s = self.wake.trailing_zeros() as usize;
            self.wake &= self.wake - 1;
            self.peers[s].wake();
        }
    }
}
