//! Room history on one node: the recent messages of each room that keeps
//! history, numbered by offset, held by the room's owner shard (the only
//! place its offsets are assigned, so no lock is needed).
//!
//! A room's stream has an epoch, a short random string naming it: offsets
//! count from 1 within an epoch, one per publish, with no gap. A stream that
//! expires (its TTL after the last publish) is forgotten, and the next one
//! gets a new epoch, as does every stream after a restart; a client holding
//! an offset of another epoch is told it cannot recover. When the shard's
//! share of `--history-max-bytes` is exceeded, the rooms idle longest lose
//! their messages (not their offsets): a recovery from before that fails,
//! and says so.
//!
//! The messages are the encoded `message` frames themselves (`Bytes`): a
//! replay queues the very bytes the live members got.

use std::collections::VecDeque;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hashbrown::HashMap;

/// Per-message bookkeeping counted against the byte budget besides the frame.
const ENTRY_OVERHEAD: usize = 32;

/// The name of one stream of offsets: 12 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Epoch([u8; 12]);

impl Epoch {
    /// A new epoch, unlike any other this process made and (by 48 random
    /// bits) any an earlier run of it made.
    pub fn fresh() -> Epoch {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let mut h = std::hash::RandomState::new().build_hasher();
        h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        let bits = h.finish();
        let mut out = [0u8; 12];
        for (i, b) in out.iter_mut().enumerate() {
            *b = b"0123456789abcdef"[((bits >> (44 - 4 * i)) & 0xF) as usize];
        }
        Epoch(out)
    }

    /// The epoch as text.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("hex digits")
    }

    /// Stands for an epoch a client gave that cannot be one of ours: it
    /// matches no stream.
    pub const UNKNOWN: Epoch = Epoch(*b"------------");

    /// Parses a client's epoch; `None` if it cannot be one of ours.
    pub fn parse(s: &str) -> Option<Epoch> {
        let bytes: [u8; 12] = s.as_bytes().try_into().ok()?;
        bytes.iter().all(|b| b.is_ascii_hexdigit()).then_some(Epoch(bytes))
    }
}

impl fmt::Debug for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a client says it stopped: the last offset it got, in `epoch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Since {
    /// The last offset the client received.
    pub offset: u64,
    /// The stream that offset belongs to.
    pub epoch: Epoch,
}

/// A room's position: the offset of its last message, in its epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// The last offset assigned (0 before the first publish).
    pub top: u64,
    /// The stream.
    pub epoch: Epoch,
}

/// What a recovery found.
#[derive(Debug)]
pub struct Recovery {
    /// Where the stream is now; the member gets everything after it live.
    pub position: Position,
    /// Whether `frames` is every message after the client's offset.
    pub recovered: bool,
    /// The messages to replay, oldest first (empty unless recovered).
    pub frames: Vec<Bytes>,
}

/// The settings of one room's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Messages kept.
    pub size: usize,
    /// How long the stream lives after its last publish.
    pub ttl: Duration,
}

/// One message held: its offset, its `message` frame, and where in the
/// frame `"from":U,"data":D` is (a `history` answer reuses those bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kept {
    /// Its offset.
    pub offset: u64,
    /// The frame every member got.
    pub frame: Bytes,
    /// The byte range of `"from":U,"data":D` within `frame`.
    pub body: (u32, u32),
}

impl Kept {
    /// `"from":U,"data":D`, as the frame has it.
    pub fn body(&self) -> &[u8] {
        &self.frame[self.body.0 as usize..self.body.1 as usize]
    }
}

/// One room's stream.
#[derive(Debug)]
struct Stream {
    epoch: Epoch,
    top: u64,
    /// The newest messages, oldest first.
    kept: VecDeque<Kept>,
    bytes: usize,
    last_publish: Instant,
    limits: Limits,
}

impl Stream {
    fn new(limits: Limits, now: Instant) -> Stream {
        Stream {
            epoch: Epoch::fresh(),
            top: 0,
            kept: VecDeque::new(),
            bytes: 0,
            last_publish: now,
            limits,
        }
    }

    fn expired(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.last_publish) >= self.limits.ttl
    }

    fn position(&self) -> Position {
        Position {
            top: self.top,
            epoch: self.epoch,
        }
    }

    /// The offset of the oldest message still held, if any.
    fn oldest(&self) -> Option<u64> {
        self.kept.front().map(|k| k.offset)
    }

    /// Whether every message after `offset` is held.
    fn holds_after(&self, offset: u64) -> bool {
        offset == self.top || self.oldest().is_some_and(|oldest| oldest <= offset + 1)
    }
}

/// The history of every room a shard owns.
#[derive(Debug)]
pub struct Store {
    rooms: HashMap<Arc<str>, Stream>,
    /// Messages held, all rooms.
    messages: usize,
    bytes: usize,
    max_bytes: usize,
    /// Messages and streams dropped to stay within `max_bytes`.
    evicted: u64,
}

impl Store {
    /// A store that holds at most `max_bytes` of messages.
    pub fn new(max_bytes: usize) -> Store {
        Store {
            rooms: HashMap::new(),
            messages: 0,
            bytes: 0,
            max_bytes,
            evicted: 0,
        }
    }

    /// The room's stream, made (with a new epoch) if it had none or it expired.
    fn stream(&mut self, room: &str, limits: Limits, now: Instant) -> &mut Stream {
        // Two lookups when the stream is there and live (every publish but
        // a room's first); the map is keyed by `Arc<str>`, so an entry API
        // taking `&str` is not available.
        let live = match self.rooms.get(room) {
            Some(s) if !s.expired(now) => true,
            Some(_) => {
                let old = self.rooms.remove(room).expect("just seen");
                self.bytes -= old.bytes;
                self.messages -= old.kept.len();
                false
            }
            None => false,
        };
        if !live {
            self.rooms.insert(Arc::from(room), Stream::new(limits, now));
        }
        let s = self.rooms.get_mut(room).expect("just made");
        s.limits = limits;
        s
    }

    /// Assigns the next offset of `room` and keeps the frame `encode` makes
    /// for it (with the range of its body); returns the offset and the frame.
    pub fn append(
        &mut self,
        room: &str,
        limits: Limits,
        now: Instant,
        encode: impl FnOnce(u64) -> (Bytes, (u32, u32)),
    ) -> (u64, Bytes) {
        let s = self.stream(room, limits, now);
        s.top += 1;
        s.last_publish = now;
        let offset = s.top;
        let (frame, body) = encode(offset);
        let cost = frame.len() + ENTRY_OVERHEAD;
        s.kept.push_back(Kept {
            offset,
            frame: frame.clone(),
            body,
        });
        s.bytes += cost;
        let (mut freed, mut dropped) = (0, 0);
        while s.kept.len() > s.limits.size {
            if let Some(k) = s.kept.pop_front() {
                freed += k.frame.len() + ENTRY_OVERHEAD;
                dropped += 1;
            }
        }
        s.bytes -= freed;
        self.bytes = self.bytes + cost - freed;
        self.messages = self.messages + 1 - dropped;
        if self.bytes > self.max_bytes {
            self.evict_idle(room);
        }
        (offset, frame)
    }

    /// The room's position (making its stream if it has none).
    pub fn position(&mut self, room: &str, limits: Limits, now: Instant) -> Position {
        self.stream(room, limits, now).position()
    }

    /// A member joins `room` from `since`: the messages it missed, if all
    /// are held in its epoch, and the position it continues from.
    pub fn recover(&mut self, room: &str, limits: Limits, since: Since, now: Instant) -> Recovery {
        self.recover_as(room, limits, since, now, true)
    }

    /// Whether a member could recover `room` from `since`, and the
    /// position, without gathering the replay (a member already in needs
    /// none).
    pub fn recoverable(&mut self, room: &str, limits: Limits, since: Since, now: Instant) -> (Position, bool) {
        let r = self.recover_as(room, limits, since, now, false);
        (r.position, r.recovered)
    }

    fn recover_as(&mut self, room: &str, limits: Limits, since: Since, now: Instant, replay: bool) -> Recovery {
        let s = self.stream(room, limits, now);
        let position = s.position();
        let ok = since.epoch == s.epoch && since.offset <= s.top && s.holds_after(since.offset);
        let frames = if ok && replay {
            s.kept
                .iter()
                .filter(|k| k.offset > since.offset)
                .map(|k| k.frame.clone())
                .collect()
        } else {
            Vec::new()
        };
        Recovery {
            position,
            recovered: ok,
            frames,
        }
    }

    /// Up to `limit` messages of `room`, oldest first, and its position:
    /// without `since` the latest; with it, the first after it (from the
    /// oldest held if some after it are gone, or if it is of another epoch:
    /// the offsets and the epoch tell the client).
    pub fn query(
        &mut self,
        room: &str,
        limits: Limits,
        since: Option<Since>,
        limit: usize,
        now: Instant,
    ) -> (Position, Vec<Kept>) {
        let s = self.stream(room, limits, now);
        let position = s.position();
        let messages = match since {
            None => {
                let skip = s.kept.len().saturating_sub(limit);
                s.kept.iter().skip(skip).cloned().collect()
            }
            Some(since) => {
                let after = if since.epoch == s.epoch { since.offset } else { 0 };
                s.kept
                    .iter()
                    .filter(|k| k.offset > after)
                    .take(limit)
                    .cloned()
                    .collect()
            }
        };
        (position, messages)
    }

    /// Forgets every stream whose TTL has passed.
    pub fn expire(&mut self, now: Instant) {
        let (mut freed, mut dropped) = (0, 0);
        self.rooms.retain(|_, s| {
            let keep = !s.expired(now);
            if !keep {
                freed += s.bytes;
                dropped += s.kept.len();
            }
            keep
        });
        self.bytes -= freed;
        self.messages -= dropped;
    }

    /// Over budget: the rooms idle longest (but not `busy`, the one being
    /// published to) lose their messages until 90 % of the budget is used.
    fn evict_idle(&mut self, busy: &str) {
        let mut idle: Vec<(Instant, Arc<str>)> = self
            .rooms
            .iter()
            .filter(|(name, s)| s.bytes > 0 && &***name != busy)
            .map(|(name, s)| (s.last_publish, name.clone()))
            .collect();
        idle.sort_unstable_by_key(|(t, _)| *t);
        let target = self.max_bytes / 10 * 9;
        for (_, name) in idle {
            if self.bytes <= target {
                break;
            }
            if let Some(s) = self.rooms.get_mut(&name) {
                self.bytes -= s.bytes;
                self.messages -= s.kept.len();
                self.evicted += s.kept.len() as u64;
                s.bytes = 0;
                s.kept = VecDeque::new();
            }
        }
        if self.bytes > self.max_bytes {
            // One room alone is over the budget: it keeps what fits.
            if let Some(s) = self.rooms.get_mut(busy) {
                while self.bytes > target && s.kept.len() > 1 {
                    if let Some(k) = s.kept.pop_front() {
                        let cost = k.frame.len() + ENTRY_OVERHEAD;
                        s.bytes -= cost;
                        self.bytes -= cost;
                        self.messages -= 1;
                        self.evicted += 1;
                    }
                }
            }
        }
    }

    /// Messages held, and their bytes (frames plus bookkeeping).
    pub fn held(&self) -> (u64, u64) {
        (self.messages as u64, self.bytes as u64)
    }

    /// Messages dropped to stay within the byte budget, so far.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }
}

#[cfg(test)]
mod tests;
