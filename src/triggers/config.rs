//! `[[triggers]]` and `[webhook]`'s sender policy: which events start which workflow, on
//! which repositories, and whose events are handled at all.

use serde::{Deserialize, Serialize};

use crate::forge::Repo;

/// The label that starts a run when no trigger names one.
pub const DEFAULT_LABEL: &str = "baton";

/// The label that starts `bug_triage` among the default triggers.
pub const BUG_LABEL: &str = "bug";

/// The workflow `/baton triage` starts.
pub const TRIAGE_WORKFLOW: &str = "bug_triage";

/// The comment prefix of commands.
pub const COMMAND_PREFIX: &str = "/baton";

/// The events a trigger can listen to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TriggerOn {
    /// An issue opened with the trigger's label, or labeled with it.
    IssueLabeled,
    /// An issue assigned to the bot's user.
    IssueAssigned,
    /// A `/baton ...` command in an issue or pull request comment.
    IssueComment,
    /// A pull request opened or synchronized (new commits pushed).
    PullRequest,
    /// A review requesting changes on a pull request baton opened.
    PullRequestReview,
    /// A tag pushed.
    TagPush,
    /// A release published.
    ReleasePublished,
}

impl TriggerOn {
    /// The workflow started when the trigger names none.
    pub fn default_workflow(self) -> &'static str {
        match self {
            TriggerOn::IssueLabeled | TriggerOn::IssueAssigned | TriggerOn::IssueComment => {
                "issue_to_pr"
            }
            TriggerOn::PullRequest => "pr_review",
            TriggerOn::PullRequestReview => "revise",
            TriggerOn::TagPush | TriggerOn::ReleasePublished => "release_notes",
        }
    }
}

/// One `[[triggers]]` entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trigger {
    /// The event.
    pub on: TriggerOn,
    /// The label (`issue_labeled` only); default `baton`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// The workflow to start; default per event (`issue_to_pr`, `pr_review`, `release_notes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<String>,
    /// Only these repositories (`owner/name`); empty means all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub repos: Vec<String>,
}

impl Trigger {
    /// A trigger with default label and workflow.
    pub fn new(on: TriggerOn) -> Trigger {
        Trigger {
            on,
            label: None,
            workflow: None,
            repos: Vec::new(),
        }
    }

    /// The triggers in force when `config.toml` has no `[[triggers]]`: everything but
    /// `tag_push` (publishing a release pushes its tag too, which would start release notes
    /// twice), and the `bug` label starting `bug_triage`.
    pub fn defaults() -> Vec<Trigger> {
        let mut all: Vec<Trigger> = [
            TriggerOn::IssueLabeled,
            TriggerOn::IssueAssigned,
            TriggerOn::IssueComment,
            TriggerOn::PullRequest,
            TriggerOn::PullRequestReview,
            TriggerOn::ReleasePublished,
        ]
        .into_iter()
        .map(Trigger::new)
        .collect();
        // An issue opened with, or given, the `bug` label is triaged.
        all.push(Trigger {
            label: Some(BUG_LABEL.to_string()),
            workflow: Some("bug_triage".to_string()),
            ..Trigger::new(TriggerOn::IssueLabeled)
        });
        all
    }

    /// Checks what serde cannot: a label only where it means something, repository names.
    pub fn validate(&self) -> Result<(), InvalidTrigger> {
        if self.label.is_some() && self.on != TriggerOn::IssueLabeled {
            return Err(InvalidTrigger::LabelOutOfPlace {
                on: serde_name(self.on),
            });
        }
        if self.label.as_deref().is_some_and(|l| l.trim().is_empty()) {
            return Err(InvalidTrigger::EmptyLabel);
        }
        if self
            .workflow
            .as_deref()
            .is_some_and(|w| w.trim().is_empty())
        {
            return Err(InvalidTrigger::EmptyWorkflow);
        }
        for repo in &self.repos {
            Repo::parse(repo).map_err(InvalidTrigger::Repo)?;
        }
        Ok(())
    }

    pub(super) fn workflow(&self) -> String {
        self.workflow
            .clone()
            .unwrap_or_else(|| self.on.default_workflow().to_string())
    }

    pub(super) fn applies_to(&self, repo: &Repo) -> bool {
        self.repos.is_empty() || self.repos.iter().any(|r| *r == repo.to_string())
    }
}

/// What is wrong with a `[[triggers]]` entry that serde let through.
#[derive(Debug, thiserror::Error)]
pub enum InvalidTrigger {
    /// `label` on a trigger whose event has no label.
    #[error("[[triggers]] on = \"{on}\": `label` only applies to on = \"issue_labeled\"")]
    LabelOutOfPlace {
        /// The trigger's `on`, as written in the file.
        on: String,
    },
    /// `label = ""`.
    #[error("[[triggers]]: `label` is empty")]
    EmptyLabel,
    /// `workflow = ""`.
    #[error("[[triggers]]: `workflow` is empty")]
    EmptyWorkflow,
    /// An entry of `repos` that is not `owner/name`.
    #[error("[[triggers]] repos: {0}")]
    Repo(#[source] crate::forge::Error),
}

fn serde_name(on: TriggerOn) -> String {
    serde_json::to_value(on)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// Who may trigger, besides the permission check: `[webhook]` in `config.toml`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SenderPolicy {
    /// The bot's own login (the token's user, or `<app-slug>[bot]`): `issue_assigned` fires when
    /// an issue is assigned to it, and its own events are always ignored.
    pub bot_login: Option<String>,
    /// Bot accounts (`dependabot[bot]`...) whose events are handled; other bots are ignored.
    pub allowed_bots: Vec<String>,
    /// The reply posted on the issue when a sender without write permission tries to start or
    /// steer a run; `None` posts nothing.
    pub deny_reply: Option<String>,
    /// How long a permission looked up through the API is trusted, in seconds.
    pub permission_cache_secs: u64,
}

impl Default for SenderPolicy {
    fn default() -> Self {
        SenderPolicy {
            bot_login: None,
            allowed_bots: Vec::new(),
            deny_reply: None,
            permission_cache_secs: 60,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn triggers_from_toml() {
        #[derive(Debug, Deserialize)]
        struct Config {
            triggers: Vec<Trigger>,
            webhook: SenderPolicy,
        }
        let config: Config = toml::from_str(
            r#"
            [webhook]
            bot_login = "baton-bot"
            deny_reply = "Only maintainers can run baton."

            [[triggers]]
            on = "issue_labeled"

            [[triggers]]
            on = "issue_labeled"
            label = "autofix"
            workflow = "bug_triage"
            repos = ["octo/app"]

            [[triggers]]
            on = "tag_push"
            "#,
        )
        .unwrap();
        assert_eq!(config.triggers.len(), 3);
        assert_eq!(config.triggers[1].label.as_deref(), Some("autofix"));
        assert_eq!(config.webhook.permission_cache_secs, 60);
        assert_eq!(config.webhook.bot_login.as_deref(), Some("baton-bot"));
        for t in &config.triggers {
            t.validate().unwrap();
        }
        let bad: Result<Config, _> =
            toml::from_str("[webhook]\n[[triggers]]\non = \"issue_labeled\"\nlabl = \"x\"\n");
        assert!(bad.unwrap_err().to_string().contains("labl"));
        let bad: Result<Config, _> = toml::from_str("[webhook]\n[[triggers]]\non = \"merge\"\n");
        assert!(bad.is_err());
        let mut t = Trigger::new(TriggerOn::PullRequest);
        t.label = Some("x".into());
        assert!(t.validate().unwrap_err().to_string().contains("label"));
    }
}
