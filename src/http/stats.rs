//! `GET /api/v1/websocket/stats` (scope `read`).

use axum::Json;
use axum::extract::State;
use serde::Serialize;

use super::{ApiCaller, ApiError, AppState, Read};
use crate::metrics::Counters;
use crate::socket::RoomMembers;

/// How many rooms `top_rooms` lists.
const TOP_ROOMS: usize = 10;

#[derive(Serialize)]
pub struct Stats {
    node_id: String,
    uptime_secs: u64,
    connections: u64,
    users: u64,
    rooms: u64,
    tenants: u64,
    events_published: u64,
    auth_failures: u64,
    delivery_failures: u64,
    top_rooms: Vec<RoomMembers>,
}

pub async fn stats(
    State(state): State<AppState>,
    _caller: ApiCaller<Read>,
) -> Result<Json<Stats>, ApiError> {
    let snapshot = state.census.snapshot(TOP_ROOMS);
    let c = &state.counters;
    Ok(Json(Stats {
        node_id: state.node_id.to_string(),
        uptime_secs: state.started.elapsed().as_secs(),
        connections: snapshot.connections,
        users: snapshot.users,
        rooms: snapshot.rooms,
        tenants: snapshot.tenants,
        events_published: Counters::get(&c.events_published),
        auth_failures: Counters::get(&c.auth_failures),
        delivery_failures: Counters::get(&c.delivery_failures),
        top_rooms: snapshot.top_rooms,
    }))
}
