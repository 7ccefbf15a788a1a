//! The heart of the engine: a pure state machine.
//!
//! `handle(workflow, record, input, env)` decides what an input means for a run: it appends
//! events (applied to the record as they are made) and returns the effects the actors must
//! carry out once those events are durable. No IO, no clock, no tokio: time and randomness
//! come in through [`Env`], so every policy is a table test of this one function.
//!
//! A control command that does not fit the run's state is rejected before anything changes.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::{json, Map, Value};

use crate::definition::{OnFailure, OnTimeout, Retry, RollbackMode, Workflow, END};
use crate::record::{
    AfterRollback, Event, EventKind, Millis, RunRecord, RunStatus, StepStatus, WaitKind,
};
use crate::template::{self, Scope};

/// The outside world, as values.
#[derive(Debug, Clone, Copy)]
pub struct Env {
    /// Now, in ms since the epoch.
    pub now: Millis,
    /// A random number in [0, 1), for retry jitter.
    pub random: f64,
    /// The step limit when the workflow sets none.
    pub max_transitions: u64,
}

/// Why an attempt failed.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Failure {
    /// What went wrong.
    pub message: String,
    /// Whether a retry could help.
    pub retryable: bool,
    /// Output produced before the failure.
    pub output: Value,
}

/// What a rollback command asks for, from every door (CLI, API, admin UI, GitHub comments,
/// Telegram). `RollbackMode` is the other rollback type: a workflow's policy (`none`, `soft`,
/// `hard`), which has no "last N steps".
///
/// On the wire it is `{"mode": "soft"}`, `{"mode": "hard"}` or `{"steps": N}`; as a word,
/// `soft`, `hard` or `N` (see [`FromStr`](std::str::FromStr)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "RollbackBody", into = "RollbackBody")]
pub enum RollbackRequest {
    /// Stop and keep everything.
    Soft,
    /// Compensate every completed step, newest first.
    Hard,
    /// Compensate the last N completed steps and go on from the first of them.
    Steps(u32),
}

/// The wire form of [`RollbackRequest`].
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RollbackBody {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    mode: Option<RollbackMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    steps: Option<u32>,
}

/// A rollback request that asks for no rollback or for two at once.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadRollback {
    /// The wire form names both a mode and a number of steps.
    #[error("a rollback takes a mode or a number of steps, not both")]
    Both,
    /// The wire form names neither (or the mode `none`).
    #[error("a rollback needs \"mode\": \"soft\" or \"hard\", or \"steps\": N")]
    Neither,
    /// A word that is not `soft`, `hard` or a positive number.
    #[error("`{0}`: expected soft, hard or a number of steps")]
    Word(String),
}

impl TryFrom<RollbackBody> for RollbackRequest {
    type Error = BadRollback;

    fn try_from(body: RollbackBody) -> Result<Self, BadRollback> {
        match (body.mode, body.steps) {
            (Some(RollbackMode::Soft), None) => Ok(RollbackRequest::Soft),
            (Some(RollbackMode::Hard), None) => Ok(RollbackRequest::Hard),
            (None, Some(n)) => Ok(RollbackRequest::Steps(n)),
            (Some(_), Some(_)) => Err(BadRollback::Both),
            _ => Err(BadRollback::Neither),
        }
    }
}

impl From<RollbackRequest> for RollbackBody {
    fn from(request: RollbackRequest) -> Self {
        let (mode, steps) = match request {
            RollbackRequest::Soft => (Some(RollbackMode::Soft), None),
            RollbackRequest::Hard => (Some(RollbackMode::Hard), None),
            RollbackRequest::Steps(n) => (None, Some(n)),
        };
        RollbackBody { mode, steps }
    }
}

impl std::str::FromStr for RollbackRequest {
    type Err = BadRollback;

    /// `soft`, `hard`, or a number of steps (at least 1).
    fn from_str(word: &str) -> Result<Self, BadRollback> {
        match word.trim() {
            "soft" => Ok(RollbackRequest::Soft),
            "hard" => Ok(RollbackRequest::Hard),
            n => match n.parse::<u32>() {
                Ok(n) if n > 0 => Ok(RollbackRequest::Steps(n)),
                _ => Err(BadRollback::Word(n.to_string())),
            },
        }
    }
}

impl std::fmt::Display for RollbackRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RollbackRequest::Soft => f.write_str("soft"),
            RollbackRequest::Hard => f.write_str("hard"),
            RollbackRequest::Steps(n) => write!(f, "{n}"),
        }
    }
}

/// Something that happened to a run. Serializable, for a command sent through one daemon to a
/// run another holds.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "input", rename_all = "snake_case")]
pub enum Input {
    /// Begin a pending run.
    Start,
    /// Re-issue what was in flight when the process stopped (after a crash or restart).
    Resume,
    /// An attempt finished.
    StepResult {
        /// Step index.
        step: usize,
        /// Attempt number.
        attempt: u32,
        /// Its output or failure.
        result: Result<Value, Failure>,
    },
    /// A compensation finished.
    CompensationResult {
        /// Step index.
        step: usize,
        /// Its error, if it failed.
        result: Result<(), String>,
    },
    /// A persisted timer fired.
    TimerFired {
        /// The timer's id.
        timer: u64,
    },
    /// A named signal.
    Signal {
        /// Name.
        name: String,
        /// Payload.
        data: Value,
    },
    /// A person approved the current wait.
    Approve {
        /// Who.
        by: String,
    },
    /// A person rejected the current wait.
    Reject {
        /// Who.
        by: String,
    },
    /// Run the failed step again.
    Retry {
        /// Who.
        by: String,
    },
    /// Skip the failed or waiting step.
    Skip {
        /// Who.
        by: String,
    },
    /// Stop the run; compensations per the workflow's `rollback_on_abort`.
    Cancel {
        /// Who.
        by: String,
    },
    /// Fail the run; compensations per `mode`, or the workflow's `rollback_on_abort`.
    Abort {
        /// Who.
        by: String,
        /// What to undo.
        mode: Option<RollbackMode>,
    },
    /// Undo work.
    Rollback {
        /// Who.
        by: String,
        /// How much.
        request: RollbackRequest,
    },
    /// The run's actor kept crashing; give up on it.
    Crashed {
        /// The panic text.
        error: String,
    },
}

/// What the actors must do once the events are durable.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Run an attempt of an action step.
    RunStep {
        /// Step index.
        step: usize,
        /// Attempt number (part of the idempotency key).
        attempt: u32,
        /// The action's name.
        action: String,
        /// Rendered parameters.
        params: Value,
        /// The attempt's time limit.
        timeout: Option<Duration>,
    },
    /// Cancel the attempt in flight.
    CancelStep,
    /// Run a step's compensation.
    Compensate {
        /// Step index.
        step: usize,
        /// The action's name.
        action: String,
        /// Rendered parameters.
        params: Value,
    },
    /// Persist and arm a timer.
    SetTimer {
        /// Its id.
        timer: u64,
        /// When.
        due: Millis,
    },
    /// Remove a timer.
    ClearTimer {
        /// Its id.
        timer: u64,
        /// When it was due (part of its key).
        due: Millis,
    },
    /// The run waits: its actor can stop; the store holds it.
    Park,
    /// The run ended.
    Finish,
}

/// The events made and the effects to carry out.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Outcome {
    /// New events, in order, already applied to the record.
    pub events: Vec<Event>,
    /// Effects, in order.
    pub effects: Vec<Effect>,
}

/// A command that does not fit the run's state; nothing was changed.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejected(pub String);

/// Decides what `input` means for the run. On `Err`, `rec` is unchanged.
pub fn handle(
    wf: &Workflow,
    rec: &mut RunRecord,
    input: Input,
    env: &Env,
) -> Result<Outcome, Rejected> {
    check(rec, &input)?;
    let timer_before = rec.timer.clone();
    let mut tx = Tx {
        wf,
        rec,
        env,
        out: Outcome::default(),
    };
    tx.dispatch(input);
    let mut out = tx.out;
    if timer_before != rec.timer {
        if let Some(old) = timer_before {
            out.effects.push(Effect::ClearTimer {
                timer: old.id,
                due: old.due,
            });
        }
        if let Some(new) = &rec.timer {
            out.effects.push(Effect::SetTimer {
                timer: new.id,
                due: new.due,
            });
        }
    }
    if !out.events.is_empty() {
        match rec.status {
            RunStatus::Waiting => out.effects.push(Effect::Park),
            s if s.is_terminal() => out.effects.push(Effect::Finish),
            _ => {}
        }
    }
    Ok(out)
}

/// Refuses commands that do not fit, before anything changes.
fn check(rec: &RunRecord, input: &Input) -> Result<(), Rejected> {
    let status = rec.status;
    let waiting = rec.waiting_for.as_ref().map(|w| w.kind);
    let reject = |why: &str| Err(Rejected(why.to_string()));
    let rolling_back = rec.rollback.is_some();
    match input {
        Input::Signal { .. } if status.is_terminal() => reject("a finished run takes no signals"),
        Input::Approve { .. } | Input::Reject { .. } => match waiting {
            Some(WaitKind::Signal | WaitKind::Approval) if status == RunStatus::Waiting => Ok(()),
            Some(WaitKind::Intervention) => {
                reject("it waits for a person after a failure: use retry, skip, abort or rollback")
            }
            _ => reject("it is not waiting for an approval or a signal"),
        },
        Input::Retry { .. } | Input::Skip { .. } => {
            let failed_step = rec
                .steps
                .get(rec.current_step)
                .is_some_and(|s| s.status == StepStatus::Failed);
            let retry = matches!(input, Input::Retry { .. });
            match (status, waiting) {
                (RunStatus::Waiting, Some(WaitKind::Intervention | WaitKind::Retry)) => Ok(()),
                (RunStatus::Waiting, Some(_)) if !retry => Ok(()),
                (RunStatus::Waiting, Some(_)) => {
                    reject("it waits for a signal; approve, reject, signal or skip it")
                }
                (RunStatus::Failed, _) if failed_step && !rec.rolled_back_hard() => Ok(()),
                (RunStatus::Failed, _) => {
                    reject("it has no failed step to retry or skip (it was aborted or rolled back)")
                }
                _ => reject("only a waiting or failed run can be retried or skipped"),
            }
        }
        Input::Cancel { .. } | Input::Abort { .. } if status.is_terminal() => {
            reject("it has already ended")
        }
        Input::Cancel { .. } | Input::Abort { .. } if rolling_back => {
            reject("a rollback is in progress")
        }
        Input::Rollback { request, .. } => {
            if rolling_back {
                return reject("a rollback is in progress");
            }
            match request {
                RollbackRequest::Steps(0) => reject("--steps must be at least 1"),
                RollbackRequest::Steps(n) => {
                    if status == RunStatus::Cancelled {
                        return reject(
                            "a cancelled run cannot resume; use --hard to undo its work",
                        );
                    }
                    let done = rec.completed_newest_first().len();
                    if *n as usize > done {
                        Err(Rejected(format!(
                            "it has {done} completed step(s) to roll back, not {n}"
                        )))
                    } else {
                        Ok(())
                    }
                }
                RollbackRequest::Hard
                    if rec.completed_newest_first().is_empty() && status.is_terminal() =>
                {
                    reject("it has no completed steps to undo")
                }
                _ => Ok(()),
            }
        }
        Input::Start if status != RunStatus::Pending => reject("it has already started"),
        _ => Ok(()),
    }
}

struct Tx<'a> {
    wf: &'a Workflow,
    rec: &'a mut RunRecord,
    env: &'a Env,
    out: Outcome,
}

impl Tx<'_> {
    fn emit(&mut self, kind: EventKind) {
        let event = Event {
            run: self.rec.id.clone(),
            seq: self.rec.seq + 1,
            at: self.env.now,
            kind,
        };
        let before = self.rec.status;
        self.rec.apply(&event);
        debug_assert!(
            before == self.rec.status || before.can_become(self.rec.status),
            "illegal status change {before} -> {} by {:?}",
            self.rec.status,
            event.kind
        );
        self.out.events.push(event);
    }

    fn step_id(&self, idx: usize) -> String {
        self.wf.steps()[idx].id.clone()
    }

    fn dispatch(&mut self, input: Input) {
        match input {
            Input::Start => {
                self.emit(EventKind::RunStarted);
                self.enter(0);
            }
            Input::Resume => self.resume(),
            Input::StepResult {
                step,
                attempt,
                result,
            } => {
                let current = self.rec.status == RunStatus::Running
                    && self.rec.rollback.is_none()
                    && self.rec.current_step == step
                    && self.rec.attempt == attempt
                    && self.rec.steps[step].status == StepStatus::Running;
                if !current {
                    return; // A late result of an attempt that was cancelled or timed out.
                }
                match result {
                    Ok(output) => self.complete(step, attempt, output),
                    Err(failure) => self.failed(step, attempt, failure),
                }
            }
            Input::CompensationResult { step, result } => {
                let expected = self
                    .rec
                    .rollback
                    .as_ref()
                    .and_then(|rb| rb.queue.first())
                    .is_some_and(|s| *s == step);
                if expected {
                    let id = self.step_id(step);
                    self.emit(EventKind::StepCompensated {
                        step,
                        id,
                        error: result.err(),
                    });
                    self.continue_rollback();
                }
            }
            Input::TimerFired { timer } => self.timer_fired(timer),
            Input::Signal { name, data } => {
                let matches = self.rec.status == RunStatus::Waiting
                    && self.rec.waiting_for.as_ref().is_some_and(|w| {
                        matches!(w.kind, WaitKind::Signal | WaitKind::Approval) && w.name == name
                    });
                if matches {
                    let step = self.rec.current_step;
                    self.receive(step, name, data, false);
                } else {
                    self.emit(EventKind::SignalBuffered { name, data });
                }
            }
            Input::Approve { by } => {
                let step = self.rec.current_step;
                let name = self.waiting_name();
                self.receive(step, name, json!({ "approved_by": by }), false);
            }
            Input::Reject { by } => {
                let step = self.rec.current_step;
                let id = self.step_id(step);
                let error = format!("rejected by {by}");
                self.emit(EventKind::StepFailed {
                    step,
                    id,
                    attempt: self.rec.steps[step].attempts,
                    error: error.clone(),
                    retryable: false,
                    output: Value::Null,
                });
                self.apply_on_failure(step, &error);
            }
            Input::Retry { by } => {
                let step = self.rec.current_step;
                if self.rec.status.is_terminal() {
                    self.emit(EventKind::Reopened { by });
                }
                if self.rec.waiting_for.as_ref().is_some_and(|w| {
                    w.kind == WaitKind::Intervention
                        && self.rec.steps[step].status != StepStatus::Failed
                }) {
                    // Waiting after a rollback that could not finish: go on from where it stopped.
                    self.enter(step);
                } else {
                    self.start_attempt(step, false);
                }
            }
            Input::Skip { by } => {
                let step = self.rec.current_step;
                if self.rec.status.is_terminal() {
                    self.emit(EventKind::Reopened { by: by.clone() });
                }
                let id = self.step_id(step);
                self.emit(EventKind::StepSkipped {
                    step,
                    id,
                    reason: format!("skipped by {by}"),
                });
                self.enter(step + 1);
            }
            Input::Cancel { by } => {
                let mode = self.wf.def.rollback_on_abort;
                self.stop(
                    mode,
                    AfterRollback::Cancel {
                        reason: format!("cancelled by {by}"),
                    },
                );
            }
            Input::Abort { by, mode } => self.stop(
                mode.unwrap_or(self.wf.def.rollback_on_abort),
                AfterRollback::Fail {
                    error: format!("aborted by {by}"),
                },
            ),
            Input::Rollback { by, request } => self.rollback(by, request),
            Input::Crashed { error } => {
                if !self.rec.status.is_terminal() {
                    self.emit(EventKind::RunFailed { error });
                }
            }
        }
    }

    fn waiting_name(&self) -> String {
        self.rec
            .waiting_for
            .as_ref()
            .map(|w| w.name.clone())
            .unwrap_or_default()
    }

    /// Enters steps from `idx` on until one is in flight, waits, or the run ends.
    fn enter(&mut self, mut idx: usize) {
        loop {
            let Some(step) = self.wf.steps().get(idx) else {
                self.emit(EventKind::RunCompleted);
                return;
            };
            let limit = self.wf.max_transitions(self.env.max_transitions);
            if self.rec.entries >= limit {
                let error = format!(
                    "transition limit reached: the run entered {limit} steps (a `goto` loop?); \
                     raise `max_transitions` in the workflow if this is intended"
                );
                self.stop(self.wf.def.rollback_on_abort, AfterRollback::Fail { error });
                return;
            }
            if let Some(cond) = &step.when {
                match self.condition(cond) {
                    Ok(true) => {}
                    Ok(false) => {
                        self.emit(EventKind::StepSkipped {
                            step: idx,
                            id: step.id.clone(),
                            reason: format!("condition `{cond}` is false"),
                        });
                        idx += 1;
                        continue;
                    }
                    Err(e) => {
                        self.begin(idx, true);
                        self.fail_now(idx, format!("when: {e}"));
                        return;
                    }
                }
            }
            self.start_attempt(idx, true);
            return;
        }
    }

    /// Starts an attempt of an action step, or begins a wait.
    fn start_attempt(&mut self, idx: usize, entered: bool) {
        let step = &self.wf.steps()[idx];
        if let Some(wait) = &step.wait {
            // A signal that arrived early is consumed here, on entry or on a retry alike.
            if let Some(pos) = self.rec.signals.iter().position(|s| s.name == wait.signal) {
                let data = self.rec.signals[pos].data.clone();
                self.receive(idx, wait.signal.clone(), data, true);
                return;
            }
            let kind = if wait.signal == "approve" {
                WaitKind::Approval
            } else {
                WaitKind::Signal
            };
            let until = wait.timeout.map(|t| {
                self.env
                    .now
                    .saturating_add(t.0.as_millis().min(u64::MAX as u128) as Millis)
            });
            self.emit(EventKind::WaitStarted {
                step: idx,
                id: step.id.clone(),
                kind,
                name: wait.signal.clone(),
                until,
            });
            return;
        }
        let attempt = self.begin(idx, entered);
        let action = step.action.clone().unwrap_or_default();
        let params = Value::Object(step.with.clone());
        match self.render(&params) {
            Ok(params) => self.out.effects.push(Effect::RunStep {
                step: idx,
                attempt,
                action,
                params,
                timeout: step.timeout.map(|d| d.0),
            }),
            Err(e) => self.fail_now(idx, format!("with: {e}")),
        }
    }

    /// Records the start of an attempt; `entered` when the step is entered anew (not a retry).
    fn begin(&mut self, idx: usize, entered: bool) -> u32 {
        let attempt = self.rec.steps[idx].attempts + 1;
        let id = self.step_id(idx);
        self.emit(EventKind::StepStarted {
            step: idx,
            id,
            attempt,
            entered,
        });
        attempt
    }

    /// A failure that no retry can help (a template error): straight to `on_failure`.
    fn fail_now(&mut self, idx: usize, error: String) {
        let attempt = self.rec.steps[idx].attempts;
        self.failed(
            idx,
            attempt,
            Failure {
                message: error,
                retryable: false,
                output: Value::Null,
            },
        );
    }

    fn complete(&mut self, idx: usize, attempt: u32, output: Value) {
        let step = &self.wf.steps()[idx];
        let mut set = Map::new();
        if !step.set.is_empty() {
            let mut refs = HashSet::new();
            for text in step.set.values() {
                template::referenced_steps(text, &mut refs);
            }
            let mut steps = self.steps_view(&refs);
            steps.insert(
                step.id.clone(),
                json!({"status": "completed", "attempts": attempt, "output": output}),
            );
            let scope = self.scope_with(steps);
            for (key, text) in &step.set {
                match template::render_str(text, &scope) {
                    Ok(v) => {
                        set.insert(key.clone(), v);
                    }
                    Err(e) => {
                        let message = format!("set.{key}: {e}");
                        return self.failed(
                            idx,
                            attempt,
                            Failure {
                                message,
                                retryable: false,
                                output,
                            },
                        );
                    }
                }
            }
        }
        self.emit(EventKind::StepCompleted {
            step: idx,
            id: step.id.clone(),
            attempt,
            output,
            set,
        });
        self.go_next(idx);
    }

    /// After a step completed: its `next` rules, or the following step.
    fn go_next(&mut self, idx: usize) {
        let step = &self.wf.steps()[idx];
        for rule in &step.next {
            match self.condition(&rule.when) {
                Ok(true) => {
                    if rule.goto == END {
                        self.emit(EventKind::RunCompleted);
                    } else {
                        let target = self.wf.step_index(&rule.goto).expect("validated target");
                        self.enter(target);
                    }
                    return;
                }
                Ok(false) => {}
                Err(e) => {
                    let error = format!("step `{}`: next.when `{}`: {e}", step.id, rule.when);
                    self.stop(self.wf.def.rollback_on_abort, AfterRollback::Fail { error });
                    return;
                }
            }
        }
        self.enter(idx + 1);
    }

    fn receive(&mut self, idx: usize, name: String, data: Value, buffered: bool) {
        let id = self.step_id(idx);
        self.emit(EventKind::SignalReceived {
            step: idx,
            id,
            name,
            data,
            buffered,
        });
        self.go_next(idx);
    }

    fn failed(&mut self, idx: usize, attempt: u32, failure: Failure) {
        let step = &self.wf.steps()[idx];
        self.emit(EventKind::StepFailed {
            step: idx,
            id: step.id.clone(),
            attempt,
            error: failure.message.clone(),
            retryable: failure.retryable,
            output: failure.output,
        });
        self.after_failure(idx, attempt, failure.retryable, &failure.message);
    }

    fn after_failure(&mut self, idx: usize, attempt: u32, retryable: bool, error: &str) {
        let step = &self.wf.steps()[idx];
        if let (true, Some(policy)) = (retryable, step.retry.as_ref().and_then(Retry::policy)) {
            let in_pass = attempt + 1 - self.rec.steps[idx].pass_start.max(1);
            if in_pass < policy.max_attempts {
                let delay = policy.delay(in_pass + 1, self.env.random);
                self.emit(EventKind::RetryScheduled {
                    step: idx,
                    id: step.id.clone(),
                    attempt: attempt + 1,
                    due: self
                        .env
                        .now
                        .saturating_add(delay.as_millis().min(u64::MAX as u128) as Millis),
                });
                return;
            }
        }
        self.apply_on_failure(idx, error);
    }

    fn apply_on_failure(&mut self, idx: usize, error: &str) {
        let step = &self.wf.steps()[idx];
        match &step.on_failure {
            OnFailure::Abort => {
                let error = format!("step `{}` failed: {error}", step.id);
                self.stop(self.wf.def.rollback_on_abort, AfterRollback::Fail { error });
            }
            OnFailure::Skip => {
                self.emit(EventKind::StepSkipped {
                    step: idx,
                    id: step.id.clone(),
                    reason: format!("failed: {error}"),
                });
                self.enter(idx + 1);
            }
            OnFailure::Pause => self.emit(EventKind::WaitStarted {
                step: idx,
                id: step.id.clone(),
                kind: WaitKind::Intervention,
                name: step.id.clone(),
                until: None,
            }),
            OnFailure::Goto(target) if target == END => self.emit(EventKind::RunCompleted),
            OnFailure::Goto(target) => {
                let target = self.wf.step_index(target).expect("validated target");
                self.enter(target);
            }
        }
    }

    fn timer_fired(&mut self, timer: u64) {
        if self.rec.timer.as_ref().map(|t| t.id) != Some(timer) {
            return; // Stale: the wait already ended.
        }
        let Some(waiting) = self.rec.waiting_for.clone() else {
            return;
        };
        let idx = self.rec.current_step;
        match waiting.kind {
            WaitKind::Retry => self.start_attempt(idx, false),
            WaitKind::Signal | WaitKind::Approval => {
                let wait = self.wf.steps()[idx].wait.clone().expect("a wait step");
                let waited = Duration::from_millis(self.env.now.saturating_sub(waiting.since));
                let error = format!(
                    "timed out after {}s waiting for signal `{}`",
                    waited.as_secs(),
                    wait.signal
                );
                match wait.on_timeout {
                    OnTimeout::Fail => {
                        let id = self.step_id(idx);
                        self.emit(EventKind::StepFailed {
                            step: idx,
                            id,
                            attempt: self.rec.steps[idx].attempts,
                            error: error.clone(),
                            retryable: false,
                            output: Value::Null,
                        });
                        self.apply_on_failure(idx, &error);
                    }
                    OnTimeout::Skip => {
                        let id = self.step_id(idx);
                        self.emit(EventKind::StepSkipped {
                            step: idx,
                            id,
                            reason: error,
                        });
                        self.enter(idx + 1);
                    }
                    OnTimeout::Goto(target) => {
                        let id = self.step_id(idx);
                        self.emit(EventKind::StepSkipped {
                            step: idx,
                            id,
                            reason: error,
                        });
                        if target == END {
                            self.emit(EventKind::RunCompleted);
                        } else {
                            let t = self.wf.step_index(&target).expect("validated target");
                            self.enter(t);
                        }
                    }
                }
            }
            WaitKind::Intervention => {}
        }
    }

    /// After a restart: carry on from whatever the durable record says.
    fn resume(&mut self) {
        if self.rec.status == RunStatus::Pending {
            self.emit(EventKind::RunStarted);
            self.enter(0);
            return;
        }
        if self.rec.status != RunStatus::Running {
            return;
        }
        if self.rec.rollback.is_some() {
            self.continue_rollback();
            return;
        }
        let idx = self.rec.current_step;
        let Some(step) = self.rec.steps.get(idx).cloned() else {
            self.emit(EventKind::RunCompleted);
            return;
        };
        match step.status {
            // In flight at the crash: the same attempt again, with the same idempotency key.
            StepStatus::Running => self.rerun(idx, step.attempts),
            StepStatus::Completed => self.go_next(idx),
            StepStatus::Skipped => self.enter(idx + 1),
            StepStatus::Failed => {
                let error = step.error.unwrap_or_default();
                self.after_failure(idx, step.attempts, step.retryable, &error);
            }
            StepStatus::Pending | StepStatus::Waiting | StepStatus::Compensated => self.enter(idx),
        }
    }

    fn rerun(&mut self, idx: usize, attempt: u32) {
        let step = &self.wf.steps()[idx];
        let params = Value::Object(step.with.clone());
        match self.render(&params) {
            Ok(params) => self.out.effects.push(Effect::RunStep {
                step: idx,
                attempt,
                action: step.action.clone().unwrap_or_default(),
                params,
                timeout: step.timeout.map(|d| d.0),
            }),
            Err(e) => self.fail_now(idx, format!("with: {e}")),
        }
    }

    /// Stops an active run: cancels what is in flight, then undoes per `mode`.
    fn stop(&mut self, mode: RollbackMode, then: AfterRollback) {
        self.cancel_in_flight();
        match mode {
            RollbackMode::None => self.finish(then),
            RollbackMode::Soft => {
                self.emit(EventKind::RollbackFinished {
                    mode: RollbackMode::Soft.as_str().into(),
                    failures: Vec::new(),
                });
                self.finish(then);
            }
            RollbackMode::Hard => {
                let steps = self.rec.completed_newest_first();
                self.emit(EventKind::RollbackStarted {
                    mode: RollbackMode::Hard.as_str().into(),
                    steps,
                    then,
                });
                self.continue_rollback();
            }
        }
    }

    fn cancel_in_flight(&mut self) {
        let idx = self.rec.current_step;
        if self.rec.status == RunStatus::Running
            && self
                .rec
                .steps
                .get(idx)
                .is_some_and(|s| s.status == StepStatus::Running)
        {
            self.out.effects.push(Effect::CancelStep);
            let id = self.step_id(idx);
            self.emit(EventKind::StepFailed {
                step: idx,
                id,
                attempt: self.rec.attempt,
                error: "cancelled".into(),
                retryable: false,
                output: Value::Null,
            });
        }
    }

    fn finish(&mut self, then: AfterRollback) {
        match then {
            AfterRollback::Restore { .. } | AfterRollback::Resume { .. } => {}
            AfterRollback::Fail { error } => self.emit(EventKind::RunFailed { error }),
            AfterRollback::Cancel { reason } => self.emit(EventKind::RunCancelled { reason }),
        }
    }

    fn rollback(&mut self, by: String, request: RollbackRequest) {
        let was = self.rec.status;
        let active = !was.is_terminal();
        match request {
            RollbackRequest::Soft => {
                self.cancel_in_flight();
                self.emit(EventKind::RollbackFinished {
                    mode: RollbackMode::Soft.as_str().into(),
                    failures: Vec::new(),
                });
                if active {
                    self.emit(EventKind::RunCancelled {
                        reason: format!("rolled back (soft) by {by}; the work is kept"),
                    });
                }
            }
            RollbackRequest::Hard => {
                self.cancel_in_flight();
                let then = if active {
                    AfterRollback::Cancel {
                        reason: format!("rolled back (hard) by {by}"),
                    }
                } else {
                    AfterRollback::Restore {
                        status: was,
                        error: self.rec.error_text.clone(),
                    }
                };
                let steps = self.rec.completed_newest_first();
                self.emit(EventKind::RollbackStarted {
                    mode: RollbackMode::Hard.as_str().into(),
                    steps,
                    then,
                });
                self.continue_rollback();
            }
            RollbackRequest::Steps(n) => {
                self.cancel_in_flight();
                let steps: Vec<usize> = self
                    .rec
                    .completed_newest_first()
                    .into_iter()
                    .take(n as usize)
                    .collect();
                let resume = *steps.last().expect("checked: n <= completed");
                if !active {
                    self.emit(EventKind::Reopened { by });
                }
                self.emit(EventKind::RollbackStarted {
                    mode: crate::record::PARTIAL_ROLLBACK.into(),
                    steps,
                    then: AfterRollback::Resume { step: resume },
                });
                self.continue_rollback();
            }
        }
    }

    /// Runs the next compensation, or finishes the rollback.
    fn continue_rollback(&mut self) {
        loop {
            let Some(rb) = self.rec.rollback.clone() else {
                return;
            };
            let Some(&idx) = rb.queue.first() else {
                self.emit(EventKind::RollbackFinished {
                    mode: rb.mode.clone(),
                    failures: rb.failures.clone(),
                });
                let failures = rb.failures.join("; ");
                match rb.then {
                    AfterRollback::Restore { status, error } => match status {
                        RunStatus::Failed => self.emit(EventKind::RunFailed {
                            error: error.unwrap_or_default(),
                        }),
                        RunStatus::Cancelled => self.emit(EventKind::RunCancelled {
                            reason: error.unwrap_or_default(),
                        }),
                        _ => self.emit(EventKind::RunCompleted),
                    },
                    AfterRollback::Resume { step } if rb.failures.is_empty() => self.enter(step),
                    AfterRollback::Resume { step } => self.emit(EventKind::WaitStarted {
                        step,
                        id: self.step_id(step),
                        kind: WaitKind::Intervention,
                        name: "rollback".into(),
                        until: None,
                    }),
                    AfterRollback::Fail { mut error } => {
                        if !failures.is_empty() {
                            error = format!("{error}; rollback incomplete: {failures}");
                        }
                        self.emit(EventKind::RunFailed { error });
                    }
                    AfterRollback::Cancel { mut reason } => {
                        if !failures.is_empty() {
                            reason = format!("{reason}; rollback incomplete: {failures}");
                        }
                        self.emit(EventKind::RunCancelled { reason });
                    }
                }
                return;
            };
            let step = &self.wf.steps()[idx];
            let Some(comp) = &step.compensate else {
                self.emit(EventKind::StepCompensated {
                    step: idx,
                    id: step.id.clone(),
                    error: None,
                });
                continue;
            };
            let params = Value::Object(comp.with.clone());
            let mut refs = HashSet::new();
            template::referenced_steps_in_value(&params, &mut refs);
            refs.insert(step.id.clone());
            let scope = self.scope_with(self.steps_view(&refs));
            match template::render_value(&params, &scope) {
                Ok(params) => {
                    self.out.effects.push(Effect::Compensate {
                        step: idx,
                        action: comp.action.clone(),
                        params,
                    });
                    return;
                }
                Err(e) => self.emit(EventKind::StepCompensated {
                    step: idx,
                    id: step.id.clone(),
                    error: Some(format!("compensate.with: {e}")),
                }),
            }
        }
    }

    fn condition(&self, expr: &str) -> template::Result<bool> {
        let mut refs = HashSet::new();
        template::referenced_steps(&format!("{{{{ {expr} }}}}"), &mut refs);
        template::condition(expr, &self.scope_with(self.steps_view(&refs)))
    }

    fn render(&self, params: &Value) -> template::Result<Value> {
        if params.as_object().is_some_and(Map::is_empty) {
            // Nothing to render: no scope to build (most steps of a no-op or plain workflow).
            return Ok(params.clone());
        }
        let mut refs = HashSet::new();
        template::referenced_steps_in_value(params, &mut refs);
        template::render_value(params, &self.scope_with(self.steps_view(&refs)))
    }

    fn steps_view(&self, refs: &HashSet<String>) -> Map<String, Value> {
        refs.iter()
            .filter_map(|id| {
                let idx = self.wf.step_index(id)?;
                let s = &self.rec.steps[idx];
                Some((
                    id.clone(),
                    json!({
                        "status": s.status,
                        "attempts": s.attempts,
                        "output": s.output,
                        "error": s.error,
                    }),
                ))
            })
            .collect()
    }

    fn scope_with(&self, steps: Map<String, Value>) -> Scope<'_> {
        Scope {
            input: &self.rec.input,
            state: &self.rec.state,
            steps,
            run: json!({
                "id": self.rec.id,
                "workflow_id": self.rec.workflow_id,
                "attempt": self.rec.attempt,
            }),
        }
    }
}

#[cfg(test)]
#[path = "machine_tests.rs"]
mod tests;
