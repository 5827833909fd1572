//! Server frames, each encoded once into a complete WebSocket frame.
//!
//! `FrameWriter` reserves the largest header in front of the payload,
//! writes the JSON, then fills in the real header and skips the unused
//! reserve: one allocation and one pass per frame, however many
//! connections it is queued to afterwards.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::ws::frame::{write_header, MAX_SERVER_HEADER};
use crate::ws::OpCode;

use super::error::{ErrorCode, OpError};

/// Builds one frame: payload first, header last.
#[derive(Debug)]
pub struct FrameWriter {
    buf: BytesMut,
    #[cfg(test)]
    reserved: usize,
}

#[cfg(test)]
thread_local! {
    /// Frames whose writer had to grow its buffer (a capacity estimate
    /// too small: a reallocation per frame on the hot path).
    static GREW: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

impl FrameWriter {
    /// A writer for a payload of about `capacity` bytes.
    pub fn new(capacity: usize) -> FrameWriter {
        let mut buf = BytesMut::with_capacity(MAX_SERVER_HEADER + capacity);
        buf.put_bytes(0, MAX_SERVER_HEADER);
        FrameWriter {
            #[cfg(test)]
            reserved: buf.capacity(),
            buf,
        }
    }

    /// Appends raw bytes (already valid JSON, or binary payload).
    pub fn raw(&mut self, bytes: &[u8]) -> &mut Self {
        self.buf.put_slice(bytes);
        self
    }

    /// Appends `s` as a JSON string literal.
    pub fn string(&mut self, s: &str) -> &mut Self {
        json_string(&mut self.buf, s);
        self
    }

    /// Appends a decimal number.
    pub fn number(&mut self, n: u64) -> &mut Self {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        let mut n = n;
        loop {
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        self.buf.put_slice(&digits[i..]);
        self
    }

    /// Payload bytes written so far.
    pub fn payload_len(&self) -> usize {
        self.buf.len() - MAX_SERVER_HEADER
    }

    /// The payload written so far.
    pub fn payload(&self) -> &[u8] {
        &self.buf[MAX_SERVER_HEADER..]
    }

    /// Fills in the header and returns the finished frame.
    pub fn finish(mut self, opcode: OpCode) -> Bytes {
        let len = self.payload_len();
        #[cfg(test)]
        if self.buf.capacity() != self.reserved {
            GREW.with(|g| g.set(g.get() + 1));
        }
        let mut header = [0u8; MAX_SERVER_HEADER];
        let n = write_header(opcode, len, &mut header);
        let start = MAX_SERVER_HEADER - n;
        self.buf[start..MAX_SERVER_HEADER].copy_from_slice(&header[..n]);
        let mut frame = self.buf.freeze();
        frame.advance(start);
        frame
    }
}

/// Whether `b` must be escaped in a JSON string (RFC 8259: the quote, the
/// backslash and the control characters).
#[inline]
fn must_escape(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\'
}

/// Whether any byte of `s` must be escaped.
#[inline]
fn needs_escaping(s: &[u8]) -> bool {
    s.iter().any(|&b| must_escape(b))
}

/// The letter of `b`'s two-byte escape (`\n` for a newline), if it has
/// one; other bytes that need escaping take six (`\u00XX`).
fn short_escape(b: u8) -> Option<u8> {
    match b {
        b'"' | b'\\' => Some(b),
        b'\n' => Some(b'n'),
        b'\r' => Some(b'r'),
        b'\t' => Some(b't'),
        _ => None,
    }
}

/// Writes `s` as a JSON string literal (RFC 8259 escaping).
pub fn json_string(out: &mut BytesMut, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.reserve(s.len() + 2);
    out.put_u8(b'"');
    let bytes = s.as_bytes();
    // Names almost never need escaping: one scan and one copy instead of
    // a branch per byte.
    if !needs_escaping(bytes) {
        out.put_slice(bytes);
        out.put_u8(b'"');
        return;
    }
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if !must_escape(b) {
            continue;
        }
        out.put_slice(&bytes[start..i]);
        match short_escape(b) {
            Some(c) => out.put_slice(&[b'\\', c]),
            None => out.put_slice(&[b'\\', b'u', b'0', b'0', HEX[(b >> 4) as usize], HEX[(b & 0xF) as usize]]),
        }
        start = i + 1;
    }
    out.put_slice(&bytes[start..]);
    out.put_u8(b'"');
}

/// Payload bytes of a `message` besides the names (unescaped) and `data`.
const MESSAGE_FRAMING: usize = br#"{"op":"message","room":"","from":"","data":}"#.len();

/// `{"op":"message","room":R,"from":U,"data":D}`; `data` is spliced verbatim.
pub fn message(room: &str, from: &str, data: &[u8]) -> Bytes {
    let mut w = FrameWriter::new(MESSAGE_FRAMING + room.len() + from.len() + data.len());
    w.raw(br#"{"op":"message","room":"#)
        .string(room)
        .raw(br#","from":"#)
        .string(from)
        .raw(br#","data":"#)
        .raw(data)
        .raw(b"}");
    w.finish(OpCode::Text)
}

/// A `message` frame for a room with history, written up to its offset:
/// the room's owner shard numbers it and finishes it (no copy: the header
/// space is reserved in front, as for every frame).
#[derive(Debug)]
pub struct Draft {
    w: FrameWriter,
    /// Payload range of `"from":U,"data":D`.
    body: (usize, usize),
}

/// `{"op":"message","room":R,"from":U,"data":D,` — the rest is the offset's.
pub fn message_draft(room: &str, from: &str, data: &[u8]) -> Draft {
    // Room for the escaped names and the offset: one allocation, no regrowth.
    let mut w = FrameWriter::new(72 + OFFSET_BYTES + room.len() + from.len() + data.len());
    w.raw(br#"{"op":"message","room":"#).string(room).raw(b",");
    let start = w.payload_len();
    w.raw(br#""from":"#).string(from).raw(br#","data":"#).raw(data);
    let end = w.payload_len();
    Draft { w, body: (start, end) }
}

impl Draft {
    /// `...,"offset":N}`: the finished frame, and where its body is in it.
    pub fn finish(mut self, offset: u64) -> (Bytes, (u32, u32)) {
        self.w.raw(br#","offset":"#).number(offset).raw(b"}");
        let payload = self.w.payload_len();
        let frame = self.w.finish(OpCode::Text);
        let header = frame.len() - payload;
        let (start, end) = self.body;
        (frame, ((header + start) as u32, (header + end) as u32))
    }

    /// Payload bytes so far (the offset adds at most 31).
    pub fn payload_len(&self) -> usize {
        self.w.payload_len()
    }

    /// The payload so far and where `"from":U,"data":D` is in it: what a
    /// draft is made of when it travels through Redis to be numbered there.
    pub fn parts(&self) -> (&[u8], (u32, u32)) {
        (self.w.payload(), (self.body.0 as u32, self.body.1 as u32))
    }

    /// A draft again from [`Draft::parts`] (one allocation, no regrowth
    /// when finished); `None` if `body` is not inside `payload`.
    pub fn from_parts(payload: &[u8], body: (u32, u32)) -> Option<Draft> {
        let (start, end) = (body.0 as usize, body.1 as usize);
        if start > end || end > payload.len() {
            return None;
        }
        let mut w = FrameWriter::new(payload.len() + OFFSET_BYTES);
        w.raw(payload);
        Some(Draft { w, body: (start, end) })
    }
}

/// Most digits of a `u64`.
const DIGITS: usize = 20;

/// Most bytes `,"offset":N` adds to a numbered message.
pub const OFFSET_BYTES: usize = 30;

/// `{"op":"ack","id":N,"offset":O}`: where a publish landed.
pub fn ack_offset(id: u64, offset: u64) -> Bytes {
    let mut w = FrameWriter::new(br#"{"op":"ack","id":,"offset":}"#.len() + 2 * DIGITS);
    w.raw(br#"{"op":"ack","id":"#)
        .number(id)
        .raw(br#","offset":"#)
        .number(offset)
        .raw(b"}");
    w.finish(OpCode::Text)
}

/// `{"op":"ack","id":N,"offset":TOP,"epoch":E}` (and `"recovered":B` when the
/// join asked to recover): where a member of a room with history starts.
pub fn ack_position(id: u64, top: u64, epoch: &str, recovered: Option<bool>) -> Bytes {
    let framing = br#"{"op":"ack","id":,"offset":,"epoch":"","recovered":false}"#.len();
    let mut w = FrameWriter::new(framing + 2 * DIGITS + epoch.len());
    w.raw(br#"{"op":"ack","id":"#)
        .number(id)
        .raw(br#","offset":"#)
        .number(top)
        .raw(br#","epoch":"#)
        .string(epoch);
    match recovered {
        Some(true) => w.raw(br#","recovered":true}"#),
        Some(false) => w.raw(br#","recovered":false}"#),
        None => w.raw(b"}"),
    };
    w.finish(OpCode::Text)
}

/// The `history` answer: `{"op":"history","id":I,"room":R,"epoch":E,
/// "offset":TOP,"messages":[{"offset":N,"from":U,"data":D},...]}` (`id`
/// only if the request had one); `messages` are `(offset, body)` pairs,
/// the body being `"from":U,"data":D` as the message frame has it.
pub fn history<'a>(
    id: Option<u64>,
    room: &str,
    epoch: &str,
    top: u64,
    messages: impl IntoIterator<Item = (u64, &'a [u8])>,
) -> Bytes {
    let mut w = FrameWriter::new(128 + room.len());
    w.raw(br#"{"op":"history","#);
    if let Some(id) = id {
        w.raw(br#""id":"#).number(id).raw(b",");
    }
    w.raw(br#""room":"#)
        .string(room)
        .raw(br#","epoch":"#)
        .string(epoch)
        .raw(br#","offset":"#)
        .number(top)
        .raw(br#","messages":["#);
    for (i, (offset, body)) in messages.into_iter().enumerate() {
        if i > 0 {
            w.raw(b",");
        }
        w.raw(br#"{"offset":"#).number(offset).raw(b",").raw(body).raw(b"}");
    }
    w.raw(b"]}");
    w.finish(OpCode::Text)
}

/// Payload bytes `message` adds around `data` (for size checks before encoding).
pub fn message_overhead(room: &str, from: &str) -> usize {
    // Escaping can only grow strings; the check uses the escaped length.
    MESSAGE_FRAMING + escaped_len(room) + escaped_len(from)
}

/// Length of `s`'s escaped form as `json_string` writes it, without quotes.
fn escaped_len(s: &str) -> usize {
    if !needs_escaping(s.as_bytes()) {
        return s.len();
    }
    s.bytes()
        .map(|b| match (must_escape(b), short_escape(b)) {
            (false, _) => 1,
            (true, Some(_)) => 2,
            (true, None) => 6,
        })
        .sum()
}

/// `{"op":"direct","from":U,"data":D}`; `data` is spliced verbatim.
pub fn direct(from: &str, data: &[u8]) -> Bytes {
    let mut w = FrameWriter::new(br#"{"op":"direct","from":"","data":}"#.len() + from.len() + data.len());
    w.raw(br#"{"op":"direct","from":"#)
        .string(from)
        .raw(br#","data":"#)
        .raw(data)
        .raw(b"}");
    w.finish(OpCode::Text)
}

/// `{"op":"welcome","user":U,"conn":C}`.
pub fn welcome(user: &str, conn: u64) -> Bytes {
    let mut w = FrameWriter::new(br#"{"op":"welcome","user":"","conn":}"#.len() + DIGITS + user.len());
    w.raw(br#"{"op":"welcome","user":"#)
        .string(user)
        .raw(br#","conn":"#)
        .number(conn)
        .raw(b"}");
    w.finish(OpCode::Text)
}

/// `{"op":"ack","id":N}`.
pub fn ack(id: u64) -> Bytes {
    let mut w = FrameWriter::new(br#"{"op":"ack","id":}"#.len() + DIGITS);
    w.raw(br#"{"op":"ack","id":"#).number(id).raw(b"}");
    w.finish(OpCode::Text)
}

/// `{"op":"unsubscribed","room":R,"reason":C}`: the server took the
/// connection out of a room (`reason` is an error code, e.g. `forbidden`).
pub fn unsubscribed(room: &str, reason: ErrorCode) -> Bytes {
    let framing = br#"{"op":"unsubscribed","room":"","reason":""}"#.len();
    let mut w = FrameWriter::new(framing + room.len() + reason.as_str().len());
    w.raw(br#"{"op":"unsubscribed","room":"#)
        .string(room)
        .raw(br#","reason":"#)
        .string(reason.as_str())
        .raw(b"}");
    w.finish(OpCode::Text)
}

/// `{"op":"joined","room":R,"user":U}` (`joined`) or `{"op":"left",...}`:
/// a user's first connection came into a room, or its last went.
pub fn presence_event(joined: bool, room: &str, user: &str) -> Bytes {
    let mut w = FrameWriter::new(40 + room.len() + user.len());
    w.raw(if joined {
        br#"{"op":"joined","room":"#
    } else {
        br#"{"op":"left","room":"#
    })
    .string(room)
    .raw(br#","user":"#)
    .string(user)
    .raw(b"}");
    w.finish(OpCode::Text)
}

/// `{"op":"presence","id":I,"room":R,"count":C,"users":[{"user":U,"conns":K},...]}`
/// (`"truncated":true` when `users` is not all of them; no `users` when
/// `users` is `None`; no `id` for the HTTP API).
pub fn presence(id: Option<u64>, room: &str, count: usize, users: Option<&[(&str, u32)]>, truncated: bool) -> Bytes {
    // The user list grows it as it must (a reply, not a fan-out frame).
    let framing = br#"{"op":"presence","id":,"room":"","count":}"#.len() + 2 * DIGITS;
    let mut w = FrameWriter::new(framing + room.len());
    w.raw(br#"{"op":"presence","#);
    if let Some(id) = id {
        w.raw(br#""id":"#).number(id).raw(b",");
    }
    w.raw(br#""room":"#)
        .string(room)
        .raw(br#","count":"#)
        .number(count as u64);
    if let Some(users) = users {
        w.raw(br#","users":["#);
        for (i, &(user, conns)) in users.iter().enumerate() {
            if i > 0 {
                w.raw(b",");
            }
            w.raw(br#"{"user":"#)
                .string(user)
                .raw(br#","conns":"#)
                .number(u64::from(conns))
                .raw(b"}");
        }
        w.raw(b"]");
        if truncated {
            w.raw(br#","truncated":true"#);
        }
    }
    w.raw(b"}");
    w.finish(OpCode::Text)
}

/// `{"op":"error","id":N,"code":C,"message":M}` (no `id` when the request had none).
pub fn error(e: &OpError) -> Bytes {
    let framing = br#"{"op":"error","id":,"code":"","message":""}"#.len() + DIGITS;
    // Messages are ours: a few escaped quotes at most.
    let mut w = FrameWriter::new(framing + e.code.as_str().len() + e.message.len() + 8);
    w.raw(br#"{"op":"error","#);
    if let Some(id) = e.id {
        w.raw(br#""id":"#).number(id).raw(b",");
    }
    w.raw(br#""code":"#)
        .string(e.code.as_str())
        .raw(br#","message":"#)
        .string(e.message)
        .raw(b"}");
    w.finish(OpCode::Text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ErrorCode;

    #[test]
    fn frames_are_written_without_regrowing_their_buffer() {
        // Names that need no escaping and the largest numbers: every
        // encoder's capacity estimate must hold (else each frame pays a
        // reallocation; seen in the round-trip profile).
        let (room, user, data, max) = ("lobby-42", "anon-node-123456", br#"{"text":"hi"}"#, u64::MAX);
        let grew = || GREW.with(|g| g.get());
        let before = grew();
        let frames = [
            message(room, user, data),
            direct(user, data),
            welcome(user, max),
            ack(max),
            ack_offset(max, max),
            ack_position(max, max, "0123456789abcdef", Some(false)),
            unsubscribed(room, ErrorCode::Forbidden),
            presence_event(true, room, user),
            presence_event(false, room, user),
            presence(Some(max), room, 3, None, false),
            error(&OpError::new(
                Some(max),
                ErrorCode::BadRequest,
                "field \"room\" is required",
            )),
        ];
        assert!(frames.iter().all(|f| !f.is_empty()));
        assert_eq!(grew() - before, 0);
    }

    /// Strips the (unmasked, short or 16-bit) header of a server frame.
    fn payload(frame: &Bytes) -> &str {
        let at = if frame[1] == 126 { 4 } else { 2 };
        std::str::from_utf8(&frame[at..]).unwrap()
    }

    #[test]
    fn frames_carry_a_correct_header() {
        let f = ack(7);
        assert_eq!(f[0], 0x81);
        assert_eq!(f[1] as usize, f.len() - 2);
        assert_eq!(payload(&f), r#"{"op":"ack","id":7}"#);
        let big = message("r", "u", &vec![b'1'; 300]);
        assert_eq!(big[1], 126);
        assert_eq!(u16::from_be_bytes([big[2], big[3]]) as usize, big.len() - 4);
    }

    #[test]
    fn strings_are_escaped_and_data_is_spliced() {
        let f = message("a\"b", "u\n\u{1}", br#"{"x":1.50}"#);
        assert_eq!(
            payload(&f),
            r#"{"op":"message","room":"a\"b","from":"u\n\u0001","data":{"x":1.50}}"#
        );
        let parsed: serde_json::Value = serde_json::from_str(payload(&f)).unwrap();
        assert_eq!(parsed["room"], "a\"b");
    }

    #[test]
    fn errors_with_and_without_id() {
        let e = OpError::new(Some(3), ErrorCode::Forbidden, "no");
        assert_eq!(
            payload(&error(&e)),
            r#"{"op":"error","id":3,"code":"forbidden","message":"no"}"#
        );
        let e = OpError::new(None, ErrorCode::BadJson, "x");
        assert_eq!(payload(&error(&e)), r#"{"op":"error","code":"bad_json","message":"x"}"#);
    }

    #[test]
    fn welcome_and_direct() {
        assert_eq!(
            payload(&welcome("anon-1", 42)),
            r#"{"op":"welcome","user":"anon-1","conn":42}"#
        );
        assert_eq!(
            payload(&direct("bob", b"[1]")),
            r#"{"op":"direct","from":"bob","data":[1]}"#
        );
        assert_eq!(payload(&message("r", "u", b"0")).len(), message_overhead("r", "u") + 1);
        for (room, from) in [("a\"b", "c\\d"), ("\n\r\t", "\u{1}\u{1f}"), ("é✓", "plain")] {
            let frame = message(room, from, b"0");
            assert_eq!(
                payload(&frame).len(),
                message_overhead(room, from) + 1,
                "{room:?} {from:?}"
            );
        }
    }
}
