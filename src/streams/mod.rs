//! AI output streams: a room-scoped text that grows by appends (an LLM's tokens, a build
//! log), with a status (`open`, then `finished`, `failed` or `cancelled`).
//!
//! - Every append is sent live to the room as a volatile `stream.delta {stream_id, offset,
//!   text}` (no `seq`, not in room history: the stream's own text is the record).
//! - Under load, deltas are coalesced: appends of a stream that come while an earlier delta
//!   of it is still being handed to the sockets go out together, as one delta whose `text`
//!   is theirs joined and whose `offset` is the first one's. Nothing waits for company: an
//!   append with no delivery of its stream under way goes out alone, at once. On one node
//!   the appends queue on the stream's delivery lock ([`Streams::append`]); in a cluster
//!   [`redis::deliver_loop`] joins what piled up on the channel.
//! - Offsets count Unicode code points (not bytes, not UTF-16 units): a delta's `offset` is
//!   where its first character sits in the whole text. JavaScript counts them with
//!   `Array.from(text).length`, Python with `len(text)`, Rust with `text.chars().count()`.
//! - A socket catches up with `stream.resume {stream_id, offset}`: the text from `offset`
//!   on. [`Streams::resume`] reads it holding the stream's delivery lock on this node, and
//!   the command's ack is sent before the lock is let go, so no delta overtakes the
//!   snapshot: every delta the socket receives after the ack starts at or before the end
//!   of the snapshot (a client drops the part it has). On one node there is no overlap at
//!   all; in a cluster a delta still in flight when Redis was read may overlap.
//!
//! Where the text is kept is decided once, in [`crate::stores`]: [`memory`] on a single
//! node (with `[storage] path` too: streams are short-lived, a restart ends them), or
//! [`redis`] in a cluster, so a stream started at one node, appended at another, is
//! viewed and resumed at any. Deltas then travel through Redis (the append script
//! publishes them atomically with the append) and every node delivers them to its own
//! sockets under the same delivery lock.
//!
//! A cancel (`stream.cancel`) ends the stream as `cancelled`: the producer's next append is
//! refused (`stream_cancelled`), and a [`Watch`] on the stream (what
//! `StreamWriter::cancelled` waits on) resolves on every node, told through Redis in a
//! cluster (and by a refused append, if that message was lost).

pub mod memory;
pub mod redis;

pub use memory::MemoryStreams;
pub use redis::RedisStreams;

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::{OwnedMutexGuard, watch};

use crate::config::StreamsConfig;
use crate::delivery::Deliver;
use crate::errors::Message;
use crate::events::Envelope;
use crate::rooms::{Id, RoomName, Tenant};

/// A stream's id: 1 to 128 of `[A-Za-z0-9_.-]`, unique in its tenant.
pub type StreamId = Id;

/// The event every append sends to the room.
pub const DELTA: &str = "stream.delta";

/// Where a stream is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Open,
    Finished,
    Failed,
    Cancelled,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Finished => "finished",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "open" => Self::Open,
            "finished" => Self::Finished,
            "failed" => Self::Failed,
            "cancelled" => Self::Cancelled,
            _ => return None,
        })
    }
}

/// What a stream is created with.
#[derive(Debug, Clone)]
pub struct NewStream {
    pub tenant: Tenant,
    pub id: StreamId,
    pub room: RoomName,
    /// `llm`, `log`, …: for clients to choose how to show it.
    pub kind: String,
    /// Anything the producer wants viewers to know (model, prompt id…), sent in
    /// `stream.started`.
    pub meta: Value,
    /// The user the stream answers; with `streams.cancel = "requester"` the only one who
    /// may cancel it.
    pub requested_by: Option<Id>,
}

/// A stream apart from its text.
#[derive(Debug, Clone, PartialEq)]
pub struct Info {
    pub id: StreamId,
    pub room: RoomName,
    pub kind: String,
    pub status: Status,
    /// The text's length in code points.
    pub length: u64,
    /// Unix milliseconds.
    pub started_ms: u64,
    pub ended_ms: Option<u64>,
    pub requested_by: Option<Id>,
}

impl Info {
    /// From the start to the end (or to now while open).
    pub fn duration_ms(&self) -> u64 {
        self.ended_ms
            .unwrap_or_else(now_ms)
            .saturating_sub(self.started_ms)
    }
}

/// A stream's text from an offset on.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub info: Info,
    /// Where `text` starts: the offset asked for, or the text's length if that was past it.
    pub offset: u64,
    pub text: String,
}

/// How a stream ends.
#[derive(Debug, Clone)]
pub enum End {
    Finished,
    Failed,
    Cancelled(Cancelled),
}

impl End {
    fn status(&self) -> Status {
        match self {
            Self::Finished => Status::Finished,
            Self::Failed => Status::Failed,
            Self::Cancelled(_) => Status::Cancelled,
        }
    }
}

/// Who cancelled a stream, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cancelled {
    /// The user id of the socket that cancelled.
    pub by: String,
    pub reason: Option<String>,
}

/// Why a stream operation was refused; each has its code in [`crate::errors`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    #[error("no stream {0}")]
    NotFound(String),
    #[error("stream {0} exists already")]
    Exists(String),
    #[error("stream {id} is {}", status.as_str())]
    Ended { id: String, status: Status },
    #[error("stream {id} was cancelled")]
    Cancelled { id: String, cancel: Cancelled },
    /// The text would pass `streams.max_bytes` (the limit).
    #[error("the stream's text would exceed {0} bytes")]
    TooLarge(usize),
    /// Redis did not answer, or the event about the stream could not be published.
    #[error("streams are unavailable: {0}")]
    Unavailable(String),
}

impl StreamError {
    /// The message template, and with it the code (`Unavailable` is `cluster_unavailable`).
    pub fn template(&self) -> Message {
        match self {
            Self::NotFound(_) => Message::StreamNotFound,
            Self::Exists(_) => Message::StreamExists,
            Self::Ended { .. } => Message::StreamEnded,
            Self::Cancelled { .. } => Message::StreamCancelled,
            Self::TooLarge(_) => Message::StreamTooLarge,
            Self::Unavailable(_) => Message::HttpCluster,
        }
    }

    /// The client-facing message.
    pub fn message(&self) -> String {
        let template = self.template();
        match self {
            Self::NotFound(id) | Self::Exists(id) | Self::Cancelled { id, .. } => {
                template.render(&[("stream_id", id)])
            }
            Self::Ended { id, status } => {
                template.render(&[("stream_id", id), ("status", &status.as_str())])
            }
            Self::TooLarge(max) => template.render(&[("max", max)]),
            Self::Unavailable(reason) => template.render(&[("reason", reason)]),
        }
    }
}

/// `stream.started`, to the stream's room.
#[derive(Debug, Serialize)]
pub struct StartedEvent<'a> {
    pub stream_id: &'a str,
    pub kind: &'a str,
    pub meta: &'a Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<&'a str>,
}

/// `stream.delta`, volatile.
#[derive(Debug, Serialize)]
pub struct Delta<'a> {
    pub stream_id: &'a str,
    pub offset: u64,
    pub text: &'a str,
}

/// Token counts a producer may report at `finish` (as OpenAI's `usage`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Usage {
    #[serde(default)]
    pub prompt_tokens: Option<u64>,
    #[serde(default)]
    pub completion_tokens: Option<u64>,
}

/// `stream.finished`, to the stream's room; also the answer to a finish.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FinishedEvent {
    pub stream_id: String,
    pub length: u64,
    pub duration_ms: u64,
    /// `completion_tokens` per second of the stream's life, when the producer reported them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens_per_sec: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

/// `stream.failed`, to the stream's room.
#[derive(Debug, Clone, Serialize)]
pub struct FailedEvent {
    pub stream_id: String,
    pub error: String,
    pub length: u64,
}

/// `stream.cancelled`, to the stream's room.
#[derive(Debug, Clone, Serialize)]
pub struct CancelledEvent {
    pub stream_id: String,
    pub by: String,
    pub reason: Option<String>,
    pub length: u64,
}

/// Enough locks that unrelated streams seldom wait on each other, few enough to keep for
/// good: a stream's deltas and its resumes on this node take the lock of its shard.
const SHARDS: usize = 64;

/// Where this node's streams are, and what orders their deltas on this node.
pub struct Streams {
    backend: Backend,
    config: StreamsConfig,
    /// Where a delta held back by `streams.coalesce_ms` is delivered when its turn comes
    /// (one node; set once the Socket.IO server exists). Without it nothing is held back.
    /// Weak: the server's state holds these streams (through the services).
    later: std::sync::OnceLock<std::sync::Weak<dyn Deliver>>,
    shards: Vec<Arc<tokio::sync::Mutex<()>>>,
    /// Writers on this node waiting for a cancel, by stream key.
    watchers: Mutex<HashMap<String, watch::Sender<Option<Cancelled>>>>,
}

enum Backend {
    Memory(Arc<MemoryStreams>),
    Redis(Arc<RedisStreams>),
}

/// A stream's key in its store: `<tenant>/<id>`.
pub fn key(tenant: &Tenant, id: &StreamId) -> String {
    format!("{tenant}/{id}")
}

impl Streams {
    /// A single node's streams, in memory.
    pub fn memory(config: StreamsConfig) -> Self {
        Self::with(Backend::Memory(Arc::default()), config)
    }

    /// The cluster's streams, in Redis; [`redis::deliver_loop`] delivers their deltas here.
    pub fn redis(store: Arc<RedisStreams>, config: StreamsConfig) -> Self {
        Self::with(Backend::Redis(store), config)
    }

    fn with(backend: Backend, config: StreamsConfig) -> Self {
        Self {
            backend,
            config,
            later: std::sync::OnceLock::new(),
            shards: (0..SHARDS).map(|_| Arc::default()).collect(),
            watchers: Mutex::default(),
        }
    }

    pub fn config(&self) -> &StreamsConfig {
        &self.config
    }

    /// Lets deltas be held back by `streams.coalesce_ms` and delivered through `io` later
    /// (one node; the cluster's deliver loop paces its own).
    pub fn deliver_later_through(&self, io: &Arc<dyn Deliver>) {
        let _ = self.later.set(Arc::downgrade(io));
    }

    pub(crate) fn window(&self) -> Duration {
        Duration::from_millis(self.config.coalesce_ms)
    }

    /// The delivery lock of the stream `key` on this node.
    fn shard(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut hasher);
        self.shards[hasher.finish() as usize % SHARDS].clone()
    }

    /// Creates an open stream with no text.
    pub async fn create(&self, new: &NewStream) -> Result<Info, StreamError> {
        let started_ms = now_ms();
        match &self.backend {
            Backend::Memory(m) => m.create(new, started_ms),
            Backend::Redis(r) => r.create(new, started_ms, &self.config).await,
        }
    }

    /// Appends `text` to an open stream and sends it to the room's sockets as a delta;
    /// returns the offset (in code points) where `text` starts.
    pub async fn append(
        &self,
        io: &dyn Deliver,
        tenant: &Tenant,
        id: &StreamId,
        text: &str,
    ) -> Result<u64, StreamError> {
        let key = key(tenant, id);
        let appended = match &self.backend {
            Backend::Memory(m) => {
                let (offset, _) = m.append(&key, id, text, self.config.max_bytes)?;
                // Coalescing: appends of this stream that come while one of its deltas is
                // being delivered wait here with their text stored; the first to get the
                // lock hands all of it over as one delta, the others find theirs sent. No
                // append waits for a later one, so nothing is delayed without load.
                let order = self.shard(&key).lock_owned().await;
                let pace = match self.later.get() {
                    Some(_) => m.pace(&key, self.window()),
                    None => memory::Pace::Now,
                };
                match (pace, self.later.get()) {
                    (memory::Pace::Later(due), Some(later)) => {
                        // `streams.coalesce_ms`: the stream's last delta is too recent;
                        // what comes until `due` goes out with this text then.
                        drop(order);
                        let (m, io, lock) = (m.clone(), later.clone(), self.shard(&key));
                        let (key, tenant) = (key.clone(), tenant.clone());
                        let id = id.clone();
                        tokio::spawn(async move {
                            tokio::time::sleep_until(due).await;
                            let _order = lock.lock_owned().await;
                            if let Some(io) = io.upgrade() {
                                flush(&m, &*io, &key, &tenant, &id).await;
                            }
                        });
                    }
                    (memory::Pace::Scheduled, _) => {}
                    _ => flush(m, io, &key, tenant, id).await,
                }
                Ok(offset)
            }
            // Published by the script; every node's [`redis::deliver_loop`] delivers it.
            Backend::Redis(r) => r.append(&key, text, &self.config).await,
        };
        if let Err(StreamError::Cancelled { cancel, .. }) = &appended {
            // Should the cluster's message about it have been lost.
            self.cancelled(&key, cancel.clone());
        }
        appended
    }

    /// Ends an open stream; its text and status are kept for `streams.keep_secs`. A cancel
    /// is told to the writers waiting for one, on every node.
    pub async fn end(&self, tenant: &Tenant, id: &StreamId, end: End) -> Result<Info, StreamError> {
        let key = key(tenant, id);
        let info = match &self.backend {
            Backend::Memory(m) => {
                let info = m.end(&key, id, &end, now_ms())?;
                // A delta held back by `streams.coalesce_ms` goes out before the end is
                // announced.
                if let Some(later) = self.later.get().and_then(std::sync::Weak::upgrade) {
                    let _order = self.shard(&key).lock_owned().await;
                    flush(m, &*later, &key, tenant, id).await;
                }
                info
            }
            Backend::Redis(r) => r.end(&key, id, &end, now_ms(), &self.config).await?,
        };
        if let End::Cancelled(cancel) = end {
            self.cancelled(&key, cancel);
        }
        Ok(info)
    }

    /// The stream apart from its text.
    pub async fn info(&self, tenant: &Tenant, id: &StreamId) -> Result<Info, StreamError> {
        let key = key(tenant, id);
        match &self.backend {
            Backend::Memory(m) => m.info(&key, id),
            Backend::Redis(r) => r.info(&key, id).await,
        }
    }

    /// The text from `offset` on (for `GET /api/v1/streams/{id}`).
    pub async fn read(
        &self,
        tenant: &Tenant,
        id: &StreamId,
        offset: u64,
    ) -> Result<Snapshot, StreamError> {
        let key = key(tenant, id);
        match &self.backend {
            Backend::Memory(m) => m.read(&key, id, offset),
            Backend::Redis(r) => r.read(&key, id, offset).await,
        }
    }

    /// The text from `offset` on, read holding the stream's delivery lock on this node,
    /// which the caller keeps until its answer is on its way to the socket: no delta
    /// handed to this node's sockets after that answer is missing from it.
    pub async fn resume(
        &self,
        tenant: &Tenant,
        id: &StreamId,
        offset: u64,
    ) -> Result<(Snapshot, OwnedMutexGuard<()>), StreamError> {
        let key = key(tenant, id);
        let order = self.shard(&key).lock_owned().await;
        let snapshot = match &self.backend {
            // What was handed to the sockets: a coalesced delta still to come starts there.
            Backend::Memory(m) => m.read_delivered(&key, id, offset),
            Backend::Redis(r) => r.read(&key, id, offset).await,
        }?;
        Ok((snapshot, order))
    }

    /// Waits for a cancel of the stream on this node until the [`Watch`] is dropped.
    pub fn watch(self: &Arc<Self>, tenant: &Tenant, id: &StreamId) -> Watch {
        let key = key(tenant, id);
        let (tx, rx) = watch::channel(None);
        self.watchers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.clone(), tx);
        Watch {
            streams: Arc::downgrade(self),
            key,
            rx,
        }
    }

    /// Tells the writer of stream `key` on this node (if any) that it was cancelled.
    pub(crate) fn cancelled(&self, key: &str, cancel: Cancelled) {
        let watchers = self.watchers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tx) = watchers.get(key) {
            tx.send_if_modified(|now| {
                let first = now.is_none();
                if first {
                    *now = Some(cancel);
                }
                first
            });
        }
    }

    /// Drops ended streams past `streams.keep_secs` and open ones idle past
    /// `streams.idle_secs` (memory only: Redis expires its keys itself).
    pub async fn run_sweeper(self: Arc<Self>) {
        let period = Duration::from_secs(self.config.keep_secs.clamp(1, 60));
        loop {
            tokio::time::sleep(period).await;
            if let Backend::Memory(m) = &self.backend {
                m.sweep(now_ms(), &self.config);
            }
        }
    }
}

/// A writer's wait for a cancel; stops waiting when dropped.
pub struct Watch {
    streams: std::sync::Weak<Streams>,
    key: String,
    rx: watch::Receiver<Option<Cancelled>>,
}

impl Watch {
    /// Resolves once the stream is cancelled (at once if it was).
    pub async fn cancelled(&self) -> Cancelled {
        let mut rx = self.rx.clone();
        match rx.wait_for(Option::is_some).await {
            Ok(cancel) => cancel.clone().unwrap_or_else(|| Cancelled {
                by: String::new(),
                reason: None,
            }),
            // The node is going away: no cancel will come.
            Err(_) => std::future::pending().await,
        }
    }

    /// The cancel, if there was one.
    pub fn is_cancelled(&self) -> Option<Cancelled> {
        self.rx.borrow().clone()
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if let Some(streams) = self.streams.upgrade() {
            let mut watchers = streams.watchers.lock().unwrap_or_else(|e| e.into_inner());
            // Only ours: a new writer of the same id may have replaced it.
            if watchers
                .get(&self.key)
                .is_some_and(|tx| self.rx.same_channel(&tx.subscribe()))
            {
                watchers.remove(&self.key);
            }
        }
    }
}

/// Hands what was appended to `key` and not yet sent to the sockets, as one delta; called
/// holding the stream's delivery lock.
async fn flush(m: &MemoryStreams, io: &dyn Deliver, key: &str, tenant: &Tenant, id: &StreamId) {
    if let Some((from, piece, room)) = m.take_undelivered(key) {
        deliver_delta(
            io,
            uuid::Uuid::now_v7(),
            tenant,
            &room,
            id,
            from,
            &piece,
            false,
        )
        .await;
    }
}

/// Hands one delta to the sockets of the stream's room (this node's only with
/// `local_only`). A socket that cannot take it misses it: a delta is volatile, and a
/// resume gives the text back.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn deliver_delta(
    io: &dyn Deliver,
    event_id: uuid::Uuid,
    tenant: &Tenant,
    room: &RoomName,
    id: &StreamId,
    offset: u64,
    text: &str,
    local_only: bool,
) {
    let delta = Delta {
        stream_id: id.as_str(),
        offset,
        text,
    };
    let payload = match Envelope::encode(
        event_id,
        DELTA,
        std::slice::from_ref(room),
        &[],
        None,
        &delta,
    ) {
        Ok(payload) => payload,
        Err(e) => {
            tracing::warn!("cannot encode a stream delta: {e}");
            return;
        }
    };
    if let Err(e) = io
        .deliver(vec![room.scoped(tenant)], DELTA, &payload, local_only, None)
        .await
    {
        tracing::debug!(stream = %id, "stream delta not delivered: {e}");
    }
}

/// The part of `text` from code point `offset` on, and where that is (at most its length).
pub fn from_offset(text: &str, offset: u64) -> (u64, &str) {
    let mut chars = 0u64;
    for (at, _) in text.char_indices() {
        if chars == offset {
            return (offset, &text[at..]);
        }
        chars += 1;
    }
    (chars, "")
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;
    use futures_util::future::BoxFuture;

    /// What a socket would be handed, in order: deltas `(offset, end)` and resume answers
    /// (the end of their text).
    #[derive(Default)]
    struct Socket(Mutex<Vec<(&'static str, u64, u64)>>);

    impl Deliver for Socket {
        fn deliver<'a>(
            &'a self,
            _rooms: Vec<std::borrow::Cow<'static, str>>,
            _event: &'a str,
            payload: &'a serde_json::value::RawValue,
            _local_only: bool,
            _except: Option<&'a str>,
        ) -> BoxFuture<'a, Result<u64, String>> {
            let envelope: Value = serde_json::from_str(payload.get()).unwrap();
            let offset = envelope["data"]["offset"].as_u64().unwrap();
            let chars = envelope["data"]["text"].as_str().unwrap().chars().count() as u64;
            self.0
                .lock()
                .unwrap()
                .push(("delta", offset, offset + chars));
            Box::pin(async { Ok(0) })
        }
    }

    /// Resumes race with appends on other threads; whatever the answer is, the next delta
    /// handed over after it starts exactly where its text ends.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_delta_overtakes_a_resume() {
        let streams = Arc::new(Streams::memory(StreamsConfig::default()));
        let socket = Arc::new(Socket::default());
        let new = NewStream {
            tenant: Tenant::default_tenant(),
            id: Id::parse("s").unwrap(),
            room: RoomName::Global,
            kind: "llm".into(),
            meta: Value::Null,
            requested_by: None,
        };
        streams.create(&new).await.unwrap();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = {
            let (streams, socket, new) = (streams.clone(), socket.clone(), new.clone());
            let stop = stop.clone();
            tokio::spawn(async move {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    streams
                        .append(&*socket, &new.tenant, &new.id, "é👋🏽")
                        .await
                        .unwrap();
                    tokio::task::yield_now().await;
                }
            })
        };
        for _ in 0..100 {
            let (snapshot, order) = streams.resume(&new.tenant, &new.id, 0).await.unwrap();
            // The command's and the transport's work between the read and the answer,
            // while the appends go on.
            tokio::time::sleep(Duration::from_millis(1)).await;
            let end = snapshot.text.chars().count() as u64;
            socket.0.lock().unwrap().push(("answer", 0, end));
            drop(order);
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        writer.await.unwrap();
        let log = socket.0.lock().unwrap();
        let mut answered = None;
        for (what, offset, end) in log.iter() {
            match (*what, answered.take()) {
                ("answer", _) => answered = Some(*end),
                ("delta", Some(snapshot_end)) => {
                    assert_eq!(*offset, snapshot_end, "the first delta after an answer");
                }
                _ => {}
            }
        }
    }

    /// A room of sockets that takes `delay` to hand each delta over, recording what it was
    /// handed (`("delta", offset, text)`) and the resume answers the test interleaves.
    struct Slow {
        delay: Duration,
        log: Mutex<Vec<(&'static str, u64, String)>>,
    }

    impl Deliver for Slow {
        fn deliver<'a>(
            &'a self,
            _rooms: Vec<std::borrow::Cow<'static, str>>,
            _event: &'a str,
            payload: &'a serde_json::value::RawValue,
            _local_only: bool,
            _except: Option<&'a str>,
        ) -> BoxFuture<'a, Result<u64, String>> {
            let envelope: Value = serde_json::from_str(payload.get()).unwrap();
            let offset = envelope["data"]["offset"].as_u64().unwrap();
            let text = envelope["data"]["text"].as_str().unwrap().to_owned();
            self.log.lock().unwrap().push(("delta", offset, text));
            Box::pin(tokio::time::sleep(self.delay).map(|()| Ok(0)))
        }
    }

    /// Several producers append to one stream while each delivery is slow: the appends
    /// that pile up go out coalesced, the deltas rebuild the exact text, and a resume racing
    /// with them is followed by a delta starting exactly where its text ends.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn coalesced_deltas_rebuild_the_exact_text_and_never_overtake_a_resume() {
        let streams = Arc::new(Streams::memory(StreamsConfig::default()));
        let socket = Arc::new(Slow {
            delay: Duration::from_millis(3),
            log: Mutex::default(),
        });
        let new = NewStream {
            tenant: Tenant::default_tenant(),
            id: Id::parse("s").unwrap(),
            room: RoomName::Global,
            kind: "llm".into(),
            meta: Value::Null,
            requested_by: None,
        };
        streams.create(&new).await.unwrap();
        let pieces = ["é", "👋🏽", "世界 ", "🧑‍💻", "x"];
        let mut writers = Vec::new();
        for w in 0..6 {
            let (streams, socket, new) = (streams.clone(), socket.clone(), new.clone());
            writers.push(tokio::spawn(async move {
                let mut mine = Vec::new();
                for i in 0..40 {
                    let piece = pieces[(w + i) % pieces.len()];
                    let offset = streams
                        .append(&*socket, &new.tenant, &new.id, piece)
                        .await
                        .unwrap();
                    mine.push((offset, piece));
                }
                mine
            }));
        }
        let mut answers = 0;
        while writers.iter().any(|w| !w.is_finished()) {
            let (snapshot, order) = streams.resume(&new.tenant, &new.id, 0).await.unwrap();
            tokio::time::sleep(Duration::from_millis(1)).await;
            assert_eq!(
                snapshot.info.length,
                snapshot.text.chars().count() as u64,
                "the length a resume reports is that of its text"
            );
            socket
                .log
                .lock()
                .unwrap()
                .push(("answer", 0, snapshot.text.clone()));
            drop(order);
            answers += 1;
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let mut appends = Vec::new();
        for w in writers {
            appends.extend(w.await.unwrap());
        }
        let whole = streams.read(&new.tenant, &new.id, 0).await.unwrap().text;
        // Every append's answer says where its text is.
        for (offset, piece) in &appends {
            assert_eq!(
                from_offset(&whole, *offset)
                    .1
                    .chars()
                    .take(piece.chars().count())
                    .collect::<String>(),
                *piece
            );
        }
        let log = socket.log.lock().unwrap();
        let deltas: Vec<_> = log.iter().filter(|(what, ..)| *what == "delta").collect();
        let (mut rebuilt, mut have) = (String::new(), 0u64);
        for (_, offset, text) in &deltas {
            assert_eq!(*offset, have, "deltas follow on from each other");
            rebuilt.push_str(text);
            have += text.chars().count() as u64;
        }
        assert_eq!(rebuilt, whole, "the deltas rebuild the exact text");
        assert!(
            deltas.len() < appends.len(),
            "{} appends went out as {} deltas: none coalesced",
            appends.len(),
            deltas.len()
        );
        let mut answered: Option<u64> = None;
        for (what, offset, text) in log.iter() {
            match (*what, answered.take()) {
                ("answer", _) => answered = Some(text.chars().count() as u64),
                ("delta", Some(end)) => assert_eq!(*offset, end, "the first delta after an answer"),
                _ => {}
            }
        }
        assert!(answers > 5, "the resumes raced with the appends");
    }

    /// With `streams.coalesce_ms`, a stream's first append goes out at once; those within
    /// the window after it wait and go out together when it ends; ending the stream sends
    /// what still waits before the end is announced.
    #[tokio::test]
    async fn a_window_spaces_deltas_and_the_end_sends_what_waits() {
        let config = StreamsConfig {
            coalesce_ms: 200,
            ..StreamsConfig::default()
        };
        let streams = Arc::new(Streams::memory(config));
        let socket = Arc::new(Slow {
            delay: Duration::ZERO,
            log: Mutex::default(),
        });
        let io: Arc<dyn Deliver> = socket.clone();
        streams.deliver_later_through(&io);
        let new = NewStream {
            tenant: Tenant::default_tenant(),
            id: Id::parse("w").unwrap(),
            room: RoomName::Global,
            kind: "llm".into(),
            meta: Value::Null,
            requested_by: None,
        };
        streams.create(&new).await.unwrap();
        let append = |text: &'static str| {
            let (streams, socket, new) = (streams.clone(), socket.clone(), new.clone());
            async move {
                streams
                    .append(&*socket, &new.tenant, &new.id, text)
                    .await
                    .unwrap()
            }
        };
        let deltas = || {
            socket
                .log
                .lock()
                .unwrap()
                .iter()
                .map(|(_, offset, text)| (*offset, text.clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(append("a").await, 0);
        assert_eq!(
            deltas(),
            [(0, "a".to_owned())],
            "the first goes out at once"
        );
        for (text, offset) in [("é", 1), ("👋🏽", 2), ("b", 4)] {
            assert_eq!(append(text).await, offset, "answered at once");
        }
        assert_eq!(deltas().len(), 1, "the rest waits for the window");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while deltas().len() < 2 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(deltas()[1..], [(1, "é👋🏽b".to_owned())]);
        // A resume now ends where the deltas sent so far end.
        let (snapshot, order) = streams.resume(&new.tenant, &new.id, 0).await.unwrap();
        drop(order);
        assert_eq!(snapshot.text, "aé👋🏽b");

        assert_eq!(append("z").await, 5);
        assert_eq!(deltas().len(), 2, "within the window of the last delta");
        let (snapshot, order) = streams.resume(&new.tenant, &new.id, 0).await.unwrap();
        drop(order);
        assert_eq!(snapshot.text, "aé👋🏽b", "what waits is not in a resume yet");
        streams
            .end(&new.tenant, &new.id, End::Finished)
            .await
            .unwrap();
        assert_eq!(deltas()[2..], [(5, "z".to_owned())], "sent by the end");
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(deltas().len(), 3, "and only once");
    }

    #[test]
    fn offsets_count_code_points() {
        let text = "héllo 👋🏽 世界 🧑‍💻";
        assert_eq!(from_offset(text, 0), (0, text));
        assert_eq!(from_offset(text, 2), (2, "llo 👋🏽 世界 🧑‍💻"));
        // 👋🏽 is two code points (hand, skin tone); 🧑‍💻 three (with the joiner).
        assert_eq!(from_offset(text, 7), (7, "🏽 世界 🧑‍💻"));
        let length = text.chars().count() as u64;
        assert_eq!(length, 15);
        assert_eq!(from_offset(text, length), (length, ""));
        assert_eq!(from_offset(text, length + 5), (length, ""));
    }
}
