//! The in-memory history of a single node: one bounded log per room.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::value::RawValue;
use tokio::sync::OwnedMutexGuard;

use super::disk::{Append, DiskHistory, Forget, Loaded};
use super::{
    AppendError, CatchUp, Caught, Cursor, HistoryError, Position, Positions, Replay, Wanted,
    new_epoch,
};
use crate::config::{HistoryConfig, Retention};
use crate::delivery::Deliver;
use crate::events::{Envelope, Origin};
use crate::rooms::RoomName;

/// How long an emptied room keeps its epoch and last `seq`, so a client that saw its last
/// event still recovers without a gap. A log that never had an event (created to report a
/// position) is kept only for the room's history TTL after the last position read.
const IDLE_KEEP: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone)]
pub struct Entry {
    pub seq: u64,
    /// When it was kept: publish order across rooms.
    pub at: Instant,
    pub event: Arc<str>,
    pub payload: Arc<RawValue>,
}

pub struct RoomLog {
    pub epoch: Arc<str>,
    pub last_seq: u64,
    entries: VecDeque<Entry>,
    retention: Retention,
    touched: Instant,
    /// With `[storage] path`: no event below this `seq` is on disk any more.
    disk_from: u64,
}

impl RoomLog {
    fn new(retention: Retention) -> Self {
        Self {
            epoch: new_epoch(),
            last_seq: 0,
            entries: VecDeque::new(),
            retention,
            touched: Instant::now(),
            disk_from: 0,
        }
    }

    /// The log as it was on disk; what is past its retention goes now.
    fn restored(loaded: Loaded, retention: Retention) -> Self {
        let now = Instant::now();
        let mut log = Self {
            epoch: loaded.epoch,
            last_seq: loaded.last_seq,
            entries: loaded
                .events
                .into_iter()
                .map(|(seq, at, event, payload)| Entry {
                    seq,
                    at: crate::disk::instant_of(at),
                    event,
                    payload,
                })
                .collect(),
            retention,
            touched: now,
            disk_from: 0,
        };
        log.evict(now);
        log
    }

    /// The first `seq` the log keeps (one past the last when it keeps none).
    fn first_kept(&self) -> u64 {
        self.entries.front().map_or(self.last_seq + 1, |e| e.seq)
    }

    /// Numbers the next event of the room.
    pub fn next_seq(&mut self) -> u64 {
        self.last_seq += 1;
        self.last_seq
    }

    /// Takes back a number whose publish failed, so `seq` stays contiguous.
    pub fn undo_seq(&mut self, seq: u64) {
        if self.last_seq == seq {
            self.last_seq -= 1;
        }
    }

    pub fn push(&mut self, seq: u64, event: Arc<str>, payload: Arc<RawValue>) {
        let now = Instant::now();
        self.touched = now;
        self.entries.push_back(Entry {
            seq,
            at: now,
            event,
            payload,
        });
        self.evict(now);
    }

    fn evict(&mut self, now: Instant) {
        let ttl = Duration::from_secs(self.retention.ttl_secs);
        while self.entries.len() > self.retention.size
            || self
                .entries
                .front()
                .is_some_and(|e| now.duration_since(e.at) > ttl)
        {
            self.entries.pop_front();
        }
    }

    /// Every kept event after `cursor`, or a gap when that cannot be complete.
    pub fn since(&mut self, cursor: &Cursor) -> Replay {
        self.evict(Instant::now());
        if *cursor.epoch != *self.epoch || cursor.seq > self.last_seq {
            return Replay::Gap;
        }
        let first_kept = self.entries.front().map_or(self.last_seq + 1, |e| e.seq);
        if cursor.seq + 1 < first_kept {
            return Replay::Gap;
        }
        Replay::Events(
            self.entries
                .iter()
                .filter(|e| e.seq > cursor.seq)
                .cloned()
                .collect(),
        )
    }

    /// Up to `limit` kept events with `seq > since_seq`, and whether older ones after
    /// `since_seq` were already dropped.
    pub fn page(&mut self, since_seq: u64, limit: usize) -> (Vec<Entry>, bool) {
        self.evict(Instant::now());
        let first_kept = self.entries.front().map_or(self.last_seq + 1, |e| e.seq);
        let gap = since_seq + 1 < first_kept && since_seq < self.last_seq;
        let events = self
            .entries
            .iter()
            .filter(|e| e.seq > since_seq)
            .take(limit)
            .cloned()
            .collect();
        (events, gap)
    }
}

/// Every room's log on this node.
pub struct History {
    config: HistoryConfig,
    logs: Mutex<HashMap<String, Arc<tokio::sync::Mutex<RoomLog>>>>,
    /// `[storage] path`: every kept event is written there before it is delivered.
    disk: Option<DiskHistory>,
}

/// What [`History::write_ahead`] put on disk, to take back if the delivery fails.
pub struct Written(Vec<Append>);

impl History {
    pub fn new(config: HistoryConfig) -> Self {
        Self {
            config,
            logs: Mutex::default(),
            disk: None,
        }
    }

    /// The history kept in `disk`, with the logs it holds read back.
    pub fn open(
        config: HistoryConfig,
        disk: DiskHistory,
    ) -> Result<Self, crate::disk::StorageError> {
        let mut logs = HashMap::new();
        for loaded in disk.load()? {
            let Some(room) = RoomName::parse(&loaded.room) else {
                tracing::warn!(room = %loaded.room, "skipping a stored room with an invalid name");
                continue;
            };
            let scoped = loaded.scoped.clone();
            let log = RoomLog::restored(loaded, config.retention(&room));
            logs.insert(scoped, Arc::new(tokio::sync::Mutex::new(log)));
        }
        Ok(Self {
            config,
            logs: Mutex::new(logs),
            disk: Some(disk),
        })
    }

    /// With `[storage] path`: writes the event numbered at `positions` in the held `logs`
    /// of `rooms` (scoped name, room), and returns once it is on disk. Without: nothing.
    pub async fn write_ahead(
        &self,
        rooms: &[(String, RoomName)],
        logs: &[OwnedMutexGuard<RoomLog>],
        positions: &[Position],
        event: &str,
        payload: &Arc<RawValue>,
    ) -> Result<Written, HistoryError> {
        let Some(disk) = &self.disk else {
            return Ok(Written(Vec::new()));
        };
        let appends: Vec<Append> = rooms
            .iter()
            .zip(logs)
            .zip(positions)
            .map(|(((scoped, room), log), p)| Append {
                scoped: scoped.clone(),
                room: room.to_string(),
                epoch: p.epoch.clone(),
                seq: p.seq,
                keep_from: (p.seq + 1).saturating_sub(log.retention.size as u64),
            })
            .collect();
        let (disk, event, payload) = (disk.clone(), event.to_owned(), payload.clone());
        tokio::task::spawn_blocking(move || {
            disk.append(&appends, &event, &payload).map(|()| appends)
        })
        .await
        .map_err(|e| HistoryError(e.to_string()))?
        .map(Written)
        .map_err(|e| HistoryError(e.to_string()))
    }

    /// Numbers the event in each room's log and delivers it while holding the logs, so a
    /// room's sockets see its events in `seq` order and a replay never overlaps a live
    /// event. With `[storage] path` the event is on disk before any socket sees it (a `seq`
    /// a client saw is never given again after a restart). Returns how many sockets could
    /// not be reached.
    #[allow(clippy::too_many_arguments)]
    pub async fn publish<T: serde::Serialize + ?Sized>(
        &self,
        io: &dyn Deliver,
        id: uuid::Uuid,
        event_type: &str,
        rooms: &[RoomName],
        scoped: Vec<std::borrow::Cow<'static, str>>,
        origin: Option<&Origin>,
        data: &T,
    ) -> Result<(u64, u64), AppendError> {
        let keys: Vec<_> = scoped
            .iter()
            .map(|s| s.to_string())
            .zip(rooms.iter().cloned())
            .collect();
        let mut logs = self.lock(&keys).await;
        let positions: Vec<Position> = logs
            .iter_mut()
            .zip(rooms)
            .map(|(log, room)| Position {
                room: room.clone(),
                seq: log.next_seq(),
                epoch: log.epoch.clone(),
            })
            .collect();
        let undo = |logs: &mut Vec<OwnedMutexGuard<RoomLog>>| {
            for (log, p) in logs.iter_mut().zip(&positions) {
                log.undo_seq(p.seq);
            }
        };
        let payload = match Envelope::encode(id, event_type, rooms, &positions, origin, data) {
            Ok(payload) => payload,
            Err(e) => {
                undo(&mut logs);
                return Err(AppendError::Encode(e.to_string()));
            }
        };
        let written = match self
            .write_ahead(&keys, &logs, &positions, event_type, &payload)
            .await
        {
            Ok(written) => written,
            Err(e) => {
                undo(&mut logs);
                return Err(AppendError::Unavailable(e.to_string()));
            }
        };
        let except = origin.and_then(Origin::except);
        match io
            .deliver(scoped, event_type, &payload, false, except)
            .await
        {
            Ok(failed) => {
                let name: Arc<str> = event_type.into();
                for (log, p) in logs.iter_mut().zip(&positions) {
                    log.push(p.seq, name.clone(), payload.clone());
                }
                Ok((failed, positions.first().map_or(0, |p| p.seq)))
            }
            Err(e) => {
                self.take_back(written).await;
                undo(&mut logs);
                Err(AppendError::Unavailable(e))
            }
        }
    }

    /// Catches a socket up (see [`super::HistoryStore::catch_up`]): the rooms' logs are
    /// held from reading the backlog to sending it, which keeps publishes to those rooms
    /// waiting meanwhile. Replays read the memory logs (with `[storage] path` too).
    pub(super) async fn catch_up(
        &self,
        wanted: &[Wanted],
        defaults: Result<Positions, HistoryError>,
        join: impl FnOnce(),
        established: impl FnOnce(CatchUp),
        mut send: impl FnMut(&str, &RawValue) -> bool,
    ) {
        let keys: Vec<_> = wanted
            .iter()
            .map(|w| (w.scoped.clone(), w.room.clone()))
            .collect();
        let mut logs = self.lock(&keys).await;
        join();
        let mut backlog = Vec::new();
        let mut rooms = Vec::with_capacity(wanted.len());
        for (w, log) in wanted.iter().zip(logs.iter_mut()) {
            let replay = match &w.cursor {
                Some(cursor) => log.since(cursor),
                None => Replay::Gap,
            };
            let replayed = match replay {
                Replay::Events(events) => {
                    let n = events.len();
                    backlog.extend(events);
                    Some(n)
                }
                Replay::Gap => None,
            };
            rooms.push(Caught {
                epoch: log.epoch.to_string(),
                seq: log.last_seq,
                replayed,
            });
        }
        established(CatchUp {
            rooms: Ok(rooms),
            defaults,
        });
        // In publish order; an event in two replayed rooms (one payload) is sent once.
        backlog.sort_by_key(|e| e.at);
        let mut seen = std::collections::HashSet::new();
        backlog.retain(|e| seen.insert(Arc::as_ptr(&e.payload).cast::<u8>() as usize));
        for entry in backlog {
            if !send(&entry.event, &entry.payload) {
                break;
            }
        }
        drop(logs);
    }

    /// Takes back what [`Self::write_ahead`] wrote, when the event could not be delivered.
    pub async fn take_back(&self, written: Written) {
        let (Some(disk), false) = (&self.disk, written.0.is_empty()) else {
            return;
        };
        let disk = disk.clone();
        let undone = tokio::task::spawn_blocking(move || disk.undo(&written.0)).await;
        if !matches!(undone, Ok(Ok(()))) {
            tracing::warn!("an undelivered event stays in storage: its seq may be given twice");
        }
    }

    fn log(&self, scoped: &str, room: &RoomName) -> Arc<tokio::sync::Mutex<RoomLog>> {
        let mut logs = self.logs.lock().unwrap_or_else(|e| e.into_inner());
        logs.entry(scoped.to_owned())
            .or_insert_with(|| {
                Arc::new(tokio::sync::Mutex::new(RoomLog::new(
                    self.config.retention(room),
                )))
            })
            .clone()
    }

    /// The log of `scoped` if the room has one; creates none.
    pub(super) fn existing(&self, scoped: &str) -> Option<Arc<tokio::sync::Mutex<RoomLog>>> {
        let logs = self.logs.lock().unwrap_or_else(|e| e.into_inner());
        logs.get(scoped).cloned()
    }

    /// Locks the logs of `rooms` (scoped name, room), always in name order so two publishes
    /// to overlapping rooms never wait on each other in a circle. Guards come back in the
    /// order of `rooms`.
    pub async fn lock(&self, rooms: &[(String, RoomName)]) -> Vec<OwnedMutexGuard<RoomLog>> {
        let mut order: Vec<usize> = (0..rooms.len()).collect();
        order.sort_by(|a, b| rooms[*a].0.cmp(&rooms[*b].0));
        let mut guards: Vec<Option<OwnedMutexGuard<RoomLog>>> =
            rooms.iter().map(|_| None).collect();
        for i in order {
            let (scoped, room) = &rooms[i];
            guards[i] = Some(self.log(scoped, room).lock_owned().await);
        }
        guards.into_iter().flatten().collect()
    }

    /// The position (epoch, last `seq`) of each of `rooms` (scoped name, room), creating the
    /// log of a room with none. Read under the rooms' locks: a socket that joined them
    /// before this call receives every event with a higher `seq` live.
    /// A log with no event yet is kept for the room's history TTL from the last such read.
    pub async fn positions(&self, rooms: &[(String, RoomName)]) -> Vec<(Arc<str>, u64)> {
        let now = Instant::now();
        let mut logs = self.lock(rooms).await;
        logs.iter_mut()
            .map(|log| {
                if log.last_seq == 0 {
                    log.touched = now;
                }
                (log.epoch.clone(), log.last_seq)
            })
            .collect()
    }

    /// Rooms with a log, and the events they keep (logs being written are skipped).
    pub fn size(&self) -> (u64, u64) {
        let logs = self.logs.lock().unwrap_or_else(|e| e.into_inner());
        let events = logs
            .values()
            .filter_map(|log| log.try_lock().ok().map(|log| log.entries.len() as u64))
            .sum();
        (logs.len() as u64, events)
    }

    /// Drops expired events, and the logs of rooms idle for long (memory stays flat).
    pub async fn sweep(&self) {
        let logs: Vec<(String, Arc<tokio::sync::Mutex<RoomLog>>)> = {
            let logs = self.logs.lock().unwrap_or_else(|e| e.into_inner());
            logs.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
        };
        let now = Instant::now();
        let mut idle = Vec::new();
        let mut forget = Vec::new();
        for (key, log) in logs {
            let mut log = log.lock().await;
            log.evict(now);
            let first = log.first_kept();
            if self.disk.is_some() && first > log.disk_from {
                log.disk_from = first;
                forget.push(Forget::Below {
                    scoped: key.clone(),
                    epoch: log.epoch.clone(),
                    keep_from: first,
                });
            }
            if log.entries.is_empty() {
                log.entries.shrink_to_fit();
                let keep = if log.last_seq == 0 {
                    Duration::from_secs(log.retention.ttl_secs)
                } else {
                    IDLE_KEEP
                };
                if now.duration_since(log.touched) > keep {
                    idle.push((key, log.epoch.clone()));
                }
            }
        }
        {
            let mut logs = self.logs.lock().unwrap_or_else(|e| e.into_inner());
            for (key, epoch) in idle {
                // Only if nobody holds it meanwhile (a publish or a replay in progress).
                if logs.get(&key).is_some_and(|l| Arc::strong_count(l) == 1) {
                    logs.remove(&key);
                    forget.push(Forget::Room { scoped: key, epoch });
                }
            }
        }
        if let Some(disk) = self.disk.clone()
            && !forget.is_empty()
        {
            match tokio::task::spawn_blocking(move || disk.forget(&forget)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!("storage: expired history not dropped: {e}"),
                Err(e) => tracing::warn!("storage: expired history not dropped: {e}"),
            }
        }
    }

    pub async fn run_sweeper(self: Arc<Self>) {
        let period = Duration::from_secs((self.config.ttl_secs / 2).clamp(1, 60));
        loop {
            tokio::time::sleep(period).await;
            self.sweep().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(n: u64) -> Arc<RawValue> {
        serde_json::value::to_raw_value(&n).unwrap().into()
    }

    #[test]
    fn replays_after_the_cursor_or_reports_a_gap() {
        let mut log = RoomLog::new(Retention {
            size: 3,
            ttl_secs: 60,
        });
        for _ in 0..5 {
            let seq = log.next_seq();
            log.push(seq, "e".into(), payload(seq));
        }
        let epoch = log.epoch.to_string();
        // Kept: 3, 4, 5.
        let at = |seq| Cursor {
            epoch: epoch.clone(),
            seq,
        };
        let seqs = |r: Replay| match r {
            Replay::Events(e) => Some(e.iter().map(|e| e.seq).collect::<Vec<_>>()),
            Replay::Gap => None,
        };
        assert_eq!(seqs(log.since(&at(2))), Some(vec![3, 4, 5]));
        assert_eq!(seqs(log.since(&at(4))), Some(vec![5]));
        assert_eq!(seqs(log.since(&at(5))), Some(vec![]));
        assert_eq!(seqs(log.since(&at(1))), None, "4 events missed, 3 kept");
        assert_eq!(seqs(log.since(&at(6))), None, "ahead of the log");
        let other = Cursor {
            epoch: "other".into(),
            seq: 5,
        };
        assert_eq!(seqs(log.since(&other)), None);
    }

    /// Publishes `count` events into `project:1` of `history` as the broadcaster does.
    async fn publish(history: &History, count: u64) {
        let keys = vec![(
            "t/project:1".to_owned(),
            RoomName::parse("project:1").unwrap(),
        )];
        for _ in 0..count {
            let mut logs = history.lock(&keys).await;
            let seq = logs[0].next_seq();
            let positions = [Position {
                room: keys[0].1.clone(),
                seq,
                epoch: logs[0].epoch.clone(),
            }];
            history
                .write_ahead(&keys, &logs, &positions, "e", &payload(seq))
                .await
                .unwrap();
            logs[0].push(seq, "e".into(), payload(seq));
        }
    }

    fn on_disk(disk: &DiskHistory) -> Vec<(String, u64, Vec<u64>)> {
        disk.load()
            .unwrap()
            .into_iter()
            .map(|l| {
                let seqs = l.events.iter().map(|e| e.0).collect();
                (l.epoch.to_string(), l.last_seq, seqs)
            })
            .collect()
    }

    #[tokio::test]
    async fn the_disk_keeps_the_retention_and_gives_back_the_logs() {
        let dir = std::env::temp_dir().join(format!(
            "roomcast-history-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let db = Arc::new(redb::Database::create(dir.join("h.redb")).unwrap());
        let disk = DiskHistory::new(db.clone());
        let config = |ttl_secs| HistoryConfig {
            size: 2,
            ttl_secs,
            ..HistoryConfig::default()
        };
        let history = History::open(config(60), disk.clone()).unwrap();
        publish(&history, 4).await;
        // Past the size: dropped in the commit that added a newer event.
        let [(epoch, last, seqs)] = &on_disk(&disk)[..] else {
            panic!("one room")
        };
        assert_eq!((*last, seqs.clone()), (4, vec![3, 4]));

        // Read back: same epoch, same seq, the same events kept.
        let again = History::open(config(60), disk.clone()).unwrap();
        let key = (
            "t/project:1".to_owned(),
            RoomName::parse("project:1").unwrap(),
        );
        let cursor = Cursor {
            epoch: epoch.clone(),
            seq: 2,
        };
        let log = again.lock(std::slice::from_ref(&key)).await;
        assert_eq!((&*log[0].epoch, log[0].last_seq), (epoch.as_str(), 4));
        drop(log);
        let mut log = again.lock(std::slice::from_ref(&key)).await;
        let Replay::Events(events) = log[0].since(&cursor) else {
            panic!("a gap after a restart")
        };
        assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), [3, 4]);
        drop(log);
        drop(again);

        // Past the age: a sweep drops them from disk too (the room keeps its epoch and seq).
        let expiring = History::open(config(0), disk.clone()).unwrap();
        expiring.sweep().await;
        assert_eq!(on_disk(&disk), [(epoch.clone(), 4, vec![])]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
