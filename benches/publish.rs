//! The publish hot path: parse the client's op, encode the message frame
//! once, then the shard's real fan-out loop queues it to N recipients and
//! the real end of the turn flushes each (into a sink, so no syscall is
//! measured). Per-recipient cost must not grow with the payload: each
//! recipient gets a reference (the frame's index in the shard's turn), not
//! a copy.
//! Run: `cargo bench --bench publish`.

use std::hint::black_box;
use std::sync::Arc;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use roomcast::internals::{encode, FanoutBench, HistoryLimits, HistoryStore, Op, Parser, Topic};

fn publish(c: &mut Criterion) {
    let mut group = c.benchmark_group("publish");
    for recipients in [1usize, 10, 1_000, 10_000] {
        let mut shard = FanoutBench::new(recipients);
        for size in [16usize, 1024, 16 * 1024] {
            let data = format!("\"{}\"", "x".repeat(size));
            let op = format!(r#"{{"op":"publish","room":"lobby","data":{data},"id":1}}"#);
            let mut parser = Parser::new();
            group.throughput(Throughput::Elements(recipients as u64));
            let id = BenchmarkId::new(format!("{recipients}_recipients"), size);
            group.bench_with_input(id, &size, |b, _| {
                b.iter(|| {
                    let frame = parser
                        .parse(op.as_bytes(), |req| match req.op {
                            Op::Publish { room, data } => encode::message(room, "anon-1", &op.as_bytes()[data]),
                            _ => unreachable!(),
                        })
                        .unwrap();
                    shard.publish(black_box(&frame));
                })
            });
        }
    }
    group.finish();
}

fn parse(c: &mut Criterion) {
    let mut parser = Parser::new();
    let op = br#"{"op":"publish","room":"lobby","data":{"text":"hello world","n":42,"tags":["a","b"]},"id":17}"#;
    c.bench_function("parse_op/publish_small_object", |b| {
        b.iter(|| parser.parse(black_box(op), |req| req.id).unwrap())
    });
}

fn batch_handoff(c: &mut Criterion) {
    // A shard's per-turn batch to another shard: one channel send of many frames.
    let (tx, rx) = crossbeam_channel::bounded::<Vec<(Topic, Bytes)>>(16);
    let topic = Topic::Room(Arc::from("lobby"));
    let frame = encode::message("lobby", "anon-1", b"\"hello\"");
    let mut group = c.benchmark_group("batch_handoff");
    for n in [1usize, 64, 1024] {
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, &n| {
            b.iter(|| {
                let batch: Vec<(Topic, Bytes)> = (0..n).map(|_| (topic.clone(), frame.clone())).collect();
                tx.send(batch).unwrap();
                black_box(rx.recv().unwrap().len())
            })
        });
    }
    group.finish();
}

/// What numbering costs a publish into a room with history, on its owner
/// shard: the plain encode against the draft, its finish with the offset,
/// and the append to the room's ring (which drops the oldest once full).
fn numbering(c: &mut Criterion) {
    let mut group = c.benchmark_group("numbering");
    let data = format!("\"{}\"", "x".repeat(64));
    group.bench_function("plain_encode", |b| {
        b.iter(|| black_box(encode::message("room-0", "anon-1", data.as_bytes())))
    });
    let mut store = HistoryStore::new(256 << 20);
    let limits = HistoryLimits {
        size: 100,
        ttl: std::time::Duration::from_secs(300),
    };
    let now = std::time::Instant::now();
    group.bench_function("draft_finish_append", |b| {
        b.iter(|| {
            let draft = encode::message_draft("room-0", "anon-1", data.as_bytes());
            black_box(store.append("room-0", limits, now, |n| draft.finish(n)))
        })
    });
    group.finish();
}

criterion_group!(benches, publish, parse, batch_handoff, numbering);
criterion_main!(benches);
