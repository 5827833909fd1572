//! What a connection needs from its byte stream: read, write (vectored),
//! and a half-close. [`Stream`] is the real one, plain TCP or TLS;
//! `testing::Scripted` is another, so the whole connection state machine
//! runs in unit tests without a socket (hyper's `Conn<I, ..>` over a mock
//! I/O, the same idea).
//!
//! The contract is mio's: every call is non-blocking, and `WouldBlock`
//! means "come back on the next readiness event".

use std::io::{self, IoSlice, Read, Write};
use std::net::Shutdown;

use mio::net::TcpStream;

use crate::tls::{Outcome, TlsStream};

/// A non-blocking byte stream a connection owns.
pub(crate) trait Transport: Read + Write {
    /// Sends our FIN after what is already written: we send no more.
    fn shutdown_write(&mut self) -> io::Result<()>;

    /// Whether bytes the transport itself produced (sealed TLS records)
    /// wait for the socket.
    #[inline]
    fn holds_output(&self) -> bool {
        false
    }

    /// Writes what [`Transport::holds_output`] says waits; `Ok(true)` while
    /// some is left.
    #[inline]
    fn send_held(&mut self) -> io::Result<bool> {
        Ok(false)
    }

    /// The end of a TLS handshake, once, after the read that reached it.
    #[inline]
    fn take_outcome(&mut self) -> Option<Outcome> {
        None
    }

    /// Whether a read that returned less than the buffer proves the
    /// socket's receive queue empty: true for plain TCP under edge-triggered
    /// epoll (data that arrives later raises a new edge, so the read that
    /// would only say `WouldBlock` can be skipped, as tokio does); false
    /// for TLS, which hands out one record's plaintext at a time.
    #[inline]
    fn short_read_drains(&self) -> bool {
        false
    }

    /// Whether a TLS handshake is still under way (when the request times
    /// out, it is the handshake that did).
    #[inline]
    fn timed_out_handshake(&mut self) -> bool {
        false
    }
}

impl Transport for TcpStream {
    fn shutdown_write(&mut self) -> io::Result<()> {
        self.shutdown(Shutdown::Write)
    }

    #[inline]
    fn short_read_drains(&self) -> bool {
        true
    }
}

/// A client's socket: plain, or TLS with `--tls-cert`.
#[derive(Debug)]
pub(crate) enum Stream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP (boxed: rustls's state is a few hundred bytes, and
    /// plain connections should not pay for it).
    Tls(Box<TlsStream>),
}

impl Stream {
    /// The socket, for registration with the shard's poll.
    pub fn socket(&mut self) -> &mut TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => s.socket(),
        }
    }
}

impl Read for Stream {
    #[inline]
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    #[inline]
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }

    #[inline]
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write_vectored(bufs),
            Stream::Tls(s) => s.write_vectored(bufs),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

impl Transport for Stream {
    fn shutdown_write(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.shutdown(Shutdown::Write),
            Stream::Tls(s) => s.shutdown_write(),
        }
    }

    #[inline]
    fn holds_output(&self) -> bool {
        match self {
            Stream::Plain(_) => false,
            Stream::Tls(s) => s.holds_output(),
        }
    }

    fn send_held(&mut self) -> io::Result<bool> {
        match self {
            Stream::Plain(_) => Ok(false),
            Stream::Tls(s) => s.send_sealed(),
        }
    }

    #[inline]
    fn take_outcome(&mut self) -> Option<Outcome> {
        match self {
            Stream::Plain(_) => None,
            Stream::Tls(s) => s.take_outcome(),
        }
    }

    #[inline]
    fn short_read_drains(&self) -> bool {
        matches!(self, Stream::Plain(_))
    }

    fn timed_out_handshake(&mut self) -> bool {
        match self {
            Stream::Plain(_) => false,
            Stream::Tls(s) => s.time_out().is_some(),
        }
    }
}
