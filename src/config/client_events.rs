//! `[client_events]`: what sockets may publish into their rooms with the `publish` command.
//! Off by default (no room kind listed): clients only receive.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::ConfigError;
use crate::rooms::pattern_matches;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClientEventsConfig {
    /// Room kinds clients may publish into: `project`, `agent`, `user`, `global`. Empty:
    /// nobody may publish.
    pub rooms: Vec<String>,
    /// Event names clients may publish; a name ending in `*` allows every name starting
    /// with what comes before it (`chat.*`). Empty: none.
    pub events: Vec<String>,
    /// Most bytes of one event's `data`, serialized as JSON.
    pub max_bytes: usize,
    /// A JSON Schema file per event name, which `data` must match. Paths are relative to
    /// the working directory of the server; each is read and compiled at startup.
    pub schemas: BTreeMap<String, PathBuf>,
}

impl Default for ClientEventsConfig {
    fn default() -> Self {
        Self {
            rooms: Vec::new(),
            events: Vec::new(),
            max_bytes: 16_384,
            schemas: BTreeMap::new(),
        }
    }
}

const ROOM_KINDS: [&str; 4] = ["global", "user", "project", "agent"];

impl ClientEventsConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if let Some(kind) = self
            .rooms
            .iter()
            .find(|k| !ROOM_KINDS.contains(&k.as_str()))
        {
            return Err(ConfigError::Invalid(format!(
                "client_events.rooms: {kind:?} is not a room kind (global, user, project, agent)"
            )));
        }
        if self.max_bytes == 0 {
            return Err(ConfigError::Invalid(
                "client_events.max_bytes must be at least 1".into(),
            ));
        }
        self.compile_schemas().map(drop)
    }

    /// Whether clients may publish into rooms of `kind` (`project`, ...).
    pub fn allows_room_kind(&self, kind: &str) -> bool {
        self.rooms.iter().any(|k| k == kind)
    }

    /// Whether `name` matches one of `events`.
    pub fn allows_event(&self, name: &str) -> bool {
        self.events.iter().any(|p| pattern_matches(p, name))
    }

    /// Reads and compiles every schema of `schemas`: a config error names the one that
    /// cannot be read, is not JSON or is no valid schema.
    pub fn compile_schemas(&self) -> Result<Schemas, ConfigError> {
        let mut compiled = HashMap::with_capacity(self.schemas.len());
        for (event, path) in &self.schemas {
            let invalid = |why: String| {
                ConfigError::Invalid(format!(
                    "client_events.schemas.\"{event}\" ({}): {why}",
                    path.display()
                ))
            };
            let text = std::fs::read_to_string(path).map_err(|e| invalid(e.to_string()))?;
            let schema: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| invalid(format!("not JSON: {e}")))?;
            let validator = jsonschema::validator_for(&schema)
                .map_err(|e| invalid(format!("not a valid JSON Schema: {e}")))?;
            compiled.insert(event.clone(), validator);
        }
        Ok(Schemas(compiled))
    }
}

/// The compiled schemas of `[client_events.schemas]`, by event name.
#[derive(Default)]
pub struct Schemas(HashMap<String, jsonschema::Validator>);

/// Why `data` does not match its event's schema: the JSON pointer of the failing field
/// (empty for the whole value) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaMismatch {
    pub field: String,
    pub message: String,
}

impl Schemas {
    /// Checks `data` against the schema of `event`, when it has one.
    pub fn check(&self, event: &str, data: &serde_json::Value) -> Result<(), SchemaMismatch> {
        let Some(validator) = self.0.get(event) else {
            return Ok(());
        };
        match validator.iter_errors(data).next() {
            None => Ok(()),
            Some(e) => Err(SchemaMismatch {
                field: e.instance_path().to_string(),
                // Masked: the message does not echo the client's data back.
                message: e.masked().to_string(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_exactly_or_by_prefix() {
        assert!(pattern_matches("chat.*", "chat.message"));
        assert!(pattern_matches("chat.message", "chat.message"));
        assert!(!pattern_matches("chat.message", "chat.messages"));
        assert!(!pattern_matches("chat.*", "typing.start"));
        assert!(pattern_matches("*", "anything"));
    }

    #[test]
    fn unknown_room_kinds_and_unreadable_schemas_are_config_errors() {
        let bad_kind = ClientEventsConfig {
            rooms: vec!["projects".into()],
            ..Default::default()
        };
        assert!(bad_kind.validate().is_err());
        let missing = ClientEventsConfig {
            schemas: [("chat.message".into(), "/nonexistent/schema.json".into())].into(),
            ..Default::default()
        };
        let err = missing.validate().unwrap_err().to_string();
        assert!(err.contains("chat.message"), "{err}");
        let dir = std::env::temp_dir().join(format!("roomcast-schemas-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (name, text, why) in [
            ("not-json.json", "{", "not JSON"),
            ("bad.json", r#"{"type": 5}"#, "not a valid JSON Schema"),
        ] {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            let config = ClientEventsConfig {
                schemas: [("chat.message".into(), path)].into(),
                ..Default::default()
            };
            let err = config.validate().unwrap_err().to_string();
            assert!(err.contains(why), "{err}");
        }
        let good = dir.join("good.json");
        std::fs::write(&good, r#"{"required": ["text"]}"#).unwrap();
        let config = ClientEventsConfig {
            schemas: [("chat.message".into(), good)].into(),
            ..Default::default()
        };
        let schemas = config.compile_schemas().unwrap();
        assert_eq!(
            schemas.check("chat.message", &serde_json::json!({"text": 1})),
            Ok(())
        );
        assert_eq!(schemas.check("other", &serde_json::json!(5)), Ok(()));
        let refused = schemas
            .check("chat.message", &serde_json::json!({}))
            .unwrap_err();
        assert_eq!(refused.field, "");
    }
}
