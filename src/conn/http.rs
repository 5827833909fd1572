//! The HTTP phase: parse request heads, answer probes, perform the upgrade.
//!
//! Keep-alive and pipelining are honoured for bodiless requests; a request
//! with a body is answered and the connection closed, because no endpoint
//! here reads one.

use crate::auth;
use crate::cluster::{Health, LinkState};
use crate::http::request::{self, Parsed};
use crate::http::{api, assets};
use crate::http::{response, Request, Route};
use crate::metrics;
use crate::metrics::DropReason;
use crate::protocol::frames;
use crate::ws::{handshake, CloseCode, Decoder};

use crate::net::Ticket;

use super::session::Session;
use super::{Action, Conn, Ctx, Phase, Verdict};

/// What serving one request left the connection as.
enum Served {
    /// Ready for the next request.
    KeepAlive,
    /// Answered; close after the response.
    Close,
    /// Upgraded to WebSocket.
    Upgraded,
}

impl Conn {
    /// Handles the `n` new bytes in `ctx.scratch` while in the HTTP phase.
    pub(super) fn on_http_bytes(&mut self, ctx: &mut Ctx<'_>, n: usize) -> Verdict {
        let scratch = std::mem::take(&mut ctx.scratch);
        let verdict = self.serve_http(ctx, &scratch[..n]);
        ctx.scratch = scratch;
        verdict
    }

    fn serve_http(&mut self, ctx: &mut Ctx<'_>, input: &[u8]) -> Verdict {
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
                    tracing::debug!(shard = ctx.shard, conn = self.id, peer = %self.peer, error = %e, "bad request");
                    self.respond(ctx, e.status(), &format!("{e}\n"), true);
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
                        self.respond(ctx, "411 Length Required", "bodies need a Content-Length\n", true);
                        return Verdict::Keep;
                    }
                    let len = req.content_length.unwrap_or(0);
                    if len > ctx.config.max_message_bytes as u64 {
                        self.respond(ctx, "413 Payload Too Large", "body exceeds --max-message-bytes\n", true);
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

    /// Queues a complete response, counts its status, and with `close`
    /// ends the connection after it. Every plain HTTP answer goes through here.
    fn send(&mut self, ctx: &Ctx<'_>, status: &str, bytes: bytes::Bytes, close: bool) {
        ctx.metrics.http_response(status);
        self.queue(bytes);
        if close {
            self.linger(ctx, true);
        }
    }

    /// Queues a plain-text response.
    fn respond(&mut self, ctx: &Ctx<'_>, status: &str, body: &str, close: bool) {
        self.send(ctx, status, response::text(status, body, close), close);
    }

    /// Queues a JSON response.
    fn respond_json(&mut self, ctx: &Ctx<'_>, status: &str, body: String, close: bool, extra: &[(&str, &str)]) {
        let bytes = response::response(status, "application/json", body.as_bytes(), close, extra);
        self.send(ctx, status, bytes, close);
    }

    fn serve_request(&mut self, ctx: &mut Ctx<'_>, req: Request, body: &[u8]) -> Served {
        let route = Route::of(&req);
        if route.is_websocket() {
            return self.upgrade(ctx, route, &req);
        }
        let close = !req.keep_alive();
        if route == Route::ApiPublish && ctx.config.api_key.is_some() {
            self.api_publish(ctx, &req, body, close);
            return if close { Served::Close } else { Served::KeepAlive };
        }
        // HEAD is refused rather than answered with a body it must not carry.
        if req.method != "GET" && !matches!(route, Route::NotFound | Route::ApiPublish) {
            let status = "405 Method Not Allowed";
            let body = b"method not allowed\n";
            self.send(
                ctx,
                status,
                response::response(status, "text/plain", body, true, &[("Allow", "GET")]),
                true,
            );
            return Served::Close;
        }
        match route {
            Route::Healthz => {
                let body = match ctx.link.map(LinkState::health) {
                    Some(Health::Degraded(why)) => format!("degraded: {why}\n"),
                    _ => "ok\n".to_string(),
                };
                self.respond(ctx, "200 OK", &body, close)
            }
            Route::Readyz => match ctx.link.map(LinkState::health) {
                Some(Health::Degraded(why)) => self.respond(ctx, "503 Service Unavailable", &format!("{why}\n"), close),
                _ => self.respond(ctx, "200 OK", "ready\n", close),
            },
            Route::Metrics => {
                let text = metrics::render(ctx.registry, ctx.link);
                let ct = "text/plain; version=0.0.4; charset=utf-8";
                self.send(
                    ctx,
                    "200 OK",
                    response::response("200 OK", ct, text.as_bytes(), close, &[]),
                    close,
                );
            }
            Route::ClientJs => self.asset(ctx, "text/javascript; charset=utf-8", assets::CLIENT_JS, close),
            Route::Demo if ctx.config.demo => self.asset(ctx, "text/html; charset=utf-8", assets::DEMO_HTML, close),
            _ => self.respond(ctx, "404 Not Found", "not found\n", close),
        }
        if close {
            Served::Close
        } else {
            Served::KeepAlive
        }
    }

    /// `POST /api/publish`: check the key, parse the body, hand the shard
    /// one publish per item (in order), answer at once.
    fn api_publish(&mut self, ctx: &mut Ctx<'_>, req: &Request, body: &[u8], close: bool) {
        if req.method != "POST" {
            let err = api_error("method_not_allowed", "use POST");
            return self.respond_json(ctx, "405 Method Not Allowed", err, close, &[("Allow", "POST")]);
        }
        let key = ctx.config.api_key.as_deref().unwrap_or_default();
        let given = req.authorization.as_deref().and_then(auth::bearer).unwrap_or_default();
        if !api::constant_time_eq(given.as_bytes(), key.as_bytes()) {
            ctx.metrics.auth_failures.add(1);
            let err = api_error("unauthorized", "missing or wrong API key");
            return self.respond_json(ctx, "401 Unauthorized", err, close, &[("WWW-Authenticate", "Bearer")]);
        }
        let items = match api::parse_publish(body, ctx.config.max_message_bytes) {
            Ok(items) => items,
            Err(bad) => return self.respond_json(ctx, "400 Bad Request", api_error(bad.code, bad.message), close, &[]),
        };
        let published = items.len();
        ctx.metrics.messages_received.add(published as u64);
        for item in items {
            let start = ctx.names.len();
            ctx.names.push_str(&item.name);
            let name = start..ctx.names.len();
            ctx.actions.push(Action::Publish {
                user: item.user,
                name,
                frame: item.frame,
                id: None,
            });
        }
        self.respond_json(ctx, "200 OK", format!("{{\"published\":{published}}}"), close, &[]);
    }

    /// Queues an embedded file. Any origin may load it: it is public code,
    /// and pages on other origins import the client as a module.
    fn asset(&mut self, ctx: &Ctx<'_>, content_type: &str, body: &str, close: bool) {
        let extra = [("Cache-Control", "no-cache"), ("Access-Control-Allow-Origin", "*")];
        self.send(
            ctx,
            "200 OK",
            response::response("200 OK", content_type, body.as_bytes(), close, &extra),
            close,
        );
    }

    fn upgrade(&mut self, ctx: &mut Ctx<'_>, route: Route, req: &Request) -> Served {
        let accept = match handshake::check(req) {
            Ok(resp) => resp,
            Err(rejection) => {
                tracing::debug!(shard = ctx.shard, conn = self.id, peer = %self.peer, reason = rejection.reason, "upgrade refused");
                self.send(ctx, rejection.status, rejection.response(), true);
                return Served::Close;
            }
        };
        self.queue(accept);
        self.phase = Phase::Ws {
            route,
            decoder: Decoder::new(ctx.config.max_message_bytes),
            close_sent: false,
        };
        self.last_seen = ctx.now;
        self.last_ping = ctx.now;
        if self.ticket != Some(Ticket::Counted) {
            // Over --max-connections: a browser can read a close code, not an
            // HTTP status, so finish the upgrade and close with 1013.
            ctx.metrics.drop(DropReason::ConnectionLimit);
            ctx.metrics.close(CloseCode::TRY_AGAIN_LATER.0);
            self.start_close(ctx, CloseCode::TRY_AGAIN_LATER, "try again later");
            return Served::Upgraded;
        }
        self.upgraded = true;
        ctx.metrics.connections.add(1);
        ctx.metrics.connections_total.add(1);
        if route == Route::Ws {
            self.open_session(ctx, req);
        }
        Served::Upgraded
    }

    /// Authenticates a `/ws` client and asks the shard to register its user.
    /// A refused client gets no welcome, only a 4001 close: browsers can
    /// read a close code but not the status of a failed upgrade.
    fn open_session(&mut self, ctx: &mut Ctx<'_>, req: &Request) {
        let number = self.id * ctx.shards as u64 + ctx.shard as u64;
        let session = match ctx.auth {
            None => Session::anonymous(number, ctx),
            Some(auth) => {
                let token = auth::token_from_request(req.query.as_deref(), req.authorization.as_deref());
                match token
                    .as_deref()
                    .ok_or(auth::AuthError::Missing)
                    .and_then(|t| auth.verify(t))
                {
                    Ok(principal) => Session::authenticated(principal, number, ctx),
                    Err(e) => {
                        ctx.metrics.auth_failures.add(1);
                        tracing::info!(shard = ctx.shard, conn = self.id, peer = %self.peer, reason = %e, "authentication failed");
                        self.start_close(ctx, CloseCode::UNAUTHORIZED, "Unauthorized");
                        return;
                    }
                }
            }
        };
        self.session = Some(Box::new(session));
        // Nothing is read or answered before the welcome (see `Conn::welcome`).
        self.read_paused = true;
        ctx.actions.push(Action::Register);
    }
}

/// The JSON body of an API error: `{"error":code,"message":message}`.
fn api_error(code: &str, message: &str) -> String {
    let mut out = bytes::BytesMut::new();
    out.extend_from_slice(b"{\"error\":");
    frames::json_string(&mut out, code);
    out.extend_from_slice(b",\"message\":");
    frames::json_string(&mut out, message);
    out.extend_from_slice(b"}");
    String::from_utf8(out.to_vec()).expect("JSON built from str is UTF-8")
}
