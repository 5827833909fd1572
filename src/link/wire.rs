//! RESP on the subscriber's non-blocking socket, spoken with the `redis`
//! crate's own parser and encoder — the same crate the publisher uses, so
//! the link has one RESP implementation, not two.
//!
//! The crate's `Parser` keeps its buffer and partial state across calls: a
//! read that ends mid-value returns `WouldBlock`, and the next call resumes
//! where it stopped (tested below with one byte per read).

use std::io::{self, Read};

use redis::Value;

/// Parses the values arriving on one connection.
#[derive(Default)]
pub struct Wire {
    parser: redis::Parser,
}

impl std::fmt::Debug for Wire {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Wire")
    }
}

impl Wire {
    /// A parser for a new connection.
    pub fn new() -> Wire {
        Wire::default()
    }

    /// Reads from `r` until it would block, handing every whole value to
    /// `f` in order. EOF, a read error, bytes that are not RESP, or an error
    /// from `f` end the connection (`Err`).
    pub fn read_all<R: Read>(&mut self, mut r: R, mut f: impl FnMut(Value) -> io::Result<()>) -> io::Result<()> {
        loop {
            match self.parser.parse_value(&mut r) {
                Ok(value) => f(value)?,
                // The socket is non-blocking: a "timeout" is `WouldBlock`.
                Err(e) if e.is_timeout() => return Ok(()),
                Err(e) if e.is_io_error() => return Err(io::Error::other(e.to_string())),
                Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, format!("not RESP: {e}"))),
            }
        }
    }
}

/// Appends `args` as one command (an array of bulk strings).
pub fn command(out: &mut Vec<u8>, args: &[&[u8]]) {
    let mut cmd = redis::Cmd::new();
    for a in args {
        cmd.arg(*a);
    }
    cmd.write_packed_command(out);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that gives `chunk` bytes per read, `WouldBlock` in between.
    struct Trickle {
        data: Vec<u8>,
        at: usize,
        chunk: usize,
        blocked: bool,
    }

    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if !std::mem::replace(&mut self.blocked, true) {
                let n = self.chunk.min(buf.len()).min(self.data.len() - self.at);
                if n > 0 {
                    buf[..n].copy_from_slice(&self.data[self.at..self.at + n]);
                    self.at += n;
                    return Ok(n);
                }
            }
            self.blocked = false;
            Err(io::ErrorKind::WouldBlock.into())
        }
    }

    fn message(channel: &[u8], payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        command(&mut out, &[b"message", channel, payload]);
        out
    }

    #[test]
    fn values_cut_anywhere_are_parsed_whole_and_in_order() {
        let mut data = message(b"rc:room:{a}", b"hello");
        data.extend(message(b"rc:room:{b}", &[0u8, 13, 10, 255]));
        data.extend(b"-ERR nope\r\n");
        for chunk in [1, 2, 3, 7, 1000] {
            let mut r = Trickle {
                data: data.clone(),
                at: 0,
                chunk,
                blocked: false,
            };
            let mut wire = Wire::new();
            let mut seen = Vec::new();
            while r.at < r.data.len() || !r.blocked {
                wire.read_all(&mut r, |v| {
                    seen.push(v);
                    Ok(())
                })
                .unwrap();
                if r.at == r.data.len() {
                    break;
                }
            }
            wire.read_all(&mut r, |v| {
                seen.push(v);
                Ok(())
            })
            .unwrap();
            assert_eq!(seen.len(), 3, "chunk {chunk}: {seen:?}");
            let bulk = |b: &[u8]| Value::BulkString(b.to_vec());
            assert_eq!(
                seen[0],
                Value::Array(vec![bulk(b"message"), bulk(b"rc:room:{a}"), bulk(b"hello")])
            );
            assert_eq!(
                seen[1],
                Value::Array(vec![bulk(b"message"), bulk(b"rc:room:{b}"), bulk(&[0, 13, 10, 255])])
            );
            assert!(matches!(seen[2], Value::ServerError(_)));
        }
    }

    #[test]
    fn eof_and_garbage_end_the_connection() {
        let mut wire = Wire::new();
        assert!(wire.read_all(&b""[..], |_| Ok(())).is_err(), "EOF");
        let mut wire = Wire::new();
        assert!(wire.read_all(&b"?what\r\n"[..], |_| Ok(())).is_err());
    }

    #[test]
    fn commands_are_arrays_of_bulk_strings() {
        let mut out = Vec::new();
        command(&mut out, &[b"SUBSCRIBE", b"rc:room:{a}"]);
        assert_eq!(out, b"*2\r\n$9\r\nSUBSCRIBE\r\n$11\r\nrc:room:{a}\r\n");
    }
}
