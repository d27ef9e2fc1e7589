//! `GET /api/v1/websocket/stats` (scope `read`).

use axum::Json;
use axum::extract::State;
use serde::Serialize;

use super::{ApiCaller, ApiError, AppState, Read};
use crate::cluster::NodeInfo;
use crate::events::Timestamp;
use crate::metrics::Counters;
use crate::presence::USERS_KEY;
use crate::socket::RoomMembers;

/// How many rooms `top_rooms` lists.
const TOP_ROOMS: usize = 10;

#[derive(Serialize)]
pub(super) struct Stats {
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
    cluster: ClusterStats,
}

#[derive(Serialize)]
pub(super) struct ClusterStats {
    mode: &'static str,
    /// `up` / `down` in cluster mode, `null` on a single node.
    redis: Option<&'static str>,
    nodes: Vec<NodeInfo>,
    /// Cluster-wide sockets and distinct (tenant, user) pairs.
    connections: u64,
    users: u64,
    /// Pub/sub messages the adapter dropped because its buffer was full.
    dropped_messages: u64,
    /// Numbered events this node missed on pub/sub and read back from Redis before
    /// delivering the next one.
    repaired_events: u64,
}

pub async fn stats(
    State(state): State<AppState>,
    _caller: ApiCaller<Read>,
) -> Result<Json<Stats>, ApiError> {
    Ok(Json(gather(&state, TOP_ROOMS).await))
}

/// This node's figures with its `top` fullest rooms, and the cluster's.
pub(super) async fn gather(state: &AppState, top: usize) -> Stats {
    let snapshot = state.hub.snapshot(top);
    let this_node = NodeInfo {
        node_id: state.node_id.to_string(),
        connections: snapshot.connections,
        users: snapshot.users,
        last_seen: Timestamp::now().to_string(),
    };
    let cluster = match &state.cluster {
        None => ClusterStats {
            mode: "single",
            redis: None,
            connections: this_node.connections,
            users: this_node.users,
            nodes: vec![this_node],
            dropped_messages: 0,
            repaired_events: 0,
        },
        Some(cluster) => {
            let up = cluster.status.is_up();
            // While Redis is away only this node is known.
            let mut nodes = match up {
                true => cluster.nodes().await.unwrap_or_default(),
                false => Vec::new(),
            };
            // This node's own figures are live; the others' are as of their last heartbeat.
            nodes.retain(|n| n.node_id != this_node.node_id);
            nodes.push(this_node.clone());
            nodes.sort_by(|a, b| a.node_id.cmp(&b.node_id));
            let users = match up {
                true => state.presence_store.count(USERS_KEY).await.ok(),
                false => None,
            };
            ClusterStats {
                mode: "redis",
                redis: Some(if up { "up" } else { "down" }),
                connections: nodes.iter().map(|n| n.connections).sum(),
                users: users.unwrap_or(this_node.users),
                nodes,
                dropped_messages: cluster.dropped_messages(),
                repaired_events: Counters::get(&state.counters.repaired_events),
            }
        }
    };
    let c = &state.counters;
    Stats {
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
        cluster,
    }
}
