//! HTTP/1.1 on the WebSocket port: request parsing, routing, the upgrade
//! handshake, the plain endpoints and their responses.
//!
//! Only what a broker needs: the upgrade request, health and metrics probes,
//! and the backend publish API. Request heads are capped in size, bodies at
//! `--max-message-bytes`. Nothing here touches a socket.

pub(crate) mod assets;
pub(crate) mod endpoints;
pub mod request;
pub(crate) mod response;
pub(crate) mod route;
pub mod upgrade;

pub(crate) use endpoints::{Answer, Endpoints, NodeView};
pub(crate) use request::Request;
pub(crate) use route::Route;
