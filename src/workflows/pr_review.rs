//! PR Review: a pull request comes in, one review with measured results goes out.
//!
//! Read [`DEFINITION`] top to bottom: read the PR, clone its head through the mirror cache, run
//! the repository's checks on it, write the review and post it. The verdict is measured, never
//! guessed: "request changes" when a critical check fails, otherwise "comment" (or "approve"
//! with `[workflows.pr_review] approve_when_green = true`). Lint and type findings on lines the
//! PR changed become line comments; findings elsewhere are summarised in the body.
//!
//! A workflow's review of a PR carries a marker keyed by the workflow and the PR
//! (`forge.review`), so a re-review on a new push edits the earlier one instead of adding
//! another. A PR whose head cannot be fetched (a fork the forge does not expose) gets a comment
//! saying so, and the run fails.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use baton_actors::{ActionContext, ActionError, Definition, Engine};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::actions::forge::{forge_error, number_param, repo_param};
use crate::actions::git;
use crate::agent::{ask, ProviderEnv};
use crate::forge::ForgeHandle;
use crate::verify::{self, Kind, Status, VerifyOptions};
use crate::workflows::trust::{self, Facts};

/// The workflow's id (and the CLI's `baton pr-review`).
pub const ID: &str = "pr_review";

/// The actions this file registers.
pub const ACTIONS: [&str; 5] = [
    "pr_review.read",
    "pr_review.checkout",
    "pr_review.unfetchable",
    "pr_review.verify",
    "pr_review.compose",
];

/// The workflow. `unfetchable` is reached only when `checkout` fails; `checkout`'s `next` sends
/// the usual path around it.
pub const DEFINITION: &str = r#"
id = "pr_review"
name = "PR review"
description = "Verifies a pull request's head and posts one review with the measured results"
version = 1
# Nothing to undo: the only effect is the review (or the comment), which stays.
rollback_on_abort = "none"

[input]
repo = { required = true, description = "the repository, owner/name" }
pr = { required = true, description = "the pull request number" }
head = { default = "", description = "the head branch the trigger saw" }
head_sha = { default = "", description = "the head commit the review was asked for (a push's, or the head when `/baton review` was received); empty: the head when the run reads the PR" }

[[steps]]
id = "read"
description = "Read the pull request"
action = "pr_review.read"
with = { repo = "{{ input.repo }}", pr = "{{ input.pr }}", head_sha = "{{ input.head_sha }}" }
retry = "forge"
set = { pr = "{{ steps.read.output.pr }}", trusted = "{{ steps.read.output.trusted }}" }

[[steps]]
id = "clone"
description = "Clone the repository"
action = "git.clone"
with = { url = "{{ steps.read.output.repository.clone_url }}", base = "{{ steps.read.output.pr.base }}", token_env = "{{ steps.read.output.token_env }}" }
retry = "git"

[[steps]]
id = "checkout"
description = "Check out the pull request's head"
action = "pr_review.checkout"
with = { pr = "{{ steps.read.output.pr }}" }
on_failure = "goto:unfetchable"
next = [ { when = "true", goto = "verify" } ]

[[steps]]
id = "unfetchable"
description = "Say on the PR that its head cannot be fetched"
when = "steps.checkout.status == 'failed'"
action = "pr_review.unfetchable"
with = { repo = "{{ input.repo }}", pr = "{{ input.pr }}", error = "{{ steps.checkout.error | default('') }}" }

[[steps]]
id = "verify"
description = "Run tests, lint and type checks on the head"
action = "pr_review.verify"
with = { base = "{{ steps.read.output.pr.base }}", trusted = "{{ state.trusted }}", trust_reason = "{{ steps.read.output.trust_reason }}" }

[[steps]]
id = "compose"
description = "Write the review"
action = "pr_review.compose"
with = { verify = "{{ steps.verify.output }}", base = "{{ steps.read.output.pr.base }}", title = "{{ steps.read.output.pr.title }}" }

[[steps]]
id = "review"
description = "Post the review"
action = "forge.review"
with = { repo = "{{ input.repo }}", pr = "{{ input.pr }}", body = "{{ steps.compose.output.body }}", event = "{{ steps.compose.output.event }}", comments = "{{ steps.compose.output.comments }}", commit = "{{ steps.verify.output.head }}" }
retry = "forge"
set = { review = "{{ steps.compose.output.review }}", result = "{{ steps.compose.output.summary }}", outcome = "{{ steps.verify.output.outcome if steps.verify.status == 'completed' and steps.verify.output.outcome else 'unverified' }}" }
"#;

/// The workflow as data.
pub fn definition() -> Definition {
    toml::from_str(DEFINITION).expect("the built-in pr_review definition parses (tested)")
}

/// Line comments one review carries at most; the rest are summarised.
const MAX_LINE_COMMENTS: usize = 30;
/// Findings listed in the summary at most.
const MAX_LISTED: usize = 20;

/// `[workflows.pr_review]` in `config.toml`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Approve a PR whose checks all pass, instead of commenting.
    pub approve_when_green: bool,
}

struct Env {
    forge: ForgeHandle,
    /// `[limits] max_verifications`: the engine's verification slots.
    verify_slots: crate::verify::Slots,
    settings: Settings,
    /// `[webhook] bot_login`: baton's own account, which pushes baton's branches.
    bot_login: Option<String>,
    /// The model asked for the summary and suggestions, when `[agent]` names one.
    agent: crate::agent::AgentConfig,
}

/// Registers this workflow's own actions.
pub fn register_actions(
    engine: &Engine,
    config: &crate::config::Config,
    forge: &ForgeHandle,
    shared: &super::Shared,
) {
    let env = Arc::new(Env {
        forge: forge.clone(),
        verify_slots: shared.verify_slots.clone(),
        settings: config.workflows.pr_review.clone(),
        bot_login: config.webhook.bot_login.clone(),
        agent: config.agent.clone(),
    });
    super::action!(engine, env, "pr_review.read", read);
    super::action!(engine, env, "pr_review.checkout", checkout);
    super::action!(engine, env, "pr_review.unfetchable", unfetchable);
    super::action!(engine, env, "pr_review.verify", verify_step);
    super::action!(engine, env, "pr_review.compose", compose);
}

// 1. Read the pull request and the repository.

async fn read(ctx: &ActionContext, env: &Env) -> Result<Value, ActionError> {
    let forge = crate::actions::forge::forge_of(ctx, &env.forge)?;
    let repo = repo_param(ctx)?;
    let number = number_param(ctx, "pr")?;
    let pr = forge
        .pull_request(&repo, number)
        .await
        .map_err(|e| forge_error(ctx, e))?;
    let crate::forge::CloneSource {
        repository: info,
        token_env,
    } = forge
        .clone_source(&repo, crate::forge::GitUse::Read)
        .await
        .map_err(|e| forge_error(ctx, e))?;
    // Whose code the head is decides how its checks may run.
    let author_can_write = trust::is_own(&pr.author, env.bot_login.as_deref())
        || trust::can_write(forge.as_ref(), &repo, &pr.author)
            .await
            .map_err(|e| forge_error(ctx, e))?;
    let trust = Facts::of_pull_request(&repo, &pr, author_can_write);
    // The commit the review was asked for, not whatever the head is by now: a maintainer who
    // comments `/baton review` has looked at that commit. A later push gets its own review.
    let asked = ctx
        .params
        .get("head_sha")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty());
    let moved_on = asked.filter(|a| *a != pr.head_sha).map(|a| {
        format!(
            "; reviewing {} as asked, the head is now {}",
            &a[..a.len().min(7)],
            &pr.head_sha[..pr.head_sha.len().min(7)]
        )
    });
    let head_sha = asked.unwrap_or(&pr.head_sha).to_string();
    Ok(json!({
        "author": pr.author,
        "author_can_write": author_can_write,
        "head_in_fork": trust::fork_of(&repo, &pr).is_some(),
        "trusted": trust.trusted,
        "trust_reason": trust.trust_reason,
        "pr": {
            "number": pr.number,
            "title": pr.title,
            "head": pr.head,
            "head_sha": head_sha,
            // Asked for by the trigger: that commit or none (see `checkout`).
            "pinned": asked.is_some(),
            "base": pr.base,
            "url": pr.url,
            "state": pr.state,
        },
        "repository": info,
        "token_env": token_env,
        "summary": format!(
            "Read PR #{number}: {} ({} → {}){}",
            pr.title,
            pr.head,
            pr.base,
            moved_on.unwrap_or_default()
        ),
    }))
}

// 2. Check out the head. A PR from the same repository is one of the clone's branches; one
// from a fork is fetched as `refs/pull/N/head`, which GitHub serves for every PR.

async fn checkout(ctx: &ActionContext, env: &Env) -> Result<Value, ActionError> {
    let ws = git::open_workspace(ctx, &env.forge).await?;
    let pr = ctx.params.get("pr").cloned().unwrap_or(Value::Null);
    let number = pr.get("number").and_then(Value::as_u64).unwrap_or(0);
    let head = pr.get("head").and_then(Value::as_str).unwrap_or("");
    let head_sha = pr.get("head_sha").and_then(Value::as_str).unwrap_or("");
    let pinned = pr.get("pinned").and_then(Value::as_bool).unwrap_or(false);
    let g = ws.git();
    let has = |rev: String| {
        let g = &g;
        async move {
            g.output(&[
                "rev-parse",
                "--verify",
                "--quiet",
                &format!("{rev}^{{commit}}"),
            ])
            .await
            .ok()
            .filter(|o| o.code == 0)
            .map(|o| o.stdout.trim().to_string())
        }
    };
    let mut target = if head_sha.is_empty() {
        has(format!("origin/{head}")).await
    } else {
        has(head_sha.to_string()).await
    };
    let mut fetch_error = String::new();
    if target.is_none() {
        let refspec = format!("+refs/pull/{number}/head:refs/remotes/origin/pull/{number}");
        match g.run(&["fetch", "--quiet", ws.url(), &refspec]).await {
            // The commit asked for, when one was: fetching brings the PR's current head, and
            // an older commit of it only while it is still in the PR's history.
            Ok(_) if pinned => {
                target = has(head_sha.to_string()).await;
                if target.is_none() {
                    fetch_error = "that commit is no longer part of the pull request (force-pushed); the new head gets its own review".into();
                }
            }
            Ok(_) => target = has(format!("origin/pull/{number}")).await,
            Err(e) => fetch_error = ws.redact(&e.to_string()),
        }
    }
    let Some(sha) = target else {
        let why = if fetch_error.is_empty() {
            String::new()
        } else {
            format!(": {fetch_error}")
        };
        return Err(ActionError::fatal(format!(
            "the head of PR #{number} (`{head}` at {}) cannot be fetched from the repository{why}",
            if head_sha.is_empty() { "?" } else { head_sha }
        )));
    };
    g.run(&["checkout", "--quiet", "--detach", &sha])
        .await
        .map_err(|e| crate::workspace::step_failure(ctx, e))?;
    Ok(json!({
        "head": sha,
        "summary": format!("Checked out `{head}` at {}", &sha[..sha.len().min(7)]),
    }))
}

/// Reached when `checkout` failed: the PR gets a comment saying why it was not reviewed, and
/// the run fails with the same reason.
async fn unfetchable(ctx: &ActionContext, env: &Env) -> Result<Value, ActionError> {
    let forge = crate::actions::forge::forge_of(ctx, &env.forge)?;
    let repo = repo_param(ctx)?;
    let number = number_param(ctx, "pr")?;
    let error = ctx
        .params
        .get("error")
        .and_then(|e| {
            e.as_str()
                .map(str::to_string)
                .or_else(|| e.get("message")?.as_str().map(str::to_string))
        })
        .unwrap_or_default();
    let body = format!(
        "## baton review\n\n⚠️ Not reviewed: {error}\n\nPush the branch to this repository, or allow \
         the forge to serve the PR's head, and push again to get a review.\n"
    );
    forge
        .upsert_comment(&repo, number, &ctx.run_id, Some("review"), &body)
        .await
        .map_err(|e| forge_error(ctx, e))?;
    Err(ActionError::fatal(format!(
        "PR #{number} not reviewed (reported on the PR): {error}"
    )))
}

// 3. Verify the head and measure what changed against the base.

async fn verify_step(ctx: &ActionContext, env: &Env) -> Result<Value, ActionError> {
    let ws = git::open_workspace(ctx, &env.forge).await?;
    let dir = ws.root().to_path_buf();
    let base = format!("origin/{}", ctx.param_str("base")?);
    let head = ws
        .head()
        .await
        .map_err(|e| crate::workspace::step_failure(ctx, e))?;
    let files = ws
        .diff_stat(&base)
        .await
        .map_err(|e| crate::workspace::step_failure(ctx, e))?;
    let range = format!("{base}...HEAD");
    let diff = ws
        .git()
        .run(&["diff", "-U0", "--no-color", "--no-renames", &range])
        .await
        .map_err(|e| crate::workspace::step_failure(ctx, e))?;
    let changed = changed_lines(&diff);
    ctx.progress.say("Running tests, lint and type checks...");
    let opts = VerifyOptions {
        run_in: verify::RunIn::Decide(crate::sandbox::Trust::from_params(&ctx.params)),
        cache: Some(crate::sandbox::run_cache_dir(&dir)),
        // `.baton.toml`'s `[verify] fail_fast` decides (by default every check runs).
        fail_fast: None,
        ..VerifyOptions::default()
    };
    let report = verify::for_step(ctx, &env.verify_slots, &dir, &opts).await?;
    let report = match report {
        Ok(report) => Some(report),
        Err(verify::Error::NoChecks { .. }) => None,
        Err(e) => return Err(ActionError::fatal(format!("step `{}`: {e}", ctx.step_id))),
    };
    let findings: Vec<Finding> = report
        .iter()
        .flat_map(|r| &r.checks)
        .filter(|c| matches!(c.kind, Kind::Lint | Kind::Types))
        .flat_map(|c| {
            parse_findings(&c.output_tail, &dir)
                .into_iter()
                .map(move |f| Finding {
                    check: c.command.clone(),
                    ..f
                })
        })
        .collect();
    let files: Vec<Value> = files
        .iter()
        .map(|f| json!({"path": f.path, "added": f.added, "removed": f.removed, "new_file": f.new_file}))
        .collect();
    let summary = match &report {
        Some(r) if r.ok => "Checks passed".to_string(),
        Some(r) => crate::workflows::issue_to_pr::failed_line(r),
        None => "No checks found".to_string(),
    };
    let outcome = match &report {
        Some(r) if r.ok => "verified",
        Some(_) => "unverified",
        None => "no_checks",
    };
    Ok(json!({
        "head": head,
        "outcome": outcome,
        // The progress checklist marks this step failed rather than ticking it.
        "checks_failed": report.as_ref().is_some_and(|r| !r.ok),
        "report": report,
        "files": files,
        "changed": changed,
        "findings": findings,
        "summary": summary,
    }))
}

/// A lint or type finding at a place in the repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Finding {
    path: String,
    line: u64,
    message: String,
    /// The command that reported it.
    #[serde(default)]
    check: String,
}

/// The new-side line ranges each file's hunks added or changed, from `git diff -U0`.
fn changed_lines(diff: &str) -> BTreeMap<String, Vec<(u64, u64)>> {
    let mut out: BTreeMap<String, Vec<(u64, u64)>> = BTreeMap::new();
    let mut file: Option<String> = None;
    for line in diff.lines() {
        if let Some(path) = line.strip_prefix("+++ ") {
            file = path.strip_prefix("b/").map(str::to_string);
        } else if let (Some(hunk), Some(f)) = (line.strip_prefix("@@ "), &file) {
            // `@@ -a,b +c,d @@`: d lines from c on the new side (d = 0: a pure deletion).
            let Some(new) = hunk.split_whitespace().find(|p| p.starts_with('+')) else {
                continue;
            };
            let mut parts = new[1..].splitn(2, ',');
            let start: u64 = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
            let count: u64 = parts
                .next()
                .map_or(Some(1), |s| s.parse().ok())
                .unwrap_or(0);
            if count > 0 {
                out.entry(f.clone())
                    .or_default()
                    .push((start, start + count - 1));
            }
        }
    }
    out
}

/// Findings in a check's output: rustc and clippy's `--> path:line:col` under a `warning:` or
/// `error:` line, and the `path:line[:col]: message` most other tools print.
fn parse_findings(output: &str, root: &Path) -> Vec<Finding> {
    let mut found = Vec::new();
    let mut message: Option<String> = None;
    for raw in output.lines() {
        let line = raw.trim_end();
        let trimmed = line.trim_start();
        if trimmed.starts_with("warning") || trimmed.starts_with("error") {
            // The summary lines (`warning: `x` generated 2 warnings`) have no location; the
            // next `-->` belongs to a real diagnostic, which resets this.
            message = Some(trimmed.to_string());
            continue;
        }
        if let Some(loc) = trimmed.strip_prefix("--> ") {
            if let (Some((path, n)), Some(msg)) = (location(loc, root), message.take()) {
                found.push(Finding {
                    path,
                    line: n,
                    message: msg,
                    check: String::new(),
                });
            }
            continue;
        }
        if raw.starts_with(char::is_whitespace) {
            continue;
        }
        let mut parts = line.splitn(3, ':');
        let (Some(path), Some(n), Some(rest)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let Ok(n) = n.trim().parse::<u64>() else {
            continue;
        };
        // `path:line:col: message` or `path:line: message`.
        let rest = match rest.split_once(':') {
            Some((col, msg)) if col.trim().parse::<u64>().is_ok() => msg,
            _ => rest,
        };
        if let Some(path) = clean_path(path, root) {
            found.push(Finding {
                path,
                line: n,
                message: rest.trim().to_string(),
                check: String::new(),
            });
        }
    }
    let mut seen = BTreeSet::new();
    found.retain(|f| seen.insert((f.path.clone(), f.line, f.message.clone())));
    found
}

/// `path:line:col` (or `path:line`).
fn location(loc: &str, root: &Path) -> Option<(String, u64)> {
    let mut parts = loc.trim().rsplitn(3, ':').collect::<Vec<_>>();
    parts.reverse();
    let (path, line) = match parts.as_slice() {
        [path, line, col] if col.parse::<u64>().is_ok() => (*path, *line),
        [path, line] | [_, path, line] => (*path, *line),
        _ => return None,
    };
    Some((clean_path(path, root)?, line.parse().ok()?))
}

/// A repository-relative path, or `None` for what is not one (a URL, a sentence, a path
/// outside the repository).
fn clean_path(path: &str, root: &Path) -> Option<String> {
    let path = path.trim();
    if path.is_empty() || path.contains(char::is_whitespace) || path.contains("://") {
        return None;
    }
    let p = PathBuf::from(path);
    let rel = if p.is_absolute() {
        p.strip_prefix(root).ok()?.to_path_buf()
    } else {
        p
    };
    let rel = rel.to_string_lossy().trim_start_matches("./").to_string();
    // A file name has an extension or a directory; "Error" or "note" do not.
    let plausible = rel.contains('/') || rel.contains('.');
    (plausible && !rel.starts_with("..")).then_some(rel)
}

// 4. Write the review: verdict, Verification lines, what changed, findings.

async fn compose(ctx: &ActionContext, env: &Env) -> Result<Value, ActionError> {
    let verify = ctx.params.get("verify").cloned().unwrap_or(Value::Null);
    let base = ctx.param_str("base")?;
    let mut review = write_review(&verify, base, &env.settings);
    if ask::has_model(&env.agent) {
        let (section, model) = model_suggestions(ctx, env, base).await;
        if let Some(body) = review["body"].as_str() {
            review["body"] = json!(format!("{body}\n---\n\n{section}"));
        }
        review["review"]["model"] = model;
    }
    Ok(review)
}

/// The heading that keeps the model's part apart from what was measured.
const MODEL_HEADING: &str = "### 🤖 Model's suggestions, not measured";

/// The model's summary of the change and its suggestions, from the PR's title and diff (cut to
/// `ask::MAX_PROMPT_BYTES`): the review's section and the run state's record. A model that
/// fails leaves the section saying so and why; it never fails the review.
async fn model_suggestions(ctx: &ActionContext, env: &Env, base: &str) -> (String, Value) {
    let title = ctx.param_str("title").unwrap_or("");
    let diff = match git::open_workspace(ctx, &env.forge).await {
        Ok(ws) => ws
            .git()
            .run(&["diff", "--no-color", &format!("origin/{base}...HEAD")])
            .await
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.message),
    };
    let asked = match diff {
        Ok(diff) => ask::ask(
            &env.agent,
            &ProviderEnv::from_process(),
            "Review this pull request. First a summary of the change in at most three \
             sentences. Then up to five concrete suggestions as `- ` bullets, each naming the \
             file (and line when you can) and what to change; say `No suggestions.` if you have \
             none. Do not repeat test results: they are measured elsewhere.",
            &format!("Title: {title}\n\n{diff}"),
            &ctx.cancel,
        )
        .await
        .map_err(|e| e.to_string()),
        Err(e) => Err(format!("the diff could not be read: {e}")),
    };
    match asked {
        Ok(Some(text)) => (
            format!("{MODEL_HEADING}\n\n{text}\n"),
            json!({"answered": true}),
        ),
        Ok(None) => (String::new(), Value::Null),
        Err(why) => (
            // The provider's own words stay in the run's state: they may name endpoints or hosts.
            format!(
                "{MODEL_HEADING}\n\n_Missing: the model could not be asked (the reason is in \
                 run `{}`)._\n",
                ctx.run_id
            ),
            json!({"answered": false, "error": why}),
        ),
    }
}

fn write_review(verify: &Value, base: &str, settings: &Settings) -> Value {
    let report: Option<verify::Report> = verify
        .get("report")
        .filter(|r| !r.is_null())
        .and_then(|r| serde_json::from_value(r.clone()).ok());
    let changed: BTreeMap<String, Vec<(u64, u64)>> = verify
        .get("changed")
        .and_then(|c| serde_json::from_value(c.clone()).ok())
        .unwrap_or_default();
    let findings: Vec<Finding> = verify
        .get("findings")
        .and_then(|c| serde_json::from_value(c.clone()).ok())
        .unwrap_or_default();
    let files = verify
        .get("files")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();

    let failed: Vec<&verify::CheckResult> = report
        .iter()
        .flat_map(|r| &r.checks)
        .filter(|c| c.critical && matches!(c.status, Status::Failed | Status::Error))
        .collect();
    // Checks that were not run (untrusted code, no sandbox) say nothing against the PR: the
    // review comments, saying why, and posts what it could learn without running code.
    let not_run = report
        .as_ref()
        .filter(|r| r.ran_in == "not run")
        .and_then(|r| r.notes.first().cloned());
    let (event, verdict) = match &report {
        _ if not_run.is_some() => ("comment", "comment"),
        Some(_) if !failed.is_empty() => ("request_changes", "request changes"),
        Some(r) if r.ok && settings.approve_when_green => ("approve", "approve"),
        _ => ("comment", "comment"),
    };
    let on_changed = |f: &Finding| {
        changed
            .get(&f.path)
            .is_some_and(|ranges| ranges.iter().any(|(a, b)| (*a..=*b).contains(&f.line)))
    };
    let (inline, elsewhere): (Vec<&Finding>, Vec<&Finding>) =
        findings.iter().partition(|f| on_changed(f));
    let comments: Vec<Value> = inline
        .iter()
        .take(MAX_LINE_COMMENTS)
        .map(|f| {
            json!({
                "path": f.path,
                "line": f.line,
                "body": format!("{}\n\n<sub>reported by `{}`</sub>", f.message, f.check),
            })
        })
        .collect();

    let mut body = String::from("## baton review\n\n");
    let why = match (&report, failed.is_empty()) {
        _ if not_run.is_some() => format!(
            "the checks were not run: {}",
            not_run
                .as_deref()
                .unwrap_or_default()
                .trim_start_matches("not run: ")
        ),
        (None, _) => "no checks found to run".to_string(),
        (Some(_), false) => format!(
            "{} critical check(s) failed: {}",
            failed.len(),
            failed
                .iter()
                .map(|c| format!("`{}`", c.command))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        (Some(_), true) => "every critical check passed".to_string(),
    };
    let _ = writeln!(body, "**Verdict: {verdict}**: {why}.\n");
    match &report {
        Some(r) => {
            body.push_str(r.markdown.trim_end());
            body.push_str("\n\n");
        }
        None => body.push_str(
            "## Verification\n\n⚠️ Not verified: no checks found (add `[[verify.checks]]` to `.baton.toml`).\n\n",
        ),
    }
    let (added, removed) = files.iter().fold((0, 0), |(a, r), f| {
        (
            a + f["added"].as_u64().unwrap_or(0),
            r + f["removed"].as_u64().unwrap_or(0),
        )
    });
    let _ = writeln!(
        body,
        "### Changes against `{base}`\n\n{} file(s) changed, +{added} −{removed}\n",
        files.len()
    );
    for f in files.iter().take(50) {
        let new = if f["new_file"].as_bool() == Some(true) {
            " (new)"
        } else {
            ""
        };
        let _ = writeln!(
            body,
            "- `{}`{new}: +{} −{}",
            f["path"].as_str().unwrap_or("?"),
            f["added"].as_u64().unwrap_or(0),
            f["removed"].as_u64().unwrap_or(0)
        );
    }
    if files.len() > 50 {
        let _ = writeln!(body, "- … and {} more", files.len() - 50);
    }
    if !findings.is_empty() {
        let _ = writeln!(
            body,
            "\n### Lint and type findings\n\n{} on lines this PR changed (line comments), {} elsewhere.",
            comments.len(),
            elsewhere.len() + inline.len().saturating_sub(comments.len())
        );
        let rest: Vec<&&Finding> = elsewhere
            .iter()
            .chain(inline.iter().skip(MAX_LINE_COMMENTS))
            .collect();
        for f in rest.iter().take(MAX_LISTED) {
            let _ = writeln!(body, "- `{}:{}`: {}", f.path, f.line, f.message);
        }
        if rest.len() > MAX_LISTED {
            let _ = writeln!(body, "- … and {} more", rest.len() - MAX_LISTED);
        }
    }
    let counts: Vec<Value> = report
        .iter()
        .flat_map(|r| &r.checks)
        .map(|c| json!({"kind": c.kind, "command": c.command, "status": c.status, "passed": c.passed, "failed": c.failed, "failures": c.failures}))
        .collect();
    json!({
        "event": event,
        "body": body,
        "comments": comments,
        "review": {
            "verdict": event,
            "checks": counts,
            "files": files.len(),
            "added": added,
            "removed": removed,
            "line_comments": comments.len(),
            "findings_elsewhere": elsewhere.len(),
        },
        "summary": format!("Review: {verdict} ({why})"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_definition_parses_and_validates() {
        let wf = baton_actors::Workflow::new(definition(), "built-in", &crate::workflows::known)
            .expect("valid");
        assert_eq!(wf.id(), ID);
        assert!(!wf.def.progress, "the review is the report");
    }

    #[test]
    fn changed_lines_come_from_the_new_side_of_each_hunk() {
        let diff = "diff --git a/src/lib.rs b/src/lib.rs\n--- a/src/lib.rs\n+++ b/src/lib.rs\n@@ -3 +3 @@ fn x\n-a\n+b\n@@ -10,0 +11,3 @@\n+c\n+d\n+e\n@@ -20,2 +22,0 @@\n-f\n-g\n--- a/old.rs\n+++ /dev/null\n@@ -1 +0,0 @@\n-x\n";
        let got = changed_lines(diff);
        assert_eq!(got.get("src/lib.rs"), Some(&vec![(3, 3), (11, 13)]));
        assert_eq!(got.len(), 1, "{got:?}");
    }

    #[test]
    fn findings_parse_rustc_and_generic_styles() {
        let root = Path::new("/ws/repo");
        let out = "warning: unused variable: `x`\n --> src/lib.rs:7:9\n  |\n7 |     let x = 1;\n  |         ^ help: prefix it\n\nwarning: `calc` (lib) generated 1 warning\nerror[E0308]: mismatched types\n   --> /ws/repo/src/main.rs:3:5\napp/views.py:12:1: E302 expected 2 blank lines\nlib/a.js:4: missing semicolon\nhttp://example.com:80: nope\nError: 3: not a file\n";
        let got = parse_findings(out, root);
        let short: Vec<(String, u64)> = got.iter().map(|f| (f.path.clone(), f.line)).collect();
        assert_eq!(
            short,
            vec![
                ("src/lib.rs".to_string(), 7),
                ("src/main.rs".to_string(), 3),
                ("app/views.py".to_string(), 12),
                ("lib/a.js".to_string(), 4),
            ]
        );
        assert_eq!(got[0].message, "warning: unused variable: `x`");
        assert_eq!(got[2].message, "E302 expected 2 blank lines");
    }

    #[test]
    fn the_verdict_follows_the_critical_checks() {
        let check = |status: &str, critical: bool| {
            json!({"kind": "tests", "command": "cargo test", "critical": critical, "status": status,
                   "passed": 2, "failed": 1, "skipped": 0, "duration_ms": 1, "exit_code": 1,
                   "output_tail": "", "output_bytes": 0, "failures": ["t::a"], "error": null})
        };
        let verify = |status: &str, critical: bool, ok: bool| {
            json!({"report": {"ok": ok, "checks": [check(status, critical)], "markdown": "## Verification\n\n❌ Tests\n", "notes": []},
                   "files": [{"path": "src/lib.rs", "added": 2, "removed": 1, "new_file": false}],
                   "changed": {"src/lib.rs": [[3, 4]]},
                   "findings": [{"path": "src/lib.rs", "line": 4, "message": "warning: x", "check": "cargo clippy"},
                                {"path": "src/other.rs", "line": 9, "message": "warning: y", "check": "cargo clippy"}]})
        };
        let off = Settings::default();
        let on = Settings {
            approve_when_green: true,
        };
        let r = write_review(&verify("failed", true, false), "main", &on);
        assert_eq!(r["event"], "request_changes");
        assert_eq!(r["comments"].as_array().unwrap().len(), 1);
        assert_eq!(r["comments"][0]["line"], 4);
        let body = r["body"].as_str().unwrap();
        assert!(body.contains("`src/other.rs:9`: warning: y"), "{body}");
        assert!(body.contains("1 file(s) changed, +2 −1"), "{body}");
        assert_eq!(
            write_review(&verify("failed", false, true), "main", &off)["event"],
            "comment"
        );
        assert_eq!(
            write_review(&verify("passed", true, true), "main", &on)["event"],
            "approve"
        );
        assert_eq!(
            write_review(&json!({"report": null}), "main", &on)["event"],
            "comment"
        );
    }
}
