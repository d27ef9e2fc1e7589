//! [`RedisStore`]: presence counts shared by every node, in Redis hashes.
//!
//! Keys (under the configured prefix `p`):
//! - `p:presence:<key>`: hash `field -> connections`, cluster-wide (`key` is a scoped room
//!   or `*users`);
//! - `p:node-presence:<node>`: hash `<key>\x1f<field> -> connections`, this node's share,
//!   so a dead node's share can be taken back out;
//! - `p:leaving:<key>\x1f<field>`: a pending `presence.left`, holding its token, expiring
//!   after the grace period has passed with room to spare (only a crashed node leaves one behind).
//!
//! Every change is one Lua script, so two nodes changing the same user never both see
//! "first join" or "last leave".

use std::time::Duration;

use futures_util::future::BoxFuture;
use redis::Script;

use super::{Changed, Occupancy, PresenceStore, StoreError, Transition};
use crate::redis_conn::RedisConn;

const SEP: char = '\x1f';

/// KEYS: presence hash, node hash, leaving marker.
/// ARGV: field, delta, node field, marker ttl ms, token, announce (1/0).
/// Returns the user's code (0 unchanged, 1 joined, 2 leaving, 3 rejoined) plus 4 when the
/// room's user count went from 0 to 1, or 8 when it went from 1 to 0 (announced changes
/// only): the room's transition is decided in the same atomic step as the user's.
const CHANGE: &str = r#"
local delta = tonumber(ARGV[2])
local n = redis.call('HINCRBY', KEYS[1], ARGV[1], delta)
local m = redis.call('HINCRBY', KEYS[2], ARGV[3], delta)
if m <= 0 then redis.call('HDEL', KEYS[2], ARGV[3]) end
if n <= 0 then
  redis.call('HDEL', KEYS[1], ARGV[1])
  if ARGV[6] == '1' then
    redis.call('SET', KEYS[3], ARGV[5], 'PX', ARGV[4])
    if n - delta > 0 and redis.call('EXISTS', KEYS[1]) == 0 then return 2 + 8 end
    return 2
  end
  return 0
end
if ARGV[6] == '1' and delta > 0 and n == delta then
  local room = 0
  if redis.call('HLEN', KEYS[1]) == 1 then room = 4 end
  if redis.call('DEL', KEYS[3]) == 1 then return 3 + room end
  return 1 + room
end
return 0
"#;

/// KEYS: presence hash, leaving marker. ARGV: field, token.
const CONFIRM_LEFT: &str = r#"
if redis.call('GET', KEYS[2]) ~= ARGV[2] then return 0 end
redis.call('DEL', KEYS[2])
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return 0 end
return 1
"#;

/// Takes a node's whole share back out. KEYS: node hash.
/// ARGV: presence key prefix, leaving key prefix, marker ttl ms, token, announce (1/0).
/// Returns two lists of `<key>\x1f<field>` entries: those whose count reached zero in
/// announced rooms, and (announcing) those whose leave emptied their room.
const REAP: &str = r#"
local entries = redis.call('HGETALL', KEYS[1])
local zeroed = {}
local vacated = {}
for i = 1, #entries, 2 do
  local sep = string.find(entries[i], '\31', 1, true)
  if sep then
    local key = string.sub(entries[i], 1, sep - 1)
    local field = string.sub(entries[i], sep + 1)
    local n = redis.call('HINCRBY', ARGV[1] .. key, field, -tonumber(entries[i + 1]))
    if n <= 0 then
      redis.call('HDEL', ARGV[1] .. key, field)
      if ARGV[5] == '1' and string.sub(key, 1, 1) ~= '*' then
        redis.call('SET', ARGV[2] .. entries[i], ARGV[4], 'PX', ARGV[3])
        table.insert(zeroed, entries[i])
        if n + tonumber(entries[i + 1]) > 0 and redis.call('EXISTS', ARGV[1] .. key) == 0 then
          table.insert(vacated, entries[i])
        end
      end
    end
  end
end
redis.call('DEL', KEYS[1])
return {zeroed, vacated}
"#;

pub struct RedisStore {
    conn: RedisConn,
    prefix: String,
    node_id: String,
    grace: Duration,
    change: Script,
    confirm_left: Script,
    reap: Script,
}

fn err(e: redis::RedisError) -> StoreError {
    StoreError(e.to_string())
}

impl RedisStore {
    pub fn new(conn: RedisConn, prefix: &str, node_id: &str, grace: Duration) -> Self {
        Self {
            conn,
            prefix: prefix.to_owned(),
            node_id: node_id.to_owned(),
            grace,
            change: Script::new(CHANGE),
            confirm_left: Script::new(CONFIRM_LEFT),
            reap: Script::new(REAP),
        }
    }

    fn presence_key(&self, key: &str) -> String {
        format!("{}:presence:{key}", self.prefix)
    }

    fn leaving_key(&self, key: &str, field: &str) -> String {
        format!("{}:leaving:{key}{SEP}{field}", self.prefix)
    }

    fn node_key(&self, node: &str) -> String {
        format!("{}:node-presence:{node}", self.prefix)
    }

    /// How long a pending leave is kept: past the grace period, when it is confirmed, with
    /// room to spare; the expiry only cleans up after a node that died meanwhile.
    fn marker_ms(&self) -> u64 {
        self.grace.as_millis() as u64 * 2 + 10_000
    }

    /// Takes `node`'s share out of every count. With `announce`, returns the users whose
    /// last connection that was (each now pending `presence.left`) and the rooms it emptied.
    pub async fn reap(&self, node: &str, announce: bool) -> Result<Reaped, StoreError> {
        let token = format!("reap:{node}");
        let (zeroed, vacated): (Vec<String>, Vec<String>) = self
            .reap
            .key(self.node_key(node))
            .arg(format!("{}:presence:", self.prefix))
            .arg(format!("{}:leaving:", self.prefix))
            .arg(self.marker_ms())
            .arg(&token)
            .arg(if announce { "1" } else { "0" })
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(err)?;
        let split = |e: &String| e.split_once(SEP).map(|(k, f)| (k.to_owned(), f.to_owned()));
        Ok(Reaped {
            leaving: zeroed
                .iter()
                .filter_map(split)
                .map(|(k, f)| (k, f, token.clone()))
                .collect(),
            vacated: vacated.iter().filter_map(split).collect(),
        })
    }
}

/// What reaping a node's presence changed cluster-wide.
#[derive(Debug, Default)]
pub struct Reaped {
    /// `(key, field, token)`: users whose last connection it was, pending `presence.left`.
    pub leaving: Vec<(String, String, String)>,
    /// `(key, field)`: rooms it emptied (`room.vacated`), with the last user reaped.
    pub vacated: Vec<(String, String)>,
}

impl PresenceStore for RedisStore {
    fn change<'a>(
        &'a self,
        key: &'a str,
        field: &'a str,
        delta: i64,
        announce: bool,
    ) -> BoxFuture<'a, Result<Changed, StoreError>> {
        Box::pin(async move {
            let token = format!("{}:{:016x}", self.node_id, rand::random::<u64>());
            let code: i64 = self
                .change
                .key(self.presence_key(key))
                .key(self.node_key(&self.node_id))
                .key(self.leaving_key(key, field))
                .arg(field)
                .arg(delta)
                .arg(format!("{key}{SEP}{field}"))
                .arg(self.marker_ms())
                .arg(&token)
                .arg(if announce { "1" } else { "0" })
                .invoke_async(&mut self.conn.clone())
                .await
                .map_err(err)?;
            let user = match code % 4 {
                1 => Transition::Joined,
                2 => Transition::Leaving(token),
                3 => Transition::Rejoined,
                _ => Transition::Unchanged,
            };
            let room = match code / 4 {
                1 => Occupancy::Occupied,
                2 => Occupancy::Vacated,
                _ => Occupancy::Unchanged,
            };
            Ok(Changed { user, room })
        })
    }

    fn confirm_left<'a>(
        &'a self,
        key: &'a str,
        field: &'a str,
        token: &'a str,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            let gone: i64 = self
                .confirm_left
                .key(self.presence_key(key))
                .key(self.leaving_key(key, field))
                .arg(field)
                .arg(token)
                .invoke_async(&mut self.conn.clone())
                .await
                .map_err(err)?;
            Ok(gone == 1)
        })
    }

    fn members<'a>(
        &'a self,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Vec<(String, u64)>, StoreError>> {
        Box::pin(async move {
            let all: Vec<(String, i64)> = redis::cmd("HGETALL")
                .arg(self.presence_key(key))
                .query_async(&mut self.conn.clone())
                .await
                .map_err(err)?;
            Ok(all
                .into_iter()
                .filter(|(_, n)| *n > 0)
                .map(|(f, n)| (f, n as u64))
                .collect())
        })
    }

    fn count<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(async move {
            redis::cmd("HLEN")
                .arg(self.presence_key(key))
                .query_async(&mut self.conn.clone())
                .await
                .map_err(err)
        })
    }

    fn resync(&self, entries: Vec<(String, String, i64)>) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            self.reap(&self.node_id, false).await?;
            for (key, field, n) in entries {
                self.change(&key, &field, n, false).await?;
            }
            Ok(())
        })
    }
}
