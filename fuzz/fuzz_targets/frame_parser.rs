//! Fuzzes the frame decoder: arbitrary bytes, cut into arbitrary reads, must
//! never panic, and must decode to the same events and the same error
//! however they are cut. With permessage-deflate on (a bit of the input),
//! compressed messages are inflated as the connection would, bounded by
//! the same limit.
#![no_main]

use std::ops::ControlFlow;

use libfuzzer_sys::fuzz_target;
use roomcast::internals::{Decoder, Event, Inflater};

/// Decodes `data` in pieces whose sizes come from `cuts`; returns every
/// event as (opcode, payload) and the close code of the error, if any.
fn run(data: &[u8], cuts: &[usize], max: usize, deflate: bool) -> (Vec<(u8, Vec<u8>)>, Option<u16>) {
    let mut decoder = Decoder::new(max).with_deflate(deflate);
    let mut inflater = Inflater::new();
    let mut events = Vec::new();
    let mut rest = data.to_vec();
    let mut cuts = cuts.iter().cycle();
    let mut input: &mut [u8] = &mut rest;
    while !input.is_empty() {
        let n = (*cuts.next().unwrap_or(&usize::MAX)).max(1).min(input.len());
        let (chunk, tail) = std::mem::take(&mut input).split_at_mut(n);
        input = tail;
        let r = decoder.feed(chunk, |e| {
            events.push(match e {
                Event::Text(p) => {
                    assert!(std::str::from_utf8(p).is_ok(), "text events are valid UTF-8");
                    (1, p.to_vec())
                }
                Event::Binary(p) => (2, p.to_vec()),
                Event::Fragment => (0, Vec::new()),
                Event::Ping(p) => (9, p.to_vec()),
                Event::Pong(p) => (10, p.to_vec()),
                Event::Close { code, reason } => {
                    (8, [&code.map_or(0, |c| c.0).to_be_bytes()[..], reason.as_bytes()].concat())
                }
                Event::Compressed { text, payload } => {
                    assert!(deflate, "a compressed message without permessage-deflate");
                    let mut out = Vec::new();
                    match inflater.inflate(payload, max, &mut out) {
                        Ok(()) => {
                            assert!(out.len() <= max, "inflated past the limit");
                            (if text { 0x41 } else { 0x42 }, out)
                        }
                        // The connection closes (1009 or 1007): nothing
                        // is delivered, whatever was inflated so far.
                        Err(_) => {
                            assert!(out.capacity() <= max + 1, "the inflate buffer grew past the limit");
                            (0xEE, Vec::new())
                        }
                    }
                }
            });
            ControlFlow::Continue(())
        });
        if let Err(e) = r {
            return (events, Some(e.code.0));
        }
    }
    (events, None)
}

fuzz_target!(|input: &[u8]| {
    if input.len() < 2 {
        return;
    }
    let max = 1 + (input[0] as usize) * 64;
    let deflate = input[1] & 0x80 != 0;
    let ncuts = (input[1] as usize % 8).min(input.len() - 2);
    let (cuts, data) = input[2..].split_at(ncuts);
    let cuts: Vec<usize> = if cuts.is_empty() { vec![1] } else { cuts.iter().map(|&c| c as usize).collect() };
    let whole = run(data, &[usize::MAX], max, deflate);
    let pieces = run(data, &cuts, max, deflate);
    // How the bytes were cut must not change what they mean.
    assert_eq!(whole, pieces, "events depend on how the input was cut");
    for (op, payload) in whole.0.iter() {
        match op {
            1 | 2 | 0x41 | 0x42 => assert!(payload.len() <= max, "message over the limit was delivered"),
            // Close digests carry the 2-byte code in front of the reason.
            _ => assert!(payload.len() <= 125 + 2, "control payload over 125"),
        }
    }
});
