//! The in-memory history of a single node: one bounded log per room.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::value::RawValue;
use tokio::sync::OwnedMutexGuard;

use super::{Cursor, Replay, new_epoch};
use crate::config::{HistoryConfig, Retention};
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
}

impl RoomLog {
    fn new(retention: Retention) -> Self {
        Self {
            epoch: new_epoch(),
            last_seq: 0,
            entries: VecDeque::new(),
            retention,
            touched: Instant::now(),
        }
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
}

impl History {
    pub fn new(config: HistoryConfig) -> Self {
        Self {
            config,
            logs: Mutex::default(),
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
        for (key, log) in logs {
            let mut log = log.lock().await;
            log.evict(now);
            if log.entries.is_empty() {
                log.entries.shrink_to_fit();
                let keep = if log.last_seq == 0 {
                    Duration::from_secs(log.retention.ttl_secs)
                } else {
                    IDLE_KEEP
                };
                if now.duration_since(log.touched) > keep {
                    idle.push(key);
                }
            }
        }
        let mut logs = self.logs.lock().unwrap_or_else(|e| e.into_inner());
        for key in idle {
            // Only if nobody holds it meanwhile (a publish or a replay in progress).
            if logs.get(&key).is_some_and(|l| Arc::strong_count(l) == 1) {
                logs.remove(&key);
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
}
