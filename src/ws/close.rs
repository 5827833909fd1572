//! WebSocket close codes: the ones roomcast sends and the rule for which a
//! peer may send.

use std::fmt;

/// A WebSocket close status code (RFC 6455 §7.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CloseCode(pub u16);

impl CloseCode {
    /// 1000: the purpose of the connection was fulfilled.
    pub const NORMAL: CloseCode = CloseCode(1000);
    /// 1001: the server is shutting down.
    pub const GOING_AWAY: CloseCode = CloseCode(1001);
    /// 1002: the peer broke the framing rules.
    pub const PROTOCOL_ERROR: CloseCode = CloseCode(1002);
    /// 1005: no code was present in the close frame (never sent on the wire).
    pub const NO_STATUS: CloseCode = CloseCode(1005);
    /// 1006: the connection was lost without a close frame (never sent on the wire).
    pub const ABNORMAL: CloseCode = CloseCode(1006);
    /// 1007: a text message (or close reason) was not valid UTF-8.
    pub const INVALID_PAYLOAD: CloseCode = CloseCode(1007);
    /// 1008: the peer violated a policy (e.g. kept flooding past its rate limit).
    pub const POLICY: CloseCode = CloseCode(1008);
    /// 1009: a message exceeded `--max-message-bytes`.
    pub const TOO_BIG: CloseCode = CloseCode(1009);
    /// 1011: the server hit an unexpected condition.
    pub const INTERNAL_ERROR: CloseCode = CloseCode(1011);
    /// 1013: the server is over `--max-connections`; try again later.
    pub const TRY_AGAIN_LATER: CloseCode = CloseCode(1013);
    /// 4001: authentication failed or the token expired.
    pub const UNAUTHORIZED: CloseCode = CloseCode(4001);
    /// 4008: the connection's outbox passed `--max-queue-bytes`.
    pub const SLOW_CONSUMER: CloseCode = CloseCode(4008);

    /// Whether a peer may put this code in a close frame (RFC 6455 §7.4.1 and
    /// the IANA registry): 1000–1003, 1007–1014, and 3000–4999 for
    /// libraries and applications.
    pub fn is_valid_on_wire(self) -> bool {
        matches!(self.0, 1000..=1003 | 1007..=1014 | 3000..=4999)
    }
}

impl fmt::Display for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_validity_follows_the_registry() {
        for ok in [1000, 1001, 1002, 1003, 1007, 1011, 1014, 3000, 4999] {
            assert!(CloseCode(ok).is_valid_on_wire(), "{ok}");
        }
        for bad in [0, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535] {
            assert!(!CloseCode(bad).is_valid_on_wire(), "{bad}");
        }
    }
}
