//! [`ApiError`]: every HTTP failure with its status and stable code.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::broadcaster::PublishError;
use crate::events::{EventError, FieldError};

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
    /// The API key's publish budget is spent; retry after this many milliseconds.
    RateLimited {
        retry_after_ms: u64,
    },
    Internal(String),
}

impl ApiError {
    fn parts(&self) -> (StatusCode, &'static str, String, Option<String>) {
        use StatusCode as S;
        let (status, code, message, field) = match self {
            Self::Unauthorized => (
                S::UNAUTHORIZED,
                "unauthorized",
                "a valid API key is required in Authorization: Bearer <key> or X-API-Key".into(),
                None,
            ),
            Self::Forbidden(m) => (S::FORBIDDEN, "forbidden", m.clone(), None),
            Self::MalformedJson(m) => (
                S::BAD_REQUEST,
                "malformed_json",
                format!("the body is not valid JSON: {m}"),
                None,
            ),
            Self::UnknownEventType(t) => (
                S::UNPROCESSABLE_ENTITY,
                "unknown_event_type",
                format!("unknown event type {t:?}; the known types are listed in WEBSOCKET_API.md"),
                None,
            ),
            Self::InvalidPayload(f) => (
                S::UNPROCESSABLE_ENTITY,
                "invalid_payload",
                f.message.clone(),
                Some(f.field.as_str()),
            ),
            Self::InvalidEventName(m) => (
                S::UNPROCESSABLE_ENTITY,
                "invalid_event_name",
                m.clone(),
                Some("event"),
            ),
            Self::InvalidRoom(f) => (
                S::UNPROCESSABLE_ENTITY,
                "invalid_room",
                f.message.clone(),
                Some(f.field.as_str()),
            ),
            Self::PayloadTooLarge => (
                S::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "the request body exceeds limits.max_http_body_bytes".into(),
                None,
            ),
            Self::ClusterUnavailable(m) => (
                S::SERVICE_UNAVAILABLE,
                "cluster_unavailable",
                format!("the cluster is unreachable, nothing was delivered: {m}"),
                None,
            ),
            Self::IdempotencyInProgress => (
                S::CONFLICT,
                "idempotency_in_progress",
                "a publish with this idempotency key is still in progress; retry shortly".into(),
                None,
            ),
            Self::InvalidIdempotencyKey => (
                S::BAD_REQUEST,
                "invalid_idempotency_key",
                "Idempotency-Key must be 1 to 255 visible ASCII characters".into(),
                None,
            ),
            Self::InvalidSignature => (
                S::UNAUTHORIZED,
                "invalid_signature",
                "X-Hub-Signature-256 is missing or does not match the body (github.webhook_secret)"
                    .into(),
                None,
            ),
            Self::GithubNotConfigured => (
                S::NOT_FOUND,
                "github_not_configured",
                "GitHub webhooks are off: set github.webhook_secret".into(),
                None,
            ),
            Self::BatchTooLarge(max) => (
                S::UNPROCESSABLE_ENTITY,
                "batch_too_large",
                format!("a batch holds 1 to {max} events (publish.max_batch_events)"),
                Some("events"),
            ),
            Self::InBatch(i, inner) => {
                let (status, code, message, field) = inner.parts();
                let field = match field {
                    Some(f) => format!("events[{i}].{f}"),
                    None => format!("events[{i}]"),
                };
                return (status, code, format!("events[{i}]: {message}"), Some(field));
            }
            Self::Skipped(failed) => (
                S::SERVICE_UNAVAILABLE,
                "skipped",
                format!("not published: events[{failed}] failed and events are published in order"),
                None,
            ),
            Self::RateLimited { .. } => (
                S::TOO_MANY_REQUESTS,
                "rate_limited",
                "this API key is over limits.publish_per_key_per_sec; nothing was published".into(),
                None,
            ),
            Self::Internal(m) => (S::INTERNAL_SERVER_ERROR, "internal", m.clone(), None),
        };
        (status, code, message, field.map(str::to_owned))
    }

    pub fn status(&self) -> StatusCode {
        self.parts().0
    }

    /// `{code, message, field?}`: the `error` object of a response body.
    pub fn to_json(&self) -> serde_json::Value {
        let (_, code, message, field) = self.parts();
        let mut error = json!({"code": code, "message": message});
        if let Some(field) = field {
            error["field"] = field.into();
        }
        if let Self::RateLimited { retry_after_ms } = self {
            error["retry_after_ms"] = (*retry_after_ms).into();
        }
        error
    }
}

/// The code and message of an error answer, left on the response for
/// [`super::record_errors`] to note in the recent errors.
#[derive(Debug, Clone)]
pub struct Answered {
    pub code: &'static str,
    pub message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, message, _) = self.parts();
        let mut response = (status, Json(json!({"error": self.to_json()}))).into_response();
        response.extensions_mut().insert(Answered { code, message });
        if let Self::RateLimited { retry_after_ms } = self {
            error_retry_after(&mut response, retry_after_ms);
        }
        response
    }
}

/// `Retry-After` in whole seconds, rounded up (HTTP has no finer unit), and the exact
/// wait as `retry_after_ms` in the body.
fn error_retry_after(response: &mut Response, retry_after_ms: u64) {
    let secs = retry_after_ms.div_ceil(1000).max(1);
    response
        .headers_mut()
        .insert(axum::http::header::RETRY_AFTER, secs.into());
}

impl From<EventError> for ApiError {
    fn from(e: EventError) -> Self {
        match e {
            EventError::UnknownType(t) => Self::UnknownEventType(t),
            EventError::InvalidPayload(f) => Self::InvalidPayload(f),
        }
    }
}

impl From<PublishError> for ApiError {
    fn from(e: PublishError) -> Self {
        match e {
            PublishError::InvalidPayload(f) => Self::InvalidPayload(f),
            PublishError::Encode(m) => Self::Internal(m),
            PublishError::ClusterUnavailable(m) => Self::ClusterUnavailable(m),
            PublishError::IdempotencyInProgress => Self::IdempotencyInProgress,
        }
    }
}
