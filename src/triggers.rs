//! Triggers: which GitHub events start or steer a run, configured as `[[triggers]]` in
//! `config.toml`, and the pure function [`classify`] that turns one webhook delivery into a
//! [`Job`] or a reason to ignore it. No IO here: permission checks and dispatch happen in
//! `web::webhook`, which calls this.
//!
//! ```toml
//! [[triggers]]
//! on = "issue_labeled"      # an issue opened with, or given, the label
//! label = "baton"           # the default
//!
//! [[triggers]]
//! on = "issue_comment"      # /baton run|review|triage|approve|retry|skip|abort|rollback [soft|hard|N]
//!
//! [[triggers]]
//! on = "pull_request_review" # a review requesting changes on baton's PR: revise it
//!
//! [[triggers]]
//! on = "pull_request"       # opened or synchronize: PR review
//! workflow = "pr_review"    # the default for this event
//! repos = ["octo/app"]      # only these repositories (default: all)
//! ```
//!
//! Besides the triggers, baton always follows its own runs: `/baton revise <instructions>` on a
//! pull request revises it; an issue closed cancels its runs in flight; a pull request closed
//! (merged or not) cleans up the run that opened it. These go through the same permission
//! check and delivery dedup as every job.

use baton_actors::RollbackRequest;
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
    pub fn validate(&self) -> Result<(), String> {
        if self.label.is_some() && self.on != TriggerOn::IssueLabeled {
            return Err(format!(
                "[[triggers]] on = \"{}\": `label` only applies to on = \"issue_labeled\"",
                serde_name(self.on)
            ));
        }
        if self.label.as_deref().is_some_and(|l| l.trim().is_empty()) {
            return Err("[[triggers]]: `label` is empty".into());
        }
        if self
            .workflow
            .as_deref()
            .is_some_and(|w| w.trim().is_empty())
        {
            return Err("[[triggers]]: `workflow` is empty".into());
        }
        for repo in &self.repos {
            Repo::parse(repo).map_err(|e| format!("[[triggers]] repos: {e}"))?;
        }
        Ok(())
    }

    fn workflow(&self) -> String {
        self.workflow
            .clone()
            .unwrap_or_else(|| self.on.default_workflow().to_string())
    }

    fn applies_to(&self, repo: &Repo) -> bool {
        self.repos.is_empty() || self.repos.iter().any(|r| *r == repo.to_string())
    }
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

/// A command that steers an existing run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    /// Approve a run waiting for approval.
    Approve,
    /// Retry the failed step.
    Retry,
    /// Skip the failed or waiting step.
    Skip,
    /// Abort (with compensation).
    Abort,
    /// Roll back.
    Rollback(RollbackRequest),
}

/// What a delivery is about.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Subject {
    /// An issue (or a pull request's conversation, for comments).
    Issue {
        /// Its number.
        number: u64,
    },
    /// A pull request at a head commit.
    PullRequest {
        /// Its number.
        number: u64,
        /// The head branch.
        head: String,
        /// The head commit.
        head_sha: String,
    },
    /// A tag (pushed, or of a published release).
    Tag {
        /// The tag's name.
        name: String,
    },
}

impl Subject {
    /// The issue or pull request number a reply can go to.
    pub fn conversation(&self) -> Option<u64> {
        match self {
            Subject::Issue { number } | Subject::PullRequest { number, .. } => Some(*number),
            Subject::Tag { .. } => None,
        }
    }
}

/// What a job asks for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "do", rename_all = "snake_case")]
pub enum JobAction {
    /// Start a workflow on the subject.
    Start {
        /// The workflow's id.
        workflow: String,
    },
    /// Steer the run started for the subject.
    Steer {
        /// The command.
        command: Command,
    },
    /// Revise baton's pull request (the subject) on review.
    Revise {
        /// What the reviewer asks for besides the review's comments (may be empty).
        instructions: String,
    },
    /// The issue was closed: its runs in flight are cancelled.
    IssueClosed,
    /// The pull request was closed: the run that opened it is cleaned up.
    PullRequestClosed {
        /// Merged, or closed without merging.
        merged: bool,
    },
}

/// A job: one delivery that asks baton to start or steer a run. The sink stores it with the
/// run it started (the delivery id is the dedup key).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    /// `X-GitHub-Delivery`.
    pub delivery_id: String,
    /// The event and action, e.g. `issues.labeled`, `issue_comment.created`, `push`.
    pub event: String,
    /// The sender's login.
    pub sender: String,
    /// The repository.
    pub repo: Repo,
    /// What it is about.
    pub subject: Subject,
    /// What to run.
    pub action: JobAction,
}

/// The outcome of [`classify`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Classified {
    /// A job to run once the sender's permission is checked.
    Job(Job),
    /// Nothing to do, and why.
    Ignored(String),
}

/// The parts of a webhook payload that triggers read; everything else is skipped unparsed
/// (a typed parse of GitHub's ~12 kB payloads is several times cheaper than a `Value`).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Payload {
    /// `action` (absent for `push`).
    pub action: Option<String>,
    /// `repository.full_name`.
    pub repository: Option<PayloadRepo>,
    /// `sender`.
    pub sender: Option<PayloadUser>,
    /// `issue` (issues, issue_comment).
    pub issue: Option<PayloadIssue>,
    /// `label` (issues.labeled).
    pub label: Option<PayloadLabel>,
    /// `assignee` (issues.assigned).
    pub assignee: Option<PayloadUser>,
    /// `comment` (issue_comment).
    pub comment: Option<PayloadComment>,
    /// `pull_request`.
    pub pull_request: Option<PayloadPull>,
    /// `ref` (push).
    #[serde(rename = "ref")]
    pub git_ref: Option<String>,
    /// `deleted` (push).
    pub deleted: Option<bool>,
    /// `release`.
    pub release: Option<PayloadRelease>,
    /// `review` (pull_request_review).
    pub review: Option<PayloadReview>,
}

/// `review` of a payload.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct PayloadReview {
    /// `approved`, `changes_requested`, `commented`...
    pub state: Option<String>,
}

/// `repository` of a payload.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct PayloadRepo {
    /// `owner/name`.
    pub full_name: Option<String>,
}

/// A user in a payload.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct PayloadUser {
    /// Login.
    pub login: Option<String>,
    /// `User`, `Bot`, `Organization`.
    #[serde(rename = "type")]
    pub kind: Option<String>,
}

/// `issue` of a payload.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct PayloadIssue {
    /// Number.
    pub number: Option<u64>,
    /// Labels.
    #[serde(default)]
    pub labels: Option<Vec<PayloadLabel>>,
    /// Present when the issue is a pull request's conversation.
    #[serde(default)]
    pub pull_request: Option<serde::de::IgnoredAny>,
}

/// A label in a payload.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct PayloadLabel {
    /// Name.
    pub name: Option<String>,
}

/// `comment` of a payload.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct PayloadComment {
    /// Body.
    pub body: Option<String>,
}

/// `pull_request` of a payload.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct PayloadPull {
    /// Number.
    pub number: Option<u64>,
    /// Head.
    pub head: Option<PayloadHead>,
    /// Whether it was merged (`pull_request.closed`).
    pub merged: Option<bool>,
}

/// `pull_request.head` of a payload.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct PayloadHead {
    /// Branch.
    #[serde(rename = "ref")]
    pub name: Option<String>,
    /// Commit.
    pub sha: Option<String>,
}

/// `release` of a payload.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct PayloadRelease {
    /// Tag.
    pub tag_name: Option<String>,
}

/// Turns a delivery (event name, parsed payload) into a job, or says why it is ignored.
/// Pure: the sender's permission is checked later by the caller.
pub fn classify(
    event: &str,
    delivery_id: &str,
    payload: &Payload,
    triggers: &[Trigger],
    policy: &SenderPolicy,
) -> Classified {
    let ignored = |why: &str| Classified::Ignored(why.to_string());
    let action = payload.action.as_deref().unwrap_or("");

    let Some(full_name) = payload
        .repository
        .as_ref()
        .and_then(|r| r.full_name.as_deref())
    else {
        return ignored("the payload names no repository");
    };
    let Ok(repo) = Repo::parse(full_name) else {
        return ignored("the payload's repository name is not owner/name");
    };
    let Some(sender) = payload.sender.as_ref().and_then(|s| s.login.as_deref()) else {
        return ignored("the payload names no sender");
    };
    if policy.bot_login.as_deref() == Some(sender) {
        return ignored("the event is baton's own");
    }
    let is_bot = payload.sender.as_ref().and_then(|s| s.kind.as_deref()) == Some("Bot")
        || sender.ends_with("[bot]");
    if is_bot && !policy.allowed_bots.iter().any(|b| b == sender) {
        return ignored("the sender is a bot that is not allowed");
    }
    let active: Vec<&Trigger> = triggers.iter().filter(|t| t.applies_to(&repo)).collect();
    let find = |on: TriggerOn| active.iter().copied().find(|t| t.on == on);
    let event_name = if action.is_empty() {
        event.to_string()
    } else {
        format!("{event}.{action}")
    };
    let job = |subject: Subject, action: JobAction| {
        Classified::Job(Job {
            delivery_id: delivery_id.to_string(),
            event: event_name.clone(),
            sender: sender.to_string(),
            repo: repo.clone(),
            subject,
            action,
        })
    };
    let issue_number = payload.issue.as_ref().and_then(|i| i.number);

    match event {
        "issues" => {
            let Some(number) = issue_number else {
                return ignored("the issue has no number");
            };
            let subject = Subject::Issue { number };
            match action {
                "opened" | "labeled" => {
                    let labels: Vec<&str> = if action == "opened" {
                        payload
                            .issue
                            .iter()
                            .flat_map(|i| i.labels.iter().flatten())
                            .filter_map(|l| l.name.as_deref())
                            .collect()
                    } else {
                        payload
                            .label
                            .iter()
                            .filter_map(|l| l.name.as_deref())
                            .collect()
                    };
                    let hit = active.iter().find(|t| {
                        t.on == TriggerOn::IssueLabeled
                            && labels.contains(&t.label.as_deref().unwrap_or(DEFAULT_LABEL))
                    });
                    match hit {
                        Some(t) => job(
                            subject,
                            JobAction::Start {
                                workflow: t.workflow(),
                            },
                        ),
                        None => ignored("no trigger's label is on the issue"),
                    }
                }
                "assigned" => match (find(TriggerOn::IssueAssigned), &policy.bot_login) {
                    (Some(t), Some(bot))
                        if payload.assignee.as_ref().and_then(|a| a.login.as_deref())
                            == Some(bot.as_str()) =>
                    {
                        job(
                            subject,
                            JobAction::Start {
                                workflow: t.workflow(),
                            },
                        )
                    }
                    (Some(_), None) => ignored("issue_assigned needs the bot's login configured"),
                    (Some(_), Some(_)) => ignored("the issue was assigned to someone else"),
                    (None, _) => ignored("no issue_assigned trigger"),
                },
                "closed" => job(subject, JobAction::IssueClosed),
                _ => ignored("issue action not handled"),
            }
        }
        "issue_comment" => {
            if action != "created" {
                return ignored("only new comments carry commands");
            }
            let Some(t) = find(TriggerOn::IssueComment) else {
                return ignored("no issue_comment trigger");
            };
            let Some(number) = issue_number else {
                return ignored("the issue has no number");
            };
            let body = payload
                .comment
                .as_ref()
                .and_then(|c| c.body.as_deref())
                .unwrap_or("");
            if let Some(instructions) = parse_revise(body) {
                let on_pull = payload
                    .issue
                    .as_ref()
                    .is_some_and(|i| i.pull_request.is_some());
                return if on_pull {
                    job(
                        Subject::Issue { number },
                        JobAction::Revise { instructions },
                    )
                } else {
                    ignored("`/baton revise` works on a pull request, not an issue")
                };
            }
            let on_pull = payload
                .issue
                .as_ref()
                .is_some_and(|i| i.pull_request.is_some());
            let start =
                |subject: Subject, workflow: String| job(subject, JobAction::Start { workflow });
            match parse_command(body) {
                None => ignored("the comment holds no /baton command"),
                Some(Err(why)) => Classified::Ignored(why),
                Some(Ok(Said::Run)) => start(Subject::Issue { number }, t.workflow()),
                // The comment does not carry the head: the review reads the PR itself.
                Some(Ok(Said::Review)) if on_pull => start(
                    Subject::PullRequest {
                        number,
                        head: String::new(),
                        head_sha: String::new(),
                    },
                    find(TriggerOn::PullRequest).map_or_else(
                        || TriggerOn::PullRequest.default_workflow().to_string(),
                        Trigger::workflow,
                    ),
                ),
                Some(Ok(Said::Review)) => ignored("`/baton review` works on a pull request"),
                // The workflow the `bug` label starts, as if the issue had been labeled.
                Some(Ok(Said::Triage)) if !on_pull => start(
                    Subject::Issue { number },
                    active
                        .iter()
                        .find(|t| {
                            t.on == TriggerOn::IssueLabeled && t.label.as_deref() == Some(BUG_LABEL)
                        })
                        .map_or_else(|| TRIAGE_WORKFLOW.to_string(), |t| t.workflow()),
                ),
                Some(Ok(Said::Triage)) => ignored("`/baton triage` works on an issue"),
                Some(Ok(Said::Steer(command))) => {
                    job(Subject::Issue { number }, JobAction::Steer { command })
                }
            }
        }
        "pull_request" if action == "closed" => {
            let pull = payload.pull_request.as_ref();
            let (Some(number), head) = (
                pull.and_then(|p| p.number),
                pull.and_then(|p| p.head.as_ref()),
            ) else {
                return ignored("the pull request payload is incomplete");
            };
            job(
                Subject::PullRequest {
                    number,
                    head: head.and_then(|h| h.name.clone()).unwrap_or_default(),
                    head_sha: head.and_then(|h| h.sha.clone()).unwrap_or_default(),
                },
                JobAction::PullRequestClosed {
                    merged: pull.and_then(|p| p.merged) == Some(true),
                },
            )
        }
        "pull_request_review" => {
            if action != "submitted" {
                return ignored("only a submitted review asks for a revision");
            }
            let state = payload.review.as_ref().and_then(|r| r.state.as_deref());
            if !state.is_some_and(|s| s.eq_ignore_ascii_case("changes_requested")) {
                return ignored("the review does not request changes");
            }
            if find(TriggerOn::PullRequestReview).is_none() {
                return ignored("no pull_request_review trigger");
            }
            let pull = payload.pull_request.as_ref();
            let head = pull.and_then(|p| p.head.as_ref());
            let Some(number) = pull.and_then(|p| p.number) else {
                return ignored("the pull request payload is incomplete");
            };
            job(
                Subject::PullRequest {
                    number,
                    head: head.and_then(|h| h.name.clone()).unwrap_or_default(),
                    head_sha: head.and_then(|h| h.sha.clone()).unwrap_or_default(),
                },
                JobAction::Revise {
                    instructions: String::new(),
                },
            )
        }
        "pull_request" => {
            if action != "opened" && action != "synchronize" {
                return ignored("pull request action not handled");
            }
            let Some(t) = find(TriggerOn::PullRequest) else {
                return ignored("no pull_request trigger");
            };
            let pull = payload.pull_request.as_ref();
            let head = pull.and_then(|p| p.head.as_ref());
            let (Some(number), Some(head), Some(head_sha)) = (
                pull.and_then(|p| p.number),
                head.and_then(|h| h.name.as_deref()),
                head.and_then(|h| h.sha.as_deref()),
            ) else {
                return ignored("the pull request payload is incomplete");
            };
            job(
                Subject::PullRequest {
                    number,
                    head: head.to_string(),
                    head_sha: head_sha.to_string(),
                },
                JobAction::Start {
                    workflow: t.workflow(),
                },
            )
        }
        "push" => {
            let Some(tag) = payload
                .git_ref
                .as_deref()
                .and_then(|r| r.strip_prefix("refs/tags/"))
            else {
                return ignored("a push to a branch");
            };
            if payload.deleted == Some(true) {
                return ignored("a tag deleted");
            }
            match find(TriggerOn::TagPush) {
                Some(t) => job(
                    Subject::Tag {
                        name: tag.to_string(),
                    },
                    JobAction::Start {
                        workflow: t.workflow(),
                    },
                ),
                None => ignored("no tag_push trigger"),
            }
        }
        "release" => {
            if action != "published" {
                return ignored("release action not handled");
            }
            let (Some(t), Some(tag)) = (
                find(TriggerOn::ReleasePublished),
                payload.release.as_ref().and_then(|r| r.tag_name.as_deref()),
            ) else {
                return ignored("no release_published trigger, or no tag");
            };
            job(
                Subject::Tag {
                    name: tag.to_string(),
                },
                JobAction::Start {
                    workflow: t.workflow(),
                },
            )
        }
        _ => ignored("event not handled"),
    }
}

/// What a `/baton` comment asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Said {
    /// `/baton run`: start the `issue_comment` trigger's workflow on the issue.
    Run,
    /// `/baton review`: review the pull request the comment is on (the `pull_request`
    /// trigger's workflow, default `pr_review`).
    Review,
    /// `/baton triage`: triage the issue the comment is on (the workflow of the `bug` label's
    /// trigger, default `bug_triage`).
    Triage,
    /// Steer the run already started for the issue or pull request.
    Steer(Command),
}

/// `/baton revise <instructions>`: the instructions (the rest of that line and every line after
/// it, possibly empty), or `None` when the comment holds no revise command.
pub fn parse_revise(body: &str) -> Option<String> {
    let mut lines = body.lines();
    let first = lines.by_ref().map(str::trim).find(|l| {
        let mut words = l.split_whitespace();
        words.next() == Some(COMMAND_PREFIX) && words.next() == Some("revise")
    })?;
    let rest = first
        .trim_start_matches(COMMAND_PREFIX)
        .trim_start()
        .trim_start_matches("revise")
        .trim();
    let mut text = rest.to_string();
    for line in lines {
        text.push('\n');
        text.push_str(line);
    }
    Some(text.trim().to_string())
}

/// Reads a `/baton` command from the first line of a comment that starts with the prefix.
/// `None`: no command. `Some(Err)`: a malformed command.
pub fn parse_command(body: &str) -> Option<Result<Said, String>> {
    let line = body
        .lines()
        .map(str::trim)
        .find(|l| l.split_whitespace().next() == Some(COMMAND_PREFIX))?;
    let words: Vec<&str> = line.split_whitespace().skip(1).collect();
    let parsed = match words.as_slice() {
        ["run"] => Ok(Said::Run),
        ["review"] => Ok(Said::Review),
        ["triage"] => Ok(Said::Triage),
        ["approve"] => Ok(Said::Steer(Command::Approve)),
        ["retry"] => Ok(Said::Steer(Command::Retry)),
        ["skip"] => Ok(Said::Steer(Command::Skip)),
        ["abort"] => Ok(Said::Steer(Command::Abort)),
        ["rollback"] => Ok(Said::Steer(Command::Rollback(RollbackRequest::Soft))),
        ["rollback", word] => word
            .parse()
            .map(|r| Said::Steer(Command::Rollback(r)))
            .map_err(|why| format!("`/baton rollback`: {why}")),
        [] => Err(
            "`/baton` needs a command: run, review, triage, approve, retry, skip, abort, rollback"
                .into(),
        ),
        other => Err(format!("unknown command `/baton {}`", other.join(" "))),
    };
    Some(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn check_command(body: &str, expected: Option<Result<Said, ()>>) {
        let got = parse_command(body).map(|r| r.map_err(|_| ()));
        assert_eq!(got, expected, "{body:?}");
    }

    #[test]
    fn commands() {
        use Command::*;
        check_command("/baton run", Some(Ok(Said::Run)));
        check_command("  /baton   approve  ", Some(Ok(Said::Steer(Approve))));
        check_command("LGTM\n/baton retry\nthanks", Some(Ok(Said::Steer(Retry))));
        check_command("/baton review", Some(Ok(Said::Review)));
        check_command("/baton triage", Some(Ok(Said::Triage)));
        check_command("/baton skip", Some(Ok(Said::Steer(Skip))));
        check_command("/baton abort", Some(Ok(Said::Steer(Abort))));
        check_command(
            "/baton rollback",
            Some(Ok(Said::Steer(Rollback(RollbackRequest::Soft)))),
        );
        check_command(
            "/baton rollback hard",
            Some(Ok(Said::Steer(Rollback(RollbackRequest::Hard)))),
        );
        check_command(
            "/baton rollback 3",
            Some(Ok(Said::Steer(Rollback(RollbackRequest::Steps(3))))),
        );
        check_command("/baton rollback 0", Some(Err(())));
        check_command("/baton rollback sideways", Some(Err(())));
        check_command("/baton dance", Some(Err(())));
        check_command("/baton", Some(Err(())));
        check_command("/batonrun", None);
        check_command("please /baton run", None);
        check_command("no command here", None);
    }

    #[test]
    fn revise_commands_carry_their_instructions() {
        assert_eq!(
            parse_revise("/baton revise use checked_div\nand a test"),
            Some("use checked_div\nand a test".into())
        );
        assert_eq!(parse_revise("LGTM\n  /baton revise  "), Some(String::new()));
        assert_eq!(parse_revise("/baton revised"), None);
        assert_eq!(parse_revise("/baton run"), None);
    }

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
        assert!(t.validate().unwrap_err().contains("label"));
    }

    fn payload(extra: Value) -> Value {
        let mut p = json!({
            "repository": {"full_name": "octo/app"},
            "sender": {"login": "alice", "type": "User"},
        });
        for (k, v) in extra.as_object().unwrap() {
            p[k] = v.clone();
        }
        p
    }

    fn start(event: &str, p: Value, triggers: &[Trigger], policy: &SenderPolicy) -> String {
        let p: Payload = serde_json::from_value(p).unwrap();
        match classify(event, "d1", &p, triggers, policy) {
            Classified::Job(job) => format!("{:?} {:?}", job.action, job.subject),
            Classified::Ignored(why) => format!("ignored: {why}"),
        }
    }

    #[test]
    fn classification_table() {
        let all = {
            let mut t = Trigger::defaults();
            t.push(Trigger::new(TriggerOn::TagPush));
            t
        };
        let policy = SenderPolicy {
            bot_login: Some("baton-bot".into()),
            allowed_bots: vec!["friendly[bot]".into()],
            ..SenderPolicy::default()
        };
        let issue = json!({"number": 7, "labels": [{"name": "baton"}]});
        let cases: Vec<(&str, Value, &str)> = vec![
            ("issues", payload(json!({"action": "opened", "issue": issue})),
             "Start { workflow: \"issue_to_pr\" } Issue { number: 7 }"),
            ("issues", payload(json!({"action": "opened", "issue": {"number": 7, "labels": []}})),
             "ignored: no trigger's label is on the issue"),
            ("issues", payload(json!({"action": "labeled", "issue": {"number": 7}, "label": {"name": "baton"}})),
             "Start { workflow: \"issue_to_pr\" } Issue { number: 7 }"),
            ("issues", payload(json!({"action": "labeled", "issue": {"number": 7}, "label": {"name": "bug"}})),
             "Start { workflow: \"bug_triage\" } Issue { number: 7 }"),
            ("issues", payload(json!({"action": "opened", "issue": {"number": 7, "labels": [{"name": "bug"}]}})),
             "Start { workflow: \"bug_triage\" } Issue { number: 7 }"),
            ("issues", payload(json!({"action": "labeled", "issue": {"number": 7}, "label": {"name": "wontfix"}})),
             "ignored: no trigger's label is on the issue"),
            ("issues", payload(json!({"action": "assigned", "issue": {"number": 7}, "assignee": {"login": "baton-bot"}})),
             "Start { workflow: \"issue_to_pr\" } Issue { number: 7 }"),
            ("issues", payload(json!({"action": "assigned", "issue": {"number": 7}, "assignee": {"login": "bob"}})),
             "ignored: the issue was assigned to someone else"),
            ("issues", payload(json!({"action": "closed", "issue": issue})),
             "IssueClosed Issue { number: 7 }"),
            ("issues", payload(json!({"action": "reopened", "issue": issue})),
             "ignored: issue action not handled"),
            ("issue_comment", payload(json!({"action": "created", "issue": {"number": 9, "pull_request": {"url": "u"}}, "comment": {"body": "/baton revise use checked_div"}})),
             "Revise { instructions: \"use checked_div\" } Issue { number: 9 }"),
            ("issue_comment", payload(json!({"action": "created", "issue": {"number": 7}, "comment": {"body": "/baton revise x"}})),
             "ignored: `/baton revise` works on a pull request, not an issue"),
            ("pull_request_review", payload(json!({"action": "submitted", "review": {"state": "changes_requested"}, "pull_request": {"number": 9, "head": {"ref": "f", "sha": "abc"}}})),
             "Revise { instructions: \"\" } PullRequest { number: 9, head: \"f\", head_sha: \"abc\" }"),
            ("pull_request_review", payload(json!({"action": "submitted", "review": {"state": "approved"}, "pull_request": {"number": 9}})),
             "ignored: the review does not request changes"),
            ("issue_comment", payload(json!({"action": "created", "issue": {"number": 7}, "comment": {"body": "/baton rollback 2"}})),
             "Steer { command: Rollback(Steps(2)) } Issue { number: 7 }"),
            ("issue_comment", payload(json!({"action": "created", "issue": {"number": 7}, "comment": {"body": "/baton run"}})),
             "Start { workflow: \"issue_to_pr\" } Issue { number: 7 }"),
            ("issue_comment", payload(json!({"action": "created", "issue": {"number": 7, "pull_request": {"url": "x"}}, "comment": {"body": "/baton review"}})),
             "Start { workflow: \"pr_review\" } PullRequest { number: 7, head: \"\", head_sha: \"\" }"),
            ("issue_comment", payload(json!({"action": "created", "issue": {"number": 7}, "comment": {"body": "/baton review"}})),
             "ignored: `/baton review` works on a pull request"),
            ("issue_comment", payload(json!({"action": "created", "issue": {"number": 7}, "comment": {"body": "/baton triage"}})),
             "Start { workflow: \"bug_triage\" } Issue { number: 7 }"),
            ("issue_comment", payload(json!({"action": "created", "issue": {"number": 7, "pull_request": {}}, "comment": {"body": "/baton triage"}})),
             "ignored: `/baton triage` works on an issue"),
            ("issue_comment", payload(json!({"action": "edited", "issue": {"number": 7}, "comment": {"body": "/baton run"}})),
             "ignored: only new comments carry commands"),
            ("issue_comment", payload(json!({"action": "created", "issue": {"number": 7}, "comment": {"body": "nice"}})),
             "ignored: the comment holds no /baton command"),
            ("pull_request", payload(json!({"action": "synchronize", "pull_request": {"number": 9, "head": {"ref": "f", "sha": "abc"}}})),
             "Start { workflow: \"pr_review\" } PullRequest { number: 9, head: \"f\", head_sha: \"abc\" }"),
            ("pull_request", payload(json!({"action": "closed", "pull_request": {"number": 9}})),
             "PullRequestClosed { merged: false } PullRequest { number: 9, head: \"\", head_sha: \"\" }"),
            ("pull_request", payload(json!({"action": "closed", "pull_request": {"number": 9, "merged": true, "head": {"ref": "f", "sha": "abc"}}})),
             "PullRequestClosed { merged: true } PullRequest { number: 9, head: \"f\", head_sha: \"abc\" }"),
            ("pull_request", payload(json!({"action": "labeled", "pull_request": {"number": 9}})),
             "ignored: pull request action not handled"),
            ("push", payload(json!({"ref": "refs/tags/v1.0.0", "deleted": false})),
             "Start { workflow: \"release_notes\" } Tag { name: \"v1.0.0\" }"),
            ("push", payload(json!({"ref": "refs/tags/v1.0.0", "deleted": true})),
             "ignored: a tag deleted"),
            ("push", payload(json!({"ref": "refs/heads/main"})), "ignored: a push to a branch"),
            ("release", payload(json!({"action": "published", "release": {"tag_name": "v2"}})),
             "Start { workflow: \"release_notes\" } Tag { name: \"v2\" }"),
            ("release", payload(json!({"action": "created", "release": {"tag_name": "v2"}})),
             "ignored: release action not handled"),
            ("star", payload(json!({"action": "created"})), "ignored: event not handled"),
        ];
        for (event, p, expected) in cases {
            assert_eq!(
                start(event, p.clone(), &all, &policy),
                expected,
                "{event} {p}"
            );
        }

        // Bots, and baton itself.
        let mut bot = payload(json!({"action": "opened", "issue": issue}));
        bot["sender"] = json!({"login": "dependabot[bot]", "type": "Bot"});
        assert_eq!(
            start("issues", bot.clone(), &all, &policy),
            "ignored: the sender is a bot that is not allowed"
        );
        bot["sender"] = json!({"login": "friendly[bot]", "type": "Bot"});
        assert!(start("issues", bot.clone(), &all, &policy).starts_with("Start"));
        bot["sender"] = json!({"login": "baton-bot", "type": "User"});
        assert_eq!(
            start("issues", bot, &all, &policy),
            "ignored: the event is baton's own"
        );

        // Defaults have no tag_push; repos filter; custom label and workflow.
        let tag = payload(json!({"ref": "refs/tags/v1", "deleted": false}));
        assert_eq!(
            start("push", tag, &Trigger::defaults(), &policy),
            "ignored: no tag_push trigger"
        );
        let custom = vec![Trigger {
            on: TriggerOn::IssueLabeled,
            label: Some("autofix".into()),
            workflow: Some("bug_triage".into()),
            repos: vec!["other/repo".into()],
        }];
        let labeled = payload(
            json!({"action": "labeled", "issue": {"number": 1}, "label": {"name": "autofix"}}),
        );
        assert_eq!(
            start("issues", labeled.clone(), &custom, &policy),
            "ignored: no trigger's label is on the issue"
        );
        let mut here = custom.clone();
        here[0].repos = vec!["octo/app".into()];
        assert_eq!(
            start("issues", labeled, &here, &policy),
            "Start { workflow: \"bug_triage\" } Issue { number: 1 }"
        );
    }
}
