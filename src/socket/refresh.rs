//! `auth.refresh` `{token}`: replaces a live socket's token with a newer one for the same
//! user and tenant, so it is not disconnected at the old token's expiry.
//! Rooms the new token no longer grants are left.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Value, json};
use socketioxide::adapter::Adapter;
use socketioxide::extract::{SocketRef, State, TryData};

use super::reply::{CommandError, Responder};
use super::{SocketCtx, identity_of, public_rooms, share_of};
use crate::events::Timestamp;
use crate::rooms::RoomName;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RefreshRequest {
    token: String,
}

pub async fn handle<A: Adapter>(
    s: SocketRef<A>,
    State(ctx): State<SocketCtx>,
    TryData(payload): TryData<Value>,
    reply: Responder<A>,
) {
    reply.result(refresh(&s, &ctx, payload.ok()).await);
}

async fn refresh<A: Adapter>(
    s: &SocketRef<A>,
    ctx: &SocketCtx,
    payload: Option<Value>,
) -> Result<Value, CommandError> {
    let request: RefreshRequest = payload
        .and_then(|p| serde_json::from_value(p).ok())
        .ok_or_else(|| CommandError::InvalidPayload("expected {\"token\": \"<jwt>\"}".into()))?;
    let old = identity_of(s).ok_or(CommandError::RefreshMismatch)?;
    let new = ctx
        .verifier
        .verify_or_refresh(&request.token)
        .await
        .map_err(CommandError::Token)?;
    if new.user_id != old.user_id || new.tenant != old.tenant {
        return Err(CommandError::RefreshMismatch);
    }
    // Rooms the new claims no longer allow are left now.
    let lost: Vec<RoomName> = public_rooms(s)
        .into_iter()
        .filter(|r| !r.allows(&new))
        .collect();
    s.leave(
        lost.iter()
            .map(|r| r.scoped(&new.tenant))
            .collect::<Vec<_>>(),
    );
    if let Some(share) = share_of(s) {
        ctx.presence.left(&share, &old, &lost);
    }
    let expires_at = new.expires_at;
    s.extensions.insert(Arc::new(new));
    ctx.lifetimes.unwatch(s.ns(), s.id, old.expires_at);
    ctx.lifetimes.watch(s.ns(), s.id, expires_at);
    let at = Timestamp::from_unix_secs(expires_at);
    Ok(json!({"ok": true, "expires_at": at, "left_rooms": lost}))
}
