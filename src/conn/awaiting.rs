//! An HTTP API answer that waits for rooms' owner shards: the offsets of a
//! `POST /api/publish` into rooms with history, or a `GET /api/history` or
//! `GET /api/presence`.
//! While it waits the connection reads nothing more, so pipelined requests
//! are still answered in order; the last piece completes the response.

use crate::bus::ApiPart;
use crate::http::Answer;

use super::{Conn, Ctx, Phase, Transport, Verdict};

/// What a connection's pending API answer still needs.
#[derive(Debug)]
pub(crate) enum Awaiting {
    /// `POST /api/publish`: the offset of each numbered item (`None` for an
    /// item of a room without history), `waiting` of them still unknown.
    Publish {
        /// Per item, in order.
        offsets: Vec<Option<u64>>,
        /// Numbered items whose offset has not come.
        waiting: usize,
        /// Some numbered item could not be published (Redis unreachable).
        failed: bool,
        /// The answer ends the connection.
        close: bool,
    },
    /// `GET /api/history` or `GET /api/presence` (`HEAD`: its head only).
    Object {
        /// The answer ends the connection.
        close: bool,
        /// A `HEAD` request.
        head_only: bool,
    },
}

impl<S: Transport> Conn<S> {
    /// Waits for `awaiting` before reading or answering anything else.
    pub(super) fn await_answer(&mut self, awaiting: Awaiting) {
        if let Phase::Http { awaiting: slot, .. } = &mut self.phase {
            *slot = Some(Box::new(awaiting));
            self.read_paused = true;
        }
    }

    /// Whether an API answer is pending.
    pub(super) fn is_awaiting(&self) -> bool {
        matches!(&self.phase, Phase::Http { awaiting: Some(_), .. })
    }

    /// A piece of the pending API answer; the last one sends it.
    pub fn api_part(&mut self, ctx: &mut Ctx<'_>, part: ApiPart) -> Verdict {
        let Phase::Http {
            awaiting: Some(awaiting),
            ..
        } = &mut self.phase
        else {
            return Verdict::Keep;
        };
        let (status, body, close, head_only) = match (&mut **awaiting, part) {
            (
                Awaiting::Publish {
                    offsets,
                    waiting,
                    failed,
                    close,
                },
                part @ (ApiPart::Offset { .. } | ApiPart::Unavailable { .. }),
            ) => {
                let (index, offset) = match part {
                    ApiPart::Offset { index, offset } => (index, Some(offset)),
                    ApiPart::Unavailable { index } => (index, None),
                    ApiPart::Object(_) => unreachable!("matched above"),
                };
                *failed |= offset.is_none();
                // Every item answers once; the last one completes the response.
                if let Some(slot) = offsets.get_mut(index as usize) {
                    if slot.is_none() {
                        *slot = Some(offset.unwrap_or(u64::MAX));
                        *waiting -= 1;
                    }
                }
                if *waiting > 0 {
                    return Verdict::Keep;
                }
                if *failed {
                    ("503 Service Unavailable", unavailable_body(), *close, false)
                } else {
                    ("200 OK", publish_body(offsets), *close, false)
                }
            }
            (Awaiting::Object { close, head_only }, ApiPart::Object(frame)) => {
                ("200 OK", frame_payload(&frame).to_vec(), *close, *head_only)
            }
            (Awaiting::Object { close, head_only }, ApiPart::Unavailable { .. }) => {
                ("503 Service Unavailable", unavailable_body(), *close, *head_only)
            }
            _ => return Verdict::Keep,
        };
        if let Phase::Http { awaiting, .. } = &mut self.phase {
            *awaiting = None;
        }
        let answer = Answer::json(status, &body, close, &[]);
        self.queue(if head_only { answer.head() } else { answer.response });
        if close {
            self.linger(ctx, true);
            return Verdict::Keep;
        }
        // Serve what was pipelined behind it.
        self.read_paused = false;
        Verdict::ReadAgain
    }
}

/// `{"published":1,"offset":N}`, or for a batch
/// `{"published":K,"offsets":[N,null,...]}` (`null`: a room without history).
fn publish_body(offsets: &[Option<u64>]) -> Vec<u8> {
    let one = |o: &Option<u64>| o.map_or("null".to_string(), |n| n.to_string());
    if let [only] = offsets {
        return format!("{{\"published\":1,\"offset\":{}}}", one(only)).into_bytes();
    }
    let list: Vec<String> = offsets.iter().map(one).collect();
    format!("{{\"published\":{},\"offsets\":[{}]}}", offsets.len(), list.join(",")).into_bytes()
}

/// The answer when Redis could not serve a request on rooms with history.
/// Items of a batch that were published are not rolled back: a retry of the
/// whole batch may publish them twice.
fn unavailable_body() -> Vec<u8> {
    br#"{"error":"unavailable","message":"the history store (Redis) is unreachable"}"#.to_vec()
}

/// The payload of one unmasked server frame.
fn frame_payload(frame: &[u8]) -> &[u8] {
    let header = match frame.get(1).map(|b| b & 0x7F) {
        Some(126) => 4,
        Some(127) => 10,
        Some(_) => 2,
        None => return &[],
    };
    frame.get(header..).unwrap_or(&[])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_bodies_give_each_items_offset() {
        assert_eq!(publish_body(&[Some(7)]), br#"{"published":1,"offset":7}"#);
        assert_eq!(
            publish_body(&[Some(1), None, Some(2)]),
            br#"{"published":3,"offsets":[1,null,2]}"#
        );
    }

    #[test]
    fn payloads_of_every_header_size() {
        for len in [0, 125, 126, 70_000] {
            let frame = crate::ws::frame::encode(crate::ws::OpCode::Text, &vec![b'x'; len]);
            assert_eq!(frame_payload(&frame).len(), len);
        }
    }
}
