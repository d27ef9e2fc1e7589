//! A JWK Set (RFC 7517) from `auth.jwks_file` or `auth.jwks_url`, kept in memory and
//! refreshed every `auth.jwks_refresh_secs`. A refresh that fails (unreachable, not JSON,
//! no usable key) keeps the last good set, so an identity provider's outage does not log
//! every user out. A token naming a `kid` the set lacks re-reads it at once (a rotation),
//! at most once per [`MISS_REFRESH_EVERY`], so tokens with made-up `kid`s cannot make the
//! server hammer the identity provider.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use jsonwebtoken::jwk::JwkSet;

use super::jwt::{SharedKeys, VerifyKey};
use crate::config::AuthConfig;

/// How long one fetch of `jwks_url` may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest key set accepted, in bytes.
const MAX_BYTES: usize = 1024 * 1024;
/// The shortest time between two re-reads for an unknown `kid`.
pub const MISS_REFRESH_EVERY: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
enum Source {
    File(PathBuf),
    Url(String),
}

/// The key set of one source, shared with the [`super::JwtVerifier`].
pub struct Jwks {
    source: Source,
    keys: SharedKeys,
    refresh: Duration,
    client: reqwest::Client,
    /// When the last re-read for an unknown `kid` started; held while it runs, so
    /// handshakes with the same new `kid` wait for one fetch instead of each doing one.
    last_miss: tokio::sync::Mutex<Option<tokio::time::Instant>>,
}

impl Jwks {
    /// The JWK Set configured in `config`, if any; not loaded yet.
    pub fn from_config(config: &AuthConfig) -> Option<Arc<Self>> {
        let source = match (&config.jwks_file, &config.jwks_url) {
            (Some(path), _) => Source::File(path.clone()),
            (None, Some(url)) => Source::Url(url.expose().to_owned()),
            (None, None) => return None,
        };
        Some(Arc::new(Self {
            source,
            keys: Arc::new(RwLock::new(Arc::from(Vec::new()))),
            refresh: Duration::from_secs(config.jwks_refresh_secs.max(1)),
            client: reqwest::Client::builder()
                .timeout(FETCH_TIMEOUT)
                .build()
                .unwrap_or_default(),
            last_miss: tokio::sync::Mutex::new(None),
        }))
    }

    pub fn keys(&self) -> SharedKeys {
        self.keys.clone()
    }

    /// The keys of the source as it is now.
    async fn fetch(&self) -> Result<Vec<VerifyKey>, String> {
        let bytes = match &self.source {
            // A key set is small; reading it blocks for no noticeable time.
            Source::File(path) => {
                std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?
            }
            Source::Url(url) => {
                let response = self
                    .client
                    .get(url)
                    .send()
                    .await
                    .map_err(|e| e.without_url().to_string())?;
                if !response.status().is_success() {
                    return Err(format!("HTTP {}", response.status()));
                }
                let bytes = response
                    .bytes()
                    .await
                    .map_err(|e| e.without_url().to_string())?;
                bytes.to_vec()
            }
        };
        parse(&bytes)
    }

    /// Loads the set once: an error leaves the previous set in place.
    pub async fn refresh(&self) -> Result<usize, String> {
        let keys = self.fetch().await?;
        let count = keys.len();
        match self.keys.write() {
            Ok(mut set) => *set = keys.into(),
            Err(poisoned) => *poisoned.into_inner() = keys.into(),
        }
        Ok(count)
    }

    /// Re-reads the set for a token whose `kid` it lacks, unless that was done less than
    /// [`MISS_REFRESH_EVERY`] ago. A failure keeps the set, as for the timed refresh.
    pub async fn refresh_on_miss(&self) {
        let mut last = self.last_miss.lock().await;
        let now = tokio::time::Instant::now();
        if last.is_some_and(|t| now.duration_since(t) < MISS_REFRESH_EVERY) {
            return;
        }
        *last = Some(now);
        self.refresh_logged("re-read for an unknown kid").await;
    }

    /// Refreshes, logging the outcome as `what` (a failure keeps the last good set).
    async fn refresh_logged(&self, what: &str) {
        match self.refresh().await {
            Ok(count) => tracing::debug!(source = %self.describe(), keys = count, "JWK Set {what}"),
            Err(e) => tracing::warn!(
                source = %self.describe(),
                "JWK Set {what} failed, keeping the last good set: {e}"
            ),
        }
    }

    /// The source named for logs: a file's path, or only the URL's host.
    fn describe(&self) -> String {
        match &self.source {
            Source::File(path) => path.display().to_string(),
            Source::Url(url) => reqwest::Url::parse(url)
                .ok()
                .and_then(|u| u.host_str().map(|h| format!("{}://{h}/…", u.scheme())))
                .unwrap_or_else(|| "jwks_url".into()),
        }
    }

    /// The first load, at startup. A file that cannot be read or holds no usable key is a
    /// configuration error; an unreachable URL is only logged (the server starts, and tokens
    /// signed by its keys verify once a refresh succeeds).
    pub async fn load(&self) -> anyhow::Result<()> {
        match (self.refresh().await, &self.source) {
            (Ok(count), _) => {
                tracing::info!(source = %self.describe(), keys = count, "JWK Set loaded");
                Ok(())
            }
            (Err(e), Source::File(_)) => anyhow::bail!("auth.jwks_file: {e}"),
            (Err(e), Source::Url(_)) => {
                tracing::warn!(source = %self.describe(), "cannot load the JWK Set yet: {e}");
                Ok(())
            }
        }
    }

    /// Refreshes the set every `jwks_refresh_secs`, for as long as the server runs.
    pub async fn run(self: Arc<Self>) {
        let mut ticks = tokio::time::interval(self.refresh);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            ticks.tick().await;
            self.refresh_logged("refresh").await;
        }
    }
}

/// The usable keys of a JWK Set document; none at all is an error (a broken set must not
/// replace a good one).
pub fn parse(bytes: &[u8]) -> Result<Vec<VerifyKey>, String> {
    if bytes.len() > MAX_BYTES {
        return Err(format!("larger than {MAX_BYTES} bytes"));
    }
    let set: JwkSet = serde_json::from_slice(bytes).map_err(|e| format!("not a JWK Set: {e}"))?;
    let keys: Vec<VerifyKey> = set.keys.iter().filter_map(VerifyKey::from_jwk).collect();
    if keys.is_empty() {
        return Err("no usable signature key (RSA, EC P-256/P-384 or Ed25519)".into());
    }
    Ok(keys)
}
