//! Room history: every non-volatile event gets a per-room `seq` (1, 2, 3, … contiguous per
//! room) and the room's `epoch` (a random id that changes when the room's history starts
//! over), and is kept for replay: to a client reconnecting with `since`, to the `history`
//! command and to `GET /api/v1/rooms/{room}/history`.
//!
//! A publish locks the logs of its rooms (in one global order) from numbering to delivery,
//! so on a node the sockets of a room receive its events in `seq` order, and a reconnecting
//! socket replays its backlog before any live event of those rooms.
//!
//! Single node ([`memory`]): kept in memory, bounded by size and age. Cluster mode
//! ([`redis`]): one Redis stream per room, numbered atomically in Redis, so every node
//! agrees on `seq` and a client recovers on whichever node it reconnects to.

mod memory;
pub mod redis;

pub use memory::{History, RoomLog};
pub use redis::RedisHistory;

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::config::{HistoryConfig, Retention};
use crate::rooms::RoomName;

/// Where a node keeps room history.
#[derive(Clone)]
pub enum HistoryStore {
    Memory(Arc<History>),
    Redis(Arc<RedisHistory>),
}

/// History could not be read (Redis unreachable).
#[derive(Debug, thiserror::Error)]
#[error("room history is unreachable: {0}")]
pub struct HistoryError(pub String);

impl HistoryStore {
    /// Up to `limit` events of `room` after `since_seq`.
    pub async fn page(
        &self,
        tenant: &crate::rooms::Tenant,
        room: &RoomName,
        since_seq: u64,
        limit: usize,
    ) -> Result<Page, HistoryError> {
        match self {
            Self::Memory(history) => Ok(history.page(tenant, room, since_seq, limit).await),
            Self::Redis(history) => history
                .page(tenant, room, since_seq, limit)
                .await
                .map_err(|e| HistoryError(e.to_string())),
        }
    }
}

/// Where rooms are, by public name: what `subscribe` acks and `connection.established`
/// report as `positions`.
pub type Positions = std::collections::BTreeMap<String, Cursor>;

impl HistoryStore {
    /// The position of each of `rooms` (a room with no event yet gets its epoch now, at
    /// `seq` 0). Call it after the socket joined the rooms: every event with a higher `seq`
    /// then reaches the socket live. One lock per room on a single node, one Redis call in
    /// a cluster.
    pub async fn positions(
        &self,
        tenant: &crate::rooms::Tenant,
        rooms: &[RoomName],
    ) -> Result<Positions, HistoryError> {
        let keys: Vec<(String, RoomName)> = rooms
            .iter()
            .map(|r| (r.scoped(tenant).into_owned(), r.clone()))
            .collect();
        let found: Vec<(String, u64)> = match self {
            Self::Memory(history) => history
                .positions(&keys)
                .await
                .into_iter()
                .map(|(epoch, seq)| (epoch.to_string(), seq))
                .collect(),
            Self::Redis(history) => history
                .positions(&keys)
                .await
                .map_err(|e| HistoryError(e.to_string()))?,
        };
        Ok(rooms
            .iter()
            .zip(found)
            .map(|(room, (epoch, seq))| (room.to_string(), Cursor { epoch, seq }))
            .collect())
    }
}

/// A fresh random epoch.
pub(crate) fn new_epoch() -> Arc<str> {
    format!("{:016x}", rand::random::<u64>()).into()
}

/// Where a client is in a room: the last `seq` it has of the room's `epoch`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    pub epoch: String,
    pub seq: u64,
}

/// An event's place in one of its rooms, as carried by the envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Position {
    pub room: RoomName,
    pub seq: u64,
    pub epoch: std::sync::Arc<str>,
}

/// What a room can give back from a cursor.
#[derive(Debug)]
pub enum Replay {
    /// Every event after the cursor, in order (possibly none).
    Events(Vec<memory::Entry>),
    /// The epoch changed or events after the cursor are no longer kept.
    Gap,
}

impl HistoryConfig {
    pub fn retention(&self, room: &RoomName) -> Retention {
        let specific = match room {
            RoomName::Project(_) => self.project,
            RoomName::Agent(_) => self.agent,
            RoomName::User(_) => self.user,
            RoomName::Global => self.global,
        };
        specific.unwrap_or(Retention {
            size: self.size,
            ttl_secs: self.ttl_secs,
        })
    }
}

/// A page of a room's history, as the `history` command and endpoint answer it.
#[derive(Debug, Serialize)]
pub struct Page {
    pub room: RoomName,
    /// The room's current epoch and latest `seq`.
    pub epoch: std::sync::Arc<str>,
    pub seq: u64,
    /// True when events after `since_seq` were already dropped (the page starts later).
    pub gap: bool,
    /// Envelopes, exactly as delivered, oldest first.
    pub events: Vec<std::sync::Arc<serde_json::value::RawValue>>,
}

/// The largest page the `history` command and endpoint return.
pub const MAX_PAGE: usize = 1000;

/// The page size when a request names none.
pub fn default_page() -> usize {
    100
}

impl History {
    /// Up to `limit` events of `room` after `since_seq`.
    pub async fn page(
        &self,
        tenant: &crate::rooms::Tenant,
        room: &RoomName,
        since_seq: u64,
        limit: usize,
    ) -> Page {
        let scoped = room.scoped(tenant).into_owned();
        let mut logs = self.lock(&[(scoped, room.clone())]).await;
        let mut page = Page {
            room: room.clone(),
            epoch: "".into(),
            seq: 0,
            gap: false,
            events: Vec::new(),
        };
        // `lock` returns one guard per room asked for.
        if let Some(log) = logs.first_mut() {
            let (events, gap) = log.page(since_seq, limit.clamp(1, MAX_PAGE));
            page.epoch = log.epoch.clone();
            page.seq = log.last_seq;
            page.gap = gap;
            page.events = events.into_iter().map(|e| e.payload).collect();
        }
        page
    }
}
