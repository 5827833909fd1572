//! Client-side RFC 6455 framing: masked frames out, unmasked server frames in.
//!
//! The server's codec (`roomcast::ws`) does the opposite job, so only its
//! opcode type and header writer are reused. Parsing here never copies: it
//! reads a header at the front of a byte slice and says how long the frame is;
//! the caller hands out the payload as a slice of its read buffer.

use roomcast::internals::frame::{self, OpCode, MAX_CONTROL_PAYLOAD, MAX_SERVER_HEADER};

/// The largest server frame the generator accepts; past it the connection is
/// counted as a protocol error (no server in this contract sends more).
pub const MAX_FRAME: usize = 16 << 20;

/// A server frame header, parsed from the front of a buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// The FIN bit: this frame ends its message.
    pub fin: bool,
    /// RSV1: a compressed message (permessage-deflate).
    pub compressed: bool,
    /// The frame's opcode.
    pub opcode: OpCode,
    /// Bytes of header before the payload (2, 4 or 10).
    pub header_len: usize,
    /// Bytes of payload.
    pub payload_len: usize,
}

impl Header {
    /// Header and payload together.
    pub fn frame_len(&self) -> usize {
        self.header_len + self.payload_len
    }
}

/// A server broke the framing rules; the connection is dropped and counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameError(pub &'static str);

/// Parses the header at the front of `buf`; `Ok(None)` means it is not all here yet.
pub fn parse_header(buf: &[u8]) -> Result<Option<Header>, FrameError> {
    let [b0, b1, ..] = *buf else {
        return Ok(None);
    };
    let compressed = b0 & frame::RSV1 != 0;
    if b0 & 0x30 != 0 {
        return Err(FrameError("server frame with RSV2 or RSV3 set"));
    }
    if b1 & 0x80 != 0 {
        // RFC 6455 §5.1: a client must close on a masked server frame.
        return Err(FrameError("masked server frame"));
    }
    let opcode = OpCode::from_u8(b0 & 0x0F).ok_or(FrameError("reserved opcode"))?;
    let fin = b0 & 0x80 != 0;
    let (header_len, payload_len) = match b1 & 0x7F {
        126 => match buf.get(2..4) {
            Some(b) => (4, u16::from_be_bytes([b[0], b[1]]) as usize),
            None => return Ok(None),
        },
        127 => match buf.get(2..10) {
            Some(b) => {
                let mut len = [0u8; 8];
                len.copy_from_slice(b);
                let len = u64::from_be_bytes(len);
                (10, usize::try_from(len).unwrap_or(usize::MAX))
            }
            None => return Ok(None),
        },
        n => (2, n as usize),
    };
    if opcode.is_control() && (payload_len > MAX_CONTROL_PAYLOAD || !fin || compressed) {
        return Err(FrameError("oversized, fragmented or compressed control frame"));
    }
    if payload_len > MAX_FRAME {
        return Err(FrameError("server frame too large"));
    }
    Ok(Some(Header {
        fin,
        compressed,
        opcode,
        header_len,
        payload_len,
    }))
}

/// Appends one final, masked frame carrying `payload` to `out`.
pub fn write_frame(out: &mut Vec<u8>, opcode: OpCode, payload: &[u8], mask: [u8; 4]) {
    let mut header = [0u8; MAX_SERVER_HEADER];
    let n = frame::write_header(opcode, payload.len(), &mut header);
    header[1] |= 0x80;
    out.extend_from_slice(&header[..n]);
    out.extend_from_slice(&mask);
    let start = out.len();
    out.extend_from_slice(payload);
    apply_mask(&mut out[start..], mask);
}

/// XORs `buf` with the repeating 4-byte `mask` (RFC 6455 §5.3), eight bytes at a time.
pub fn apply_mask(buf: &mut [u8], mask: [u8; 4]) {
    let wide = u64::from_ne_bytes([mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3]]);
    let mut chunks = buf.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(word) ^ wide).to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= mask[i & 3];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masked_frames_unmask_to_the_payload() {
        for len in [0usize, 5, 125, 126, 70_000] {
            let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut out = Vec::new();
            write_frame(&mut out, OpCode::Text, &payload, [1, 2, 3, 4]);
            assert_eq!(out[0], 0x81);
            assert_eq!(out[1] & 0x80, 0x80, "mask bit");
            let hlen = frame::header_len(len);
            let mask = [out[hlen], out[hlen + 1], out[hlen + 2], out[hlen + 3]];
            let mut body = out[hlen + 4..].to_vec();
            apply_mask(&mut body, mask);
            assert_eq!(body, payload, "len {len}");
        }
    }

    #[test]
    fn server_headers_parse_and_wait_for_more() {
        let f = frame::encode(OpCode::Text, &[b'x'; 300]);
        assert_eq!(parse_header(&f[..1]), Ok(None));
        assert_eq!(parse_header(&f[..3]), Ok(None));
        let h = parse_header(&f).unwrap().unwrap();
        assert_eq!(
            (h.fin, h.opcode, h.header_len, h.payload_len),
            (true, OpCode::Text, 4, 300)
        );
        assert_eq!(h.frame_len(), f.len());
    }

    #[test]
    fn bad_server_frames_are_errors_not_panics() {
        assert!(parse_header(&[0x81, 0x85, 0, 0, 0, 0]).is_err(), "masked");
        assert!(parse_header(&[0xA1, 0x00]).is_err(), "rsv2");
        assert!(parse_header(&[0xC9, 0x00]).is_err(), "rsv1 on a ping");
        assert!(
            parse_header(&[0xC1, 0x00]).unwrap().unwrap().compressed,
            "rsv1: compressed"
        );
        assert!(parse_header(&[0x83, 0x00]).is_err(), "reserved opcode");
        assert!(parse_header(&[0x09, 0x00]).is_err(), "fragmented ping");
        assert!(parse_header(&[0x89, 126, 0, 200]).is_err(), "long ping");
        assert!(parse_header(&[0x82, 127, 0xFF, 0, 0, 0, 0, 0, 0, 0]).is_err(), "huge");
    }
}
