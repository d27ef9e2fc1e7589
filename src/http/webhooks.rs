//! `POST /webhooks/github`: a signed GitHub delivery becomes a `pr.*` / `issue.*` event,
//! published once per `X-GitHub-Delivery` through the broadcaster.

use axum::Json;
use axum::extract::{FromRequest, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::json;

use super::events::{accepted, idempotency_key};
use super::{ApiError, AppState};
use crate::github::{Delivery, signature_valid};

pub async fn github(
    State(state): State<AppState>,
    headers: HeaderMap,
    request: Request,
) -> Result<Response, ApiError> {
    let github = &state.github;
    let secret = github
        .secret
        .as_deref()
        .ok_or(ApiError::GithubNotConfigured)?;
    let body = Bytes::from_request(request, &state)
        .await
        .map_err(|rejection| match rejection.status() {
            StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge,
            _ => ApiError::MalformedJson(rejection.body_text()),
        })?;
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    // Nothing about the delivery is believed before its signature checks out.
    if !signature_valid(secret, &body, header("x-hub-signature-256")) {
        return Err(ApiError::InvalidSignature);
    }
    let event = header("x-github-event").ok_or_else(|| {
        ApiError::InvalidPayload(crate::events::FieldError::new(
            "X-GitHub-Event",
            "the X-GitHub-Event header is missing",
        ))
    })?;
    let delivery = github.map(event, &body).map_err(ApiError::InvalidPayload)?;
    let event = match delivery {
        Delivery::Ping => return Ok((StatusCode::OK, Json(json!({"ok": true}))).into_response()),
        Delivery::Ignored(reason) => {
            tracing::debug!(reason, "github delivery ignored");
            return Ok((StatusCode::ACCEPTED, Json(json!({"ignored": reason}))).into_response());
        }
        Delivery::Publish(event) => event,
    };
    let mut broadcaster = state.broadcaster.with_tenant(github.tenant.clone());
    if let Some(key) = idempotency_key(&headers, &["x-github-delivery"])? {
        broadcaster = broadcaster.with_idempotency_key(format!("github:{key}"));
    }
    Ok(accepted(broadcaster.publish(event).await?))
}
