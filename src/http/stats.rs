//! `GET /api/v1/websocket/stats` (scope `read`). A key bound to a tenant gets that
//! tenant's figures only: node-wide figures that cannot be split by tenant are `null`.

use axum::Json;
use axum::extract::State;
use serde::Serialize;

use super::{ApiCaller, ApiError, AppState, Read};
use crate::cluster::{Cluster, NodeInfo};
use crate::events::Timestamp;
use crate::metrics::Counters;
use crate::presence::{USERS_KEY, members};
use crate::rooms::{RoomName, Tenant};
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
    /// The tenant's publishes for a tenant-bound key (`null` past the tenant label cap).
    events_published: Option<u64>,
    /// Node-wide only: `null` for a tenant-bound key.
    auth_failures: Option<u64>,
    delivery_failures: Option<u64>,
    /// SSE connections open on this node (node-wide: `null` for a tenant-bound key). They
    /// count against the connection limits with the sockets, not in `connections`.
    sse_connections: Option<u64>,
    /// `/ws/json` connections open on this node (node-wide: `null` for a tenant-bound key);
    /// counted like SSE connections.
    ws_json_connections: Option<u64>,
    top_rooms: Vec<RoomMembers>,
    cluster: ClusterStats,
}

#[derive(Serialize)]
pub(super) struct ClusterStats {
    mode: &'static str,
    /// `up` / `down` in cluster mode, `null` on a single node.
    redis: Option<&'static str>,
    nodes: Vec<NodeFigures>,
    /// Cluster-wide sockets and distinct (tenant, user) pairs.
    connections: u64,
    users: u64,
    /// Pub/sub messages the adapter dropped because its buffer was full.
    dropped_messages: Option<u64>,
    /// Numbered events this node missed on pub/sub and read back from Redis before
    /// delivering the next one.
    repaired_events: Option<u64>,
}

/// A node as stats show it: another node's figures are node-wide (its heartbeat), so a
/// tenant-bound key gets them as `null`.
#[derive(Serialize, Clone)]
pub(super) struct NodeFigures {
    node_id: String,
    connections: Option<u64>,
    users: Option<u64>,
    last_seen: String,
}

impl From<NodeInfo> for NodeFigures {
    fn from(n: NodeInfo) -> Self {
        Self {
            node_id: n.node_id,
            connections: Some(n.connections),
            users: Some(n.users),
            last_seen: n.last_seen,
        }
    }
}

pub(super) async fn stats(
    State(state): State<AppState>,
    ApiCaller(caller, _): ApiCaller<Read>,
) -> Result<Json<Stats>, ApiError> {
    let stats = match &caller.tenant {
        None => gather(&state, TOP_ROOMS).await,
        Some(tenant) => gather_tenant(&state, tenant, TOP_ROOMS).await?,
    };
    Ok(Json(stats))
}

/// `tenant`'s figures: this node's sockets and rooms of the tenant, its users and
/// connections cluster-wide (from presence), its publishes; `null` for what is node-wide.
async fn gather_tenant(state: &AppState, tenant: &Tenant, top: usize) -> Result<Stats, ApiError> {
    let snapshot = state.hub.snapshot(top, Some(tenant));
    let this_node = NodeFigures {
        node_id: state.services.node_id.to_string(),
        connections: Some(snapshot.connections),
        users: Some(snapshot.users),
        last_seen: Timestamp::now().to_string(),
    };
    let cluster = match &state.cluster {
        None => ClusterStats {
            mode: "single",
            redis: None,
            connections: snapshot.connections,
            users: snapshot.users,
            nodes: vec![this_node],
            dropped_messages: None,
            repaired_events: None,
        },
        Some(cluster) => {
            let up = cluster.status.is_up();
            let mut nodes: Vec<NodeFigures> = other_nodes(cluster, up, &this_node.node_id)
                .await
                .into_iter()
                .map(|n| NodeFigures {
                    connections: None,
                    users: None,
                    ..n.into()
                })
                .collect();
            nodes.push(this_node);
            nodes.sort_by(|a, b| a.node_id.cmp(&b.node_id));
            // Every connected socket counts in `global` presence, read from the store that
            // all nodes share.
            let (connections, users) = match up {
                true => {
                    let everyone =
                        members(&*state.services.presence_store, tenant, &RoomName::Global)
                            .await
                            .map_err(|e| ApiError::ClusterUnavailable(e.to_string()))?;
                    (
                        everyone.iter().map(|m| m.connections).sum(),
                        everyone.len() as u64,
                    )
                }
                false => (snapshot.connections, snapshot.users),
            };
            ClusterStats {
                mode: "redis",
                redis: Some(if up { "up" } else { "down" }),
                connections,
                users,
                nodes,
                dropped_messages: None,
                repaired_events: None,
            }
        }
    };
    Ok(Stats {
        node_id: state.services.node_id.to_string(),
        uptime_secs: state.started.elapsed().as_secs(),
        connections: snapshot.connections,
        users: snapshot.users,
        rooms: snapshot.rooms,
        tenants: snapshot.tenants,
        events_published: state.services.counters.published_in(tenant.as_str()),
        auth_failures: None,
        delivery_failures: None,
        sse_connections: None,
        ws_json_connections: None,
        top_rooms: snapshot.top_rooms,
        cluster,
    })
}

/// This node's figures with its `top` fullest rooms, and the cluster's: every tenant.
pub(super) async fn gather(state: &AppState, top: usize) -> Stats {
    let snapshot = state.hub.snapshot(top, None);
    let this_node = NodeInfo {
        node_id: state.services.node_id.to_string(),
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
            nodes: vec![this_node.into()],
            dropped_messages: Some(0),
            repaired_events: Some(0),
        },
        Some(cluster) => {
            let up = cluster.status.is_up();
            // This node's own figures are live; the others' are as of their last heartbeat.
            let mut nodes = other_nodes(cluster, up, &this_node.node_id).await;
            nodes.push(this_node.clone());
            nodes.sort_by(|a, b| a.node_id.cmp(&b.node_id));
            let users = match up {
                true => state.services.presence_store.count(USERS_KEY).await.ok(),
                false => None,
            };
            ClusterStats {
                mode: "redis",
                redis: Some(if up { "up" } else { "down" }),
                connections: nodes.iter().map(|n| n.connections).sum(),
                users: users.unwrap_or(this_node.users),
                nodes: nodes.into_iter().map(NodeFigures::from).collect(),
                dropped_messages: Some(cluster.dropped_messages()),
                repaired_events: Some(Counters::get(&state.services.counters.repaired_events)),
            }
        }
    };
    let c = &state.services.counters;
    Stats {
        node_id: state.services.node_id.to_string(),
        uptime_secs: state.started.elapsed().as_secs(),
        connections: snapshot.connections,
        users: snapshot.users,
        rooms: snapshot.rooms,
        tenants: snapshot.tenants,
        events_published: Some(Counters::get(&c.events_published)),
        auth_failures: Some(Counters::get(&c.auth_failures)),
        delivery_failures: Some(Counters::get(&c.delivery_failures)),
        sse_connections: Some(state.sse.connections()),
        ws_json_connections: Some(state.sse.json_connections()),
        top_rooms: snapshot.top_rooms,
        cluster,
    }
}

/// The cluster's other nodes as of their last heartbeat; none while Redis is away.
async fn other_nodes(cluster: &Cluster, up: bool, this_node: &str) -> Vec<NodeInfo> {
    let mut nodes = match up {
        true => cluster.nodes().await.unwrap_or_default(),
        false => Vec::new(),
    };
    nodes.retain(|n| n.node_id != this_node);
    nodes
}
