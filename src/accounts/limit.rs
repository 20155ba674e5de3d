//! Failed-login limits: a leaky bucket of failures per key (an address, an account),
//! pure (the caller passes the time). An attempt is charged before any password is
//! hashed and refunded when it succeeds, so a login flood costs the server a map
//! lookup, not an Argon2 run, and attempts sent in parallel cannot all slip in
//! under one check.

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

/// Past this many keys, forgiven ones are swept out; the next sweep waits until the
/// map has doubled again, so sweeping costs O(1) per charge however many keys owe.
const SWEEP_AT: usize = 4096;
/// Most keys remembered (about 64 MiB). Beyond it a new key is not tracked: under a
/// flood of that many addresses the per-account limits still hold, and memory does.
pub const MAX_TRACKED: usize = 1 << 20;

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
    sweep_at: usize,
}

impl<K: Hash + Eq + Clone> FailureLimiter<K> {
    pub fn new(rule: FailureRule) -> Self {
        FailureLimiter {
            rule,
            debts: HashMap::new(),
            sweep_at: SWEEP_AT,
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

    /// `key` failed once more (or is charged for an attempt not yet decided).
    pub fn fail(&mut self, key: K, now: Instant) {
        if self.debts.len() >= self.sweep_at {
            let rule = self.rule;
            self.debts.retain(|_, debt| {
                let forgiven = now.saturating_duration_since(debt.at).as_secs_f64()
                    / rule.forgive_every.as_secs_f64().max(1e-9);
                debt.failures > forgiven
            });
            self.sweep_at = (self.debts.len() * 2).max(SWEEP_AT);
        }
        let failures = match self.debts.get(&key) {
            Some(debt) => self.owed(debt, now),
            None if self.debts.len() >= MAX_TRACKED => return,
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

    /// Take back one charge of `key` (the attempt succeeded, or did not count).
    pub fn refund(&mut self, key: &K, now: Instant) {
        let Some(debt) = self.debts.get(key) else {
            return;
        };
        let failures = self.owed(debt, now) - 1.0;
        if failures <= 0.0 {
            self.debts.remove(key);
        } else {
            self.debts.insert(key.clone(), Debt { failures, at: now });
        }
    }

    /// Keys remembered now (for tests of the sweep).
    #[cfg(test)]
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

    #[test]
    fn keys_that_all_owe_are_swept_rarely_and_capped() {
        let start = Instant::now();
        let mut limiter = FailureLimiter::new(RULE);
        // Every key owes: a sweep keeps them all, and the next waits for twice as many.
        for n in 0..SWEEP_AT + 1 {
            limiter.fail(n, start);
        }
        assert_eq!(limiter.sweep_at, SWEEP_AT * 2);
        for n in 0..MAX_TRACKED + 10 {
            limiter.fail(n, start);
        }
        assert_eq!(limiter.tracked(), MAX_TRACKED);
        // A key already known is still charged at the cap.
        limiter.fail(0, start);
        limiter.fail(0, start);
        assert!(limiter.check(&0, start).is_err());
    }

    #[test]
    fn a_refund_takes_back_one_charge() {
        let start = Instant::now();
        let mut limiter = FailureLimiter::new(RULE);
        for _ in 0..3 {
            limiter.fail("a", start);
        }
        assert!(limiter.check(&"a", start).is_err());
        limiter.refund(&"a", start);
        assert!(limiter.check(&"a", start).is_ok());
        limiter.refund(&"a", start);
        limiter.refund(&"a", start);
        assert_eq!(limiter.tracked(), 0);
        // Refunding what was never charged changes nothing.
        limiter.refund(&"b", start);
        assert_eq!(limiter.tracked(), 0);
    }
}
