//! permessage-deflate (RFC 7692), the way a broker can afford it: with
//! `server_no_context_takeover` and `client_no_context_takeover`, every
//! message is compressed (and inflated) on its own, so one compressor and
//! one inflater per shard serve every connection, and a room message
//! compressed once is the same bytes for every member that negotiated it
//! (uWebSockets.js's "shared compressor"). No connection holds a
//! compressor or an inflater.
//!
//! - [`negotiate`] reads a client's `Sec-WebSocket-Extensions` offers and
//!   picks the first it can honour; [`Agreement::response`] is the header
//!   that accepts it.
//! - [`Deflater::compress_frame`] turns a finished server frame into its
//!   compressed twin (RSV1 set), or says it does not pay.
//! - [`Inflater::inflate`] restores a client message into a buffer that
//!   never grows past the message limit: a compression bomb is refused
//!   after at most `max + 1` bytes of output.
//!
//! Nothing here touches a socket.

use bytes::{BufMut, Bytes, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::frame::{self, OpCode, MAX_SERVER_HEADER};

/// The extension's name.
pub const NAME: &str = "permessage-deflate";

/// The four bytes a sync flush ends with, removed from every compressed
/// message and added back before inflating (RFC 7692 §7.2.1, §7.2.2).
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// Payloads shorter than this go out plain: 132 bytes of chat JSON deflate
/// to 123 (7 %), which the TCP/IP headers around them dwarf, for 2.6 µs of
/// compression and 0.5 µs of inflation at every client; 512 bytes deflate
/// to 278 (46 %) (`cargo bench --bench deflate`, `docs/benchmarks.md`).
pub const MIN_PAYLOAD: usize = 256;

/// The compression level: zlib's 1, the fastest; a publish is compressed
/// once whatever the room's size, so the ratio matters more than the cost
/// only for large messages, and those are rare in chat traffic.
const LEVEL: u32 = 1;

/// What was agreed with one client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Agreement {
    /// `server_max_window_bits` the client asked for (8–15; 15 when it did
    /// not). roomcast compresses with a 32 KiB window, so a member with a
    /// smaller one gets compressed frames only for payloads no longer than
    /// its window (no back-reference can then reach further).
    pub window_bits: u8,
    /// Whether the client asked for `server_max_window_bits` (the
    /// response must then carry it).
    asked_window: bool,
}

impl Agreement {
    /// The `Sec-WebSocket-Extensions` value that accepts the offer.
    pub fn response(&self) -> String {
        let mut out = format!("{NAME}; server_no_context_takeover; client_no_context_takeover");
        if self.asked_window {
            out.push_str(&format!("; server_max_window_bits={}", self.window_bits));
        }
        out
    }

    /// Whether a payload of `len` bytes compressed with a 32 KiB window is
    /// readable by this client.
    #[inline]
    pub fn reads(&self, len: usize) -> bool {
        self.window_bits >= 15 || len <= 1 << self.window_bits
    }
}

/// Picks the first `permessage-deflate` offer roomcast can honour among the
/// `Sec-WebSocket-Extensions` values, in order (RFC 7692 §5: the server
/// accepts at most one). Offers with an unknown or repeated parameter, or a
/// bad value, are skipped.
pub fn negotiate<'a>(values: impl IntoIterator<Item = &'a str>) -> Option<Agreement> {
    values.into_iter().flat_map(|v| v.split(',')).find_map(accept_offer)
}

/// One offer (`name; param; param=value`), accepted or not.
fn accept_offer(offer: &str) -> Option<Agreement> {
    let mut parts = offer.split(';').map(str::trim);
    if !parts.next()?.eq_ignore_ascii_case(NAME) {
        return None;
    }
    let mut agreement = Agreement {
        window_bits: 15,
        asked_window: false,
    };
    let mut seen = [false; 4];
    for param in parts {
        let (key, value) = match param.split_once('=') {
            Some((k, v)) => (k.trim(), Some(v.trim().trim_matches('"'))),
            None => (param, None),
        };
        let slot = match key.to_ascii_lowercase().as_str() {
            "server_no_context_takeover" if value.is_none() => 0,
            "client_no_context_takeover" if value.is_none() => 1,
            "server_max_window_bits" => {
                agreement.window_bits = window_bits(value?)?;
                agreement.asked_window = true;
                2
            }
            // Which window the client compresses with does not matter: each
            // message is inflated on its own with a 32 KiB window.
            "client_max_window_bits" => {
                if let Some(v) = value {
                    window_bits(v)?;
                }
                3
            }
            _ => return None,
        };
        if std::mem::replace(&mut seen[slot], true) {
            return None;
        }
    }
    Some(agreement)
}

/// A window size parameter: 8 to 15, decimal digits only.
fn window_bits(v: &str) -> Option<u8> {
    if v.is_empty() || v.len() > 2 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse().ok().filter(|b| (8..=15).contains(b))
}

/// A shard's compressor: raw deflate, reset for every message. The zlib
/// state (about 256 KiB) is made at the first message that needs it.
pub struct Deflater {
    z: Option<Box<Compress>>,
    out: Vec<u8>,
}

impl std::fmt::Debug for Deflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deflater").finish_non_exhaustive()
    }
}

impl Default for Deflater {
    fn default() -> Self {
        Deflater::new()
    }
}

impl Deflater {
    /// A compressor with a 32 KiB window.
    pub fn new() -> Deflater {
        Deflater {
            z: None,
            out: Vec::new(),
        }
    }

    /// The compressed twin of a finished, unfragmented text or binary
    /// server frame (as `frame::encode` makes them), or `None` when it is
    /// another kind of frame, its payload is under [`MIN_PAYLOAD`], or
    /// compression would not make it smaller.
    pub fn compress_frame(&mut self, plain: &[u8]) -> Option<Bytes> {
        let (opcode, payload) = split(plain)?;
        self.compress(opcode, payload)
    }

    /// A compressed frame carrying `payload`, or `None` as for
    /// [`Deflater::compress_frame`].
    pub fn compress(&mut self, opcode: OpCode, payload: &[u8]) -> Option<Bytes> {
        if payload.len() < MIN_PAYLOAD || !matches!(opcode, OpCode::Text | OpCode::Binary) {
            return None;
        }
        let z = self
            .z
            .get_or_insert_with(|| Box::new(Compress::new(Compression::new(LEVEL), false)));
        z.reset();
        self.out.clear();
        // Deflate's worst case: 5 bytes per 16 KiB stored block, plus the flush.
        self.out.reserve(payload.len() + payload.len() / 1024 * 5 + 64);
        let mut taken = 0;
        loop {
            let before = z.total_in();
            let status = z
                .compress_vec(&payload[taken..], &mut self.out, FlushCompress::Sync)
                .ok()?;
            taken += (z.total_in() - before) as usize;
            let full = self.out.len() == self.out.capacity();
            if taken == payload.len() && !full {
                break;
            }
            if status == Status::BufError && !full {
                return None;
            }
            self.out.reserve(1024);
        }
        let body = self.out.strip_suffix(&TAIL).unwrap_or(&self.out);
        if body.len() >= payload.len() {
            return None;
        }
        let mut header = [0u8; MAX_SERVER_HEADER];
        let n = frame::write_header(opcode, body.len(), &mut header);
        header[0] |= frame::RSV1;
        let mut framed = BytesMut::with_capacity(n + body.len());
        framed.put_slice(&header[..n]);
        framed.put_slice(body);
        // A burst of large messages should not pin a large buffer.
        if self.out.capacity() > 64 * 1024 {
            self.out = Vec::new();
        }
        Some(framed.freeze())
    }
}

/// A final, unmasked text or binary frame's opcode and payload.
fn split(plain: &[u8]) -> Option<(OpCode, &[u8])> {
    let (&b0, rest) = plain.split_first()?;
    if b0 & 0xF0 != 0x80 {
        return None;
    }
    let opcode = OpCode::from_u8(b0 & 0x0F)?;
    let (&b1, rest) = rest.split_first()?;
    let (len, rest) = match b1 & 0x7F {
        126 => {
            let (l, r) = rest.split_at_checked(2)?;
            (u16::from_be_bytes([l[0], l[1]]) as usize, r)
        }
        127 => {
            let (l, r) = rest.split_at_checked(8)?;
            (u64::from_be_bytes(l.try_into().ok()?) as usize, r)
        }
        n => (n as usize, rest),
    };
    (b1 & 0x80 == 0 && len == rest.len()).then_some((opcode, rest))
}

/// Why a compressed client message was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InflateError {
    /// It inflates past the message limit (close 1009).
    TooBig,
    /// It is not valid deflate data (close 1007).
    Corrupt,
}

/// A shard's inflater: raw deflate with a 32 KiB window, reset for every
/// message; made at the first compressed message.
pub struct Inflater {
    z: Option<Box<Decompress>>,
}

impl std::fmt::Debug for Inflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inflater").finish_non_exhaustive()
    }
}

impl Default for Inflater {
    fn default() -> Self {
        Inflater::new()
    }
}

impl Inflater {
    /// An inflater.
    pub fn new() -> Inflater {
        Inflater { z: None }
    }

    /// Inflates one message into `out` (cleared first). `out` never grows
    /// past `max + 1` bytes: past `max` of output the message is refused.
    pub fn inflate(&mut self, compressed: &[u8], max: usize, out: &mut Vec<u8>) -> Result<(), InflateError> {
        let z = self.z.get_or_insert_with(|| Box::new(Decompress::new(false)));
        z.reset(false);
        out.clear();
        let limit = max.saturating_add(1);
        for part in [compressed, &TAIL[..]] {
            let mut taken = 0;
            loop {
                if out.len() == out.capacity() {
                    if out.len() >= limit {
                        return Err(InflateError::TooBig);
                    }
                    let grow = (out.capacity().max(part.len() * 2)).max(256);
                    out.reserve_exact(grow.min(limit - out.len()));
                }
                let (in_before, out_before) = (z.total_in(), out.len());
                let status = z
                    .decompress_vec(&part[taken..], out, FlushDecompress::Sync)
                    .map_err(|_| InflateError::Corrupt)?;
                taken += (z.total_in() - in_before) as usize;
                if out.len() > max {
                    return Err(InflateError::TooBig);
                }
                if status == Status::StreamEnd {
                    // A final block ends the message; what follows is ignored.
                    return Ok(());
                }
                let room_left = out.len() < out.capacity();
                if taken == part.len() && room_left {
                    break;
                }
                if room_left && z.total_in() == in_before && out.len() == out_before {
                    // No progress with input and room: it wants more input
                    // than the message has.
                    break;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "deflate_tests.rs"]
mod tests;
