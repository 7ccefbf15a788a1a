//! `baton forge …`: the configured forge (`[forge] kind`) from the command line, so someone
//! without GitHub has a complete tool: create a repository from a git repository (local forge
//! only), file, show and list issues, open, show and list pull requests, record and list the
//! checks on a pull request's head commit (a person or a test playing CI), show a release.
//!
//! Data goes to stdout (JSON with `--json`), messages to stderr. Exit codes: 0 done; 2 bad
//! usage or bad input, including a repository, issue, pull request or release that does not
//! exist; 1 forge trouble (no answer, 5xx or rate limits after the forge's retries, local I/O).

use std::io::Read;
use std::path::{Path, PathBuf};

use clap::{ArgGroup, Args, Subcommand};
use serde_json::Value;

use crate::backend::Failure;
use crate::commands::print::print_json;
use crate::config::{Config, ForgeKind};
use crate::forge::local::LocalForge;
use crate::forge::{
    self, Forge, Issue, IssueFilter, NewIssue, NewPullRequest, PullRequest, Repo, StateFilter,
};

/// `baton forge`.
#[derive(Subcommand, Debug)]
pub enum ForgeCmd {
    /// Repositories (creating one works with the local forge only).
    #[command(subcommand)]
    Repo(RepoCmd),
    /// Issues.
    #[command(subcommand)]
    Issue(IssueCmd),
    /// Pull requests.
    #[command(subcommand)]
    Pr(PrCmd),
    /// Releases.
    #[command(subcommand)]
    Release(ReleaseCmd),
    /// The checks of a pull request's head commit.
    #[command(subcommand)]
    Checks(ChecksCmd),
    /// Record a check on a commit.
    #[command(subcommand)]
    Check(CheckCmd),
}

/// `baton forge checks`.
#[derive(Subcommand, Debug)]
pub enum ChecksCmd {
    /// List the checks on a pull request's head commit (the latest of each name).
    List {
        /// OWNER/NAME#PR.
        reference: String,
        /// Print the checks as a JSON array.
        #[arg(long)]
        json: bool,
    },
}

/// `baton forge check`.
#[derive(Subcommand, Debug)]
pub enum CheckCmd {
    /// Record a finished check on a commit, as CI would; prints its id.
    Create {
        /// OWNER/NAME.
        repo: String,
        /// The commit's full sha.
        #[arg(long)]
        sha: String,
        /// The check's name.
        #[arg(long)]
        name: String,
        /// How it ended: success, failure, neutral, cancelled, skipped, timed_out,
        /// action_required or stale.
        #[arg(long, value_parser = parse_conclusion)]
        conclusion: forge::checks::Conclusion,
        /// One line saying what it found.
        #[arg(long, default_value = "")]
        title: String,
        /// Its log, kept with it (`-` for stdin).
        #[arg(long, value_name = "FILE")]
        log: Option<PathBuf>,
        /// Print the check as JSON.
        #[arg(long)]
        json: bool,
    },
}

fn parse_conclusion(text: &str) -> Result<forge::checks::Conclusion, String> {
    text.parse().map_err(|e: forge::Error| e.to_string())
}

/// `baton forge repo`.
#[derive(Subcommand, Debug)]
pub enum RepoCmd {
    /// Import a git repository as a local forge repository: its branches and tags are pushed
    /// to the forge's remote, and its current branch becomes the default branch.
    Create {
        /// OWNER/NAME.
        repo: String,
        /// The git repository to import.
        #[arg(long, value_name = "PATH")]
        from: PathBuf,
        /// Print the repository as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `baton forge issue`.
#[derive(Subcommand, Debug)]
pub enum IssueCmd {
    /// File an issue; prints its number (the issue with --json).
    Create(IssueCreate),
    /// Show an issue and its comments.
    Show {
        /// OWNER/NAME#N.
        reference: String,
        /// Print the issue with a `comments` array as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List issues (not pull requests), newest first.
    List {
        /// OWNER/NAME.
        repo: String,
        /// open, closed or all.
        #[arg(long, default_value = "open", value_parser = parse_state)]
        state: StateFilter,
        /// Only issues with this label (repeat: with every one of them).
        #[arg(long = "label", value_name = "LABEL")]
        labels: Vec<String>,
        /// Print the issues as a JSON array.
        #[arg(long)]
        json: bool,
    },
}

/// `baton forge issue create`.
#[derive(Args, Debug)]
#[command(group(ArgGroup::new("text").required(true).args(["body", "body_file"])))]
pub struct IssueCreate {
    /// OWNER/NAME.
    repo: String,
    /// The title.
    #[arg(long)]
    title: String,
    /// The body (Markdown).
    #[arg(long)]
    body: Option<String>,
    /// Read the body from a file (`-` for stdin).
    #[arg(long, value_name = "FILE")]
    body_file: Option<PathBuf>,
    /// A label to put on it (repeat for more).
    #[arg(long = "label", value_name = "LABEL")]
    labels: Vec<String>,
    /// Print the issue as JSON.
    #[arg(long)]
    json: bool,
}

/// `baton forge pr`.
#[derive(Subcommand, Debug)]
pub enum PrCmd {
    /// List pull requests, newest first.
    List {
        /// OWNER/NAME.
        repo: String,
        /// open, closed or all.
        #[arg(long, default_value = "open", value_parser = parse_state)]
        state: StateFilter,
        /// Print the pull requests as a JSON array.
        #[arg(long)]
        json: bool,
    },
    /// Show a pull request, its reviews and their line comments.
    Show {
        /// OWNER/NAME#N.
        reference: String,
        /// Print the pull request with `reviews` and `review_comments` arrays as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Review a pull request (with line comments); prints the review's id.
    Review(PrReview),
    /// Open a pull request from a branch that is on the forge; prints its number.
    Create {
        /// OWNER/NAME.
        repo: String,
        /// The branch with the changes.
        #[arg(long)]
        head: String,
        /// The branch to merge into (default: the repository's default branch).
        #[arg(long)]
        base: Option<String>,
        /// The title.
        #[arg(long)]
        title: String,
        /// The description (Markdown).
        #[arg(long, default_value = "")]
        body: String,
        /// Open it as a draft.
        #[arg(long)]
        draft: bool,
        /// Print the pull request as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `baton forge pr review`.
#[derive(Args, Debug)]
pub struct PrReview {
    /// OWNER/NAME#N.
    reference: String,
    /// The verdict: comment, approve or request-changes.
    #[arg(long, default_value = "comment", value_parser = parse_event)]
    event: forge::ReviewEvent,
    /// The review's summary (Markdown).
    #[arg(long, default_value = "")]
    body: String,
    /// A line comment `PATH:LINE:TEXT` on the new side of the diff (repeat for more).
    #[arg(long = "comment", value_name = "PATH:LINE:TEXT", value_parser = parse_line_comment)]
    comments: Vec<forge::LineComment>,
    /// Print the review as JSON.
    #[arg(long)]
    json: bool,
}

fn parse_event(text: &str) -> Result<forge::ReviewEvent, String> {
    match text {
        "comment" => Ok(forge::ReviewEvent::Comment),
        "approve" => Ok(forge::ReviewEvent::Approve),
        "request-changes" => Ok(forge::ReviewEvent::RequestChanges),
        other => Err(format!(
            "`{other}`: expected comment, approve or request-changes"
        )),
    }
}

fn parse_line_comment(text: &str) -> Result<forge::LineComment, String> {
    let bad = || format!("`{text}`: expected PATH:LINE:TEXT, e.g. src/lib.rs:12:use checked_div");
    let mut parts = text.splitn(3, ':');
    let (Some(path), Some(line), Some(body)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad());
    };
    let line: u64 = line.parse().map_err(|_| bad())?;
    if path.trim().is_empty() || line == 0 || body.trim().is_empty() {
        return Err(bad());
    }
    Ok(forge::LineComment {
        path: path.to_string(),
        line,
        side: forge::DiffSide::Right,
        body: body.to_string(),
    })
}

/// `baton forge release`.
#[derive(Subcommand, Debug)]
pub enum ReleaseCmd {
    /// Show the release of a tag.
    Show {
        /// OWNER/NAME.
        repo: String,
        /// The tag.
        tag: String,
        /// Print the release as JSON.
        #[arg(long)]
        json: bool,
    },
}

fn parse_state(text: &str) -> Result<StateFilter, String> {
    text.parse().map_err(|e: forge::Error| e.to_string())
}

/// Runs one `baton forge` command against the forge `config` names.
pub async fn run(config: &Config, data_dir: &Path, cmd: ForgeCmd) -> Result<i32, Failure> {
    if let ForgeCmd::Repo(RepoCmd::Create { repo, from, json }) = cmd {
        return repo_create(config, data_dir, &repo, &from, json).await;
    }
    let forge = crate::commands::follow::open_forge(config, data_dir)?;
    let forge = forge.as_ref();
    match cmd {
        ForgeCmd::Repo(_) => unreachable!("handled above"),
        ForgeCmd::Issue(IssueCmd::Create(args)) => issue_create(forge, args).await,
        ForgeCmd::Issue(IssueCmd::Show { reference, json }) => {
            let (repo, number) = parse_reference(&reference)?;
            existing_repo(forge, &repo).await?;
            let issue = forge
                .issue(&repo, number)
                .await
                .map_err(|e| missing(e, || format!("issue {repo}#{number} does not exist")))?;
            let comments = forge.comments(&repo, number).await.map_err(failure)?;
            if json {
                let mut value = to_value(&issue);
                value["comments"] = to_value(&comments);
                print_json(&value);
            } else {
                print_issue(&issue);
                for c in &comments {
                    println!();
                    println!("--- comment {} by {}, {}", c.id, c.author, c.created_at);
                    println!("{}", c.body.trim_end());
                }
            }
            Ok(0)
        }
        ForgeCmd::Issue(IssueCmd::List {
            repo,
            state,
            labels,
            json,
        }) => {
            let repo = parse_repo(&repo)?;
            existing_repo(forge, &repo).await?;
            let filter = IssueFilter { state, labels };
            let issues = forge.issues(&repo, &filter).await.map_err(failure)?;
            if json {
                print_json(&issues);
            } else if issues.is_empty() {
                eprintln!("no {state} issues in {repo}");
            } else {
                for i in &issues {
                    let labels = if i.labels.is_empty() {
                        String::new()
                    } else {
                        format!("  [{}]", i.labels.join(", "))
                    };
                    println!("#{:<5} {:<7} {}{labels}", i.number, i.state, i.title);
                }
            }
            Ok(0)
        }
        ForgeCmd::Pr(PrCmd::List { repo, state, json }) => {
            let repo = parse_repo(&repo)?;
            existing_repo(forge, &repo).await?;
            let pulls = forge.pull_requests(&repo, state).await.map_err(failure)?;
            if json {
                print_json(&pulls);
            } else if pulls.is_empty() {
                eprintln!("no {state} pull requests in {repo}");
            } else {
                for p in &pulls {
                    println!(
                        "#{:<5} {:<7} {} -> {}  {}",
                        p.number,
                        pr_state(p),
                        p.head,
                        p.base,
                        p.title
                    );
                }
            }
            Ok(0)
        }
        ForgeCmd::Pr(PrCmd::Show { reference, json }) => {
            let (repo, number) = parse_reference(&reference)?;
            existing_repo(forge, &repo).await?;
            let pr = forge.pull_request(&repo, number).await.map_err(|e| {
                missing(e, || format!("pull request {repo}#{number} does not exist"))
            })?;
            let reviews = forge.reviews(&repo, number).await.map_err(failure)?;
            let line_comments = forge
                .review_comments(&repo, number)
                .await
                .map_err(failure)?;
            let checks = forge
                .checks_for(&repo, &pr.head_sha)
                .await
                .map_err(failure)?;
            if json {
                let mut value = to_value(&pr);
                value["reviews"] = to_value(&reviews);
                value["review_comments"] = to_value(&line_comments);
                value["checks"] = to_value(&checks);
                print_json(&value);
            } else {
                println!("#{} {}", pr.number, pr.title);
                println!(
                    "state: {}   {} -> {}   head: {}",
                    pr_state(&pr),
                    pr.head,
                    pr.base,
                    pr.head_sha
                );
                println!("url: {}", pr.url);
                if !pr.body.trim().is_empty() {
                    println!();
                    println!("{}", pr.body.trim_end());
                }
                if !checks.is_empty() {
                    println!();
                    print_checks(&checks);
                }
                for r in &reviews {
                    println!();
                    println!("--- review {} by {}: {}", r.id, r.author, r.state);
                    if !r.body.trim().is_empty() {
                        println!("{}", r.body.trim_end());
                    }
                    for c in line_comments.iter().filter(|c| c.review_id == Some(r.id)) {
                        let line = c.line.map_or("outdated".to_string(), |l| l.to_string());
                        println!("  {}:{line}: {}", c.path, c.body.trim_end());
                    }
                }
            }
            Ok(0)
        }
        ForgeCmd::Pr(PrCmd::Create {
            repo,
            head,
            base,
            title,
            body,
            draft,
            json,
        }) => {
            let repo = parse_repo(&repo)?;
            if title.trim().is_empty() {
                return Err(Failure::usage("--title is empty"));
            }
            let info = existing_repo(forge, &repo).await?;
            let new = NewPullRequest {
                title,
                head,
                base: base.unwrap_or(info.default_branch),
                body,
                draft,
            };
            let pr = forge
                .create_pull_request(&repo, &new)
                .await
                .map_err(failure)?;
            if json {
                print_json(&pr);
            } else {
                println!("{}", pr.number);
            }
            Ok(0)
        }
        ForgeCmd::Pr(PrCmd::Review(args)) => {
            let (repo, number) = parse_reference(&args.reference)?;
            existing_repo(forge, &repo).await?;
            forge.pull_request(&repo, number).await.map_err(|e| {
                missing(e, || format!("pull request {repo}#{number} does not exist"))
            })?;
            if args.body.trim().is_empty() && args.comments.is_empty() {
                return Err(Failure::usage("a review needs --body or --comment"));
            }
            let new = forge::NewReview {
                body: args.body,
                event: args.event,
                commit_id: None,
                comments: args.comments,
            };
            let review = forge
                .create_review(&repo, number, &new)
                .await
                .map_err(failure)?;
            if args.json {
                print_json(&review);
            } else {
                println!("{}", review.id);
            }
            Ok(0)
        }
        ForgeCmd::Checks(ChecksCmd::List { reference, json }) => {
            let (repo, number) = parse_reference(&reference)?;
            existing_repo(forge, &repo).await?;
            let pr = forge.pull_request(&repo, number).await.map_err(|e| {
                missing(e, || format!("pull request {repo}#{number} does not exist"))
            })?;
            let checks = forge
                .checks_for(&repo, &pr.head_sha)
                .await
                .map_err(failure)?;
            if json {
                print_json(&checks);
            } else if checks.is_empty() {
                eprintln!(
                    "no checks on {} (the head of {repo}#{number})",
                    short_sha(&pr.head_sha)
                );
            } else {
                print_checks(&checks);
            }
            Ok(0)
        }
        ForgeCmd::Check(CheckCmd::Create {
            repo,
            sha,
            name,
            conclusion,
            title,
            log,
            json,
        }) => {
            let repo = parse_repo(&repo)?;
            existing_repo(forge, &repo).await?;
            let log = match log {
                Some(path) => Some(read_text(&path)?),
                None => None,
            };
            let new = forge::NewCheck {
                name,
                head_sha: sha,
                conclusion,
                title,
                summary: String::new(),
                details_url: None,
                log,
                annotations: Vec::new(),
            };
            let check = forge.publish_check(&repo, &new).await.map_err(failure)?;
            // On the local forge no webhook tells a daemon: this command does, so a run waiting
            // on the commit reads it at once. Recorded is what matters; a daemon that cannot be
            // told finds the check at its next poll.
            if forge.kind() == "local" {
                tell_daemon(data_dir, &repo, &check).await;
            }
            if json {
                print_json(&check);
            } else {
                println!("{}", check.id);
            }
            Ok(0)
        }
        ForgeCmd::Release(ReleaseCmd::Show { repo, tag, json }) => {
            let repo = parse_repo(&repo)?;
            existing_repo(forge, &repo).await?;
            let release = forge
                .release_by_tag(&repo, &tag)
                .await
                .map_err(failure)?
                .ok_or_else(|| Failure::usage(format!("{repo} has no release for tag `{tag}`")))?;
            if json {
                print_json(&release);
            } else {
                let mut flags = Vec::new();
                if release.draft {
                    flags.push("draft");
                }
                if release.prerelease {
                    flags.push("pre-release");
                }
                let flags = if flags.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", flags.join(", "))
                };
                println!("{} {}{flags}", release.tag, release.name);
                println!("url: {}", release.url);
                if !release.body.trim().is_empty() {
                    println!();
                    println!("{}", release.body.trim_end());
                }
            }
            Ok(0)
        }
    }
}

async fn repo_create(
    config: &Config,
    data_dir: &Path,
    repo: &str,
    from: &Path,
    json: bool,
) -> Result<i32, Failure> {
    if config.forge.kind != ForgeKind::Local {
        return Err(Failure::usage(
            "`baton forge repo create` works with the local forge only; this configuration \
             has [forge] kind = \"github\": create the repository on GitHub",
        ));
    }
    let repo = parse_repo(repo)?;
    if !from.is_dir() {
        return Err(Failure::usage(format!(
            "--from {}: no such directory",
            from.display()
        )));
    }
    let root = config.forge_root(data_dir);
    let forge = LocalForge::open(&root, config.forge.login.clone()).map_err(failure)?;
    let info = forge.import_repo(&repo, from).await.map_err(failure)?;
    if json {
        print_json(&info);
    } else {
        println!("{}", info.full_name);
        println!("default branch  {}", info.default_branch);
        println!("clone from      {}", info.clone_url);
    }
    Ok(0)
}

async fn issue_create(forge: &dyn Forge, args: IssueCreate) -> Result<i32, Failure> {
    let repo = parse_repo(&args.repo)?;
    if args.title.trim().is_empty() {
        return Err(Failure::usage("--title is empty"));
    }
    if let Some(bad) = args.labels.iter().find(|l| l.trim().is_empty()) {
        return Err(Failure::usage(format!("--label `{bad}` is empty")));
    }
    let body = match (args.body, args.body_file) {
        (Some(body), _) => body,
        (None, Some(path)) if path == Path::new("-") => {
            let mut body = String::new();
            std::io::stdin()
                .read_to_string(&mut body)
                .map_err(|e| Failure::usage(format!("--body-file -: reading stdin: {e}")))?;
            body
        }
        (None, Some(path)) => std::fs::read_to_string(&path)
            .map_err(|e| Failure::usage(format!("--body-file {}: {e}", path.display())))?,
        (None, None) => unreachable!("clap requires --body or --body-file"),
    };
    existing_repo(forge, &repo).await?;
    let new = NewIssue {
        title: args.title,
        body,
        labels: args.labels,
    };
    let issue = forge.create_issue(&repo, &new).await.map_err(failure)?;
    if args.json {
        print_json(&issue);
    } else {
        println!("{}", issue.number);
    }
    Ok(0)
}

/// The repository, or exit 2 naming it: a 404 on an issue call cannot tell a missing
/// repository from a missing issue, so commands ask for the repository first.
async fn existing_repo(forge: &dyn Forge, repo: &Repo) -> Result<forge::RepoInfo, Failure> {
    forge.repository(repo).await.map_err(|e| {
        missing(e, || {
            let hint = if forge.kind() == "local" {
                format!(" (create it with `baton forge repo create {repo} --from PATH`)")
            } else {
                String::new()
            };
            format!(
                "repository {repo} does not exist on the {} forge{hint}",
                forge.kind()
            )
        })
    })
}

/// `OWNER/NAME`, or exit 2.
fn parse_repo(text: &str) -> Result<Repo, Failure> {
    Repo::parse(text).map_err(|e| Failure::usage(e.to_string()))
}

/// `OWNER/NAME#N`, or exit 2 saying what the form is.
fn parse_reference(text: &str) -> Result<(Repo, u64), Failure> {
    let bad = || {
        Failure::usage(format!(
            "`{text}` is not an issue or pull request: expected OWNER/NAME#N"
        ))
    };
    let (repo, number) = text.split_once('#').ok_or_else(bad)?;
    let number: u64 = number.parse().map_err(|_| bad())?;
    if number == 0 {
        return Err(bad());
    }
    let repo = Repo::parse(repo).map_err(|e| Failure::usage(format!("`{text}`: {e}")))?;
    Ok((repo, number))
}

/// A not-found error as exit 2 with `message`; anything else through [`failure`].
fn missing(e: forge::Error, message: impl FnOnce() -> String) -> Failure {
    if e.is_not_found() {
        Failure::usage(message())
    } else {
        failure(e)
    }
}

/// Bad input (not found, invalid, configuration, a 4xx the forge will not retry) is exit 2;
/// forge trouble (no answer, 5xx, rate limits, local I/O) is exit 1.
fn failure(e: forge::Error) -> Failure {
    use forge::Error as E;
    let usage = match &e {
        E::NotFound(_) | E::Invalid(_) | E::Config(_) => true,
        E::Api { status, .. } => !e.is_retryable() && (400..500).contains(status),
        _ => false,
    };
    if usage {
        Failure::usage(e.to_string())
    } else {
        Failure::other(e.to_string())
    }
}

/// Sends a daemon serving `data_dir` (if one answers) a `check_run` delivery for `check`, as
/// GitHub would to its webhook. A failure is said on stderr and costs nothing else.
async fn tell_daemon(data_dir: &Path, repo: &forge::Repo, check: &forge::CheckRun) {
    let Some(client) = crate::backend::Client::discover(data_dir).await else {
        return;
    };
    let payload = serde_json::json!({
        "action": "completed",
        "check_run": {
            "id": check.id,
            "name": check.name,
            "head_sha": check.head_sha,
            "status": check.status,
            "conclusion": check.conclusion,
        },
        "repository": { "full_name": repo.to_string() },
    });
    if let Err(e) = client.ci_news("check_run", &payload).await {
        eprintln!(
            "warning: the check is recorded, but the daemon was not told ({e}); a run waiting \
             on {} finds it at its next poll",
            short_sha(&check.head_sha)
        );
    }
}

/// One line per check: its conclusion (or that it runs), its name, its title.
fn print_checks(checks: &[forge::CheckRun]) {
    for c in checks {
        let state = match c.conclusion {
            Some(conclusion) => conclusion.as_str(),
            None => "running",
        };
        let title = if c.title.is_empty() {
            String::new()
        } else {
            format!("  {}", c.title)
        };
        println!("{state:<9} {}{title}", c.name);
    }
}

/// The first seven digits of a commit sha, as git shows it.
fn short_sha(sha: &str) -> &str {
    sha.get(..7).unwrap_or(sha)
}

/// A file's text (`-`: stdin), or exit 2 naming the file.
fn read_text(path: &Path) -> Result<String, Failure> {
    if path == Path::new("-") {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| Failure::usage(format!("reading stdin: {e}")))?;
        return Ok(text);
    }
    std::fs::read_to_string(path).map_err(|e| Failure::usage(format!("{}: {e}", path.display())))
}

fn pr_state(pr: &PullRequest) -> &str {
    if pr.merged {
        "merged"
    } else if pr.draft && pr.state == "open" {
        "draft"
    } else {
        &pr.state
    }
}

fn print_issue(issue: &Issue) {
    let kind = if issue.is_pull_request {
        " (pull request)"
    } else {
        ""
    };
    println!("#{} {}{kind}", issue.number, issue.title);
    let mut line = format!("state: {}   author: {}", issue.state, issue.author);
    if !issue.labels.is_empty() {
        line.push_str(&format!("   labels: {}", issue.labels.join(", ")));
    }
    if !issue.assignees.is_empty() {
        line.push_str(&format!("   assignees: {}", issue.assignees.join(", ")));
    }
    println!("{line}");
    println!("url: {}", issue.url);
    if !issue.body.trim().is_empty() {
        println!();
        println!("{}", issue.body.trim_end());
    }
}

fn to_value<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_parsed_or_refused_with_the_form() {
        let (repo, n) = parse_reference("octo/app#12").unwrap();
        assert_eq!((repo.to_string(), n), ("octo/app".to_string(), 12));
        for bad in [
            "octo/app",
            "octo/app#",
            "octo/app#x",
            "octo/app#0",
            "octo#3",
            "#3",
        ] {
            let err = parse_reference(bad).unwrap_err();
            assert!(err.is_usage(), "{bad}");
            assert!(err.message.contains(bad), "{bad}: {}", err.message);
        }
    }

    #[test]
    fn only_retryable_trouble_is_exit_1() {
        let api = |status| forge::Error::Api {
            method: "GET".into(),
            path: "/x".into(),
            status,
            message: "m".into(),
        };
        assert!(failure(api(404)).is_usage());
        assert!(failure(api(422)).is_usage());
        assert!(!failure(api(502)).is_usage());
        assert!(!failure(api(429)).is_usage());
        assert!(failure(forge::Error::Invalid("x".into())).is_usage());
    }
}
