use super::*;
use std::sync::Arc;

fn room(n: &str) -> Topic {
    Topic::Room(Arc::from(n))
}

fn ack(slot: u32) -> Waiter {
    Waiter::Ack {
        slot,
        conn: slot as u64,
        id: Some(slot as u64),
    }
}

#[test]
fn single_shard_joins_are_ready_at_once() {
    let mut r = RoomIndex::new(0, 1, 10);
    assert_eq!(r.join(1, &room("a"), ack(1)), Joined::Ready);
    assert_eq!(r.join(1, &room("a"), ack(1)), Joined::Already);
    assert_eq!(r.join(2, &room("a"), ack(2)), Joined::Ready);
    assert_eq!(r.route(&room("a")).unwrap().0, &[1, 2]);
    assert_eq!(r.counted_rooms(), 1);
}

#[test]
fn leaving_keeps_positions_consistent() {
    let mut r = RoomIndex::new(0, 1, 10);
    for slot in 0..5 {
        r.join(slot, &room("a"), ack(slot));
        r.join(slot, &room("b"), ack(slot));
    }
    assert_eq!(r.leave(0, &room("a")), Left::OthersRemain);
    assert_eq!(r.leave(0, &room("a")), Left::NotMember);
    assert_eq!(r.leave(3, &room("a")), Left::OthersRemain);
    let mut members = r.route(&room("a")).unwrap().0.to_vec();
    members.sort();
    assert_eq!(members, vec![1, 2, 4]);
    // Every remaining member can still leave (positions were fixed up).
    for slot in [4, 1] {
        assert_eq!(r.leave(slot, &room("a")), Left::OthersRemain);
    }
    assert_eq!(r.leave(2, &room("a")), Left::LastLocal(Vec::new()));
    assert!(r.route(&room("a")).is_none(), "empty room is freed");
    assert_eq!(r.counted_rooms(), 1);
    let mut last = Vec::new();
    for slot in 0..5 {
        r.leave_all(slot, |t, _| last.push(t));
    }
    assert_eq!(last, vec![room("b")]);
    assert_eq!((r.counted_rooms(), r.entries()), (0, 0));
}

#[test]
fn first_member_announces_and_waits_for_every_shard() {
    let mut r = RoomIndex::new(1, 3, 10);
    let Joined::Announce { seq } = r.join(5, &room("a"), ack(5)) else {
        panic!()
    };
    assert_eq!(r.join(6, &room("a"), ack(6)), Joined::Waiting);
    assert!(r.confirmed(&room("a"), seq).is_empty(), "one of two");
    assert!(r.confirmed(&room("a"), seq + 99).is_empty(), "stale seq ignored");
    assert_eq!(r.confirmed(&room("a"), seq), vec![ack(5), ack(6)]);
    assert_eq!(r.join(7, &room("a"), ack(7)), Joined::Ready);
}

#[test]
fn the_last_leave_answers_every_join_still_waiting() {
    let mut r = RoomIndex::new(0, 2, 10);
    let Joined::Announce { .. } = r.join(1, &room("a"), ack(1)) else {
        panic!()
    };
    assert_eq!(r.join(2, &room("a"), ack(2)), Joined::Waiting);
    // Slot 2 leaves first: slot 1 remains, so nothing is answered yet.
    assert_eq!(r.leave(2, &room("a")), Left::OthersRemain);
    let mut answered = Vec::new();
    r.leave_all(1, |_, waiters| answered.extend(waiters));
    assert_eq!(answered, vec![ack(1), ack(2)]);
}

#[test]
fn a_confirmation_for_an_old_announcement_is_ignored() {
    let mut r = RoomIndex::new(0, 2, 10);
    let Joined::Announce { seq: old } = r.join(1, &room("a"), ack(1)) else {
        panic!()
    };
    // The join still waiting is answered by the leave that undoes it.
    assert_eq!(r.leave(1, &room("a")), Left::LastLocal(vec![ack(1)]));
    let Joined::Announce { seq: new } = r.join(2, &room("a"), ack(2)) else {
        panic!()
    };
    assert_ne!(old, new);
    assert!(r.confirmed(&room("a"), old).is_empty());
    assert_eq!(r.confirmed(&room("a"), new), vec![ack(2)]);
}

#[test]
fn remote_interest_is_tracked_per_shard() {
    let mut r = RoomIndex::new(0, 4, 10);
    r.set_remote(&room("a"), 2, true);
    r.set_remote(&room("a"), 3, true);
    assert_eq!(r.route(&room("a")), Some((&[][..], 0b1100)));
    r.set_remote(&room("a"), 2, false);
    assert_eq!(r.route(&room("a")).unwrap().1, 0b1000);
    r.set_remote(&room("a"), 3, false);
    assert!(r.route(&room("a")).is_none());
    assert_eq!(r.entries(), 0);
}

#[test]
fn a_connection_cannot_join_more_than_its_cap() {
    let mut r = RoomIndex::new(0, 1, 2);
    assert_eq!(r.join(1, &room("a"), ack(1)), Joined::Ready);
    assert_eq!(r.join(1, &room("b"), ack(1)), Joined::Ready);
    assert_eq!(r.join(1, &room("c"), ack(1)), Joined::TooMany);
    assert_eq!(r.join(1, &room("a"), ack(1)), Joined::Already);
}

#[test]
fn a_room_on_several_shards_is_counted_by_the_lowest_one_only() {
    let mut low = RoomIndex::new(0, 2, 10);
    let mut high = RoomIndex::new(1, 2, 10);
    high.join(1, &room("a"), ack(1));
    assert_eq!(high.counted_rooms(), 1, "only shard 1 has members");
    low.join(1, &room("a"), ack(1));
    low.set_remote(&room("a"), 1, true);
    high.set_remote(&room("a"), 0, true);
    assert_eq!((low.counted_rooms(), high.counted_rooms()), (1, 0));
    // Shard 0's member leaves: shard 1 counts the room again.
    low.leave_all(1, |_, _| {});
    high.set_remote(&room("a"), 0, false);
    assert_eq!((low.counted_rooms(), high.counted_rooms()), (0, 1));
    high.leave_all(1, |_, _| {});
    assert_eq!(high.counted_rooms(), 0);
}

#[test]
fn a_pending_member_counts_as_local_but_gets_nothing_until_admitted() {
    let mut r = RoomIndex::new(0, 2, 10);
    let Joined::Announce { .. } = r.join_pending(1, &room("h"), ack(1)) else {
        panic!("the first local member, pending or not, is announced")
    };
    assert_eq!(r.route(&room("h")).unwrap().0, &[] as &[u32], "not fanned out to");
    assert_eq!(r.counted_rooms(), 1);
    assert_eq!(r.join(2, &room("h"), ack(2)), Joined::Waiting);
    assert!(r.admit(1, &room("h")));
    assert!(!r.admit(1, &room("h")), "once");
    let mut members = r.route(&room("h")).unwrap().0.to_vec();
    members.sort();
    assert_eq!(members, [1, 2]);
    // A pending member that leaves is simply gone; the last one out renounces.
    assert_eq!(r.join_pending(3, &room("h"), ack(3)), Joined::Waiting);
    assert_eq!(r.leave(3, &room("h")), Left::OthersRemain);
    assert!(!r.admit(3, &room("h")));
    assert_eq!(r.leave(1, &room("h")), Left::OthersRemain);
    assert!(matches!(r.leave(2, &room("h")), Left::LastLocal(_)));
    assert_eq!((r.counted_rooms(), r.entries()), (0, 0));
}

#[test]
fn an_idle_connection_costs_the_index_one_small_entry() {
    // Its own user topic (one member) and a room: no vector spills to the
    // heap; the entry itself stays small (docs/benchmarks.md, memory per
    // idle connection).
    let mut r = RoomIndex::new(0, 2, 10);
    let user = Topic::User(Arc::from("ann"));
    for slot in 0..3 {
        r.join(slot, &room("lobby"), ack(slot));
    }
    r.join(1, &user, ack(1));
    let e = r.by_topic[&user] as usize;
    assert!(!r.entries[e].members.spilled());
    assert!(!r.subs[1].spilled());
    assert!(std::mem::size_of::<Entry>() <= 80, "{}", std::mem::size_of::<Entry>());
    assert!(std::mem::size_of::<Subs>() <= 24);
}
