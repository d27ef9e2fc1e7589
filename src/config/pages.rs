//! `[pages]`: the pages the server serves itself.

use serde::{Deserialize, Serialize};

/// The pages the server serves itself (HTML and JS embedded in the binary).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PagesConfig {
    /// `/debug`: the interactive test client. Holds no secrets; needs no key to load.
    pub debug: bool,
    /// `/admin`: the live dashboard. The page asks for an API key with scope `admin`.
    pub admin: bool,
}

impl Default for PagesConfig {
    fn default() -> Self {
        Self {
            debug: true,
            admin: true,
        }
    }
}
