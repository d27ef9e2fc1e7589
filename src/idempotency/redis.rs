//! The cluster's store: idempotency keys in Redis, shared by every node (`SET NX`).

use std::time::Duration;

use futures_util::future::BoxFuture;

use super::{Claim, IdempotencyError, IdempotencyStore};
use crate::redis_conn::RedisConn;

/// Idempotency keys shared by every node: `p:idem:<key>` holds `pending` while the first
/// request publishes, then its answer, for the window.
pub struct RedisIdempotency {
    conn: RedisConn,
    prefix: String,
    window_ms: u64,
}

impl RedisIdempotency {
    pub fn new(conn: RedisConn, prefix: &str, window: Duration) -> Self {
        Self {
            conn,
            prefix: prefix.to_owned(),
            window_ms: window.as_millis().max(1) as u64,
        }
    }

    fn key(&self, key: &str) -> String {
        format!("{}:idem:{key}", self.prefix)
    }
}

const PENDING: &str = "\u{0}pending";

fn idem_err(e: redis::RedisError) -> IdempotencyError {
    IdempotencyError(e.to_string())
}

impl IdempotencyStore for RedisIdempotency {
    fn claim<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Claim, IdempotencyError>> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            let set: Option<String> = redis::cmd("SET")
                .arg(self.key(key))
                .arg(PENDING)
                .arg("NX")
                .arg("PX")
                .arg(self.window_ms)
                .query_async(&mut conn)
                .await
                .map_err(idem_err)?;
            if set.is_some() {
                return Ok(Claim::New);
            }
            let current: Option<String> = redis::cmd("GET")
                .arg(self.key(key))
                .query_async(&mut conn)
                .await
                .map_err(idem_err)?;
            Ok(match current {
                Some(answer) if answer != PENDING => Claim::Done(answer),
                _ => Claim::Pending,
            })
        })
    }

    fn finish<'a>(
        &'a self,
        key: &'a str,
        answer: &'a str,
    ) -> BoxFuture<'a, Result<(), IdempotencyError>> {
        Box::pin(async move {
            redis::cmd("SET")
                .arg(self.key(key))
                .arg(answer)
                .arg("PX")
                .arg(self.window_ms)
                .query_async::<()>(&mut self.conn.clone())
                .await
                .map_err(idem_err)
        })
    }

    fn abandon<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), IdempotencyError>> {
        Box::pin(async move {
            redis::cmd("DEL")
                .arg(self.key(key))
                .query_async::<()>(&mut self.conn.clone())
                .await
                .map_err(idem_err)
        })
    }
}
