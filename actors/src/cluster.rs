//! Holding runs on a store several daemons share (PostgreSQL; see [`crate::store::Cluster`]).
//! Tasks per engine:
//!
//! - **The lease**, from the engine's start (a CLI running a run holds it too). Renewed every
//!   third of its length. A daemon that cannot renew within two thirds of it, or learns it
//!   lapsed, stops the process at once (exit 3): other daemons are about to take its runs, and
//!   a step must not run twice. Once the engine serves (its first resume), each renewal is
//!   followed by taking over the runs of lapsed daemons, which are then resumed.
//! - **The inbox.** Commands other daemons forwarded to runs this one holds, woken by `NOTIFY`
//!   and polled every second as the fallback; each is delivered as if sent here, and answered.
//! - **Freed slots**, with `[limits] per_repo`: when another daemon frees a repository's slot
//!   (`NOTIFY`, or every third of the lease), runs waiting for one here try again.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use ractor::rpc::CallResult;
use ractor::{ActorRef, ActorStatus};

use crate::machine::Input;
use crate::messages::{CommandReply, Refusal, Resume, SupervisorMsg};
use crate::shared::Shared;
use crate::store::BoxFuture;

/// How many runs of lapsed daemons one renewal takes over at most; the next takes more.
const ADOPT_BATCH: usize = 500;
/// How often the inbox is read when no notification came.
const INBOX_POLL: Duration = Duration::from_secs(1);

/// Starts renewing the lease, when the store is shared; runs of lapsed daemons are taken over
/// once `serving` is set.
pub(crate) fn hold_lease(
    shared: &Arc<Shared>,
    supervisor: &ActorRef<SupervisorMsg>,
    serving: Arc<AtomicBool>,
) {
    if let Some(cluster) = shared.store.cluster() {
        let every = cluster.lease() / 3;
        tokio::spawn(hold(
            Arc::downgrade(shared),
            supervisor.clone(),
            serving,
            every,
        ));
    }
}

/// Starts answering other daemons (the inbox, freed slots), when the store is shared.
pub(crate) fn serve(shared: &Arc<Shared>, supervisor: &ActorRef<SupervisorMsg>) {
    let Some(cluster) = shared.store.cluster() else {
        return;
    };
    tokio::spawn(inbox(Arc::downgrade(shared), supervisor.clone()));
    if crate::supervisor::shares_repo_slots(shared) {
        let wait = cluster.slots_wait(cluster.lease() / 3);
        tokio::spawn(freed_slots(wait, supervisor.clone()));
    }
}

/// The tasks hold the engine weakly, and nothing of it while they wait: a store closed and
/// reopened in one process (its data dir lock) is not kept open by them.
fn alive(shared: &Weak<Shared>, supervisor: &ActorRef<SupervisorMsg>) -> Option<Arc<Shared>> {
    let stopping = matches!(
        supervisor.get_status(),
        ActorStatus::Stopping | ActorStatus::Stopped
    );
    shared.upgrade().filter(|_| !stopping)
}

async fn freed_slots(
    wait: impl Fn() -> BoxFuture<'static, ()>,
    supervisor: ActorRef<SupervisorMsg>,
) {
    loop {
        wait().await;
        if supervisor.cast(SupervisorMsg::SlotsFreed).is_err() {
            return;
        }
    }
}

/// Runs `work` on a blocking thread: the store's calls wait for the database.
async fn blocking<T: Send + 'static>(
    shared: Arc<Shared>,
    work: impl FnOnce(&dyn crate::store::Cluster) -> crate::Result<T> + Send + 'static,
) -> crate::Result<T> {
    tokio::task::spawn_blocking(move || work(shared.store.cluster().expect("a shared store")))
        .await
        .unwrap_or(Err(crate::Error::ShuttingDown))
}

async fn hold(
    shared: Weak<Shared>,
    supervisor: ActorRef<SupervisorMsg>,
    serving: Arc<AtomicBool>,
    every: Duration,
) {
    let lease = every * 3;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut renewed = Instant::now();
    loop {
        tick.tick().await;
        let Some(engine) = alive(&shared, &supervisor) else {
            return;
        };
        let attempt = Instant::now();
        match blocking(engine.clone(), |c| c.renew()).await {
            Ok(()) => renewed = attempt,
            Err(e @ crate::Error::LeaseLost { .. }) => fail_stop(&e),
            Err(crate::Error::ShuttingDown) => return,
            Err(e) if renewed.elapsed() < lease * 2 / 3 => {
                tracing::warn!("cannot renew this daemon's lease yet: {e}");
                continue;
            }
            Err(e) => fail_stop(&e),
        }
        if !serving.load(Ordering::SeqCst) {
            continue;
        }
        let adopted = match blocking(engine, |c| c.adopt(false, ADOPT_BATCH)).await {
            Ok(ids) => ids,
            Err(e) => {
                tracing::warn!("cannot look for runs of lapsed daemons: {e}");
                continue;
            }
        };
        if adopted.is_empty() {
            continue;
        }
        let call = supervisor
            .call(
                |reply| SupervisorMsg::Resume(Resume::Adopted(adopted), reply),
                None,
            )
            .await;
        match call {
            Ok(CallResult::Success(Ok(report))) => tracing::info!(
                "resumed {} run(s) taken over ({} waiting, {} timer(s))",
                report.resumed,
                report.waiting,
                report.timers
            ),
            Ok(CallResult::Success(Err(e))) => {
                tracing::error!("cannot resume runs taken over: {e}")
            }
            _ => return,
        }
    }
}

/// Stops the process: past its lease, this daemon may no longer hold its runs, and another
/// may be running their steps.
fn fail_stop(e: &crate::Error) -> ! {
    tracing::error!("{e}; stopping so that no step runs twice");
    eprintln!("baton: {e}; stopping so that no step runs twice");
    std::process::exit(3);
}

async fn inbox(shared: Weak<Shared>, supervisor: ActorRef<SupervisorMsg>) {
    let wait = match shared.upgrade() {
        Some(engine) => engine
            .store
            .cluster()
            .expect("a shared store")
            .inbox_wait(INBOX_POLL),
        None => return,
    };
    loop {
        wait().await;
        let Some(engine) = alive(&shared, &supervisor) else {
            return;
        };
        let commands = match blocking(engine, |c| c.inbox()).await {
            Ok(commands) => commands,
            Err(e) => {
                tracing::warn!("cannot read the inbox: {e}");
                continue;
            }
        };
        for (id, run, command) in commands {
            let reply = match serde_json::from_value::<Input>(command) {
                Ok(input) => match deliver(&supervisor, run, input).await {
                    Ok(reply) => reply,
                    Err(_) => return,
                },
                Err(e) => Err(Refusal::Failed(format!("an unreadable command: {e}"))),
            };
            let reply = Refusal::to_json(&reply);
            let Some(engine) = shared.upgrade() else {
                return;
            };
            if let Err(e) = blocking(engine, move |c| c.answer(id, reply)).await {
                tracing::warn!("cannot answer command {id}: {e}");
            }
        }
    }
}

/// Delivers `input` to `run` through this daemon's supervisor, as a command sent here is;
/// an error when the supervisor has stopped.
pub(crate) async fn deliver(
    supervisor: &ActorRef<SupervisorMsg>,
    run: String,
    input: Input,
) -> crate::Result<CommandReply> {
    let call = supervisor
        .call(
            |reply| SupervisorMsg::Deliver {
                run: run.clone(),
                input,
                reply: Some(reply),
            },
            None,
        )
        .await
        .map_err(|_| crate::Error::ShuttingDown)?;
    Ok(match call {
        CallResult::Success(answer) => answer,
        // The run's actor crashed before answering; it restarts from the store.
        CallResult::Timeout | CallResult::SenderError => Err(Refusal::Failed(format!(
            "run {run}: its actor stopped before answering; check `baton show {run}` and try again"
        ))),
    })
}
