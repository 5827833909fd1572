//! Counters and gauges: each shard owns a [`ShardMetrics`] it alone writes,
//! so the hot path costs a plain load and store, never a lock or a locked
//! instruction; a scrape reads every shard's block and sums.

pub(crate) mod link;
pub(crate) mod names;
pub(crate) mod render;

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

pub(crate) use link::{Health, LinkState};
pub(crate) use render::render;

/// Why something was dropped; each is a `reason` label of `roomcast_dropped_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// A connection's outbox passed `--max-queue-bytes`; its queue was freed.
    SlowConsumer,
    /// A message over the client's rate limit.
    RateLimited,
    /// A cross-thread channel was full.
    ChannelFull,
    /// A connection over `--max-connections`.
    ConnectionLimit,
    /// A connection over `--max-connections-per-ip`.
    IpLimit,
    /// A handshake that did not complete in time.
    HandshakeTimeout,
    /// A connection silent for two heartbeat intervals.
    HeartbeatTimeout,
    /// A message for other nodes that found the Redis link's buffer or queue full.
    LinkBuffer,
    /// A message from other nodes that found a shard's inbox full.
    LinkInbound,
}

impl DropReason {
    /// Every reason, in label order.
    pub const ALL: [DropReason; 9] = [
        DropReason::SlowConsumer,
        DropReason::RateLimited,
        DropReason::ChannelFull,
        DropReason::ConnectionLimit,
        DropReason::IpLimit,
        DropReason::HandshakeTimeout,
        DropReason::HeartbeatTimeout,
        DropReason::LinkBuffer,
        DropReason::LinkInbound,
    ];

    /// The `reason` label value.
    pub fn label(self) -> &'static str {
        match self {
            DropReason::SlowConsumer => "slow_consumer",
            DropReason::RateLimited => "rate_limited",
            DropReason::ChannelFull => "channel_full",
            DropReason::ConnectionLimit => "connection_limit",
            DropReason::IpLimit => "ip_limit",
            DropReason::HandshakeTimeout => "handshake_timeout",
            DropReason::HeartbeatTimeout => "heartbeat_timeout",
            DropReason::LinkBuffer => "link_buffer",
            DropReason::LinkInbound => "link_inbound",
        }
    }
}

/// Close codes counted separately; anything else counts as `other`.
pub const CLOSE_CODES: [u16; 14] = [
    1000, 1001, 1002, 1003, 1005, 1006, 1007, 1008, 1009, 1011, 1013, 4001, 4008, 0,
];

/// HTTP statuses counted separately; anything else counts under the last slot.
pub const HTTP_STATUSES: [u16; 12] = [200, 400, 401, 403, 404, 405, 411, 413, 426, 431, 503, 0];

/// A counter written by exactly one thread (its shard).
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds `n`. Only the owning thread may call this: a load and a store,
    /// cheaper than `fetch_add`, and exact because nobody else writes.
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).wrapping_add(n), Relaxed);
    }

    /// Subtracts `n` (for gauges); same single-writer rule as [`Counter::add`].
    #[inline]
    pub fn sub(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).wrapping_sub(n), Relaxed);
    }

    /// Replaces the value (for gauges); same single-writer rule as [`Counter::add`].
    #[inline]
    pub fn set(&self, n: u64) {
        self.0.store(n, Relaxed);
    }

    /// The current value (any thread).
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// The metrics one shard writes.
#[derive(Debug, Default)]
pub struct ShardMetrics {
    /// Open WebSocket connections on this shard.
    pub connections: Counter,
    /// WebSocket upgrades completed on this shard.
    pub connections_total: Counter,
    /// Data messages received.
    pub messages_received: Counter,
    /// Frames queued to clients.
    pub deliveries: Counter,
    /// Bytes written to sockets.
    pub bytes_sent: Counter,
    /// Bytes read from sockets.
    pub bytes_received: Counter,
    /// Drops, indexed like [`DropReason::ALL`].
    pub dropped: [Counter; DropReason::ALL.len()],
    /// WebSocket closes, indexed like [`CLOSE_CODES`].
    pub closes: [Counter; CLOSE_CODES.len()],
    /// Rooms this shard counts for the node (a gauge, see
    /// `rooms::Registry::counted_rooms`).
    pub rooms: Counter,
    /// Bytes waiting in this shard's outboxes at the last sweep (a gauge).
    pub queued_bytes: Counter,
    /// Tokens refused: at the upgrade, on `refresh`, or expired while connected.
    pub auth_failures: Counter,
    /// Plain HTTP responses, indexed like [`HTTP_STATUSES`].
    pub http_responses: [Counter; HTTP_STATUSES.len()],
    /// Messages held in this shard's history (a gauge, sampled every sweep).
    pub history_messages: Counter,
    /// Bytes of them (a gauge).
    pub history_bytes: Counter,
    /// Joins with `since` that got every missed message.
    pub recovered: Counter,
    /// Joins with `since` that could not (another epoch, too old, in the future).
    pub recovery_gaps: Counter,
    /// Messages replayed to recovering members.
    pub replayed: Counter,
    /// Messages dropped from history to stay within `--history-max-bytes`.
    pub history_evicted: Counter,
    /// Distinct users present in the rooms this shard owns, summed over
    /// rooms (a gauge, sampled every sweep).
    pub presence_users: Counter,
    /// Presence queries answered (WebSocket and HTTP).
    pub presence_queries: Counter,
    /// `joined` events sent (one per event, whatever its recipients).
    pub joined_events: Counter,
    /// `left` events sent.
    pub left_events: Counter,
    /// Deliveries of compressed frames (permessage-deflate).
    pub compressed_deliveries: Counter,
    /// TLS handshakes completed.
    pub tls_handshakes: Counter,
    /// TLS handshakes failed, by [`crate::tls::Failure`].
    pub tls_failures: [Counter; crate::tls::Failure::ALL.len()],
}

impl ShardMetrics {
    /// Counts one drop.
    pub fn drop(&self, reason: DropReason) {
        self.dropped[reason as usize].add(1);
    }

    /// Counts one failed TLS handshake.
    pub fn tls_failure(&self, failure: crate::tls::Failure) {
        self.tls_failures[failure as usize].add(1);
    }

    /// Counts one WebSocket close with `code` (1006 for a cut socket).
    pub fn close(&self, code: u16) {
        let i = CLOSE_CODES
            .iter()
            .position(|&c| c == code)
            .unwrap_or(CLOSE_CODES.len() - 1);
        self.closes[i].add(1);
    }

    /// Counts one plain HTTP response by the status line's code.
    pub fn http_response(&self, status: &str) {
        let code: u16 = status.get(..3).and_then(|s| s.parse().ok()).unwrap_or(0);
        let i = HTTP_STATUSES
            .iter()
            .position(|&c| c == code)
            .unwrap_or(HTTP_STATUSES.len() - 1);
        self.http_responses[i].add(1);
    }
}

/// Counters of the acceptor thread, which has no shard.
#[derive(Debug, Default)]
pub struct AcceptorMetrics {
    /// TCP connections accepted.
    pub accepted: Counter,
    /// Connections refused because no shard inbox had room.
    pub channel_full: Counter,
    /// Connections over `--max-connections` closed at accept (too many
    /// were already waiting to be refused with 1013).
    pub refused: Counter,
}

/// Certificate reloads (`SIGHUP`), with `--tls-cert`.
#[derive(Debug, Default)]
pub struct TlsMetrics {
    /// Reloads that put a new certificate in place.
    pub reloads: Counter,
    /// Reloads refused (the old certificate stayed).
    pub reload_failures: Counter,
}

/// Every metrics block of a node; cheap to clone, read by scrapes.
#[derive(Debug, Clone)]
pub struct Registry {
    /// One block per shard, in shard order.
    pub shards: Arc<[Arc<ShardMetrics>]>,
    /// The acceptor's block.
    pub acceptor: Arc<AcceptorMetrics>,
    /// Certificate reloads; `None` without TLS (no TLS metrics are shown).
    pub tls: Option<Arc<TlsMetrics>>,
}

impl Registry {
    /// A registry for `shards` shards, all zero; with TLS metrics if `tls`.
    pub fn new(shards: usize, tls: bool) -> Registry {
        Registry {
            shards: (0..shards).map(|_| Arc::new(ShardMetrics::default())).collect(),
            acceptor: Arc::new(AcceptorMetrics::default()),
            tls: tls.then(|| Arc::new(TlsMetrics::default())),
        }
    }

    /// Open WebSocket connections summed over shards.
    pub fn connections(&self) -> u64 {
        self.shards.iter().map(|s| s.connections.get()).sum()
    }
}
