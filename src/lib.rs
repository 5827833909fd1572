//! roomcast: a WebSocket message broker built from sharded `mio` event loops.
//!
//! # Architecture
//!
//! ```text
//!  clients ──TCP──▶ net::Acceptor ──(socket + limits::Permit)──▶ shard inboxes (bus)
//!                                                        │
//!        ┌───────────────────────────────────────────────┘
//!        ▼
//!  shard::Shard (one thread each): mio::Poll + Slab<conn::Conn>
//!        conn::Conn: HTTP head (http::) ─▶ upgrade (http::upgrade)
//!                    ─▶ frames (ws::Decoder) ─▶ session ─▶ conn::outbox (writev)
//!        shards ◀──(bus::ShardMsg: Interest/Confirm, Frames batches)──▶ shards
//!        shards ◀──(bus::LinkHandle, bus::Post)──▶ link:: (two Redis link threads) ◀──▶ Redis
//! ```
//!
//! Modules, lowest first (an import only points down; `tests/layering.rs`
//! checks it):
//! - codecs, with no sockets or threads: `ws` (the frame codec and close
//!   codes), `http` (requests, the upgrade, the plain endpoints),
//!   `protocol` (client ops and API bodies in, server frames out, the
//!   publish checks), `rooms` (naming and each shard's topic index),
//!   `auth` (JWT into a principal), `limits` (rate limit, admission),
//!   `history` (each room's numbered recent messages, on one node),
//!   [`config`] (flags, environment and TOML into a [`Config`]);
//! - `bus` (every cross-thread message and handle) and `metrics`
//!   (per-shard counters, the link's health, the exposition);
//! - `conn`: one connection's state machine, generic over its transport;
//! - `shard` (the event loop), `link` (the Redis link), `net`
//!   (the listener and acceptor);
//! - `node`: starts, supervises and stops the threads.
//!
//! `docs/architecture.md` tells the same story at length, with a table
//! that follows one publish from socket to socket.

#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod auth;
mod bus;
pub mod config;
mod conn;
mod history;
mod http;
mod limits;
mod link;
mod metrics;
mod net;
mod node;
mod presence;
mod protocol;
mod rooms;
mod shard;
mod tls;
mod ws;

pub use config::Config;
pub use node::Node;

/// The internals that benches, fuzz targets and tests drive directly. Not
/// a stable API: everything else is private, so the compiler reports code
/// nothing uses (quinn-proto's way).
#[doc(hidden)]
pub mod internals {
    pub use crate::history::{Limits as HistoryLimits, Store as HistoryStore};
    pub use crate::http::request::{parse as parse_request, Parsed, MAX_HEAD_BYTES};
    pub use crate::http::upgrade;
    pub use crate::link::masters::{Masters, OnMoved};
    pub use crate::link::slot::of as cluster_slot;
    pub use crate::link::slot_map::{NodeAddr, Redirect, SlotMap};
    pub use crate::link::topology::Topology;
    pub use crate::link::wire::Wire;
    pub use crate::presence::Index as PresenceIndex;
    pub use crate::protocol::api::parse_publish;
    pub use crate::protocol::binary::room_of;
    pub use crate::protocol::{encode, Op, Parser};
    pub use crate::rooms::{valid_room, Topic};
    pub use crate::shard::bench::FanoutBench;
    pub use crate::tls::client::{roots as tls_roots, ClientStream as TlsClientStream};
    pub use crate::ws::deflate::{Deflater, InflateError, Inflater};
    pub use crate::ws::{frame, Decoder, Event, OpCode};
}
