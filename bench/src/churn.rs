//! `churn`: start connection cycles at a fixed rate; each connects, upgrades,
//! (waits for the welcome), joins, (waits for the join's ack) and closes.
//!
//! Servers differ in whether they send a welcome and ack a join, so one
//! calibration cycle runs first: it waits up to `CALIBRATE_WAIT` for each,
//! and every measured cycle then waits for exactly what the server showed it
//! sends. A cycle is complete when the server answers the close frame; its
//! latency runs from `connect()` to that answer. At most `max_inflight`
//! cycles run at once; starts that had to wait are reported as behind schedule.

use std::time::{Duration, Instant};

use crate::client::{End, Event, Writer};
use crate::hist::{self, Histogram};
use crate::pool::Pool;
use crate::report::Report;
use crate::sys;
use crate::tally::Tally;
use crate::target::Target;
use crate::wire;

/// How long calibration waits for a welcome, and then for an ack.
const CALIBRATE_WAIT: Duration = Duration::from_secs(1);
/// A cycle not complete within this is a failure.
const CYCLE_TIMEOUT_NS: u64 = 5_000_000_000;
/// After the last start, how long unfinished cycles may still complete.
const DRAIN: Duration = Duration::from_secs(3);

/// What `churn` was asked to do.
#[derive(Clone, Debug)]
pub struct Config {
    /// Cycles started per second.
    pub rate: u64,
    /// How long to start cycles for.
    pub secs: f64,
    /// Cycles in flight at most.
    pub max_inflight: usize,
    /// The room each cycle joins.
    pub room: String,
}

/// What the server showed it sends, found by calibration.
#[derive(Clone, Copy, Debug, Default)]
struct Mode {
    welcome: bool,
    ack: bool,
}

/// Where one cycle is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    Upgrading,
    AwaitWelcome,
    AwaitAck,
    AwaitClose,
}

#[derive(Clone, Copy, Debug)]
struct Cycle {
    start_ns: u64,
    step: Step,
}

struct State {
    mode: Mode,
    epoch: Instant,
    join: Vec<u8>,
    /// Cycles by pool key (a key is unique among live connections).
    cycles: Vec<Option<Cycle>>,
    inflight: usize,
    completed: u64,
    failed: u64,
    timeouts: u64,
    hist: Histogram,
    tally: Tally,
}

impl State {
    /// Moves a cycle past the upgrade or the welcome: join, then close unless an ack is awaited.
    fn join(&mut self, c: &mut Cycle, w: &mut Writer<'_>) {
        w.text(&self.join);
        if self.mode.ack {
            c.step = Step::AwaitAck;
        } else {
            w.close();
            c.step = Step::AwaitClose;
        }
    }

    fn on(&mut self, key: usize, ev: Event<'_>, w: &mut Writer<'_>) {
        let Some(mut c) = self.cycles.get(key).copied().flatten() else {
            // The calibration connection: count only.
            match ev {
                Event::Text { payload, .. } => self.tally.control(payload),
                Event::Ended(end) => {
                    self.tally.end(&end, true);
                }
                _ => {}
            }
            return;
        };
        match ev {
            Event::Open if self.mode.welcome => c.step = Step::AwaitWelcome,
            Event::Open => self.join(&mut c, w),
            Event::Text { payload, .. } => {
                self.tally.control(payload);
                match (c.step, wire::op(payload)) {
                    (Step::AwaitWelcome, Some(b"welcome")) => self.join(&mut c, w),
                    (Step::AwaitAck, Some(b"ack")) => {
                        w.close();
                        c.step = Step::AwaitClose;
                    }
                    _ => {}
                }
            }
            Event::Binary => self.tally.unexpected += 1,
            Event::Ended(end) => {
                self.cycles[key] = None;
                self.inflight -= 1;
                if c.step == Step::AwaitClose && matches!(end, End::Closed { by_server: false, .. }) {
                    self.completed += 1;
                    let now = self.epoch.elapsed().as_nanos() as u64;
                    self.hist.saturating_record(now.saturating_sub(c.start_ns));
                } else {
                    self.failed += 1;
                    // A server close before ours is an error here, whatever its code.
                    self.tally.end(&end, false);
                }
                return;
            }
        }
        self.cycles[key] = Some(c);
    }
}

/// Runs the scenario and returns its report.
pub fn run(target: Target, cfg: &Config) -> Result<Report, String> {
    sys::ensure_fds(cfg.max_inflight as u64)?;
    let epoch = Instant::now();
    let mut pool = Pool::new(target, epoch).map_err(|e| format!("poll: {e}"))?;
    let io_err = |e: std::io::Error| format!("event loop: {e}");
    let mut join = Vec::new();
    wire::join(&mut join, &cfg.room, Some(1));
    let mut st = State {
        mode: Mode::default(),
        epoch,
        join,
        cycles: Vec::new(),
        inflight: 0,
        completed: 0,
        failed: 0,
        timeouts: 0,
        hist: hist::new(),
        tally: Tally::default(),
    };
    st.mode = calibrate(&mut pool, &mut st).map_err(|e| format!("calibration: {e}"))?;
    st.tally = Tally::default();

    let t0 = pool.io.now_ns();
    let dur_ns = (cfg.secs * 1e9) as u64;
    let stop_ns = dur_ns + DRAIN.as_nanos() as u64;
    let mut started = 0u64;
    let mut due = 0u64;
    let mut next_sweep = Instant::now();
    loop {
        let now_ns = pool.io.now_ns();
        let elapsed = now_ns - t0;
        if elapsed >= stop_ns || (elapsed >= dur_ns && st.inflight == 0) {
            break;
        }
        if elapsed < dur_ns {
            due = (u128::from(elapsed) * u128::from(cfg.rate) / 1_000_000_000) as u64 + 1;
            while started < due && st.inflight < cfg.max_inflight {
                started += 1;
                match pool.connect(0) {
                    Ok(key) => {
                        if st.cycles.len() <= key {
                            st.cycles.resize(key + 1, None);
                        }
                        st.cycles[key] = Some(Cycle {
                            start_ns: now_ns,
                            step: Step::Upgrading,
                        });
                        st.inflight += 1;
                    }
                    Err(e) => {
                        st.tally.connect_error(&e);
                        st.failed += 1;
                    }
                }
            }
        }
        if Instant::now() >= next_sweep {
            next_sweep = Instant::now() + Duration::from_millis(100);
            for key in 0..st.cycles.len() {
                if st.cycles[key].is_some_and(|c| now_ns.saturating_sub(c.start_ns) > CYCLE_TIMEOUT_NS) {
                    st.cycles[key] = None;
                    st.inflight -= 1;
                    st.timeouts += 1;
                    st.failed += 1;
                    pool.drop_client(key);
                }
            }
        }
        pool.turn(Some(Duration::from_millis(1)), |key, _, ev, w| st.on(key, ev, w))
            .map_err(io_err)?;
    }
    let unfinished = st.inflight as u64;

    let mut r = Report::new("churn");
    r.int("rate_target", cfg.rate)
        .float("secs", cfg.secs, 1)
        .text("server_welcomes", if st.mode.welcome { "yes" } else { "no" })
        .text("server_acks_join", if st.mode.ack { "yes" } else { "no" })
        .int("started", started)
        .int("behind_schedule", due.saturating_sub(started))
        .int("completed", st.completed)
        .float("cycles_per_s", st.completed as f64 / cfg.secs, 0)
        .int("failed", st.failed + unfinished)
        .int("timeouts", st.timeouts)
        .int("unfinished", unfinished)
        .latency("cycle", &st.hist);
    st.tally.add_to(&mut r);
    Ok(r)
}

/// One cycle by hand: does the server send a welcome, and ack a join?
fn calibrate(pool: &mut Pool, st: &mut State) -> Result<Mode, String> {
    let io_err = |e: std::io::Error| format!("event loop: {e}");
    let key = pool.connect(0).map_err(|e| format!("connect: {e}"))?;
    let turn_until = |pool: &mut Pool, st: &mut State, wait: Duration, done: &dyn Fn(&Pool, &State) -> bool| {
        let end = Instant::now() + wait;
        while !done(pool, st) && Instant::now() < end {
            pool.turn(Some(Duration::from_millis(5)), |key, _, ev, w| st.on(key, ev, w))
                .map_err(io_err)?;
        }
        Ok::<(), String>(())
    };
    turn_until(pool, st, Duration::from_secs(5), &|p, _| p.is_open(key) || p.len() == 0)?;
    if !pool.is_open(key) {
        return Err("could not open a WebSocket connection".into());
    }
    turn_until(pool, st, CALIBRATE_WAIT, &|_, s| s.tally.welcomes > 0)?;
    let join = st.join.clone();
    pool.send(key, &join);
    turn_until(pool, st, CALIBRATE_WAIT, &|_, s| s.tally.acks > 0)?;
    let mode = Mode {
        welcome: st.tally.welcomes > 0,
        ack: st.tally.acks > 0,
    };
    pool.close(key);
    turn_until(pool, st, Duration::from_secs(2), &|p, _| p.len() == 0)?;
    pool.drop_client(key);
    Ok(mode)
}
