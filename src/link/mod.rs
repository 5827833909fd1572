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
//!
//! Rooms with history are numbered and kept by Redis itself
//! (`history.rs`: one atomic script per publish), so every node sees the
//! same offsets; the subscriber reads positions and replays on a second
//! connection and admits each joining member at its exact point in the
//! room's stream (`reads.rs`).

mod announcer;
mod backoff;
pub(crate) mod envelope;
mod history;
mod ledger;
pub(crate) mod masters;
mod presence;
mod publisher;
mod reads;
mod receivers;
pub(crate) mod slot;
pub(crate) mod slot_map;
mod socket;
mod subscriber;
mod target;
pub(crate) mod topology;
pub mod wire;

use std::sync::Arc;

use crate::bus::{LinkHandle, ShardHandle};
use crate::config::{RedisConfig, RedisEndpoint};
use crate::metrics::LinkState;
use crate::rooms::Topic;

pub(crate) use publisher::Publisher;
pub(crate) use subscriber::Subscriber;

use slot_map::NodeAddr;
use target::Spec;
use topology::Topology;

/// Capacity of the shards' queue of publish batches to the publisher.
const PUBLISH_QUEUE: usize = 4096;

/// Channel names (documented in `docs/cluster.md`; the braces are a Redis
/// Cluster hash tag).
pub(crate) fn channel(prefix: &str, topic: &Topic) -> Vec<u8> {
    match topic {
        Topic::Room(n) => slot::key(prefix, "room", n),
        Topic::User(n) => slot::key(prefix, "user", n),
    }
}

/// The probe channel of node `node`.
pub(crate) fn probe_channel(prefix: &str, node: &str) -> Vec<u8> {
    format!("{prefix}:probe:{{{node}}}").into_bytes()
}

/// The link's two threads, ready to run, and the handle shards reach them by.
pub(crate) struct Link {
    /// For the shards.
    pub handle: LinkHandle,
    /// Run on `roomcast-redis-sub`.
    pub subscriber: Subscriber,
    /// Run on `roomcast-redis-pub`.
    pub publisher: Publisher,
}

impl Link {
    /// Prepares both threads (they connect when run); the node spawns them.
    /// They record their health and counters in `state`.
    pub fn new(
        cfg: &RedisConfig,
        node_id: Arc<str>,
        shards: Vec<ShardHandle>,
        state: Arc<LinkState>,
    ) -> std::io::Result<Link> {
        let spec = spec(cfg)?;
        let (interest_tx, interest_rx) = crossbeam_channel::bounded(64 * 1024);
        let (publish_tx, publish_rx) = crossbeam_channel::bounded(PUBLISH_QUEUE);
        let (subscriber, waker) =
            Subscriber::new(&spec, cfg, node_id.clone(), shards.clone(), interest_rx, state.clone())?;
        let publisher = Publisher::new(spec, cfg, node_id.clone(), shards.clone(), publish_rx, state.clone())?;
        Ok(Link {
            handle: LinkHandle::new(interest_tx, publish_tx, waker, state),
            subscriber,
            publisher,
        })
    }
}

/// How to reach Redis, from the configuration.
fn spec(cfg: &RedisConfig) -> std::io::Result<Spec> {
    let invalid = |what: &str, e: &dyn std::fmt::Display| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{what}: {e}"))
    };
    // rediss:// with a private CA; without one, the system's roots.
    let root_cert = match &cfg.tls_ca {
        Some(ca) => Some(
            std::fs::read(ca)
                .map_err(|e| std::io::Error::new(e.kind(), format!("--redis-tls-ca {}: {e}", ca.display())))?,
        ),
        None => None,
    };
    match &cfg.endpoint {
        RedisEndpoint::One(url) => {
            let info = redis::IntoConnectionInfo::into_connection_info(url.as_str())
                .map_err(|e| invalid("--redis-url", &e))?;
            let client = match root_cert {
                Some(pem) => redis::Client::build_with_tls(
                    info,
                    redis::TlsCertificates {
                        client_tls: None,
                        root_cert: Some(pem),
                    },
                ),
                None => redis::Client::open(info),
            }
            .map_err(|e| invalid("--redis-url", &e))?;
            Ok(Spec::One(client))
        }
        RedisEndpoint::Cluster(seeds) => {
            let mut addrs = Vec::with_capacity(seeds.len());
            for seed in seeds {
                let info = redis::IntoConnectionInfo::into_connection_info(seed.as_str())
                    .map_err(|e| invalid("--redis-cluster-nodes", &e))?;
                match info.addr() {
                    redis::ConnectionAddr::Tcp(host, port) | redis::ConnectionAddr::TcpTls { host, port, .. } => addrs
                        .push(NodeAddr {
                            host: host.clone(),
                            port: *port,
                        }),
                    _ => return Err(invalid("--redis-cluster-nodes", &"only host:port nodes")),
                }
            }
            let info = redis::IntoConnectionInfo::into_connection_info(seeds[0].as_str())
                .map_err(|e| invalid("--redis-cluster-nodes", &e))?;
            Ok(Spec::Cluster(Topology::new(addrs, info).with_ca(root_cert)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_names_round_trip() {
        let room = Topic::Room(Arc::from("game-{1}"));
        let ch = channel("rc", &room);
        assert_eq!(ch, b"rc:room:{game-{1}}");
        let user = Topic::User(Arc::from("ann"));
        assert_eq!(channel("rc", &user), b"rc:user:{ann}");
        assert_eq!(probe_channel("rc", "n1"), b"rc:probe:{n1}");
    }
}
