//! A running roomcast node: the listener, the acceptor thread and the shard
//! threads, started together and stopped together — at once, or gracefully
//! in two phases (see [`Node::shutdown_gracefully`]).

mod stats;

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use mio::Waker;

use crate::auth::Authenticator;
use crate::bus::{ShardHandle, ShardMsg};
use crate::config::Config;
use crate::limits::Admission;
use crate::link::Link;
use crate::metrics::{LinkState, Registry};
use crate::net::Acceptor;
use crate::shard::{Shard, Shared};

/// Why a node thread ended.
#[derive(Debug)]
pub struct ThreadExit {
    /// The thread's name, e.g. `roomcast-shard-0`.
    pub name: String,
    /// How it ended: `Ok` for a requested stop, else the error or panic.
    pub outcome: Result<(), String>,
}

/// Reports a thread's end on drop, so a panic is reported too.
struct ExitGuard {
    name: String,
    outcome: Option<Result<(), String>>,
    tx: Sender<ThreadExit>,
}

impl Drop for ExitGuard {
    fn drop(&mut self) {
        let outcome = self.outcome.take().unwrap_or_else(|| Err("panicked".to_string()));
        let _ = self.tx.send(ThreadExit {
            name: std::mem::take(&mut self.name),
            outcome,
        });
    }
}

fn spawn(
    name: String,
    tx: Sender<ThreadExit>,
    f: impl FnOnce() -> io::Result<()> + Send + 'static,
) -> io::Result<JoinHandle<()>> {
    std::thread::Builder::new().name(name.clone()).spawn(move || {
        let mut guard = ExitGuard {
            name,
            outcome: None,
            tx,
        };
        guard.outcome = Some(f().map_err(|e| e.to_string()));
    })
}

/// A started node.
pub struct Node {
    local_addr: SocketAddr,
    registry: Registry,
    shards: Vec<ShardHandle>,
    stop: Arc<AtomicBool>,
    acceptor_waker: Arc<Waker>,
    threads: Vec<JoinHandle<()>>,
    exits: Receiver<ThreadExit>,
    node_id: Arc<str>,
    tls: Option<Arc<crate::tls::Acceptor>>,
}

impl Node {
    /// Binds the listener and starts the shards and the acceptor.
    pub fn start(config: Config) -> io::Result<Node> {
        let config = Arc::new(config);
        let auth = match &config.auth {
            Some(a) => {
                let auth =
                    Authenticator::new(a).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
                Some(Arc::new(auth))
            }
            None => None,
        };
        let listener = crate::net::listener::bind(config.listen)?;
        let local_addr = listener.local_addr()?;
        let registry = Registry::new(config.shards, config.tls.is_some());
        let admission = Arc::new(Admission::new(config.max_connections, config.max_connections_per_ip));
        let node_id: Arc<str> = Arc::from(new_node_id());
        let tls = match &config.tls {
            Some(files) => Some(Arc::new(
                crate::tls::Acceptor::new(files).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?,
            )),
            None => None,
        };
        let link_state = config.redis.as_ref().map(|_| Arc::new(LinkState::new()));
        let shared = Shared {
            config: config.clone(),
            registry: registry.clone(),
            auth,
            node_id: node_id.clone(),
            link: link_state.clone(),
            admission: admission.clone(),
            tls: tls.clone(),
        };
        let (exit_tx, exits) = crossbeam_channel::unbounded();
        let mut built = Vec::new();
        let mut shards = Vec::new();
        for id in 0..config.shards {
            let (shard, handle) = Shard::new(id, shared.clone())?;
            built.push(shard);
            shards.push(handle);
        }
        let mut threads = Vec::new();
        let link = match (&config.redis, link_state) {
            (Some(cfg), Some(state)) => {
                let link = Link::new(cfg, node_id.clone(), shards.clone(), state)?;
                let (subscriber, publisher) = (link.subscriber, link.publisher);
                threads.push(spawn("roomcast-redis-sub".into(), exit_tx.clone(), move || {
                    subscriber.run()
                })?);
                threads.push(spawn("roomcast-redis-pub".into(), exit_tx.clone(), move || {
                    publisher.run()
                })?);
                Some(link.handle)
            }
            _ => None,
        };
        for (id, mut shard) in built.into_iter().enumerate() {
            shard.connect(shards.clone(), link.clone());
            threads.push(spawn(format!("roomcast-shard-{id}"), exit_tx.clone(), move || {
                shard.run()
            })?);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let (acceptor, acceptor_waker) = Acceptor::new(
            listener,
            shards.clone(),
            admission,
            config.trusted_proxies.clone(),
            stop.clone(),
            registry.acceptor.clone(),
        )?;
        threads.push(spawn("roomcast-acceptor".into(), exit_tx, move || acceptor.run())?);
        drop(link);
        Ok(Node {
            tls,
            node_id,
            local_addr,
            registry,
            shards,
            stop,
            acceptor_waker,
            threads,
            exits,
        })
    }

    /// The address the listener is bound to (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// This node's id (random per process; part of anonymous user names).
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// Reads the TLS certificate and key again (`SIGHUP`): new handshakes
    /// get the new pair; on an error the old one stays. Connections keep
    /// theirs either way.
    pub fn reload_tls(&self) {
        let (Some(tls), Some(metrics)) = (&self.tls, &self.registry.tls) else {
            tracing::info!("SIGHUP: nothing to reload (no --tls-cert)");
            return;
        };
        match tls.reload() {
            Ok(()) => {
                metrics.reloads.add(1);
                tracing::info!(cert = %tls.files().cert.display(), "TLS certificate reloaded");
            }
            Err(e) => {
                metrics.reload_failures.add(1);
                tracing::error!(error = %e, "TLS certificate not reloaded; the previous one stays in use");
            }
        }
    }

    /// Runs until a node thread fails (an error) or `stop` delivers a signal
    /// (returned), logging the stats line every `stats_every` (if any) and
    /// reloading the certificate at each message on `reload`.
    pub fn supervise(
        &self,
        stop: &Receiver<i32>,
        reload: &Receiver<()>,
        stats_every: Option<Duration>,
    ) -> Result<i32, ThreadExit> {
        let mut last = stats::Sample::take(&self.registry);
        loop {
            let tick = stats_every.map_or(crossbeam_channel::never(), crossbeam_channel::after);
            crossbeam_channel::select! {
                recv(self.exits) -> exit => {
                    return Err(exit.unwrap_or(ThreadExit { name: "node".into(), outcome: Err("all threads gone".into()) }));
                }
                recv(stop) -> signal => return Ok(signal.unwrap_or(0)),
                recv(reload) -> _ => self.reload_tls(),
                recv(tick) -> _ => {
                    let now = stats::Sample::take(&self.registry);
                    stats::log(&self.registry, &last, &now);
                    last = now;
                }
            }
        }
    }

    /// Graceful shutdown. Phase 1: stop accepting, and every shard stops
    /// reading client input, so nothing new is accepted while frames already
    /// in flight between shards land (each shard's inbox is FIFO, and a
    /// shard confirms only after its last batch was sent). Phase 2: every
    /// client is sent 1001 "going away" behind what is already queued to it;
    /// shards exit when their connections have closed or at `timeout`.
    /// Returns whether every connection closed in time.
    pub fn shutdown_gracefully(self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        self.stop.store(true, Ordering::Release);
        let _ = self.acceptor_waker.wake();
        let (done_tx, done_rx) = crossbeam_channel::unbounded();
        for shard in &self.shards {
            let _ = shard.send(ShardMsg::Quiesce(done_tx.clone()));
            shard.wake();
        }
        for _ in &self.shards {
            if done_rx.recv_deadline(deadline).is_err() {
                break;
            }
        }
        for shard in &self.shards {
            let _ = shard.send(ShardMsg::GoAway { deadline });
            shard.wake();
        }
        let mut clean = true;
        for t in self.threads {
            // Shards exit by the deadline; a stuck one is not waited for.
            while !t.is_finished() {
                if Instant::now() >= deadline + Duration::from_secs(1) {
                    clean = false;
                    break;
                }
                let _ = self.exits.recv_timeout(Duration::from_millis(50));
            }
        }
        clean && self.registry.connections() == 0
    }
}

/// A random id for this process: 8 hex digits, from the standard library's
/// per-process random hash keys (no extra dependency for 32 random bits).
fn new_node_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    h.write_u128(nanos);
    h.write_u32(std::process::id());
    format!("{:08x}", h.finish() as u32)
}
