//! `baton pr-review`, `baton triage` and `baton release-notes`: start the built-in workflow and
//! follow it like `baton run`. What can be known before a run exists is checked first, so bad
//! input (a malformed reference, an unknown repository, pull request, issue or tag) is exit 2
//! with nothing written.

use std::path::Path;

use serde_json::{json, Map};

use crate::backend::{Failure, StartRequest};
use crate::commands::follow::{driving_backend, finish};
use crate::commands::issue_to_pr::{in_flight, parse_target};
use crate::config::Config;
use crate::forge;
use crate::forge::Repo;
use crate::workflows::release_notes::{self, RangeError};
use crate::workflows::{bug_triage, pr_review};

/// How the run is followed.
pub struct Follow {
    /// Print the run record as JSON at the end.
    pub json: bool,
    /// Start it and return at once.
    pub detach: bool,
}

/// A forge refusal as exit 2 when the thing does not exist, else 1.
fn lookup(what: &str, e: forge::Error) -> Failure {
    if e.is_not_found() {
        Failure::usage(format!(
            "{what}: not found ({e}); check the repository and the number"
        ))
    } else {
        Failure::other(format!("{what}: {e}"))
    }
}

/// `baton pr-review OWNER/NAME#N`: the exit code of the run (0 completed, 1 failed).
pub async fn pr_review(
    config: &Config,
    dir: &Path,
    target: &str,
    follow: Follow,
) -> Result<i32, Failure> {
    let (repo, number) = parse_target(target)?;
    let forge = crate::commands::follow::open_forge(config, dir)?;
    let what = format!("pull request {repo}#{number}");
    let pr = forge
        .pull_request(&repo, number)
        .await
        .map_err(|e| lookup(&what, e))?;
    if pr.state != "open" {
        return Err(Failure::usage(format!(
            "{what} is {}; only an open pull request is reviewed",
            pr.state
        )));
    }
    let mut input = Map::new();
    input.insert("repo".into(), json!(repo.to_string()));
    input.insert("pr".into(), json!(number));
    start_one(
        (&repo, number),
        config,
        dir,
        pr_review::ID,
        input,
        &follow,
        &format!("{what}: {}", pr.title),
    )
    .await
}

/// `baton triage OWNER/NAME#N`: the exit code of the run (0 completed, 1 failed).
pub async fn triage(
    config: &Config,
    dir: &Path,
    target: &str,
    follow: Follow,
) -> Result<i32, Failure> {
    let (repo, number) = parse_target(target)?;
    let forge = crate::commands::follow::open_forge(config, dir)?;
    let what = format!("issue {repo}#{number}");
    let issue = forge
        .issue(&repo, number)
        .await
        .map_err(|e| lookup(&what, e))?;
    if issue.is_pull_request {
        return Err(Failure::usage(format!(
            "{repo}#{number} is a pull request, not an issue; `baton pr-review` reviews it"
        )));
    }
    let mut input = Map::new();
    input.insert("repo".into(), json!(repo.to_string()));
    input.insert("issue".into(), json!(number));
    start_one(
        (&repo, number),
        config,
        dir,
        bug_triage::ID,
        input,
        &follow,
        &format!("{what}: {}", issue.title),
    )
    .await
}

/// What `baton release-notes` was given.
pub struct ReleaseNotesArgs {
    /// `OWNER/NAME`.
    pub repo: String,
    /// The older tag; default the previous tag in `to`'s history.
    pub from: Option<String>,
    /// The tag the notes are for.
    pub to: String,
    /// Print the notes without touching the release.
    pub dry_run: bool,
}

/// `baton release-notes OWNER/NAME [--from TAG] --to TAG`: the exit code of the run. The notes
/// are printed on stdout (unless `--json` prints the run record, which carries them).
pub async fn release_notes(
    config: &Config,
    dir: &Path,
    args: ReleaseNotesArgs,
    follow: Follow,
) -> Result<i32, Failure> {
    let repo = Repo::parse(&args.repo)
        .map_err(|e| Failure::usage(format!("`{}`: {e} (expected OWNER/NAME)", args.repo)))?;
    let forge = crate::commands::follow::open_forge(config, dir)?;
    let from =
        match release_notes::resolve_range(forge.as_ref(), &repo, args.from.as_deref(), &args.to)
            .await
        {
            Ok((from, _)) => from,
            Err(RangeError {
                bad_input: true,
                message,
                ..
            }) => return Err(Failure::usage(message)),
            Err(e) => return Err(Failure::other(e.message)),
        };
    let mut input = Map::new();
    input.insert("repo".into(), json!(repo.to_string()));
    input.insert("tag".into(), json!(args.to));
    input.insert("from".into(), json!(from));
    input.insert("dry_run".into(), json!(args.dry_run));
    let about = if from.is_empty() {
        format!("release notes of {repo} {} (first release)", args.to)
    } else {
        format!("release notes of {repo} {from}..{}", args.to)
    };
    let backend = driving_backend(config, dir).await?;
    let run = backend
        .start(StartRequest {
            workflow: release_notes::ID.to_string(),
            definition: None,
            origin: None,
            input,
        })
        .await?;
    eprintln!("run {run} started: {about}");
    let code = finish(&backend, &run, 0, follow.detach, follow.json).await?;
    if !follow.json && !follow.detach {
        let view = backend.run(&run).await?;
        if let Some(notes) = view.state.get("notes").and_then(serde_json::Value::as_str) {
            println!("{notes}");
        }
    }
    Ok(code)
}

/// Starts `workflow` on `repo`'s issue or pull request `number`, unless a run of it for that
/// one is in flight: two would race to write the same review or comment (exit 2, naming it).
async fn start_one(
    (repo, number): (&Repo, u64),
    config: &Config,
    dir: &Path,
    workflow: &str,
    input: Map<String, serde_json::Value>,
    follow: &Follow,
    about: &str,
) -> Result<i32, Failure> {
    let backend = driving_backend(config, dir).await?;
    if let Some(run) = in_flight(&backend, workflow, repo, number).await? {
        return Err(Failure::usage(format!(
            "{repo}#{number} already has a `{workflow}` run in flight: {run} (see `baton show \
             {run}`); wait for it, or `baton cancel {run}` and try again"
        )));
    }
    let run = backend
        .start(StartRequest {
            workflow: workflow.to_string(),
            definition: None,
            origin: None,
            input,
        })
        .await?;
    eprintln!("run {run} started: {about}");
    finish(&backend, &run, 0, follow.detach, follow.json).await
}
