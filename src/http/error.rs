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
            Self::Internal(m) => (S::INTERNAL_SERVER_ERROR, "internal", m.clone(), None),
        }
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
        let (status, code, message, field) = self.parts();
        let mut error = json!({"code": code, "message": message});
        if let Some(field) = field {
            error["field"] = field.into();
        }
        let mut response = (status, Json(json!({"error": error}))).into_response();
        response.extensions_mut().insert(Answered { code, message });
        response
    }
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
