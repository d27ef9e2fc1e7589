//! Documents in Redis (cluster mode), shared by every node: `<prefix>:doc:{<key>}` (a hash:
//! `state`, the merged Yjs update, and `gen`, bumped by each compaction) and
//! `<prefix>:doc-log:{<key>}` (a list: the updates appended since). An append is one
//! `RPUSH`; a compaction reads state, `gen` and log in one script, merges them, and
//! writes the merge and trims the merged updates off the log in another script, only while
//! `gen` is unchanged: two nodes compacting at once lose no update (one of them gives up).
//!
//! [`RedisBus`]: the `<prefix>:documents` channel on which each node publishes the changes
//! it applied (`<event>\n<node>\n<key>\n<payload>`), for [`super::deliver_loop`].

use futures_util::future::BoxFuture;
use redis::Script;

use super::{DocError, DocId, DocumentStore, merge};
use crate::config::ClusterMode;
use crate::redis_conn::RedisConn;

/// KEYS: 1 hash, 2 log. Returns `{state, gen, log}` (`''` for what does not exist).
const READ: &str = r#"
local s = redis.call('HMGET', KEYS[1], 'state', 'gen')
return {s[1] or '', s[2] or '', redis.call('LRANGE', KEYS[2], 0, -1)}
"#;

/// KEYS: 1 hash, 2 log. ARGV: 1 the `gen` read, 2 merged state, 3 updates merged.
/// Returns 1, or 0 when another compaction came first.
const COMPACT: &str = r#"
if (redis.call('HGET', KEYS[1], 'gen') or '') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'state', ARGV[2])
redis.call('HINCRBY', KEYS[1], 'gen', 1)
redis.call('LTRIM', KEYS[2], tonumber(ARGV[3]), -1)
return 1
"#;

pub struct RedisDocuments {
    conn: RedisConn,
    prefix: String,
    read: Script,
    compact: Script,
}

fn unavailable(e: redis::RedisError) -> DocError {
    DocError::Unavailable(e.to_string())
}

impl RedisDocuments {
    pub fn new(conn: RedisConn, prefix: &str) -> Self {
        Self {
            conn,
            prefix: prefix.to_owned(),
            read: Script::new(READ),
            compact: Script::new(COMPACT),
        }
    }

    fn keys(&self, key: &str) -> [String; 2] {
        [
            format!("{}:doc:{{{key}}}", self.prefix),
            format!("{}:doc-log:{{{key}}}", self.prefix),
        ]
    }

    /// The merged state, the `gen` it was read at and how many log entries it merged.
    async fn read(&self, key: &str) -> Result<(Option<Vec<u8>>, String, usize), DocError> {
        let (state, generation, log): (Vec<u8>, String, Vec<Vec<u8>>) = self
            .read
            .key(Vec::from(self.keys(key)))
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        let mut parts: Vec<&[u8]> = Vec::with_capacity(log.len() + 1);
        if !state.is_empty() {
            parts.push(&state);
        }
        parts.extend(log.iter().map(Vec::as_slice));
        let merged = if parts.is_empty() {
            None
        } else {
            Some(merge(&parts)?)
        };
        Ok((merged, generation, log.len()))
    }
}

impl DocumentStore for RedisDocuments {
    fn load<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>, DocError>> {
        Box::pin(async move { Ok(self.read(key).await?.0) })
    }

    fn append<'a>(
        &'a self,
        key: &'a str,
        update: &'a [u8],
    ) -> BoxFuture<'a, Result<u64, DocError>> {
        Box::pin(async move {
            let [_, log] = self.keys(key);
            redis::cmd("RPUSH")
                .arg(log)
                .arg(update)
                .query_async(&mut self.conn.clone())
                .await
                .map_err(unavailable)
        })
    }

    fn compact<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), DocError>> {
        Box::pin(async move {
            let (merged, generation, count) = self.read(key).await?;
            let Some(merged) = merged.filter(|_| count > 0) else {
                return Ok(());
            };
            let _: i64 = self
                .compact
                .key(Vec::from(self.keys(key)))
                .arg(generation)
                .arg(merged)
                .arg(count)
                .invoke_async(&mut self.conn.clone())
                .await
                .map_err(unavailable)?;
            Ok(())
        })
    }
}

/// Publishes the changes a node applied to the other nodes.
pub struct RedisBus {
    conn: RedisConn,
    channel: String,
    publish_cmd: &'static str,
    node_id: String,
}

impl RedisBus {
    pub fn new(conn: RedisConn, prefix: &str, mode: ClusterMode, node_id: &str) -> Self {
        Self {
            conn,
            channel: Self::channel(prefix),
            publish_cmd: match mode {
                ClusterMode::Standalone => "PUBLISH",
                ClusterMode::Cluster => "SPUBLISH",
            },
            node_id: node_id.to_owned(),
        }
    }

    /// The channel [`super::deliver_loop`] reads.
    pub fn channel(prefix: &str) -> String {
        format!("{prefix}:documents")
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    pub(super) async fn publish(&self, event: &str, id: &DocId, payload: &[u8]) {
        let mut message = format!("{event}\n{}\n{}\n", self.node_id, id.key()).into_bytes();
        message.extend_from_slice(payload);
        let sent: Result<i64, _> = redis::cmd(self.publish_cmd)
            .arg(&self.channel)
            .arg(message)
            .query_async(&mut self.conn.clone())
            .await;
        if let Err(e) = sent {
            // The other nodes repair from the store when their editors sync again.
            tracing::debug!(doc = %id.key(), "cannot publish a document change: {e}");
        }
    }
}

/// `(event, node, key, payload)` of a published change.
pub(super) fn parse(message: &[u8]) -> Option<(&str, &str, &str, &[u8])> {
    let mut parts = message.splitn(4, |b| *b == b'\n');
    let event = std::str::from_utf8(parts.next()?).ok()?;
    let node = std::str::from_utf8(parts.next()?).ok()?;
    let key = std::str::from_utf8(parts.next()?).ok()?;
    Some((event, node, key, parts.next()?))
}
