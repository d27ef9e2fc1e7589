//! JWT verification. The algorithm family is pinned by each configured key: an HMAC secret
//! accepts HS256/384/512 only, a public key only its own family, so `alg: none` and HS/RS
//! confusion are refused before any signature check. Several keys can be live at once,
//! chosen by the token's `kid` (see [`JwtVerifier`]); a JWK Set is kept by [`super::jwks`].

use std::fmt;
use std::path::Path;
use std::sync::{Arc, RwLock};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::config::AuthConfig;
use crate::rooms::{Grant, Id, Identity, RoomPatterns, Tenant};

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
    /// Rooms the holder may publish client events into (`"*"` or room patterns).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish: Option<RoomPatterns>,
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
            publish: None,
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
        self.error_code().as_str()
    }

    pub fn error_code(self) -> crate::errors::Code {
        use crate::errors::Code;
        match self {
            Self::TokenMissing => Code::TokenMissing,
            Self::TokenInvalid => Code::TokenInvalid,
            Self::TokenExpired => Code::TokenExpired,
        }
    }

    /// What a refused handshake is told (the HTTP answer to an Engine.IO v3 one; the recent
    /// errors of a `connect_error`, whose message is the code alone).
    pub fn handshake_message(self) -> crate::errors::Message {
        use crate::errors::Message;
        match self {
            Self::TokenMissing => Message::HandshakeTokenMissing,
            Self::TokenInvalid => Message::HandshakeTokenInvalid,
            Self::TokenExpired => Message::HandshakeTokenExpired,
        }
    }
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl std::error::Error for AuthError {}

/// One verification key: the algorithms its type allows (narrowed to the JWK's `alg`
/// when a JWK Set names one) and the `kid` it answers to.
#[derive(Clone)]
pub struct VerifyKey {
    kid: Option<String>,
    key: DecodingKey,
    algorithms: Vec<Algorithm>,
}

impl VerifyKey {
    /// An HMAC secret: HS256, HS384, HS512.
    pub fn secret(kid: Option<String>, secret: &[u8]) -> Self {
        Self {
            kid,
            key: DecodingKey::from_secret(secret),
            algorithms: vec![Algorithm::HS256, Algorithm::HS384, Algorithm::HS512],
        }
    }

    /// A PEM public key (RSA, EC or Ed25519): the algorithms of its family.
    pub fn public_pem(kid: Option<String>, pem: &[u8]) -> Option<Self> {
        use Algorithm::*;
        let (key, algorithms) = if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
            (key, vec![RS256, RS384, RS512, PS256, PS384, PS512])
        } else if let Ok(key) = DecodingKey::from_ec_pem(pem) {
            (key, vec![ES256, ES384])
        } else if let Ok(key) = DecodingKey::from_ed_pem(pem) {
            (key, vec![EdDSA])
        } else {
            return None;
        };
        Some(Self {
            kid,
            key,
            algorithms,
        })
    }

    /// A JWK of a JWK Set. Only public keys for signatures are taken: an `oct` (HMAC) key
    /// published in a key set, or one marked `use: enc`, is skipped.
    pub fn from_jwk(jwk: &Jwk) -> Option<Self> {
        use Algorithm::*;
        if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
            return None;
        }
        let family = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => vec![RS256, RS384, RS512, PS256, PS384, PS512],
            AlgorithmParameters::EllipticCurve(p) => match p.curve {
                EllipticCurve::P256 => vec![ES256],
                EllipticCurve::P384 => vec![ES384],
                _ => return None,
            },
            AlgorithmParameters::OctetKeyPair(_) => vec![EdDSA],
            _ => return None,
        };
        let algorithms = match jwk.common.key_algorithm.map(Algorithm::try_from) {
            None => family,
            Some(Ok(alg)) if family.contains(&alg) => vec![alg],
            Some(_) => return None,
        };
        Some(Self {
            kid: jwk.common.key_id.clone(),
            key: DecodingKey::from_jwk(jwk).ok()?,
            algorithms,
        })
    }
}

/// A key set that changes at run time (a JWK Set refreshed from a file or a URL).
pub type SharedKeys = Arc<RwLock<Arc<[VerifyKey]>>>;

/// Verifies tokens against the configured keys.
///
/// A token whose header has a `kid` is checked only against the key with that `kid` (an
/// unknown `kid` is `token_invalid`), except when no key has a `kid` at all (only the
/// single-key settings): then the `kid` is ignored, as it always was. A token without a
/// `kid` is checked against every key whose type allows its `alg`, in the order
/// `jwt_secret`/`jwt_public_key_file`, `[[auth.keys]]`, then the JWK Set.
#[derive(Clone)]
pub struct JwtVerifier {
    keys: Arc<[VerifyKey]>,
    jwks: Option<SharedKeys>,
    /// Where the JWK Set comes from, to re-read it when a token names a `kid` it lacks.
    jwks_source: Option<Arc<super::Jwks>>,
    validation: Validation,
    /// `auth.max_token_lifetime_secs`: the longest `exp − min(iat, now)` accepted.
    max_lifetime_secs: Option<u64>,
}

impl fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kids: Vec<_> = self.keys.iter().map(|k| &k.kid).collect();
        f.debug_struct("JwtVerifier")
            .field("kids", &kids)
            .field("jwks", &self.jwks.is_some())
            .finish_non_exhaustive()
    }
}

impl JwtVerifier {
    /// The static keys of `config`; a JWK Set is attached with [`Self::with_jwks_source`].
    pub fn from_config(config: &AuthConfig) -> anyhow::Result<Self> {
        let mut keys = Vec::new();
        if let Some(secret) = &config.jwt_secret {
            keys.push(VerifyKey::secret(None, secret.expose().as_bytes()));
        }
        if let Some(path) = &config.jwt_public_key_file {
            keys.push(load_public_key(None, path, "auth.jwt_public_key_file")?);
        }
        for (i, k) in config.keys.iter().enumerate() {
            let kid = Some(k.kid.clone());
            keys.push(match (&k.secret, &k.public_key_file) {
                (Some(secret), _) => VerifyKey::secret(kid, secret.expose().as_bytes()),
                (None, Some(path)) => load_public_key(kid, path, &format!("auth.keys[{i}]"))?,
                (None, None) => anyhow::bail!("auth.keys[{i}]: no secret or public_key_file"),
            });
        }
        if keys.is_empty() && config.jwks_file.is_none() && config.jwks_url.is_none() {
            anyhow::bail!("auth: no verification key configured");
        }
        // Every algorithm any key could accept; each key narrows it to its own in `verify`.
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = Vec::new();
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
        Ok(Self {
            keys: keys.into(),
            jwks: None,
            jwks_source: None,
            validation,
            max_lifetime_secs: config.max_token_lifetime_secs,
        })
    }

    /// Also verifies with the keys of `jwks`, and re-reads it when a token names a `kid`
    /// that no key has (see [`Self::verify_or_refresh`]).
    pub fn with_jwks_source(mut self, jwks: Arc<super::Jwks>) -> Self {
        self.jwks = Some(jwks.keys());
        self.jwks_source = Some(jwks);
        self
    }

    /// Like [`Self::verify`], but a token whose `kid` is in no key set triggers an
    /// immediate re-read of the JWK Set (an identity provider that rotated its keys), at
    /// most once per [`super::jwks::MISS_REFRESH_EVERY`], and is verified again.
    pub async fn verify_or_refresh(&self, token: &str) -> Result<Identity, AuthError> {
        let result = self.verify(token);
        let Some(source) = &self.jwks_source else {
            return result;
        };
        if result != Err(AuthError::TokenInvalid) {
            return result;
        }
        let kid = jsonwebtoken::decode_header(token).ok().and_then(|h| h.kid);
        match kid {
            Some(kid) if !self.knows(&kid) => {
                source.refresh_on_miss().await;
                self.verify(token)
            }
            _ => result,
        }
    }

    /// Whether a static key or the JWK Set as it is now has this `kid`.
    fn knows(&self, kid: &str) -> bool {
        let in_set = self
            .jwks_now()
            .is_some_and(|set| set.iter().any(|k| k.kid.as_deref() == Some(kid)));
        in_set || self.keys.iter().any(|k| k.kid.as_deref() == Some(kid))
    }

    /// The JWK Set's keys as they are now, if a set is attached.
    fn jwks_now(&self) -> Option<Arc<[VerifyKey]>> {
        self.jwks.as_ref().map(|set| {
            set.read()
                .map_or_else(|p| p.into_inner().clone(), |g| g.clone())
        })
    }

    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::TokenInvalid)?;
        // RFC 7515 4.1.11: a token may only be accepted if every extension its `crit`
        // names is understood; Roomcast understands none (and an empty list is invalid).
        if header.crit.is_some() {
            return Err(AuthError::TokenInvalid);
        }
        let jwks = self.jwks_now();
        let all = self
            .keys
            .iter()
            .chain(jwks.iter().flat_map(|set| set.iter()));
        let keyed = self.keys.iter().any(|k| k.kid.is_some()) || jwks.is_some();
        let candidates: Vec<&VerifyKey> = match &header.kid {
            Some(kid) if keyed => all.filter(|k| k.kid.as_deref() == Some(kid)).collect(),
            _ => all.collect(),
        };
        // `alg: none` and an algorithm of another family than the key's never reach a
        // signature check.
        let mut result = Err(AuthError::TokenInvalid);
        for key in candidates
            .iter()
            .filter(|k| k.algorithms.contains(&header.alg))
        {
            let mut validation = self.validation.clone();
            validation.algorithms = vec![header.alg];
            match jsonwebtoken::decode::<TokenClaims>(token, &key.key, &validation) {
                Ok(data) => {
                    result = Ok(data.claims);
                    break;
                }
                // Not this key: try the next one.
                Err(e) if matches!(e.kind(), ErrorKind::InvalidSignature) => continue,
                Err(e) => {
                    result = Err(match e.kind() {
                        ErrorKind::ExpiredSignature => AuthError::TokenExpired,
                        _ => AuthError::TokenInvalid,
                    });
                    break;
                }
            }
        }
        let claims = result?;
        if let Some(max) = self.max_lifetime_secs
            && lifetime_secs(&claims, now_secs()) > max
        {
            return Err(AuthError::TokenInvalid);
        }
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
            publish: claims.publish,
            expires_at: claims.exp,
        })
    }
}

/// How long a token lives: from the earlier of its `iat` and `now` (a token without `iat`,
/// or with one in the future, is measured from now) to its `exp`.
fn lifetime_secs(claims: &TokenClaims, now: u64) -> u64 {
    let iat = claims
        .iat
        .as_ref()
        .and_then(|n| n.as_u64().or_else(|| n.as_f64().map(|f| f.max(0.0) as u64)));
    let from = iat.map_or(now, |iat| iat.min(now));
    claims.exp.saturating_sub(from)
}

/// Reads a PEM public key file.
fn load_public_key(kid: Option<String>, path: &Path, setting: &str) -> anyhow::Result<VerifyKey> {
    let pem =
        std::fs::read(path).map_err(|e| anyhow::anyhow!("{setting} {}: {e}", path.display()))?;
    VerifyKey::public_pem(kid, &pem).ok_or_else(|| {
        anyhow::anyhow!(
            "{setting} {}: not an RSA, EC or Ed25519 public key in PEM form",
            path.display()
        )
    })
}

/// Signs claims with an HMAC secret (HS256): the `roomcast token` developer convenience.
pub fn sign_hs256(secret: &str, claims: &TokenClaims) -> anyhow::Result<String> {
    sign_hs256_with_kid(secret, None, claims)
}

/// [`sign_hs256`] with a `kid` in the header, for a secret of `[[auth.keys]]`.
pub fn sign_hs256_with_kid(
    secret: &str,
    kid: Option<&str>,
    claims: &TokenClaims,
) -> anyhow::Result<String> {
    let mut header = Header::new(Algorithm::HS256);
    header.kid = kid.map(str::to_owned);
    Ok(jsonwebtoken::encode(
        &header,
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
