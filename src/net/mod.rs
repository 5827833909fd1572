//! Listening sockets and accepting connections.

pub mod acceptor;
pub mod listener;

pub use acceptor::Acceptor;
