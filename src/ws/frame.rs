//! Frame opcodes and the server-side frame encoder.
//!
//! Server frames are never masked (RFC 6455 §5.1), so a frame is a 2–10 byte
//! header followed by the payload verbatim. `encode` writes both into one
//! `Bytes` so a fan-out can queue the same frame to every recipient.

use bytes::{BufMut, Bytes, BytesMut};

use super::close::CloseCode;

/// The largest header a server frame needs: 2 bytes plus a 64-bit length.
pub const MAX_SERVER_HEADER: usize = 10;
/// The largest header a client frame may carry: the above plus a 4-byte mask.
pub const MAX_CLIENT_HEADER: usize = 14;
/// The largest payload a control frame (close, ping, pong) may carry.
pub const MAX_CONTROL_PAYLOAD: usize = 125;
/// The first header byte's RSV1 bit: the message is compressed
/// (permessage-deflate, RFC 7692).
pub const RSV1: u8 = 0x40;

/// A frame opcode (RFC 6455 §5.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpCode {
    /// 0x0: the next fragment of a message.
    Continuation,
    /// 0x1: a UTF-8 text message.
    Text,
    /// 0x2: a binary message.
    Binary,
    /// 0x8: the close handshake.
    Close,
    /// 0x9: a ping; answered with a pong carrying the same payload.
    Ping,
    /// 0xA: a pong.
    Pong,
}

impl OpCode {
    /// Decodes the low nibble of a frame's first byte; reserved opcodes are `None`.
    pub fn from_u8(v: u8) -> Option<OpCode> {
        Some(match v {
            0x0 => OpCode::Continuation,
            0x1 => OpCode::Text,
            0x2 => OpCode::Binary,
            0x8 => OpCode::Close,
            0x9 => OpCode::Ping,
            0xA => OpCode::Pong,
            _ => return None,
        })
    }

    /// The opcode's wire value.
    pub fn as_u8(self) -> u8 {
        match self {
            OpCode::Continuation => 0x0,
            OpCode::Text => 0x1,
            OpCode::Binary => 0x2,
            OpCode::Close => 0x8,
            OpCode::Ping => 0x9,
            OpCode::Pong => 0xA,
        }
    }

    /// Close, ping and pong: at most 125 bytes and never fragmented.
    pub fn is_control(self) -> bool {
        matches!(self, OpCode::Close | OpCode::Ping | OpCode::Pong)
    }
}

/// Writes the header of a final, unmasked frame into `out`; returns its length.
pub fn write_header(opcode: OpCode, payload_len: usize, out: &mut [u8; MAX_SERVER_HEADER]) -> usize {
    out[0] = 0x80 | opcode.as_u8();
    if payload_len < 126 {
        out[1] = payload_len as u8;
        2
    } else if payload_len <= u16::MAX as usize {
        out[1] = 126;
        out[2..4].copy_from_slice(&(payload_len as u16).to_be_bytes());
        4
    } else {
        out[1] = 127;
        out[2..10].copy_from_slice(&(payload_len as u64).to_be_bytes());
        10
    }
}

/// The length of the header `write_header` produces for this payload length.
pub fn header_len(payload_len: usize) -> usize {
    match payload_len {
        0..=125 => 2,
        126..=0xFFFF => 4,
        _ => 10,
    }
}

/// Encodes one final, unmasked frame: header and payload in one buffer.
pub fn encode(opcode: OpCode, payload: &[u8]) -> Bytes {
    let mut header = [0u8; MAX_SERVER_HEADER];
    let n = write_header(opcode, payload.len(), &mut header);
    let mut buf = BytesMut::with_capacity(n + payload.len());
    buf.put_slice(&header[..n]);
    buf.put_slice(payload);
    buf.freeze()
}

/// Encodes a close frame; the reason is cut to fit the 125-byte control limit
/// on a character boundary.
pub fn encode_close(code: CloseCode, reason: &str) -> Bytes {
    let mut end = reason.len().min(MAX_CONTROL_PAYLOAD - 2);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut payload = [0u8; MAX_CONTROL_PAYLOAD];
    payload[..2].copy_from_slice(&code.0.to_be_bytes());
    payload[2..2 + end].copy_from_slice(&reason.as_bytes()[..end]);
    encode(OpCode::Close, &payload[..2 + end])
}

/// Encodes a client frame: masked with `mask`, or unmasked (illegal from a
/// client) with `None`. The opcode is raw so that reserved ones can be made.
/// roomcast never sends these; tests, benches and the load generator do.
pub fn encode_client(fin: bool, opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = Vec::with_capacity(MAX_CLIENT_HEADER + payload.len());
    out.push(if fin { 0x80 } else { 0 } | opcode);
    let m = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.push(m | n as u8),
        n if n <= 0xFFFF => {
            out.push(m | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(m | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match mask {
        Some(mask) => {
            out.extend_from_slice(&mask);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_uses_the_shortest_length_form() {
        for (len, want) in [(0, 2), (125, 2), (126, 4), (65535, 4), (65536, 10)] {
            let mut h = [0u8; MAX_SERVER_HEADER];
            assert_eq!(write_header(OpCode::Binary, len, &mut h), want, "len {len}");
            assert_eq!(header_len(len), want);
            assert_eq!(h[0], 0x82);
        }
    }

    #[test]
    fn encode_puts_header_then_payload() {
        let f = encode(OpCode::Text, b"hi");
        assert_eq!(&f[..], &[0x81, 2, b'h', b'i']);
        let big = vec![7u8; 70_000];
        let f = encode(OpCode::Binary, &big);
        assert_eq!(f[1], 127);
        assert_eq!(u64::from_be_bytes(f[2..10].try_into().unwrap()), 70_000);
        assert_eq!(f.len(), 70_010);
    }

    #[test]
    fn close_reason_is_cut_on_a_char_boundary() {
        let reason = "é".repeat(100);
        let f = encode_close(CloseCode::NORMAL, &reason);
        let payload = &f[2..];
        assert!(payload.len() <= MAX_CONTROL_PAYLOAD);
        assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 1000);
        assert!(std::str::from_utf8(&payload[2..]).is_ok());
    }
}
