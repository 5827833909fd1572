//! A client's socket: plain TCP, or TLS over it for `wss://` (the server's
//! own TLS client stream, `roomcast::internals::TlsClientStream`, which
//! reads and writes like the socket under it: `WouldBlock` means "wait for
//! the next edge", and sealed records the socket did not take go first at
//! the next write or [`Socket::send_pending`]).

use std::io::{self, Read, Write};

use mio::net::TcpStream;
use roomcast::internals::TlsClientStream;

use crate::target::Tls;

/// A connection's byte stream.
pub enum Socket {
    /// `ws://`.
    Plain(TcpStream),
    /// `wss://`.
    Tls(Box<TlsClientStream>),
}

impl Socket {
    /// Wraps a connecting socket; with `tls`, the handshake starts with
    /// the first write.
    pub fn new(tcp: TcpStream, tls: Option<&Tls>) -> io::Result<Socket> {
        Ok(match tls {
            None => Socket::Plain(tcp),
            Some(t) => Socket::Tls(Box::new(TlsClientStream::new(tcp, t.config.clone(), &t.host)?)),
        })
    }

    /// The TCP socket, for registration and connect checks.
    pub fn tcp(&mut self) -> &mut TcpStream {
        match self {
            Socket::Plain(s) => s,
            Socket::Tls(s) => s.socket(),
        }
    }

    /// Whether a short read may leave data behind (TLS reads hand out one
    /// record's plaintext at a time).
    pub fn is_tls(&self) -> bool {
        matches!(self, Socket::Tls(_))
    }

    /// Reads plaintext; `Ok(0)` at the end of the stream.
    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Socket::Plain(s) => s.read(buf),
            Socket::Tls(s) => s.read(buf),
        }
    }

    /// Writes plaintext (sealed first with TLS); `WouldBlock` while earlier
    /// records still wait for the socket.
    pub fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Socket::Plain(s) => s.write(buf),
            Socket::Tls(s) => s.write(buf),
        }
    }

    /// Writes TLS records waiting for the socket (nothing for plain TCP).
    pub fn send_pending(&mut self) -> io::Result<()> {
        match self {
            Socket::Plain(_) => Ok(()),
            Socket::Tls(s) => s.send_pending(),
        }
    }
}
