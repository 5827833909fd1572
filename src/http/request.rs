//! Incremental parsing of a request head with `httparse`, under a size cap.
//!
//! The caller appends bytes to its buffer and calls [`parse`] again until it
//! answers `Complete`; only the few headers roomcast acts on are kept, as an
//! owned [`Request`], so the read buffer can be dropped right after.

/// The largest request head (request line plus headers) accepted: room
/// for a token of `auth::MAX_TOKEN_BYTES` (16 KiB) in the query or the
/// `Authorization` header, plus the usual headers.
pub const MAX_HEAD_BYTES: usize = 24 * 1024;
/// The most header lines accepted in one request.
pub const MAX_HEADERS: usize = 48;

/// Why a request head was refused; each maps to one HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    /// The bytes are not an HTTP/1.x request: 400.
    #[error("malformed request")]
    Malformed,
    /// The head passed `MAX_HEAD_BYTES` or `MAX_HEADERS`: 431.
    #[error("request head too large")]
    HeadTooLarge,
}

impl HttpError {
    /// The status line to answer with.
    pub fn status(self) -> &'static str {
        match self {
            HttpError::Malformed => "400 Bad Request",
            HttpError::HeadTooLarge => "431 Request Header Fields Too Large",
        }
    }
}

/// Where a request comes from, as its headers say.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Provenance {
    /// `Origin` (browsers send it with every upgrade).
    pub origin: Option<String>,
    /// `Forwarded` values, in order (believed from trusted proxies only).
    pub forwarded: Vec<String>,
    /// `X-Forwarded-For` values, in order (likewise).
    pub x_forwarded_for: Vec<String>,
}

impl Request {
    /// The `Origin` header, if any.
    pub fn origin(&self) -> Option<&str> {
        self.provenance.as_ref()?.origin.as_deref()
    }
}

/// The parts of a request head that roomcast acts on.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Request {
    /// The method, e.g. `GET`.
    pub method: String,
    /// The path without the query string.
    pub path: String,
    /// The raw query string after `?`, if any.
    pub query: Option<String>,
    /// `HTTP/1.1` (true) or `HTTP/1.0`.
    pub http11: bool,
    /// `Upgrade` lists the `websocket` token.
    pub upgrade_websocket: bool,
    /// `Connection` lists the `upgrade` token.
    pub connection_upgrade: bool,
    /// `Connection` lists `close` (or HTTP/1.0 without `keep-alive`).
    pub connection_close: bool,
    /// `Sec-WebSocket-Version`, if present.
    pub ws_version: Option<String>,
    /// `Sec-WebSocket-Key`, if present.
    pub ws_key: Option<String>,
    /// The first `permessage-deflate` offer of `Sec-WebSocket-Extensions`
    /// roomcast can accept (accepted only with `--compression`).
    pub deflate: Option<crate::ws::deflate::Agreement>,
    /// `Authorization`, if present.
    pub authorization: Option<String>,
    /// `Origin`, `Forwarded` and `X-Forwarded-For`, if any: where the
    /// request comes from (boxed: most requests have none of them).
    pub provenance: Option<Box<Provenance>>,
    /// `Content-Length`, if present and numeric.
    pub content_length: Option<u64>,
    /// A `Transfer-Encoding` header was sent (a body of unknown length).
    pub has_transfer_encoding: bool,
}

impl Request {
    /// Whether the request carries a body.
    pub fn has_body(&self) -> bool {
        self.has_transfer_encoding || self.content_length.unwrap_or(0) > 0
    }

    /// Whether the connection may serve another request after this one.
    pub fn keep_alive(&self) -> bool {
        !self.connection_close && !self.has_transfer_encoding
    }
}

/// The outcome of parsing what has arrived so far.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// The whole head is here; it took the first `usize` bytes of the buffer.
    Complete(Request, usize),
    /// More bytes are needed.
    Partial,
}

/// Whether a comma-separated header value lists `token` (case-insensitive).
fn lists_token(value: &[u8], token: &str) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

fn text(value: &[u8]) -> Option<String> {
    std::str::from_utf8(value).ok().map(|s| s.trim().to_string())
}

/// Parses a request head from the start of `buf`.
pub fn parse(buf: &[u8]) -> Result<Parsed, HttpError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let used = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            return if buf.len() >= MAX_HEAD_BYTES {
                Err(HttpError::HeadTooLarge)
            } else {
                Ok(Parsed::Partial)
            };
        }
        Err(httparse::Error::TooManyHeaders) => return Err(HttpError::HeadTooLarge),
        Err(_) => return Err(HttpError::Malformed),
    };
    if used > MAX_HEAD_BYTES {
        return Err(HttpError::HeadTooLarge);
    }
    let target = req.path.unwrap_or("/");
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q.to_string())),
        None => (target, None),
    };
    let http11 = req.version == Some(1);
    let mut out = Request {
        method: req.method.unwrap_or("").to_string(),
        path: path.to_string(),
        query,
        http11,
        connection_close: !http11,
        ..Request::default()
    };
    for h in req.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("upgrade") {
            out.upgrade_websocket |= lists_token(h.value, "websocket");
        } else if name.eq_ignore_ascii_case("connection") {
            out.connection_upgrade |= lists_token(h.value, "upgrade");
            if lists_token(h.value, "close") {
                out.connection_close = true;
            } else if lists_token(h.value, "keep-alive") {
                out.connection_close = false;
            }
        } else if name.eq_ignore_ascii_case("forwarded") {
            let f = out.provenance.get_or_insert_with(Box::default);
            f.forwarded
                .extend(std::str::from_utf8(h.value).ok().map(str::to_string));
        } else if name.eq_ignore_ascii_case("x-forwarded-for") {
            let f = out.provenance.get_or_insert_with(Box::default);
            f.x_forwarded_for
                .extend(std::str::from_utf8(h.value).ok().map(str::to_string));
        } else if name.eq_ignore_ascii_case("origin") {
            out.provenance.get_or_insert_with(Box::default).origin =
                std::str::from_utf8(h.value).ok().map(str::to_string);
        } else if name.eq_ignore_ascii_case("sec-websocket-version") {
            out.ws_version = text(h.value);
        } else if name.eq_ignore_ascii_case("sec-websocket-key") {
            out.ws_key = text(h.value);
        } else if name.eq_ignore_ascii_case("sec-websocket-extensions") {
            if out.deflate.is_none() {
                out.deflate = std::str::from_utf8(h.value)
                    .ok()
                    .and_then(|v| crate::ws::deflate::negotiate([v]));
            }
        } else if name.eq_ignore_ascii_case("authorization") {
            // Two credentials: refuse rather than pick one.
            if out.authorization.is_some() {
                return Err(HttpError::Malformed);
            }
            out.authorization = text(h.value);
        } else if name.eq_ignore_ascii_case("content-length") {
            // Digits only (RFC 9110 §8.6): `+27` or ` 27` could be read two
            // ways by a proxy in front.
            let n = std::str::from_utf8(h.value)
                .ok()
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse().ok())
                .ok_or(HttpError::Malformed)?;
            if out.content_length.is_some_and(|m| m != n) {
                return Err(HttpError::Malformed);
            }
            out.content_length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            out.has_transfer_encoding = true;
        }
    }
    Ok(Parsed::Complete(out, used))
}

#[cfg(test)]
mod tests {
    use super::*;

    const UPGRADE: &[u8] = b"GET /ws?token=abc HTTP/1.1\r\nHost: x\r\nUpgrade: WebSocket\r\n\
Connection: keep-alive, Upgrade\r\nSec-WebSocket-Version: 13\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";

    #[test]
    fn parses_an_upgrade_request() {
        let Parsed::Complete(req, used) = parse(UPGRADE).unwrap() else {
            panic!("partial")
        };
        assert_eq!(used, UPGRADE.len());
        assert_eq!(req.method, "GET");
        assert_eq!(req.path, "/ws");
        assert_eq!(req.query.as_deref(), Some("token=abc"));
        assert!(req.upgrade_websocket && req.connection_upgrade && req.http11);
        assert_eq!(req.ws_version.as_deref(), Some("13"));
        assert_eq!(req.ws_key.as_deref(), Some("dGhlIHNhbXBsZSBub25jZQ=="));
        assert!(req.keep_alive());
    }

    #[test]
    fn every_prefix_is_partial() {
        for n in 0..UPGRADE.len() {
            assert_eq!(parse(&UPGRADE[..n]), Ok(Parsed::Partial), "prefix {n}");
        }
    }

    #[test]
    fn oversize_and_garbage_heads_are_refused() {
        let mut big = b"GET / HTTP/1.1\r\nX: ".to_vec();
        big.resize(MAX_HEAD_BYTES + 1, b'a');
        assert_eq!(parse(&big), Err(HttpError::HeadTooLarge));
        let many: String = (0..MAX_HEADERS + 1).map(|i| format!("h{i}: v\r\n")).collect();
        let req = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert_eq!(parse(req.as_bytes()), Err(HttpError::HeadTooLarge));
        assert_eq!(
            parse(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"),
            Err(HttpError::Malformed)
        );
        let conflicting = b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n";
        assert_eq!(parse(conflicting), Err(HttpError::Malformed));
    }

    #[test]
    fn http10_and_connection_close_end_the_connection() {
        let Parsed::Complete(r, _) = parse(b"GET /healthz HTTP/1.0\r\n\r\n").unwrap() else {
            panic!()
        };
        assert!(!r.keep_alive());
        let Parsed::Complete(r, _) = parse(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n").unwrap() else {
            panic!()
        };
        assert!(!r.keep_alive());
    }
}
