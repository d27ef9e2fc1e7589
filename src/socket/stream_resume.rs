//! `stream.resume` `{stream_id, offset?}` → `{ok, stream_id, status, offset, length, text}`:
//! the stream's text from `offset` (code points, default 0) to now, for a socket in the
//! stream's room (`not_subscribed` otherwise). The ack is queued before this node hands the
//! socket any later delta (the stream's delivery lock is held until then), so the socket
//! misses nothing between the snapshot and the live deltas; a delta that starts before
//! the end of what the client has overlaps it, and the client drops that part.

use serde::Deserialize;
use serde_json::json;

use super::command::{Command, CommandCx, Reply};
use super::reply::CommandError;
use crate::streams::StreamId;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct StreamResume {
    stream_id: String,
    #[serde(default)]
    offset: u64,
}

impl Command for StreamResume {
    const NAME: &str = "stream.resume";
    const USAGE: &str = "expected {\"stream_id\": \"<id>\", \"offset\"?: <code points>}";

    async fn run(self, cx: &CommandCx<'_>) -> Result<Reply, CommandError> {
        let id = StreamId::parse(&self.stream_id)
            .ok_or_else(|| CommandError::InvalidPayload(Self::USAGE.into()))?;
        let (snapshot, order) = cx
            .services
            .streams
            .resume(&cx.identity.tenant, &id, self.offset)
            .await
            .map_err(CommandError::Stream)?;
        cx.subscribed(snapshot.info.room.to_string())?;
        cx.hold_until_answered(order);
        Ok(json!({
            "ok": true,
            "stream_id": id,
            "room": snapshot.info.room,
            "kind": snapshot.info.kind,
            "status": snapshot.info.status,
            "offset": snapshot.offset,
            "length": snapshot.info.length,
            "text": snapshot.text,
        }))
    }
}
