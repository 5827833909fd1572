//! The broker protocol: client ops in (and the publish API's bodies), server frames out
//! (`docs/protocol.md` is the user-facing contract).
//!
//! Parsing validates with simd-json on a scratch copy and splices the
//! client's `data` through byte for byte; encoding writes each server frame
//! once, WebSocket header included, so a fan-out clones a `Bytes`.

pub mod api;
pub mod binary;
pub mod encode;
pub(crate) mod error;
pub mod ops;
pub(crate) mod publish;
pub(crate) mod span;

pub(crate) use error::{ErrorCode, OpError};
pub use ops::{Op, Parser, Request};
