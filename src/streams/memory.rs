//! A single node's streams, in memory (with `[storage] path` too: a stream lives for
//! minutes, and a restart ends its producer's request anyway).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::{
    Cancelled, End, Info, NewStream, Snapshot, Status, StreamError, StreamId, from_offset,
};
use crate::config::StreamsConfig;
use crate::rooms::RoomName;

struct Record {
    info: Info,
    text: String,
    /// How much of `text` was handed to the sockets (code points, and bytes): the rest was
    /// appended while an earlier delta of the stream was being delivered, and goes out as
    /// one coalesced delta.
    delivered: u64,
    delivered_bytes: usize,
    /// When the last delta went out, and whether a later one is waiting for its turn
    /// (`streams.coalesce_ms`).
    sent_at: Option<Instant>,
    flush_due: bool,
    /// Unix milliseconds of the creation or the last append.
    touched_ms: u64,
    cancel: Option<Cancelled>,
}

/// Every stream of this node, by key (`<tenant>/<id>`).
#[derive(Default)]
pub struct MemoryStreams {
    records: Mutex<HashMap<String, Record>>,
}

impl MemoryStreams {
    fn records(&self) -> std::sync::MutexGuard<'_, HashMap<String, Record>> {
        self.records.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn create(&self, new: &NewStream, started_ms: u64) -> Result<Info, StreamError> {
        let key = super::key(&new.tenant, &new.id);
        let mut records = self.records();
        if records.contains_key(&key) {
            return Err(StreamError::Exists(new.id.to_string()));
        }
        let info = Info {
            id: new.id.clone(),
            room: new.room.clone(),
            kind: new.kind.clone(),
            status: Status::Open,
            length: 0,
            started_ms,
            ended_ms: None,
            requested_by: new.requested_by.clone(),
        };
        records.insert(
            key,
            Record {
                info: info.clone(),
                text: String::new(),
                delivered: 0,
                delivered_bytes: 0,
                sent_at: None,
                flush_due: false,
                touched_ms: started_ms,
                cancel: None,
            },
        );
        Ok(info)
    }

    /// Appends to an open stream: the offset where `text` starts, and the stream's room.
    pub fn append(
        &self,
        key: &str,
        id: &StreamId,
        text: &str,
        max_bytes: usize,
    ) -> Result<(u64, RoomName), StreamError> {
        let mut records = self.records();
        let record = records
            .get_mut(key)
            .ok_or_else(|| StreamError::NotFound(id.to_string()))?;
        open(record, id)?;
        if record.text.len() + text.len() > max_bytes {
            return Err(StreamError::TooLarge(max_bytes));
        }
        let offset = record.info.length;
        record.text.push_str(text);
        record.info.length += text.chars().count() as u64;
        record.touched_ms = super::now_ms();
        Ok((offset, record.info.room.clone()))
    }

    /// What was appended but not yet handed to the sockets, as one delta `(offset, text,
    /// room)`, now counted as handed over; `None` when there is nothing (another append
    /// delivered this one's text with its own). Called holding the stream's delivery lock.
    pub fn take_undelivered(&self, key: &str) -> Option<(u64, String, RoomName)> {
        let mut records = self.records();
        let record = records.get_mut(key)?;
        record.flush_due = false;
        if record.delivered_bytes == record.text.len() {
            return None;
        }
        record.sent_at = Some(Instant::now());
        let piece = record.text[record.delivered_bytes..].to_owned();
        let offset = record.delivered;
        record.delivered = record.info.length;
        record.delivered_bytes = record.text.len();
        Some((offset, piece, record.info.room.clone()))
    }

    /// When what was appended to `key` may go out, with deltas at least `window` apart:
    /// now, at `Later(due)` (the caller arranges it), or `Scheduled` (already arranged).
    pub fn pace(&self, key: &str, window: Duration) -> Pace {
        if window.is_zero() {
            return Pace::Now;
        }
        let mut records = self.records();
        let Some(record) = records.get_mut(key) else {
            return Pace::Now;
        };
        if record.flush_due {
            return Pace::Scheduled;
        }
        match record.sent_at.map(|at| at + window) {
            Some(due) if due > Instant::now() => {
                record.flush_due = true;
                Pace::Later(due)
            }
            _ => Pace::Now,
        }
    }

    pub fn end(
        &self,
        key: &str,
        id: &StreamId,
        end: &End,
        ended_ms: u64,
    ) -> Result<Info, StreamError> {
        let mut records = self.records();
        let record = records
            .get_mut(key)
            .ok_or_else(|| StreamError::NotFound(id.to_string()))?;
        open(record, id)?;
        record.info.status = end.status();
        record.info.ended_ms = Some(ended_ms);
        if let End::Cancelled(cancel) = end {
            record.cancel = Some(cancel.clone());
        }
        Ok(record.info.clone())
    }

    pub fn info(&self, key: &str, id: &StreamId) -> Result<Info, StreamError> {
        self.records()
            .get(key)
            .map(|r| r.info.clone())
            .ok_or_else(|| StreamError::NotFound(id.to_string()))
    }

    /// The whole text from `offset` on (`GET /api/v1/streams/{id}`).
    pub fn read(&self, key: &str, id: &StreamId, offset: u64) -> Result<Snapshot, StreamError> {
        self.read_upto(key, id, offset, false)
    }

    /// The text from `offset` on as far as it was handed to the sockets, with `length`
    /// saying as much (a resume, holding the stream's delivery lock: the next delta starts
    /// exactly where this ends, never inside it).
    pub fn read_delivered(
        &self,
        key: &str,
        id: &StreamId,
        offset: u64,
    ) -> Result<Snapshot, StreamError> {
        self.read_upto(key, id, offset, true)
    }

    fn read_upto(
        &self,
        key: &str,
        id: &StreamId,
        offset: u64,
        delivered: bool,
    ) -> Result<Snapshot, StreamError> {
        let records = self.records();
        let record = records
            .get(key)
            .ok_or_else(|| StreamError::NotFound(id.to_string()))?;
        let mut info = record.info.clone();
        let text = if delivered {
            info.length = record.delivered;
            &record.text[..record.delivered_bytes]
        } else {
            &record.text
        };
        let (offset, text) = from_offset(text, offset);
        Ok(Snapshot {
            info,
            offset,
            text: text.to_owned(),
        })
    }

    /// Drops ended streams kept past `keep_secs` and open ones idle past `idle_secs`.
    pub fn sweep(&self, now_ms: u64, config: &StreamsConfig) {
        let keep = config.keep_secs.saturating_mul(1000);
        let idle = config.idle_secs.saturating_mul(1000);
        self.records().retain(|_, r| match r.info.ended_ms {
            Some(ended) => now_ms.saturating_sub(ended) <= keep,
            None => now_ms.saturating_sub(r.touched_ms) <= idle,
        });
    }
}

/// When an append's text goes out ([`MemoryStreams::pace`]).
#[derive(Debug, PartialEq, Eq)]
pub enum Pace {
    Now,
    Later(Instant),
    Scheduled,
}

/// `Ok` for an open stream; the refusal an append or end of an ended one gets.
fn open(record: &Record, id: &StreamId) -> Result<(), StreamError> {
    match (record.info.status, &record.cancel) {
        (Status::Open, _) => Ok(()),
        (Status::Cancelled, Some(cancel)) => Err(StreamError::Cancelled {
            id: id.to_string(),
            cancel: cancel.clone(),
        }),
        (status, _) => Err(StreamError::Ended {
            id: id.to_string(),
            status,
        }),
    }
}
