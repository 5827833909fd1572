//! A scripted transport and a harness that plays the shard's part, so the
//! connection state machine is unit-tested without a socket or a thread
//! (hyper drives its `Conn` with `tokio_test::io::Builder` the same way).
//!
//! `Scripted` hands out reads in the order scripted (data, `WouldBlock`,
//! EOF) and takes writes up to a window the test sets, so a test can make a
//! peer that stops reading. `Harness` owns what a shard lends a connection
//! (`Env`, `Work`, the turn's frames, the scratch buffer, the clock) and
//! decodes what the connection wrote.

use std::cell::Cell;
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::turn::TurnLog;
use super::{Action, Clock, Conn, Ctx, Env, Shared, Transport, Verdict, Work};
use crate::config::Config;
use crate::limits::Admission;
use crate::metrics::Registry;
use crate::ws::frame::encode_client;
use crate::ws::OpCode;

/// One scripted read result.
#[derive(Debug)]
pub enum Step {
    /// The next read returns these bytes (over several reads if the buffer
    /// is smaller).
    Data(Vec<u8>),
    /// The next read returns `WouldBlock`.
    Block,
    /// The next read returns 0: the peer's FIN.
    Eof,
    /// The next read fails with this error.
    Fail(io::ErrorKind),
}

/// An in-memory stream: scripted reads, recorded writes.
#[derive(Debug, Default)]
pub struct Scripted {
    reads: VecDeque<Step>,
    /// Every byte the connection wrote.
    pub written: Vec<u8>,
    /// Bytes the peer still accepts before writes return `WouldBlock`;
    /// `None` accepts everything.
    pub window: Option<usize>,
    /// The connection sent its FIN.
    pub shut: Cell<bool>,
}

impl Scripted {
    /// Adds a read result to the script.
    pub fn push(&mut self, step: Step) {
        self.reads.push_back(step);
    }
}

impl Read for Scripted {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.reads.pop_front() {
            None | Some(Step::Block) => Err(io::ErrorKind::WouldBlock.into()),
            Some(Step::Eof) => Ok(0),
            Some(Step::Fail(kind)) => Err(kind.into()),
            Some(Step::Data(mut data)) => {
                let n = data.len().min(buf.len());
                buf[..n].copy_from_slice(&data[..n]);
                if n < data.len() {
                    self.reads.push_front(Step::Data(data.split_off(n)));
                }
                Ok(n)
            }
        }
    }
}

impl Write for Scripted {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.window.map_or(buf.len(), |w| w.min(buf.len()));
        if n == 0 && !buf.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        if let Some(w) = &mut self.window {
            *w -= n;
        }
        self.written.extend_from_slice(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Transport for Scripted {
    fn shutdown_write(&mut self) -> io::Result<()> {
        self.shut.set(true);
        Ok(())
    }
}

/// The shard's part, for one connection.
pub struct Harness {
    pub env: Env,
    pub work: Work,
    pub turn: TurnLog,
    pub scratch: Vec<u8>,
    pub now: Instant,
    pub conn: Conn<Scripted>,
    /// Where decoding of `written` has got to.
    read_at: usize,
}

/// An upgrade request for `path` (`/ws` or `/echo`).
pub fn upgrade_request(path: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .into_bytes()
}

/// A masked client frame.
pub fn client_frame(opcode: OpCode, payload: &[u8]) -> Vec<u8> {
    encode_client(true, opcode.as_u8(), payload, Some([1, 2, 3, 4]))
}

impl Harness {
    /// A fresh connection under `config` on a one-shard node in dev mode.
    pub fn new(config: Config) -> Harness {
        let admission = Arc::new(Admission::new(10, None));
        let shared = Shared {
            config: Arc::new(Config { shards: 1, ..config }),
            registry: Registry::new(1, false),
            auth: None,
            node_id: Arc::from("test"),
            link: None,
            admission: admission.clone(),
            tls: None,
        };
        let env = Env::new(0, shared);
        let peer: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
        let permit = admission.admit(peer.ip(), false).expect("under the cap");
        let now = Instant::now();
        let conn = Conn::new(Scripted::default(), peer, 1, permit, env.config(), now);
        Harness {
            env,
            work: Work::default(),
            turn: TurnLog::default(),
            scratch: vec![0; 64 * 1024],
            now,
            conn,
            read_at: 0,
        }
    }

    /// Runs `f` on the connection with a context, as the shard's `dispatch` does.
    pub fn with<R>(&mut self, f: impl FnOnce(&mut Conn<Scripted>, &mut Ctx<'_>, &mut [u8]) -> R) -> R {
        let clock = Clock {
            now: self.now,
            unix: 1_000_000,
        };
        let mut ctx = Ctx::new(&self.env, &mut self.work, &self.turn, clock);
        f(&mut self.conn, &mut ctx, &mut self.scratch)
    }

    /// Scripts `bytes` as the next read and signals readiness.
    pub fn feed(&mut self, bytes: &[u8]) -> Verdict {
        self.conn.stream.push(Step::Data(bytes.to_vec()));
        self.ready()
    }

    /// A readiness event (readable and writable).
    pub fn ready(&mut self) -> Verdict {
        self.with(|c, ctx, scratch| c.on_ready(ctx, scratch, true, true))
    }

    /// The sweep's tick, `after` from now.
    pub fn tick(&mut self, after: Duration) -> Verdict {
        self.now += after;
        self.with(|c, ctx, _| c.tick(ctx))
    }

    /// Takes the actions the connection asked for.
    pub fn actions(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.work.actions)
    }

    /// The shard's answer to `Action::Register`: the welcome.
    pub fn welcome(&mut self) -> Verdict {
        self.with(|c, ctx, _| c.welcome(ctx))
    }

    /// Upgrades on `path` and, for `/ws`, delivers the welcome; returns the
    /// HTTP response head.
    pub fn upgrade(&mut self, path: &str) -> String {
        self.feed(&upgrade_request(path));
        if path == "/ws" {
            assert!(matches!(self.actions()[..], [Action::Register]));
            self.welcome();
            self.with(|c, ctx, _| c.flush(ctx));
        }
        self.http_head()
    }

    /// The next HTTP response head written (up to the blank line).
    pub fn http_head(&mut self) -> String {
        let rest = &self.conn.stream.written[self.read_at..];
        let end = rest
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("a whole HTTP head")
            + 4;
        self.read_at += end;
        String::from_utf8(rest[..end].to_vec()).unwrap()
    }

    /// Consumes `body` from what was written (after its head).
    pub fn read_body(&mut self, body: &str) {
        let w = &self.conn.stream.written[self.read_at..];
        assert!(w.starts_with(body.as_bytes()), "{:?}", String::from_utf8_lossy(w));
        self.read_at += body.len();
    }

    /// Server frames written since the last call: (opcode, payload).
    pub fn frames(&mut self) -> Vec<(u8, Vec<u8>)> {
        let mut out = Vec::new();
        let w = &self.conn.stream.written;
        while self.read_at + 2 <= w.len() {
            let b = &w[self.read_at..];
            let (len, head) = match b[1] & 0x7f {
                126 => (u16::from_be_bytes([b[2], b[3]]) as usize, 4),
                127 => (u64::from_be_bytes(b[2..10].try_into().unwrap()) as usize, 10),
                n => (n as usize, 2),
            };
            if b.len() < head + len {
                break;
            }
            out.push((b[0] & 0x0f, b[head..head + len].to_vec()));
            self.read_at += head + len;
        }
        out
    }
}
