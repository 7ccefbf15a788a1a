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

mod classify;
mod commands;
mod config;
mod identity;
mod job;
mod payload;

pub use classify::classify;
pub use commands::{parse_command, parse_revise, BadComment, Said};
pub use config::*;
pub use identity::EventIdentity;
pub use job::*;
pub use payload::*;
