//! The Redis link: several roomcast nodes share rooms and users through
//! Redis pub/sub (`docs/cluster.md`).
//!
//! Two threads of its own, so a shard never waits on Redis:
//! - the **subscriber** (`subscriber.rs`, a small mio loop speaking RESP)
//!   subscribes to `<prefix>:room:{R}` while any shard has a member of R and
//!   to `<prefix>:user:{U}` while U has a local connection, confirms each
//!   subscription back to the shard that asked (its join ack or welcome
//!   waits for that), and hands incoming frames to the shards with members;
//! - the **publisher** (`publisher.rs`, the `redis` crate) publishes every
//!   local publish once, pipelined, buffering (bounded) while Redis is
//!   unreachable and flushing after the subscriber has re-subscribed.
//!
//! A self-addressed probe every second measures publish-to-receive lag and
//! catches a link that is connected but not delivering.

pub mod backoff;
pub mod envelope;
mod publisher;
pub mod resp;
mod subscriber;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use crossbeam_channel::{Sender, TrySendError};
use mio::Waker;

use crate::rooms::Topic;
use crate::shard::ShardHandle;

/// How often the self-addressed probe is published.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// Probes missed before a connected link counts as stalled.
pub const PROBES_MISSED_STALLED: u32 = 3;
/// Capacity of the shards' queue of publish batches to the publisher.
const PUBLISH_QUEUE: usize = 4096;

/// Link settings, from the configuration.
#[derive(Debug, Clone)]
pub struct LinkConfig {
    /// `redis://[user:pass@]host:port[/db]`.
    pub url: String,
    /// Namespace of every channel.
    pub prefix: String,
    /// Messages kept while Redis is unreachable; more are dropped and counted.
    pub buffer_messages: usize,
}

/// Channel names (documented in `docs/cluster.md`; the braces are a Redis
/// Cluster hash tag).
pub fn channel(prefix: &str, topic: &Topic) -> Vec<u8> {
    let (kind, name) = match topic {
        Topic::Room(n) => ("room", n),
        Topic::User(n) => ("user", n),
    };
    format!("{prefix}:{kind}:{{{name}}}").into_bytes()
}

/// The topic a channel name stands for, if it is one of ours.
pub fn topic_of(prefix: &str, channel: &[u8]) -> Option<Topic> {
    let s = std::str::from_utf8(channel).ok()?;
    let rest = s.strip_prefix(prefix)?.strip_prefix(':')?;
    let (kind, tagged) = rest.split_once(':')?;
    let name = tagged.strip_prefix('{')?.strip_suffix('}')?;
    match kind {
        "room" => Some(Topic::Room(Arc::from(name))),
        "user" => Some(Topic::User(Arc::from(name))),
        _ => None,
    }
}

/// The probe channel of node `node`.
pub fn probe_channel(prefix: &str, node: &str) -> Vec<u8> {
    format!("{prefix}:probe:{{{node}}}").into_bytes()
}

/// Unix time in nanoseconds.
pub fn unix_nanos() -> u64 {
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
    /// Messages dropped because the outage buffer was full or the publish
    /// queue was.
    pub dropped: AtomicU64,
    /// Channels subscribed.
    pub subscriptions: AtomicU64,
    /// Bumped by the subscriber each time all subscriptions are in place.
    pub resubscribed: AtomicU64,
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
    /// Up, down, or connected but not delivering probes.
    pub fn health(&self) -> Health {
        if !self.publisher_up.load(Relaxed) || !self.subscriber_up.load(Relaxed) {
            return Health::Degraded("redis link down".into());
        }
        let since = unix_nanos().saturating_sub(self.last_probe_nanos.load(Relaxed));
        let limit = PROBE_INTERVAL * PROBES_MISSED_STALLED;
        if since > limit.as_nanos() as u64 {
            return Health::Degraded(format!("redis link stalled: no probe for {} ms", since / 1_000_000));
        }
        Health::Up
    }

    /// 1 when up and delivering, else 0.
    pub fn is_up(&self) -> bool {
        self.health() == Health::Up
    }
}

/// A subscription change from a shard.
#[derive(Debug)]
pub struct Interest {
    /// The room or user.
    pub topic: Topic,
    /// The shard that gained its first (`on`) or lost its last member.
    pub shard: usize,
    /// Members appeared or are all gone.
    pub on: bool,
    /// Echoed in the `Confirm` the shard waits for (when `on`).
    pub seq: u64,
}

/// How shards reach the link.
#[derive(Debug, Clone)]
pub struct LinkHandle {
    interest: Sender<Interest>,
    publish: Sender<Vec<(Topic, Bytes)>>,
    waker: Arc<Waker>,
    /// Health and counters.
    pub state: Arc<LinkState>,
}

impl LinkHandle {
    /// Tells the subscriber about a first/last local member; `Err` gives the
    /// message back when its queue is full (the caller retries, never drops).
    pub fn interest(&self, msg: Interest) -> Result<(), Interest> {
        match self.interest.try_send(msg) {
            Ok(()) => {
                let _ = self.waker.wake();
                Ok(())
            }
            Err(TrySendError::Full(m)) => Err(m),
            // The link is gone (shutting down): nothing to subscribe.
            Err(TrySendError::Disconnected(_)) => Ok(()),
        }
    }

    /// Hands this turn's publishes to the publisher; a full queue drops
    /// them (counted) rather than stall the shard.
    pub fn publish(&self, batch: Vec<(Topic, Bytes)>) {
        let n = batch.len() as u64;
        if self.publish.try_send(batch).is_err() {
            self.state.dropped.fetch_add(n, Relaxed);
        }
    }
}

/// Starts both link threads; shards get the returned handle.
pub fn start(
    cfg: LinkConfig,
    node_id: Arc<str>,
    shards: Vec<ShardHandle>,
) -> std::io::Result<(LinkHandle, Vec<std::thread::JoinHandle<()>>)> {
    let info = redis::IntoConnectionInfo::into_connection_info(cfg.url.as_str())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("--redis-url: {e}")))?;
    let state = Arc::new(LinkState {
        last_probe_nanos: AtomicU64::new(unix_nanos()),
        ..LinkState::default()
    });
    let (interest_tx, interest_rx) = crossbeam_channel::bounded(64 * 1024);
    let (publish_tx, publish_rx) = crossbeam_channel::bounded(PUBLISH_QUEUE);
    let (sub, waker) = subscriber::Subscriber::new(&info, &cfg, node_id.clone(), shards, interest_rx, state.clone())?;
    let publisher = publisher::Publisher::new(info, &cfg, node_id, publish_rx, state.clone());
    let threads = vec![
        std::thread::Builder::new()
            .name("roomcast-redis-sub".into())
            .spawn(move || sub.run())?,
        std::thread::Builder::new()
            .name("roomcast-redis-pub".into())
            .spawn(move || publisher.run())?,
    ];
    Ok((
        LinkHandle {
            interest: interest_tx,
            publish: publish_tx,
            waker,
            state,
        },
        threads,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_names_round_trip() {
        let room = Topic::Room(Arc::from("game-{1}"));
        let ch = channel("rc", &room);
        assert_eq!(ch, b"rc:room:{game-{1}}");
        assert_eq!(topic_of("rc", &ch), Some(room));
        let user = Topic::User(Arc::from("ann"));
        assert_eq!(topic_of("rc", &channel("rc", &user)), Some(user));
        assert_eq!(topic_of("other", b"rc:room:{x}"), None);
        assert_eq!(probe_channel("rc", "n1"), b"rc:probe:{n1}");
    }
}
