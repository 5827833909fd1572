//! The server side of the WebSocket opening handshake (RFC 6455 §4.2): an
//! HTTP exchange, so it lives with the HTTP codec and the `ws` module stays
//! a pure frame codec.
//!
//! `check` validates an upgrade request and picks the HTTP status for a bad
//! one; the accept key comes from tungstenite so it is computed exactly as
//! every client library expects.

use bytes::Bytes;

use super::response;
use super::Request;
use crate::ws::deflate::Agreement;

/// Why an upgrade request was refused, as the response to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejection {
    /// The status line, e.g. `400 Bad Request`.
    pub status: &'static str,
    /// One line saying what was wrong.
    pub reason: &'static str,
}

impl Rejection {
    /// The HTTP response for this rejection (the connection is closed after it).
    pub fn response(&self) -> Bytes {
        let extra: &[(&str, &str)] = match self.status {
            "426 Upgrade Required" => &[("Upgrade", "websocket"), ("Sec-WebSocket-Version", "13")],
            "405 Method Not Allowed" => &[("Allow", "GET")],
            _ => &[],
        };
        let body = format!("{}\n", self.reason);
        response::response(self.status, "text/plain; charset=utf-8", body.as_bytes(), true, extra)
    }
}

const fn reject(status: &'static str, reason: &'static str) -> Rejection {
    Rejection { status, reason }
}

/// A `Sec-WebSocket-Key` must be 16 bytes in base64: 22 symbols and `==`.
fn valid_key(key: &str) -> bool {
    let b = key.as_bytes();
    b.len() == 24
        && b.ends_with(b"==")
        && b[..22]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'+' || *c == b'/')
}

/// Validates an upgrade request; on success returns the `101` response,
/// accepting `deflate` (permessage-deflate) when given.
pub fn check(req: &Request, deflate: Option<Agreement>) -> Result<Bytes, Rejection> {
    if req.method != "GET" {
        return Err(reject("405 Method Not Allowed", "WebSocket upgrades use GET"));
    }
    if !req.http11 {
        return Err(reject("400 Bad Request", "WebSocket upgrades need HTTP/1.1"));
    }
    if !req.upgrade_websocket {
        return Err(reject("426 Upgrade Required", "this endpoint speaks WebSocket only"));
    }
    if !req.connection_upgrade {
        return Err(reject("400 Bad Request", "Connection header must list Upgrade"));
    }
    if req.ws_version.as_deref() != Some("13") {
        return Err(reject("426 Upgrade Required", "Sec-WebSocket-Version must be 13"));
    }
    let key = match req.ws_key.as_deref() {
        Some(k) if valid_key(k) => k,
        _ => return Err(reject("400 Bad Request", "missing or malformed Sec-WebSocket-Key")),
    };
    if req.has_body() {
        return Err(reject("400 Bad Request", "an upgrade request has no body"));
    }
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    let extensions = match deflate {
        Some(a) => format!("Sec-WebSocket-Extensions: {}\r\n", a.response()),
        None => String::new(),
    };
    let resp = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept}\r\n{extensions}Server: roomcast\r\n\r\n"
    );
    Ok(Bytes::from(resp))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::request::{parse, Parsed};

    fn req(raw: &str) -> Request {
        match parse(raw.as_bytes()).unwrap() {
            Parsed::Complete(r, _) => r,
            Parsed::Partial => panic!("partial"),
        }
    }

    const GOOD: &str = "GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";

    #[test]
    fn accepts_the_rfc_example() {
        let resp = check(&req(GOOD), None).unwrap();
        let text = std::str::from_utf8(&resp).unwrap();
        assert!(text.starts_with("HTTP/1.1 101 "));
        assert!(text.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
    }

    #[test]
    fn rejects_with_the_right_status() {
        let cases = [
            (GOOD.replace("GET", "POST"), "405 Method Not Allowed"),
            (GOOD.replace("HTTP/1.1", "HTTP/1.0"), "400 Bad Request"),
            (GOOD.replace("Upgrade: websocket\r\n", ""), "426 Upgrade Required"),
            (
                GOOD.replace("Connection: Upgrade", "Connection: keep-alive"),
                "400 Bad Request",
            ),
            (GOOD.replace("Version: 13", "Version: 8"), "426 Upgrade Required"),
            (GOOD.replace("dGhlIHNhbXBsZSBub25jZQ==", "short"), "400 Bad Request"),
        ];
        for (raw, status) in cases {
            assert_eq!(check(&req(&raw), None).unwrap_err().status, status, "{raw}");
        }
    }
}
