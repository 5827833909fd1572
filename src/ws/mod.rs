//! RFC 6455 WebSocket frames: the codec and close codes (the opening
//! handshake is HTTP: `http::upgrade`).
//!
//! Nothing here touches a socket: the decoder takes bytes and yields events,
//! the encoder returns `Bytes`, so all of it can be unit-tested and fuzzed.

pub(crate) mod close;
pub mod decoder;
pub mod deflate;
pub mod frame;
pub(crate) mod utf8;

pub(crate) use close::CloseCode;
pub use decoder::{Decoder, Event};
pub use frame::OpCode;
