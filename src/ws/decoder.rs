//! The incremental frame decoder: the parser every byte from a client passes
//! through, and the one the fuzzer aims at.
//!
//! `Decoder::feed` takes whatever a `read` returned and calls back with each
//! complete message or control frame. A frame that arrives whole in the input
//! is unmasked in place and handed out as a slice of the input (no copy); only
//! a frame cut by the end of the input, or a fragmented message, is copied into
//! the decoder's own buffer. So an idle connection owns no read buffer at all,
//! and a busy one owns at most `max_message` bytes plus one 14-byte header.
//!
//! Every rule violation is a [`ProtocolError`] carrying the close code to send;
//! after one, or after a close frame, the decoder ignores all further input.

use std::ops::ControlFlow;

use super::close::CloseCode;
use super::frame::{OpCode, MAX_CLIENT_HEADER, MAX_CONTROL_PAYLOAD, RSV1};
use super::utf8::Utf8Validator;

/// One complete unit decoded from the client.
#[derive(Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// A whole text message, already checked to be valid UTF-8.
    Text(&'a [u8]),
    /// A whole binary message.
    Binary(&'a [u8]),
    /// A data frame that is not the last of its message arrived whole (its
    /// payload is kept for the message); lets the caller count frames, so
    /// that a flood of empty fragments costs like a flood of messages.
    Fragment,
    /// A whole message compressed with permessage-deflate (RSV1 on its
    /// first frame; only when negotiated): the caller inflates it, then
    /// checks text for UTF-8.
    Compressed {
        /// A text message (else binary).
        text: bool,
        /// The compressed bytes of every frame, in order.
        payload: &'a [u8],
    },
    /// A ping; the caller answers with a pong carrying the same payload.
    Ping(&'a [u8]),
    /// A pong (a heartbeat answer).
    Pong(&'a [u8]),
    /// A valid close frame; `code` is `None` when the frame had no payload.
    Close {
        /// The peer's status code, if it sent one.
        code: Option<CloseCode>,
        /// The peer's reason (valid UTF-8, possibly empty).
        reason: &'a str,
    },
}

/// The client broke RFC 6455; close the connection with `code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{reason} (close {code})")]
pub struct ProtocolError {
    /// The close code to send back.
    pub code: CloseCode,
    /// A short reason, sent in the close frame and logged.
    pub reason: &'static str,
}

const fn fail(code: CloseCode, reason: &'static str) -> ProtocolError {
    ProtocolError { code, reason }
}

/// A parsed frame header whose payload is still being read.
#[derive(Debug, Clone, Copy)]
struct Frame {
    opcode: OpCode,
    fin: bool,
    /// RSV1: the first frame of a compressed message.
    compressed: bool,
    mask: [u8; 4],
    len: usize,
    done: usize,
}

/// A data message that spans frames or reads.
#[derive(Debug)]
struct Message {
    text: bool,
    /// Compressed (RSV1 on its first frame): UTF-8 is checked once inflated.
    compressed: bool,
    len: usize,
    utf8: Utf8Validator,
}

/// Decodes client frames for one connection.
#[derive(Debug)]
pub struct Decoder {
    max_message: usize,
    header: [u8; MAX_CLIENT_HEADER],
    header_len: u8,
    frame: Option<Frame>,
    /// What a message or control frame spanning reads needs; boxed, as
    /// most connections never have one (small messages are decoded in
    /// place from the read buffer), and every connection carries a decoder.
    partial: Option<Box<Partial>>,
    done: bool,
    /// permessage-deflate was negotiated: RSV1 may mark a compressed message.
    deflate: bool,
}

/// The state of messages and control frames that span frames or reads.
#[derive(Debug, Default)]
struct Partial {
    message: Option<Message>,
    data: Vec<u8>,
    control: Vec<u8>,
}

/// Buffers above this capacity are released once their message is delivered,
/// so one large message does not pin memory on an otherwise idle connection.
const KEEP_CAPACITY: usize = 4096;

impl Decoder {
    /// A decoder that refuses messages longer than `max_message` bytes.
    pub fn new(max_message: usize) -> Self {
        Decoder {
            max_message,
            header: [0; MAX_CLIENT_HEADER],
            header_len: 0,
            frame: None,
            partial: None,
            done: false,
            deflate: false,
        }
    }

    /// Allows compressed messages (RSV1), as permessage-deflate was
    /// negotiated; without it RSV1 is a protocol error.
    pub fn with_deflate(mut self, on: bool) -> Self {
        self.deflate = on;
        self
    }

    /// Whether it has stopped (a close frame, an error, or the caller's
    /// `Break`): whatever else arrives is ignored.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Whether the decoder holds a partial frame or message.
    #[cfg(test)]
    pub fn is_mid_message(&self) -> bool {
        self.header_len > 0 || self.frame.is_some() || self.message().is_some()
    }

    /// The fragmented message in progress, if any.
    fn message(&self) -> Option<&Message> {
        self.partial.as_ref().and_then(|p| p.message.as_ref())
    }

    /// Bytes the decoder currently holds on the heap for this connection.
    #[cfg(test)]
    pub fn buffered_capacity(&self) -> usize {
        self.partial
            .as_ref()
            .map_or(0, |p| p.data.capacity() + p.control.capacity())
    }

    /// Decodes all of `input` (unmasking it in place), calling `on_event` for
    /// each complete message or control frame. `on_event` may return
    /// `Break` to stop: the rest of the input is then discarded.
    pub fn feed<F>(&mut self, input: &mut [u8], mut on_event: F) -> Result<(), ProtocolError>
    where
        F: FnMut(Event<'_>) -> ControlFlow<()>,
    {
        let mut pos = 0;
        while !self.done && pos < input.len() {
            let frame = match self.frame {
                Some(f) => f,
                None => match self.read_header(input, &mut pos) {
                    Ok(Some(f)) => f,
                    Ok(None) => return Ok(()),
                    Err(e) => return Err(self.poison(e)),
                },
            };
            let avail = input.len() - pos;
            let whole = frame.done == 0 && frame.len <= avail;
            let direct = whole && (frame.opcode.is_control() || (frame.fin && self.message().is_none()));
            let flow = if direct {
                let payload = &mut input[pos..pos + frame.len];
                pos += frame.len;
                self.frame = None;
                unmask(payload, frame.mask, 0);
                match self.emit_direct(frame.opcode, frame.compressed, payload, &mut on_event) {
                    Ok(flow) => flow,
                    Err(e) => return Err(self.poison(e)),
                }
            } else {
                let take = (frame.len - frame.done).min(avail);
                let chunk = &mut input[pos..pos + take];
                pos += take;
                unmask(chunk, frame.mask, frame.done);
                match self.buffer_chunk(frame, chunk, &mut on_event) {
                    Ok(flow) => flow,
                    Err(e) => return Err(self.poison(e)),
                }
            };
            if flow.is_break() {
                self.done = true;
            }
        }
        Ok(())
    }

    fn poison(&mut self, e: ProtocolError) -> ProtocolError {
        self.done = true;
        self.partial = None;
        e
    }

    /// Parses the next header, stashing a partial one. `None`: need more input.
    fn read_header(&mut self, input: &[u8], pos: &mut usize) -> Result<Option<Frame>, ProtocolError> {
        let rest = &input[*pos..];
        if self.header_len == 0 {
            if let Some((frame, used)) = self.parse_header(rest)? {
                *pos += used;
                self.frame = Some(frame);
                return Ok(Some(frame));
            }
        }
        // Slow path: the header straddles reads. Copy at most what the header
        // can need; `parse_header` tells us when it is complete.
        let have = self.header_len as usize;
        let take = (MAX_CLIENT_HEADER - have).min(rest.len());
        self.header[have..have + take].copy_from_slice(&rest[..take]);
        let stash = self.header;
        match self.parse_header(&stash[..have + take])? {
            Some((frame, used)) => {
                *pos += used - have;
                self.header_len = 0;
                self.frame = Some(frame);
                Ok(Some(frame))
            }
            None => {
                *pos += take;
                self.header_len = (have + take) as u8;
                Ok(None)
            }
        }
    }

    /// Validates a header at the start of `b`; `None` if `b` is too short.
    fn parse_header(&self, b: &[u8]) -> Result<Option<(Frame, usize)>, ProtocolError> {
        if b.len() < 2 {
            return Ok(None);
        }
        let fin = b[0] & 0x80 != 0;
        let compressed = b[0] & RSV1 != 0;
        if b[0] & 0x30 != 0 || (compressed && !self.deflate) {
            return Err(fail(CloseCode::PROTOCOL_ERROR, "reserved bits set"));
        }
        let opcode = OpCode::from_u8(b[0] & 0x0F).ok_or(fail(CloseCode::PROTOCOL_ERROR, "reserved opcode"))?;
        // RFC 7692 §6.1: RSV1 only on the first frame of a data message.
        if compressed && !matches!(opcode, OpCode::Text | OpCode::Binary) {
            return Err(fail(
                CloseCode::PROTOCOL_ERROR,
                "RSV1 set on a control or continuation frame",
            ));
        }
        if b[1] & 0x80 == 0 {
            return Err(fail(CloseCode::PROTOCOL_ERROR, "client frame not masked"));
        }
        let (len, at) = match b[1] & 0x7F {
            126 => match b.get(2..4) {
                Some(x) => (u16::from_be_bytes([x[0], x[1]]) as u64, 4),
                None => return Ok(None),
            },
            127 => match b.get(2..10) {
                Some(x) => (u64::from_be_bytes(x.try_into().expect("8 bytes")), 10),
                None => return Ok(None),
            },
            n => (n as u64, 2),
        };
        if len >> 63 != 0 {
            return Err(fail(CloseCode::PROTOCOL_ERROR, "frame length has its top bit set"));
        }
        if opcode.is_control() {
            if !fin {
                return Err(fail(CloseCode::PROTOCOL_ERROR, "fragmented control frame"));
            }
            if len > MAX_CONTROL_PAYLOAD as u64 {
                return Err(fail(CloseCode::PROTOCOL_ERROR, "control frame over 125 bytes"));
            }
        } else {
            let so_far = match (self.message(), opcode) {
                (None, OpCode::Continuation) => {
                    return Err(fail(CloseCode::PROTOCOL_ERROR, "continuation without a message"))
                }
                (Some(_), OpCode::Text | OpCode::Binary) => {
                    return Err(fail(CloseCode::PROTOCOL_ERROR, "new message inside a fragmented one"))
                }
                (Some(m), _) => m.len as u64,
                (None, _) => 0,
            };
            if so_far + len > self.max_message as u64 {
                return Err(fail(CloseCode::TOO_BIG, "message too big"));
            }
        }
        let Some(mask) = b.get(at..at + 4) else {
            return Ok(None);
        };
        let frame = Frame {
            opcode,
            fin,
            compressed,
            mask: mask.try_into().expect("4 bytes"),
            // Fits: control ≤ 125, data ≤ max_message which is a usize.
            len: len as usize,
            done: 0,
        };
        Ok(Some((frame, at + 4)))
    }

    /// Hands out a frame that arrived whole, straight from the input.
    fn emit_direct<F>(
        &mut self,
        opcode: OpCode,
        compressed: bool,
        payload: &[u8],
        on_event: &mut F,
    ) -> Result<ControlFlow<()>, ProtocolError>
    where
        F: FnMut(Event<'_>) -> ControlFlow<()>,
    {
        if compressed {
            let text = opcode == OpCode::Text;
            return Ok(on_event(Event::Compressed { text, payload }));
        }
        let event = match opcode {
            OpCode::Text => {
                if std::str::from_utf8(payload).is_err() {
                    return Err(fail(CloseCode::INVALID_PAYLOAD, "text is not valid UTF-8"));
                }
                Event::Text(payload)
            }
            OpCode::Binary => Event::Binary(payload),
            OpCode::Ping => Event::Ping(payload),
            OpCode::Pong => Event::Pong(payload),
            OpCode::Close => {
                let flow = on_event(close_event(payload)?);
                self.done = true;
                return Ok(flow);
            }
            OpCode::Continuation => unreachable!("continuations are always buffered"),
        };
        Ok(on_event(event))
    }

    /// Copies a piece of a frame into the decoder; emits when it completes.
    fn buffer_chunk<F>(
        &mut self,
        mut frame: Frame,
        chunk: &[u8],
        on_event: &mut F,
    ) -> Result<ControlFlow<()>, ProtocolError>
    where
        F: FnMut(Event<'_>) -> ControlFlow<()>,
    {
        frame.done += chunk.len();
        let complete = frame.done == frame.len;
        self.frame = if complete { None } else { Some(frame) };

        let partial = self.partial.get_or_insert_with(Box::default);
        if frame.opcode.is_control() {
            partial.control.extend_from_slice(chunk);
            if !complete {
                return Ok(ControlFlow::Continue(()));
            }
            let payload = std::mem::take(&mut partial.control);
            let flow = match frame.opcode {
                OpCode::Ping => on_event(Event::Ping(&payload)),
                OpCode::Pong => on_event(Event::Pong(&payload)),
                _ => {
                    let flow = on_event(close_event(&payload)?);
                    self.done = true;
                    flow
                }
            };
            // Its capacity stays for the next one.
            partial.control = payload;
            partial.control.clear();
            return Ok(flow);
        }

        let msg = partial.message.get_or_insert_with(|| Message {
            text: frame.opcode == OpCode::Text,
            compressed: frame.compressed,
            len: 0,
            utf8: Utf8Validator::new(),
        });
        msg.len += chunk.len();
        if msg.text && !msg.compressed && msg.utf8.feed(chunk).is_err() {
            return Err(fail(CloseCode::INVALID_PAYLOAD, "text is not valid UTF-8"));
        }
        partial.data.extend_from_slice(chunk);
        if !complete {
            return Ok(ControlFlow::Continue(()));
        }
        if !frame.fin {
            return Ok(on_event(Event::Fragment));
        }
        let mut msg = partial.message.take().expect("message in progress");
        if msg.text && !msg.compressed && msg.utf8.finish().is_err() {
            return Err(fail(CloseCode::INVALID_PAYLOAD, "text ends inside a UTF-8 sequence"));
        }
        let flow = if msg.compressed {
            on_event(Event::Compressed {
                text: msg.text,
                payload: &partial.data,
            })
        } else if msg.text {
            on_event(Event::Text(&partial.data))
        } else {
            on_event(Event::Binary(&partial.data))
        };
        if partial.data.capacity() > KEEP_CAPACITY {
            self.partial = None;
        } else {
            partial.data.clear();
        }
        Ok(flow)
    }
}

/// Validates a close frame's payload (RFC 6455 §5.5.1, §7.4).
fn close_event(payload: &[u8]) -> Result<Event<'_>, ProtocolError> {
    match payload {
        [] => Ok(Event::Close { code: None, reason: "" }),
        [_] => Err(fail(CloseCode::PROTOCOL_ERROR, "close payload of one byte")),
        [hi, lo, reason @ ..] => {
            let code = CloseCode(u16::from_be_bytes([*hi, *lo]));
            if !code.is_valid_on_wire() {
                return Err(fail(CloseCode::PROTOCOL_ERROR, "invalid close code"));
            }
            let reason = std::str::from_utf8(reason)
                .map_err(|_| fail(CloseCode::INVALID_PAYLOAD, "close reason is not valid UTF-8"))?;
            Ok(Event::Close {
                code: Some(code),
                reason,
            })
        }
    }
}

/// XORs `buf` with the mask, `offset` bytes into the frame's payload.
/// Eight bytes at a time: this runs over every byte a client sends.
pub fn unmask(buf: &mut [u8], mask: [u8; 4], offset: usize) {
    let m: [u8; 4] = std::array::from_fn(|i| mask[(offset + i) & 3]);
    let wide = u64::from_ne_bytes([m[0], m[1], m[2], m[3], m[0], m[1], m[2], m[3]]);
    let mut chunks = buf.chunks_exact_mut(8);
    for c in &mut chunks {
        let v = u64::from_ne_bytes((&*c).try_into().expect("8 bytes")) ^ wide;
        c.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= m[i & 3];
    }
}

#[cfg(test)]
#[path = "decoder_tests.rs"]
mod tests;
