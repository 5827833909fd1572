//! What a connection needs from its byte stream: read, write (vectored),
//! and a half-close. mio's `TcpStream` is one; `testing::Scripted` is
//! another, so the whole connection state machine runs in unit tests
//! without a socket (hyper's `Conn<I, ..>` over a mock I/O, the same idea).
//!
//! The contract is mio's: every call is non-blocking, and `WouldBlock`
//! means "come back on the next readiness event".

use std::io::{self, Read, Write};
use std::net::Shutdown;

/// A non-blocking byte stream a connection owns.
pub(crate) trait Transport: Read + Write {
    /// Sends our FIN after what is already written: we send no more.
    fn shutdown_write(&self) -> io::Result<()>;
}

impl Transport for mio::net::TcpStream {
    fn shutdown_write(&self) -> io::Result<()> {
        self.shutdown(Shutdown::Write)
    }
}
