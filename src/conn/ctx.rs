//! What a shard lends a connection for one call, in a few parts: the
//! node's read-only state ([`Shared`]), the shard's ([`Env`]), its per-turn
//! working memory ([`Work`]), this turn's fanned-out frames, and the time.

use std::sync::Arc;
use std::time::Instant;

use crate::auth::Authenticator;
use crate::config::Config;
use crate::http::NodeView;
use crate::metrics::{self, Health, LinkState, Registry, ShardMetrics};
use crate::protocol::Parser;

use super::outbox::STAGE_BYTES;
use super::turn::TurnLog;
use super::Action;

/// What every shard of a node shares, read-only.
#[derive(Debug, Clone)]
pub(crate) struct Shared {
    /// The node's configuration.
    pub config: Arc<Config>,
    /// Every shard's metrics, for `/metrics`.
    pub registry: Registry,
    /// JWT verification; `None` in dev mode.
    pub auth: Option<Arc<Authenticator>>,
    /// This node's id, part of anonymous user names.
    pub node_id: Arc<str>,
    /// Health and counters of the Redis link, if there is one.
    pub link: Option<Arc<LinkState>>,
    /// The node's connection counts (a connection from a trusted proxy is
    /// counted against its client's address once the request names it).
    pub admission: Arc<crate::limits::Admission>,
    /// Makes TLS connections, with `--tls-cert`.
    pub tls: Option<Arc<crate::tls::Acceptor>>,
}

/// One shard's read-only surroundings.
#[derive(Debug)]
pub(crate) struct Env {
    /// Index of the shard, for logs and node-unique connection numbers.
    pub shard: usize,
    /// Number of shards.
    pub shards: usize,
    /// What the node shares.
    pub shared: Shared,
    /// This shard's metrics (written only by it).
    pub metrics: Arc<ShardMetrics>,
}

impl Env {
    /// Shard `shard`'s surroundings.
    pub fn new(shard: usize, shared: Shared) -> Env {
        Env {
            shard,
            shards: shared.config.shards,
            metrics: shared.registry.shards[shard].clone(),
            shared,
        }
    }

    /// The node's configuration.
    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// JWT verification; `None` in dev mode.
    pub fn auth(&self) -> Option<&Authenticator> {
        self.shared.auth.as_deref()
    }
}

impl NodeView for Env {
    fn degraded(&self) -> Option<String> {
        match self.shared.link.as_deref().map(LinkState::health) {
            Some(Health::Degraded(why)) => Some(why),
            _ => None,
        }
    }

    fn metrics(&self) -> String {
        metrics::render(&self.shared.registry, self.shared.link.as_deref())
    }
}

/// A shard's working memory, reused across calls and turns.
#[derive(Debug)]
pub(crate) struct Work {
    /// Staging buffer for writes (`Outbox::flush`).
    pub stage: Vec<u8>,
    /// The JSON parser of client ops.
    pub parser: Parser,
    /// Requests for the shard, applied after the call.
    pub actions: Vec<Action>,
    /// An empty vector with capacity, swapped with `actions` while they are
    /// applied: no allocation per message.
    pub applying: Vec<Action>,
    /// Topic names referenced by `Action::Publish`, reset every turn.
    pub names: String,
    /// Inflates compressed client messages (permessage-deflate), one at a time.
    pub inflater: crate::ws::deflate::Inflater,
    /// The last inflated message.
    pub inflated: Vec<u8>,
    /// Compresses `/echo`'s answers for clients that negotiated it.
    pub deflater: crate::ws::deflate::Deflater,
}

impl Default for Work {
    fn default() -> Work {
        Work {
            stage: Vec::with_capacity(STAGE_BYTES),
            parser: Parser::new(),
            actions: Vec::new(),
            applying: Vec::new(),
            names: String::new(),
            inflater: Default::default(),
            inflated: Vec::new(),
            deflater: Default::default(),
        }
    }
}

/// The time of a loop turn: monotonic for timeouts, Unix seconds for tokens.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    /// Monotonic time of the turn.
    pub now: Instant,
    /// Seconds since the Unix epoch (token expiry).
    pub unix: u64,
}

/// What a connection may use during one call.
pub(crate) struct Ctx<'a> {
    /// The shard's read-only surroundings.
    pub env: &'a Env,
    /// The shard's working memory.
    pub work: &'a mut Work,
    /// The frames fanned out this turn, which outboxes queue by index.
    pub turn: &'a TurnLog,
    /// The time of this turn.
    pub now: Instant,
    /// Seconds since the Unix epoch at this turn.
    pub unix_now: u64,
}

impl<'a> Ctx<'a> {
    /// A context from its parts.
    pub fn new(env: &'a Env, work: &'a mut Work, turn: &'a TurnLog, clock: Clock) -> Ctx<'a> {
        Ctx {
            env,
            work,
            turn,
            now: clock.now,
            unix_now: clock.unix,
        }
    }

    /// The node's configuration.
    pub fn config(&self) -> &'a Config {
        &self.env.shared.config
    }

    /// This shard's metrics.
    pub fn metrics(&self) -> &'a ShardMetrics {
        &self.env.metrics
    }
}
