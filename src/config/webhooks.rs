//! `[[webhooks]]`: outbound webhooks, what Roomcast tells backends about its rooms (see
//! [`crate::hooks_out`]). Not to be confused with `[github]`, the inbound GitHub webhooks.

use serde::{Deserialize, Serialize};

use super::{ConfigError, Secret};

/// The shortest accepted `secret`, in bytes.
pub const MIN_WEBHOOK_SECRET: usize = 16;

/// One backend that is sent events: `POST url` with batches of JSON events, signed with
/// `secret`. Every field but `url`, `secret` and `events` has a default.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookConfig {
    /// `http://` or `https://`. No default: an entry without one is refused.
    pub url: String,
    /// The HMAC-SHA256 key of `X-Roomcast-Signature`, at least 16 bytes. No default.
    pub secret: Secret,
    /// Which events are sent (at least one).
    pub events: Vec<HookKind>,
    /// Only events of rooms of these kinds (`global`, `user`, `project`, `agent`); events
    /// without a room (`connection.*`) are not filtered. Unset: every room.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rooms: Option<Vec<RoomKind>>,
    /// A batch is sent once it holds this many events...
    pub batch_max_events: usize,
    /// ...or its first event has waited this long.
    pub batch_max_ms: u64,
    /// One attempt (connect, send, answer) may take this long.
    pub timeout_ms: u64,
    /// The first retry waits this long; each next one twice as long (with jitter), up to
    /// `retry_max_delay_ms`.
    pub retry_initial_ms: u64,
    pub retry_max_delay_ms: u64,
    /// A batch not accepted within this many seconds of its first attempt is dropped
    /// (counted in `roomcast_webhook_events_dropped_total{reason="expired"}`).
    pub retry_max_age_secs: u64,
    /// Events waiting to be sent; when full, the oldest is dropped (counted with
    /// `reason="queue_full"`).
    pub queue_max_events: usize,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            secret: Secret::new(""),
            events: Vec::new(),
            rooms: None,
            batch_max_events: 100,
            batch_max_ms: 200,
            timeout_ms: 5_000,
            retry_initial_ms: 500,
            retry_max_delay_ms: 30_000,
            retry_max_age_secs: 600,
            queue_max_events: 10_000,
        }
    }
}

/// An event type a webhook can be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum HookKind {
    /// The first socket joined a room (cluster-wide).
    #[serde(rename = "room.occupied")]
    RoomOccupied,
    /// The last socket left a room (cluster-wide).
    #[serde(rename = "room.vacated")]
    RoomVacated,
    #[serde(rename = "presence.joined")]
    PresenceJoined,
    #[serde(rename = "presence.left")]
    PresenceLeft,
    #[serde(rename = "connection.opened")]
    ConnectionOpened,
    #[serde(rename = "connection.closed")]
    ConnectionClosed,
    /// A client's non-volatile publish into a room.
    #[serde(rename = "client_event")]
    ClientEvent,
}

impl HookKind {
    /// The wire name (the event's `type`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RoomOccupied => "room.occupied",
            Self::RoomVacated => "room.vacated",
            Self::PresenceJoined => "presence.joined",
            Self::PresenceLeft => "presence.left",
            Self::ConnectionOpened => "connection.opened",
            Self::ConnectionClosed => "connection.closed",
            Self::ClientEvent => "client_event",
        }
    }
}

/// A kind of room, for a webhook's `rooms` filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoomKind {
    Global,
    User,
    Project,
    Agent,
}

impl WebhookConfig {
    fn validate(&self, at: usize) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(format!("webhooks[{at}]: {m}")));
        match reqwest::Url::parse(&self.url) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {}
            // The URL is not repeated: its query may carry a token.
            _ => return invalid("url must be an http:// or https:// URL".into()),
        }
        if self.secret.expose().len() < MIN_WEBHOOK_SECRET {
            return invalid(format!(
                "secret must be at least {MIN_WEBHOOK_SECRET} bytes"
            ));
        }
        if self.events.is_empty() {
            return invalid("events must name at least one event type".into());
        }
        if self.rooms.as_ref().is_some_and(Vec::is_empty) {
            return invalid("rooms, when set, must name at least one room kind".into());
        }
        if self.batch_max_events == 0 || self.queue_max_events == 0 {
            return invalid("batch_max_events and queue_max_events must be at least 1".into());
        }
        if self.timeout_ms == 0 || self.retry_initial_ms == 0 {
            return invalid("timeout_ms and retry_initial_ms must be at least 1".into());
        }
        if self.retry_max_delay_ms < self.retry_initial_ms {
            return invalid("retry_max_delay_ms must be at least retry_initial_ms".into());
        }
        Ok(())
    }

    fn mask_secrets(&mut self) {
        self.secret = Secret::masked();
        self.url = Secret::new(self.url.as_str())
            .masked_url()
            .expose()
            .to_owned();
    }
}

pub(super) fn validate(webhooks: &[WebhookConfig]) -> Result<(), ConfigError> {
    webhooks
        .iter()
        .enumerate()
        .try_for_each(|(at, w)| w.validate(at))
}

pub(super) fn mask_secrets(webhooks: &mut [WebhookConfig]) {
    webhooks.iter_mut().for_each(WebhookConfig::mask_secrets);
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use super::*;

    const OK: &str = "url = \"https://backend.example/hooks\"\nsecret = \"0123456789abcdef\"\nevents = [\"room.occupied\"]";

    #[test]
    fn a_webhook_needs_a_url_a_long_secret_and_events() {
        let config = Config::from_toml(&format!("[[webhooks]]\n{OK}")).unwrap();
        assert_eq!(config.webhooks[0].events, [HookKind::RoomOccupied]);
        assert_eq!(config.webhooks[0].batch_max_events, 100);
        for bad in [
            OK.replace("https://backend.example/hooks", "ftp://x/"),
            OK.replace("https://backend.example/hooks", "not a url"),
            OK.replace("0123456789abcdef", "short"),
            OK.replace("[\"room.occupied\"]", "[]"),
            OK.replace("[\"room.occupied\"]", "[\"room.full\"]"),
            format!("{OK}\nrooms = []"),
            format!("{OK}\nrooms = [\"lobby\"]"),
            format!("{OK}\nbatch_max_events = 0"),
        ] {
            assert!(
                Config::from_toml(&format!("[[webhooks]]\n{bad}")).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_webhook_secret_and_url_credentials_are_masked() {
        let config = Config::from_toml(&format!(
            "[[webhooks]]\n{}",
            OK.replace("/hooks", "/hooks?token=tok123")
        ))
        .unwrap();
        let text = config.to_masked_toml();
        assert!(!text.contains("0123456789abcdef"), "{text}");
        assert!(!text.contains("tok123"), "{text}");
        assert!(!format!("{config:?}").contains("0123456789abcdef"));
    }
}
