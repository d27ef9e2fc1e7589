//! A socketioxide-redis [`Driver`] that survives Redis going away.
//!
//! The stock driver holds one multiplexed connection: if Redis is down at start the node
//! cannot start, and after a Redis restart its subscriptions are gone for good. This one
//! runs on a [`RedisConn`] (lazy connect, reconnect with backoff; standalone or Redis
//! Cluster) and remembers every channel it was asked for, so
//! [`ResilientDriver::resubscribe`] can restore them once Redis answers again. Messages the
//! adapter could not take (its buffer full) are counted.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use std::borrow::Cow;

use redis::{FromRedisValue, PushInfo, PushKind};
use serde_json::value::RawValue;
use socketioxide_core::Value;
use socketioxide_core::adapter::remote_packet::{RequestIn, RequestTypeIn};
use socketioxide_core::packet::PacketData;
use socketioxide_redis::drivers::{ChanItem, Driver, MessageStream};
use tokio::sync::mpsc;

use crate::config::ClusterMode;
use crate::redis_conn::RedisConn;
use crate::sse::SseHub;

type Handlers = RwLock<HashMap<String, mpsc::Sender<ChanItem>>>;

/// The adapter's broadcast channel of namespace `/`, and this node's SSE connections, which
/// are handed every broadcast on it (see [`sse_broadcast`]).
type Tap = RwLock<Option<(String, Arc<SseHub>)>>;

#[derive(Clone)]
pub struct ResilientDriver {
    conn: RedisConn,
    handlers: Arc<Handlers>,
    dropped: Arc<AtomicU64>,
    tap: Arc<Tap>,
}

#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct DriverError(#[from] redis::RedisError);

impl ResilientDriver {
    /// Creates the driver without connecting: a node starts whether Redis is up or not.
    pub fn new(mode: ClusterMode, urls: &str) -> redis::RedisResult<Self> {
        let handlers: Arc<Handlers> = Arc::default();
        let dropped = Arc::new(AtomicU64::new(0));
        let tap: Arc<Tap> = Arc::default();
        let (h, d, t) = (handlers.clone(), dropped.clone(), tap.clone());
        let conn = RedisConn::open(mode, urls, move |msg| route(msg, &h, &d, &t))?;
        Ok(Self {
            conn,
            handlers,
            dropped,
            tap,
        })
    }

    /// Hands `hub` every broadcast the adapter receives on `chan` (its namespace `/`
    /// request channel): volatile events published at other nodes reach this node's
    /// sockets that way, not through Roomcast's own channels.
    pub fn tap_sse(&self, chan: String, hub: Arc<SseHub>) {
        if let Ok(mut tap) = self.tap.write() {
            *tap = Some((chan, hub));
        }
    }

    /// A connection for Roomcast's own commands (shares the multiplexed connection).
    pub fn connection(&self) -> RedisConn {
        self.conn.clone()
    }

    /// Pub/sub messages dropped because the adapter's buffer was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Subscribes to `chans` and returns their messages in one stream, in the order Redis
    /// sent them. Never waits on Redis: the SUBSCRIBE goes out in the background, and a
    /// channel it misses while Redis is away is subscribed by [`Self::resubscribe`] once
    /// Redis is back (the node reports ready only after that). So a namespace initialises
    /// at once and the node serves its own sockets even when it starts during an outage.
    pub fn listen(&self, chans: Vec<String>, size: usize) -> MessageStream<ChanItem> {
        let (tx, rx) = mpsc::channel(size);
        if let Ok(mut h) = self.handlers.write() {
            for chan in &chans {
                h.insert(chan.clone(), tx.clone());
            }
        }
        let mut conn = self.conn.clone();
        tokio::spawn(async move {
            if let Err(e) = conn.subscribe(chans).await {
                tracing::debug!("redis subscribe deferred: {e}");
            }
        });
        MessageStream::new(rx)
    }

    /// Subscribes again to every channel the adapter asked for.
    pub async fn resubscribe(&self) -> redis::RedisResult<()> {
        let channels: Vec<String> = self
            .handlers
            .read()
            .map(|h| h.keys().cloned().collect())
            .unwrap_or_default();
        if !channels.is_empty() {
            self.conn.clone().subscribe(channels).await?;
        }
        Ok(())
    }
}

/// Hands a pushed message to the adapter stream that subscribed to its channel (and a
/// broadcast to the SSE connections, see [`ResilientDriver::tap_sse`]).
fn route(msg: PushInfo, handlers: &Handlers, dropped: &AtomicU64, tap: &Tap) {
    if !matches!(msg.kind, PushKind::Message | PushKind::SMessage) || msg.data.len() < 2 {
        return;
    }
    let mut data = msg.data.into_iter();
    let (Some(chan), Some(payload)) = (data.next(), data.next()) else {
        return;
    };
    let (Ok(chan), Ok(payload)) = (
        String::from_redis_value(chan),
        Vec::<u8>::from_redis_value(payload),
    ) else {
        tracing::warn!("unreadable pub/sub message from redis");
        return;
    };
    if let Ok(tap) = tap.read()
        && let Some((tapped, hub)) = tap.as_ref()
        && *tapped == chan
        && hub.connections() + hub.json_connections() + hub.lean_sockets() > 0
        && let Some(b) = sse_broadcast(&payload)
    {
        hub.deliver(&b.rooms, &b.event, &b.payload, &b.except);
    }
    let Ok(handlers) = handlers.read() else {
        return;
    };
    if let Some(tx) = handlers.get(&chan)
        && tx.try_send((chan, payload)).is_err()
    {
        let n = dropped.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::warn!(dropped = n, "cluster pub/sub buffer full: message dropped");
    }
}

/// A broadcast of the socketioxide-redis adapter, as this node's SSE connections take it.
/// (Its disconnect requests are not for them: a revocation closes them through
/// [`super::revoke`], which counts what it closes.)
struct SseBroadcast {
    rooms: Vec<Cow<'static, str>>,
    event: String,
    payload: Box<RawValue>,
    /// The `except` rooms (a `/ws/json` sender's session id).
    except: Vec<Cow<'static, str>>,
}

/// Reads a broadcast request of the socketioxide-redis adapter (`RequestIn`, msgpack; the
/// packet value as the JSON or the msgpack parser encoded `[event, payload]`); `None` for
/// any other request. Tests in `tests/sse.rs` (a volatile event crossing nodes) fail should
/// the format change.
fn sse_broadcast(bytes: &[u8]) -> Option<SseBroadcast> {
    let request: RequestIn = rmp_serde::from_slice(bytes).ok()?;
    let opts = request.opts?;
    let RequestTypeIn::Broadcast(packet) = request.r#type else {
        return None;
    };
    let PacketData::Event(value, _) = packet.inner else {
        return None;
    };
    let (event, payload) = match value {
        Value::Str(text, _) => serde_json::from_str::<(String, Box<RawValue>)>(&text).ok()?,
        Value::Bytes(bytes) => {
            let (event, payload) =
                rmp_serde::from_slice::<(String, serde_json::Value)>(&bytes).ok()?;
            (event, serde_json::value::to_raw_value(&payload).ok()?)
        }
    };
    Some(SseBroadcast {
        rooms: opts.rooms.into_iter().collect(),
        event,
        payload,
        except: opts.except.into_iter().collect(),
    })
}

impl Driver for ResilientDriver {
    type Error = DriverError;

    async fn publish(&self, chan: String, val: Vec<u8>) -> Result<(), DriverError> {
        Ok(self.conn.clone().publish(chan, val).await?)
    }

    async fn subscribe(
        &self,
        chan: String,
        size: usize,
    ) -> Result<MessageStream<ChanItem>, DriverError> {
        Ok(self.listen(vec![chan], size))
    }

    async fn unsubscribe(&self, chan: String) -> Result<(), DriverError> {
        if let Ok(mut h) = self.handlers.write() {
            h.remove(&chan);
        }
        Ok(self.conn.clone().unsubscribe(chan).await?)
    }

    async fn num_serv(&self, chan: &str) -> Result<u16, DriverError> {
        Ok(self.conn.clone().subscribers(chan).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use socketioxide_core::Uid;
    use socketioxide_core::adapter::BroadcastOptions;
    use socketioxide_core::adapter::remote_packet::{RequestOut, RequestTypeOut};
    use socketioxide_core::packet::Packet;

    fn options(rooms: &[&'static str]) -> BroadcastOptions {
        let mut opts = BroadcastOptions::default();
        opts.rooms.extend(rooms.iter().map(|r| Cow::Borrowed(*r)));
        opts
    }

    /// A broadcast as the adapter sends it, its value encoded as either parser does:
    /// `["event", payload]` in JSON text, or the same array in msgpack.
    #[test]
    fn broadcasts_are_read_for_the_sse_connections_and_nothing_else() {
        let envelope = serde_json::json!({"type": "cursor", "room": "project:1", "data": {"x": 1}});
        let json = Value::Str(format!("[\"cursor\",{envelope}]").into(), None);
        let msgpack = Value::Bytes(rmp_serde::to_vec(&("cursor", &envelope)).unwrap().into());
        let opts = options(&["default/project:1", "default/global"]);
        for value in [json, msgpack] {
            let packet = Packet::event("/", value);
            let request = RequestOut::new(Uid::new(), RequestTypeOut::Broadcast(&packet), &opts);
            let bytes = rmp_serde::to_vec(&request).unwrap();
            let Some(b) = sse_broadcast(&bytes) else {
                panic!("not read as a broadcast");
            };
            assert_eq!(b.rooms, ["default/project:1", "default/global"]);
            assert_eq!(b.event, "cursor");
            let payload: serde_json::Value = serde_json::from_str(b.payload.get()).unwrap();
            assert_eq!(payload, envelope);
        }
        // A revocation's hub connections are closed (and counted) by `revoke`, not here.
        let opts = options(&["#default/alice"]);
        for request in [
            RequestTypeOut::DisconnectSockets,
            RequestTypeOut::FetchSockets,
        ] {
            let request = RequestOut::new(Uid::new(), request, &opts);
            assert!(sse_broadcast(&rmp_serde::to_vec(&request).unwrap()).is_none());
        }
        assert!(sse_broadcast(b"not msgpack").is_none());
    }
}
