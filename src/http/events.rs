//! `POST /api/v1/events` (typed events) and `POST /api/v1/broadcast` (custom events).

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiCaller, ApiError, AppState, JsonBody, Publish, tenant_for};
use crate::auth::Caller;
use crate::broadcaster::{EventBroadcaster, Published};
use crate::events::{Event, EventError, EventName, FieldError};
use crate::rooms::{RoomName, Tenant};

/// The body of `POST /api/v1/events`, also one event of a batch or of the stream ingest.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishEvent {
    #[serde(rename = "type")]
    pub event_type: String,
    #[serde(default)]
    pub data: Value,
    #[serde(default)]
    pub tenant: Option<Tenant>,
    /// Live delivery only: no `seq`, not kept in history.
    #[serde(default)]
    pub volatile: bool,
}

/// `POST /api/v1/events/batch`: events as in `POST /api/v1/events`, published in order.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishBatch {
    events: Vec<PublishEvent>,
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
    key: Option<&str>,
) -> Result<EventBroadcaster, ApiError> {
    let mut broadcaster = state.broadcaster.with_tenant(tenant_for(caller, asked)?);
    if volatile {
        broadcaster = broadcaster.volatile();
    }
    let Some(key) = key else {
        return Ok(broadcaster);
    };
    // Keys are per API key: two callers never share an answer.
    Ok(broadcaster.with_idempotency_key(format!("{}:{key}", caller.name)))
}

/// The `Idempotency-Key` (or `X-GitHub-Delivery`) of a publish request.
fn request_key(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    idempotency_key(headers, &["idempotency-key", "x-github-delivery"])
}

/// The first of `names` present in `headers`, as an idempotency key: 1 to 255 visible ASCII
/// characters, else `400 invalid_idempotency_key`.
pub(super) fn idempotency_key<'h>(
    headers: &'h HeaderMap,
    names: &[&str],
) -> Result<Option<&'h str>, ApiError> {
    let Some(key) = names.iter().find_map(|name| headers.get(*name)) else {
        return Ok(None);
    };
    key.to_str()
        .ok()
        .filter(|k| !k.is_empty() && k.len() <= 255 && k.bytes().all(|b| b.is_ascii_graphic()))
        .map(Some)
        .ok_or(ApiError::InvalidIdempotencyKey)
}

/// `202` with the publish, marked `Idempotent-Replayed: true` when it is a stored answer.
pub(super) fn accepted(published: Published) -> Response {
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
    let key = request_key(&headers)?;
    let broadcaster = broadcaster_for(&state, &caller, body.tenant.take(), body.volatile, key)?;
    let event = body.into_event()?;
    Ok(accepted(broadcaster.publish(event).await?))
}

/// Validates every event first (one bad event: nothing is published), then publishes them
/// in order. With `Idempotency-Key: K`, event `i` is published once per key `K#i`, so a
/// retry after a partial failure publishes only what is missing.
pub async fn publish_batch(
    State(state): State<AppState>,
    ApiCaller(caller, _): ApiCaller<Publish>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<PublishBatch>,
) -> Result<Response, ApiError> {
    let max = state.max_batch_events;
    if body.events.is_empty() || body.events.len() > max {
        return Err(ApiError::BatchTooLarge(max));
    }
    let key = request_key(&headers)?;
    let mut ready = Vec::with_capacity(body.events.len());
    for (i, e) in body.events.into_iter().enumerate() {
        let in_batch = |e: ApiError| ApiError::InBatch(i, Box::new(e));
        let key = key.map(|k| format!("{k}#{i}"));
        let broadcaster = broadcaster_for(&state, &caller, e.tenant, e.volatile, key.as_deref())
            .map_err(in_batch)?;
        let event = Event::from_json(&e.event_type, e.data).map_err(|e| {
            in_batch(match e {
                // A data field's path, from the event object.
                EventError::InvalidPayload(f) if f.field == "data" => ApiError::InvalidPayload(f),
                EventError::InvalidPayload(f) => ApiError::InvalidPayload(FieldError {
                    field: format!("data.{}", f.field),
                    message: f.message,
                }),
                other => other.into(),
            })
        })?;
        ready.push((broadcaster, event));
    }
    let mut results = Vec::with_capacity(ready.len());
    let mut failed: Option<(usize, ApiError)> = None;
    for (i, (broadcaster, event)) in ready.into_iter().enumerate() {
        if let Some((at, _)) = &failed {
            results.push(json!({"error": ApiError::Skipped(*at).to_json()}));
            continue;
        }
        match broadcaster.publish(event).await {
            Ok(published) => {
                let replayed = published.replayed;
                let mut answer = serde_json::to_value(published)
                    .map_err(|e| ApiError::Internal(e.to_string()))?;
                if replayed {
                    answer["replayed"] = true.into();
                }
                results.push(answer);
            }
            Err(e) => {
                let e = ApiError::from(e);
                results.push(json!({"error": e.to_json()}));
                failed = Some((i, e));
            }
        }
    }
    let status = failed.map_or(StatusCode::ACCEPTED, |(_, e)| e.status());
    Ok((status, Json(json!({"events": results}))).into_response())
}

pub async fn publish_custom(
    State(state): State<AppState>,
    ApiCaller(caller, _): ApiCaller<Publish>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<PublishCustom>,
) -> Result<Response, ApiError> {
    let key = request_key(&headers)?;
    let broadcaster = broadcaster_for(&state, &caller, body.tenant.clone(), body.volatile, key)?;
    let (name, rooms) = body.name_and_rooms()?;
    Ok(accepted(
        broadcaster.publish_custom(&name, rooms, &body.data).await?,
    ))
}
