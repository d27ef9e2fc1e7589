//! `POST /api/v1/events` (typed events) and `POST /api/v1/broadcast` (custom events).

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
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
    /// Live delivery only: no `seq`, not kept in history.
    #[serde(default)]
    volatile: bool,
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
    #[serde(default)]
    volatile: bool,
}

/// The broadcaster for the tenant a caller asked for, if the caller may publish there,
/// publishing once per idempotency key when the request carries one.
fn broadcaster_for(
    state: &AppState,
    caller: &Caller,
    asked: Option<Tenant>,
    volatile: bool,
    headers: &HeaderMap,
) -> Result<EventBroadcaster, ApiError> {
    let mut broadcaster = state.broadcaster.with_tenant(tenant_for(caller, asked)?);
    if volatile {
        broadcaster = broadcaster.volatile();
    }
    let key = ["idempotency-key", "x-github-delivery"]
        .iter()
        .find_map(|name| headers.get(*name));
    let Some(key) = key else {
        return Ok(broadcaster);
    };
    let key = key
        .to_str()
        .ok()
        .filter(|k| !k.is_empty() && k.len() <= 255 && k.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or(ApiError::InvalidIdempotencyKey)?;
    // Keys are per API key: two callers never share an answer.
    Ok(broadcaster.with_idempotency_key(format!("{}:{key}", caller.name)))
}

/// `202` with the publish, marked `Idempotent-Replayed: true` when it is a stored answer.
fn accepted(published: Published) -> Response {
    let replayed = published.replayed;
    let mut response = (StatusCode::ACCEPTED, Json(published)).into_response();
    if replayed {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    response
}

impl PublishEvent {
    /// The typed event the body names: `unknown_event_type` or `invalid_payload` otherwise.
    pub fn into_event(self) -> Result<Event, ApiError> {
        Ok(Event::from_json(&self.event_type, self.data)?)
    }
}

impl PublishCustom {
    /// The event name and the target rooms, validated.
    pub fn name_and_rooms(&self) -> Result<(EventName, Vec<RoomName>), ApiError> {
        let name = EventName::parse(&self.event)
            .map_err(|m| ApiError::InvalidEventName(format!("{m}: {:?}", self.event)))?;
        let (field, raw) = match (&self.room, &self.rooms) {
            (Some(room), None) => ("room", std::slice::from_ref(room)),
            (None, Some(rooms)) if !rooms.is_empty() => ("rooms", rooms.as_slice()),
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
        Ok((name, rooms))
    }
}

pub async fn publish_event(
    State(state): State<AppState>,
    ApiCaller(caller, _): ApiCaller<Publish>,
    headers: HeaderMap,
    JsonBody(mut body): JsonBody<PublishEvent>,
) -> Result<Response, ApiError> {
    let broadcaster =
        broadcaster_for(&state, &caller, body.tenant.take(), body.volatile, &headers)?;
    let event = body.into_event()?;
    Ok(accepted(broadcaster.publish(event).await?))
}

pub async fn publish_custom(
    State(state): State<AppState>,
    ApiCaller(caller, _): ApiCaller<Publish>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<PublishCustom>,
) -> Result<Response, ApiError> {
    let broadcaster = broadcaster_for(
        &state,
        &caller,
        body.tenant.clone(),
        body.volatile,
        &headers,
    )?;
    let (name, rooms) = body.name_and_rooms()?;
    Ok(accepted(
        broadcaster.publish_custom(&name, rooms, &body.data).await?,
    ))
}
