//! A connection's queue of outgoing frames, written with vectored writes.
//!
//! Frames are `Bytes`, so a frame fanned out to many connections sits in each
//! outbox as a refcount, not a copy. `flush` hands the kernel up to
//! `MAX_IOVECS` frames per `writev` and loops until the queue is empty or the
//! socket says `WouldBlock`: many frames, one syscall.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};

use bytes::{Buf, Bytes};

/// Frames passed to one `writev`; Linux accepts up to 1024 (IOV_MAX).
const MAX_IOVECS: usize = 64;
/// Ring capacity an idle connection may keep.
const KEEP_FRAMES: usize = 16;

/// Outgoing frames of one connection.
#[derive(Debug, Default)]
pub struct Outbox {
    frames: VecDeque<Bytes>,
    bytes: usize,
}

/// What a flush achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flushed {
    /// Bytes the kernel took.
    pub written: usize,
    /// The outbox is now empty.
    pub drained: bool,
}

impl Outbox {
    /// Queues a frame at the back.
    pub fn push(&mut self, frame: Bytes) {
        self.bytes += frame.len();
        self.frames.push_back(frame);
    }

    /// Bytes waiting to be written (roomcast's queue, not the kernel's).
    pub fn len_bytes(&self) -> usize {
        self.bytes
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Drops every queued frame and releases the queue's memory.
    pub fn clear(&mut self) {
        self.frames = VecDeque::new();
        self.bytes = 0;
    }

    /// Releases a ring that a burst grew, once it is empty. Called from the
    /// shard's periodic sweep, not after every flush: a busy connection keeps
    /// its capacity (regrowing it each loop turn showed up as `realloc` in
    /// the fan-out profile), an idle one gives it back within a sweep.
    pub fn trim(&mut self) {
        if self.frames.is_empty() && self.frames.capacity() > KEEP_FRAMES {
            self.frames = VecDeque::new();
        }
    }

    /// Writes until empty or `WouldBlock`. Other errors are returned as is.
    pub fn flush<W: Write>(&mut self, out: &mut W) -> io::Result<Flushed> {
        let mut written = 0;
        while !self.frames.is_empty() {
            let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
            let mut n = 0;
            for f in self.frames.iter().take(MAX_IOVECS) {
                slices[n] = IoSlice::new(f);
                n += 1;
            }
            match out.write_vectored(&slices[..n]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(k) => {
                    written += k;
                    self.consume(k);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(Flushed {
            written,
            drained: self.frames.is_empty(),
        })
    }

    /// Removes `k` written bytes from the front.
    fn consume(&mut self, mut k: usize) {
        self.bytes -= k;
        while k > 0 {
            let front = self.frames.front_mut().expect("wrote more than queued");
            if front.len() <= k {
                k -= front.len();
                self.frames.pop_front();
            } else {
                front.advance(k);
                k = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that takes at most `cap` bytes per call, then blocks.
    struct Trickle {
        got: Vec<u8>,
        cap: usize,
        calls: usize,
        budget: usize,
    }

    impl Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.write_vectored(&[IoSlice::new(buf)])
        }
        fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            if self.budget == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            self.calls += 1;
            let mut room = self.cap.min(self.budget);
            let mut n = 0;
            for b in bufs {
                let t = b.len().min(room);
                self.got.extend_from_slice(&b[..t]);
                room -= t;
                n += t;
            }
            self.budget -= n;
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn many_frames_go_out_in_one_call() {
        let mut o = Outbox::default();
        for i in 0..10u8 {
            o.push(Bytes::from(vec![i; 3]));
        }
        let mut w = Trickle {
            got: vec![],
            cap: usize::MAX,
            calls: 0,
            budget: usize::MAX,
        };
        let f = o.flush(&mut w).unwrap();
        assert_eq!(w.calls, 1);
        assert_eq!(
            f,
            Flushed {
                written: 30,
                drained: true
            }
        );
        assert_eq!(o.len_bytes(), 0);
    }

    #[test]
    fn capacity_is_kept_while_busy_and_released_when_trimmed_idle() {
        let mut o = Outbox::default();
        for _ in 0..1000 {
            o.push(Bytes::from_static(b"x"));
        }
        let mut w = Trickle {
            got: vec![],
            cap: usize::MAX,
            calls: 0,
            budget: usize::MAX,
        };
        o.flush(&mut w).unwrap();
        assert!(o.frames.capacity() >= 1000, "kept for the next burst");
        o.trim();
        assert_eq!(o.frames.capacity(), 0);
    }

    #[test]
    fn partial_writes_resume_mid_frame() {
        let mut o = Outbox::default();
        o.push(Bytes::from_static(b"hello "));
        o.push(Bytes::from_static(b"world"));
        let mut w = Trickle {
            got: vec![],
            cap: 4,
            calls: 0,
            budget: 7,
        };
        let f = o.flush(&mut w).unwrap();
        assert_eq!(
            f,
            Flushed {
                written: 7,
                drained: false
            }
        );
        assert_eq!(o.len_bytes(), 4);
        w.budget = usize::MAX;
        assert!(o.flush(&mut w).unwrap().drained);
        assert_eq!(w.got, b"hello world");
    }
}
