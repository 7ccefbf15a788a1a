//! Revise: a reviewer asks for changes on baton's pull request, and the agent revises it.
//!
//! Read [`DEFINITION`] top to bottom: read the PR with its reviews and line comments, clone a
//! fresh workspace of the PR's own branch, let the agent work on the review (each line comment
//! with its file and line) and the instructions, verify, commit on top of the branch and push
//! (a fast-forward: never a force-push), publish baton's check and, as Issue → PR does after
//! each push (its `local_ci`, `ci_wait` and `ci_fix` steps and settings, reused by name), wait
//! for the repository's CI on that commit with bounded fix rounds; then rewrite the PR's
//! `## Verification` section and answer on the PR with the measured result.
//!
//! It is its own workflow rather than an entry point into `issue_to_pr`: a revision starts from
//! a PR, not an issue, and shares none of Issue → PR's early steps (parse, branch, analyze,
//! plan, baseline). It starts from `baton revise OWNER/NAME#PR`, a `/baton revise <text>`
//! comment on the PR, or a review that requests changes. Revisions are numbered by the
//! completed revisions of the same PR and bounded by `[workflows.issue_to_pr] max_revisions`.
//!
//! The review is instructions to the agent, so whose it is matters: the reviews and line
//! comments of someone without write access are worked on only once someone with write access
//! approves (or never, with `[sandbox] outsider_patches = "refuse"`). The
//! `instructions` input is trusted: every way in is (the CLI and the API with the admin token,
//! Telegram's `allowed_users`, and a `/baton revise` comment whose author the webhook found to
//! have write access).

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;

use baton_actors::{ActionContext, ActionError, Definition, Engine, RunStatus};
use serde_json::{json, Value};

use crate::actions::forge::{forge_error, number_param, repo_param};
use crate::actions::git;
use crate::agent::{self, Report};
use crate::forge::{ForgeHandle, PullRequest, Repo};
use crate::verify::{self, VerifyOptions};
use crate::workflows::issue_to_pr::{one_line, tests_line, usage_line};
use crate::workflows::trust::{self, Facts, OutsiderPatches};

/// The workflow's id (and the CLI's `baton revise`).
pub const ID: &str = "revise";

/// The actions this file registers.
pub const ACTIONS: [&str; 3] = ["revise.read", "revise.verify", "revise.answer"];

/// The workflow.
pub const DEFINITION: &str = r#"
id = "revise"
name = "Revise a pull request"
description = "Revises a pull request on review: a verified commit on its branch and an answer on the PR"
version = 1
# Abort keeps what was pushed; `baton rollback --hard` resets the branch to where it was.
rollback_on_abort = "soft"

[input]
repo = { required = true, description = "the repository, owner/name" }
pr = { required = true, description = "the pull request number" }
instructions = { default = "", description = "what the reviewer asks for, besides the review's comments" }
agent = { default = "", description = "the agent backend (default: [agent] backend)" }

[[steps]]
id = "read"
description = "Read the pull request and its review"
action = "revise.read"
with = { repo = "{{ input.repo }}", pr = "{{ input.pr }}", instructions = "{{ input.instructions }}" }
retry = "forge"
set = { revision = "{{ steps.read.output.revision }}", trusted = "{{ steps.read.output.trusted }}" }

[[steps]]
id = "approve_outsider"
description = "Wait for someone with write access to approve review text from people without it"
# Only when the review the agent would work on holds text from someone without write access,
# and `outsider_patches = "wait"` (with "refuse", read ends the run instead).
when = "steps.read.output.needs_approval"
wait = { signal = "approve" }

[[steps]]
id = "clone"
description = "Clone the pull request's branch"
action = "git.clone"
with = { url = "{{ steps.read.output.repository.clone_url }}", base = "{{ steps.read.output.pr.head }}", token_env = "{{ steps.read.output.token_env }}" }
retry = "git"

[[steps]]
id = "settings"
description = "Read the repository's settings"
# `[workflows.issue_to_pr]` with the branch's `.baton.toml` applied, read as Issue → PR reads
# them: whether and how the run waits for CI after its push.
action = "issue_to_pr.settings"
set = { settings = "{{ steps.settings.output.settings }}" }

[[steps]]
id = "implement"
description = "Revise the changes"
action = "agent.implement"
with = { issue = "{{ steps.read.output.task }}", backend = "{{ input.agent }}", trusted = "{{ state.trusted }}", trust_reason = "{{ steps.read.output.trust_reason }}" }
retry = "agent"
compensate = { action = "git.rollback" }

[[steps]]
id = "verify"
description = "Run tests, lint and type checks"
action = "revise.verify"
with = { trusted = "{{ state.trusted }}", trust_reason = "{{ steps.read.output.trust_reason }}" }
set = { outcome = "{{ steps.verify.output.outcome }}" }

[[steps]]
id = "commit"
description = "Commit the revision"
action = "git.commit"
with = { message = "{{ steps.read.output.commit_message }}" }
compensate = { action = "git.rollback" }

[[steps]]
id = "push"
description = "Push the revision"
action = "git.push"
retry = "git"
compensate = { action = "git.rollback" }

[[steps]]
id = "publish_check"
description = "Publish the verification as a check on the pushed commit"
# The same `baton / verify` check Issue → PR publishes, on the revision's commit.
action = "issue_to_pr.publish_check"
with = { repo = "{{ input.repo }}", sha = "{{ steps.push.output.pushed }}", verify = "{{ steps.verify.output }}", verify_status = "{{ steps.verify.status }}" }
retry = "forge"
on_failure = "skip"

[[steps]]
id = "local_ci"
description = "Run the repository's CI command on the pushed commit"
# Issue → PR's steps, with its settings: `[ci] command` published as the check `ci`, then the
# wait for the required checks on the very commit pushed, and at most `max_ci_fix_rounds` fix
# rounds (verify, commit, push, baton's check, and another wait) before a person decides.
when = "state.settings.ci == 'wait' and state.settings.ci_command"
action = "issue_to_pr.local_ci"
with = { repo = "{{ input.repo }}", sha = "{{ steps.push.output.pushed }}", command = "{{ state.settings.ci_command }}", trusted = "{{ state.trusted }}", trust_reason = "{{ steps.read.output.trust_reason }}" }
retry = "forge"

[[steps]]
id = "ci_wait"
description = "Wait for the repository's CI on the pushed commit"
# Unset `required_checks`: those the protection of the PR's base branch requires.
when = "state.settings.ci == 'wait'"
action = "issue_to_pr.ci_wait"
with = { repo = "{{ input.repo }}", sha = "{{ steps.push.output.pushed }}", base = "{{ steps.read.output.pr.base }}", required = "{{ state.settings.required_checks }}", timeout = "{{ state.settings.ci_timeout }}", max_rounds = "{{ state.settings.max_ci_fix_rounds }}", previous = "{{ steps.ci_wait.output }}" }
timeout = "7d"
on_failure = "pause"
next = [ { when = "steps.ci_wait.output.fix", goto = "ci_fix" }, { when = "true", goto = "answer" } ]

[[steps]]
id = "ci_fix"
description = "Fix what the repository's CI found"
# Reached only through ci_wait's `next`; then verify, commit, push and the wait again.
when = "steps.ci_wait.status == 'completed' and steps.ci_wait.output.fix"
action = "agent.fix"
with = { report = "{{ steps.implement.output }}", failure = "{{ steps.ci_wait.output.failure }}", backend = "{{ input.agent }}", trusted = "{{ state.trusted }}", trust_reason = "{{ steps.read.output.trust_reason }}" }
compensate = { action = "git.rollback" }
on_failure = "pause"
next = [ { when = "true", goto = "verify" } ]

[[steps]]
id = "answer"
description = "Update the PR's verification and answer on it"
action = "revise.answer"
with = { repo = "{{ input.repo }}", pr = "{{ input.pr }}", revision = "{{ steps.read.output.revision }}", max = "{{ steps.read.output.max_revisions }}", verify = "{{ steps.verify.output }}", commit = "{{ steps.commit.output }}", agent = "{{ steps.implement.output }}", addressed = "{{ steps.read.output.addressed }}" }
retry = "forge"
set = { result = "{{ steps.answer.output.result }}" }
"#;

/// The workflow as data.
pub fn definition() -> Definition {
    toml::from_str(DEFINITION).expect("the built-in revise definition parses (tested)")
}

/// What the actions of this file share.
struct Env {
    forge: ForgeHandle,
    /// `[limits] max_verifications`: the engine's verification slots.
    verify_slots: crate::verify::Slots,
    max_revisions: u32,
    /// `[sandbox] outsider_patches`: review text from someone without write
    /// access waits for approval or is refused.
    outsider_patches: OutsiderPatches,
    /// `[webhook] bot_login`: baton's own account, whose reviews are its own text.
    bot_login: Option<String>,
    engine: Engine,
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
        max_revisions: config.workflows.issue_to_pr.max_revisions,
        outsider_patches: config.sandbox.outsider_patches,
        bot_login: config.webhook.bot_login.clone(),
        engine: engine.clone(),
    });
    super::action!(engine, env, "revise.read", read);
    super::action!(engine, env, "revise.verify", verify_step);
    super::action!(engine, env, "revise.answer", answer);
}

/// How many revisions of `repo`'s PR `pr` completed (runs of this workflow), not counting
/// `except`. The next revision's number is one more.
pub fn completed_revisions(
    engine: &Engine,
    repo: &Repo,
    pr: u64,
    except: Option<&str>,
) -> baton_actors::Result<u32> {
    // The runs about this pull request, through the engine's index (not every revision).
    let n = engine
        .runs_about(&baton_actors::Subject::pull_request(repo.to_string(), pr))?
        .into_iter()
        .filter(|r| r.workflow_id == ID && r.status == RunStatus::Completed)
        .filter(|r| Some(r.id.as_str()) != except)
        .count();
    Ok(u32::try_from(n).unwrap_or(u32::MAX))
}

/// A number input given as a number or as text.
fn number_of(value: Option<&Value>) -> Option<u64> {
    baton_actors::subject::number(value)
}

// 1. Read the PR, its reviews and their line comments; refuse a closed PR or one past the bound.

/// Why baton must not push a revision of `pr` (a branch of `repo`), if it must not.
pub(crate) fn not_revisable(pr: &PullRequest, repo: &Repo, default_branch: &str) -> Option<String> {
    match &pr.head_repo {
        Some(head) if head.eq_ignore_ascii_case(&repo.to_string()) => {}
        Some(head) => {
            return Some(format!(
                "its branch `{}` lives in {head}, not in {repo}; baton revises only branches of \
                 the repository it works on",
                pr.head
            ))
        }
        None => {
            return Some(
                "the repository of its branch is gone (a deleted fork); nothing to revise".into(),
            )
        }
    }
    (pr.head == default_branch).then(|| {
        format!("its branch is the default branch `{default_branch}`; baton never commits to it")
    })
}

async fn read(ctx: &ActionContext, env: &Env) -> Result<Value, ActionError> {
    let forge = crate::actions::forge::forge_of(ctx, &env.forge)?;
    let repo = repo_param(ctx)?;
    let number = number_param(ctx, "pr")?;
    let instructions = ctx
        .params
        .get("instructions")
        .and_then(Value::as_str)
        .unwrap_or("")
        .trim()
        .to_string();
    ctx.progress.say("Reading the review...");
    let pr = forge
        .pull_request(&repo, number)
        .await
        .map_err(|e| forge_error(ctx, e))?;
    if pr.state != "open" {
        return Err(ActionError::fatal(format!(
            "pull request {repo}#{number} is {}; only an open pull request is revised",
            if pr.merged { "merged" } else { "closed" }
        )));
    }
    let done = completed_revisions(&env.engine, &repo, number, Some(&ctx.run_id))
        .map_err(|e| ActionError::retryable(format!("reading earlier revisions: {e}")))?;
    if done >= env.max_revisions {
        return Err(ActionError::fatal(format!(
            "pull request {repo}#{number} has had {done} revision(s), the most \
             [workflows.issue_to_pr] max_revisions = {} allows",
            env.max_revisions
        )));
    }
    let revision = done + 1;
    let reviews = forge
        .reviews(&repo, number)
        .await
        .map_err(|e| forge_error(ctx, e))?;
    let comments = forge
        .review_comments(&repo, number)
        .await
        .map_err(|e| forge_error(ctx, e))?;
    let asking: Vec<_> = reviews
        .iter()
        .filter(|r| r.state == "CHANGES_REQUESTED" && !r.body.trim().is_empty())
        .collect();
    if instructions.is_empty() && asking.is_empty() && comments.is_empty() {
        return Err(ActionError::fatal(format!(
            "pull request {repo}#{number} has no review comments and no instructions were \
             given: nothing to revise (give --instructions)"
        )));
    }
    let crate::forge::CloneSource {
        repository: info,
        token_env,
    } = forge
        .clone_source(&repo, crate::forge::GitUse::Push)
        .await
        .map_err(|e| forge_error(ctx, e))?;
    // The revision is pushed to the head branch in this repository: never to a fork's branch
    // of the same name, never to the default branch.
    if let Some(why) = not_revisable(&pr, &repo, &info.default_branch) {
        return Err(ActionError::fatal(format!(
            "pull request {repo}#{number}: {why}"
        )));
    }
    // Whose text the agent would work on: the review is instructions to it.
    let bot = env.bot_login.as_deref();
    let mut outsiders: Vec<&str> = Vec::new();
    let mut insiders: Vec<&str> = Vec::new();
    let authors = asking
        .iter()
        .map(|r| r.author.as_str())
        .chain(comments.iter().map(|c| c.author.as_str()));
    for author in authors {
        if outsiders.contains(&author) || insiders.contains(&author) {
            continue;
        }
        let writes = trust::is_own(author, bot)
            || trust::can_write(forge.as_ref(), &repo, author)
                .await
                .map_err(|e| forge_error(ctx, e))?;
        if writes {
            insiders.push(author);
        } else {
            outsiders.push(author);
        }
    }
    let author_can_write = trust::is_own(&pr.author, bot)
        || trust::can_write(forge.as_ref(), &repo, &pr.author)
            .await
            .map_err(|e| forge_error(ctx, e))?;
    let mut trust = Facts::of_pull_request(&repo, &pr, author_can_write);
    let mut approval = Value::Null;
    let by_comment = trust::started_by_webhook(&env.engine, &ctx.run_id);
    let names = outsiders
        .iter()
        .map(|a| format!("@{a}"))
        .collect::<Vec<_>>()
        .join(", ");
    if !outsiders.is_empty() {
        if trust.trusted {
            trust = Facts {
                trusted: false,
                trust_reason: format!("review comments from {names}, without write access"),
            };
        }
        let outsider = trust::Outsider {
            repo: &repo,
            number,
            run: &ctx.run_id,
            by_comment,
            why: format!(
                "The review of pull request #{number} holds comments from {names}, without \
                 write access to {repo}"
            ),
            not_done: "does not work on them",
            as_read: "What the agent gets is the review as baton read it now; later comments \
                      are not in it.",
        };
        match outsider
            .hold(forge.as_ref(), env.outsider_patches)
            .await
            .map_err(|e| forge_error(ctx, e))?
        {
            trust::Hold::Refuse(error) => {
                return Err(ActionError::fatal(error).with_output(json!({
                    "outsiders": outsiders,
                    "trusted": false,
                    "trust_reason": trust.trust_reason,
                })))
            }
            trust::Hold::Wait(record) => approval = record,
        }
    }
    // Review text is data for the agent, never instructions to baton: sanitized and quoted.
    let mut body = format!(
        "Revise pull request #{number} (branch `{}`) on review. Change only what the review \
         asks for; the tests must still pass.\n",
        pr.head
    );
    if !instructions.is_empty() {
        let _ = write!(
            body,
            "\n## Instructions\n\n{}\n",
            agent::issue::sanitize(&instructions)
        );
    }
    if !asking.is_empty() {
        body.push_str("\n## Reviews requesting changes\n");
        for r in &asking {
            let _ = write!(
                body,
                "\n### Review by {}\n\n{}\n",
                r.author,
                agent::issue::sanitize(r.body.trim())
            );
        }
    }
    if !comments.is_empty() {
        body.push_str("\n## Review comments\n");
        for c in &comments {
            let at = c.line.map_or_else(
                || format!("{} (outdated)", c.path),
                |l| format!("{}:{l}", c.path),
            );
            let _ = write!(
                body,
                "\n### `{at}` ({})\n\n{}\n",
                c.author,
                agent::issue::sanitize(c.body.trim())
            );
        }
    }
    let what = if instructions.is_empty() {
        "address the review".to_string()
    } else {
        one_line(&instructions, 60)
    };
    let mut summary = format!(
        "Revision {revision} of #{number}: {} review comment(s), {} review(s) requesting \
         changes{}",
        comments.len(),
        asking.len(),
        if instructions.is_empty() {
            ""
        } else {
            ", with instructions"
        }
    );
    if !outsiders.is_empty() {
        let _ = write!(
            summary,
            "; waiting: comments from {names} without write access; someone with write access \
             must approve: {}",
            trust::how_to_approve(&ctx.run_id, by_comment)
        );
    }
    Ok(json!({
        "pr": pr,
        "author": pr.author,
        "author_can_write": author_can_write,
        "head_in_fork": trust::fork_of(&repo, &pr).is_some(),
        "trusted": trust.trusted,
        "trust_reason": trust.trust_reason,
        "outsiders": outsiders,
        "needs_approval": !outsiders.is_empty(),
        "approval": approval,
        "repository": info,
        "token_env": token_env,
        "revision": revision,
        "max_revisions": env.max_revisions,
        "addressed": comments.len() + asking.len(),
        "task": {
            "number": number,
            "title": format!("Revise #{number}: {}", one_line(&pr.title, 80)),
            "body": body,
            "labels": [],
        },
        "commit_message": format!("Revise #{number} (revision {revision}): {what}"),
        "summary": summary,
    }))
}

// 4. Verify the revised branch: every check, measured. A failing check does not stop the
// revision: it is pushed and the answer says what failed, as the PR's draft state does.

async fn verify_step(ctx: &ActionContext, env: &Env) -> Result<Value, ActionError> {
    let dir: PathBuf = ctx.workspace.join("repo");
    let ws = git::open_workspace(ctx, &env.forge).await?;
    ctx.progress.say("Running tests, lint and type checks...");
    let opts = VerifyOptions {
        run_in: verify::RunIn::Decide(crate::sandbox::Trust::from_params(&ctx.params)),
        cache: Some(crate::sandbox::run_cache_dir(&dir)),
        // `.baton.toml`'s `[verify] fail_fast` decides (by default every check runs).
        fail_fast: None,
        ..VerifyOptions::default()
    };
    let report = verify::in_clone(ctx, &env.verify_slots, &ws, &dir, &opts).await?;
    match report {
        Ok(report) => {
            let line = tests_line(&report);
            // The whole report (its checks' outputs too): the check published on the pushed
            // commit reads its findings from it.
            let mut out = serde_json::to_value(&report).unwrap_or(Value::Null);
            out["outcome"] = json!(if report.ok { "verified" } else { "unverified" });
            // The progress checklist marks this step failed rather than ticking it.
            out["checks_failed"] = json!(!report.ok);
            out["line"] = json!(line);
            out["summary"] = json!(if report.ok {
                format!("Running tests... {line}")
            } else {
                super::issue_to_pr::failed_line(&report)
            });
            Ok(out)
        }
        Err(e @ verify::Error::NoChecks { .. }) => Ok(json!({
            "ok": false,
            "outcome": "no_checks",
            "markdown": format!("## Verification\n\n⚠️ Not verified: {e}\n"),
            "line": "no checks found",
            "summary": "No checks found to verify the revision",
        })),
        Err(e) => Err(ActionError::fatal(format!("step `{}`: {e}", ctx.step_id))),
    }
}

// 7. Rewrite the PR's `## Verification` section and answer on the PR.

async fn answer(ctx: &ActionContext, env: &Env) -> Result<Value, ActionError> {
    let forge = crate::actions::forge::forge_of(ctx, &env.forge)?;
    let repo = repo_param(ctx)?;
    let number = number_param(ctx, "pr")?;
    let revision = number_of(ctx.params.get("revision")).unwrap_or(0);
    let max = number_of(ctx.params.get("max")).unwrap_or(0);
    let addressed = number_of(ctx.params.get("addressed")).unwrap_or(0);
    let verify = ctx.params.get("verify").cloned().unwrap_or(Value::Null);
    let ok = verify.get("ok").and_then(Value::as_bool) == Some(true);
    let markdown = verify
        .get("markdown")
        .and_then(Value::as_str)
        .unwrap_or("## Verification\n\n⚠️ Not verified\n")
        .trim_end();
    let line = verify
        .get("line")
        .and_then(Value::as_str)
        .unwrap_or("not run");
    let commit = ctx.params.get("commit").cloned().unwrap_or(Value::Null);
    let sha = commit.get("sha").and_then(Value::as_str).unwrap_or("");
    let short = &sha[..sha.len().min(7)];
    let branch = commit.get("branch").and_then(Value::as_str).unwrap_or("");
    let agent: Option<Report> = ctx
        .params
        .get("agent")
        .filter(|v| !v.is_null())
        .and_then(|v| serde_json::from_value(v.clone()).ok());

    let pr = forge
        .pull_request(&repo, number)
        .await
        .map_err(|e| forge_error(ctx, e))?;
    let section = format!("{markdown}\n\n_Revision {revision} ({short}): {line}._\n");
    let body = replace_verification(&pr.body, &section);
    // A revision that passes takes the failing mark off the title; one that fails puts it on.
    let bare = pr.title.trim_start_matches("[failing] ");
    let title = if ok {
        bare.to_string()
    } else {
        format!("[failing] {bare}")
    };
    if body != pr.body || title != pr.title {
        let update = crate::forge::PullRequestUpdate {
            title: Some(title),
            body: Some(body),
            ..Default::default()
        };
        forge
            .update_pull_request(&repo, number, &update)
            .await
            .map_err(|e| forge_error(ctx, e))?;
    }
    let mut text = format!(
        "{} Revision {revision} of at most {max}: pushed {short} on `{branch}`, addressing {addressed} review item(s).\n\n",
        if ok { "✅" } else { "⚠️" }
    );
    text.push_str(markdown);
    text.push('\n');
    if !ok {
        text.push_str("\nVerification did not pass after this revision.\n");
    }
    if let Some(r) = &agent {
        let _ = write!(text, "\nCost: {}\n", usage_line(r, None));
    }
    let comment = forge
        .upsert_comment(&repo, number, &ctx.run_id, Some("revision"), &text)
        .await
        .map_err(|e| forge_error(ctx, e))?;
    let summary = format!("Revision {revision} of PR #{number}: {line}");
    // The run's headline: a revision whose checks fail reads as one.
    let result = match verify.get("outcome").and_then(Value::as_str) {
        Some("unverified") => format!("Revision {revision} of PR #{number} pushed: checks failing"),
        Some("no_checks") => {
            format!("Revision {revision} of PR #{number} pushed: no checks to verify it")
        }
        _ => summary.clone(),
    };
    Ok(json!({
        "comment": comment.id,
        "url": comment.url,
        "ok": ok,
        "result": result,
        "summary": summary,
    }))
}

/// `body` with its `## Verification` section replaced by `section`: the section runs to the
/// next heading, `Fixes #`, the usage line or a hidden marker, whichever comes first. A body
/// without one gets it before `Fixes #` (or at the end).
fn replace_verification(body: &str, section: &str) -> String {
    let ends = ["\n## ", "\nFixes #", "\n<sub>", "\n<!-- baton:"];
    let first_end = |from: usize| {
        ends.iter()
            .filter_map(|e| body[from..].find(e).map(|i| from + i + 1))
            .min()
            .unwrap_or(body.len())
    };
    if let Some(start) = body.find("## Verification") {
        let end = first_end(start + 1);
        format!("{}{}\n{}", &body[..start], section.trim_end(), {
            let rest = &body[end..];
            if rest.is_empty() {
                String::new()
            } else {
                format!("\n{rest}")
            }
        })
    } else {
        let at = body.find("Fixes #").unwrap_or(body.len());
        format!("{}{}\n\n{}", &body[..at], section.trim_end(), &body[at..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_branches_of_the_repository_are_revised() {
        let repo = Repo::parse("Octo/App").unwrap();
        let pr = |head: &str, head_repo: Option<&str>| PullRequest {
            number: 3,
            title: "t".into(),
            body: String::new(),
            state: "open".into(),
            draft: false,
            merged: false,
            author: "ada".into(),
            head: head.into(),
            head_repo: head_repo.map(str::to_string),
            head_sha: "abc".into(),
            base: "main".into(),
            url: String::new(),
        };
        assert_eq!(
            not_revisable(&pr("fix/1", Some("octo/app")), &repo, "main"),
            None
        );
        let fork = not_revisable(&pr("fix/1", Some("mallory/app")), &repo, "main").unwrap();
        assert!(fork.contains("mallory/app"), "{fork}");
        let main = not_revisable(&pr("main", Some("octo/app")), &repo, "main").unwrap();
        assert!(main.contains("default branch"), "{main}");
        assert!(not_revisable(&pr("main", Some("mallory/app")), &repo, "main").is_some());
        assert!(not_revisable(&pr("fix/1", None), &repo, "main").is_some());
    }

    #[test]
    fn the_definition_is_valid_with_this_binarys_actions() {
        let wf = baton_actors::Workflow::new(definition(), "built-in", &crate::workflows::known)
            .expect("valid");
        assert_eq!(wf.id(), ID);
    }

    #[test]
    fn the_verification_section_is_replaced_and_the_rest_kept() {
        let body = "## Changes\n\n- Modified `a`\n\n## Verification\n\n❌ Tests: 1 passed, 2 failed\n\
                    \nBefore this change: x. After: y.\n\n<sub>agent</sub>\n\nFixes #1\n<!-- baton:run=r -->";
        let out = replace_verification(body, "## Verification\n\n✅ Tests: 3 passed\n");
        assert_eq!(
            out,
            "## Changes\n\n- Modified `a`\n\n## Verification\n\n✅ Tests: 3 passed\n\n<sub>agent</sub>\n\nFixes #1\n<!-- baton:run=r -->"
        );
        let none = replace_verification("Text.\n\nFixes #2\n", "## Verification\n\nok\n");
        assert_eq!(none, "Text.\n\n## Verification\n\nok\n\nFixes #2\n");
        let last = replace_verification("## Verification\n\nold\n", "## Verification\n\nnew\n");
        assert_eq!(last, "## Verification\n\nnew\n");
    }
}
