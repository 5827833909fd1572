//! Protection of the node and of its clients from each other: the inbound
//! rate limit of a connection, admission against `--max-connections`, and
//! who the client behind a trusted proxy is.

pub(crate) mod admission;
pub(crate) mod proxies;
pub(crate) mod rate;

pub(crate) use admission::{Admission, Permit, Ticket, MAX_REFUSING, REFUSING_HANDSHAKE};
pub(crate) use proxies::TrustedProxies;
pub(crate) use rate::{Admit, RateLimiter};
