//! The subscriber's connections to Redis: plain TCP for `redis://`, TLS
//! (`crate::tls::client`) for `rediss://`. Both read and write like a
//! non-blocking socket; TLS records the socket did not take are sent by
//! [`Socket::send_pending`] at the next flush.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;

use mio::net::TcpStream;

use crate::tls::client::ClientStream;

/// How the subscriber reaches Redis.
#[derive(Debug, Clone)]
pub(crate) struct Dial {
    /// Host name (for TLS, the name the certificate must carry) and port.
    pub host: String,
    pub port: u16,
    /// With `rediss://`: the roots trusted.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

/// One connection to Redis.
#[derive(Debug)]
pub(crate) enum Socket {
    Plain(TcpStream),
    Tls(Box<ClientStream>),
}

impl Socket {
    /// Starts a non-blocking connect to `addr` (TLS begins with the first write).
    pub fn connect(addr: SocketAddr, dial: &Dial) -> io::Result<Socket> {
        let tcp = TcpStream::connect(addr)?;
        Ok(match &dial.tls {
            None => Socket::Plain(tcp),
            Some(config) => Socket::Tls(Box::new(ClientStream::new(tcp, config.clone(), &dial.host)?)),
        })
    }

    /// The TCP socket, for registration and connect checks.
    pub fn tcp(&mut self) -> &mut TcpStream {
        match self {
            Socket::Plain(s) => s,
            Socket::Tls(s) => s.socket(),
        }
    }

    /// Writes TLS records waiting for the socket (none for plain TCP);
    /// `WouldBlock` while some remain.
    pub fn send_pending(&mut self) -> io::Result<()> {
        match self {
            Socket::Plain(_) => Ok(()),
            Socket::Tls(s) => s.send_pending(),
        }
    }
}

impl Read for Socket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Socket::Plain(s) => s.read(buf),
            Socket::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Socket {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Socket::Plain(s) => s.write(buf),
            Socket::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Socket::Plain(s) => s.flush(),
            Socket::Tls(s) => s.flush(),
        }
    }
}
