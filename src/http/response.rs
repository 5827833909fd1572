//! Plain HTTP responses: a status, a content type and a body in one `Bytes`.

use bytes::{BufMut, Bytes, BytesMut};

/// Builds a complete response; `close` adds `Connection: close`.
pub fn response(status: &str, content_type: &str, body: &[u8], close: bool, extra: &[(&str, &str)]) -> Bytes {
    let mut out = BytesMut::with_capacity(160 + body.len());
    out.put_slice(b"HTTP/1.1 ");
    out.put_slice(status.as_bytes());
    out.put_slice(b"\r\nServer: roomcast\r\nContent-Type: ");
    out.put_slice(content_type.as_bytes());
    out.put_slice(b"\r\nContent-Length: ");
    out.put_slice(body.len().to_string().as_bytes());
    out.put_slice(b"\r\n");
    if close {
        out.put_slice(b"Connection: close\r\n");
    }
    for (name, value) in extra {
        out.put_slice(name.as_bytes());
        out.put_slice(b": ");
        out.put_slice(value.as_bytes());
        out.put_slice(b"\r\n");
    }
    out.put_slice(b"\r\n");
    out.put_slice(body);
    out.freeze()
}

/// A short plain-text response, e.g. for errors and `/healthz`.
pub fn text(status: &str, body: &str, close: bool) -> Bytes {
    response(status, "text/plain; charset=utf-8", body.as_bytes(), close, &[])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_a_parseable_response() {
        let r = text("200 OK", "ok\n", true);
        let mut headers = [httparse::EMPTY_HEADER; 8];
        let mut resp = httparse::Response::new(&mut headers);
        let httparse::Status::Complete(n) = resp.parse(&r).unwrap() else {
            panic!()
        };
        assert_eq!(resp.code, Some(200));
        assert_eq!(&r[n..], b"ok\n");
        assert!(resp
            .headers
            .iter()
            .any(|h| h.name == "Connection" && h.value == b"close"));
    }
}
