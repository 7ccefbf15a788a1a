//! Driving runs from a command: which backend (a daemon for the data dir, or the store opened
//! here), sending a command, and following a run on the terminal until it settles.

use std::path::Path;
use std::time::Duration;

use baton_actors::{Engine, EventKind};
use clap::Args;

use crate::backend::{Backend, Client, Command, Failure};
use crate::commands::print::print_json;
use crate::config::Config;
use crate::view;

/// Opens the store in this process, for commands that run without a daemon.
pub(crate) async fn open_local(config: &Config, dir: &Path) -> Result<Engine, Failure> {
    // Nothing but polling wakes a run this process drives: no listener shares the registry.
    open_local_with(config, dir, &crate::ci::wake::CiWakes::new()).await
}

/// [`open_local`], its runs woken through `ci_wakes` (the daemon's, which its listeners share).
pub(crate) async fn open_local_with(
    config: &Config,
    dir: &Path,
    ci_wakes: &crate::ci::wake::CiWakes,
) -> Result<Engine, Failure> {
    let engine = Engine::open(
        dir,
        config.engine().map_err(|e| Failure::usage(e.to_string()))?,
    )
    .await?;
    crate::workflows::install(&engine, config, dir, ci_wakes).await?;
    Ok(engine)
}

/// The configured forge, for a command that talks to it; a missing credential or a bad address
/// is a usage error that says so.
pub(crate) fn open_forge(
    config: &Config,
    dir: &Path,
) -> Result<std::sync::Arc<dyn crate::forge::Forge>, Failure> {
    crate::forge::open(&config.forge_settings(dir)).map_err(|e| Failure::usage(e.to_string()))
}

/// How a run command ends: following the run, or not; JSON or not.
#[derive(Args, Debug)]
pub struct Follow {
    /// Return at once instead of following the run (when no daemon drives it, it stays
    /// where it is until `baton resume`).
    #[arg(long)]
    pub detach: bool,
    /// Print the run record as JSON on stdout afterwards.
    #[arg(long)]
    pub json: bool,
}

/// A running daemon for `dir`, or the store opened here.
pub(crate) async fn backend(config: &Config, dir: &Path) -> Result<Backend, Failure> {
    if let Some(client) = Client::discover(dir).await {
        return Ok(Backend::Remote(client));
    }
    Ok(Backend::Local(open_local(config, dir).await?))
}

/// The backend for a command that drives runs. With no daemon this process runs them, so it
/// also reports them: the run's progress comment on the forge (when the forge can be built;
/// a forge step says why when it cannot) and the terminal display.
pub(crate) async fn driving_backend(config: &Config, dir: &Path) -> Result<Backend, Failure> {
    let backend = backend(config, dir).await?;
    if let Backend::Local(engine) = &backend {
        let forge = crate::forge::open(&config.forge_settings(dir)).ok();
        crate::notify::start(engine, config, forge, true).await?;
    }
    Ok(backend)
}

/// Sends `cmd` to `run`, then follows the run here unless detached or a daemon drives it.
pub(crate) async fn control(
    config: &Config,
    dir: &Path,
    run: &str,
    cmd: Command,
    follow_opts: Follow,
) -> Result<i32, Failure> {
    let backend = driving_backend(config, dir).await?;
    let verb = cmd.verb();
    let seen = backend
        .events(run, 0, Duration::ZERO)
        .await?
        .last()
        .map_or(0, |e| e.seq);
    backend.command(run, cmd).await?;
    eprintln!("{verb}: done");
    finish(&backend, run, seen, follow_opts.detach, follow_opts.json).await
}

/// After a start or a command: follow the run here unless detached or a daemon drives it.
pub(crate) async fn finish(
    backend: &Backend,
    run: &str,
    since: u64,
    detach: bool,
    json: bool,
) -> Result<i32, Failure> {
    let code = if detach {
        0
    } else {
        follow(backend, run, since).await?
    };
    if json {
        print_json(&backend.run(run).await?);
    }
    if let Backend::Local(engine) = backend {
        // Delivers the last progress reports (the comment, the terminal) first.
        engine.shutdown().await?;
    }
    Ok(code)
}

/// What a person can do about a run that waits, in commands the engine accepts for that wait.
fn waiting_hint(run: &str, w: &crate::view::WaitView) -> String {
    match w.kind.as_str() {
        "intervention" => format!(
            "run {run} stopped at step `{}` and waits for a person: `baton retry {run}`, `baton skip {run}`, `baton abort {run}` or `baton rollback {run} soft`",
            w.step
        ),
        "approval" => format!(
            "run {run} waits for approval at step `{}`: `baton approve {run}` or `baton reject {run}`",
            w.step
        ),
        _ => format!(
            "run {run} is waiting for {} `{}`; send it with `baton signal {run} {}`",
            w.kind, w.name, w.name
        ),
    }
}

/// Prints progress on stderr until the run completes, fails or waits (a retry's backoff
/// is waited out). Returns the exit code for its status.
pub(crate) async fn follow(backend: &Backend, run: &str, mut since: u64) -> Result<i32, Failure> {
    let mut check = true;
    loop {
        if check {
            // The whole record only when an event may have settled the run.
            let view = backend.run(run).await?;
            let retrying = view.waiting_for.as_ref().is_some_and(|w| w.kind == "retry");
            match view.status.as_str() {
                // Completed without its change verified (checks failing or skipped): exit 1,
                // as a failure reads. `no_checks` is no failure of the change: exit 0.
                "completed"
                    if view.state.get("outcome").and_then(|o| o.as_str()) == Some("unverified") =>
                {
                    if let Backend::Local(engine) = backend {
                        engine.flush_notifier(Duration::from_secs(2)).await;
                    }
                    let result = view
                        .state
                        .get("result")
                        .and_then(|r| r.as_str())
                        .unwrap_or("its change is not verified");
                    eprintln!("run {run} completed unverified: {result}");
                    return Ok(1);
                }
                "completed" => return Ok(0),
                "waiting" if !retrying => {
                    if let Backend::Local(engine) = backend {
                        engine.flush_notifier(Duration::from_secs(2)).await;
                    }
                    let w = view.waiting_for.as_ref().expect("waiting");
                    // What an approval approves: the plan a run keeps in `state.plan`
                    // (issue_to_pr's plan step), shown before how to approve it.
                    let plan = view.state.get("plan").and_then(|p| p.as_str());
                    if let Some(plan) = plan.filter(|_| w.name == "approve") {
                        eprintln!("\n{}\n", plan.trim_end());
                    }
                    eprintln!("{}", waiting_hint(run, w));
                    return Ok(0);
                }
                "failed" | "cancelled" => return Ok(1),
                _ => {}
            }
        }
        let events = backend.events(run, since, Duration::from_secs(1)).await?;
        check = events.is_empty();
        for e in &events {
            since = e.seq;
            check |= matches!(
                e.kind,
                EventKind::RunCompleted
                    | EventKind::RunFailed { .. }
                    | EventKind::RunCancelled { .. }
                    | EventKind::WaitStarted { .. }
            );
            // Here, the notifier's terminal display shows the steps; a daemon's run is shown
            // from its events. How the run ended is said the same way in both.
            let ended = matches!(
                e.kind,
                EventKind::RunCompleted
                    | EventKind::RunFailed { .. }
                    | EventKind::RunCancelled { .. }
            );
            if ended {
                if let Backend::Local(engine) = backend {
                    // The display's last steps first, then how the run ended.
                    engine.flush_notifier(Duration::from_secs(2)).await;
                }
            }
            if matches!(backend, Backend::Remote(_)) || ended {
                if let Some(line) = view::event_line(e) {
                    eprintln!("{line}");
                }
            }
        }
    }
}
