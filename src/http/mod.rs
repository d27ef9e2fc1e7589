//! The HTTP API: one file per endpoint group, and `pages` for the `/debug` and `/admin` pages.
//! Handlers take extractors ([`ApiCaller`], [`PublishBody`] or [`JsonBody`], `State`) and return
//! `Result<_, ApiError>`; the error's mapping to a status and a `{error: {code, message,
//! field?}}` body is written once, in [`ApiError`], and every error answer is noted in the
//! recent errors the admin overview shows.

mod admin;
pub mod cors;
mod documents;
mod error;
mod events;
mod health;
mod history;
mod index;
mod locks;
mod metrics;
mod pages;
mod presence;
mod schema;
mod sse;
mod stats;
mod streams;
mod users;
mod webhooks;
mod ws_json;

use std::marker::PhantomData;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use axum::Router;
use axum::extract::{
    ConnectInfo, DefaultBodyLimit, FromRequest, FromRequestParts, MatchedPath, Request, State,
};
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{MethodRouter, delete, get, post};
use bytes::Bytes;
use serde::de::DeserializeOwned;
use tower_http::cors::{AllowOrigin, CorsLayer};

pub use error::ApiError;

use crate::auth::{ApiKeys, Caller};
use crate::broadcaster::EventBroadcaster;
use crate::cluster::Cluster;
use crate::config::Scope;
use crate::github::Github;
use crate::metrics::Rates;
use crate::rooms::Tenant;
use crate::services::Services;
use crate::socket::Hub;

/// Shared state of the HTTP handlers.
#[derive(Clone)]
pub struct AppState {
    /// What socket commands use too: config, stores, limits, counters.
    pub services: Arc<Services>,
    pub api_keys: Arc<ApiKeys>,
    pub broadcaster: EventBroadcaster,
    pub hub: Arc<dyn Hub>,
    /// This node's SSE connections.
    pub sse: Arc<crate::sse::SseHub>,
    pub github: Arc<Github>,
    /// Cluster mode only.
    pub cluster: Option<Arc<Cluster>>,
    /// Events per second by type, sampled from `counters`.
    pub rates: Arc<Rates>,
    pub started: Instant,
    /// True while the server accepts work; `/ready` answers 503 otherwise.
    pub ready: Arc<AtomicBool>,
}

/// How a request to an endpoint is authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guard {
    /// No credentials.
    Open,
    /// An API key with this scope.
    Key(Scope),
    /// GitHub's `X-Hub-Signature-256` over the body (`[github] webhook_secret`).
    GithubSignature,
    /// A client's JWT (`Authorization: Bearer` or `?token=`), as sockets present it.
    ClientToken,
}

/// One endpoint: method, path and how it is guarded. The router is built from this table,
/// and tests walk it, so no endpoint is missed.
pub struct Endpoint {
    pub method: Method,
    pub path: &'static str,
    pub guard: Guard,
}

fn endpoints() -> Vec<(Endpoint, MethodRouter<AppState>)> {
    use Guard::{ClientToken, GithubSignature, Key, Open};
    let e = |method, path, guard| Endpoint {
        method,
        path,
        guard,
    };
    let (publish, read, admin) = (Key(Scope::Publish), Key(Scope::Read), Key(Scope::Admin));
    vec![
        (e(Method::GET, "/", Open), get(index::index)),
        (e(Method::GET, index::DOCS_PATH, Open), get(index::docs)),
        (
            e(Method::POST, "/api/v1/events", publish),
            post(events::publish_event),
        ),
        (
            e(Method::POST, "/api/v1/events/batch", publish),
            post(events::publish_batch),
        ),
        (
            e(Method::POST, "/api/v1/broadcast", publish),
            post(events::publish_custom),
        ),
        (
            e(Method::POST, "/api/v1/streams", publish),
            post(streams::create),
        ),
        (
            e(Method::POST, "/api/v1/streams/{stream_id}/append", publish),
            post(streams::append),
        ),
        (
            e(Method::POST, "/api/v1/streams/{stream_id}/finish", publish),
            post(streams::finish),
        ),
        (
            e(Method::POST, "/api/v1/streams/{stream_id}/fail", publish),
            post(streams::fail),
        ),
        (
            e(Method::GET, "/api/v1/streams/{stream_id}", read),
            get(streams::read),
        ),
        (
            e(Method::POST, "/api/v1/locks/{room}/{name}", publish),
            post(locks::acquire),
        ),
        (
            e(Method::POST, "/api/v1/locks/{room}/{name}/renew", publish),
            post(locks::renew),
        ),
        (
            e(Method::DELETE, "/api/v1/locks/{room}/{name}", publish),
            delete(locks::release),
        ),
        (
            e(Method::GET, "/api/v1/locks/{room}/{name}", read),
            get(locks::read),
        ),
        (
            e(Method::GET, "/api/v1/documents/{*name}", read),
            get(documents::read),
        ),
        (
            e(Method::POST, "/api/v1/documents/{*name}", publish),
            post(documents::write),
        ),
        (e(Method::GET, "/api/v1/sse", ClientToken), get(sse::sse)),
        (
            e(Method::GET, "/ws/json", ClientToken),
            get(ws_json::ws_json),
        ),
        (
            e(Method::POST, "/webhooks/github", GithubSignature),
            post(webhooks::github),
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
        (e(Method::GET, "/api/v1/schema", Open), get(schema::schema)),
        (
            e(Method::GET, "/api/v1/admin/overview", admin),
            get(admin::overview),
        ),
        // `read`, unless `[metrics] public = true`.
        (e(Method::GET, "/metrics", read), get(metrics::metrics)),
    ]
}

/// Every endpoint of the HTTP API, with how it is guarded (the pages and `/health`,
/// `/ready` are open).
pub fn endpoint_table() -> Vec<Endpoint> {
    endpoints().into_iter().map(|(e, _)| e).collect()
}

pub fn router(state: AppState, max_body: usize) -> Router {
    let api = endpoints()
        .into_iter()
        .fold(Router::new(), |router, (e, handler)| {
            router.route(e.path, handler)
        })
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            record_errors,
        ));
    api.merge(pages::routes(&state.services.config.pages))
        .route("/health", get(health::health))
        .route("/ready", get(health::ready))
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state)
}

/// Notes every error answer of the API (its code, route and message; never a header or
/// body of the request) in the recent errors the admin page shows.
async fn record_errors(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let at = format!("{} {route}", req.method());
    let response = next.run(req).await;
    if let Some(answered) = response.extensions().get::<error::Answered>() {
        let errors = &state.services.counters.errors;
        if answered.refused_auth {
            errors.refused("http", answered.code, at, &answered.message);
        } else {
            errors.record("http", answered.code, at, &answered.message);
        }
    }
    response
}

/// CORS for the HTTP API and Socket.IO long-polling: only the listed origins get CORS
/// headers (preflights and actual requests alike); every other origin gets none (with
/// [`cors::only_allowed_origins`] around this layer), so a browser keeps the answer from
/// the page. Websockets are not subject to CORS.
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

pub struct Admin;
impl RequiredScope for Admin {
    const SCOPE: Scope = Scope::Admin;
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
/// `403 forbidden` without the scope. A request needing `publish` also takes one from the
/// key's publish budget first: `429 rate_limited` when it is spent, before the body is read.
/// A client address that has spent its budget of refused keys is `429 rate_limited` before
/// its key is even checked.
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
        let ip = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(peer)| state.services.limits.client_ip(peer.ip(), &parts.headers));
        if let Some(ip) = ip
            && let Err(e) = state.services.limits.auth_allowed(ip)
        {
            state.services.counters.limited("auth_failures_ip");
            return Err(ApiError::AuthThrottled {
                retry_after_ms: e.retry_after_ms(),
            });
        }
        let Some(caller) = presented.and_then(|key| state.api_keys.verify(key)) else {
            // Only a presented key is a guess; a request without one spends nothing.
            if let (Some(ip), Some(_)) = (ip, presented) {
                state.services.limits.auth_refused(ip);
            }
            return Err(ApiError::Unauthorized);
        };
        if !caller.has_scope(S::SCOPE) {
            return Err(ApiError::Forbidden(format!(
                "this API key lacks the \"{}\" scope",
                S::SCOPE.as_str()
            )));
        }
        if S::SCOPE == Scope::Publish {
            if let Err(e) = state.services.limits.publish(&caller.name) {
                state.services.counters.limited("publish");
                return Err(ApiError::RateLimited {
                    retry_after_ms: e.retry_after_ms(),
                    limit: "publish_per_key_per_sec",
                });
            }
            // For `PublishBody`, which charges the body's bytes to the same key.
            parts.extensions.insert(PublishKey(caller.name.clone()));
        }
        Ok(ApiCaller(caller.clone(), PhantomData))
    }
}

/// The rate-limit key of a caller that passed [`ApiCaller<Publish>`], left in the request's
/// extensions for [`PublishBody`].
#[derive(Clone)]
struct PublishKey(String);

/// A publish request's JSON body (as [`JsonBody`]), whose size is first taken from the API
/// key's byte budget (`limits.publish_bytes_per_key_per_sec`): `429 rate_limited` when it
/// is spent, before anything is decoded or published. Needs [`ApiCaller<Publish>`] before it.
pub struct PublishBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for PublishBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let Some(PublishKey(key)) = req.extensions().get::<PublishKey>().cloned() else {
            return Err(ApiError::Internal(
                "a publish body without a publish caller".into(),
            ));
        };
        let bytes = body_bytes(req, state).await?;
        if let Err(e) = state.services.limits.publish_bytes(&key, bytes.len()) {
            state.services.counters.limited("publish_bytes");
            return Err(ApiError::RateLimited {
                retry_after_ms: e.retry_after_ms(),
                limit: "publish_bytes_per_key_per_sec",
            });
        }
        decode_json(&bytes).map(PublishBody)
    }
}

/// A JSON body: syntax errors are `400 malformed_json`, shape errors `422 invalid_payload`
/// with the field, an oversized body `413 payload_too_large`. Any content type is read.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        decode_json(&body_bytes(req, state).await?).map(JsonBody)
    }
}

/// The whole request body, within `limits.max_http_body_bytes` (`413 payload_too_large`).
async fn body_bytes<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    Bytes::from_request(req, state)
        .await
        .map_err(|rejection| match rejection.status() {
            axum::http::StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge,
            _ => ApiError::MalformedJson(rejection.body_text()),
        })
}

/// Decodes a request body: `400 malformed_json` for bad syntax, `422 invalid_payload` with
/// the field for a bad shape.
fn decode_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    Ok(crate::events::request::decode_json(bytes)?)
}
