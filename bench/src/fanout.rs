//! `fanout`: S subscribers spread over K rooms, P publishers publishing to
//! those rooms at a total rate; counts and times every delivery.
//!
//! Phases: connect (at most `MAX_CONNECTING` upgrades in flight) → every
//! subscriber joins as soon as it is upgraded → probe until every subscriber
//! has received a probe from every publisher (this confirms joins on any
//! server, acked or not) → publish for `secs` → drain → close.
//! The receive path decodes no JSON: the stamp is found by a byte search.

use std::time::{Duration, Instant};

use crate::client::{Event, Writer};
use crate::hist::{self, Histogram};
use crate::pool::Pool;
use crate::pool::MAX_CONNECTING;
use crate::report::Report;
use crate::sys;
use crate::tally::Tally;
use crate::target::Target;
use crate::wire::{self, Kind, Stamp};

/// Probes are re-sent this often to rooms that still have unconfirmed members.
const PROBE_EVERY: Duration = Duration::from_millis(100);
/// After the clock stops, how long to wait for messages still in flight.
const DRAIN: Duration = Duration::from_secs(2);
/// How long to wait for close handshakes at the end.
const CLOSE_WAIT: Duration = Duration::from_secs(2);
/// Publishes one publisher may queue per loop turn, so reading is never starved.
const BURST: u64 = 256;

/// What `fanout` was asked to do.
#[derive(Clone, Debug)]
pub struct Config {
    /// Subscriber connections.
    pub subs: usize,
    /// Publisher connections.
    pub pubs: usize,
    /// Rooms `room-0..room-K-1`; subscriber i joins room i mod K.
    pub rooms: usize,
    /// Bytes of `data` in each publish.
    pub size: usize,
    /// Total publishes per second over all publishers; 0 = as fast as the window allows.
    pub rate: u64,
    /// Length of the measured phase.
    pub secs: f64,
    /// Messages each publisher may have published and not yet seen delivered
    /// (counted in deliveries: window × members of an average room).
    pub window: u64,
    /// Limit for connecting, and again for confirming joins.
    pub join_timeout: Duration,
    /// Where publishers connect, if not to the subscribers' server.
    pub pub_target: Option<Target>,
    /// What pads each message's `data`.
    pub filler: wire::Filler,
}

/// Where the run is; decides whether a connection's end is an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Setup,
    Run,
    Drain,
    Closing,
}

/// One publisher's progress.
#[derive(Default)]
struct Publisher {
    key: usize,
    sent: u64,
    /// Deliveries its messages should cause: Σ members of each message's room.
    expected: u64,
    next_room: usize,
}

/// Everything the receive path updates.
struct State {
    subs: usize,
    pubs: usize,
    rooms: usize,
    size: usize,
    phase: Phase,
    room_names: Vec<String>,
    scratch: Vec<u8>,
    /// Connections upgraded and still alive during setup.
    open: usize,
    /// Connections that ended during setup.
    failed: usize,
    opened: Vec<bool>,
    /// Last measured sequence per (subscriber, publisher), flattened.
    last_seq: Vec<u32>,
    /// Probe seen per (subscriber, publisher), flattened.
    probed: Vec<bool>,
    sub_probes: Vec<u32>,
    room_unconfirmed: Vec<usize>,
    unconfirmed: usize,
    /// Measured deliveries per publisher (drives the window).
    pub_recv: Vec<u64>,
    delivered: u64,
    out_of_order: u64,
    duplicates: u64,
    foreign_stamps: u64,
    hist: Histogram,
    tally: Tally,
}

impl State {
    fn new(cfg: &Config) -> State {
        let (s, p, k) = (cfg.subs, cfg.pubs, cfg.rooms);
        let mut room_unconfirmed = vec![0; k];
        for i in 0..s {
            room_unconfirmed[i % k] += 1;
        }
        State {
            subs: s,
            pubs: p,
            rooms: k,
            size: cfg.size,
            phase: Phase::Setup,
            room_names: (0..k).map(|r| format!("room-{r}")).collect(),
            scratch: Vec::with_capacity(cfg.size + 128),
            open: 0,
            failed: 0,
            opened: vec![false; s + p],
            last_seq: vec![0; s * p],
            probed: vec![false; s * p],
            sub_probes: vec![0; s],
            room_unconfirmed,
            unconfirmed: s,
            pub_recv: vec![0; p],
            delivered: 0,
            out_of_order: 0,
            duplicates: 0,
            foreign_stamps: 0,
            hist: hist::new(),
            tally: Tally::default(),
        }
    }

    fn on(&mut self, tag: usize, ev: Event<'_>, w: &mut Writer<'_>) {
        match ev {
            Event::Open => {
                self.open += 1;
                self.opened[tag] = true;
                if tag < self.subs {
                    wire::join(&mut self.scratch, &self.room_names[tag % self.rooms], Some(tag as u64));
                    w.text(&self.scratch);
                }
            }
            Event::Text { payload, at_ns } if tag < self.subs => self.on_sub(tag, payload, at_ns),
            Event::Text { payload, .. } => self.tally.control(payload),
            Event::Binary => self.tally.unexpected += 1,
            Event::Ended(end) => {
                if self.phase == Phase::Setup {
                    self.failed += 1;
                    if self.opened[tag] {
                        self.open -= 1;
                    }
                }
                self.tally.end(&end, self.phase == Phase::Closing);
            }
        }
    }

    /// The hot path: one delivery to subscriber `sub`.
    fn on_sub(&mut self, sub: usize, payload: &[u8], at_ns: u64) {
        let Some(st) = wire::find_stamp(payload, self.size) else {
            self.tally.control(payload);
            return;
        };
        let p = st.sender as usize;
        if p >= self.pubs {
            self.foreign_stamps += 1;
            return;
        }
        let idx = sub * self.pubs + p;
        match st.kind {
            Kind::Measured => {
                self.delivered += 1;
                self.pub_recv[p] += 1;
                self.hist.saturating_record(at_ns.saturating_sub(st.ts_ns));
                let last = self.last_seq[idx];
                if st.seq > last {
                    self.last_seq[idx] = st.seq;
                } else if st.seq == last {
                    self.duplicates += 1;
                } else {
                    self.out_of_order += 1;
                }
            }
            Kind::Probe if !self.probed[idx] => {
                self.probed[idx] = true;
                self.sub_probes[sub] += 1;
                if self.sub_probes[sub] as usize == self.pubs {
                    self.room_unconfirmed[sub % self.rooms] -= 1;
                    self.unconfirmed -= 1;
                }
            }
            Kind::Probe => {}
        }
    }
}

/// Runs the scenario and returns its report.
pub fn run(target: Target, cfg: &Config) -> Result<Report, String> {
    sys::ensure_fds((cfg.subs + cfg.pubs) as u64)?;
    let mut pool = Pool::new(target, Instant::now()).map_err(|e| format!("poll: {e}"))?;
    let mut st = State::new(cfg);
    let mut pubs: Vec<Publisher> = (0..cfg.pubs)
        .map(|p| Publisher {
            next_room: p % cfg.rooms,
            ..Publisher::default()
        })
        .collect();
    let io_err = |e: std::io::Error| format!("event loop: {e}");

    // Connect; subscribers join from the Open handler.
    let total = cfg.subs + cfg.pubs;
    let deadline = Instant::now() + cfg.join_timeout;
    let mut started = 0;
    while st.open + st.failed < total {
        while started < total && started - (st.open + st.failed) < MAX_CONNECTING {
            let connected = match (&cfg.pub_target, started >= cfg.subs) {
                (Some(t), true) => pool.connect_to(started, t),
                _ => pool.connect(started),
            };
            match connected {
                Ok(key) if started >= cfg.subs => pubs[started - cfg.subs].key = key,
                Ok(_) => {}
                Err(e) => {
                    st.tally.connect_error(&e);
                    st.failed += 1;
                }
            }
            started += 1;
        }
        if Instant::now() > deadline {
            break;
        }
        pool.turn(Some(Duration::from_millis(10)), |_, tag, ev, w| st.on(tag, ev, w))
            .map_err(io_err)?;
    }
    if st.open < total || st.failed > 0 {
        return Err(format!(
            "only {} of {total} connections upgraded ({} failed) within {:?}",
            st.open, st.failed, cfg.join_timeout
        ));
    }

    // Confirm joins: probe rooms with unconfirmed members until each subscriber
    // has a probe from each publisher.
    let confirm_start = Instant::now();
    let deadline = confirm_start + cfg.join_timeout;
    let mut next_probe = confirm_start;
    let mut round = 0u32;
    while st.unconfirmed > 0 {
        let now = Instant::now();
        if now > deadline {
            return Err(format!(
                "{} of {} subscribers received no probe within {:?}: joins not confirmed",
                st.unconfirmed, cfg.subs, cfg.join_timeout
            ));
        }
        if now >= next_probe {
            round += 1;
            next_probe = now + PROBE_EVERY;
            let ts_ns = pool.io.now_ns();
            for room in (0..cfg.rooms).filter(|&r| st.room_unconfirmed[r] > 0) {
                for (p, pb) in pubs.iter().enumerate() {
                    let stamp = Stamp {
                        kind: Kind::Probe,
                        sender: p as u16,
                        seq: round,
                        ts_ns,
                    };
                    wire::publish_with(&mut st.scratch, &st.room_names[room], &stamp, cfg.size, cfg.filler);
                    pool.send(pb.key, &st.scratch);
                }
            }
        }
        pool.turn(Some(Duration::from_millis(5)), |_, tag, ev, w| st.on(tag, ev, w))
            .map_err(io_err)?;
    }
    let confirm_ms = confirm_start.elapsed().as_secs_f64() * 1000.0;

    // Measure.
    st.phase = Phase::Run;
    let members: Vec<u64> = (0..cfg.rooms).map(|r| room_members(cfg, r)).collect();
    let avg_members = (cfg.subs.div_ceil(cfg.rooms)).max(1) as u64;
    let window = cfg.window.saturating_mul(avg_members);
    let t0 = pool.io.now_ns();
    let dur_ns = (cfg.secs * 1e9) as u64;
    let mut total_due = 0;
    loop {
        let elapsed = pool.io.now_ns() - t0;
        if elapsed >= dur_ns {
            break;
        }
        total_due = if cfg.rate == 0 {
            u64::MAX
        } else {
            // +1: the first message is due at t0.
            (u128::from(elapsed) * u128::from(cfg.rate) / 1_000_000_000) as u64 + 1
        };
        let mut busy = false;
        let ts_ns = pool.io.now_ns();
        for (p, pb) in pubs.iter_mut().enumerate() {
            let np = cfg.pubs as u64;
            let due = if cfg.rate == 0 {
                u64::MAX
            } else {
                (total_due + np - 1 - p as u64) / np
            };
            let mut n = 0;
            while pb.sent < due && pb.expected.saturating_sub(st.pub_recv[p]) < window {
                if n == BURST {
                    busy = true;
                    break;
                }
                let room = pb.next_room;
                let stamp = Stamp {
                    kind: Kind::Measured,
                    sender: p as u16,
                    seq: (pb.sent + 1) as u32,
                    ts_ns,
                };
                wire::publish_with(&mut st.scratch, &st.room_names[room], &stamp, cfg.size, cfg.filler);
                if !pool.send(pb.key, &st.scratch) {
                    break; // this publisher's connection is gone (counted in errors)
                }
                pb.next_room = (room + 1) % cfg.rooms;
                pb.sent += 1;
                pb.expected += members[room];
                n += 1;
            }
        }
        // Nothing more to send now: wait for deliveries (or the next due time).
        let timeout = if busy { Duration::ZERO } else { Duration::from_millis(1) };
        pool.turn(Some(timeout), |_, tag, ev, w| st.on(tag, ev, w))
            .map_err(io_err)?;
    }
    let published: u64 = pubs.iter().map(|pb| pb.sent).sum();
    let expected: u64 = pubs.iter().map(|pb| pb.expected).sum();

    // Drain what is still in flight.
    st.phase = Phase::Drain;
    let drain_end = Instant::now() + DRAIN;
    while st.delivered < expected && Instant::now() < drain_end {
        pool.turn(Some(Duration::from_millis(5)), |_, tag, ev, w| st.on(tag, ev, w))
            .map_err(io_err)?;
    }

    st.phase = Phase::Closing;
    pool.close_within(CLOSE_WAIT, |_, tag, ev, w| st.on(tag, ev, w))
        .map_err(io_err)?;

    let mut r = Report::new("fanout");
    r.int("subs", cfg.subs as u64)
        .int("pubs", cfg.pubs as u64)
        .int("rooms", cfg.rooms as u64)
        .int("size", cfg.size.max(wire::STAMP_LEN) as u64)
        .int("rate_target", cfg.rate)
        .float("secs", cfg.secs, 1)
        .float("join_confirm_ms", confirm_ms, 1)
        .int("probe_rounds", u64::from(round))
        .int("published", published)
        .float("publishes_per_s", published as f64 / cfg.secs, 0)
        .int("expected", expected)
        .int("delivered", st.delivered)
        .float("deliveries_per_s", st.delivered as f64 / cfg.secs, 0)
        .int("lost", expected.saturating_sub(st.delivered))
        .int("out_of_order", st.out_of_order)
        .int("duplicates", st.duplicates);
    if cfg.rate > 0 {
        // Publishes that were due but held back by the window: the server fell behind.
        r.int("behind_schedule", total_due.saturating_sub(published));
    }
    r.latency("latency", &st.hist);
    st.tally.unexpected += st.foreign_stamps;
    st.tally.add_to(&mut r);
    Ok(r)
}

/// Subscribers in room `r`: subscriber i is in room i mod K.
fn room_members(cfg: &Config, r: usize) -> u64 {
    (cfg.subs / cfg.rooms + usize::from(r < cfg.subs % cfg.rooms)) as u64
}
