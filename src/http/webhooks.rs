//! `POST /webhooks/github`: a signed GitHub delivery becomes a `pr.*` / `issue.*` event,
//! published once per signed body (whatever its `X-GitHub-Delivery`) through the
//! broadcaster.

use axum::Json;
use axum::extract::{FromRequest, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::json;
use sha2::Digest;

use super::events::accepted;
use super::{ApiError, AppState};
use crate::github::{Delivery, signature_valid};
use crate::idempotency::Publisher;

pub(super) async fn github(
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
    // Once per signed body, not per `X-GitHub-Delivery`: the delivery id is not signed, so
    // a captured delivery replayed under a new id must still be a duplicate. GitHub's own
    // redeliveries resend the same body, so they are caught the same way.
    let body_key = hex::encode(sha2::Sha256::digest(&body));
    let broadcaster = state
        .broadcaster
        .with_tenant(github.tenant.clone())
        .with_idempotency_key(Publisher::Github.scoped(&body_key));
    Ok(accepted(broadcaster.publish(event).await?))
}
