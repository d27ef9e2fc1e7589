//! [`ApiError`]: every HTTP failure; its code, status and message come from
//! [`crate::errors`].

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::broadcaster::PublishError;
use crate::errors::{Code, Message};
use crate::events::FieldError;
use crate::events::request::RequestError;

#[derive(Debug)]
pub enum ApiError {
    Unauthorized,
    Forbidden(String),
    MalformedJson(String),
    UnknownEventType(String),
    InvalidPayload(FieldError),
    InvalidEventName(String),
    InvalidRoom(FieldError),
    PayloadTooLarge,
    ClusterUnavailable(String),
    IdempotencyInProgress,
    InvalidIdempotencyKey,
    InvalidSignature,
    GithubNotConfigured,
    BatchTooLarge(usize),
    /// The error of event `i` of a batch: its code, with `events[i]` in the field.
    InBatch(usize, Box<ApiError>),
    /// A batch event not published because an earlier one failed.
    Skipped(usize),
    /// One of the API key's publish budgets (`limit`, a `[limits]` setting) is spent;
    /// retry after this many milliseconds.
    RateLimited {
        retry_after_ms: u64,
        limit: &'static str,
    },
    /// A publish names more rooms than `limits.max_rooms_per_publish`.
    TooManyRooms(usize),
    /// The connection came in on the descriptor reserve (`limits.fd_reserve`): only
    /// `/health` and `/ready` are served on it.
    ServerBusy,
    /// Too many refused API keys from the client's address; retry after this many
    /// milliseconds (the key was not checked).
    AuthThrottled {
        retry_after_ms: u64,
    },
    /// A stream operation refused (`stream_*`, or `cluster_unavailable`).
    Stream(crate::streams::StreamError),
    /// A lock operation refused (`locked`, `not_holder`, …, or `cluster_unavailable`).
    Lock(crate::locks::LockError),
    /// A refusal whose message is rendered already (`GET /api/v1/sse`: its token, its
    /// limits); `retry_after_ms` when waiting helps.
    Refused {
        template: Message,
        message: String,
        retry_after_ms: Option<u64>,
    },
    Internal(String),
}

impl ApiError {
    /// The message template (and with it the code); a batch event's is its error's.
    fn template(&self) -> Message {
        use Message as M;
        match self {
            Self::Unauthorized => M::Unauthorized,
            Self::Forbidden(_) => M::HttpForbidden,
            Self::MalformedJson(_) => M::MalformedJson,
            Self::UnknownEventType(_) => M::UnknownEventType,
            Self::InvalidPayload(_) => M::HttpPayload,
            Self::InvalidEventName(_) => M::InvalidEventName,
            Self::InvalidRoom(_) => M::HttpRoom,
            Self::PayloadTooLarge => M::PayloadTooLarge,
            Self::ClusterUnavailable(_) => M::HttpCluster,
            Self::IdempotencyInProgress => M::IdempotencyInProgress,
            Self::InvalidIdempotencyKey => M::InvalidIdempotencyKey,
            Self::InvalidSignature => M::InvalidSignature,
            Self::GithubNotConfigured => M::GithubNotConfigured,
            Self::BatchTooLarge(_) => M::BatchTooLarge,
            Self::InBatch(_, inner) => inner.template(),
            Self::Skipped(_) => M::Skipped,
            Self::RateLimited { .. } => M::KeyBudget,
            Self::TooManyRooms(_) => M::PublishRooms,
            Self::ServerBusy => M::ServerBusy,
            Self::AuthThrottled { .. } => M::AuthThrottled,
            Self::Stream(e) => e.template(),
            Self::Lock(e) => e.template(),
            Self::Refused { template, .. } => *template,
            Self::Internal(_) => M::Internal,
        }
    }

    /// The code, its message and the field it concerns.
    fn parts(&self) -> (Code, String, Option<String>) {
        let template = self.template();
        let message = match self {
            Self::Forbidden(m) | Self::InvalidEventName(m) | Self::Internal(m) => {
                template.render(&[("message", m)])
            }
            Self::InvalidPayload(f) | Self::InvalidRoom(f) => {
                template.render(&[("message", &f.message)])
            }
            Self::MalformedJson(m) => template.render(&[("error", m)]),
            Self::UnknownEventType(t) => template.render(&[("type", &format_args!("{t:?}"))]),
            Self::ClusterUnavailable(m) => template.render(&[("reason", m)]),
            Self::BatchTooLarge(max) | Self::TooManyRooms(max) => template.render(&[("max", max)]),
            Self::Skipped(failed) => template.render(&[("failed", failed)]),
            Self::RateLimited { limit, .. } => template.render(&[("limit", limit)]),
            Self::Stream(e) => e.message(),
            Self::Lock(e) => e.message(),
            Self::Refused { message, .. } => message.clone(),
            Self::InBatch(i, inner) => {
                let (code, message, field) = inner.parts();
                let field = match field {
                    Some(f) => format!("events[{i}].{f}"),
                    None => format!("events[{i}]"),
                };
                return (code, format!("events[{i}]: {message}"), Some(field));
            }
            _ => template.text(),
        };
        let field = match self {
            Self::InvalidPayload(f) | Self::InvalidRoom(f) => Some(f.field.clone()),
            Self::InvalidEventName(_) => Some("event".to_owned()),
            Self::BatchTooLarge(_) => Some("events".to_owned()),
            Self::TooManyRooms(_) => Some("rooms".to_owned()),
            _ => None,
        };
        (template.code(), message, field)
    }

    /// The code this error answers with.
    pub fn code(&self) -> Code {
        self.template().code()
    }

    pub fn status(&self) -> StatusCode {
        // Only `skipped` has no status of its own: it is a per-event result inside a batch
        // answer whose status is the failed event's.
        self.code()
            .status()
            .unwrap_or(StatusCode::SERVICE_UNAVAILABLE)
    }

    /// A request refused for its credentials (or for too many refused ones): noise anyone
    /// can make without a key, kept apart from the real errors.
    pub fn refused_auth(&self) -> bool {
        use crate::errors::Code;
        matches!(
            self,
            Self::Unauthorized | Self::InvalidSignature | Self::AuthThrottled { .. }
        ) || matches!(
            self.code(),
            Code::TokenMissing | Code::TokenInvalid | Code::TokenExpired
        )
    }

    fn retry_after_ms(&self) -> Option<u64> {
        match self {
            Self::RateLimited { retry_after_ms, .. } | Self::AuthThrottled { retry_after_ms } => {
                Some(*retry_after_ms)
            }
            Self::Refused { retry_after_ms, .. } => *retry_after_ms,
            _ => None,
        }
    }

    /// `{code, message, field?}`: the `error` object of a response body.
    pub fn to_json(&self) -> serde_json::Value {
        let (code, message, field) = self.parts();
        let mut error = json!({"code": code.as_str(), "message": message});
        if let Some(field) = field {
            error["field"] = field.into();
        }
        if let Some(retry_after_ms) = self.retry_after_ms() {
            error["retry_after_ms"] = retry_after_ms.into();
        }
        if let (Self::Lock(e), Some(object)) = (self, error.as_object_mut()) {
            object.extend(e.extra());
        }
        error
    }
}

/// The code and message of an error answer, left on the response for
/// [`super::record_errors`] to note in the recent errors.
#[derive(Debug, Clone)]
pub(super) struct Answered {
    pub code: &'static str,
    pub message: String,
    /// See [`ApiError::refused_auth`].
    pub refused_auth: bool,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (code, message, _) = self.parts();
        let status = self.status();
        let mut response = (status, Json(json!({"error": self.to_json()}))).into_response();
        response.extensions_mut().insert(Answered {
            code: code.as_str(),
            message,
            refused_auth: self.refused_auth(),
        });
        if let Some(retry_after_ms) = self.retry_after_ms() {
            crate::errors::set_retry_after(response.headers_mut(), retry_after_ms);
        }
        response
    }
}

impl From<RequestError> for ApiError {
    fn from(e: RequestError) -> Self {
        match e {
            RequestError::MalformedJson(m) => Self::MalformedJson(m),
            RequestError::UnknownEventType(t) => Self::UnknownEventType(t),
            RequestError::InvalidPayload(f) => Self::InvalidPayload(f),
            RequestError::InvalidEventName(m) => Self::InvalidEventName(m),
            RequestError::InvalidRoom(f) => Self::InvalidRoom(f),
        }
    }
}

impl From<crate::streams::StreamError> for ApiError {
    fn from(e: crate::streams::StreamError) -> Self {
        Self::Stream(e)
    }
}

impl From<crate::locks::LockError> for ApiError {
    fn from(e: crate::locks::LockError) -> Self {
        Self::Lock(e)
    }
}

impl From<PublishError> for ApiError {
    fn from(e: PublishError) -> Self {
        match e {
            PublishError::InvalidPayload(f) => Self::InvalidPayload(f),
            PublishError::Encode(m) => Self::Internal(m),
            PublishError::ClusterUnavailable(m) => Self::ClusterUnavailable(m),
            PublishError::IdempotencyInProgress => Self::IdempotencyInProgress,
            PublishError::TooManyRooms(max) => Self::TooManyRooms(max),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// Pins every answer as the client sees it: the table may move, the wire may not.
    #[test]
    fn http_errors_answer_as_documented() {
        let f = || FieldError::new("rooms[1]", "bad room");
        let cases: Vec<(ApiError, u16, serde_json::Value)> = vec![
            (
                ApiError::Unauthorized,
                401,
                json!({"code": "unauthorized", "message": "a valid API key is required in Authorization: Bearer <key> or X-API-Key"}),
            ),
            (
                ApiError::Forbidden("no {scope}".into()),
                403,
                json!({"code": "forbidden", "message": "no {scope}"}),
            ),
            (
                ApiError::MalformedJson("eof".into()),
                400,
                json!({"code": "malformed_json", "message": "the body is not valid JSON: eof"}),
            ),
            (
                ApiError::UnknownEventType("x\"y".into()),
                422,
                json!({"code": "unknown_event_type", "message": "unknown event type \"x\\\"y\"; the known types are listed in WEBSOCKET_API.md"}),
            ),
            (
                ApiError::InvalidPayload(FieldError::new("data.x", "bad x")),
                422,
                json!({"code": "invalid_payload", "message": "bad x", "field": "data.x"}),
            ),
            (
                ApiError::InvalidEventName("bad name".into()),
                422,
                json!({"code": "invalid_event_name", "message": "bad name", "field": "event"}),
            ),
            (
                ApiError::InvalidRoom(f()),
                422,
                json!({"code": "invalid_room", "message": "bad room", "field": "rooms[1]"}),
            ),
            (
                ApiError::PayloadTooLarge,
                413,
                json!({"code": "payload_too_large", "message": "the request body exceeds limits.max_http_body_bytes"}),
            ),
            (
                ApiError::ClusterUnavailable("down".into()),
                503,
                json!({"code": "cluster_unavailable", "message": "the cluster is unreachable, nothing was delivered: down"}),
            ),
            (
                ApiError::IdempotencyInProgress,
                409,
                json!({"code": "idempotency_in_progress", "message": "a publish with this idempotency key is still in progress; retry shortly"}),
            ),
            (
                ApiError::InvalidIdempotencyKey,
                400,
                json!({"code": "invalid_idempotency_key", "message": "Idempotency-Key must be 1 to 255 visible ASCII characters"}),
            ),
            (
                ApiError::InvalidSignature,
                401,
                json!({"code": "invalid_signature", "message": "X-Hub-Signature-256 is missing or does not match the body (github.webhook_secret)"}),
            ),
            (
                ApiError::GithubNotConfigured,
                404,
                json!({"code": "github_not_configured", "message": "GitHub webhooks are off: set github.webhook_secret"}),
            ),
            (
                ApiError::BatchTooLarge(100),
                422,
                json!({"code": "batch_too_large", "message": "a batch holds 1 to 100 events (publish.max_batch_events, and no more than limits.publish_per_key_burst)", "field": "events"}),
            ),
            (
                ApiError::InBatch(2, Box::new(ApiError::InvalidRoom(f()))),
                422,
                json!({"code": "invalid_room", "message": "events[2]: bad room", "field": "events[2].rooms[1]"}),
            ),
            (
                ApiError::InBatch(3, Box::new(ApiError::ClusterUnavailable("down".into()))),
                503,
                json!({"code": "cluster_unavailable", "message": "events[3]: the cluster is unreachable, nothing was delivered: down", "field": "events[3]"}),
            ),
            (
                ApiError::Skipped(1),
                503,
                json!({"code": "skipped", "message": "not published: events[1] failed and events are published in order"}),
            ),
            (
                ApiError::RateLimited {
                    retry_after_ms: 1500,
                    limit: "publish_bytes_per_key_per_sec",
                },
                429,
                json!({"code": "rate_limited", "message": "this API key is over limits.publish_bytes_per_key_per_sec; nothing was published", "retry_after_ms": 1500}),
            ),
            (
                ApiError::TooManyRooms(8),
                422,
                json!({"code": "too_many_rooms", "message": "a publish may name at most 8 rooms (limits.max_rooms_per_publish); nothing was published", "field": "rooms"}),
            ),
            (
                ApiError::ServerBusy,
                503,
                json!({"code": "server_busy", "message": "the server is at its connection limit (limits.fd_reserve): only /health and /ready are served; retry later"}),
            ),
            (
                ApiError::AuthThrottled { retry_after_ms: 20 },
                429,
                json!({"code": "rate_limited", "message": "too many refused API keys from this address (limits.auth_failures_per_ip_per_sec); the key was not checked", "retry_after_ms": 20}),
            ),
            (
                ApiError::Stream(crate::streams::StreamError::Cancelled {
                    id: "s1".into(),
                    cancel: crate::streams::Cancelled {
                        by: "alice".into(),
                        reason: None,
                    },
                }),
                409,
                json!({"code": "stream_cancelled", "message": "the stream s1 was cancelled by a viewer"}),
            ),
            (
                ApiError::Stream(crate::streams::StreamError::TooLarge(16)),
                413,
                json!({"code": "stream_too_large", "message": "the stream's text would exceed 16 bytes (streams.max_bytes); nothing was appended"}),
            ),
            (
                ApiError::Internal("boom".into()),
                500,
                json!({"code": "internal", "message": "boom"}),
            ),
        ];
        for (error, status, body) in cases {
            assert_eq!(error.status().as_u16(), status, "{error:?}");
            assert_eq!(error.to_json(), body, "{error:?}");
        }
    }
}
