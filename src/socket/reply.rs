//! Answers to client commands: through the ack when the client asked for one, otherwise,
//! for failures, as an `error` event. Error codes are written here once.

use std::convert::Infallible;
use std::sync::Arc;

use serde::Serialize;
use serde_json::json;
use socketioxide::adapter::Adapter;
use socketioxide::extract::{AckSender, Event, SocketRef};
use socketioxide::handler::FromMessageParts;
use socketioxide::socket::Socket;
use socketioxide_core::Value;

/// A client command that failed; the variants carry the documented codes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandError {
    InvalidPayload(String),
    InvalidRoom(String),
    Forbidden(String),
    TooManyRooms {
        room: String,
        limit: usize,
    },
    NotSubscribed(String),
    UnknownCommand(String),
    Unavailable(String),
    /// `auth.refresh` with a token that does not verify.
    Token(crate::auth::AuthError),
    /// `auth.refresh` with a token for another user or tenant.
    RefreshMismatch,
    /// The socket's event budget is spent; retry after this many milliseconds.
    RateLimited {
        retry_after_ms: u64,
    },
}

impl CommandError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidPayload(_) => "invalid_payload",
            Self::InvalidRoom(_) => "invalid_room",
            Self::Forbidden(_) => "forbidden",
            Self::TooManyRooms { .. } => "too_many_rooms",
            Self::NotSubscribed(_) => "not_subscribed",
            Self::UnknownCommand(_) => "unknown_command",
            Self::Unavailable(_) => "cluster_unavailable",
            Self::Token(e) => e.code(),
            Self::RefreshMismatch => "refresh_mismatch",
            Self::RateLimited { .. } => "rate_limited",
        }
    }

    fn message(&self) -> String {
        match self {
            Self::InvalidPayload(m) => m.clone(),
            Self::InvalidRoom(_) => {
                "rooms are global, user:<id>, project:<id> or agent:<id>; an id is 1 to 128 of [A-Za-z0-9_.-]"
                    .into()
            }
            Self::Forbidden(_) => "your token does not grant this room".into(),
            Self::TooManyRooms { limit, .. } => {
                format!("a socket may be in at most {limit} rooms")
            }
            Self::NotSubscribed(_) => "subscribe to the room first".into(),
            Self::UnknownCommand(name) => format!("unknown command {name:?}"),
            Self::Unavailable(reason) => format!("the cluster is unreachable: {reason}"),
            Self::Token(_) => "the new token does not verify".into(),
            Self::RefreshMismatch => {
                "the new token must be for the same user (sub) and tenant".into()
            }
            Self::RateLimited { .. } => {
                "too many events: this one was dropped (limits.events_per_sec)".into()
            }
        }
    }

    fn room(&self) -> Option<&str> {
        match self {
            Self::InvalidRoom(r)
            | Self::Forbidden(r)
            | Self::NotSubscribed(r)
            | Self::TooManyRooms { room: r, .. } => Some(r),
            _ => None,
        }
    }

    /// `{code, message, room?}`.
    pub fn body(&self) -> serde_json::Value {
        let mut body = json!({"code": self.code(), "message": self.message()});
        if let Some(room) = self.room() {
            body["room"] = room.into();
        }
        if let Self::RateLimited { retry_after_ms } = self {
            body["retry_after_ms"] = (*retry_after_ms).into();
        }
        body
    }
}

/// Replies to the command being handled. Extract it in a message handler.
pub struct Responder<A: Adapter> {
    socket: Arc<Socket<A>>,
    ack: AckSender<A>,
    wants_ack: bool,
}

impl<A: Adapter> FromMessageParts<A> for Responder<A> {
    type Error = Infallible;
    fn from_message_parts(
        s: &Arc<Socket<A>>,
        v: &mut Value,
        ack_id: &Option<i64>,
    ) -> Result<Self, Infallible> {
        Ok(Self {
            socket: s.clone(),
            ack: AckSender::from_message_parts(s, v, ack_id)?,
            wants_ack: ack_id.is_some(),
        })
    }
}

impl<A: Adapter> Responder<A> {
    pub fn ok<T: Serialize + ?Sized>(self, body: &T) {
        if let Err(e) = self.ack.send(body) {
            tracing::debug!(sid = %self.socket.id, "cannot send ack: {e}");
        }
    }

    pub fn result<T: Serialize>(self, result: Result<T, CommandError>) {
        match result {
            Ok(body) => self.ok(&body),
            Err(e) => self.fail(e),
        }
    }

    pub fn fail(self, error: CommandError) {
        let sent = if self.wants_ack {
            self.ack
                .send(&json!({"ok": false, "error": error.body()}))
                .map_err(|e| e.to_string())
        } else {
            self.socket
                .emit("error", &error.body())
                .map_err(|e| e.to_string())
        };
        if let Err(e) = sent {
            tracing::debug!(sid = %self.socket.id, "cannot send error: {e}");
        }
    }
}

pub async fn unknown_command<A: Adapter>(
    _s: SocketRef<A>,
    Event(name): Event,
    reply: Responder<A>,
) {
    reply.fail(CommandError::UnknownCommand(name));
}
