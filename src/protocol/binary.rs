//! Binary publishes: `[u8 n][n bytes: room name][payload]`, fanned out as
//! the whole frame, header included, so large payloads skip JSON entirely.

use crate::rooms::valid_room;

use super::error::ErrorCode;

/// The room a binary publish names: `bad_request` when the frame is shorter
/// than its header says, `invalid_room` when the name breaks the rules.
pub fn room_of(payload: &[u8]) -> Result<&str, ErrorCode> {
    let n = *payload.first().ok_or(ErrorCode::BadRequest)? as usize;
    let name = payload.get(1..1 + n).ok_or(ErrorCode::BadRequest)?;
    match std::str::from_utf8(name) {
        Ok(room) if valid_room(room) => Ok(room),
        _ => Err(ErrorCode::InvalidRoom),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_checked() {
        assert_eq!(room_of(b"\x05lobbyPAYLOAD"), Ok("lobby"));
        assert_eq!(room_of(b"\x05lobby"), Ok("lobby"), "an empty payload is fine");
        assert_eq!(room_of(b"\x05lob"), Err(ErrorCode::BadRequest));
        assert_eq!(room_of(b""), Err(ErrorCode::BadRequest));
        assert_eq!(room_of(b"\x00rest"), Err(ErrorCode::InvalidRoom));
        assert_eq!(room_of(b"\x02\xff\xfe"), Err(ErrorCode::InvalidRoom));
        assert_eq!(room_of(b"\x02a\n"), Err(ErrorCode::InvalidRoom));
    }
}
