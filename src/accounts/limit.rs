//! Failed-login limits: a leaky bucket of failures per key (an address, an account),
//! pure (the caller passes the time), checked before any password is hashed so a login
//! flood costs the server a map lookup, not an Argon2 run.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// How many failures a key may have at once, and how fast they are forgiven.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FailureRule {
    /// Failures allowed in a burst before attempts are refused.
    pub burst: u32,
    /// One failure is forgiven every `forgive_every`.
    pub forgive_every: Duration,
}

/// Past this many keys, forgiven ones are swept out (bounded memory under a flood of
/// addresses; a key with a debt is never forgotten early).
const SWEEP_AT: usize = 4096;

#[derive(Debug, Clone, Copy)]
struct Debt {
    /// Failures not yet forgiven, as of `at`.
    failures: f64,
    at: Instant,
}

/// Failures per key under one rule.
#[derive(Debug)]
pub struct FailureLimiter<K> {
    rule: FailureRule,
    debts: HashMap<K, Debt>,
}

impl<K: Hash + Eq + Clone> FailureLimiter<K> {
    pub fn new(rule: FailureRule) -> Self {
        FailureLimiter {
            rule,
            debts: HashMap::new(),
        }
    }

    fn owed(&self, debt: &Debt, now: Instant) -> f64 {
        let forgiven = now.saturating_duration_since(debt.at).as_secs_f64()
            / self.rule.forgive_every.as_secs_f64().max(1e-9);
        (debt.failures - forgiven).max(0.0)
    }

    /// `Err(wait)`: `key` has used its burst; the next attempt is allowed in `wait`.
    pub fn check(&self, key: &K, now: Instant) -> Result<(), Duration> {
        let Some(debt) = self.debts.get(key) else {
            return Ok(());
        };
        let owed = self.owed(debt, now);
        let burst = f64::from(self.rule.burst);
        if owed + 1.0 <= burst {
            return Ok(());
        }
        let wait = (owed + 1.0 - burst) * self.rule.forgive_every.as_secs_f64();
        Err(Duration::from_secs_f64(wait).max(Duration::from_secs(1)))
    }

    /// `key` failed once more.
    pub fn fail(&mut self, key: K, now: Instant) {
        if self.debts.len() >= SWEEP_AT {
            let rule = self.rule;
            self.debts.retain(|_, debt| {
                let forgiven = now.saturating_duration_since(debt.at).as_secs_f64()
                    / rule.forgive_every.as_secs_f64().max(1e-9);
                debt.failures > forgiven
            });
        }
        let failures = match self.debts.get(&key) {
            Some(debt) => self.owed(debt, now),
            None => 0.0,
        };
        self.debts.insert(
            key,
            Debt {
                failures: failures + 1.0,
                at: now,
            },
        );
    }

    /// Keys remembered now (for tests of the sweep).
    pub fn tracked(&self) -> usize {
        self.debts.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULE: FailureRule = FailureRule {
        burst: 3,
        forgive_every: Duration::from_secs(10),
    };

    #[test]
    fn refuses_after_the_burst_and_forgives_with_time() {
        let start = Instant::now();
        let mut limiter = FailureLimiter::new(RULE);
        for _ in 0..3 {
            assert!(limiter.check(&"a", start).is_ok());
            limiter.fail("a", start);
        }
        let wait = limiter.check(&"a", start).unwrap_err();
        assert_eq!(wait, Duration::from_secs(10));
        // Another key is not affected.
        assert!(limiter.check(&"b", start).is_ok());
        // One failure forgiven after 10 s: one more attempt.
        let later = start + Duration::from_secs(10);
        assert!(limiter.check(&"a", later).is_ok());
        limiter.fail("a", later);
        assert!(limiter.check(&"a", later).is_err());
        // Everything forgiven after the whole burst's time.
        assert!(limiter.check(&"a", later + Duration::from_secs(30)).is_ok());
    }

    #[test]
    fn a_flood_of_keys_stays_bounded() {
        let start = Instant::now();
        let mut limiter = FailureLimiter::new(RULE);
        for n in 0..SWEEP_AT {
            limiter.fail(n, start);
        }
        assert_eq!(limiter.tracked(), SWEEP_AT);
        // Much later every old debt is forgiven and swept at the next failure.
        limiter.fail(usize::MAX, start + Duration::from_secs(60));
        assert_eq!(limiter.tracked(), 1);
    }
}
