use std::time::{Duration, Instant};

use bytes::Bytes;

use super::*;

const KEEP_3: Limits = Limits {
    size: 3,
    ttl: Duration::from_secs(60),
};

fn frame(offset: u64) -> Bytes {
    Bytes::from(format!("m{offset}"))
}

fn kept(offset: u64) -> (Bytes, (u32, u32)) {
    (frame(offset), (0, 1))
}

fn publish(store: &mut Store, room: &str, n: usize, now: Instant) {
    for _ in 0..n {
        store.append(room, KEEP_3, now, kept);
    }
}

#[test]
fn offsets_grow_by_one_and_only_the_newest_are_kept() {
    let (mut s, now, r) = (Store::new(1 << 20), Instant::now(), "r");
    assert_eq!(s.position(r, KEEP_3, now).top, 0);
    let offsets: Vec<u64> = (0..5).map(|_| s.append(r, KEEP_3, now, kept).0).collect();
    assert_eq!(offsets, [1, 2, 3, 4, 5]);
    let (pos, msgs) = s.query(r, KEEP_3, None, 100, now);
    assert_eq!(pos.top, 5);
    assert_eq!(msgs.iter().map(|k| k.offset).collect::<Vec<_>>(), [3, 4, 5]);
    let after = |offset| Since {
        offset,
        epoch: pos.epoch,
    };
    let offsets = |m: Vec<Kept>| m.iter().map(|k| k.offset).collect::<Vec<_>>();
    assert_eq!(offsets(s.query(r, KEEP_3, Some(after(3)), 1, now).1), [4]);
    assert_eq!(
        offsets(s.query(r, KEEP_3, Some(after(0)), 9, now).1),
        [3, 4, 5],
        "from the oldest held"
    );
    assert!(s.query(r, KEEP_3, Some(after(9)), 9, now).1.is_empty());
    let other = Since {
        offset: 4,
        epoch: Epoch::UNKNOWN,
    };
    assert_eq!(offsets(s.query(r, KEEP_3, Some(other), 2, now).1), [3, 4]);
    assert_eq!(s.held().0, 3);
}

#[test]
fn recovery_replays_what_was_missed_in_the_same_epoch_only() {
    let (mut s, now, r) = (Store::new(1 << 20), Instant::now(), "r");
    publish(&mut s, r, 5, now);
    let epoch = s.position(r, KEEP_3, now).epoch;
    let at = |offset| Since { offset, epoch };
    let got = s.recover(r, KEEP_3, at(3), now);
    assert!(got.recovered);
    assert_eq!(got.frames, [frame(4), frame(5)]);
    assert_eq!(got.position.top, 5);
    // Up to date: recovered, nothing to replay.
    let got = s.recover(r, KEEP_3, at(5), now);
    assert!(got.recovered && got.frames.is_empty());
    // The oldest kept is 3: from 2 every message is held, from 1 not.
    assert!(s.recover(r, KEEP_3, at(2), now).recovered);
    assert!(!s.recover(r, KEEP_3, at(1), now).recovered);
    // An offset in the future, or another epoch.
    assert!(!s.recover(r, KEEP_3, at(6), now).recovered);
    let other = Since {
        offset: 4,
        epoch: Epoch::fresh(),
    };
    let got = s.recover(r, KEEP_3, other, now);
    assert!(!got.recovered && got.frames.is_empty());
    assert_eq!(got.position.epoch, epoch, "the current position, to start over from");
}

#[test]
fn an_expired_stream_starts_over_in_a_new_epoch() {
    let (mut s, t0, r) = (Store::new(1 << 20), Instant::now(), "r");
    publish(&mut s, r, 2, t0);
    let old = s.position(r, KEEP_3, t0);
    let later = t0 + KEEP_3.ttl;
    let since = Since {
        offset: 2,
        epoch: old.epoch,
    };
    assert!(!s.recover(r, KEEP_3, since, later).recovered);
    let new = s.position(r, KEEP_3, later);
    assert_ne!(new.epoch, old.epoch);
    assert_eq!(new.top, 0);
    s.expire(later + KEEP_3.ttl);
    assert_eq!(s.held(), (0, 0));
}

#[test]
fn over_the_byte_budget_the_rooms_idle_longest_lose_their_messages() {
    let t0 = Instant::now();
    let cost = frame(1).len() + ENTRY_OVERHEAD;
    let mut s = Store::new(cost * 7);
    let (a, b, c) = ("a", "b", "c");
    publish(&mut s, a, 3, t0);
    publish(&mut s, b, 3, t0 + Duration::from_secs(1));
    publish(&mut s, c, 2, t0 + Duration::from_secs(2));
    // 8 messages > 7: `a`, idle longest, loses its 3; its offsets stay.
    assert_eq!(s.held().0, 5);
    assert_eq!(s.evicted(), 3);
    let pos = s.position(a, KEEP_3, t0 + Duration::from_secs(2));
    assert_eq!(pos.top, 3);
    let since = Since {
        offset: 1,
        epoch: pos.epoch,
    };
    assert!(!s.recover(a, KEEP_3, since, t0 + Duration::from_secs(2)).recovered);
    assert!(s.held().1 <= (cost * 7) as u64);
}

#[test]
fn epochs_are_short_distinct_and_parse_back() {
    let a = Epoch::fresh();
    let b = Epoch::fresh();
    assert_ne!(a, b);
    assert_eq!(a.as_str().len(), 12);
    assert_eq!(Epoch::parse(a.as_str()), Some(a));
    assert_eq!(Epoch::parse("xyz"), None);
    assert_eq!(Epoch::parse("0123456789ag"), None);
}

/// Random publishes, recoveries, expiries and evictions over a few rooms,
/// against a plain model of what must hold: offsets without gaps, every
/// message after a recovered position replayed exactly, and the counts of
/// messages and bytes equal to what is held.
#[test]
fn random_operations_keep_every_invariant() {
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let limits = Limits {
        size: 5,
        ttl: Duration::from_secs(10),
    };
    let t0 = Instant::now();
    let mut s = Store::new(12 * (2 + ENTRY_OVERHEAD));
    let rooms = ["a", "b", "c", "d"];
    for step in 0..20_000u64 {
        let now = t0 + Duration::from_millis(step * 3);
        let room = rooms[(next() % 4) as usize];
        match next() % 10 {
            0..=5 => {
                let (offset, frame) = s.append(room, limits, now, |n| (Bytes::from(format!("{:02}", n % 100)), (0, 2)));
                assert_eq!(frame.len(), 2);
                assert!(offset >= 1);
            }
            6..=8 => {
                let pos = s.position(room, limits, now);
                let since = Since {
                    offset: pos.top.saturating_sub(next() % 8),
                    epoch: pos.epoch,
                };
                let r = s.recover(room, limits, since, now);
                assert_eq!(r.position, pos);
                if r.recovered {
                    let want: Vec<Bytes> = (since.offset + 1..=pos.top)
                        .map(|n| Bytes::from(format!("{:02}", n % 100)))
                        .collect();
                    assert_eq!(r.frames, want, "step {step}: the replay is every message after `since`");
                } else {
                    assert!(r.frames.is_empty());
                }
            }
            _ => s.expire(now),
        }
        // The counts are what is held.
        let (messages, bytes) = s.held();
        let real: usize = s.rooms.values().map(|st| st.kept.len()).sum();
        let real_bytes: usize = s
            .rooms
            .values()
            .flat_map(|st| st.kept.iter())
            .map(|k| k.frame.len() + ENTRY_OVERHEAD)
            .sum();
        assert_eq!((messages, bytes), (real as u64, real_bytes as u64), "step {step}");
        assert!(bytes as usize <= 12 * (2 + ENTRY_OVERHEAD), "within the budget");
        for st in s.rooms.values() {
            assert!(st.kept.len() <= limits.size);
            let offsets: Vec<u64> = st.kept.iter().map(|k| k.offset).collect();
            assert!(
                offsets.windows(2).all(|w| w[1] == w[0] + 1),
                "held offsets are consecutive"
            );
            assert!(
                offsets.last().is_none_or(|&o| o == st.top),
                "the newest held is the top"
            );
        }
    }
    assert!(s.evicted() > 0, "the byte budget was reached and enforced");
}
