//! Presence queries on a room's owner shard: the count (what a
//! `{"list":false}` query costs) and a full list, for rooms of 1 000 and
//! 100 000 users, and a join plus leave (what every member's connection
//! and disconnection costs the owner). Run: `cargo bench --bench presence`.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use roomcast::internals::PresenceIndex;

fn room_of(users: usize) -> (PresenceIndex, Arc<str>, Vec<Arc<str>>) {
    let room: Arc<str> = Arc::from("lobby");
    let names: Vec<Arc<str>> = (0..users).map(|i| Arc::from(format!("user-{i}"))).collect();
    let mut ix = PresenceIndex::new();
    for n in &names {
        ix.join(&room, n, false);
    }
    (ix, room, names)
}

fn presence(c: &mut Criterion) {
    let mut group = c.benchmark_group("presence");
    for users in [1_000, 100_000] {
        let (mut ix, room, names) = room_of(users);
        group.bench_with_input(BenchmarkId::new("count", users), &users, |b, _| {
            b.iter(|| black_box(ix.count(black_box("lobby"))))
        });
        group.bench_with_input(BenchmarkId::new("list_all", users), &users, |b, _| {
            b.iter(|| black_box(ix.snapshot(black_box("lobby"), usize::MAX).users.len()))
        });
        group.bench_with_input(BenchmarkId::new("list_capped_1000", users), &users, |b, _| {
            b.iter(|| black_box(ix.snapshot(black_box("lobby"), 1000).users.len()))
        });
        let newcomer: Arc<str> = Arc::from("newcomer");
        group.bench_with_input(BenchmarkId::new("join_and_leave", users), &users, |b, _| {
            b.iter(|| {
                ix.join(&room, &newcomer, false);
                black_box(ix.leave("lobby", "newcomer"))
            })
        });
        drop(names);
    }
    group.finish();
}

criterion_group!(benches, presence);
criterion_main!(benches);
