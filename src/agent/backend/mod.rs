//! Backends: what turns a parsed, analyzed issue into changed files. One trait, four
//! implementations: [`openai`] and [`anthropic`] drive a model through the tools
//! (`chat.rs` holds the loop they share), [`command`] runs an external coding CLI, and
//! [`patch`] applies the diffs the issue carries.

pub mod anthropic;
pub(crate) mod chat;
pub mod command;
pub mod openai;
pub mod patch;

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::agent::analyze::Analysis;
use crate::agent::budget::{Budget, StopReason};
use crate::agent::changes::ChangeTracker;
use crate::agent::config::AgentConfig;
use crate::agent::error::Result;
use crate::agent::issue::{Issue, IssueInput};
use crate::agent::jail::Jail;
use crate::agent::journal::{BoxFuture, DynJournal};
use crate::agent::plan::Plan;
use crate::agent::transcript::{Entry, Redactor, Transcript};

/// How a round ended when it did not fail.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Outcome {
    /// The backend says the work is done.
    Finished {
        /// What was changed and why, in the backend's words.
        summary: String,
    },
    /// A budget ran out; the partial work stays in the workspace.
    Stopped {
        /// Which budget, how much was used.
        reason: StopReason,
    },
}

/// How a planning phase ended when it did not fail.
#[derive(Clone, Debug, PartialEq)]
pub enum Planned {
    /// The model gave a complete plan.
    Plan(Plan),
    /// It did not: why, in words ("turn budget exhausted: …").
    NoPlan(String),
}

/// Receives progress lines ("Plan: 3 steps...", "Implementing changes (2 files changed)").
pub trait Progress: Send + Sync {
    /// One update; must not block.
    fn update(&self, message: &str);
}

/// Progress that goes nowhere.
impl Progress for () {
    fn update(&self, _message: &str) {}
}

/// One round of work (the run, or a fix round) as a backend sees it.
pub struct Round<'a> {
    pub(crate) config: &'a AgentConfig,
    pub(crate) jail: &'a Jail,
    pub(crate) issue: &'a Issue,
    /// The issue as written; `None` in fix rounds.
    pub(crate) raw_issue: Option<&'a IssueInput>,
    pub(crate) analysis: &'a Analysis,
    pub(crate) plan: Option<Plan>,
    /// The instructions for this round: the issue, the map, and in a fix round the failure.
    pub(crate) task: String,
    /// Verification output that failed, in a fix round.
    pub(crate) failure: Option<String>,
    pub(crate) journal: &'a dyn DynJournal,
    pub(crate) tracker: ChangeTracker,
    pub(crate) progress: &'a dyn Progress,
    pub(crate) cancel: &'a CancellationToken,
    pub(crate) budget: Budget,
    pub(crate) transcript: Transcript,
    pub(crate) redactor: &'a Redactor,
    /// Where commands run, and with which variables.
    pub(crate) exec: crate::agent::process::Exec,
}

impl Round<'_> {
    /// The workspace root.
    pub fn workspace(&self) -> &Path {
        self.jail.root()
    }
    /// The parsed issue.
    pub fn issue(&self) -> &Issue {
        self.issue
    }
    /// The repository map.
    pub fn analysis(&self) -> &Analysis {
        self.analysis
    }
    /// The plan so far.
    pub fn plan(&self) -> Option<&Plan> {
        self.plan.as_ref()
    }
    /// This round's instructions.
    pub fn task(&self) -> &str {
        &self.task
    }
    /// Adds a note to the transcript.
    pub fn note(&mut self, text: impl AsRef<str>) {
        let ms = self.budget.elapsed().as_millis() as u64;
        self.transcript.push(
            ms,
            Entry::Note {
                text: text.as_ref().to_string(),
            },
            self.redactor,
        );
    }
    pub(crate) fn push(&mut self, entry: Entry) {
        let ms = self.budget.elapsed().as_millis() as u64;
        self.transcript.push(ms, entry, self.redactor);
    }
    /// Time left in the round.
    pub fn remaining_time(&self) -> Duration {
        self.budget.remaining_time()
    }
}

/// A way to implement an issue. Boxed futures keep the trait object-safe, so the backend can
/// be chosen from config at run time (`Box<dyn Backend>`).
pub trait Backend: Send + Sync {
    /// `openai`, `anthropic`, `command` or `patch`.
    fn name(&self) -> &'static str;
    /// Does the round's work in the workspace, recording every write in the journal.
    fn implement<'a, 'b: 'a>(&'a self, round: &'a mut Round<'b>) -> BoxFuture<'a, Result<Outcome>>;
    /// Plans the round's issue, reading the workspace with the read-only tools only
    /// ([`crate::agent::Agent::plan`]). `None`: this backend has no model that takes tools
    /// from baton, so it cannot plan that way (`patch`, and `command`, whose coding CLI reads
    /// and writes with its own tools, which baton cannot make read-only).
    fn plan<'a, 'b: 'a>(
        &'a self,
        _round: &'a mut Round<'b>,
    ) -> Option<BoxFuture<'a, Result<Planned>>> {
        None
    }
    /// Whether [`crate::agent::Agent::fix`] can use this backend.
    fn can_fix(&self) -> bool {
        true
    }
}
