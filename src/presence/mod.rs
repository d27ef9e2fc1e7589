//! Who is in which room, across the cluster: counts per user per room, `presence.joined`
//! and `presence.left` events, and the numbers behind stats and the presence endpoint.
//!
//! Socket handlers record changes synchronously into this node's [`Presence`] and queue
//! them; one worker task applies the queue, in order, to a [`PresenceStore`] ([`memory`]
//! for a single node, [`redis`] for a cluster), which answers atomically whether a change was
//! a user's first join or last leave. A last leave only becomes `presence.left` after the
//! grace period, and only if the user has not come back meanwhile.
//!
//! Which counted rooms a socket is in is kept here too, in its [`Share`], not read back
//! from the adapter when it leaves: see [`Share`].

pub mod memory;
pub mod redis;

pub use memory::MemoryStore;
pub use redis::RedisStore;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde::Serialize;
use serde_json::json;
use tokio::sync::mpsc;

use crate::auth::Identity;
use crate::broadcaster::EventBroadcaster;
use crate::hooks_out::{HookEvent, HookKind, Webhooks};
use crate::rooms::{Id, RoomName, Tenant};

/// The store key that counts connections per `tenant/user` (not a room: rooms never start
/// with `*`). `global` and `user:` room presence are read from it.
pub const USERS_KEY: &str = "*users";

/// Only these rooms are counted per user and announce joins and leaves.
pub fn announces(room: &RoomName) -> bool {
    matches!(room, RoomName::Project(_) | RoomName::Agent(_))
}

/// What a change did to a user's count in a room, cluster-wide.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    Unchanged,
    /// First connection: announce `presence.joined`.
    Joined,
    /// Last connection left: confirm with this token after the grace period.
    Leaving(String),
    /// Back within the grace period: announce nothing.
    Rejoined,
}

/// What a change did to the room's user count, cluster-wide (reported only for announced
/// changes: counted rooms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Occupancy {
    Unchanged,
    /// From no user to one: `room.occupied`.
    Occupied,
    /// From one user to none: `room.vacated`.
    Vacated,
}

/// A change's answer: the user's transition and the room's, from one atomic step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Changed {
    pub user: Transition,
    pub room: Occupancy,
}

#[derive(Debug, thiserror::Error)]
#[error("presence store: {0}")]
pub struct StoreError(pub String);

/// Where the counts live. `key` is a scoped room (`acme/project:1`) or [`USERS_KEY`].
pub trait PresenceStore: Send + Sync + 'static {
    fn change<'a>(
        &'a self,
        key: &'a str,
        field: &'a str,
        delta: i64,
        announce: bool,
    ) -> BoxFuture<'a, Result<Changed, StoreError>>;
    /// True when the user is still gone and `token` is still the pending leave.
    fn confirm_left<'a>(
        &'a self,
        key: &'a str,
        field: &'a str,
        token: &'a str,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;
    fn members<'a>(&'a self, key: &'a str)
    -> BoxFuture<'a, Result<Vec<(String, u64)>, StoreError>>;
    fn count<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<u64, StoreError>>;
    /// Replaces this node's whole contribution with `entries` (after the store lost it).
    fn resync(&self, entries: Vec<(String, String, i64)>) -> BoxFuture<'_, Result<(), StoreError>>;
}

enum Op {
    Change {
        key: String,
        field: String,
        delta: i64,
        announce: Option<(Tenant, RoomName, Id)>,
    },
    Resync(Vec<(String, String, i64)>),
}

/// This node's side of presence; cheap to clone.
#[derive(Clone)]
pub struct Presence {
    inner: Arc<Inner>,
}

struct Inner {
    /// This node's counts, `(key, field) -> connections`: what a resync re-sends.
    local: Mutex<HashMap<(String, String), i64>>,
    tx: mpsc::UnboundedSender<Op>,
}

/// The receiving end, turned into the worker by [`flush`].
pub struct PresenceQueue(mpsc::UnboundedReceiver<Op>);

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Member {
    pub user_id: String,
    pub connections: u64,
}

impl Presence {
    pub fn new() -> (Self, PresenceQueue) {
        let (tx, rx) = mpsc::unbounded_channel();
        let inner = Inner {
            local: Mutex::default(),
            tx,
        };
        (
            Self {
                inner: Arc::new(inner),
            },
            PresenceQueue(rx),
        )
    }

    fn record(
        &self,
        key: String,
        field: String,
        delta: i64,
        announce: Option<(Tenant, RoomName, Id)>,
    ) {
        // Local update and enqueue under one lock, so the queue order is the update order
        // and a resync snapshot matches exactly the changes queued before it.
        let Ok(mut local) = self.inner.local.lock() else {
            return;
        };
        let entry = local.entry((key.clone(), field.clone())).or_default();
        *entry += delta;
        if *entry <= 0 {
            local.remove(&(key.clone(), field.clone()));
        }
        let _ = self.inner.tx.send(Op::Change {
            key,
            field,
            delta,
            announce,
        });
    }

    pub fn connected(&self, who: &Identity) {
        self.record(USERS_KEY.into(), user_field(who), 1, None);
    }

    /// The socket with `share` is gone: every counted room it was in is left and its user
    /// counts one connection less. Only the first call for a share counts (and answers true).
    pub fn disconnected(&self, share: &Share, who: &Identity) -> bool {
        let Some(rooms) = share.close() else {
            return false;
        };
        self.rooms_changed(who, &rooms, -1);
        self.record(USERS_KEY.into(), user_field(who), -1, None);
        true
    }

    /// The socket with `share` joined `rooms`; those it was not counted in yet count now.
    /// False when the socket has already left: the caller undoes the join.
    #[must_use]
    pub fn joined<'a>(
        &self,
        share: &Share,
        who: &Identity,
        rooms: impl IntoIterator<Item = &'a RoomName>,
    ) -> bool {
        let Some(added) = share.add(rooms) else {
            return false;
        };
        self.rooms_changed(who, &added, 1);
        true
    }

    /// The socket with `share` left `rooms`; those it was counted in stop counting.
    pub fn left<'a>(
        &self,
        share: &Share,
        who: &Identity,
        rooms: impl IntoIterator<Item = &'a RoomName>,
    ) {
        let removed = share.remove(rooms);
        self.rooms_changed(who, &removed, -1);
    }

    fn rooms_changed(&self, who: &Identity, rooms: &[RoomName], delta: i64) {
        for room in rooms {
            self.record(
                room.scoped(&who.tenant).into_owned(),
                who.user_id.to_string(),
                delta,
                Some((who.tenant.clone(), room.clone(), who.user_id.clone())),
            );
        }
    }

    /// Queues a full re-send of this node's counts (the store lost or missed them).
    pub fn resync(&self) {
        let Ok(local) = self.inner.local.lock() else {
            return;
        };
        let entries = local
            .iter()
            .map(|((k, f), n)| (k.clone(), f.clone(), *n))
            .collect();
        let _ = self.inner.tx.send(Op::Resync(entries));
    }
}

/// One socket's part in presence: the counted rooms it is in, until it leaves.
///
/// Kept here rather than read back from the adapter at disconnect: socketioxide runs an async
/// disconnect handler in a task of its own, and when the transport closes right behind the
/// client's DISCONNECT packet (what socket.io-client's `disconnect()` does), the second close
/// takes the socket out of its adapter rooms at once, often before that task has run. Rooms
/// read there would be none: the leave lost, the user counted in the room for good.
///
/// It also makes each count exact: two concurrent `subscribe`s of one room count it once,
/// and a join that lands after the socket has left counts nothing.
pub struct Share {
    /// `None` once the socket has left.
    rooms: Mutex<Option<HashSet<RoomName>>>,
}

impl Default for Share {
    fn default() -> Self {
        Self {
            rooms: Mutex::new(Some(HashSet::new())),
        }
    }
}

impl Share {
    /// Adds the counted rooms among `rooms`; returns those that were not in yet, or `None`
    /// when the socket has left.
    fn add<'a>(&self, rooms: impl IntoIterator<Item = &'a RoomName>) -> Option<Vec<RoomName>> {
        let mut held = self.rooms.lock().ok()?;
        let held = held.as_mut()?;
        Some(
            rooms
                .into_iter()
                .filter(|r| announces(r) && held.insert((*r).clone()))
                .cloned()
                .collect(),
        )
    }

    /// Removes `rooms`; returns those that were in.
    fn remove<'a>(&self, rooms: impl IntoIterator<Item = &'a RoomName>) -> Vec<RoomName> {
        let Ok(mut held) = self.rooms.lock() else {
            return Vec::new();
        };
        let Some(held) = held.as_mut() else {
            return Vec::new();
        };
        rooms
            .into_iter()
            .filter(|r| held.remove(*r))
            .cloned()
            .collect()
    }

    /// Marks the socket gone; returns the rooms it was in, or `None` if it had already left.
    fn close(&self) -> Option<Vec<RoomName>> {
        let mut held = self.rooms.lock().ok()?;
        held.take().map(|rooms| rooms.into_iter().collect())
    }
}

fn user_field(who: &Identity) -> String {
    format!("{}/{}", who.tenant, who.user_id)
}

/// The users in `room` of `tenant` with their connection counts, sorted by user id.
pub async fn members(
    store: &dyn PresenceStore,
    tenant: &Tenant,
    room: &RoomName,
) -> Result<Vec<Member>, StoreError> {
    let mut members: Vec<Member> = match room {
        RoomName::Project(_) | RoomName::Agent(_) => store
            .members(&room.scoped(tenant))
            .await?
            .into_iter()
            .map(|(user_id, connections)| Member {
                user_id,
                connections,
            })
            .collect(),
        RoomName::Global | RoomName::User(_) => {
            let prefix = format!("{tenant}/");
            let only = match room {
                RoomName::User(id) => Some(id.as_str()),
                _ => None,
            };
            store
                .members(USERS_KEY)
                .await?
                .into_iter()
                .filter_map(|(field, connections)| {
                    let user = field.strip_prefix(&prefix)?;
                    (only.is_none() || only == Some(user)).then(|| Member {
                        user_id: user.to_owned(),
                        connections,
                    })
                })
                .collect()
        }
    };
    members.retain(|m| m.connections > 0);
    members.sort_by(|a, b| a.user_id.cmp(&b.user_id));
    Ok(members)
}

/// The worker: applies queued changes to the store in order and announces transitions.
pub async fn flush(queue: PresenceQueue, announcer: Announcer) {
    let mut rx = queue.0;
    while let Some(op) = rx.recv().await {
        match op {
            Op::Change {
                key,
                field,
                delta,
                announce,
            } => {
                let result = announcer
                    .store
                    .change(&key, &field, delta, announce.is_some())
                    .await;
                let Some((tenant, room, user)) = announce else {
                    continue;
                };
                let changed = match result {
                    Ok(changed) => changed,
                    Err(e) => {
                        tracing::debug!("presence change not stored: {e}");
                        continue;
                    }
                };
                // The room first: `room.occupied` comes before the first `presence.joined`.
                if changed.room == Occupancy::Occupied {
                    announcer.room_changed(HookKind::RoomOccupied, &tenant, &room, &user);
                }
                match changed.user {
                    Transition::Joined => announcer.joined(&tenant, &room, &user).await,
                    Transition::Leaving(token) => {
                        announcer
                            .schedule_left(tenant.clone(), room.clone(), user.clone(), token)
                            .await;
                    }
                    Transition::Unchanged | Transition::Rejoined => {}
                }
                if changed.room == Occupancy::Vacated {
                    announcer.room_changed(HookKind::RoomVacated, &tenant, &room, &user);
                }
            }
            Op::Resync(entries) => {
                if let Err(e) = announcer.store.resync(entries).await {
                    tracing::warn!("presence resync failed: {e}");
                }
            }
        }
    }
}

/// Announces `presence.joined` and `presence.left` in rooms small enough for it.
#[derive(Clone)]
pub struct Announcer {
    pub store: Arc<dyn PresenceStore>,
    pub broadcaster: EventBroadcaster,
    /// How long a last leave waits for the user to come back before it is announced.
    pub grace: Duration,
    /// Rooms with more users announce nothing: every join would go to every member, which
    /// grows with the square of the room (a room of 5,000 filling up sends 12.5 M notices).
    /// Outbound webhooks are not limited by it: one notice per change goes to a backend.
    pub max_users: u64,
    /// Outbound webhooks: `presence.*` and `room.*` for backends.
    pub hooks: Webhooks,
}

impl Announcer {
    /// After the grace period, announces `presence.left` if the user is still gone. Whether
    /// the room is small enough is judged now, with the user counted, like the join was.
    /// The webhook `presence.left` is sent in any room, once confirmed.
    pub async fn schedule_left(&self, tenant: Tenant, room: RoomName, user: Id, token: String) {
        let announce = self.small_enough(&tenant, &room, 1).await;
        let hook = self.hooks.wants(HookKind::PresenceLeft);
        if !announce && !hook {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(this.grace).await;
            let key = room.scoped(&tenant);
            match this.store.confirm_left(&key, user.as_str(), &token).await {
                Ok(true) => {
                    if hook {
                        this.hooks.notify(HookEvent::presence(
                            HookKind::PresenceLeft,
                            &tenant,
                            &room,
                            &user,
                        ));
                    }
                    if announce {
                        this.publish(&tenant, &room, &user, "presence.left").await;
                    }
                }
                Ok(false) => {}
                Err(e) => tracing::debug!("presence.left not confirmed: {e}"),
            }
        });
    }

    /// `room.occupied` / `room.vacated` for the webhooks (no socket event).
    pub fn room_changed(&self, kind: HookKind, tenant: &Tenant, room: &RoomName, user: &Id) {
        if self.hooks.wants(kind) {
            self.hooks.notify(HookEvent::room(kind, tenant, room, user));
        }
    }

    async fn joined(&self, tenant: &Tenant, room: &RoomName, user: &Id) {
        if self.hooks.wants(HookKind::PresenceJoined) {
            self.hooks.notify(HookEvent::presence(
                HookKind::PresenceJoined,
                tenant,
                room,
                user,
            ));
        }
        if self.small_enough(tenant, room, 0).await {
            self.publish(tenant, room, user, "presence.joined").await;
        }
    }

    /// Whether `room` has at most `max_users` users, counting `extra` more.
    async fn small_enough(&self, tenant: &Tenant, room: &RoomName, extra: u64) -> bool {
        if self.max_users == 0 {
            return false;
        }
        match self.store.count(&room.scoped(tenant)).await {
            Ok(users) => users + extra <= self.max_users,
            Err(e) => {
                tracing::debug!("presence not announced: {e}");
                false
            }
        }
    }

    async fn publish(&self, tenant: &Tenant, room: &RoomName, user: &Id, name: &'static str) {
        let data = json!({"user_id": user, "room": room});
        if let Err(e) = self
            .broadcaster
            .with_tenant(tenant.clone())
            .announce(name, room.clone(), &data)
            .await
        {
            tracing::debug!(name, "presence event not published: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_share_counts_each_room_once_and_nothing_after_the_socket_left() {
        let share = Share::default();
        let p1 = RoomName::parse("project:1").unwrap();
        let a1 = RoomName::parse("agent:1").unwrap();
        // Only counted rooms are kept.
        assert_eq!(share.add([&RoomName::Global, &p1]), Some(vec![p1.clone()]));
        // Two subscribes of one room: counted once.
        assert_eq!(share.add([&p1, &a1]), Some(vec![a1.clone()]));
        assert_eq!(share.remove([&a1, &a1]), vec![a1.clone()]);
        let mut left = share.close().unwrap();
        left.sort();
        assert_eq!(left, vec![p1.clone()]);
        // Gone: a late join counts nothing, a second leave takes nothing.
        assert_eq!(share.add([&p1]), None);
        assert_eq!(share.remove([&p1]), Vec::<RoomName>::new());
        assert_eq!(share.close(), None);
    }
}
