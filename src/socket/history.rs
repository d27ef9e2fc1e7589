//! `history` `{room, since_seq?, limit?}` → `{ok, room, epoch, seq, gap, events}`, for
//! sockets subscribed to the room.

use serde::Deserialize;
use serde_json::json;

use super::command::{Command, CommandCx, Reply};
use super::reply::CommandError;
use crate::history::default_page;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct History {
    room: String,
    #[serde(default)]
    since_seq: u64,
    #[serde(default = "default_page")]
    limit: usize,
}

impl Command for History {
    const NAME: &str = "history";
    const USAGE: &str = "expected {\"room\": \"<name>\", \"since_seq\"?: n, \"limit\"?: n}";

    async fn run(self, cx: &CommandCx<'_>) -> Result<Reply, CommandError> {
        let room = cx.subscribed(self.room)?;
        let page = cx
            .services
            .history
            .page(&cx.identity.tenant, &room, self.since_seq, self.limit)
            .await
            .map_err(|e| CommandError::Unavailable(e.0))?;
        let mut body = serde_json::to_value(&page).unwrap_or_default();
        body["ok"] = json!(true);
        Ok(body)
    }
}
