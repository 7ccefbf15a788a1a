//! The JSON shapes users and scripts rely on (`--json`, the HTTP API), and the one-line
//! renderings the CLI prints. Times are RFC 3339 in UTC.

use baton_actors::record::Millis;
use baton_actors::{
    Change, Engine, Event, EventKind, Interface, Provenance, QueuedBehind, RunRecord, RunStatus,
    StepRecord, WaitingFor, Workflow,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// `2026-11-24T21:34:00.123Z` from milliseconds since the epoch.
pub fn rfc3339(ms: Millis) -> String {
    crate::timestamp::rfc3339_millis(ms)
}

fn time(ms: Option<Millis>) -> Option<String> {
    ms.map(rfc3339)
}

/// What a run waits for.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct WaitView {
    /// signal, approval, retry or intervention.
    pub kind: String,
    /// Signal name, or step id.
    pub name: String,
    /// The waiting step.
    pub step: String,
    /// Since when.
    pub since: String,
    /// Until when, if it has a timer.
    pub until: Option<String>,
}

/// Why a pending run has not started (`[limits]`): the limit that is full and who holds it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct QueuedView {
    /// The sentence: `waiting for a slot: 2 of 2 runs of octo/app are running (...)`.
    pub reason: String,
    /// The same in fields: `limit` (`max_active_runs`, `per_repo`, `per_workflow`), `key`
    /// (the repository or workflow), `max`, `running`, `holders` (run ids), `ahead` (runs of
    /// its repository queued before it), `behind` (the first of them, when it is the one held).
    #[serde(flatten)]
    pub detail: QueuedBehind,
}

/// One step of a run.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct StepView {
    /// Step id.
    pub id: String,
    /// pending, running, waiting, completed, failed, skipped, compensated.
    pub status: String,
    /// Attempts made.
    pub attempts: u32,
    /// Last output.
    pub output: Value,
    /// Last error.
    pub error: Option<String>,
    /// Last start.
    pub started_at: Option<String>,
    /// Last finish.
    pub finished_at: Option<String>,
}

/// A run, as `baton show --json` and `GET /api/runs/{id}` give it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct RunView {
    /// Run id.
    pub id: String,
    /// Workflow id.
    pub workflow_id: String,
    /// Workflow version.
    pub version: u32,
    /// The job that started it.
    pub job_id: Option<String>,
    /// What it is about: `{"repo": "owner/name", "number": 7, "kind": "issue"}` (`kind`
    /// `issue`, `pull_request` or, without a number, `repository`); absent for a run about no
    /// repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<baton_actors::Subject>,
    /// Its W3C traceparent, `00-<trace id>-<root span id>-01`: the trace id finds the run's
    /// trace in Tempo or Jaeger (docs/observability.md). Absent for runs older than tracing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    /// pending, running, waiting, completed, failed, cancelled.
    pub status: String,
    /// Index of the current step.
    pub current_step: usize,
    /// Its id.
    pub current_step_id: Option<String>,
    /// Accumulated state.
    pub state: Map<String, Value>,
    /// Input.
    pub input: Map<String, Value>,
    /// Why it failed or was cancelled.
    pub error_text: Option<String>,
    /// Created.
    pub created_at: String,
    /// Started.
    pub started_at: Option<String>,
    /// Ended.
    pub completed_at: Option<String>,
    /// What it waits for.
    pub waiting_for: Option<WaitView>,
    /// Signals kept for a later wait.
    pub buffered_signals: Vec<String>,
    /// The last rollback done.
    pub rolled_back: Option<String>,
    /// For a pending run the daemon holds back: what it queues behind.
    #[serde(default)]
    pub queued_behind: Option<QueuedView>,
    /// Steps (empty in listings).
    pub steps: Vec<StepView>,
    /// The change journal (empty in listings).
    #[serde(default)]
    pub changes: Vec<Change>,
}

fn status_name<T: Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

fn wait_view(w: &WaitingFor) -> WaitView {
    WaitView {
        kind: status_name(&w.kind),
        name: w.name.clone(),
        step: w.step.clone(),
        since: rfc3339(w.since),
        until: time(w.until),
    }
}

fn step_view(s: &StepRecord) -> StepView {
    StepView {
        id: s.id.clone(),
        status: status_name(&s.status),
        attempts: s.attempts,
        output: s.output.clone(),
        error: s.error.clone(),
        started_at: time(s.started_at),
        finished_at: time(s.finished_at),
    }
}

impl RunView {
    /// The view of a record; `changes` only for `show`.
    pub fn new(rec: &RunRecord, changes: Vec<Change>) -> RunView {
        RunView {
            id: rec.id.clone(),
            workflow_id: rec.workflow_id.clone(),
            version: rec.version,
            job_id: rec.job_id.clone(),
            subject: rec.subject.clone(),
            traceparent: rec.traceparent.clone(),
            status: rec.status.to_string(),
            current_step: rec.current_step,
            current_step_id: rec.steps.get(rec.current_step).map(|s| s.id.clone()),
            state: rec.state.clone(),
            input: rec.input.clone(),
            error_text: rec.error_text.clone(),
            created_at: rfc3339(rec.created_at),
            started_at: time(rec.started_at),
            completed_at: time(rec.completed_at),
            waiting_for: rec.waiting_for.as_ref().map(wait_view),
            buffered_signals: rec.signals.iter().map(|s| s.name.clone()).collect(),
            rolled_back: rec.rolled_back.clone(),
            queued_behind: None,
            steps: rec.steps.iter().map(step_view).collect(),
            changes,
        }
    }

    /// The view of a record, with what it queues behind in `engine` if it is held back there.
    pub fn of(engine: &Engine, rec: &RunRecord, changes: Vec<Change>) -> RunView {
        let mut view = RunView::new(rec, changes);
        if rec.status == RunStatus::Pending {
            view.queued_behind = engine.queued_behind(&rec.id).map(|detail| QueuedView {
                reason: detail.to_string(),
                detail,
            });
        }
        view
    }

    /// One line for `baton runs`.
    pub fn line(&self) -> String {
        let mut line = format!(
            "{}  {:<10} {:<24} {}",
            self.id,
            self.status,
            self.workflow_id,
            self.started_at.as_deref().unwrap_or(&self.created_at)
        );
        if let Some(w) = &self.waiting_for {
            line.push_str(&format!("  waiting for {} `{}`", w.kind, w.name));
        }
        if let Some(q) = &self.queued_behind {
            line.push_str(&format!("  {}", q.reason));
        }
        if let Some(e) = &self.error_text {
            line.push_str(&format!("  {}", first_line(e)));
        }
        line
    }
}

/// A workflow in `baton workflows`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct WorkflowView {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Version.
    pub version: u32,
    /// Content digest.
    pub digest: String,
    /// Step ids.
    pub steps: Vec<String>,
    /// Inputs: name → {required, default}.
    pub input: Value,
    /// How the definition was registered: `via` (`builtin`, `file`, `api`, `program`), the
    /// API `client`'s address, `at` (ms since the epoch), `origin`. Absent for a definition
    /// stored before baton recorded it, and for a file not registered yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provenance: Option<Provenance>,
    /// The same, in words: `api from 127.0.0.1:40312 (wf.toml), 2026-01-02T03:04:05.000Z`.
    #[serde(default)]
    pub registered: String,
}

/// How a definition was registered, in words (see [`WorkflowView::registered`]).
pub fn registered(provenance: Option<&Provenance>) -> String {
    match provenance {
        None => "not recorded".into(),
        Some(p) if p.via == Interface::Builtin => "built in".into(),
        Some(p) => format!("{p}, {}", rfc3339(p.at)),
    }
}

impl WorkflowView {
    /// The view of a workflow.
    pub fn new(wf: &Workflow) -> Self {
        WorkflowView {
            id: wf.id().to_string(),
            name: if wf.def.name.is_empty() {
                wf.id().to_string()
            } else {
                wf.def.name.clone()
            },
            description: wf.def.description.clone(),
            version: wf.def.version,
            digest: wf.digest.clone(),
            steps: wf.steps().iter().map(|s| s.id.clone()).collect(),
            input: serde_json::to_value(&wf.def.input).unwrap_or_default(),
            provenance: wf.provenance.clone(),
            registered: registered(wf.provenance.as_ref()),
        }
    }
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or("")
}

/// One line of progress for an event, as the CLI prints it on stderr.
pub fn event_line(event: &Event) -> Option<String> {
    Some(match &event.kind {
        EventKind::RunCreated { workflow_id, .. } => {
            format!("run {} of `{workflow_id}` created", event.run)
        }
        EventKind::RunStarted => "run started".to_string(),
        EventKind::StepStarted { id, attempt, .. } if *attempt > 1 => {
            format!("▶ {id} (attempt {attempt})")
        }
        EventKind::StepStarted { id, .. } => format!("▶ {id}"),
        // A step that says what it did (`summary` in its output) is shown with it.
        EventKind::StepCompleted { id, output, .. } => match output.get("summary") {
            Some(Value::String(summary)) => format!("✔ {id}: {}", first_line(summary)),
            _ => format!("✔ {id}"),
        },
        EventKind::StepFailed { id, error, .. } => format!("✖ {id}: {}", first_line(error)),
        EventKind::StepSkipped { id, reason, .. } => {
            format!("↷ {id} skipped: {}", first_line(reason))
        }
        EventKind::RetryScheduled {
            id, attempt, due, ..
        } => {
            let wait = due.saturating_sub(event.at);
            format!("↻ {id}: attempt {attempt} in {:.1}s", wait as f64 / 1000.0)
        }
        EventKind::WaitStarted { kind, name, .. } => {
            format!("⏸ waiting for {} `{name}`", status_name(kind))
        }
        EventKind::SignalBuffered { name, .. } => format!("signal `{name}` kept for a later wait"),
        EventKind::SignalReceived { id, name, .. } => format!("✔ {id}: got `{name}`"),
        EventKind::Reopened { by } => format!("reopened by {by}"),
        EventKind::RollbackStarted { mode, steps, .. } => {
            format!("⟲ {mode} rollback of {} step(s)", steps.len())
        }
        EventKind::StepCompensated {
            id, error: None, ..
        } => format!("⟲ {id} undone"),
        EventKind::StepCompensated {
            id, error: Some(e), ..
        } => format!("✖ undoing {id} failed: {}", first_line(e)),
        EventKind::RollbackFinished { mode, .. } => format!("⟲ {mode} rollback done"),
        EventKind::RunCompleted => "run completed".to_string(),
        EventKind::RunFailed { error } => format!("run failed: {error}"),
        EventKind::RunCancelled { reason } => format!("run cancelled: {reason}"),
    })
}
