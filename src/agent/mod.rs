//! The coding agent (issue 5): turns an issue into changed files in a workspace.
//!
//! # Layout
//!
//! - [`issue`]: parse and sanitize the issue (criteria, files, code blocks); quote it as data.
//! - [`analyze`]: repository map (files, languages, symbols) and BM25 ranking against the issue.
//! - [`backend`]: the [`Backend`] trait and its four implementations: `openai`, `anthropic`
//!   (a model driving the tools), `command` (an external coding CLI), `patch` (the issue's diffs).
//! - [`tools`]: what a model may do; every path goes through [`jail`], every write through the
//!   [`journal`] first.
//! - [`budget`] (turns, tokens, time, money), `http` (timeouts, retries honouring Retry-After),
//!   [`transcript`] (redacted), [`config`] (the `[agent]` table).
//! - [`ask`]: one question to the model, no tools (the review, triage and notes workflows).
//! - [`plan`]: the [`Plan`]; [`Agent::plan`] makes one with a model that may only read
//!   (the issue_to_pr plan step), and [`Agent::run_with_plan`] implements it.
//! - [`driver`]: [`Agent::run`] and [`Agent::fix`] tie it together and return a [`Report`].
//! - `engine`: the engine's change journal and progress handle as the agent's
//!   [`Journal`] and [`Progress`].
//!
//! This module does no rollback and owns no storage: the engine's journal records changes, and
//! the engine keeps the report. Nothing here reads a secret except [`ProviderEnv`], and no
//! serialized type holds one.

pub mod analyze;
pub mod ask;
pub mod backend;
pub mod budget;
pub mod changes;
pub mod config;
pub mod driver;
mod engine;
pub mod error;
mod http;
pub mod issue;
pub mod jail;
pub mod journal;
pub mod plan;
pub mod process;
pub mod tools;
pub mod transcript;

pub use crate::journal::{Change, Journal, MemoryJournal};
pub use backend::{Backend, Outcome, Planned, Progress, Round};
pub use budget::{BudgetKind, StopReason, Usage};
pub use changes::{ChangeKind, FileChange};
pub use config::{AgentConfig, BackendKind, Price, ProviderEnv, Secret};
pub use driver::{Agent, Report};
pub use error::{Error, Result};
pub use issue::{Issue, IssueInput};
pub use journal::BoxFuture;
pub use plan::{Plan, PlanBrief, Planning};
pub use tokio_util::sync::CancellationToken;
pub use transcript::{Entry, Redactor, Transcript};
