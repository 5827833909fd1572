//! The publisher thread: every local publish goes to Redis once, many per
//! round trip (a pipeline per wake-up), in publish order.
//!
//! While Redis is unreachable, messages wait in a bounded buffer (overflow
//! is dropped and counted) and are published, in order, once the
//! subscriber has restored its subscriptions — so this node hears replies
//! to what it sends. Delivery of buffered messages to other nodes that have
//! not re-subscribed yet is best effort. A pipeline that fails midway is
//! sent again whole after reconnecting: at least once, never silently lost.

use std::collections::VecDeque;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::{Receiver, RecvTimeoutError};

use crate::rooms::Topic;

use super::backoff::Backoff;
use super::{channel, envelope, probe_channel};
use crate::config::RedisConfig;
use crate::metrics::link::{unix_nanos, PROBE_INTERVAL};
use crate::metrics::LinkState;

/// Most messages in one pipeline.
const PIPELINE: usize = 1024;
/// Wait after this node has re-subscribed before flushing the outage
/// buffer, so that other nodes have re-subscribed too (best effort).
const FLUSH_GRACE: Duration = Duration::from_secs(1);
/// How long a connect, read or write to Redis may take.
const IO_TIMEOUT: Duration = Duration::from_secs(2);

/// One message for Redis: channel and envelope.
type Outgoing = (Vec<u8>, Vec<u8>);

/// The publisher's state.
pub(crate) struct Publisher {
    client: Option<redis::Client>,
    prefix: String,
    node_id: Arc<str>,
    rx: Receiver<Vec<(Topic, Bytes)>>,
    state: Arc<LinkState>,
    buffer: VecDeque<Outgoing>,
    capacity: usize,
    /// Since when the subscriber is up again with messages still buffered.
    ready_since: Option<Instant>,
}

impl Publisher {
    /// A publisher for the Redis at `info`.
    pub fn new(
        info: redis::ConnectionInfo,
        cfg: &RedisConfig,
        node_id: Arc<str>,
        rx: Receiver<Vec<(Topic, Bytes)>>,
        state: Arc<LinkState>,
    ) -> Publisher {
        Publisher {
            client: redis::Client::open(info).ok(),
            prefix: cfg.prefix.clone(),
            node_id,
            rx,
            state,
            buffer: VecDeque::new(),
            capacity: cfg.buffer_messages,
            ready_since: None,
        }
    }

    fn connect(&self) -> redis::RedisResult<redis::Connection> {
        let client = self
            .client
            .as_ref()
            .ok_or_else(|| redis::RedisError::from((redis::ErrorKind::Client, "bad URL")))?;
        let conn = client.get_connection_with_timeout(IO_TIMEOUT)?;
        conn.set_read_timeout(Some(IO_TIMEOUT))?;
        conn.set_write_timeout(Some(IO_TIMEOUT))?;
        Ok(conn)
    }

    /// Runs until every shard is gone (the channel disconnects).
    pub fn run(mut self) -> std::io::Result<()> {
        let mut conn: Option<redis::Connection> = None;
        let mut backoff = Backoff::new(unix_nanos() ^ 0x5eed);
        let mut next_try = Instant::now();
        let mut next_probe = Instant::now();
        let mut connected_before = false;
        let mut pending: Vec<Outgoing> = Vec::new();
        loop {
            let now = Instant::now();
            if conn.is_none() && now >= next_try {
                match self.connect() {
                    Ok(c) => {
                        if connected_before {
                            self.state.reconnects.fetch_add(1, Relaxed);
                            tracing::info!("redis link: publisher reconnected");
                        }
                        connected_before = true;
                        backoff.reset();
                        conn = Some(c);
                        self.state.publisher_up.store(true, Relaxed);
                    }
                    Err(e) => {
                        next_try = now + backoff.next_delay();
                        tracing::debug!(error = %e, "redis link: publisher cannot connect");
                    }
                }
            }
            let wake_at = if conn.is_none() {
                next_try.min(next_probe)
            } else {
                next_probe
            };
            let wait = wake_at
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(100));
            match self.rx.recv_timeout(wait) {
                Ok(batch) => {
                    self.push_batch(&mut pending, batch);
                    for batch in self.rx.try_iter().take(64) {
                        self.push_batch(&mut pending, batch);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return Ok(()),
            }
            let probe = if Instant::now() >= next_probe {
                next_probe += PROBE_INTERVAL;
                let env = envelope::encode(&self.node_id, unix_nanos(), b"");
                Some((probe_channel(&self.prefix, &self.node_id), env))
            } else {
                None
            };
            let Some(c) = conn.as_mut() else {
                self.hold(&mut pending);
                continue;
            };
            let result = self.send(c, &mut pending, probe);
            if let Err(e) = result {
                tracing::warn!(error = %e, buffered = self.buffer.len(), "redis link: publisher lost its connection");
                conn = None;
                self.state.publisher_up.store(false, Relaxed);
                next_try = Instant::now() + backoff.next_delay();
            }
        }
    }

    fn push_batch(&self, pending: &mut Vec<Outgoing>, batch: Vec<(Topic, Bytes)>) {
        let now = unix_nanos();
        pending.extend(batch.into_iter().map(|(topic, frame)| {
            (
                channel(&self.prefix, &topic),
                envelope::encode(&self.node_id, now, &frame),
            )
        }));
    }

    /// Keeps `pending` for later, within the buffer's capacity.
    fn hold(&mut self, pending: &mut Vec<Outgoing>) {
        for msg in pending.drain(..) {
            if self.buffer.len() < self.capacity {
                self.buffer.push_back(msg);
            } else {
                self.state.dropped.fetch_add(1, Relaxed);
            }
        }
        self.state.buffer_depth.store(self.buffer.len() as u64, Relaxed);
    }

    /// Publishes the outage buffer (once the subscriber is back), then `pending`.
    fn send(
        &mut self,
        conn: &mut redis::Connection,
        pending: &mut Vec<Outgoing>,
        probe: Option<Outgoing>,
    ) -> redis::RedisResult<()> {
        if let Some(p) = probe {
            pipeline(conn, std::slice::from_ref(&p))?;
        }
        if !self.buffer.is_empty() {
            let up = self.state.subscriber_up.load(Relaxed);
            match (up, self.ready_since) {
                (false, _) => self.ready_since = None,
                (true, None) => self.ready_since = Some(Instant::now()),
                _ => {}
            }
            // Peers that lost the same Redis reconnect on their own jittered
            // backoff: give them a moment to re-subscribe before flushing.
            if self.ready_since.is_none_or(|t| t.elapsed() < FLUSH_GRACE) {
                self.hold(pending);
                return Ok(());
            }
            while !self.buffer.is_empty() {
                let n = self.buffer.len().min(PIPELINE);
                let chunk: Vec<Outgoing> = self.buffer.range(..n).cloned().collect();
                pipeline(conn, &chunk)?;
                self.buffer.drain(..n);
                self.state.messages_out.fetch_add(n as u64, Relaxed);
                self.state.buffer_depth.store(self.buffer.len() as u64, Relaxed);
            }
            self.ready_since = None;
            tracing::info!("redis link: outage buffer flushed");
        }
        let mut sent = 0;
        while sent < pending.len() {
            let end = (sent + PIPELINE).min(pending.len());
            if let Err(e) = pipeline(conn, &pending[sent..end]) {
                // Unsent (and possibly half-sent) messages go out again later.
                let mut rest: Vec<Outgoing> = pending.drain(sent..).collect();
                pending.clear();
                self.hold(&mut rest);
                return Err(e);
            }
            self.state.messages_out.fetch_add((end - sent) as u64, Relaxed);
            sent = end;
        }
        pending.clear();
        Ok(())
    }
}

/// One round trip: PUBLISH for every message.
fn pipeline(conn: &mut redis::Connection, msgs: &[Outgoing]) -> redis::RedisResult<()> {
    let mut pipe = redis::pipe();
    for (ch, env) in msgs {
        pipe.cmd("PUBLISH").arg(ch).arg(env).ignore();
    }
    pipe.query::<()>(conn)
}
