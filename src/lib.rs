//! roomcast: a WebSocket message broker built from sharded `mio` event loops.
//!
//! # Architecture
//!
//! ```text
//!  clients ──TCP──▶ net::Acceptor ──(socket, round-robin)──▶ shard inboxes
//!                                                        │
//!        ┌───────────────────────────────────────────────┘
//!        ▼
//!  shard::Shard (one thread each): mio::Poll + Slab<conn::Conn>
//!        conn::Conn: HTTP head (http::) ─▶ upgrade (ws::handshake)
//!                    ─▶ frames (ws::Decoder) ─▶ endpoint ─▶ conn::outbox (writev)
//!        shards ◀──(Interest/Confirm, Deliver batches)──▶ shards
//!        shards ◀──────────────▶ cluster:: (two Redis link threads) ◀──▶ Redis
//! ```
//!
//! - [`config`]: flags, environment and TOML resolved into a [`config::Config`].
//! - [`node`]: starts and stops the threads.
//! - [`net`]: the listener, the acceptor and admission against `--max-connections`.
//! - [`shard`]: the event loop, its inbox and timer sweep.
//! - [`conn`]: the connection state machine and its outbox.
//! - [`http`]: request parsing, routes and plain responses.
//! - [`ws`]: the handshake, the frame codec and close codes.
//! - [`metrics`]: per-shard counters and the Prometheus exposition.
//! - [`auth`]: JWT verification into a principal (user id, allowed rooms, expiry).
//! - [`protocol`]: client ops in, server frames out (encoded once).
//! - [`rooms`]: room naming and each shard's topic index.
//! - [`limits`]: per-connection rate limits.
//! - [`cluster`]: the Redis link between nodes.
//!
//! `docs/architecture.md` tells the same story at length.

#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod auth;
pub mod cluster;
pub mod config;
pub mod conn;
pub mod http;
pub mod limits;
pub mod metrics;
pub mod net;
pub mod node;
pub mod protocol;
pub mod rooms;
pub mod shard;
pub mod ws;

pub use config::Config;
pub use node::Node;
