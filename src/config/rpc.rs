//! `[rpc]`: the RPC proxy. A socket's `rpc` command is POSTed, signed, to a backend URL
//! (`socket::rpc`); off unless `url` is set.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{ConfigError, Secret};

/// The longest method name; its characters are [`method_char`]s.
pub const MAX_METHOD_LEN: usize = 128;

/// A character a method name may hold: `[A-Za-z0-9_.:-]`.
pub fn method_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-')
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RpcConfig {
    /// Where `rpc` calls go (`http://` or `https://`). Unset: RPC is off and the command
    /// answers `rpc_unavailable`. A secret: the URL may carry a token.
    pub url: Option<Secret>,
    /// The key of the `X-Roomcast-Signature` HMAC; required (at least 16 bytes) with `url`.
    pub secret: Option<Secret>,
    /// How long one call may take (connect, send, answer read) before `rpc_timeout`.
    pub timeout_ms: u64,
    /// The most bytes of the JSON body sent to the backend (method, data and identity);
    /// a larger request is refused with `payload_too_large` and not sent.
    pub max_request_bytes: usize,
    /// The most bytes of the backend's answer that are read; a longer one is `rpc_failed`.
    pub max_response_bytes: usize,
    /// Calls of one socket waiting for their answer at once; one more is `rate_limited`.
    pub max_in_flight_per_socket: usize,
    /// Per-method routes, `"<pattern>" = "<url>"`: a pattern is a method name, or a prefix
    /// ending in `*` (`"billing.*"`, `"*"`). An exact name wins, then the longest prefix;
    /// a method that matches none goes to `url`.
    pub methods: BTreeMap<String, Secret>,
}

impl Default for RpcConfig {
    fn default() -> Self {
        Self {
            url: None,
            secret: None,
            timeout_ms: 5_000,
            max_request_bytes: 65_536,
            max_response_bytes: 1_048_576,
            max_in_flight_per_socket: 8,
            methods: BTreeMap::new(),
        }
    }
}

impl RpcConfig {
    /// Where a call of `method` goes: `None` when RPC is off.
    pub fn route(&self, method: &str) -> Option<&str> {
        let url = self.url.as_ref()?;
        if let Some(exact) = self.methods.get(method) {
            return Some(exact.expose());
        }
        self.methods
            .iter()
            .filter_map(|(pattern, url)| {
                let prefix = pattern.strip_suffix('*')?;
                method.starts_with(prefix).then_some((prefix.len(), url))
            })
            .max_by_key(|(len, _)| *len)
            .map_or(Some(url.expose()), |(_, url)| Some(url.expose()))
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        let Some(url) = &self.url else {
            if !self.methods.is_empty() {
                return invalid(
                    "rpc.methods needs rpc.url (where methods no pattern matches go)".into(),
                );
            }
            return Ok(());
        };
        check_url("rpc.url", url.expose())?;
        match &self.secret {
            None => return invalid("rpc.url is set: rpc.secret is required".into()),
            Some(secret) if secret.expose().len() < 16 => {
                return invalid("rpc.secret must be at least 16 bytes".into());
            }
            Some(_) => {}
        }
        for (pattern, url) in &self.methods {
            let name = pattern.strip_suffix('*').unwrap_or(pattern);
            if (name.is_empty() && pattern != "*")
                || name.len() > MAX_METHOD_LEN
                || !name.chars().all(method_char)
            {
                return invalid(format!(
                    "rpc.methods: {pattern:?} is not a method name or a prefix ending in * \
                     (1 to {MAX_METHOD_LEN} of [A-Za-z0-9_.:-])"
                ));
            }
            check_url(&format!("rpc.methods.\"{pattern}\""), url.expose())?;
        }
        if self.timeout_ms == 0 {
            return invalid("rpc.timeout_ms must be at least 1".into());
        }
        if self.max_request_bytes == 0 || self.max_response_bytes == 0 {
            return invalid(
                "rpc.max_request_bytes and rpc.max_response_bytes must be at least 1".into(),
            );
        }
        if self.max_in_flight_per_socket == 0 {
            return invalid("rpc.max_in_flight_per_socket must be at least 1".into());
        }
        Ok(())
    }

    pub(super) fn mask_secrets(&mut self) {
        if self.secret.is_some() {
            self.secret = Some(Secret::masked());
        }
        if let Some(url) = &mut self.url {
            *url = url.masked_url();
        }
        for url in self.methods.values_mut() {
            *url = url.masked_url();
        }
    }
}

/// An absolute `http://` or `https://` URL with a host.
fn check_url(key: &str, url: &str) -> Result<(), ConfigError> {
    match reqwest::Url::parse(url) {
        Ok(parsed)
            if matches!(parsed.scheme(), "http" | "https") && parsed.host_str().is_some() =>
        {
            Ok(())
        }
        // The value is not shown: it may carry a token.
        _ => Err(ConfigError::Invalid(format!(
            "{key} must be an http:// or https:// URL"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::super::Config;

    const SECRET: &str = "secret = \"0123456789abcdef\"";

    #[test]
    fn rpc_is_off_by_default_and_needs_a_secret_and_valid_urls() {
        let config = Config::default().with_fallbacks();
        assert_eq!(config.rpc.route("a.b"), None);
        Config::from_toml(&format!("[rpc]\nurl = \"https://app/rpc\"\n{SECRET}")).unwrap();
        for bad in [
            "[rpc]\nurl = \"https://app/rpc\"".to_owned(),
            "[rpc]\nurl = \"https://app/rpc\"\nsecret = \"short\"".to_owned(),
            format!("[rpc]\nurl = \"ftp://app/rpc\"\n{SECRET}"),
            format!("[rpc]\nurl = \"not a url\"\n{SECRET}"),
            format!(
                "[rpc]\nurl = \"https://app/rpc\"\n{SECRET}\n[rpc.methods]\n\"a*b\" = \"https://b/\""
            ),
            format!("[rpc]\nurl = \"https://app/rpc\"\n{SECRET}\n[rpc.methods]\n\"a.*\" = \"b\""),
            format!("[rpc]\n{SECRET}\n[rpc.methods]\n\"a.*\" = \"https://b/\""),
            format!("[rpc]\nurl = \"https://app/rpc\"\n{SECRET}\ntimeout_ms = 0"),
        ] {
            let err = Config::from_toml(&bad).unwrap_err().to_string();
            assert!(err.contains("rpc."), "{bad}: {err}");
        }
    }

    #[test]
    fn the_most_specific_route_wins() {
        let config = Config::from_toml(&format!(
            "[rpc]\nurl = \"https://app/rpc\"\n{SECRET}\n[rpc.methods]\n\
             \"billing.*\" = \"https://billing/rpc\"\n\"billing.refund.*\" = \"https://refunds/rpc\"\n\
             \"billing.charge\" = \"https://charge/rpc\"",
        ))
        .unwrap();
        let route = |m| config.rpc.route(m);
        assert_eq!(route("billing.charge"), Some("https://charge/rpc"));
        assert_eq!(route("billing.refund.full"), Some("https://refunds/rpc"));
        assert_eq!(route("billing.invoice"), Some("https://billing/rpc"));
        assert_eq!(route("billing"), Some("https://app/rpc"));
        assert_eq!(route("chat.send"), Some("https://app/rpc"));
    }

    #[test]
    fn urls_and_the_secret_are_masked() {
        let config = Config::from_toml(&format!(
            "[rpc]\nurl = \"https://app/rpc?token=pw1\"\n{SECRET}\n[rpc.methods]\n\"a.*\" = \"https://u:pw2@b/\"",
        ))
        .unwrap();
        let text = format!("{}{config:?}", config.to_masked_toml());
        for secret in ["pw1", "pw2", "0123456789abcdef"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
    }
}
