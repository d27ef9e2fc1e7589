//! The cluster's task state, in Redis, shared by every node.
//!
//! One key per task, under the cluster's prefix `p`: `p:task:<tenant>/<project_id>/<task_id>`,
//! the JSON of its [`State`], expiring `tasks.idle_secs` after the task's last event.
//!
//! A change is a compare-and-set, so the arithmetic stays in one place ([`super::apply`])
//! for both backends: [`READ`] returns Redis's clock and the state, the node computes the
//! new state, and [`SWAP`] writes it only if the state is still the one it read. When
//! another node changed the task in between, the node reads again and recomputes: two
//! nodes receiving progress for the same task compute from the same history. The clock is
//! Redis's (`TIME`, read on the task key's own Redis node), never a node's.

use std::time::Duration;

use redis::Script;

use super::{Change, Outcome, State, TaskError, apply};
use crate::redis_conn::RedisConn;

/// KEYS: 1 the task. Returns `{seconds, microseconds, state}` (`''` for no state).
const READ: &str = r#"
local t = redis.call('TIME')
return {t[1], t[2], redis.call('GET', KEYS[1]) or ''}
"#;

/// KEYS: 1 the task. ARGV: 1 the state read (`''`: none), 2 the new state (`''`: drop it),
/// 3 its lifetime in ms. Returns 1 when written, 0 when the state changed since read.
const SWAP: &str = r#"
if (redis.call('GET', KEYS[1]) or '') ~= ARGV[1] then return 0 end
if ARGV[2] == '' then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
end
return 1
"#;

/// Reads and swaps before giving up: only nodes racing on one task retry, and each retry
/// means another node's change went through.
const ATTEMPTS: usize = 32;

pub struct RedisTasks {
    conn: RedisConn,
    prefix: String,
    read: Script,
    swap: Script,
}

fn unavailable(e: redis::RedisError) -> TaskError {
    TaskError(e.to_string())
}

impl RedisTasks {
    pub fn new(conn: RedisConn, prefix: &str) -> Self {
        Self {
            conn,
            prefix: prefix.to_owned(),
            read: Script::new(READ),
            swap: Script::new(SWAP),
        }
    }

    /// Applies `change` to the task `key` (see the module's doc).
    pub async fn update(
        &self,
        key: &str,
        change: Change,
        idle: Duration,
    ) -> Result<Outcome, TaskError> {
        let key = format!("{}:task:{key}", self.prefix);
        let mut conn = self.conn.clone();
        for _ in 0..ATTEMPTS {
            let (secs, micros, old): (u64, u64, String) = self
                .read
                .key(&key)
                .invoke_async(&mut conn)
                .await
                .map_err(unavailable)?;
            let now_ms = secs * 1000 + micros / 1000;
            // A state this version cannot read (another version's) is started over.
            let state = serde_json::from_str::<State>(&old).ok();
            let (state, outcome) = apply(change, state, now_ms);
            let new = match &state {
                Some(state) => {
                    serde_json::to_string(state).map_err(|e| TaskError(e.to_string()))?
                }
                None => String::new(),
            };
            let swapped: i64 = self
                .swap
                .key(&key)
                .arg(&old)
                .arg(new)
                .arg(idle.as_millis().max(1) as u64)
                .invoke_async(&mut conn)
                .await
                .map_err(unavailable)?;
            if swapped == 1 {
                return Ok(outcome);
            }
        }
        Err(TaskError(format!(
            "task {key} changed {ATTEMPTS} times while this node updated it"
        )))
    }
}
