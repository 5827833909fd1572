//! Fuzzes the HTTP request-head parser and the upgrade check: arbitrary bytes
//! must never panic, must be refused or parsed; the bytes a complete head
//! consumed parse to the same head on their own; and a head cut short is
//! `Partial` — every cut for heads up to 512 bytes, 64 evenly spaced cuts
//! for longer ones (checking every cut of an 8 KiB head is quadratic).
#![no_main]

use libfuzzer_sys::fuzz_target;
use roomcast::internals::{parse_request as parse, upgrade, Parsed, MAX_HEAD_BYTES};

fuzz_target!(|data: &[u8]| {
    match parse(data) {
        Ok(Parsed::Complete(req, used)) => {
            assert!(used <= data.len() && used <= MAX_HEAD_BYTES);
            assert!(!req.path.contains('?'));
            // With the permessage-deflate offer it parsed, if any.
            let _ = upgrade::check(&req, req.deflate);
            // Growing the input after a complete head never changes the head.
            match parse(&data[..used]) {
                Ok(Parsed::Complete(again, n)) => assert_eq!((again, n), (req, used)),
                other => panic!("the consumed bytes alone gave {other:?}"),
            }
            let step = if used <= 512 { 1 } else { used / 64 };
            for cut in (0..used).step_by(step) {
                assert!(
                    matches!(parse(&data[..cut]), Ok(Parsed::Partial)),
                    "a head cut at {cut} of {used} is not Partial"
                );
            }
        }
        Ok(Parsed::Partial) => assert!(data.len() < MAX_HEAD_BYTES),
        Err(_) => {}
    }
});
