//! Engine.IO sessions that have not been authenticated yet ("pre-auth"), counted per client
//! address and per node. Such a session costs the server memory and a timer before anyone
//! has shown a token, so a client may only hold a few of them, and the node a bounded
//! number; the screening refuses a handshake over either bound before the session exists.
//!
//! A counted session holds a [`PendingGuard`] in its request's extensions, which live as
//! long as the session: the guard gives its place back when the session's CONNECT is
//! accepted ([`PendingGuard::accept`]) or, at the latest, when the session ends.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use super::LimitError;

#[derive(Default)]
struct Counts {
    node: u64,
    per_ip: HashMap<IpAddr, u64>,
}

pub struct Pending {
    max_node: u64,
    max_per_ip: u64,
    counts: Mutex<Counts>,
}

/// One session counted as pre-auth; uncounted once, by [`Self::accept`] or when dropped.
pub struct PendingGuard {
    pending: Arc<Pending>,
    /// `None` for an exempt address: counted for the node only.
    ip: Option<IpAddr>,
    done: AtomicBool,
}

impl Pending {
    /// At most `max_per_ip` sessions per address and `max_node` on the node (0: no bound).
    pub fn new(max_per_ip: u64, max_node: u64) -> Self {
        Self {
            max_node,
            max_per_ip,
            counts: Mutex::default(),
        }
    }

    /// Counts a new session from `ip` (`None`: exempt from the per-address bound), or
    /// refuses it when a bound is reached.
    pub fn admit(self: &Arc<Self>, ip: Option<IpAddr>) -> Result<PendingGuard, LimitError> {
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if self.max_node > 0 && c.node >= self.max_node {
            return Err(LimitError::TooManyPreauth {
                which: "node",
                limit: self.max_node,
            });
        }
        if let Some(ip) = ip {
            let n = c.per_ip.get(&ip).copied().unwrap_or(0);
            if self.max_per_ip > 0 && n >= self.max_per_ip {
                return Err(LimitError::TooManyPreauth {
                    which: "address",
                    limit: self.max_per_ip,
                });
            }
            c.per_ip.insert(ip, n + 1);
        }
        c.node += 1;
        Ok(PendingGuard {
            pending: self.clone(),
            ip,
            done: AtomicBool::new(false),
        })
    }

    /// Sessions counted now: on the node, and from `ip`.
    pub fn count(&self, ip: IpAddr) -> (u64, u64) {
        let c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        (c.node, c.per_ip.get(&ip).copied().unwrap_or(0))
    }

    fn release(&self, ip: Option<IpAddr>) {
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        c.node = c.node.saturating_sub(1);
        if let Some(ip) = ip
            && let Some(n) = c.per_ip.get_mut(&ip)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                c.per_ip.remove(&ip);
            }
        }
    }
}

impl PendingGuard {
    /// The session's CONNECT was accepted: it is no longer pre-auth. Returns whether this
    /// was the first accepted CONNECT of the session.
    pub fn accept(&self) -> bool {
        let first = !self.done.swap(true, Ordering::AcqRel);
        if first {
            self.pending.release(self.ip);
        }
        first
    }

    /// Whether a CONNECT of this session was accepted already.
    pub fn accepted(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }
}

impl Drop for PendingGuard {
    fn drop(&mut self) {
        self.accept();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_per_address_and_node_and_gives_places_back() {
        let pending = Arc::new(Pending::new(2, 3));
        let a: IpAddr = "203.0.113.1".parse().unwrap();
        let b: IpAddr = "203.0.113.2".parse().unwrap();
        let a1 = pending.admit(Some(a)).unwrap();
        let _a2 = pending.admit(Some(a)).unwrap();
        let err = pending.admit(Some(a)).err().unwrap();
        assert_eq!(err.code(), "too_many_preauth_sessions");
        let _b1 = pending.admit(Some(b)).unwrap();
        // The node is full, also for an exempt address.
        assert!(pending.admit(None).is_err());
        assert!(a1.accept());
        assert!(!a1.accept(), "a second accept changes nothing");
        assert_eq!(pending.count(a), (2, 1));
        drop(a1);
        assert_eq!(
            pending.count(a),
            (2, 1),
            "an accepted guard is not released twice"
        );
        let exempt = pending.admit(None).unwrap();
        drop(exempt);
        assert_eq!(pending.count(b), (2, 1));
    }

    #[test]
    fn zero_is_no_bound() {
        let pending = Arc::new(Pending::new(0, 0));
        let ip: IpAddr = "203.0.113.1".parse().unwrap();
        let guards: Vec<_> = (0..100).map(|_| pending.admit(Some(ip)).unwrap()).collect();
        assert_eq!(pending.count(ip), (100, 100));
        drop(guards);
        assert_eq!(pending.count(ip), (0, 0));
    }
}
