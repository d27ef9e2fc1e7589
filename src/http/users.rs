//! `POST /api/v1/users/{user_id}/disconnect?tenant=` (scope `publish`): disconnects every
//! socket of a user on every node, e.g. after revoking their access.

use axum::Json;
use axum::extract::{Path, Query, State};
use serde::Serialize;

use super::{ApiCaller, ApiError, AppState, Publish, TenantQuery, tenant_for};
use crate::events::FieldError;
use crate::rooms::{Id, Tenant};

#[derive(Serialize)]
pub(super) struct Disconnected {
    user_id: Id,
    tenant: Tenant,
    disconnected: u64,
}

pub(super) async fn disconnect(
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
    // By identity, on whichever node the sockets are: not through the `user:` room, which
    // an admin may have joined too.
    let disconnected = state
        .hub
        .disconnect_user(&tenant, &user_id)
        .await
        .map_err(ApiError::ClusterUnavailable)?;
    tracing::info!(%user_id, %tenant, disconnected, caller = caller.name, "user disconnected");
    Ok(Json(Disconnected {
        user_id,
        tenant,
        disconnected,
    }))
}
