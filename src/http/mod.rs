//! HTTP/1.1 on the WebSocket port: request parsing, routing and responses.
//!
//! Only what a broker needs: the upgrade request, health and metrics probes,
//! and the backend publish API. Request heads are capped in size, bodies at
//! `--max-message-bytes`.

pub mod api;
pub mod assets;
pub mod request;
pub mod response;
pub mod route;

pub use request::{HttpError, Request};
pub use route::Route;
