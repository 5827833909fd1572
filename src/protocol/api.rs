//! The backend API: `POST /api/publish` bodies, parsed and checked into
//! frames ready to fan out (`"from":"server"`), exactly as a client publish.
//!
//! A body is one item `{"room":R,"data":D}` or `{"user":U,"data":D}`, or a
//! batch `{"batch":[item, ...]}`. The whole body is validated before
//! anything is published: one bad item refuses the request.

use std::ops::Range;

use bytes::Bytes;
use simd_json::prelude::*;

use crate::auth::RoomPolicy;

use super::error::ErrorCode;
use super::publish::{self, Body, Target};
use super::{encode, span};

/// The sender name of messages published through the API.
pub const SERVER_SENDER: &str = "server";

/// One publish from the API, ready for the shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// A user id (for `send`) rather than a room.
    pub user: bool,
    /// The room or user name.
    pub name: String,
    /// The encoded frame.
    pub frame: Bytes,
    /// Where `data` sits in `frame` (a room with history re-encodes it
    /// with its offset).
    pub data: std::ops::Range<usize>,
}

impl Item {
    /// The message for a room with history, to be numbered by its owner.
    pub fn draft(&self) -> encode::Draft {
        encode::message_draft(&self.name, SERVER_SENDER, &self.frame[self.data.clone()])
    }
}

/// Why a body was refused (a 400 with this code and message).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadBody {
    /// Machine-readable code, as in the WebSocket protocol's errors.
    pub code: ErrorCode,
    /// Human-readable reason.
    pub message: &'static str,
}

const fn bad(code: ErrorCode, message: &'static str) -> BadBody {
    BadBody { code, message }
}

/// The element ranges of a JSON array (already validated).
fn elements(json: &[u8], array: Range<usize>) -> Vec<Range<usize>> {
    let inner = &json[array.start + 1..array.end - 1];
    let base = array.start + 1;
    let mut out = Vec::new();
    let mut i = 0;
    loop {
        while i < inner.len() && matches!(inner[i], b' ' | b'\t' | b'\n' | b'\r' | b',') {
            i += 1;
        }
        if i >= inner.len() {
            return out;
        }
        let end = span::value_end(inner, i);
        out.push(base + i..base + end);
        i = end;
    }
}

/// Parses one item object at `range` of `body`.
fn item(body: &[u8], range: Range<usize>, max_message: usize) -> Result<Item, BadBody> {
    let raw = &body[range];
    let mut copy = raw.to_vec();
    let value =
        simd_json::to_borrowed_value(&mut copy).map_err(|_| bad(ErrorCode::BadJson, "body is not valid JSON"))?;
    if value.as_object().is_none() {
        return Err(bad(ErrorCode::BadRequest, "each publish must be a JSON object"));
    }
    let data = match span::field(raw, "data") {
        Ok(Some(r)) => &raw[r],
        Ok(None) => return Err(bad(ErrorCode::BadRequest, "field \"data\" is required")),
        Err(_) => return Err(bad(ErrorCode::BadRequest, "field \"data\" appears twice")),
    };
    let (user, name) = match (value.get("room"), value.get("user")) {
        (Some(r), None) => (
            false,
            r.as_str()
                .ok_or(bad(ErrorCode::BadRequest, "field \"room\" must be a string"))?,
        ),
        (None, Some(u)) => (
            true,
            u.as_str()
                .ok_or(bad(ErrorCode::BadRequest, "field \"user\" must be a string"))?,
        ),
        _ => return Err(bad(ErrorCode::BadRequest, "give exactly one of \"room\" or \"user\"")),
    };
    let target = if user { Target::User(name) } else { Target::Room(name) };
    publish::check(
        target,
        &RoomPolicy::any(),
        Body::Json {
            sender: SERVER_SENDER,
            data_len: data.len(),
        },
        max_message,
    )
    .map_err(|(code, message)| bad(code, message))?;
    let frame = if user {
        encode::direct(SERVER_SENDER, data)
    } else {
        encode::message(name, SERVER_SENDER, data)
    };
    // `data` is the frame's last field: it ends one byte before the end.
    let end = frame.len() - 1;
    Ok(Item {
        user,
        name: name.to_string(),
        data: end - data.len()..end,
        frame,
    })
}

/// Parses a whole `POST /api/publish` body.
pub fn parse_publish(body: &[u8], max_message: usize) -> Result<Vec<Item>, BadBody> {
    let mut copy = body.to_vec();
    let value =
        simd_json::to_borrowed_value(&mut copy).map_err(|_| bad(ErrorCode::BadJson, "body is not valid JSON"))?;
    if value.as_object().is_none() {
        return Err(bad(ErrorCode::BadRequest, "body must be a JSON object"));
    }
    let Some(batch) = value.get("batch") else {
        return Ok(vec![item(body, 0..body.len(), max_message)?]);
    };
    if batch.as_array().is_none() {
        return Err(bad(ErrorCode::BadRequest, "field \"batch\" must be an array"));
    }
    let range = match span::field(body, "batch") {
        Ok(Some(r)) => r,
        _ => return Err(bad(ErrorCode::BadRequest, "field \"batch\" appears twice")),
    };
    let items = elements(body, range);
    if items.is_empty() {
        return Err(bad(ErrorCode::BadRequest, "field \"batch\" must not be empty"));
    }
    items.into_iter().map(|r| item(body, r, max_message)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(frame: &Bytes) -> &str {
        std::str::from_utf8(&frame[2..]).unwrap()
    }

    #[test]
    fn single_room_and_user_publishes() {
        let items = parse_publish(br#"{"room":"lobby","data":{"x":1.50}}"#, 1000).unwrap();
        assert_eq!(items.len(), 1);
        assert_eq!(
            payload(&items[0].frame),
            r#"{"op":"message","room":"lobby","from":"server","data":{"x":1.50}}"#
        );
        let items = parse_publish(br#"{"user":"ann","data":"hi"}"#, 1000).unwrap();
        assert!(items[0].user);
        assert_eq!(
            payload(&items[0].frame),
            r#"{"op":"direct","from":"server","data":"hi"}"#
        );
    }

    #[test]
    fn an_item_becomes_a_numbered_message_with_the_same_data() {
        let items = parse_publish(br#"{"room":"h","data":{"x":[1, 2]}}"#, 1000).unwrap();
        let (frame, body) = items[0].draft().finish(7);
        assert_eq!(
            payload(&frame),
            r#"{"op":"message","room":"h","from":"server","data":{"x":[1, 2]},"offset":7}"#
        );
        assert_eq!(
            &frame[body.0 as usize..body.1 as usize],
            br#""from":"server","data":{"x":[1, 2]}"#
        );
    }

    #[test]
    fn batches_keep_their_order() {
        let body = br#"{"batch":[ {"room":"a","data":1}, {"user":"u","data":[2]} ,{"room":"b","data":"3"}]}"#;
        let items = parse_publish(body, 1000).unwrap();
        let names: Vec<&str> = items.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["a", "u", "b"]);
        assert!(payload(&items[1].frame).ends_with(r#""data":[2]}"#));
    }

    #[test]
    fn bad_bodies_are_refused_whole() {
        let cases: [(&[u8], &str); 9] = [
            (b"{nope", "bad_json"),
            (b"[1]", "bad_request"),
            (br#"{"room":"a"}"#, "bad_request"),
            (br#"{"data":1}"#, "bad_request"),
            (br#"{"room":"a","user":"b","data":1}"#, "bad_request"),
            (br#"{"room":"","data":1}"#, "invalid_room"),
            (br#"{"batch":[]}"#, "bad_request"),
            (
                br#"{"batch":[{"room":"ok","data":1},{"room":"a\nb","data":1}]}"#,
                "invalid_room",
            ),
            (
                br#"{"room":"a","data":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}"#,
                "too_large",
            ),
        ];
        for (body, code) in cases {
            assert_eq!(
                parse_publish(body, 100).unwrap_err().code.as_str(),
                code,
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }
}
