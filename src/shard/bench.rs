//! The shard's fan-out, alone, for `benches/publish.rs`: the real loop
//! (`actions::fan_out`) over real connections, and the real end of a turn
//! (each recipient's `flush_dirty`, then the turn's log cleared), with a
//! transport that swallows every byte, so no syscall is measured.

use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use slab::Slab;

use crate::bus::Encoded;
use crate::config::Config;
use crate::conn::{Clock, Conn, Ctx, Env, Shared, Transport, Work};
use crate::limits::Admission;
use crate::metrics::Registry;

use super::actions::fan_out;
use super::Pending;

/// A transport that reads `input` once, then would block, and takes every write.
#[derive(Debug, Default)]
pub struct Sink {
    input: Vec<u8>,
}

impl Read for Sink {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.input.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = self.input.len().min(buf.len());
        buf[..n].copy_from_slice(&self.input[..n]);
        self.input.drain(..n);
        Ok(n)
    }
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(buf.len())
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        Ok(bufs.iter().map(|b| b.len()).sum())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Transport for Sink {
    fn shutdown_write(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// One shard's worth of WebSocket connections in one room.
pub struct FanoutBench {
    env: Env,
    work: Work,
    pending: Pending,
    conns: Slab<Conn<Sink>>,
    members: Vec<u32>,
    scratch: Vec<u8>,
}

impl FanoutBench {
    /// `recipients` connections, each upgraded through the real HTTP path.
    pub fn new(recipients: usize) -> FanoutBench {
        let config = Config {
            shards: 1,
            ..Config::default()
        };
        let admission = Arc::new(Admission::new(recipients, None));
        let env = Env::new(
            0,
            Shared {
                config: Arc::new(config),
                registry: Registry::new(1, false),
                auth: None,
                node_id: Arc::from("bench"),
                link: None,
                admission: admission.clone(),
                tls: None,
            },
        );
        let mut bench = FanoutBench {
            env,
            work: Work::default(),
            pending: Pending::default(),
            conns: Slab::with_capacity(recipients),
            members: Vec::with_capacity(recipients),
            scratch: vec![0; 64 * 1024],
        };
        let clock = bench.clock();
        let request = b"GET /echo HTTP/1.1\r\nHost: b\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
            Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
        for id in 0..recipients {
            let stream = Sink {
                input: request.to_vec(),
            };
            let peer: std::net::SocketAddr = "127.0.0.1:9".parse().expect("an address");
            let permit = admission.admit(peer.ip(), false).expect("sized for every recipient");
            let mut conn = Conn::new(stream, peer, id as u64, permit, bench.env.config(), clock.now);
            let mut ctx = Ctx::new(&bench.env, &mut bench.work, &bench.pending.frames, clock);
            conn.on_ready(&mut ctx, &mut bench.scratch, true, true);
            assert!(conn.accepts_frames(), "the upgrade went through");
            bench.members.push(bench.conns.insert(conn) as u32);
        }
        bench
    }

    fn clock(&self) -> Clock {
        Clock {
            now: Instant::now(),
            unix: 0,
        }
    }

    /// One publish of `frame` to every recipient and the end of its turn.
    pub fn publish(&mut self, frame: &Bytes) {
        let cap = self.env.config().max_queue_bytes;
        let mut frame = Encoded::new(frame.clone());
        fan_out(&mut self.conns, &mut self.pending, &self.members, &mut frame, cap);
        let clock = self.clock();
        for (slot, _) in self.pending.dirty.drain(..) {
            let mut ctx = Ctx::new(&self.env, &mut self.work, &self.pending.frames, clock);
            self.conns[slot].flush_dirty(&mut ctx);
        }
        assert!(self.pending.kill.is_empty(), "a sink never falls behind");
        self.pending.frames.clear();
    }
}
