//! The WebSocket phase: decode frames, answer pings, hand messages to the
//! endpoint (`/echo` or the broker session), and carry out the close
//! handshake.

use std::ops::ControlFlow;

use crate::http::Route;
use crate::ws::decoder::ProtocolError;
use crate::ws::deflate::{Agreement, InflateError};
use crate::ws::{frame, CloseCode, Event, OpCode};

use super::outbox::Outbox;
use super::{Conn, Ctx, Phase, Transport, Verdict};

impl<S: Transport> Conn<S> {
    /// Decodes `input` (unmasking in place) and acts on every event.
    pub(super) fn on_ws_bytes(&mut self, ctx: &mut Ctx<'_>, input: &mut [u8]) -> Verdict {
        if let Some(s) = self.session.as_mut().filter(|s| !s.welcomed) {
            // Nothing may be answered before the welcome; keep it for then.
            let mut held = std::mem::take(&mut s.held).into_vec();
            held.extend_from_slice(input);
            s.held = held.into_boxed_slice();
            return Verdict::Keep;
        }
        let Phase::Ws {
            route,
            decoder,
            close_sent,
        } = &mut self.phase
        else {
            return Verdict::Keep;
        };
        let (route, close_sent) = (*route, *close_sent);
        let outbox = &mut self.outbox;
        let session = &mut self.session;
        let deflate = self.deflate;
        let mut peer_close: Option<Option<CloseCode>> = None;
        // A compressed message that could not be inflated.
        let mut refused: Option<ProtocolError> = None;
        let mut result = decoder.feed(input, |event| {
            match event {
                // After our close frame, data is read only to find theirs.
                Event::Text(_) | Event::Binary(_) | Event::Compressed { .. } if close_sent => {}
                Event::Text(p) => match session {
                    Some(s) => return s.on_text(ctx, p),
                    None => echo(outbox, ctx, route, deflate, OpCode::Text, p),
                },
                Event::Binary(p) => match session {
                    Some(s) => return s.on_binary(ctx, p),
                    None => echo(outbox, ctx, route, deflate, OpCode::Binary, p),
                },
                Event::Compressed { text, payload } => {
                    // Inflated into the shard's buffer, which the handler
                    // borrows while `ctx` stays free for it.
                    let mut plain = std::mem::take(&mut ctx.work.inflated);
                    let max = ctx.config().max_message_bytes;
                    let inflated = ctx.work.inflater.inflate(payload, max, &mut plain);
                    let checked = match inflated {
                        Err(InflateError::TooBig) => Err(ProtocolError {
                            code: CloseCode::TOO_BIG,
                            reason: "message too big once inflated",
                        }),
                        Err(InflateError::Corrupt) => Err(ProtocolError {
                            code: CloseCode::INVALID_PAYLOAD,
                            reason: "compressed data is not valid deflate",
                        }),
                        Ok(()) if text && std::str::from_utf8(&plain).is_err() => Err(ProtocolError {
                            code: CloseCode::INVALID_PAYLOAD,
                            reason: "text is not valid UTF-8",
                        }),
                        Ok(()) => Ok(()),
                    };
                    let flow = match checked {
                        Err(e) => {
                            refused = Some(e);
                            ControlFlow::Break(())
                        }
                        Ok(()) => {
                            let op = if text { OpCode::Text } else { OpCode::Binary };
                            match session {
                                Some(s) if text => s.on_text(ctx, &plain),
                                Some(s) => s.on_binary(ctx, &plain),
                                None => {
                                    echo(outbox, ctx, route, deflate, op, &plain);
                                    ControlFlow::Continue(())
                                }
                            }
                        }
                    };
                    // A large message does not pin a large buffer.
                    if plain.capacity() > 64 * 1024 {
                        plain = Vec::new();
                    }
                    ctx.work.inflated = plain;
                    return flow;
                }
                // Broker connections pay for every frame (see
                // `Session::charge_frame`); a ping over the limit gets no pong.
                Event::Fragment | Event::Pong(_) | Event::Ping(_) => {
                    if let Some(s) = session {
                        if !s.charge_frame(ctx) {
                            return s.flow();
                        }
                    }
                    if let Event::Ping(p) = event {
                        if !close_sent {
                            outbox.push(frame::encode(OpCode::Pong, p));
                        }
                    }
                }
                Event::Close { code, .. } => {
                    peer_close = Some(code);
                    return ControlFlow::Break(());
                }
            }
            ControlFlow::Continue(())
        });
        if let Some(e) = refused {
            result = Err(e);
        }
        if let Err(e) = result {
            tracing::info!(
                shard = ctx.env.shard, conn = self.id, peer = %self.peer, user = self.user().map(|u| &**u),
                code = e.code.0, reason = e.reason, "protocol error: closing"
            );
            // The stream can no longer be parsed, so no close reply can be
            // recognised: send ours, then shut our side and wait for EOF.
            self.close_code.get_or_insert(e.code);
            self.queue(frame::encode_close(e.code, e.reason));
            self.linger(ctx, true);
            return Verdict::Keep;
        }
        if let Some(code) = peer_close {
            if !close_sent {
                // Echo the peer's code (RFC 6455 §5.5.1); no code, no payload.
                self.close_code = Some(code.unwrap_or(CloseCode::NO_STATUS));
                let reply = match code {
                    Some(c) => frame::encode_close(c, ""),
                    None => frame::encode(OpCode::Close, b""),
                };
                self.queue(reply);
            }
            self.linger(ctx, false);
        }
        Verdict::Keep
    }
}

/// `/echo` sends the message back as is (compressed when the client
/// negotiated it, its window allows and it pays); a bare `/ws` only counts it.
fn echo(outbox: &mut Outbox, ctx: &mut Ctx<'_>, route: Route, deflate: Option<Agreement>, op: OpCode, p: &[u8]) {
    ctx.metrics().messages_received.add(1);
    if route == Route::Echo {
        let compressed = match deflate {
            Some(a) if a.reads(p.len()) => ctx.work.deflater.compress(op, p),
            _ => None,
        };
        outbox.push(compressed.unwrap_or_else(|| frame::encode(op, p)));
        ctx.metrics().deliveries.add(1);
    }
}
