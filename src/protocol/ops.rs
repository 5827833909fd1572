//! Parsing client ops: `join`, `leave`, `publish`, `send`, `refresh`,
//! `history`, `presence`, `ping`.
//!
//! simd-json rewrites its input while parsing, so the payload is copied into
//! a per-shard scratch buffer first (the original stays intact for splicing
//! `data`). It is parsed into a tape (a flat array of nodes), not a tree of
//! values: fields are found by a scan of the tape, and the scratch, the
//! tape and simd-json's buffers are all reused, so parsing a message
//! allocates nothing once they have grown to the largest message (a tree
//! allocated a map per object: a tenth of a round trip's user-space time,
//! `docs/benchmarks.md`).

use std::ops::Range;

use simd_json::prelude::*;
use simd_json::tape::{Tape, Value};
use simd_json::Buffers;

use super::error::{ErrorCode, OpError};
use super::span;

/// A client operation; strings borrow from the parser's scratch buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Op<'a> {
    /// Join a room; with `since`, recover what was missed after it.
    Join {
        /// The room name (not yet validated).
        room: &'a str,
        /// Where the client stopped, to recover from.
        since: Option<Since<'a>>,
    },
    /// Ask for a room's recent messages.
    History {
        /// The room name (not yet validated).
        room: &'a str,
        /// How many at most (1 to `MAX_HISTORY_LIMIT`).
        limit: usize,
        /// From after this position, instead of the latest.
        since: Option<Since<'a>>,
    },
    /// Ask who is in a room.
    Presence {
        /// The room name (not yet validated).
        room: &'a str,
        /// List the users (`true`, the default) or give the count alone.
        list: bool,
    },
    /// Leave a room (idempotent).
    Leave {
        /// The room name (not yet validated).
        room: &'a str,
    },
    /// Publish `data` to every member of a room.
    Publish {
        /// The room name (not yet validated).
        room: &'a str,
        /// Where the raw `data` value sits in the original payload.
        data: Range<usize>,
    },
    /// Send `data` to every connection of a user.
    Send {
        /// The target user id.
        user: &'a str,
        /// Where the raw `data` value sits in the original payload.
        data: Range<usize>,
    },
    /// Ask for an ack and nothing else: an application-level keepalive for
    /// clients (browsers) that cannot see WebSocket pings.
    Ping,
    /// Replace the connection's token with a newer one for the same user.
    Refresh {
        /// The new JWT.
        token: &'a str,
    },
}

/// A position as a client gives it: `{"offset":N,"epoch":E}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Since<'a> {
    /// The last offset the client received.
    pub offset: u64,
    /// The stream it belongs to, as the server named it.
    pub epoch: &'a str,
}

/// Messages a `history` query returns when it gives no `limit`.
pub const DEFAULT_HISTORY_LIMIT: usize = 100;
/// Most messages one `history` query may ask for.
pub const MAX_HISTORY_LIMIT: usize = 1000;

/// A parsed request: the op and its optional correlation id.
#[derive(Debug, PartialEq, Eq)]
pub struct Request<'a> {
    /// The client's `id`, echoed in the ack or error.
    pub id: Option<u64>,
    /// What the client asked for.
    pub op: Op<'a>,
}

/// Reusable parsing state; one per shard.
#[derive(Default)]
pub struct Parser {
    scratch: Vec<u8>,
    buffers: Option<Buffers>,
    /// Empty between calls (`Tape::reset`), kept for its capacity.
    tape: Option<Tape<'static>>,
}

impl std::fmt::Debug for Parser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parser")
            .field("scratch", &self.scratch.capacity())
            .finish()
    }
}

fn bad(id: Option<u64>, message: &'static str) -> OpError {
    OpError::new(id, ErrorCode::BadRequest, message)
}

fn str_field<'v>(obj: Value<'_, 'v>, key: &str, id: Option<u64>) -> Result<&'v str, OpError> {
    match obj.get(key) {
        Some(v) => v
            .into_string()
            .ok_or_else(|| bad(id, field_message(key, "must be a string"))),
        None => Err(bad(id, field_message(key, "is required"))),
    }
}

/// Static messages per field, so errors allocate nothing.
fn field_message(key: &str, what: &str) -> &'static str {
    match (key, what) {
        ("room", "is required") => "field \"room\" is required",
        ("room", _) => "field \"room\" must be a string",
        ("user", "is required") => "field \"user\" is required",
        ("user", _) => "field \"user\" must be a string",
        ("token", "is required") => "field \"token\" is required",
        ("token", _) => "field \"token\" must be a string",
        _ => "a field is missing or has the wrong type",
    }
}

/// The optional `since` object.
fn since_field<'v>(obj: Value<'_, 'v>, id: Option<u64>) -> Result<Option<Since<'v>>, OpError> {
    const SHAPE: &str = "field \"since\" must be {\"offset\": a non-negative integer, \"epoch\": a string}";
    let Some(v) = obj.get("since") else {
        return Ok(None);
    };
    let offset = v.get("offset").and_then(|o| o.as_u64()).ok_or_else(|| bad(id, SHAPE))?;
    let epoch = v
        .get("epoch")
        .and_then(|e| e.into_string())
        .ok_or_else(|| bad(id, SHAPE))?;
    Ok(Some(Since { offset, epoch }))
}

/// The optional `limit` of a `history` query.
fn limit_field(obj: Value<'_, '_>, id: Option<u64>) -> Result<usize, OpError> {
    match obj.get("limit") {
        None => Ok(DEFAULT_HISTORY_LIMIT),
        Some(v) => match v.as_u64() {
            Some(n @ 1..) if n as usize <= MAX_HISTORY_LIMIT => Ok(n as usize),
            _ => Err(bad(id, "field \"limit\" must be an integer from 1 to 1000")),
        },
    }
}

fn data_field(payload: &[u8], id: Option<u64>) -> Result<Range<usize>, OpError> {
    match span::field(payload, "data") {
        Ok(Some(r)) => Ok(r),
        Ok(None) => Err(bad(id, "field \"data\" is required")),
        Err(span::DuplicateKey) => Err(bad(id, "field \"data\" appears twice")),
    }
}

impl Parser {
    /// A parser with empty buffers.
    pub fn new() -> Parser {
        Parser::default()
    }

    /// Parses one text message and hands the request to `f` (the request
    /// borrows the parser's scratch, so it lives only during the call).
    pub fn parse<R>(&mut self, payload: &[u8], f: impl FnOnce(Request<'_>) -> R) -> Result<R, OpError> {
        self.scratch.clear();
        self.scratch.extend_from_slice(payload);
        let buffers = self.buffers.get_or_insert_with(|| Buffers::new(payload.len()));
        let mut tape = self.tape.take().unwrap_or_else(Tape::null).reset();
        let result = match simd_json::fill_tape(&mut self.scratch, buffers, &mut tape) {
            Ok(()) => request(tape.as_value(), payload).map(f),
            Err(_) => Err(OpError::new(None, ErrorCode::BadJson, "message is not valid JSON")),
        };
        self.tape = Some(tape.reset());
        result
    }
}

/// The request in a parsed message; `payload` is the message as received.
fn request<'a>(value: Value<'_, 'a>, payload: &[u8]) -> Result<Request<'a>, OpError> {
    if value.as_object().is_none() {
        return Err(bad(None, "message must be a JSON object"));
    }
    let id = match value.get("id") {
        None => None,
        Some(v) => Some(
            v.as_u64()
                .ok_or_else(|| bad(None, "field \"id\" must be a non-negative integer"))?,
        ),
    };
    let op = match value.get("op") {
        Some(v) => v
            .into_string()
            .ok_or_else(|| bad(id, "field \"op\" must be a string"))?,
        None => return Err(bad(id, "field \"op\" is required")),
    };
    let op = match op {
        "join" => Op::Join {
            room: str_field(value, "room", id)?,
            since: since_field(value, id)?,
        },
        "history" => Op::History {
            room: str_field(value, "room", id)?,
            limit: limit_field(value, id)?,
            since: since_field(value, id)?,
        },
        "presence" => Op::Presence {
            room: str_field(value, "room", id)?,
            list: match value.get("list") {
                None => true,
                Some(v) => v
                    .as_bool()
                    .ok_or_else(|| bad(id, "field \"list\" must be true or false"))?,
            },
        },
        "leave" => Op::Leave {
            room: str_field(value, "room", id)?,
        },
        "publish" => Op::Publish {
            room: str_field(value, "room", id)?,
            data: data_field(payload, id)?,
        },
        "send" => Op::Send {
            user: str_field(value, "user", id)?,
            data: data_field(payload, id)?,
        },
        "refresh" => Op::Refresh {
            token: str_field(value, "token", id)?,
        },
        "ping" => Op::Ping,
        _ => return Err(OpError::new(id, ErrorCode::UnknownOp, "unknown op")),
    };
    Ok(Request { id, op })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<String, OpError> {
        Parser::new().parse(json.as_bytes(), |r| format!("{r:?}"))
    }

    fn code(json: &str) -> (Option<u64>, ErrorCode) {
        let e = parse(json).unwrap_err();
        (e.id, e.code)
    }

    #[test]
    fn presence_lists_unless_asked_not_to() {
        let mut p = Parser::new();
        for (json, list) in [
            (r#"{"op":"presence","room":"r","id":1}"#, true),
            (r#"{"op":"presence","room":"r","id":1,"list":false}"#, false),
        ] {
            p.parse(json.as_bytes(), |r| assert_eq!(r.op, Op::Presence { room: "r", list }))
                .unwrap();
        }
    }

    #[test]
    fn parses_every_op() {
        let mut p = Parser::new();
        let json = br#"{"op":"publish","room":"lobby","data":{"t":1.0},"id":9}"#;
        p.parse(json, |r| {
            assert_eq!(r.id, Some(9));
            let Op::Publish { room, data } = r.op else { panic!() };
            assert_eq!(room, "lobby");
            assert_eq!(&json[data], br#"{"t":1.0}"#);
        })
        .unwrap();
        p.parse(br#"{"op":"join","room":"a\"b"}"#, |r| {
            assert_eq!(
                r.op,
                Op::Join {
                    room: "a\"b",
                    since: None
                }
            )
        })
        .unwrap();
        p.parse(br#"{"op":"join","room":"r","since":{"offset":7,"epoch":"e"}}"#, |r| {
            let since = Some(Since { offset: 7, epoch: "e" });
            assert_eq!(r.op, Op::Join { room: "r", since })
        })
        .unwrap();
        p.parse(br#"{"op":"history","room":"r"}"#, |r| {
            let (limit, since) = (DEFAULT_HISTORY_LIMIT, None);
            assert_eq!(
                r.op,
                Op::History {
                    room: "r",
                    limit,
                    since
                }
            )
        })
        .unwrap();
        p.parse(
            br#"{"op":"history","room":"r","limit":5,"since":{"offset":0,"epoch":"e"}}"#,
            |r| {
                let since = Some(Since { offset: 0, epoch: "e" });
                assert_eq!(
                    r.op,
                    Op::History {
                        room: "r",
                        limit: 5,
                        since
                    }
                )
            },
        )
        .unwrap();
        p.parse(br#"{"op":"leave","room":"x"}"#, |r| {
            assert_eq!(r.op, Op::Leave { room: "x" })
        })
        .unwrap();
        p.parse(br#"{"op":"send","user":"bob","data":null}"#, |r| {
            assert!(matches!(r.op, Op::Send { user: "bob", .. }))
        })
        .unwrap();
        p.parse(br#"{"op":"refresh","token":"t"}"#, |r| {
            assert_eq!(r.op, Op::Refresh { token: "t" })
        })
        .unwrap();
    }

    #[test]
    fn ping_is_an_op() {
        let mut p = Parser::new();
        p.parse(br#"{"op":"ping","id":5}"#, |r| {
            assert_eq!((r.op, r.id), (Op::Ping, Some(5)))
        })
        .unwrap();
    }

    #[test]
    fn errors_have_the_documented_codes() {
        assert_eq!(code("{not json"), (None, ErrorCode::BadJson));
        assert_eq!(code("[1,2]"), (None, ErrorCode::BadRequest));
        assert_eq!(code("\"join\""), (None, ErrorCode::BadRequest));
        assert_eq!(code(r#"{"op":"dance","id":4}"#), (Some(4), ErrorCode::UnknownOp));
        assert_eq!(code(r#"{"room":"r","id":4}"#), (Some(4), ErrorCode::BadRequest));
        assert_eq!(code(r#"{"op":7}"#), (None, ErrorCode::BadRequest));
        assert_eq!(code(r#"{"op":"join","id":1}"#), (Some(1), ErrorCode::BadRequest));
        assert_eq!(
            code(r#"{"op":"join","room":5,"id":1}"#),
            (Some(1), ErrorCode::BadRequest)
        );
        assert_eq!(
            code(r#"{"op":"publish","room":"r","id":2}"#),
            (Some(2), ErrorCode::BadRequest)
        );
        assert_eq!(
            code(r#"{"op":"join","room":"r","id":-1}"#),
            (None, ErrorCode::BadRequest)
        );
        assert_eq!(
            code(r#"{"op":"join","room":"r","id":"x"}"#),
            (None, ErrorCode::BadRequest)
        );
        for bad in [
            r#"{"op":"join","room":"r","id":3,"since":5}"#,
            r#"{"op":"join","room":"r","id":3,"since":{"offset":-1,"epoch":"e"}}"#,
            r#"{"op":"join","room":"r","id":3,"since":{"offset":1}}"#,
            r#"{"op":"join","room":"r","id":3,"since":{"offset":1.5,"epoch":"e"}}"#,
            r#"{"op":"history","room":"r","id":3,"limit":0}"#,
            r#"{"op":"history","room":"r","id":3,"limit":1001}"#,
            r#"{"op":"history","room":"r","id":3,"limit":"all"}"#,
            r#"{"op":"presence","id":3}"#,
            r#"{"op":"presence","room":"r","id":3,"list":"no"}"#,
        ] {
            assert_eq!(code(bad), (Some(3), ErrorCode::BadRequest), "{bad}");
        }
    }
}
