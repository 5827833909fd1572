//! The HTTP phase: parse request heads, answer the plain endpoints
//! (`http::Endpoints`), perform the upgrade.
//!
//! Keep-alive and pipelining are honoured for bodiless requests; a request
//! with a body is answered and the connection closed, because no endpoint
//! here reads one.

use crate::auth;
use crate::http::request::{self, Parsed};
use crate::http::{upgrade, Answer, Endpoints, Request, Route};
use crate::limits::Ticket;
use crate::metrics::DropReason;
use crate::ws::{CloseCode, Decoder};

use super::awaiting::Awaiting;
use super::session::Session;
use super::{pause_limit, Action, Conn, Ctx, Phase, Transport, Verdict};

/// What serving one request left the connection as.
enum Served {
    /// Ready for the next request.
    KeepAlive,
    /// Answered; close after the response.
    Close,
    /// Upgraded to WebSocket.
    Upgraded,
}

impl<S: Transport> Conn<S> {
    /// Handles bytes just read while in the HTTP phase (or, with `input`
    /// empty, requests left waiting while replies were backed up).
    ///
    /// Every byte is copied at most once into the connection's buffer, and
    /// only while a head or a body is incomplete, so a body that arrives in
    /// many reads is buffered in linear time.
    pub(super) fn serve_http(&mut self, ctx: &mut Ctx<'_>, input: &[u8]) -> Verdict {
        let Phase::Http { head, .. } = &mut self.phase else {
            return Verdict::Keep;
        };
        // Parse straight from the read unless an earlier read left bytes.
        let mut owned = std::mem::take(head);
        let buffered = !owned.is_empty();
        if buffered {
            owned.extend_from_slice(input);
        }
        let data: &[u8] = if buffered { &owned } else { input };
        let mut off = 0;
        let keep = loop {
            if off == data.len() {
                break None;
            }
            if self.outbox.len_bytes() > pause_limit(ctx.config()) {
                // Replies are backing up: the client is not reading them.
                // Serve the rest once they drain (`Conn::flush`).
                self.read_paused = true;
                break Some(off);
            }
            if self.is_awaiting() {
                // An API answer waits for owner shards: the rest after it.
                break Some(off);
            }
            let (req, used) = match request::parse(&data[off..]) {
                Err(e) => {
                    tracing::debug!(shard = ctx.env.shard, conn = self.number(ctx.env), peer = %self.peer, error = %e, "bad request");
                    let head_only = data[off..].starts_with(b"HEAD ");
                    self.answer(ctx, Answer::text(e.status(), &format!("{e}\n"), true), head_only);
                    break None;
                }
                Ok(Parsed::Partial) => break Some(off),
                Ok(Parsed::Complete(req, used)) => (req, used),
            };
            let head_only = req.method == "HEAD";
            if req.has_transfer_encoding {
                let answer = Answer::text("411 Length Required", "bodies need a Content-Length\n", true);
                self.answer(ctx, answer, head_only);
                break None;
            }
            let len = req.content_length.unwrap_or(0);
            if len > ctx.config().max_message_bytes as u64 {
                let answer = Answer::text("413 Payload Too Large", "body exceeds --max-message-bytes\n", true);
                self.answer(ctx, answer, head_only);
                break None;
            }
            let len = len as usize;
            let route = match Route::of(&req) {
                Route::Echo if !ctx.config().echo => Route::NotFound,
                route => route,
            };
            if data.len() - off - used < len {
                if self.endpoints(ctx).wants_body(&req, route) {
                    // The body is still coming (bounded by the check above).
                    break Some(off);
                }
                // Nothing here will read this body (a wrong API key, any
                // other endpoint): answer now, and close rather than read it.
                self.serve_request(ctx, req, route, &[], true);
                break None;
            }
            let body = &data[off + used..off + used + len];
            off += used + len;
            match self.serve_request(ctx, req, route, body, false) {
                Served::KeepAlive => {
                    // A keep-alive connection may stay idle this long again.
                    self.deadline = ctx.now + ctx.config().handshake_timeout;
                    if let Phase::Http { served, .. } = &mut self.phase {
                        *served = true;
                    }
                }
                Served::Close => break None,
                Served::Upgraded => {
                    // Frames sent right behind the request head.
                    let mut rest = data[off..].to_vec();
                    return self.on_ws_bytes(ctx, &mut rest);
                }
            }
        };
        // Keep what is not served yet, for the next read or the resume.
        if let (Some(at), Phase::Http { head, .. }) = (keep, &mut self.phase) {
            if buffered {
                owned.drain(..at);
                *head = owned;
            } else {
                head.extend_from_slice(&input[at..]);
            }
        }
        Verdict::Keep
    }

    /// The plain-HTTP endpoints, as configured.
    fn endpoints<'a>(&self, ctx: &Ctx<'a>) -> Endpoints<'a> {
        let config = ctx.config();
        Endpoints {
            api_key: config.api_key.as_deref(),
            demo: config.demo,
            max_message_bytes: config.max_message_bytes,
            rooms: &config.rooms,
            node: ctx.env,
        }
    }

    /// Queues a complete answer (its head alone for a `HEAD` request) and
    /// counts it; carries out the publishes it accepted; with `close`, ends
    /// the connection after it. Every plain HTTP answer goes through here.
    fn answer(&mut self, ctx: &mut Ctx<'_>, mut answer: Answer, head_only: bool) {
        let metrics = ctx.metrics();
        metrics.http_response(answer.status);
        if answer.auth_failed {
            metrics.auth_failures.add(1);
        }
        metrics.messages_received.add(answer.publish.len() as u64);
        let rooms = &ctx.env.config().rooms;
        let items = std::mem::take(&mut answer.publish);
        let count = items.len();
        let mut numbered = 0;
        for (index, item) in items.into_iter().enumerate() {
            let start = ctx.work.names.len();
            ctx.work.names.push_str(&item.name);
            let name = start..ctx.work.names.len();
            let action = if !item.user && rooms.has_history(&item.name) {
                // Numbered by the room's owner shard, like a client's; the
                // answer says where each landed.
                numbered += 1;
                Action::PublishNumbered {
                    name,
                    draft: item.draft(),
                    id: Some(index as u64),
                    api: true,
                }
            } else {
                Action::Publish {
                    user: item.user,
                    name,
                    frame: item.frame,
                    id: None,
                }
            };
            ctx.work.actions.push(action);
        }
        if numbered > 0 {
            self.await_answer(Awaiting::Publish {
                offsets: vec![None; count],
                waiting: numbered,
                failed: false,
                close: answer.close,
            });
            return;
        }
        if let Some((room, limit, since)) = answer.history.take() {
            let history = |name| Action::History {
                name,
                limit,
                since,
                id: Some(0),
                api: true,
            };
            self.await_read(ctx, &room, answer.close, head_only, history);
            return;
        }
        if let Some((room, list)) = answer.presence.take() {
            let presence = |name| Action::Presence {
                name,
                list,
                id: Some(0),
                api: true,
            };
            self.await_read(ctx, &room, answer.close, head_only, presence);
            return;
        }
        let response = if head_only { answer.head() } else { answer.response };
        self.queue(response);
        if answer.close {
            self.linger(ctx, true);
        }
    }

    /// An API read of a room (`GET /api/history`, `GET /api/presence`):
    /// the action for the room's owner shard, then the answer is awaited.
    fn await_read(
        &mut self,
        ctx: &mut Ctx<'_>,
        room: &str,
        close: bool,
        head_only: bool,
        action: impl FnOnce(std::ops::Range<usize>) -> Action,
    ) {
        let start = ctx.work.names.len();
        ctx.work.names.push_str(room);
        ctx.work.actions.push(action(start..ctx.work.names.len()));
        self.await_answer(Awaiting::Object { close, head_only });
    }

    /// Serves one whole request; `close` ends the connection after it
    /// whatever the request asked.
    fn serve_request(&mut self, ctx: &mut Ctx<'_>, req: Request, route: Route, body: &[u8], close: bool) -> Served {
        if route.is_websocket() && !close {
            return self.upgrade(ctx, route, &req);
        }
        let mut answer = if route.is_websocket() {
            match upgrade::check(&req, None) {
                Err(rejection) => Answer::rejection(rejection),
                Ok(_) => Answer::text("400 Bad Request", "an upgrade request has no body\n", true),
            }
        } else {
            self.endpoints(ctx).serve(&req, route, body)
        };
        answer.close |= close;
        let close = answer.close;
        self.answer(ctx, answer, req.method == "HEAD");
        if close {
            Served::Close
        } else {
            Served::KeepAlive
        }
    }

    fn upgrade(&mut self, ctx: &mut Ctx<'_>, route: Route, req: &Request) -> Served {
        // Behind a trusted proxy the client is the one its headers name:
        // the address logs give and --max-connections-per-ip counts.
        let proxies = &ctx.config().trusted_proxies;
        let client = req
            .provenance
            .as_ref()
            .and_then(|f| proxies.client(self.peer.ip(), &f.forwarded, &f.x_forwarded_for));
        if let Some(client) = client {
            ctx.env.shared.admission.rebind(&mut self.permit, client);
            self.peer = std::net::SocketAddr::new(client, 0);
        }
        // permessage-deflate, when the node offers it and the client asked.
        let deflate = req.deflate.filter(|_| ctx.config().compression);
        let accept = match upgrade::check(req, deflate) {
            Ok(resp) => resp,
            Err(rejection) => {
                tracing::debug!(shard = ctx.env.shard, conn = self.number(ctx.env), peer = %self.peer, reason = rejection.reason, "upgrade refused");
                self.answer(ctx, Answer::rejection(rejection), req.method == "HEAD");
                return Served::Close;
            }
        };
        if !ctx.config().allowed_origins.allows(req.origin()) {
            let origin = req.origin().unwrap_or_default();
            tracing::info!(shard = ctx.env.shard, conn = self.number(ctx.env), peer = %self.peer, origin, "upgrade refused: origin not allowed");
            let why = format!("origin {origin} is not allowed to open a WebSocket here (--allowed-origins)\n");
            self.answer(ctx, Answer::text("403 Forbidden", &why, true), false);
            return Served::Close;
        }
        self.queue(accept);
        self.phase = Phase::Ws {
            route,
            decoder: Decoder::new(ctx.config().max_message_bytes).with_deflate(deflate.is_some()),
            close_sent: false,
        };
        self.deflate = deflate;
        self.last_seen = ctx.now;
        self.deadline = ctx.now + ctx.config().heartbeat;
        let over = match self.permit.ticket() {
            Ticket::Counted => None,
            Ticket::Refusing => Some((DropReason::ConnectionLimit, "try again later")),
            Ticket::OverIpLimit => Some((DropReason::IpLimit, "too many connections from your address")),
        };
        if let Some((why, reason)) = over {
            // Over a cap: a browser can read a close code, not an HTTP
            // status, so finish the upgrade and close with 1013.
            ctx.metrics().drop(why);
            ctx.metrics().close(CloseCode::TRY_AGAIN_LATER.0);
            self.start_close(ctx, CloseCode::TRY_AGAIN_LATER, reason);
            return Served::Upgraded;
        }
        self.upgraded = true;
        ctx.metrics().connections.add(1);
        ctx.metrics().connections_total.add(1);
        if route == Route::Ws {
            self.open_session(ctx, req);
        }
        Served::Upgraded
    }

    /// Authenticates a `/ws` client and asks the shard to register its user.
    /// A refused client gets no welcome, only a 4001 close: browsers can
    /// read a close code but not the status of a failed upgrade.
    fn open_session(&mut self, ctx: &mut Ctx<'_>, req: &Request) {
        let env = ctx.env;
        let number = self.number(env);
        let session = match env.auth() {
            None => Session::anonymous(number, &env.shared.node_id, env.config(), ctx.now),
            Some(auth) => {
                let token = auth::token_from_request(req.query.as_deref(), req.authorization.as_deref());
                match token
                    .as_deref()
                    .ok_or(auth::AuthError::Missing)
                    .and_then(|t| auth.verify(t))
                {
                    Ok(principal) => Session::authenticated(principal, number, env.config(), ctx.now),
                    Err(e) => {
                        ctx.metrics().auth_failures.add(1);
                        tracing::info!(shard = env.shard, conn = self.number(env), peer = %self.peer, reason = %e, "authentication failed");
                        self.start_close(ctx, CloseCode::UNAUTHORIZED, "Unauthorized");
                        return;
                    }
                }
            }
        };
        self.session = Some(Box::new(session));
        // Nothing is read or answered before the welcome (see `Conn::welcome`).
        self.read_paused = true;
        ctx.work.actions.push(Action::Register);
    }
}
