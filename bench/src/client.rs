//! One client connection: non-blocking connect, the upgrade, then frames.
//!
//! Invariants: reads are drained until `WouldBlock` or a short read, which on
//! epoll proves the receive queue empty (sockets are edge-triggered);
//! output is appended to `out` and written in as few `write` calls as the
//! kernel allows, resuming on the next writable edge when it pushes back. Bytes
//! of an incomplete frame wait in `inbuf`, which is empty (and owns no memory)
//! whenever the connection is between frames. Bad server input ends this
//! connection with an [`End`]; it never panics.

use std::io;
use std::time::Instant;

use mio::net::TcpStream;
use roomcast::internals::{Inflater, OpCode};

use crate::codec::{self, FrameError};
use crate::handshake::{self, Upgrade};
use crate::socket::Socket;
use crate::target::Target;

/// `inbuf` keeps up to this much capacity between reads, so a connection that
/// often ends a read mid-frame does not allocate per read.
const KEEP_INBUF: usize = 4096;

/// Written bytes kept at the front of `out` before it is compacted.
const COMPACT_OUT: usize = 64 * 1024;

/// Where a connection is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// TCP connect in progress.
    Connecting,
    /// Request written (or queued), waiting for `101`.
    Upgrading,
    /// Frames flow.
    Open,
}

/// Why a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// The close handshake completed; `by_server` says who started it.
    Closed {
        /// The server sent the first close frame.
        by_server: bool,
        /// The code in the server's close frame, if any.
        code: Option<u16>,
    },
    /// TCP connect failed.
    Connect(io::ErrorKind),
    /// The server refused the upgrade (HTTP status or a bad `101`).
    Refused(String),
    /// The server broke RFC 6455.
    Protocol(&'static str),
    /// The connection ended without a close handshake (EOF or socket error).
    Abrupt(String),
}

/// What a connection reports to its scenario.
#[derive(Debug)]
pub enum Event<'a> {
    /// The upgrade succeeded.
    Open,
    /// A whole text message; `at_ns` is when the read that completed it returned.
    Text {
        /// The message, a slice of the shared read buffer.
        payload: &'a [u8],
        /// Receive time in ns since the pool's epoch.
        at_ns: u64,
    },
    /// A whole binary message (not part of the contract; counted by callers).
    Binary,
    /// The connection is gone and will be dropped after this event.
    Ended(End),
}

/// Per-loop state shared by every connection: the read buffer, the mask
/// source, the clock, and the inflater of compressed messages (each is
/// inflated on its own: no context takeover).
pub struct Io {
    rbuf: Vec<u8>,
    rng: u64,
    epoch: Instant,
    inflater: Inflater,
    inflated: Vec<u8>,
}

impl Io {
    /// A read buffer of `cap` bytes and a clock starting at `epoch`.
    pub fn new(cap: usize, epoch: Instant) -> Io {
        // Masks only need to be unpredictable to proxies, not secret: a seeded
        // xorshift is plenty and costs nothing per frame.
        let seed = epoch.elapsed().as_nanos() as u64 ^ (u64::from(std::process::id()) << 32) ^ 0x9E37_79B9_7F4A_7C15;
        Io {
            rbuf: vec![0; cap],
            rng: seed | 1,
            epoch,
            inflater: Inflater::new(),
            inflated: Vec::new(),
        }
    }

    /// Nanoseconds since the epoch every timestamp in this run is relative to.
    pub fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    fn mask(&mut self) -> [u8; 4] {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng as u32).to_ne_bytes()
    }
}

/// Appends masked frames to one connection's output.
pub struct Writer<'a> {
    out: &'a mut Vec<u8>,
    close_sent: &'a mut bool,
    io: &'a mut Io,
}

impl Writer<'_> {
    /// Queues a text frame.
    pub fn text(&mut self, payload: &[u8]) {
        let mask = self.io.mask();
        codec::write_frame(self.out, OpCode::Text, payload, mask);
    }

    /// Starts the close handshake (code 1000) unless already started; the
    /// connection ends with `End::Closed { by_server: false }` when the server answers.
    pub fn close(&mut self) {
        if !*self.close_sent {
            *self.close_sent = true;
            let mask = self.io.mask();
            codec::write_frame(self.out, OpCode::Close, &1000u16.to_be_bytes(), mask);
        }
    }
}

/// One WebSocket client connection.
pub struct Client {
    stream: Socket,
    phase: Phase,
    out: Vec<u8>,
    out_pos: usize,
    inbuf: Vec<u8>,
    /// A fragmented message being reassembled (empty when none).
    frag: Vec<u8>,
    frag_text: Option<bool>,
    accept: Box<str>,
    close_sent: bool,
    /// Whether the pool has this connection on its list of pending writes.
    pub(crate) dirty: bool,
    /// The scenario's own number for this connection (e.g. subscriber index).
    pub tag: usize,
}

impl Client {
    /// Starts a non-blocking connect (TLS for `wss://`) and queues the
    /// upgrade request for the target's host and path.
    pub fn connect(target: &Target, tag: usize) -> io::Result<Client> {
        let stream = TcpStream::connect(target.addr)?;
        // Without this, Nagle holds small publishes back until the previous
        // segment is acked (up to the 40 ms delayed-ACK timer): pure latency noise.
        stream.set_nodelay(true)?;
        let req = handshake::request(&target.host, &target.path, target.compression);
        Ok(Client {
            stream: Socket::new(stream, target.tls.as_ref())?,
            phase: Phase::Connecting,
            out: req.bytes,
            out_pos: 0,
            inbuf: Vec::new(),
            frag: Vec::new(),
            frag_text: None,
            accept: req.accept,
            close_sent: false,
            dirty: false,
            tag,
        })
    }

    /// The socket, for (de)registration.
    pub fn stream_mut(&mut self) -> &mut TcpStream {
        self.stream.tcp()
    }

    /// Whether the upgrade has completed.
    pub fn is_open(&self) -> bool {
        self.phase == Phase::Open
    }

    /// A writer for this connection's output (flushed by the pool).
    pub fn writer<'a>(&'a mut self, io: &'a mut Io) -> Writer<'a> {
        Writer {
            out: &mut self.out,
            close_sent: &mut self.close_sent,
            io,
        }
    }

    /// Handles one readiness event: finishes the connect, reads everything
    /// available (calling `f` per message) and writes what is queued.
    pub fn ready<F>(&mut self, ev: &mio::event::Event, io: &mut Io, f: &mut F) -> Option<End>
    where
        F: FnMut(Event<'_>, &mut Writer<'_>),
    {
        if self.phase == Phase::Connecting {
            match self.connected() {
                Ok(true) => self.phase = Phase::Upgrading,
                Ok(false) => return None,
                Err(e) => return Some(End::Connect(e.kind())),
            }
        }
        if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
            if let Some(end) = self.read(io, f) {
                // Best effort: let a close reply reach the server before the socket goes.
                let _ = self.flush();
                return Some(end);
            }
        }
        self.flush()
    }

    /// Whether a non-blocking connect has completed (mio's documented check).
    fn connected(&mut self) -> io::Result<bool> {
        if let Some(e) = self.stream.tcp().take_error()? {
            return Err(e);
        }
        match self.stream.tcp().peer_addr() {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Writes queued output until done or `WouldBlock`.
    pub fn flush(&mut self) -> Option<End> {
        if self.phase == Phase::Connecting {
            return None;
        }
        while self.out_pos < self.out.len() {
            match self.stream.write(&self.out[self.out_pos..]) {
                Ok(0) => return Some(End::Abrupt("write returned 0".into())),
                Ok(n) => self.out_pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if self.out_pos >= COMPACT_OUT {
                        // A publisher that never quite catches up must not keep
                        // everything it ever sent in front of what it has not.
                        self.out.drain(..self.out_pos);
                        self.out_pos = 0;
                    }
                    return None;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Some(End::Abrupt(format!("write: {e}"))),
            }
        }
        self.out.clear();
        self.out_pos = 0;
        match self.stream.send_pending() {
            Ok(()) => None,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
            Err(e) => Some(End::Abrupt(format!("write: {e}"))),
        }
    }

    /// Drains the socket into the shared buffer and hands out every whole frame.
    fn read<F>(&mut self, io: &mut Io, f: &mut F) -> Option<End>
    where
        F: FnMut(Event<'_>, &mut Writer<'_>),
    {
        let mut rbuf = std::mem::take(&mut io.rbuf);
        let mut len = self.inbuf.len();
        if rbuf.len() < len * 2 {
            rbuf.resize(len * 2, 0);
        }
        rbuf[..len].copy_from_slice(&self.inbuf);
        self.inbuf.clear();
        if self.inbuf.capacity() > KEEP_INBUF {
            // One big frame should not pin memory on an otherwise small connection.
            self.inbuf = Vec::new();
        }
        let mut end = None;
        loop {
            if len == rbuf.len() {
                // One frame larger than the buffer: grow (bounded by MAX_FRAME).
                rbuf.resize(rbuf.len() * 2, 0);
            }
            let room = rbuf.len() - len;
            match self.stream.read(&mut rbuf[len..]) {
                Ok(0) => {
                    end = Some(self.eof(len));
                    break;
                }
                Ok(n) => {
                    len += n;
                    let at_ns = io.now_ns();
                    match self.frames(&mut rbuf[..len], at_ns, io, f) {
                        Ok(used) => {
                            rbuf.copy_within(used..len, 0);
                            len -= used;
                        }
                        Err(e) => {
                            end = Some(e);
                            break;
                        }
                    }
                    if n < room && !self.stream.is_tls() {
                        // A short read emptied the socket's receive queue: on
                        // epoll any later arrival raises a new edge, so the
                        // read that would only say `WouldBlock` is skipped (as
                        // tokio does). It halves syscalls when reads are small.
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    end = Some(End::Abrupt(format!("read: {e}")));
                    break;
                }
            }
        }
        if end.is_none() && len > 0 {
            self.inbuf.extend_from_slice(&rbuf[..len]);
        }
        io.rbuf = rbuf;
        end
    }

    fn eof(&self, leftover: usize) -> End {
        match self.phase {
            Phase::Open if leftover == 0 => End::Abrupt("EOF without a close frame".into()),
            Phase::Open => End::Abrupt("EOF in the middle of a frame".into()),
            _ => End::Refused("connection closed during the upgrade".into()),
        }
    }

    /// Handles every whole frame at the front of `buf`; returns the bytes consumed.
    fn frames<F>(&mut self, buf: &mut [u8], at_ns: u64, io: &mut Io, f: &mut F) -> Result<usize, End>
    where
        F: FnMut(Event<'_>, &mut Writer<'_>),
    {
        let mut pos = 0;
        if self.phase == Phase::Upgrading {
            match handshake::check_response(buf, &self.accept) {
                Upgrade::Incomplete => return Ok(0),
                Upgrade::Refused(why) => return Err(End::Refused(why)),
                Upgrade::Done { head_len } => {
                    pos = head_len;
                    self.phase = Phase::Open;
                    self.accept = Box::from("");
                    f(Event::Open, &mut self.writer(io));
                }
            }
        }
        loop {
            let rest = &buf[pos..];
            let header = match codec::parse_header(rest) {
                Ok(Some(h)) if h.frame_len() <= rest.len() => h,
                Ok(_) => return Ok(pos),
                Err(FrameError(why)) => return Err(End::Protocol(why)),
            };
            let payload = &rest[header.header_len..header.frame_len()];
            pos += header.frame_len();
            let mut w = Writer {
                out: &mut self.out,
                close_sent: &mut self.close_sent,
                io,
            };
            match header.opcode {
                OpCode::Text | OpCode::Binary if self.frag_text.is_some() => {
                    return Err(End::Protocol("new message inside a fragmented one"));
                }
                OpCode::Text | OpCode::Binary if header.compressed => {
                    if !header.fin {
                        return Err(End::Protocol("fragmented compressed message (not supported here)"));
                    }
                    let mut plain = std::mem::take(&mut w.io.inflated);
                    if w.io.inflater.inflate(payload, codec::MAX_FRAME, &mut plain).is_err() {
                        return Err(End::Protocol("compressed message does not inflate"));
                    }
                    if header.opcode == OpCode::Text {
                        f(Event::Text { payload: &plain, at_ns }, &mut w);
                    } else {
                        f(Event::Binary, &mut w);
                    }
                    w.io.inflated = plain;
                }
                OpCode::Text if header.fin => f(Event::Text { payload, at_ns }, &mut w),
                OpCode::Binary if header.fin => f(Event::Binary, &mut w),
                OpCode::Text | OpCode::Binary => {
                    self.frag_text = Some(header.opcode == OpCode::Text);
                    self.frag.extend_from_slice(payload);
                }
                OpCode::Continuation => {
                    let Some(text) = self.frag_text else {
                        return Err(End::Protocol("continuation without a message"));
                    };
                    if self.frag.len() + payload.len() > codec::MAX_FRAME {
                        return Err(End::Protocol("fragmented message too large"));
                    }
                    self.frag.extend_from_slice(payload);
                    if header.fin {
                        let whole = std::mem::take(&mut self.frag);
                        self.frag_text = None;
                        if text {
                            f(Event::Text { payload: &whole, at_ns }, &mut w);
                        } else {
                            f(Event::Binary, &mut w);
                        }
                    }
                }
                OpCode::Ping => {
                    let mask = w.io.mask();
                    codec::write_frame(w.out, OpCode::Pong, payload, mask);
                }
                OpCode::Pong => {}
                OpCode::Close => {
                    let code = (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
                    let by_server = !*w.close_sent;
                    if by_server {
                        // Echo the code, as RFC 6455 §5.5.1 asks.
                        let mask = w.io.mask();
                        let echo = code.map(u16::to_be_bytes);
                        codec::write_frame(w.out, OpCode::Close, echo.as_ref().map_or(&[][..], |c| &c[..]), mask);
                        *w.close_sent = true;
                    }
                    return Err(End::Closed { by_server, code });
                }
            }
        }
    }
}
