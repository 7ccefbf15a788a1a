//! baton-actors: the durable workflow engine.
//!
//! # Layout
//!
//! - [`definition`]: workflows as data (TOML or a Rust builder), validated into a `Workflow`.
//! - [`template`]: templates and conditions over `{input, state, steps, run}` (minijinja).
//! - [`record`]: what is stored of a run: head, step records, append-only events.
//! - [`machine`]: the pure state machine `(record, input, env) -> (events, effects)`;
//!   every policy (retry, skip, pause, goto, waits, rollback) lives here and nowhere else.
//! - [`store`]: the `Store` trait and its backends, `store::sled` (one process, one data dir)
//!   and `store::postgres` (a database several daemons share), each in a folder of its own;
//!   both commit in groups, and nothing is visible before it is durable.
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
//! Small modules at the bottom, so that the modules sharing them need not import each other:
//! `clock` (`Millis`, `now_ms`) imports nothing of the crate, `job` (`Job`, what started a run:
//! the store keeps it, the subject index reads it) only the clock, and `notice` (`Notice`, what
//! the bus carries: actions send progress, `shared` owns the bus) only the record.
//!
//! This crate knows nothing of git, GitHub, Telegram or HTTP.

pub mod action;
pub mod admission;
pub mod backoff;
mod clock;
mod cluster;
pub mod definition;
pub mod engine;
mod error;
mod job;
pub mod machine;
mod messages;
mod notice;
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
pub mod telemetry;
pub mod template;

pub use action::{
    Action, ActionContext, ActionError, ActionFuture, ChangeJournal, Progress, SharedOutput,
};
pub use admission::{Limit, QueuedBehind};
pub use clock::now_ms;
pub use definition::{
    Definition, Interface, Provenance, Retry, RetryPolicy, RollbackMode, StepDef, Workflow,
};
pub use engine::{Engine, FoundRuns, RunFilter, Subscription};
pub use error::{Error, Result};
pub use machine::RollbackRequest;
pub use messages::ResumeReport;
pub use notice::Notice;
pub use notifier::{DeliveryState, Happening, NotifierHandle, Sink, SinkError, SinkFuture, Update};
pub use record::{
    Event, EventKind, RunRecord, RunStatus, StepRecord, StepStatus, WaitKind, WaitingFor,
};
pub use shared::EngineConfig;
pub use shell::{ShellPolicy, ShellSandbox};
pub use store::{Change, Job, StoredDefinition};
pub use subject::{RunSearch, Subject, SubjectKind};
