//! Fuzzes the binary publish header `[u8 n][n bytes room][payload]`: no
//! panic, and an accepted room is a valid room name taken from the header.
#![no_main]

use libfuzzer_sys::fuzz_target;
use roomcast::internals::{room_of, valid_room};

fuzz_target!(|data: &[u8]| {
    if let Ok(room) = room_of(data) {
        assert!(valid_room(room));
        assert_eq!(room.len(), data[0] as usize);
        assert_eq!(room.as_bytes(), &data[1..1 + room.len()]);
    }
});
