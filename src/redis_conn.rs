//! [`RedisConn`]: one handle over a standalone Redis (`ConnectionManager`) or a Redis
//! Cluster (`ClusterConnection`). Both connect in the background and reconnect by
//! themselves; Roomcast's commands and scripts run on either through `ConnectionLike`.
//! Pub/sub is sharded (`SSUBSCRIBE`/`SPUBLISH`) on a Redis Cluster.

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{AsyncCommands, Cmd, Pipeline, PushInfo, RedisFuture, RedisResult, Value};

use crate::config::ClusterMode;

#[derive(Clone)]
pub enum RedisConn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

impl RedisConn {
    /// Opens a connection without waiting for Redis; pushed pub/sub messages go to `push`.
    /// `urls` is one URL, or for a Redis Cluster any of its nodes, comma-separated.
    pub fn open(
        mode: ClusterMode,
        urls: &str,
        push: impl Fn(PushInfo) + Send + Sync + 'static,
    ) -> RedisResult<Self> {
        let push = move |msg: PushInfo| {
            push(msg);
            Ok::<(), std::convert::Infallible>(())
        };
        match mode {
            ClusterMode::Standalone => {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    .set_response_timeout(Some(RESPONSE_TIMEOUT))
                    .set_max_delay(Duration::from_secs(1))
                    .set_push_sender(push)
                    .set_automatic_resubscription();
                let client = redis::Client::open(with_resp3(urls.trim()))?;
                Ok(Self::Single(ConnectionManager::new_lazy_with_config(
                    client, config,
                )?))
            }
            ClusterMode::Cluster => {
                let nodes: Vec<String> = urls.split(',').map(|u| with_resp3(u.trim())).collect();
                let config = redis::cluster::ClusterConfig::new()
                    .set_connection_timeout(CONNECT_TIMEOUT)
                    .set_response_timeout(RESPONSE_TIMEOUT)
                    .set_push_sender(push);
                let client = ClusterClient::builder(nodes)
                    .use_protocol(redis::ProtocolVersion::RESP3)
                    .build()?;
                Ok(Self::Cluster(
                    client.get_pending_async_connection_with_config(config),
                ))
            }
        }
    }

    pub async fn subscribe(&mut self, channels: Vec<String>) -> RedisResult<()> {
        match self {
            Self::Single(c) => c.subscribe(channels).await,
            // Sharded channels live on different shards: one SSUBSCRIBE each.
            Self::Cluster(c) => {
                for channel in channels {
                    c.ssubscribe(channel).await?;
                }
                Ok(())
            }
        }
    }

    pub async fn unsubscribe(&mut self, channel: String) -> RedisResult<()> {
        match self {
            Self::Single(c) => c.unsubscribe(channel).await,
            Self::Cluster(c) => c.sunsubscribe(channel).await,
        }
    }

    pub async fn publish(&mut self, channel: String, payload: Vec<u8>) -> RedisResult<()> {
        match self {
            Self::Single(c) => c.publish::<_, _, Value>(channel, payload).await.map(drop),
            Self::Cluster(c) => c.spublish::<_, _, Value>(channel, payload).await.map(drop),
        }
    }

    /// How many subscribers (nodes) a channel has.
    pub async fn subscribers(&mut self, channel: &str) -> RedisResult<u16> {
        let command = match self {
            Self::Single(_) => "NUMSUB",
            Self::Cluster(_) => "SHARDNUMSUB",
        };
        let (_, count): (String, u16) = redis::cmd("PUBSUB")
            .arg(command)
            .arg(channel)
            .query_async(self)
            .await?;
        Ok(count)
    }
}

/// socketioxide-redis receives pub/sub messages as RESP3 pushes.
fn with_resp3(url: &str) -> String {
    if url.contains("protocol=") {
        url.to_owned()
    } else if url.contains('?') {
        format!("{url}&protocol=resp3")
    } else {
        format!("{url}?protocol=resp3")
    }
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}
