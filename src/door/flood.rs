//! Flood control: a per-connection token bucket, pure (the caller passes the time).
//!
//! A client may send `burst` messages at once, then `rate` per second. Over that its
//! input is delayed (the door stops reading from it, so the excess waits in its own
//! socket buffers, not in our memory); a client that stays throttled for longer than
//! `patience` is disconnected for flooding.

use std::num::NonZeroU64;
use std::sync::OnceLock;
use std::time::Duration;

use tokio::time::Instant;

/// A point in time in 8 bytes (an `Instant` takes 16): microseconds since a process-wide
/// epoch. Per-connection state keeps its times as stamps, since every idle connection
/// holds them.
/// Never zero, so an `Option<Stamp>` is 8 bytes too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Stamp(NonZeroU64);

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    // An hour back (when the clock allows), so instants taken just before the first
    // stamp still map exactly.
    *EPOCH.get_or_init(|| {
        let now = Instant::now();
        now.checked_sub(Duration::from_secs(3600)).unwrap_or(now)
    })
}

impl Stamp {
    pub fn now() -> Self {
        Self::at(Instant::now())
    }

    /// `at`, to the microsecond (rounded down).
    pub fn at(at: Instant) -> Self {
        let micros = at.saturating_duration_since(epoch()).as_micros();
        Self::from_micros(u64::try_from(micros).unwrap_or(u64::MAX))
    }

    fn from_micros(micros: u64) -> Self {
        Stamp(NonZeroU64::new(micros).unwrap_or(NonZeroU64::MIN))
    }

    pub fn instant(self) -> Instant {
        epoch() + Duration::from_micros(self.0.get())
    }

    pub fn saturating_duration_since(self, earlier: Stamp) -> Duration {
        Duration::from_micros(self.0.get().saturating_sub(earlier.0.get()))
    }
}

impl std::ops::Add<Duration> for Stamp {
    type Output = Stamp;

    fn add(self, duration: Duration) -> Stamp {
        let micros = u64::try_from(duration.as_micros()).unwrap_or(u64::MAX);
        Stamp(self.0.saturating_add(micros))
    }
}

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

/// One connection's bucket; the settings are the door's, passed in (not copied into
/// every connection).
#[derive(Debug)]
pub struct TokenBucket {
    tokens: f64,
    refilled_at: Stamp,
    /// Since when the client has continuously had input waiting.
    throttled_since: Option<Stamp>,
}

impl TokenBucket {
    pub fn new(settings: &FloodSettings, now: Instant) -> Self {
        TokenBucket {
            tokens: f64::from(settings.burst.max(1)),
            refilled_at: Stamp::at(now),
            throttled_since: None,
        }
    }

    /// Ask to process one message at `now`.
    pub fn take(&mut self, settings: &FloodSettings, now: Instant) -> Verdict {
        if settings.rate <= 0.0 {
            return Verdict::Allow;
        }
        let stamp = Stamp::at(now);
        let elapsed = stamp
            .saturating_duration_since(self.refilled_at)
            .as_secs_f64();
        let capacity = f64::from(settings.burst.max(1));
        self.tokens = (self.tokens + elapsed * settings.rate).min(capacity);
        self.refilled_at = stamp;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Verdict::Allow;
        }
        let first = self.throttled_since.is_none();
        let since = *self.throttled_since.get_or_insert(stamp);
        if stamp.saturating_duration_since(since) > settings.patience {
            return Verdict::Kick;
        }
        let wait = Duration::from_secs_f64((1.0 - self.tokens) / settings.rate);
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
        let mut bucket = TokenBucket::new(&settings(), start);
        for _ in 0..5 {
            assert_eq!(bucket.take(&settings(), start), Verdict::Allow);
        }
        let Verdict::Wait { until, first } = bucket.take(&settings(), start) else {
            panic!("should wait")
        };
        assert!(first);
        assert_eq!(until - start, Duration::from_millis(100));
        assert_eq!(
            bucket.take(&settings(), start + Duration::from_millis(100)),
            Verdict::Allow
        );
        assert!(matches!(
            bucket.take(&settings(), start + Duration::from_millis(150)),
            Verdict::Wait { first: false, .. }
        ));
    }

    #[test]
    fn staying_throttled_past_patience_is_a_kick() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(&settings(), start);
        let mut now = start;
        for _ in 0..5 {
            bucket.take(&settings(), now);
        }
        // Always one message more than the rate allows.
        loop {
            match bucket.take(&settings(), now) {
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
        let mut bucket = TokenBucket::new(&settings(), start);
        for _ in 0..6 {
            bucket.take(&settings(), start);
        }
        bucket.caught_up();
        let later = start + Duration::from_secs(10);
        assert_eq!(bucket.take(&settings(), later), Verdict::Allow);
    }

    #[test]
    fn rate_zero_is_off() {
        let start = Instant::now();
        let off = FloodSettings {
            rate: 0.0,
            ..settings()
        };
        let mut bucket = TokenBucket::new(&off, start);
        for _ in 0..10_000 {
            assert_eq!(bucket.take(&off, start), Verdict::Allow);
        }
    }
}
