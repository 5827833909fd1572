//! A connection's queue of outgoing frames, written with vectored writes.
//!
//! Frames are `Bytes`, so a frame fanned out to many connections sits in each
//! outbox as a reference, not a copy: during the turn it was fanned out in,
//! as an index into the shard's `TurnLog`; after it, as a `Bytes` clone.
//! `flush` hands the kernel up to `MAX_IOVECS` segments per `writev` and
//! loops until the queue is empty or the socket says `WouldBlock`: many
//! frames, one syscall.
//!
//! Runs of small frames are first copied into the shard's staging buffer and
//! handed to the kernel as one segment. The kernel copies every byte of a
//! `writev` anyway, but it pays a fixed cost per segment: with ~100-byte
//! frames, profiles of the fan-out showed that per-segment copy as the
//! single largest cost, well above the user-space copy that replaces it
//! (numbers in `docs/benchmarks.md`). The queue itself stays zero-copy, so
//! a slow consumer's backlog still shares its frames with everyone else.

use std::io::{self, IoSlice, Write};

use bytes::{Buf, Bytes};

use super::queue::Queue;
use super::turn::{TurnIndex, TurnLog};

/// Segments passed to one `writev`; Linux accepts up to 1024 (IOV_MAX).
const MAX_IOVECS: usize = 64;
/// Ring capacity an idle connection may keep.
const KEEP_FRAMES: usize = 16;
/// Frames up to this size are staged (copied) rather than given their own
/// segment; larger ones are cheaper to pass by reference.
const STAGE_FRAME_MAX: usize = 1024;
/// Size of the staging buffer a shard keeps for `Outbox::flush`.
pub const STAGE_BYTES: usize = 64 * 1024;

/// One `writev` segment: a range of the staging buffer, or a queued frame.
#[derive(Clone, Copy)]
enum Segment {
    Staged(usize, usize),
    Frame(usize),
}

/// A queued frame.
#[derive(Debug)]
enum Entry {
    /// A frame the outbox holds a reference to.
    Held(Bytes),
    /// A frame of the current turn, `len` bytes long, from byte `skip` on.
    Turn { at: TurnIndex, skip: u32, len: u32 },
}

impl Entry {
    /// Bytes still to be written, without resolving a turn index.
    #[inline]
    fn remaining(&self) -> usize {
        match self {
            Entry::Held(b) => b.len(),
            Entry::Turn { skip, len, .. } => (len - skip) as usize,
        }
    }
}

/// Outgoing frames of one connection.
#[derive(Debug, Default)]
pub struct Outbox {
    frames: Queue<Entry>,
    bytes: usize,
    /// The front frame is partly written: the peer has its first bytes.
    started: bool,
    /// Entries pushed since the last `detach`: every `Turn` entry is among
    /// the last this many.
    fresh: u32,
    /// Something was queued since the last `trim`.
    recent: bool,
}

/// What a flush achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flushed {
    /// Bytes the kernel took.
    pub written: usize,
    /// The outbox is now empty.
    pub drained: bool,
}

/// The bytes of `entry` still to be written.
#[inline(always)]
fn bytes_of<'a>(entry: &'a Entry, turn: &'a TurnLog) -> io::Result<&'a [u8]> {
    match entry {
        Entry::Held(b) => Ok(b),
        Entry::Turn { at, skip, .. } => match turn.get(*at) {
            Some(b) => Ok(&b[*skip as usize..]),
            None => Err(stale()),
        },
    }
}

#[cold]
fn stale() -> io::Error {
    io::Error::other("a frame index outlived its turn")
}

impl Outbox {
    /// Queues a frame at the back.
    pub fn push(&mut self, frame: Bytes) {
        self.bytes += frame.len();
        self.fresh = self.fresh.saturating_add(1);
        self.recent = true;
        self.frames.push_back(Entry::Held(frame));
    }

    /// Queues frame `at` of the current turn, `len` bytes long (frames are
    /// capped far below 4 GiB); `detach` must run before the turn ends if it
    /// is not written by then.
    #[inline]
    pub fn push_turn(&mut self, at: TurnIndex, len: usize) {
        self.bytes += len;
        self.fresh = self.fresh.saturating_add(1);
        self.recent = true;
        self.frames.push_back(Entry::Turn {
            at,
            skip: 0,
            len: len as u32,
        });
    }

    /// Turns this turn's indexes into references of their own, so that the
    /// frames outlive the turn. Costs one clone per frame still queued.
    pub fn detach(&mut self, turn: &TurnLog) {
        let fresh = (std::mem::take(&mut self.fresh) as usize).min(self.frames.len());
        let from = self.frames.len() - fresh;
        for entry in self.frames.iter_from_mut(from) {
            if let Entry::Turn { at, skip, .. } = *entry {
                // A stale index stays as it is: `flush` refuses it.
                if let Some(b) = turn.get(at) {
                    *entry = Entry::Held(b.slice(skip as usize..));
                }
            }
        }
    }

    /// Bytes waiting to be written (roomcast's queue, not the kernel's).
    pub fn len_bytes(&self) -> usize {
        self.bytes
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Drops every frame the peer has not started to receive. A frame
    /// already partly written stays (as a reference of its own, so it
    /// outlives the turn): cutting it would leave the peer a truncated frame,
    /// and whatever follows it, such as a close frame, unreadable.
    pub fn drop_unsent(&mut self, turn: &TurnLog) {
        let keep = if self.started { self.frames.pop_front() } else { None };
        self.frames = Queue::default();
        self.bytes = 0;
        self.fresh = 0;
        self.started = false;
        if let Some(front) = keep {
            let held = match front {
                Entry::Held(b) => Some(b),
                Entry::Turn { at, skip, .. } => turn.get(at).map(|b| b.slice(skip as usize..)),
            };
            // A stale index cannot be finished; the peer gets EOF instead.
            if let Some(b) = held {
                self.bytes = b.len();
                self.started = true;
                self.frames.push_back(Entry::Held(b));
            }
        }
    }

    /// Releases the ring behind the queue's inline front once it is empty:
    /// at once if a burst grew it past `KEEP_FRAMES`, else after a whole
    /// sweep interval with nothing queued (an idle connection then owns no
    /// ring at all). Called from the shard's periodic sweep, not after every
    /// flush: a busy connection keeps its capacity (regrowing it each loop
    /// turn showed up as `realloc` in the fan-out profile).
    pub fn trim(&mut self) {
        let recent = std::mem::take(&mut self.recent);
        let ring = self.frames.ring_capacity();
        if self.frames.is_empty() && (ring > KEEP_FRAMES || !recent) && ring > 0 {
            self.frames.release_ring();
        }
    }

    /// Writes until empty or `WouldBlock`. Other errors are returned as is.
    ///
    /// `stage` is scratch space for runs of small frames; only its spare
    /// capacity is used (it is never grown), so an empty `Vec` turns staging
    /// off. Its contents on return are meaningless. `turn` resolves the
    /// current turn's frames.
    pub fn flush<W: Write>(&mut self, out: &mut W, stage: &mut Vec<u8>, turn: &TurnLog) -> io::Result<Flushed> {
        let mut written = 0;
        while !self.frames.is_empty() {
            let sent = if self.frames.len() == 1 {
                // The common case under light fan-out: one frame, nothing to
                // stage, no layout to build (zeroing the layout's arrays cost
                // more than the rest of a flush into memory, see
                // `benches/publish.rs`).
                // `write`, not a one-segment `writev`: the kernel then
                // copies no iovec array in (and checks none), about 2 % of
                // a round trip's CPU in the profile.
                out.write(bytes_of(&self.frames[0], turn)?)
            } else {
                let mut segments = [Segment::Frame(0); MAX_IOVECS];
                let n = self.plan(stage, &mut segments, turn)?;
                let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
                for (slice, segment) in slices.iter_mut().zip(&segments[..n]) {
                    *slice = match *segment {
                        Segment::Staged(start, end) => IoSlice::new(&stage[start..end]),
                        Segment::Frame(i) => IoSlice::new(bytes_of(&self.frames[i], turn)?),
                    };
                }
                out.write_vectored(&slices[..n])
            };
            match sent {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(k) => {
                    written += k;
                    self.consume(k)?;
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

    /// Lays out the next `writev` from the front of the queue: consecutive
    /// small frames are copied into `stage` and become one segment. Called
    /// with at least two frames queued (`flush` writes a lone one as it is).
    /// Returns the number of segments.
    fn plan(&self, stage: &mut Vec<u8>, segments: &mut [Segment; MAX_IOVECS], turn: &TurnLog) -> io::Result<usize> {
        stage.clear();
        let mut n = 0;
        for (i, entry) in self.frames.iter().enumerate() {
            let frame = bytes_of(entry, turn)?;
            if frame.len() <= STAGE_FRAME_MAX && stage.len() + frame.len() <= stage.capacity() {
                let start = stage.len();
                stage.extend_from_slice(frame);
                if let Some(Segment::Staged(_, end)) = segments[..n].last_mut() {
                    if *end == start {
                        *end = stage.len();
                        continue;
                    }
                }
                if n == MAX_IOVECS {
                    stage.truncate(start);
                    break;
                }
                segments[n] = Segment::Staged(start, stage.len());
            } else {
                if n == MAX_IOVECS {
                    break;
                }
                segments[n] = Segment::Frame(i);
            }
            n += 1;
        }
        Ok(n)
    }

    /// Removes `k` written bytes from the front.
    fn consume(&mut self, mut k: usize) -> io::Result<()> {
        self.bytes -= k;
        while k > 0 {
            let Some(front) = self.frames.front_mut() else {
                return Err(io::Error::other("the kernel took more bytes than were queued"));
            };
            let len = front.remaining();
            if len <= k {
                k -= len;
                self.frames.pop_front();
                self.started = false;
            } else {
                self.started = true;
                match front {
                    Entry::Held(b) => b.advance(k),
                    // `k < len <= u32::MAX`: the frame itself is in the turn.
                    Entry::Turn { skip, .. } => *skip += k as u32,
                }
                k = 0;
            }
        }
        self.fresh = self.fresh.min(u32::try_from(self.frames.len()).unwrap_or(u32::MAX));
        Ok(())
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
        /// Segments passed to each call.
        segments: Vec<usize>,
    }

    impl Trickle {
        fn new(cap: usize, budget: usize) -> Trickle {
            Trickle {
                got: vec![],
                cap,
                calls: 0,
                budget,
                segments: vec![],
            }
        }
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
            self.segments.push(bufs.len());
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
        let mut w = Trickle::new(usize::MAX, usize::MAX);
        let f = o.flush(&mut w, &mut Vec::new(), &TurnLog::default()).unwrap();
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
        let mut w = Trickle::new(usize::MAX, usize::MAX);
        o.flush(&mut w, &mut Vec::new(), &TurnLog::default()).unwrap();
        assert!(o.frames.ring_capacity() >= 1000, "kept for the next burst");
        o.trim();
        assert_eq!(o.frames.ring_capacity(), 0);
    }

    #[test]
    fn one_frame_at_a_time_needs_no_ring() {
        let mut o = Outbox::default();
        let mut out = Vec::new();
        for _ in 0..3 {
            o.push(Bytes::from_static(b"welcome"));
            o.flush(&mut out, &mut Vec::new(), &TurnLog::default()).unwrap();
        }
        assert_eq!(out.len(), 21);
        assert_eq!(o.frames.ring_capacity(), 0);
    }

    #[test]
    fn a_small_ring_goes_after_a_sweep_with_nothing_queued() {
        let mut o = Outbox::default();
        o.push(Bytes::from_static(b"welcome"));
        o.push(Bytes::from_static(b"ack"));
        let mut out = Vec::new();
        o.flush(&mut out, &mut Vec::new(), &TurnLog::default()).unwrap();
        let cap = o.frames.ring_capacity();
        assert!(cap > 0 && cap <= KEEP_FRAMES);
        o.trim();
        assert_eq!(o.frames.ring_capacity(), cap, "used since the last sweep: kept");
        o.trim();
        assert_eq!(o.frames.ring_capacity(), 0, "a whole sweep idle: released");
    }

    #[test]
    fn partial_writes_resume_mid_frame() {
        let mut o = Outbox::default();
        o.push(Bytes::from_static(b"hello "));
        o.push(Bytes::from_static(b"world"));
        let mut w = Trickle::new(4, 7);
        let f = o.flush(&mut w, &mut Vec::new(), &TurnLog::default()).unwrap();
        assert_eq!(
            f,
            Flushed {
                written: 7,
                drained: false
            }
        );
        assert_eq!(o.len_bytes(), 4);
        w.budget = usize::MAX;
        assert!(o.flush(&mut w, &mut Vec::new(), &TurnLog::default()).unwrap().drained);
        assert_eq!(w.got, b"hello world");
    }

    fn stage() -> Vec<u8> {
        Vec::with_capacity(STAGE_BYTES)
    }

    /// Queues each frame as a held `Bytes`; returns what the socket must get.
    fn fill(o: &mut Outbox, frames: impl IntoIterator<Item = Vec<u8>>) -> Vec<u8> {
        let mut want = Vec::new();
        for f in frames {
            want.extend_from_slice(&f);
            o.push(Bytes::from(f));
        }
        want
    }

    #[test]
    fn small_frames_are_staged_into_one_segment() {
        let mut o = Outbox::default();
        let want = fill(&mut o, (0..200u8).map(|i| vec![i; 100]));
        let mut w = Trickle::new(usize::MAX, usize::MAX);
        let mut stage = stage();
        assert!(o.flush(&mut w, &mut stage, &TurnLog::default()).unwrap().drained);
        assert_eq!(w.segments, vec![1], "200 frames, one segment, one call");
        assert_eq!(w.got, want);
        assert_eq!(stage.capacity(), STAGE_BYTES, "the stage is never grown");
    }

    #[test]
    fn large_frames_keep_their_own_segment_between_staged_runs() {
        let mut o = Outbox::default();
        let frames = [
            vec![1u8; 10],
            vec![2; 10],
            vec![3; STAGE_FRAME_MAX + 1],
            vec![4; 10],
            vec![5; 10],
        ];
        let want = fill(&mut o, frames);
        let mut w = Trickle::new(usize::MAX, usize::MAX);
        assert!(o.flush(&mut w, &mut stage(), &TurnLog::default()).unwrap().drained);
        assert_eq!(w.segments, vec![3], "staged run, large frame, staged run");
        assert_eq!(w.got, want);
    }

    #[test]
    fn a_full_stage_spills_into_frame_segments_and_nothing_is_lost() {
        let mut o = Outbox::default();
        // 1 000 frames of 1 000 bytes: about 15 fit the stage per call.
        let want = fill(&mut o, (0..1000u32).map(|i| vec![(i % 251) as u8; 1000]));
        let mut w = Trickle::new(usize::MAX, usize::MAX);
        assert!(o.flush(&mut w, &mut stage(), &TurnLog::default()).unwrap().drained);
        assert!(w.segments.iter().all(|&n| n <= MAX_IOVECS));
        assert_eq!(w.got, want);
    }

    #[test]
    fn partial_writes_of_a_staged_run_resume_at_the_right_byte() {
        let mut o = Outbox::default();
        let want = fill(&mut o, (0..50u8).map(|i| vec![i; 7 + i as usize]));
        let total = want.len();
        // The kernel takes 13 bytes a call: every cut lands mid-frame.
        let mut w = Trickle::new(13, usize::MAX);
        let mut stage = stage();
        let f = o.flush(&mut w, &mut stage, &TurnLog::default()).unwrap();
        assert_eq!(f.written, total);
        assert_eq!(w.got, want);
        assert_eq!(o.len_bytes(), 0);
    }

    #[test]
    fn turn_frames_detached_before_the_turn_ends_outlive_it() {
        let mut turn = TurnLog::default();
        let mut o = Outbox::default();
        let mut want = Vec::new();
        for i in 0..20u8 {
            let f = Bytes::from(vec![i; 50]);
            want.extend_from_slice(&f);
            let at = turn.push(&f);
            o.push_turn(at, f.len());
        }
        // The socket takes 333 bytes: the cut lands inside frame 6.
        let mut w = Trickle::new(usize::MAX, 333);
        o.flush(&mut w, &mut stage(), &turn).unwrap();
        o.detach(&turn);
        turn.clear();
        // The next turn reuses the same indexes for other frames.
        for _ in 0..20 {
            turn.push(&Bytes::from_static(b"wrong frame"));
        }
        w.budget = usize::MAX;
        assert!(o.flush(&mut w, &mut stage(), &turn).unwrap().drained);
        assert_eq!(w.got, want);
    }

    #[test]
    fn an_index_not_detached_fails_the_flush_instead_of_sending_another_frame() {
        let mut turn = TurnLog::default();
        let mut o = Outbox::default();
        let f = Bytes::from_static(b"secret");
        o.push_turn(turn.push(&f), f.len());
        turn.clear();
        turn.push(&Bytes::from_static(b"other!"));
        let mut w = Trickle::new(usize::MAX, usize::MAX);
        assert!(o.flush(&mut w, &mut stage(), &turn).is_err());
        assert!(w.got.is_empty());
    }

    #[test]
    fn detach_only_visits_entries_pushed_since_the_last_one() {
        let turn = TurnLog::default();
        let mut o = Outbox::default();
        for _ in 0..1000 {
            o.push(Bytes::from_static(b"old"));
        }
        o.detach(&turn);
        assert_eq!(o.fresh, 0);
        o.push(Bytes::from_static(b"new"));
        assert_eq!(o.fresh, 1);
    }

    #[test]
    fn a_queued_entry_is_no_bigger_than_a_bytes() {
        // Idle connections keep a small ring of entries: keep them small.
        assert_eq!(std::mem::size_of::<Entry>(), std::mem::size_of::<Bytes>());
    }
}
