//! Fuzzes the Redis link's RESP reading (the `redis` crate's parser as the
//! subscriber drives it, `link::wire::Wire`): no panic, and the same
//! values (or the same failure) however the bytes are cut into reads.
#![no_main]

use std::io::{self, Read};

use libfuzzer_sys::fuzz_target;
use roomcast::internals::Wire;

/// Gives `chunk` bytes per read with `WouldBlock` in between, then EOF.
struct Trickle<'a> {
    data: &'a [u8],
    chunk: usize,
    blocked: bool,
}

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.data.is_empty() {
            return Ok(0);
        }
        self.blocked = !self.blocked;
        if !self.blocked {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = self.chunk.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

/// Every value parsed (as debug text) and whether the stream failed before EOF.
fn run(data: &[u8], chunk: usize) -> (Vec<String>, bool) {
    let mut wire = Wire::new();
    let mut r = Trickle { data, chunk, blocked: false };
    let mut values = Vec::new();
    loop {
        let at_end = r.data.is_empty();
        let result = wire.read_all(&mut r, |v| {
            values.push(format!("{v:?}"));
            Ok(())
        });
        match result {
            Ok(()) => continue,
            Err(_) => return (values, !at_end),
        }
    }
}

fuzz_target!(|input: &[u8]| {
    let Some((&cut, data)) = input.split_first() else { return };
    let whole = run(data, usize::MAX);
    let cut = run(data, 1 + cut as usize % 16);
    assert_eq!(whole.0, cut.0, "same values however the bytes are cut");
});
