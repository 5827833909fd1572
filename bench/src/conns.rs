//! `conns`: open N connections, let each join a room, hold them, and report
//! how much resident memory the server grew by per connection.
//!
//! The server's RSS is read from `/proc/PID/status` before the first connect
//! and at the end of the hold, so it includes whatever the server allocated
//! per connection (buffers, room membership) once things have settled.

use std::time::{Duration, Instant};

use crate::client::{Event, Writer};
use crate::pool::{Pool, MAX_CONNECTING};
use crate::report::Report;
use crate::sys;
use crate::tally::Tally;
use crate::target::Target;
use crate::wire;

/// How long to wait for close handshakes at the end.
const CLOSE_WAIT: Duration = Duration::from_secs(3);

/// What `conns` was asked to do.
#[derive(Clone, Debug)]
pub struct Config {
    /// Connections to open.
    pub n: usize,
    /// How long to hold them once all are open.
    pub hold: Duration,
    /// The server's PID, for RSS.
    pub pid: Option<u32>,
    /// The room each connection joins, if any.
    pub room: Option<String>,
    /// Limit for opening all connections.
    pub open_timeout: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Open,
    Hold,
    Closing,
}

struct State {
    phase: Phase,
    room: Option<String>,
    scratch: Vec<u8>,
    opened: Vec<bool>,
    /// Upgraded and not ended.
    alive: usize,
    /// Ended before the hold was over.
    failed: usize,
    tally: Tally,
}

impl State {
    fn on(&mut self, tag: usize, ev: Event<'_>, w: &mut Writer<'_>) {
        match ev {
            Event::Open => {
                self.opened[tag] = true;
                self.alive += 1;
                if let Some(room) = &self.room {
                    // With an id, roomcast acks: `acks` then shows how many joins it processed.
                    wire::join(&mut self.scratch, room, Some(tag as u64));
                    w.text(&self.scratch);
                }
            }
            Event::Text { payload, .. } => self.tally.control(payload),
            Event::Binary => self.tally.unexpected += 1,
            Event::Ended(end) => {
                if self.opened[tag] {
                    self.alive -= 1;
                }
                if self.phase != Phase::Closing {
                    self.failed += 1;
                }
                self.tally.end(&end, self.phase == Phase::Closing);
            }
        }
    }
}

/// Runs the scenario and returns its report.
pub fn run(target: Target, cfg: &Config) -> Result<Report, String> {
    sys::ensure_fds(cfg.n as u64)?;
    let rss = |pid: Option<u32>| pid.and_then(sys::rss_bytes);
    let rss_before = rss(cfg.pid);
    if cfg.pid.is_some() && rss_before.is_none() {
        return Err(format!("cannot read VmRSS of pid {}", cfg.pid.unwrap_or(0)));
    }
    let mut pool = Pool::new(target, Instant::now()).map_err(|e| format!("poll: {e}"))?;
    let io_err = |e: std::io::Error| format!("event loop: {e}");
    let mut st = State {
        phase: Phase::Open,
        room: cfg.room.clone(),
        scratch: Vec::new(),
        opened: vec![false; cfg.n],
        alive: 0,
        failed: 0,
        tally: Tally::default(),
    };

    let start = Instant::now();
    let mut started = 0;
    while st.alive + st.failed < cfg.n && start.elapsed() < cfg.open_timeout {
        while started < cfg.n && started - (st.alive + st.failed) < MAX_CONNECTING {
            if let Err(e) = pool.connect(started) {
                st.tally.connect_error(&e);
                st.failed += 1;
            }
            started += 1;
        }
        pool.turn(Some(Duration::from_millis(10)), |_, tag, ev, w| st.on(tag, ev, w))
            .map_err(io_err)?;
    }
    let open_secs = start.elapsed().as_secs_f64();
    let opened = st.alive;

    st.phase = Phase::Hold;
    let hold_end = Instant::now() + cfg.hold;
    while let Some(left) = hold_end.checked_duration_since(Instant::now()) {
        pool.turn(Some(left.min(Duration::from_millis(100))), |_, tag, ev, w| {
            st.on(tag, ev, w)
        })
        .map_err(io_err)?;
    }
    let held = st.alive;
    let rss_held = rss(cfg.pid);

    st.phase = Phase::Closing;
    pool.close_within(CLOSE_WAIT, |_, tag, ev, w| st.on(tag, ev, w))
        .map_err(io_err)?;

    let mut r = Report::new("conns");
    r.int("n", cfg.n as u64)
        .int("opened", opened as u64)
        .int("held", held as u64)
        .int("failed", st.failed as u64)
        .float("open_secs", open_secs, 2)
        .float("opens_per_s", opened as f64 / open_secs, 0)
        .float("hold_secs", cfg.hold.as_secs_f64(), 1)
        .text("room", cfg.room.as_deref().unwrap_or(""));
    if let (Some(before), Some(during)) = (rss_before, rss_held) {
        let delta = during.saturating_sub(before);
        r.int("rss_before_bytes", before)
            .int("rss_held_bytes", during)
            .int("rss_delta_bytes", delta)
            .float("rss_per_conn_bytes", delta as f64 / held.max(1) as f64, 0);
    }
    st.tally.add_to(&mut r);
    Ok(r)
}
