//! `Supervisor`: one per engine. It owns the table of live runs, spawns a linked
//! `RunActor` for each active run, routes inputs to them (waking parked runs from the
//! store), fires persisted timers, and restarts a run actor that panicked from the last
//! durable record, within a restart budget; past it the run fails with the panic text.
//! It also admits runs: with a limit set (`max_active_runs`, `per_repo`, `per_workflow`), a
//! run starts (or resumes after a restart) only when each limit it counts under has room; the
//! rest wait in [`Admission`]'s lanes, one per repository, taking turns.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Instant;

use ractor::{
    Actor, ActorId, ActorProcessingErr, ActorRef, MessagingErr, RpcReplyPort, SupervisionEvent,
};
use tokio::task::JoinHandle;

use crate::admission::{Admit, RunKeys};
use crate::clock::{now_ms, Millis};
use crate::machine::{self, Env, Input};
use crate::messages::{CommandReply, Refusal, Resume, ResumeReport, RunMsg, SupervisorMsg};
use crate::record::RunStatus;
use crate::run_actor::{persist, RunActor, RunArgs, Snapshot};
use crate::shared::Shared;
use crate::store::{Batch, Op, TimerEntry};

struct Slot {
    actor: ActorRef<RunMsg>,
    /// Inputs sent to this actor; it is stopped only when it has handled them all.
    forwarded: u64,
    /// Recent restarts, for the budget.
    restarts: Vec<Instant>,
}

/// The supervisor's state.
pub(crate) struct SupervisorState {
    shared: Arc<Shared>,
    /// Live run actors: each holds a slot (counted in `shared.admission`).
    runs: HashMap<String, Slot>,
    by_actor: HashMap<ActorId, String>,
    timers: BTreeSet<TimerEntry>,
    armed: Option<(Millis, JoinHandle<()>)>,
}

/// The actor.
pub(crate) struct Supervisor;

impl Actor for Supervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = Arc<Shared>;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        shared: Arc<Shared>,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(SupervisorState {
            shared,
            runs: HashMap::new(),
            by_actor: HashMap::new(),
            timers: BTreeSet::new(),
            armed: None,
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let Some((_, task)) = state.armed.take() {
            task.abort();
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SupervisorMsg::Start { run, keys } => {
                if state.runs.contains_key(&run) {
                    deliver_now(&myself, state, run, Input::Start, None, false, None).await;
                } else {
                    // Through the queue even when there is room, so that no start overtakes
                    // an older one of its repository.
                    state.shared.admission().push(&run, keys, Admit::Start);
                    admit(&myself, state).await;
                }
            }
            SupervisorMsg::Deliver { run, input, reply } => {
                deliver(&myself, state, run, input, reply).await;
            }
            SupervisorMsg::Idle {
                run,
                actor,
                handled,
                finished,
            } => {
                if let Some(slot) = state.runs.get(&run) {
                    if slot.actor.get_id() == actor && slot.forwarded == handled {
                        if finished {
                            state.shared.admission().withdraw(&run);
                        }
                        let slot = forget(state, &run).expect("present");
                        state.by_actor.remove(&slot.actor.get_id());
                        slot.actor.stop(None);
                        admit(&myself, state).await;
                    }
                }
            }
            SupervisorMsg::TimerSet(entry) => {
                state.timers.insert(entry);
                arm(&myself, state);
            }
            SupervisorMsg::TimerCleared(entry) => {
                state.timers.remove(&entry);
            }
            SupervisorMsg::Tick => {
                state.armed = None;
                let now = now_ms();
                while let Some(first) = state.timers.first() {
                    if first.due > now {
                        break;
                    }
                    let entry = state.timers.pop_first().expect("present");
                    let input = Input::TimerFired { timer: entry.timer };
                    deliver(&myself, state, entry.run, input, None).await;
                }
                arm(&myself, state);
            }
            SupervisorMsg::Resume(which, reply) => {
                let report = resume(&myself, state, which).await;
                arm(&myself, state);
                let _ = reply.send(report);
            }
            SupervisorMsg::LiveRuns(reply) => {
                let _ = reply.send(state.runs.len());
            }
            SupervisorMsg::SlotsFreed => {
                state.shared.admission().elsewhere_freed();
                admit(&myself, state).await;
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // Override the default, which would stop the supervisor when any run actor ends.
        match event {
            SupervisionEvent::ActorTerminated(cell, _, _) => {
                if let Some(run) = state.by_actor.remove(&cell.get_id()) {
                    forget(state, &run);
                    admit(&myself, state).await;
                }
            }
            SupervisionEvent::ActorFailed(cell, err) => {
                let Some(run) = state.by_actor.remove(&cell.get_id()) else {
                    return Ok(());
                };
                let mut restarts = forget(state, &run).map(|s| s.restarts).unwrap_or_default();
                let config = &state.shared.config;
                restarts.retain(|t| t.elapsed() < config.restart_window);
                restarts.push(Instant::now());
                let error = err.to_string();
                tracing::error!(run = %run, "run actor panicked: {error}");
                if restarts.len() as u32 <= config.restart_budget {
                    // Same path as a start-up resume: from the last durable record; claimed,
                    // since a failed commit may mean another daemon took the run.
                    match spawn_run(&myself, state, &run, None, None, true).await {
                        Ok(spawned) => {
                            state.runs.get_mut(&run).expect("just spawned").restarts = restarts;
                            resume_if_moving(state, &run, &spawned);
                        }
                        Err(e) => tracing::error!(run = %run, "cannot restart run: {e:?}"),
                    }
                } else {
                    let error = format!(
                        "the run's actor panicked {} times within {}s; last panic: {error}",
                        restarts.len(),
                        config.restart_window.as_secs()
                    );
                    if let Err(e) = fail_inline(&state.shared, &run, error).await {
                        tracing::error!(run = %run, "cannot record the run's failure: {e}");
                    }
                }
                admit(&myself, state).await;
            }
            _ => {}
        }
        Ok(())
    }
}

/// Arms one tokio sleep for the earliest timer.
fn arm(myself: &ActorRef<SupervisorMsg>, state: &mut SupervisorState) {
    let Some(first) = state.timers.first() else {
        return;
    };
    let due = first.due;
    if let Some((armed_due, task)) = &state.armed {
        if *armed_due <= due && !task.is_finished() {
            return;
        }
        task.abort();
    }
    let me = myself.clone();
    let wait = due.saturating_sub(now_ms());
    let task = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
        let _ = me.cast(SupervisorMsg::Tick);
    });
    state.armed = Some((due, task));
}

/// Removes a run's actor from the table; its slots free (across daemons too).
fn forget(state: &mut SupervisorState, run: &str) -> Option<Slot> {
    let slot = state.runs.remove(run)?;
    state.shared.admission().ended(run);
    if shares_repo_slots(&state.shared) {
        // Not waited for: a slot freed a moment late only delays another daemon's run.
        drop(state.shared.store.commit(Batch::of(Op::Slot {
            run: run.to_string(),
            repo: None,
        })));
    }
    Some(slot)
}

/// Whether `per_repo` counts across daemons: a shared store and a limit set.
pub(crate) fn shares_repo_slots(shared: &Shared) -> bool {
    shared.config.per_repo > 0 && shared.store.cluster().is_some()
}

/// Starts queued runs, lanes in turn, while there is room.
async fn admit(myself: &ActorRef<SupervisorMsg>, state: &mut SupervisorState) {
    loop {
        // The lock is not held across the spawn: a spawned run takes its slots itself.
        let Some((run, keys, how, queued_at)) = state.shared.admission().next() else {
            return;
        };
        // With several daemons, the repository's slot is taken in the database, where every
        // daemon's runs count; held elsewhere, the run waits first in its lane.
        if let (Some(repo), true) = (keys.repo.as_deref(), shares_repo_slots(&state.shared)) {
            let cluster = state.shared.store.cluster().expect("a shared store");
            let limit = state.shared.config.per_repo;
            let refused = match cluster.take_slot(repo, &run, limit) {
                Ok(Ok(())) => None,
                Ok(Err(elsewhere)) => Some(elsewhere),
                Err(e) => {
                    tracing::error!(run = %run, "cannot take a slot of {repo}: {e}; trying again shortly");
                    Some(limit)
                }
            };
            if let Some(elsewhere) = refused {
                state
                    .shared
                    .admission()
                    .put_back(&run, keys, how, queued_at, elsewhere);
                continue;
            }
        }
        if how == Admit::Start {
            // A resumed run's queueing after a restart is not a wait anyone asked it to do.
            crate::telemetry::admission_waited(keys.repo.as_deref(), queued_at);
        }
        let slotted = keys.repo.is_some() && shares_repo_slots(&state.shared);
        match how {
            Admit::Start => {
                let input = Input::Start;
                deliver_now(myself, state, run.clone(), input, None, false, Some(keys)).await;
            }
            // Woken meanwhile by a command: its actor already resumed it.
            Admit::Resume if state.runs.contains_key(&run) => {}
            Admit::Resume => match spawn_run(myself, state, &run, None, Some(keys), false).await {
                Ok(spawned) => resume_if_moving(state, &run, &spawned),
                Err(e) => tracing::error!(run = %run, "cannot resume: {e:?}"),
            },
        }
        if slotted && !state.runs.contains_key(&run) {
            // It could not start: the slot it took is free again.
            drop(
                state
                    .shared
                    .store
                    .commit(Batch::of(Op::Slot { run, repo: None })),
            );
        }
    }
}

/// Routes an input to a run, waking it if it is parked.
async fn deliver(
    myself: &ActorRef<SupervisorMsg>,
    state: &mut SupervisorState,
    run: String,
    input: Input,
    reply: Option<RpcReplyPort<CommandReply>>,
) {
    // A command to a run still queued (a cancel, a signal) is handled without starting it.
    let queued = state.shared.admission().is_queued(&run);
    deliver_now(myself, state, run, input, reply, queued, None).await;
}

async fn deliver_now(
    myself: &ActorRef<SupervisorMsg>,
    state: &mut SupervisorState,
    run: String,
    input: Input,
    reply: Option<RpcReplyPort<CommandReply>>,
    queued: bool,
    keys: Option<RunKeys>,
) {
    let mut msg = RunMsg::Input { input, reply };
    if let Some(slot) = state.runs.get_mut(&run) {
        slot.forwarded += 1;
        match slot.actor.send_message(msg) {
            Ok(()) => return,
            Err(MessagingErr::SendErr(back)) => {
                // The actor is stopping: forget it and wake the run afresh.
                let slot = forget(state, &run).expect("present");
                state.by_actor.remove(&slot.actor.get_id());
                msg = back;
            }
            Err(_) => return,
        }
    }
    let starting = matches!(
        &msg,
        RunMsg::Input {
            input: Input::Start,
            ..
        }
    );
    // A new run is this daemon's from its first record; any other is claimed, as another
    // daemon may hold it.
    match spawn_run(myself, state, &run, None, keys, !starting).await {
        Ok(spawned) => {
            if !starting && !queued {
                resume_if_moving(state, &run, &spawned);
            }
            state.runs.get_mut(&run).expect("just spawned").forwarded += 1;
            let _ = spawned.actor.send_message(msg);
        }
        Err(refusal) => {
            if let RunMsg::Input {
                reply: Some(reply), ..
            } = msg
            {
                let _ = reply.send(Err(refusal));
            }
        }
    }
}

/// Loads a run from the store (from `head` if already read) and starts its actor, which
/// takes the slots of `keys` (read from the run when not given). With `claim`, and several
/// daemons on the store, the run is first taken for this daemon; a run another live daemon
/// holds is refused with its name.
async fn spawn_run(
    myself: &ActorRef<SupervisorMsg>,
    state: &mut SupervisorState,
    run: &str,
    head: Option<crate::record::RunRecord>,
    keys: Option<RunKeys>,
    claim: bool,
) -> Result<Spawned, Refusal> {
    if let Some(cluster) = state.shared.store.cluster().filter(|_| claim) {
        match cluster.claim(run) {
            Ok(None) => {}
            Ok(Some(holder)) => return Err(Refusal::Elsewhere(holder)),
            Err(e) => return Err(Refusal::Failed(e.to_string())),
        }
    }
    let loaded = state.shared.load_idle_run(run, head);
    if let (Err(e), Some(cluster)) = (&loaded, state.shared.store.cluster()) {
        // Held but not loadable now: let go, so that a takeover (here or elsewhere) tries
        // again, rather than holding a run nothing drives.
        if let Err(release) = cluster.release(run) {
            tracing::error!(run = %run, "cannot load ({e}) nor let go of the run: {release}");
        }
    }
    let (wf, rec, stale_steps) = loaded.map_err(|e| match e {
        crate::Error::UnknownRun(_) => Refusal::UnknownRun,
        other => Refusal::Failed(other.to_string()),
    })?;
    let keys = match keys {
        Some(keys) => keys,
        None => run_keys(&state.shared, &rec),
    };
    // Its timer, from the record itself: a timer key lost in a crash, or a timer whose
    // firing died with an actor, is armed again here.
    if let Some(timer) = &rec.timer {
        state.timers.insert(TimerEntry {
            due: timer.due,
            run: run.to_string(),
            timer: timer.id,
        });
        arm(myself, state);
    }
    let moving = matches!(rec.status, RunStatus::Running | RunStatus::Pending);
    let shared = &state.shared;
    let args = RunArgs {
        shared: shared.clone(),
        wf,
        rec,
        stale_steps,
        supervisor: myself.clone(),
    };
    let (actor, _) = Actor::spawn_linked(None, RunActor, args, myself.get_cell())
        .await
        .map_err(|e| Refusal::Failed(format!("cannot start the run's actor: {e}")))?;
    state.by_actor.insert(actor.get_id(), run.to_string());
    if let (Some(repo), true) = (keys.repo.clone(), shares_repo_slots(&state.shared)) {
        // A run woken past the limit (or admitted, which took it already) holds its slot
        // where other daemons count it. Not waited for, as a freed one is not.
        drop(state.shared.store.commit(Batch::of(Op::Slot {
            run: run.to_string(),
            repo: Some(repo),
        })));
    }
    state.shared.admission().started(run, keys);
    state.runs.insert(
        run.to_string(),
        Slot {
            actor: actor.clone(),
            forwarded: 0,
            restarts: Vec::new(),
        },
    );
    Ok(Spawned { actor, moving })
}

/// What admission counts a stored run under (its job's data may name its repository). The
/// job was durable before the run started and its data never changes, so the read need not
/// wait out a flush.
fn run_keys(shared: &Shared, rec: &crate::record::RunRecord) -> RunKeys {
    let store = shared.store.for_idle_runs();
    let job = rec.job_id.as_deref().and_then(|id| match store.job(id) {
        Ok(job) => job,
        Err(e) => {
            tracing::warn!(run = %rec.id, "cannot read its job for admission: {e}");
            None
        }
    });
    RunKeys::of(&rec.workflow_id, &rec.input, job.as_ref())
}

/// A freshly started run actor.
struct Spawned {
    actor: ActorRef<RunMsg>,
    /// The stored run is running or pending: what was in flight must be issued again.
    moving: bool,
}

/// Sends `Resume` to a fresh actor of a run that should be moving, counted for the idle
/// handshake.
fn resume_if_moving(state: &mut SupervisorState, run: &str, spawned: &Spawned) {
    if spawned.moving {
        state.runs.get_mut(run).expect("just spawned").forwarded += 1;
        let _ = spawned.actor.send_message(RunMsg::Input {
            input: Input::Resume,
            reply: None,
        });
    }
}

async fn resume(
    myself: &ActorRef<SupervisorMsg>,
    state: &mut SupervisorState,
    which: Resume,
) -> crate::Result<ResumeReport> {
    let mut report = ResumeReport::default();
    let store = state.shared.store.for_idle_runs();
    let cluster = state.shared.store.cluster();
    // The runs to resume; with several daemons, those this one holds (its own from before a
    // restart, and any whose daemon lapsed), and only their timers.
    let adopted = matches!(which, Resume::Adopted(_));
    let (ids, only) = match which {
        Resume::All => match cluster {
            Some(cluster) => (cluster.adopt(true, i32::MAX as usize)?, false),
            None => (store.unfinished()?, false),
        },
        Resume::Run(run) => {
            if let Some(holder) = cluster.map(|c| c.claim(&run)).transpose()?.flatten() {
                return Err(crate::Error::HeldElsewhere {
                    run,
                    daemon: holder,
                });
            }
            (vec![run], true)
        }
        Resume::Adopted(ids) => (ids, false),
    };
    let mine: Option<std::collections::HashSet<&str>> =
        (only || cluster.is_some()).then(|| ids.iter().map(String::as_str).collect());
    // Runs taken over mid-life need no read of every timer in the database: their heads
    // (below) and their actors arm their own.
    let timers = match adopted {
        true => Vec::new(),
        false => store.timers()?,
    };
    for timer in timers {
        if mine.as_ref().is_none_or(|m| m.contains(timer.run.as_str()))
            && state.timers.insert(timer)
        {
            report.timers += 1;
        }
    }
    // Runs that were executing get the slots before pending ones; each group keeps its
    // start order (run ids sort by creation time).
    let mut admit_later = Vec::new();
    for id in ids {
        if state.runs.contains_key(&id) {
            continue;
        }
        let head = match store.head(&id) {
            Ok(Some(mut head)) => {
                // A crash may have kept events the head does not reflect yet.
                match store.events(&id, head.seq) {
                    Ok(events) => events.iter().for_each(|e| head.apply(e)),
                    Err(e) => tracing::error!("{e}; replaying {id} from its actor"),
                }
                head
            }
            Ok(None) if only => return Err(crate::Error::UnknownRun(id)),
            Ok(None) => continue,
            Err(e) => {
                tracing::error!("{e}; skipped");
                report.skipped += 1;
                // Not left held by a daemon that cannot drive it: a later takeover retries.
                if let Some(Err(e)) = store.cluster().map(|c| c.release(&id)) {
                    tracing::error!(run = %id, "cannot let go of the run: {e}");
                }
                continue;
            }
        };
        if head.status == RunStatus::Waiting {
            report.waiting += 1;
            if let Some(timer) = &head.timer {
                if state.timers.insert(TimerEntry {
                    due: timer.due,
                    run: id.clone(),
                    timer: timer.id,
                }) {
                    report.timers += 1;
                }
            }
            continue;
        }
        if head.status.is_terminal() {
            continue;
        }
        if state.shared.admission().limits().any() {
            let keys = run_keys(&state.shared, &head);
            admit_later.push((head.status == RunStatus::Pending, id, keys));
            continue;
        }
        // The actor loads the run afresh: its step records need the same events replayed.
        match spawn_run(myself, state, &id, None, None, false).await {
            Ok(spawned) => {
                resume_if_moving(state, &id, &spawned);
                report.resumed += 1;
            }
            Err(e) => {
                tracing::error!(run = %id, "cannot resume: {e:?}");
                report.skipped += 1;
            }
        }
    }
    admit_later.sort_by_key(|(pending, _, _)| *pending);
    for (_, id, keys) in admit_later {
        state.shared.admission().push(&id, keys, Admit::Resume);
        report.resumed += 1;
    }
    admit(myself, state).await;
    Ok(report)
}

/// Records a run's failure without an actor (its actor keeps crashing).
async fn fail_inline(shared: &Arc<Shared>, run: &str, error: String) -> crate::Result<()> {
    let (wf, mut rec, stale_steps) = Shared::load_from(&*shared.store, shared, run, None)?;
    let before = rec.status;
    let waited = rec.waiting_for.clone();
    let env = Env {
        now: now_ms(),
        random: 0.0,
        max_transitions: shared.config.max_transitions,
    };
    let Ok(outcome) = machine::handle(&wf, &mut rec, Input::Crashed { error }, &env) else {
        return Ok(());
    };
    let mut snapshot = Snapshot {
        stale_steps,
        ..Snapshot::default()
    };
    let batch = persist(
        &rec,
        before,
        &outcome.effects,
        &outcome.events,
        &mut snapshot,
        0,
        shared.store.steps_with_heads_only(),
    );
    shared.store.commit(batch).await?;
    // Counted and traced like any other end: these are the runs an operator most needs to see.
    crate::telemetry::observe(&wf, waited.as_ref(), &rec, &outcome.events);
    for event in outcome.events {
        shared.publish(event);
    }
    Ok(())
}
