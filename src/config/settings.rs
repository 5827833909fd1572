//! What one configuration layer says: every field optional, shared by the
//! command line (with `ROOMCAST_*` environment fallbacks) and the TOML file so
//! the two can never drift apart.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::rooms::RoomSection;

/// `true` or `false`, listed in the error for anything else.
fn bool_value() -> impl clap::builder::TypedValueParser<Value = bool> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(["true", "false"]).map(|v| v == "true")
}

/// The `roomcast` command line.
#[derive(Debug, clap::Parser)]
#[command(name = "roomcast", version, about = "A high-performance WebSocket message broker")]
pub struct Cli {
    /// TOML configuration file; its keys are the long option names
    #[arg(long, env = "ROOMCAST_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Print the effective configuration as TOML (secrets left out) and exit
    #[arg(long)]
    pub print_config: bool,

    /// The options themselves.
    #[command(flatten)]
    pub settings: Settings,
}

/// Options a layer may set; `None` means "not said here".
#[derive(Debug, Default, Clone, PartialEq, Eq, clap::Args, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Settings {
    /// Address to listen on for WebSocket and HTTP, IP:PORT or HOST:PORT (a host name is resolved) [default: 127.0.0.1:8080]
    #[arg(long, env = "ROOMCAST_LISTEN", value_name = "ADDR")]
    pub listen: Option<String>,

    /// Number of shard threads (event loops) [default: number of CPUs]
    #[arg(long, env = "ROOMCAST_SHARDS", value_name = "N")]
    pub shards: Option<usize>,

    /// Seconds between heartbeat pings; a client silent for two intervals is cut [default: 30]
    #[arg(long, env = "ROOMCAST_HEARTBEAT_SECS", value_name = "N")]
    pub heartbeat_secs: Option<u64>,

    /// Largest message a client may send; bigger ones are closed with 1009 [default: 65536]
    #[arg(long, env = "ROOMCAST_MAX_MESSAGE_BYTES", value_name = "N")]
    pub max_message_bytes: Option<usize>,

    /// Most open connections; more are closed with 1013 [default: open-file limit - 64, at most 100000]
    #[arg(long, env = "ROOMCAST_MAX_CONNECTIONS", value_name = "N")]
    pub max_connections: Option<usize>,

    /// Most connections from one client address (IP); more are refused like those over --max-connections [default: off]
    #[arg(long, env = "ROOMCAST_MAX_CONNECTIONS_PER_IP", value_name = "N")]
    pub max_connections_per_ip: Option<usize>,

    /// Largest outbox per connection; past it the client is cut with 4008 [default: 1048576]
    #[arg(long, env = "ROOMCAST_MAX_QUEUE_BYTES", value_name = "N")]
    pub max_queue_bytes: Option<usize>,

    /// Seconds a client has to complete the HTTP upgrade [default: 10]
    #[arg(long, env = "ROOMCAST_HANDSHAKE_TIMEOUT_SECS", value_name = "N")]
    pub handshake_timeout_secs: Option<u64>,

    /// Seconds a client has to answer our close frame [default: 5]
    #[arg(long, env = "ROOMCAST_CLOSE_TIMEOUT_SECS", value_name = "N")]
    pub close_timeout_secs: Option<u64>,

    /// Shared secret for HS256/384/512 JWTs; without a key roomcast runs in loopback-only dev mode
    #[arg(long, env = "ROOMCAST_JWT_SECRET", value_name = "SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// PEM public key file for RS256/ES256 JWTs (instead of --jwt-secret)
    #[arg(long, env = "ROOMCAST_JWT_PUBLIC_KEY", value_name = "FILE")]
    pub jwt_public_key: Option<PathBuf>,

    /// JWT algorithm: HS256, HS384, HS512, RS256 or ES256 [default: HS256 with a secret, RS256 with a key]
    #[arg(long, env = "ROOMCAST_JWT_ALGORITHM", value_name = "ALG")]
    pub jwt_algorithm: Option<String>,

    /// Clock skew allowed when checking a token's exp and nbf, in seconds [default: 30]
    #[arg(long, env = "ROOMCAST_JWT_LEEWAY_SECS", value_name = "N")]
    pub jwt_leeway_secs: Option<u64>,

    /// Inbound messages per second allowed per connection [default: 100]
    #[arg(long, env = "ROOMCAST_RATE_LIMIT", value_name = "N")]
    pub rate_limit: Option<u32>,

    /// Burst of inbound messages allowed above the rate [default: 2 x --rate-limit]
    #[arg(long, env = "ROOMCAST_RATE_BURST", value_name = "N")]
    pub rate_burst: Option<u32>,

    /// Most rooms one connection may be in at once [default: 1024]
    #[arg(long, env = "ROOMCAST_MAX_ROOMS_PER_CONNECTION", value_name = "N")]
    pub max_rooms_per_connection: Option<usize>,

    /// Bearer key for the backend HTTP API (POST /api/publish); without one the API answers 404
    #[arg(long, env = "ROOMCAST_API_KEY", value_name = "KEY", hide_env_values = true)]
    pub api_key: Option<String>,

    /// Seconds between stats log lines; 0 disables them [default: 60]
    #[arg(long, env = "ROOMCAST_STATS_INTERVAL_SECS", value_name = "N")]
    pub stats_interval_secs: Option<u64>,

    /// Seconds to wait for clients to close on SIGTERM/SIGINT before exiting [default: 10]
    #[arg(long, env = "ROOMCAST_SHUTDOWN_TIMEOUT_SECS", value_name = "N")]
    pub shutdown_timeout_secs: Option<u64>,

    /// Log format: "text" for people or "json" for machines [default: text]
    #[arg(long, env = "ROOMCAST_LOG_FORMAT", value_name = "FORMAT")]
    pub log_format: Option<String>,

    /// Redis URL (redis://[user:pass@]host:port, or rediss:// for TLS) linking several nodes; none runs a single node [default: none]
    #[arg(long, env = "ROOMCAST_REDIS_URL", value_name = "URL", hide_env_values = true)]
    pub redis_url: Option<String>,

    /// Seed nodes of a Redis Cluster, host:port,host:port,... (or redis://[user:pass@]host:port, rediss:// for TLS: the first one's credentials and scheme apply to every node): sharded pub/sub over the cluster instead of one Redis; not with --redis-url [default: none]
    #[arg(
        long,
        env = "ROOMCAST_REDIS_CLUSTER_NODES",
        value_name = "NODES",
        hide_env_values = true
    )]
    pub redis_cluster_nodes: Option<String>,

    /// Namespace of every Redis channel, so clusters can share one Redis [default: roomcast]
    #[arg(long, env = "ROOMCAST_REDIS_PREFIX", value_name = "PREFIX")]
    pub redis_prefix: Option<String>,

    /// Messages kept while Redis is unreachable; more are dropped and counted [default: 10000]
    #[arg(long, env = "ROOMCAST_REDIS_BUFFER_MESSAGES", value_name = "N")]
    pub redis_buffer_messages: Option<usize>,

    /// After a Redis outage, longest wait for the nodes that were subscribed to re-subscribe before the buffer is flushed anyway [default: 10]
    #[arg(long, env = "ROOMCAST_REDIS_RESUBSCRIBE_WAIT_SECS", value_name = "N")]
    pub redis_resubscribe_wait_secs: Option<u64>,

    /// Serve the demo chat page at / [default: on in dev mode, off with a JWT key]
    #[arg(long, env = "ROOMCAST_DEMO", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true", value_parser = bool_value())]
    pub demo: Option<bool>,

    /// Serve the /echo WebSocket endpoint, for conformance checks (unauthenticated, no rate limit) [default: on in dev mode, off with a JWT key]
    #[arg(long, env = "ROOMCAST_ECHO", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true", value_parser = bool_value())]
    pub echo: Option<bool>,

    /// Log filter, e.g. "info" or "roomcast=debug"; RUST_LOG is used when unset [default: info]
    #[arg(long, env = "ROOMCAST_LOG_LEVEL", value_name = "FILTER")]
    pub log_level: Option<String>,

    /// Messages kept per room, for rooms no [[rooms]] section matches; 0: no history [default: 0]
    #[arg(long, env = "ROOMCAST_HISTORY_SIZE", value_name = "N")]
    pub history_size: Option<usize>,

    /// Seconds a room's history lives after its last publish, for rooms no [[rooms]] section matches [default: 300]
    #[arg(long, env = "ROOMCAST_HISTORY_TTL_SECS", value_name = "N")]
    pub history_ttl_secs: Option<u64>,

    /// Memory for history on one node, all rooms together; past it the rooms idle longest lose theirs [default: 268435456]
    #[arg(long, env = "ROOMCAST_HISTORY_MAX_BYTES", value_name = "N")]
    pub history_max_bytes: Option<usize>,

    /// Members may ask who is in a room (presence), for rooms no [[rooms]] section matches [default: false]
    #[arg(long, env = "ROOMCAST_PRESENCE", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true", value_parser = bool_value())]
    pub presence: Option<bool>,

    /// Members receive joined/left events, for rooms no [[rooms]] section matches [default: false]
    #[arg(long, env = "ROOMCAST_JOIN_LEAVE", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true", value_parser = bool_value())]
    pub join_leave: Option<bool>,

    /// Most users a presence answer lists; past it the answer says "truncated" [default: 1000]
    #[arg(long, env = "ROOMCAST_PRESENCE_MAX_USERS", value_name = "N")]
    pub presence_max_users: Option<usize>,

    /// Seconds between a node's refreshes of its presence in Redis; a node that dies is gone from every room within 3 of them [default: 10]
    #[arg(long, env = "ROOMCAST_PRESENCE_REFRESH_SECS", value_name = "N")]
    pub presence_refresh_secs: Option<u64>,

    /// Web origins allowed to open a WebSocket, comma-separated (https://app.example.com, https://*.example.com, http://localhost:*), or * for any; clients that send no Origin are always allowed [default: this machine's pages in dev mode, any with a JWT key]
    #[arg(long, env = "ROOMCAST_ALLOWED_ORIGINS", value_name = "LIST")]
    pub allowed_origins: Option<String>,

    /// Proxies (addresses or CIDRs, comma-separated) whose Forwarded / X-Forwarded-For headers name the client, for logs and --max-connections-per-ip [default: none: the headers are ignored]
    #[arg(long, env = "ROOMCAST_TRUSTED_PROXIES", value_name = "CIDRS")]
    pub trusted_proxies: Option<String>,

    /// Accept permessage-deflate from clients that offer it (browsers do): room messages are compressed once per publish, for every member that negotiated it [default: false]
    #[arg(long, env = "ROOMCAST_COMPRESSION", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true", value_parser = bool_value())]
    pub compression: Option<bool>,

    /// PEM certificate(s) of the CA that signed Redis's certificate, for a rediss:// --redis-url [default: the system's trusted roots]
    #[arg(long, env = "ROOMCAST_REDIS_TLS_CA", value_name = "FILE")]
    pub redis_tls_ca: Option<PathBuf>,

    /// PEM certificate chain (leaf first): the listener speaks TLS (wss://, https://); SIGHUP reloads it [default: none: plain TCP]
    #[arg(long, env = "ROOMCAST_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert (PKCS#8, RSA or EC)
    #[arg(long, env = "ROOMCAST_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,

    /// Options per room pattern: `[[rooms]]` sections, in the TOML file only (last: TOML writes tables after values)
    #[arg(skip)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rooms: Option<Vec<RoomSection>>,
}

impl Settings {
    /// This layer, with `lower` filling what it leaves unsaid.
    pub fn or(self, lower: Settings) -> Settings {
        Settings {
            listen: self.listen.or(lower.listen),
            shards: self.shards.or(lower.shards),
            heartbeat_secs: self.heartbeat_secs.or(lower.heartbeat_secs),
            max_message_bytes: self.max_message_bytes.or(lower.max_message_bytes),
            max_connections: self.max_connections.or(lower.max_connections),
            max_queue_bytes: self.max_queue_bytes.or(lower.max_queue_bytes),
            handshake_timeout_secs: self.handshake_timeout_secs.or(lower.handshake_timeout_secs),
            close_timeout_secs: self.close_timeout_secs.or(lower.close_timeout_secs),
            jwt_secret: self.jwt_secret.or(lower.jwt_secret),
            jwt_public_key: self.jwt_public_key.or(lower.jwt_public_key),
            jwt_algorithm: self.jwt_algorithm.or(lower.jwt_algorithm),
            jwt_leeway_secs: self.jwt_leeway_secs.or(lower.jwt_leeway_secs),
            rate_limit: self.rate_limit.or(lower.rate_limit),
            rate_burst: self.rate_burst.or(lower.rate_burst),
            max_rooms_per_connection: self.max_rooms_per_connection.or(lower.max_rooms_per_connection),
            api_key: self.api_key.or(lower.api_key),
            stats_interval_secs: self.stats_interval_secs.or(lower.stats_interval_secs),
            shutdown_timeout_secs: self.shutdown_timeout_secs.or(lower.shutdown_timeout_secs),
            log_format: self.log_format.or(lower.log_format),
            redis_url: self.redis_url.or(lower.redis_url),
            redis_cluster_nodes: self.redis_cluster_nodes.or(lower.redis_cluster_nodes),
            redis_prefix: self.redis_prefix.or(lower.redis_prefix),
            redis_buffer_messages: self.redis_buffer_messages.or(lower.redis_buffer_messages),
            redis_resubscribe_wait_secs: self.redis_resubscribe_wait_secs.or(lower.redis_resubscribe_wait_secs),
            demo: self.demo.or(lower.demo),
            echo: self.echo.or(lower.echo),
            max_connections_per_ip: self.max_connections_per_ip.or(lower.max_connections_per_ip),
            log_level: self.log_level.or(lower.log_level),
            history_size: self.history_size.or(lower.history_size),
            history_ttl_secs: self.history_ttl_secs.or(lower.history_ttl_secs),
            history_max_bytes: self.history_max_bytes.or(lower.history_max_bytes),
            allowed_origins: self.allowed_origins.or(lower.allowed_origins),
            trusted_proxies: self.trusted_proxies.or(lower.trusted_proxies),
            presence: self.presence.or(lower.presence),
            join_leave: self.join_leave.or(lower.join_leave),
            presence_max_users: self.presence_max_users.or(lower.presence_max_users),
            presence_refresh_secs: self.presence_refresh_secs.or(lower.presence_refresh_secs),
            compression: self.compression.or(lower.compression),
            redis_tls_ca: self.redis_tls_ca.or(lower.redis_tls_ca),
            tls_cert: self.tls_cert.or(lower.tls_cert),
            tls_key: self.tls_key.or(lower.tls_key),
            rooms: self.rooms.or(lower.rooms),
        }
    }
}
