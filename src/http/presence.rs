//! `GET /api/v1/rooms/{room}/presence?tenant=` (scope `read`): who is in a room, cluster-wide.

use axum::Json;
use axum::extract::{Path, Query, State};
use serde::Serialize;

use super::{ApiCaller, ApiError, AppState, Read, TenantQuery, tenant_for};
use crate::events::FieldError;
use crate::presence::{Member, members};
use crate::rooms::{RoomName, Tenant};

#[derive(Serialize)]
pub(super) struct RoomPresence {
    room: RoomName,
    tenant: Tenant,
    users: Vec<Member>,
    connections: u64,
}

pub(super) async fn presence(
    State(state): State<AppState>,
    ApiCaller(caller, _): ApiCaller<Read>,
    Path(room): Path<String>,
    Query(query): Query<TenantQuery>,
) -> Result<Json<RoomPresence>, ApiError> {
    let tenant = tenant_for(&caller, query.tenant)?;
    let room = RoomName::parse(&room).ok_or_else(|| {
        ApiError::InvalidRoom(FieldError::new("room", format!("invalid room {room:?}")))
    })?;
    let users = members(&*state.services.presence_store, &tenant, &room)
        .await
        .map_err(|e| ApiError::ClusterUnavailable(e.to_string()))?;
    let connections = users.iter().map(|m| m.connections).sum();
    Ok(Json(RoomPresence {
        room,
        tenant,
        users,
        connections,
    }))
}
