//! Refused API keys per client address. Unlike the other buckets this one is looked at
//! before it is spent from: an address whose budget is gone is refused before its key is
//! checked, valid or not, because answering a valid key normally would tell a guesser which
//! of its guesses was right at full speed. Only refused keys spend from it.
//!
//! A GCRA bucket (a "theoretical arrival time" per address): looking costs one map lookup,
//! and a full bucket has no entry at all once swept.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct AuthFailures {
    /// One refused key per `interval` is refilled; `None` when the limit is off.
    interval: Option<Duration>,
    /// How far ahead of now an address's arrival time may be while it still has budget:
    /// `burst - 1` intervals.
    tolerance: Duration,
    arrivals: Mutex<HashMap<IpAddr, Instant>>,
}

impl AuthFailures {
    /// `per_sec` refused keys a second, holding `burst`; off when either is 0.
    pub fn new(per_sec: u32, burst: u32) -> Self {
        let interval = (per_sec > 0 && burst > 0).then(|| Duration::from_secs(1) / per_sec);
        Self {
            interval,
            tolerance: interval.unwrap_or_default() * burst.saturating_sub(1),
            arrivals: Mutex::default(),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut HashMap<IpAddr, Instant>) -> T) -> T {
        let mut arrivals = self.arrivals.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut arrivals)
    }

    /// `Err(wait)` while `ip` has spent its budget: it may try again after `wait`.
    pub fn check(&self, ip: IpAddr) -> Result<(), Duration> {
        if self.interval.is_none() {
            return Ok(());
        }
        let now = Instant::now();
        let Some(arrival) = self.with(|a| a.get(&ip).copied()) else {
            return Ok(());
        };
        match arrival.checked_sub(self.tolerance) {
            Some(allowed_from) if allowed_from > now => Err(allowed_from - now),
            _ => Ok(()),
        }
    }

    /// Spends one from `ip`'s budget for a refused key.
    pub fn spend(&self, ip: IpAddr) {
        let Some(interval) = self.interval else {
            return;
        };
        let now = Instant::now();
        // Requests checked before a concurrent one spent can overshoot the budget; the
        // arrival time never runs more than one interval past "spent", so a burst of them
        // never locks an address out for longer than one interval.
        let cap = now + self.tolerance + interval;
        self.with(|a| {
            let arrival = a.entry(ip).or_insert(now);
            *arrival = ((*arrival).max(now) + interval).min(cap);
        });
    }

    /// Drops addresses whose budget is full again (they are as good as absent).
    pub fn sweep(&self) {
        let now = Instant::now();
        self.with(|a| {
            a.retain(|_, arrival| *arrival > now);
            a.shrink_to_fit();
        });
    }

    pub fn len(&self) -> usize {
        self.with(|a| a.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spent_after_the_burst_and_per_address() {
        let failures = AuthFailures::new(1, 3);
        let ip: IpAddr = "203.0.113.9".parse().unwrap();
        for _ in 0..3 {
            assert!(failures.check(ip).is_ok());
            failures.spend(ip);
        }
        let wait = failures.check(ip).unwrap_err();
        assert!(wait > Duration::from_millis(900) && wait <= Duration::from_secs(1));
        // Many more refusals (raced past the check) still cost at most one interval.
        for _ in 0..100 {
            failures.spend(ip);
        }
        assert!(failures.check(ip).unwrap_err() <= Duration::from_secs(1));
        assert!(failures.check("203.0.113.10".parse().unwrap()).is_ok());
        assert_eq!(failures.len(), 1);
    }

    #[test]
    fn zero_turns_it_off() {
        let failures = AuthFailures::new(0, 20);
        let ip: IpAddr = "203.0.113.9".parse().unwrap();
        for _ in 0..100 {
            failures.spend(ip);
        }
        assert!(failures.check(ip).is_ok());
        assert!(failures.is_empty());
    }
}
