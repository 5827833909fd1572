//! Fuzzes the HTTP request-head parser and the upgrade check: arbitrary bytes
//! must never panic, must be refused or parsed, and every prefix of a
//! complete head must be `Partial` or the same refusal.
#![no_main]

use libfuzzer_sys::fuzz_target;
use roomcast::internals::{parse_request as parse, upgrade, Parsed, MAX_HEAD_BYTES};

fuzz_target!(|data: &[u8]| {
    match parse(data) {
        Ok(Parsed::Complete(req, used)) => {
            assert!(used <= data.len() && used <= MAX_HEAD_BYTES);
            assert!(!req.path.contains('?'));
            let _ = upgrade::check(&req);
            // Growing the input after a complete head never changes the head.
            if let Ok(Parsed::Complete(again, n)) = parse(&data[..used]) {
                assert_eq!((again, n), (req, used));
            }
        }
        Ok(Parsed::Partial) => assert!(data.len() < MAX_HEAD_BYTES),
        Err(_) => {}
    }
});
