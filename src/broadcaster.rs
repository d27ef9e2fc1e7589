//! [`EventBroadcaster`]: the single publish path. The HTTP API, and any Rust code embedding
//! Roomcast, publish through it; history, idempotency, limits and metrics attach here.
//! AI streams start and end here too ([`EventBroadcaster::stream`], [`StreamWriter`]): their
//! `stream.started` / `finished` / `failed` / `cancelled` events are numbered room events
//! like any other, and their text is kept by [`crate::streams`]. `task.*` events get their
//! server-computed fields (rate, ETA, duration) from [`crate::tasks`] on the way. Locks
//! ([`crate::locks`]) are taken, renewed and released here, and their `lock.acquired` /
//! `lock.released` events are numbered room events of the resource's room.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::config::OnUnavailable;
use crate::delivery::ClusterStatus;
pub use crate::delivery::Deliver;
use crate::events::*;
use crate::history::{AppendError, HistoryStore};
use crate::idempotency::{Claim, IdempotencyError, IdempotencyStore};
use crate::locks::{Acquired, Holder, LockError, Locks, Outcome, Owner, Reason, Resource};
use crate::metrics::Counters;
use crate::rooms::{Id, RoomName, Tenant};
use crate::streams::{
    Cancelled, CancelledEvent, End, FailedEvent, FinishedEvent, Info, NewStream, StartedEvent,
    StreamError, StreamId, Streams, Usage, Watch,
};
use crate::tasks::Tasks;

/// What a publish produced; the body of a `202` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Published {
    pub id: Uuid,
    #[serde(rename = "type")]
    pub event_type: String,
    pub room: RoomName,
    pub rooms: Vec<RoomName>,
    pub tenant: Tenant,
    /// True when this is the stored answer of an earlier publish with the same
    /// idempotency key: nothing was delivered this time.
    #[serde(skip)]
    pub replayed: bool,
    /// The event's `seq` in `room` (none for a volatile event). Not part of the HTTP
    /// answer; the `publish` command acks it.
    #[serde(skip)]
    pub seq: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("invalid payload: {0}")]
    InvalidPayload(FieldError),
    #[error("cannot encode event: {0}")]
    Encode(String),
    #[error("the cluster is unreachable: {0}")]
    ClusterUnavailable(String),
    #[error("a publish with this idempotency key is still in progress")]
    IdempotencyInProgress,
    /// More rooms than `limits.max_rooms_per_publish` (the limit).
    #[error("a publish may name at most {0} rooms")]
    TooManyRooms(usize),
}

/// A cloneable handle that publishes typed events into one tenant (see [`Self::with_tenant`]).
#[derive(Clone)]
pub struct EventBroadcaster {
    io: Arc<dyn Deliver>,
    counters: Arc<Counters>,
    /// Cluster mode only: whether the cluster is reachable, and what to do when it is not.
    cluster: Option<Arc<ClusterStatus>>,
    /// Publishes under way, so a shutdown can let them finish before closing sockets.
    inflight: Arc<AtomicUsize>,
    idempotency: Arc<dyn IdempotencyStore>,
    /// Set by [`EventBroadcaster::with_idempotency_key`] for one publish.
    idempotency_key: Option<Arc<str>>,
    /// Room history: numbers and keeps every non-volatile event.
    history: HistoryStore,
    /// Set by [`EventBroadcaster::volatile`]: no `seq`, no history.
    volatile: bool,
    /// Set by [`EventBroadcaster::from_client`]: the socket a client event came from.
    origin: Option<Arc<Origin>>,
    tenant: Tenant,
    /// `limits.max_rooms_per_publish`: what one publish may cost in deliveries and logs.
    max_rooms: usize,
    /// AI streams' text and status.
    streams: Arc<Streams>,
    /// Task progress, for the rate and ETA of `task.progress`.
    tasks: Arc<Tasks>,
    /// Locks for critical sections.
    locks: Arc<Locks>,
}

/// Counts one publish in flight for as long as it lives.
struct Inflight(Arc<AtomicUsize>);

impl Inflight {
    fn new(counter: &Arc<AtomicUsize>) -> Self {
        counter.fetch_add(1, Ordering::SeqCst);
        Self(counter.clone())
    }
}

impl Drop for Inflight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

static GLOBAL: RwLock<Option<EventBroadcaster>> = RwLock::new(None);

macro_rules! broadcast_methods {
    ($(($variant:ident, $name:literal, $payload:ident, $method:ident)),* $(,)?) => {
        impl EventBroadcaster {
            $(
                #[doc = concat!("Publishes a `", $name, "` event.")]
                pub async fn $method(&self, event: $payload) -> Result<Published, PublishError> {
                    self.publish(Event::$variant(event)).await
                }
            )*
        }
    };
}
crate::for_each_event!(broadcast_methods);

impl EventBroadcaster {
    pub fn new(
        io: Arc<dyn Deliver>,
        counters: Arc<Counters>,
        cluster: Option<Arc<ClusterStatus>>,
        idempotency: Arc<dyn IdempotencyStore>,
        history: HistoryStore,
    ) -> Self {
        Self {
            io,
            counters,
            cluster,
            inflight: Arc::default(),
            idempotency,
            idempotency_key: None,
            history,
            volatile: false,
            origin: None,
            tenant: Tenant::default_tenant(),
            max_rooms: crate::config::LimitsConfig::default().max_rooms_per_publish,
            streams: Arc::new(Streams::memory(Default::default())),
            tasks: Arc::new(Tasks::memory(Default::default())),
            locks: Arc::new(Locks::memory(Default::default())),
        }
    }

    /// The same broadcaster, keeping locks in `locks` (the node's store).
    pub fn with_locks(&self, locks: Arc<Locks>) -> Self {
        Self {
            locks,
            ..self.clone()
        }
    }

    /// The same broadcaster, keeping task progress in `tasks` (the node's store).
    pub fn with_tasks(&self, tasks: Arc<Tasks>) -> Self {
        Self {
            tasks,
            ..self.clone()
        }
    }

    /// The same broadcaster, keeping AI streams in `streams` (the node's store).
    pub fn with_streams(&self, streams: Arc<Streams>) -> Self {
        Self {
            streams,
            ..self.clone()
        }
    }

    /// The same broadcaster, refusing publishes to more than `max` rooms (at least 2: a
    /// typed event may route to two).
    pub fn with_max_rooms(&self, max: usize) -> Self {
        Self {
            max_rooms: max.max(2),
            ..self.clone()
        }
    }

    /// The same broadcaster, delivering through `io`.
    pub(crate) fn through(&self, io: Arc<dyn Deliver>) -> Self {
        Self { io, ..self.clone() }
    }

    /// `TooManyRooms` when `count` rooms are more than one publish may name.
    fn check_rooms(&self, count: usize) -> Result<(), PublishError> {
        if count > self.max_rooms {
            return Err(PublishError::TooManyRooms(self.max_rooms));
        }
        Ok(())
    }

    /// The same broadcaster, publishing volatile events: delivered live only, with no `seq`,
    /// not kept in history (cursors, typing, progress ticks).
    pub fn volatile(&self) -> Self {
        Self {
            volatile: true,
            ..self.clone()
        }
    }

    /// The same broadcaster, publishing client events (the `publish` command): the
    /// envelope's `from` is `origin.from`, and the sender's socket is skipped unless
    /// `origin.echo`. Counted as `client` in the metrics.
    pub fn from_client(&self, origin: Origin) -> Self {
        Self {
            origin: Some(Arc::new(origin)),
            ..self.clone()
        }
    }

    /// The same broadcaster, publishing at most once per `key` (within the configured
    /// window, per tenant): a repeat returns the first [`Published`] with `replayed` set
    /// and delivers nothing.
    pub fn with_idempotency_key(&self, key: impl Into<Arc<str>>) -> Self {
        Self {
            idempotency_key: Some(key.into()),
            ..self.clone()
        }
    }

    /// Waits until no publish is in flight, or `limit` has passed.
    pub async fn idle(&self, limit: std::time::Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        while self.inflight.load(Ordering::SeqCst) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// The broadcaster of the running server, once [`crate::Roomcast::serve`] has started.
    pub fn global() -> Option<EventBroadcaster> {
        GLOBAL.read().ok().and_then(|g| g.clone())
    }

    pub(crate) fn install_global(&self) {
        if let Ok(mut g) = GLOBAL.write() {
            *g = Some(self.clone());
        }
    }

    /// The same broadcaster, publishing into `tenant`.
    pub fn with_tenant(&self, tenant: Tenant) -> Self {
        Self {
            tenant,
            ..self.clone()
        }
    }

    pub fn tenant(&self) -> &Tenant {
        &self.tenant
    }

    /// Validates and publishes a typed event to the rooms it routes to.
    pub async fn publish(&self, event: Event) -> Result<Published, PublishError> {
        event.validate().map_err(PublishError::InvalidPayload)?;
        let rooms = event.target().rooms();
        self.check_rooms(rooms.len())?;
        self.at_most_once(|| async move {
            // Here, so that a replayed idempotent publish is no progress sample either.
            let event = self.tasks.observe(&self.tenant, event).await;
            self.deliver_now(event.event_type().as_str(), rooms, &event, true)
                .await
        })
        .await
    }

    /// Publishes a custom event with any JSON data to `rooms` (non-empty; duplicates dropped).
    pub async fn publish_custom(
        &self,
        name: &EventName,
        rooms: Vec<RoomName>,
        data: &serde_json::Value,
    ) -> Result<Published, PublishError> {
        // Before removing duplicates, which is quadratic in the list.
        self.check_rooms(rooms.len())?;
        let mut unique = Vec::with_capacity(rooms.len());
        for room in rooms {
            if !unique.contains(&room) {
                unique.push(room);
            }
        }
        if unique.is_empty() {
            return Err(PublishError::InvalidPayload(FieldError::new(
                "rooms",
                "at least one room is required",
            )));
        }
        self.deliver(name.as_str(), unique, data, true).await
    }

    /// Publishes a server event (`presence.*`, ...) whose name clients may not use.
    pub(crate) async fn announce<T: Serialize + ?Sized>(
        &self,
        name: &'static str,
        room: RoomName,
        data: &T,
    ) -> Result<Published, PublishError> {
        // `events_published` counts what callers published, not the server's own notices;
        // notices are volatile (no `seq`, no history): a client refetches presence instead.
        self.volatile().deliver(name, vec![room], data, false).await
    }

    /// [`Self::deliver_now`], once per idempotency key when one is set.
    async fn deliver<T: Serialize + ?Sized>(
        &self,
        event_type: &str,
        rooms: Vec<RoomName>,
        data: &T,
        counted: bool,
    ) -> Result<Published, PublishError> {
        self.check_rooms(rooms.len())?;
        self.at_most_once(|| self.deliver_now(event_type, rooms, data, counted))
            .await
    }

    /// Runs `publish` once per idempotency key when one is set (a repeat gets the first
    /// answer), or just runs it.
    async fn at_most_once<F>(&self, publish: impl FnOnce() -> F) -> Result<Published, PublishError>
    where
        F: std::future::Future<Output = Result<Published, PublishError>>,
    {
        let Some(key) = &self.idempotency_key else {
            return publish().await;
        };
        let key = format!("{}/{key}", self.tenant);
        let store_err = |e: IdempotencyError| PublishError::ClusterUnavailable(e.0);
        // A concurrent first attempt gets a few seconds to finish before we give up.
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            match self.idempotency.claim(&key).await.map_err(store_err)? {
                Claim::New => break,
                Claim::Done(answer) => {
                    let mut first: Published = serde_json::from_str(&answer)
                        .map_err(|e| PublishError::Encode(e.to_string()))?;
                    first.replayed = true;
                    return Ok(first);
                }
                Claim::Pending if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(std::time::Duration::from_millis(25)).await;
                }
                Claim::Pending => return Err(PublishError::IdempotencyInProgress),
            }
        }
        let result = publish().await;
        let stored = match &result {
            Ok(published) => {
                let answer = serde_json::to_string(published).unwrap_or_default();
                self.idempotency.finish(&key, &answer).await
            }
            // A failed publish delivered nothing: a retry may try again.
            Err(_) => self.idempotency.abandon(&key).await,
        };
        if let Err(e) = stored {
            tracing::warn!("idempotency key not stored: {e}");
        }
        result
    }

    /// Wraps `data` in an envelope, numbers it in its rooms' history unless it is volatile,
    /// serializes it once, and hands it to the sockets.
    async fn deliver_now<T: Serialize + ?Sized>(
        &self,
        event_type: &str,
        rooms: Vec<RoomName>,
        data: &T,
        counted: bool,
    ) -> Result<Published, PublishError> {
        let _inflight = Inflight::new(&self.inflight);
        let started = std::time::Instant::now();
        let local_only = match &self.cluster {
            Some(status) if !status.is_up() => match status.on_unavailable {
                OnUnavailable::Fail => {
                    return Err(PublishError::ClusterUnavailable(status.reason()));
                }
                OnUnavailable::Local => true,
            },
            _ => false,
        };
        let id = Uuid::now_v7();
        let scoped: Vec<_> = rooms.iter().map(|r| r.scoped(&self.tenant)).collect();
        // Volatile events are not numbered; neither is anything during a cluster outage with
        // `on_unavailable = "local"`: it goes to this node's sockets, unnumbered.
        let origin = self.origin.as_deref();
        let (failed, seq) = if self.volatile || local_only {
            let payload = Envelope::encode(id, event_type, &rooms, &[], origin, data)
                .map_err(|e| PublishError::Encode(e.to_string()))?;
            let except = origin.and_then(Origin::except);
            self.io
                .deliver(scoped, event_type, &payload, local_only, except)
                .await
                .map(|failed| (failed, None))
                .map_err(PublishError::ClusterUnavailable)?
        } else {
            self.history
                .publish(&*self.io, id, event_type, &rooms, scoped, origin, data)
                .await
                .map_err(|e| match e {
                    AppendError::Encode(e) => PublishError::Encode(e),
                    AppendError::Unavailable(e) => PublishError::ClusterUnavailable(e),
                })
                .map(|(failed, seq)| (failed, Some(seq)))?
        };
        if counted {
            self.counters.by_type.incr(event_type);
            // Custom names are unbounded: one label for them all keeps /metrics bounded.
            let kind = match EventType::parse(event_type) {
                Some(_) => event_type,
                None if origin.is_some() => "client",
                None => "custom",
            };
            self.counters
                .published(kind, self.tenant.as_str(), started.elapsed());
        }
        if failed > 0 {
            Counters::incr(&self.counters.delivery_failures, failed);
            tracing::debug!(event_type, failed, "event not delivered to some sockets");
        }
        Ok(Published {
            id,
            event_type: event_type.to_owned(),
            room: rooms[0].clone(),
            rooms,
            tenant: self.tenant.clone(),
            seq,
            replayed: false,
        })
    }
}

/// A stream as [`EventBroadcaster::start_stream`] creates it.
#[derive(Debug, Clone)]
pub struct StreamSpec {
    pub room: RoomName,
    /// A fresh UUID when `None`.
    pub id: Option<StreamId>,
    pub kind: String,
    pub meta: serde_json::Value,
    pub requested_by: Option<Id>,
}

impl StreamSpec {
    pub fn new(room: RoomName, kind: &str) -> Self {
        Self {
            room,
            id: None,
            kind: kind.to_owned(),
            meta: serde_json::json!({}),
            requested_by: None,
        }
    }
}

impl From<PublishError> for StreamError {
    fn from(e: PublishError) -> Self {
        StreamError::Unavailable(e.to_string())
    }
}

impl EventBroadcaster {
    /// Starts an AI stream in `room` (of this broadcaster's tenant) and announces it with
    /// `stream.started {stream_id, kind, meta}`; write to it with the [`StreamWriter`].
    ///
    /// ```no_run
    /// # async fn demo(broadcaster: roomcast::EventBroadcaster) -> anyhow::Result<()> {
    /// use roomcast::rooms::RoomName;
    /// let room = RoomName::parse("project:42").expect("a room");
    /// let writer = broadcaster.stream(room, "llm").await?;
    /// for token in ["Hel", "lo ", "👋🏽"] {
    ///     tokio::select! {
    ///         appended = writer.append(token) => { appended?; }
    ///         _ = writer.cancelled() => return Ok(()), // a viewer pressed stop
    ///     }
    /// }
    /// writer.finish(None).await?;
    /// # Ok(()) }
    /// ```
    pub async fn stream(&self, room: RoomName, kind: &str) -> Result<StreamWriter, StreamError> {
        self.start_stream(StreamSpec::new(room, kind)).await
    }

    /// [`Self::stream`] with an id, metadata and the user the stream answers.
    pub async fn start_stream(&self, spec: StreamSpec) -> Result<StreamWriter, StreamError> {
        let info = self.create_stream(spec).await?;
        let watch = self.streams.watch(&self.tenant, &info.id);
        Ok(StreamWriter {
            broadcaster: self.clone(),
            id: info.id,
            watch,
        })
    }

    /// Creates the stream and publishes `stream.started`, without a writer (the HTTP API:
    /// the producer's requests append).
    pub async fn create_stream(&self, spec: StreamSpec) -> Result<Info, StreamError> {
        let new = NewStream {
            tenant: self.tenant.clone(),
            id: spec.id.unwrap_or_else(|| {
                // A UUID is always a valid id.
                Id::parse(&Uuid::now_v7().to_string()).unwrap_or_else(Id::default_tenant)
            }),
            room: spec.room,
            kind: spec.kind,
            meta: spec.meta,
            requested_by: spec.requested_by,
        };
        let info = self.streams.create(&new).await?;
        let started = StartedEvent {
            stream_id: new.id.as_str(),
            kind: &new.kind,
            meta: &new.meta,
            requested_by: new.requested_by.as_ref().map(Id::as_str),
        };
        self.deliver("stream.started", vec![new.room.clone()], &started, true)
            .await?;
        Ok(info)
    }

    /// Appends `text` to the open stream `id`; returns where it starts (in code points).
    pub async fn append_stream(&self, id: &StreamId, text: &str) -> Result<u64, StreamError> {
        self.streams.append(&*self.io, &self.tenant, id, text).await
    }

    /// Finishes the stream and publishes `stream.finished`.
    pub async fn finish_stream(
        &self,
        id: &StreamId,
        usage: Option<Usage>,
    ) -> Result<FinishedEvent, StreamError> {
        let info = self.streams.end(&self.tenant, id, End::Finished).await?;
        let duration_ms = info.duration_ms();
        let tokens_per_sec = usage
            .and_then(|u| u.completion_tokens)
            .filter(|_| duration_ms > 0)
            .map(|tokens| (tokens as f64 * 1000.0 / duration_ms as f64 * 10.0).round() / 10.0);
        let finished = FinishedEvent {
            stream_id: id.to_string(),
            length: info.length,
            duration_ms,
            tokens_per_sec,
            usage,
        };
        self.deliver("stream.finished", vec![info.room], &finished, true)
            .await?;
        Ok(finished)
    }

    /// Ends the stream as failed and publishes `stream.failed {stream_id, error, length}`.
    pub async fn fail_stream(
        &self,
        id: &StreamId,
        error: &str,
    ) -> Result<FailedEvent, StreamError> {
        let info = self.streams.end(&self.tenant, id, End::Failed).await?;
        let failed = FailedEvent {
            stream_id: id.to_string(),
            error: error.to_owned(),
            length: info.length,
        };
        self.deliver("stream.failed", vec![info.room], &failed, true)
            .await?;
        Ok(failed)
    }

    /// Ends the stream as cancelled by user `by` and publishes `stream.cancelled`; its
    /// writer, on whichever node, hears of it and its next append is refused.
    pub async fn cancel_stream(
        &self,
        id: &StreamId,
        by: &Id,
        reason: Option<String>,
    ) -> Result<CancelledEvent, StreamError> {
        let cancel = Cancelled {
            by: by.to_string(),
            reason: reason.clone(),
        };
        let info = self
            .streams
            .end(&self.tenant, id, End::Cancelled(cancel))
            .await?;
        let cancelled = CancelledEvent {
            stream_id: id.to_string(),
            by: by.to_string(),
            reason,
            length: info.length,
        };
        self.deliver("stream.cancelled", vec![info.room], &cancelled, true)
            .await?;
        Ok(cancelled)
    }
}

/// Writes one AI stream: [`Self::append`] as the text comes, then [`Self::finish`] or
/// [`Self::fail`]; [`Self::cancelled`] resolves when a viewer cancels (on any node). A
/// writer dropped without either leaves the stream open until `streams.idle_secs`.
pub struct StreamWriter {
    broadcaster: EventBroadcaster,
    id: StreamId,
    watch: Watch,
}

impl StreamWriter {
    pub fn id(&self) -> &StreamId {
        &self.id
    }

    /// Appends `text`; returns where it starts in the whole text, in code points.
    /// `stream_cancelled` once a viewer cancelled, `stream_too_large` past
    /// `streams.max_bytes`.
    pub async fn append(&self, text: &str) -> Result<u64, StreamError> {
        self.broadcaster.append_stream(&self.id, text).await
    }

    /// Finishes the stream: `stream.finished` with its length, duration and, from
    /// `usage.completion_tokens`, its tokens per second.
    pub async fn finish(self, usage: Option<Usage>) -> Result<FinishedEvent, StreamError> {
        self.broadcaster.finish_stream(&self.id, usage).await
    }

    /// Ends the stream as failed: `stream.failed` with `error`.
    pub async fn fail(self, error: &str) -> Result<FailedEvent, StreamError> {
        self.broadcaster.fail_stream(&self.id, error).await
    }

    /// Resolves when a viewer cancels the stream (at once if one did): who, and why.
    /// Cancel-safe, and may be awaited again.
    pub async fn cancelled(&self) -> Cancelled {
        self.watch.cancelled().await
    }

    /// The cancel, if a viewer cancelled already.
    pub fn is_cancelled(&self) -> Option<Cancelled> {
        self.watch.is_cancelled()
    }
}

/// `lock.acquired`, to the resource's room.
#[derive(Serialize)]
struct LockAcquired<'a> {
    resource: &'a Resource,
    holder: &'a Holder,
    token: u64,
    expires_at: String,
}

/// `lock.released`, to the resource's room.
#[derive(Serialize)]
struct LockReleased<'a> {
    resource: &'a Resource,
    token: u64,
    reason: Reason,
}

/// A lock granted: its fencing token and when it expires (Unix ms by the store's clock).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockGrant {
    pub token: u64,
    pub expires_ms: u64,
}

impl EventBroadcaster {
    /// The node's locks.
    pub fn locks(&self) -> &Arc<Locks> {
        &self.locks
    }

    /// Takes the lock of `resource` (in this broadcaster's tenant) for `ttl_ms`, held by
    /// `user_id` through `owner`; the room receives `lock.acquired`. `locked` (with the
    /// holder) when it is held.
    pub async fn acquire_lock(
        &self,
        resource: &Resource,
        ttl_ms: u64,
        user_id: Option<&Id>,
        owner: &Owner,
    ) -> Result<LockGrant, LockError> {
        let answer = self
            .locks
            .acquire(&self.tenant, resource, ttl_ms, user_id, owner)
            .await?;
        self.lock_expired(resource, answer.reaped).await;
        match answer.answer {
            Acquired::Granted { token, expires_ms } => {
                let acquired = LockAcquired {
                    resource,
                    holder: &Holder {
                        user_id: user_id.cloned(),
                        kind: owner.kind(),
                    },
                    token,
                    expires_at: crate::locks::expires_at(expires_ms),
                };
                self.lock_event("lock.acquired", resource, &acquired).await;
                Ok(LockGrant { token, expires_ms })
            }
            Acquired::Locked(held) => Err(LockError::Locked {
                resource: resource.to_string(),
                held,
            }),
        }
    }

    /// Ends the lock of `resource` if `token` holds it (and `owner` may end it); the room
    /// receives `lock.released` with `reason`.
    pub async fn release_lock(
        &self,
        resource: &Resource,
        token: u64,
        owner: &Owner,
        reason: Reason,
    ) -> Result<(), LockError> {
        let answer = self
            .locks
            .release(&self.tenant, resource, token, owner)
            .await?;
        self.lock_expired(resource, answer.reaped).await;
        match answer.answer {
            Outcome::Done { .. } => {
                self.lock_released(resource, token, reason).await;
                Ok(())
            }
            Outcome::NotHolder => Err(LockError::NotHolder(resource.to_string())),
            Outcome::Lost => Err(LockError::Lost(resource.to_string())),
        }
    }

    /// Moves the expiry of the lock `token` holds to `ttl_ms` from now: the new expiry (Unix
    /// ms). Not announced: the room hears of the lock again when it ends.
    pub async fn renew_lock(
        &self,
        resource: &Resource,
        token: u64,
        owner: &Owner,
        ttl_ms: u64,
    ) -> Result<u64, LockError> {
        let answer = self
            .locks
            .renew(&self.tenant, resource, token, owner, ttl_ms)
            .await?;
        self.lock_expired(resource, answer.reaped).await;
        match answer.answer {
            Outcome::Done { expires_ms } => Ok(expires_ms),
            Outcome::NotHolder => Err(LockError::NotHolder(resource.to_string())),
            Outcome::Lost => Err(LockError::Lost(resource.to_string())),
        }
    }

    /// Releases every lock the socket `sid` of this node held (it disconnected), each with
    /// `lock.released {reason: "disconnected"}`.
    pub async fn release_socket_locks(&self, sid: &str) {
        let owner = Owner::Socket(sid.to_owned());
        for (tenant, resource, token) in self.locks.take_socket(sid) {
            let released = self
                .with_tenant(tenant)
                .release_lock(&resource, token, &owner, Reason::Disconnected)
                .await;
            match released {
                // Ended meanwhile (expired, announced as such).
                Ok(()) | Err(LockError::NotHolder(_) | LockError::Lost(_)) => {}
                Err(e) => {
                    tracing::warn!(sid, %resource, "lock of a closed socket not released: {e}");
                }
            }
        }
    }

    /// The expiry worker: waits for the next expiry (or `locks.sweep_ms`), claims what
    /// expired and announces each once (`lock.released {reason: "expired"}`).
    pub async fn run_lock_expiry(self) {
        loop {
            self.locks.next_expiry().await;
            loop {
                match self.locks.reap().await {
                    Ok(expired) if expired.is_empty() => break,
                    Ok(expired) => {
                        for e in expired {
                            self.with_tenant(e.tenant)
                                .lock_released(&e.resource, e.token, Reason::Expired)
                                .await;
                        }
                    }
                    Err(e) => {
                        tracing::debug!("expired locks not claimed: {e}");
                        break;
                    }
                }
            }
        }
    }

    /// Announces the expiry of the lock `reaped` of `resource`, claimed on the way.
    async fn lock_expired(&self, resource: &Resource, reaped: Option<u64>) {
        if let Some(token) = reaped {
            self.lock_released(resource, token, Reason::Expired).await;
        }
    }

    async fn lock_released(&self, resource: &Resource, token: u64, reason: Reason) {
        let released = LockReleased {
            resource,
            token,
            reason,
        };
        self.lock_event("lock.released", resource, &released).await;
    }

    /// A lock's event, numbered in the resource's room. The lock has changed whether or not
    /// the room could be told.
    async fn lock_event<T: Serialize>(&self, name: &str, resource: &Resource, data: &T) {
        if let Err(e) = self
            .deliver(name, vec![resource.room.clone()], data, true)
            .await
        {
            tracing::warn!(%resource, "{name} not delivered: {e}");
        }
    }
}
