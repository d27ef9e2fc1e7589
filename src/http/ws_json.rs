//! `GET /ws/json`: the plain JSON WebSocket (WEBSOCKET_API.md section 17). The request is
//! screened as an SSE request is (`sse::screen`: the address's handshake budget, the client
//! JWT from `Authorization: Bearer` or `?token=`, the user's budget), then the upgrade
//! headers (a plain GET with a good token is a 422), `?since=` is read,
//! the connection is counted against the connection limits, and only then is the upgrade
//! answered: a refusal is the usual JSON error instead of `101`. The connection itself is
//! [`crate::transport::json`].

use axum::extract::{Request, State};
use axum::response::Response;
use http::{HeaderValue, header};
use serde_json::Value;

use super::{ApiError, AppState};
use crate::events::FieldError;
use crate::transport::Accepted;

/// The query of the request; other parameters are ignored.
#[derive(Default)]
struct Params {
    token: Option<String>,
    since: Option<String>,
}

impl Params {
    fn parse(query: Option<&str>) -> Self {
        let mut params = Self::default();
        for (key, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            let slot = match &*key {
                "token" => &mut params.token,
                "since" => &mut params.since,
                _ => continue,
            };
            if slot.is_none() && !value.is_empty() {
                *slot = Some(value.into_owned());
            }
        }
        params
    }
}

pub(super) async fn ws_json(
    State(state): State<AppState>,
    req: Request,
) -> Result<Response, ApiError> {
    let (mut parts, _) = req.into_parts();
    let params = Params::parse(parts.uri.query());
    let identity = super::sse::screen(&state, &parts, params.token.as_deref()).await?;
    let key = websocket_key(&parts.headers)?;
    let since = match params.since.as_deref() {
        None => None,
        Some(text) => match serde_json::from_str::<Value>(text) {
            Ok(since @ Value::Object(_)) => Some(serde_json::json!({ "since": since })),
            _ => {
                return Err(ApiError::InvalidPayload(FieldError::new(
                    "since",
                    "since is a JSON object {\"<room>\": {\"epoch\": \"...\", \"seq\": <n>}}, URL-encoded",
                )));
            }
        },
    };
    let slot = super::sse::admit(&state, &identity)?;
    let Some(upgrade) = parts.extensions.remove::<hyper::upgrade::OnUpgrade>() else {
        return Err(not_websocket("the connection cannot be upgraded"));
    };
    let accepted = Accepted {
        identity,
        since,
        slot,
    };
    let services = state.services.clone();
    let hub = state.sse.clone();
    tokio::spawn(async move {
        match upgrade.await {
            Ok(upgraded) => {
                let io = hyper_util::rt::TokioIo::new(upgraded);
                crate::transport::json::serve(io, services, hub, accepted).await;
            }
            Err(e) => tracing::debug!("ws/json upgrade failed: {e}"),
        }
    });
    Ok(crate::transport::switching_protocols(&key))
}

/// The `Sec-WebSocket-Key` of a WebSocket upgrade request (version 13); a request that is
/// none is refused before anything else is done.
fn websocket_key(headers: &http::HeaderMap) -> Result<HeaderValue, ApiError> {
    let has = |name: header::HeaderName, token: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|v| v.trim().eq_ignore_ascii_case(token))
    };
    if !has(header::UPGRADE, "websocket") || !has(header::CONNECTION, "upgrade") {
        return Err(not_websocket(
            "GET /ws/json is a WebSocket: send Upgrade: websocket",
        ));
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_none_or(|v| v.as_bytes() != b"13")
    {
        return Err(not_websocket("Sec-WebSocket-Version must be 13"));
    }
    headers
        .get(header::SEC_WEBSOCKET_KEY)
        .filter(|k| !k.is_empty())
        .cloned()
        .ok_or_else(|| not_websocket("no Sec-WebSocket-Key"))
}

fn not_websocket(message: &str) -> ApiError {
    ApiError::InvalidPayload(FieldError::new("upgrade", message))
}
