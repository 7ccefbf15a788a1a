//! Holding runs on a store several daemons share (PostgreSQL; see [`crate::store::Cluster`]).
//! Two tasks per engine, started with its first resume:
//!
//! - **The lease.** Renewed every third of its length. A daemon that cannot renew within two
//!   thirds of it, or learns it lapsed, stops the process at once (exit 3): other daemons are
//!   about to take its runs, and a step must not run twice. After each renewal it takes over
//!   the runs of lapsed daemons and resumes them.
//! - **The inbox.** Commands other daemons forwarded to runs this one holds, woken by `NOTIFY`
//!   and polled every second as the fallback; each is delivered as if sent here, and answered.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::rpc::CallResult;
use ractor::{ActorRef, ActorStatus};

use crate::machine::Input;
use crate::messages::{CommandReply, Refusal, Resume, SupervisorMsg};
use crate::shared::Shared;

/// How many runs of lapsed daemons one renewal takes over at most; the next takes more.
const ADOPT_BATCH: usize = 500;
/// How often the inbox is read when no notification came.
const INBOX_POLL: Duration = Duration::from_secs(1);

/// Starts the lease and inbox tasks, when the store is shared.
pub(crate) fn start(shared: &Arc<Shared>, supervisor: &ActorRef<SupervisorMsg>) {
    if shared.store.cluster().is_none() {
        return;
    }
    tokio::spawn(hold(shared.clone(), supervisor.clone()));
    tokio::spawn(inbox(shared.clone(), supervisor.clone()));
}

fn stopped(supervisor: &ActorRef<SupervisorMsg>) -> bool {
    matches!(
        supervisor.get_status(),
        ActorStatus::Stopping | ActorStatus::Stopped
    )
}

/// Runs `work` on a blocking thread: the store's calls wait for the database.
async fn blocking<T: Send + 'static>(
    shared: &Arc<Shared>,
    work: impl FnOnce(&dyn crate::store::Cluster) -> crate::Result<T> + Send + 'static,
) -> crate::Result<T> {
    let store = shared.store.clone();
    tokio::task::spawn_blocking(move || work(store.cluster().expect("a shared store")))
        .await
        .unwrap_or(Err(crate::Error::ShuttingDown))
}

async fn hold(shared: Arc<Shared>, supervisor: ActorRef<SupervisorMsg>) {
    let lease = shared.store.cluster().expect("a shared store").lease();
    let mut tick = tokio::time::interval(lease / 3);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut renewed = Instant::now();
    loop {
        tick.tick().await;
        if stopped(&supervisor) {
            return;
        }
        let attempt = Instant::now();
        match blocking(&shared, |c| c.renew()).await {
            Ok(()) => renewed = attempt,
            Err(e @ crate::Error::LeaseLost { .. }) => fail_stop(&e),
            Err(crate::Error::ShuttingDown) => return,
            Err(e) if renewed.elapsed() < lease * 2 / 3 => {
                tracing::warn!("cannot renew this daemon's lease yet: {e}");
                continue;
            }
            Err(e) => fail_stop(&e),
        }
        let adopted = match blocking(&shared, |c| c.adopt(false, ADOPT_BATCH)).await {
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

async fn inbox(shared: Arc<Shared>, supervisor: ActorRef<SupervisorMsg>) {
    loop {
        shared
            .store
            .cluster()
            .expect("a shared store")
            .inbox_wait(INBOX_POLL)
            .await;
        if stopped(&supervisor) {
            return;
        }
        let commands = match blocking(&shared, |c| c.inbox()).await {
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
            if let Err(e) = blocking(&shared, move |c| c.answer(id, reply)).await {
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
