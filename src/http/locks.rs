//! Locks over HTTP, for backends and agents: `POST /api/v1/locks/{room}/{name}` (acquire),
//! `POST …/renew`, `DELETE …?token=` (release), all scope `publish` (each request one from
//! the key's publish budget), and `GET …` (scope `read`: the holder, or `404
//! lock_not_found`). The lock lives in the tenant the request acts in (`?tenant=`; a key
//! bound to a tenant needs none). An HTTP holder is any caller of the tenant: whoever has
//! the token may renew or release the lock. What they do is [`EventBroadcaster`]'s, as for
//! a socket.

use axum::Json;
use axum::extract::{Path, Query, State};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiCaller, ApiError, AppState, Publish, PublishBody, Read, TenantQuery, tenant_for};
use crate::auth::Caller;
use crate::broadcaster::EventBroadcaster;
use crate::events::FieldError;
use crate::locks::{LockError, Owner, Reason, Resource, expires_at};
use crate::rooms::{Id, Tenant};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct HolderBody {
    #[serde(default)]
    user_id: Option<Id>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AcquireBody {
    #[serde(default)]
    ttl_ms: Option<u64>,
    /// Who the room is told holds the lock (an agent's user id).
    #[serde(default)]
    holder: Option<HolderBody>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RenewBody {
    token: u64,
    #[serde(default)]
    ttl_ms: Option<u64>,
}

#[derive(Deserialize)]
pub(super) struct ReleaseQuery {
    tenant: Option<Tenant>,
    token: Option<String>,
}

fn resource(room: &str, name: &str) -> Result<Resource, ApiError> {
    let asked = format!("{room}/{name}");
    Resource::parse(&asked).ok_or(ApiError::Lock(LockError::InvalidResource(asked)))
}

fn ttl(state: &AppState, asked: Option<u64>) -> Result<u64, ApiError> {
    state
        .services
        .config
        .locks
        .ttl(asked)
        .map_err(|m| ApiError::InvalidPayload(FieldError::new("ttl_ms", m)))
}

fn broadcaster(
    state: &AppState,
    caller: &Caller,
    tenant: Option<Tenant>,
) -> Result<EventBroadcaster, ApiError> {
    Ok(state.broadcaster.with_tenant(tenant_for(caller, tenant)?))
}

/// `200 {ok, resource, token, expires_at}`; the room receives `lock.acquired`.
/// `409 locked` with the holder and `expires_at` when it is held.
pub(super) async fn acquire(
    State(state): State<AppState>,
    ApiCaller(caller, _): ApiCaller<Publish>,
    Path((room, name)): Path<(String, String)>,
    Query(query): Query<TenantQuery>,
    PublishBody(body): PublishBody<AcquireBody>,
) -> Result<Json<Value>, ApiError> {
    let broadcaster = broadcaster(&state, &caller, query.tenant)?;
    let resource = resource(&room, &name)?;
    let ttl_ms = ttl(&state, body.ttl_ms)?;
    let user_id = body.holder.and_then(|h| h.user_id);
    let grant = broadcaster
        .acquire_lock(&resource, ttl_ms, user_id.as_ref(), &Owner::Api)
        .await?;
    Ok(Json(json!({
        "ok": true,
        "resource": resource,
        "token": grant.token,
        "expires_at": expires_at(grant.expires_ms),
    })))
}

/// `200 {ok, resource, token, expires_at}`: the lock now expires `ttl_ms` from now.
/// `409 lock_lost` when the lock with this token has ended.
pub(super) async fn renew(
    State(state): State<AppState>,
    ApiCaller(caller, _): ApiCaller<Publish>,
    Path((room, name)): Path<(String, String)>,
    Query(query): Query<TenantQuery>,
    PublishBody(body): PublishBody<RenewBody>,
) -> Result<Json<Value>, ApiError> {
    let broadcaster = broadcaster(&state, &caller, query.tenant)?;
    let resource = resource(&room, &name)?;
    let ttl_ms = ttl(&state, body.ttl_ms)?;
    let expires_ms = broadcaster
        .renew_lock(&resource, body.token, &Owner::Api, ttl_ms)
        .await?;
    Ok(Json(json!({
        "ok": true,
        "resource": resource,
        "token": body.token,
        "expires_at": expires_at(expires_ms),
    })))
}

/// `200 {ok, resource}`; the room receives `lock.released {reason: "released"}`.
/// `409 not_holder` (nothing changed) for a token that is not the lock's.
pub(super) async fn release(
    State(state): State<AppState>,
    ApiCaller(caller, _): ApiCaller<Publish>,
    Path((room, name)): Path<(String, String)>,
    Query(query): Query<ReleaseQuery>,
) -> Result<Json<Value>, ApiError> {
    let broadcaster = broadcaster(&state, &caller, query.tenant)?;
    let resource = resource(&room, &name)?;
    let token = query
        .token
        .as_deref()
        .and_then(|t| t.parse::<u64>().ok())
        .ok_or_else(|| {
            ApiError::InvalidPayload(FieldError::new(
                "token",
                "?token= is the lock's fencing token".to_owned(),
            ))
        })?;
    broadcaster
        .release_lock(&resource, token, &Owner::Api, Reason::Released)
        .await?;
    Ok(Json(json!({"ok": true, "resource": resource})))
}

/// `200 {resource, token, holder, expires_at}`, or `404 lock_not_found`.
pub(super) async fn read(
    State(state): State<AppState>,
    ApiCaller(caller, _): ApiCaller<Read>,
    Path((room, name)): Path<(String, String)>,
    Query(query): Query<TenantQuery>,
) -> Result<Json<Value>, ApiError> {
    let tenant = tenant_for(&caller, query.tenant)?;
    let resource = resource(&room, &name)?;
    let held = state
        .services
        .locks
        .get(&tenant, &resource)
        .await?
        .ok_or_else(|| ApiError::Lock(LockError::NotFound(resource.to_string())))?;
    Ok(Json(json!({
        "resource": resource,
        "token": held.token,
        "holder": held.holder,
        "expires_at": expires_at(held.expires_ms),
    })))
}
