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
/// Gauge: rooms with members on this node, each counted once.
pub const ROOMS: &str = "roomcast_rooms";
/// Gauge: bytes queued for clients in roomcast (not yet taken by the
/// kernel), sampled every sweep.
pub const QUEUED_BYTES: &str = "roomcast_queued_bytes";
/// Gauge: messages held in room history.
pub const HISTORY_MESSAGES: &str = "roomcast_history_messages";
/// Gauge: bytes of room history.
pub const HISTORY_BYTES: &str = "roomcast_history_bytes";
/// Counter: joins with `since`, by result (`recovered`, `gap`).
pub const RECOVERIES_TOTAL: &str = "roomcast_recoveries_total";
/// Counter: messages replayed to recovering members.
pub const REPLAYED_TOTAL: &str = "roomcast_replayed_messages_total";
/// Counter: messages dropped from history for `--history-max-bytes`.
pub const HISTORY_EVICTED_TOTAL: &str = "roomcast_history_evicted_total";
/// Gauge: users present in rooms that track presence (a user in two rooms
/// counts twice).
pub const PRESENCE_USERS: &str = "roomcast_presence_users";
/// Counter: presence queries answered.
pub const PRESENCE_QUERIES_TOTAL: &str = "roomcast_presence_queries_total";
/// Counter: `joined` and `left` events sent, by `event`.
pub const PRESENCE_EVENTS_TOTAL: &str = "roomcast_presence_events_total";
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
/// Counter: frames delivered compressed (permessage-deflate), one per
/// recipient.
pub const COMPRESSED_DELIVERIES_TOTAL: &str = "roomcast_compressed_deliveries_total";
/// Counter: TLS handshakes completed (with `--tls-cert`).
pub const TLS_HANDSHAKES_TOTAL: &str = "roomcast_tls_handshakes_total";
/// Counter: TLS handshakes failed, by `reason` (`plain_http`, `alert`,
/// `protocol`, `closed`, `timeout`).
pub const TLS_HANDSHAKE_FAILURES_TOTAL: &str = "roomcast_tls_handshake_failures_total";
/// Counter: certificate reloads on SIGHUP, by `result` (`ok`, `error`).
pub const TLS_RELOADS_TOTAL: &str = "roomcast_tls_reloads_total";
/// Gauge: resident memory of the process, bytes.
pub const RESIDENT_MEMORY_BYTES: &str = "roomcast_process_resident_memory_bytes";
/// Gauge (always 1): build information in labels.
pub const BUILD_INFO: &str = "roomcast_build_info";
/// Gauge: 1 while the Redis link is connected and delivering probes.
pub const REDIS_LINK_UP: &str = "roomcast_redis_link_up";
/// Counter: messages published to Redis.
pub const REDIS_MESSAGES_OUT_TOTAL: &str = "roomcast_redis_messages_out_total";
/// Counter: messages from other nodes received through Redis.
pub const REDIS_MESSAGES_IN_TOTAL: &str = "roomcast_redis_messages_in_total";
/// Gauge: messages waiting in the outage buffer.
pub const REDIS_BUFFER_DEPTH: &str = "roomcast_redis_buffer_depth";
/// Gauge: 1 while the outage buffer waits for nodes to re-subscribe.
pub const REDIS_FLUSH_WAITING: &str = "roomcast_redis_flush_waiting";
/// Counter: messages published after an outage that fewer nodes received
/// than were subscribed before it.
pub const REDIS_UNCONFIRMED_TOTAL: &str = "roomcast_redis_unconfirmed_total";
/// Counter: publishes, joins and queries of rooms with history that Redis
/// could not serve (answered `unavailable`).
pub const HISTORY_STORE_ERRORS_TOTAL: &str = "roomcast_history_store_errors_total";
/// Counter: reconnections after a failure.
pub const REDIS_RECONNECTS_TOTAL: &str = "roomcast_redis_reconnects_total";
/// Gauge: publish-to-receive lag of the last probe, seconds.
pub const REDIS_PROBE_LAG_SECONDS: &str = "roomcast_redis_probe_lag_seconds";
/// Gauge: Redis channels subscribed.
pub const REDIS_SUBSCRIPTIONS: &str = "roomcast_redis_subscriptions";
/// Per Redis node the subscriber uses (`node="host:port"`): 1 while its
/// subscriptions are in place and it answers.
pub const REDIS_SHARD_UP: &str = "roomcast_redis_shard_up";
/// Per Redis node: channels subscribed there.
pub const REDIS_SHARD_SUBSCRIPTIONS: &str = "roomcast_redis_shard_subscriptions";
/// Per Redis node: messages received from it.
pub const REDIS_SHARD_MESSAGES_IN_TOTAL: &str = "roomcast_redis_shard_messages_in_total";
