//! The HTTP API: one file per endpoint group. Handlers take extractors ([`ApiCaller`],
//! [`JsonBody`], `State`) and return `Result<_, ApiError>`; the error's mapping to a status
//! and a `{error: {code, message, field?}}` body is written once, in [`ApiError`].

mod error;
pub mod events;
mod health;
mod history;
mod presence;
mod schema;
mod stats;
mod users;

use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::routing::{MethodRouter, get, post};
use bytes::Bytes;
use serde::de::DeserializeOwned;
use tower_http::cors::{AllowOrigin, CorsLayer};

pub use error::ApiError;

use crate::auth::{ApiKeys, Caller};
use crate::broadcaster::EventBroadcaster;
use crate::cluster::Cluster;
use crate::config::Scope;
use crate::history::HistoryStore;
use crate::metrics::Counters;
use crate::presence::PresenceStore;
use crate::rooms::Tenant;
use crate::socket::Hub;

/// Shared state of the HTTP handlers.
#[derive(Clone)]
pub struct AppState {
    pub api_keys: Arc<ApiKeys>,
    pub broadcaster: EventBroadcaster,
    pub hub: Arc<dyn Hub>,
    pub presence_store: Arc<dyn PresenceStore>,
    pub history: HistoryStore,
    /// Cluster mode only.
    pub cluster: Option<Arc<Cluster>>,
    pub counters: Arc<Counters>,
    pub node_id: Arc<str>,
    pub started: Instant,
    /// True while the server accepts work; `/ready` answers 503 otherwise.
    pub ready: Arc<AtomicBool>,
}

/// One endpoint: method, path, the scope its key needs (`None`: no key), and handler.
/// The router is built from this table, and tests walk it, so no endpoint is missed.
pub struct Endpoint {
    pub method: Method,
    pub path: &'static str,
    pub scope: Option<Scope>,
}

fn endpoints() -> Vec<(Endpoint, MethodRouter<AppState>)> {
    let e = |method, path, scope| Endpoint {
        method,
        path,
        scope,
    };
    let (publish, read) = (Some(Scope::Publish), Some(Scope::Read));
    vec![
        (
            e(Method::POST, "/api/v1/events", publish),
            post(events::publish_event),
        ),
        (
            e(Method::POST, "/api/v1/broadcast", publish),
            post(events::publish_custom),
        ),
        (
            e(Method::GET, "/api/v1/websocket/stats", read),
            get(stats::stats),
        ),
        (
            e(Method::GET, "/api/v1/rooms/{room}/presence", read),
            get(presence::presence),
        ),
        (
            e(Method::GET, "/api/v1/rooms/{room}/history", read),
            get(history::history),
        ),
        (
            e(Method::POST, "/api/v1/users/{user_id}/disconnect", publish),
            post(users::disconnect),
        ),
        (e(Method::GET, "/api/v1/schema", None), get(schema::schema)),
        (e(Method::GET, "/health", None), get(health::health)),
        (e(Method::GET, "/ready", None), get(health::ready)),
    ]
}

/// Every endpoint of the HTTP API, with the scope it requires.
pub fn endpoint_table() -> Vec<Endpoint> {
    endpoints().into_iter().map(|(e, _)| e).collect()
}

pub fn router(state: AppState, max_body: usize) -> Router {
    endpoints()
        .into_iter()
        .fold(Router::new(), |router, (e, handler)| {
            router.route(e.path, handler)
        })
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state)
}

/// CORS for the HTTP API and Socket.IO long-polling: only the listed origins get CORS
/// headers (preflights and actual requests alike); every other origin gets none, so a
/// browser keeps the answer from the page. Websockets are not subject to CORS.
/// `None` when no origin is listed (same-origin only: no CORS header at all).
pub fn cors(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allowed: Vec<HeaderValue> = origins
        .iter()
        // tower-http refuses a wildcard in a list (validation refuses it too).
        .filter(|o| o.as_str() != "*")
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    let layer = CorsLayer::new()
        .allow_origin(AllowOrigin::list(allowed))
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            HeaderName::from_static("x-api-key"),
            HeaderName::from_static("idempotency-key"),
        ])
        .expose_headers([HeaderName::from_static("idempotent-replayed")])
        .max_age(std::time::Duration::from_secs(600));
    Some(layer)
}

/// A scope an endpoint requires, as a type, so the check runs before the body is read.
pub trait RequiredScope {
    const SCOPE: Scope;
}

pub struct Publish;
impl RequiredScope for Publish {
    const SCOPE: Scope = Scope::Publish;
}

pub struct Read;
impl RequiredScope for Read {
    const SCOPE: Scope = Scope::Read;
}

/// The tenant a request acts in: the `tenant` asked for (default `default`), which a key
/// bound to a tenant may only leave out or repeat.
pub fn tenant_for(caller: &Caller, asked: Option<Tenant>) -> Result<Tenant, ApiError> {
    match (&caller.tenant, asked) {
        (Some(bound), Some(asked)) if *bound != asked => Err(ApiError::Forbidden(format!(
            "this API key may act only in tenant \"{bound}\""
        ))),
        (Some(bound), _) => Ok(bound.clone()),
        (None, Some(asked)) => Ok(asked),
        (None, None) => Ok(Tenant::default_tenant()),
    }
}

/// The `?tenant=` query parameter of the room and user endpoints.
#[derive(serde::Deserialize)]
pub struct TenantQuery {
    pub tenant: Option<Tenant>,
}

/// The caller of an API endpoint, authenticated by `Authorization: Bearer <key>` or
/// `X-API-Key`, and holding scope `S`: `401 unauthorized` without a valid key,
/// `403 forbidden` without the scope.
pub struct ApiCaller<S>(pub Caller, PhantomData<S>);

impl<S: RequiredScope + Send + Sync> FromRequestParts<AppState> for ApiCaller<S> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let header = |name| parts.headers.get(name).and_then(|h| h.to_str().ok());
        let presented = header(axum::http::header::AUTHORIZATION)
            .and_then(|h| {
                let (scheme, key) = h.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| key.trim())
            })
            .or_else(|| header(axum::http::header::HeaderName::from_static("x-api-key")));
        let caller = presented
            .and_then(|key| state.api_keys.verify(key))
            .ok_or(ApiError::Unauthorized)?;
        if !caller.has_scope(S::SCOPE) {
            return Err(ApiError::Forbidden(format!(
                "this API key lacks the \"{}\" scope",
                S::SCOPE.as_str()
            )));
        }
        Ok(ApiCaller(caller.clone(), PhantomData))
    }
}

/// A JSON body: syntax errors are `400 malformed_json`, shape errors `422 invalid_payload`
/// with the field, an oversized body `413 payload_too_large`. Any content type is read.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            match rejection.status() {
                axum::http::StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge,
                _ => ApiError::MalformedJson(rejection.body_text()),
            }
        })?;
        decode_json(&bytes).map(JsonBody)
    }
}

/// Decodes a request body: `400 malformed_json` for bad syntax, `422 invalid_payload` with
/// the field for a bad shape.
pub fn decode_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // Syntax first, over the whole body, so a broken document is never reported as a
    // shape error about whichever field came before the break.
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| ApiError::MalformedJson(e.to_string()))?;
    serde_path_to_error::deserialize(value)
        .map_err(|e| ApiError::InvalidPayload(crate::events::FieldError::from_serde(e)))
}
