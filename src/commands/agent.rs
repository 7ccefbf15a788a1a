//! `baton agent run`: the coding agent alone on a repository, with an in-memory journal and no
//! engine, printing its report.

use std::path::PathBuf;

use clap::Args;

use crate::agent::{
    self, Agent, BackendKind, CancellationToken, ChangeKind, IssueInput, MemoryJournal,
    ProviderEnv, Report,
};
use crate::backend::Failure;
use crate::commands::print::print_json;
use crate::config::Config;

/// `baton agent run`'s arguments.
#[derive(Args, Debug)]
pub struct AgentRunArgs {
    /// The repository (a git work tree) to change.
    #[arg(long, value_name = "PATH")]
    pub repo: PathBuf,
    /// The task: text, or @FILE to read it from a file (the first line is the title).
    #[arg(long, value_name = "TEXT|@FILE")]
    pub task: String,
    /// Overrides agent.backend.
    #[arg(long, value_parser = ["openai", "anthropic", "command", "patch"])]
    pub backend: Option<String>,
    /// Overrides agent.model.
    #[arg(long)]
    pub model: Option<String>,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// `baton agent run`: the agent alone, with an in-memory journal and progress on stderr.
pub(crate) async fn agent_run(config: &Config, args: AgentRunArgs) -> Result<i32, Failure> {
    let mut agent_config = config.agent.clone();
    if let Some(b) = &args.backend {
        agent_config.backend = b
            .parse::<BackendKind>()
            .map_err(|e| Failure::usage(e.to_string()))?;
    }
    if let Some(m) = args.model {
        agent_config.model = m;
    }
    let text = match args.task.strip_prefix('@') {
        Some(file) => std::fs::read_to_string(file)
            .map_err(|e| Failure::usage(format!("--task @{file}: {e}")))?,
        None => args.task.clone(),
    };
    if text.trim().is_empty() {
        return Err(Failure::usage("--task is empty"));
    }
    if !args.repo.is_dir() {
        return Err(Failure::usage(format!(
            "--repo {}: not a directory",
            args.repo.display()
        )));
    }
    // One's own checkout and one's own task: trusted, so commands run where `[sandbox]` puts
    // trusted code.
    let agent = Agent::new(agent_config, &ProviderEnv::from_process())
        .map_err(|e| Failure::usage(e.to_string()))?
        .with_trust(crate::sandbox::Trust::Trusted);
    let cancel = CancellationToken::new();
    let on_ctrl_c = cancel.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            on_ctrl_c.cancel();
        }
    });
    let journal = MemoryJournal::new();
    let report = agent
        .run(
            &args.repo,
            &IssueInput::from_text(&text),
            &journal,
            &StderrProgress,
            &cancel,
        )
        .await
        .map_err(|e| match e {
            agent::Error::Config(_) | agent::Error::Patch(_) | agent::Error::Workspace { .. } => {
                Failure::usage(e.to_string())
            }
            _ => Failure::other(e.to_string()),
        })?;
    if args.json {
        print_json(&report);
    } else {
        print_report(&report);
    }
    Ok(if report.finished() { 0 } else { 1 })
}

/// Agent progress as `· message` lines on stderr.
struct StderrProgress;

impl agent::Progress for StderrProgress {
    fn update(&self, message: &str) {
        eprintln!("· {message}");
    }
}

fn print_report(report: &Report) {
    match &report.outcome {
        agent::Outcome::Finished { summary } => println!("finished: {summary}"),
        agent::Outcome::Stopped { reason } => println!("stopped: {reason}"),
    }
    if let Some(plan) = &report.plan {
        print!("{}", plan.render());
    }
    println!("changed files:");
    for c in &report.changes {
        let mark = match c.kind {
            ChangeKind::Created => "A",
            ChangeKind::Modified => "M",
            ChangeKind::Deleted => "D",
        };
        println!("  {mark} {}", c.path);
    }
    let u = &report.total_usage;
    println!(
        "usage: {} turns, {} input + {} output tokens, ${:.4}, {:.1}s",
        u.turns, u.input_tokens, u.output_tokens, u.cost_usd, u.seconds
    );
}
