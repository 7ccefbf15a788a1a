//! The command line. Each command parses its arguments, picks a [`Backend`] (a running
//! daemon for this data dir, or the store opened here) and prints. Exit codes: 0 done or
//! waiting, 1 the run or check failed, 2 bad usage or bad input.

use std::path::{Path, PathBuf};
use std::time::Duration;

use baton_actors::{Definition, RollbackMode, RollbackRequest, RunStatus};
use clap::{Args, Parser, Subcommand};
use serde_json::{Map, Value};

use crate::backend::{Backend, Command, Failure, StartRequest};
use crate::commands::agent::{agent_run, AgentRunArgs};
use crate::commands::follow::{backend, control, driving_backend, finish, follow, Follow};
use crate::commands::print::{
    print_backup, print_json, print_run, print_spending, print_transcripts,
};
use crate::commands::verify::verify;
use crate::config::Config;
use crate::view;
use crate::workflows::files::{read_definition, workflow_files};

/// baton: durable workflows, from a GitHub issue to a tested pull request.
#[derive(Parser, Debug)]
#[command(name = "baton", version, about)]
pub struct Cli {
    /// The data directory (store, workspaces, daemon files).
    #[arg(long, global = true, env = "BATON_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// The configuration file.
    #[arg(long, global = true, env = "BATON_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// The format of baton's own log on stderr (levels from RUST_LOG).
    #[arg(
        long,
        global = true,
        env = "BATON_LOG_FORMAT",
        value_enum,
        default_value_t
    )]
    log_format: crate::logging::LogFormat,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Start a run and follow it until it completes, fails or waits.
    Run {
        /// A workflow file, or the id of a workflow in `workflow_dirs` or the store.
        workflow: String,
        /// Input as key=value (the value is JSON if it parses as JSON, else a string).
        #[arg(long = "input", short = 'i', value_name = "KEY=VALUE")]
        input: Vec<String>,
        /// Print the run record as JSON on stdout.
        #[arg(long)]
        json: bool,
        /// Start it and return at once.
        #[arg(long)]
        detach: bool,
    },
    /// List runs, newest first.
    Runs {
        /// Only runs with this status.
        #[arg(long)]
        status: Option<RunStatus>,
        /// Only runs of this workflow.
        #[arg(long)]
        workflow: Option<String>,
        /// JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Show a run: its steps, state, changes; with --events, its event log.
    Show {
        /// The run id.
        run: String,
        /// Also list its events.
        #[arg(long)]
        events: bool,
        /// Print the agent transcripts in its step outputs instead (secrets redacted).
        #[arg(long, conflicts_with_all = ["events", "json"])]
        transcript: bool,
        /// JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Send a named signal (kept until the run reaches a wait for it).
    Signal {
        /// The run id.
        run: String,
        /// The signal name.
        name: String,
        /// A JSON payload.
        #[arg(long)]
        data: Option<String>,
        #[command(flatten)]
        follow: Follow,
    },
    /// Approve the wait a run is parked at.
    Approve(RunArg),
    /// Reject the wait a run is parked at (the wait step fails).
    Reject(RunArg),
    /// Run the failed step again.
    Retry(RunArg),
    /// Skip the failed or waiting step.
    Skip(RunArg),
    /// Cancel a run (compensations per its workflow's rollback_on_abort).
    Cancel(RunArg),
    /// Abort a run (it fails), undoing per --rollback.
    Abort {
        #[command(flatten)]
        run: RunArg,
        /// What to undo: none, soft or hard (default: the workflow's rollback_on_abort).
        #[arg(long)]
        rollback: Option<RollbackMode>,
    },
    /// Roll a run back.
    Rollback {
        #[command(flatten)]
        run: RunArg,
        /// Stop and keep everything.
        #[arg(long, conflicts_with_all = ["hard", "steps"])]
        soft: bool,
        /// Undo every completed step, newest first.
        #[arg(long, conflicts_with = "steps")]
        hard: bool,
        /// Undo the last N completed steps and go on from the first of them.
        #[arg(long, value_name = "N")]
        steps: Option<u32>,
    },
    /// Drive unfinished runs forward in the foreground.
    Resume {
        /// Only this run.
        run: Option<String>,
    },
    /// List known workflows.
    Workflows {
        /// JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Check a workflow file without running it.
    Validate {
        /// The file.
        file: PathBuf,
    },
    /// Run the daemon: JSON API, events, resumes unfinished runs.
    Serve {
        /// Address to listen on (default from config: 127.0.0.1:8377).
        #[arg(long)]
        bind: Option<String>,
    },
    /// Turn an issue into a tested pull request: starts the built-in `issue_to_pr` workflow
    /// and follows it (exit 0 completed or waiting, 1 failed, 2 bad input).
    IssueToPr {
        /// The issue, OWNER/NAME#N.
        #[arg(value_name = "OWNER/NAME#N")]
        issue: String,
        /// Print the run record as JSON on stdout (its state carries `branch` and `pr`).
        #[arg(long)]
        json: bool,
        /// Start it and return at once.
        #[arg(long)]
        detach: bool,
        /// The agent backend for this run (default: [agent] backend).
        #[arg(long, value_parser = ["openai", "anthropic", "command", "patch"])]
        agent: Option<String>,
        /// With baton's pull request for this issue still open, revise it (the issue as the
        /// instructions) instead of refusing. A run in flight is refused either way.
        #[arg(long)]
        force: bool,
    },
    /// Remove what `[retention]` no longer keeps: old workspaces (never a waiting run's), old
    /// finished runs with their events and journals, unused mirrors. Prints what it removed
    /// and the bytes freed (the daemon does this daily).
    Gc {
        /// Print what would be removed; remove nothing.
        #[arg(long)]
        dry_run: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// What the agents spent today per repository and this month (UTC), against
    /// `[limits] daily_cost_usd` and `monthly_cost_usd` (`baton runs` ends with it too).
    Spending {
        /// JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Write a consistent copy of the store to FILE, also while the daemon runs (it writes
    /// the file then; commits wait while the copy is taken).
    Backup {
        /// The backup file to write (replaced if it exists).
        file: PathBuf,
        /// Print what was copied as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Read a backup (`baton backup`) into an empty data dir (exit 2 if it is not empty).
    Restore {
        /// The backup file.
        file: PathBuf,
        /// Print what was restored as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Revise a pull request on review: the agent works on its review comments and the
    /// instructions, a verified commit goes on its branch (the built-in `revise`; exit 0
    /// completed, 1 failed, 2 bad input or `[workflows.issue_to_pr] max_revisions` reached).
    Revise {
        /// The pull request, OWNER/NAME#N.
        #[arg(value_name = "OWNER/NAME#N")]
        pr: String,
        /// What to change besides the review's comments: text, or @FILE.
        #[arg(long, value_name = "TEXT|@FILE")]
        instructions: Option<String>,
        /// Print the run record as JSON on stdout.
        #[arg(long)]
        json: bool,
        /// Start it and return at once.
        #[arg(long)]
        detach: bool,
        /// The agent backend for this run (default: [agent] backend).
        #[arg(long, value_parser = ["openai", "anthropic", "command", "patch"])]
        agent: Option<String>,
    },
    /// Review a pull request: runs its head's checks and posts one review with the measured
    /// results (the built-in `pr_review`; exit 0 completed, 1 failed, 2 bad input).
    PrReview {
        /// The pull request, OWNER/NAME#N.
        #[arg(value_name = "OWNER/NAME#N")]
        pr: String,
        /// Print the run record as JSON on stdout (its state carries `review`).
        #[arg(long)]
        json: bool,
        /// Start it and return at once.
        #[arg(long)]
        detach: bool,
    },
    /// Triage a bug report: priority and area labels from measured signals, a sandboxed
    /// reproduction attempt, one comment (the built-in `bug_triage`; exit 0 completed, 1
    /// failed, 2 bad input).
    Triage {
        /// The issue, OWNER/NAME#N.
        #[arg(value_name = "OWNER/NAME#N")]
        issue: String,
        /// Print the run record as JSON on stdout (its state carries `triage`).
        #[arg(long)]
        json: bool,
        /// Start it and return at once.
        #[arg(long)]
        detach: bool,
    },
    /// Write the release notes of a tag from the commits since the previous one and put them on
    /// its release (the built-in `release_notes`; exit 0 completed, 1 failed, 2 bad input).
    ReleaseNotes {
        /// The repository, OWNER/NAME.
        #[arg(value_name = "OWNER/NAME")]
        repo: String,
        /// The older tag (default: the previous tag in --to's history).
        #[arg(long, value_name = "TAG")]
        from: Option<String>,
        /// The tag the notes are for.
        #[arg(long, value_name = "TAG")]
        to: String,
        /// Only print the notes; leave the release alone.
        #[arg(long)]
        dry_run: bool,
        /// Print the run record as JSON on stdout (its state carries `notes`).
        #[arg(long)]
        json: bool,
        /// Start it and return at once.
        #[arg(long)]
        detach: bool,
    },
    /// The whole job offline: a generated project with a bug, a local forge, an issue carrying
    /// the fix, and `issue_to_pr` turning it into a tested pull request.
    Demo {
        /// Keep the demo's files (forge, workspace, store) afterwards.
        #[arg(long)]
        keep: bool,
        /// The agent backend (default: patch, which applies the issue's diff).
        #[arg(long, value_parser = ["openai", "anthropic", "command", "patch"])]
        agent: Option<String>,
    },
    /// Run a repository's tests, lint and type checks and report measured results
    /// (exit 0 when no critical check failed, 1 when one did, 2 on bad input).
    Verify {
        /// The repository (a git work tree).
        path: PathBuf,
        /// Print the report as JSON on stdout.
        #[arg(long)]
        json: bool,
        /// Stop at the first failing critical check.
        #[arg(long, conflicts_with = "continue_on_error")]
        fail_fast: bool,
        /// Run every check even after a critical one failed.
        #[arg(long)]
        continue_on_error: bool,
        /// Run only these kinds: tests, lint, types, custom (comma separated).
        #[arg(long, value_delimiter = ',', value_name = "KINDS")]
        only: Vec<crate::verify::Kind>,
        /// Run the checks in the sandbox (bubblewrap: no network, only the work tree
        /// writable, no secrets), after fetching dependencies; an error where it does not work.
        #[arg(long)]
        sandbox: bool,
        /// With `--sandbox`: keep the host's network for the checks (no fetch phase).
        #[arg(long, requires = "sandbox")]
        network: bool,
    },
    /// The coding agent on its own, outside any run.
    #[command(subcommand)]
    Agent(AgentCmd),
    /// The configured forge: repositories, issues, pull requests, releases.
    #[command(subcommand)]
    Forge(crate::commands::forge::ForgeCmd),
    /// GitHub: create the GitHub App baton acts as, list its installations.
    #[command(subcommand)]
    Github(crate::commands::github::GithubCmd),
    /// Benchmark the engine, the stores, the UI, the API and the sandbox
    /// (results: docs/PERFORMANCE.md): runs `baton-bench`, built beside baton.
    #[command(disable_help_flag = true)]
    Bench {
        /// `baton-bench`'s arguments (`baton bench --help` lists them).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
}

#[derive(Subcommand, Debug)]
enum AgentCmd {
    /// Run the agent on a local repository and print what changed. Exit 0 finished, 1
    /// stopped by a budget or failed, 2 bad input. Changes are not journaled.
    Run(AgentRunArgs),
}

#[derive(Args, Debug)]
struct RunArg {
    /// The run id.
    run: String,
    #[command(flatten)]
    follow: Follow,
}

/// Entry point: returns the process exit code.
pub fn main() -> i32 {
    // Before anything reads the environment or starts a thread (see `secrets`).
    let warnings = match crate::secrets::init() {
        Ok(warnings) => warnings,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return code;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return 1;
        }
    };
    // Read once: the traces' settings are needed before the subscriber, the rest by `run`.
    let config = Config::load(cli.config.as_deref()).map_err(|e| Failure::usage(e.to_string()));
    let (exporter, tracer) = match traces(config.as_ref().ok(), runtime.handle()) {
        Ok(Some((exporter, tracer))) => (Some(exporter), Some(tracer)),
        Ok(None) => (None, None),
        // The daemon refuses to start with traces it cannot send; a one-off command (`baton
        // show` where OTEL_EXPORTER_OTLP_ENDPOINT is set for everything) says so and goes on.
        Err(e) if matches!(cli.command, Cmd::Serve { .. }) => {
            eprintln!("error: {e}");
            return 2;
        }
        Err(e) => {
            eprintln!("warning: no traces: {e}");
            (None, None)
        }
    };
    crate::logging::init(cli.log_format, tracer);
    for warning in warnings {
        tracing::warn!("{warning}");
    }
    let code = match runtime.block_on(run(cli, config)) {
        Ok(code) => code,
        Err(f) => {
            eprintln!("error: {}", f.message);
            f.exit_code()
        }
    };
    // Outside the runtime's workers, which the last export runs on.
    if let Some(exporter) = exporter {
        exporter.shutdown();
    }
    code
}

/// The trace exporter, when `[telemetry]` or the `OTEL_` variables name a collector. A
/// configuration that cannot be read (`None`) is left for `run` to report.
fn traces(
    config: Option<&Config>,
    runtime: &tokio::runtime::Handle,
) -> Result<Option<(crate::telemetry::Exporter, opentelemetry_sdk::trace::Tracer)>, String> {
    let settings = config.map(|c| c.telemetry.clone()).unwrap_or_default();
    let Some((endpoint, service)) = settings.resolve()? else {
        return Ok(None);
    };
    crate::telemetry::exporter(&endpoint, &service, runtime.clone()).map(Some)
}

async fn run(cli: Cli, config: Result<Config, Failure>) -> Result<i32, Failure> {
    let config = config?;
    let dir = config.data_dir(cli.data_dir.as_deref());
    match cli.command {
        Cmd::Validate { file } => {
            let def = read_definition(&file).map_err(|e| Failure::usage(e.to_string()))?;
            let wf = baton_actors::Workflow::new(
                def,
                &file.display().to_string(),
                &crate::workflows::known,
            )?;
            for warning in wf.warnings() {
                eprintln!("warning: {}: {warning}", file.display());
            }
            println!(
                "{}: ok (workflow `{}`, {} steps)",
                file.display(),
                wf.id(),
                wf.steps().len()
            );
            Ok(0)
        }
        Cmd::Run {
            workflow,
            input,
            json,
            detach,
        } => {
            let input = parse_inputs(&input)?;
            let (definition, origin, id) = resolve_workflow(&config, &workflow)?;
            if let Some(def) = &definition {
                // Validate before anything is written, whichever backend runs it.
                let wf = baton_actors::Workflow::new(
                    def.clone(),
                    origin.as_deref().unwrap_or(&workflow),
                    &crate::workflows::known,
                )?;
                wf.resolve_input(input.clone())?;
            }
            let backend = driving_backend(&config, &dir).await?;
            let run = backend
                .start(StartRequest {
                    workflow: id,
                    definition,
                    origin,
                    input,
                })
                .await?;
            eprintln!("run {run} started");
            finish(&backend, &run, 0, detach, json).await
        }
        Cmd::Runs {
            status,
            workflow,
            json,
        } => {
            let backend = backend(&config, &dir).await?;
            let runs = backend.runs(status, workflow).await?;
            if json {
                print_json(&runs);
            } else if runs.is_empty() {
                eprintln!("no runs");
            } else {
                for r in &runs {
                    println!("{}", r.line());
                }
                print_spending(&backend.spending(&config.limits).await?);
            }
            Ok(0)
        }
        Cmd::Spending { json } => {
            let spent = backend(&config, &dir)
                .await?
                .spending(&config.limits)
                .await?;
            if json {
                print_json(&spent);
            } else if spent.month_total == 0.0
                && spent.daily_cap.is_none()
                && spent.monthly_cap.is_none()
            {
                println!("nothing spent this month; no caps set ([limits] daily_cost_usd, monthly_cost_usd)");
            } else {
                print_spending(&spent);
            }
            Ok(0)
        }
        Cmd::Show {
            run,
            transcript: true,
            ..
        } => {
            let backend = backend(&config, &dir).await?;
            print_transcripts(&backend.run(&run).await?)
        }
        Cmd::Show {
            run, events, json, ..
        } => {
            let backend = backend(&config, &dir).await?;
            let view = backend.run(&run).await?;
            let evs = if events {
                Some(backend.events(&run, 0, Duration::ZERO).await?)
            } else {
                None
            };
            if json {
                let mut value = serde_json::to_value(&view).unwrap_or_default();
                if let Some(evs) = evs {
                    value["events"] = serde_json::to_value(evs).unwrap_or_default();
                }
                print_json(&value);
            } else {
                print_run(&view);
                for e in evs.unwrap_or_default() {
                    if let Some(line) = view::event_line(&e) {
                        println!("  #{:<4} {}  {}", e.seq, view::rfc3339(e.at), line);
                    }
                }
            }
            Ok(0)
        }
        Cmd::Signal {
            run,
            name,
            data,
            follow,
        } => {
            let data = match data {
                Some(text) => serde_json::from_str(&text)
                    .map_err(|e| Failure::usage(format!("--data is not JSON: {e}")))?,
                None => Value::Null,
            };
            control(&config, &dir, &run, Command::Signal { name, data }, follow).await
        }
        Cmd::Approve(a) => control(&config, &dir, &a.run, Command::Approve, a.follow).await,
        Cmd::Reject(a) => control(&config, &dir, &a.run, Command::Reject, a.follow).await,
        Cmd::Retry(a) => control(&config, &dir, &a.run, Command::Retry, a.follow).await,
        Cmd::Skip(a) => control(&config, &dir, &a.run, Command::Skip, a.follow).await,
        Cmd::Cancel(a) => control(&config, &dir, &a.run, Command::Cancel, a.follow).await,
        Cmd::Abort { run, rollback } => {
            control(
                &config,
                &dir,
                &run.run,
                Command::Abort { mode: rollback },
                run.follow,
            )
            .await
        }
        Cmd::Rollback {
            run,
            soft,
            hard,
            steps,
        } => {
            let cmd = match (soft, hard, steps) {
                (true, _, _) => Command::Rollback(RollbackRequest::Soft),
                (_, true, _) => Command::Rollback(RollbackRequest::Hard),
                (_, _, Some(n)) => Command::Rollback(RollbackRequest::Steps(n)),
                _ => {
                    return Err(Failure::usage(
                        "say how much to roll back: --soft, --hard or --steps N",
                    ))
                }
            };
            control(&config, &dir, &run.run, cmd, run.follow).await
        }
        Cmd::Resume { run } => {
            let backend = driving_backend(&config, &dir).await?;
            let report = backend.resume(run.as_deref()).await?;
            eprintln!(
                "resumed {} run(s); {} waiting; {} timer(s) armed{}",
                report.resumed,
                report.waiting,
                report.timers,
                if report.skipped > 0 {
                    format!("; {} skipped (see log)", report.skipped)
                } else {
                    String::new()
                }
            );
            if let Backend::Local(engine) = &backend {
                // In the foreground: drive them until none is running.
                let runs = match &run {
                    Some(r) => vec![r.clone()],
                    // Running ones, and ones waiting out a retry's backoff.
                    None => engine
                        .runs(&baton_actors::RunFilter::default())?
                        .into_iter()
                        .filter(|r| {
                            r.status == RunStatus::Running
                                || r.waiting_for
                                    .as_ref()
                                    .is_some_and(|w| w.kind == baton_actors::WaitKind::Retry)
                        })
                        .map(|r| r.id)
                        .collect(),
                };
                let mut failed = false;
                for r in runs {
                    let code = follow(&backend, &r, 0).await?;
                    failed |= code != 0;
                }
                engine.shutdown().await?;
                return Ok(i32::from(failed));
            }
            Ok(0)
        }
        Cmd::Workflows { json } => {
            let mut list = match backend(&config, &dir).await {
                Ok(b) => b.workflows().await?,
                Err(_) => Vec::new(),
            };
            for (def, path) in workflow_files(&config.workflow_dirs) {
                if !list.iter().any(|w| w.id == def.id) {
                    if let Ok(wf) = baton_actors::Workflow::new(
                        def,
                        &path.display().to_string(),
                        &crate::workflows::known,
                    ) {
                        let mut shown = view::WorkflowView::new(&wf);
                        shown.registered = format!("file {}, not registered yet", path.display());
                        list.push(shown);
                    }
                }
            }
            list.sort_by(|a, b| a.id.cmp(&b.id));
            if json {
                print_json(&list);
            } else {
                for w in &list {
                    println!(
                        "{:<24} v{:<3} {:>2} steps  {}  [{}]",
                        w.id,
                        w.version,
                        w.steps.len(),
                        w.description,
                        w.registered
                    );
                }
            }
            Ok(0)
        }
        Cmd::Serve { bind } => {
            crate::workflows::files::refuse_built_in_ids(&config.workflow_dirs)
                .map_err(|e| Failure::usage(e.to_string()))?;
            // One registry: the webhook and `POST /api/ci/...` wake the runs' CI waits.
            let ci_wakes = crate::ci::wake::CiWakes::new();
            let engine = crate::commands::follow::open_local_with(&config, &dir, &ci_wakes).await?;
            let bind = bind.unwrap_or_else(|| config.server.bind.clone());
            let webhook = crate::daemon::webhook_setup(&config, &dir, &ci_wakes)?;
            // Progress reports (issue comments, the log); before serve_with resumes runs.
            let forge = crate::commands::follow::open_forge(&config, &dir)?;
            // The Telegram bot when a token is set: its sinks join the notifier's.
            let telegram = match crate::telegram::Settings::from_env(&config)? {
                Some(settings) => Some(crate::telegram::Telegram::new(settings, engine.clone())?),
                None => None,
            };
            let mut sinks = crate::notify::sinks(&config, Some(forge), false);
            if let Some(telegram) = &telegram {
                sinks.extend(telegram.sinks());
            }
            engine.start_notifier(sinks).await?;
            let extras = crate::daemon::Extras {
                webhook,
                server: config.server.clone(),
                routes: telegram.as_ref().and_then(|t| t.router()),
                retention: config.retention.clone(),
                limits: config.limits.clone(),
                ci_wakes,
            };
            let stop = tokio_util::sync::CancellationToken::new();
            let bot = telegram.map(|t| tokio::spawn(t.run(stop.clone())));
            let served = crate::daemon::serve_with(engine, &bind, extras, shutdown_signal()).await;
            stop.cancel();
            if let Some(bot) = bot {
                let _ = bot.await;
            }
            served?;
            Ok(0)
        }
        Cmd::Verify {
            path,
            json,
            fail_fast,
            continue_on_error,
            only,
            sandbox,
            network,
        } => {
            // The config's `[sandbox]` limits, and its data dir and file kept out.
            config.apply_sandbox(&dir);
            let run_in = if sandbox {
                crate::verify::RunIn::Sandbox { network }
            } else {
                crate::verify::RunIn::Host
            };
            verify(&path, json, fail_fast, continue_on_error, only, run_in).await
        }
        Cmd::IssueToPr {
            issue,
            json,
            detach,
            agent,
            force,
        } => {
            let args = crate::commands::issue_to_pr::Args {
                target: issue,
                json,
                detach,
                agent,
                force,
            };
            crate::commands::issue_to_pr::run(&config, &dir, args).await
        }
        Cmd::Gc { dry_run, json } => {
            let backend = driving_backend(&config, &dir).await?;
            let report = backend.gc(&config.retention, dry_run).await?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).unwrap_or_default()
                );
            } else {
                let verb = if dry_run { "would remove" } else { "removed" };
                for r in &report.removed {
                    if r.kind == "run" {
                        println!("{verb} run {}", r.name);
                    } else {
                        let size = crate::gc::human_bytes(r.bytes);
                        println!("{verb} {} {} ({size})", r.kind, r.name);
                    }
                }
                let freed = crate::gc::human_bytes(report.bytes_freed);
                let (items, bytes) = if dry_run {
                    ("would be removed", "would be freed")
                } else {
                    ("removed", "freed")
                };
                println!("{} item(s) {items}; {freed} {bytes}", report.removed.len());
            }
            Ok(0)
        }
        Cmd::Backup { file, json } => {
            let file = std::path::absolute(&file)
                .map_err(|e| Failure::usage(format!("{}: {e}", file.display())))?;
            if !dir.join("db").exists() {
                return Err(Failure::usage(format!(
                    "{} holds no store to back up",
                    dir.display()
                )));
            }
            let stats = backend(&config, &dir).await?.backup(&file).await?;
            print_backup(&stats, "backed up", &file, json);
            Ok(0)
        }
        Cmd::Restore { file, json } => {
            let has_entries = std::fs::read_dir(&dir).is_ok_and(|mut d| d.next().is_some());
            if has_entries {
                return Err(Failure::usage(format!(
                    "data dir {} is not empty; restore into an empty or new one",
                    dir.display()
                )));
            }
            let stats = baton_actors::store::SledStore::restore(&dir, &file)?;
            print_backup(&stats, "restored", &file, json);
            Ok(0)
        }
        Cmd::Revise {
            pr,
            instructions,
            json,
            detach,
            agent,
        } => {
            let args = crate::commands::revise::Args {
                target: pr,
                instructions,
                json,
                detach,
                agent,
            };
            crate::commands::revise::run(&config, &dir, args).await
        }
        Cmd::PrReview { pr, json, detach } => {
            let follow = crate::commands::builtins::Follow { json, detach };
            crate::commands::builtins::pr_review(&config, &dir, &pr, follow).await
        }
        Cmd::Triage {
            issue,
            json,
            detach,
        } => {
            let follow = crate::commands::builtins::Follow { json, detach };
            crate::commands::builtins::triage(&config, &dir, &issue, follow).await
        }
        Cmd::ReleaseNotes {
            repo,
            from,
            to,
            dry_run,
            json,
            detach,
        } => {
            let follow = crate::commands::builtins::Follow { json, detach };
            let args = crate::commands::builtins::ReleaseNotesArgs {
                repo,
                from,
                to,
                dry_run,
            };
            crate::commands::builtins::release_notes(&config, &dir, args, follow).await
        }
        Cmd::Demo { keep, agent } => {
            crate::commands::demo::run(&config, crate::commands::demo::Args { keep, agent }).await
        }
        Cmd::Agent(AgentCmd::Run(args)) => agent_run(&config, args).await,
        Cmd::Forge(cmd) => crate::commands::forge::run(&config, &dir, cmd).await,
        Cmd::Github(cmd) => crate::commands::github::run(&config, &dir, cmd).await,
        Cmd::Bench { args } => bench(cli.config.as_deref(), cli.data_dir.as_deref(), &args),
    }
}

/// `baton bench ARGS`: replaces this process with `baton-bench` (beside this binary, else on
/// PATH), which measures this `baton` and is given this config and data dir.
fn bench(
    config: Option<&Path>,
    data_dir: Option<&Path>,
    args: &[std::ffi::OsString],
) -> Result<i32, Failure> {
    use std::os::unix::process::CommandExt;
    let here = std::env::current_exe()
        .map_err(|e| Failure::other(format!("cannot find the baton binary: {e}")))?;
    let beside = here.with_file_name("baton-bench");
    let program = if beside.is_file() {
        beside.into_os_string()
    } else {
        "baton-bench".into()
    };
    let mut command = std::process::Command::new(&program);
    command.args(args).env("BATON_BIN", &here);
    if let Some(config) = config {
        command.env("BATON_CONFIG", config);
    }
    if let Some(dir) = data_dir {
        command.env("BATON_DATA_DIR", dir);
    }
    let error = command.exec();
    Err(Failure::usage(format!(
        "cannot run {}: {error}; the benchmarks are their own binary, built beside baton by \
         `cargo build --release --workspace`",
        Path::new(&program).display()
    )))
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// `key=value` pairs; a value that parses as JSON keeps its type.
fn parse_inputs(pairs: &[String]) -> Result<Map<String, Value>, Failure> {
    let mut map = Map::new();
    for pair in pairs {
        let Some((key, value)) = pair.split_once('=') else {
            return Err(Failure::usage(format!(
                "--input `{pair}` needs the form KEY=VALUE"
            )));
        };
        if key.is_empty() {
            return Err(Failure::usage(format!("--input `{pair}` has an empty key")));
        }
        let value =
            serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.to_string()));
        map.insert(key.to_string(), value);
    }
    Ok(map)
}

/// A file path, or an id found in `workflow_dirs`, or an id the store knows.
fn resolve_workflow(
    config: &Config,
    arg: &str,
) -> Result<(Option<Definition>, Option<String>, String), Failure> {
    let path = Path::new(arg);
    if path.is_file() || arg.ends_with(".toml") {
        let def = read_definition(path).map_err(|e| Failure::usage(e.to_string()))?;
        let id = def.id.clone();
        return Ok((Some(def), Some(arg.to_string()), id));
    }
    for (def, path) in workflow_files(&config.workflow_dirs) {
        if def.id == arg {
            return Ok((Some(def), Some(path.display().to_string()), arg.to_string()));
        }
    }
    Ok((None, None, arg.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_keep_json_types() {
        let m = parse_inputs(&[
            "n=3".into(),
            "s=hello".into(),
            "b=true".into(),
            "eq=a=b".into(),
        ])
        .unwrap();
        assert_eq!(m["n"], Value::from(3));
        assert_eq!(m["s"], Value::from("hello"));
        assert_eq!(m["b"], Value::from(true));
        assert_eq!(m["eq"], Value::from("a=b"));
        assert!(parse_inputs(&["novalue".into()])
            .unwrap_err()
            .message
            .contains("KEY=VALUE"));
    }
}
