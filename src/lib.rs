//! baton: a durable workflow engine and daemon that turns a GitHub issue into a tested
//! pull request.
//!
//! # Layout
//!
//! - [`cli`]: the command line; every command goes through [`backend::Backend`].
//! - [`commands`]: commands in their own files: `issue-to-pr`, `demo`, `forge`.
//! - [`config`]: defaults < `config.toml` < environment; unknown keys are errors.
//! - [`backend`]: one interface over a local engine (the store opened in-process) and a
//!   running daemon (its HTTP API), so commands behave the same either way.
//! - [`daemon`]: `baton serve`: the JSON API, server-sent events and `/metrics`.
//! - [`view`]: the JSON shapes users and scripts rely on.
//! - [`actions`]: the actions this binary registers with the engine.
//! - [`workspace`]: the mirror cache, one clone per run, branches, file writes, commits,
//!   pushes and rebases, each recorded in the change journal, and the compensators.
//! - [`verify`]: detecting and running a repository's tests, lint and type checks, and the
//!   measured report (`baton verify` and the `verify` action).
//! - [`agent`]: the coding agent (backends, jailed tools, budgets, fix loop); `agent.implement`
//!   and `agent.fix` run it as steps, `baton agent run` runs it alone.
//! - [`forge`]: the [`Forge`](forge::Forge) trait (issues, comments, PRs, reviews, labels,
//!   branches, releases, permissions), the hidden run marker and the idempotent effects built
//!   on it; [`forge::github`] (octocrab: token or App, Enterprise base URL, rate limits and
//!   retries) and [`forge::local`] (an offline forge in a directory: JSON files, a bare git
//!   remote).
//! - [`ci`]: the repository's own CI as a run waits for it: which checks count, whether they
//!   passed, and the excerpt of a failing one's log the agent gets (pure).
//! - [`notify`]: the Notifier's sinks (the progress comment on an issue, the terminal display,
//!   the log) and the texts of progress updates.
//! - [`triggers`]: `[[triggers]]` and `[webhook]` configuration and the pure classification of a
//!   delivery into a [`Job`](triggers::Job).
//! - [`workflows`]: the built-in workflows, one file each (definition and its own actions).
//! - [`secrets`]: every token, key and password, from `NAME` or `NAME_FILE`, held in memory
//!   only; the process non-dumpable and re-executed without them in its environment.
//! - [`web`]: `POST /webhooks/github` (signature, limits, dedup, permission check), handing
//!   jobs to a [`JobSink`](web::webhook::JobSink); the daemon implements it over the engine.
//!
//! The engine itself is the `baton-actors` crate; this crate depends on it, never the
//! reverse.

pub mod actions;
pub mod agent;
pub mod backend;
pub mod ci;
pub mod cli;
pub mod commands;
pub mod config;
pub mod daemon;
pub mod forge;
pub mod gc;
pub mod journal;
pub mod logging;
pub mod notify;
pub mod sandbox;
pub mod secrets;
pub mod spending;
pub mod telegram;
pub mod telemetry;
pub mod timestamp;
pub mod triggers;
pub mod verify;
pub mod view;
pub mod web;
pub mod workflows;
pub mod workspace;
