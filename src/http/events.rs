//! `POST /api/v1/events` (typed events) and `POST /api/v1/broadcast` (custom events).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::Value;

use super::{ApiCaller, ApiError, AppState, JsonBody, Publish, tenant_for};
use crate::auth::Caller;
use crate::broadcaster::{EventBroadcaster, Published};
use crate::events::{Event, EventName, FieldError};
use crate::rooms::{RoomName, Tenant};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishEvent {
    #[serde(rename = "type")]
    event_type: String,
    #[serde(default)]
    data: Value,
    #[serde(default)]
    tenant: Option<Tenant>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishCustom {
    event: String,
    #[serde(default)]
    room: Option<String>,
    #[serde(default)]
    rooms: Option<Vec<String>>,
    #[serde(default)]
    data: Value,
    #[serde(default)]
    tenant: Option<Tenant>,
}

/// The broadcaster for the tenant a caller asked for, if the caller may publish there.
fn broadcaster_for(
    state: &AppState,
    caller: &Caller,
    asked: Option<Tenant>,
) -> Result<EventBroadcaster, ApiError> {
    Ok(state.broadcaster.with_tenant(tenant_for(caller, asked)?))
}

pub async fn publish_event(
    State(state): State<AppState>,
    ApiCaller(caller, _): ApiCaller<Publish>,
    JsonBody(body): JsonBody<PublishEvent>,
) -> Result<(StatusCode, Json<Published>), ApiError> {
    let broadcaster = broadcaster_for(&state, &caller, body.tenant)?;
    let event = Event::from_json(&body.event_type, body.data)?;
    let published = broadcaster.publish(event).await?;
    Ok((StatusCode::ACCEPTED, Json(published)))
}

pub async fn publish_custom(
    State(state): State<AppState>,
    ApiCaller(caller, _): ApiCaller<Publish>,
    JsonBody(body): JsonBody<PublishCustom>,
) -> Result<(StatusCode, Json<Published>), ApiError> {
    let broadcaster = broadcaster_for(&state, &caller, body.tenant)?;
    let name = EventName::parse(&body.event)
        .map_err(|m| ApiError::InvalidEventName(format!("{m}: {:?}", body.event)))?;
    let (field, raw) = match (body.room, body.rooms) {
        (Some(room), None) => ("room", vec![room]),
        (None, Some(rooms)) if !rooms.is_empty() => ("rooms", rooms),
        _ => {
            return Err(ApiError::InvalidPayload(FieldError::new(
                "room",
                "give either room or a non-empty rooms list",
            )));
        }
    };
    let rooms = raw
        .iter()
        .enumerate()
        .map(|(i, name)| {
            RoomName::parse(name).ok_or_else(|| {
                let at = if field == "rooms" { format!("rooms[{i}]") } else { "room".into() };
                ApiError::InvalidRoom(FieldError::new(
                    at,
                    format!("invalid room {name:?}: expected global, user:<id>, project:<id> or agent:<id>"),
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let published = broadcaster.publish_custom(&name, rooms, &body.data).await?;
    Ok((StatusCode::ACCEPTED, Json(published)))
}
