//! The single-node history on disk (`[storage] path`): the in-memory logs ([`super::History`])
//! stay what replays read and what publishes lock; every kept event is also written here,
//! in one committed (fsynced) redb transaction before it is delivered, and read back at
//! start. So after a restart, even after SIGKILL or a power loss, a room keeps its epoch,
//! its `seq` and the events within its retention: a client recovers without a gap.

use std::collections::HashMap;
use std::sync::Arc;

use redb::{Database, ReadableTable, TableDefinition};
use serde_json::value::RawValue;

use crate::disk::now_ms;

/// Scoped room -> (public room name, epoch, last `seq`).
const ROOMS: TableDefinition<&str, (&str, &str, u64)> = TableDefinition::new("history_rooms");
/// (scoped room, `seq`) -> (kept at, unix ms; event name; envelope JSON).
const EVENTS: TableDefinition<(&str, u64), (u64, &str, &str)> =
    TableDefinition::new("history_events");

/// One room's part in a publish.
pub struct Append {
    pub scoped: String,
    pub room: String,
    pub epoch: Arc<str>,
    pub seq: u64,
    /// Events below this `seq` are past the room's size and are dropped in the same commit.
    pub keep_from: u64,
}

/// A room as read back at start.
pub struct Loaded {
    pub scoped: String,
    pub room: String,
    pub epoch: Arc<str>,
    pub last_seq: u64,
    /// (`seq`, kept at (unix ms), event name, envelope), oldest first.
    pub events: Vec<(u64, u64, Arc<str>, Arc<RawValue>)>,
}

/// What a sweep drops: events of a room below a `seq`, or the whole room (idle). Applied
/// only while the room still has that epoch (a new log may have replaced it meanwhile).
pub enum Forget {
    Below {
        scoped: String,
        epoch: Arc<str>,
        keep_from: u64,
    },
    Room {
        scoped: String,
        epoch: Arc<str>,
    },
}

#[derive(Clone)]
pub struct DiskHistory {
    db: Arc<Database>,
}

impl DiskHistory {
    pub fn new(db: Arc<Database>) -> Self {
        Self { db }
    }

    /// Every room and its kept events. An event kept in several rooms comes back as one
    /// payload, as it was published (a replay of several rooms sends it once).
    pub fn load(&self) -> Result<Vec<Loaded>, crate::disk::StorageError> {
        let tx = self.db.begin_write()?;
        let mut loaded = Vec::new();
        {
            let rooms = tx.open_table(ROOMS)?;
            let events = tx.open_table(EVENTS)?;
            let mut payloads: HashMap<String, Arc<RawValue>> = HashMap::new();
            for row in rooms.iter()? {
                let (key, value) = row?;
                let scoped = key.value().to_owned();
                let (room, epoch, last_seq) = value.value();
                let mut kept = Vec::new();
                for row in events.range((scoped.as_str(), 0)..=(scoped.as_str(), u64::MAX))? {
                    let (key, value) = row?;
                    let (_, seq) = key.value();
                    let (at, event, json) = value.value();
                    let payload = match payloads.get(json) {
                        Some(p) => p.clone(),
                        None => {
                            let Ok(raw) = RawValue::from_string(json.to_owned()) else {
                                tracing::warn!(room = %scoped, seq, "skipping an unreadable stored event");
                                continue;
                            };
                            let raw: Arc<RawValue> = raw.into();
                            payloads.insert(json.to_owned(), raw.clone());
                            raw
                        }
                    };
                    kept.push((seq, at, event.into(), payload));
                }
                loaded.push(Loaded {
                    scoped,
                    room: room.to_owned(),
                    epoch: epoch.into(),
                    last_seq,
                    events: kept,
                });
            }
        }
        // Creates the tables on a first start.
        tx.commit()?;
        Ok(loaded)
    }

    /// Keeps one event in each of its rooms: returns once it is on disk.
    pub fn append(
        &self,
        rooms: &[Append],
        event: &str,
        payload: &RawValue,
    ) -> Result<(), crate::disk::StorageError> {
        let at = now_ms();
        let tx = self.db.begin_write()?;
        {
            let mut meta = tx.open_table(ROOMS)?;
            let mut events = tx.open_table(EVENTS)?;
            for r in rooms {
                meta.insert(r.scoped.as_str(), (r.room.as_str(), &*r.epoch, r.seq))?;
                events.insert((r.scoped.as_str(), r.seq), (at, event, payload.get()))?;
                drop_below(&mut events, &r.scoped, r.keep_from)?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Takes back an append whose delivery failed (its `seq`s are given out again).
    pub fn undo(&self, rooms: &[Append]) -> Result<(), crate::disk::StorageError> {
        let tx = self.db.begin_write()?;
        {
            let mut meta = tx.open_table(ROOMS)?;
            let mut events = tx.open_table(EVENTS)?;
            for r in rooms {
                events.remove((r.scoped.as_str(), r.seq))?;
                meta.insert(
                    r.scoped.as_str(),
                    (r.room.as_str(), &*r.epoch, r.seq.saturating_sub(1)),
                )?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Drops what a sweep of the memory logs dropped (expired events, idle rooms).
    pub fn forget(&self, forget: &[Forget]) -> Result<(), crate::disk::StorageError> {
        if forget.is_empty() {
            return Ok(());
        }
        let tx = self.db.begin_write()?;
        {
            let mut meta = tx.open_table(ROOMS)?;
            let mut events = tx.open_table(EVENTS)?;
            for f in forget {
                let (scoped, epoch, keep_from) = match f {
                    Forget::Below {
                        scoped,
                        epoch,
                        keep_from,
                    } => (scoped, epoch, *keep_from),
                    Forget::Room { scoped, epoch } => (scoped, epoch, u64::MAX),
                };
                let current = meta.get(scoped.as_str())?.map(|v| v.value().1.to_owned());
                if current.as_deref() != Some(&**epoch) {
                    continue;
                }
                drop_below(&mut events, scoped, keep_from)?;
                if matches!(f, Forget::Room { .. }) {
                    events.remove((scoped.as_str(), u64::MAX))?;
                    meta.remove(scoped.as_str())?;
                }
            }
        }
        tx.commit()?;
        Ok(())
    }
}

/// Removes the events of `scoped` with a `seq` below `keep_from`.
fn drop_below(
    events: &mut redb::Table<(&str, u64), (u64, &str, &str)>,
    scoped: &str,
    keep_from: u64,
) -> Result<(), crate::disk::StorageError> {
    let mut old = Vec::new();
    for row in events.range((scoped, 0)..(scoped, keep_from))? {
        old.push(row?.0.value().1);
    }
    for seq in old {
        events.remove((scoped, seq))?;
    }
    Ok(())
}
