//! What a publisher sends, decoded and validated: the JSON of `POST /api/v1/events` (also
//! one event of a batch, and one entry of the stream ingest) and of `POST /api/v1/broadcast`.
//! Nothing here knows HTTP: `http` maps a [`RequestError`] to its status and code, the
//! stream ingest moves an entry that has one to its dead-letter stream.

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{Event, EventError, EventName, FieldError};
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
    pub events: Vec<PublishEvent>,
}

/// The body of `POST /api/v1/broadcast`: a custom event into `room` or `rooms`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishCustom {
    pub event: String,
    #[serde(default)]
    pub room: Option<String>,
    #[serde(default)]
    pub rooms: Option<Vec<String>>,
    #[serde(default)]
    pub data: Value,
    #[serde(default)]
    pub tenant: Option<Tenant>,
    #[serde(default)]
    pub volatile: bool,
}

/// Why a publish request is not a publishable event; each has a stable client-visible code
/// (see `http::ApiError`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestError {
    /// Not JSON at all.
    MalformedJson(String),
    UnknownEventType(String),
    /// JSON of the wrong shape, or a field that fails validation.
    InvalidPayload(FieldError),
    InvalidEventName(String),
    InvalidRoom(FieldError),
}

impl From<EventError> for RequestError {
    fn from(e: EventError) -> Self {
        match e {
            EventError::UnknownType(t) => Self::UnknownEventType(t),
            EventError::InvalidPayload(f) => Self::InvalidPayload(f),
        }
    }
}

/// Decodes a JSON document: `MalformedJson` for bad syntax, `InvalidPayload` with the field
/// for a bad shape.
pub fn decode_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, RequestError> {
    // Syntax first, over the whole body, so a broken document is never reported as a
    // shape error about whichever field came before the break.
    let value: Value =
        serde_json::from_slice(bytes).map_err(|e| RequestError::MalformedJson(e.to_string()))?;
    serde_path_to_error::deserialize(value)
        .map_err(|e| RequestError::InvalidPayload(FieldError::from_serde(e)))
}

impl PublishEvent {
    /// The typed event the body names: `UnknownEventType` or `InvalidPayload` otherwise.
    pub fn into_event(self) -> Result<Event, RequestError> {
        Ok(Event::from_json(&self.event_type, self.data)?)
    }

    /// As [`Self::into_event`], for one event of a batch: a data field's path is given from
    /// the event object (`data.title`), as the batch's error names `events[i].data.title`.
    pub fn into_batch_event(self) -> Result<Event, RequestError> {
        Event::from_json(&self.event_type, self.data).map_err(|e| match e {
            EventError::InvalidPayload(f) if f.field == "data" => RequestError::InvalidPayload(f),
            EventError::InvalidPayload(f) => RequestError::InvalidPayload(FieldError {
                field: format!("data.{}", f.field),
                message: f.message,
            }),
            other => other.into(),
        })
    }
}

impl PublishCustom {
    /// The event name and the target rooms, validated.
    pub fn name_and_rooms(&self) -> Result<(EventName, Vec<RoomName>), RequestError> {
        let name = EventName::parse(&self.event)
            .map_err(|m| RequestError::InvalidEventName(format!("{m}: {:?}", self.event)))?;
        let (field, raw) = match (&self.room, &self.rooms) {
            (Some(room), None) => ("room", std::slice::from_ref(room)),
            (None, Some(rooms)) if !rooms.is_empty() => ("rooms", rooms.as_slice()),
            _ => {
                return Err(RequestError::InvalidPayload(FieldError::new(
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
                    RequestError::InvalidRoom(FieldError::new(
                        at,
                        format!("invalid room {name:?}: expected global, user:<id>, project:<id> or agent:<id>"),
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok((name, rooms))
    }
}
