//! Holding runs on a store several daemons share (PostgreSQL; see [`crate::store::Cluster`]).
//! Tasks per engine, from its start (a CLI running a run holds its runs too):
//!
//! - **The lease.** Renewed every sixth of its length, on a connection of its own, each try
//!   bounded by a quarter of it (so a stall of the database gets two tries or more before it
//!   matters).
//!   A watchdog thread, which needs neither the database nor the runtime and reads a monotonic
//!   clock, stops the process (exit 3) once two thirds of the lease pass without a renewal,
//!   and so does a renewal that finds the lease gone: other daemons are about to
//!   take its runs, and a step must not run twice. Before it exits it kills every process group
//!   its steps spawned (grandchildren included).
//! - **Takeover**, once the engine serves (its first resume): after a renewal, the runs of
//!   lapsed daemons are taken and resumed, in a task of their own so that a long resume never
//!   delays the next renewal. Runs it took but could not resume are let go again.
//! - **The inbox.** Commands other daemons forwarded to runs this one holds, woken by `NOTIFY`
//!   and polled every second as the fallback; each is delivered as if sent here, and answered.
//! - **Freed slots**, with `[limits] per_repo`: when another daemon frees a repository's slot
//!   (`NOTIFY`, or every third of the lease), runs waiting for one here try again.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
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

/// Milliseconds on a monotonic clock (since its first reading): a wall clock stepped by NTP or
/// a resumed VM must neither stop a healthy daemon nor blind the watchdog.
fn mono_ms() -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    BASE.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// An engine's hold on its runs; [`Lease::stop`] ends it for a clean shutdown (the renewal
/// and the watchdog stop, so leaving the cluster is not taken for a lost lease).
pub(crate) struct Lease {
    stopping: Arc<AtomicBool>,
}

impl Lease {
    pub(crate) fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }
}

/// Starts holding this engine's runs, when the store is shared (see the module docs); runs
/// of lapsed daemons are taken over once `serving` is set.
pub(crate) fn hold_lease(
    shared: &Arc<Shared>,
    supervisor: &ActorRef<SupervisorMsg>,
    serving: Arc<AtomicBool>,
) -> Option<Lease> {
    let cluster = shared.store.cluster()?;
    let lease = cluster.lease();
    let stopping = Arc::new(AtomicBool::new(false));
    let renewed = Arc::new(AtomicU64::new(mono_ms()));
    let weak = Arc::downgrade(shared);
    watchdog(
        weak.clone(),
        supervisor.clone(),
        lease,
        renewed.clone(),
        stopping.clone(),
    );
    let holding = Holding {
        shared: weak.clone(),
        supervisor: supervisor.clone(),
        serving,
        stopping: stopping.clone(),
        renewed,
        adopting: Arc::default(),
    };
    tokio::spawn(hold(holding, lease / 6));
    tokio::spawn(inbox(weak, supervisor.clone()));
    if crate::supervisor::shares_repo_slots(shared) {
        let wait = cluster.slots_wait(lease / 3);
        tokio::spawn(freed_slots(wait, supervisor.clone()));
    }
    Some(Lease { stopping })
}

struct Holding {
    shared: Weak<Shared>,
    supervisor: ActorRef<SupervisorMsg>,
    serving: Arc<AtomicBool>,
    stopping: Arc<AtomicBool>,
    /// When the last renewal that succeeded was sent ([`mono_ms`]).
    renewed: Arc<AtomicU64>,
    /// A takeover is in progress.
    adopting: Arc<AtomicBool>,
}

/// Stops the process once two thirds of the lease pass without a renewal, whatever the
/// database, the pool or the runtime are doing; ends with the engine or a clean shutdown.
fn watchdog(
    shared: Weak<Shared>,
    supervisor: ActorRef<SupervisorMsg>,
    lease: Duration,
    renewed: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) {
    let limit = (lease * 2 / 3).as_millis() as u64;
    let spawned = std::thread::Builder::new()
        .name("baton-lease".into())
        .spawn(move || loop {
            std::thread::sleep((lease / 30).max(Duration::from_millis(20)));
            // Never upgraded here: the engine's last handle must not be dropped on this thread.
            let stopped = matches!(
                supervisor.get_status(),
                ActorStatus::Stopping | ActorStatus::Stopped
            );
            if stop.load(Ordering::SeqCst) || stopped || shared.strong_count() == 0 {
                return;
            }
            let since = mono_ms().saturating_sub(renewed.load(Ordering::SeqCst));
            if since > limit {
                fail_stop(&format!(
                    "this daemon's lease was not renewed for {since} ms, past two thirds of \
                     {} ms",
                    lease.as_millis()
                ));
            }
        });
    if let Err(e) = spawned {
        fail_stop(&format!("cannot start the lease's watchdog: {e}"));
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

async fn hold(holding: Holding, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(engine) = alive(&holding.shared, &holding.supervisor) else {
            return;
        };
        if holding.stopping.load(Ordering::SeqCst) {
            return;
        }
        let attempt = mono_ms();
        match blocking(engine.clone(), |c| c.renew()).await {
            Ok(()) => holding.renewed.store(attempt, Ordering::SeqCst),
            Err(_) if holding.stopping.load(Ordering::SeqCst) => return,
            Err(e @ crate::Error::LeaseLost { .. }) => fail_stop(&e.to_string()),
            Err(crate::Error::ShuttingDown) => return,
            // The watchdog decides when it has been too long.
            Err(e) => tracing::warn!("cannot renew this daemon's lease: {e}"),
        }
        if holding.serving.load(Ordering::SeqCst) && !holding.adopting.swap(true, Ordering::SeqCst)
        {
            let (supervisor, busy) = (holding.supervisor.clone(), holding.adopting.clone());
            tokio::spawn(async move {
                take_over(engine, supervisor).await;
                busy.store(false, Ordering::SeqCst);
            });
        }
    }
}

/// Takes the runs of lapsed daemons and resumes them; lets go of them if they cannot be.
async fn take_over(engine: Arc<Shared>, supervisor: ActorRef<SupervisorMsg>) {
    let adopted = match blocking(engine.clone(), |c| c.adopt(false, ADOPT_BATCH)).await {
        Ok(ids) if ids.is_empty() => return,
        Ok(ids) => ids,
        Err(e) => {
            tracing::warn!("cannot look for runs of lapsed daemons: {e}");
            return;
        }
    };
    let ids = adopted.clone();
    let call = supervisor
        .call(
            |reply| SupervisorMsg::Resume(Resume::Adopted(ids), reply),
            None,
        )
        .await;
    match call {
        Ok(CallResult::Success(Ok(report))) => {
            tracing::info!(
                "resumed {} run(s) taken over ({} waiting, {} timer(s))",
                report.resumed,
                report.waiting,
                report.timers
            );
            return;
        }
        Ok(CallResult::Success(Err(e))) => tracing::error!("cannot resume runs taken over: {e}"),
        _ => {}
    }
    let released = blocking(engine, move |c| {
        adopted.iter().try_for_each(|run| c.release(run))
    })
    .await;
    if let Err(e) = released {
        tracing::error!("cannot let go of runs taken over: {e}");
    }
}

/// Stops the process: past its lease, this daemon may no longer hold its runs, and another
/// may be running their steps. Its steps' process groups go first.
fn fail_stop(why: &str) -> ! {
    crate::procs::kill_every_group();
    // Only stderr, and nothing that could wait on a lock or a full pipe for long: the exit is
    // what must happen.
    eprintln!("baton: {why}; stopping so that no step runs twice");
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
