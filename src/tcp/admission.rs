//! Who gets a connection, decided at accept time, when only the peer address is known.
//!
//! - **Per address**: at most `limits.connections_per_ip` open connections from one address
//!   (an IPv6 address counts by its /64: one subscriber's prefix), except from
//!   `limits.handshake_exempt` and `limits.trusted_proxies` (a proxy carries many clients).
//! - **Descriptor reserve**: the process may hold `RLIMIT_NOFILE` descriptors; those open
//!   when serving starts (listener, Redis, logs) are taken out, and of the rest the last
//!   `limits.fd_reserve` are kept back: past that point a new connection is still accepted,
//!   but served only `GET /health` and `GET /ready` (anything else: `503 server_busy`), and
//!   the last half of the reserve is never given to connections at all, so the process keeps
//!   descriptors for its own needs (a Redis reconnect, a JWKS fetch).
//!
//! A refused connection is closed at once, without lingering: nothing was written to it,
//! and a refusal must not hold a descriptor.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use crate::config::{IpRange, LimitsConfig};

pub struct Admission {
    per_ip: u32,
    exempt: Vec<IpRange>,
    /// Connections served in full while fewer than this many are open.
    full: u64,
    /// Past `full` and while fewer than this many are open: health checks only.
    total: u64,
    counts: Mutex<Counts>,
}

#[derive(Default)]
struct Counts {
    open: u64,
    by_key: HashMap<IpAddr, u32>,
}

/// What a new connection gets.
#[derive(Debug)]
pub enum Admitted {
    Full(Ticket),
    /// Only `GET /health` and `GET /ready`, one request, then closed.
    HealthOnly(Ticket),
    Refused(Refusal),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The address already holds `limits.connections_per_ip` connections.
    PerAddress,
    /// The descriptor reserve is spent.
    Descriptors,
}

impl Refusal {
    /// The `limit` label of `roomcast_limited_total`.
    pub fn limit(self) -> &'static str {
        match self {
            Self::PerAddress => "connections_ip",
            Self::Descriptors => "descriptors",
        }
    }
}

/// One open connection's place, given back when dropped (after the lingering close).
pub struct Ticket {
    admission: Arc<Admission>,
    /// The address it counts against; `None` when exempt.
    key: Option<IpAddr>,
}

impl Admission {
    /// From the config and this process's descriptor limit.
    pub fn new(config: &LimitsConfig) -> Self {
        let capacity = descriptors::capacity();
        let admission = Self::with_capacity(config, capacity);
        match capacity {
            Some(capacity) => tracing::info!(
                descriptors = capacity,
                reserve = config.fd_reserve,
                "connections served in full: {}, then health checks only up to {}",
                admission.full,
                admission.total
            ),
            None => tracing::debug!("descriptor limit unknown: no reserve kept"),
        }
        admission
    }

    /// `capacity`: descriptors this process may still open; `None` is unlimited.
    pub fn with_capacity(config: &LimitsConfig, capacity: Option<u64>) -> Self {
        let (full, total) = match capacity {
            None => (u64::MAX, u64::MAX),
            Some(capacity) => (
                capacity.saturating_sub(config.fd_reserve),
                capacity.saturating_sub(config.fd_reserve / 2),
            ),
        };
        Self {
            per_ip: config.connections_per_ip,
            exempt: config
                .handshake_exempt
                .iter()
                .chain(&config.trusted_proxies)
                .copied()
                .collect(),
            full,
            total,
            counts: Mutex::default(),
        }
    }

    /// Counts a connection from `peer`, or refuses it.
    pub fn admit(self: &Arc<Self>, peer: IpAddr) -> Admitted {
        let peer = peer.to_canonical();
        let key =
            (self.per_ip > 0 && !self.exempt.iter().any(|r| r.contains(&peer))).then(|| key(peer));
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if c.open >= self.total {
            return Admitted::Refused(Refusal::Descriptors);
        }
        if let Some(key) = key {
            let n = c.by_key.entry(key).or_default();
            if *n >= self.per_ip {
                return Admitted::Refused(Refusal::PerAddress);
            }
            *n += 1;
        }
        let full = c.open < self.full;
        c.open += 1;
        let ticket = Ticket {
            admission: self.clone(),
            key,
        };
        if full {
            Admitted::Full(ticket)
        } else {
            Admitted::HealthOnly(ticket)
        }
    }

    /// Connections open now (lingering ones included).
    pub fn open(&self) -> u64 {
        self.counts.lock().map_or(0, |c| c.open)
    }
}

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ticket").field("key", &self.key).finish()
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut c = self
            .admission
            .counts
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        c.open = c.open.saturating_sub(1);
        if let Some(key) = self.key
            && let Some(n) = c.by_key.get_mut(&key)
        {
            *n -= 1;
            if *n == 0 {
                c.by_key.remove(&key);
            }
        }
    }
}

/// The address a peer counts as: itself, or its /64 for IPv6.
fn key(peer: IpAddr) -> IpAddr {
    match peer {
        IpAddr::V4(_) => peer,
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(prefix.into())
        }
    }
}

mod descriptors {
    /// Descriptors this process may still open: its soft `RLIMIT_NOFILE` less those open
    /// now. `None` when unlimited or unknown.
    #[cfg(unix)]
    pub(super) fn capacity() -> Option<u64> {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes into the struct it is given, nothing else.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0
            || limit.rlim_cur == libc::RLIM_INFINITY
        {
            return None;
        }
        let open = ["/proc/self/fd", "/dev/fd"]
            .iter()
            .find_map(|dir| std::fs::read_dir(dir).ok())
            .map_or(0, |entries| entries.count());
        // `rlim_t` is not u64 on every unix.
        #[allow(clippy::useless_conversion)]
        let limit = u64::try_from(limit.rlim_cur).ok()?;
        Some(limit.saturating_sub(open as u64))
    }

    #[cfg(not(unix))]
    pub fn capacity() -> Option<u64> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(per_ip: u32, reserve: u64, exempt: &[&str]) -> LimitsConfig {
        LimitsConfig {
            connections_per_ip: per_ip,
            fd_reserve: reserve,
            handshake_exempt: exempt
                .iter()
                .map(|s| IpRange::try_from(s.to_string()).unwrap())
                .collect(),
            ..LimitsConfig::default()
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn per_address_cap_counts_open_connections_and_spares_the_exempt() {
        let a = Arc::new(Admission::with_capacity(
            &config(2, 0, &["127.0.0.0/8"]),
            None,
        ));
        let first = a.admit(ip("203.0.113.1"));
        let _second = a.admit(ip("::ffff:203.0.113.1")); // the same address, mapped
        assert!(matches!(
            a.admit(ip("203.0.113.1")),
            Admitted::Refused(Refusal::PerAddress)
        ));
        assert!(matches!(a.admit(ip("203.0.113.2")), Admitted::Full(_)));
        for _ in 0..10 {
            assert!(matches!(a.admit(ip("127.0.0.1")), Admitted::Full(_)));
        }
        drop(first);
        assert!(matches!(a.admit(ip("203.0.113.1")), Admitted::Full(_)));
        // One IPv6 /64 is one address.
        let _v6 = (a.admit(ip("2001:db8::1")), a.admit(ip("2001:db8::2")));
        assert!(matches!(
            a.admit(ip("2001:db8::ffff:3")),
            Admitted::Refused(Refusal::PerAddress)
        ));
        assert!(matches!(a.admit(ip("2001:db8:0:1::1")), Admitted::Full(_)));
    }

    #[test]
    fn the_reserve_serves_health_checks_then_refuses() {
        let a = Arc::new(Admission::with_capacity(&config(0, 4, &[]), Some(10)));
        let held: Vec<_> = (0..6).map(|_| a.admit(ip("198.51.100.7"))).collect();
        assert!(held.iter().all(|t| matches!(t, Admitted::Full(_))));
        let health: Vec<_> = (0..2).map(|_| a.admit(ip("198.51.100.7"))).collect();
        assert!(health.iter().all(|t| matches!(t, Admitted::HealthOnly(_))));
        assert!(matches!(
            a.admit(ip("198.51.100.7")),
            Admitted::Refused(Refusal::Descriptors)
        ));
        drop(health);
        drop(held);
        assert_eq!(a.open(), 0);
        assert!(matches!(a.admit(ip("198.51.100.7")), Admitted::Full(_)));
    }
}
