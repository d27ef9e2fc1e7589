//! JWT verification. The algorithm family is pinned by the configured key: an HMAC secret
//! accepts HS256/384/512 only, a PEM public key only its own family, so `alg: none` and
//! HS/RS confusion are refused before any signature check.

use std::fmt;
use std::path::Path;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::config::AuthConfig;
use crate::rooms::{Grant, Id, Tenant};

/// Who a socket is: the verified claims of its token. Shared as an `Arc` per socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user_id: Id,
    pub tenant: Tenant,
    pub projects: Grant,
    pub agents: Grant,
    pub role: Option<String>,
    /// Token expiry, seconds since the Unix epoch.
    pub expires_at: u64,
}

impl Identity {
    pub fn is_admin(&self) -> bool {
        self.role.as_deref() == Some("admin")
    }
}

/// The claims Roomcast reads (and `roomcast token` writes).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenClaims {
    pub sub: String,
    /// Seconds since the epoch; a fractional value (allowed by RFC 7519) is truncated.
    #[serde(deserialize_with = "whole_seconds")]
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<serde_json::Number>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    #[serde(default, skip_serializing_if = "is_none_grant")]
    pub projects: Grant,
    #[serde(default, skip_serializing_if = "is_none_grant")]
    pub agents: Grant,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// A string or an array of strings (RFC 7519); `jsonwebtoken` checks it against the config.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<serde_json::Value>,
}

fn whole_seconds<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let n = serde_json::Number::deserialize(d)?;
    n.as_u64()
        .or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
        .ok_or_else(|| serde::de::Error::custom("exp must be a non-negative number"))
}

impl TokenClaims {
    /// Claims for `sub` expiring at `exp`, with nothing else granted.
    pub fn new(sub: impl Into<String>, exp: u64) -> Self {
        Self {
            sub: sub.into(),
            exp,
            iat: None,
            tenant: None,
            projects: Grant::None,
            agents: Grant::None,
            role: None,
            iss: None,
            aud: None,
        }
    }
}

fn is_none_grant(g: &Grant) -> bool {
    *g == Grant::None
}

/// Why a handshake was refused; the `Display` form is the `connect_error` message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthError {
    TokenMissing,
    TokenInvalid,
    TokenExpired,
}

impl AuthError {
    pub fn code(self) -> &'static str {
        match self {
            Self::TokenMissing => "token_missing",
            Self::TokenInvalid => "token_invalid",
            Self::TokenExpired => "token_expired",
        }
    }
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl std::error::Error for AuthError {}

/// Verifies tokens against the configured key.
#[derive(Clone)]
pub struct JwtVerifier {
    key: DecodingKey,
    validation: Validation,
}

impl fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("algorithms", &self.validation.algorithms)
            .finish_non_exhaustive()
    }
}

impl JwtVerifier {
    pub fn from_config(config: &AuthConfig) -> anyhow::Result<Self> {
        let (key, algorithms) = match (&config.jwt_secret, &config.jwt_public_key_file) {
            (Some(secret), _) => (
                DecodingKey::from_secret(secret.as_bytes()),
                vec![Algorithm::HS256, Algorithm::HS384, Algorithm::HS512],
            ),
            (None, Some(path)) => load_public_key(path)?,
            (None, None) => anyhow::bail!("auth: no jwt_secret or jwt_public_key_file"),
        };
        let mut validation = Validation::new(algorithms[0]);
        validation.algorithms = algorithms;
        validation.leeway = config.leeway_secs;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "sub"]);
        if let Some(iss) = &config.issuer {
            validation.set_issuer(&[iss]);
            validation.required_spec_claims.insert("iss".into());
        }
        match &config.audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                validation.required_spec_claims.insert("aud".into());
            }
            None => validation.validate_aud = false,
        }
        Ok(Self { key, validation })
    }

    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        let data = jsonwebtoken::decode::<TokenClaims>(token, &self.key, &self.validation)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::TokenExpired,
                _ => AuthError::TokenInvalid,
            })?;
        let claims = data.claims;
        let user_id = Id::parse(&claims.sub).ok_or(AuthError::TokenInvalid)?;
        let tenant = match claims.tenant.as_deref() {
            None => Tenant::default_tenant(),
            Some(t) => Tenant::parse(t).ok_or(AuthError::TokenInvalid)?,
        };
        Ok(Identity {
            user_id,
            tenant,
            projects: claims.projects,
            agents: claims.agents,
            role: claims.role,
            expires_at: claims.exp,
        })
    }
}

/// Reads a PEM public key and returns it with the algorithms of its family.
fn load_public_key(path: &Path) -> anyhow::Result<(DecodingKey, Vec<Algorithm>)> {
    let pem = std::fs::read(path)
        .map_err(|e| anyhow::anyhow!("auth.jwt_public_key_file {}: {e}", path.display()))?;
    if let Ok(key) = DecodingKey::from_rsa_pem(&pem) {
        use Algorithm::*;
        return Ok((key, vec![RS256, RS384, RS512, PS256, PS384, PS512]));
    }
    if let Ok(key) = DecodingKey::from_ec_pem(&pem) {
        return Ok((key, vec![Algorithm::ES256, Algorithm::ES384]));
    }
    if let Ok(key) = DecodingKey::from_ed_pem(&pem) {
        return Ok((key, vec![Algorithm::EdDSA]));
    }
    anyhow::bail!(
        "auth.jwt_public_key_file {}: not an RSA, EC or Ed25519 public key in PEM form",
        path.display()
    )
}

/// Signs claims with an HMAC secret (HS256): the `roomcast token` developer convenience.
pub fn sign_hs256(secret: &str, claims: &TokenClaims) -> anyhow::Result<String> {
    Ok(jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )?)
}

pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn verifier() -> JwtVerifier {
        JwtVerifier::from_config(&AuthConfig {
            jwt_secret: Some(SECRET.into()),
            leeway_secs: 0,
            ..AuthConfig::default()
        })
        .unwrap()
    }

    fn claims(sub: &str, exp: u64) -> TokenClaims {
        TokenClaims::new(sub, exp)
    }

    #[test]
    fn accepts_a_valid_token() {
        let token = sign_hs256(SECRET, &claims("alice", now_secs() + 60)).unwrap();
        let id = verifier().verify(&token).unwrap();
        assert_eq!(id.user_id.as_str(), "alice");
        assert_eq!(id.tenant.as_str(), "default");
    }

    #[test]
    fn expired_and_invalid() {
        let v = verifier();
        let old = sign_hs256(SECRET, &claims("alice", now_secs() - 3600)).unwrap();
        assert_eq!(v.verify(&old), Err(AuthError::TokenExpired));
        let wrong = sign_hs256(
            "another-secret-0123456789",
            &claims("alice", now_secs() + 60),
        )
        .unwrap();
        assert_eq!(v.verify(&wrong), Err(AuthError::TokenInvalid));
        assert_eq!(v.verify("garbage"), Err(AuthError::TokenInvalid));
        let bad_sub = sign_hs256(SECRET, &claims("a b", now_secs() + 60)).unwrap();
        assert_eq!(v.verify(&bad_sub), Err(AuthError::TokenInvalid));
    }

    #[test]
    fn issuer_and_audience_are_required_when_configured() {
        let v = JwtVerifier::from_config(&AuthConfig {
            jwt_secret: Some(SECRET.into()),
            issuer: Some("iss".into()),
            audience: Some("aud".into()),
            leeway_secs: 0,
            ..AuthConfig::default()
        })
        .unwrap();
        let mut c = claims("alice", now_secs() + 60);
        c.iss = Some("iss".into());
        assert_eq!(
            v.verify(&sign_hs256(SECRET, &c).unwrap()),
            Err(AuthError::TokenInvalid)
        );
        c.aud = Some("aud".into());
        assert!(v.verify(&sign_hs256(SECRET, &c).unwrap()).is_ok());
        c.aud = Some(serde_json::json!(["other", "aud"]));
        assert!(v.verify(&sign_hs256(SECRET, &c).unwrap()).is_ok());
        c.iss = None;
        assert_eq!(
            v.verify(&sign_hs256(SECRET, &c).unwrap()),
            Err(AuthError::TokenInvalid)
        );
    }

    #[test]
    fn alg_none_is_refused() {
        let header = base64_url("{\"alg\":\"none\",\"typ\":\"JWT\"}");
        let body = base64_url(&format!(
            "{{\"sub\":\"alice\",\"exp\":{}}}",
            now_secs() + 60
        ));
        assert_eq!(
            verifier().verify(&format!("{header}.{body}.")),
            Err(AuthError::TokenInvalid)
        );
    }

    fn base64_url(s: &str) -> String {
        const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let bytes = s.as_bytes();
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n =
                chunk.iter().fold(0u32, |acc, &b| (acc << 8) | b as u32) << (8 * (3 - chunk.len()));
            for i in 0..=chunk.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            }
        }
        out
    }
}
