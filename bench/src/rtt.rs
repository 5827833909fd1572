//! `rtt`: C clients, each alone in its own room `rtt-<i>`, publish a message
//! and wait for it to come back before publishing the next one.
//!
//! Warm-up: each client publishes probes (every 100 ms) until one comes back,
//! which proves its join took effect; only then does the clock start. A round
//! trip runs from the read that delivered the previous echo (the next publish
//! is queued from that read's handler) to the read that delivers this echo, so
//! it includes the generator's own turnaround, which is a few µs.

use std::time::{Duration, Instant};

use crate::client::{Event, Writer};
use crate::hist::{self, Histogram};
use crate::pool::{Pool, MAX_CONNECTING};
use crate::report::Report;
use crate::sys;
use crate::tally::Tally;
use crate::target::Target;
use crate::wire::{self, Kind, Stamp};

/// Warm-up probes are re-sent this often.
const PROBE_EVERY: Duration = Duration::from_millis(100);
/// Connecting and warming up must each finish within this.
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);
/// An echo not back within this is counted as a timeout and the next message sent.
const ECHO_TIMEOUT_NS: u64 = 1_000_000_000;
/// How long to wait for close handshakes at the end.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// What `rtt` was asked to do.
#[derive(Clone, Debug)]
pub struct Config {
    /// Client connections.
    pub clients: usize,
    /// Length of the measured phase.
    pub secs: f64,
    /// Bytes of `data` per message.
    pub size: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Setup,
    Run,
    Closing,
}

/// One client's round-trip state.
#[derive(Default)]
struct Pinger {
    key: usize,
    opened: bool,
    warm: bool,
    /// The sequence number in flight (0 = none yet).
    seq: u32,
    sent_ns: u64,
}

struct State {
    phase: Phase,
    size: usize,
    rooms: Vec<String>,
    scratch: Vec<u8>,
    pingers: Vec<Pinger>,
    open: usize,
    failed: usize,
    warm: usize,
    trips: u64,
    timeouts: u64,
    foreign: u64,
    hist: Histogram,
    tally: Tally,
}

impl State {
    /// Builds client `i`'s next message, stamped `ts_ns`; a measured one
    /// becomes the message in flight.
    fn next_message(&mut self, i: usize, kind: Kind, ts_ns: u64) -> &[u8] {
        let p = &mut self.pingers[i];
        if kind == Kind::Measured {
            p.seq += 1;
            p.sent_ns = ts_ns;
        }
        let stamp = Stamp {
            kind,
            sender: i as u16,
            seq: p.seq,
            ts_ns,
        };
        wire::publish(&mut self.scratch, &self.rooms[i], &stamp, self.size);
        &self.scratch
    }

    fn on(&mut self, i: usize, ev: Event<'_>, w: &mut Writer<'_>) {
        match ev {
            Event::Open => {
                self.open += 1;
                self.pingers[i].opened = true;
                wire::join(&mut self.scratch, &self.rooms[i], None);
                w.text(&self.scratch);
            }
            Event::Text { payload, at_ns } => {
                let Some(st) = wire::find_stamp(payload, self.size) else {
                    self.tally.control(payload);
                    return;
                };
                if st.sender as usize != i {
                    self.foreign += 1;
                    return;
                }
                let p = &mut self.pingers[i];
                match st.kind {
                    Kind::Probe if !p.warm => {
                        p.warm = true;
                        self.warm += 1;
                    }
                    Kind::Measured if st.seq == p.seq && self.phase == Phase::Run => {
                        self.hist.saturating_record(at_ns.saturating_sub(st.ts_ns));
                        self.trips += 1;
                        w.text(self.next_message(i, Kind::Measured, at_ns));
                    }
                    // Late probes, and echoes that already timed out.
                    _ => {}
                }
            }
            Event::Binary => self.tally.unexpected += 1,
            Event::Ended(end) => {
                if self.phase == Phase::Setup {
                    self.failed += 1;
                    if self.pingers[i].opened {
                        self.open -= 1;
                    }
                }
                self.tally.end(&end, self.phase == Phase::Closing);
            }
        }
    }
}

/// Runs the scenario and returns its report.
pub fn run(target: Target, cfg: &Config) -> Result<Report, String> {
    sys::ensure_fds(cfg.clients as u64)?;
    let mut pool = Pool::new(target, Instant::now()).map_err(|e| format!("poll: {e}"))?;
    let io_err = |e: std::io::Error| format!("event loop: {e}");
    let n = cfg.clients;
    let mut st = State {
        phase: Phase::Setup,
        size: cfg.size,
        rooms: (0..n).map(|i| format!("rtt-{i}")).collect(),
        scratch: Vec::new(),
        pingers: (0..n).map(|_| Pinger::default()).collect(),
        open: 0,
        failed: 0,
        warm: 0,
        trips: 0,
        timeouts: 0,
        foreign: 0,
        hist: hist::new(),
        tally: Tally::default(),
    };

    // Connect (each client joins its room on upgrade), then probe until every echo is back.
    let setup = Instant::now();
    let mut started = 0;
    let mut next_probe = setup;
    while st.warm < n {
        if st.failed > 0 || setup.elapsed() > SETUP_TIMEOUT {
            return Err(format!(
                "setup failed: {} of {n} clients upgraded, {} failed, {} warmed up",
                st.open, st.failed, st.warm
            ));
        }
        while started < n && started - (st.open + st.failed) < MAX_CONNECTING {
            match pool.connect(started) {
                Ok(key) => st.pingers[started].key = key,
                Err(e) => {
                    st.tally.connect_error(&e);
                    st.failed += 1;
                }
            }
            started += 1;
        }
        if Instant::now() >= next_probe {
            next_probe = Instant::now() + PROBE_EVERY;
            let ts_ns = pool.io.now_ns();
            for i in 0..n {
                let p = &st.pingers[i];
                if p.opened && !p.warm {
                    let key = p.key;
                    pool.send(key, st.next_message(i, Kind::Probe, ts_ns));
                }
            }
        }
        pool.turn(Some(Duration::from_millis(5)), |_, tag, ev, w| st.on(tag, ev, w))
            .map_err(io_err)?;
    }

    // Measure: one message in flight per client.
    st.phase = Phase::Run;
    let t0 = pool.io.now_ns();
    for i in 0..n {
        let key = st.pingers[i].key;
        let ts_ns = pool.io.now_ns();
        pool.send(key, st.next_message(i, Kind::Measured, ts_ns));
    }
    let dur_ns = (cfg.secs * 1e9) as u64;
    let mut next_check = Instant::now();
    while pool.io.now_ns() - t0 < dur_ns {
        if Instant::now() >= next_check {
            next_check = Instant::now() + Duration::from_millis(100);
            let now_ns = pool.io.now_ns();
            for i in 0..n {
                let p = &st.pingers[i];
                // A client whose connection is gone is counted in errors, not here.
                if now_ns.saturating_sub(p.sent_ns) > ECHO_TIMEOUT_NS && pool.is_open(p.key) {
                    st.timeouts += 1;
                    let key = p.key;
                    pool.send(key, st.next_message(i, Kind::Measured, now_ns));
                }
            }
        }
        pool.turn(Some(Duration::from_millis(10)), |_, tag, ev, w| st.on(tag, ev, w))
            .map_err(io_err)?;
    }
    let secs = (pool.io.now_ns() - t0) as f64 / 1e9;

    st.phase = Phase::Closing;
    pool.close_within(CLOSE_WAIT, |_, tag, ev, w| st.on(tag, ev, w))
        .map_err(io_err)?;

    let mut r = Report::new("rtt");
    r.int("clients", n as u64)
        .float("secs", secs, 2)
        .int("size", cfg.size.max(wire::STAMP_LEN) as u64)
        .int("round_trips", st.trips)
        .float("round_trips_per_s", st.trips as f64 / secs, 0)
        .latency("rtt", &st.hist)
        .int("timeouts", st.timeouts);
    st.tally.unexpected += st.foreign;
    st.tally.add_to(&mut r);
    Ok(r)
}
