//! Release Notes: the commits between two tags, grouped the way git-cliff groups them, go to
//! the release of the newer tag.
//!
//! Read [`DEFINITION`] top to bottom: settle the range (`from` defaults to the tag before `to`
//! in its history; with none, the first release covers the whole history), clone (for the
//! authors' earlier history and the merges), write the notes, create or update the release. Commits are parsed with `git-conventional` (the parser git-cliff
//! uses): breaking changes (`!` or a `BREAKING CHANGE:` footer) on top, then Features, Bug
//! Fixes, Documentation, Performance, Refactor, Styling, Testing, Miscellaneous Tasks (chore,
//! ci, build), Security, Revert, and commits that do not follow the convention under Other.
//! Merge commits are left out: what they merge is listed. Each line has its scope,
//! description, short hash, its PR (`(#N)` in the subject, else the "Merge pull request #N"
//! that brought it in, else the merged PR whose head it is), and the author; authors with no
//! commit before `from` are listed as new contributors, with their first PR as git-cliff's
//! GitHub template does. As in git-cliff's default configuration, `chore(release): prepare
//! for`, `chore(deps...)`, `chore(pr)` and `chore(pull)` are skipped and an ungrouped commit whose
//! body mentions security goes under Security; git's own `Revert "..."` goes under Revert. `forge.release` is idempotent by tag:
//! running it twice updates the one release.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::Arc;

use baton_actors::{ActionContext, ActionError, Definition, Engine};
use serde_json::{json, Value};

use crate::actions::forge::{forge_error, repo_param};
use crate::actions::git;
use crate::agent::{ask, ProviderEnv};
use crate::forge::local::{parse_log, LOG_FORMAT};
use crate::forge::{self, Commit, Forge, ForgeHandle, Repo, StateFilter};

/// The workflow's id (and the CLI's `baton release-notes`).
pub const ID: &str = "release_notes";

/// The actions this file registers.
pub const ACTIONS: [&str; 2] = ["release_notes.range", "release_notes.write"];

/// The workflow.
pub const DEFINITION: &str = r#"
id = "release_notes"
name = "Release notes"
description = "Writes the notes of a tag from the commits since the previous one and puts them on its release"
version = 1
# Nothing to undo: the release stays (a later run updates it).
rollback_on_abort = "none"

[input]
repo = { required = true, description = "the repository, owner/name" }
tag = { required = true, description = "the tag the notes are for" }
from = { default = "", description = "the tag to start after (default: the previous tag)" }
dry_run = { default = false, description = "only write the notes; leave the release alone" }

[[steps]]
id = "range"
description = "Find the commits since the previous tag"
action = "release_notes.range"
with = { repo = "{{ input.repo }}", tag = "{{ input.tag }}", from = "{{ input.from }}" }
retry = "forge"

[[steps]]
id = "clone"
description = "Clone the repository (the authors' earlier history)"
action = "git.clone"
with = { url = "{{ steps.range.output.repository.clone_url }}", base = "{{ steps.range.output.repository.default_branch }}", token_env = "{{ steps.range.output.token_env }}" }
retry = "git"

[[steps]]
id = "write"
description = "Write the notes"
action = "release_notes.write"
with = { repo = "{{ input.repo }}", range = "{{ steps.range.output }}" }
retry = "forge"
set = { notes = "{{ steps.write.output.notes }}", result = "{{ steps.write.output.summary }}" }

[[steps]]
id = "release"
description = "Create or update the release"
when = "not input.dry_run"
action = "forge.release"
with = { repo = "{{ input.repo }}", tag = "{{ input.tag }}", name = "{{ input.tag }}", body = "{{ steps.write.output.notes }}" }
retry = "forge"
set = { release = "{{ steps.release.output }}" }
"#;

/// The workflow as data.
pub fn definition() -> Definition {
    toml::from_str(DEFINITION).expect("the built-in release_notes definition parses (tested)")
}

struct Env {
    forge: ForgeHandle,
    /// The model that writes the highlights, when `[agent]` names one.
    agent: crate::agent::AgentConfig,
}

/// Registers this workflow's own actions.
pub fn register_actions(
    engine: &Engine,
    config: &crate::config::Config,
    forge: &ForgeHandle,
    _: &super::Shared,
) {
    let env = Arc::new(Env {
        forge: forge.clone(),
        agent: config.agent.clone(),
    });
    super::action!(engine, env, "release_notes.range", range);
    super::action!(engine, env, "release_notes.write", write);
}

/// Why a range cannot be used.
#[derive(Debug)]
pub struct RangeError {
    /// The input is wrong (exit 2); otherwise the forge failed.
    pub bad_input: bool,
    /// What to say.
    pub message: String,
    /// The forge's error, when it was one (retryable or not).
    pub forge: Option<forge::Error>,
}

impl RangeError {
    fn bad(message: String) -> RangeError {
        RangeError {
            bad_input: true,
            message,
            forge: None,
        }
    }
}

impl From<forge::Error> for RangeError {
    fn from(e: forge::Error) -> RangeError {
        RangeError {
            bad_input: e.is_not_found(),
            message: e.to_string(),
            forge: Some(e),
        }
    }
}

/// The range's start and its commits (oldest first): `from` when given, else the nearest tag
/// in `to`'s history. With no earlier tag the start is `""` and no commits are listed: the
/// notes cover the whole history, read from the clone. Unknown tags and `from` newer than `to`
/// are bad input.
pub async fn resolve_range(
    forge: &dyn Forge,
    repo: &Repo,
    from: Option<&str>,
    to: &str,
) -> Result<(String, Vec<Commit>), RangeError> {
    let tags = forge.tags(repo).await?;
    let known = |name: &str| tags.iter().any(|t| t.name == name);
    if !known(to) {
        return Err(RangeError::bad(format!(
            "{repo} has no tag `{to}`; tags: {}",
            tag_list(&tags)
        )));
    }
    let from = match from.filter(|f| !f.is_empty()) {
        Some(f) if !known(f) => {
            return Err(RangeError::bad(format!(
                "{repo} has no tag `{f}`; tags: {}",
                tag_list(&tags)
            )))
        }
        Some(f) if f == to => {
            return Err(RangeError::bad(format!(
                "--from and --to are both `{to}`: the range is empty"
            )))
        }
        Some(f) => {
            if forge.commits_between(repo, to, f).await?.is_empty()
                || !forge.commits_between(repo, f, to).await?.is_empty()
            {
                f.to_string()
            } else {
                return Err(RangeError::bad(format!(
                    "`{f}` comes after `{to}`: the range is in the wrong order (--from is the older tag)"
                )));
            }
        }
        None => {
            // The nearest tag in `to`'s history: an ancestor (nothing of it is missing from
            // `to`) with the fewest commits up to `to`.
            let to_sha = tags.iter().find(|t| t.name == to).map(|t| t.sha.clone());
            let mut best: Option<(usize, String)> = None;
            for t in tags.iter().filter(|t| t.name != to) {
                if Some(&t.sha) == to_sha.as_ref() {
                    continue;
                }
                if !forge.commits_between(repo, to, &t.name).await?.is_empty() {
                    continue;
                }
                let n = forge.commits_between(repo, &t.name, to).await?.len();
                if best.as_ref().is_none_or(|(b, _)| n < *b) {
                    best = Some((n, t.name.clone()));
                }
            }
            match best {
                Some((_, name)) => name,
                // The first release: the whole history up to `to`, which the write step
                // reads from the clone (a forge compares two refs, it does not list history).
                None => return Ok((String::new(), Vec::new())),
            }
        }
    };
    let commits = forge.commits_between(repo, &from, to).await?;
    Ok((from, commits))
}

fn tag_list(tags: &[forge::Tag]) -> String {
    if tags.is_empty() {
        return "none".to_string();
    }
    let names: Vec<&str> = tags.iter().take(10).map(|t| t.name.as_str()).collect();
    names.join(", ")
}

// 1. The range.

async fn range(ctx: &ActionContext, env: &Env) -> Result<Value, ActionError> {
    let forge = env
        .forge
        .get()
        .map_err(|e| ActionError::fatal(format!("step `{}`: {e}", ctx.step_id)))?;
    let repo = repo_param(ctx)?;
    let to = ctx.param_str("tag")?.to_string();
    let from = ctx
        .params
        .get("from")
        .and_then(Value::as_str)
        .map(str::to_string);
    let (from, commits) = match resolve_range(forge.as_ref(), &repo, from.as_deref(), &to).await {
        Ok(r) => r,
        Err(RangeError {
            forge: Some(e),
            bad_input: false,
            ..
        }) => return Err(forge_error(ctx, e)),
        Err(e) => {
            return Err(ActionError::fatal(format!(
                "step `{}`: {}",
                ctx.step_id, e.message
            )))
        }
    };
    let crate::forge::CloneSource {
        repository: info,
        token_env,
    } = forge
        .clone_source(&repo, crate::forge::GitUse::Read)
        .await
        .map_err(|e| forge_error(ctx, e))?;
    Ok(json!({
        "from": from,
        "to": to,
        "commits": commits,
        "repository": info,
        "token_env": token_env,
        "summary": if from.is_empty() {
            format!("the whole history up to {to} (first release)")
        } else {
            format!("{} commit(s) from {from} to {to}", commits.len())
        },
    }))
}

// 2. The notes.

async fn write(ctx: &ActionContext, env: &Env) -> Result<Value, ActionError> {
    let range = ctx.params.get("range").cloned().unwrap_or(Value::Null);
    let from = range["from"].as_str().unwrap_or("");
    let to = range["to"].as_str().unwrap_or("");
    let mut commits: Vec<Commit> = serde_json::from_value(range["commits"].clone())
        .map_err(|e| ActionError::fatal(format!("step `{}`: commits: {e}", ctx.step_id)))?;
    let ws = git::open_workspace(ctx, &env.forge).await?;
    let git = |args: Vec<String>| {
        let ws = &ws;
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            ws.git()
                .run(&args)
                .await
                .map_err(|e| crate::workspace::step_failure(ctx, e))
        }
    };
    // Who committed up to `from`: anyone else in the range is a new contributor. A first
    // release has no `from`: its commits are the whole history and everyone is new.
    let earlier = if from.is_empty() {
        commits = parse_log(
            &git(vec![
                "log".into(),
                "--reverse".into(),
                LOG_FORMAT.into(),
                to.into(),
                "--".into(),
            ])
            .await?,
        );
        String::new()
    } else {
        git(vec![
            "log".into(),
            "--format=%an".into(),
            from.into(),
            "--".into(),
        ])
        .await?
    };
    let earlier: BTreeSet<&str> = earlier.lines().collect();
    // The merged PR of a commit whose subject names none: the commits a "Merge pull request
    // #N" brings in, and the head commit of each merged PR.
    let mut merged_in: BTreeMap<String, u64> = BTreeMap::new();
    for c in commits.iter().filter(|c| is_merge(c)) {
        let Some(pr) = merge_pr_number(&c.message) else {
            continue;
        };
        let brought = git(vec!["rev-list".into(), format!("{}^1..{}", c.sha, c.sha)]).await?;
        for sha in brought.lines().filter(|s| *s != c.sha) {
            merged_in.entry(sha.to_string()).or_insert(pr);
        }
    }
    // The merged PRs are listed only when a commit still has no PR: on a large repository
    // that list is many pages.
    let unlinked = commits.iter().any(|c| {
        !is_merge(c)
            && split_pr(c.message.lines().next().unwrap_or("")).1.is_none()
            && !merged_in.contains_key(&c.sha)
    });
    if unlinked {
        let forge = env
            .forge
            .get()
            .map_err(|e| ActionError::fatal(format!("step `{}`: {e}", ctx.step_id)))?;
        let repo = repo_param(ctx)?;
        let pulls = forge
            .pull_requests(&repo, StateFilter::Closed)
            .await
            .map_err(|e| forge_error(ctx, e))?;
        for pr in pulls.into_iter().filter(|p| p.merged) {
            merged_in.entry(pr.head_sha).or_insert(pr.number);
        }
    }
    let mut notes = render(from, to, &commits, &earlier, &merged_in);
    let mut highlights = Value::Null;
    if ask::has_model(&env.agent) {
        let asked = ask::ask(
            &env.agent,
            &ProviderEnv::from_process(),
            "Write the highlights of these release notes: one paragraph of at most four \
             sentences for users, naming the most important changes (breaking ones first). \
             Answer with the paragraph only.",
            &notes,
            &ctx.cancel,
        )
        .await;
        let (section, record) = match asked {
            Ok(Some(text)) => (
                format!("\n### Highlights\n\n🤖 _Written by the model, not measured._\n\n{text}\n"),
                json!({"answered": true}),
            ),
            Ok(None) => (String::new(), Value::Null),
            Err(e) => (
                // The provider's own words stay in the run's state, not in a public release.
                format!(
                    "\n### Highlights\n\n🤖 _Missing: the model could not be asked (the \
                     reason is in run `{}`)._\n",
                    ctx.run_id
                ),
                json!({"answered": false, "error": e.to_string()}),
            ),
        };
        // On top: right after the heading and its one-line range.
        let at = notes.find("\n### ").unwrap_or(notes.len());
        notes.insert_str(at, &section);
        highlights = record;
    }
    let lines = commits.iter().filter(|c| !is_merge(c)).count();
    let since = if from.is_empty() {
        "the start".to_string()
    } else {
        from.to_string()
    };
    Ok(json!({
        "notes": notes,
        "highlights": highlights,
        "commits": lines,
        "summary": format!("Release notes for {to}: {lines} change(s) since {since}"),
    }))
}

/// The PR number of GitHub's merge commit subject `Merge pull request #N from owner/branch`.
fn merge_pr_number(message: &str) -> Option<u64> {
    let rest = message.strip_prefix("Merge pull request #")?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// git-cliff's default groups, in order, and the types each takes.
const GROUPS: [(&str, &[&str]); 10] = [
    ("Features", &["feat"]),
    ("Bug Fixes", &["fix"]),
    ("Documentation", &["docs", "doc"]),
    ("Performance", &["perf"]),
    ("Refactor", &["refactor"]),
    ("Styling", &["style"]),
    ("Testing", &["test", "tests"]),
    ("Miscellaneous Tasks", &["chore", "ci", "build"]),
    ("Security", &["security", "sec"]),
    ("Revert", &["revert"]),
];

fn is_merge(c: &Commit) -> bool {
    c.message.starts_with("Merge ")
}

/// One commit's line and where it goes.
struct Line {
    group: Option<&'static str>,
    breaking: bool,
    text: String,
}

/// git-cliff's default skips: release preparation, dependency bumps and PR housekeeping.
fn is_skipped(c: &Commit) -> bool {
    let m = c.message.as_str();
    m.starts_with("chore(release): prepare for")
        || m.starts_with("chore(deps")
        || m.starts_with("chore(pr)")
        || m.starts_with("chore(pull)")
}

/// `merged_pr` is the PR that merged the commit, when the subject names none.
fn line_of(c: &Commit, merged_pr: Option<u64>) -> Line {
    let subject = c.message.lines().next().unwrap_or("").trim();
    let short = &c.sha[..c.sha.len().min(7)];
    let author = match &c.author_login {
        Some(login) => format!("@{login}"),
        None => c.author_name.clone(),
    };
    let (group, breaking, scope, description) = match git_conventional::Commit::parse(&c.message) {
        Ok(parsed) => {
            let kind = parsed.type_().as_str().to_lowercase();
            let group = GROUPS
                .iter()
                .find(|(_, types)| types.contains(&kind.as_str()))
                .map(|(name, _)| *name);
            // git-cliff's default: a body that speaks of security puts an otherwise ungrouped
            // commit under Security.
            let body_says_security = parsed.body().is_some_and(|b| b.contains("security"));
            let group = group.or(body_says_security.then_some("Security"));
            (
                // A type outside the groups (`wip:`) is still a change: Other.
                group,
                parsed.breaking(),
                parsed.scope().map(|s| s.as_str().to_string()),
                parsed.description().to_string(),
            )
        }
        // git's own `Revert "..."` subject is a revert too (git-cliff's default drops it as
        // unconventional; listing it under Revert says more).
        Err(_) if subject.to_lowercase().starts_with("revert") => {
            (Some("Revert"), false, None, subject.to_string())
        }
        Err(_) => (None, false, None, subject.to_string()),
    };
    let (description, pr) = split_pr(&description);
    let pr = pr.or(merged_pr);
    let mut text = String::new();
    if let Some(scope) = scope {
        let _ = write!(text, "**{scope}**: ");
    }
    let _ = write!(text, "{description} ({short})");
    if let Some(pr) = pr {
        let _ = write!(text, " (#{pr})");
    }
    let _ = write!(text, " by {author}");
    Line {
        group,
        breaking,
        text,
    }
}

/// `description (#12)` → (`description`, 12).
fn split_pr(description: &str) -> (String, Option<u64>) {
    let d = description.trim_end();
    if let Some(open) = d.rfind("(#") {
        if let Some(n) = d[open + 2..]
            .strip_suffix(')')
            .and_then(|n| n.parse::<u64>().ok())
        {
            return (d[..open].trim_end().to_string(), Some(n));
        }
    }
    (d.to_string(), None)
}

/// The notes. `from` empty: the first release. `merged_in` maps a commit to the PR that merged
/// it, for subjects that name none.
fn render(
    from: &str,
    to: &str,
    commits: &[Commit],
    earlier_authors: &BTreeSet<&str>,
    merged_in: &BTreeMap<String, u64>,
) -> String {
    let lines: Vec<(Line, &Commit)> = commits
        .iter()
        .filter(|c| !is_merge(c) && !is_skipped(c))
        .map(|c| (line_of(c, merged_in.get(&c.sha).copied()), c))
        .collect();
    let mut out = if from.is_empty() {
        format!("## {to}\n\nFirst release: the whole history up to {to}.\n")
    } else {
        format!("## {to}\n\nChanges since {from}.\n")
    };
    let mut section = |title: &str, items: Vec<&str>| {
        if !items.is_empty() {
            let _ = writeln!(out, "\n### {title}\n");
            for i in items {
                let _ = writeln!(out, "- {i}");
            }
        }
    };
    section(
        "⚠ Breaking Changes",
        lines
            .iter()
            .filter(|(l, _)| l.breaking)
            .map(|(l, _)| l.text.as_str())
            .collect(),
    );
    for (title, _) in GROUPS {
        section(
            title,
            lines
                .iter()
                .filter(|(l, _)| !l.breaking && l.group == Some(title))
                .map(|(l, _)| l.text.as_str())
                .collect(),
        );
    }
    section(
        "Other",
        lines
            .iter()
            .filter(|(l, _)| !l.breaking && l.group.is_none())
            .map(|(l, _)| l.text.as_str())
            .collect(),
    );
    // A new contributor's first commit in the range (oldest first).
    let mut seen = BTreeSet::new();
    let mut new: Vec<String> = Vec::new();
    for (_, c) in &lines {
        if earlier_authors.contains(c.author_name.as_str()) || !seen.insert(c.author_name.clone()) {
            continue;
        }
        let who = c
            .author_login
            .as_ref()
            .map_or_else(|| c.author_name.clone(), |l| format!("@{l}"));
        // As git-cliff's GitHub template: the PR when known, else the commit.
        let pr = split_pr(c.message.lines().next().unwrap_or(""))
            .1
            .or_else(|| merged_in.get(&c.sha).copied());
        let first = match pr {
            Some(n) => format!("#{n}"),
            None => c.sha[..c.sha.len().min(7)].to_string(),
        };
        new.push(format!("{who} made their first contribution in {first}"));
    }
    section("New Contributors", new.iter().map(String::as_str).collect());
    if lines.is_empty() {
        out.push_str("\nNo changes.\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commit(sha: &str, message: &str, author: &str) -> Commit {
        Commit {
            sha: sha.repeat(40 / sha.len()),
            message: message.into(),
            author_name: author.into(),
            author_login: None,
        }
    }

    #[test]
    fn the_definition_is_valid_with_this_binarys_actions() {
        let wf = baton_actors::Workflow::new(definition(), "built-in", &crate::workflows::known)
            .expect("valid");
        assert_eq!(wf.id(), ID);
    }

    #[test]
    fn commits_are_grouped_breaking_first_with_scope_hash_pr_and_author() {
        let commits = vec![
            commit("a1", "feat(parser): accept tabs (#12)", "alice"),
            commit("b2", "fix: off by one", "bob"),
            commit(
                "c3",
                "Merge pull request #13 from bob/x\n\nfix stuff",
                "bob",
            ),
            commit("d4", "refactor!: drop the old API", "alice"),
            commit("e5", "tidy things up", "carol"),
            commit(
                "f6",
                "chore: bump deps\n\nBREAKING CHANGE: needs rust 1.80",
                "alice",
            ),
            commit("a7", "ci: cache", "alice"),
        ];
        let earlier: BTreeSet<&str> = ["alice", "bob"].into_iter().collect();
        let merged_in: BTreeMap<String, u64> = [("e5".repeat(20), 13)].into_iter().collect();
        let notes = render("v1.0.0", "v1.1.0", &commits, &earlier, &merged_in);
        let expected = "## v1.1.0

Changes since v1.0.0.

### ⚠ Breaking Changes

- drop the old API (d4d4d4d) by alice
- bump deps (f6f6f6f) by alice

### Features

- **parser**: accept tabs (a1a1a1a) (#12) by alice

### Bug Fixes

- off by one (b2b2b2b) by bob

### Miscellaneous Tasks

- cache (a7a7a7a) by alice

### Other

- tidy things up (e5e5e5e) (#13) by carol

### New Contributors

- carol made their first contribution in #13
";
        assert_eq!(notes, expected);
    }

    #[test]
    fn a_first_release_says_so_and_everyone_is_new_reverts_group_and_release_prep_is_skipped() {
        let commits = vec![
            commit("a1", "initial import", "alice"),
            commit("b2", "Revert \"initial import\"", "bob"),
            commit("c3", "chore(release): prepare for v1.0.0", "alice"),
            commit("d4", "chore(deps): bump serde", "alice"),
            commit(
                "e5",
                "wip: tighten input checks\n\nA security fix.",
                "alice",
            ),
        ];
        let notes = render("", "v1.0.0", &commits, &BTreeSet::new(), &BTreeMap::new());
        let expected = "## v1.0.0

First release: the whole history up to v1.0.0.

### Security

- tighten input checks (e5e5e5e) by alice

### Revert

- Revert \"initial import\" (b2b2b2b) by bob

### Other

- initial import (a1a1a1a) by alice

### New Contributors

- alice made their first contribution in a1a1a1a
- bob made their first contribution in b2b2b2b
";
        assert_eq!(notes, expected);
        assert_eq!(merge_pr_number("Merge pull request #42 from o/b"), Some(42));
        assert_eq!(merge_pr_number("Merge branch 'x'"), None);
    }

    #[test]
    fn pr_numbers_come_off_the_description() {
        assert_eq!(split_pr("add x (#12)"), ("add x".to_string(), Some(12)));
        assert_eq!(split_pr("add (#x)"), ("add (#x)".to_string(), None));
        assert_eq!(split_pr("add x"), ("add x".to_string(), None));
    }
}
