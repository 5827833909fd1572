//! The checks every publish passes, however it came in: a JSON `publish` or
//! `send` op, a binary frame, or an item of `POST /api/publish`. One
//! function, so the three paths cannot drift apart.

use crate::auth::RoomPolicy;
use crate::rooms::valid_room;

use super::encode;
use super::error::ErrorCode;

/// Where a publish goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'a> {
    /// Every member of a room.
    Room(&'a str),
    /// Every connection of a user.
    User(&'a str),
}

/// Why a publish was refused: the error code and the message the client reads.
pub type Refusal = (ErrorCode, &'static str);

/// The naming rule of rooms, as clients are told it.
pub const ROOM_RULES: &str = "room names are 1-128 bytes of UTF-8 without control characters";

/// What a publish carries, for the size check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body<'a> {
    /// JSON `data` of this many bytes from `sender`, to be wrapped in a
    /// `message` or `direct` frame.
    Json {
        /// The sender's user id, as written in the frame.
        sender: &'a str,
        /// Bytes of `data`.
        data_len: usize,
    },
    /// A binary frame fanned out as it came: the decoder already held it to
    /// `--max-message-bytes`.
    Binary,
}

/// Checks a publish to `target`: the name is valid, `policy` allows the
/// room, and the frame it becomes stays within `max_message` bytes.
pub fn check(target: Target<'_>, policy: &RoomPolicy, body: Body<'_>, max_message: usize) -> Result<(), Refusal> {
    let room = match target {
        Target::Room(room) => {
            if !valid_room(room) {
                return Err((ErrorCode::InvalidRoom, ROOM_RULES));
            }
            if !policy.allows(room) {
                return Err((ErrorCode::Forbidden, "room not allowed by token"));
            }
            room
        }
        Target::User(user) => {
            if user.is_empty() {
                return Err((ErrorCode::BadRequest, "field \"user\" must not be empty"));
            }
            ""
        }
    };
    match body {
        Body::Json { sender, data_len }
            if encode::message_overhead(room, sender).saturating_add(data_len) > max_message =>
        {
            Err((ErrorCode::TooLarge, "message would exceed --max-message-bytes"))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(data_len: usize) -> Body<'static> {
        Body::Json {
            sender: "ann",
            data_len,
        }
    }

    #[test]
    fn every_rule_has_its_code() {
        let any = RoomPolicy::any();
        let lobby = RoomPolicy::from_patterns(["lobby"]);
        assert_eq!(check(Target::Room("lobby"), &lobby, json(10), 1000), Ok(()));
        assert_eq!(
            check(Target::Room("a\nb"), &any, json(10), 1000).unwrap_err().0,
            ErrorCode::InvalidRoom
        );
        assert_eq!(
            check(Target::Room(""), &any, json(10), 1000).unwrap_err().0,
            ErrorCode::InvalidRoom
        );
        assert_eq!(
            check(Target::Room("secret"), &lobby, json(10), 1000).unwrap_err().0,
            ErrorCode::Forbidden
        );
        assert_eq!(
            check(Target::User(""), &any, json(10), 1000).unwrap_err().0,
            ErrorCode::BadRequest
        );
        assert_eq!(
            check(Target::User("bob"), &lobby, json(10), 1000),
            Ok(()),
            "a user is not a room"
        );
        assert_eq!(
            check(Target::Room("lobby"), &any, json(1000), 1000).unwrap_err().0,
            ErrorCode::TooLarge
        );
        assert_eq!(
            check(Target::Room("lobby"), &any, json(usize::MAX), 1000)
                .unwrap_err()
                .0,
            ErrorCode::TooLarge
        );
    }

    #[test]
    fn binary_frames_are_checked_for_room_and_policy_only() {
        let lobby = RoomPolicy::from_patterns(["lobby"]);
        let long = "r".repeat(128);
        assert_eq!(check(Target::Room("lobby"), &lobby, Body::Binary, 10), Ok(()));
        assert_eq!(check(Target::Room(&long), &RoomPolicy::any(), Body::Binary, 10), Ok(()));
        assert_eq!(
            check(Target::Room("x"), &lobby, Body::Binary, 10).unwrap_err().0,
            ErrorCode::Forbidden
        );
    }

    #[test]
    fn the_size_limit_counts_the_whole_frame() {
        let any = RoomPolicy::any();
        let overhead = encode::message_overhead("lobby", "ann");
        assert_eq!(check(Target::Room("lobby"), &any, json(100 - overhead), 100), Ok(()));
        assert!(check(Target::Room("lobby"), &any, json(101 - overhead), 100).is_err());
    }
}
