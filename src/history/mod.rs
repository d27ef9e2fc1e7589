//! Room history: every non-volatile event gets a per-room `seq` (1, 2, 3, … contiguous per
//! room) and the room's `epoch` (a random id that changes when the room's history starts
//! over), and is kept for replay: to a client reconnecting with `since`, to the `history`
//! command and to `GET /api/v1/rooms/{room}/history`.
//!
//! A publish locks the logs of its rooms (in one global order) from numbering to delivery,
//! so on a node the sockets of a room receive its events in `seq` order, and a reconnecting
//! socket replays its backlog before any live event of those rooms.
//!
//! Single node ([`memory`]): kept in memory, bounded by size and age; with `[storage] path`
//! also written to disk ([`disk`]) before delivery and read back at start. Cluster mode
//! ([`redis`]): one Redis stream per room, numbered atomically in Redis, so every node
//! agrees on `seq` and a client recovers on whichever node it reconnects to. Which one a
//! node uses is decided once, in [`crate::stores`].

pub mod disk;
mod memory;
pub mod redis;

/// Defined with the envelope that carries it ([`crate::events`] imports nothing of history).
pub use crate::events::Position;
pub use disk::DiskHistory;
pub use memory::{History, RoomLog, Written};
pub use redis::RedisHistory;

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::config::{HistoryConfig, Retention};
use crate::rooms::RoomName;

/// Where a node keeps room history: this node's logs (in memory, and on disk with
/// `[storage] path`), or the cluster's Redis streams.
#[derive(Clone)]
pub enum HistoryStore {
    Local(Arc<History>),
    Redis(Arc<RedisHistory>),
}

/// History could not be read (Redis unreachable).
#[derive(Debug, thiserror::Error)]
#[error("room history is unreachable: {0}")]
pub struct HistoryError(pub String);

/// Why an event could not be numbered and kept; nothing was delivered.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    #[error("cannot encode event: {0}")]
    Encode(String),
    /// Redis, or the disk of `[storage] path`, refused the event.
    #[error("{0}")]
    Unavailable(String),
}

/// A room a reconnecting socket asks to catch up on (access already checked).
pub struct Wanted {
    pub room: RoomName,
    pub scoped: String,
    /// Where the client stopped; none (or unreadable) is a gap.
    pub cursor: Option<Cursor>,
}

/// Where a caught-up room is, and what its backlog held.
pub struct Caught {
    pub epoch: String,
    pub seq: u64,
    /// How many events are replayed; `None` for a gap (nothing is replayed).
    pub replayed: Option<usize>,
}

/// What a catch-up found: the rooms of [`Wanted`] in order, and the positions of the rooms
/// joined by default. Handed over before any backlog event is sent.
pub struct CatchUp {
    pub rooms: Result<Vec<Caught>, HistoryError>,
    pub defaults: Result<Positions, HistoryError>,
}

impl HistoryStore {
    /// Numbers the event in each of `rooms` (scoped names in `scoped`, same order), keeps
    /// it, and hands it to the sockets through `io`, so a room's sockets receive its events
    /// in `seq` order on every node. Returns how many sockets could not be reached (this
    /// node's count; 0 in a cluster, where delivery is [`redis::deliver_loop`]'s) and the
    /// event's `seq` in its first room.
    /// A client event (`origin`) carries its sender in the envelope and skips the sender's
    /// socket unless it asked for an echo.
    #[allow(clippy::too_many_arguments)]
    pub async fn publish<T: serde::Serialize + ?Sized>(
        &self,
        io: &dyn crate::delivery::Deliver,
        id: uuid::Uuid,
        event_type: &str,
        rooms: &[RoomName],
        scoped: Vec<std::borrow::Cow<'static, str>>,
        origin: Option<&crate::events::Origin>,
        data: &T,
    ) -> Result<(u64, u64), AppendError> {
        match self {
            Self::Local(history) => {
                history
                    .publish(io, id, event_type, rooms, scoped, origin, data)
                    .await
            }
            Self::Redis(history) => history
                .publish(id, event_type, rooms, &scoped, origin, data)
                .await
                .map(|seq| (0, seq)),
        }
    }

    /// Catches a reconnecting socket up on `wanted`: calls `join` once every later event
    /// of those rooms will reach the socket live, `established` with what was found, then
    /// `send` with each missed event in publish order (an event in two rooms once; it
    /// stops at the first `false`). No live event of those rooms reaches the socket before
    /// its backlog, and none is sent twice. `defaults` are the rooms the socket already
    /// joined by default: only their positions are read.
    pub async fn catch_up(
        &self,
        tenant: &crate::rooms::Tenant,
        wanted: &[Wanted],
        defaults: &[RoomName],
        join: impl FnOnce(),
        established: impl FnOnce(CatchUp),
        send: impl FnMut(&str, &serde_json::value::RawValue) -> bool,
    ) {
        if wanted.is_empty() {
            // A plain connect: the positions of the rooms just joined (one Redis call).
            let defaults = self.positions(tenant, defaults).await;
            return established(CatchUp {
                rooms: Ok(Vec::new()),
                defaults,
            });
        }
        match self {
            Self::Local(history) => {
                // Joined already: read now, every later event reaches the socket.
                let defaults = self.positions(tenant, defaults).await;
                history
                    .catch_up(wanted, defaults, join, established, send)
                    .await;
            }
            Self::Redis(history) => {
                history
                    .catch_up(tenant, wanted, defaults, join, established, send)
                    .await;
            }
        }
    }
    /// Rooms with a log on this node and the events they keep (none kept here in a cluster).
    pub fn local_size(&self) -> Option<(u64, u64)> {
        match self {
            Self::Local(history) => Some(history.size()),
            Self::Redis(_) => None,
        }
    }

    /// Up to `limit` events of `room` after `since_seq`.
    pub async fn page(
        &self,
        tenant: &crate::rooms::Tenant,
        room: &RoomName,
        since_seq: u64,
        limit: usize,
    ) -> Result<Page, HistoryError> {
        match self {
            Self::Local(history) => Ok(history.page(tenant, room, since_seq, limit).await),
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
            Self::Local(history) => history
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
    /// Up to `limit` events of `room` after `since_seq`. A room without a log gets none: a
    /// read creates nothing (epoch `""`, `seq` 0, as in a cluster).
    pub async fn page(
        &self,
        tenant: &crate::rooms::Tenant,
        room: &RoomName,
        since_seq: u64,
        limit: usize,
    ) -> Page {
        let mut page = Page {
            room: room.clone(),
            epoch: "".into(),
            seq: 0,
            gap: false,
            events: Vec::new(),
        };
        let Some(log) = self.existing(&room.scoped(tenant)) else {
            return page;
        };
        let mut log = log.lock_owned().await;
        let (events, gap) = log.page(since_seq, limit.clamp(1, MAX_PAGE));
        page.epoch = log.epoch.clone();
        page.seq = log.last_seq;
        page.gap = gap;
        page.events = events.into_iter().map(|e| e.payload).collect();
        page
    }
}
