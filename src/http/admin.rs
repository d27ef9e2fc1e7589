//! `GET /api/v1/admin/overview` (scope `admin`): everything the `/admin` page shows, in one
//! answer it polls every second.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde::Serialize;

use super::stats::{Stats, gather};
use super::{Admin, ApiCaller, AppState};
use crate::metrics::{ErrorRecord, RATE_WINDOW};

/// How many rooms the overview lists.
const ADMIN_ROOMS: usize = 100;

#[derive(Serialize)]
pub struct Overview {
    /// Everything `GET /api/v1/websocket/stats` answers, `top_rooms` holding up to 100 rooms.
    #[serde(flatten)]
    stats: Stats,
    /// Publishes per second at this node over the last `rate_window_secs`, all types.
    events_per_sec: f64,
    rate_window_secs: u64,
    /// Per event type published at this node: busiest first.
    events_by_type: Vec<TypeFigures>,
    /// The last client-facing errors of this node, newest first.
    recent_errors: Vec<ErrorRecord>,
}

#[derive(Serialize)]
struct TypeFigures {
    #[serde(rename = "type")]
    event_type: Arc<str>,
    total: u64,
    per_sec: f64,
}

pub async fn overview(State(state): State<AppState>, _caller: ApiCaller<Admin>) -> Json<Overview> {
    let stats = gather(&state, ADMIN_ROOMS).await;
    let totals = state.counters.by_type.totals();
    let rates = state.rates.per_sec(&totals);
    let mut events_by_type: Vec<TypeFigures> = totals
        .into_iter()
        .map(|(event_type, total)| TypeFigures {
            per_sec: round(rates.get(&event_type).copied().unwrap_or(0.0)),
            event_type,
            total,
        })
        .collect();
    events_by_type.sort_by(|a, b| {
        b.per_sec
            .total_cmp(&a.per_sec)
            .then(b.total.cmp(&a.total))
            .then_with(|| a.event_type.cmp(&b.event_type))
    });
    Json(Overview {
        stats,
        events_per_sec: round(rates.values().sum()),
        rate_window_secs: RATE_WINDOW.as_secs(),
        events_by_type,
        recent_errors: state.counters.errors.newest_first(),
    })
}

/// Two decimals are plenty on a dashboard.
fn round(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}
