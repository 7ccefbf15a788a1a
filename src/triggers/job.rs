//! What a delivery becomes: a [`Job`] (start, steer, revise, clean up) about a [`Subject`],
//! or a reason it was ignored.

use baton_actors::RollbackRequest;
use serde::{Deserialize, Serialize};

use crate::forge::Repo;

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
    /// What a run for this subject of `repo` is about, in the engine's terms (a tag's run is
    /// about the repository).
    pub fn about(&self, repo: &Repo) -> baton_actors::Subject {
        match self {
            Subject::Issue { number } => baton_actors::Subject::issue(repo.to_string(), *number),
            Subject::PullRequest { number, .. } => {
                baton_actors::Subject::pull_request(repo.to_string(), *number)
            }
            Subject::Tag { .. } => baton_actors::Subject::repository(repo.to_string()),
        }
    }

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
    /// `/baton run --force`: start a workflow on the issue, or, when baton's pull request for
    /// the issue is still open, revise that pull request instead (one open PR per issue).
    StartOrRevise {
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
    /// `/baton fix-ci` on baton's pull request (the subject): one more CI fix round for the
    /// run that opened it, which must be waiting at `ci_wait`.
    FixCi,
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
    /// The event's own identity (the listener sets it from the signed body); the sink stores
    /// it beside the delivery id, so that a replay under a new delivery id starts nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<super::EventIdentity>,
}

/// The outcome of [`classify`].
#[derive(Clone, Debug, PartialEq, Eq)]
// One per delivery, matched once: boxing the job would buy nothing.
#[allow(clippy::large_enum_variant)]
pub enum Classified {
    /// A job to run once the sender's permission is checked.
    Job(Job),
    /// Nothing to do, and why.
    Ignored(String),
}
