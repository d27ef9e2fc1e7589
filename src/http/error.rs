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
    /// The API key's publish budget is spent; retry after this many milliseconds.
    RateLimited {
        retry_after_ms: u64,
    },
    Internal(String),
}

impl ApiError {
    fn parts(&self) -> (StatusCode, &'static str, String, Option<&str>) {
        use StatusCode as S;
        match self {
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
                Some(&f.field),
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
                Some(&f.field),
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
            Self::RateLimited { .. } => (
                S::TOO_MANY_REQUESTS,
                "rate_limited",
                "this API key is over limits.publish_per_key_per_sec; nothing was published".into(),
                None,
            ),
            Self::Internal(m) => (S::INTERNAL_SERVER_ERROR, "internal", m.clone(), None),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, message, field) = self.parts();
        let mut error = json!({"code": code, "message": message});
        if let Some(field) = field {
            error["field"] = field.into();
        }
        if let Self::RateLimited { retry_after_ms } = self {
            error["retry_after_ms"] = retry_after_ms.into();
        }
        let mut response = (status, Json(json!({"error": error}))).into_response();
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
