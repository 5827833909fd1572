//! The Redis link's health and counters, written by the link's threads and
//! read by `/healthz`, `/readyz` and `/metrics`.
//!
//! Health is judged here, from what the link records (connections up, when
//! the last self-addressed probe came back), so the HTTP endpoints need
//! nothing from the link itself.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How often the self-addressed probe is published.
pub(crate) const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// Probes missed before a connected link counts as stalled.
pub(crate) const PROBES_MISSED_STALLED: u32 = 3;
/// Unix time in nanoseconds.
pub(crate) fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// The link's health and counters, shared with `/healthz`, `/readyz` and `/metrics`.
#[derive(Debug, Default)]
pub struct LinkState {
    /// The publisher's connection is up.
    pub publisher_up: AtomicBool,
    /// The subscriber's connection is up and every subscription restored.
    pub subscriber_up: AtomicBool,
    /// Unix nanos when the subscriber last became ready, or a probe arrived.
    pub last_probe_nanos: AtomicU64,
    /// Lag of the last probe, publish to receive, in microseconds.
    pub probe_lag_micros: AtomicU64,
    /// Messages published to Redis.
    pub messages_out: AtomicU64,
    /// Messages received from Redis (from other nodes).
    pub messages_in: AtomicU64,
    /// Connections (re-)established after a failure.
    pub reconnects: AtomicU64,
    /// Messages waiting in the outage buffer.
    pub buffer_depth: AtomicU64,
    /// Messages for other nodes dropped because the outage buffer was full,
    /// or the link was gone at shutdown (`reason="link_buffer"`).
    pub dropped: AtomicU64,
    /// Messages from other nodes dropped because a shard's inbox was full
    /// (`reason="link_inbound"`).
    pub dropped_inbound: AtomicU64,
    /// Channels subscribed.
    pub subscriptions: AtomicU64,
    /// The outage buffer is held until the nodes that were subscribed to
    /// its channels have re-subscribed.
    pub flush_waiting: AtomicBool,
    /// Messages published after an outage that fewer subscribers received
    /// than the channel had before it (other nodes may have missed them).
    pub unconfirmed: AtomicU64,
    /// Publishes, joins and history queries of rooms with history that
    /// could not be served because Redis was unreachable or refused
    /// (answered `unavailable`).
    pub history_errors: AtomicU64,
    /// Bumped by the subscriber each time all subscriptions are in place.
    pub resubscribed: AtomicU64,
    /// The Redis nodes the subscriber uses: the one Redis, or each master
    /// of a cluster that carries a channel this node needs.
    pub shards: std::sync::Mutex<Vec<RedisShard>>,
}

/// One Redis node as the subscriber sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RedisShard {
    /// `host:port`.
    pub node: String,
    /// Its subscriptions are in place and it answers.
    pub up: bool,
    /// Channels subscribed there.
    pub subscriptions: u64,
    /// Messages received from it.
    pub messages_in: u64,
}

/// What the link's health is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// Connected and delivering.
    Up,
    /// Degraded, with the reason.
    Degraded(String),
}

impl LinkState {
    /// A link that has not connected yet, counted as fresh until its first
    /// probe is due.
    pub fn new() -> LinkState {
        LinkState {
            last_probe_nanos: AtomicU64::new(unix_nanos()),
            ..LinkState::default()
        }
    }

    /// Up, down, or connected but not delivering probes.
    pub fn health(&self) -> Health {
        if !self.publisher_up.load(Relaxed) || !self.subscriber_up.load(Relaxed) {
            let down: Vec<String> = self
                .shards
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .filter(|s| !s.up)
                .map(|s| s.node.clone())
                .collect();
            if !down.is_empty() {
                return Health::Degraded(format!("redis link down: {} not ready", down.join(", ")));
            }
            return Health::Degraded("redis link down".into());
        }
        match self.stalled_for() {
            Some(since) => Health::Degraded(format!("redis link stalled: no probe for {} ms", since.as_millis())),
            None => Health::Up,
        }
    }

    /// How long no probe has come back, once that is longer than
    /// `PROBES_MISSED_STALLED` probe intervals: Redis is connected but not
    /// answering (frozen, or overloaded).
    pub fn stalled_for(&self) -> Option<Duration> {
        let since = Duration::from_nanos(unix_nanos().saturating_sub(self.last_probe_nanos.load(Relaxed)));
        (since > PROBE_INTERVAL * PROBES_MISSED_STALLED).then_some(since)
    }

    /// 1 when up and delivering, else 0.
    pub fn is_up(&self) -> bool {
        self.health() == Health::Up
    }
}
