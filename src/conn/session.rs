//! The broker session of a `/ws` connection: who the client is, what it may
//! do, and how fast; plus the handling of its messages.

use std::ops::ControlFlow;
use std::sync::Arc;

use crate::auth::{Principal, RoomPolicy};
use crate::limits::{Admit, RateLimiter};
use crate::metrics::DropReason;
use crate::protocol::{binary, frames, span, ErrorCode, Op, OpError, Request};
use crate::rooms::{valid_room, Topic};
use crate::ws::CloseCode;

use super::action::Action;
use super::Ctx;

/// Identity and limits of one broker connection.
#[derive(Debug)]
pub struct Session {
    /// The user id (`sub`, or `anon-<node>-<conn>` in dev mode).
    pub user: Arc<str>,
    /// The node-unique connection number, as sent in the welcome.
    pub number: u64,
    /// Rooms the token allows.
    policy: RoomPolicy,
    /// When the token expires (unix seconds); `None` in dev mode.
    pub exp: Option<u64>,
    limiter: RateLimiter,
    /// The welcome has been queued.
    pub welcomed: bool,
}

const ROOM_RULES: &str = "room names are 1-128 bytes of UTF-8 without control characters";

fn fail(id: Option<u64>, code: ErrorCode, message: &'static str) -> Action {
    Action::Reply(frames::error(&OpError::new(id, code, message)))
}

impl Session {
    /// A session for an authenticated principal.
    pub fn authenticated(p: Principal, number: u64, ctx: &Ctx<'_>) -> Session {
        Session {
            user: p.user,
            number,
            policy: p.rooms,
            exp: Some(p.exp),
            limiter: RateLimiter::new(ctx.config.rate_burst, ctx.now),
            welcomed: false,
        }
    }

    /// An anonymous dev-mode session; the name is unique across linked nodes
    /// and never reused while the process lives.
    pub fn anonymous(number: u64, ctx: &Ctx<'_>) -> Session {
        Session {
            user: Arc::from(format!("anon-{}-{number}", ctx.node_id)),
            number,
            policy: RoomPolicy::any(),
            exp: None,
            limiter: RateLimiter::new(ctx.config.rate_burst, ctx.now),
            welcomed: false,
        }
    }

    /// Charges one inbound message to the rate limit; `false` if it must be dropped.
    fn admit(&mut self, ctx: &mut Ctx<'_>, payload: &[u8]) -> bool {
        ctx.metrics.messages_received.add(1);
        match self
            .limiter
            .admit(ctx.config.rate_limit, ctx.config.rate_burst, ctx.now)
        {
            Admit::Yes => true,
            Admit::Reject => {
                ctx.metrics.drop(DropReason::RateLimited);
                // The message is not parsed (that is the work being refused),
                // but its id is cheap to find so the client knows which one.
                let id = span::request_id(payload);
                let message = "rate limit exceeded; message dropped";
                ctx.actions.push(fail(id, ErrorCode::RateLimited, message));
                false
            }
            Admit::Flood => {
                ctx.metrics.drop(DropReason::RateLimited);
                ctx.actions.push(Action::Close {
                    code: CloseCode::POLICY,
                    reason: "rate limit exceeded",
                });
                false
            }
        }
    }

    /// Handles one text message (a JSON op).
    pub fn on_text(&mut self, ctx: &mut Ctx<'_>, payload: &[u8]) -> ControlFlow<()> {
        if !self.admit(ctx, payload) {
            return ControlFlow::Continue(());
        }
        // The parser lives in the context; lend it out for the call.
        let mut parser = std::mem::take(&mut *ctx.parser);
        let result = parser.parse(payload, |req| self.request(ctx, payload, req));
        *ctx.parser = parser;
        match result {
            Ok(Some(action)) => ctx.actions.push(action),
            Ok(None) => {}
            Err(e) => ctx.actions.push(Action::Reply(frames::error(&e))),
        }
        ControlFlow::Continue(())
    }

    /// Handles one binary message: `[u8 n][n bytes room][payload]`, fanned
    /// out unchanged, header included.
    pub fn on_binary(&mut self, ctx: &mut Ctx<'_>, payload: &[u8]) -> ControlFlow<()> {
        if !self.admit(ctx, payload) {
            return ControlFlow::Continue(());
        }
        let action = match binary::room_of(payload) {
            Err(code) => fail(None, code, "binary frames start with [u8 n][n bytes of room name]"),
            Ok(room) if !self.policy.allows(room) => fail(None, ErrorCode::Forbidden, "room not allowed by token"),
            Ok(room) => {
                let frame = crate::ws::frame::encode(crate::ws::OpCode::Binary, payload);
                let name = push_name(ctx.names, room);
                Action::Publish {
                    user: false,
                    name,
                    frame,
                    id: None,
                }
            }
        };
        ctx.actions.push(action);
        ControlFlow::Continue(())
    }

    fn request(&mut self, ctx: &mut Ctx<'_>, payload: &[u8], req: Request<'_>) -> Option<Action> {
        let id = req.id;
        let action = match req.op {
            Op::Join { room } | Op::Leave { room } if !valid_room(room) => fail(id, ErrorCode::InvalidRoom, ROOM_RULES),
            Op::Join { room } if !self.policy.allows(room) => {
                fail(id, ErrorCode::Forbidden, "room not allowed by token")
            }
            Op::Join { room } => Action::Join {
                topic: Topic::Room(Arc::from(room)),
                id,
            },
            Op::Leave { room } => Action::Leave {
                topic: Topic::Room(Arc::from(room)),
                id,
            },
            Op::Publish { room, data } => {
                if !valid_room(room) {
                    return Some(fail(id, ErrorCode::InvalidRoom, ROOM_RULES));
                }
                if !self.policy.allows(room) {
                    return Some(fail(id, ErrorCode::Forbidden, "room not allowed by token"));
                }
                let data = &payload[data];
                if frames::message_overhead(room, &self.user) + data.len() > ctx.config.max_message_bytes {
                    return Some(fail(
                        id,
                        ErrorCode::TooLarge,
                        "message would exceed --max-message-bytes",
                    ));
                }
                let frame = frames::message(room, &self.user, data);
                Action::Publish {
                    user: false,
                    name: push_name(ctx.names, room),
                    frame,
                    id,
                }
            }
            Op::Send { user, data } => {
                if user.is_empty() {
                    return Some(fail(id, ErrorCode::BadRequest, "field \"user\" must not be empty"));
                }
                let data = &payload[data];
                if frames::message_overhead("", &self.user) + data.len() > ctx.config.max_message_bytes {
                    return Some(fail(
                        id,
                        ErrorCode::TooLarge,
                        "message would exceed --max-message-bytes",
                    ));
                }
                let frame = frames::direct(&self.user, data);
                Action::Publish {
                    user: true,
                    name: push_name(ctx.names, user),
                    frame,
                    id,
                }
            }
            Op::Refresh { token } => return self.refresh(ctx, id, token),
            Op::Ping => return id.map(|id| Action::Reply(frames::ack(id))),
        };
        Some(action)
    }

    fn refresh(&mut self, ctx: &mut Ctx<'_>, id: Option<u64>, token: &str) -> Option<Action> {
        let Some(auth) = ctx.auth else {
            return Some(fail(id, ErrorCode::BadRequest, "no tokens in dev mode"));
        };
        let p = match auth.verify(token) {
            Ok(p) => p,
            Err(_) => {
                ctx.metrics.auth_failures.add(1);
                return Some(fail(id, ErrorCode::Forbidden, "token rejected"));
            }
        };
        if p.user != self.user {
            return Some(fail(id, ErrorCode::Forbidden, "token is for another user"));
        }
        if self.exp.is_some_and(|exp| p.exp < exp) {
            return Some(fail(id, ErrorCode::Forbidden, "token expires before the current one"));
        }
        self.exp = Some(p.exp);
        self.policy = p.rooms;
        id.map(|id| Action::Reply(frames::ack(id)))
    }
}

/// Copies a topic name into the turn's arena; returns its range.
fn push_name(names: &mut String, name: &str) -> std::ops::Range<usize> {
    let start = names.len();
    names.push_str(name);
    start..names.len()
}
