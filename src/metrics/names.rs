//! Every metric name roomcast exports, in one place (documented in
//! `docs/operations.md`).

/// Gauge: open WebSocket connections, all shards.
pub const CONNECTIONS: &str = "roomcast_connections";
/// Gauge: open WebSocket connections per shard (`shard` label).
pub const SHARD_CONNECTIONS: &str = "roomcast_shard_connections";
/// Counter: WebSocket connections ever upgraded.
pub const CONNECTIONS_TOTAL: &str = "roomcast_connections_total";
/// Counter: TCP connections accepted (before any HTTP).
pub const ACCEPTED_TOTAL: &str = "roomcast_accepted_total";
/// Gauge: rooms with members, summed over shards (a room with members on
/// several shards counts once per shard).
pub const ROOMS: &str = "roomcast_rooms";
/// Counter: tokens refused (upgrade, refresh, expiry while connected).
pub const AUTH_FAILURES_TOTAL: &str = "roomcast_auth_failures_total";
/// Counter: data messages received from clients.
pub const MESSAGES_RECEIVED_TOTAL: &str = "roomcast_messages_received_total";
/// Counter: frames queued to clients.
pub const DELIVERIES_TOTAL: &str = "roomcast_deliveries_total";
/// Counter: bytes written to client sockets.
pub const BYTES_SENT_TOTAL: &str = "roomcast_bytes_sent_total";
/// Counter: bytes read from client sockets.
pub const BYTES_RECEIVED_TOTAL: &str = "roomcast_bytes_received_total";
/// Counter: things dropped, by `reason`.
pub const DROPPED_TOTAL: &str = "roomcast_dropped_total";
/// Counter: WebSocket connections closed, by close `code`.
pub const CLOSES_TOTAL: &str = "roomcast_closes_total";
/// Counter: HTTP responses that were not upgrades, by `status`.
pub const HTTP_RESPONSES_TOTAL: &str = "roomcast_http_responses_total";
/// Gauge: resident memory of the process, bytes.
pub const RESIDENT_MEMORY_BYTES: &str = "roomcast_process_resident_memory_bytes";
/// Gauge (always 1): build information in labels.
pub const BUILD_INFO: &str = "roomcast_build_info";
