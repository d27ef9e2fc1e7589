//! Answers to client commands: through the ack when the client asked for one, otherwise,
//! for failures, as an `error` event. The codes and messages are [`crate::errors`]'.

use std::convert::Infallible;
use std::sync::Arc;

use serde::Serialize;
use serde_json::json;
use socketioxide::adapter::Adapter;
use socketioxide::extract::{AckSender, Event, SocketRef};
use socketioxide::handler::FromMessageParts;
use socketioxide::socket::Socket;
use socketioxide_core::Value;

use crate::errors::{Code, Message};

/// A client command that failed; each variant has its code and message in
/// [`crate::errors`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandError {
    InvalidPayload(String),
    InvalidRoom(String),
    Forbidden(String),
    /// `unsubscribe` from `global` or the socket's own `user:` room.
    MustStay(String),
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
    /// `rpc`: the backend's answer is not a 2xx JSON body; `status` when it answered.
    RpcFailed {
        status: Option<u16>,
        reason: String,
    },
    /// `rpc`: no answer within this many milliseconds.
    RpcTimeout {
        timeout_ms: u64,
    },
    /// `rpc`: not configured, or the backend cannot be reached.
    RpcUnavailable(String),
    /// `rpc`: the request's body would be larger than this many bytes.
    RpcTooLarge {
        max: usize,
    },
    /// `rpc`: the socket already has this many calls awaiting an answer.
    RpcInFlight {
        max: usize,
    },
    /// `publish` into a room clients may not publish into (`[client_events] rooms`, the
    /// token's `publish` claim).
    PublishForbidden {
        room: String,
        reason: &'static str,
    },
    /// `publish` of an event name that is invalid, reserved or not allowed.
    EventNotAllowed(String),
    /// `publish` with `data` over `client_events.max_bytes`.
    PayloadTooLarge {
        size: usize,
        max: usize,
    },
    /// `publish` with `data` that does not match its event's schema; `field` is the JSON
    /// pointer of the failing value.
    SchemaMismatch {
        event: String,
        field: String,
        message: String,
    },
    /// `stream.resume`, `stream.cancel`: the stream's refusal.
    Stream(crate::streams::StreamError),
    /// `stream.cancel` by another user than the requester (`streams.cancel = "requester"`).
    CancelNotAllowed,
    /// `lock.acquire`, `lock.release`, `lock.renew`: the lock's refusal.
    Lock(crate::locks::LockError),
}

impl CommandError {
    pub fn code(&self) -> &'static str {
        self.error_code().as_str()
    }

    fn error_code(&self) -> Code {
        match self {
            // The token's own code (`token_invalid`, `token_expired`, ...).
            Self::Token(e) => e.error_code(),
            _ => self.template().code(),
        }
    }

    fn template(&self) -> Message {
        match self {
            Self::InvalidPayload(_) => Message::CommandPayload,
            Self::InvalidRoom(_) => Message::CommandRoom,
            Self::Forbidden(_) => Message::RoomNotGranted,
            Self::MustStay(_) => Message::MustStay,
            Self::TooManyRooms { .. } => Message::SocketRooms,
            Self::NotSubscribed(_) => Message::NotSubscribed,
            Self::UnknownCommand(_) => Message::UnknownCommand,
            Self::Unavailable(_) => Message::CommandCluster,
            Self::Token(_) => Message::RefreshTokenInvalid,
            Self::RefreshMismatch => Message::RefreshMismatch,
            Self::RateLimited { .. } => Message::EventBudget,
            Self::RpcFailed { .. } => Message::RpcFailed,
            Self::RpcTimeout { .. } => Message::RpcTimeout,
            Self::RpcUnavailable(_) => Message::RpcUnavailable,
            Self::RpcTooLarge { .. } => Message::RpcTooLarge,
            Self::RpcInFlight { .. } => Message::RpcInFlight,
            Self::PublishForbidden { .. } => Message::PublishNotAllowed,
            Self::EventNotAllowed(_) => Message::ClientEventName,
            Self::PayloadTooLarge { .. } => Message::ClientEventTooLarge,
            Self::SchemaMismatch { .. } => Message::ClientEventSchema,
            Self::Stream(crate::streams::StreamError::Unavailable(_)) => Message::CommandCluster,
            Self::Stream(e) => e.template(),
            Self::CancelNotAllowed => Message::StreamCancelNotAllowed,
            Self::Lock(crate::locks::LockError::Unavailable(_)) => Message::CommandCluster,
            Self::Lock(e) => e.template(),
        }
    }

    fn message(&self) -> String {
        let template = self.template();
        match self {
            Self::InvalidPayload(m) => template.render(&[("message", m)]),
            Self::TooManyRooms { limit, .. } => template.render(&[("limit", limit)]),
            Self::UnknownCommand(name) => template.render(&[("name", &format_args!("{name:?}"))]),
            Self::Unavailable(reason)
            | Self::RpcUnavailable(reason)
            | Self::RpcFailed { reason, .. } => template.render(&[("reason", reason)]),
            Self::RpcTimeout { timeout_ms } => template.render(&[("timeout_ms", timeout_ms)]),
            Self::RpcTooLarge { max } | Self::RpcInFlight { max } => {
                template.render(&[("max", max)])
            }
            Self::PublishForbidden { reason, .. } => template.render(&[("reason", reason)]),
            Self::EventNotAllowed(m) => template.render(&[("message", m)]),
            Self::PayloadTooLarge { size, max } => template.render(&[("size", size), ("max", max)]),
            Self::SchemaMismatch { event, message, .. } => {
                template.render(&[("event", event), ("message", message)])
            }
            Self::Stream(crate::streams::StreamError::Unavailable(reason)) => {
                template.render(&[("reason", reason)])
            }
            Self::Stream(e) => e.message(),
            Self::Lock(crate::locks::LockError::Unavailable(reason)) => {
                template.render(&[("reason", reason)])
            }
            Self::Lock(e) => e.message(),
            _ => template.text(),
        }
    }

    fn room(&self) -> Option<&str> {
        match self {
            Self::InvalidRoom(r)
            | Self::Forbidden(r)
            | Self::MustStay(r)
            | Self::NotSubscribed(r)
            | Self::TooManyRooms { room: r, .. }
            | Self::PublishForbidden { room: r, .. } => Some(r),
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
        if let Self::RpcFailed {
            status: Some(status),
            ..
        } = self
        {
            body["status"] = (*status).into();
        }
        if let Self::SchemaMismatch { field, .. } = self {
            body["field"] = field.as_str().into();
        }
        if let (Self::Lock(e), Some(object)) = (self, body.as_object_mut()) {
            object.extend(e.extra());
        }
        body
    }
}

/// Replies to the command being handled. Extract it in a message handler.
pub(super) struct Responder<A: Adapter> {
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
    pub(super) fn ok<T: Serialize + ?Sized>(self, body: &T) {
        if let Err(e) = self.ack.send(body) {
            tracing::debug!(sid = %self.socket.id, "cannot send ack: {e}");
        }
    }

    pub(super) fn result<T: Serialize>(self, result: Result<T, CommandError>) {
        match result {
            Ok(body) => self.ok(&body),
            Err(e) => self.fail(e),
        }
    }

    pub(super) fn fail(self, error: CommandError) {
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

pub(super) async fn unknown_command<A: Adapter>(
    _s: SocketRef<A>,
    Event(name): Event,
    reply: Responder<A>,
) {
    reply.fail(CommandError::UnknownCommand(name));
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::auth::AuthError;

    /// Pins every answer as the client sees it: the table may move, the wire may not.
    #[test]
    fn command_errors_answer_as_documented() {
        let cases: Vec<(CommandError, serde_json::Value)> = vec![
            (
                CommandError::InvalidPayload("expected {room}".into()),
                json!({"code": "invalid_payload", "message": "expected {room}"}),
            ),
            (
                CommandError::InvalidRoom("x".into()),
                json!({"code": "invalid_room", "message": "rooms are global, user:<id>, project:<id> or agent:<id>; an id is 1 to 128 of [A-Za-z0-9_.-]", "room": "x"}),
            ),
            (
                CommandError::Forbidden("user:b".into()),
                json!({"code": "forbidden", "message": "your token does not grant this room", "room": "user:b"}),
            ),
            (
                CommandError::MustStay("global".into()),
                json!({"code": "forbidden", "message": "a socket stays in global and its own user room", "room": "global"}),
            ),
            (
                CommandError::TooManyRooms {
                    room: "project:1".into(),
                    limit: 4,
                },
                json!({"code": "too_many_rooms", "message": "a socket may be in at most 4 rooms", "room": "project:1"}),
            ),
            (
                CommandError::NotSubscribed("project:1".into()),
                json!({"code": "not_subscribed", "message": "subscribe to the room first", "room": "project:1"}),
            ),
            (
                CommandError::UnknownCommand("zap".into()),
                json!({"code": "unknown_command", "message": "unknown command \"zap\""}),
            ),
            (
                CommandError::Unavailable("down".into()),
                json!({"code": "cluster_unavailable", "message": "the cluster is unreachable: down"}),
            ),
            (
                CommandError::Token(AuthError::TokenInvalid),
                json!({"code": "token_invalid", "message": "the new token does not verify"}),
            ),
            (
                CommandError::Token(AuthError::TokenExpired),
                json!({"code": "token_expired", "message": "the new token does not verify"}),
            ),
            (
                CommandError::RefreshMismatch,
                json!({"code": "refresh_mismatch", "message": "the new token must be for the same user (sub) and tenant"}),
            ),
            (
                CommandError::RateLimited { retry_after_ms: 7 },
                json!({"code": "rate_limited", "message": "too many events: this one was dropped (limits.events_per_sec)", "retry_after_ms": 7}),
            ),
            (
                CommandError::RpcFailed {
                    status: Some(502),
                    reason: "it answered HTTP 502".into(),
                },
                json!({"code": "rpc_failed", "message": "the RPC backend failed: it answered HTTP 502", "status": 502}),
            ),
            (
                CommandError::RpcTimeout { timeout_ms: 5000 },
                json!({"code": "rpc_timeout", "message": "the RPC backend did not answer within 5000 ms (rpc.timeout_ms)"}),
            ),
            (
                CommandError::RpcUnavailable("not configured (rpc.url)".into()),
                json!({"code": "rpc_unavailable", "message": "RPC is unavailable: not configured (rpc.url)"}),
            ),
            (
                CommandError::RpcTooLarge { max: 10 },
                json!({"code": "payload_too_large", "message": "the rpc request is larger than 10 bytes (rpc.max_request_bytes); it was not sent"}),
            ),
            (
                CommandError::RpcInFlight { max: 8 },
                json!({"code": "rate_limited", "message": "this socket has 8 rpc calls awaiting an answer (rpc.max_in_flight_per_socket); wait for one"}),
            ),
            (
                CommandError::PublishForbidden {
                    room: "global".into(),
                    reason: "client_events.rooms",
                },
                json!({"code": "forbidden", "message": "clients may not publish into this room (client_events.rooms)", "room": "global"}),
            ),
            (
                CommandError::EventNotAllowed("no".into()),
                json!({"code": "event_not_allowed", "message": "no"}),
            ),
            (
                CommandError::PayloadTooLarge { size: 9, max: 8 },
                json!({"code": "payload_too_large", "message": "data is 9 bytes serialized; client_events.max_bytes allows 8"}),
            ),
            (
                CommandError::SchemaMismatch {
                    event: "chat.message".into(),
                    field: "/text".into(),
                    message: "wrong".into(),
                },
                json!({"code": "invalid_payload", "message": "data does not match the schema of chat.message: wrong", "field": "/text"}),
            ),
            (
                CommandError::Stream(crate::streams::StreamError::NotFound("s1".into())),
                json!({"code": "stream_not_found", "message": "no stream s1 in this tenant (never created, or expired)"}),
            ),
            (
                CommandError::Stream(crate::streams::StreamError::Ended {
                    id: "s1".into(),
                    status: crate::streams::Status::Finished,
                }),
                json!({"code": "stream_ended", "message": "the stream s1 is finished"}),
            ),
            (
                CommandError::CancelNotAllowed,
                json!({"code": "forbidden", "message": "only the user who requested the stream may cancel it (streams.cancel = \"requester\")"}),
            ),
        ];
        for (error, body) in cases {
            assert_eq!(error.body(), body, "{error:?}");
        }
    }
}
