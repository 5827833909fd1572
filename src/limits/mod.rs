//! Protection of the node and of its clients from each other: the inbound
//! rate limit of a connection and admission against `--max-connections`.

pub(crate) mod admission;
pub(crate) mod rate;

pub(crate) use admission::{Admission, Permit, Ticket, MAX_REFUSING, REFUSING_HANDSHAKE};
pub(crate) use rate::{Admit, RateLimiter};
