//! RFC 6455 WebSocket: the upgrade handshake, the frame codec and close codes.
//!
//! Nothing here touches a socket: the decoder takes bytes and yields events,
//! the encoder returns `Bytes`, so all of it can be unit-tested and fuzzed.

pub mod close;
pub mod decoder;
pub mod frame;
pub mod handshake;
pub mod utf8;

pub use close::CloseCode;
pub use decoder::{Decoder, Event, ProtocolError};
pub use frame::OpCode;
