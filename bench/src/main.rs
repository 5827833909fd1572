//! `roomcast-bench`: a single-threaded mio load generator for roomcast and the
//! peer servers that speak its `join`/`publish`/`message` subset.
//!
//! Module map: `cli` (arguments → a validated command), `target` (the URL),
//! `pool` + `client` (the event loop and one connection: connect, upgrade,
//! masked frames out, unmasked frames in, via `codec` and `handshake`),
//! `wire` (the JSON ops and the payload stamp), `hist` + `report` + `tally`
//! (what is measured and how it is printed), `sys` (fd limit, RSS), and one
//! module per scenario: `fanout`, `conns`, `rtt`, `churn`.
//! `docs/load-generator.md` explains the scenarios and their numbers.

#![forbid(unsafe_code)]

mod churn;
mod cli;
mod client;
mod codec;
mod conns;
mod fanout;
mod handshake;
mod hist;
mod pool;
mod report;
mod rtt;
mod socket;
mod sys;
mod tally;
mod target;
mod wire;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version print to stdout and succeed; real errors exit 2.
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let command = match cli.into_command() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("roomcast-bench: {e}");
            return ExitCode::from(2);
        }
    };
    let result = match command {
        cli::Command::Fanout(t, cfg) => fanout::run(t, &cfg),
        cli::Command::Conns(t, cfg) => conns::run(t, &cfg),
        cli::Command::Rtt(t, cfg) => rtt::run(t, &cfg),
        cli::Command::Churn(t, cfg) => churn::run(t, &cfg),
    };
    match result {
        Ok(report) => {
            report.print();
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("roomcast-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
