//! How other threads talk to a shard: a bounded channel plus a `Waker`.
//!
//! Senders never block: a full inbox is an error the sender counts as a drop.
//! A sender batches: many `send`s, then one `wake`.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use crossbeam_channel::{Sender, TrySendError};
use mio::net::TcpStream;
use mio::Waker;

use crate::net::Ticket;
use crate::rooms::Topic;

/// Work for a shard.
#[derive(Debug)]
pub enum ShardMsg {
    /// A socket the acceptor took; a `Refusing` ticket means it is over
    /// `--max-connections` and must be refused with 1013.
    Accept {
        /// The accepted socket (non-blocking, `TCP_NODELAY` set).
        stream: TcpStream,
        /// The client's address.
        peer: SocketAddr,
        /// What it was admitted as.
        ticket: Ticket,
    },
    /// Shard `from` got its first (`on`) or lost its last local member of
    /// `topic`. An `on` is answered with `Confirm`.
    Interest {
        /// The room or user.
        topic: Topic,
        /// The announcing shard.
        from: usize,
        /// Members appeared (true) or are all gone (false).
        on: bool,
        /// The announcement's sequence number, echoed in `Confirm`.
        seq: u64,
    },
    /// The sender applied announcement `seq` of `topic`.
    Confirm {
        /// The room or user.
        topic: Topic,
        /// The announcement's sequence number.
        seq: u64,
    },
    /// Frames for local members of each topic, in publish order.
    Deliver(Vec<(Topic, Bytes)>),
    /// Graceful shutdown, phase 1: stop reading client input (so nothing new
    /// is accepted), then report on the channel.
    Quiesce(Sender<usize>),
    /// Graceful shutdown, phase 2: close every connection (1001 for
    /// WebSockets, after what is queued) and exit when all are closed or at
    /// `deadline`.
    GoAway {
        /// When to give up on close handshakes.
        deadline: std::time::Instant,
    },
    /// Stop the event loop at once and drop every connection.
    Shutdown,
}

/// Capacity of a shard's inbox.
pub const INBOX_CAPACITY: usize = 16 * 1024;

/// The sending side of a shard's inbox.
#[derive(Debug, Clone)]
pub struct ShardHandle {
    tx: Sender<ShardMsg>,
    waker: Arc<Waker>,
}

impl ShardHandle {
    /// Wraps a channel and the shard's waker.
    pub fn new(tx: Sender<ShardMsg>, waker: Arc<Waker>) -> ShardHandle {
        ShardHandle { tx, waker }
    }

    /// Queues a message without waking the shard; call [`ShardHandle::wake`] after a batch.
    pub fn send(&self, msg: ShardMsg) -> Result<(), TrySendError<ShardMsg>> {
        self.tx.try_send(msg)
    }

    /// Wakes the shard so it drains its inbox.
    pub fn wake(&self) {
        // A failed wake means the shard's poll is gone: it is shutting down.
        let _ = self.waker.wake();
    }
}
