//! `baton revise OWNER/NAME#PR [--instructions TEXT|@FILE]`: starts the built-in `revise`
//! workflow on a pull request and follows it like `baton run`. The local forge sends no
//! webhooks, so there this is how a revision starts. Checked first, exit 2 with nothing
//! written: the reference, the pull request (it exists and is open), the instructions file,
//! a revision of the same PR already in flight, and `[workflows.issue_to_pr] max_revisions`.

use std::path::Path;

use baton_actors::RunStatus;
use serde_json::{json, Map};

use crate::backend::{Failure, StartRequest};
use crate::commands::follow::{driving_backend, finish};
use crate::commands::issue_to_pr::parse_target;
use crate::config::Config;
use crate::workflows::revise;

/// What `baton revise` was given.
pub struct Args {
    /// `OWNER/NAME#PR`.
    pub target: String,
    /// The instructions: text, or `@FILE` to read them from a file.
    pub instructions: Option<String>,
    /// Print the run record as JSON at the end.
    pub json: bool,
    /// Start it and return at once.
    pub detach: bool,
    /// The agent backend for this run.
    pub agent: Option<String>,
}

/// Runs the command; the exit code of the run (0 completed or waiting, 1 failed).
pub async fn run(config: &Config, dir: &Path, args: Args) -> Result<i32, Failure> {
    run_on(config, dir, None, args).await
}

/// [`run`] through `backend` when the caller already holds one (`baton issue-to-pr --force`
/// revises the issue's open pull request with the store it opened).
pub async fn run_on(
    config: &Config,
    dir: &Path,
    backend: Option<crate::backend::Backend>,
    args: Args,
) -> Result<i32, Failure> {
    let (repo, number) = parse_target(&args.target)?;
    let instructions = match args.instructions.as_deref() {
        None => String::new(),
        Some(text) => match text.strip_prefix('@') {
            Some(path) => std::fs::read_to_string(path)
                .map_err(|e| Failure::usage(format!("--instructions @{path}: {e}")))?,
            None => text.to_string(),
        },
    };
    let forge = crate::commands::follow::open_forge(config, dir)?;
    let pr = match forge.pull_request(&repo, number).await {
        Ok(pr) => pr,
        Err(e) if e.is_not_found() => {
            return Err(Failure::usage(format!(
                "{repo}#{number}: no such pull request ({e}); check the repository and the number"
            )))
        }
        Err(e) => return Err(Failure::other(format!("{repo}#{number}: {e}"))),
    };
    if pr.state != "open" {
        return Err(Failure::usage(format!(
            "pull request {repo}#{number} is {}; only an open pull request is revised",
            if pr.merged { "merged" } else { "closed" }
        )));
    }
    let info = forge
        .repository(&repo)
        .await
        .map_err(|e| Failure::other(format!("{repo}: {e}")))?;
    if let Some(why) = revise::not_revisable(&pr, &repo, &info.default_branch) {
        return Err(Failure::usage(format!(
            "pull request {repo}#{number}: {why}"
        )));
    }
    let backend = match backend {
        Some(backend) => backend,
        None => driving_backend(config, dir).await?,
    };
    let about = baton_actors::Subject::pull_request(repo.to_string(), number);
    if let Some(run) = backend.in_flight(revise::ID, &about).await? {
        return Err(Failure::usage(format!(
            "pull request {repo}#{number} already has a revision in flight: {} (see `baton show {}`)",
            run.id, run.id
        )));
    }
    let revisions = backend.runs_about(&about).await?;
    let done = revisions
        .iter()
        .filter(|r| r.workflow_id == revise::ID && r.status == RunStatus::Completed.as_str())
        .count();
    let max = config.workflows.issue_to_pr.max_revisions as usize;
    if done >= max {
        return Err(Failure::usage(format!(
            "pull request {repo}#{number} has had {done} revision(s), the most \
             [workflows.issue_to_pr] max_revisions = {max} allows"
        )));
    }
    let mut input = Map::new();
    input.insert("repo".into(), json!(repo.to_string()));
    input.insert("pr".into(), json!(number));
    input.insert("instructions".into(), json!(instructions));
    if let Some(agent) = &args.agent {
        input.insert("agent".into(), json!(agent));
    }
    let run = backend
        .start(StartRequest {
            workflow: revise::ID.to_string(),
            definition: None,
            origin: None,
            input,
        })
        .await?;
    eprintln!(
        "run {run} started: revision {} of {repo}#{number} {}",
        done + 1,
        pr.title
    );
    finish(&backend, &run, 0, args.detach, args.json).await
}
