//! Flood control: a per-connection token bucket, pure (the caller passes the time).
//!
//! A client may send `burst` messages at once, then `rate` per second. Over that its
//! input is delayed (the door stops reading from it, so the excess waits in its own
//! socket buffers, not in our memory); a client that stays throttled for longer than
//! `patience` is disconnected for flooding.

use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FloodSettings {
    /// Messages per second allowed in the long run; 0 turns flood control off.
    pub rate: f64,
    /// Messages allowed in one burst.
    pub burst: u32,
    /// How long a client may stay continuously throttled before it is disconnected.
    pub patience: Duration,
}

/// What the bucket says about the next message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Go ahead (a token was taken).
    Allow,
    /// Wait until then; `first` is true when this starts a throttled stretch.
    Wait { until: Instant, first: bool },
    /// Throttled for longer than the patience: disconnect.
    Kick,
}

#[derive(Debug)]
pub struct TokenBucket {
    settings: FloodSettings,
    tokens: f64,
    refilled_at: Instant,
    /// Since when the client has continuously had input waiting.
    throttled_since: Option<Instant>,
}

impl TokenBucket {
    pub fn new(settings: FloodSettings, now: Instant) -> Self {
        TokenBucket {
            settings,
            tokens: f64::from(settings.burst.max(1)),
            refilled_at: now,
            throttled_since: None,
        }
    }

    pub fn enabled(&self) -> bool {
        self.settings.rate > 0.0
    }

    /// Ask to process one message at `now`.
    pub fn take(&mut self, now: Instant) -> Verdict {
        if !self.enabled() {
            return Verdict::Allow;
        }
        let elapsed = now
            .saturating_duration_since(self.refilled_at)
            .as_secs_f64();
        let capacity = f64::from(self.settings.burst.max(1));
        self.tokens = (self.tokens + elapsed * self.settings.rate).min(capacity);
        self.refilled_at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Verdict::Allow;
        }
        let first = self.throttled_since.is_none();
        let since = *self.throttled_since.get_or_insert(now);
        if now.saturating_duration_since(since) > self.settings.patience {
            return Verdict::Kick;
        }
        let wait = Duration::from_secs_f64((1.0 - self.tokens) / self.settings.rate);
        Verdict::Wait {
            until: now + wait,
            first,
        }
    }

    /// The client has no more input waiting: its throttled stretch (if any) is over.
    pub fn caught_up(&mut self) {
        self.throttled_since = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> FloodSettings {
        FloodSettings {
            rate: 10.0,
            burst: 5,
            patience: Duration::from_secs(2),
        }
    }

    #[test]
    fn burst_then_steady_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(settings(), start);
        for _ in 0..5 {
            assert_eq!(bucket.take(start), Verdict::Allow);
        }
        let Verdict::Wait { until, first } = bucket.take(start) else {
            panic!("should wait")
        };
        assert!(first);
        assert_eq!(until - start, Duration::from_millis(100));
        assert_eq!(
            bucket.take(start + Duration::from_millis(100)),
            Verdict::Allow
        );
        assert!(matches!(
            bucket.take(start + Duration::from_millis(150)),
            Verdict::Wait { first: false, .. }
        ));
    }

    #[test]
    fn staying_throttled_past_patience_is_a_kick() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(settings(), start);
        let mut now = start;
        for _ in 0..5 {
            bucket.take(now);
        }
        // Always one message more than the rate allows.
        loop {
            match bucket.take(now) {
                Verdict::Allow => {}
                Verdict::Wait { until, .. } => now = until - Duration::from_millis(1),
                Verdict::Kick => break,
            }
            now += Duration::from_millis(50);
            assert!(now - start < Duration::from_secs(5), "never kicked");
        }
        assert!(now - start > Duration::from_secs(2));
    }

    #[test]
    fn catching_up_forgives() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(settings(), start);
        for _ in 0..6 {
            bucket.take(start);
        }
        bucket.caught_up();
        let later = start + Duration::from_secs(10);
        assert_eq!(bucket.take(later), Verdict::Allow);
    }

    #[test]
    fn rate_zero_is_off() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(
            FloodSettings {
                rate: 0.0,
                ..settings()
            },
            start,
        );
        for _ in 0..10_000 {
            assert_eq!(bucket.take(start), Verdict::Allow);
        }
    }
}
