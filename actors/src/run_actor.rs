//! `RunActor`: one per active run. It feeds inputs to the pure state machine, makes the
//! resulting events durable, publishes them, and only then carries out the effects:
//! spawning a linked `StepActor` per attempt, cancelling, compensating, arming timers.
//!
//! A waiting or finished run tells the supervisor it is idle; the supervisor stops it
//! once no input is on its way, so a parked run holds no actor and no task.

use std::sync::Arc;
use std::time::Instant;

use ractor::{Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::action::{ActionContext, ActionError, ChangeJournal, Progress, SharedOutput};
use crate::clock::now_ms;
use crate::definition::Workflow;
use crate::machine::{self, Effect, Env, Failure, Input, Rejected};
use crate::messages::{Refusal, RunMsg, SupervisorMsg};
use crate::record::{RunRecord, RunStatus, StepStatus};
use crate::shared::Shared;
use crate::step_actor::{StepActor, StepArgs, StepWork};
use crate::store::{encode, Batch, Op, Transition};

/// What a run actor starts from.
pub(crate) struct RunArgs {
    pub(crate) shared: Arc<Shared>,
    pub(crate) wf: Arc<Workflow>,
    pub(crate) rec: RunRecord,
    /// Steps whose stored records are older than `rec` (see [`Snapshot::stale_steps`]).
    pub(crate) stale_steps: Vec<usize>,
    pub(crate) supervisor: ActorRef<SupervisorMsg>,
}

/// Cancels every token it holds when dropped: a run actor that panics takes its
/// in-flight attempts down with it instead of leaving them running.
#[derive(Default)]
struct InFlight {
    /// The step actor of the current attempt or compensation, what it does, and its token.
    current: Option<(ActorId, StepWork, CancellationToken)>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some((_, _, token)) = self.current.take() {
            token.cancel();
        }
    }
}

/// A run actor's state.
pub(crate) struct RunState {
    shared: Arc<Shared>,
    wf: Arc<Workflow>,
    rec: RunRecord,
    supervisor: ActorRef<SupervisorMsg>,
    in_flight: InFlight,
    /// A compensation waiting for a cancelled attempt to stop first.
    deferred: Option<Effect>,
    /// Inputs handled from the supervisor (for the idle handshake).
    handled: u64,
    /// When the last head snapshot was written.
    snapshot: Snapshot,
}

/// The actor.
pub(crate) struct RunActor;

impl Actor for RunActor {
    type Msg = RunMsg;
    type State = RunState;
    type Arguments = RunArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: RunArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(RunState {
            snapshot: Snapshot {
                seq: args.rec.seq,
                // A run at its first event was just started: its start's commit, complete
                // (else it would not be found to resume), wrote its index entries and nothing
                // else has. A run read back from the store may have been cut short by a crash
                // mid-batch: its first status change rewrites every entry.
                index_exact: args.rec.seq == 1,
                stale_steps: args.stale_steps,
                ..Snapshot::default()
            },
            shared: args.shared,
            wf: args.wf,
            rec: args.rec,
            supervisor: args.supervisor,
            in_flight: InFlight::default(),
            deferred: None,
            handled: 0,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            RunMsg::Input { input, reply } => {
                state.handled += 1;
                #[cfg(feature = "test-hooks")]
                state.shared.maybe_inject_panic(&state.rec.workflow_id);
                let answer = transition(&myself, state, input).await?;
                if let Some(reply) = reply {
                    let _ =
                        reply.send(answer.map_err(|r| Refusal::WrongState(state.rec.status, r.0)));
                }
            }
            RunMsg::StepDone {
                step,
                attempt,
                result,
            } => {
                let result = result.map_err(|e| Failure {
                    message: e.message,
                    retryable: e.retryable,
                    output: e.output,
                });
                transition(
                    &myself,
                    state,
                    Input::StepResult {
                        step,
                        attempt,
                        result,
                    },
                )
                .await?
                .ok();
            }
            RunMsg::CompensationDone { step, result } => {
                transition(&myself, state, Input::CompensationResult { step, result })
                    .await?
                    .ok();
            }
        }
        // A pending run here was sent something other than its start (a cancel, a signal)
        // while it waits for admission: its actor must not hold a slot meanwhile.
        if matches!(state.rec.status, RunStatus::Waiting | RunStatus::Pending)
            || state.rec.status.is_terminal()
        {
            let _ = state.supervisor.cast(SupervisorMsg::Idle {
                run: state.rec.id.clone(),
                actor: myself.get_id(),
                handled: state.handled,
                finished: state.rec.status.is_terminal(),
            });
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // The default stops the parent when a child ends; a step actor ending is normal.
        match event {
            SupervisionEvent::ActorTerminated(cell, _, _) => {
                step_actor_gone(&myself, state, cell.get_id()).await?;
            }
            SupervisionEvent::ActorFailed(cell, err) => {
                let id = cell.get_id();
                let work = state
                    .in_flight
                    .current
                    .as_ref()
                    .filter(|(a, _, _)| *a == id)
                    .map(|(_, work, _)| *work);
                step_actor_gone(&myself, state, id).await?;
                if let Some(work) = work {
                    // The failure belongs to what that actor was doing, not to whatever the
                    // run is doing now (a cancelled attempt may panic during a rollback).
                    let message = format!("the action panicked: {err}");
                    let input = match work {
                        StepWork::Compensation { step } => Input::CompensationResult {
                            step,
                            result: Err(message),
                        },
                        StepWork::Attempt { step, attempt } => Input::StepResult {
                            step,
                            attempt,
                            result: Err(Failure {
                                message,
                                retryable: true,
                                output: Value::Null,
                            }),
                        },
                    };
                    transition(&myself, state, input).await?.ok();
                    if state.rec.status == RunStatus::Waiting || state.rec.status.is_terminal() {
                        let _ = state.supervisor.cast(SupervisorMsg::Idle {
                            run: state.rec.id.clone(),
                            actor: myself.get_id(),
                            handled: state.handled,
                            finished: state.rec.status.is_terminal(),
                        });
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }
}

async fn step_actor_gone(
    myself: &ActorRef<RunMsg>,
    state: &mut RunState,
    id: ActorId,
) -> Result<(), ActorProcessingErr> {
    if state
        .in_flight
        .current
        .as_ref()
        .is_some_and(|(a, _, _)| *a == id)
    {
        state.in_flight.current = None;
        if let Some(effect) = state.deferred.take() {
            carry_out(myself, state, vec![effect]).await?;
        }
    }
    Ok(())
}

/// Decide, persist, publish, act: the one path every input takes.
async fn transition(
    myself: &ActorRef<RunMsg>,
    state: &mut RunState,
    input: Input,
) -> Result<Result<(), Rejected>, ActorProcessingErr> {
    let started = Instant::now();
    let env = Env {
        now: now_ms(),
        random: fastrand::f64(),
        max_transitions: state.shared.config.max_transitions,
    };
    let before = state.rec.status;
    let waited = state.rec.waiting_for.clone();
    let outcome = match machine::handle(&state.wf, &mut state.rec, input, &env) {
        Ok(outcome) => outcome,
        Err(rejected) => return Ok(Err(rejected)),
    };
    if outcome.events.is_empty() && outcome.effects.is_empty() {
        return Ok(Ok(()));
    }
    let mut batch = persist(
        &state.rec,
        before,
        &outcome.effects,
        &outcome.events,
        &mut state.snapshot,
        state.shared.config.snapshot_every,
        state.shared.store.steps_with_heads_only(),
    );
    if let Some(tag) = outcome_tag(&state.rec, before) {
        // In the batch that ends the run, so that a crash cannot end it untagged.
        if !state.shared.store.is_tagged(&tag, &state.rec.id)? {
            batch.push(Op::Tag {
                tag,
                run: state.rec.id.clone(),
                order: state.shared.store.next_id()?,
            });
        }
    }
    state.shared.store.commit(batch).await?;
    state.shared.latency.record(started.elapsed());
    state.shared.offer_settled(&state.rec, &outcome.events);
    crate::telemetry::observe(&state.wf, waited.as_ref(), &state.rec, &outcome.events);
    for event in outcome.events {
        state.shared.publish(event);
    }
    carry_out(myself, state, outcome.effects).await?;
    Ok(Ok(()))
}

/// Where a run's last head snapshot stands.
#[derive(Debug, Default, Clone)]
pub(crate) struct Snapshot {
    /// Its event sequence.
    pub(crate) seq: u64,
    /// Its size in bytes.
    pub(crate) head_bytes: usize,
    /// Bytes of events written since.
    pub(crate) event_bytes: usize,
    /// Whether the run index is known to hold the run under its current status only, so a
    /// status change moves two entries instead of rewriting all of them.
    pub(crate) index_exact: bool,
    /// Steps changed since their records were last written, where those are written only
    /// with heads: they go with the next one.
    pub(crate) stale_steps: Vec<usize>,
}

/// The transition that makes `events` durable: events first, then what derives from them.
///
/// The head is rewritten when the status changes, and otherwise only once the events
/// since the last snapshot are at least `snapshot_every` long and weigh as much as the
/// head itself: snapshots then cost at most as many bytes as the deltas, so a run with a
/// large state grows the store by its deltas, not by its whole state per step. With
/// `steps_with_heads_only`, the records of the steps changed meanwhile go with the head,
/// not with every transition.
pub(crate) fn persist(
    rec: &RunRecord,
    before: RunStatus,
    effects: &[Effect],
    events: &[crate::record::Event],
    snapshot: &mut Snapshot,
    snapshot_every: u64,
    steps_with_heads_only: bool,
) -> Batch {
    let mut t = Transition {
        run: rec.id.clone(),
        workflow_id: rec.workflow_id.clone(),
        before,
        status: rec.status,
        events: Vec::with_capacity(events.len()),
        steps: Vec::new(),
        set_timers: Vec::new(),
        cleared_timers: Vec::new(),
        head: None,
        index_exact: false,
    };
    // A transition touches one or two steps: a vector beats a set here.
    let mut touched: Vec<usize> = Vec::with_capacity(2);
    for event in events {
        let json = encode(event);
        snapshot.event_bytes += json.len();
        t.events.push((event.seq, json));
        add_steps(&mut touched, event.kind.step());
    }
    for effect in effects {
        match effect {
            Effect::SetTimer { timer, due } => t.set_timers.push((*due, *timer)),
            Effect::ClearTimer { timer, due } => t.cleared_timers.push((*due, *timer)),
            _ => {}
        }
    }
    let parked = rec.status != RunStatus::Running;
    let due =
        rec.seq - snapshot.seq >= snapshot_every && snapshot.event_bytes >= snapshot.head_bytes;
    if parked || before != rec.status || due {
        let mut index_exact = snapshot.index_exact;
        if before != rec.status {
            t.index_exact = index_exact;
            index_exact = true;
        }
        let head = encode(rec);
        add_steps(&mut touched, std::mem::take(&mut snapshot.stale_steps));
        *snapshot = Snapshot {
            seq: rec.seq,
            head_bytes: head.len(),
            event_bytes: 0,
            index_exact,
            stale_steps: Vec::new(),
        };
        t.head = Some(head);
    } else if steps_with_heads_only {
        add_steps(&mut snapshot.stale_steps, touched.drain(..));
    }
    t.steps = touched
        .into_iter()
        .filter_map(|step| Some((step as u64, encode(rec.steps.get(step)?))))
        .collect();
    Batch::of(Op::Transition(t))
}

/// The tag a run's end gives it when its state holds an `outcome` (a short lower-case word such
/// as `verified`): `outcome:<word>`, so that runs can be listed by outcome from the index
/// ([`crate::Engine::runs_with_outcome`]) rather than by reading every run.
pub(crate) fn outcome_tag(rec: &RunRecord, before: RunStatus) -> Option<String> {
    if before.is_terminal() || !rec.status.is_terminal() {
        return None;
    }
    let word = rec.state.get("outcome")?.as_str()?;
    let plain = !word.is_empty()
        && word.len() <= 32
        && word
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    plain.then(|| format!("{OUTCOME_TAG}{word}"))
}

/// The prefix of the tags [`outcome_tag`] makes.
pub(crate) const OUTCOME_TAG: &str = "outcome:";

/// Adds `steps` to `to`, each once.
fn add_steps(to: &mut Vec<usize>, steps: impl IntoIterator<Item = usize>) {
    for step in steps {
        if !to.contains(&step) {
            to.push(step);
        }
    }
}

fn context(
    state: &RunState,
    step: usize,
    attempt: u32,
    params: Value,
    cancel: CancellationToken,
    compensation: bool,
) -> crate::Result<ActionContext> {
    let shared = &state.shared;
    let id = &state.rec.id;
    let def = &state.wf.steps()[step];
    let step_id = def.id.clone();
    let (changes, step_output) = if compensation {
        let changes = shared
            .store
            .changes(id)?
            .into_iter()
            .filter(|c| c.step_index == step)
            .collect();
        (changes, state.rec.steps[step].output.clone())
    } else {
        (Vec::new(), Value::Null)
    };
    Ok(ActionContext {
        run_id: id.clone(),
        workflow_id: state.rec.workflow_id.clone(),
        idempotency_key: format!("{id}/{step_id}/{attempt}"),
        step_index: step,
        attempt,
        params,
        workspace: shared.workspace(id),
        journal: ChangeJournal::new(shared.store.clone(), id.clone(), step),
        progress: Progress::new(shared.bus.clone(), id.clone(), step_id.clone()),
        cancel,
        changes,
        step_output,
        shared_outputs: shared_outputs(state),
        step_id,
        pass_env: def.pass_env.clone(),
        sandbox: def.sandbox,
        input: state.rec.input.clone(),
    })
}

/// The outputs of the run's completed (or since compensated) steps that ran one of the
/// actions the app shares, in the order they completed.
fn shared_outputs(state: &RunState) -> Vec<SharedOutput> {
    let shared = state
        .shared
        .shared_actions
        .read()
        .unwrap_or_else(|e| e.into_inner());
    if shared.is_empty() {
        return Vec::new();
    }
    let mut found: Vec<(u64, SharedOutput)> = state
        .wf
        .steps()
        .iter()
        .zip(&state.rec.steps)
        .filter(|(_, rec)| matches!(rec.status, StepStatus::Completed | StepStatus::Compensated))
        .filter_map(|(def, rec)| {
            let action = def.action.as_deref()?;
            shared.iter().any(|a| a == action).then(|| {
                (
                    rec.completion.unwrap_or(0),
                    SharedOutput {
                        step_id: def.id.clone(),
                        action: action.to_string(),
                        output: rec.output.clone(),
                    },
                )
            })
        })
        .collect();
    found.sort_by_key(|(completion, _)| *completion);
    found.into_iter().map(|(_, s)| s).collect()
}

async fn carry_out(
    myself: &ActorRef<RunMsg>,
    state: &mut RunState,
    effects: Vec<Effect>,
) -> Result<(), ActorProcessingErr> {
    for effect in effects {
        match effect {
            Effect::RunStep {
                step,
                attempt,
                action,
                params,
                timeout,
            } => {
                let work = StepWork::Attempt { step, attempt };
                spawn_step(myself, state, &action, work, params, timeout).await?;
            }
            Effect::Compensate {
                step,
                ref action,
                ref params,
            } => {
                if state.in_flight.current.is_some() {
                    // A cancelled attempt is still stopping: undo only once it has.
                    state.deferred = Some(effect);
                    continue;
                }
                let (action, params) = (action.clone(), params.clone());
                spawn_step(
                    myself,
                    state,
                    &action,
                    StepWork::Compensation { step },
                    params,
                    None,
                )
                .await?;
            }
            Effect::CancelStep => {
                if let Some((_, _, token)) = &state.in_flight.current {
                    token.cancel();
                }
            }
            Effect::SetTimer { timer, due } => {
                let _ = state
                    .supervisor
                    .cast(SupervisorMsg::TimerSet(crate::store::TimerEntry {
                        due,
                        run: state.rec.id.clone(),
                        timer,
                    }));
            }
            Effect::ClearTimer { timer, due } => {
                let _ =
                    state
                        .supervisor
                        .cast(SupervisorMsg::TimerCleared(crate::store::TimerEntry {
                            due,
                            run: state.rec.id.clone(),
                            timer,
                        }));
            }
            Effect::Park | Effect::Finish => {}
        }
    }
    Ok(())
}

async fn spawn_step(
    myself: &ActorRef<RunMsg>,
    state: &mut RunState,
    action_name: &str,
    work: StepWork,
    params: Value,
    timeout: Option<std::time::Duration>,
) -> Result<(), ActorProcessingErr> {
    let (step, attempt, compensation) = match work {
        StepWork::Attempt { step, attempt } => (step, attempt, false),
        StepWork::Compensation { step } => (step, 0, true),
    };
    let failed = |message: String| match work {
        StepWork::Attempt { step, attempt } => RunMsg::StepDone {
            step,
            attempt,
            result: Err(ActionError::fatal(message)),
        },
        StepWork::Compensation { step } => RunMsg::CompensationDone {
            step,
            result: Err(message),
        },
    };
    let Some(action) = state.shared.action(action_name) else {
        myself.send_message(failed(format!("action `{action_name}` is not registered")))?;
        return Ok(());
    };
    let cancel = CancellationToken::new();
    let ctx = context(state, step, attempt, params, cancel.clone(), compensation)?;
    let span = match work {
        StepWork::Attempt { .. } => crate::telemetry::step_span(
            &state.rec,
            state.wf.steps().get(step).map_or("", |s| s.id.as_str()),
            action_name,
            attempt,
        ),
        StepWork::Compensation { .. } => tracing::Span::none(),
    };
    let args = StepArgs {
        action,
        ctx,
        timeout,
        work,
        parent: myself.clone(),
        procs: state.shared.procs.clone(),
        span,
    };
    match Actor::spawn_linked(None, StepActor, args, myself.get_cell()).await {
        Ok((actor, _)) => {
            let cell: ActorCell = actor.get_cell();
            state.in_flight.current = Some((cell.get_id(), work, cancel));
        }
        // A child that fails in pre_start sends no supervision event: report it here.
        Err(e) => myself.send_message(failed(format!("could not start the step: {e}")))?,
    }
    Ok(())
}
