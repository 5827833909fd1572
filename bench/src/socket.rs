//! A client's socket: plain TCP, or TLS (rustls) over it for `wss://`.
//!
//! Both read and write like a non-blocking stream: `WouldBlock` means
//! "wait for the next edge". TLS records the socket did not take stay in
//! rustls and go first on the next write or writable edge
//! ([`Socket::send_pending`]).

use std::io::{self, Read, Write};

use mio::net::TcpStream;
use rustls::ClientConnection;

use crate::target::Tls;

/// A connection's byte stream.
pub enum Socket {
    /// `ws://`.
    Plain(TcpStream),
    /// `wss://`.
    Tls(Box<(TcpStream, ClientConnection)>),
}

impl Socket {
    /// Wraps a connecting socket; with `tls`, the handshake starts with
    /// the first write.
    pub fn new(tcp: TcpStream, tls: Option<&Tls>) -> io::Result<Socket> {
        Ok(match tls {
            None => Socket::Plain(tcp),
            Some(t) => {
                let conn = ClientConnection::new(t.config.clone(), t.name.clone()).map_err(io::Error::other)?;
                Socket::Tls(Box::new((tcp, conn)))
            }
        })
    }

    /// The TCP socket, for registration and connect checks.
    pub fn tcp(&mut self) -> &mut TcpStream {
        match self {
            Socket::Plain(s) => s,
            Socket::Tls(b) => &mut b.0,
        }
    }

    /// Whether a short read may leave data behind (TLS reads hand out one
    /// record's plaintext at a time).
    pub fn is_tls(&self) -> bool {
        matches!(self, Socket::Tls(_))
    }

    /// Reads plaintext; `Ok(0)` at the end of the stream.
    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let (tcp, conn) = match self {
            Socket::Plain(s) => return s.read(buf),
            Socket::Tls(b) => (&mut b.0, &mut b.1),
        };
        loop {
            match conn.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            if conn.read_tls(tcp)? == 0 {
                return Ok(0);
            }
            conn.process_new_packets()
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            // Handshake messages (and anything else rustls queued) go out now.
            match send(tcp, conn) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Writes plaintext (sealed first with TLS); `WouldBlock` while earlier
    /// records still wait for the socket.
    pub fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let (tcp, conn) = match self {
            Socket::Plain(s) => return s.write(buf),
            Socket::Tls(b) => (&mut b.0, &mut b.1),
        };
        send(tcp, conn)?;
        let n = conn.writer().write(buf)?;
        if n == 0 && !buf.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        match send(tcp, conn) {
            Ok(()) => Ok(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(n),
            Err(e) => Err(e),
        }
    }

    /// Writes TLS records waiting for the socket (nothing for plain TCP).
    pub fn send_pending(&mut self) -> io::Result<()> {
        match self {
            Socket::Plain(_) => Ok(()),
            Socket::Tls(b) => send(&mut b.0, &mut b.1),
        }
    }
}

/// Writes rustls's records until none is left, or `WouldBlock`.
fn send(tcp: &mut TcpStream, conn: &mut ClientConnection) -> io::Result<()> {
    while conn.wants_write() {
        match conn.write_tls(tcp) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
