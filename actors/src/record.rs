//! What is stored about a run: its head record, one record per step, and the append-only
//! events that change them. Events are the truth: a record is its last snapshot with the
//! later events applied by [`RunRecord::apply`], which is deterministic and idempotent.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use crate::clock::Millis;
use crate::subject::{Subject, SubjectKind};

/// A run's lifecycle status (the seed's, plus `cancelled`).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Created, not yet started.
    Pending,
    /// A step or a compensation is in flight.
    Running,
    /// Parked until a signal, an approval, a retry timer or a person.
    Waiting,
    /// Finished its steps.
    Completed,
    /// Stopped by a failure or an abort.
    Failed,
    /// Stopped by a cancel.
    Cancelled,
}

impl RunStatus {
    /// Completed, failed or cancelled.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            RunStatus::Completed | RunStatus::Failed | RunStatus::Cancelled
        )
    }

    /// Every status.
    pub const ALL: [RunStatus; 6] = [
        RunStatus::Pending,
        RunStatus::Running,
        RunStatus::Waiting,
        RunStatus::Completed,
        RunStatus::Failed,
        RunStatus::Cancelled,
    ];

    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Pending => "pending",
            RunStatus::Running => "running",
            RunStatus::Waiting => "waiting",
            RunStatus::Completed => "completed",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
        }
    }

    /// The one table of legal status changes. Terminal runs may be reopened by `retry`,
    /// `skip` or a partial rollback, which is why `failed`/`completed` → `running` is legal.
    pub fn can_become(self, next: RunStatus) -> bool {
        use RunStatus::*;
        matches!(
            (self, next),
            (Pending, Running | Waiting | Completed | Failed | Cancelled)
                | (Running, Running | Waiting | Completed | Failed | Cancelled)
                | (Waiting, Running | Waiting | Failed | Cancelled | Completed)
                | (Failed, Running | Failed)
                | (Completed, Running | Completed)
                // A hard rollback of a cancelled run compensates, then restores `cancelled`.
                | (Cancelled, Running | Cancelled)
        )
    }
}

impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A word that is not a run status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown status `{0}` (expected pending, running, waiting, completed, failed or cancelled)"
)]
pub struct UnknownStatus(pub String);

impl std::str::FromStr for RunStatus {
    type Err = UnknownStatus;
    fn from_str(s: &str) -> Result<Self, UnknownStatus> {
        Ok(match s {
            "pending" => RunStatus::Pending,
            "running" => RunStatus::Running,
            "waiting" => RunStatus::Waiting,
            "completed" => RunStatus::Completed,
            "failed" => RunStatus::Failed,
            "cancelled" => RunStatus::Cancelled,
            other => return Err(UnknownStatus(other.to_string())),
        })
    }
}

/// A step's status within a run.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    /// Not reached yet.
    #[default]
    Pending,
    /// An attempt is in flight.
    Running,
    /// A wait step is waiting, or a retry is scheduled.
    Waiting,
    /// Done; never runs again unless rolled back.
    Completed,
    /// The last attempt failed.
    Failed,
    /// Skipped by `when`, by policy or by a person.
    Skipped,
    /// Completed, then undone by its compensation.
    Compensated,
}

/// Why a run is waiting.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum WaitKind {
    /// A named signal (`baton signal`).
    Signal,
    /// The `approve` signal (`baton approve` / `reject`).
    Approval,
    /// A retry's backoff timer.
    Retry,
    /// A person must retry, skip, abort or roll back after a failure.
    Intervention,
}

/// What a waiting run waits for.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct WaitingFor {
    /// The kind of wait.
    pub kind: WaitKind,
    /// The signal name, or the step id for retries and interventions.
    pub name: String,
    /// The step that waits.
    pub step: String,
    /// When the wait began.
    pub since: Millis,
    /// When its timer fires, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<Millis>,
}

/// A signal that arrived before its wait.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct BufferedSignal {
    /// Its name.
    pub name: String,
    /// Its payload.
    pub data: Value,
    /// When it arrived.
    pub at: Millis,
}

/// A persisted timer owned by a run.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct TimerRef {
    /// Unique within the run (the event sequence that set it); stale timers are ignored.
    pub id: u64,
    /// When it fires.
    pub due: Millis,
}

/// What happens when a rollback's compensations are done.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "snake_case", tag = "then")]
pub enum AfterRollback {
    /// Put the run's status back as it was (a rollback of a finished run).
    Restore {
        /// The status before the rollback.
        status: RunStatus,
        /// Its error text.
        error: Option<String>,
    },
    /// The run ends `failed` with this error.
    Fail {
        /// The error text.
        error: String,
    },
    /// The run ends `cancelled`.
    Cancel {
        /// Why.
        reason: String,
    },
    /// The run goes on from this step (a partial rollback).
    Resume {
        /// The step index.
        step: usize,
    },
}

/// A rollback in progress.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct RollbackProgress {
    /// `hard` or `partial`.
    pub mode: String,
    /// Steps still to compensate, in order.
    pub queue: Vec<usize>,
    /// What comes after.
    pub then: AfterRollback,
    /// Compensations that failed, as text.
    pub failures: Vec<String>,
}

/// One step of one run.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct StepRecord {
    /// The step id.
    pub id: String,
    /// Its status.
    pub status: StepStatus,
    /// Attempts made (the current one included).
    pub attempts: u32,
    /// The last output (for `shell`: exit_code, stdout, stderr).
    pub output: Value,
    /// The last error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When the last attempt started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Millis>,
    /// When it last finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Millis>,
    /// Completion order within the run (for rollback, newest first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion: Option<u64>,
    /// The attempt that began the current pass (retry budgets count from it).
    #[serde(default)]
    pub pass_start: u32,
    /// Whether the last failure could be retried (for resuming after a crash).
    #[serde(default)]
    pub retryable: bool,
}

/// The head of a run: everything but its steps and events. Snapshots of it are written
/// every few events and whenever the run parks or ends.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct RunRecord {
    /// The run id.
    pub id: String,
    /// The workflow it runs.
    pub workflow_id: String,
    /// The workflow's version number.
    pub version: u32,
    /// The digest of the exact definition.
    pub digest: String,
    /// The job that started it (a webhook delivery, a chat command, a CLI call).
    pub job_id: Option<String>,
    /// What it is about (a repository, an issue or pull request of it), computed once when it
    /// started (see [`crate::subject`]); `None` for a run about no repository. A record
    /// written before baton kept it has it read from its input when loaded.
    #[serde(default)]
    pub subject: Option<Subject>,
    /// Its W3C traceparent (`00-<trace id>-<root span id>-01`), kept from its creation so
    /// that every process that runs part of it adds to one trace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    /// When it was last reopened after it ended (a retry or skip of its failure): its root span
    /// was exported at that first end, so a later end exports the reopened part instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reopened_at: Option<Millis>,
    /// Its status.
    pub status: RunStatus,
    /// The index of the step it is at (or was last at).
    pub current_step: usize,
    /// The attempt of the current step.
    pub attempt: u32,
    /// Accumulated state (`set` writes here).
    pub state: Map<String, Value>,
    /// Its input.
    pub input: Map<String, Value>,
    /// Why it failed, or was cancelled.
    pub error_text: Option<String>,
    /// When it was created.
    pub created_at: Millis,
    /// When it started.
    pub started_at: Option<Millis>,
    /// When it ended.
    pub completed_at: Option<Millis>,
    /// What it is waiting for.
    pub waiting_for: Option<WaitingFor>,
    /// Signals that arrived before their wait.
    pub signals: Vec<BufferedSignal>,
    /// Its one pending timer (retry backoff or wait timeout).
    pub timer: Option<TimerRef>,
    /// A rollback in progress.
    pub rollback: Option<RollbackProgress>,
    /// The last rollback done (`soft`, `hard`, `partial`): see [`RunRecord::rolled_back_hard`].
    pub rolled_back: Option<String>,
    /// The sequence number of the last event applied.
    pub seq: u64,
    /// Steps entered so far (bounded by `max_transitions`).
    pub entries: u64,
    /// Steps completed so far (numbers `StepRecord::completion`).
    pub completions: u64,
    /// The steps, aligned with the definition; stored as their own records.
    #[serde(skip)]
    pub steps: Vec<StepRecord>,
}

/// One recorded change of a run.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Event {
    /// The run.
    pub run: String,
    /// 1, 2, 3… within the run.
    pub seq: u64,
    /// When it happened.
    pub at: Millis,
    /// What happened.
    #[serde(flatten)]
    pub kind: EventKind,
}

/// What happened. The `step` fields are indexes into the definition; `id` is for people.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventKind {
    /// The run was created.
    RunCreated {
        /// Workflow id.
        workflow_id: String,
        /// Workflow version.
        version: u32,
        /// Definition digest.
        digest: String,
        /// Resolved input.
        input: Map<String, Value>,
        /// The job.
        job_id: Option<String>,
        /// What the run is about, computed when it started (absent from the events of runs
        /// started before baton kept it: read from their input then).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        subject: Option<Subject>,
        /// The run's W3C traceparent: its trace and root span (see [`crate::telemetry`]).
        /// Absent from the events of runs created before baton traced them.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        traceparent: Option<String>,
    },
    /// The run began.
    RunStarted,
    /// An attempt of a step began.
    StepStarted {
        /// Step index.
        step: usize,
        /// Step id.
        id: String,
        /// Attempt number, from 1.
        attempt: u32,
        /// True when the step is entered anew, false for a retry of the same pass.
        entered: bool,
    },
    /// A step completed.
    StepCompleted {
        /// Step index.
        step: usize,
        /// Step id.
        id: String,
        /// Attempt number.
        attempt: u32,
        /// The action's output.
        output: Value,
        /// State keys written by `set`.
        #[serde(default, skip_serializing_if = "Map::is_empty")]
        set: Map<String, Value>,
    },
    /// An attempt failed.
    StepFailed {
        /// Step index.
        step: usize,
        /// Step id.
        id: String,
        /// Attempt number.
        attempt: u32,
        /// What went wrong.
        error: String,
        /// Whether a retry could help.
        retryable: bool,
        /// Output produced before the failure.
        #[serde(default, skip_serializing_if = "Value::is_null")]
        output: Value,
    },
    /// A step was skipped.
    StepSkipped {
        /// Step index.
        step: usize,
        /// Step id.
        id: String,
        /// Why.
        reason: String,
    },
    /// A retry was scheduled.
    RetryScheduled {
        /// Step index.
        step: usize,
        /// Step id.
        id: String,
        /// The attempt that will run.
        attempt: u32,
        /// When.
        due: Millis,
    },
    /// The run began to wait.
    WaitStarted {
        /// Step index.
        step: usize,
        /// Step id.
        id: String,
        /// Why.
        kind: WaitKind,
        /// Signal name or step id.
        name: String,
        /// Timer deadline, if any.
        until: Option<Millis>,
    },
    /// A signal arrived before its wait and was kept.
    SignalBuffered {
        /// Name.
        name: String,
        /// Payload.
        data: Value,
    },
    /// A wait step ended because its signal arrived.
    SignalReceived {
        /// Step index.
        step: usize,
        /// Step id.
        id: String,
        /// Signal name.
        name: String,
        /// Payload (becomes the step's output).
        data: Value,
        /// Whether it came from the buffer.
        buffered: bool,
    },
    /// A failed step is run again at a person's request, or a failed run reopened.
    Reopened {
        /// Who or what asked.
        by: String,
    },
    /// A rollback began.
    RollbackStarted {
        /// `soft`, `hard` or `partial`.
        mode: String,
        /// Steps to compensate, in order.
        steps: Vec<usize>,
        /// What comes after.
        then: AfterRollback,
    },
    /// A step's compensation finished (error if it failed).
    StepCompensated {
        /// Step index.
        step: usize,
        /// Step id.
        id: String,
        /// The compensation's error, if it failed.
        error: Option<String>,
    },
    /// The rollback's compensations are done.
    RollbackFinished {
        /// Mode.
        mode: String,
        /// Failed compensations.
        failures: Vec<String>,
    },
    /// The run completed.
    RunCompleted,
    /// The run failed.
    RunFailed {
        /// Why.
        error: String,
    },
    /// The run was cancelled.
    RunCancelled {
        /// Why.
        reason: String,
    },
}

impl EventKind {
    /// The snake_case name of the event type.
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::RunCreated { .. } => "run_created",
            EventKind::RunStarted => "run_started",
            EventKind::StepStarted { .. } => "step_started",
            EventKind::StepCompleted { .. } => "step_completed",
            EventKind::StepFailed { .. } => "step_failed",
            EventKind::StepSkipped { .. } => "step_skipped",
            EventKind::RetryScheduled { .. } => "retry_scheduled",
            EventKind::WaitStarted { .. } => "wait_started",
            EventKind::SignalBuffered { .. } => "signal_buffered",
            EventKind::SignalReceived { .. } => "signal_received",
            EventKind::Reopened { .. } => "reopened",
            EventKind::RollbackStarted { .. } => "rollback_started",
            EventKind::StepCompensated { .. } => "step_compensated",
            EventKind::RollbackFinished { .. } => "rollback_finished",
            EventKind::RunCompleted => "run_completed",
            EventKind::RunFailed { .. } => "run_failed",
            EventKind::RunCancelled { .. } => "run_cancelled",
        }
    }

    /// The step index this event changes, if any.
    pub fn step(&self) -> Option<usize> {
        match self {
            EventKind::StepStarted { step, .. }
            | EventKind::StepCompleted { step, .. }
            | EventKind::StepFailed { step, .. }
            | EventKind::StepSkipped { step, .. }
            | EventKind::RetryScheduled { step, .. }
            | EventKind::WaitStarted { step, .. }
            | EventKind::SignalReceived { step, .. }
            | EventKind::StepCompensated { step, .. } => Some(*step),
            _ => None,
        }
    }
}

/// The `mode` of a rollback of the last N steps (the others are `RollbackMode::as_str`).
pub const PARTIAL_ROLLBACK: &str = "partial";

impl RunRecord {
    /// Whether the last rollback undid every completed step (nothing is left to retry).
    pub fn rolled_back_hard(&self) -> bool {
        self.rolled_back.as_deref() == Some(crate::definition::RollbackMode::Hard.as_str())
    }

    /// Reads what a record written before baton kept its subject is about from its input
    /// (its job, when it named more, is still found by the run index).
    pub(crate) fn fill_subject(&mut self) {
        if self.subject.is_none() {
            self.subject = Subject::of(&self.input, None, SubjectKind::Issue);
        }
    }

    /// A new run, before its `RunCreated` event is applied.
    pub fn new(id: String, step_ids: impl Iterator<Item = String>, created_at: Millis) -> Self {
        RunRecord {
            id,
            workflow_id: String::new(),
            version: 0,
            digest: String::new(),
            job_id: None,
            subject: None,
            traceparent: None,
            reopened_at: None,
            status: RunStatus::Pending,
            current_step: 0,
            attempt: 0,
            state: Map::new(),
            input: Map::new(),
            error_text: None,
            created_at,
            started_at: None,
            completed_at: None,
            waiting_for: None,
            signals: Vec::new(),
            timer: None,
            rollback: None,
            rolled_back: None,
            seq: 0,
            entries: 0,
            completions: 0,
            steps: step_ids
                .map(|id| StepRecord {
                    id,
                    ..Default::default()
                })
                .collect(),
        }
    }

    /// Applies one event. Applying an event already reflected (`seq` not newer) does
    /// nothing, so replay after a crash is safe.
    pub fn apply(&mut self, event: &Event) {
        if event.seq <= self.seq {
            return;
        }
        self.seq = event.seq;
        let at = event.at;
        match &event.kind {
            EventKind::RunCreated {
                workflow_id,
                version,
                digest,
                input,
                job_id,
                subject,
                traceparent,
            } => {
                self.traceparent = traceparent.clone();
                self.workflow_id = workflow_id.clone();
                self.version = *version;
                self.digest = digest.clone();
                self.input = input.clone();
                self.job_id = job_id.clone();
                self.subject = subject.clone();
                self.fill_subject();
                self.status = RunStatus::Pending;
                self.created_at = at;
            }
            EventKind::RunStarted => {
                self.status = RunStatus::Running;
                self.started_at = Some(at);
            }
            EventKind::StepStarted {
                step,
                attempt,
                entered,
                ..
            } => {
                if *entered {
                    self.entries += 1;
                }
                self.status = RunStatus::Running;
                self.waiting_for = None;
                self.timer = None;
                self.current_step = *step;
                self.attempt = *attempt;
                if let Some(s) = self.steps.get_mut(*step) {
                    s.status = StepStatus::Running;
                    s.attempts = *attempt;
                    s.started_at = Some(at);
                    s.error = None;
                    if *entered {
                        s.pass_start = *attempt;
                    }
                }
            }
            EventKind::StepCompleted {
                step, output, set, ..
            } => {
                self.completions += 1;
                let completion = self.completions;
                if let Some(s) = self.steps.get_mut(*step) {
                    s.status = StepStatus::Completed;
                    s.output = output.clone();
                    s.finished_at = Some(at);
                    s.error = None;
                    s.completion = Some(completion);
                }
                for (k, v) in set {
                    self.state.insert(k.clone(), v.clone());
                }
            }
            EventKind::StepFailed {
                step,
                error,
                output,
                retryable,
                ..
            } => {
                if let Some(s) = self.steps.get_mut(*step) {
                    s.status = StepStatus::Failed;
                    s.retryable = *retryable;
                    s.error = Some(error.clone());
                    s.finished_at = Some(at);
                    if !output.is_null() {
                        s.output = output.clone();
                    }
                }
            }
            EventKind::StepSkipped { step, reason, .. } => {
                self.current_step = *step;
                if let Some(s) = self.steps.get_mut(*step) {
                    s.status = StepStatus::Skipped;
                    s.finished_at = Some(at);
                    if s.error.is_none() {
                        s.error = Some(reason.clone()).filter(|_| reason.starts_with("failed"));
                    }
                }
            }
            EventKind::RetryScheduled { step, id, due, .. } => {
                self.status = RunStatus::Waiting;
                self.waiting_for = Some(WaitingFor {
                    kind: WaitKind::Retry,
                    name: id.clone(),
                    step: id.clone(),
                    since: at,
                    until: Some(*due),
                });
                self.timer = Some(TimerRef {
                    id: event.seq,
                    due: *due,
                });
                if let Some(s) = self.steps.get_mut(*step) {
                    s.status = StepStatus::Waiting;
                }
            }
            EventKind::WaitStarted {
                step,
                id,
                kind,
                name,
                until,
            } => {
                if matches!(kind, WaitKind::Signal | WaitKind::Approval) {
                    self.entries += 1;
                }
                self.status = RunStatus::Waiting;
                self.current_step = *step;
                self.waiting_for = Some(WaitingFor {
                    kind: *kind,
                    name: name.clone(),
                    step: id.clone(),
                    since: at,
                    until: *until,
                });
                self.timer = until.map(|due| TimerRef { id: event.seq, due });
                if *kind != WaitKind::Intervention {
                    if let Some(s) = self.steps.get_mut(*step) {
                        s.status = StepStatus::Waiting;
                        s.started_at.get_or_insert(at);
                    }
                }
            }
            EventKind::SignalBuffered { name, data } => self.signals.push(BufferedSignal {
                name: name.clone(),
                data: data.clone(),
                at,
            }),
            EventKind::SignalReceived {
                step,
                name,
                data,
                buffered,
                ..
            } => {
                if *buffered {
                    self.entries += 1; // consumed on entering the wait step
                    if let Some(pos) = self.signals.iter().position(|s| &s.name == name) {
                        self.signals.remove(pos);
                    }
                }
                self.status = RunStatus::Running;
                self.waiting_for = None;
                self.timer = None;
                self.completions += 1;
                let completion = self.completions;
                if let Some(s) = self.steps.get_mut(*step) {
                    s.status = StepStatus::Completed;
                    s.attempts = s.attempts.max(1);
                    s.output = serde_json::json!({ "signal": name, "data": data });
                    s.finished_at = Some(at);
                    s.completion = Some(completion);
                }
            }
            EventKind::Reopened { .. } => {
                self.status = RunStatus::Running;
                self.reopened_at = Some(at);
                self.error_text = None;
                self.completed_at = None;
                self.waiting_for = None;
                self.timer = None;
            }
            EventKind::RollbackStarted { mode, steps, then } => {
                self.status = RunStatus::Running;
                self.waiting_for = None;
                self.timer = None;
                self.rollback = Some(RollbackProgress {
                    mode: mode.clone(),
                    queue: steps.clone(),
                    then: then.clone(),
                    failures: Vec::new(),
                });
            }
            EventKind::StepCompensated { step, id, error } => {
                if let Some(rb) = &mut self.rollback {
                    rb.queue.retain(|s| s != step);
                    if let Some(e) = error {
                        rb.failures
                            .push(format!("compensation of `{id}` failed: {e}"));
                    }
                }
                if let Some(s) = self.steps.get_mut(*step) {
                    if error.is_none() {
                        s.status = StepStatus::Compensated;
                        s.completion = None;
                    }
                }
            }
            EventKind::RollbackFinished { mode, .. } => {
                self.rollback = None;
                self.rolled_back = Some(mode.clone());
            }
            EventKind::RunCompleted => {
                self.status = RunStatus::Completed;
                self.completed_at = Some(at);
                self.waiting_for = None;
                self.timer = None;
            }
            EventKind::RunFailed { error } => {
                self.status = RunStatus::Failed;
                self.error_text = Some(error.clone());
                self.completed_at = Some(at);
                self.waiting_for = None;
                self.timer = None;
            }
            EventKind::RunCancelled { reason } => {
                self.status = RunStatus::Cancelled;
                self.error_text = Some(reason.clone());
                self.completed_at = Some(at);
                self.waiting_for = None;
                self.timer = None;
            }
        }
    }

    /// Completed, not yet compensated steps, newest first.
    pub fn completed_newest_first(&self) -> Vec<usize> {
        let mut done: Vec<(u64, usize)> = self
            .steps
            .iter()
            .enumerate()
            .filter(|(_, s)| s.status == StepStatus::Completed)
            .filter_map(|(i, s)| s.completion.map(|c| (c, i)))
            .collect();
        done.sort_unstable_by(|a, b| b.cmp(a));
        done.into_iter().map(|(_, i)| i).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_table() {
        use RunStatus::*;
        let all = [Pending, Running, Waiting, Completed, Failed, Cancelled];
        let legal: Vec<(RunStatus, RunStatus)> = all
            .iter()
            .flat_map(|a| all.iter().map(move |b| (*a, *b)))
            .filter(|(a, b)| a.can_become(*b))
            .collect();
        assert!(
            legal.contains(&(Failed, Running)),
            "retry reopens a failed run"
        );
        assert!(!legal.contains(&(Cancelled, Completed)), "cancel is final");
        assert!(!legal.contains(&(Completed, Failed)));
        assert!(!legal.contains(&(Running, Pending)));
        assert_eq!(legal.len(), 21);
    }

    #[test]
    fn replay_is_idempotent() {
        let mut rec = RunRecord::new("r".into(), ["a".to_string()].into_iter(), 0);
        let ev = Event {
            run: "r".into(),
            seq: 1,
            at: 5,
            kind: EventKind::StepCompleted {
                step: 0,
                id: "a".into(),
                attempt: 1,
                output: Value::Null,
                set: [("k".to_string(), Value::from(1))].into_iter().collect(),
            },
        };
        rec.apply(&ev);
        let once = rec.clone();
        rec.apply(&ev);
        assert_eq!(rec, once);
        assert_eq!(rec.completions, 1);
    }

    #[test]
    fn records_from_before_the_subject_still_load_and_know_it() {
        let mut rec = RunRecord::new("r".into(), ["a".to_string()].into_iter(), 0);
        // A `run_created` event as an older baton wrote it: no `subject`.
        let old: Event = serde_json::from_value(serde_json::json!({
            "run": "r", "seq": 1, "at": 0, "type": "run_created", "workflow_id": "w",
            "version": 1, "digest": "d", "input": {"repo": "o/a", "pr": "#4"}, "job_id": null
        }))
        .unwrap();
        rec.apply(&old);
        assert_eq!(rec.subject, Some(Subject::pull_request("o/a", 4)));
        // A head as an older baton wrote it.
        let mut json = serde_json::to_value(&rec).unwrap();
        json.as_object_mut().unwrap().remove("subject");
        let mut head: RunRecord = serde_json::from_value(json).unwrap();
        assert_eq!(head.subject, None);
        head.fill_subject();
        assert_eq!(head.subject, rec.subject);
    }
}
