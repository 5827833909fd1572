//! The periodic stats line: one log line with the node's vital signs.

use std::time::Instant;

use crate::metrics::render::resident_memory_bytes;
use crate::metrics::Registry;

/// Counters at one instant, to compute rates between two.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    at: Instant,
    received: u64,
    delivered: u64,
}

impl Sample {
    /// Reads the counters now.
    pub fn take(reg: &Registry) -> Sample {
        let sum = |f: fn(&crate::metrics::ShardMetrics) -> u64| reg.shards.iter().map(|s| f(s)).sum();
        Sample {
            at: Instant::now(),
            received: sum(|s| s.messages_received.get()),
            delivered: sum(|s| s.deliveries.get()),
        }
    }
}

/// Logs one line comparing `now` with `before`.
pub fn log(reg: &Registry, before: &Sample, now: &Sample) {
    let secs = now.at.duration_since(before.at).as_secs_f64().max(1e-3);
    let rooms: u64 = reg.shards.iter().map(|s| s.rooms.get()).sum();
    tracing::info!(
        connections = reg.connections(),
        rooms,
        msgs_in_per_sec = ((now.received - before.received) as f64 / secs).round() as u64,
        msgs_out_per_sec = ((now.delivered - before.delivered) as f64 / secs).round() as u64,
        rss_mib = resident_memory_bytes().unwrap_or(0) / (1024 * 1024),
        "stats"
    );
}
