//! `[github]`: GitHub webhooks turned into `pr.*` / `issue.*` events.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{ConfigError, Secret};
use crate::rooms::Tenant;

/// `POST /webhooks/github`: GitHub webhooks turned into `pr.*` / `issue.*` events.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GithubConfig {
    /// The webhook's secret: every delivery must carry a valid `X-Hub-Signature-256`.
    /// Unset: the endpoint answers `404 github_not_configured`.
    pub webhook_secret: Option<Secret>,
    /// The tenant the events are published into.
    pub tenant: String,
    /// `"owner/repo" = "<project_id>"`: which `project:` room a repository's events go to
    /// (repository names compared case-insensitively). Other repositories are ignored.
    pub projects: BTreeMap<String, String>,
}

impl Default for GithubConfig {
    fn default() -> Self {
        Self {
            webhook_secret: None,
            tenant: "default".into(),
            projects: BTreeMap::new(),
        }
    }
}

impl GithubConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        if let Some(secret) = &self.webhook_secret
            && secret.expose().len() < 16
        {
            return invalid("github.webhook_secret must be at least 16 bytes".into());
        }
        if Tenant::parse(&self.tenant).is_none() {
            return invalid(format!(
                "github.tenant {:?} is not a valid tenant id",
                self.tenant
            ));
        }
        for (repo, project) in &self.projects {
            if repo.split('/').filter(|part| !part.is_empty()).count() != 2 {
                return invalid(format!("github.projects: {repo:?} is not \"owner/repo\""));
            }
            if crate::rooms::Id::parse(project).is_none() {
                return invalid(format!(
                    "github.projects.\"{repo}\": {project:?} is not a valid project id"
                ));
            }
        }
        Ok(())
    }

    pub(super) fn mask_secrets(&mut self) {
        if self.webhook_secret.is_some() {
            self.webhook_secret = Some(Secret::masked());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::Config;

    #[test]
    fn github_projects_must_be_repositories_and_ids() {
        Config::from_toml("[github]\nwebhook_secret = \"0123456789abcdef\"\n[github.projects]\n\"acme/web\" = \"42\"").unwrap();
        for bad in [
            "\"acme\" = \"42\"",
            "\"acme/web\" = \"a b\"",
            "\"a/b/c\" = \"1\"",
        ] {
            let err = Config::from_toml(&format!("[github.projects]\n{bad}")).unwrap_err();
            assert!(err.to_string().contains("github.projects"), "{bad}: {err}");
        }
        assert!(Config::from_toml("[github]\nwebhook_secret = \"short\"").is_err());
    }
}
