//! Which endpoint a request is for.

use super::request::Request;

/// The endpoints served on the WebSocket port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `GET /ws` (or an upgrade request for `/`): the broker protocol
    /// over WebSocket.
    Ws,
    /// `GET /echo`: a WebSocket that echoes every message (conformance checks).
    Echo,
    /// `GET /healthz`: liveness probe (200 while serving; the body says
    /// `degraded: ...` when the Redis link is down or stalled).
    Healthz,
    /// `GET /readyz`: readiness probe (503 while the Redis link is down or stalled).
    Readyz,
    /// `GET /metrics`: Prometheus exposition.
    Metrics,
    /// `POST /api/publish`: backend publish.
    ApiPublish,
    /// `GET /api/history?room=R&limit=L[&since=N&epoch=E]`: a room's recent messages.
    ApiHistory,
    /// `GET /api/presence?room=R[&list=false]`: who is in a room.
    ApiPresence,
    /// `GET /client.js`: the JavaScript client, embedded in the binary.
    ClientJs,
    /// `GET /`: the demo page, when `--demo` is on.
    Demo,
    /// Anything else: 404.
    NotFound,
}

impl Route {
    /// Picks the endpoint for a request path (query already stripped).
    pub fn of(req: &Request) -> Route {
        match req.path.as_str() {
            "/ws" => Route::Ws,
            "/echo" => Route::Echo,
            "/healthz" => Route::Healthz,
            "/readyz" => Route::Readyz,
            "/metrics" => Route::Metrics,
            "/api/publish" => Route::ApiPublish,
            "/api/history" => Route::ApiHistory,
            "/api/presence" => Route::ApiPresence,
            "/client.js" => Route::ClientJs,
            // `new WebSocket('ws://host:8080')` and the tutorials' clients
            // (wscat, artillery quick) ask for `/`: an upgrade there is the
            // broker, a plain GET the demo page.
            "/" if req.upgrade_websocket => Route::Ws,
            "/" | "/index.html" => Route::Demo,
            _ => Route::NotFound,
        }
    }

    /// Whether the endpoint speaks WebSocket after an upgrade.
    pub fn is_websocket(self) -> bool {
        matches!(self, Route::Ws | Route::Echo)
    }
}
