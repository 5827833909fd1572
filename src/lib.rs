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

mod auth;
mod bus;
mod cluster;
pub mod config;
mod conn;
mod http;
mod limits;
mod metrics;
mod net;
mod node;
mod protocol;
mod rooms;
mod shard;
mod ws;

pub use config::Config;
pub use node::Node;

/// The internals that benches, fuzz targets and tests drive directly. Not
/// a stable API: everything else is private, so the compiler reports code
/// nothing uses (quinn-proto's way).
#[doc(hidden)]
pub mod internals {
    pub use crate::cluster::wire::Wire;
    pub use crate::http::request::{parse as parse_request, Parsed, MAX_HEAD_BYTES};
    pub use crate::http::upgrade;
    pub use crate::protocol::api::parse_publish;
    pub use crate::protocol::binary::room_of;
    pub use crate::protocol::{frames, Op, Parser};
    pub use crate::rooms::{valid_room, Topic};
    pub use crate::shard::bench::FanoutBench;
    pub use crate::ws::{frame, Decoder, Event, OpCode};
}
