//! Configuration: flags > `ROOMCAST_*` environment > TOML file > defaults,
//! resolved into one validated [`Config`].
//!
//! Two steps, as in ripgrep: [`Settings`] holds what each layer said, every
//! field optional (parsing it reads nothing else); [`Config::resolve`]
//! merges the layers, applies the documented defaults below and validates,
//! so a bad value is one clear error line before any socket is opened.
//! `resolve` is not pure: it falls back to `RUST_LOG` for the log filter
//! and reads the JWT public key file the settings name, so that a bad key
//! is refused at start-up too. [`Config::default`] reads nothing.

mod file;
pub mod rooms;
mod settings;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::auth::{Algorithm, AuthConfig, Authenticator, KeySource};

pub use rooms::{RoomOptions, RoomRules, RoomSection};
use rooms::{DEFAULT_HISTORY_SIZE, DEFAULT_HISTORY_TTL_SECS, MAX_HISTORY_SIZE};
pub use settings::{Cli, Settings};

/// Default listen address: loopback only, so a fresh `cargo run` is not an open broker.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Default heartbeat interval in seconds.
pub const DEFAULT_HEARTBEAT_SECS: u64 = 30;
/// Default largest client message in bytes.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// Default cap on one connection's outbox in bytes.
pub const DEFAULT_MAX_QUEUE_BYTES: usize = 1024 * 1024;
/// Default time a client has to complete its HTTP upgrade.
pub const DEFAULT_HANDSHAKE_TIMEOUT_SECS: u64 = 10;
/// Default time a peer has to answer our close frame.
pub const DEFAULT_CLOSE_TIMEOUT_SECS: u64 = 5;
/// Upper bound of the default `--max-connections`.
pub const DEFAULT_MAX_CONNECTIONS_CAP: usize = 100_000;
/// File descriptors kept free for listeners, logs and Redis when the
/// connection cap is derived from the open-file limit.
pub const RESERVED_FDS: usize = 64;
/// Default clock skew allowed on a token's `exp` and `nbf`, in seconds.
pub const DEFAULT_JWT_LEEWAY_SECS: u64 = 30;
/// Default inbound messages per second per connection.
pub const DEFAULT_RATE_LIMIT: u32 = 100;
/// Default rooms one connection may be in.
pub const DEFAULT_MAX_ROOMS_PER_CONNECTION: usize = 1024;
/// Most shards: a topic's set of shards is a 64-bit mask.
pub const MAX_SHARDS: usize = 64;
/// Default seconds between stats log lines.
pub const DEFAULT_STATS_INTERVAL_SECS: u64 = 60;
/// Default seconds to wait for clients to close on shutdown.
pub const DEFAULT_SHUTDOWN_TIMEOUT_SECS: u64 = 10;
/// Default namespace of Redis channels.
pub const DEFAULT_REDIS_PREFIX: &str = "roomcast";
/// Default number of messages buffered while Redis is unreachable.
pub const DEFAULT_REDIS_BUFFER_MESSAGES: usize = 10_000;
/// Least `--max-message-bytes`: a `message` frame's fixed part, a room and
/// a user name of a few bytes and some data.
pub const MIN_MESSAGE_BYTES: usize = 256;
/// Default of `--presence-max-users`.
pub const DEFAULT_PRESENCE_MAX_USERS: usize = 1000;
/// Default of `--presence-refresh-secs`.
pub const DEFAULT_PRESENCE_REFRESH_SECS: u64 = 10;
/// Default of `--history-max-bytes`: 256 MiB.
pub const DEFAULT_HISTORY_MAX_BYTES: usize = 256 * 1024 * 1024;
/// Default of `--redis-resubscribe-wait-secs`: twice the reconnect backoff's cap.
pub const DEFAULT_REDIS_RESUBSCRIBE_WAIT_SECS: u64 = 10;
/// Default log filter when neither `--log-level` nor `RUST_LOG` is set.
pub const DEFAULT_LOG_LEVEL: &str = "info";

/// A configuration value that cannot be used; the message names the option.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// The validated configuration of one roomcast node.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address the WebSocket/HTTP listener binds.
    pub listen: SocketAddr,
    /// The host name `listen` was resolved from, if it was given as one.
    pub listen_host: Option<String>,
    /// Options left unset whose defaults depend on the machine (CPUs, the
    /// open-file limit): `--print-config` writes them as comments.
    pub derived: Vec<&'static str>,
    /// Number of shard threads (event loops).
    pub shards: usize,
    /// Interval between heartbeat pings; a connection silent for two is cut.
    pub heartbeat: Duration,
    /// Largest message a client may send, in bytes.
    pub max_message_bytes: usize,
    /// Most connections open at once; more are accepted and closed with 1013.
    pub max_connections: usize,
    /// Largest outbox one connection may have before it is cut as a slow consumer.
    pub max_queue_bytes: usize,
    /// Time a client has to complete its HTTP upgrade.
    pub handshake_timeout: Duration,
    /// Time a peer has to answer our close frame before the socket is cut.
    pub close_timeout: Duration,
    /// JWT verification; `None` is dev mode (anonymous users, loopback only).
    pub auth: Option<AuthConfig>,
    /// Inbound messages per second per connection.
    pub rate_limit: u32,
    /// Inbound messages allowed in a burst above the rate.
    pub rate_burst: u32,
    /// Most rooms one connection may be in.
    pub max_rooms_per_connection: usize,
    /// The PEM file `auth` was read from, for `--print-config`.
    pub jwt_public_key_path: Option<PathBuf>,
    /// Bearer key of the backend HTTP API; `None` disables the API (404).
    pub api_key: Option<String>,
    /// Interval of the stats log line; `None` disables it.
    pub stats_interval: Option<Duration>,
    /// How long a graceful shutdown waits for clients to close.
    pub shutdown_timeout: Duration,
    /// How log lines are written.
    pub log_format: LogFormat,
    /// The Redis link; `None` runs a single node.
    pub redis: Option<RedisConfig>,
    /// Serve the demo page at `/`.
    pub demo: bool,
    /// Serve `/echo` (conformance checks: no auth, no rate limit).
    pub echo: bool,
    /// Most connections from one IP address; `None`: no such limit.
    pub max_connections_per_ip: Option<usize>,
    /// Log filter (tracing `EnvFilter` syntax).
    pub log_level: String,
    /// Options per room (`[[rooms]]` sections, then the history flags).
    pub rooms: RoomRules,
    /// Memory for history, all rooms together (one node).
    pub history_max_bytes: usize,
    /// Web origins allowed to open a WebSocket.
    pub allowed_origins: crate::auth::OriginPolicy,
    /// Proxies whose forwarding headers name the client.
    pub trusted_proxies: crate::limits::TrustedProxies,
    /// Most users a presence answer lists.
    pub presence_max_users: usize,
    /// How often a node refreshes its presence in Redis.
    pub presence_refresh: Duration,
    /// The listener's certificate and key; `None`: plain TCP.
    pub tls: Option<crate::tls::Files>,
    /// Accept permessage-deflate.
    pub compression: bool,
}

/// Settings of the Redis link (`docs/cluster.md`).
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// Which Redis: one, or a cluster's seed nodes.
    pub endpoint: RedisEndpoint,
    /// Namespace of every channel.
    pub prefix: String,
    /// Messages kept while Redis is unreachable; more are dropped and counted.
    pub buffer_messages: usize,
    /// How often this node refreshes its presence in Redis; `None` when no
    /// room tracks presence (the link then does no presence work).
    pub presence_refresh: Option<Duration>,
    /// After an outage, longest wait for the nodes that were subscribed to
    /// a buffered message's channel to be subscribed again.
    pub resubscribe_wait: Duration,
    /// With `rediss://`: the CA that signed Redis's certificate (PEM);
    /// `None`: the system's trusted roots.
    pub tls_ca: Option<PathBuf>,
}

/// Where the Redis link connects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisEndpoint {
    /// One Redis: `redis://[user:pass@]host:port[/db]`, or `rediss://`.
    One(String),
    /// A Redis Cluster, sharded pub/sub: its seed nodes, each a URL (the
    /// first one's scheme and credentials are every node's).
    Cluster(Vec<String>),
}

impl RedisEndpoint {
    /// The URL whose scheme and credentials every connection takes.
    pub fn url(&self) -> &str {
        match self {
            RedisEndpoint::One(url) => url,
            RedisEndpoint::Cluster(seeds) => &seeds[0],
        }
    }
}

/// Reads `--redis-cluster-nodes`: `host:port` or URLs, comma-separated,
/// every one written as a URL.
fn cluster_seeds(list: &str) -> Result<Vec<String>, ConfigError> {
    let mut seeds: Vec<String> = Vec::new();
    for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let url = if item.contains("://") {
            item.to_string()
        } else {
            format!("redis://{item}")
        };
        let parsed = redis::IntoConnectionInfo::into_connection_info(url.as_str());
        if parsed.is_err() || !(url.starts_with("redis://") || url.starts_with("rediss://")) {
            return Err(ConfigError(format!(
                "--redis-cluster-nodes: {item:?} is not host:port or a redis:// or rediss:// URL"
            )));
        }
        if let Some(first) = seeds.first() {
            if first.starts_with("rediss://") != url.starts_with("rediss://") {
                return Err(ConfigError(
                    "--redis-cluster-nodes: every node is reached the same way (all redis:// or all rediss://)".into(),
                ));
            }
        }
        seeds.push(url);
    }
    if seeds.is_empty() {
        return Err(ConfigError("--redis-cluster-nodes: no node given".into()));
    }
    Ok(seeds)
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

impl Config {
    /// The effective configuration as a TOML `--config` file. Secrets are
    /// left out (a comment says which to supply through the environment).
    pub fn to_toml(&self) -> String {
        let auth = self.auth.as_ref();
        let settings = Settings {
            listen: Some(self.listen.to_string()),
            shards: Some(self.shards),
            heartbeat_secs: Some(self.heartbeat.as_secs()),
            max_message_bytes: Some(self.max_message_bytes),
            max_connections: Some(self.max_connections),
            max_queue_bytes: Some(self.max_queue_bytes),
            handshake_timeout_secs: Some(self.handshake_timeout.as_secs()),
            close_timeout_secs: Some(self.close_timeout.as_secs()),
            jwt_secret: None,
            jwt_public_key: self.jwt_public_key_path.clone(),
            jwt_algorithm: auth.map(|a| a.algorithm.to_string()),
            jwt_leeway_secs: auth.map(|a| a.leeway_secs),
            rate_limit: Some(self.rate_limit),
            rate_burst: Some(self.rate_burst),
            max_rooms_per_connection: Some(self.max_rooms_per_connection),
            api_key: None,
            stats_interval_secs: Some(self.stats_interval.map_or(0, |d| d.as_secs())),
            shutdown_timeout_secs: Some(self.shutdown_timeout.as_secs()),
            log_format: Some(match self.log_format {
                LogFormat::Text => "text".into(),
                LogFormat::Json => "json".into(),
            }),
            demo: Some(self.demo),
            echo: Some(self.echo),
            max_connections_per_ip: self.max_connections_per_ip,
            redis_url: None,
            redis_cluster_nodes: None,
            redis_prefix: self.redis.as_ref().map(|r| r.prefix.clone()),
            redis_buffer_messages: self.redis.as_ref().map(|r| r.buffer_messages),
            redis_resubscribe_wait_secs: self.redis.as_ref().map(|r| r.resubscribe_wait.as_secs()),
            redis_tls_ca: self.redis.as_ref().and_then(|r| r.tls_ca.clone()),
            log_level: Some(self.log_level.clone()),
            history_size: Some(self.rooms.default_options().history_size),
            history_ttl_secs: Some(self.rooms.default_options().history_ttl.as_secs()),
            history_max_bytes: Some(self.history_max_bytes),
            allowed_origins: Some(self.allowed_origins.written().unwrap_or_else(|| "*".into())),
            trusted_proxies: self.trusted_proxies.written(),
            presence: Some(self.rooms.default_options().presence),
            join_leave: Some(self.rooms.default_options().join_leave),
            presence_max_users: Some(self.presence_max_users),
            presence_refresh_secs: Some(self.presence_refresh.as_secs()),
            compression: Some(self.compression),
            tls_cert: self.tls.as_ref().map(|t| t.cert.clone()),
            tls_key: self.tls.as_ref().map(|t| t.key.clone()),
            rooms: (!self.rooms.written().is_empty()).then(|| self.rooms.written().to_vec()),
        };
        let mut settings = settings;
        let mut out = String::from("# roomcast effective configuration (roomcast --print-config)\n");
        // Defaults that depend on this machine stay defaults: written as
        // comments, so a file made here does not cap another machine.
        for key in &self.derived {
            let (value, why) = match *key {
                "shards" => (settings.shards.take().map(|v| v.to_string()), "the number of CPUs"),
                "max-connections" => (
                    settings.max_connections.take().map(|v| v.to_string()),
                    "the open-file limit - 64, at most 100000",
                ),
                "rate-burst" => (settings.rate_burst.take().map(|v| v.to_string()), "2 x rate-limit"),
                _ => continue,
            };
            if let Some(value) = value {
                out.push_str(&format!("# {key} = {value}    (not set: {why}, on this machine)\n"));
            }
        }
        if matches!(auth.map(|a| &a.key), Some(KeySource::Secret(_))) {
            out.push_str("# jwt-secret is set but not printed: supply it as ROOMCAST_JWT_SECRET\n");
        }
        match self.redis.as_ref().map(|r| &r.endpoint) {
            Some(RedisEndpoint::One(_)) => out.push_str(
                "# redis-url is set but not printed (it may hold a password): supply it as ROOMCAST_REDIS_URL\n",
            ),
            Some(RedisEndpoint::Cluster(_)) => out.push_str(
                "# redis-cluster-nodes is set but not printed (it may hold a password): supply it as ROOMCAST_REDIS_CLUSTER_NODES\n",
            ),
            None => {}
        }
        if self.api_key.is_some() {
            out.push_str("# api-key is set but not printed: supply it as ROOMCAST_API_KEY\n");
        }
        out.push_str(&toml::to_string(&settings).expect("settings serialise"));
        out
    }

    /// Dev mode: no key configured, so users are anonymous.
    pub fn dev_mode(&self) -> bool {
        self.auth.is_none()
    }
}

/// Builds the JWT settings from a layer; `None` when no key is configured.
fn resolve_auth(s: &Settings) -> Result<Option<AuthConfig>, ConfigError> {
    let algorithm = match &s.jwt_algorithm {
        Some(a) => Some(a.parse::<Algorithm>().map_err(|_| {
            ConfigError(format!(
                "--jwt-algorithm: unknown algorithm {a:?} (HS256, HS384, HS512, RS256, ES256)"
            ))
        })?),
        None => None,
    };
    let leeway_secs = s.jwt_leeway_secs.unwrap_or(DEFAULT_JWT_LEEWAY_SECS);
    let (key, algorithm) = match (&s.jwt_secret, &s.jwt_public_key) {
        (Some(_), Some(_)) => {
            return Err(ConfigError(
                "--jwt-secret and --jwt-public-key are exclusive; give one".into(),
            ));
        }
        (None, None) => {
            if algorithm.is_some() {
                return Err(ConfigError(
                    "--jwt-algorithm needs --jwt-secret or --jwt-public-key".into(),
                ));
            }
            return Ok(None);
        }
        (Some(secret), None) => {
            let algorithm = algorithm.unwrap_or(Algorithm::HS256);
            let min = algorithm.min_secret_bytes();
            if algorithm.uses_secret() && secret.len() < min {
                return Err(ConfigError(format!(
                    "--jwt-secret is {} bytes; {} needs at least {min} (RFC 7518 §3.2: a secret \
                     as long as the hash), e.g. `openssl rand -base64 {min}`",
                    secret.len(),
                    algorithm.as_str(),
                )));
            }
            (KeySource::Secret(secret.clone()), algorithm)
        }
        (None, Some(path)) => {
            let pem = std::fs::read(path)
                .map_err(|e| ConfigError(format!("--jwt-public-key: cannot read {}: {e}", path.display())))?;
            (KeySource::PublicKeyPem(pem), algorithm.unwrap_or(Algorithm::RS256))
        }
    };
    let cfg = AuthConfig {
        key,
        algorithm,
        leeway_secs,
    };
    // Build it once here so a bad key or a key/algorithm mismatch is a config error.
    Authenticator::new(&cfg).map_err(|e| ConfigError(format!("JWT configuration: {e}")))?;
    Ok(Some(cfg))
}

impl Default for Config {
    /// Every documented default, independent of the environment (not even
    /// `RUST_LOG` is read).
    fn default() -> Self {
        let settings = Settings {
            log_level: Some(DEFAULT_LOG_LEVEL.to_string()),
            ..Settings::default()
        };
        Config::resolve(settings, None).expect("defaults are valid")
    }
}

fn positive<T: PartialOrd + Default + Copy>(name: &str, v: T) -> Result<T, ConfigError> {
    if v > T::default() {
        Ok(v)
    } else {
        Err(ConfigError(format!("--{name} must be greater than 0")))
    }
}

/// `IP:PORT`, or `HOST:PORT` resolved (an IPv4 address first: to most
/// clients `localhost` is 127.0.0.1); the host name when there was one.
fn resolve_listen(text: &str) -> Result<(SocketAddr, Option<String>), ConfigError> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok((addr, None));
    }
    use std::net::ToSocketAddrs;
    let bad = |why: String| {
        ConfigError(format!(
            "--listen: cannot use {text:?}: {why} (give IP:PORT or HOST:PORT)"
        ))
    };
    let addrs: Vec<SocketAddr> = text.to_socket_addrs().map_err(|e| bad(e.to_string()))?.collect();
    let addr = addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| bad("the name has no address".into()))?;
    Ok((addr, Some(text.to_string())))
}

/// Rewrites an error about `--key` to name where the value came from: the
/// flag, its `ROOMCAST_*` variable, or the key in the file `path`.
fn attribute(e: ConfigError, argv: &[String], file: Option<(&Path, &Settings)>) -> ConfigError {
    let Some(rest) = e.0.strip_prefix("--") else { return e };
    let key: String = rest
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect();
    let tail = &rest[key.len()..];
    let flag = format!("--{key}");
    let on_command_line = argv.iter().any(|a| *a == flag || a.starts_with(&format!("{flag}=")));
    let env = format!("ROOMCAST_{}", key.to_uppercase().replace('-', "_"));
    let in_file = file.filter(|(_, s)| {
        toml::Value::try_from(*s)
            .ok()
            .and_then(|v| v.as_table().map(|t| t.contains_key(&key)))
            .unwrap_or(false)
    });
    let source = if on_command_line {
        flag
    } else if std::env::var_os(&env).is_some() {
        env
    } else if let Some((path, _)) = in_file {
        format!("{key} in {}", path.display())
    } else {
        flag
    };
    ConfigError(format!("{source}{tail}"))
}

impl Config {
    /// Parses flags and environment, reads `--config` if given, and resolves.
    /// An error names where the bad value came from (a flag, an environment
    /// variable, or the file).
    pub fn from_cli(cli: Cli) -> Result<Config, ConfigError> {
        let from_file = match &cli.config {
            Some(path) => Some(file::load(path)?),
            None => None,
        };
        let argv: Vec<String> = std::env::args().collect();
        let file = cli.config.as_deref().zip(from_file.as_ref());
        Config::resolve(cli.settings.clone(), from_file.clone()).map_err(|e| attribute(e, &argv, file))
    }

    /// Merges the layers (`cli` wins over `file`), fills defaults, validates.
    pub fn resolve(cli: Settings, file: Option<Settings>) -> Result<Config, ConfigError> {
        let s = cli.or(file.unwrap_or_default());
        let (listen, listen_host) = match s.listen.as_deref() {
            Some(text) => resolve_listen(text)?,
            None => (DEFAULT_LISTEN.parse().expect("default address parses"), None),
        };
        let mut derived = Vec::new();
        if s.shards.is_none() {
            derived.push("shards");
        }
        if s.max_connections.is_none() {
            derived.push("max-connections");
        }
        if s.rate_burst.is_none() {
            derived.push("rate-burst");
        }
        let shards = positive("shards", s.shards.unwrap_or_else(default_shards))?;
        let heartbeat_secs = positive("heartbeat-secs", s.heartbeat_secs.unwrap_or(DEFAULT_HEARTBEAT_SECS))?;
        let max_message_bytes = positive(
            "max-message-bytes",
            s.max_message_bytes.unwrap_or(DEFAULT_MAX_MESSAGE_BYTES),
        )?;
        if max_message_bytes < MIN_MESSAGE_BYTES {
            return Err(ConfigError(format!(
                "--max-message-bytes must be at least {MIN_MESSAGE_BYTES}: no message with a room, a user and data fits in less"
            )));
        }
        if max_message_bytes > 1 << 30 {
            return Err(ConfigError(
                "--max-message-bytes must be at most 1073741824 (1 GiB)".into(),
            ));
        }
        let max_queue_bytes = positive("max-queue-bytes", s.max_queue_bytes.unwrap_or(DEFAULT_MAX_QUEUE_BYTES))?;
        let max_connections = positive(
            "max-connections",
            s.max_connections.unwrap_or_else(default_max_connections),
        )?;
        let handshake_timeout_secs = positive(
            "handshake-timeout-secs",
            s.handshake_timeout_secs.unwrap_or(DEFAULT_HANDSHAKE_TIMEOUT_SECS),
        )?;
        let close_timeout_secs = positive(
            "close-timeout-secs",
            s.close_timeout_secs.unwrap_or(DEFAULT_CLOSE_TIMEOUT_SECS),
        )?;
        let log_level = s
            .log_level
            .clone()
            .or_else(|| std::env::var("RUST_LOG").ok().filter(|v| !v.is_empty()))
            .unwrap_or_else(|| DEFAULT_LOG_LEVEL.to_string());
        if tracing_subscriber::EnvFilter::try_new(&log_level).is_err() {
            return Err(ConfigError(format!("--log-level: cannot parse filter {log_level:?}")));
        }
        if shards > MAX_SHARDS {
            return Err(ConfigError(format!("--shards must be at most {MAX_SHARDS}")));
        }
        let auth = resolve_auth(&s)?;
        let history_ttl_secs = s.history_ttl_secs.unwrap_or(DEFAULT_HISTORY_TTL_SECS);
        let history_size = s.history_size.unwrap_or(DEFAULT_HISTORY_SIZE);
        if history_size > MAX_HISTORY_SIZE {
            return Err(ConfigError(format!(
                "--history-size must be at most {MAX_HISTORY_SIZE}"
            )));
        }
        let rooms = RoomRules::new(
            s.rooms.clone().unwrap_or_default(),
            RoomOptions {
                history_size,
                history_ttl: Duration::from_secs(positive("history-ttl-secs", history_ttl_secs)?),
                presence: s.presence.unwrap_or(false),
                join_leave: s.join_leave.unwrap_or(false),
            },
        )?;
        let history_max_bytes = positive(
            "history-max-bytes",
            s.history_max_bytes.unwrap_or(DEFAULT_HISTORY_MAX_BYTES),
        )?;
        // The demo is for trying roomcast out: on by default only in dev mode.
        let demo = s.demo.unwrap_or(auth.is_none());
        // So is /echo: it answers anyone, without a token or a rate limit.
        let echo = s.echo.unwrap_or(auth.is_none());
        let max_connections_per_ip = s
            .max_connections_per_ip
            .map(|n| positive("max-connections-per-ip", n))
            .transpose()?;
        if auth.is_none() && !listen.ip().is_loopback() {
            return Err(ConfigError(format!(
                "refusing to listen on {listen} without --jwt-secret or --jwt-public-key: \
                 dev mode (anonymous users) is loopback-only"
            )));
        }
        let log_format = match s.log_format.as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(ConfigError(format!(
                    "--log-format must be \"text\" or \"json\", not {other:?}"
                )))
            }
        };
        if s.api_key.as_deref() == Some("") {
            return Err(ConfigError("--api-key must not be empty".into()));
        }
        let stats_secs = s.stats_interval_secs.unwrap_or(DEFAULT_STATS_INTERVAL_SECS);
        let shutdown_timeout_secs = s.shutdown_timeout_secs.unwrap_or(DEFAULT_SHUTDOWN_TIMEOUT_SECS);
        let endpoint = match (&s.redis_url, &s.redis_cluster_nodes) {
            (Some(_), Some(_)) => {
                return Err(ConfigError(
                    "--redis-url and --redis-cluster-nodes exclude each other: one Redis, or a Redis Cluster".into(),
                ))
            }
            (Some(url), None) => {
                if redis::IntoConnectionInfo::into_connection_info(url.as_str()).is_err()
                    || !(url.starts_with("redis://") || url.starts_with("rediss://"))
                {
                    return Err(ConfigError(format!(
                        "--redis-url: {url:?} is not a redis://host:port or rediss://host:port URL"
                    )));
                }
                Some(RedisEndpoint::One(url.clone()))
            }
            (None, Some(list)) => Some(RedisEndpoint::Cluster(cluster_seeds(list)?)),
            (None, None) => None,
        };
        let redis = match endpoint {
            None => None,
            Some(endpoint) => {
                let url = endpoint.url();
                let tls = url.starts_with("rediss://");
                if url.contains("#insecure") {
                    return Err(ConfigError(
                        "--redis-url: #insecure (no certificate check) is not supported: give Redis's CA with --redis-tls-ca".into(),
                    ));
                }
                let tls_ca = match (&s.redis_tls_ca, tls) {
                    (Some(_), false) => {
                        return Err(ConfigError(
                            "--redis-tls-ca needs a rediss:// --redis-url (or rediss:// cluster nodes)".into(),
                        ));
                    }
                    (ca, true) => {
                        // The roots are read here, so a bad file stops the start.
                        crate::tls::client::roots(ca.as_deref())
                            .map_err(|e| ConfigError(format!("--redis-tls-ca: {e}")))?;
                        ca.clone()
                    }
                    (None, false) => None,
                };
                let prefix = s
                    .redis_prefix
                    .clone()
                    .unwrap_or_else(|| DEFAULT_REDIS_PREFIX.to_string());
                if prefix.is_empty() || prefix.contains(['{', '}', ' ']) {
                    return Err(ConfigError(
                        "--redis-prefix must be non-empty, without braces or spaces".into(),
                    ));
                }
                let buffer_messages = s.redis_buffer_messages.unwrap_or(DEFAULT_REDIS_BUFFER_MESSAGES);
                let wait = s
                    .redis_resubscribe_wait_secs
                    .unwrap_or(DEFAULT_REDIS_RESUBSCRIBE_WAIT_SECS);
                Some(RedisConfig {
                    endpoint,
                    prefix,
                    buffer_messages,
                    presence_refresh: None,
                    resubscribe_wait: Duration::from_secs(wait),
                    tls_ca,
                })
            }
        };
        let rate_limit = positive("rate-limit", s.rate_limit.unwrap_or(DEFAULT_RATE_LIMIT))?;
        let rate_burst = positive("rate-burst", s.rate_burst.unwrap_or(rate_limit.saturating_mul(2)))?;
        let max_rooms_per_connection = positive(
            "max-rooms-per-connection",
            s.max_rooms_per_connection.unwrap_or(DEFAULT_MAX_ROOMS_PER_CONNECTION),
        )?;
        let presence_refresh = Duration::from_secs(positive(
            "presence-refresh-secs",
            s.presence_refresh_secs.unwrap_or(DEFAULT_PRESENCE_REFRESH_SECS),
        )?);
        let allowed_origins = match &s.allowed_origins {
            Some(list) => {
                crate::auth::OriginPolicy::parse(list).map_err(|e| ConfigError(format!("--allowed-origins: {e}")))?
            }
            // Dev mode: no page on the internet may reach a developer's broker.
            None if auth.is_none() => {
                crate::auth::OriginPolicy::parse(crate::auth::LOOPBACK_ORIGINS).expect("the loopback origins parse")
            }
            // Tokens are not ambient credentials: a page cannot use one it does not have.
            None => crate::auth::OriginPolicy::Any,
        };
        let trusted_proxies = match &s.trusted_proxies {
            Some(list) => crate::limits::TrustedProxies::parse(list)
                .map_err(|e| ConfigError(format!("--trusted-proxies: {e}")))?,
            None => crate::limits::TrustedProxies::default(),
        };
        let tls = match (&s.tls_cert, &s.tls_key) {
            (Some(cert), Some(key)) => {
                let files = crate::tls::Files {
                    cert: cert.clone(),
                    key: key.clone(),
                };
                // Refused here, with the reason, rather than at the first client.
                crate::tls::Acceptor::new(&files).map_err(|e| ConfigError(format!("--tls-cert/--tls-key: {e}")))?;
                Some(files)
            }
            (None, None) => None,
            (Some(_), None) => return Err(ConfigError("--tls-cert needs --tls-key".into())),
            (None, Some(_)) => return Err(ConfigError("--tls-key needs --tls-cert".into())),
        };
        let mut redis = redis;
        if let Some(r) = &mut redis {
            r.presence_refresh = rooms.any_presence().then_some(presence_refresh);
        }
        Ok(Config {
            listen,
            listen_host,
            derived,
            shards,
            heartbeat: Duration::from_secs(heartbeat_secs),
            max_message_bytes,
            max_connections,
            max_queue_bytes,
            handshake_timeout: Duration::from_secs(handshake_timeout_secs),
            close_timeout: Duration::from_secs(close_timeout_secs),
            auth,
            rate_limit,
            rate_burst,
            max_rooms_per_connection,
            jwt_public_key_path: s.jwt_public_key.clone(),
            api_key: s.api_key.clone(),
            stats_interval: (stats_secs > 0).then(|| Duration::from_secs(stats_secs)),
            shutdown_timeout: Duration::from_secs(shutdown_timeout_secs),
            log_format,
            demo,
            echo,
            max_connections_per_ip,
            redis,
            log_level,
            rooms,
            history_max_bytes,
            allowed_origins,
            trusted_proxies,
            presence_max_users: positive(
                "presence-max-users",
                s.presence_max_users.unwrap_or(DEFAULT_PRESENCE_MAX_USERS),
            )?,
            presence_refresh,
            tls,
            compression: s.compression.unwrap_or(false),
        })
    }
}

/// One shard per CPU.
pub fn default_shards() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(MAX_SHARDS)
}

/// The open-file limit less what the process needs besides clients, capped.
pub fn default_max_connections() -> usize {
    let nofile = std::fs::read_to_string("/proc/self/limits").ok().and_then(|s| {
        s.lines()
            .find(|l| l.starts_with("Max open files"))
            .and_then(|l| l.split_whitespace().nth(3))
            .and_then(|v| v.parse::<usize>().ok())
    });
    match nofile {
        Some(n) if n > RESERVED_FDS * 2 => (n - RESERVED_FDS).min(DEFAULT_MAX_CONNECTIONS_CAP),
        _ => 1024,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_documented_ones() {
        let c = Config::default();
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(c.heartbeat, Duration::from_secs(30));
        assert_eq!(c.max_message_bytes, 65536);
        assert!(c.shards >= 1);
    }

    #[test]
    fn cli_wins_over_file() {
        let cli = Settings {
            shards: Some(3),
            ..Settings::default()
        };
        let file = Settings {
            shards: Some(5),
            heartbeat_secs: Some(7),
            ..Settings::default()
        };
        let c = Config::resolve(cli, Some(file)).unwrap();
        assert_eq!(c.shards, 3);
        assert_eq!(c.heartbeat, Duration::from_secs(7));
    }

    #[test]
    fn zero_values_are_refused_with_the_option_name() {
        let bad = Settings {
            heartbeat_secs: Some(0),
            ..Settings::default()
        };
        let err = Config::resolve(bad, None).unwrap_err().to_string();
        assert!(err.contains("--heartbeat-secs"), "{err}");
    }
}
