//! Error codes a client can receive in `{"op":"error",...}`.

/// A machine-readable error code; `as_str` is the wire form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// The frame is not valid JSON.
    BadJson,
    /// A required field is missing or has the wrong type, or the value is not an object.
    BadRequest,
    /// `op` names no known operation.
    UnknownOp,
    /// A room name breaks the naming rules.
    InvalidRoom,
    /// The token does not allow this room.
    Forbidden,
    /// The connection is over its rate limit; the message was dropped.
    RateLimited,
    /// The message, or the connection's room count, is over a limit.
    TooLarge,
    /// The room keeps no history (a `history` query).
    NoHistory,
    /// What the request needs is unreachable for now (the history store).
    Unavailable,
    /// The room does not track presence (a `presence` query).
    NoPresence,
}

impl ErrorCode {
    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadJson => "bad_json",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::UnknownOp => "unknown_op",
            ErrorCode::InvalidRoom => "invalid_room",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::NoHistory => "no_history",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::NoPresence => "no_presence",
        }
    }
}

/// A failed request: the code, a human message and the request's id if it had one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpError {
    /// The request's `id`, echoed back.
    pub id: Option<u64>,
    /// The error code.
    pub code: ErrorCode,
    /// A short human-readable explanation.
    pub message: &'static str,
}

impl OpError {
    /// An error for the request with `id`.
    pub const fn new(id: Option<u64>, code: ErrorCode, message: &'static str) -> OpError {
        OpError { id, code, message }
    }
}
