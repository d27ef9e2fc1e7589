//! GitHub webhooks: the `X-Hub-Signature-256` check and the mapping of `pull_request` and
//! `issues` deliveries onto Roomcast's typed `pr.*` / `issue.*` events. Pure functions; the
//! endpoint is `http::webhooks`, and what it maps goes through the one publish path.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::config::GithubConfig;
use crate::events::{Event, FieldError, Issue, PullRequest};
use crate::rooms::{Id, Tenant};

/// `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>`: the scheme Roomcast's own
/// outbound requests are signed with too, so one implementation checks and signs both.
pub use crate::outbound::{signature as sign, signature_valid};

/// What to do with one verified delivery.
#[derive(Debug, PartialEq)]
pub enum Delivery {
    /// `ping`: GitHub checking the hook.
    Ping,
    /// Publish this event into the configured tenant.
    Publish(Event),
    /// Nothing to publish, and why (an unmapped repository, an unhandled event or action).
    Ignored(String),
}

/// The repository → project map and the tenant, from `[github]`.
#[derive(Debug, Clone)]
pub struct Github {
    pub secret: Option<Vec<u8>>,
    pub tenant: Tenant,
    /// Keys lowercased: GitHub repository names are case-insensitive.
    projects: BTreeMap<String, Id>,
}

impl Github {
    /// Builds from a validated config (invalid entries, which validation refuses, are skipped).
    pub fn from_config(config: &GithubConfig) -> Self {
        Self {
            secret: config
                .webhook_secret
                .as_ref()
                .map(|s| s.expose().as_bytes().to_vec()),
            tenant: Tenant::parse(&config.tenant).unwrap_or_else(Tenant::default_tenant),
            projects: config
                .projects
                .iter()
                .filter_map(|(repo, id)| Some((repo.to_ascii_lowercase(), Id::parse(id)?)))
                .collect(),
        }
    }

    /// Maps a delivery of `event` (the `X-GitHub-Event` header) with this JSON `body`.
    /// `Err` is a body that is not the shape GitHub documents for that event.
    pub fn map(&self, event: &str, body: &[u8]) -> Result<Delivery, FieldError> {
        let handled = matches!(event, "pull_request" | "issues");
        if event == "ping" {
            return Ok(Delivery::Ping);
        }
        if !handled {
            return Ok(Delivery::Ignored(format!(
                "event {event:?} is not handled (only pull_request, issues and ping)"
            )));
        }
        let hook: Hook =
            serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_slice(body))
                .map_err(FieldError::from_serde)?;
        let Some(project_id) = self
            .projects
            .get(&hook.repository.full_name.to_ascii_lowercase())
        else {
            return Ok(Delivery::Ignored(format!(
                "repository {:?} is not mapped to a project in [github.projects]",
                hook.repository.full_name
            )));
        };
        let action = hook.action.as_str();
        let unhandled = || {
            Ok(Delivery::Ignored(format!(
                "{event} action {action:?} is not handled"
            )))
        };
        let event = match (event, hook.pull_request, hook.issue) {
            ("pull_request", Some(pr), _) => {
                let make = |p: PullRequest| match action {
                    "opened" => Some(Event::PrCreated(p)),
                    "reopened" | "edited" | "synchronize" | "labeled" | "review_requested"
                    | "ready_for_review" => Some(Event::PrUpdated(p)),
                    "closed" => Some(Event::PrClosed(p)),
                    _ => None,
                };
                make(PullRequest {
                    project_id: project_id.clone(),
                    number: pr.number,
                    title: pr.title,
                    url: pr.html_url,
                    author: pr.user.map(|u| u.login),
                    state: pr.state,
                    merged: pr.merged,
                    action: Some(hook.action.clone()),
                })
            }
            ("issues", _, Some(issue)) => {
                let make = |i: Issue| match action {
                    "opened" => Some(Event::IssueCreated(i)),
                    "edited" | "labeled" | "assigned" | "reopened" => Some(Event::IssueUpdated(i)),
                    "closed" => Some(Event::IssueClosed(i)),
                    _ => None,
                };
                make(Issue {
                    project_id: project_id.clone(),
                    number: issue.number,
                    title: issue.title,
                    url: issue.html_url,
                    author: issue.user.map(|u| u.login),
                    state: issue.state,
                    action: Some(hook.action.clone()),
                })
            }
            // `pull_request` without `pull_request`, `issues` without `issue`.
            _ => {
                let object = if event == "issues" { "issue" } else { event };
                return Err(FieldError::new(
                    object,
                    format!("a {event} delivery without its {object} object"),
                ));
            }
        };
        match event {
            Some(event) => Ok(Delivery::Publish(event)),
            None => unhandled(),
        }
    }
}

/// The parts of a `pull_request` / `issues` webhook payload Roomcast reads; the rest of
/// GitHub's (large) payload is ignored.
#[derive(Deserialize)]
struct Hook {
    action: String,
    repository: Repository,
    #[serde(default)]
    pull_request: Option<Item>,
    #[serde(default)]
    issue: Option<Item>,
}

#[derive(Deserialize)]
struct Repository {
    full_name: String,
}

/// A pull request or an issue: the fields they share, plus `merged` (pull requests only).
#[derive(Deserialize)]
struct Item {
    number: u64,
    title: String,
    #[serde(default)]
    html_url: Option<String>,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    user: Option<User>,
    #[serde(default)]
    merged: Option<bool>,
}

#[derive(Deserialize)]
struct User {
    login: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn github() -> Github {
        Github::from_config(&GithubConfig {
            webhook_secret: Some("0123456789abcdef".into()),
            tenant: "default".into(),
            projects: [("Acme/Web".to_string(), "42".to_string())].into(),
        })
    }

    #[test]
    fn signatures() {
        let sig = sign(b"It's a Secret to Everybody", b"Hello, World!");
        // The example from GitHub's "Validating webhook deliveries".
        assert_eq!(
            sig,
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        );
        assert!(signature_valid(
            b"It's a Secret to Everybody",
            b"Hello, World!",
            Some(&sig)
        ));
        assert!(!signature_valid(b"other", b"Hello, World!", Some(&sig)));
        assert!(!signature_valid(
            b"It's a Secret to Everybody",
            b"Hello",
            Some(&sig)
        ));
        assert!(!signature_valid(b"k", b"x", None));
        assert!(!signature_valid(b"k", b"x", Some("sha1=00")));
        assert!(!signature_valid(b"k", b"x", Some("sha256=zz")));
        assert!(!signature_valid(b"k", b"x", Some("sha256=00")));
    }

    fn body(action: &str, merged: bool) -> Vec<u8> {
        json!({
            "action": action,
            "repository": {"full_name": "acme/web"},
            "pull_request": {"number": 3, "title": "T", "html_url": "u", "state": "closed",
                             "merged": merged, "user": {"login": "bob"}}
        })
        .to_string()
        .into_bytes()
    }

    #[test]
    fn pull_request_actions() {
        let g = github();
        let kind = |action| match g.map("pull_request", &body(action, false)).unwrap() {
            Delivery::Publish(e) => e.event_type().as_str().to_owned(),
            Delivery::Ignored(r) => format!("ignored: {r}"),
            Delivery::Ping => "ping".into(),
        };
        assert_eq!(kind("opened"), "pr.created");
        for a in [
            "reopened",
            "edited",
            "synchronize",
            "labeled",
            "review_requested",
            "ready_for_review",
        ] {
            assert_eq!(kind(a), "pr.updated", "{a}");
        }
        assert_eq!(kind("closed"), "pr.closed");
        assert!(kind("assigned").starts_with("ignored"));
        match g.map("pull_request", &body("closed", true)).unwrap() {
            Delivery::Publish(Event::PrClosed(p)) => {
                assert_eq!(p.merged, Some(true));
                assert_eq!(p.author.as_deref(), Some("bob"));
                assert_eq!(p.project_id.as_str(), "42");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn other_events_and_repositories_are_ignored() {
        let g = github();
        assert_eq!(g.map("ping", b"{}").unwrap(), Delivery::Ping);
        assert!(matches!(
            g.map("push", b"{}").unwrap(),
            Delivery::Ignored(_)
        ));
        let other = json!({"action": "opened", "repository": {"full_name": "x/y"},
                           "issue": {"number": 1, "title": "t"}});
        assert!(matches!(
            g.map("issues", other.to_string().as_bytes()).unwrap(),
            Delivery::Ignored(r) if r.contains("x/y")
        ));
        assert!(g.map("issues", b"[]").is_err());
        let no_issue = json!({"action": "opened", "repository": {"full_name": "acme/web"}});
        assert!(g.map("issues", no_issue.to_string().as_bytes()).is_err());
    }
}
