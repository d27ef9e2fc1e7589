//! `publish` `{room, event, data, volatile?, echo?}` → `{ok, id, seq?}`: a client event into
//! a room the socket is in, through the same publish path as the server's events
//! (numbered, kept and recovered unless `volatile`). The envelope's `from` says who sent
//! it; the sender receives it too only with `echo`.
//!
//! Checked on every publish, in this order: the room kind (`[client_events] rooms`), the
//! token's `publish` claim and the room's access check (`forbidden`), the subscription
//! (`not_subscribed`), the event name (`event_not_allowed`: custom-name rules, reserved
//! names, `[client_events] events`), the size of `data` (`payload_too_large`) and its
//! schema (`invalid_payload` with `field`). The event budget was spent before. A numbered
//! (not volatile) client event is also handed to the `client_event` outbound webhooks.

use serde::Deserialize;
use serde_json::{Value, json};

use super::command::{Command, CommandCx, Reply};
use super::reply::CommandError;
use crate::broadcaster::PublishError;
use crate::events::{EventName, Origin, Sender};
use crate::hooks_out::HookEvent;
use crate::rooms::RoomName;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Publish {
    room: String,
    event: String,
    #[serde(default)]
    data: Value,
    #[serde(default)]
    volatile: bool,
    #[serde(default)]
    echo: bool,
}

impl Command for Publish {
    const NAME: &str = "publish";
    const USAGE: &str = "expected {\"room\": \"<name>\", \"event\": \"<name>\", \"data\": ..., \"volatile\"?: bool, \"echo\"?: bool}";

    async fn run(self, cx: &CommandCx<'_>) -> Result<Reply, CommandError> {
        let settings = &cx.services.config.client_events;
        let room = RoomName::parse(&self.room).ok_or(CommandError::InvalidRoom(self.room))?;
        let forbidden = |reason| CommandError::PublishForbidden {
            room: room.to_string(),
            reason,
        };
        if !settings.allows_room_kind(room.kind()) {
            return Err(forbidden("client_events.rooms"));
        }
        if let Some(claim) = &cx.identity.publish
            && !claim.allows(&room)
        {
            return Err(forbidden("the token's publish claim"));
        }
        if !room.allows(&cx.identity) {
            return Err(CommandError::Forbidden(room.to_string()));
        }
        let room = cx.subscribed(room.to_string())?;
        let name = EventName::parse(&self.event)
            .map_err(|why| CommandError::EventNotAllowed(format!("{:?}: {why}", self.event)))?;
        if !settings.allows_event(name.as_str()) {
            return Err(CommandError::EventNotAllowed(format!(
                "{:?} is not in client_events.events",
                self.event
            )));
        }
        let size = serde_json::to_vec(&self.data).map_or(usize::MAX, |b| b.len());
        if size > settings.max_bytes {
            return Err(CommandError::PayloadTooLarge {
                size,
                max: settings.max_bytes,
            });
        }
        cx.services
            .client_schemas
            .check(name.as_str(), &self.data)
            .map_err(|m| CommandError::SchemaMismatch {
                event: name.as_str().to_owned(),
                field: m.field,
                message: m.message,
            })?;

        let Some(broadcaster) = cx.services.broadcaster.get() else {
            return Err(CommandError::Unavailable("the server is starting".into()));
        };
        let origin = Origin {
            from: Sender {
                user_id: cx.identity.user_id.to_string(),
                sid: cx.conn.id(),
            },
            echo: self.echo,
        };
        let broadcaster = broadcaster
            .with_tenant(cx.identity.tenant.clone())
            .from_client(origin);
        let broadcaster = if self.volatile {
            broadcaster.volatile()
        } else {
            broadcaster
        };
        let published = broadcaster
            .publish_custom(&name, vec![room], &self.data)
            .await
            .map_err(|e| match e {
                PublishError::ClusterUnavailable(reason) => CommandError::Unavailable(reason),
                other => CommandError::InvalidPayload(other.to_string()),
            })?;
        if let Some(seq) = published.seq {
            // Backends that persist what clients said hear of every numbered client event.
            let event = json!({
                "id": published.id,
                "type": name.as_str(),
                "room": published.room,
                "seq": seq,
                "from": {"user_id": cx.identity.user_id, "sid": cx.conn.id()},
                "data": self.data,
            });
            cx.services.hooks.notify(HookEvent::client_event(
                &cx.identity.tenant,
                &published.room,
                &cx.identity.user_id,
                &cx.conn.id(),
                event,
            ));
        }
        let mut ack = json!({"ok": true, "id": published.id});
        if let Some(seq) = published.seq {
            ack["seq"] = seq.into();
        }
        Ok(ack)
    }
}
