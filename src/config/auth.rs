//! `[auth]` and `[[auth.keys]]`: how socket tokens (JWTs) are verified.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{ConfigError, Secret};

/// The JWT secret shipped in `config.toml` and used when none is configured.
pub const DEV_JWT_SECRET: &str = "roomcast-dev-secret-do-not-use-in-production";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// HMAC secret: tokens are HS256/HS384/HS512.
    pub jwt_secret: Option<Secret>,
    /// PEM public key (RSA, EC P-256/P-384, Ed25519): tokens use the matching asymmetric algorithm.
    pub jwt_public_key_file: Option<PathBuf>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub leeway_secs: u64,
    /// A connected socket is sent `auth.expiring` this long before its token expires.
    pub expiry_warning_secs: u64,
    /// Further verification keys, each named by the `kid` tokens carry: several at once
    /// let keys rotate without downtime.
    pub keys: Vec<KeyConfig>,
    /// A JWK Set (RFC 7517) on disk, re-read every `jwks_refresh_secs`.
    pub jwks_file: Option<PathBuf>,
    /// A JWK Set fetched over HTTP(S), refreshed every `jwks_refresh_secs`; when a refresh
    /// fails the last good set stays in use. A secret: it may carry credentials.
    pub jwks_url: Option<Secret>,
    pub jwks_refresh_secs: u64,
    /// The longest lifetime a token may claim, `exp − iat` (from now when `iat` is absent
    /// or in the future); a longer one is `token_invalid`. Default: none (any lifetime).
    pub max_token_lifetime_secs: Option<u64>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            // Filled with the dev secret by `with_fallbacks` only when no key is configured, so
            // a file that sets `jwt_public_key_file` does not end up with both.
            jwt_secret: None,
            jwt_public_key_file: None,
            issuer: None,
            audience: None,
            leeway_secs: 30,
            expiry_warning_secs: 60,
            keys: Vec::new(),
            jwks_file: None,
            jwks_url: None,
            jwks_refresh_secs: 300,
            max_token_lifetime_secs: None,
        }
    }
}

/// One `[[auth.keys]]` entry: a `kid` and exactly one of an HMAC secret or a PEM public key.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    pub kid: String,
    pub secret: Option<Secret>,
    pub public_key_file: Option<PathBuf>,
}

impl AuthConfig {
    /// Whether any verification key is configured (the dev secret fills in otherwise).
    pub fn has_any_key(&self) -> bool {
        self.jwt_secret.is_some()
            || self.jwt_public_key_file.is_some()
            || !self.keys.is_empty()
            || self.jwks_file.is_some()
            || self.jwks_url.is_some()
    }

    /// The development secret when no verification key is configured at all.
    pub(super) fn with_fallbacks(&mut self) {
        if !self.has_any_key() {
            self.jwt_secret = Some(DEV_JWT_SECRET.into());
        }
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        if !self.has_any_key() {
            return invalid(
                "auth: set jwt_secret, jwt_public_key_file, [[auth.keys]], jwks_file or jwks_url"
                    .into(),
            );
        }
        match (&self.jwt_secret, &self.jwt_public_key_file) {
            (Some(_), Some(_)) => {
                return invalid(
                    "auth: set only one of jwt_secret and jwt_public_key_file (the key type pins the algorithm)"
                        .into(),
                );
            }
            (Some(secret), None) if secret.expose().len() < 16 => {
                return invalid("auth.jwt_secret must be at least 16 bytes".into());
            }
            _ => {}
        }
        self.validate_keys()?;
        if self.max_token_lifetime_secs == Some(0) {
            return invalid("auth.max_token_lifetime_secs must be at least 1 (or left out)".into());
        }
        Ok(())
    }

    fn validate_keys(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        let mut seen = std::collections::HashSet::new();
        for (i, key) in self.keys.iter().enumerate() {
            if key.kid.is_empty() || key.kid.len() > 256 {
                return invalid(format!("auth.keys[{i}]: kid must be 1 to 256 characters"));
            }
            if !seen.insert(key.kid.as_str()) {
                return invalid(format!("auth.keys[{i}]: kid {:?} is listed twice", key.kid));
            }
            match (&key.secret, &key.public_key_file) {
                (Some(_), Some(_)) | (None, None) => {
                    return invalid(format!(
                        "auth.keys[{i}] ({}): set exactly one of secret and public_key_file",
                        key.kid
                    ));
                }
                (Some(secret), None) if secret.expose().len() < 16 => {
                    return invalid(format!(
                        "auth.keys[{i}] ({}): secret must be at least 16 bytes",
                        key.kid
                    ));
                }
                _ => {}
            }
        }
        if self.jwks_file.is_some() && self.jwks_url.is_some() {
            return invalid("auth: set at most one of jwks_file and jwks_url".into());
        }
        if let Some(url) = &self.jwks_url
            && !(url.expose().starts_with("https://") || url.expose().starts_with("http://"))
        {
            return invalid("auth.jwks_url must be an http:// or https:// URL".into());
        }
        if self.jwks_refresh_secs == 0 {
            return invalid("auth.jwks_refresh_secs must be at least 1".into());
        }
        Ok(())
    }

    /// Every secret replaced by `***`, the URL's credentials too.
    pub(super) fn mask_secrets(&mut self) {
        if self.jwt_secret.is_some() {
            self.jwt_secret = Some(Secret::masked());
        }
        for key in &mut self.keys {
            if key.secret.is_some() {
                key.secret = Some(Secret::masked());
            }
        }
        if let Some(url) = &mut self.jwks_url {
            *url = url.masked_url();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::Config;

    #[test]
    fn key_secrets_are_masked() {
        let config = Config::from_toml(
            "[auth]\n[[auth.keys]]\nkid = \"k1\"\nsecret = \"rotation-secret-0123456789\"",
        )
        .unwrap();
        let text = config.to_masked_toml();
        assert!(!text.contains("rotation-secret"), "{text}");
        assert!(text.contains("kid = \"k1\""), "{text}");
    }

    #[test]
    fn auth_keys_are_validated() {
        for (toml, wanted) in [
            (
                "[[auth.keys]]\nkid = \"\"\nsecret = \"0123456789abcdef\"",
                "kid must be",
            ),
            (
                "[[auth.keys]]\nkid = \"a\"\nsecret = \"0123456789abcdef\"\n\
                 [[auth.keys]]\nkid = \"a\"\nsecret = \"0123456789abcdef\"",
                "listed twice",
            ),
            ("[[auth.keys]]\nkid = \"a\"", "exactly one of"),
            (
                "[[auth.keys]]\nkid = \"a\"\nsecret = \"short\"",
                "at least 16",
            ),
            (
                "[auth]\njwks_file = \"a\"\njwks_url = \"https://x/\"",
                "at most one of",
            ),
            ("[auth]\njwks_url = \"ftp://x/\"", "http://"),
            (
                "[auth]\njwks_file = \"a\"\njwks_refresh_secs = 0",
                "at least 1",
            ),
        ] {
            let err = Config::from_toml(toml).unwrap_err().to_string();
            assert!(err.contains(wanted), "{toml}: {err}");
            assert!(!err.contains("0123456789abcdef"), "{err}");
        }
        // Keys alone are a complete auth config: no dev secret is added beside them.
        let config =
            Config::from_toml("[[auth.keys]]\nkid = \"a\"\nsecret = \"0123456789abcdef\"").unwrap();
        assert_eq!(config.auth.jwt_secret, None);
    }
}
