//! Fuzzes the client op parser (simd-json on a scratch copy, plus the
//! `data` splicer): no panic on any bytes, and whatever `data` range it
//! reports must lie inside the input and itself be valid JSON. A shard's
//! parser is reused from message to message (its tape and buffers keep
//! their capacity), so one parser lives across inputs here too and must
//! answer exactly as a fresh one.
#![no_main]

use std::cell::RefCell;

use libfuzzer_sys::fuzz_target;
use roomcast::internals::{encode, Op, Parser};

thread_local! {
    static REUSED: RefCell<Parser> = RefCell::new(Parser::new());
}

fuzz_target!(|data: &[u8]| {
    let fresh = Parser::new().parse(data, |req| format!("{req:?}"));
    let reused = REUSED.with(|p| p.borrow_mut().parse(data, |req| format!("{req:?}")));
    assert_eq!(format!("{fresh:?}"), format!("{reused:?}"), "a reused parser answers differently");
    let mut parser = Parser::new();
    let _ = parser.parse(data, |req| {
        let range = match req.op {
            Op::Publish { data: r, room } => {
                // Encoding the message must work for whatever passed parsing.
                let frame = encode::message(room, "fuzz", &data[r.clone()]);
                assert!(frame.len() > r.len());
                Some(r)
            }
            Op::Send { data: r, .. } => Some(r),
            _ => None,
        };
        if let Some(r) = range {
            assert!(r.start <= r.end && r.end <= data.len());
            let mut value = data[r].to_vec();
            assert!(simd_json::to_borrowed_value(&mut value).is_ok(), "spliced data is not JSON");
        }
    });
});
