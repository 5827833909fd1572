//! The `roomcast` binary: command line → configuration → node → exit code.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use roomcast::config::{Cli, Config, LogFormat};
use roomcast::Node;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help and --version.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("roomcast: {}", from_env(one_line(&e.to_string())));
            return ExitCode::from(2);
        }
    };
    let print_config = cli.print_config;
    let config = match Config::from_cli(cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("roomcast: {e}");
            return ExitCode::from(2);
        }
    };
    if print_config {
        print!("{}", config.to_toml());
        return ExitCode::SUCCESS;
    }
    match run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("roomcast: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// clap's error on one line: the error, and what helps fix it (the
/// possible values, a similar argument), without the usage.
fn one_line(text: &str) -> String {
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let mut out = lines
        .next()
        .unwrap_or("invalid arguments")
        .trim_start_matches("error: ")
        .to_string();
    for l in lines {
        if l.starts_with("[possible values") || l.starts_with("tip:") {
            out.push(' ');
            out.push_str(l);
        }
    }
    out
}

/// A bad value clap found in a `ROOMCAST_*` variable, not on the command
/// line, is named by the variable.
fn from_env(line: String) -> String {
    let Some(start) = line.find("for '--") else { return line };
    let key: String = line[start + 7..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect();
    let flag = format!("--{key}");
    let on_command_line = std::env::args().any(|a| a == flag || a.starts_with(&format!("{flag}=")));
    let env = format!("ROOMCAST_{}", key.to_uppercase().replace('-', "_"));
    let Some(end) = line[start + 5..].find('\'').map(|i| start + 5 + i + 1) else {
        return line;
    };
    if on_command_line || std::env::var_os(&env).is_none() {
        return line;
    }
    format!("{}for {env}{}", &line[..start], &line[end..])
}

fn run(config: Config) -> anyhow::Result<()> {
    let log_format = config.log_format;
    init_logging(&config.log_level, log_format);
    if config.dev_mode() {
        tracing::warn!("no --jwt-secret or --jwt-public-key: dev mode, every client is anonymous (loopback only)");
    }
    let listen = config.listen;
    if let Some(host) = &config.listen_host {
        tracing::info!(%listen, "--listen {host} resolved to {listen}");
    }
    let shards = config.shards;
    let stats_every = config.stats_interval;
    let shutdown_timeout = config.shutdown_timeout;
    let (signals, reload) = watch_signals().context("cannot install signal handlers")?;
    let node = Node::start(config).with_context(|| format!("cannot listen on {listen}"))?;
    // Scripts and tests read the bound address (useful with port 0) here;
    // with JSON logs, as an object shaped like the log lines.
    let addr = node.local_addr();
    match log_format {
        LogFormat::Text => println!("roomcast listening on {addr}"),
        LogFormat::Json => println!(
            r#"{{"level":"INFO","fields":{{"message":"roomcast listening on {addr}","addr":"{addr}"}},"target":"roomcast"}}"#
        ),
    }
    let _ = std::io::stdout().flush();
    tracing::info!(addr = %node.local_addr(), shards, node = node.node_id(), "roomcast started");
    match node.supervise(&signals, &reload, stats_every) {
        Ok(signal) => {
            tracing::info!(
                signal,
                timeout_secs = shutdown_timeout.as_secs(),
                "shutting down: closing clients"
            );
            let clean = node.shutdown_gracefully(shutdown_timeout);
            tracing::info!(clean, "roomcast stopped");
            Ok(())
        }
        Err(exit) => anyhow::bail!(
            "thread {} stopped: {}",
            exit.name,
            exit.outcome.err().unwrap_or_default()
        ),
    }
}

/// Forwards the first SIGTERM/SIGINT to the first channel returned (a
/// second one exits the process at once), and each SIGHUP to the second.
type Signals = (crossbeam_channel::Receiver<i32>, crossbeam_channel::Receiver<()>);

fn watch_signals() -> std::io::Result<Signals> {
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP])?;
    let (tx, rx) = crossbeam_channel::bounded(1);
    let (reload_tx, reload_rx) = crossbeam_channel::bounded(1);
    std::thread::Builder::new()
        .name("roomcast-signals".into())
        .spawn(move || {
            let mut seen = 0;
            for signal in signals.forever() {
                if signal == SIGHUP {
                    // Several before the node gets to it make one reload.
                    let _ = reload_tx.try_send(());
                    continue;
                }
                seen += 1;
                if seen > 1 {
                    eprintln!("roomcast: second signal: exiting now");
                    std::process::exit(1);
                }
                let _ = tx.try_send(signal);
            }
        })?;
    Ok((rx, reload_rx))
}

fn init_logging(filter: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter).unwrap_or_else(|_| "info".into());
    // Colours only for a person at a terminal, never into journald or files.
    let ansi = std::io::stderr().is_terminal();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
