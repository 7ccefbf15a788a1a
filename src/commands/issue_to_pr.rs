//! `baton issue-to-pr OWNER/NAME#N`: starts the built-in Issue → PR workflow and follows it like
//! `baton run`. Everything that can be known before a run exists is checked first, so bad input
//! is exit 2 with nothing written: the reference, the repository, the issue (it exists, it is
//! open, it is not a pull request), whether a run for it is already in flight (refused, with
//! `--force` too: `baton cancel` comes first), and whether baton's pull request for it is still
//! open (refused, naming it; `--force` revises it instead). One issue, one open pull request.

use std::path::Path;

use serde_json::{json, Map};

use crate::backend::{Backend, Failure, StartRequest};
use crate::commands::follow::{driving_backend, finish};
use crate::config::Config;
use crate::forge::Repo;
use crate::workflows::issue_to_pr;
use baton_actors::Subject;

/// What `baton issue-to-pr` was given.
pub struct Args {
    /// `OWNER/NAME#N`.
    pub target: String,
    /// Print the run record as JSON at the end.
    pub json: bool,
    /// Start it and return at once.
    pub detach: bool,
    /// The agent backend for this run.
    pub agent: Option<String>,
    /// With baton's pull request for the issue open: revise it instead of refusing.
    pub force: bool,
}

/// Runs the command; the exit code of the run (0 completed or waiting, 1 failed).
pub async fn run(config: &Config, dir: &Path, args: Args) -> Result<i32, Failure> {
    let (repo, number) = parse_target(&args.target)?;
    let forge = crate::commands::follow::open_forge(config, dir)?;
    let issue = match forge.issue(&repo, number).await {
        Ok(issue) => issue,
        Err(e) if e.is_not_found() => {
            return Err(Failure::usage(format!(
                "{repo}#{number}: no such issue ({e}); check the repository and the number"
            )))
        }
        Err(e) => return Err(Failure::other(format!("{repo}#{number}: {e}"))),
    };
    if issue.is_pull_request {
        return Err(Failure::usage(format!(
            "{repo}#{number} is a pull request, not an issue"
        )));
    }
    if issue.state != "open" {
        return Err(Failure::usage(format!(
            "issue {repo}#{number} is closed; reopen it to run baton on it"
        )));
    }
    let backend = driving_backend(config, dir).await?;
    let in_flight = in_flight(&backend, issue_to_pr::ID, &repo, number).await?;
    // One run at a time, --force or not: two would race for the issue's branch and PR.
    if let Some(run) = in_flight {
        return Err(Failure::usage(format!(
            "issue {repo}#{number} already has a run in flight: {run} (see `baton show {run}`); \
             `baton cancel {run}` first to start again"
        )));
    }
    // One open pull request per issue: a new start revises it, when asked to.
    let open = forge
        .open_pull_request_for_issue(&repo, number)
        .await
        .map_err(|e| {
            Failure::other(format!(
                "{repo}#{number}: looking for its open pull request: {e}"
            ))
        })?;
    if let Some(pr) = open {
        if !args.force {
            return Err(Failure::usage(format!(
                "issue {repo}#{number} already has baton's open pull request #{pr} ({url}): \
                 `baton revise {repo}#{pr} --instructions TEXT` revises it (--force here revises \
                 it with the issue as instructions); close it to start afresh",
                pr = pr.number,
                url = pr.url,
            )));
        }
        eprintln!(
            "issue {repo}#{number} has baton's open pull request #{}: revising it (--force)",
            pr.number
        );
        return crate::commands::revise::run_on(
            config,
            dir,
            Some(backend),
            crate::commands::revise::Args {
                target: format!("{repo}#{}", pr.number),
                instructions: Some(issue_to_pr::again_instructions(number, &issue.title)),
                json: args.json,
                detach: args.detach,
                agent: args.agent,
            },
        )
        .await;
    }
    let mut input = Map::new();
    input.insert("repo".into(), json!(repo.to_string()));
    input.insert("issue".into(), json!(number));
    if let Some(agent) = &args.agent {
        input.insert("agent".into(), json!(agent));
    }
    let run = backend
        .start(StartRequest {
            workflow: issue_to_pr::ID.to_string(),
            definition: None,
            origin: None,
            input,
        })
        .await?;
    eprintln!("run {run} started: {repo}#{number} {}", issue.title);
    finish(&backend, &run, 0, args.detach, args.json).await
}

/// `OWNER/NAME#N`.
pub fn parse_target(text: &str) -> Result<(Repo, u64), Failure> {
    let bad = || {
        Failure::usage(format!(
            "`{text}` is not an issue reference: expected OWNER/NAME#N, e.g. octo/hello#12"
        ))
    };
    let (repo, number) = text.trim().split_once('#').ok_or_else(bad)?;
    let number: u64 = number.parse().map_err(|_| bad())?;
    if number == 0 {
        return Err(bad());
    }
    let repo = Repo::parse(repo).map_err(|e| Failure::usage(format!("`{text}`: {e}")))?;
    Ok((repo, number))
}

/// The id of the run of the built-in `workflow` still in flight about `repo`'s issue or pull
/// request `number`, if any: the engine's index (locally or through the daemon), as the
/// webhook asks it. Every command that refuses a second run in flight asks this.
pub async fn in_flight(
    backend: &Backend,
    workflow: &str,
    repo: &Repo,
    number: u64,
) -> Result<Option<String>, Failure> {
    let about = Subject::issue(repo.to_string(), number);
    Ok(backend.in_flight(workflow, &about).await?.map(|r| r.id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_and_bad_ones_say_what_is_expected() {
        let (repo, n) = parse_target("octo/hello.rs#12").unwrap();
        assert_eq!((repo.to_string().as_str(), n), ("octo/hello.rs", 12));
        for bad in [
            "octo/hello",
            "octo/hello#",
            "octo/hello#x",
            "octo#1",
            "o/h#0",
            "#3",
        ] {
            let e = parse_target(bad)
                .err()
                .unwrap_or_else(|| panic!("{bad} accepted"));
            assert!(e.is_usage(), "{bad}");
        }
        assert!(parse_target("octo/hello#x")
            .err()
            .unwrap()
            .message
            .contains("OWNER/NAME#N"));
    }
}
