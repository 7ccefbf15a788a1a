//! baton-actors: the durable workflow engine.
//!
//! # Layout
//!
//! - [`definition`]: workflows as data (TOML or a Rust builder), validated into a `Workflow`.
//! - [`template`]: templates and conditions over `{input, state, steps, run}` (minijinja).
//! - [`record`]: what is stored of a run: head, step records, append-only events.
//! - [`machine`]: the pure state machine `(record, input, env) -> (events, effects)`;
//!   every policy (retry, skip, pause, goto, waits, rollback) lives here and nowhere else.
//! - [`store`]: sled trees and the group-commit writer; nothing is visible before it is durable.
//! - [`subject`]: what a run is about (repository, issue or PR) and the search that finds it.
//! - [`action`]: the `Action` trait, its context (journal, progress, cancellation) and the
//!   `noop`/`log` built-ins; [`shell`] is the `shell` action.
//! - [`procs`]: every spawned command's process group, recorded before it execs and killed
//!   at start-up if a crashed daemon left it running.
//! - [`admission`]: concurrency limits (all runs, per repository, per workflow) and the
//!   round-robin queue across repositories; what a pending run queues behind.
//! - `supervisor`, `run_actor`, `step_actor`: the ractor supervision tree that feeds the
//!   machine and carries out its effects.
//! - [`notifier`]: the `Notifier` actor and the `Sink` trait: runs' progress, coalesced and
//!   paced per target, delivered to the app's sinks (forge comment, terminal, log, chat).
//! - [`engine`]: the facade every caller holds.
//!
//! This crate knows nothing of git, GitHub, Telegram or HTTP.

pub mod action;
pub mod admission;
pub mod backoff;
mod cluster;
pub mod definition;
pub mod engine;
mod error;
pub mod machine;
mod messages;
pub mod notifier;
pub mod procs;
pub mod record;
mod run_actor;
mod shared;
pub mod shell;
mod step_actor;
pub mod store;
pub mod subject;
mod supervisor;
pub mod template;

pub use action::{
    Action, ActionContext, ActionError, ActionFuture, ChangeJournal, Progress, SharedOutput,
};
pub use admission::{Limit, QueuedBehind};
pub use definition::{
    Definition, Interface, Provenance, RetryPolicy, RollbackMode, StepDef, Workflow,
};
pub use engine::{Engine, FoundRuns, RunFilter, Subscription};
pub use error::{Error, Result};
pub use machine::RollbackRequest;
pub use messages::ResumeReport;
pub use notifier::{DeliveryState, Happening, NotifierHandle, Sink, SinkError, SinkFuture, Update};
pub use record::{
    Event, EventKind, RunRecord, RunStatus, StepRecord, StepStatus, WaitKind, WaitingFor,
};
pub use shared::{now_ms, EngineConfig, Notice};
pub use shell::{ShellPolicy, ShellSandbox};
pub use store::{Change, Job, StoredDefinition};
pub use subject::RunSearch;
