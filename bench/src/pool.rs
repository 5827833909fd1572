//! The single event loop every scenario runs on: one mio `Poll`, a `Slab` of
//! clients, one shared read buffer.
//!
//! A turn is: write what scenarios queued since the last turn, wait for
//! readiness, let each ready client read (to `WouldBlock`) and write, then
//! report and drop the connections that ended. Ended clients are removed only
//! at the end of a turn, so an event later in the same batch can never reach a
//! new connection that reused the slot.

use std::io;
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use crate::client::{Client, End, Event, Io, Writer};
use crate::target::Target;

/// Bytes read per `read` call; large so a busy subscriber is drained in few calls.
const READ_BUF: usize = 256 * 1024;
/// Upgrades a scenario keeps in flight while opening many connections. Below
/// the accept backlog of 128 that std and mio listeners use: past it Linux drops
/// SYNs and the client retries only after 1 s, which would add seconds to setup.
pub const MAX_CONNECTING: usize = 100;
/// Readiness events taken per `poll`.
const EVENTS: usize = 4096;

/// The connections of one run and the loop that drives them.
pub struct Pool {
    poll: Poll,
    events: Events,
    clients: Slab<Client>,
    /// Shared read buffer, mask source and clock.
    pub io: Io,
    target: Target,
    dirty: Vec<usize>,
    ended: Vec<(usize, End)>,
}

impl Pool {
    /// An empty pool for `target`; all timestamps count from `epoch`.
    pub fn new(target: Target, epoch: Instant) -> io::Result<Pool> {
        Ok(Pool {
            poll: Poll::new()?,
            events: Events::with_capacity(EVENTS),
            clients: Slab::new(),
            io: Io::new(READ_BUF, epoch),
            target,
            dirty: Vec::new(),
            ended: Vec::new(),
        })
    }

    /// Starts a connection carrying `tag`; returns its key.
    pub fn connect(&mut self, tag: usize) -> io::Result<usize> {
        let target = self.target.clone();
        self.connect_to(tag, &target)
    }

    /// Starts a connection carrying `tag` to another server than the pool's.
    pub fn connect_to(&mut self, tag: usize, target: &Target) -> io::Result<usize> {
        let entry = self.clients.vacant_entry();
        let key = entry.key();
        let mut client = Client::connect(target, tag)?;
        self.poll
            .registry()
            .register(client.stream_mut(), Token(key), Interest::READABLE | Interest::WRITABLE)?;
        entry.insert(client);
        Ok(key)
    }

    /// Live connections (connecting, upgrading or open).
    pub fn len(&self) -> usize {
        self.clients.len()
    }

    /// Whether connection `key` exists and has completed its upgrade.
    pub fn is_open(&self, key: usize) -> bool {
        self.clients.get(key).is_some_and(Client::is_open)
    }

    /// Queues a text frame on `key` (written at the start of the next turn);
    /// false if that connection is gone.
    pub fn send(&mut self, key: usize, payload: &[u8]) -> bool {
        let Some(c) = self.clients.get_mut(key) else {
            return false;
        };
        c.writer(&mut self.io).text(payload);
        if !c.dirty {
            c.dirty = true;
            self.dirty.push(key);
        }
        true
    }

    /// Starts the close handshake on `key` (written at the start of the next turn).
    pub fn close(&mut self, key: usize) {
        if let Some(c) = self.clients.get_mut(key) {
            c.writer(&mut self.io).close();
            if !c.dirty {
                c.dirty = true;
                self.dirty.push(key);
            }
        }
    }

    /// Starts the close handshake on every open connection and drops the others.
    pub fn close_all(&mut self) {
        let keys: Vec<usize> = self.clients.iter().map(|(key, _)| key).collect();
        for key in keys {
            if self.is_open(key) {
                self.close(key);
            } else {
                self.clients.remove(key);
            }
        }
    }

    /// Drops connection `key` at once, without a close handshake.
    pub fn drop_client(&mut self, key: usize) {
        self.clients.try_remove(key);
    }

    /// Starts the close handshake on every connection and keeps turning
    /// until all are gone or `within` passes (a run's polite goodbye).
    pub fn close_within<F>(&mut self, within: Duration, mut f: F) -> io::Result<()>
    where
        F: FnMut(usize, usize, Event<'_>, &mut Writer<'_>),
    {
        self.close_all();
        let end = Instant::now() + within;
        while self.len() > 0 && Instant::now() < end {
            self.turn(Some(Duration::from_millis(5)), &mut f)?;
        }
        Ok(())
    }

    /// One loop turn: flush, wait up to `timeout`, dispatch. `f` gets each
    /// connection's key, tag, event and a writer for replies on that connection.
    pub fn turn<F>(&mut self, timeout: Option<Duration>, mut f: F) -> io::Result<()>
    where
        F: FnMut(usize, usize, Event<'_>, &mut Writer<'_>),
    {
        while let Some(key) = self.dirty.pop() {
            if let Some(c) = self.clients.get_mut(key) {
                c.dirty = false;
                if let Some(end) = c.flush() {
                    self.ended.push((key, end));
                }
            }
        }
        match self.poll.poll(&mut self.events, timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        for ev in self.events.iter() {
            let key = ev.token().0;
            let Some(c) = self.clients.get_mut(key) else {
                continue;
            };
            let tag = c.tag;
            if let Some(end) = c.ready(ev, &mut self.io, &mut |e, w| f(key, tag, e, w)) {
                self.ended.push((key, end));
            }
        }
        while let Some((key, end)) = self.ended.pop() {
            if let Some(mut c) = self.clients.try_remove(key) {
                let tag = c.tag;
                f(key, tag, Event::Ended(end), &mut c.writer(&mut self.io));
            }
        }
        Ok(())
    }
}
