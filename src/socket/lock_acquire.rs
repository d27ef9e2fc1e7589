//! `lock.acquire` `{resource, ttl_ms?}` → `{ok, resource, token, expires_at}`: takes the
//! lock `<room>/<name>` for the socket if nobody holds it, for `ttl_ms` (default
//! `locks.default_ttl_ms`); `locked` with the `holder` and `expires_at` otherwise (a lock is
//! not reentrant: the socket's own lock is `locked` too; renew it instead). The socket needs
//! the room's grant (as for `subscribe`), not a subscription. The room receives
//! `lock.acquired`. The lock ends with `lock.release`, the socket's disconnect, or its TTL.

use serde::Deserialize;
use serde_json::json;

use super::command::{Command, CommandCx, Reply};
use super::reply::CommandError;
use crate::locks::{LockError, Owner, Reason, Resource};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LockAcquire {
    resource: String,
    #[serde(default)]
    ttl_ms: Option<u64>,
}

/// `resource` as a lock the socket's token grants: `invalid_resource`, or `forbidden` (with
/// the room) when the token does not grant the room.
pub(super) fn granted(cx: &CommandCx<'_>, resource: &str) -> Result<Resource, CommandError> {
    let parsed = Resource::parse(resource)
        .ok_or_else(|| CommandError::Lock(LockError::InvalidResource(resource.to_owned())))?;
    if !parsed.room.allows(&cx.identity) {
        return Err(CommandError::Forbidden(parsed.room.to_string()));
    }
    Ok(parsed)
}

/// `ttl_ms` within `[locks]`' bounds.
pub(super) fn ttl(cx: &CommandCx<'_>, asked: Option<u64>) -> Result<u64, CommandError> {
    cx.services
        .config
        .locks
        .ttl(asked)
        .map_err(CommandError::InvalidPayload)
}

/// The broadcaster of the socket's tenant.
pub(super) fn broadcaster(
    cx: &CommandCx<'_>,
) -> Result<crate::broadcaster::EventBroadcaster, CommandError> {
    match cx.services.broadcaster.get() {
        Some(b) => Ok(b.with_tenant(cx.identity.tenant.clone())),
        None => Err(CommandError::Lock(LockError::Unavailable(
            "the server is starting".into(),
        ))),
    }
}

impl Command for LockAcquire {
    const NAME: &str = "lock.acquire";
    const USAGE: &str = "expected {\"resource\": \"<room>/<name>\", \"ttl_ms\"?: <ms>}";

    async fn run(self, cx: &CommandCx<'_>) -> Result<Reply, CommandError> {
        let resource = granted(cx, &self.resource)?;
        let ttl_ms = ttl(cx, self.ttl_ms)?;
        let sid = cx.conn.id();
        let max = cx.services.config.locks.max_per_socket;
        if cx.services.locks.held_by(&sid) >= max {
            return Err(CommandError::Lock(LockError::TooMany(max)));
        }
        let broadcaster = broadcaster(cx)?;
        let owner = Owner::Socket(sid);
        let grant = broadcaster
            .acquire_lock(&resource, ttl_ms, Some(&cx.identity.user_id), &owner)
            .await
            .map_err(CommandError::Lock)?;
        if !cx.conn.connected() {
            // Gone while the lock was taken: its disconnect may have released the socket's
            // locks before this one was noted. Whichever release comes second finds it gone.
            let _ = broadcaster
                .release_lock(&resource, grant.token, &owner, Reason::Disconnected)
                .await;
        }
        Ok(json!({
            "ok": true,
            "resource": resource,
            "token": grant.token,
            "expires_at": crate::locks::expires_at(grant.expires_ms),
        }))
    }
}
