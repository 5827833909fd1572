//! Listening sockets and accepting connections.

pub(crate) mod acceptor;
pub(crate) mod listener;

pub(crate) use acceptor::Acceptor;
