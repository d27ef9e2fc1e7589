//! The envelope every delivered event travels in, and custom event names.

use std::fmt;

use serde::{Serialize, Serializer};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::rooms::RoomName;

/// `{id, type, room, timestamp, data}`: what a client receives for every event.
#[derive(Debug, Serialize)]
pub struct Envelope<'a, T: Serialize + ?Sized> {
    /// UUIDv7: time-ordered, unique per publish.
    pub id: Uuid,
    #[serde(rename = "type")]
    pub event_type: &'a str,
    /// The public room name (no tenant prefix); for multi-room events, the primary room.
    pub room: &'a RoomName,
    pub timestamp: Timestamp,
    /// The event's number in `room` and the room's epoch (absent for volatile events).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epoch: Option<&'a str>,
    /// For an event in several rooms, its position in the others.
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    pub also: &'a [crate::history::Position],
    pub data: &'a T,
}

/// A UTC instant rendered as RFC 3339 with milliseconds: `2026-11-22T10:00:00.123Z`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timestamp(pub OffsetDateTime);

impl Timestamp {
    pub fn now() -> Self {
        Self(OffsetDateTime::now_utc())
    }

    /// From seconds since the Unix epoch (a JWT `exp`).
    pub fn from_unix_secs(secs: u64) -> Self {
        Self(
            OffsetDateTime::from_unix_timestamp(secs.min(i64::MAX as u64) as i64)
                .unwrap_or(OffsetDateTime::UNIX_EPOCH),
        )
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = self.0.to_offset(time::UtcOffset::UTC);
        write!(
            f,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            t.millisecond()
        )
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A custom event name for `POST /api/v1/broadcast`: `^[a-z][a-z0-9_.:-]{0,63}$`, not reserved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventName(String);

/// Names Socket.IO or Roomcast itself gives meaning to.
const RESERVED: &[&str] = &[
    "connect",
    "connect_error",
    "disconnect",
    "disconnecting",
    "error",
    "newlistener",
    "removelistener",
];
const RESERVED_PREFIXES: &[&str] = &["connection.", "auth.", "server.", "presence."];

impl EventName {
    pub fn parse(s: &str) -> Result<Self, &'static str> {
        let b = s.as_bytes();
        let shape_ok = !b.is_empty()
            && b.len() <= 64
            && b[0].is_ascii_lowercase()
            && b.iter().all(|c| {
                c.is_ascii_lowercase()
                    || c.is_ascii_digit()
                    || matches!(c, b'_' | b'.' | b':' | b'-')
            });
        if !shape_ok {
            return Err("event names match ^[a-z][a-z0-9_.:-]{0,63}$");
        }
        if RESERVED.contains(&s) || RESERVED_PREFIXES.iter().any(|p| s.starts_with(p)) {
            return Err("this event name is reserved");
        }
        if super::EventType::parse(s).is_some() {
            return Err("typed events are published with POST /api/v1/events");
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_always_have_millis() {
        let t = Timestamp(time::macros::datetime!(2026-11-22 10:00:00 UTC));
        assert_eq!(t.to_string(), "2026-11-22T10:00:00.000Z");
        let t = Timestamp(time::macros::datetime!(2026-11-22 10:00:00.123456 UTC));
        assert_eq!(t.to_string(), "2026-11-22T10:00:00.123Z");
        let t = Timestamp(time::macros::datetime!(2026-11-22 10:00:00.1 UTC));
        assert_eq!(t.to_string(), "2026-11-22T10:00:00.100Z");
    }

    #[test]
    fn event_names() {
        assert!(EventName::parse("deploy.finished").is_ok());
        assert!(EventName::parse("a").is_ok());
        for bad in [
            "",
            "Deploy",
            "1abc",
            "a b",
            "connect",
            "error",
            "connection.established",
            "auth.refresh",
            "project.updated",
            "a/b",
        ] {
            assert!(EventName::parse(bad).is_err(), "{bad}");
        }
        assert!(EventName::parse(&"a".repeat(65)).is_err());
    }
}
