//! Delivery accounting, pure: per receiver and sender, which sequence numbers arrived,
//! so a run can report duplicated and reordered messages (and, against what was sent,
//! lost ones); plus the latency histogram helpers.

use hdrhistogram::Histogram;

/// How many sequence numbers below the highest one seen are remembered exactly.
const WINDOW: u64 = 64;

/// What became of one arrival.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// Higher than anything before from this sender (possibly skipping some).
    InOrder,
    /// Lower than one already seen, and not seen before: it was overtaken.
    Reordered,
    /// Seen before.
    Duplicate,
}

#[derive(Debug, Clone, Copy, Default)]
struct Stream {
    /// One more than the highest sequence number seen; 0 when none.
    next: u64,
    /// Bit `i` set: `next - 1 - i` was seen.
    seen: u64,
    /// Distinct sequence numbers seen.
    unique: u64,
}

/// One receiver's view of every sender's stream.
#[derive(Debug, Clone)]
pub struct SeqTracker {
    streams: Vec<Stream>,
    pub duplicated: u64,
    pub reordered: u64,
}

impl SeqTracker {
    pub fn new(senders: usize) -> Self {
        SeqTracker {
            streams: vec![Stream::default(); senders],
            duplicated: 0,
            reordered: 0,
        }
    }

    /// Record `seq` from `sender` (which must be below the count given to `new`).
    pub fn observe(&mut self, sender: usize, seq: u64) -> Arrival {
        let stream = &mut self.streams[sender];
        if seq >= stream.next {
            let advance = seq - stream.next + 1;
            stream.seen = if advance >= WINDOW {
                0
            } else {
                stream.seen << advance
            } | 1;
            stream.next = seq + 1;
            stream.unique += 1;
            return Arrival::InOrder;
        }
        let age = stream.next - 1 - seq;
        if age < WINDOW && stream.seen & (1 << age) != 0 {
            self.duplicated += 1;
            return Arrival::Duplicate;
        }
        // Older than the window cannot be told from a duplicate; a stream that far
        // out of order is broken anyway, and it is reported as reordered.
        if age < WINDOW {
            stream.seen |= 1 << age;
        }
        stream.unique += 1;
        self.reordered += 1;
        Arrival::Reordered
    }

    /// Distinct messages seen from `sender`.
    pub fn unique(&self, sender: usize) -> u64 {
        self.streams[sender].unique
    }
}

/// A latency histogram in nanoseconds, from 1 ns to one minute, 3 significant digits.
pub fn latency_histogram() -> Histogram<u64> {
    // The bounds are constants that hdrhistogram accepts.
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds")
}

/// Percentiles in microseconds, as JSON.
pub fn latency_summary(histogram: &Histogram<u64>) -> serde_json::Value {
    let micros = |ns: u64| (ns as f64 / 1000.0 * 10.0).round() / 10.0;
    if histogram.is_empty() {
        return serde_json::Value::Null;
    }
    serde_json::json!({
        "p50": micros(histogram.value_at_quantile(0.50)),
        "p90": micros(histogram.value_at_quantile(0.90)),
        "p99": micros(histogram.value_at_quantile(0.99)),
        "p999": micros(histogram.value_at_quantile(0.999)),
        "max": micros(histogram.max()),
        "mean": micros(histogram.mean() as u64),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_streams_have_no_anomalies() {
        let mut tracker = SeqTracker::new(2);
        for seq in 0..1000 {
            assert_eq!(tracker.observe(0, seq), Arrival::InOrder);
            assert_eq!(tracker.observe(1, seq), Arrival::InOrder);
        }
        assert_eq!((tracker.duplicated, tracker.reordered), (0, 0));
        assert_eq!(tracker.unique(0), 1000);
    }

    #[test]
    fn duplicates_and_overtaken_messages_are_told_apart() {
        let mut tracker = SeqTracker::new(1);
        assert_eq!(tracker.observe(0, 0), Arrival::InOrder);
        assert_eq!(tracker.observe(0, 2), Arrival::InOrder);
        assert_eq!(tracker.observe(0, 2), Arrival::Duplicate);
        assert_eq!(tracker.observe(0, 1), Arrival::Reordered);
        assert_eq!(tracker.observe(0, 1), Arrival::Duplicate);
        assert_eq!(tracker.observe(0, 0), Arrival::Duplicate);
        assert_eq!(tracker.unique(0), 3);
        assert_eq!((tracker.duplicated, tracker.reordered), (3, 1));
    }

    #[test]
    fn gaps_leave_messages_missing_without_other_anomalies() {
        let mut tracker = SeqTracker::new(1);
        for seq in [0, 1, 5, 6, 200] {
            assert_eq!(tracker.observe(0, seq), Arrival::InOrder);
        }
        assert_eq!(tracker.unique(0), 5);
        assert_eq!((tracker.duplicated, tracker.reordered), (0, 0));
        // A late one from inside the window, then from far behind it.
        assert_eq!(tracker.observe(0, 190), Arrival::Reordered);
        assert_eq!(tracker.observe(0, 190), Arrival::Duplicate);
        assert_eq!(tracker.observe(0, 2), Arrival::Reordered);
    }

    #[test]
    fn the_window_slides_exactly() {
        let mut tracker = SeqTracker::new(1);
        tracker.observe(0, 0);
        tracker.observe(0, WINDOW - 1);
        // 0 is just inside the window: still known as seen.
        assert_eq!(tracker.observe(0, 0), Arrival::Duplicate);
        tracker.observe(0, WINDOW);
        // Now it has slid out and cannot be told apart.
        assert_eq!(tracker.observe(0, 0), Arrival::Reordered);
    }

    #[test]
    fn latency_summary_is_in_microseconds() {
        let mut histogram = latency_histogram();
        for ns in [10_000u64, 20_000, 30_000] {
            histogram.record(ns).unwrap();
        }
        let summary = latency_summary(&histogram);
        assert_eq!(summary["p50"], 20.0);
        assert!(summary["max"].as_f64().unwrap() >= 29.9);
        assert!(latency_summary(&latency_histogram()).is_null());
    }
}
