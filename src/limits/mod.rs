//! Limits enforced at the edge, each a `[limits]` setting with a documented refusal:
//!
//! - [`connections`]: sockets per node, per tenant and per user (`too_many_connections`);
//! - handshakes per client address ([`client_ip`] finds it), `429 rate_limited` before the
//!   session exists, and per user (tenant + `sub`), `rate_limited` at the CONNECT;
//! - [`pending`]: sessions not authenticated yet, per address and per node
//!   (`429 too_many_preauth_sessions`);
//! - events per socket (`rate_limited`, and a disconnect for sustained abuse);
//! - publish-scope requests per API key, a batch counting one per event, and their body
//!   bytes per API key (`429 rate_limited` + `Retry-After`);
//! - [`polling_binding`]: optionally, a long-polling session only for its own address;
//! - refused API keys per client address ([`auth_failures`]), `429 rate_limited`;
//! - [`in_flight`]: RPCs of one socket awaiting their answer (`rpc.max_in_flight_per_socket`).
//!
//! The token buckets are `governor` keyed limiters shared by the whole node, not one per
//! socket: a socket that has been quiet long enough has no entry at all (the sweeper drops
//! entries indistinguishable from a full bucket), so an idle socket costs nothing here.

pub mod auth_failures;
pub mod client_ip;
pub mod connections;
pub mod in_flight;
pub mod pending;
pub mod polling_binding;

use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota};
use socketioxide::socket::Sid;

use crate::config::{IpRange, LimitsConfig};
pub use auth_failures::AuthFailures;
pub use connections::{Connections, Slot};
pub use in_flight::{InFlight, InFlightGuard};
pub use pending::{Pending, PendingGuard};

use crate::auth::Identity;
use crate::rooms::{Id, Tenant};

/// How often emptied buckets are swept out of the keyed limiters.
const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// A refusal by one of the limits; `code()` is what the client sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitError {
    /// A connection limit: `which` is `node`, `tenant` or `user`.
    TooManyConnections { which: &'static str, limit: u64 },
    /// A token bucket is empty; a retry after `retry_after` can succeed.
    RateLimited { retry_after: Duration },
    /// Too many sessions that have not sent an accepted CONNECT yet: `which` is `address`
    /// or `node`.
    TooManyPreauth { which: &'static str, limit: u64 },
}

impl LimitError {
    pub fn code(&self) -> &'static str {
        self.error_code().as_str()
    }

    pub fn error_code(&self) -> crate::errors::Code {
        use crate::errors::Code;
        match self {
            Self::TooManyConnections { .. } => Code::TooManyConnections,
            Self::RateLimited { .. } => Code::RateLimited,
            Self::TooManyPreauth { .. } => Code::TooManyPreauthSessions,
        }
    }

    /// Whole milliseconds to wait, at least 1.
    pub fn retry_after_ms(&self) -> u64 {
        match self {
            Self::RateLimited { retry_after } => ceil_ms(*retry_after),
            Self::TooManyConnections { .. } | Self::TooManyPreauth { .. } => 0,
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

    /// Takes `n` cells at once, or none. More than the burst can never be taken: that is
    /// `Err(None)`; the callers keep `n` within the burst.
    fn check_n(&self, key: &K, n: u64) -> Result<(), Option<Duration>> {
        let (Some(limiter), Some(n)) = (
            &self.limiter,
            NonZeroU32::new(n.min(u32::MAX.into()) as u32),
        ) else {
            return Ok(());
        };
        match limiter.check_key_n(key, n) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => Err(Some(not_until.wait_time_from(limiter.clock().now()))),
            Err(_) => Err(None),
        }
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
    /// Handshakes per user (tenant, `sub`), counted once the token verifies.
    user_handshakes: Bucket<(Tenant, Id)>,
    pending: Arc<Pending>,
    events: Bucket<Sid>,
    /// Refusals per socket: running out of these means sustained abuse.
    strikes: Bucket<Sid>,
    publish: Bucket<String>,
    publish_burst: u32,
    /// Request-body bytes of publish requests per API key.
    publish_bytes: Bucket<String>,
    auth_failures: AuthFailures,
    /// RPCs awaiting their answer, per socket.
    pub rpc_in_flight: Arc<InFlight>,
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
            user_handshakes: Bucket::new(
                config.handshakes_per_user_per_sec,
                second,
                config.handshakes_per_user_burst,
            ),
            pending: Arc::new(Pending::new(
                config.preauth_sessions_per_ip,
                config.preauth_sessions,
            )),
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
            publish_burst: match config.publish_per_key_per_sec {
                0 => 0,
                _ => config.publish_per_key_burst,
            },
            publish_bytes: Bucket::new(
                config.publish_bytes_per_key_per_sec,
                second,
                config.publish_bytes_per_key_burst,
            ),
            auth_failures: AuthFailures::new(
                config.auth_failures_per_ip_per_sec,
                config.auth_failures_per_ip_burst,
            ),
            rpc_in_flight: Arc::default(),
        }
    }

    /// The client address of a request from `peer` (see [`client_ip::resolve`]).
    pub fn client_ip(&self, peer: IpAddr, headers: &http::HeaderMap) -> IpAddr {
        client_ip::resolve(peer, headers, &self.trusted_proxies)
    }

    fn exempt(&self, ip: IpAddr) -> bool {
        self.handshake_exempt.iter().any(|r| r.contains(&ip))
    }

    /// Takes one handshake from `ip`'s bucket.
    pub fn handshake(&self, ip: IpAddr) -> Result<(), LimitError> {
        if self.exempt(ip) {
            return Ok(());
        }
        self.handshakes
            .check(&ip)
            .map_err(|retry_after| LimitError::RateLimited { retry_after })
    }

    /// Counts a new session from `ip` as pre-auth (an exempt or unknown address only for
    /// the node's bound); the guard gives the place back.
    pub fn preauth(&self, ip: Option<IpAddr>) -> Result<PendingGuard, LimitError> {
        self.pending.admit(ip.filter(|ip| !self.exempt(*ip)))
    }

    /// Pre-auth sessions on the node, and from `ip`.
    pub fn preauth_count(&self, ip: IpAddr) -> (u64, u64) {
        self.pending.count(ip)
    }

    /// Takes one handshake from the bucket of `who`'s user (tenant and `sub`).
    pub fn user_handshake(&self, who: &Identity) -> Result<(), LimitError> {
        self.user_handshakes
            .check(&(who.tenant.clone(), who.user_id.clone()))
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

    /// Takes `n` more requests from API key `name`'s publish bucket at once (the rest of a
    /// batch, one per event), or none. `n` must not exceed [`Self::publish_burst`].
    pub fn publish_n(&self, name: &str, n: usize) -> Result<(), LimitError> {
        self.publish
            .check_n(&name.to_owned(), n as u64)
            .map_err(|wait| LimitError::RateLimited {
                retry_after: wait.unwrap_or(Duration::from_secs(1)),
            })
    }

    /// The most publish requests one key may make at once; `None` when unlimited.
    pub fn publish_burst(&self) -> Option<usize> {
        (self.publish_burst > 0).then_some(self.publish_burst as usize)
    }

    /// Takes `bytes` from API key `name`'s publish byte budget. Configuration keeps the
    /// burst at least the largest body, so every accepted body fits a full bucket.
    pub fn publish_bytes(&self, name: &str, bytes: usize) -> Result<(), LimitError> {
        self.publish_bytes
            .check_n(&name.to_owned(), bytes as u64)
            .map_err(|wait| LimitError::RateLimited {
                retry_after: wait.unwrap_or(Duration::from_secs(1)),
            })
    }

    /// `rate_limited` while `ip` has spent its budget of refused API keys: its requests are
    /// refused before their key is checked.
    pub fn auth_allowed(&self, ip: IpAddr) -> Result<(), LimitError> {
        if self.exempt(ip) {
            return Ok(());
        }
        self.auth_failures
            .check(ip)
            .map_err(|retry_after| LimitError::RateLimited { retry_after })
    }

    /// Spends one from `ip`'s budget of refused API keys.
    pub fn auth_refused(&self, ip: IpAddr) {
        if !self.exempt(ip) {
            self.auth_failures.spend(ip);
        }
    }

    /// Entries held by the keyed limiters (sockets or addresses seen recently).
    pub fn tracked(&self) -> usize {
        self.handshakes.len()
            + self.events.len()
            + self.strikes.len()
            + self.publish.len()
            + self.publish_bytes.len()
            + self.auth_failures.len()
            + self.user_handshakes.len()
    }

    /// Drops full buckets now and then, so memory follows recent activity only.
    pub async fn run_sweeper(self: Arc<Self>) {
        let mut tick = tokio::time::interval(SWEEP_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.handshakes.sweep();
            self.user_handshakes.sweep();
            self.events.sweep();
            self.strikes.sweep();
            self.publish.sweep();
            self.publish_bytes.sweep();
            self.auth_failures.sweep();
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
    fn many_tokens_are_taken_at_once_or_not_at_all() {
        let config = LimitsConfig {
            publish_per_key_per_sec: 1,
            publish_per_key_burst: 5,
            publish_bytes_per_key_per_sec: 1000,
            publish_bytes_per_key_burst: 4000,
            ..LimitsConfig::default()
        };
        let limits = Limits::new(&config);
        assert_eq!(limits.publish_burst(), Some(5));
        assert!(limits.publish_n("k", 4).is_ok());
        // One left: two at once are refused, and the one is still there.
        let err = limits.publish_n("k", 2).unwrap_err();
        assert!(err.retry_after_ms() >= 1);
        assert!(limits.publish("k").is_ok());
        assert!(limits.publish_bytes("k", 3000).is_ok());
        assert!(limits.publish_bytes("k", 3000).is_err());
        assert!(limits.publish_bytes("k", 1000).is_ok());
        // Other keys have their own budgets.
        assert!(limits.publish_bytes("other", 4000).is_ok());
        let off = Limits::new(&LimitsConfig {
            publish_per_key_per_sec: 0,
            publish_bytes_per_key_per_sec: 0,
            ..LimitsConfig::default()
        });
        assert_eq!(off.publish_burst(), None);
        assert!(off.publish_n("k", 1_000_000).is_ok());
        assert!(off.publish_bytes("k", usize::MAX).is_ok());
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
