//! Actions: the work a step does. One async trait; the engine ships `noop`, `log` and
//! `shell`, and the app registers the rest (git, verify, agent, forge) by name.
//!
//! An action gets an [`ActionContext`]: who it runs for, its rendered parameters, an
//! idempotency key that stays the same when a crash makes the same attempt run again, a
//! change journal, a progress handle and a cancellation token. It returns a JSON output or
//! an [`ActionError`] that says whether a retry could help.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use serde_json::{json, Value};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::clock::now_ms;
use crate::notice::Notice;
use crate::store::{Batch, Change, Store};

/// What an action returns.
pub type ActionFuture = Pin<Box<dyn Future<Output = Result<Value, ActionError>> + Send>>;

/// A unit of work a step can run.
pub trait Action: Send + Sync + 'static {
    /// Runs one attempt. Must stop promptly when `ctx.cancel` fires; dropping the future
    /// (on timeout) must release what it holds (kill processes, close files).
    fn run(&self, ctx: ActionContext) -> ActionFuture;
}

impl<F, Fut> Action for F
where
    F: Fn(ActionContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Value, ActionError>> + Send + 'static,
{
    fn run(&self, ctx: ActionContext) -> ActionFuture {
        Box::pin(self(ctx))
    }
}

/// Why an attempt failed.
#[derive(Debug, Clone, PartialEq)]
pub struct ActionError {
    /// What went wrong, for people.
    pub message: String,
    /// Whether another attempt could succeed (the step's retry policy decides if it runs).
    pub retryable: bool,
    /// Output made before the failure (e.g. a failed command's exit code and output).
    pub output: Value,
}

impl ActionError {
    /// A failure a retry may fix (a timeout, a 503, a flaky test).
    pub fn retryable(message: impl Into<String>) -> Self {
        ActionError {
            message: message.into(),
            retryable: true,
            output: Value::Null,
        }
    }

    /// A failure no retry can fix (bad parameters, a 404).
    pub fn fatal(message: impl Into<String>) -> Self {
        ActionError {
            message: message.into(),
            retryable: false,
            output: Value::Null,
        }
    }

    /// Attaches output.
    pub fn with_output(mut self, output: Value) -> Self {
        self.output = output;
        self
    }
}

impl std::fmt::Display for ActionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Everything an attempt knows about where it runs.
#[derive(Clone)]
pub struct ActionContext {
    /// The run.
    pub run_id: String,
    /// The workflow.
    pub workflow_id: String,
    /// The step's id.
    pub step_id: String,
    /// The step's index.
    pub step_index: usize,
    /// The attempt number, from 1.
    pub attempt: u32,
    /// `run/step/attempt`: the same when a crash makes this attempt run again. Effects
    /// outside baton should carry it so a second run can find the first one's result.
    pub idempotency_key: String,
    /// The rendered `with` parameters.
    pub params: Value,
    /// The run's own directory.
    pub workspace: PathBuf,
    /// Records changes for rollback.
    pub journal: ChangeJournal,
    /// Sends progress messages to the notifier and the admin page.
    pub progress: Progress,
    /// Fires on cancel or abort.
    pub cancel: CancellationToken,
    /// For a compensation: the changes the step recorded, oldest first. Empty otherwise.
    pub changes: Vec<Change>,
    /// For a compensation: the step's output.
    pub step_output: Value,
    /// The step's `pass_env`: variables of the daemon its command may have, by name. From the
    /// definition, never from a template.
    pub pass_env: Vec<String>,
    /// The step's `sandbox`: its command runs in the sandbox or not at all.
    pub sandbox: bool,
    /// The run's input, as data: `shell` steps get it as `BATON_INPUT_*` variables, so that
    /// a script never has to splice a value into its own text.
    pub input: serde_json::Map<String, Value>,
    /// What this run's completed steps that ran a shared action returned, in the order they
    /// completed (see [`crate::Engine::share_outputs_of`]): the run's record of, say, the clone
    /// a `git.clone` step made, which no file a later step can write changes.
    pub shared_outputs: Vec<SharedOutput>,
}

/// The output of an earlier step of the run, handed to later steps (see
/// [`ActionContext::shared_outputs`]).
#[derive(Clone, Debug, PartialEq)]
pub struct SharedOutput {
    /// The step's id.
    pub step_id: String,
    /// The action it ran.
    pub action: String,
    /// What it returned, as the run's record holds it.
    pub output: Value,
}

impl ActionContext {
    /// The outputs of this run's completed steps that ran `action`, newest first.
    pub fn outputs_of<'a>(&'a self, action: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
        self.shared_outputs
            .iter()
            .rev()
            .filter(move |s| s.action == action)
            .map(|s| &s.output)
    }

    /// A string parameter, or a fatal error naming it.
    pub fn param_str(&self, name: &str) -> Result<&str, ActionError> {
        match self.params.get(name) {
            Some(Value::String(s)) => Ok(s),
            Some(other) => Err(ActionError::fatal(format!(
                "step `{}`: parameter `{name}` must be a string, got {other}",
                self.step_id
            ))),
            None => Err(ActionError::fatal(format!(
                "step `{}`: missing parameter `{name}`",
                self.step_id
            ))),
        }
    }
}

/// The change journal of one run, as seen by one step: every record is durable before
/// `record` returns, so a crash right after a change still knows to undo it.
#[derive(Clone)]
pub struct ChangeJournal {
    store: Arc<dyn Store>,
    run_id: String,
    step_index: usize,
}

impl ChangeJournal {
    pub(crate) fn new(store: Arc<dyn Store>, run_id: String, step_index: usize) -> Self {
        ChangeJournal {
            store,
            run_id,
            step_index,
        }
    }

    /// Records a change (`file_create`, `file_modify`, `branch_create`, `commit`, …).
    pub async fn record(&self, change_type: &str, change_data: Value) -> crate::Result<Change> {
        let seq = self.store.next_id()?;
        let change = Change {
            id: format!("{}/{seq}", self.run_id),
            workflow_run_id: self.run_id.clone(),
            step_index: self.step_index,
            change_type: change_type.to_string(),
            change_data,
            created_at: now_ms(),
        };
        let mut batch = Batch::new();
        batch.change(seq, &change);
        self.store.commit(batch).await?;
        Ok(change)
    }
}

/// Sends progress messages (not stored; the events are).
#[derive(Clone)]
pub struct Progress {
    bus: broadcast::Sender<Notice>,
    run_id: String,
    step_id: String,
}

impl Progress {
    pub(crate) fn new(bus: broadcast::Sender<Notice>, run_id: String, step_id: String) -> Self {
        Progress {
            bus,
            run_id,
            step_id,
        }
    }

    /// Says something about the step's progress ("3 files modified").
    pub fn say(&self, message: impl Into<String>) {
        let _ = self.bus.send(Notice::Progress {
            run: self.run_id.clone(),
            step: self.step_id.clone(),
            message: message.into(),
        });
    }
}

/// `noop`: does nothing, returns its parameters. For tests, benchmarks and placeholders.
pub fn noop() -> impl Action {
    |ctx: ActionContext| async move { Ok(ctx.params) }
}

/// `log`: writes `message` to the log and the progress stream.
pub fn log() -> impl Action {
    |ctx: ActionContext| async move {
        let message = ctx.param_str("message")?.to_string();
        tracing::info!(run = %ctx.run_id, step = %ctx.step_id, "{message}");
        ctx.progress.say(message.clone());
        Ok(json!({ "message": message }))
    }
}
