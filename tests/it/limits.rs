//! Connection cap and the spread of connections over shards.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Instant;

use crate::util::*;

#[test]
fn connections_over_the_cap_are_closed_with_1013() {
    let server = Server::start(&["--max-connections", "2"]);
    let mut a = connect(&server, "/ws");
    let _b = connect(&server, "/ws");
    let mut extra = raw_upgrade(&server, "/ws");
    assert_eq!(expect_close(&mut extra), 1013);
    eventually("the refusal to be counted", || {
        metric(&server, "roomcast_dropped_total{reason=\"connection_limit\"}") == 1.0
    });
    assert_eq!(metric(&server, "roomcast_closes_total{code=\"1013\"}"), 1.0);

    // Freeing a slot lets a new client in.
    a.close(None).unwrap();
    while a.read().is_ok() {}
    eventually("a freed slot to be reused", || {
        // Admitted clients are welcomed with a text frame; refused ones get 1013.
        let mut s = raw_upgrade(&server, "/ws");
        read_frame(&mut s).is_some_and(|f| f.opcode == 0x1)
    });
}

#[test]
fn silent_connections_over_the_cap_cannot_take_every_spare_descriptor() {
    let server = Server::start(&["--max-connections", "1", "--handshake-timeout-secs", "30"]);
    let _admitted = connect(&server, "/ws");
    // 32 silent sockets over the cap are held, to be refused with 1013 once
    // they send an upgrade (or answered, if they send a probe)...
    let mut held: Vec<TcpStream> = (0..32).map(|_| TcpStream::connect(server.addr).unwrap()).collect();
    // ...and the next one is closed as soon as it is accepted (the listen
    // queue is first in, first out, so the 32 are accepted before it).
    let mut extra = TcpStream::connect(server.addr).unwrap();
    extra.set_read_timeout(Some(TIMEOUT)).unwrap();
    expect_eof(&mut extra);
    // A held socket has 2 s to speak, not the 30 s handshake timeout.
    let start = Instant::now();
    held[0].set_read_timeout(Some(TIMEOUT)).unwrap();
    expect_eof(&mut held[0]);
    assert!(start.elapsed() < TIMEOUT);
    drop(held);
    eventually("probes to be answered again", || probe(&server) == Some(200));
    assert!(metric(&server, "roomcast_dropped_total{reason=\"connection_limit\"}") >= 1.0);
}

/// `GET /healthz`: the status, or `None` if the connection was closed.
fn probe(server: &Server) -> Option<u16> {
    let mut s = TcpStream::connect(server.addr).ok()?;
    s.set_read_timeout(Some(TIMEOUT)).ok()?;
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut response = String::new();
    s.read_to_string(&mut response).ok()?;
    response.get(9..12)?.parse().ok()
}

#[test]
fn connections_spread_evenly_over_shards() {
    let server = Server::start(&["--shards", "4"]);
    let clients: Vec<_> = (0..40).map(|_| connect(&server, "/echo")).collect();
    eventually("all 40 to be registered", || {
        metric(&server, "roomcast_connections") == 40.0
    });
    for shard in 0..4 {
        let n = metric(&server, &format!("roomcast_shard_connections{{shard=\"{shard}\"}}"));
        assert_eq!(n, 10.0, "shard {shard}");
    }
    drop(clients);
    eventually("all to be gone", || metric(&server, "roomcast_connections") == 0.0);
}
