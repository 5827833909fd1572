//! The client side of the opening handshake: the upgrade request and the check
//! of the server's `101` answer.
//!
//! Both are pure functions of bytes so partial responses can be fed again as
//! more arrives; the accept key is computed by tungstenite, exactly as every
//! server computes it.

use tungstenite::handshake::client::generate_key;
use tungstenite::handshake::derive_accept_key;

/// Response heads larger than this are refused (a real `101` is ~150 bytes).
const MAX_RESPONSE_HEAD: usize = 16 * 1024;

/// An upgrade request and the `Sec-WebSocket-Accept` value that must come back.
pub struct Request {
    /// The bytes to write.
    pub bytes: Vec<u8>,
    /// The accept key the server must answer with.
    pub accept: Box<str>,
}

/// Builds a `GET` upgrade request for `path` (with its query) on `host`,
/// offering permessage-deflate (no context takeover) with `deflate`.
pub fn request(host: &str, path: &str, deflate: bool) -> Request {
    let key = generate_key();
    let accept = derive_accept_key(key.as_bytes()).into_boxed_str();
    let offer = if deflate {
        "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover\r\n"
    } else {
        ""
    };
    let bytes = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{offer}\r\n"
    )
    .into_bytes();
    Request { bytes, accept }
}

/// What the bytes received so far say about the upgrade.
#[derive(Debug, PartialEq, Eq)]
pub enum Upgrade {
    /// The response head is not complete yet.
    Incomplete,
    /// Upgraded; the first `head_len` bytes were the response head, the rest are frames.
    Done {
        /// Length of the response head.
        head_len: usize,
    },
    /// The server refused or answered something that is not a valid upgrade.
    Refused(String),
}

/// Checks the server's answer to an upgrade request.
pub fn check_response(buf: &[u8], accept: &str) -> Upgrade {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let head_len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > MAX_RESPONSE_HEAD => {
            return Upgrade::Refused("response head too large".into())
        }
        Ok(httparse::Status::Partial) => return Upgrade::Incomplete,
        Err(e) => return Upgrade::Refused(format!("bad response head: {e}")),
    };
    if resp.code != Some(101) {
        return Upgrade::Refused(format!("HTTP {}", resp.code.unwrap_or(0)));
    }
    let header = |name: &str| {
        resp.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    };
    if !header("upgrade").is_some_and(|v| v.eq_ignore_ascii_case(b"websocket")) {
        return Upgrade::Refused("101 without Upgrade: websocket".into());
    }
    if header("sec-websocket-accept").map(<[u8]>::trim_ascii) != Some(accept.as_bytes()) {
        return Upgrade::Refused("wrong Sec-WebSocket-Accept".into());
    }
    Upgrade::Done { head_len }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(accept: &str) -> Vec<u8> {
        format!("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n")
            .into_bytes()
    }

    #[test]
    fn a_valid_101_upgrades_and_keeps_the_trailing_frames() {
        let req = request("127.0.0.1:1", "/ws?token=a", false);
        let text = String::from_utf8(req.bytes.clone()).unwrap();
        assert!(text.starts_with("GET /ws?token=a HTTP/1.1\r\n"));
        let mut resp = answer(&req.accept);
        let head = resp.len();
        for cut in [0, 10, head - 1] {
            assert_eq!(check_response(&resp[..cut], &req.accept), Upgrade::Incomplete);
        }
        resp.extend_from_slice(&[0x81, 0]);
        assert_eq!(check_response(&resp, &req.accept), Upgrade::Done { head_len: head });
    }

    #[test]
    fn refusals_are_reported() {
        let r = check_response(b"HTTP/1.1 426 Upgrade Required\r\n\r\n", "x");
        assert_eq!(r, Upgrade::Refused("HTTP 426".into()));
        assert!(matches!(check_response(&answer("nope"), "x"), Upgrade::Refused(_)));
        assert!(matches!(check_response(b"garbage\r\n\r\n", "x"), Upgrade::Refused(_)));
    }
}
