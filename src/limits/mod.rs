//! Per-connection protection: the inbound rate limit.

pub mod rate;

pub use rate::{Admit, RateLimiter};
