//! Token lifetime on live sockets. A socket is sent `auth.expiring` `expiry_warning_secs`
//! before its token expires, and at expiry (plus the configured leeway) `auth.expired` and a
//! server disconnect, unless it sent `auth.refresh` with a newer token first.
//!
//! One task serves every socket: deadlines sit in one ordered set, so a socket costs two
//! small entries, not a timer task of its own.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use socketioxide::SocketIo;
use socketioxide::adapter::Adapter;
use socketioxide::socket::Sid;
use tokio::sync::Notify;

use super::{NAMESPACES, identity_of};
use crate::auth::jwt::now_secs;
use crate::events::Timestamp;

/// 9999-12-31T23:59:59Z, the last second a [`Timestamp`] can show: a token that expires
/// later never expires on a live socket.
pub const NO_EXPIRY_AFTER: u64 = 253_402_300_799;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Warn,
    Expire,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Due {
    at: u64,
    kind: Kind,
    ns: usize,
    sid: Sid,
    /// The token expiry this deadline belongs to: a refreshed socket's old deadlines no
    /// longer match its identity and are skipped.
    exp: u64,
}

pub struct Lifetimes {
    due: Mutex<BTreeSet<Due>>,
    wake: Notify,
    warning_secs: u64,
    leeway_secs: u64,
}

impl Lifetimes {
    pub fn new(warning_secs: u64, leeway_secs: u64) -> Self {
        Self {
            due: Mutex::default(),
            wake: Notify::new(),
            warning_secs,
            leeway_secs,
        }
    }

    fn entries(&self, ns: &str, sid: Sid, exp: u64) -> Option<[Due; 2]> {
        // An `exp` past what a timestamp can say (near 2^64 it would overflow into the
        // past) is no expiry within range: no deadline at all.
        if exp > NO_EXPIRY_AFTER {
            return None;
        }
        let ns = NAMESPACES.iter().position(|n| *n == ns)?;
        let end = exp.saturating_add(self.leeway_secs);
        Some([
            Due {
                at: end.saturating_sub(self.warning_secs),
                kind: Kind::Warn,
                ns,
                sid,
                exp,
            },
            Due {
                at: end,
                kind: Kind::Expire,
                ns,
                sid,
                exp,
            },
        ])
    }

    pub fn watch(&self, ns: &str, sid: Sid, exp: u64) {
        let Some(entries) = self.entries(ns, sid, exp) else {
            return;
        };
        if let Ok(mut due) = self.due.lock() {
            due.extend(entries);
        }
        self.wake.notify_one();
    }

    pub fn unwatch(&self, ns: &str, sid: Sid, exp: u64) {
        let Some(entries) = self.entries(ns, sid, exp) else {
            return;
        };
        if let Ok(mut due) = self.due.lock() {
            for e in &entries {
                due.remove(e);
            }
        }
    }

    /// Removes and returns what is due at `now`, and when the next deadline is.
    fn take_due(&self, now: u64) -> (Vec<Due>, Option<u64>) {
        let Ok(mut due) = self.due.lock() else {
            return (Vec::new(), None);
        };
        let mut ready = Vec::new();
        while let Some(first) = due.first().copied() {
            if first.at > now {
                return (ready, Some(first.at));
            }
            due.pop_first();
            ready.push(first);
        }
        (ready, None)
    }
}

/// Runs the deadlines of every socket of `io`, until its worker is stopped.
pub async fn run<A: Adapter>(io: SocketIo<A>, lifetimes: Arc<Lifetimes>) {
    loop {
        let now = now_secs();
        let (ready, next) = lifetimes.take_due(now);
        for due in ready {
            act(&io, due);
        }
        // Deadlines are whole seconds: wake at the next one, or when one is added.
        let wait = next.map_or(Duration::from_secs(3600), |at| {
            Duration::from_secs(at.saturating_sub(now_secs())).max(Duration::from_millis(200))
        });
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = lifetimes.wake.notified() => {}
        }
    }
}

fn act<A: Adapter>(io: &SocketIo<A>, due: Due) {
    let Some(socket) = io
        .of(NAMESPACES[due.ns])
        .and_then(|op| op.get_socket(due.sid))
    else {
        return;
    };
    let Some(identity) = identity_of(&socket) else {
        return;
    };
    if identity.expires_at != due.exp {
        return; // refreshed since
    }
    let expires_at = Timestamp::from_unix_secs(due.exp);
    match due.kind {
        Kind::Warn => {
            let left = due.exp.saturating_sub(now_secs());
            let _ = socket.emit(
                "auth.expiring",
                &json!({"expires_at": expires_at, "expires_in_secs": left}),
            );
        }
        Kind::Expire => {
            tracing::debug!(sid = %socket.id, user_id = %identity.user_id, "token expired: disconnecting");
            let _ = socket.emit(
                "auth.expired",
                &json!({"code": crate::errors::Code::TokenExpired.as_str(), "expired_at": expires_at}),
            );
            let _ = socket.disconnect();
        }
    }
}
