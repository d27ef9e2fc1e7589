//! Cluster history: one Redis stream per tenant and room, numbered in Redis.
//!
//! A publish is one Lua script ([`APPEND`]): it numbers the event in each of its rooms
//! (`HINCRBY` on the room's meta hash, which also holds the epoch), writes the finished
//! envelope into each room's stream (entry id `<seq>-0`, trimmed to the room's size and
//! expired by its TTL), and publishes it on the cluster's `events` channel. Because the
//! script is atomic and every node receives that channel in the order Redis ran the
//! scripts, every node delivers a room's events in `seq` order, whichever node published
//! them. Nodes deliver numbered events only from that channel (the publishing node too), via
//! [`deliver_loop`].
//!
//! A reconnecting socket catches up with [`Catchups`]: it registers for its rooms, reads
//! the backlog (one atomic [`READ`] over all its rooms, which also publishes a marker on
//! this node's own channel), waits until [`deliver_loop`] reaches the marker (so every
//! event numbered before the read has been delivered here, and the rest is still to come),
//! and then, holding the delivery lock, sends the backlog and the live events that arrived
//! meanwhile and are newer than it, and joins the rooms. Nothing is sent twice, nothing
//! overtakes the backlog. (Waiting on the read's reply alone is not enough: the Redis client
//! hands pushed messages over through a queue of its own, so a reply can overtake them.)
//!
//! Keys, under the cluster's prefix `p` (one hash tag on a Redis Cluster):
//! `p:history:<tenant>/<room>` (stream) and `p:history-meta:<tenant>/<room>` (hash
//! `epoch`, `seq`, kept for an hour past the last event so a client that saw it recovers
//! without a gap; a room with no event yet gets it when a socket asks for its position,
//! kept for the room's history TTL from the last such request); channels `p:events` (every
//! node) and `p:sync:<node>` (markers).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use redis::Script;
use serde_json::value::RawValue;
use uuid::Uuid;

use super::{AppendError, CatchUp, Caught, Cursor, HistoryError, MAX_PAGE, Page, Wanted};
use crate::config::{ClusterMode, HistoryConfig};
use crate::delivery::ClusterStatus;
use crate::delivery::Deliver;
use crate::events::{Envelope, Origin};
use crate::metrics::Counters;
use crate::redis_conn::RedisConn;
use crate::rooms::{RoomName, Tenant};

/// How long a room's epoch and last `seq` outlive its last event (at least its TTL).
const KEEP_MS: u64 = 3_600_000;

/// KEYS: per room i, its meta hash (2i-1) and stream (2i).
/// ARGV: 1 channel, 2 publish command, 3 envelope head (no closing brace), 4 envelope tail
/// (`,"data":…}`), 5 event name, 6 event id; then per room, from 7 + 6(i-1): public name,
/// scoped name, size, ttl ms, meta ttl ms, a fresh epoch (used when the room has none).
/// Returns the rooms' seqs.
const APPEND: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local n = #KEYS / 2
local seqs, epochs = {}, {}
for i = 1, n do
  local b = 6 + (i - 1) * 6
  local epoch = redis.call('HGET', KEYS[2 * i - 1], 'epoch')
  if not epoch then
    epoch = ARGV[b + 6]
    redis.call('DEL', KEYS[2 * i])
    redis.call('HSET', KEYS[2 * i - 1], 'epoch', epoch, 'seq', 0)
  end
  seqs[i] = redis.call('HINCRBY', KEYS[2 * i - 1], 'seq', 1)
  epochs[i] = epoch
end
local body = ARGV[3] .. ',"seq":' .. seqs[1] .. ',"epoch":"' .. epochs[1] .. '"'
if n > 1 then
  local also = {}
  for i = 2, n do
    local b = 6 + (i - 1) * 6
    also[#also + 1] = '{"room":"' .. ARGV[b + 1] .. '","seq":' .. seqs[i] .. ',"epoch":"' .. epochs[i] .. '"}'
  end
  body = body .. ',"also":[' .. table.concat(also, ',') .. ']'
end
body = body .. ARGV[4]
local header = {}
for i = 1, n do
  local b = 6 + (i - 1) * 6
  local stream = KEYS[2 * i]
  local cutoff = now - tonumber(ARGV[b + 4])
  for _ = 1, 64 do
    local first = redis.call('XRANGE', stream, '-', '+', 'COUNT', 1)
    if #first == 0 or tonumber(first[1][2][6]) >= cutoff then break end
    redis.call('XDEL', stream, first[1][1])
  end
  redis.call('XADD', stream, 'MAXLEN', ARGV[b + 3], seqs[i] .. '-0',
    'i', ARGV[6], 'e', ARGV[5], 't', now, 'p', body)
  redis.call('PEXPIRE', stream, ARGV[b + 4])
  redis.call('PEXPIRE', KEYS[2 * i - 1], ARGV[b + 5])
  header[#header + 1] = ARGV[b + 2] .. '\30' .. seqs[i] .. '\30' .. epochs[i]
end
redis.call(ARGV[2], ARGV[1], ARGV[6] .. '\n' .. table.concat(header, '\31') .. '\n' .. ARGV[5] .. '\n' .. body)
return seqs
"#;

/// KEYS: per room i, its meta hash (2i-1) and stream (2i).
/// ARGV: 1 publish command, 2 marker channel, 3 marker ("" for none); then per room i,
/// from 4i: since seq, limit (0: the position only), ttl ms, a fresh epoch to give a room
/// with none ("" to leave it without; a room with no event yet keeps its meta for the ttl
/// from the last such read).
/// Returns per room `{epoch, last seq, first kept seq, {{seq, id, event, t, payload}...}}`
/// (epoch "" for a room with no history).
const READ: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {}
for i = 1, #KEYS / 2 do
  local meta, stream = KEYS[2 * i - 1], KEYS[2 * i]
  local since = tonumber(ARGV[4 * i])
  local limit = tonumber(ARGV[4 * i + 1])
  local cutoff = now - tonumber(ARGV[4 * i + 2])
  local epoch = redis.call('HGET', meta, 'epoch')
  if not epoch and ARGV[4 * i + 3] ~= '' then
    epoch = ARGV[4 * i + 3]
    redis.call('DEL', stream)
    redis.call('HSET', meta, 'epoch', epoch, 'seq', 0)
  end
  if epoch and ARGV[4 * i + 3] ~= '' and redis.call('HGET', meta, 'seq') == '0' then
    redis.call('PEXPIRE', meta, math.max(tonumber(ARGV[4 * i + 2]), 1))
  end
  if not epoch then
    out[i] = {'', 0, 1, {}}
  elseif limit == 0 then
    local last = tonumber(redis.call('HGET', meta, 'seq'))
    out[i] = {epoch, last, last + 1, {}}
  else
    local last = tonumber(redis.call('HGET', meta, 'seq'))
    local first_kept = last + 1
    local start = '-'
    while true do
      local head = redis.call('XRANGE', stream, start, '+', 'COUNT', 64)
      local found = false
      for _, e in ipairs(head) do
        if tonumber(e[2][6]) >= cutoff then
          first_kept = tonumber(string.match(e[1], '^(%d+)'))
          found = true
          break
        end
      end
      if found or #head < 64 then break end
      start = '(' .. head[#head][1]
    end
    local from = math.max(since + 1, first_kept)
    local events = {}
    if from <= last then
      local entries = redis.call('XRANGE', stream, from .. '-0', '+', 'COUNT', limit)
      for _, e in ipairs(entries) do
        local f = e[2]
        events[#events + 1] = {tonumber(string.match(e[1], '^(%d+)')), f[2], f[4], tonumber(f[6]), f[8]}
      end
    end
    out[i] = {epoch, last, first_kept, events}
  end
end
if ARGV[3] ~= '' then redis.call(ARGV[1], ARGV[2], ARGV[3]) end
return out
"#;

/// One kept event, as read back from a stream.
#[derive(Debug, Clone)]
pub struct Stored {
    pub seq: u64,
    pub id: String,
    pub event: String,
    /// Milliseconds since the Unix epoch (Redis time) when it was kept.
    pub at_ms: u64,
    pub payload: Arc<RawValue>,
}

/// A room's history as one [`READ`] saw it.
#[derive(Debug)]
pub struct RoomRead {
    /// Empty when the room has no history (never published to, or expired).
    pub epoch: String,
    pub last_seq: u64,
    pub first_kept: u64,
    pub events: Vec<Stored>,
}

impl RoomRead {
    /// Whether `cursor` can be brought up to date from this read.
    pub fn complete_from(&self, cursor: &Cursor) -> bool {
        !self.epoch.is_empty()
            && cursor.epoch == self.epoch
            && cursor.seq <= self.last_seq
            && cursor.seq + 1 >= self.first_kept
    }
}

type RawRoom = (String, u64, u64, Vec<(u64, String, String, u64, String)>);

/// One room of a numbered publish.
/// Why [`RedisHistory::append`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ScriptError {
    #[error("envelope without data")]
    NoData,
    #[error("{0}")]
    Redis(#[from] redis::RedisError),
}

pub struct Target<'a> {
    pub room: &'a RoomName,
    pub scoped: &'a str,
}

pub struct RedisHistory {
    conn: RedisConn,
    prefix: String,
    channel: String,
    sync_channel: String,
    publish_cmd: &'static str,
    config: HistoryConfig,
    append: Script,
    read: Script,
    /// Whether Redis answers: a position is not waited for during an outage.
    status: Arc<ClusterStatus>,
    pub catchups: Catchups,
    /// The senders to skip of client events published here, until they come back.
    excluded: Excluded,
}

/// Client events published on this node without `echo`, by event id: the sender's socket
/// id, taken by [`deliver_loop`] when the event comes back from Redis.
#[derive(Default)]
struct Excluded(Mutex<HashMap<String, String>>);

impl Excluded {
    /// Bounded: an event that never comes back (Redis lost it) is forgotten in the end.
    const MAX: usize = 10_000;

    fn remember(&self, id: Uuid, sid: &str) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= Self::MAX {
            map.clear();
        }
        map.insert(id.to_string(), sid.to_owned());
    }

    fn take(&self, id: &str) -> Option<String> {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if map.is_empty() {
            return None;
        }
        map.remove(id)
    }
}

impl RedisHistory {
    pub fn new(
        conn: RedisConn,
        prefix: &str,
        node_id: &str,
        mode: ClusterMode,
        config: HistoryConfig,
        status: Arc<ClusterStatus>,
    ) -> Self {
        Self {
            conn,
            prefix: prefix.to_owned(),
            channel: format!("{prefix}:events"),
            sync_channel: format!("{prefix}:sync:{node_id}"),
            publish_cmd: match mode {
                ClusterMode::Standalone => "PUBLISH",
                ClusterMode::Cluster => "SPUBLISH",
            },
            config,
            append: Script::new(APPEND),
            read: Script::new(READ),
            status,
            catchups: Catchups::default(),
            excluded: Excluded::default(),
        }
    }

    /// The channels [`deliver_loop`] reads, in one stream: every node's numbered events,
    /// and this node's catch-up markers.
    pub fn channels(&self) -> Vec<String> {
        vec![self.channel.clone(), self.sync_channel.clone()]
    }

    fn keys(&self, scoped: &str) -> [String; 2] {
        [
            format!("{}:history-meta:{scoped}", self.prefix),
            format!("{}:history:{scoped}", self.prefix),
        ]
    }

    /// Numbers the event, keeps it in each room's log and publishes it to every node, which
    /// delivers it in `seq` order ([`deliver_loop`], this node too). Returns its `seq` in
    /// its first room.
    pub async fn publish<T: serde::Serialize + ?Sized>(
        &self,
        id: Uuid,
        event_type: &str,
        rooms: &[RoomName],
        scoped: &[std::borrow::Cow<'static, str>],
        origin: Option<&Origin>,
        data: &T,
    ) -> Result<u64, AppendError> {
        let unnumbered = Envelope::encode(id, event_type, rooms, &[], origin, data)
            .map_err(|e| AppendError::Encode(e.to_string()))?;
        // The sender's socket is on this node: [`deliver_loop`] skips it here when the
        // event comes back from Redis (the other nodes have no such socket).
        let except = origin.and_then(Origin::except);
        if let Some(sid) = except {
            self.excluded.remember(id, sid);
        }
        let appended = self
            .append(id, event_type, rooms, scoped, &unnumbered)
            .await
            .map_err(|e| match e {
                ScriptError::NoData => AppendError::Encode(e.to_string()),
                ScriptError::Redis(e) => AppendError::Unavailable(e.to_string()),
            });
        if appended.is_err() && except.is_some() {
            self.excluded.take(&id.to_string());
        }
        appended.map(|seqs| seqs.first().copied().unwrap_or_default())
    }

    /// Catches a socket up (see [`super::HistoryStore::catch_up`]): registers for the
    /// rooms' live events, reads every backlog (and the defaults' positions) in one atomic
    /// step, waits until this node has delivered what Redis numbered before the read,
    /// then, holding the node's delivery lock, joins the rooms and sends the backlog, then
    /// the live events that arrived meanwhile and are newer than it.
    pub(super) async fn catch_up(
        &self,
        tenant: &Tenant,
        wanted: &[Wanted],
        defaults: &[RoomName],
        join: impl FnOnce(),
        established: impl FnOnce(CatchUp),
        mut send: impl FnMut(&str, &RawValue) -> bool,
    ) {
        let scoped: Vec<String> = wanted.iter().map(|w| w.scoped.clone()).collect();
        let catchup = self.catchups.register(&scoped).await;
        let mut rooms: Vec<_> = wanted
            .iter()
            .map(|w| {
                let since = w.cursor.as_ref().map_or(0, |c| c.seq);
                (
                    w.scoped.clone(),
                    w.room.clone(),
                    since,
                    self.size_of(&w.room),
                )
            })
            .collect();
        // The default rooms' positions come with the same read (limit 0: the position only).
        rooms.extend(
            defaults
                .iter()
                .map(|r| (r.scoped(tenant).into_owned(), r.clone(), 0, 0)),
        );
        let reads = self.read_synced(&rooms).await;
        let (_delivery, live) = self.catchups.finish(&catchup, &scoped).await;
        join();

        // The newest `seq` the read saw per room: live events up to it are in the backlog.
        let mut read_up_to: HashMap<&str, u64> = HashMap::new();
        let mut backlogs: Vec<Vec<Stored>> = Vec::new();
        let found = match reads {
            Ok(mut reads) => {
                let at = reads.len().min(wanted.len());
                let positions = defaults
                    .iter()
                    .zip(reads.split_off(at))
                    .map(|(room, read)| {
                        let cursor = Cursor {
                            epoch: read.epoch,
                            seq: read.last_seq,
                        };
                        (room.to_string(), cursor)
                    })
                    .collect();
                let mut caught = Vec::with_capacity(wanted.len());
                for (w, read) in wanted.iter().zip(reads) {
                    let complete = w.cursor.as_ref().is_some_and(|c| read.complete_from(c));
                    caught.push(Caught {
                        epoch: read.epoch.clone(),
                        seq: read.last_seq,
                        replayed: complete.then_some(read.events.len()),
                    });
                    read_up_to.insert(&w.scoped, read.last_seq);
                    backlogs.push(if complete { read.events } else { Vec::new() });
                }
                CatchUp {
                    rooms: Ok(caught),
                    defaults: Ok(positions),
                }
            }
            Err(e) => CatchUp {
                rooms: Err(HistoryError(e.to_string())),
                defaults: Err(HistoryError(e.to_string())),
            },
        };
        established(found);

        let mut sent = HashSet::new();
        for stored in merge(backlogs) {
            if sent.insert(stored.id.clone()) && !send(&stored.event, &stored.payload) {
                return;
            }
        }
        for numbered in live {
            if newer(&numbered, &read_up_to)
                && sent.insert(numbered.id.clone())
                && !send(&numbered.event, &numbered.payload)
            {
                return;
            }
        }
    }

    /// Numbers, keeps and publishes one event to every node. `unnumbered` is its envelope
    /// without `seq`, `epoch` and `also`, which the script splices in before `data`, in each
    /// of `rooms` (room, scoped name). Returns the event's `seq` in each room.
    pub async fn append(
        &self,
        id: Uuid,
        event: &str,
        rooms: &[RoomName],
        scoped: &[std::borrow::Cow<'static, str>],
        unnumbered: &RawValue,
    ) -> Result<Vec<u64>, ScriptError> {
        // Nothing before `data` can contain `,"data":` (ids, event and room names, and
        // timestamps hold no quotes), so its first occurrence is where `data` starts.
        let json = unnumbered.get();
        let split = json.find(",\"data\":").ok_or(ScriptError::NoData)?;
        let (head, tail) = json.split_at(split);
        let targets: Vec<Target> = rooms
            .iter()
            .zip(scoped)
            .map(|(room, scoped)| Target {
                room,
                scoped: scoped.as_ref(),
            })
            .collect();
        Ok(self.append_parts(id, event, &targets, head, tail).await?)
    }

    /// [`Self::append`] with the envelope split: `head` is its JSON without the closing brace
    /// and without `seq`/`epoch`/`also`; `tail` is `,"data":…}`.
    async fn append_parts(
        &self,
        id: Uuid,
        event: &str,
        rooms: &[Target<'_>],
        head: &str,
        tail: &str,
    ) -> redis::RedisResult<Vec<u64>> {
        let mut invocation = self.append.prepare_invoke();
        invocation
            .arg(&self.channel)
            .arg(self.publish_cmd)
            .arg(head)
            .arg(tail)
            .arg(event)
            .arg(id.to_string());
        for target in rooms {
            let retention = self.config.retention(target.room);
            let ttl_ms = retention.ttl_secs.saturating_mul(1000).max(1);
            for key in self.keys(target.scoped) {
                invocation.key(key);
            }
            invocation
                .arg(target.room.to_string())
                .arg(target.scoped)
                .arg(retention.size.max(1))
                .arg(ttl_ms)
                .arg(ttl_ms.max(KEEP_MS))
                .arg(&*super::new_epoch());
        }
        invocation.invoke_async(&mut self.conn.clone()).await
    }

    /// Reads every room of `rooms` (scoped name, room, since seq, limit) in one atomic
    /// step, then waits until this node has delivered every event numbered before it.
    pub async fn read_synced(
        &self,
        rooms: &[(String, RoomName, u64, usize)],
    ) -> redis::RedisResult<Vec<RoomRead>> {
        let (marker, reached) = self.catchups.marker();
        let read = self.read(rooms, &marker, true).await;
        if read.is_ok() && tokio::time::timeout(SYNC_LIMIT, reached).await.is_err() {
            tracing::warn!("catch-up went ahead before this node delivered what it read");
        }
        self.catchups.forget(&marker);
        read
    }

    /// The position (epoch, last `seq`) of each of `rooms` (scoped name, room), in one
    /// atomic step; a room with none gets its epoch now, in Redis, so every node reports
    /// the same one. A socket that joined the rooms before this call receives every event
    /// with a higher `seq` live.
    pub async fn positions(
        &self,
        rooms: &[(String, RoomName)],
    ) -> redis::RedisResult<Vec<(String, u64)>> {
        // During an outage a connect or subscribe answers at once, without positions.
        if !self.status.is_up() {
            let reason = self.status.reason();
            return Err((redis::ErrorKind::Io, "redis unavailable", reason).into());
        }
        let wanted: Vec<_> = rooms
            .iter()
            .map(|(scoped, room)| (scoped.clone(), room.clone(), 0, 0))
            .collect();
        let reads = self.read(&wanted, "", true).await?;
        Ok(reads.into_iter().map(|r| (r.epoch, r.last_seq)).collect())
    }

    /// Reads every room of `rooms` (scoped name, room, since seq, limit; limit 0 reads the
    /// position only) in one atomic step; publishes `marker` to this node's sync channel
    /// unless it is empty. With `create`, a room with no history gets a fresh epoch.
    async fn read(
        &self,
        rooms: &[(String, RoomName, u64, usize)],
        marker: &str,
        create: bool,
    ) -> redis::RedisResult<Vec<RoomRead>> {
        let mut invocation = self.read.prepare_invoke();
        invocation
            .arg(self.publish_cmd)
            .arg(&self.sync_channel)
            .arg(marker);
        for (scoped, room, since, limit) in rooms {
            for key in self.keys(scoped) {
                invocation.key(key);
            }
            let ttl_ms = self.config.retention(room).ttl_secs.saturating_mul(1000);
            let fresh = if create {
                super::new_epoch()
            } else {
                "".into()
            };
            invocation.arg(*since).arg(*limit).arg(ttl_ms).arg(&*fresh);
        }
        let raw: Vec<RawRoom> = invocation.invoke_async(&mut self.conn.clone()).await?;
        Ok(raw
            .into_iter()
            .map(|(epoch, last_seq, first_kept, events)| RoomRead {
                epoch,
                last_seq,
                first_kept,
                events: events
                    .into_iter()
                    .filter_map(|(seq, id, event, at_ms, payload)| {
                        let payload = RawValue::from_string(payload).ok()?;
                        Some(Stored {
                            seq,
                            id,
                            event,
                            at_ms,
                            payload: payload.into(),
                        })
                    })
                    .collect(),
            })
            .collect())
    }

    /// The retained size of `room`: the most a recovery replays.
    pub fn size_of(&self, room: &RoomName) -> usize {
        self.config.retention(room).size.max(1)
    }

    /// Up to `limit` events of `room` after `since_seq`.
    pub async fn page(
        &self,
        tenant: &Tenant,
        room: &RoomName,
        since_seq: u64,
        limit: usize,
    ) -> redis::RedisResult<Page> {
        let scoped = room.scoped(tenant).into_owned();
        let limit = limit.clamp(1, MAX_PAGE);
        let read = self
            .read(&[(scoped, room.clone(), since_seq, limit)], "", false)
            .await?
            .pop();
        let read = read.unwrap_or(RoomRead {
            epoch: String::new(),
            last_seq: 0,
            first_kept: 1,
            events: Vec::new(),
        });
        Ok(Page {
            room: room.clone(),
            gap: since_seq + 1 < read.first_kept && since_seq < read.last_seq,
            epoch: read.epoch.into(),
            seq: read.last_seq,
            events: read.events.into_iter().map(|e| e.payload).collect(),
        })
    }
}

/// A numbered event as every node receives it on the `events` channel:
/// `<id>\n<scoped room>\x1e<seq>\x1e<epoch>[\x1f...]\n<event name>\n<envelope>`.
#[derive(Debug)]
pub struct Numbered {
    pub id: String,
    pub rooms: Vec<Place>,
    pub event: String,
    pub payload: Arc<RawValue>,
}

/// An event's place in one of its rooms (scoped name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    pub room: String,
    pub seq: u64,
    pub epoch: String,
}

impl Numbered {
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(bytes).ok()?;
        let mut parts = text.splitn(4, '\n');
        let id = parts.next()?.to_owned();
        let rooms = parts
            .next()?
            .split('\x1f')
            .map(|r| {
                let mut fields = r.split('\x1e');
                Some(Place {
                    room: fields.next()?.to_owned(),
                    seq: fields.next()?.parse().ok()?,
                    epoch: fields.next()?.to_owned(),
                })
            })
            .collect::<Option<Vec<_>>>()?;
        let event = parts.next()?.to_owned();
        let payload = RawValue::from_string(parts.next()?.to_owned()).ok()?;
        Some(Self {
            id,
            rooms,
            event,
            payload: payload.into(),
        })
    }
}

/// Sockets catching up on rooms, and the live events they must not miss meanwhile. Its
/// lock is also the delivery lock: [`deliver_loop`] holds it while it hands an event to
/// local sockets, so a catch-up that holds it sees no live event slip past.
#[derive(Default)]
pub struct Catchups {
    waiting: tokio::sync::Mutex<HashMap<String, Vec<Arc<Catchup>>>>,
    /// Markers published by reads, and who waits for [`deliver_loop`] to reach each.
    markers: Mutex<HashMap<String, tokio::sync::oneshot::Sender<()>>>,
    next_marker: AtomicU64,
}

/// How long a catch-up waits for this node's delivery to reach its read; past it, the
/// socket may see an event twice (never miss one). Only a stalled node or a lost marker
/// (Redis gone between the read and its publish) gets here.
const SYNC_LIMIT: Duration = Duration::from_secs(5);

/// One socket's catch-up: the live events of its rooms since it registered.
#[derive(Default)]
pub struct Catchup {
    seen: Mutex<Vec<Arc<Numbered>>>,
}

/// Held while a catch-up sends its backlog and joins its rooms: no live delivery meanwhile.
pub type DeliveryGuard<'a> = tokio::sync::MutexGuard<'a, HashMap<String, Vec<Arc<Catchup>>>>;

impl Catchups {
    /// A fresh marker, and a future that completes when [`deliver_loop`] reaches it.
    fn marker(&self) -> (String, tokio::sync::oneshot::Receiver<()>) {
        let marker = self.next_marker.fetch_add(1, Ordering::Relaxed).to_string();
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.markers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(marker.clone(), tx);
        (marker, rx)
    }

    fn forget(&self, marker: &str) {
        self.markers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(marker);
    }

    fn reached(&self, marker: &[u8]) {
        let Ok(marker) = std::str::from_utf8(marker) else {
            return;
        };
        let waiter = self
            .markers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(marker);
        if let Some(waiter) = waiter {
            let _ = waiter.send(());
        }
    }

    /// Starts collecting the live events of `rooms` (scoped names) for one socket.
    pub async fn register(&self, rooms: &[String]) -> Arc<Catchup> {
        let catchup = Arc::new(Catchup::default());
        let mut waiting = self.waiting.lock().await;
        for room in rooms {
            waiting
                .entry(room.clone())
                .or_default()
                .push(catchup.clone());
        }
        catchup
    }

    /// Takes the delivery lock and ends `catchup`'s collection; returns the events it
    /// collected, oldest first, with the lock, which the caller holds while it sends the
    /// backlog and these, and joins the rooms.
    pub async fn finish(
        &self,
        catchup: &Arc<Catchup>,
        rooms: &[String],
    ) -> (DeliveryGuard<'_>, Vec<Arc<Numbered>>) {
        let mut waiting = self.waiting.lock().await;
        for room in rooms {
            if let Some(list) = waiting.get_mut(room) {
                list.retain(|c| !Arc::ptr_eq(c, catchup));
                if list.is_empty() {
                    waiting.remove(room);
                }
            }
        }
        let seen = std::mem::take(&mut *catchup.seen.lock().unwrap_or_else(|e| e.into_inner()));
        (waiting, seen)
    }
}

/// Whether a live event is past what the backlog read saw in one of the socket's rooms
/// (every live event is, when the read failed).
fn newer(numbered: &Numbered, read_up_to: &HashMap<&str, u64>) -> bool {
    read_up_to.is_empty()
        || numbered
            .rooms
            .iter()
            .any(|p| read_up_to.get(p.room.as_str()).is_some_and(|m| p.seq > *m))
}

/// Merges per-room backlogs into one, oldest first by the time each was kept, keeping
/// every room's own order.
fn merge(backlogs: Vec<Vec<Stored>>) -> Vec<Stored> {
    let mut queues: Vec<std::collections::VecDeque<Stored>> =
        backlogs.into_iter().map(Into::into).collect();
    let mut merged = Vec::new();
    loop {
        let next = queues
            .iter()
            .enumerate()
            .filter_map(|(i, q)| q.front().map(|e| (e.at_ms, i)))
            .min();
        let Some((_, i)) = next else { break };
        merged.extend(queues[i].pop_front());
    }
    merged
}

/// Receives every numbered event of the cluster, in the order Redis numbered them, and
/// delivers each to this node's sockets; records it for sockets catching up on its rooms.
///
/// A jump in a room's `seq` means this node missed events (its pub/sub buffer was full, or
/// it lost Redis for a moment while others published): they are read back from the room's
/// stream and delivered first, so its sockets still see every event, in order.
pub async fn deliver_loop(
    history: Arc<RedisHistory>,
    mut events: socketioxide_redis::drivers::MessageStream<(String, Vec<u8>)>,
    io: Arc<dyn Deliver>,
    counters: Arc<Counters>,
) {
    // The last (epoch, seq) delivered per room; bounded (forgetting only skips a repair).
    let mut last: HashMap<String, (String, u64)> = HashMap::new();
    while let Some((channel, bytes)) = events.next().await {
        if channel == history.sync_channel {
            history.catchups.reached(&bytes);
            continue;
        }
        let Some(numbered) = Numbered::decode(&bytes) else {
            tracing::warn!("unreadable numbered event on the cluster channel");
            continue;
        };
        for missed in repair(&history, &last, &numbered).await {
            Counters::incr(&counters.repaired_events, 1);
            deliver_one(&history, &*io, &counters, Arc::new(missed)).await;
        }
        if last.len() > 100_000 {
            last.clear();
        }
        for place in &numbered.rooms {
            last.insert(place.room.clone(), (place.epoch.clone(), place.seq));
        }
        deliver_one(&history, &*io, &counters, Arc::new(numbered)).await;
    }
}

/// The events of `numbered`'s rooms between the last delivered one and it, read back from
/// Redis; none when nothing is missing (or Redis cannot be read).
async fn repair(
    history: &RedisHistory,
    last: &HashMap<String, (String, u64)>,
    numbered: &Numbered,
) -> Vec<Numbered> {
    let mut missed = Vec::new();
    for place in &numbered.rooms {
        let Some((epoch, seq)) = last.get(&place.room) else {
            continue;
        };
        if *epoch != place.epoch || place.seq <= seq + 1 {
            continue;
        }
        let Some(room) = RoomName::unscope(&place.room).and_then(|(_, r)| RoomName::parse(r))
        else {
            continue;
        };
        let count = (place.seq - seq - 1) as usize;
        let wanted = [(place.room.clone(), room, *seq, count)];
        match history.read(&wanted, "", false).await {
            Ok(reads) => {
                tracing::warn!(
                    room = place.room,
                    count,
                    "missed events read back from redis"
                );
                for stored in reads.into_iter().flat_map(|r| r.events) {
                    if stored.seq < place.seq {
                        missed.push(Numbered {
                            id: stored.id,
                            rooms: vec![Place {
                                room: place.room.clone(),
                                seq: stored.seq,
                                epoch: place.epoch.clone(),
                            }],
                            event: stored.event,
                            payload: stored.payload,
                        });
                    }
                }
            }
            Err(e) => tracing::warn!(room = place.room, "missed events not read back: {e}"),
        }
    }
    missed
}

/// Delivers one numbered event to this node's sockets, holding the delivery lock, and
/// records it for the sockets catching up on its rooms.
async fn deliver_one(
    history: &RedisHistory,
    io: &dyn Deliver,
    counters: &Counters,
    numbered: Arc<Numbered>,
) {
    let waiting = history.catchups.waiting.lock().await;
    let mut told = HashSet::new();
    for place in &numbered.rooms {
        for catchup in waiting.get(&place.room).into_iter().flatten() {
            if told.insert(Arc::as_ptr(catchup) as usize) {
                catchup
                    .seen
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(numbered.clone());
            }
        }
    }
    let rooms = numbered
        .rooms
        .iter()
        .map(|p| p.room.clone().into())
        .collect();
    let except = history.excluded.take(&numbered.id);
    match io
        .deliver(
            rooms,
            &numbered.event,
            &numbered.payload,
            true,
            except.as_deref(),
        )
        .await
    {
        Ok(0) => {}
        Ok(failed) => Counters::incr(&counters.delivery_failures, failed),
        Err(e) => tracing::warn!(event = numbered.event, "local delivery failed: {e}"),
    }
    drop(waiting);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_what_the_append_script_publishes() {
        let msg = "0193-id\nacme/project:1\x1e7\x1ee1\x1facme/agent:a\x1e2\x1ee2\nagent.status\n{\"seq\":7}";
        let n = Numbered::decode(msg.as_bytes()).expect("decodes");
        assert_eq!(n.id, "0193-id");
        let place = |room: &str, seq, epoch: &str| Place {
            room: room.into(),
            seq,
            epoch: epoch.into(),
        };
        assert_eq!(
            n.rooms,
            vec![
                place("acme/project:1", 7, "e1"),
                place("acme/agent:a", 2, "e2")
            ]
        );
        assert_eq!(n.event, "agent.status");
        assert_eq!(n.payload.get(), "{\"seq\":7}");
        assert!(Numbered::decode(b"id\nroom-without-seq\ne\n{}").is_none());
        assert!(Numbered::decode(b"id\nr\x1e1\x1ee\ne\nnot json").is_none());
    }
}
