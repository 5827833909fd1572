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
}

impl Outbound {
    /// Outbound state of shard `me`, given every shard's handle (its own included).
    pub fn new(me: usize, peers: Vec<ShardHandle>) -> Outbound {
        let n = peers.len();
        Outbound {
            me,
            peers,
            batches: (0..n).map(|_| Vec::new()).collect(),
            backlog: (0..n).map(|_| VecDeque::new()).collect(),
            wake: 0,
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
        self.backlog.iter().any(|b| !b.is_empty())
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
        while self.wake != 0 {
            let s = self.wake.trailing_zeros() as usize;
            self.wake &= self.wake - 1;
            self.peers[s].wake();
        }
    }
}
