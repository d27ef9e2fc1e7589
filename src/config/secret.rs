//! [`Secret`]: a configured credential that no `Debug` or `Display` of the config prints.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A JWT secret, API key, webhook secret or a URL that may carry credentials. It prints as
/// `***`, so a `{:?}` of a [`super::Config`] (in a log line, a panic, a test failure) never
/// shows it; the value itself is read with [`Secret::expose`], which is easy to grep for.
/// Serialized as the plain string: the config's defaults make a round trip through figment,
/// and `to_masked_toml` replaces secrets before it renders.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The credential itself, for the code that uses it (never for a log line).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// What `to_masked_toml` shows in place of a secret.
    pub(super) fn masked() -> Self {
        Self("***".into())
    }

    /// A URL with its credentials masked by [`mask_url`].
    pub(super) fn masked_url(&self) -> Self {
        Self(mask_url(&self.0))
    }

    /// A comma-separated list of URLs (Redis Cluster nodes, each with its own
    /// credentials), each masked by [`mask_url`].
    pub(super) fn masked_urls(&self) -> Self {
        Self(
            self.0
                .split(',')
                .map(mask_url)
                .collect::<Vec<_>>()
                .join(","),
        )
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self(value.to_owned())
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

/// A URL with its user-info (`user:password@`) replaced by `***` and its query dropped.
pub(super) fn mask_url(url: &str) -> String {
    let mut url = match url.split_once('?') {
        Some((base, _)) => format!("{base}?***"),
        None => url.to_owned(),
    };
    if let Some(scheme_end) = url.find("://") {
        let authority_end = url[scheme_end + 3..]
            .find(['/', '?'])
            .map_or(url.len(), |i| scheme_end + 3 + i);
        if let Some(at) = url[..authority_end].rfind('@')
            && at > scheme_end
        {
            url.replace_range(scheme_end + 3..at, "***");
        }
    }
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_as_stars_and_serializes_as_itself() {
        let secret = Secret::from("hunter2-hunter2");
        assert_eq!(format!("{secret:?} {secret}"), "*** ***");
        assert_eq!(secret.expose(), "hunter2-hunter2");
        let json = serde_json::to_string(&secret).unwrap();
        assert_eq!(json, "\"hunter2-hunter2\"");
        assert_eq!(serde_json::from_str::<Secret>(&json).unwrap(), secret);
    }
}
