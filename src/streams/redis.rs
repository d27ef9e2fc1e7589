//! The cluster's streams, in Redis, shared by every node.
//!
//! Keys, under the cluster's prefix `p`: `p:stream:<tenant>/<id>` (hash: `room`, `scoped`,
//! `kind`, `meta`, `requested_by`, `started`, `ended`, `status`, `length` in code points,
//! and `by`, `reason` once cancelled) and `p:stream-text:<tenant>/<id>` (the text, grown
//! with `APPEND`). Both expire `streams.idle_secs` after the last append while open, and
//! `streams.keep_secs` after the end.
//!
//! An append is one script ([`APPEND`]): it checks the status and the size, appends, counts
//! the offset and publishes the delta on the `p:streams` channel, atomically, so every node
//! receives a stream's deltas in offset order and [`deliver_loop`] hands them to its own
//! sockets under the stream's delivery lock (which a resume on that node holds while it
//! reads the text and answers: the loop waits meanwhile, one Redis round trip). A cancel
//! ([`END`]) publishes on the same channel, so the node whose writer waits for it hears of
//! it.

use std::collections::HashMap;
use std::sync::Arc;

use futures_util::{FutureExt, StreamExt};
use redis::Script;

use super::{
    Cancelled, End, Info, NewStream, Snapshot, Status, StreamError, StreamId, Streams,
    deliver_delta, from_offset,
};
use crate::config::{ClusterMode, StreamsConfig};
use crate::delivery::Deliver;
use crate::redis_conn::RedisConn;
use crate::rooms::{Id, RoomName};

/// KEYS: 1 meta hash, 2 text. ARGV: 1 room, 2 scoped room, 3 kind, 4 meta (JSON),
/// 5 requested_by ("" for none), 6 started ms, 7 idle ms. Returns 0 when the stream exists.
const CREATE: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[1], 'room', ARGV[1], 'scoped', ARGV[2], 'kind', ARGV[3],
  'meta', ARGV[4], 'requested_by', ARGV[5], 'started', ARGV[6], 'status', 'open', 'length', 0)
redis.call('PEXPIRE', KEYS[1], ARGV[7])
return 1
"#;

/// KEYS: 1 meta hash, 2 text. ARGV: 1 text, 2 its code points, 3 max bytes, 4 idle ms,
/// 5 channel, 6 publish command, 7 event id, 8 stream key.
/// Returns `{'ok', offset}`, `{'missing'}`, `{'large'}` or `{status, by, reason}`.
const APPEND: &str = r#"
local m = redis.call('HMGET', KEYS[1], 'status', 'length', 'scoped', 'by', 'reason')
if not m[1] then return {'missing'} end
if m[1] ~= 'open' then return {m[1], m[4] or '', m[5] or ''} end
if redis.call('STRLEN', KEYS[2]) + #ARGV[1] > tonumber(ARGV[3]) then return {'large'} end
local offset = m[2]
if #ARGV[1] > 0 then
  redis.call('APPEND', KEYS[2], ARGV[1])
  redis.call('HINCRBY', KEYS[1], 'length', ARGV[2])
  redis.call(ARGV[6], ARGV[5],
    'd\n' .. ARGV[7] .. '\n' .. ARGV[8] .. '\n' .. m[3] .. '\n' .. offset .. '\n' .. ARGV[1])
end
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
return {'ok', offset}
"#;

/// KEYS: 1 meta hash, 2 text. ARGV: 1 new status, 2 ended ms, 3 keep ms, 4 by, 5 reason,
/// 6 channel, 7 publish command, 8 stream key.
/// Returns `{'ok'}`, `{'missing'}` or `{status, by, reason}` of an ended stream.
const END: &str = r#"
local m = redis.call('HMGET', KEYS[1], 'status', 'by', 'reason')
if not m[1] then return {'missing'} end
if m[1] ~= 'open' then return {m[1], m[2] or '', m[3] or ''} end
redis.call('HSET', KEYS[1], 'status', ARGV[1], 'ended', ARGV[2])
if ARGV[1] == 'cancelled' then
  redis.call('HSET', KEYS[1], 'by', ARGV[4], 'reason', ARGV[5])
  redis.call(ARGV[7], ARGV[6], 'c\n' .. ARGV[8] .. '\n' .. ARGV[4] .. '\n' .. ARGV[5])
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return {'ok'}
"#;

pub struct RedisStreams {
    conn: RedisConn,
    prefix: String,
    channel: String,
    publish_cmd: &'static str,
    create: Script,
    append: Script,
    end: Script,
}

fn unavailable(e: redis::RedisError) -> StreamError {
    StreamError::Unavailable(e.to_string())
}

impl RedisStreams {
    pub fn new(conn: RedisConn, prefix: &str, mode: ClusterMode) -> Self {
        Self {
            conn,
            prefix: prefix.to_owned(),
            channel: format!("{prefix}:streams"),
            publish_cmd: match mode {
                ClusterMode::Standalone => "PUBLISH",
                ClusterMode::Cluster => "SPUBLISH",
            },
            create: Script::new(CREATE),
            append: Script::new(APPEND),
            end: Script::new(END),
        }
    }

    /// The channel [`deliver_loop`] reads.
    pub fn channel(&self) -> String {
        self.channel.clone()
    }

    fn keys(&self, key: &str) -> [String; 2] {
        [
            format!("{}:stream:{key}", self.prefix),
            format!("{}:stream-text:{key}", self.prefix),
        ]
    }

    pub async fn create(
        &self,
        new: &NewStream,
        started_ms: u64,
        config: &StreamsConfig,
    ) -> Result<Info, StreamError> {
        let key = super::key(&new.tenant, &new.id);
        let meta = serde_json::to_string(&new.meta).unwrap_or_else(|_| "{}".into());
        let created: i64 = self
            .create
            .key(Vec::from(self.keys(&key)))
            .arg(new.room.to_string())
            .arg(&*new.room.scoped(&new.tenant))
            .arg(&new.kind)
            .arg(meta)
            .arg(new.requested_by.as_ref().map_or("", Id::as_str))
            .arg(started_ms)
            .arg(config.idle_secs.saturating_mul(1000))
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        if created == 0 {
            return Err(StreamError::Exists(new.id.to_string()));
        }
        Ok(Info {
            id: new.id.clone(),
            room: new.room.clone(),
            kind: new.kind.clone(),
            status: Status::Open,
            length: 0,
            started_ms,
            ended_ms: None,
            requested_by: new.requested_by.clone(),
        })
    }

    pub async fn append(
        &self,
        key: &str,
        text: &str,
        config: &StreamsConfig,
    ) -> Result<u64, StreamError> {
        let id = stream_id(key);
        let answer: Vec<String> = self
            .append
            .key(Vec::from(self.keys(key)))
            .arg(text)
            .arg(text.chars().count())
            .arg(config.max_bytes)
            .arg(config.idle_secs.saturating_mul(1000))
            .arg(&self.channel)
            .arg(self.publish_cmd)
            .arg(uuid::Uuid::now_v7().to_string())
            .arg(key)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        match answer.as_slice() {
            [ok, offset] if ok == "ok" => offset
                .parse()
                .map_err(|_| StreamError::Unavailable("an unreadable offset".into())),
            [large] if large == "large" => Err(StreamError::TooLarge(config.max_bytes)),
            other => Err(refusal(&id, other)),
        }
    }

    pub async fn end(
        &self,
        key: &str,
        id: &StreamId,
        end: &End,
        ended_ms: u64,
        config: &StreamsConfig,
    ) -> Result<Info, StreamError> {
        let (by, reason) = match end {
            End::Cancelled(c) => (c.by.as_str(), c.reason.as_deref().unwrap_or("")),
            _ => ("", ""),
        };
        let answer: Vec<String> = self
            .end
            .key(Vec::from(self.keys(key)))
            .arg(end.status().as_str())
            .arg(ended_ms)
            .arg(config.keep_secs.saturating_mul(1000))
            .arg(by)
            .arg(reason)
            .arg(&self.channel)
            .arg(self.publish_cmd)
            .arg(key)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        match answer.as_slice() {
            [ok] if ok == "ok" => self.info(key, id).await,
            other => Err(refusal(id.as_str(), other)),
        }
    }

    pub async fn info(&self, key: &str, id: &StreamId) -> Result<Info, StreamError> {
        let [meta, _] = self.keys(key);
        let fields: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(meta)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        parse_info(id, &fields)
    }

    pub async fn read(
        &self,
        key: &str,
        id: &StreamId,
        offset: u64,
    ) -> Result<Snapshot, StreamError> {
        let [meta, text] = self.keys(key);
        let (fields, text): (HashMap<String, String>, Option<String>) = redis::pipe()
            .atomic()
            .cmd("HGETALL")
            .arg(meta)
            .cmd("GET")
            .arg(text)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        let info = parse_info(id, &fields)?;
        let text = text.unwrap_or_default();
        let (offset, text) = from_offset(&text, offset);
        Ok(Snapshot {
            info,
            offset,
            text: text.to_owned(),
        })
    }
}

/// The id part of a stream key (`<tenant>/<id>`).
fn stream_id(key: &str) -> String {
    key.split_once('/').map_or(key, |(_, id)| id).to_owned()
}

/// What a script's refusal means: no such stream, or one that ended.
fn refusal(id: &str, answer: &[String]) -> StreamError {
    match answer {
        [status, by, reason] if status == "cancelled" => StreamError::Cancelled {
            id: id.to_owned(),
            cancel: Cancelled {
                by: by.clone(),
                reason: (!reason.is_empty()).then(|| reason.clone()),
            },
        },
        [status, ..] => match Status::parse(status) {
            Some(status) => StreamError::Ended {
                id: id.to_owned(),
                status,
            },
            None => StreamError::NotFound(id.to_owned()),
        },
        [] => StreamError::NotFound(id.to_owned()),
    }
}

fn parse_info(id: &StreamId, fields: &HashMap<String, String>) -> Result<Info, StreamError> {
    let not_found = || StreamError::NotFound(id.to_string());
    let field = |name: &str| fields.get(name).map(String::as_str);
    let number = |name: &str| field(name).and_then(|v| v.parse::<u64>().ok());
    Ok(Info {
        id: id.clone(),
        room: field("room")
            .and_then(RoomName::parse)
            .ok_or_else(not_found)?,
        kind: field("kind").unwrap_or_default().to_owned(),
        status: field("status")
            .and_then(Status::parse)
            .ok_or_else(not_found)?,
        length: number("length").unwrap_or_default(),
        started_ms: number("started").unwrap_or_default(),
        ended_ms: number("ended"),
        requested_by: field("requested_by").and_then(Id::parse),
    })
}

/// The most stream messages [`deliver_loop`] takes off the channel before delivering them.
const BATCH: usize = 256;
/// Consecutive deltas of a stream are coalesced up to this many bytes of text.
const MAX_COALESCED: usize = 64 * 1024;

/// A delta on its way to this node's sockets: one append's, or several consecutive ones'.
struct Pending {
    event_id: uuid::Uuid,
    key: String,
    tenant: Id,
    id: Id,
    room: RoomName,
    offset: u64,
    /// The offset just past `text`.
    end: u64,
    text: String,
}

/// Receives every stream message of the cluster in the order Redis ran the scripts and
/// hands each delta to this node's sockets under its stream's delivery lock; a cancel is
/// told to the writer waiting on this node. What piled up on the channel while earlier
/// deltas were being delivered is taken at once, and consecutive deltas of one stream go out
/// as one (coalesced: `offset` the first one's, `text` theirs joined); without load every
/// delta goes out alone and at once. A message lost on the way (the pub/sub buffer full,
/// Redis gone for a moment) is a delta some viewers miss: they see a gap in offsets and
/// resume.
pub async fn deliver_loop(
    streams: Arc<Streams>,
    mut messages: socketioxide_redis::drivers::MessageStream<(String, Vec<u8>)>,
    io: Arc<dyn Deliver>,
) {
    let mut batch: Vec<Pending> = Vec::new();
    let mut open = true;
    let window = streams.window();
    let mut sent_at: Option<tokio::time::Instant> = None;
    while open {
        let Some((_, first)) = messages.next().await else {
            break;
        };
        take(&streams, &first, &mut batch);
        // `streams.coalesce_ms`: within the window after the last deltas went out, what
        // comes joins them until it ends.
        if let Some(due) = sent_at
            .map(|at| at + window)
            .filter(|due| *due > tokio::time::Instant::now())
        {
            let sleep = tokio::time::sleep_until(due);
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    () = &mut sleep => break,
                    next = messages.next() => match next {
                        Some((_, bytes)) => take(&streams, &bytes, &mut batch),
                        None => {
                            open = false;
                            break;
                        }
                    },
                }
            }
        }
        for _ in 1..BATCH {
            match messages.next().now_or_never() {
                Some(Some((_, bytes))) => take(&streams, &bytes, &mut batch),
                Some(None) => {
                    open = false;
                    break;
                }
                None => break,
            }
        }
        for p in batch.drain(..) {
            let _order = streams.shard(&p.key).lock_owned().await;
            deliver_delta(
                &*io, p.event_id, &p.tenant, &p.room, &p.id, p.offset, &p.text, true,
            )
            .await;
        }
        if !window.is_zero() {
            sent_at = Some(tokio::time::Instant::now());
        }
    }
}

/// Reads one message of the streams channel: a delta joins `batch` (coalesced with the
/// stream's last pending delta when it follows on from it), a cancel is told at once.
fn take(streams: &Streams, bytes: &[u8], batch: &mut Vec<Pending>) {
    let Ok(message) = std::str::from_utf8(bytes) else {
        return;
    };
    match message.split_once('\n') {
        Some(("d", rest)) => {
            let mut parts = rest.splitn(5, '\n');
            let (Some(event_id), Some(key), Some(scoped), Some(offset), Some(text)) = (
                parts.next(),
                parts.next(),
                parts.next(),
                parts.next(),
                parts.next(),
            ) else {
                return;
            };
            let (Ok(event_id), Ok(offset)) = (event_id.parse(), offset.parse::<u64>()) else {
                return;
            };
            let end = offset + text.chars().count() as u64;
            if let Some(last) = batch.iter_mut().rev().find(|p| p.key == key)
                && last.end == offset
                && last.text.len() + text.len() <= MAX_COALESCED
            {
                last.text.push_str(text);
                last.end = end;
                return;
            }
            let Some((tenant, id)) = key
                .split_once('/')
                .and_then(|(t, i)| Some((Id::parse(t)?, Id::parse(i)?)))
            else {
                return;
            };
            let Some(room) = RoomName::unscope(scoped).and_then(|(_, r)| RoomName::parse(r)) else {
                return;
            };
            batch.push(Pending {
                event_id,
                key: key.to_owned(),
                tenant,
                id,
                room,
                offset,
                end,
                text: text.to_owned(),
            });
        }
        Some(("c", rest)) => {
            let mut parts = rest.splitn(3, '\n');
            let (Some(key), Some(by), reason) = (parts.next(), parts.next(), parts.next()) else {
                return;
            };
            let reason = reason.filter(|r| !r.is_empty()).map(str::to_owned);
            streams.cancelled(
                key,
                Cancelled {
                    by: by.to_owned(),
                    reason,
                },
            );
        }
        _ => tracing::warn!("unreadable message on the streams channel"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StreamsConfig;

    fn delta(key: &str, offset: u64, text: &str) -> Vec<u8> {
        let id = uuid::Uuid::now_v7();
        format!(
            "d\n{id}\n{key}\n{}/project:1\n{offset}\n{text}",
            key.split('/').next().unwrap()
        )
        .into_bytes()
    }

    /// What piled up on the channel: consecutive deltas of a stream join into one (its
    /// first offset, the texts in order), other streams' stay apart, and a delta that does
    /// not follow on (one was lost) is not joined across the gap.
    #[test]
    fn what_piled_up_is_coalesced_per_stream_without_crossing_a_gap() {
        let streams = Streams::memory(StreamsConfig::default());
        let mut batch = Vec::new();
        for message in [
            delta("default/a", 0, "hé"),
            delta("default/a", 2, "👋🏽"),
            delta("default/b", 0, "x"),
            delta("default/a", 4, "\n"),
            delta("default/a", 9, "after a gap"),
            delta("default/a", 20, "!"),
        ] {
            take(&streams, &message, &mut batch);
        }
        let got: Vec<_> = batch
            .iter()
            .map(|p| (p.id.as_str(), p.offset, p.text.as_str(), p.end))
            .collect();
        assert_eq!(
            got,
            [
                ("a", 0, "hé👋🏽\n", 5),
                ("b", 0, "x", 1),
                ("a", 9, "after a gap!", 21),
            ]
        );
        assert_eq!(batch[0].room.to_string(), "project:1");
    }
}
