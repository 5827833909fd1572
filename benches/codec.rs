//! Frame codec hot paths: decoding masked client frames and encoding server
//! frames, 16 B to 64 KiB. Run: `cargo bench --bench codec`.

use std::hint::black_box;
use std::ops::ControlFlow;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use roomcast::internals::{frame, Decoder, Event, OpCode};

const SIZES: [usize; 5] = [16, 128, 1024, 16 * 1024, 64 * 1024];

fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    frame::encode_client(true, opcode, payload, Some([0x12, 0x34, 0x56, 0x78]))
}

fn decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode_masked");
    for size in SIZES {
        for (name, opcode) in [("binary", 2u8), ("text", 1u8)] {
            let wire = client_frame(opcode, &vec![b'a'; size]);
            let mut buf = wire.clone();
            let mut decoder = Decoder::new(1 << 20);
            group.throughput(Throughput::Bytes(size as u64));
            group.bench_with_input(BenchmarkId::new(name, size), &size, |b, _| {
                b.iter(|| {
                    // The decoder unmasks in place, so each round starts from the wire bytes.
                    buf.copy_from_slice(&wire);
                    let mut n = 0;
                    decoder
                        .feed(&mut buf, |e| {
                            if let Event::Text(p) | Event::Binary(p) = e {
                                n += p.len();
                            }
                            ControlFlow::Continue(())
                        })
                        .unwrap();
                    black_box(n)
                })
            });
        }
    }
    group.finish();
}

fn decode_split(c: &mut Criterion) {
    // The slow path: a 16 KiB frame arriving in 1 KiB reads.
    let wire = client_frame(1, &vec![b'a'; 16 * 1024]);
    let mut decoder = Decoder::new(1 << 20);
    c.bench_function("decode_masked/text_16KiB_in_1KiB_reads", |b| {
        b.iter(|| {
            let mut buf = wire.clone();
            for chunk in buf.chunks_mut(1024) {
                decoder.feed(chunk, |_| ControlFlow::Continue(())).unwrap();
            }
        })
    });
}

fn encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode");
    for size in SIZES {
        let payload = vec![b'a'; size];
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::new("text", size), &size, |b, _| {
            b.iter(|| black_box(frame::encode(OpCode::Text, black_box(&payload))))
        });
    }
    group.finish();
}

criterion_group!(benches, decode, decode_split, encode);
criterion_main!(benches);
