//! API keys for the HTTP API. Keys are kept only as SHA-256 digests and compared in
//! constant time, against every configured key, so timing tells nothing about which matched.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::{ApiKeyConfig, Scope};
use crate::rooms::Tenant;

/// The authenticated caller of an HTTP endpoint.
#[derive(Debug, Clone)]
pub struct Caller {
    pub name: String,
    /// When set, the caller may act only in this tenant.
    pub tenant: Option<Tenant>,
    pub scopes: Vec<Scope>,
}

impl Caller {
    pub fn has_scope(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }
}

#[derive(Debug, Clone, Default)]
pub struct ApiKeys {
    keys: Vec<([u8; 32], Caller)>,
}

impl ApiKeys {
    /// Builds the key table; the config has been validated, so every key has a usable form.
    pub fn from_config(keys: &[ApiKeyConfig]) -> Self {
        let keys = keys
            .iter()
            .filter_map(|k| {
                let digest: [u8; 32] = match (&k.key, &k.key_sha256) {
                    (Some(plain), _) => Sha256::digest(plain.expose().as_bytes()).into(),
                    (None, Some(hex_digest)) => hex::decode(hex_digest).ok()?.try_into().ok()?,
                    (None, None) => return None,
                };
                let caller = Caller {
                    name: k.name.clone(),
                    tenant: k.tenant.as_deref().and_then(Tenant::parse),
                    scopes: k.scopes.clone(),
                };
                Some((digest, caller))
            })
            .collect();
        Self { keys }
    }

    pub fn verify(&self, presented: &str) -> Option<&Caller> {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found = None;
        for (candidate, caller) in &self.keys {
            if bool::from(candidate.ct_eq(&digest)) && found.is_none() {
                found = Some(caller);
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_hashed_keys() {
        let keys = ApiKeys::from_config(&[
            ApiKeyConfig {
                name: "a".into(),
                key: Some("plain-key-1".into()),
                key_sha256: None,
                tenant: None,
                scopes: vec![Scope::Publish],
            },
            ApiKeyConfig {
                name: "b".into(),
                key: None,
                // sha256("123456")
                key_sha256: Some(
                    "8d969eef6ecad3c29a3a629280e686cf0c3f5d5a86aff3ca12020c923adc6c92".into(),
                ),
                tenant: Some("acme".into()),
                scopes: vec![Scope::Read],
            },
        ]);
        assert_eq!(keys.verify("plain-key-1").unwrap().name, "a");
        let b = keys.verify("123456").unwrap();
        assert_eq!(b.name, "b");
        assert_eq!(b.tenant.as_ref().unwrap().as_str(), "acme");
        assert!(keys.verify("nope").is_none());
    }
}
