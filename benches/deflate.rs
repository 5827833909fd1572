//! permessage-deflate's per-message costs: compressing a room message once
//! (the shard's `Deflater`, zlib level 1) and inflating a client's message
//! (the shard's `Inflater`), for chat-like JSON of 256 B (the threshold) to 16 KiB. The
//! compressed size is printed once per size. Run: `cargo bench --bench deflate`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use roomcast::internals::{frame, Deflater, Inflater, OpCode};

/// A message frame as the broker sends it, `size` bytes of JSON.
fn message(size: usize) -> Vec<u8> {
    const WORDS: [&str; 16] = [
        "the", "quick", "brown", "fox", "hello", "world", "chat", "room", "typing", "online", "meeting", "tomorrow",
        "thanks", "later", "deploy", "review",
    ];
    let mut text = String::new();
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    while text.len() < size.saturating_sub(90) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        text.push(' ');
        text.push_str(WORDS[(x & 15) as usize]);
    }
    format!(r#"{{"op":"message","room":"chat:lobby","from":"user-4711","data":{{"name":"Alice","text":"{text}"}}}}"#)
        .into_bytes()
}

fn deflate(c: &mut Criterion) {
    let mut group = c.benchmark_group("deflate");
    for size in [256, 512, 1024, 4096, 16384] {
        let json = message(size);
        let plain = frame::encode(OpCode::Text, &json);
        let mut d = Deflater::new();
        let z = d.compress_frame(&plain).expect("compresses");
        let header = match z[1] & 0x7f {
            126 => 4,
            127 => 10,
            _ => 2,
        };
        let body = z[header..].to_vec();
        println!("deflate: {} B of JSON -> {} B compressed", json.len(), body.len());
        group.throughput(Throughput::Bytes(json.len() as u64));
        group.bench_with_input(BenchmarkId::new("compress", size), &size, |b, _| {
            b.iter(|| black_box(d.compress_frame(black_box(&plain))))
        });
        let mut i = Inflater::new();
        let mut out = Vec::new();
        group.bench_with_input(BenchmarkId::new("inflate", size), &size, |b, _| {
            b.iter(|| {
                i.inflate(black_box(&body), 1 << 20, &mut out).unwrap();
                black_box(out.len())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, deflate);
criterion_main!(benches);
