//! `unsubscribe` `{room}` or `{rooms: [...]}`: leaving a room one is not in is not an error;
//! leaving `global` or one's own `user:` room is `forbidden` (all-or-nothing), so no client
//! can stop the events sent to every socket or to its user.

use serde::Deserialize;
use serde_json::{Value, json};

use super::command::{Command, CommandCx, Reply};
use super::reply::CommandError;
use super::subscribe::RoomsRequest;
use crate::rooms::RoomName;

#[derive(Deserialize)]
#[serde(transparent)]
pub(super) struct Unsubscribe(RoomsRequest);

impl Command for Unsubscribe {
    const NAME: &str = "unsubscribe";
    const USAGE: &str = RoomsRequest::USAGE;

    fn decode(payload: Result<Value, String>) -> Result<Self, CommandError> {
        RoomsRequest::decode(payload).map(Self)
    }

    async fn run(self, cx: &CommandCx<'_>) -> Result<Reply, CommandError> {
        let rooms = self.0.parse()?;
        let identity = &cx.identity;
        let own = RoomName::User(identity.user_id.clone());
        if let Some(kept) = rooms.iter().find(|r| **r == RoomName::Global || **r == own) {
            return Err(CommandError::MustStay(kept.to_string()));
        }
        let current = cx.conn.rooms();
        let (held, scoped): (Vec<&RoomName>, Vec<_>) = rooms
            .iter()
            .map(|r| (r, r.scoped(&identity.tenant)))
            .filter(|(_, scoped)| current.contains(scoped))
            .unzip();
        cx.conn.leave(scoped);
        if let Some(share) = cx.conn.share() {
            cx.services.presence.left(&share, identity, held);
        }
        Ok(json!({"ok": true, "rooms": rooms}))
    }
}
