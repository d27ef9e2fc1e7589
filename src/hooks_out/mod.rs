//! Outbound webhooks: backends hear what happens in rooms. (The inbound GitHub webhooks are
//! [`crate::github`] and `http::webhooks`; nothing here is shared with them.)
//!
//! Each `[[webhooks]]` entry ([`WebhookConfig`]) is a target with its own bounded queue and
//! one sender loop ([`Webhooks::senders`], started as `webhook_sender` workers). Producers
//! call [`Webhooks::notify`] with a [`HookEvent`]; it returns at once (a queue push), and
//! does nothing for targets that did not ask for the event's type or room kind.
//!
//! Who produces what, exactly once cluster-wide (on the node where it happens):
//! - `connection.opened` / `connection.closed`: the socket's connect and disconnect
//!   handlers (`socket`);
//! - `presence.joined` / `presence.left`: the presence worker (`presence`), on the store's
//!   atomic first-join / last-leave answer (a leave after the grace period, as the socket
//!   events);
//! - `room.occupied` / `room.vacated`: the same worker, when that same atomic step took the
//!   room's user count from 0 to 1 or from 1 to 0 (counted rooms: `project:` and `agent:`),
//!   and the cluster's reaping of a dead node when it empties a room;
//! - `client_event`: a client's non-volatile publish, built with [`HookEvent::client_event`]:
//!
//! ```no_run
//! # fn demo(hooks: &roomcast::hooks_out::Webhooks, who: &roomcast::auth::Identity) {
//! use roomcast::hooks_out::HookEvent;
//! let room = roomcast::rooms::RoomName::parse("project:42").unwrap();
//! let envelope = serde_json::json!({"type": "chat.message", "data": {"text": "hi"}});
//! hooks.notify(HookEvent::client_event(&who.tenant, &room, &who.user_id, "sid-1", envelope));
//! # }
//! ```
//!
//! Delivery: batches of up to `batch_max_events` events, sent when full or when the first
//! has waited `batch_max_ms`, signed and sent by [`crate::outbound::Outbound`]. A batch is
//! retried (exponential backoff with jitter, the same `X-Roomcast-Delivery` id each time)
//! until a 2xx or until it is `retry_max_age_secs` old (then dropped and counted); the next
//! batch waits for it, so events reach a receiver in the order they were produced on a node
//! (at least once). The queue lives in this node's memory: what is queued or being retried
//! when the node dies is lost (a drain gives it [`FLUSH_AT_SHUTDOWN`] to go out).

mod sender;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio::time::Instant;
use uuid::Uuid;

pub use crate::config::{HookKind, RoomKind, WebhookConfig};
use crate::events::Timestamp;
use crate::metrics::Counters;
use crate::outbound::Outbound;
use crate::rooms::{Id, RoomName, Tenant};

/// How long a drain waits for the queues to empty before the workers are stopped.
pub const FLUSH_AT_SHUTDOWN: Duration = Duration::from_secs(2);

/// One event as a receiver gets it, in the `events` array of a batch.
#[derive(Debug, Clone, Serialize)]
pub struct HookEvent {
    /// Unique per event (a UUIDv7): a receiver that got a batch twice can drop what it has.
    pub id: Uuid,
    #[serde(rename = "type", serialize_with = "kind_name")]
    pub kind: HookKind,
    pub tenant: Tenant,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub room: Option<RoomName>,
    pub timestamp: Timestamp,
    pub data: Value,
}

fn kind_name<S: serde::Serializer>(kind: &HookKind, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(kind.as_str())
}

impl HookEvent {
    pub fn new(kind: HookKind, tenant: &Tenant, room: Option<&RoomName>, data: Value) -> Self {
        Self {
            id: Uuid::now_v7(),
            kind,
            tenant: tenant.clone(),
            room: room.cloned(),
            timestamp: Timestamp::now(),
            data,
        }
    }

    /// `client_event`: a client published `event` (the envelope as the room's sockets got
    /// it) into `room`. `data` is `{user_id, sid, event}`.
    pub fn client_event(
        tenant: &Tenant,
        room: &RoomName,
        user: &Id,
        sid: &str,
        event: Value,
    ) -> Self {
        Self::new(
            HookKind::ClientEvent,
            tenant,
            Some(room),
            json!({"user_id": user, "sid": sid, "event": event}),
        )
    }

    /// `room.occupied` / `room.vacated`; `user` is the one whose join or leave it was.
    pub fn room(kind: HookKind, tenant: &Tenant, room: &RoomName, user: &Id) -> Self {
        Self::new(kind, tenant, Some(room), json!({"user_id": user}))
    }

    /// `presence.joined` / `presence.left`.
    pub fn presence(kind: HookKind, tenant: &Tenant, room: &RoomName, user: &Id) -> Self {
        Self::new(kind, tenant, Some(room), json!({"user_id": user}))
    }

    /// `connection.opened` / `connection.closed` (with `reason`) of socket `sid`.
    pub fn connection(
        tenant: &Tenant,
        user: &Id,
        sid: &str,
        namespace: &str,
        node_id: &str,
        closed: Option<&str>,
    ) -> Self {
        let mut data =
            json!({"user_id": user, "sid": sid, "namespace": namespace, "node_id": node_id});
        let kind = match closed {
            Some(reason) => {
                data["reason"] = json!(reason);
                HookKind::ConnectionClosed
            }
            None => HookKind::ConnectionOpened,
        };
        Self::new(kind, tenant, None, data)
    }
}

/// The handle producers notify; cheap to clone. With no `[[webhooks]]` it does nothing.
#[derive(Clone, Default)]
pub struct Webhooks {
    targets: Arc<[Arc<Target>]>,
}

struct Target {
    /// Its index in `[[webhooks]]`, the `webhook` label of its metrics.
    label: String,
    config: WebhookConfig,
    queue: Mutex<Queue>,
    /// Wakes the sender: an event arrived (or a flush began).
    wake: Notify,
    /// Wakes a flush: the queue and the batch in flight are empty.
    idle: Notify,
    counters: Arc<Counters>,
    flushing: AtomicBool,
}

#[derive(Default)]
struct Queue {
    events: VecDeque<(Instant, HookEvent)>,
    /// Events taken by the sender and not yet sent or dropped.
    in_flight: usize,
}

impl Webhooks {
    pub fn new(configs: &[WebhookConfig], counters: Arc<Counters>) -> Self {
        Self {
            targets: configs
                .iter()
                .enumerate()
                .map(|(at, config)| {
                    Arc::new(Target {
                        label: at.to_string(),
                        config: config.clone(),
                        queue: Mutex::default(),
                        wake: Notify::new(),
                        idle: Notify::new(),
                        counters: counters.clone(),
                        flushing: AtomicBool::new(false),
                    })
                })
                .collect(),
        }
    }

    /// Whether some target takes events of `kind` (to skip building one nobody wants).
    pub fn wants(&self, kind: HookKind) -> bool {
        self.targets.iter().any(|t| t.config.events.contains(&kind))
    }

    /// Queues `event` for every target that takes it. Never waits: a full queue drops its
    /// oldest event (counted) to make room.
    pub fn notify(&self, event: HookEvent) {
        for target in self.targets.iter().filter(|t| t.takes(&event)) {
            target.push(event.clone());
        }
    }

    /// One sender loop per target, to run as workers.
    pub fn senders(&self, outbound: &Outbound) -> Vec<BoxFuture<'static, ()>> {
        self.targets
            .iter()
            .map(|t| Box::pin(sender::run(t.clone(), outbound.clone())) as BoxFuture<'static, ()>)
            .collect()
    }

    /// Sends what is queued without waiting for batches to fill, and waits until every
    /// queue is empty or `within` has passed. For a drain: the workers are stopped next.
    pub async fn flush(&self, within: Duration) {
        let deadline = Instant::now() + within;
        for target in self.targets.iter() {
            target.flushing.store(true, Ordering::Relaxed);
            target.wake.notify_one();
        }
        for target in self.targets.iter() {
            loop {
                let idle = target.idle.notified();
                if target.pending() == 0 {
                    break;
                }
                if tokio::time::timeout_at(deadline, idle).await.is_err() {
                    tracing::warn!(
                        webhook = target.label,
                        events = target.pending(),
                        "webhook events not sent before shutdown"
                    );
                    break;
                }
            }
        }
    }
}

impl Target {
    fn takes(&self, event: &HookEvent) -> bool {
        if !self.config.events.contains(&event.kind) {
            return false;
        }
        match (&self.config.rooms, &event.room) {
            (Some(kinds), Some(room)) => kinds.contains(&room_kind(room)),
            _ => true,
        }
    }

    fn push(&self, event: HookEvent) {
        let dropped = {
            let Ok(mut queue) = self.queue.lock() else {
                return;
            };
            let mut dropped = 0;
            while queue.events.len() >= self.config.queue_max_events {
                queue.events.pop_front();
                dropped += 1;
            }
            queue.events.push_back((Instant::now(), event));
            dropped
        };
        if dropped > 0 {
            self.counters
                .webhook_dropped(&self.label, "queue_full", dropped);
        }
        self.wake.notify_one();
    }

    /// Queued plus in flight.
    fn pending(&self) -> usize {
        self.queue
            .lock()
            .map(|q| q.events.len() + q.in_flight)
            .unwrap_or(0)
    }
}

fn room_kind(room: &RoomName) -> RoomKind {
    match room {
        RoomName::Global => RoomKind::Global,
        RoomName::User(_) => RoomKind::User,
        RoomName::Project(_) => RoomKind::Project,
        RoomName::Agent(_) => RoomKind::Agent,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::extract::State;
    use axum::http::HeaderMap;
    use axum::routing::post;
    use tokio::sync::mpsc;

    fn config(url: String, events: Vec<HookKind>) -> WebhookConfig {
        WebhookConfig {
            url,
            secret: "0123456789abcdef".into(),
            events,
            batch_max_ms: 10,
            ..WebhookConfig::default()
        }
    }

    /// A real HTTP receiver on 127.0.0.1: every request's signature header and body.
    async fn receiver() -> (String, mpsc::UnboundedReceiver<(HeaderMap, bytes::Bytes)>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let app = axum::Router::new()
            .route(
                "/hook",
                post(
                    |State(tx): State<mpsc::UnboundedSender<(HeaderMap, bytes::Bytes)>>,
                     headers: HeaderMap,
                     body: bytes::Bytes| async move {
                        let _ = tx.send((headers, body));
                        "ok"
                    },
                ),
            )
            .with_state(tx);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url, rx)
    }

    #[tokio::test]
    async fn a_client_event_notification_is_delivered() {
        let (url, mut received) = receiver().await;
        let hooks = Webhooks::new(
            &[config(url, vec![HookKind::ClientEvent])],
            Arc::new(Counters::default()),
        );
        for sender in hooks.senders(&Outbound::new()) {
            tokio::spawn(sender);
        }
        let tenant = Id::parse("acme").unwrap();
        let room = RoomName::parse("project:42").unwrap();
        let user = Id::parse("u1").unwrap();
        // Not taken: the target did not ask for presence events.
        hooks.notify(HookEvent::presence(
            HookKind::PresenceJoined,
            &tenant,
            &room,
            &user,
        ));
        hooks.notify(HookEvent::client_event(
            &tenant,
            &room,
            &user,
            "sid-1",
            json!({"type": "chat.message", "data": {"text": "hi"}}),
        ));
        let (headers, body) = tokio::time::timeout(Duration::from_secs(5), received.recv())
            .await
            .expect("a delivery within 5 s")
            .unwrap();
        let signature = headers
            .get(crate::outbound::SIGNATURE)
            .and_then(|h| h.to_str().ok());
        assert!(crate::outbound::signature_valid(
            b"0123456789abcdef",
            &body,
            signature
        ));
        let body: Value = serde_json::from_slice(&body).unwrap();
        let events = body["events"].as_array().unwrap();
        assert_eq!(events.len(), 1, "{body}");
        assert_eq!(events[0]["type"], "client_event");
        assert_eq!(events[0]["tenant"], "acme");
        assert_eq!(events[0]["room"], "project:42");
        assert_eq!(events[0]["data"]["user_id"], "u1");
        assert_eq!(events[0]["data"]["event"]["data"]["text"], "hi");
    }
}
