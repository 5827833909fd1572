//! Listening sockets and accepting connections.

pub mod acceptor;
pub mod admission;
pub mod listener;

pub use acceptor::Acceptor;
pub use admission::{Admission, Ticket};
