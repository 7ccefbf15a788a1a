//! The parts of GitHub's webhook payloads that triggers read, typed.

use serde::Deserialize;

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
    /// `after` (push): the commit the ref now points at.
    pub after: Option<String>,
    /// `check_suite` (check_suite).
    pub check_suite: Option<PayloadCi>,
    /// `check_run` (check_run).
    pub check_run: Option<PayloadCi>,
    /// `workflow_run` (workflow_run).
    pub workflow_run: Option<PayloadCi>,
    /// `sha` (status): the commit a commit status is about.
    pub sha: Option<String>,
}

/// The events that report CI results on a commit: news that wakes a run waiting on it.
pub const CI_EVENTS: [&str; 4] = ["check_suite", "check_run", "workflow_run", "status"];

impl Payload {
    /// The commit a CI event (one of [`CI_EVENTS`]) reports on: `check_suite.head_sha`,
    /// `check_run.head_sha`, `workflow_run.head_sha` or a status's `sha`. `None` for other
    /// events, or when the payload lacks it.
    pub fn ci_head_sha(&self, event: &str) -> Option<&str> {
        let sha = match event {
            "check_suite" => self.check_suite.as_ref()?.head_sha.as_deref(),
            "check_run" => self.check_run.as_ref()?.head_sha.as_deref(),
            "workflow_run" => self.workflow_run.as_ref()?.head_sha.as_deref(),
            "status" => self.sha.as_deref(),
            _ => None,
        }?;
        // A full sha only: a shorter one could name several commits.
        (sha.len() == 40 && sha.bytes().all(|b| b.is_ascii_hexdigit())).then_some(sha)
    }
}

/// `check_suite`, `check_run` or `workflow_run` of a payload.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct PayloadCi {
    /// The commit it ran on.
    pub head_sha: Option<String>,
}

/// `review` of a payload.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct PayloadReview {
    /// GitHub's id of the review.
    pub id: Option<u64>,
    /// When it was submitted.
    pub submitted_at: Option<String>,
    /// `approved`, `changes_requested`, `commented`...
    pub state: Option<String>,
    /// The review's text (baton's own reviews carry its hidden marker).
    #[serde(default)]
    pub body: Option<String>,
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
    /// GitHub's id of the issue (unique across repositories).
    pub id: Option<u64>,
    /// When it last changed.
    pub updated_at: Option<String>,
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
    /// GitHub's id of the comment.
    pub id: Option<u64>,
    /// When it last changed (an edit).
    pub updated_at: Option<String>,
    /// Body.
    pub body: Option<String>,
}

/// `pull_request` of a payload.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct PayloadPull {
    /// GitHub's id of the pull request.
    pub id: Option<u64>,
    /// When it last changed.
    pub updated_at: Option<String>,
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
    /// GitHub's id of the release.
    pub id: Option<u64>,
    /// Tag.
    pub tag_name: Option<String>,
}
