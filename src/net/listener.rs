//! Binding the listening socket with an accept backlog fit for connection
//! storms.
//!
//! mio and std listen with a backlog of 128. When more connections arrive
//! at once than that (every client reconnecting after a deploy), Linux drops
//! the excess SYNs and clients retry only after a second. `LISTEN_BACKLOG`
//! asks for 4096; the kernel caps it at `net.core.somaxconn`.

use std::io;
use std::net::SocketAddr;

use mio::net::TcpListener;
use socket2::{Domain, Protocol, Socket, Type};

/// The accept backlog requested from the kernel.
pub const LISTEN_BACKLOG: i32 = 4096;

/// Binds `addr` (with `SO_REUSEADDR`, so a restart does not wait for
/// TIME_WAIT) as a non-blocking listener.
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(TcpListener::from_std(socket.into()))
}
