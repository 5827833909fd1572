//! What a connection asks its shard to do on its behalf.
//!
//! A connection cannot reach other connections or the room index (the shard
//! owns them), so decoding a read turns each client op into an `Action`;
//! the shard applies them in order right after the connection's turn. Every
//! reply goes through here too, so replies keep the order of the requests.

use std::ops::Range;

use bytes::Bytes;

use crate::history::Since;
use crate::protocol::encode::Draft;
use crate::rooms::Topic;
use crate::ws::CloseCode;

/// Where a new member of a room starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinAt {
    /// A room without history: from its next message, no offsets.
    Plain,
    /// A room with history: after its last message (the ack says which).
    Top,
    /// A room with history: after `Since`, if every message since is held.
    Since(Since),
}

/// One request from a connection to its shard.
#[derive(Debug)]
pub enum Action {
    /// Queue this frame to the connection itself.
    Reply(Bytes),
    /// Subscribe the connection to its user topic; send the welcome when
    /// every shard knows.
    Register,
    /// Join a room; ack `id` when every shard knows.
    Join {
        /// The room.
        topic: Topic,
        /// The request's id.
        id: Option<u64>,
        /// Where the member starts, in a room with history.
        at: JoinAt,
    },
    /// Leave a room; ack `id`.
    Leave {
        /// The room.
        topic: Topic,
        /// The request's id.
        id: Option<u64>,
    },
    /// Fan `frame` out to a room (or, with `user`, to a user's connections)
    /// whose name is `name` in the turn's name arena; then ack `id`.
    Publish {
        /// Whether `name` is a user id rather than a room.
        user: bool,
        /// The topic name's bytes in `Ctx::names`.
        name: Range<usize>,
        /// The encoded frame, queued as is to every recipient.
        frame: Bytes,
        /// The request's id.
        id: Option<u64>,
    },
    /// The connection's token was refreshed: leave every room it no longer
    /// allows (telling the client, room by room), then ack `id`.
    Recheck {
        /// The refresh request's id.
        id: Option<u64>,
    },
    /// Publish to a room with history: its owner shard numbers the frame,
    /// keeps it and fans it out; ack `id` with the offset.
    PublishNumbered {
        /// The room's name in `Ctx::names`.
        name: Range<usize>,
        /// The frame up to its offset.
        draft: Draft,
        /// The request's id (an HTTP API request: the item's index).
        id: Option<u64>,
        /// From the HTTP API: the offset goes to the pending answer.
        api: bool,
    },
    /// A `history` query, answered by the room's owner shard.
    History {
        /// The room's name in `Ctx::names`.
        name: Range<usize>,
        /// Most messages.
        limit: usize,
        /// From after this position.
        since: Option<Since>,
        /// The request's id.
        id: Option<u64>,
        /// `GET /api/history`, not a WebSocket op.
        api: bool,
    },
    /// A `presence` query, answered by the room's owner shard.
    Presence {
        /// The room's name in `Ctx::names`.
        name: Range<usize>,
        /// List the users, or count them only.
        list: bool,
        /// The request's id.
        id: Option<u64>,
        /// `GET /api/presence`, not a WebSocket op.
        api: bool,
    },
    /// Start the close handshake with this code.
    Close {
        /// The close code.
        code: CloseCode,
        /// The close reason.
        reason: &'static str,
    },
}
