//! Durable ingest from a Redis stream (`[ingest.redis_streams]`), for producers such as
//! workflow engines that must not lose an event while Roomcast restarts.
//!
//! Every node consumes the stream as one consumer of one group (its consumer name is its
//! `node_id`), so each entry is handled by one node. An entry holds the JSON of
//! `POST /api/v1/events` in its field `event`, and is acknowledged (`XACK`) only after the
//! broadcaster published it; until then it stays pending in Redis. Entries a dead consumer
//! left pending are taken over with `XAUTOCLAIM` after `claim_idle_ms`. An entry that can
//! never be published (bad JSON, an unknown type, invalid data) is moved to the dead-letter
//! stream with its error, so it does not block the ones behind it.
//!
//! Each entry is published with an idempotency key (its optional `idempotency_key` field, or
//! its stream id), so an entry published by a node that died before its `XACK` is not
//! delivered again by the node that takes it over (within `publish.idempotency_window_secs`,
//! and across nodes in cluster mode, where the keys are kept in Redis).

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::streams::{
    StreamAutoClaimOptions, StreamAutoClaimReply, StreamId, StreamMaxlen, StreamReadOptions,
    StreamReadReply,
};
use redis::{AsyncCommands, RedisResult};
use tokio::sync::watch;

use crate::broadcaster::{EventBroadcaster, PublishError};
use crate::config::RedisStreamsIngest;
use crate::events::FieldError;
use crate::events::request::{PublishEvent, RequestError, decode_json};
use crate::http::ApiError;
use crate::idempotency::Publisher;
use crate::rooms::Tenant;

/// The field of a stream entry holding the event's JSON.
pub const EVENT_FIELD: &str = "event";
/// An optional field: the producer's own idempotency key for the entry.
pub const KEY_FIELD: &str = "idempotency_key";

/// One consumer of the ingest group.
pub struct StreamIngest {
    config: RedisStreamsIngest,
    consumer: String,
    conn: ConnectionManager,
    broadcaster: EventBroadcaster,
}

/// Why an entry was not acknowledged.
enum Failure {
    /// Redis or the cluster is unreachable: retry later, in order.
    Retry(String),
}

/// Why an entry was not published.
enum Refusal {
    /// Its JSON is not a valid event (as `POST /api/v1/events` would say).
    Request(RequestError),
    /// The broadcaster refused it.
    Publish(PublishError),
}

/// What becomes of an entry after an attempt to publish it.
enum Outcome {
    /// Published (or a replay of an earlier publish, or nothing left to publish):
    /// acknowledge it.
    Ack,
    /// Might be published later (the cluster is unreachable, or another consumer is
    /// publishing it right now): stop here and retry, so entries stay in order.
    Retry(String),
    /// Can never be published: move it to the dead-letter stream with its error, so it
    /// does not block the entries behind it.
    DeadLetter(Refusal),
}

impl Outcome {
    /// Every refusal is decided here, by name: a new kind of publish error must be
    /// placed on one side or the other.
    fn of(result: Result<(), Refusal>) -> Self {
        let refusal = match result {
            Ok(()) => return Self::Ack,
            Err(Refusal::Publish(e)) => match e {
                PublishError::ClusterUnavailable(m) => return Self::Retry(m),
                PublishError::IdempotencyInProgress => {
                    return Self::Retry("the entry is being published elsewhere".into());
                }
                PublishError::InvalidPayload(_)
                | PublishError::Encode(_)
                | PublishError::TooManyRooms(_) => Refusal::Publish(e),
            },
            Err(refusal @ Refusal::Request(_)) => refusal,
        };
        Self::DeadLetter(refusal)
    }
}

impl Refusal {
    /// `{code, message, field?}` as the HTTP API would answer the same event: the
    /// dead-letter entry speaks the publish API's codes.
    fn detail(self) -> serde_json::Value {
        match self {
            Self::Request(e) => ApiError::from(e),
            Self::Publish(e) => ApiError::from(e),
        }
        .to_json()
    }
}

impl StreamIngest {
    /// Opens the connection without waiting for Redis.
    pub fn new(
        config: RedisStreamsIngest,
        url: &str,
        consumer: &str,
        broadcaster: EventBroadcaster,
    ) -> RedisResult<Self> {
        // XREADGROUP blocks for `block_ms`: the response may take that long.
        let manager = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(Duration::from_millis(config.block_ms + 2_000)))
            .set_max_delay(Duration::from_secs(1));
        let conn = ConnectionManager::new_lazy_with_config(redis::Client::open(url)?, manager)?;
        Ok(Self {
            config,
            consumer: consumer.to_owned(),
            conn,
            broadcaster,
        })
    }

    /// Consumes until `stop` turns true (the server's drain), retrying after any failure.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        tracing::info!(
            stream = self.config.stream,
            group = self.config.group,
            consumer = self.consumer,
            "stream ingest started"
        );
        let mut backoff = Duration::from_millis(100);
        while !*stop.borrow() {
            // Stopping may cut a publish short before its XACK: the entry stays pending and
            // its idempotency key keeps it from being delivered twice.
            let result = tokio::select! {
                r = self.consume() => r,
                _ = stopped(&mut stop) => break,
            };
            match result {
                Ok(never) => match never {},
                Err(Failure::Retry(reason)) => {
                    tracing::warn!(reason, "stream ingest paused, retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stopped(&mut stop) => break,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
        tracing::info!("stream ingest stopped");
    }

    /// One session: the group, this consumer's own pending entries, then new ones, with
    /// dead consumers' entries claimed every `claim_interval_ms`, until a failure.
    async fn consume(&mut self) -> Result<std::convert::Infallible, Failure> {
        self.ensure_group().await?;
        // Entries this consumer read before a restart and did not acknowledge come first.
        loop {
            let pending = self.read("0", None).await?;
            if pending.is_empty() {
                break;
            }
            self.handle_all(pending).await?;
        }
        let interval = Duration::from_millis(self.config.claim_interval_ms);
        let mut next_claim = tokio::time::Instant::now();
        loop {
            if tokio::time::Instant::now() >= next_claim {
                self.claim_abandoned().await?;
                next_claim = tokio::time::Instant::now() + interval;
            }
            let entries = self.read(">", Some(self.config.block_ms)).await?;
            self.handle_all(entries).await?;
        }
    }

    /// Creates the group at the start of the stream (so entries added before any node ever
    /// ran are delivered too); an existing group is kept as it is.
    async fn ensure_group(&mut self) -> Result<(), Failure> {
        let created: RedisResult<()> = self
            .conn
            .xgroup_create_mkstream(&self.config.stream, &self.config.group, "0")
            .await;
        match created {
            Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
            other => other.map_err(retry),
        }
    }

    async fn read(&mut self, from: &str, block_ms: Option<u64>) -> Result<Vec<StreamId>, Failure> {
        let mut options = StreamReadOptions::default()
            .group(&self.config.group, &self.consumer)
            .count(self.config.batch_size);
        if let Some(ms) = block_ms {
            options = options.block(ms as usize);
        }
        let reply: Option<StreamReadReply> = self
            .conn
            .xread_options(&[&self.config.stream], &[from], &options)
            .await
            .map_err(retry)?;
        Ok(reply
            .map(|r| r.keys.into_iter().flat_map(|k| k.ids).collect())
            .unwrap_or_default())
    }

    /// Takes over, and handles, entries other consumers left unacknowledged for longer than
    /// `claim_idle_ms`.
    async fn claim_abandoned(&mut self) -> Result<(), Failure> {
        let mut cursor = "0-0".to_owned();
        loop {
            let reply: StreamAutoClaimReply = self
                .conn
                .xautoclaim_options(
                    &self.config.stream,
                    &self.config.group,
                    &self.consumer,
                    self.config.claim_idle_ms,
                    &cursor,
                    StreamAutoClaimOptions::default().count(self.config.batch_size),
                )
                .await
                .map_err(retry)?;
            if !reply.claimed.is_empty() {
                tracing::info!(
                    entries = reply.claimed.len(),
                    "took over pending stream entries"
                );
            }
            self.handle_all(reply.claimed).await?;
            if reply.next_stream_id == "0-0" {
                return Ok(());
            }
            cursor = reply.next_stream_id;
        }
    }

    /// Handles entries in stream order; stops at the first that must be retried.
    async fn handle_all(&mut self, entries: Vec<StreamId>) -> Result<(), Failure> {
        for entry in entries {
            self.handle(entry).await?;
        }
        Ok(())
    }

    async fn handle(&mut self, entry: StreamId) -> Result<(), Failure> {
        let field = |name: &str| -> Option<String> {
            entry
                .map
                .get(name)
                .and_then(|v| redis::from_redis_value_ref::<String>(v).ok())
        };
        let (raw, key) = (field(EVENT_FIELD), field(KEY_FIELD));
        let result = match &raw {
            // An entry deleted while pending has no fields left: nothing to publish.
            None if entry.map.is_empty() => Ok(()),
            None => Err(Refusal::Request(RequestError::InvalidPayload(
                FieldError::new(
                    EVENT_FIELD,
                    format!("the entry has no {EVENT_FIELD:?} field holding the event's JSON"),
                ),
            ))),
            Some(raw) => self.publish(&entry.id, raw, key.as_deref()).await,
        };
        match Outcome::of(result) {
            Outcome::Ack => {
                let acked: RedisResult<()> = self
                    .conn
                    .xack(&self.config.stream, &self.config.group, &[&entry.id])
                    .await;
                acked.map_err(retry)
            }
            Outcome::Retry(reason) => Err(Failure::Retry(reason)),
            Outcome::DeadLetter(refusal) => {
                self.dead_letter(&entry, raw.as_deref(), refusal.detail())
                    .await
            }
        }
    }

    /// Validates an entry exactly like `POST /api/v1/events`, and publishes it once per key.
    async fn publish(&self, id: &str, raw: &str, key: Option<&str>) -> Result<(), Refusal> {
        let mut body: PublishEvent = decode_json(raw.as_bytes()).map_err(Refusal::Request)?;
        let (tenant, volatile) = (body.tenant.take(), body.volatile);
        let event = body.into_event().map_err(Refusal::Request)?;
        let mut broadcaster = self
            .broadcaster
            .with_tenant(tenant.unwrap_or_else(Tenant::default_tenant));
        if volatile {
            broadcaster = broadcaster.volatile();
        }
        let key = match key {
            Some(k) => Publisher::Ingest.scoped(k),
            None => Publisher::Ingest.scoped(&format!("{}/{id}", self.config.stream)),
        };
        match broadcaster.with_idempotency_key(key).publish(event).await {
            Ok(_) => Ok(()),
            Err(e) => Err(Refusal::Publish(e)),
        }
    }

    /// Moves a poison entry to the dead-letter stream with its error, and acknowledges it,
    /// in one transaction.
    async fn dead_letter(
        &mut self,
        entry: &StreamId,
        raw: Option<&str>,
        detail: serde_json::Value,
    ) -> Result<(), Failure> {
        let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
        let fields = [
            ("id", entry.id.clone()),
            ("stream", self.config.stream.clone()),
            ("code", text(&detail["code"])),
            ("field", text(&detail["field"])),
            ("message", text(&detail["message"])),
            (EVENT_FIELD, raw.unwrap_or_default().to_owned()),
        ];
        tracing::warn!(
            id = entry.id,
            code = text(&detail["code"]),
            "stream entry moved to the dead-letter stream"
        );
        let maxlen = StreamMaxlen::Approx(self.config.dead_letter_max_len as usize);
        redis::pipe()
            .atomic()
            .xadd_maxlen(&self.config.dead_letter_stream, maxlen, "*", &fields)
            .ignore()
            .xack(&self.config.stream, &self.config.group, &[&entry.id])
            .ignore()
            .query_async::<()>(&mut self.conn)
            .await
            .map_err(retry)
    }
}

/// Resolves once `stop` turns true. A dropped sender (an embedded server, which has no
/// drain) never stops the ingest.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    loop {
        if *stop.borrow_and_update() {
            return;
        }
        if stop.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

fn retry(e: redis::RedisError) -> Failure {
    Failure::Retry(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decided(refusal: Refusal) -> Result<String, String> {
        match Outcome::of(Err(refusal)) {
            Outcome::Ack => Err("acknowledged".into()),
            Outcome::Retry(reason) => Err(format!("retried: {reason}")),
            Outcome::DeadLetter(r) => Ok(r.detail()["code"].as_str().unwrap_or("").to_owned()),
        }
    }

    /// Only what may succeed later is retried (in order, holding the entries behind it);
    /// everything else is dead-lettered with the code the HTTP API would answer.
    #[test]
    fn unreachable_or_in_progress_is_retried_everything_else_is_dead_lettered() {
        assert!(matches!(Outcome::of(Ok(())), Outcome::Ack));
        for retried in [
            PublishError::ClusterUnavailable("down".into()),
            PublishError::IdempotencyInProgress,
        ] {
            assert!(decided(Refusal::Publish(retried)).is_err());
        }
        let field = || FieldError::new("data", "bad");
        for (refusal, code) in [
            (
                Refusal::Request(RequestError::MalformedJson("x".into())),
                "malformed_json",
            ),
            (
                Refusal::Request(RequestError::UnknownEventType("x".into())),
                "unknown_event_type",
            ),
            (
                Refusal::Request(RequestError::InvalidPayload(field())),
                "invalid_payload",
            ),
            (
                Refusal::Publish(PublishError::InvalidPayload(field())),
                "invalid_payload",
            ),
            (
                Refusal::Publish(PublishError::Encode("x".into())),
                "internal",
            ),
            (
                Refusal::Publish(PublishError::TooManyRooms(2)),
                "too_many_rooms",
            ),
        ] {
            assert_eq!(decided(refusal).as_deref(), Ok(code));
        }
    }
}
