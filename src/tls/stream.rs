//! One TLS connection over a non-blocking socket: rustls's state machine
//! between the socket and the connection's reads and writes.
//!
//! Reads hand the connection plaintext and answer the handshake on the way
//! (a `read` that only advanced the handshake says `WouldBlock`, as the
//! socket would). Writes seal what the connection gives them into records
//! and pass them on with one `writev`; records the socket did not take
//! stay sealed here ([`TlsStream::send_sealed`]) and go first next time,
//! and a write is refused (`WouldBlock`) until they are gone, so at most
//! one batch of ciphertext (rustls's 64 KiB buffer limit) waits per
//! connection while the plaintext stays in the outbox, shared.
//!
//! The first byte tells a client that speaks plain HTTP to the TLS port;
//! it gets a `400` saying to use `https://` or `wss://` instead of a
//! handshake that hangs or an alert it cannot print.

use std::io::{self, IoSlice, Read, Write};
use std::net::Shutdown;

use mio::net::TcpStream;
use rustls::ServerConnection;

/// A TLS record's first byte when it carries a handshake message.
const HANDSHAKE_RECORD: u8 = 0x16;

/// The answer to plain HTTP on the TLS port (the unit test below checks
/// its length).
const PLAIN_HTTP_ANSWER: &[u8] = b"HTTP/1.1 400 Bad Request\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
Content-Length: 53\r\n\
Connection: close\r\n\r\n\
this port speaks TLS: use https:// or wss:// instead\n";

/// How a handshake failed, for `roomcast_tls_handshake_failures_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The client spoke plain HTTP to the TLS port (answered with a 400).
    PlainHttp,
    /// The client refused us with an alert (e.g. it does not trust the
    /// certificate).
    Alert,
    /// Anything else TLS refused: no common version or cipher suite, a
    /// malformed record, no common ALPN protocol.
    Protocol,
    /// The client closed the socket during the handshake.
    Closed,
    /// `--handshake-timeout-secs` passed first.
    Timeout,
}

impl Failure {
    /// Every reason, in metric order.
    pub const ALL: [Failure; 5] = [
        Failure::PlainHttp,
        Failure::Alert,
        Failure::Protocol,
        Failure::Closed,
        Failure::Timeout,
    ];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Failure::PlainHttp => "plain_http",
            Failure::Alert => "alert",
            Failure::Protocol => "protocol",
            Failure::Closed => "closed",
            Failure::Timeout => "timeout",
        }
    }
}

/// The end of a handshake, reported once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The connection is encrypted; what follows is HTTP.
    Established,
    /// The handshake failed.
    Failed(Failure),
}

/// Where the handshake is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Nothing read yet: the first byte decides TLS or plain HTTP.
    Fresh,
    Handshaking,
    Established,
    Failed,
}

/// A server-side TLS connection over a mio socket.
pub struct TlsStream {
    tcp: TcpStream,
    tls: ServerConnection,
    stage: Stage,
    /// The handshake's end, until the connection has counted it.
    outcome: Option<Outcome>,
    /// Our FIN waits behind sealed records (`shutdown_write`).
    fin_pending: bool,
}

impl std::fmt::Debug for TlsStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsStream")
            .field("tcp", &self.tcp)
            .field("stage", &self.stage)
            .finish_non_exhaustive()
    }
}

impl TlsStream {
    /// Wraps an accepted socket; nothing is read until the first `read`.
    pub fn new(tcp: TcpStream, tls: ServerConnection) -> TlsStream {
        TlsStream {
            tcp,
            tls,
            stage: Stage::Fresh,
            outcome: None,
            fin_pending: false,
        }
    }

    /// The socket, for registration with the shard's poll.
    pub fn socket(&mut self) -> &mut TcpStream {
        &mut self.tcp
    }

    /// The handshake's end, once, after the `read` that reached it.
    #[inline]
    pub fn take_outcome(&mut self) -> Option<Outcome> {
        self.outcome.take()
    }

    /// Whether the handshake has not finished (nor failed) yet.
    pub fn is_handshaking(&self) -> bool {
        matches!(self.stage, Stage::Fresh | Stage::Handshaking)
    }

    /// Records that the handshake timed out (if it had not ended).
    pub fn time_out(&mut self) -> Option<Failure> {
        self.is_handshaking().then(|| {
            self.stage = Stage::Failed;
            Failure::Timeout
        })
    }

    /// Whether sealed records (or our FIN behind them) wait for the socket.
    #[inline]
    pub fn holds_output(&self) -> bool {
        self.fin_pending || self.tls.wants_write()
    }

    /// Writes sealed records until none is left (`Ok(false)`) or the socket
    /// is full (`Ok(true)`), then our FIN if one waits.
    pub fn send_sealed(&mut self) -> io::Result<bool> {
        if super::write_records(&mut self.tls, &mut self.tcp)? {
            return Ok(true);
        }
        if std::mem::take(&mut self.fin_pending) {
            self.tcp.shutdown(Shutdown::Write)?;
        }
        Ok(false)
    }

    /// Says `close_notify`, then sends our FIN once every record is out.
    pub fn shutdown_write(&mut self) -> io::Result<()> {
        if !self.is_handshaking() && self.stage != Stage::Failed {
            self.tls.send_close_notify();
        }
        self.fin_pending = true;
        self.send_sealed().map(|_| ())
    }

    fn fail(&mut self, failure: Failure) {
        if self.is_handshaking() {
            self.stage = Stage::Failed;
            self.outcome = Some(Outcome::Failed(failure));
        }
    }

    /// Looks at the first byte without taking it: TLS goes on; plain HTTP
    /// is answered with a 400 and the connection ends.
    fn sniff(&mut self) -> io::Result<()> {
        let mut first = [0u8; 1];
        let n = self.tcp.peek(&mut first)?;
        if n == 1 && first[0] != HANDSHAKE_RECORD && first[0].is_ascii_uppercase() {
            self.fail(Failure::PlainHttp);
            // Take the request (what has come of it) so that closing does
            // not reset the connection under the answer, then answer.
            let mut sink = [0u8; 4096];
            for _ in 0..4 {
                match self.tcp.read(&mut sink) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
            let _ = self.tcp.write_all(PLAIN_HTTP_ANSWER);
            let _ = self.tcp.shutdown(Shutdown::Write);
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "plain HTTP on the TLS port (answered 400)",
            ));
        }
        self.stage = Stage::Handshaking;
        Ok(())
    }
}

impl Read for TlsStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.stage == Stage::Fresh {
            self.sniff()?;
        }
        loop {
            match self.tls.reader().read(buf) {
                // `Ok(0)` is the peer's close_notify: the end of its data.
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            match self.tls.read_tls(&mut self.tcp) {
                Ok(0) => {
                    self.fail(Failure::Closed);
                    return Ok(0);
                }
                Ok(_) => {}
                Err(e) => {
                    if !matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) {
                        self.fail(Failure::Closed);
                    }
                    return Err(e);
                }
            }
            if let Err(e) = self.tls.process_new_packets() {
                let failure = match e {
                    rustls::Error::AlertReceived(_) => Failure::Alert,
                    _ => Failure::Protocol,
                };
                self.fail(failure);
                // rustls queued an alert saying why; best effort.
                let _ = self.send_sealed();
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
            if self.stage == Stage::Handshaking && !self.tls.is_handshaking() {
                self.stage = Stage::Established;
                self.outcome = Some(Outcome::Established);
            }
            // Handshake answers and session tickets go out now; records
            // the socket does not take wait for its next writable event.
            self.send_sealed()?;
        }
    }
}

impl Write for TlsStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }

    /// Seals as much of `bufs` as rustls's buffer takes (a record per
    /// slice, split at 16 KiB; the outbox already packs small frames into
    /// one slice) and writes the records. Refuses (`WouldBlock`) while
    /// records of an earlier write are still waiting.
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        if self.send_sealed()? {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let mut taken = 0;
        for buf in bufs {
            // One slice at a time: rustls's vectored write collects the
            // slices into a new `Vec` on every call.
            let n = self.tls.writer().write(buf)?;
            taken += n;
            if n < buf.len() {
                break;
            }
        }
        self.send_sealed()?;
        Ok(taken)
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.send_sealed()? {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_plain_http_answer_says_its_length() {
        let text = std::str::from_utf8(super::PLAIN_HTTP_ANSWER).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let declared: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(declared, body.len());
    }

    #[test]
    fn failure_labels_are_in_metric_order() {
        for (i, f) in super::Failure::ALL.iter().enumerate() {
            assert_eq!(*f as usize, i, "{}", f.label());
        }
    }
}
