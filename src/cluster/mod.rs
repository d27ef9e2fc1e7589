//! Cluster mode: many nodes, one Redis. Delivery between nodes is socketioxide-redis
//! (over [`driver::ResilientDriver`]); cluster-wide state (nodes, presence) is kept in Redis
//! by per-node heartbeats with a TTL, so a node that dies stops counting within
//! `node_ttl_secs` and its users' presence ends.
//!
//! Keys, under `key_prefix` `p`: `p:node:<id>` (a node's heartbeat, expires after the TTL),
//! `p:nodes` (sorted set of node ids, to find the dead ones), `p:reap:<id>` (who cleans up
//! after a dead node), and the presence keys described in [`crate::presence::redis`].
//! Channels `p:revoke` and `p:revoked#<id>`: a revocation's hub connections on every node
//! ([`revoke`]).

pub mod driver;
pub mod revoke;

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use socketioxide_redis::{RedisAdapterConfig, RedisAdapterCtr};

use crate::config::{ClusterConfig, ClusterMode, HistoryConfig};
use crate::delivery::Census;
pub use crate::delivery::ClusterStatus;
use crate::events::Timestamp;
use crate::history::RedisHistory;
use crate::hooks_out::HookKind;
use crate::presence::RedisStore;
use crate::presence::{Announcer, Presence};
use crate::redis_conn::RedisConn;
use crate::rooms::{Id, RoomName};
use crate::streams::RedisStreams;
use driver::ResilientDriver;
use revoke::Revocations;

/// A presence entry's scoped room key and user field, parsed back.
fn parse_entry(key: &str, field: &str) -> Option<(Id, RoomName, Id)> {
    let (tenant, room) = RoomName::unscope(key)?;
    Some((
        Id::parse(tenant)?,
        RoomName::parse(room)?,
        Id::parse(field)?,
    ))
}

/// One node's heartbeat, as stored in Redis and shown in stats.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeInfo {
    pub node_id: String,
    pub connections: u64,
    pub users: u64,
    pub last_seen: String,
}

/// This node's handle on the cluster.
pub struct Cluster {
    driver: ResilientDriver,
    mode: ClusterMode,
    conn: RedisConn,
    prefix: String,
    node_id: String,
    ttl: Duration,
    request_timeout: Duration,
    revocations: Arc<Revocations>,
    pub status: Arc<ClusterStatus>,
    pub store: Arc<RedisStore>,
}

impl Cluster {
    pub fn new(config: &ClusterConfig, url: &str, node_id: &str) -> anyhow::Result<Self> {
        let driver = ResilientDriver::new(config.mode, url)?;
        let conn = driver.connection();
        let grace = Duration::from_secs(config.presence_grace_secs);
        // On a Redis Cluster every key shares one hash tag, so the multi-key scripts run on
        // one shard.
        let prefix = match config.mode {
            ClusterMode::Standalone => config.key_prefix.clone(),
            ClusterMode::Cluster => format!("{{{}}}", config.key_prefix),
        };
        let request_timeout = Duration::from_millis(config.request_timeout_ms);
        Ok(Self {
            store: Arc::new(RedisStore::new(conn.clone(), &prefix, node_id, grace)),
            revocations: Arc::new(Revocations::new(
                conn.clone(),
                &prefix,
                node_id,
                request_timeout,
            )),
            driver,
            mode: config.mode,
            conn,
            prefix,
            node_id: node_id.to_owned(),
            ttl: Duration::from_secs(config.node_ttl_secs),
            request_timeout,
            status: Arc::new(ClusterStatus::new(config.on_unavailable)),
        })
    }

    /// The socketioxide adapter state for this cluster.
    pub fn adapter(&self) -> RedisAdapterCtr<ResilientDriver> {
        let config = RedisAdapterConfig::new()
            .with_prefix(format!("{}-sio", self.prefix.trim_matches(['{', '}'])))
            .with_request_timeout(self.request_timeout);
        RedisAdapterCtr::new_with_driver(self.driver.clone(), config)
    }

    /// Hands this node's SSE connections the broadcasts other nodes send through the
    /// adapter (volatile events): every other event reaches them where it reaches sockets.
    pub fn tap_sse(&self, hub: Arc<crate::sse::SseHub>) {
        // The adapter's request channel of namespace `/` (socketioxide-redis:
        // `{prefix}-request#{namespace}#`); Roomcast broadcasts on `/` and `/ws` alike.
        let chan = format!("{}-sio-request#/#", self.prefix.trim_matches(['{', '}']));
        self.driver.tap_sse(chan, hub);
    }

    /// Answers the other nodes' revocations with `hub`'s connections (see [`revoke`]): the
    /// work of a worker, which runs until it is stopped.
    pub fn answer_revocations(
        &self,
        hub: Arc<crate::sse::SseHub>,
    ) -> impl Future<Output = ()> + Send + 'static {
        let messages = self.driver.listen(self.revocations.channels(), 1024);
        self.revocations.clone().run(hub, messages)
    }

    /// Closes the hub connections (SSE, `/ws/json`, lean sockets) in `rooms` on every other
    /// live node and returns how many they closed; a node that does not answer within
    /// `request_timeout_ms` is not counted. `Err` when Redis cannot be asked.
    pub async fn close_hub_elsewhere(
        &self,
        rooms: &[Cow<'static, str>],
    ) -> Result<u64, redis::RedisError> {
        let others: HashSet<String> = self
            .nodes()
            .await?
            .into_iter()
            .map(|node| node.node_id)
            .filter(|id| *id != self.node_id)
            .collect();
        self.revocations.close_elsewhere(others, rooms).await
    }

    /// A connection to the cluster's Redis and the prefix of every key, for the stores
    /// that keep their data there.
    pub fn redis(&self) -> (RedisConn, &str) {
        (self.conn.clone(), &self.prefix)
    }

    /// Room history shared by the cluster, in Redis streams.
    pub fn history(&self, config: HistoryConfig) -> RedisHistory {
        RedisHistory::new(
            self.conn.clone(),
            &self.prefix,
            &self.node_id,
            self.mode,
            config,
            self.status.clone(),
        )
    }

    /// Every node's numbered events in the order Redis numbered them, with this node's
    /// catch-up markers in between (see [`crate::history::redis`]).
    pub fn numbered_events(
        &self,
        history: &RedisHistory,
    ) -> socketioxide_redis::drivers::MessageStream<(String, Vec<u8>)> {
        // Deep enough for a burst while this node is busy; a message that does not fit is
        // dropped and counted like the adapter's.
        self.driver.listen(history.channels(), 65_536)
    }

    /// AI streams shared by the cluster, in Redis.
    pub fn streams(&self) -> RedisStreams {
        RedisStreams::new(self.conn.clone(), &self.prefix, self.mode)
    }

    /// Every node's stream deltas and cancels, in the order Redis ran their scripts (see
    /// [`crate::streams::redis`]).
    pub fn stream_messages(
        &self,
        streams: &RedisStreams,
    ) -> socketioxide_redis::drivers::MessageStream<(String, Vec<u8>)> {
        self.driver.listen(vec![streams.channel()], 65_536)
    }

    /// Yjs documents shared by the cluster, in Redis, the bus on which this node publishes
    /// the changes it applies, and every node's changes (see [`crate::documents`]).
    pub fn documents(
        &self,
    ) -> (
        crate::documents::RedisDocuments,
        crate::documents::RedisBus,
        socketioxide_redis::drivers::MessageStream<(String, Vec<u8>)>,
    ) {
        let store = crate::documents::RedisDocuments::new(self.conn.clone(), &self.prefix);
        let bus = crate::documents::RedisBus::new(
            self.conn.clone(),
            &self.prefix,
            self.mode,
            &self.node_id,
        );
        let messages = self.driver.listen(
            vec![crate::documents::RedisBus::channel(&self.prefix)],
            65_536,
        );
        (store, bus, messages)
    }

    pub fn dropped_messages(&self) -> u64 {
        self.driver.dropped()
    }

    /// Every node that has sent a heartbeat and was not reaped yet, dead or alive.
    async fn known_nodes(&self) -> Result<Vec<String>, redis::RedisError> {
        redis::cmd("ZRANGE")
            .arg(self.nodes_key())
            .arg(0)
            .arg(-1)
            .query_async(&mut self.conn.clone())
            .await
    }

    /// The live nodes, sorted by id.
    pub async fn nodes(&self) -> Result<Vec<NodeInfo>, redis::RedisError> {
        let mut conn = self.conn.clone();
        let ids = self.known_nodes().await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = ids.iter().map(|id| self.node_key(id)).collect();
        let beats: Vec<Option<String>> =
            redis::cmd("MGET").arg(keys).query_async(&mut conn).await?;
        let mut nodes: Vec<NodeInfo> = beats
            .into_iter()
            .flatten()
            .filter_map(|b| serde_json::from_str(&b).ok())
            .collect();
        nodes.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        Ok(nodes)
    }

    fn node_key(&self, id: &str) -> String {
        format!("{}:node:{id}", self.prefix)
    }

    fn nodes_key(&self) -> String {
        format!("{}:nodes", self.prefix)
    }

    /// Keeps this node's heartbeat, watches Redis, restores state after an outage and
    /// cleans up after dead nodes. Runs until its worker is stopped.
    pub async fn run(
        self: Arc<Self>,
        census: Arc<dyn Census>,
        presence: Presence,
        announcer: Announcer,
    ) {
        let period = (self.ttl / 3).clamp(Duration::from_millis(250), Duration::from_secs(2));
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = self.beat(&*census, &presence, &announcer).await {
                self.status.set_down(e.to_string());
            }
        }
    }

    async fn beat(
        &self,
        census: &dyn Census,
        presence: &Presence,
        announcer: &Announcer,
    ) -> Result<(), redis::RedisError> {
        let mut conn = self.conn.clone();
        let ping_cmd = redis::cmd("PING");
        let ping = ping_cmd.query_async::<String>(&mut conn);
        match tokio::time::timeout(Duration::from_secs(1), ping).await {
            Ok(result) => result?,
            Err(_) => {
                return Err(redis::RedisError::from((
                    redis::ErrorKind::Io,
                    "PING timed out",
                )));
            }
        };
        if !self.status.is_up() {
            // Back (or first contact): restore subscriptions and this node's presence,
            // which Redis may have lost or which changed while it was away.
            self.driver.resubscribe().await?;
            presence.resync();
            self.status.set_up();
            tracing::info!("redis reachable: cluster delivery on");
        }
        let (connections, users) = census.counts();
        let now = time::OffsetDateTime::now_utc();
        let info = NodeInfo {
            node_id: self.node_id.clone(),
            connections,
            users,
            last_seen: Timestamp(now).to_string(),
        };
        let ttl_ms = self.ttl.as_millis() as u64;
        redis::pipe()
            .cmd("SET")
            .arg(self.node_key(&self.node_id))
            .arg(serde_json::to_string(&info).unwrap_or_default())
            .arg("PX")
            .arg(ttl_ms)
            .ignore()
            .cmd("ZADD")
            .arg(self.nodes_key())
            .arg((now.unix_timestamp_nanos() / 1_000_000) as i64)
            .arg(&self.node_id)
            .ignore()
            .query_async::<()>(&mut conn)
            .await?;
        self.reap_dead(announcer).await
    }

    /// Finds nodes whose heartbeat expired and takes their presence out, once cluster-wide.
    async fn reap_dead(&self, announcer: &Announcer) -> Result<(), redis::RedisError> {
        let mut conn = self.conn.clone();
        for id in self.known_nodes().await? {
            let alive: bool = redis::cmd("EXISTS")
                .arg(self.node_key(&id))
                .query_async(&mut conn)
                .await?;
            if alive {
                continue;
            }
            let lock: Option<String> = redis::cmd("SET")
                .arg(format!("{}:reap:{id}", self.prefix))
                .arg(&self.node_id)
                .arg("NX")
                .arg("PX")
                .arg(30_000)
                .query_async(&mut conn)
                .await?;
            if lock.is_none() {
                continue;
            }
            tracing::warn!(node = id, "node heartbeat expired: removing its presence");
            let reaped = self
                .store
                .reap(&id, true)
                .await
                .map_err(|e| redis::RedisError::from((redis::ErrorKind::Io, "reap", e.0)))?;
            for (key, field, token) in reaped.leaving {
                let Some((tenant, room, user)) = parse_entry(&key, &field) else {
                    continue;
                };
                announcer.schedule_left(tenant, room, user, token).await;
            }
            // The dead node's sockets were the last in these rooms: reported once, here,
            // by the node that holds the reap lock.
            for (key, field) in reaped.vacated {
                if let Some((tenant, room, user)) = parse_entry(&key, &field) {
                    announcer.room_changed(HookKind::RoomVacated, &tenant, &room, &user);
                }
            }
            redis::cmd("ZREM")
                .arg(self.nodes_key())
                .arg(&id)
                .query_async::<()>(&mut conn)
                .await?;
        }
        Ok(())
    }

    /// Leaves the cluster at shutdown by dropping the heartbeat: the next live node's beat
    /// reaps this node's presence at once (announcing `presence.left` after the grace),
    /// instead of waiting for the TTL.
    pub async fn leave(&self) {
        let _ = redis::cmd("DEL")
            .arg(self.node_key(&self.node_id))
            .query_async::<()>(&mut self.conn.clone())
            .await;
    }
}
