//! The `roomcast` binary: command line → configuration → node → exit code.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use roomcast::config::{Cli, Config};
use roomcast::Node;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help and --version.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let text = e.to_string();
            let line = text.lines().next().unwrap_or("invalid arguments");
            eprintln!("roomcast: {}", line.trim_start_matches("error: "));
            return ExitCode::from(2);
        }
    };
    let config = match Config::from_cli(cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("roomcast: {e}");
            return ExitCode::from(2);
        }
    };
    match run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("roomcast: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(config: Config) -> anyhow::Result<()> {
    init_logging(&config.log_level);
    let listen = config.listen;
    let shards = config.shards;
    let node = Node::start(config).with_context(|| format!("cannot listen on {listen}"))?;
    // Scripts and tests read the bound address (useful with port 0) here.
    println!("roomcast listening on {}", node.local_addr());
    let _ = std::io::stdout().flush();
    tracing::info!(addr = %node.local_addr(), shards, "roomcast started");
    let exit = node.wait();
    match exit.outcome {
        Ok(()) => Ok(()),
        Err(why) => anyhow::bail!("thread {} stopped: {why}", exit.name),
    }
}

fn init_logging(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter).unwrap_or_else(|_| "info".into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
