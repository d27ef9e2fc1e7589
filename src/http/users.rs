//! `POST /api/v1/users/{user_id}/disconnect?tenant=` (scope `publish`): disconnects every
//! socket of a user on every node, e.g. after revoking their access.

use axum::Json;
use axum::extract::{Path, Query, State};
use serde::Serialize;

use super::{ApiCaller, ApiError, AppState, Publish, TenantQuery, tenant_for};
use crate::events::FieldError;
use crate::rooms::{Id, RoomName, Tenant};

#[derive(Serialize)]
pub struct Disconnected {
    user_id: Id,
    tenant: Tenant,
    disconnected: u64,
}

pub async fn disconnect(
    State(state): State<AppState>,
    ApiCaller(caller, _): ApiCaller<Publish>,
    Path(user_id): Path<String>,
    Query(query): Query<TenantQuery>,
) -> Result<Json<Disconnected>, ApiError> {
    let tenant = tenant_for(&caller, query.tenant)?;
    let user_id = Id::parse(&user_id).ok_or_else(|| {
        ApiError::InvalidPayload(FieldError::new(
            "user_id",
            format!("invalid id {user_id:?}"),
        ))
    })?;
    if let Some(cluster) = &state.cluster
        && !cluster.status.is_up()
    {
        return Err(ApiError::ClusterUnavailable(cluster.status.reason()));
    }
    // Every socket of a user is in its `user:` room, on whichever node it is.
    let room = RoomName::User(user_id.clone()).scoped(&tenant);
    let disconnected = state
        .hub
        .disconnect_room(room)
        .await
        .map_err(ApiError::ClusterUnavailable)?;
    tracing::info!(%user_id, %tenant, disconnected, caller = caller.name, "user disconnected");
    Ok(Json(Disconnected {
        user_id,
        tenant,
        disconnected,
    }))
}
