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

use super::session::Session;
use super::{Action, Conn, Ctx, Phase, Transport, Verdict};

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
    /// Handles bytes just read while in the HTTP phase.
    pub(super) fn serve_http(&mut self, ctx: &mut Ctx<'_>, input: &[u8]) -> Verdict {
        let Phase::Http { head } = &mut self.phase else {
            return Verdict::Keep;
        };
        // Parse straight from the read unless an earlier read left half a head.
        let owned;
        let data: &[u8] = if head.is_empty() {
            input
        } else {
            head.extend_from_slice(input);
            owned = std::mem::take(head);
            &owned
        };
        let mut off = 0;
        loop {
            match request::parse(&data[off..]) {
                Err(e) => {
                    tracing::debug!(shard = ctx.env.shard, conn = self.id, peer = %self.peer, error = %e, "bad request");
                    self.answer(ctx, Answer::text(e.status(), &format!("{e}\n"), true));
                    return Verdict::Keep;
                }
                Ok(Parsed::Partial) => {
                    if let Phase::Http { head } = &mut self.phase {
                        head.extend_from_slice(&data[off..]);
                    }
                    return Verdict::Keep;
                }
                Ok(Parsed::Complete(req, used)) => {
                    if req.has_transfer_encoding {
                        let answer = Answer::text("411 Length Required", "bodies need a Content-Length\n", true);
                        self.answer(ctx, answer);
                        return Verdict::Keep;
                    }
                    let len = req.content_length.unwrap_or(0);
                    if len > ctx.config().max_message_bytes as u64 {
                        let answer = Answer::text("413 Payload Too Large", "body exceeds --max-message-bytes\n", true);
                        self.answer(ctx, answer);
                        return Verdict::Keep;
                    }
                    let len = len as usize;
                    if data.len() - off - used < len {
                        // The body is still coming (bounded by the check above).
                        if let Phase::Http { head } = &mut self.phase {
                            head.extend_from_slice(&data[off..]);
                        }
                        return Verdict::Keep;
                    }
                    let body = &data[off + used..off + used + len];
                    off += used + len;
                    match self.serve_request(ctx, req, body) {
                        Served::KeepAlive if off < data.len() => continue,
                        Served::KeepAlive | Served::Close => return Verdict::Keep,
                        Served::Upgraded => {
                            // Frames sent right behind the request head.
                            let mut rest = data[off..].to_vec();
                            return self.on_ws_bytes(ctx, &mut rest);
                        }
                    }
                }
            }
        }
    }

    /// Queues a complete answer and counts it; carries out the publishes it
    /// accepted; with `close`, ends the connection after it. Every plain
    /// HTTP answer goes through here.
    fn answer(&mut self, ctx: &mut Ctx<'_>, answer: Answer) {
        let metrics = ctx.metrics();
        metrics.http_response(answer.status);
        if answer.auth_failed {
            metrics.auth_failures.add(1);
        }
        metrics.messages_received.add(answer.publish.len() as u64);
        for item in answer.publish {
            let start = ctx.work.names.len();
            ctx.work.names.push_str(&item.name);
            ctx.work.actions.push(Action::Publish {
                user: item.user,
                name: start..ctx.work.names.len(),
                frame: item.frame,
                id: None,
            });
        }
        self.queue(answer.response);
        if answer.close {
            self.linger(ctx, true);
        }
    }

    fn serve_request(&mut self, ctx: &mut Ctx<'_>, req: Request, body: &[u8]) -> Served {
        let route = Route::of(&req);
        if route.is_websocket() {
            return self.upgrade(ctx, route, &req);
        }
        let config = ctx.config();
        let endpoints = Endpoints {
            api_key: config.api_key.as_deref(),
            demo: config.demo,
            max_message_bytes: config.max_message_bytes,
            node: ctx.env,
        };
        let answer = endpoints.serve(&req, route, body);
        let close = answer.close;
        self.answer(ctx, answer);
        if close {
            Served::Close
        } else {
            Served::KeepAlive
        }
    }

    fn upgrade(&mut self, ctx: &mut Ctx<'_>, route: Route, req: &Request) -> Served {
        let accept = match upgrade::check(req) {
            Ok(resp) => resp,
            Err(rejection) => {
                tracing::debug!(shard = ctx.env.shard, conn = self.id, peer = %self.peer, reason = rejection.reason, "upgrade refused");
                ctx.metrics().http_response(rejection.status);
                self.queue(rejection.response());
                self.linger(ctx, true);
                return Served::Close;
            }
        };
        self.queue(accept);
        self.phase = Phase::Ws {
            route,
            decoder: Decoder::new(ctx.config().max_message_bytes),
            close_sent: false,
        };
        self.last_seen = ctx.now;
        self.last_ping = ctx.now;
        if self.permit.ticket() != Ticket::Counted {
            // Over --max-connections: a browser can read a close code, not an
            // HTTP status, so finish the upgrade and close with 1013.
            ctx.metrics().drop(DropReason::ConnectionLimit);
            ctx.metrics().close(CloseCode::TRY_AGAIN_LATER.0);
            self.start_close(ctx, CloseCode::TRY_AGAIN_LATER, "try again later");
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
        let number = self.id * env.shards as u64 + env.shard as u64;
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
                        tracing::info!(shard = env.shard, conn = self.id, peer = %self.peer, reason = %e, "authentication failed");
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
