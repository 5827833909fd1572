//! The broker session of a `/ws` connection: who the client is, what it may
//! do, and how fast; plus the handling of its messages.

use std::ops::ControlFlow;
use std::sync::Arc;

use std::time::Instant;

use crate::auth::{Principal, RoomPolicy};
use crate::config::Config;
use crate::history::{Epoch, Since};
use crate::limits::{Admit, RateLimiter};
use crate::metrics::DropReason;
use crate::protocol::publish::{self, Body, Target, ROOM_RULES};
use crate::protocol::{binary, encode, span, ErrorCode, Op, OpError, Request};
use crate::rooms::{valid_room, Topic};
use crate::ws::CloseCode;

use super::action::{Action, JoinAt};
use super::{Ctx, Env, Work};

/// Identity and limits of one broker connection.
#[derive(Debug)]
pub(crate) struct Session {
    /// The user id (`sub`, or `anon-<node>-<conn>` in dev mode).
    pub user: Arc<str>,
    /// The node-unique connection number, as sent in the welcome.
    pub number: u64,
    /// Rooms the token allows.
    policy: RoomPolicy,
    /// When the token expires (unix seconds); [`NEVER`] in dev mode.
    pub exp: u64,
    limiter: RateLimiter,
    /// The welcome has been queued.
    pub welcomed: bool,
    /// Closed for flooding: what is still in the read is dropped silently.
    flooded: bool,
    /// Bytes the client sent right behind its upgrade request, held until
    /// the welcome goes out so that the welcome is the first frame it gets.
    pub held: Box<[u8]>,
}

/// `Session::exp` of a session without a token. (A plain `u64` and a
/// boxed slice keep a session within 104 bytes, one malloc size class
/// smaller: every connection has one.)
pub(crate) const NEVER: u64 = u64::MAX;

fn fail(id: Option<u64>, code: ErrorCode, message: &'static str) -> Action {
    Action::Reply(encode::error(&OpError::new(id, code, message)))
}

impl Session {
    /// A session for an authenticated principal.
    pub fn authenticated(p: Principal, number: u64, config: &Config, now: Instant) -> Session {
        Session {
            user: p.user,
            number,
            policy: p.rooms,
            exp: p.exp,
            limiter: RateLimiter::new(config.rate_burst, now),
            welcomed: false,
            flooded: false,
            held: Box::default(),
        }
    }

    /// An anonymous dev-mode session; the name is unique across linked nodes
    /// and never reused while the process lives.
    pub fn anonymous(number: u64, node_id: &str, config: &Config, now: Instant) -> Session {
        Session {
            user: Arc::from(format!("anon-{node_id}-{number}")),
            number,
            policy: RoomPolicy::any(),
            exp: NEVER,
            limiter: RateLimiter::new(config.rate_burst, now),
            welcomed: false,
            flooded: false,
            held: Box::default(),
        }
    }

    /// Charges one inbound message to the rate limit; `false` if it must be dropped.
    fn admit(&mut self, ctx: &mut Ctx<'_>, payload: &[u8]) -> bool {
        ctx.metrics().messages_received.add(1);
        match self.charge(ctx) {
            Admit::Yes => true,
            Admit::Reject => {
                // The message is not parsed (that is the work being refused),
                // but its id is cheap to find so the client knows which one.
                let id = span::request_id(payload);
                let message = "rate limit exceeded; message dropped";
                ctx.work.actions.push(fail(id, ErrorCode::RateLimited, message));
                false
            }
            Admit::Flood => false,
        }
    }

    /// Whether to go on decoding this connection's input: not once it is
    /// being closed for flooding (what it still sends is not even parsed).
    pub fn flow(&self) -> ControlFlow<()> {
        if self.flooded {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    }

    /// Charges one frame that is not a whole message — a ping, a pong, a
    /// fragment of a message — to the same rate limit as messages: without
    /// it, pings (each answered) and empty fragments (never reaching
    /// `--max-message-bytes`) would be free. `false`: over the limit, so a
    /// ping gets no pong; nothing else is sent back (an error per refused
    /// frame would be the amplification the limit prevents).
    pub fn charge_frame(&mut self, ctx: &mut Ctx<'_>) -> bool {
        self.charge(ctx) == Admit::Yes
    }

    /// Takes a token; counts a refusal, and closes with 1008 on a flood.
    fn charge(&mut self, ctx: &mut Ctx<'_>) -> Admit {
        let (metrics, config) = (ctx.metrics(), ctx.config());
        if self.flooded {
            // Already closing for flooding: no reply and no second close
            // per message still in the read.
            metrics.drop(DropReason::RateLimited);
            return Admit::Flood;
        }
        let admit = self.limiter.admit(config.rate_limit, config.rate_burst, ctx.now);
        match admit {
            Admit::Yes => {}
            Admit::Reject => metrics.drop(DropReason::RateLimited),
            Admit::Flood => {
                metrics.drop(DropReason::RateLimited);
                self.flooded = true;
                ctx.work.actions.push(Action::Close {
                    code: CloseCode::POLICY,
                    reason: "rate limit exceeded",
                });
            }
        }
        admit
    }

    /// Handles one text message (a JSON op).
    pub fn on_text(&mut self, ctx: &mut Ctx<'_>, payload: &[u8]) -> ControlFlow<()> {
        if !self.admit(ctx, payload) {
            return self.flow();
        }
        let env = ctx.env;
        let Work {
            parser, actions, names, ..
        } = &mut *ctx.work;
        match parser.parse(payload, |req| self.request(env, names, payload, req)) {
            Ok(Some(action)) => actions.push(action),
            Ok(None) => {}
            Err(e) => actions.push(Action::Reply(encode::error(&e))),
        }
        ControlFlow::Continue(())
    }

    /// Handles one binary message: `[u8 n][n bytes room][payload]`, fanned
    /// out unchanged, header included.
    pub fn on_binary(&mut self, ctx: &mut Ctx<'_>, payload: &[u8]) -> ControlFlow<()> {
        if !self.admit(ctx, payload) {
            return self.flow();
        }
        let max = ctx.config().max_message_bytes;
        let action = match binary::room_of(payload) {
            Err(code) => fail(None, code, "binary frames start with [u8 n][n bytes of room name]"),
            // The payload is the frame: its size was capped by the decoder.
            Ok(room) => match publish::check(Target::Room(room), &self.policy, Body::Binary, max) {
                Err((code, message)) => fail(None, code, message),
                Ok(()) => Action::Publish {
                    user: false,
                    name: push_name(&mut ctx.work.names, room),
                    frame: crate::ws::frame::encode(crate::ws::OpCode::Binary, payload),
                    id: None,
                },
            },
        };
        ctx.work.actions.push(action);
        ControlFlow::Continue(())
    }

    fn request(&mut self, env: &Env, names: &mut String, payload: &[u8], req: Request<'_>) -> Option<Action> {
        let id = req.id;
        let max = env.config().max_message_bytes;
        let action = match req.op {
            Op::Join { room, .. } | Op::Leave { room } | Op::History { room, .. } | Op::Presence { room, .. }
                if !valid_room(room) =>
            {
                fail(id, ErrorCode::InvalidRoom, ROOM_RULES)
            }
            Op::Join { room, .. } | Op::History { room, .. } | Op::Presence { room, .. }
                if !self.policy.allows(room) =>
            {
                fail(id, ErrorCode::Forbidden, "room not allowed by token")
            }
            Op::Presence { room, .. } if !env.config().rooms.tracks_presence(room) => {
                fail(id, ErrorCode::NoPresence, "the room does not track presence")
            }
            Op::Presence { room, list } => Action::Presence {
                name: push_name(names, room),
                list,
                id,
                api: false,
            },
            Op::Join { room, since } => {
                let at = match (env.config().rooms.has_history(room), since) {
                    (false, _) => JoinAt::Plain,
                    (true, None) => JoinAt::Top,
                    (true, Some(s)) => JoinAt::Since(since_of(s)),
                };
                Action::Join {
                    topic: Topic::Room(Arc::from(room)),
                    id,
                    at,
                }
            }
            Op::History { room, .. } if !env.config().rooms.has_history(room) => {
                fail(id, ErrorCode::NoHistory, "the room keeps no history")
            }
            Op::History { room, limit, since } => Action::History {
                name: push_name(names, room),
                limit,
                since: since.map(since_of),
                id,
                api: false,
            },
            Op::Leave { room } => Action::Leave {
                topic: Topic::Room(Arc::from(room)),
                id,
            },
            Op::Publish { room, data } => {
                let data = &payload[data];
                let numbered = env.config().rooms.has_history(room);
                // A numbered message also carries `,"offset":N`.
                let max = if numbered {
                    max.saturating_sub(encode::OFFSET_BYTES)
                } else {
                    max
                };
                if let Err((code, message)) = publish::check(Target::Room(room), &self.policy, self.body(data), max) {
                    return Some(fail(id, code, message));
                }
                if numbered {
                    Action::PublishNumbered {
                        name: push_name(names, room),
                        draft: encode::message_draft(room, &self.user, data),
                        id,
                        api: false,
                    }
                } else {
                    Action::Publish {
                        user: false,
                        name: push_name(names, room),
                        frame: encode::message(room, &self.user, data),
                        id,
                    }
                }
            }
            Op::Send { user, data } => {
                let data = &payload[data];
                if let Err((code, message)) = publish::check(Target::User(user), &self.policy, self.body(data), max) {
                    return Some(fail(id, code, message));
                }
                Action::Publish {
                    user: true,
                    name: push_name(names, user),
                    frame: encode::direct(&self.user, data),
                    id,
                }
            }
            Op::Refresh { token } => return self.refresh(env, id, token),
            Op::Ping => return id.map(|id| Action::Reply(encode::ack(id))),
        };
        Some(action)
    }

    /// `data` as a publish from this session's user.
    fn body<'a>(&'a self, data: &[u8]) -> Body<'a> {
        Body::Json {
            sender: &self.user,
            data_len: data.len(),
        }
    }

    fn refresh(&mut self, env: &Env, id: Option<u64>, token: &str) -> Option<Action> {
        let Some(auth) = env.auth() else {
            return Some(fail(id, ErrorCode::BadRequest, "no tokens in dev mode"));
        };
        let p = match auth.verify(token) {
            Ok(p) => p,
            Err(_) => {
                env.metrics.auth_failures.add(1);
                return Some(fail(id, ErrorCode::Forbidden, "token rejected"));
            }
        };
        if p.user != self.user {
            return Some(fail(id, ErrorCode::Forbidden, "token is for another user"));
        }
        if p.exp < self.exp {
            return Some(fail(id, ErrorCode::Forbidden, "token expires before the current one"));
        }
        self.exp = p.exp;
        self.policy = p.rooms;
        // The new `rooms` claim may be narrower: the shard re-checks every
        // membership, then acks.
        Some(Action::Recheck { id })
    }

    /// Whether the token allows `room`.
    pub fn allows(&self, room: &str) -> bool {
        self.policy.allows(room)
    }
}

/// A client's `since`, with an epoch that is not one of ours made unmatchable.
fn since_of(s: crate::protocol::ops::Since<'_>) -> Since {
    Since {
        offset: s.offset,
        epoch: Epoch::parse(s.epoch).unwrap_or(Epoch::UNKNOWN),
    }
}

/// Copies a topic name into the turn's arena; returns its range.
fn push_name(names: &mut String, name: &str) -> std::ops::Range<usize> {
    let start = names.len();
    names.push_str(name);
    start..names.len()
}
