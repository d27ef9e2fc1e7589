//! `[[api_keys]]`: the keys of the HTTP API, each with a name, scopes and maybe a tenant.

use serde::{Deserialize, Serialize};

use super::{ConfigError, Secret};
use crate::rooms::Tenant;

/// Names an API key may not take: the publishers Roomcast itself runs, which have idempotency
/// keys of their own (`idempotency::Publisher`).
pub const RESERVED_KEY_NAMES: &[&str] = &["github", "ingest"];

/// The API key shipped in `config.toml` and used when no key is configured.
pub const DEV_API_KEY: &str = "roomcast-dev-key";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    pub name: String,
    /// The key in plain text (convenient in development)...
    pub key: Option<Secret>,
    /// ...or its SHA-256 as hex, so the config file does not hold the secret.
    pub key_sha256: Option<String>,
    /// A key bound to a tenant may publish only into that tenant.
    pub tenant: Option<String>,
    #[serde(default = "default_scopes")]
    pub scopes: Vec<Scope>,
}

fn default_scopes() -> Vec<Scope> {
    vec![Scope::Publish]
}

/// The keys when none is configured: the development key, with every scope. A file that
/// lists keys replaces it (figment replaces arrays), so it never lingers beside real ones.
pub(super) fn default_api_keys() -> Vec<ApiKeyConfig> {
    vec![ApiKeyConfig {
        name: "dev".into(),
        key: Some(DEV_API_KEY.into()),
        key_sha256: None,
        tenant: None,
        scopes: vec![Scope::Publish, Scope::Read, Scope::Admin],
    }]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// `POST /api/v1/events`, `POST /api/v1/broadcast`.
    Publish,
    /// Stats, presence and history endpoints.
    Read,
    /// `GET /api/v1/admin/overview` (the `/admin` page).
    Admin,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Publish => "publish",
            Self::Read => "read",
            Self::Admin => "admin",
        }
    }
}

/// Validates every key. Plain-text keys are allowed only while the server binds a loopback
/// address (`loopback`): that is what "development" means here.
pub(super) fn validate(keys: &[ApiKeyConfig], loopback: bool) -> Result<(), ConfigError> {
    let invalid = |m: String| Err(ConfigError::Invalid(m));
    validate_names(keys)?;
    for (i, key) in keys.iter().enumerate() {
        if key.key.is_some() && !loopback {
            return invalid(format!(
                "api_keys[{i}] ({}): a plain-text key is allowed only while server.bind is a \
                 loopback address (development); store key_sha256 instead \
                 (printf %s \"$KEY\" | sha256sum)",
                key.name
            ));
        }
        match (&key.key, &key.key_sha256) {
            (None, None) | (Some(_), Some(_)) => {
                return invalid(format!(
                    "api_keys[{i}] ({}): set exactly one of key and key_sha256",
                    key.name
                ));
            }
            (Some(k), None) if k.expose().len() < 8 => {
                return invalid(format!(
                    "api_keys[{i}] ({}): key must be at least 8 characters",
                    key.name
                ));
            }
            (None, Some(h)) if h.len() != 64 || hex::decode(h).is_err() => {
                return invalid(format!(
                    "api_keys[{i}] ({}): key_sha256 must be 64 hex digits",
                    key.name
                ));
            }
            _ => {}
        }
        if let Some(tenant) = &key.tenant
            && Tenant::parse(tenant).is_none()
        {
            return invalid(format!(
                "api_keys[{i}] ({}): tenant {tenant:?} is not a valid tenant id",
                key.name
            ));
        }
        if key.tenant.is_some() && key.scopes.contains(&Scope::Admin) {
            return invalid(format!(
                "api_keys[{i}] ({}): the admin scope shows every tenant; a key bound to a tenant cannot have it",
                key.name
            ));
        }
    }
    Ok(())
}

/// A key's `name` is its identity: it scopes the key's idempotency keys and its publish
/// budget. So names are ids (no `:` to run into the idempotency key after them), unique,
/// and none is the namespace of an internal publisher (a key named `github` would own
/// the webhook's idempotency keys).
fn validate_names(keys: &[ApiKeyConfig]) -> Result<(), ConfigError> {
    let invalid = |m: String| Err(ConfigError::Invalid(m));
    let mut seen = std::collections::HashMap::new();
    for (i, key) in keys.iter().enumerate() {
        let name = key.name.as_str();
        if crate::rooms::Id::parse(name).is_none() {
            return invalid(format!(
                "api_keys[{i}]: name {name:?} must be 1 to 128 characters of [A-Za-z0-9_.-]"
            ));
        }
        if RESERVED_KEY_NAMES.contains(&name) {
            return invalid(format!(
                "api_keys[{i}]: name {name:?} is reserved for an internal publisher ({}); \
                 choose another name",
                RESERVED_KEY_NAMES.join(", ")
            ));
        }
        if let Some(first) = seen.insert(name, i) {
            return invalid(format!(
                "api_keys[{i}]: name {name:?} is already used by api_keys[{first}]; each key \
                 needs its own name (it scopes the key's idempotency keys and publish budget)"
            ));
        }
    }
    Ok(())
}

/// Every plain-text key replaced by `***`.
pub(super) fn mask_secrets(keys: &mut [ApiKeyConfig]) {
    for key in keys {
        if key.key.is_some() {
            key.key = Some(Secret::masked());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::Config;

    #[test]
    fn tenant_keys_cannot_be_admins() {
        let err = Config::from_toml(
            "[[api_keys]]\nname = \"t\"\nkey = \"tenant-key-1\"\ntenant = \"acme\"\nscopes = [\"read\", \"admin\"]",
        )
        .unwrap_err();
        assert!(err.to_string().contains("admin scope"), "{err}");
    }

    /// "Development" is a loopback `server.bind`: there plain-text API keys are fine, on any
    /// other address only `key_sha256`.
    #[test]
    fn plain_api_keys_only_on_loopback() {
        let keys = "[auth]\njwt_secret = \"0123456789abcdef0123\"\n\
                    [[api_keys]]\nname = \"b\"\nkey = \"a-plain-key-123\"";
        for bind in ["127.0.0.1:8000", "[::1]:8000"] {
            Config::from_toml(&format!("[server]\nbind = \"{bind}\"\n{keys}")).unwrap();
        }
        for bind in ["0.0.0.0:8000", "10.1.2.3:8000", "[::]:8000"] {
            let err = Config::from_toml(&format!("[server]\nbind = \"{bind}\"\n{keys}"))
                .unwrap_err()
                .to_string();
            assert!(err.contains("plain-text key"), "{bind}: {err}");
            assert!(!err.contains("a-plain-key-123"), "{err}");
        }
    }
}
