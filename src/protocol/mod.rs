//! The broker protocol on `/ws`: client ops in, server frames out
//! (`docs/protocol.md` is the user-facing contract).
//!
//! Parsing validates with simd-json on a scratch copy and splices the
//! client's `data` through byte for byte; encoding writes each server frame
//! once, WebSocket header included, so a fan-out clones a `Bytes`.

pub mod binary;
pub mod error;
pub mod frames;
pub mod ops;
pub mod span;

pub use error::{ErrorCode, OpError};
pub use ops::{Op, Parser, Request};
