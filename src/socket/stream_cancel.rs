//! `stream.cancel` `{stream_id, reason?}` → `{ok, stream_id, length}`: ends an open stream as
//! `cancelled` for a socket in its room (with `streams.cancel = "requester"`, only the user
//! the stream was `requested_by`). The room receives `stream.cancelled {stream_id, by,
//! reason, length}`, the producer's next append is refused with `stream_cancelled` and its
//! `StreamWriter::cancelled()` resolves, on whichever node it writes from. The socket stays
//! connected: a cancel is not a disconnect.

use serde::Deserialize;
use serde_json::json;

use super::command::{Command, CommandCx, Reply};
use super::reply::CommandError;
use crate::config::CancelPolicy;
use crate::streams::{StreamError, StreamId};

/// The longest `reason` kept, in characters.
const MAX_REASON: usize = 500;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct StreamCancel {
    stream_id: String,
    #[serde(default)]
    reason: Option<String>,
}

impl Command for StreamCancel {
    const NAME: &str = "stream.cancel";
    const USAGE: &str = "expected {\"stream_id\": \"<id>\", \"reason\"?: \"<text>\"}";

    async fn run(self, cx: &CommandCx<'_>) -> Result<Reply, CommandError> {
        let id = StreamId::parse(&self.stream_id)
            .ok_or_else(|| CommandError::InvalidPayload(Self::USAGE.into()))?;
        if self
            .reason
            .as_ref()
            .is_some_and(|r| r.chars().count() > MAX_REASON)
        {
            return Err(CommandError::InvalidPayload(format!(
                "reason is at most {MAX_REASON} characters"
            )));
        }
        let tenant = &cx.identity.tenant;
        let info = cx
            .services
            .streams
            .info(tenant, &id)
            .await
            .map_err(CommandError::Stream)?;
        cx.subscribed(info.room.to_string())?;
        if cx.services.config.streams.cancel == CancelPolicy::Requester
            && info.requested_by.as_ref() != Some(&cx.identity.user_id)
        {
            return Err(CommandError::CancelNotAllowed);
        }
        let Some(broadcaster) = cx.services.broadcaster.get() else {
            return Err(CommandError::Stream(StreamError::Unavailable(
                "the server is starting".into(),
            )));
        };
        let cancelled = broadcaster
            .with_tenant(tenant.clone())
            .cancel_stream(&id, &cx.identity.user_id, self.reason)
            .await
            .map_err(CommandError::Stream)?;
        tracing::info!(
            sid = %cx.conn.id(),
            user_id = %cx.identity.user_id,
            %tenant,
            stream = %id,
            "stream cancelled by a viewer"
        );
        Ok(json!({"ok": true, "stream_id": id, "length": cancelled.length}))
    }
}
