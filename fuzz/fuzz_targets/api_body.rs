//! Fuzzes `POST /api/publish` bodies: no panic, and every accepted item's
//! frame fits the message limit it was checked against.
#![no_main]

use libfuzzer_sys::fuzz_target;
use roomcast::internals::parse_publish;

fuzz_target!(|data: &[u8]| {
    if let Ok(items) = parse_publish(data, 4096) {
        for item in items {
            assert!(item.frame.len() <= 4096 + 10);
        }
    }
});
