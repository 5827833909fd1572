//! The command line: parsed by clap, then checked and turned into one
//! scenario's `Config` (two steps, so bad combinations get one clear message).

use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::target::Target;
use crate::{churn, conns, fanout, rtt};

/// Load generator for roomcast and any server speaking its join/publish/message subset.
///
/// Each scenario runs for a bounded time on one thread, prints a table and
/// then one JSON line.
#[derive(Parser, Debug)]
#[command(name = "roomcast-bench", version)]
pub struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

/// Options every scenario takes.
#[derive(Args, Debug)]
struct Common {
    /// The server's WebSocket URL.
    #[arg(long, default_value = "ws://127.0.0.1:8080/ws")]
    url: String,
    /// A token appended to the URL as `?token=T` (roomcast's JWT mode).
    #[arg(long)]
    token: Option<String>,
    /// PEM certificate(s) to trust for wss:// (the server's self-signed
    /// certificate, or the CA that signed it).
    #[arg(long, value_name = "FILE")]
    tls_ca: Option<std::path::PathBuf>,
    /// wss://: a full handshake for every connection (no session
    /// resumption), the cost of a first visit rather than of a reconnect.
    #[arg(long)]
    tls_no_resume: bool,
    /// Offer permessage-deflate on every connection (as browsers do) and
    /// inflate what the server sends compressed.
    #[arg(long)]
    compression: bool,
}

#[derive(Subcommand, Debug)]
enum Scenario {
    /// Subscribers in rooms, publishers at a rate: deliveries/s, latency, loss, order.
    Fanout {
        #[command(flatten)]
        common: Common,
        /// Subscriber connections.
        #[arg(long, default_value_t = 1000)]
        subs: usize,
        /// Publisher connections.
        #[arg(long, default_value_t = 1)]
        pubs: usize,
        /// Rooms room-0..room-K-1 (at most --subs); subscribers join them round-robin.
        #[arg(long, default_value_t = 1)]
        rooms: usize,
        /// Bytes of `data` per message (at least the 33-byte stamp).
        #[arg(long, default_value_t = 64)]
        size: usize,
        /// Total publishes per second; 0 = as fast as the window allows.
        #[arg(long, default_value_t = 0)]
        rate: u64,
        /// Seconds of measurement.
        #[arg(long, default_value_t = 5.0)]
        secs: f64,
        /// Undelivered messages each publisher may have in flight.
        #[arg(long, default_value_t = 64)]
        window: u64,
        /// Seconds allowed to connect, and again to confirm joins.
        #[arg(long, default_value_t = 10.0)]
        join_timeout: f64,
        /// Connect the publishers here instead of --url (another node of a
        /// cluster: cross-node delivery).
        #[arg(long)]
        pub_url: Option<String>,
        /// What pads `data` after the stamp: dots, or words of chat (which
        /// compress like real messages; use it with --compression).
        #[arg(long, value_enum, default_value_t = crate::wire::Filler::Dots)]
        filler: crate::wire::Filler,
    },
    /// Open N connections, hold them, report the server's memory per connection.
    Conns {
        #[command(flatten)]
        common: Common,
        /// Connections to open.
        #[arg(long, default_value_t = 1000)]
        n: usize,
        /// Seconds to hold them open.
        #[arg(long, default_value_t = 5.0)]
        hold: f64,
        /// The server's PID, to read its RSS before and while holding.
        #[arg(long)]
        pid: Option<u32>,
        /// Room every connection joins.
        #[arg(long, default_value = "idle")]
        room: String,
        /// Join no room.
        #[arg(long)]
        no_join: bool,
        /// Seconds allowed to open all connections.
        #[arg(long, default_value_t = 30.0)]
        open_timeout: f64,
    },
    /// Clients publish to their own room and wait for the echo: round trips/s and latency.
    Rtt {
        #[command(flatten)]
        common: Common,
        /// Clients, each alone in its room rtt-<i>.
        #[arg(long, default_value_t = 10)]
        clients: usize,
        /// Seconds of measurement.
        #[arg(long, default_value_t = 5.0)]
        secs: f64,
        /// Bytes of `data` per message.
        #[arg(long, default_value_t = 64)]
        size: usize,
    },
    /// Connect → (welcome) → join → close at a fixed rate: cycles/s, failures, latency.
    Churn {
        #[command(flatten)]
        common: Common,
        /// New connections per second.
        #[arg(long, default_value_t = 200)]
        rate: u64,
        /// Seconds to start new cycles for.
        #[arg(long, default_value_t = 5.0)]
        secs: f64,
        /// Cycles in flight at once; past it new cycles wait (counted as behind schedule).
        #[arg(long, default_value_t = 512)]
        max_inflight: usize,
        /// Room each cycle joins.
        #[arg(long, default_value = "churn")]
        room: String,
    },
}

/// A validated scenario, ready to run.
pub enum Command {
    /// See [`fanout`].
    Fanout(Target, fanout::Config),
    /// See [`conns`].
    Conns(Target, conns::Config),
    /// See [`rtt`].
    Rtt(Target, rtt::Config),
    /// See [`churn`].
    Churn(Target, churn::Config),
}

fn secs(name: &str, v: f64) -> Result<Duration, String> {
    if v.is_finite() && v > 0.0 && v <= 3600.0 {
        Ok(Duration::from_secs_f64(v))
    } else {
        Err(format!("--{name} must be between 0 and 3600 seconds"))
    }
}

fn positive(name: &str, v: usize) -> Result<usize, String> {
    if v > 0 {
        Ok(v)
    } else {
        Err(format!("--{name} must be at least 1"))
    }
}

impl Cli {
    /// Checks the options and resolves the URL.
    pub fn into_command(self) -> Result<Command, String> {
        let target = |c: &Common| {
            Target::parse(&c.url, c.token.as_deref(), c.tls_ca.as_deref(), c.tls_no_resume).map(|mut t| {
                t.compression = c.compression;
                t
            })
        };
        Ok(match self.scenario {
            Scenario::Fanout {
                common,
                subs,
                pubs,
                rooms,
                size,
                rate,
                secs: d,
                window,
                join_timeout,
                pub_url,
                filler,
            } => {
                if pubs > usize::from(u16::MAX) {
                    return Err("--pubs must be at most 65535".into());
                }
                let cfg = fanout::Config {
                    subs: positive("subs", subs)?,
                    pubs: positive("pubs", pubs)?,
                    rooms: positive("rooms", rooms)?.min(subs),
                    size,
                    rate,
                    secs: secs("secs", d)?.as_secs_f64(),
                    window: positive("window", window as usize)? as u64,
                    join_timeout: secs("join-timeout", join_timeout)?,
                    pub_target: match pub_url {
                        Some(u) => {
                            let mut t = Target::parse(
                                &u,
                                common.token.as_deref(),
                                common.tls_ca.as_deref(),
                                common.tls_no_resume,
                            )?;
                            t.compression = common.compression;
                            Some(t)
                        }
                        None => None,
                    },
                    filler,
                };
                Command::Fanout(target(&common)?, cfg)
            }
            Scenario::Conns {
                common,
                n,
                hold,
                pid,
                room,
                no_join,
                open_timeout,
            } => {
                let cfg = conns::Config {
                    n: positive("n", n)?,
                    hold: secs("hold", hold)?,
                    pid,
                    room: (!no_join).then_some(room),
                    open_timeout: secs("open-timeout", open_timeout)?,
                };
                Command::Conns(target(&common)?, cfg)
            }
            Scenario::Rtt {
                common,
                clients,
                secs: d,
                size,
            } => {
                if clients > usize::from(u16::MAX) {
                    return Err("--clients must be at most 65535".into());
                }
                let cfg = rtt::Config {
                    clients: positive("clients", clients)?,
                    secs: secs("secs", d)?.as_secs_f64(),
                    size,
                };
                Command::Rtt(target(&common)?, cfg)
            }
            Scenario::Churn {
                common,
                rate,
                secs: d,
                max_inflight,
                room,
            } => {
                let cfg = churn::Config {
                    rate: positive("rate", rate as usize)? as u64,
                    secs: secs("secs", d)?.as_secs_f64(),
                    max_inflight: positive("max-inflight", max_inflight)?,
                    room,
                };
                Command::Churn(target(&common)?, cfg)
            }
        })
    }
}
