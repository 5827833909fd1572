//! The plain-HTTP endpoints on the WebSocket port: the health probes,
//! `/metrics`, the embedded client and demo page, and the backend API
//! (`POST /api/publish`, `GET /api/history`).
//!
//! Socket-free: a request and its body in, an [`Answer`] out. What the node
//! knows (its health, its metrics) comes through the narrow [`NodeView`], so
//! this module names no connection, shard or link. Publishes the API accepts
//! are handed back in the answer for the connection to pass to its shard.

use std::sync::OnceLock;

use bytes::{Bytes, BytesMut};

use crate::auth;
use crate::config::RoomRules;
use crate::history::{Epoch, Since};
use crate::protocol::api::{self, Item};
use crate::protocol::encode;
use crate::protocol::ops::{DEFAULT_HISTORY_LIMIT, MAX_HISTORY_LIMIT};
use crate::rooms::valid_room;

use super::upgrade::Rejection;
use super::{assets, response, Request, Route};

/// What the endpoints need to know about the node, read only when asked.
pub(crate) trait NodeView {
    /// `Some(reason)` while the node is degraded (its Redis link down or stalled).
    fn degraded(&self) -> Option<String>;
    /// The Prometheus exposition of the node's metrics.
    fn metrics(&self) -> String;
}

/// The endpoints, configured.
pub(crate) struct Endpoints<'a> {
    /// Bearer key of `/api/publish`; `None` turns the API off (404).
    pub api_key: Option<&'a str>,
    /// Serve the demo page at `/`.
    pub demo: bool,
    /// `--max-message-bytes`, for the frames the API builds.
    pub max_message_bytes: usize,
    /// Which rooms keep history (`GET /api/history`) and track presence
    /// (`GET /api/presence`).
    pub rooms: &'a RoomRules,
    /// The node behind them.
    pub node: &'a dyn NodeView,
}

/// A complete answer to one request.
#[derive(Debug)]
pub(crate) struct Answer {
    /// The status line, e.g. `200 OK` (counted in metrics).
    pub status: &'static str,
    /// The whole response, head and body.
    pub response: Bytes,
    /// Close the connection once the response is out.
    pub close: bool,
    /// Publishes to carry out, in order (only from `/api/publish`).
    pub publish: Vec<Item>,
    /// The request carried a wrong or missing API key (counted in metrics).
    pub auth_failed: bool,
    /// `GET /api/history` for this room, limit and position: the answer
    /// comes from the room's owner shard, and `response` is not sent.
    pub history: Option<(String, usize, Option<Since>)>,
    /// `GET /api/presence` for this room, listing the users or not: the
    /// answer comes from the room's owner shard.
    pub presence: Option<(String, bool)>,
}

impl Answer {
    fn new(status: &'static str, response: Bytes, close: bool) -> Answer {
        Answer {
            status,
            response,
            close,
            publish: Vec::new(),
            auth_failed: false,
            history: None,
            presence: None,
        }
    }

    /// A plain-text answer.
    pub fn text(status: &'static str, body: &str, close: bool) -> Answer {
        Answer::new(status, response::text(status, body, close), close)
    }

    /// The answer to a refused upgrade (the connection closes after it).
    pub fn rejection(rejection: Rejection) -> Answer {
        Answer::new(rejection.status, rejection.response(), true)
    }

    /// The response without its body, as a `HEAD` request is answered: the
    /// same head, `Content-Length` included (RFC 9110 §9.3.2).
    pub fn head(&self) -> Bytes {
        let end = self
            .response
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map_or(self.response.len(), |at| at + 4);
        self.response.slice(..end)
    }

    /// A JSON answer.
    pub fn json(status: &'static str, body: &[u8], close: bool, extra: &[(&str, &str)]) -> Answer {
        Answer::new(
            status,
            response::response(status, "application/json", body, close, extra),
            close,
        )
    }
}

impl Endpoints<'_> {
    /// Whether `req` is one whose body an endpoint reads: a `POST` to the
    /// publish API with the right key. Any other body is not waited for: the
    /// request is answered at once and the connection closed.
    pub fn wants_body(&self, req: &Request, route: Route) -> bool {
        route == Route::ApiPublish && req.method == "POST" && self.key_matches(req)
    }

    fn key_matches(&self, req: &Request) -> bool {
        let Some(key) = self.api_key else { return false };
        let given = req.authorization.as_deref().and_then(auth::bearer).unwrap_or_default();
        auth::constant_time_eq(given.as_bytes(), key.as_bytes())
    }

    /// Answers a request for a plain-HTTP `route` with its whole `body`. A
    /// `HEAD` request gets the `GET` answer; the caller sends its head only.
    pub fn serve(&self, req: &Request, route: Route, body: &[u8]) -> Answer {
        let close = !req.keep_alive();
        if route == Route::ApiPublish && self.api_key.is_some() {
            return self.api_publish(req, body, close);
        }
        if route == Route::ApiHistory && self.api_key.is_some() {
            return self.api_history(req, close);
        }
        if route == Route::ApiPresence && self.api_key.is_some() {
            return self.api_presence(req, close);
        }
        if !matches!(req.method.as_str(), "GET" | "HEAD") && !matches!(route, Route::NotFound | Route::ApiPublish) {
            let status = "405 Method Not Allowed";
            let allow = [("Allow", "GET, HEAD")];
            let bytes = response::response(status, "text/plain", b"method not allowed\n", true, &allow);
            return Answer::new(status, bytes, true);
        }
        match route {
            Route::Healthz => match self.node.degraded() {
                Some(why) => Answer::text("200 OK", &format!("degraded: {why}\n"), close),
                None => Answer::text("200 OK", "ok\n", close),
            },
            Route::Readyz => match self.node.degraded() {
                Some(why) => Answer::text("503 Service Unavailable", &format!("{why}\n"), close),
                None => Answer::text("200 OK", "ready\n", close),
            },
            Route::Metrics => {
                let text = self.node.metrics();
                let ct = "text/plain; version=0.0.4; charset=utf-8";
                Answer::new(
                    "200 OK",
                    response::response("200 OK", ct, text.as_bytes(), close, &[]),
                    close,
                )
            }
            Route::ClientJs => asset(Asset::ClientJs, close),
            Route::Demo if self.demo => asset(Asset::Demo, close),
            _ => Answer::text("404 Not Found", "not found\n", close),
        }
    }

    /// `POST /api/publish`: check the key, parse the body, hand back one
    /// publish per item (in order).
    fn api_publish(&self, req: &Request, body: &[u8], close: bool) -> Answer {
        if req.method != "POST" {
            let err = api_error("method_not_allowed", "use POST");
            return Answer::json("405 Method Not Allowed", &err, close, &[("Allow", "POST")]);
        }
        if !self.key_matches(req) {
            return unauthorized(close);
        }
        match api::parse_publish(body, self.max_message_bytes) {
            Ok(items) => {
                let body = format!("{{\"published\":{}}}", items.len());
                let mut answer = Answer::json("200 OK", body.as_bytes(), close, &[]);
                answer.publish = items;
                answer
            }
            Err(bad) => Answer::json(
                "400 Bad Request",
                &api_error(bad.code.as_str(), bad.message),
                close,
                &[],
            ),
        }
    }
}

impl Endpoints<'_> {
    /// The checks `GET /api/history` and `GET /api/presence` share: the
    /// method, the key, and a valid `room` in the query. Returns the room
    /// and the query, or the answer refusing the request.
    fn api_room_read<'r>(&self, req: &'r Request, close: bool) -> Result<(String, &'r str), Box<Answer>> {
        if !matches!(req.method.as_str(), "GET" | "HEAD") {
            let err = api_error("method_not_allowed", "use GET");
            let allow = [("Allow", "GET, HEAD")];
            return Err(Box::new(Answer::json("405 Method Not Allowed", &err, close, &allow)));
        }
        if !self.key_matches(req) {
            return Err(Box::new(unauthorized(close)));
        }
        let query = req.query.as_deref().unwrap_or("");
        let Some(room) = auth::query_param(query, "room") else {
            let why = "the query parameter \"room\" is required";
            return Err(Box::new(bad_query(close, "bad_request", why)));
        };
        if !valid_room(&room) {
            let why = crate::protocol::publish::ROOM_RULES;
            return Err(Box::new(bad_query(close, "invalid_room", why)));
        }
        Ok((room, query))
    }

    /// `GET /api/history?room=R&limit=L[&since=N&epoch=E]`: checks the key
    /// and the query; the answer itself comes from the room's owner shard.
    fn api_history(&self, req: &Request, close: bool) -> Answer {
        let (room, query) = match self.api_room_read(req, close) {
            Ok(checked) => checked,
            Err(refused) => return *refused,
        };
        let bad = |code: &str, message: &str| bad_query(close, code, message);
        let limit = match auth::query_param(query, "limit") {
            None => DEFAULT_HISTORY_LIMIT,
            Some(v) => match v.parse::<usize>() {
                Ok(n @ 1..=MAX_HISTORY_LIMIT) => n,
                _ => return bad("bad_request", "\"limit\" must be an integer from 1 to 1000"),
            },
        };
        let since = match (auth::query_param(query, "since"), auth::query_param(query, "epoch")) {
            (None, None) => None,
            (Some(offset), Some(epoch)) => match offset.parse::<u64>() {
                Ok(offset) => Some(Since {
                    offset,
                    epoch: Epoch::parse(&epoch).unwrap_or(Epoch::UNKNOWN),
                }),
                Err(_) => return bad("bad_request", "\"since\" must be a non-negative integer"),
            },
            _ => return bad("bad_request", "give \"since\" and \"epoch\" together"),
        };
        if !self.rooms.has_history(&room) {
            return bad("no_history", "the room keeps no history");
        }
        let mut answer = Answer::new("200 OK", Bytes::new(), close);
        answer.history = Some((room, limit, since));
        answer
    }

    /// `GET /api/presence?room=R[&list=false]`: checks the key and the
    /// query; the answer itself comes from the room's owner shard.
    fn api_presence(&self, req: &Request, close: bool) -> Answer {
        let (room, query) = match self.api_room_read(req, close) {
            Ok(checked) => checked,
            Err(refused) => return *refused,
        };
        let list = match auth::query_param(query, "list").as_deref() {
            None | Some("true") => true,
            Some("false") => false,
            Some(_) => return bad_query(close, "bad_request", "\"list\" must be true or false"),
        };
        if !self.rooms.tracks_presence(&room) {
            return bad_query(close, "no_presence", "the room does not track presence");
        }
        let mut answer = Answer::new("200 OK", Bytes::new(), close);
        answer.presence = Some((room, list));
        answer
    }
}

/// The API's answer to a bad query.
fn bad_query(close: bool, code: &str, message: &str) -> Answer {
    Answer::json("400 Bad Request", &api_error(code, message), close, &[])
}

/// The API's answer to a missing or wrong key.
fn unauthorized(close: bool) -> Answer {
    let err = api_error("unauthorized", "missing or wrong API key");
    let mut answer = Answer::json("401 Unauthorized", &err, close, &[("WWW-Authenticate", "Bearer")]);
    answer.auth_failed = true;
    answer
}

/// An embedded file. Any origin may load it: it is public code, and pages
/// on other origins import the client as a module. Each of its responses
/// (keep-alive or close) is built once per process and shared by every
/// answer, so a flood of requests queues references, not copies.
fn asset(which: Asset, close: bool) -> Answer {
    static RESPONSES: [OnceLock<Bytes>; 4] = [const { OnceLock::new() }; 4];
    let (content_type, body) = match which {
        Asset::ClientJs => ("text/javascript; charset=utf-8", assets::CLIENT_JS),
        Asset::Demo => ("text/html; charset=utf-8", assets::DEMO_HTML),
    };
    let bytes = RESPONSES[which as usize * 2 + usize::from(close)].get_or_init(|| {
        let extra = [("Cache-Control", "no-cache"), ("Access-Control-Allow-Origin", "*")];
        response::response("200 OK", content_type, body.as_bytes(), close, &extra)
    });
    Answer::new("200 OK", bytes.clone(), close)
}

/// The files embedded in the binary.
#[derive(Debug, Clone, Copy)]
enum Asset {
    ClientJs = 0,
    Demo = 1,
}

/// The JSON body of an API error: `{"error":code,"message":message}`.
fn api_error(code: &str, message: &str) -> BytesMut {
    let mut out = BytesMut::new();
    out.extend_from_slice(b"{\"error\":");
    encode::json_string(&mut out, code);
    out.extend_from_slice(b",\"message\":");
    encode::json_string(&mut out, message);
    out.extend_from_slice(b"}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::request::{parse, Parsed};

    struct Node(Option<&'static str>);

    impl NodeView for Node {
        fn degraded(&self) -> Option<String> {
            self.0.map(str::to_string)
        }
        fn metrics(&self) -> String {
            "roomcast_connections 0\n".into()
        }
    }

    fn serve(endpoints: &Endpoints<'_>, raw: &[u8]) -> Answer {
        let Ok(Parsed::Complete(req, used)) = parse(raw) else {
            panic!("test request must parse");
        };
        endpoints.serve(&req, Route::of(&req), &raw[used..])
    }

    static NO_HISTORY: std::sync::LazyLock<RoomRules> =
        std::sync::LazyLock::new(|| crate::config::Config::default().rooms);

    fn text(a: &Answer) -> &str {
        std::str::from_utf8(&a.response).unwrap()
    }

    #[test]
    fn probes_say_whether_the_node_is_degraded() {
        let up = Endpoints {
            api_key: None,
            demo: false,
            max_message_bytes: 1000,
            rooms: &NO_HISTORY,
            node: &Node(None),
        };
        let a = serve(&up, b"GET /readyz HTTP/1.1\r\n\r\n");
        assert_eq!(a.status, "200 OK");
        assert!(!a.close);
        let down = Endpoints {
            node: &Node(Some("redis link down")),
            ..up
        };
        let a = serve(&down, b"GET /readyz HTTP/1.1\r\n\r\n");
        assert_eq!(a.status, "503 Service Unavailable");
        let a = serve(&down, b"GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n");
        assert_eq!(a.status, "200 OK");
        assert!(text(&a).ends_with("degraded: redis link down\n"));
        assert!(a.close);
        let a = serve(&down, b"GET /metrics HTTP/1.1\r\n\r\n");
        assert!(text(&a).ends_with("roomcast_connections 0\n"));
    }

    #[test]
    fn the_api_checks_its_key_before_it_publishes() {
        let e = Endpoints {
            api_key: Some("k"),
            demo: false,
            max_message_bytes: 1000,
            rooms: &NO_HISTORY,
            node: &Node(None),
        };
        let body = br#"{"room":"lobby","data":1}"#;
        let head = |auth: &str| {
            let mut r = format!(
                "POST /api/publish HTTP/1.1\r\n{auth}Content-Length: {}\r\n\r\n",
                body.len()
            )
            .into_bytes();
            r.extend_from_slice(body);
            r
        };
        let a = serve(&e, &head("Authorization: Bearer nope\r\n"));
        assert_eq!(a.status, "401 Unauthorized");
        assert!(a.auth_failed && a.publish.is_empty());
        let a = serve(&e, &head("Authorization: Bearer k\r\n"));
        assert_eq!(a.status, "200 OK");
        assert_eq!(a.publish.len(), 1);
        assert!(text(&a).ends_with(r#"{"published":1}"#));
        let a = serve(&e, b"GET /api/publish HTTP/1.1\r\n\r\n");
        assert_eq!(a.status, "405 Method Not Allowed");
        let off = Endpoints { api_key: None, ..e };
        let a = serve(&off, &head("Authorization: Bearer k\r\n"));
        assert_eq!(a.status, "404 Not Found", "no key configured: no API");
    }

    #[test]
    fn head_gets_the_get_head_and_the_demo_page_is_opt_in() {
        let e = Endpoints {
            api_key: None,
            demo: false,
            max_message_bytes: 1000,
            rooms: &NO_HISTORY,
            node: &Node(None),
        };
        let a = serve(&e, b"HEAD /healthz HTTP/1.1\r\n\r\n");
        assert_eq!(a.status, "200 OK", "load balancers probe with HEAD");
        let head = a.head();
        assert!(head.ends_with(b"\r\n\r\n") && head.len() < a.response.len());
        assert!(std::str::from_utf8(&head).unwrap().contains("Content-Length: 3\r\n"));
        let a = serve(&e, b"DELETE /healthz HTTP/1.1\r\n\r\n");
        assert_eq!(a.status, "405 Method Not Allowed");
        assert!(a.close);
        assert_eq!(serve(&e, b"GET / HTTP/1.1\r\n\r\n").status, "404 Not Found");
        let demo = Endpoints { demo: true, ..e };
        assert_eq!(serve(&demo, b"GET / HTTP/1.1\r\n\r\n").status, "200 OK");
        let js = serve(&e, b"GET /client.js HTTP/1.1\r\n\r\n");
        assert_eq!(js.status, "200 OK");
        let again = serve(&e, b"GET /client.js HTTP/1.1\r\n\r\n");
        assert_eq!(js.response.as_ptr(), again.response.as_ptr(), "one shared response");
    }
}
