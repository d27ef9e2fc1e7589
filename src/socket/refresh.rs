//! `auth.refresh` `{token}`: replaces a live socket's token with a newer one for the same
//! user and tenant, so it is not disconnected at the old token's expiry.
//! Rooms the new token no longer grants are left.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::json;

use super::command::{Command, CommandCx, Reply};
use super::reply::CommandError;
use crate::events::Timestamp;
use crate::rooms::RoomName;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Refresh {
    token: String,
}

impl Command for Refresh {
    const NAME: &str = "auth.refresh";
    const USAGE: &str = "expected {\"token\": \"<jwt>\"}";

    async fn run(self, cx: &CommandCx<'_>) -> Result<Reply, CommandError> {
        let old = &cx.identity;
        let new = cx
            .services
            .verifier
            .verify_or_refresh(&self.token)
            .await
            .map_err(CommandError::Token)?;
        if new.user_id != old.user_id || new.tenant != old.tenant {
            return Err(CommandError::RefreshMismatch);
        }
        // Rooms the new claims no longer allow are left now.
        let lost: Vec<RoomName> = cx
            .public_rooms()
            .into_iter()
            .filter(|r| !r.allows(&new))
            .collect();
        cx.conn.leave(
            lost.iter()
                .map(|r| r.scoped(&new.tenant))
                .collect::<Vec<_>>(),
        );
        if let Some(share) = cx.conn.share() {
            cx.services.presence.left(&share, old, &lost);
        }
        let at = Timestamp::from_unix_secs(new.expires_at);
        cx.conn.replace_identity(old, Arc::new(new));
        Ok(json!({"ok": true, "expires_at": at, "left_rooms": lost}))
    }
}
