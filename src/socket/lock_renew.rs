//! `lock.renew` `{resource, token, ttl_ms?}` → `{ok, resource, token, expires_at}`: the
//! socket's lock now expires `ttl_ms` (default `locks.default_ttl_ms`) from now. Not
//! announced. `lock_lost` when the lock with this token has ended (acquire again),
//! `not_holder` for another socket's lock.

use serde::Deserialize;
use serde_json::json;

use super::command::{Command, CommandCx, Reply};
use super::lock_acquire::{broadcaster, granted, ttl};
use super::reply::CommandError;
use crate::locks::Owner;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LockRenew {
    resource: String,
    token: u64,
    #[serde(default)]
    ttl_ms: Option<u64>,
}

impl Command for LockRenew {
    const NAME: &str = "lock.renew";
    const USAGE: &str =
        "expected {\"resource\": \"<room>/<name>\", \"token\": <fencing token>, \"ttl_ms\"?: <ms>}";

    async fn run(self, cx: &CommandCx<'_>) -> Result<Reply, CommandError> {
        let resource = granted(cx, &self.resource)?;
        let ttl_ms = ttl(cx, self.ttl_ms)?;
        let expires_ms = broadcaster(cx)?
            .renew_lock(&resource, self.token, &Owner::Socket(cx.conn.id()), ttl_ms)
            .await
            .map_err(CommandError::Lock)?;
        Ok(json!({
            "ok": true,
            "resource": resource,
            "token": self.token,
            "expires_at": crate::locks::expires_at(expires_ms),
        }))
    }
}
