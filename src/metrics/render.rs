//! Prometheus text exposition (format 0.0.4) of a [`Registry`].

use std::fmt::Write;
use std::sync::atomic::Ordering::Relaxed;

use super::link::RedisShard;
use super::names::*;
use super::{DropReason, LinkState, Registry, ShardMetrics, CLOSE_CODES, HTTP_STATUSES};

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn sum(reg: &Registry, f: impl Fn(&ShardMetrics) -> u64) -> u64 {
    reg.shards.iter().map(|s| f(s)).sum()
}

/// A counter labelled by numeric codes; code 0 is the `other` bucket.
fn by_code(out: &mut String, name: &str, help: &str, key: &str, codes: &[u16], value: impl Fn(usize) -> u64) {
    header(out, name, "counter", help);
    for (i, code) in codes.iter().enumerate() {
        let label = if *code == 0 {
            "other".to_string()
        } else {
            code.to_string()
        };
        let _ = writeln!(out, "{name}{{{key}=\"{label}\"}} {}", value(i));
    }
}

/// Reads one counter out of a shard's block.
type Read = fn(&ShardMetrics) -> u64;

/// Renders every metric (and the Redis link's, if any); the cost is a few
/// loads per shard, not per connection.
pub fn render(reg: &Registry, link: Option<&LinkState>) -> String {
    let mut out = String::with_capacity(4096);
    header(&mut out, CONNECTIONS, "gauge", "Open WebSocket connections.");
    let _ = writeln!(out, "{CONNECTIONS} {}", reg.connections());
    header(
        &mut out,
        SHARD_CONNECTIONS,
        "gauge",
        "Open WebSocket connections per shard.",
    );
    for (i, s) in reg.shards.iter().enumerate() {
        let _ = writeln!(out, "{SHARD_CONNECTIONS}{{shard=\"{i}\"}} {}", s.connections.get());
    }
    header(&mut out, ROOMS, "gauge", "Rooms with members on this node.");
    let _ = writeln!(out, "{ROOMS} {}", sum(reg, |s| s.rooms.get()));
    let help = "Bytes queued for clients, not yet taken by the kernel (sampled every 250 ms).";
    header(&mut out, QUEUED_BYTES, "gauge", help);
    let _ = writeln!(out, "{QUEUED_BYTES} {}", sum(reg, |s| s.queued_bytes.get()));
    header(
        &mut out,
        HISTORY_MESSAGES,
        "gauge",
        "Messages held in room history (sampled every 250 ms).",
    );
    let _ = writeln!(out, "{HISTORY_MESSAGES} {}", sum(reg, |s| s.history_messages.get()));
    header(
        &mut out,
        HISTORY_BYTES,
        "gauge",
        "Bytes of room history, frames and bookkeeping.",
    );
    let _ = writeln!(out, "{HISTORY_BYTES} {}", sum(reg, |s| s.history_bytes.get()));
    header(&mut out, RECOVERIES_TOTAL, "counter", "Joins with `since`, by result.");
    let _ = writeln!(
        out,
        "{RECOVERIES_TOTAL}{{result=\"recovered\"}} {}",
        sum(reg, |s| s.recovered.get())
    );
    let _ = writeln!(
        out,
        "{RECOVERIES_TOTAL}{{result=\"gap\"}} {}",
        sum(reg, |s| s.recovery_gaps.get())
    );
    header(
        &mut out,
        PRESENCE_USERS,
        "gauge",
        "Users present in rooms that track presence, each room counted (sampled every 250 ms).",
    );
    let _ = writeln!(out, "{PRESENCE_USERS} {}", sum(reg, |s| s.presence_users.get()));
    header(
        &mut out,
        PRESENCE_EVENTS_TOTAL,
        "counter",
        "joined and left events sent.",
    );
    for (event, read) in [
        ("joined", (|s| s.joined_events.get()) as Read),
        ("left", |s| s.left_events.get()),
    ] {
        let _ = writeln!(out, "{PRESENCE_EVENTS_TOTAL}{{event=\"{event}\"}} {}", sum(reg, read));
    }
    let counters: [(&str, &str, Read); 10] = [
        (PRESENCE_QUERIES_TOTAL, "Presence queries answered.", |s| {
            s.presence_queries.get()
        }),
        (REPLAYED_TOTAL, "Messages replayed to recovering members.", |s| {
            s.replayed.get()
        }),
        (
            HISTORY_EVICTED_TOTAL,
            "Messages dropped from history to stay within --history-max-bytes.",
            |s| s.history_evicted.get(),
        ),
        (AUTH_FAILURES_TOTAL, "Tokens refused.", |s| s.auth_failures.get()),
        (CONNECTIONS_TOTAL, "WebSocket connections upgraded.", |s| {
            s.connections_total.get()
        }),
        (MESSAGES_RECEIVED_TOTAL, "Data messages received from clients.", |s| {
            s.messages_received.get()
        }),
        (DELIVERIES_TOTAL, "Frames queued to clients.", |s| s.deliveries.get()),
        (
            COMPRESSED_DELIVERIES_TOTAL,
            "Frames queued to clients compressed (permessage-deflate).",
            |s| s.compressed_deliveries.get(),
        ),
        (BYTES_SENT_TOTAL, "Bytes written to client sockets.", |s| {
            s.bytes_sent.get()
        }),
        (BYTES_RECEIVED_TOTAL, "Bytes read from client sockets.", |s| {
            s.bytes_received.get()
        }),
    ];
    for (name, help, f) in counters {
        header(&mut out, name, "counter", help);
        let _ = writeln!(out, "{name} {}", sum(reg, f));
    }
    header(&mut out, ACCEPTED_TOTAL, "counter", "TCP connections accepted.");
    let _ = writeln!(out, "{ACCEPTED_TOTAL} {}", reg.acceptor.accepted.get());

    header(
        &mut out,
        DROPPED_TOTAL,
        "counter",
        "Messages or connections dropped, by reason.",
    );
    for (i, reason) in DropReason::ALL.iter().enumerate() {
        let mut n = sum(reg, |s| s.dropped[i].get());
        if *reason == DropReason::ChannelFull {
            n += reg.acceptor.channel_full.get();
        }
        if *reason == DropReason::ConnectionLimit {
            n += reg.acceptor.refused.get();
        }
        if *reason == DropReason::LinkBuffer {
            n += link.map_or(0, |l| l.dropped.load(Relaxed));
        }
        if *reason == DropReason::LinkInbound {
            n += link.map_or(0, |l| l.dropped_inbound.load(Relaxed));
        }
        let _ = writeln!(out, "{DROPPED_TOTAL}{{reason=\"{}\"}} {n}", reason.label());
    }
    let help = "WebSocket connections closed, by close code (1006: cut without a close frame).";
    by_code(&mut out, CLOSES_TOTAL, help, "code", &CLOSE_CODES, |i| {
        sum(reg, |s| s.closes[i].get())
    });
    let help = "Plain HTTP responses, by status.";
    by_code(&mut out, HTTP_RESPONSES_TOTAL, help, "status", &HTTP_STATUSES, |i| {
        sum(reg, |s| s.http_responses[i].get())
    });
    if let Some(tls) = &reg.tls {
        header(&mut out, TLS_HANDSHAKES_TOTAL, "counter", "TLS handshakes completed.");
        let _ = writeln!(out, "{TLS_HANDSHAKES_TOTAL} {}", sum(reg, |s| s.tls_handshakes.get()));
        header(
            &mut out,
            TLS_HANDSHAKE_FAILURES_TOTAL,
            "counter",
            "TLS handshakes failed, by reason.",
        );
        for (i, failure) in crate::tls::Failure::ALL.iter().enumerate() {
            let n = sum(reg, |s| s.tls_failures[i].get());
            let _ = writeln!(
                out,
                "{TLS_HANDSHAKE_FAILURES_TOTAL}{{reason=\"{}\"}} {n}",
                failure.label()
            );
        }
        header(
            &mut out,
            TLS_RELOADS_TOTAL,
            "counter",
            "Certificate reloads (SIGHUP), by result.",
        );
        let _ = writeln!(out, "{TLS_RELOADS_TOTAL}{{result=\"ok\"}} {}", tls.reloads.get());
        let _ = writeln!(
            out,
            "{TLS_RELOADS_TOTAL}{{result=\"error\"}} {}",
            tls.reload_failures.get()
        );
    }
    header(
        &mut out,
        RESIDENT_MEMORY_BYTES,
        "gauge",
        "Resident memory of the process in bytes.",
    );
    let _ = writeln!(out, "{RESIDENT_MEMORY_BYTES} {}", resident_memory_bytes().unwrap_or(0));
    if let Some(l) = link {
        let gauges: [(&str, &str, &str, String); 10] = [
            (
                REDIS_LINK_UP,
                "gauge",
                "1 while the Redis link is connected and delivering.",
                u8::from(l.is_up()).to_string(),
            ),
            (
                REDIS_MESSAGES_OUT_TOTAL,
                "counter",
                "Messages published to Redis.",
                l.messages_out.load(Relaxed).to_string(),
            ),
            (
                REDIS_MESSAGES_IN_TOTAL,
                "counter",
                "Messages from other nodes received through Redis.",
                l.messages_in.load(Relaxed).to_string(),
            ),
            (
                REDIS_BUFFER_DEPTH,
                "gauge",
                "Messages waiting in the outage buffer.",
                l.buffer_depth.load(Relaxed).to_string(),
            ),
            (
                REDIS_FLUSH_WAITING,
                "gauge",
                "1 while the outage buffer waits for the nodes subscribed before the outage to re-subscribe.",
                u8::from(l.flush_waiting.load(Relaxed)).to_string(),
            ),
            (
                REDIS_UNCONFIRMED_TOTAL,
                "counter",
                "Messages published after a Redis outage (on a cluster: a lost master or a moved slot) that fewer nodes received than were subscribed before it: other nodes may have missed them.",
                l.unconfirmed.load(Relaxed).to_string(),
            ),
            (
                HISTORY_STORE_ERRORS_TOTAL,
                "counter",
                "Publishes, joins and history queries of rooms with history that Redis could not serve (answered unavailable).",
                l.history_errors.load(Relaxed).to_string(),
            ),
            (
                REDIS_RECONNECTS_TOTAL,
                "counter",
                "Reconnections to Redis after a failure.",
                l.reconnects.load(Relaxed).to_string(),
            ),
            (
                REDIS_PROBE_LAG_SECONDS,
                "gauge",
                "Publish-to-receive lag of the last probe.",
                format!("{:.6}", l.probe_lag_micros.load(Relaxed) as f64 / 1e6),
            ),
            (
                REDIS_SUBSCRIPTIONS,
                "gauge",
                "Redis channels subscribed.",
                l.subscriptions.load(Relaxed).to_string(),
            ),
        ];
        for (name, kind, help, value) in gauges {
            header(&mut out, name, kind, help);
            let _ = writeln!(out, "{name} {value}");
        }
        let shards = l.shards.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let per_shard: [PerShard; 3] = [
            (
                REDIS_SHARD_UP,
                "gauge",
                "Per Redis node the link subscribes on (one Redis, or each master of a cluster it needs): 1 while its subscriptions are in place and it answers.",
                |s| u64::from(s.up),
            ),
            (
                REDIS_SHARD_SUBSCRIPTIONS,
                "gauge",
                "Per Redis node: channels subscribed there.",
                |s| s.subscriptions,
            ),
            (
                REDIS_SHARD_MESSAGES_IN_TOTAL,
                "counter",
                "Per Redis node: messages received from it.",
                |s| s.messages_in,
            ),
        ];
        for (name, kind, help, value) in per_shard {
            header(&mut out, name, kind, help);
            for s in &shards {
                let _ = writeln!(out, "{name}{{node=\"{}\"}} {}", s.node, value(s));
            }
        }
    }
    header(&mut out, BUILD_INFO, "gauge", "Build information.");
    let _ = writeln!(out, "{BUILD_INFO}{{version=\"{}\"}} 1", env!("CARGO_PKG_VERSION"));
    out
}

/// A per-Redis-node series: name, type, help, and its value for a node.
type PerShard = (&'static str, &'static str, &'static str, fn(&RedisShard) -> u64);

/// Resident set size from `/proc/self/statm` (Linux), in bytes.
pub fn resident_memory_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_shards_and_labels_each() {
        let reg = Registry::new(2, false);
        reg.shards[0].connections.add(3);
        reg.shards[1].connections.add(4);
        reg.shards[1].close(1002);
        reg.shards[0].close(3999);
        let text = render(&reg, None);
        assert!(text.contains("\nroomcast_connections 7\n"), "{text}");
        assert!(text.contains("roomcast_shard_connections{shard=\"1\"} 4\n"));
        assert!(text.contains("roomcast_closes_total{code=\"1002\"} 1\n"));
        assert!(text.contains("roomcast_closes_total{code=\"other\"} 1\n"));
    }
}
