//! Locks for critical sections: a lock is named `<room>/<name>` ([`Resource`]) in a tenant,
//! held by one socket or API caller at a time, until released, until its holder's socket
//! disconnects or until its TTL passes without a renewal.
//!
//! - Every grant gets a **fencing token** larger than every token granted before it, of any
//!   resource of the node (a single node) or the cluster: a resource's tokens strictly
//!   increase, across restarts too.
//!   - With `[storage] path` the counter is kept in the redb file ([`disk`]): tokens count
//!     from 1, and before one past the reserved count is granted the next [`disk::BLOCK`]
//!     are reserved with one durable commit (a restart starts past the reservation: no
//!     token is granted twice, whatever the clock does).
//!   - In memory only, the count is floored at the time in microseconds since the Unix
//!     epoch: a restart starts above every token granted before unless the clock went back
//!     (or the node granted more than a million locks a second on average).
//!   - In a cluster it is a Redis counter (`INCR` in the acquire script), floored at Redis's
//!     `TIME` in microseconds the same way, so a Redis that lost its data still grants
//!     larger tokens.
//!
//!   Tokens stay below 2^53 (JavaScript's safe integers) until the year 2255.
//! - A lock ends exactly once: by a release, by its holder's disconnect, or by its expiry.
//!   Each store operation is atomic (one mutex on a single node, one Lua script in Redis) and
//!   first claims the resource's lock if it has expired (`reaped`), so whoever claims an
//!   expiry (the expiry worker, a sweep, or the next acquire, release or renew of the
//!   resource) is the only one to announce it. Expiry is judged by one clock: the node's on
//!   a single node, Redis's `TIME` in a cluster (the nodes' clocks do not matter).
//! - The broadcaster announces what happens (`lock.acquired`, `lock.released`) to the
//!   resource's room: see `EventBroadcaster::acquire_lock` and friends. This module keeps
//!   the locks and knows no events.
//!
//! Where locks are kept is decided once, in [`crate::stores`]: [`memory`] on a single node,
//! [`redis`] in a cluster.

pub mod disk;
pub mod memory;
pub mod redis;

pub use memory::MemoryLocks;
pub use redis::RedisLocks;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::config::LocksConfig;
use crate::errors::Message;
use crate::rooms::{Id, RoomName, Tenant};

/// A lock's name: `<room>/<name>`, the room as `subscribe` takes it and the name 1 to 128 of
/// `[A-Za-z0-9_.-]` (`project:42/deploy`). The room decides who may take the lock and
/// who hears of it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Resource {
    pub room: RoomName,
    pub name: Id,
}

impl Resource {
    pub fn parse(s: &str) -> Option<Self> {
        let (room, name) = s.split_once('/')?;
        Some(Self {
            room: RoomName::parse(room)?,
            name: Id::parse(name)?,
        })
    }

    /// The key of the resource's lock in its store: `<tenant>/<room>/<name>`.
    pub fn key(&self, tenant: &Tenant) -> String {
        format!("{tenant}/{self}")
    }

    /// The tenant and the resource of a store key.
    pub fn from_key(key: &str) -> Option<(Tenant, Self)> {
        let (tenant, resource) = key.split_once('/')?;
        Some((Id::parse(tenant)?, Self::parse(resource)?))
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.room, self.name)
    }
}

impl Serialize for Resource {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// What holds a lock: a socket, or an HTTP caller (a backend, an agent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Socket,
    Api,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Socket => "socket",
            Self::Api => "api",
        }
    }

    pub fn parse(s: &str) -> Self {
        match s {
            "socket" => Self::Socket,
            _ => Self::Api,
        }
    }
}

/// Who holds a lock, as the room is told: the user (a socket's token `sub`, or the
/// `holder.user_id` an HTTP caller gave) and the kind of holder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Holder {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<Id>,
    pub kind: Kind,
}

/// Who may release or renew a lock besides presenting its token: the socket that acquired
/// it (by its id), or any HTTP caller of the tenant (a backend is trusted with the locks of
/// its tenant: it may end a stuck holder's lock with its token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    Socket(String),
    Api,
}

impl Owner {
    /// As the stores keep it: the socket id, or `""`.
    fn as_str(&self) -> &str {
        match self {
            Self::Socket(sid) => sid,
            Self::Api => "",
        }
    }

    pub fn kind(&self) -> Kind {
        match self {
            Self::Socket(_) => Kind::Socket,
            Self::Api => Kind::Api,
        }
    }
}

/// A lock that is held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub token: u64,
    pub holder: Holder,
    /// Unix milliseconds, by the store's clock.
    pub expires_ms: u64,
}

/// The answer to an acquire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acquired {
    Granted { token: u64, expires_ms: u64 },
    Locked(Held),
}

/// The answer to a release or a renew (`expires_ms` for a renew).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Done {
        expires_ms: u64,
    },
    /// A release with a token that is not the lock's (an old one, or none is held), or a
    /// release or renew of another socket's lock: nothing changed.
    NotHolder,
    /// The lock with this token has ended: it expired (just now, claimed by this call: a
    /// release or a renew alike), or, for a renew, the token is not the lock's.
    Lost,
}

/// A store operation's answer, and the expired lock of the resource it claimed on the way
/// (its token), which the caller announces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer<T> {
    pub answer: T,
    pub reaped: Option<u64>,
}

/// Why a lock operation failed; each has its code in [`crate::errors`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LockError {
    #[error("invalid resource {0}")]
    InvalidResource(String),
    #[error("{resource} is locked")]
    Locked { resource: String, held: Held },
    #[error("not the holder of {0}")]
    NotHolder(String),
    #[error("the lock of {0} was lost")]
    Lost(String),
    #[error("no lock is held on {0}")]
    NotFound(String),
    /// The socket holds this many locks already (`locks.max_per_socket`).
    #[error("too many locks")]
    TooMany(usize),
    /// Redis did not answer, or the store failed.
    #[error("locks are unavailable: {0}")]
    Unavailable(String),
}

impl LockError {
    /// The message template, and with it the code.
    pub fn template(&self) -> Message {
        match self {
            Self::InvalidResource(_) => Message::InvalidResource,
            Self::Locked { .. } => Message::Locked,
            Self::NotHolder(_) => Message::NotHolder,
            Self::Lost(_) => Message::LockLost,
            Self::NotFound(_) => Message::LockNotFound,
            Self::TooMany(_) => Message::TooManyLocks,
            Self::Unavailable(_) => Message::HttpCluster,
        }
    }

    pub fn message(&self) -> String {
        let template = self.template();
        match self {
            Self::InvalidResource(r)
            | Self::Locked { resource: r, .. }
            | Self::NotHolder(r)
            | Self::Lost(r)
            | Self::NotFound(r) => template.render(&[("resource", &format_args!("{r:?}"))]),
            Self::TooMany(max) => template.render(&[("max", max)]),
            Self::Unavailable(reason) => template.render(&[("reason", reason)]),
        }
    }

    /// What the error object carries besides `code` and `message`: the holder and the
    /// expiry of a `locked` refusal, the resource otherwise.
    pub fn extra(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut extra = serde_json::Map::new();
        match self {
            Self::Locked { resource, held } => {
                extra.insert("resource".into(), resource.as_str().into());
                extra.insert(
                    "holder".into(),
                    serde_json::to_value(&held.holder).unwrap_or_default(),
                );
                extra.insert("expires_at".into(), expires_at(held.expires_ms).into());
            }
            Self::InvalidResource(r) | Self::NotHolder(r) | Self::Lost(r) | Self::NotFound(r) => {
                extra.insert("resource".into(), r.as_str().into());
            }
            Self::TooMany(_) | Self::Unavailable(_) => {}
        }
        extra
    }
}

/// Unix milliseconds as the API shows times: RFC 3339 UTC with milliseconds.
pub fn expires_at(ms: u64) -> String {
    let nanos = i128::from(ms) * 1_000_000;
    let at = time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    crate::events::Timestamp(at).to_string()
}

/// Why a lock ended, as `lock.released` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Reason {
    /// Its holder released it.
    Released,
    /// Its TTL passed without a renewal.
    Expired,
    /// Its holder's socket disconnected.
    Disconnected,
}

/// A lock that ended by expiring, claimed by this node: to announce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expired {
    pub tenant: Tenant,
    pub resource: Resource,
    pub token: u64,
}

enum Backend {
    Memory(MemoryLocks),
    Redis(RedisLocks),
}

/// The node's locks: the store, what this node's sockets hold (released when they
/// disconnect) and when the locks this node granted expire (what the expiry worker waits
/// for).
pub struct Locks {
    backend: Backend,
    config: LocksConfig,
    /// Socket id → (store key → token) of the locks it holds.
    sockets: Mutex<HashMap<String, HashMap<String, u64>>>,
    /// When the locks granted or renewed here expire, earliest first.
    deadlines: Mutex<BinaryHeap<Reverse<Instant>>>,
    /// Wakes the expiry worker for a deadline earlier than the one it waits for.
    wake: tokio::sync::Notify,
}

fn unavailable(e: impl fmt::Display) -> LockError {
    LockError::Unavailable(e.to_string())
}

impl Locks {
    /// A single node's locks, in memory (the fencing count from the time alone).
    pub fn memory(config: LocksConfig) -> Self {
        Self::with(Backend::Memory(MemoryLocks::new(0, None)), config)
    }

    /// A single node's locks, in memory, with the fencing counter reserved on disk
    /// (`[storage] path`).
    pub fn on_disk(
        config: LocksConfig,
        fence: disk::DiskFence,
    ) -> Result<Self, crate::disk::StorageError> {
        let reserved = fence.reserved()?;
        Ok(Self::with(
            Backend::Memory(MemoryLocks::new(reserved, Some(fence))),
            config,
        ))
    }

    /// The cluster's locks, in Redis.
    pub fn redis(store: RedisLocks, config: LocksConfig) -> Self {
        Self::with(Backend::Redis(store), config)
    }

    fn with(backend: Backend, config: LocksConfig) -> Self {
        Self {
            backend,
            config,
            sockets: Mutex::default(),
            deadlines: Mutex::default(),
            wake: tokio::sync::Notify::new(),
        }
    }

    pub fn config(&self) -> &LocksConfig {
        &self.config
    }

    /// How many locks the socket `sid` holds.
    pub fn held_by(&self, sid: &str) -> usize {
        self.sockets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(sid)
            .map_or(0, HashMap::len)
    }

    /// Takes the lock of `resource` for `ttl_ms` if nobody holds it.
    pub async fn acquire(
        &self,
        tenant: &Tenant,
        resource: &Resource,
        ttl_ms: u64,
        user_id: Option<&Id>,
        owner: &Owner,
    ) -> Result<Answer<Acquired>, LockError> {
        let key = resource.key(tenant);
        let answer = match &self.backend {
            Backend::Memory(m) => m.acquire(&key, ttl_ms, user_id, owner)?,
            Backend::Redis(r) => r
                .acquire(&key, ttl_ms, user_id, owner)
                .await
                .map_err(unavailable)?,
        };
        if let Acquired::Granted { token, .. } = answer.answer {
            if let Owner::Socket(sid) = owner {
                self.sockets
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .entry(sid.clone())
                    .or_default()
                    .insert(key, token);
            }
            self.expires_in(ttl_ms);
        }
        Ok(answer)
    }

    /// Ends the lock of `resource` if `token` is its token (and `owner` its owner).
    pub async fn release(
        &self,
        tenant: &Tenant,
        resource: &Resource,
        token: u64,
        owner: &Owner,
    ) -> Result<Answer<Outcome>, LockError> {
        let key = resource.key(tenant);
        let answer = match &self.backend {
            Backend::Memory(m) => m.release(&key, token, owner),
            Backend::Redis(r) => r.release(&key, token, owner).await.map_err(unavailable)?,
        };
        if matches!(answer.answer, Outcome::Done { .. } | Outcome::Lost) {
            self.forget(owner, &key, token);
        }
        Ok(answer)
    }

    /// Moves the expiry of the lock of `resource` to `ttl_ms` from now if `token` is its
    /// token (and `owner` its owner).
    pub async fn renew(
        &self,
        tenant: &Tenant,
        resource: &Resource,
        token: u64,
        owner: &Owner,
        ttl_ms: u64,
    ) -> Result<Answer<Outcome>, LockError> {
        let key = resource.key(tenant);
        let answer = match &self.backend {
            Backend::Memory(m) => m.renew(&key, token, owner, ttl_ms),
            Backend::Redis(r) => r
                .renew(&key, token, owner, ttl_ms)
                .await
                .map_err(unavailable)?,
        };
        match answer.answer {
            Outcome::Done { .. } => self.expires_in(ttl_ms),
            Outcome::Lost => self.forget(owner, &key, token),
            Outcome::NotHolder => {}
        }
        Ok(answer)
    }

    /// The lock of `resource`, if one is held.
    pub async fn get(
        &self,
        tenant: &Tenant,
        resource: &Resource,
    ) -> Result<Option<Held>, LockError> {
        let key = resource.key(tenant);
        match &self.backend {
            Backend::Memory(m) => Ok(m.get(&key)),
            Backend::Redis(r) => r.get(&key).await.map_err(unavailable),
        }
    }

    /// The locks the socket `sid` held, forgotten here: its disconnect releases them.
    pub fn take_socket(&self, sid: &str) -> Vec<(Tenant, Resource, u64)> {
        let held = self
            .sockets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(sid)
            .unwrap_or_default();
        held.into_iter()
            .filter_map(|(key, token)| {
                let (tenant, resource) = Resource::from_key(&key)?;
                Some((tenant, resource, token))
            })
            .collect()
    }

    /// Claims every lock whose time is up (at most a batch; the worker comes back at once
    /// for more).
    pub async fn reap(&self) -> Result<Vec<Expired>, LockError> {
        let ended = match &self.backend {
            Backend::Memory(m) => m.reap(REAP_BATCH),
            Backend::Redis(r) => r.reap(REAP_BATCH).await.map_err(unavailable)?,
        };
        let mut expired = Vec::with_capacity(ended.len());
        for (key, token) in ended {
            self.forget_key(&key, token);
            if let Some((tenant, resource)) = Resource::from_key(&key) {
                expired.push(Expired {
                    tenant,
                    resource,
                    token,
                });
            }
        }
        Ok(expired)
    }

    /// Waits until the next lock granted here may have expired, or `locks.sweep_ms`.
    pub async fn next_expiry(&self) {
        let sweep = Instant::now() + Duration::from_millis(self.config.sweep_ms);
        let wake = self.wake.notified();
        let next = {
            let mut deadlines = self.deadlines.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            while deadlines.peek().is_some_and(|Reverse(at)| *at <= now) {
                deadlines.pop();
            }
            deadlines.peek().map(|Reverse(at)| *at)
        };
        match next {
            // Due already: a little later, so that the store's clock has passed it too.
            Some(at) if at <= sweep => {
                tokio::select! {
                    _ = tokio::time::sleep_until(at + EXPIRY_SLACK) => {}
                    _ = wake => {}
                }
            }
            _ => {
                tokio::select! {
                    _ = tokio::time::sleep_until(sweep) => {}
                    _ = wake => {}
                }
            }
        }
    }

    /// Notes a deadline `ttl_ms` from now for the expiry worker. Past [`MAX_DEADLINES`]
    /// noted (many renewals of long locks) one is dropped: its lock is then found by the
    /// sweep, up to `locks.sweep_ms` late.
    fn expires_in(&self, ttl_ms: u64) {
        let at = Instant::now() + Duration::from_millis(ttl_ms);
        let earliest = {
            let mut deadlines = self.deadlines.lock().unwrap_or_else(|e| e.into_inner());
            if deadlines.len() >= MAX_DEADLINES {
                return;
            }
            let earliest = deadlines.peek().is_none_or(|Reverse(first)| at < *first);
            deadlines.push(Reverse(at));
            earliest
        };
        if earliest {
            self.wake.notify_one();
        }
    }

    fn forget(&self, owner: &Owner, key: &str, token: u64) {
        if let Owner::Socket(sid) = owner {
            let mut sockets = self.sockets.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(held) = sockets.get_mut(sid) {
                if held.get(key) == Some(&token) {
                    held.remove(key);
                }
                if held.is_empty() {
                    sockets.remove(sid);
                }
            }
        }
    }

    /// Forgets an expired lock of whichever socket of this node held it.
    fn forget_key(&self, key: &str, token: u64) {
        let mut sockets = self.sockets.lock().unwrap_or_else(|e| e.into_inner());
        sockets.retain(|_, held| {
            if held.get(key) == Some(&token) {
                held.remove(key);
            }
            !held.is_empty()
        });
    }
}

/// The most deadlines the expiry worker keeps (a few hundred KiB).
const MAX_DEADLINES: usize = 16_384;

/// The most expired locks one reap claims.
const REAP_BATCH: usize = 256;

/// How long after a lock's deadline by this node's clock the worker looks: the store's clock
/// (Redis's, in a cluster) may be a little behind.
const EXPIRY_SLACK: Duration = Duration::from_millis(5);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_are_a_room_and_a_name() {
        let r = Resource::parse("project:42/deploy").unwrap();
        assert_eq!(r.room, RoomName::parse("project:42").unwrap());
        assert_eq!(r.to_string(), "project:42/deploy");
        let tenant = Id::parse("acme").unwrap();
        assert_eq!(r.key(&tenant), "acme/project:42/deploy");
        assert_eq!(
            Resource::from_key(&r.key(&tenant)),
            Some((tenant, r.clone()))
        );
        for bad in [
            "",
            "project:42",
            "project:42/",
            "/deploy",
            "nope:1/deploy",
            "project:42/a/b",
            "project:42/a b",
            "global/é",
        ] {
            assert_eq!(Resource::parse(bad), None, "{bad:?}");
        }
        assert!(Resource::parse("global/x").is_some());
    }

    #[test]
    fn expiry_times_read_as_rfc3339() {
        assert_eq!(expires_at(1_800_000_000_123), "2027-01-15T08:00:00.123Z");
    }
}
