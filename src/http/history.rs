//! `GET /api/v1/rooms/{room}/history?tenant=&since_seq=&limit=` (scope `read`).

use axum::Json;
use axum::extract::{Path, Query, State};
use serde::Deserialize;

use super::{ApiCaller, ApiError, AppState, Read, tenant_for};
use crate::events::FieldError;
use crate::history::{Page, default_page};
use crate::rooms::{RoomName, Tenant};

#[derive(Deserialize)]
pub(super) struct HistoryQuery {
    tenant: Option<Tenant>,
    #[serde(default)]
    since_seq: u64,
    #[serde(default = "default_page")]
    limit: usize,
}

pub(super) async fn history(
    State(state): State<AppState>,
    ApiCaller(caller, _): ApiCaller<Read>,
    Path(room): Path<String>,
    Query(query): Query<HistoryQuery>,
) -> Result<Json<Page>, ApiError> {
    let tenant = tenant_for(&caller, query.tenant)?;
    let room = RoomName::parse(&room).ok_or_else(|| {
        ApiError::InvalidRoom(FieldError::new("room", format!("invalid room {room:?}")))
    })?;
    let page = state
        .services
        .history
        .page(&tenant, &room, query.since_seq, query.limit)
        .await
        .map_err(|e| ApiError::ClusterUnavailable(e.to_string()))?;
    Ok(Json(page))
}
