//! `GET /health` (the process answers) and `GET /ready` (it accepts work).

use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::AppState;

pub(super) async fn health() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

pub(super) async fn ready(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let unavailable = |reason: String| {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "unavailable", "reason": reason})),
        )
    };
    if !state.ready.load(Ordering::Relaxed) {
        return unavailable("not serving (starting or shutting down)".into());
    }
    match &state.cluster {
        Some(cluster) if !cluster.status.is_up() => unavailable(cluster.status.reason()),
        _ => (StatusCode::OK, Json(json!({"status": "ready"}))),
    }
}
