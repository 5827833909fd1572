//! The frames a shard fans out during one loop turn, shared by index.
//!
//! Nearly every frame fanned out is written to each recipient's socket
//! before the turn ends. Queuing a `Bytes` clone per recipient costs an
//! atomic increment and, after the write, a decrement, both through `Bytes`'
//! vtable: 19 % of the 10-publisher fan-out profile (`docs/benchmarks.md`).
//! Instead the shard keeps each of this turn's frames here once and an
//! outbox queues its index. At the end of the turn every outbox that still
//! holds indexes turns them into clones (`Outbox::detach`), and only then is
//! the log cleared: an index never outlives its turn. Each index also
//! carries the turn's generation, so a bug that let one escape would cut
//! the connection (`Outbox::flush` fails) rather than send another frame.

use bytes::Bytes;

/// Entries a log may keep allocated between turns.
const KEEP_FRAMES: usize = 4096;

/// A frame of the current turn: its position and the turn's generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TurnIndex {
    index: u32,
    generation: u64,
}

/// This turn's fanned-out frames, one reference each.
#[derive(Debug, Default)]
pub struct TurnLog {
    frames: Vec<Bytes>,
    /// Turns ended so far; 64 bits never wrap in practice.
    generation: u64,
}

impl TurnLog {
    /// Keeps `frame` until the end of the turn.
    pub fn push(&mut self, frame: &Bytes) -> TurnIndex {
        let index = u32::try_from(self.frames.len()).expect("over 4 billion frames in one turn");
        self.frames.push(frame.clone());
        TurnIndex {
            index,
            generation: self.generation,
        }
    }

    /// The frame `at` refers to; `None` if it is from another turn.
    #[inline]
    pub fn get(&self, at: TurnIndex) -> Option<&Bytes> {
        if at.generation != self.generation {
            return None;
        }
        self.frames.get(at.index as usize)
    }

    /// Ends the turn: drops its frames and invalidates its indexes.
    pub fn clear(&mut self) {
        self.frames.clear();
        self.generation += 1;
        if self.frames.capacity() > KEEP_FRAMES {
            self.frames.shrink_to(KEEP_FRAMES);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_index_from_an_earlier_turn_resolves_to_nothing() {
        let mut turn = TurnLog::default();
        let a = turn.push(&Bytes::from_static(b"a"));
        assert_eq!(turn.get(a).map(|b| &b[..]), Some(&b"a"[..]));
        turn.clear();
        let b = turn.push(&Bytes::from_static(b"b"));
        assert_eq!(a.index, b.index, "same slot, next turn");
        assert!(turn.get(a).is_none());
        assert_eq!(turn.get(b).map(|b| &b[..]), Some(&b"b"[..]));
    }
}
