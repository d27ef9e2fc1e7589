//! `GET /api/v1/schema` (public): JSON Schemas of the envelope and of every event type's
//! `data`, generated from the server's own structs, so clients derive or check their types
//! against the one source of truth.

use axum::Json;
use serde_json::{Map, Value, json};

use crate::events::EventType;

pub(super) async fn schema() -> Json<Value> {
    let mut events = Map::new();
    for t in EventType::ALL {
        events.insert(t.as_str().to_owned(), t.data_schema().to_value());
    }
    let presence = json!({
        "type": "object",
        "required": ["user_id", "room"],
        "properties": {"user_id": {"type": "string"}, "room": {"type": "string"}},
        "additionalProperties": false,
    });
    Json(json!({
        "version": 1,
        "envelope": envelope(),
        "events": events,
        "server_events": {"presence.joined": presence, "presence.left": presence},
    }))
}

/// The envelope every event is delivered in (WEBSOCKET_API.md sections 5 and 11).
fn envelope() -> Value {
    let position = json!({
        "type": "object",
        "required": ["room", "seq", "epoch"],
        "properties": {
            "room": {"type": "string"},
            "seq": {"type": "integer", "minimum": 1},
            "epoch": {"type": "string"},
        },
    });
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Envelope",
        "type": "object",
        "required": ["id", "type", "room", "timestamp", "data"],
        "properties": {
            "id": {"type": "string", "format": "uuid"},
            "type": {"type": "string"},
            "room": {"type": "string"},
            "timestamp": {"type": "string", "format": "date-time"},
            "seq": {"type": "integer", "minimum": 1, "description": "absent on volatile events"},
            "epoch": {"type": "string"},
            "also": {"type": "array", "items": position},
            "from": {
                "type": "object",
                "required": ["user_id", "sid"],
                "properties": {"user_id": {"type": "string"}, "sid": {"type": "string"}},
                "description": "client events only (the publish command): who sent it, set by the server",
            },
            "data": {},
        },
        "additionalProperties": false,
    })
}
