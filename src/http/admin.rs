//! `GET /api/v1/admin/overview` (scope `admin`): everything the `/admin` page shows, in one
//! answer it polls every second.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde::Serialize;

use super::stats::{Stats, gather};
use super::{Admin, ApiCaller, ApiError, AppState};
use crate::metrics::{ErrorRecord, RATE_WINDOW, RefusedAuth};

/// How many rooms the overview lists.
const ADMIN_ROOMS: usize = 100;

#[derive(Serialize)]
pub(super) struct Overview {
    /// Everything `GET /api/v1/websocket/stats` answers, `top_rooms` holding up to 100 rooms.
    #[serde(flatten)]
    stats: Stats,
    /// Publishes per second at this node over the last `rate_window_secs`, all types.
    events_per_sec: f64,
    rate_window_secs: u64,
    /// Per event type published at this node: busiest first.
    events_by_type: Vec<TypeFigures>,
    /// The last client-facing errors of this node, newest first (refused authentication
    /// aside).
    recent_errors: Vec<ErrorRecord>,
    /// Refused authentication at this node (missing or wrong API keys and tokens, bad
    /// webhook signatures, addresses throttled for them): one counted entry per source and
    /// code, most recent first.
    refused_auth: Vec<RefusedAuth>,
}

#[derive(Serialize)]
struct TypeFigures {
    #[serde(rename = "type")]
    event_type: Arc<str>,
    total: u64,
    per_sec: f64,
}

pub(super) async fn overview(
    State(state): State<AppState>,
    ApiCaller(caller, _): ApiCaller<Admin>,
) -> Result<Json<Overview>, ApiError> {
    // Config validation refuses a tenant-bound admin key; the overview (recent errors,
    // events by type) cannot be narrowed to a tenant, so it is refused here too.
    if let Some(tenant) = caller.tenant {
        return Err(ApiError::Forbidden(format!(
            "the admin overview covers every tenant; this API key is bound to tenant \"{tenant}\""
        )));
    }
    let stats = gather(&state, ADMIN_ROOMS).await;
    let totals = state.services.counters.by_type.totals();
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
    Ok(Json(Overview {
        stats,
        events_per_sec: round(rates.values().sum()),
        rate_window_secs: RATE_WINDOW.as_secs(),
        events_by_type,
        recent_errors: state.services.counters.errors.newest_first(),
        refused_auth: state.services.counters.errors.refused_auth(),
    }))
}

/// Two decimals are plenty on a dashboard.
fn round(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}
