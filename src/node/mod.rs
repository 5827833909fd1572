//! A running roomcast node: the listener, the acceptor thread and the shard
//! threads, started together and stopped together.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};
use mio::net::TcpListener;
use mio::Waker;

use crate::config::Config;
use crate::metrics::Registry;
use crate::net::Acceptor;
use crate::shard::{Shard, ShardHandle, ShardMsg};

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
}

impl Node {
    /// Binds the listener and starts the shards and the acceptor.
    pub fn start(config: Config) -> io::Result<Node> {
        let config = Arc::new(config);
        let listener = TcpListener::bind(config.listen)?;
        let local_addr = listener.local_addr()?;
        let registry = Registry::new(config.shards);
        let open = Arc::new(AtomicUsize::new(0));
        let (exit_tx, exits) = crossbeam_channel::unbounded();
        let mut threads = Vec::new();
        let mut shards = Vec::new();
        for id in 0..config.shards {
            let (shard, handle) = Shard::new(id, config.clone(), registry.clone(), open.clone())?;
            threads.push(spawn(format!("roomcast-shard-{id}"), exit_tx.clone(), move || {
                shard.run()
            })?);
            shards.push(handle);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let (acceptor, acceptor_waker) = Acceptor::new(
            listener,
            shards.clone(),
            open,
            config.max_connections,
            stop.clone(),
            registry.acceptor.clone(),
        )?;
        threads.push(spawn("roomcast-acceptor".into(), exit_tx, move || acceptor.run())?);
        Ok(Node {
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

    /// The node's metrics.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Blocks until one of the node's threads ends; a healthy node runs until
    /// [`Node::shutdown`], so this returning means something failed.
    pub fn wait(&self) -> ThreadExit {
        self.exits.recv().unwrap_or(ThreadExit {
            name: "node".into(),
            outcome: Err("all threads gone".into()),
        })
    }

    /// Stops accepting, stops every shard (dropping their connections) and
    /// joins all threads.
    pub fn shutdown(self) {
        self.stop.store(true, Ordering::Release);
        let _ = self.acceptor_waker.wake();
        for shard in &self.shards {
            let _ = shard.send(ShardMsg::Shutdown);
            shard.wake();
        }
        for t in self.threads {
            let _ = t.join();
        }
    }
}
