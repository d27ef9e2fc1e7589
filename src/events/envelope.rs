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
    pub also: &'a [Position],
    /// Who published a client event (`publish` command); set by the server only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<&'a Sender>,
    pub data: &'a T,
}

/// The socket a client event came from, as the envelope's `from` tells it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Sender {
    pub user_id: String,
    pub sid: String,
}

/// A client event's origin: its sender, and whether the sender receives it too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub from: Sender,
    pub echo: bool,
}

impl Origin {
    /// The socket the event skips: the sender's, unless it asked for an echo.
    pub fn except(&self) -> Option<&str> {
        (!self.echo).then_some(self.from.sid.as_str())
    }
}

impl<T: Serialize + ?Sized> Envelope<'_, T> {
    /// Serializes an event's envelope once, timestamped now; `positions` (empty for an
    /// unnumbered event) numbers it in each of `rooms` (non-empty), in order; `origin` is
    /// a client event's.
    pub fn encode(
        id: Uuid,
        event_type: &str,
        rooms: &[RoomName],
        positions: &[Position],
        origin: Option<&Origin>,
        data: &T,
    ) -> Result<std::sync::Arc<serde_json::value::RawValue>, serde_json::Error> {
        let envelope = Envelope {
            id,
            event_type,
            room: &rooms[0],
            timestamp: Timestamp::now(),
            seq: positions.first().map(|p| p.seq),
            epoch: positions.first().map(|p| &*p.epoch),
            also: positions.get(1..).unwrap_or_default(),
            from: origin.map(|o| &o.from),
            data,
        };
        serde_json::value::to_raw_value(&envelope).map(std::sync::Arc::from)
    }
}

/// A UTC instant rendered as RFC 3339 with milliseconds: `2026-11-22T10:00:00.123Z`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timestamp(pub OffsetDateTime);

impl Timestamp {
    pub fn now() -> Self {
        Self(OffsetDateTime::now_utc())
    }

    /// From seconds since the Unix epoch (a JWT `exp`); a time past year 9999 shows as
    /// its last second, not as 1970 (which would read as long expired).
    pub fn from_unix_secs(secs: u64) -> Self {
        const LAST: i64 = 253_402_300_799; // 9999-12-31T23:59:59Z
        Self(
            OffsetDateTime::from_unix_timestamp(secs.min(LAST as u64) as i64)
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
const RESERVED_PREFIXES: &[&str] = &[
    "connection.",
    "auth.",
    "server.",
    "presence.",
    "stream.",
    "lock.",
];

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

/// An event's place in one of its rooms, as carried by the envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Position {
    pub room: RoomName,
    pub seq: u64,
    pub epoch: std::sync::Arc<str>,
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
