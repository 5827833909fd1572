//! Listening sockets and accepting connections.

pub mod acceptor;

pub use acceptor::Acceptor;
