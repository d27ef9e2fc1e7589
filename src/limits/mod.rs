//! Limits enforced at the edge, each a `[limits]` setting with a documented refusal:
//!
//! - [`connections`]: sockets per node, per tenant and per user (`too_many_connections`);
//! - handshakes per client address ([`client_ip`] finds it), `rate_limited`;
//! - events per socket (`rate_limited`, and a disconnect for sustained abuse);
//! - publish-scope requests per API key (`429 rate_limited` + `Retry-After`).
//!
//! The token buckets are `governor` keyed limiters shared by the whole node, not one per
//! socket: a socket that has been quiet long enough has no entry at all (the sweeper drops
//! entries indistinguishable from a full bucket), so an idle socket costs nothing here.

pub mod client_ip;
pub mod connections;

use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota};
use socketioxide::socket::Sid;

use crate::config::{IpRange, LimitsConfig};
pub use connections::{Connections, Slot};

/// How often emptied buckets are swept out of the keyed limiters.
const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// A refusal by one of the limits; `code()` is what the client sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitError {
    /// A connection limit: `which` is `node`, `tenant` or `user`.
    TooManyConnections { which: &'static str, limit: u64 },
    /// A token bucket is empty; a retry after `retry_after` can succeed.
    RateLimited { retry_after: Duration },
}

impl LimitError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::TooManyConnections { .. } => "too_many_connections",
            Self::RateLimited { .. } => "rate_limited",
        }
    }

    /// Whole milliseconds to wait, at least 1.
    pub fn retry_after_ms(&self) -> u64 {
        match self {
            Self::RateLimited { retry_after } => ceil_ms(*retry_after),
            Self::TooManyConnections { .. } => 0,
        }
    }
}

impl std::fmt::Display for LimitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code())
    }
}

impl std::error::Error for LimitError {}

/// `d` in whole milliseconds, rounded up and at least 1: waiting that long is enough.
pub fn ceil_ms(d: Duration) -> u64 {
    (d.as_nanos().div_ceil(1_000_000) as u64).max(1)
}

/// One keyed token bucket per key, or none when the limit is off.
struct Bucket<K: Hash + Eq + Clone> {
    limiter: Option<DefaultKeyedRateLimiter<K>>,
}

impl<K: Hash + Eq + Clone> Bucket<K> {
    /// `per_period` cells every `period`, holding at most `burst`; off when either is 0.
    fn new(per_period: u32, period: Duration, burst: u32) -> Self {
        let limiter = (|| {
            let per = NonZeroU32::new(per_period)?;
            let burst = NonZeroU32::new(burst)?;
            let quota = Quota::with_period(period / per.get())?.allow_burst(burst);
            Some(governor::RateLimiter::keyed(quota))
        })();
        Self { limiter }
    }

    fn check(&self, key: &K) -> Result<(), Duration> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        limiter
            .check_key(key)
            .map_err(|not_until| not_until.wait_time_from(limiter.clock().now()))
    }

    fn sweep(&self) {
        if let Some(limiter) = &self.limiter {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }

    fn len(&self) -> usize {
        self.limiter.as_ref().map_or(0, |l| l.len())
    }
}

/// What an event over its socket's budget leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventVerdict {
    Allowed,
    /// Dropped; the client is told to retry after this long.
    Refused(Duration),
    /// Dropped, and the socket has been refused too often: disconnect it.
    Abusive,
}

/// Every limit of this node.
pub struct Limits {
    pub connections: Arc<Connections>,
    handshakes: Bucket<IpAddr>,
    trusted_proxies: Vec<IpRange>,
    handshake_exempt: Vec<IpRange>,
    events: Bucket<Sid>,
    /// Refusals per socket: running out of these means sustained abuse.
    strikes: Bucket<Sid>,
    publish: Bucket<String>,
}

impl Limits {
    pub fn new(config: &LimitsConfig) -> Self {
        let second = Duration::from_secs(1);
        let window = Duration::from_secs(config.event_abuse_window_secs);
        Self {
            connections: Arc::new(Connections::new(config)),
            handshakes: Bucket::new(
                config.handshakes_per_ip_per_sec,
                second,
                config.handshakes_per_ip_burst,
            ),
            trusted_proxies: config.trusted_proxies.clone(),
            handshake_exempt: config.handshake_exempt.clone(),
            events: Bucket::new(config.events_per_sec, second, config.events_burst),
            strikes: Bucket::new(
                config.event_abuse_refusals,
                window,
                config.event_abuse_refusals,
            ),
            publish: Bucket::new(
                config.publish_per_key_per_sec,
                second,
                config.publish_per_key_burst,
            ),
        }
    }

    /// The client address of a request from `peer` (see [`client_ip::resolve`]).
    pub fn client_ip(&self, peer: IpAddr, headers: &http::HeaderMap) -> IpAddr {
        client_ip::resolve(peer, headers, &self.trusted_proxies)
    }

    /// Takes one handshake from `ip`'s bucket.
    pub fn handshake(&self, ip: IpAddr) -> Result<(), LimitError> {
        if self.handshake_exempt.iter().any(|r| r.contains(&ip)) {
            return Ok(());
        }
        self.handshakes
            .check(&ip)
            .map_err(|retry_after| LimitError::RateLimited { retry_after })
    }

    /// Takes one event from socket `sid`'s bucket.
    pub fn event(&self, sid: Sid) -> EventVerdict {
        match self.events.check(&sid) {
            Ok(()) => EventVerdict::Allowed,
            Err(retry_after) => match self.strikes.check(&sid) {
                Ok(()) => EventVerdict::Refused(retry_after),
                Err(_) => EventVerdict::Abusive,
            },
        }
    }

    /// Takes one request from API key `name`'s publish bucket.
    pub fn publish(&self, name: &str) -> Result<(), LimitError> {
        self.publish
            .check(&name.to_owned())
            .map_err(|retry_after| LimitError::RateLimited { retry_after })
    }

    /// Entries held by the keyed limiters (sockets or addresses seen recently).
    pub fn tracked(&self) -> usize {
        self.handshakes.len() + self.events.len() + self.strikes.len() + self.publish.len()
    }

    /// Drops full buckets now and then, so memory follows recent activity only.
    pub async fn run_sweeper(self: Arc<Self>) {
        let mut tick = tokio::time::interval(SWEEP_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.handshakes.sweep();
            self.events.sweep();
            self.strikes.sweep();
            self.publish.sweep();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_refuse_past_the_burst_then_turn_abusive() {
        let config = LimitsConfig {
            events_per_sec: 1,
            events_burst: 3,
            event_abuse_refusals: 2,
            event_abuse_window_secs: 60,
            ..LimitsConfig::default()
        };
        let limits = Limits::new(&config);
        let sid = Sid::new();
        for _ in 0..3 {
            assert_eq!(limits.event(sid), EventVerdict::Allowed);
        }
        assert!(matches!(limits.event(sid), EventVerdict::Refused(d) if d > Duration::ZERO));
        assert!(matches!(limits.event(sid), EventVerdict::Refused(_)));
        assert_eq!(limits.event(sid), EventVerdict::Abusive);
        // Another socket has its own bucket.
        assert_eq!(limits.event(Sid::new()), EventVerdict::Allowed);
    }

    #[test]
    fn zero_turns_a_limit_off() {
        let config = LimitsConfig {
            events_per_sec: 0,
            publish_per_key_per_sec: 0,
            ..LimitsConfig::default()
        };
        let limits = Limits::new(&config);
        let sid = Sid::new();
        for _ in 0..1000 {
            assert_eq!(limits.event(sid), EventVerdict::Allowed);
            assert!(limits.publish("k").is_ok());
        }
        assert_eq!(limits.tracked(), 0);
    }

    #[test]
    fn exempt_addresses_are_not_limited() {
        let config = LimitsConfig {
            handshakes_per_ip_per_sec: 1,
            handshakes_per_ip_burst: 1,
            ..LimitsConfig::default()
        };
        let limits = Limits::new(&config);
        let local: IpAddr = "127.0.0.1".parse().unwrap();
        let remote: IpAddr = "203.0.113.9".parse().unwrap();
        for _ in 0..10 {
            assert!(limits.handshake(local).is_ok());
        }
        assert!(limits.handshake(remote).is_ok());
        let err = limits.handshake(remote).unwrap_err();
        assert_eq!(err.code(), "rate_limited");
        assert!(err.retry_after_ms() >= 1);
    }
}
