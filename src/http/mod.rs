//! HTTP/1.1 on the WebSocket port: request parsing, routing and responses.
//!
//! Only what a broker needs: the upgrade request, health and metrics probes.
//! Request heads are capped in size; bodies are not accepted yet.

pub mod request;
pub mod response;
pub mod route;

pub use request::{HttpError, Request};
pub use route::Route;
