//! Room names, tenant scoping and the access policy.
//!
//! A [`RoomName`] that exists is valid: raw strings stop at [`RoomName::parse`]. Inside the
//! Socket.IO adapter every room is prefixed with its tenant (`acme/project:1`); the tenant
//! charset has no `/`, so the prefix is unambiguous and tenants never share a room.

use std::borrow::Cow;
use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, de};

/// The longest id (user, project, agent, tenant, ...) Roomcast accepts.
pub const MAX_ID_LEN: usize = 128;

fn is_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_ID_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// An identifier: 1 to 128 characters of `[A-Za-z0-9_.-]`.
///
/// Deserializes from a string or an integer (publishers often send numeric ids); it is always
/// serialized as a string.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, JsonSchema)]
#[schemars(
    with = "String",
    description = "1 to 128 characters of [A-Za-z0-9_.-]; integers are accepted and converted to strings"
)]
pub struct Id(String);

impl Id {
    pub fn parse(s: &str) -> Option<Self> {
        is_id(s).then(|| Self(s.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Id;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an id: 1 to 128 characters of [A-Za-z0-9_.-], or an integer")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Id, E> {
                Id::parse(s).ok_or_else(|| {
                    E::custom(format!(
                        "invalid id {:?}: expected 1 to 128 characters of [A-Za-z0-9_.-]",
                        truncate(s)
                    ))
                })
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Id, E> {
                Ok(Id(n.to_string()))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Id, E> {
                // Negative numbers contain '-', still within the charset.
                Ok(Id(n.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// A tenant id; same charset as [`Id`].
pub type Tenant = Id;

impl Id {
    /// The tenant used when a token or publish names none.
    pub fn default_tenant() -> Self {
        Self("default".into())
    }
}

fn truncate(s: &str) -> &str {
    match s.char_indices().nth(64) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// The adapter-level room every socket of one (tenant, user) joins at connect and never
/// leaves: how `POST /api/v1/users/{id}/disconnect` finds a user's sockets on every node.
/// It starts with `#`, which no tenant id holds, so it is never a scoped public room: no
/// client command can name it, and the listings (stats, presence, recovery) skip it.
pub fn identity_room(tenant: &Tenant, user: &Id) -> Cow<'static, str> {
    Cow::Owned(format!("#{tenant}/{user}"))
}

/// The `(tenant, user)` of an [`identity_room`]; `None` for any other room.
pub fn parse_identity_room(room: &str) -> Option<(Tenant, Id)> {
    let (tenant, user) = room.strip_prefix('#')?.split_once('/')?;
    Some((Id::parse(tenant)?, Id::parse(user)?))
}

/// Whether an adapter-level room is an [`identity_room`] rather than a scoped public room.
pub fn is_identity_room(room: &str) -> bool {
    room.starts_with('#')
}

/// The kinds of room a client can be in.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RoomName {
    Global,
    User(Id),
    Project(Id),
    Agent(Id),
}

impl RoomName {
    /// Parses a public room name: `global`, `user:<id>`, `project:<id>`, `agent:<id>`.
    pub fn parse(s: &str) -> Option<Self> {
        if s == "global" {
            return Some(Self::Global);
        }
        let (kind, id) = s.split_once(':')?;
        let id = Id::parse(id)?;
        match kind {
            "user" => Some(Self::User(id)),
            "project" => Some(Self::Project(id)),
            "agent" => Some(Self::Agent(id)),
            _ => None,
        }
    }

    /// The adapter-level name: the public name prefixed with the tenant.
    pub fn scoped(&self, tenant: &Tenant) -> Cow<'static, str> {
        Cow::Owned(format!("{tenant}/{self}"))
    }

    /// Splits an adapter-level room back into tenant and public name; `None` for an
    /// [identity room](identity_room).
    pub fn unscope(room: &str) -> Option<(&str, &str)> {
        if is_identity_room(room) {
            return None;
        }
        room.split_once('/')
    }

    /// The room's kind: `global`, `user`, `project` or `agent`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Global => "global",
            Self::User(_) => "user",
            Self::Project(_) => "project",
            Self::Agent(_) => "agent",
        }
    }

    /// Whether `who` may join this room. Rooms are already scoped to `who`'s tenant, so
    /// this never grants access across tenants.
    pub fn allows(&self, who: &Identity) -> bool {
        if who.is_admin() {
            return true;
        }
        match self {
            Self::Global => true,
            Self::User(id) => *id == who.user_id,
            Self::Project(id) => who.projects.contains(id),
            Self::Agent(id) => who.agents.contains(id),
        }
    }
}

impl fmt::Display for RoomName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Global => f.write_str("global"),
            Self::User(id) => write!(f, "user:{id}"),
            Self::Project(id) => write!(f, "project:{id}"),
            Self::Agent(id) => write!(f, "agent:{id}"),
        }
    }
}

impl Serialize for RoomName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for RoomName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = Cow::<str>::deserialize(d)?;
        RoomName::parse(&s).ok_or_else(|| {
            de::Error::custom(format!(
                "invalid room {:?}: expected global, user:<id>, project:<id> or agent:<id>",
                truncate(&s)
            ))
        })
    }
}

impl JsonSchema for RoomName {
    fn schema_name() -> Cow<'static, str> {
        "RoomName".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^(global|(user|project|agent):[A-Za-z0-9_.-]{1,128})$"
        })
    }
}

/// A grant of ids from a token claim: a list, or `"*"` for all of them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Grant {
    #[default]
    None,
    All,
    Some(Box<[Id]>),
}

impl Grant {
    pub fn contains(&self, id: &Id) -> bool {
        match self {
            Self::None => false,
            Self::All => true,
            Self::Some(ids) => ids.contains(id),
        }
    }
}

impl<'de> Deserialize<'de> for Grant {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Star(String),
            List(Vec<Id>),
        }
        match Option::<Raw>::deserialize(d)? {
            None => Ok(Self::None),
            Some(Raw::Star(s)) if s == "*" => Ok(Self::All),
            Some(Raw::Star(_)) => Err(de::Error::custom(
                "expected an array of ids or the string \"*\"",
            )),
            Some(Raw::List(ids)) => Ok(Self::Some(ids.into())),
        }
    }
}

impl Serialize for Grant {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::None => s.serialize_none(),
            Self::All => s.serialize_str("*"),
            Self::Some(ids) => ids.serialize(s),
        }
    }
}

/// `pattern` is `name`, or ends in `*` and `name` starts with what comes before it
/// (`chat.*`, `project:*`, `*`).
pub fn pattern_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

/// The token's `publish` claim: the rooms its holder may publish into, `"*"` or a list of
/// room names, each of which may end in `*` (`project:*`). It only narrows what
/// `[client_events] rooms` allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomPatterns(Box<[String]>);

impl RoomPatterns {
    pub fn allows(&self, room: &RoomName) -> bool {
        let name = room.to_string();
        self.0.iter().any(|p| pattern_matches(p, &name))
    }
}

impl<'de> Deserialize<'de> for RoomPatterns {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Star(String),
            List(Vec<String>),
        }
        match Raw::deserialize(d)? {
            Raw::Star(s) if s == "*" => Ok(Self(["*".to_owned()].into())),
            Raw::Star(_) => Err(de::Error::custom(
                "expected an array of room patterns or the string \"*\"",
            )),
            Raw::List(patterns) => Ok(Self(patterns.into())),
        }
    }
}

impl Serialize for RoomPatterns {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

/// Who a socket is: the verified claims of its token. Shared as an `Arc` per socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user_id: Id,
    pub tenant: Tenant,
    pub projects: Grant,
    pub agents: Grant,
    pub role: Option<String>,
    /// The `publish` claim; `None` (no claim) leaves `[client_events] rooms` as it is.
    pub publish: Option<RoomPatterns>,
    /// Token expiry, seconds since the Unix epoch.
    pub expires_at: u64,
}

impl Identity {
    pub fn is_admin(&self) -> bool {
        self.role.as_deref() == Some("admin")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_identity_room_parses_back_to_its_tenant_and_user() {
        let (tenant, user) = (Id::parse("acme").unwrap(), Id::parse("alice").unwrap());
        let room = identity_room(&tenant, &user);
        assert_eq!(parse_identity_room(&room), Some((tenant.clone(), user)));
        assert_eq!(parse_identity_room(&RoomName::Global.scoped(&tenant)), None);
        assert_eq!(parse_identity_room("#acme"), None);
    }

    #[test]
    fn the_publish_claim_is_star_or_room_patterns() {
        let room = |s: &str| RoomName::parse(s).unwrap();
        let star: RoomPatterns = serde_json::from_str(r#""*""#).unwrap();
        assert!(star.allows(&room("global")) && star.allows(&room("agent:a")));
        let some: RoomPatterns = serde_json::from_str(r#"["project:42", "agent:*"]"#).unwrap();
        assert!(some.allows(&room("project:42")) && some.allows(&room("agent:b")));
        assert!(!some.allows(&room("project:420")) && !some.allows(&room("global")));
        let none: RoomPatterns = serde_json::from_str("[]").unwrap();
        assert!(!none.allows(&room("project:42")));
        for bad in [r#""project:42""#, "5", r#"[1]"#, "null"] {
            assert!(serde_json::from_str::<RoomPatterns>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn parses_the_four_kinds() {
        assert_eq!(RoomName::parse("global"), Some(RoomName::Global));
        assert_eq!(
            RoomName::parse("project:42").unwrap().to_string(),
            "project:42"
        );
        assert!(matches!(
            RoomName::parse("agent:a-1.b_2"),
            Some(RoomName::Agent(_))
        ));
        assert!(matches!(
            RoomName::parse("user:alice"),
            Some(RoomName::User(_))
        ));
    }

    #[test]
    fn rejects_everything_else() {
        let long = format!("project:{}", "a".repeat(129));
        for bad in [
            "",
            "global:1",
            "project:",
            "project",
            "foo:1",
            "project:a/b",
            "project:a:b",
            "project:é",
            "Project:1",
            " project:1",
            "project:1 ",
            long.as_str(),
        ] {
            assert_eq!(RoomName::parse(bad), None, "{bad:?}");
        }
        assert!(RoomName::parse(&format!("project:{}", "a".repeat(128))).is_some());
    }

    #[test]
    fn scoping_round_trips() {
        let tenant = Id::parse("acme").unwrap();
        let scoped = RoomName::parse("project:1").unwrap().scoped(&tenant);
        assert_eq!(scoped, "acme/project:1");
        assert_eq!(RoomName::unscope(&scoped), Some(("acme", "project:1")));
    }

    #[test]
    fn identity_rooms_are_no_public_room() {
        let (tenant, user) = (Id::parse("acme").unwrap(), Id::parse("alice").unwrap());
        let room = identity_room(&tenant, &user);
        assert!(is_identity_room(&room));
        assert_eq!(RoomName::unscope(&room), None);
        for name in ["global", "user:alice", "project:1"] {
            let scoped = RoomName::parse(name).unwrap().scoped(&tenant);
            assert!(!is_identity_room(&scoped), "{scoped}");
            assert_ne!(scoped, room);
        }
    }

    #[test]
    fn ids_accept_integers() {
        let id: Id = serde_json::from_str("42").unwrap();
        assert_eq!(id.as_str(), "42");
        assert!(serde_json::from_str::<Id>("\"a b\"").is_err());
        assert!(serde_json::from_str::<Id>("1.5").is_err());
    }

    #[test]
    fn grants() {
        let g: Grant = serde_json::from_str("\"*\"").unwrap();
        assert!(g.contains(&Id::parse("x").unwrap()));
        let g: Grant = serde_json::from_str("[1, \"b\"]").unwrap();
        assert!(g.contains(&Id::parse("1").unwrap()));
        assert!(!g.contains(&Id::parse("c").unwrap()));
        assert!(serde_json::from_str::<Grant>("\"all\"").is_err());
    }
}
