//! `lock.release` `{resource, token}` → `{ok, resource}`: ends the socket's lock whose
//! fencing token is `token`; the room receives `lock.released {reason: "released"}`.
//! `not_holder` (the lock untouched) for a token that is not the lock's or another
//! socket's lock; `lock_lost` when the lock had expired.

use serde::Deserialize;
use serde_json::json;

use super::command::{Command, CommandCx, Reply};
use super::lock_acquire::{broadcaster, granted};
use super::reply::CommandError;
use crate::locks::{Owner, Reason};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LockRelease {
    resource: String,
    token: u64,
}

impl Command for LockRelease {
    const NAME: &str = "lock.release";
    const USAGE: &str = "expected {\"resource\": \"<room>/<name>\", \"token\": <fencing token>}";

    async fn run(self, cx: &CommandCx<'_>) -> Result<Reply, CommandError> {
        let resource = granted(cx, &self.resource)?;
        broadcaster(cx)?
            .release_lock(
                &resource,
                self.token,
                &Owner::Socket(cx.conn.id()),
                Reason::Released,
            )
            .await
            .map_err(CommandError::Lock)?;
        Ok(json!({"ok": true, "resource": resource}))
    }
}
