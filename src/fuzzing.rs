//! The bodies of the `cargo fuzz` targets in `fuzz/`, as plain functions over bytes, so
//! `cargo test` runs them too (tests/fuzz_smoke.rs) on stable. Each calls the functions a
//! request really goes through and panics when an invariant breaks.
// A fuzz target's expect() states an invariant: its panic is the finding.
#![allow(clippy::expect_used)]

use crate::events::request::{PublishCustom, PublishEvent, decode_json};
use crate::events::{Event, EventType};
use crate::rooms::{Id, RoomName};

/// Room names: whatever parses prints back as itself, and tenant scoping round-trips.
pub fn room_name(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Some(room) = RoomName::parse(&text) {
        assert_eq!(room.to_string(), text, "a room prints as it was written");
        let tenant = Id::default_tenant();
        let scoped = room.scoped(&tenant);
        let (t, public) = RoomName::unscope(&scoped).expect("a scoped room splits");
        assert_eq!((t, public), (tenant.as_str(), text.as_ref()));
        assert_eq!(RoomName::parse(public), Some(room));
    }
    // The same text as a JSON string (the subscribe path) and as a JSON document.
    let as_json = serde_json::Value::String(text.clone().into_owned());
    let parsed: Result<RoomName, _> = serde_json::from_value(as_json);
    assert_eq!(parsed.ok(), RoomName::parse(&text));
    let _ = serde_json::from_slice::<RoomName>(data);
    let _ = serde_json::from_slice::<Id>(data);
}

/// Typed events: the first byte picks the type, the rest is `data`. An event that
/// validates survives a round trip through its own JSON, and routes to valid rooms.
pub fn typed_event(data: &[u8]) {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let event_type = EventType::ALL[pick as usize % EventType::ALL.len()];
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(rest) else {
        return;
    };
    let Ok(event) = Event::from_json(event_type.as_str(), value) else {
        return;
    };
    let json = serde_json::to_value(&event).expect("a valid event serializes");
    let again = Event::from_json(event_type.as_str(), json).expect("its own JSON is valid");
    assert_eq!(again, event);
    for room in event.target().rooms() {
        assert_eq!(RoomName::parse(&room.to_string()), Some(room));
    }
}

/// The publish API's JSON decoding, for both endpoints' bodies.
pub fn publish_json(data: &[u8]) {
    if let Ok(body) = decode_json::<PublishEvent>(data) {
        let _ = body.into_event();
    }
    if let Ok(body) = decode_json::<PublishCustom>(data)
        && let Ok((name, rooms)) = body.name_and_rooms()
    {
        assert!(!rooms.is_empty());
        assert!(crate::events::EventName::parse(name.as_str()).is_ok());
    }
}
