//! Latency histograms of nanosecond samples: hdrhistogram's, with three
//! significant digits (a reported percentile is within 0.1 % of the truth)
//! and constant memory, one increment per sample.

/// Counts of nanosecond samples.
pub type Histogram = hdrhistogram::Histogram<u64>;

/// Longest latency told apart: one hour (longer samples count as an hour).
const MAX_NS: u64 = 3_600 * 1_000_000_000;

/// An empty histogram from 1 ns to an hour.
pub fn new() -> Histogram {
    Histogram::new_with_bounds(1, MAX_NS, 3).expect("valid bounds and precision")
}

#[cfg(test)]
mod tests {
    #[test]
    fn quantiles_are_within_a_tenth_of_a_percent() {
        let mut h = super::new();
        for v in 1..=100_000u64 {
            h.saturating_record(v * 1_000);
        }
        h.saturating_record(u64::MAX);
        assert_eq!(h.len(), 100_001, "a huge sample is kept, as an hour");
        let p50 = h.value_at_quantile(0.5) as f64;
        assert!((p50 / 50_000_000.0 - 1.0).abs() < 0.001, "{p50}");
        assert!(h.max() >= super::MAX_NS);
    }
}
