//! `GET /metrics`: Prometheus text format. Needs an API key with the `read` scope, not
//! bound to a tenant, unless `[metrics] public = true`. The figures are the node's, over
//! every tenant (publish counts are labelled by tenant), so a tenant-bound key is refused
//! rather than shown a part that could not be told from the whole.
//!
//! Counters and the latency histogram are kept as they happen ([`crate::metrics`]); the
//! gauges (sockets, rooms, users, Redis, history) are read at scrape time: one walk over
//! this node's sockets per scrape, nothing on the publish or delivery path.

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};

use super::{ApiCaller, ApiError, AppState, Read};
use crate::metrics::{Counters, labelled, sample};

pub(super) async fn metrics(
    State(state): State<AppState>,
    caller: Result<ApiCaller<Read>, ApiError>,
) -> Result<Response, ApiError> {
    if !state.services.config.metrics.public {
        let ApiCaller(caller, _) = caller?;
        if let Some(tenant) = caller.tenant {
            return Err(ApiError::Forbidden(format!(
                "/metrics covers every tenant; this API key is bound to tenant \"{tenant}\""
            )));
        }
    }
    let snapshot = state.hub.snapshot(0, None);
    let c = &state.services.counters;
    let mut out = String::with_capacity(4096);
    sample(
        &mut out,
        "roomcast_connections",
        "gauge",
        "Sockets connected to this node, over every namespace",
        snapshot.connections,
    );
    labelled(
        &mut out,
        "roomcast_sockets",
        "gauge",
        "Sockets connected to this node, per namespace",
        "namespace",
        &state.hub.per_namespace(),
    );
    sample(
        &mut out,
        "roomcast_sse_connections",
        "gauge",
        "SSE connections open on this node (GET /api/v1/sse)",
        state.sse.connections(),
    );
    sample(
        &mut out,
        "roomcast_ws_json_connections",
        "gauge",
        "Plain JSON WebSocket connections open on this node (GET /ws/json)",
        state.sse.json_connections(),
    );
    sample(
        &mut out,
        "roomcast_sse_overflows_total",
        "counter",
        "SSE and /ws/json connections closed because their reader fell too far behind (sse.buffer, limits.socket_buffer_packets)",
        state.sse.overflowed(),
    );
    sample(
        &mut out,
        "roomcast_documents_open",
        "gauge",
        "Yjs documents open on this node (with an editor, or an HTTP call under way)",
        state.services.documents.open_count() as u64,
    );
    sample(
        &mut out,
        "roomcast_document_updates_total",
        "counter",
        "Yjs updates that changed a document, applied on this node (editors and POST)",
        state
            .services
            .documents
            .updates
            .load(std::sync::atomic::Ordering::Relaxed),
    );
    sample(
        &mut out,
        "roomcast_rooms",
        "gauge",
        "Distinct (tenant, room) pairs with a member on this node",
        snapshot.rooms,
    );
    sample(
        &mut out,
        "roomcast_users",
        "gauge",
        "Distinct (tenant, user) pairs connected to this node",
        snapshot.users,
    );
    sample(
        &mut out,
        "roomcast_tenants",
        "gauge",
        "Tenants with a socket on this node",
        snapshot.tenants,
    );
    sample(
        &mut out,
        "roomcast_delivery_failures_total",
        "counter",
        "Per-socket deliveries dropped (send buffer full or socket closing)",
        Counters::get(&c.delivery_failures),
    );
    sample(
        &mut out,
        "roomcast_rate_limit_disconnects_total",
        "counter",
        "Sockets disconnected for sustained abuse of the event rate limit",
        Counters::get(&c.rate_limit_disconnects),
    );
    sample(
        &mut out,
        "roomcast_rate_limit_tracked_keys",
        "gauge",
        "Sockets, addresses and API keys with a partly spent token bucket",
        state.services.limits.tracked() as u64,
    );
    sample(
        &mut out,
        "roomcast_uptime_seconds",
        "gauge",
        "Seconds since the server was created",
        state.started.elapsed().as_secs(),
    );
    if let Some(cluster) = &state.cluster {
        sample(
            &mut out,
            "roomcast_redis_up",
            "gauge",
            "1 while Redis is reachable, else 0",
            u64::from(cluster.status.is_up()),
        );
        sample(
            &mut out,
            "roomcast_cluster_dropped_messages_total",
            "counter",
            "Cluster pub/sub messages dropped because this node's buffer was full",
            cluster.dropped_messages(),
        );
        sample(
            &mut out,
            "roomcast_cluster_repaired_events_total",
            "counter",
            "Numbered events missed on pub/sub and read back from Redis",
            Counters::get(&c.repaired_events),
        );
    }
    if let Some((rooms, events)) = state.services.history.local_size() {
        sample(
            &mut out,
            "roomcast_history_rooms",
            "gauge",
            "Rooms with a history log in memory",
            rooms,
        );
        sample(
            &mut out,
            "roomcast_history_events",
            "gauge",
            "Events kept in memory for replay",
            events,
        );
    }
    c.encode(&mut out);
    Ok((
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        out,
    )
        .into_response())
}
