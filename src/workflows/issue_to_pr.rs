//! Issue → PR, the flagship: an issue comes in, a tested pull request goes out.
//!
//! Read [`DEFINITION`] top to bottom: it is the whole workflow, in the same TOML a user writes.
//! The spec's nine steps are there (parse, clone, branch, analyze, plan, implement, verify,
//! push and open the PR, post the summary), with the tests run once before implementing so the
//! PR can say what failed before and passes now, a fix loop, a rebase path and a gate for the
//! plan. Below it are the actions only this workflow uses; the generic ones (`git.*`, `agent.*`,
//! `forge.*`) are in `crate::actions`.
//!
//! Settings come from `[workflows.issue_to_pr]` in `config.toml`, and a repository's own
//! `.baton.toml` may override them in an `[issue_to_pr]` section. They are read once, in the
//! `analyze` step, and kept in the run's state: a resumed run keeps the settings it started with.
//!
//! The issue's body is data for the agent, never instructions to baton: it is sanitized (HTML
//! comments, zero-width and bidi characters removed) and only ever quoted.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;

use baton_actors::definition::Dur;
use baton_actors::{ActionContext, ActionError, Definition, Engine};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::actions::forge::{forge_error, number_param, repo_param};
use crate::actions::git;
use crate::agent::{self, analyze, BackendKind, IssueInput, Report};
use crate::forge::ForgeHandle;
use crate::notify::render::run_link;
use crate::sandbox;
use crate::verify::{self, Kind, Status, VerifyOptions};
use crate::workflows::trust::{self, Facts, OutsiderPatches};

/// The workflow's id (and the CLI's `baton issue-to-pr`).
pub const ID: &str = "issue_to_pr";

/// The actions this file registers.
pub const ACTIONS: [&str; 12] = [
    "issue_to_pr.parse",
    "issue_to_pr.rebase",
    "issue_to_pr.analyze",
    "issue_to_pr.settings",
    "issue_to_pr.plan",
    "issue_to_pr.verify",
    "issue_to_pr.sync",
    "issue_to_pr.describe",
    "issue_to_pr.publish_check",
    "issue_to_pr.local_ci",
    "issue_to_pr.ci_wait",
    "issue_to_pr.summary",
];

/// The workflow. Steps reached only by a `goto` (`fix`, `await_rebase`) sit right after the
/// step that jumps to them, and that step's `next` sends the usual path around them.
pub const DEFINITION: &str = r#"
id = "issue_to_pr"
name = "Issue to PR"
description = "Turns an issue into a tested pull request and reports on the issue"
version = 1
progress = true
# Abort and cancel keep the branch and the PR for a person to look at; `baton rollback --hard`
# closes the PR and deletes the remote and local branch.
rollback_on_abort = "soft"

[input]
repo = { required = true, description = "the repository, owner/name" }
issue = { required = true, description = "the issue number" }
agent = { default = "", description = "the agent backend (default: [agent] backend)" }
branch_suffix = { default = "", description = "appended to the branch name (a second run for one issue)" }

[[steps]]
id = "parse"
description = "Parse the issue"
action = "issue_to_pr.parse"
with = { repo = "{{ input.repo }}", issue = "{{ input.issue }}", agent = "{{ input.agent }}" }
retry = "forge"
set = { issue = "{{ steps.parse.output.issue }}", trusted = "{{ steps.parse.output.trusted }}" }

[[steps]]
id = "approve_outsider"
description = "Wait for someone with write access to approve the diff of an author without it"
# Only when the patch backend would apply a diff from someone without write access, and
# `outsider_patches = "wait"` (with "refuse", parse ends the run instead).
when = "steps.parse.output.needs_approval"
wait = { signal = "approve" }

[[steps]]
id = "clone"
description = "Clone the repository"
action = "git.clone"
with = { url = "{{ steps.parse.output.repository.clone_url }}", base = "{{ steps.parse.output.repository.default_branch }}", token_env = "{{ steps.parse.output.token_env }}" }
retry = "git"

[[steps]]
id = "branch"
description = "Create the branch"
action = "git.branch"
with = { issue = "{{ input.issue }}", labels = "{{ steps.parse.output.issue.labels }}", title = "{{ steps.parse.output.issue.title }}", suffix = "{{ input.branch_suffix }}" }
set = { branch = "{{ steps.branch.output.branch }}" }
compensate = { action = "git.rollback" }

[[steps]]
id = "analyze"
description = "Analyze the codebase"
action = "issue_to_pr.analyze"
with = { issue = "{{ steps.parse.output.issue }}", agent = "{{ input.agent }}" }
set = { settings = "{{ steps.analyze.output.settings }}" }

[[steps]]
id = "plan"
description = "Plan the implementation"
# With a model (openai, anthropic) the model reads the clone with the read-only tools and
# writes the plan; otherwise the plan is a heuristic, and says so. `state.plan` is its text:
# what a person approves, and what the implement step's prompt carries.
action = "issue_to_pr.plan"
with = { repo = "{{ input.repo }}", issue = "{{ steps.parse.output.issue }}", analysis = "{{ steps.analyze.output }}", agent = "{{ input.agent }}", approve = "{{ state.settings.approve_plan }}" }
retry = "agent"
set = { plan = "{{ steps.plan.output.text }}" }

[[steps]]
id = "approve_plan"
description = "Wait for approval of the plan"
# The plan step posted the plan on the issue, with how to approve it.
when = "state.settings.approve_plan"
wait = { signal = "approve" }

[[steps]]
id = "baseline"
description = "Run the tests before the change"
action = "issue_to_pr.verify"
with = { phase = "before", trusted = "{{ state.trusted }}", trust_reason = "{{ steps.parse.output.trust_reason }}" }
# A repository whose tests cannot run before the change still gets its change made.
on_failure = "skip"

[[steps]]
id = "implement"
description = "Implement the changes"
action = "agent.implement"
with = { issue = "{{ steps.parse.output.issue }}", backend = "{{ input.agent }}", trusted = "{{ state.trusted }}", trust_reason = "{{ steps.parse.output.trust_reason }}", plan = "{{ steps.plan.output }}", plan_approved = "{{ steps.approve_plan.status == 'completed' }}" }
retry = "agent"
compensate = { action = "git.rollback" }

[[steps]]
id = "verify"
description = "Run tests, lint and type checks"
action = "issue_to_pr.verify"
with = { phase = "after", trusted = "{{ state.trusted }}", trust_reason = "{{ steps.parse.output.trust_reason }}", pass = "{{ steps.verify.output.pass if steps.verify.output else 0 }}", baseline = "{{ steps.baseline.output }}", agent = "{{ steps.fix.output if steps.fix.output else steps.implement.output }}", backend = "{{ input.agent }}", on_tests_failed = "{{ state.settings.on_tests_failed }}" }
# With on_tests_failed = "wait", failing checks park the run here for a person:
# retry (verify again), skip (open a draft PR), abort or rollback.
on_failure = "pause"
next = [ { when = "steps.verify.output.fix", goto = "fix" }, { when = "true", goto = "commit" } ]

[[steps]]
id = "fix"
description = "Fix what verification found"
# Reached only through verify's `next`; a verify a person skipped goes on to commit.
when = "steps.verify.status == 'completed' and steps.verify.output.fix"
action = "agent.fix"
with = { report = "{{ steps.verify.output.agent }}", failure = "{{ steps.verify.output.failure }}", backend = "{{ input.agent }}", trusted = "{{ state.trusted }}", trust_reason = "{{ steps.parse.output.trust_reason }}" }
compensate = { action = "git.rollback" }
# A round that fails (a budget ran out) still goes back to verification, which counts it.
on_failure = "goto:verify"
next = [ { when = "true", goto = "verify" } ]

[[steps]]
id = "commit"
description = "Commit the changes"
action = "git.commit"
with = { message = "{{ steps.parse.output.commit_message }}" }
compensate = { action = "git.rollback" }

[[steps]]
id = "sync"
description = "Bring the branch up to date with its base"
action = "issue_to_pr.sync"
with = { auto_rebase = "{{ state.settings.auto_rebase }}" }
# A rebase that conflicts leaves the conflict in the clone and parks the run with the files
# named: resolve and retry, or abort. A rebased branch is verified again before it is pushed.
on_failure = "pause"
compensate = { action = "git.rollback" }
next = [ { when = "steps.sync.output.needs_rebase", goto = "await_rebase" }, { when = "steps.sync.output.rebased", goto = "verify" }, { when = "true", goto = "push" } ]

[[steps]]
id = "await_rebase"
description = "Wait for a decision on the rebase"
# Reached through sync's `next`; a sync a person skipped goes on to push.
when = "steps.sync.status == 'completed' and steps.sync.output.needs_rebase"
wait = { signal = "rebase" }

[[steps]]
id = "rebase"
description = "Rebase onto the base branch"
when = "steps.await_rebase.status == 'completed' and steps.sync.output.needs_rebase"
action = "issue_to_pr.rebase"
on_failure = "pause"
compensate = { action = "git.rollback" }
next = [ { when = "true", goto = "verify" } ]

[[steps]]
id = "push"
description = "Push the branch"
action = "git.push"
retry = "git"
compensate = { action = "git.rollback" }

[[steps]]
id = "describe"
description = "Write the pull request's description"
action = "issue_to_pr.describe"
with = { issue = "{{ steps.parse.output.issue }}", baseline = "{{ steps.baseline.output }}", verify = "{{ steps.verify.output }}", verify_status = "{{ steps.verify.status }}", agent = "{{ steps.fix.output if steps.fix.output else steps.implement.output }}", base = "{{ steps.parse.output.repository.default_branch }}" }

[[steps]]
id = "pr"
description = "Open the pull request"
action = "forge.ensure_pr"
with = { repo = "{{ input.repo }}", head = "{{ steps.push.output.branch }}", base = "{{ steps.parse.output.repository.default_branch }}", title = "{{ steps.describe.output.title }}", body = "{{ steps.describe.output.body }}", draft = "{{ steps.describe.output.draft }}" }
retry = "forge"
compensate = { action = "forge.close_pr", with = { repo = "{{ input.repo }}" } }
set = { pr = "{{ steps.pr.output }}", result = "{{ steps.pr.output.summary }}", outcome = "{{ steps.verify.output.outcome if steps.verify.status == 'completed' and steps.verify.output.outcome else 'unverified' }}" }

[[steps]]
id = "publish_check"
description = "Publish the verification as a check on the pushed commit"
# `baton / verify` on the exact commit pushed: a check run as a GitHub App, a commit status
# with a token, a stored check on the local forge. A forge that refuses it (a token without
# the statuses scope) costs the check, not the PR or the summary: the step shows the error.
action = "issue_to_pr.publish_check"
with = { repo = "{{ input.repo }}", sha = "{{ steps.push.output.pushed }}", verify = "{{ steps.verify.output }}", verify_status = "{{ steps.verify.status }}" }
retry = "forge"
on_failure = "skip"

[[steps]]
id = "local_ci"
description = "Run the repository's CI command on the pushed commit"
# `[ci] command` in `.baton.toml`: run in the sandbox on the clone at the commit pushed, as
# verify's checks are, and published as the check `ci`, which ci_wait then waits for like any.
when = "state.settings.ci == 'wait' and state.settings.ci_command"
action = "issue_to_pr.local_ci"
with = { repo = "{{ input.repo }}", sha = "{{ steps.push.output.pushed }}", command = "{{ state.settings.ci_command }}", trusted = "{{ state.trusted }}", trust_reason = "{{ steps.parse.output.trust_reason }}" }
retry = "forge"

[[steps]]
id = "ci_wait"
description = "Wait for the repository's CI on the pushed commit"
# With `ci = "wait"`: polls the checks on the very commit pushed (an older commit's results
# never count). All required checks pass: on to the summary. One fails: a fix round
# (`ci_fix`), at most once per failing commit and `max_ci_fix_rounds` in all; then, or when
# `ci_timeout` passes, the run waits for a person: retry (one more round), skip, abort.
when = "state.settings.ci == 'wait'"
action = "issue_to_pr.ci_wait"
with = { repo = "{{ input.repo }}", sha = "{{ steps.push.output.pushed }}", base = "{{ steps.parse.output.repository.default_branch }}", required = "{{ state.settings.required_checks }}", timeout = "{{ state.settings.ci_timeout }}", max_rounds = "{{ state.settings.max_ci_fix_rounds }}", previous = "{{ steps.ci_wait.output }}" }
timeout = "7d"
on_failure = "pause"
next = [ { when = "steps.ci_wait.output.fix", goto = "ci_fix" }, { when = "true", goto = "summary" } ]

[[steps]]
id = "ci_fix"
description = "Fix what the repository's CI found"
# Reached only through ci_wait's `next`; then the usual path again: verify, commit, sync,
# push, the PR, baton's check, and another wait.
when = "steps.ci_wait.status == 'completed' and steps.ci_wait.output.fix"
action = "agent.fix"
with = { report = "{{ steps.fix.output if steps.fix.output else steps.implement.output }}", failure = "{{ steps.ci_wait.output.failure }}", backend = "{{ input.agent }}", trusted = "{{ state.trusted }}", trust_reason = "{{ steps.parse.output.trust_reason }}" }
compensate = { action = "git.rollback" }
on_failure = "pause"
next = [ { when = "true", goto = "verify" } ]

[[steps]]
id = "summary"
description = "Post the summary on the issue"
action = "issue_to_pr.summary"
with = { repo = "{{ input.repo }}", issue = "{{ input.issue }}", pr = "{{ steps.pr.output }}", baseline = "{{ steps.baseline.output }}", verify = "{{ steps.verify.output }}", agent = "{{ steps.fix.output if steps.fix.output else steps.implement.output }}", outcome = "{{ state.outcome }}", ci = "{{ steps.ci_wait.output if steps.ci_wait.status == 'completed' else none }}" }
retry = "forge"
set = { result = "{{ steps.summary.output.result if steps.summary.output.result else state.result }}" }
"#;

/// What a revision started in place of a second run for an issue asks for (one open pull
/// request per issue): the issue again. Never starts with `@` (which `baton revise` reads as a
/// file name).
pub fn again_instructions(issue: u64, title: &str) -> String {
    let title = title.trim();
    let named = if title.is_empty() {
        format!("issue #{issue}")
    } else {
        format!("issue #{issue} ({title})")
    };
    format!("Work on {named} again: make this pull request resolve it, with its checks passing.")
}

/// The workflow as data.
pub fn definition() -> Definition {
    toml::from_str(DEFINITION).expect("the built-in issue_to_pr definition parses (tested)")
}

/// What to do when the checks still fail after the fix rounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnTestsFailed {
    /// Open the PR as a draft, marked as failing.
    #[default]
    DraftPr,
    /// Park the run for a person: retry, skip, abort or rollback.
    Wait,
}

/// Whether the run waits for the repository's own CI after each push to its PR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CiMode {
    /// Wait for the checks on the pushed commit; fix what fails.
    Wait,
    /// Open the PR and stop looking.
    Ignore,
}

/// `[workflows.issue_to_pr]` in `config.toml`, or `[issue_to_pr]` in a repository's
/// `.baton.toml` (which wins, key by key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Wait for approval after the plan.
    pub approve_plan: bool,
    /// After the fix rounds: `draft_pr` or `wait`.
    pub on_tests_failed: OnTestsFailed,
    /// Rebase onto a base branch that moved without asking.
    pub auto_rebase: bool,
    /// Revisions of one PR on review (`baton revise`, `/baton revise`, changes requested).
    pub max_revisions: u32,
    /// Delete the PR's branch when the `pull_request.closed` webhook says it was merged.
    pub delete_branch_on_merge: bool,
    /// `wait` or `ignore`; unset: `wait` when the repository has CI (a workflow under
    /// `.github/workflows/`, or a `[ci]` table in its `.baton.toml`), else `ignore`. Decided
    /// in the `analyze` step and kept in the run's state.
    pub ci: Option<CiMode>,
    /// How long one wait for CI lasts before the run waits for a person.
    pub ci_timeout: Dur,
    /// The checks that must pass; empty: those the base branch's protection requires, else
    /// every check on the commit but baton's own.
    pub required_checks: Vec<String>,
    /// Fix rounds for a failing CI before the run waits for a person.
    pub max_ci_fix_rounds: u32,
    /// How often a CI wait reads the checks when no news wakes it; unset: every 0.5 s on the
    /// local forge, 30 s on GitHub (a rate-limited API, whose webhooks wake the wait sooner).
    /// `config.toml` only.
    pub ci_poll: Option<Dur>,
    /// `.baton.toml`'s `[ci] command`: the repository's CI, run by baton in the sandbox on
    /// each commit it pushes and published as the check `ci`. Only from the repository.
    #[serde(skip_deserializing)]
    pub ci_command: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            approve_plan: false,
            on_tests_failed: OnTestsFailed::DraftPr,
            auto_rebase: false,
            max_revisions: 3,
            delete_branch_on_merge: false,
            ci: None,
            ci_timeout: Dur(std::time::Duration::from_secs(3600)),
            required_checks: Vec::new(),
            max_ci_fix_rounds: 2,
            ci_poll: None,
            ci_command: None,
        }
    }
}

/// A repository's overrides: every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RepoOverrides {
    approve_plan: Option<bool>,
    on_tests_failed: Option<OnTestsFailed>,
    auto_rebase: Option<bool>,
    ci: Option<CiMode>,
    ci_timeout: Option<Dur>,
    required_checks: Option<Vec<String>>,
    max_ci_fix_rounds: Option<u32>,
}

/// `.baton.toml`'s top-level `[ci]`: the repository has a CI that reports checks on its
/// commits (on the local forge, a person or a script posting them with `baton forge check
/// create`, or baton itself running `command`). A key it does not know is an error naming it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CiTable {
    /// A shell command baton runs in the sandbox on each commit it pushes, published as the
    /// check `ci` (a repository without a CI service of its own still gets one).
    command: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct BatonToml {
    #[serde(default)]
    issue_to_pr: Option<RepoOverrides>,
    #[serde(default)]
    ci: Option<CiTable>,
}

impl Settings {
    /// These settings with the repository's `.baton.toml` `[issue_to_pr]` applied.
    fn with_repo(&self, repo: &Path) -> Result<Settings, String> {
        let path = repo.join(verify::BATON_TOML);
        // A GitHub Actions workflow is a CI the run can wait for.
        let has_workflows = std::fs::read_dir(repo.join(".github/workflows")).is_ok_and(|d| {
            d.flatten().any(|e| {
                let name = e.file_name();
                let name = name.to_string_lossy();
                name.ends_with(".yml") || name.ends_with(".yaml")
            })
        });
        let text = match sandbox::tree::read_regular(&path, sandbox::tree::MAX_MANIFEST_BYTES) {
            Ok(text) => text,
            Err(sandbox::tree::NotRead::Absent) => {
                let mut settings = self.clone();
                settings.ci = Some(self.ci.unwrap_or(if has_workflows {
                    CiMode::Wait
                } else {
                    CiMode::Ignore
                }));
                return Ok(settings);
            }
            Err(why) => return Err(format!("{} {why}", verify::BATON_TOML)),
        };
        let file: BatonToml = toml::from_str(&text).map_err(|e| {
            // `[issue_to_pr]` or `[ci]`: the error names the key and its line.
            format!("{}: {}", verify::BATON_TOML, verify::toml_error(&text, &e))
        })?;
        let o = file.issue_to_pr.unwrap_or_default();
        let has_ci = has_workflows || file.ci.is_some();
        let ci_command = match file.ci.and_then(|c| c.command) {
            Some(command) if command.trim().is_empty() => {
                return Err(format!(
                    "{}: [ci] command is empty; remove it or name the command to run",
                    verify::BATON_TOML
                ))
            }
            command => command,
        };
        let ci =
            o.ci.or(self.ci)
                .unwrap_or(if has_ci { CiMode::Wait } else { CiMode::Ignore });
        Ok(Settings {
            approve_plan: o.approve_plan.unwrap_or(self.approve_plan),
            on_tests_failed: o.on_tests_failed.unwrap_or(self.on_tests_failed),
            auto_rebase: o.auto_rebase.unwrap_or(self.auto_rebase),
            max_revisions: self.max_revisions,
            delete_branch_on_merge: self.delete_branch_on_merge,
            ci: Some(ci),
            ci_timeout: o.ci_timeout.unwrap_or(self.ci_timeout),
            required_checks: o
                .required_checks
                .unwrap_or_else(|| self.required_checks.clone()),
            max_ci_fix_rounds: o.max_ci_fix_rounds.unwrap_or(self.max_ci_fix_rounds),
            ci_poll: self.ci_poll,
            ci_command,
        })
    }
}

/// What the actions of this file share.
struct Env {
    forge: ForgeHandle,
    /// `[limits] max_verifications`: the engine's verification slots.
    verify_slots: crate::verify::Slots,
    settings: Settings,
    agent: agent::AgentConfig,
    engine: Engine,
    /// `[server] public_url`: the PR description and the summary link to the run's page.
    public_url: Option<String>,
    /// `[limits]`: the summary reports spending against the caps.
    limits: crate::config::LimitsSection,
    /// `[sandbox] outsider_patches`: an outsider's diff waits for approval or is refused.
    outsider_patches: OutsiderPatches,
    /// The commits `ci_wait` waits on, woken by CI news (webhooks, `POST /api/ci/...`).
    ci_wakes: crate::ci::wake::CiWakes,
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
        ci_wakes: shared.ci_wakes.clone(),
        settings: config.workflows.issue_to_pr.clone(),
        agent: config.agent.clone(),
        engine: engine.clone(),
        public_url: config.server.public_url.clone(),
        limits: config.limits.clone(),
        outsider_patches: config.sandbox.outsider_patches,
    });
    super::action!(engine, env, "issue_to_pr.parse", parse);
    super::action!(engine, env, "issue_to_pr.analyze", analyze_repo);
    super::action!(engine, env, "issue_to_pr.settings", settings_step);
    super::action!(engine, env, "issue_to_pr.plan", plan);
    super::action!(engine, env, "issue_to_pr.verify", verify_step);
    super::action!(engine, env, "issue_to_pr.sync", sync);
    super::action!(engine, env, "issue_to_pr.rebase", rebase);
    super::action!(engine, env, "issue_to_pr.describe", describe);
    super::action!(engine, env, "issue_to_pr.publish_check", publish_check);
    super::action!(engine, env, "issue_to_pr.local_ci", local_ci);
    super::action!(engine, env, "issue_to_pr.ci_wait", ci_wait);
    super::action!(engine, env, "issue_to_pr.summary", summary);
}

// 1. Parse the issue.

/// Reads the issue and the repository from the forge; refuses a closed issue; keeps the
/// sanitized issue, its requirements and acceptance criteria.
async fn parse(ctx: &ActionContext, env: &Env) -> Result<Value, ActionError> {
    let forge = crate::actions::forge::forge_of(ctx, &env.forge)?;
    let repo = repo_param(ctx)?;
    let number = number_param(ctx, "issue")?;
    ctx.progress.say("Analyzing issue requirements...");
    let issue = forge
        .issue(&repo, number)
        .await
        .map_err(|e| forge_error(ctx, e))?;
    if issue.is_pull_request {
        return Err(ActionError::fatal(format!(
            "{repo}#{number} is a pull request, not an issue"
        )));
    }
    if issue.state != "open" {
        return Err(ActionError::fatal(format!(
            "issue {repo}#{number} is closed; reopen it to run baton on it"
        )));
    }
    // One open pull request per issue, however the run was started (the CLI and the webhook
    // ask before starting; the API and chat reach this).
    if let Some(pr) = forge
        .open_pull_request_for_issue(&repo, number)
        .await
        .map_err(|e| forge_error(ctx, e))?
    {
        return Err(ActionError::fatal(format!(
            "issue {repo}#{number} already has baton's open pull request #{pr} ({url}): revise it \
             (`baton revise {repo}#{pr}`, or `/baton revise` on it) or close it to start afresh",
            pr = pr.number,
            url = pr.url,
        )));
    }
    let crate::forge::CloneSource {
        repository: info,
        token_env,
    } = forge
        .clone_source(&repo, crate::forge::GitUse::Push)
        .await
        .map_err(|e| forge_error(ctx, e))?;
    let parsed = agent::Issue::parse(&IssueInput {
        number: Some(number),
        title: issue.title.clone(),
        body: issue.body.clone(),
        labels: issue.labels.clone(),
    });
    let requirements = requirements(&parsed.body, &parsed.acceptance_criteria);
    let bug = crate::workspace::is_bug(&parsed.labels, &parsed.title);
    let title = one_line(&parsed.title, 72);
    let commit_message = format!(
        "{} #{number}: {title}",
        if bug { "Fix" } else { "Implement" }
    );
    // Whose text this is decides whether its diff is applied, and how its code may run.
    let can_write = trust::can_write(forge.as_ref(), &repo, &issue.author)
        .await
        .map_err(|e| forge_error(ctx, e))?;
    let trust = Facts::of_author(&issue.author, can_write);
    // The patch backend applies the body's diff as written, so that is what waits for
    // approval; a model or a coding command takes the issue as untrusted data to work from.
    let backend = backend_param(ctx, env.agent.backend)?;
    let outsider_diff = !can_write
        && backend == BackendKind::Patch
        && !agent::issue::diff_blocks(&parsed.body).is_empty();
    let mut summary = format!(
        "Read issue #{number} ({} requirement(s), {} acceptance criteria)",
        requirements.len(),
        parsed.acceptance_criteria.len()
    );
    let mut approval = Value::Null;
    if outsider_diff {
        let by_comment = trust::started_by_webhook(&env.engine, &ctx.run_id);
        let outsider = trust::Outsider {
            repo: &repo,
            number,
            run: &ctx.run_id,
            by_comment,
            why: format!(
                "The diff in issue #{number} comes from @{}, who has no write access to {repo}",
                issue.author
            ),
            not_done: "does not apply it",
            as_read: "What is applied is the diff as baton read it now; later edits of the \
                      issue are not.",
        };
        match outsider
            .hold(forge.as_ref(), env.outsider_patches)
            .await
            .map_err(|e| forge_error(ctx, e))?
        {
            trust::Hold::Refuse(error) => {
                return Err(ActionError::fatal(error).with_output(json!({
                    "author": issue.author,
                    "author_can_write": false,
                    "trusted": trust.trusted,
                    "trust_reason": trust.trust_reason,
                })))
            }
            trust::Hold::Wait(record) => approval = record,
        }
        let _ = write!(
            summary,
            "; waiting: the diff comes from @{}, who has no write access; someone with write \
             access must approve: {}",
            issue.author,
            trust::how_to_approve(&ctx.run_id, by_comment)
        );
    }
    Ok(json!({
        "issue": {
            "number": number,
            "title": parsed.title,
            "body": parsed.body,
            "labels": parsed.labels,
            "url": issue.url,
            "author": issue.author,
        },
        "requirements": requirements,
        "acceptance_criteria": parsed.acceptance_criteria,
        "mentioned_files": parsed.mentioned_files,
        "repository": info,
        "token_env": token_env,
        "commit_message": commit_message,
        "author": issue.author,
        "author_can_write": can_write,
        "trusted": trust.trusted,
        "trust_reason": trust.trust_reason,
        "needs_approval": outsider_diff,
        "approval": approval,
        "summary": summary,
    }))
}

/// The step's `agent` parameter (the run's `agent` input), else `[agent] backend`.
fn backend_param(ctx: &ActionContext, configured: BackendKind) -> Result<BackendKind, ActionError> {
    match ctx.params.get("agent").and_then(Value::as_str) {
        Some(name) if !name.is_empty() => name
            .parse()
            .map_err(|e| ActionError::fatal(format!("step `{}`: input `agent`: {e}", ctx.step_id))),
        _ => Ok(configured),
    }
}

/// The body's list items that are not acceptance criteria, or its first paragraph.
fn requirements(body: &str, criteria: &[String]) -> Vec<String> {
    let mut in_code = false;
    let mut items = Vec::new();
    for line in body.lines() {
        let t = line.trim();
        if t.starts_with("```") || t.starts_with("~~~") {
            in_code = !in_code;
            continue;
        }
        if in_code {
            continue;
        }
        let item = t
            .strip_prefix("- ")
            .or_else(|| t.strip_prefix("* "))
            .map(|s| s.trim_start_matches("[ ] ").trim_start_matches("[x] "));
        if let Some(item) = item.map(str::trim).filter(|i| !i.is_empty()) {
            if !criteria.iter().any(|c| c == item) {
                items.push(item.to_string());
            }
        }
    }
    if items.is_empty() {
        let first = body
            .split("\n\n")
            .map(str::trim)
            .find(|p| !p.is_empty() && !p.starts_with("```") && !p.starts_with('#'));
        if let Some(p) = first {
            items.push(one_line(p, 200));
        }
    }
    items
}

// 4. Analyze the codebase (and settle the settings, now that the repository is here). This
// is the map: files, languages, and a ranking by the issue's words. With a model, the model
// reads the files itself in the plan step; the map is where it starts.

async fn analyze_repo(ctx: &ActionContext, env: &Env) -> Result<Value, ActionError> {
    let dir = crate::workspace::clone_dir(ctx)?;
    let issue = issue_param(ctx)?;
    let settings = repo_settings(ctx, env, &dir)?;
    let backend = backend_param(ctx, env.agent.backend)?;
    let parsed = agent::Issue::parse(&issue);
    let analysis = analyze::analyze(&dir, &parsed).await;
    let top: Vec<&str> = analysis
        .ranked
        .iter()
        .take(3)
        .map(|f| f.path.as_str())
        .collect();
    let languages: Vec<String> = analysis
        .languages
        .iter()
        .map(|(l, n)| format!("{l} ({n})"))
        .collect();
    let ranked: Vec<Value> = analysis
        .ranked
        .iter()
        .take(10)
        .map(|f| json!({"path": f.path, "symbols": f.symbols}))
        .collect();
    let top = if top.is_empty() {
        "none found".to_string()
    } else {
        top.join(", ")
    };
    let summary = if is_model(backend) {
        format!(
            "Mapped {} files; by the issue's words: {top} (`{}` reads them while planning)",
            analysis.file_count, env.agent.model
        )
    } else {
        format!(
            "Analyzed {} files; most relevant by the issue's words: {top}",
            analysis.file_count
        )
    };
    Ok(json!({
        "file_count": analysis.file_count,
        "languages": languages,
        "relevant": ranked,
        "settings": settings,
        "summary": summary,
    }))
}

/// `[workflows.issue_to_pr]` with the clone's `.baton.toml` applied; a bad `.baton.toml`
/// fails the step, naming the key.
fn repo_settings(ctx: &ActionContext, env: &Env, dir: &Path) -> Result<Settings, ActionError> {
    env.settings
        .with_repo(dir)
        .map_err(|e| ActionError::fatal(format!("step `{}`: {e}", ctx.step_id)))
}

/// The settings alone, read as `analyze` reads them, for a workflow that clones a repository
/// but does not analyze it (revise: its CI steps are this workflow's).
async fn settings_step(ctx: &ActionContext, env: &Env) -> Result<Value, ActionError> {
    let dir = crate::workspace::clone_dir(ctx)?;
    let settings = repo_settings(ctx, env, &dir)?;
    let ci = match settings.ci {
        Some(CiMode::Wait) => match &settings.ci_command {
            Some(command) => format!("waits for CI (runs `{}`)", one_line(command, 60)),
            None => "waits for CI".to_string(),
        },
        _ => "does not wait for CI".to_string(),
    };
    Ok(json!({ "settings": settings, "summary": format!("Read the settings: the run {ci}") }))
}

// 5. Plan: what will change and why, how, what is tested, what could go wrong. With a model,
// the model reads the clone through the agent's read-only tools (nothing is written, nothing
// of the repository runs) and writes the plan; the `patch` and `command` backends get the
// heuristic, which says it is one. The plan's text is what a person approves when
// `approve_plan` is on (posted on the issue), and the implement step's prompt carries it.
//
// A model that gives no complete plan within the `[agent]` budgets leaves the heuristic plan,
// which names the model and why: the run goes on (or waits for approval) rather than failing,
// since implementing works without a plan too. A model that cannot be reached fails the step,
// as it would fail the implement step.

async fn plan(ctx: &ActionContext, env: &Env) -> Result<Value, ActionError> {
    let dir = crate::workspace::clone_dir(ctx)?;
    let issue = issue_param(ctx)?;
    let parsed = agent::Issue::parse(&issue);
    let backend = backend_param(ctx, env.agent.backend)?;
    let checks = planned_checks(&dir);
    let mut out = if is_model(backend) {
        model_plan(ctx, env, backend, &dir, &issue, &parsed, &checks).await?
    } else {
        let why = match backend {
            BackendKind::Command => "backend `command`: the coding command plans with its own \
                                     tools, which baton cannot make read-only"
                .to_string(),
            _ => format!("no model configured: backend `{}`", backend.as_str()),
        };
        heuristic_plan(ctx, &parsed, &checks, &why)
    };
    if flag_param(ctx, "approve") {
        post_for_approval(ctx, env, &issue, &mut out).await?;
    }
    Ok(out)
}

/// The model's plan, or the heuristic one saying why the model gave none.
async fn model_plan(
    ctx: &ActionContext,
    env: &Env,
    backend: BackendKind,
    dir: &Path,
    issue: &IssueInput,
    parsed: &agent::Issue,
    checks: &[String],
) -> Result<Value, ActionError> {
    let config = agent::AgentConfig {
        backend,
        ..env.agent.clone()
    };
    // The default trust (untrusted) is the agent's strictest; planning runs nothing anyway.
    let planner = agent::Agent::new(config, &agent::ProviderEnv::from_process())
        .map_err(|e| ActionError::fatal(format!("step `{}`: {e}", ctx.step_id)))?;
    crate::spending::admit(ctx, &env.engine, &env.limits).await?;
    let planning = planner
        .plan(dir, issue, &ctx.progress, &ctx.cancel)
        .await
        .map_err(crate::actions::agent::agent_error)?;
    let model = planning.model.clone();
    let mut out = match &planning.plan {
        Some(p) => {
            let mut text = format!("Plan by `{model}`, from reading the repository:\n\n");
            text.push_str(&p.render());
            must_hold_and_verify(&mut text, parsed, checks);
            json!({
                "source": "model",
                "files": p.files_to_touch,
                "acceptance_criteria": parsed.acceptance_criteria,
                "checks": checks,
                "text": text,
                "summary": format!(
                    "Planned with `{model}`: change {}; {} step(s), {} test(s), {} risk(s)",
                    list_or(&p.files_to_touch, "no file"),
                    p.steps.len(),
                    p.tests_to_add.len(),
                    p.risks.len()
                ),
            })
        }
        None => {
            let why = planning
                .no_plan
                .clone()
                .unwrap_or_else(|| "no reason given".into());
            heuristic_plan(
                ctx,
                parsed,
                checks,
                &format!("`{model}` gave no plan: {why}"),
            )
        }
    };
    out["model"] = json!(model);
    out["plan"] = serde_json::to_value(&planning.plan).unwrap_or(Value::Null);
    out["no_plan"] = json!(planning.no_plan);
    // What planning spent: the spending caps count a step's `usage`, and the implement step
    // adds it to the run's cost budget and total.
    out["usage"] = serde_json::to_value(&planning.usage).unwrap_or(Value::Null);
    out["transcript"] = serde_json::to_value(&planning.transcript).unwrap_or(Value::Null);
    Ok(out)
}

/// The plan without a model: the files an issue's diff touches, else the paths it names, else
/// the top of the word ranking; its text starts by saying it is a heuristic, and why.
fn heuristic_plan(
    ctx: &ActionContext,
    parsed: &agent::Issue,
    checks: &[String],
    why: &str,
) -> Value {
    // Files a diff in the issue touches come first: they are what the change will be.
    let mut files: Vec<String> = parsed
        .code_blocks
        .iter()
        .filter(|b| b.lang == "diff" || b.lang == "patch")
        .flat_map(|b| diff_paths(&b.code))
        .collect();
    if files.is_empty() {
        files = parsed.mentioned_files.clone();
    }
    if files.is_empty() {
        if let Some(Value::Array(relevant)) = ctx.params.pointer("/analysis/relevant") {
            files = relevant
                .iter()
                .filter_map(|f| f.get("path").and_then(Value::as_str))
                .take(3)
                .map(str::to_string)
                .collect();
        }
    }
    files.dedup();
    let mut text = format!(
        "Heuristic plan ({why}). The files are guessed from the issue's diff, the paths it \
         names or a ranking of the repository by the issue's words; no model read them.\n\n"
    );
    let _ = writeln!(text, "Change: {}", list_or(&files, "files the agent finds"));
    must_hold_and_verify(&mut text, parsed, checks);
    ctx.progress.say(format!("Heuristic plan ({why})"));
    json!({
        "source": "heuristic",
        "files": files,
        "acceptance_criteria": parsed.acceptance_criteria,
        "checks": checks,
        "text": text,
        "summary": format!(
            "Heuristic plan: change {}; verify with {}",
            list_or(&files, "the files the agent finds"),
            checks.join(", ")
        ),
    })
}

/// The checks the repository has, as the plan names them.
fn planned_checks(dir: &Path) -> Vec<String> {
    let mut checks: Vec<String> = match verify::detect_checks(dir) {
        Ok(checks) => checks
            .iter()
            .map(|c| format!("{} (`{}`)", c.kind.as_str(), c.command))
            .collect(),
        Err(e) => vec![format!("nothing ({e})")],
    };
    if checks.is_empty() {
        checks.push("nothing: no checks found (a .baton.toml [[verify.checks]] adds some)".into());
    }
    checks
}

/// The plan's closing lines: the issue's acceptance criteria and the checks that verify it.
fn must_hold_and_verify(text: &mut String, parsed: &agent::Issue, checks: &[String]) {
    for c in &parsed.acceptance_criteria {
        let _ = writeln!(text, "Must hold: {c}");
    }
    let _ = writeln!(text, "Verify with: {}", checks.join(", "));
}

/// Posts the plan on the issue for approval (one comment, edited when the step is retried)
/// and says so in the step's summary.
async fn post_for_approval(
    ctx: &ActionContext,
    env: &Env,
    issue: &IssueInput,
    out: &mut Value,
) -> Result<(), ActionError> {
    let forge = crate::actions::forge::forge_of(ctx, &env.forge)?;
    let repo = repo_param(ctx)?;
    let number = issue.number.unwrap_or(0);
    let text = out["text"].as_str().unwrap_or_default();
    let how = trust::how_to_approve(
        &ctx.run_id,
        trust::started_by_webhook(&env.engine, &ctx.run_id),
    );
    let body = format!(
        "📋 **The plan for this issue**, waiting for approval before anything changes.\n\n         {text}\nApprove it: {how}. `baton reject {run}` refuses it.\n",
        run = ctx.run_id
    );
    forge
        .upsert_comment(&repo, number, &ctx.run_id, Some("plan"), &body)
        .await
        .map_err(|e| forge_error(ctx, e))?;
    let summary = out["summary"].as_str().unwrap_or_default().to_string();
    out["summary"] = json!(format!("{summary}; posted for approval"));
    Ok(())
}

/// Whether `backend` is a model that takes baton's tools (and so can plan by reading).
fn is_model(backend: BackendKind) -> bool {
    matches!(backend, BackendKind::Openai | BackendKind::Anthropic)
}

/// A boolean parameter, rendered as a bool or as the text `true`.
fn flag_param(ctx: &ActionContext, key: &str) -> bool {
    matches!(ctx.params.get(key), Some(Value::Bool(true)))
        || ctx.params.get(key).and_then(Value::as_str) == Some("true")
}

/// The paths a unified diff changes (`+++ b/path`, or `--- a/path` for a deletion).
fn diff_paths(diff: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut old = None;
    for line in diff.lines() {
        if let Some(p) = line.strip_prefix("--- ") {
            old = Some(p.trim().trim_start_matches("a/").to_string());
        } else if let Some(p) = line.strip_prefix("+++ ") {
            let p = p.trim();
            let path = if p == "/dev/null" {
                old.take()
            } else {
                Some(p.trim_start_matches("b/").to_string())
            };
            if let Some(path) = path.filter(|p| p != "/dev/null") {
                if !out.contains(&path) {
                    out.push(path);
                }
            }
        }
    }
    out
}

// 7. Verify: before the change (tests only, for the PR's "before") and after it (everything),
// deciding whether a fix round follows.

async fn verify_step(ctx: &ActionContext, env: &Env) -> Result<Value, ActionError> {
    let dir = crate::workspace::clone_dir(ctx)?;
    let before = ctx.param_str("phase")? == "before";
    let opts = VerifyOptions {
        run_in: verify::RunIn::Decide(crate::sandbox::Trust::from_params(&ctx.params)),
        cache: Some(crate::sandbox::run_cache_dir(&dir)),
        only: before.then(|| vec![Kind::Tests]),
        // `.baton.toml`'s `[verify] fail_fast` decides; by default every check runs and the PR
        // reports them all.
        fail_fast: None,
        ..VerifyOptions::default()
    };
    ctx.progress.say(if before {
        "Running the tests before the change..."
    } else {
        "Running tests, lint and type checks..."
    });
    let ws = git::open_workspace(ctx, &env.forge).await?;
    let report = verify::in_clone(ctx, &env.verify_slots, &ws, &dir, &opts).await?;
    let report = match report {
        Ok(report) => report,
        Err(e @ verify::Error::NoChecks { .. }) if !before => {
            // Nothing to run: the PR says so and goes out as a draft.
            return Ok(json!({
                "ok": false,
                "fix": false,
                "checks": [],
                "markdown": format!("## Verification\n\n⚠️ Not verified: {e}\n"),
                "line": "no checks found",
                "agent": ctx.params.get("agent").cloned().unwrap_or(Value::Null),
                "pass": 1,
                "outcome": "no_checks",
                "summary": "No checks found to verify the change",
            }));
        }
        Err(e) => return Err(ActionError::fatal(format!("step `{}`: {e}", ctx.step_id))),
    };
    let line = tests_line(&report);
    let mut out = serde_json::to_value(&report).unwrap_or(Value::Null);
    if before {
        out["summary"] = json!(format!("Before the change: {line}"));
        out["line"] = json!(line);
        return Ok(out);
    }
    let agent_report: Option<Report> = ctx
        .params
        .get("agent")
        .filter(|v| !v.is_null())
        .and_then(|v| serde_json::from_value(v.clone()).ok());
    let backend = match ctx.params.get("backend").and_then(Value::as_str) {
        Some(b) if !b.is_empty() => b.parse::<BackendKind>().unwrap_or(env.agent.backend),
        _ => env.agent.backend,
    };
    // Passes through this step so far: each fix round (finished or not) and each rebase
    // brings the run back here, so this bounds the loop whatever the agent reports.
    let pass = match ctx.params.get("pass") {
        Some(Value::Number(n)) => n.as_u64().unwrap_or(0),
        Some(Value::String(s)) => s.parse().unwrap_or(0),
        _ => 0,
    } + 1;
    let round = agent_report
        .as_ref()
        .map_or(0, |r| r.round)
        .max(u32::try_from(pass - 1).unwrap_or(u32::MAX));
    // The patch backend applies the issue's diff and has nothing more to try.
    let can_fix = backend != BackendKind::Patch && agent_report.is_some();
    // Tests that already failed before the change may be the issue's own (then they must pass)
    // or unrelated ones: which is which is not known here, so they count as failures, and the
    // PR says they failed before too.
    let preexisting = !report.ok && only_old_failures(&report, ctx.params.get("baseline"));
    let fix = !report.ok && can_fix && round < env.agent.fix_rounds;
    let failure = failure_text(&report);
    out["preexisting"] = json!(preexisting);
    out["pass"] = json!(pass);
    out["line"] = json!(line);
    out["fix"] = json!(fix);
    out["failure"] = json!(failure);
    out["agent"] = ctx.params.get("agent").cloned().unwrap_or(Value::Null);
    out["outcome"] = json!(if report.ok { "verified" } else { "unverified" });
    // The progress checklist marks this step failed rather than ticking it.
    out["checks_failed"] = json!(!report.ok);
    out["summary"] = json!(if report.ok {
        format!("Running tests... {line}")
    } else {
        failed_line(&report)
    });
    if report.ok || fix {
        return Ok(out);
    }
    let wait = ctx.params.get("on_tests_failed").and_then(Value::as_str) == Some("wait");
    if wait {
        // The rounds the agent ran, not the passes here: a plain retry verifies again
        // without one.
        let fix_rounds = agent_report.as_ref().map_or(0, |r| r.round);
        let after = match fix_rounds {
            0 => String::new(),
            1 => " after 1 fix round".to_string(),
            n => format!(" after {n} fix rounds"),
        };
        return Err(ActionError::fatal(format!(
            "verification failed{after}: {}; retry, skip (opens a draft PR), abort or roll back",
            failing_names(&report)
        ))
        .with_output(out));
    }
    Ok(out)
}

/// Whether every failing critical check is a tests check whose failing tests (all named) also
/// failed in the `baseline` report, run before the change.
fn only_old_failures(report: &verify::Report, baseline: Option<&Value>) -> bool {
    let Some(before) = baseline
        .filter(|b| !b.is_null())
        .and_then(|b| serde_json::from_value::<verify::Report>(b.clone()).ok())
    else {
        return false;
    };
    let failed_before: Vec<&String> = before
        .checks
        .iter()
        .filter(|c| c.kind == Kind::Tests)
        .flat_map(|c| &c.failures)
        .collect();
    let failing: Vec<&verify::CheckResult> = report
        .checks
        .iter()
        .filter(|c| c.critical && matches!(c.status, Status::Failed | Status::Error))
        .collect();
    !failing.is_empty()
        && failing.iter().all(|c| {
            c.kind == Kind::Tests
                && c.status == Status::Failed
                && !c.failures.is_empty()
                && c.failures.iter().all(|f| failed_before.contains(&f))
        })
}

/// "42 passed, 0 failed", from the tests check(s); what the other checks say when there are none.
pub(crate) fn tests_line(report: &verify::Report) -> String {
    let tests: Vec<&verify::CheckResult> = report
        .checks
        .iter()
        .filter(|c| c.kind == Kind::Tests)
        .collect();
    if tests.is_empty() {
        return if report.ok {
            "checks passed".into()
        } else {
            "checks failed".into()
        };
    }
    let (mut passed, mut failed, mut known) = (0, 0, true);
    for c in &tests {
        match (c.passed, c.failed) {
            (Some(p), Some(f)) => {
                passed += p;
                failed += f;
            }
            _ => known = false,
        }
    }
    if known {
        format!("{passed} passed, {failed} failed")
    } else if tests.iter().all(|c| c.status == Status::Passed) {
        "tests passed (counts unknown)".into()
    } else {
        "tests failed (counts unknown)".into()
    }
}

/// The failing checks with their failing names and output tails: what the agent's fix round
/// and the report get.
fn failure_text(report: &verify::Report) -> String {
    let mut out = String::new();
    for c in &report.checks {
        if matches!(c.status, Status::Failed | Status::Error) {
            let _ = writeln!(out, "{} failed: `{}`", c.kind.as_str(), c.command);
            for name in c.failures.iter().take(20) {
                let _ = writeln!(out, "  failing: {name}");
            }
            if let Some(e) = &c.error {
                let _ = writeln!(out, "  {e}");
            }
            let _ = writeln!(out, "{}", c.output_tail);
        }
    }
    out
}

/// The spec's error update for checks that failed, less its ❌ (the checklist and the terminal
/// mark the step failed): "Test suite failed: 2 tests failing", or the kinds of check that
/// failed when no test failed.
pub(crate) fn failed_line(report: &verify::Report) -> String {
    let failing_tests: u64 = report
        .checks
        .iter()
        .filter(|c| c.kind == Kind::Tests)
        .filter_map(|c| c.failed)
        .sum();
    if failing_tests > 0 {
        let s = if failing_tests == 1 { "" } else { "s" };
        return format!("Test suite failed: {failing_tests} test{s} failing");
    }
    let mut kinds: Vec<&str> = report
        .checks
        .iter()
        .filter(|c| matches!(c.status, Status::Failed | Status::Error))
        .map(|c| c.kind.as_str())
        .collect();
    kinds.dedup();
    if kinds.is_empty() {
        "Checks failed".to_string()
    } else {
        format!("Checks failed: {}", kinds.join(", "))
    }
}

fn failing_names(report: &verify::Report) -> String {
    let mut names = Vec::new();
    for c in &report.checks {
        if matches!(c.status, Status::Failed | Status::Error) {
            if c.failures.is_empty() {
                names.push(format!("{} (`{}`)", c.kind.as_str(), c.command));
            } else {
                names.extend(c.failures.iter().take(5).cloned());
            }
        }
    }
    names.join(", ")
}

// 8a. Sync: has the base branch moved since the clone, and does the branch still apply?

async fn sync(ctx: &ActionContext, env: &Env) -> Result<Value, ActionError> {
    let auto_rebase = matches!(ctx.params.get("auto_rebase"), Some(Value::Bool(true)))
        || ctx.params.get("auto_rebase").and_then(Value::as_str) == Some("true");
    let ws = git::open_workspace(ctx, &env.forge).await?;
    let base = ws.base().to_string();
    if ws.rebase_in_progress() {
        // A retry after a person resolved the conflicts this step left.
        return rebase_with(ctx, &ws).await;
    }
    let state = ws
        .base_state()
        .await
        .map_err(|e| crate::workspace::step_failure(ctx, e))?;
    if state.behind == 0 {
        return Ok(json!({
            "moved": false,
            "needs_rebase": false,
            "rebased": false,
            "summary": format!("Up to date with `{base}`"),
        }));
    }
    if auto_rebase {
        ctx.progress.say(format!(
            "`{base}` moved by {} commit(s); rebasing...",
            state.behind
        ));
        return rebase_with(ctx, &ws).await;
    }
    if state.conflicts.is_empty() {
        // The PR merges cleanly as it is: no need to rewrite the branch.
        return Ok(json!({
            "moved": true,
            "needs_rebase": false,
            "rebased": false,
            "behind": state.behind,
            "summary": format!("`{base}` moved by {} commit(s); no conflicts", state.behind),
        }));
    }
    ctx.progress.say(format!(
        "`{base}` moved and conflicts in {}: `baton signal {} rebase` to rebase, or abort",
        state.conflicts.join(", "),
        ctx.run_id
    ));
    Ok(json!({
        "moved": true,
        "needs_rebase": true,
        "rebased": false,
        "behind": state.behind,
        "conflicts": state.conflicts,
        "summary": format!(
            "`{base}` moved by {} commit(s) and conflicts in {}; waiting for a decision on the rebase",
            state.behind,
            state.conflicts.join(", ")
        ),
    }))
}

/// `issue_to_pr.rebase`: the rebase a person asked for (`baton signal RUN rebase`).
async fn rebase(ctx: &ActionContext, env: &Env) -> Result<Value, ActionError> {
    let ws = git::open_workspace(ctx, &env.forge).await?;
    rebase_with(ctx, &ws).await
}

/// Rebases onto the base (or continues a rebase stopped earlier). A conflict is left in the
/// clone and parks the run (`on_failure = "pause"`) with the files named: a person resolves
/// them there and `baton retry` continues; abort or rollback puts the branch back.
async fn rebase_with(
    ctx: &ActionContext,
    ws: &crate::workspace::Workspace<baton_actors::ChangeJournal>,
) -> Result<Value, ActionError> {
    let base = ws.base().to_string();
    match ws
        .rebase_for_person()
        .await
        .map_err(|e| crate::workspace::step_failure(ctx, e))?
    {
        crate::workspace::RebaseStop::Done { head } => Ok(json!({
            "moved": true,
            "needs_rebase": false,
            "rebased": true,
            "head": head,
            "summary": format!("Rebased onto `{base}`; verifying again"),
        })),
        crate::workspace::RebaseStop::Conflicts(files) => Err(ActionError::fatal(format!(
            "rebasing onto `{base}` conflicts in {}: resolve them in {} (edit, then `git add`) and \
             `baton retry {run}`; or `baton abort {run}` / `baton rollback {run} --hard`",
            files.join(", "),
            ws.root().display(),
            run = ctx.run_id
        ))
        .with_output(json!({ "moved": true, "conflicts": files }))),
    }
}

// 8b. Describe the PR in the spec's format: Changes, Verification, Fixes #N.

async fn describe(ctx: &ActionContext, env: &Env) -> Result<Value, ActionError> {
    let issue = ctx.params.get("issue").cloned().unwrap_or(Value::Null);
    let number = issue.get("number").and_then(Value::as_u64).unwrap_or(0);
    let title = issue.get("title").and_then(Value::as_str).unwrap_or("");
    let base = ctx.param_str("base")?;
    let agent: Option<Report> = ctx
        .params
        .get("agent")
        .filter(|v| !v.is_null())
        .and_then(|v| serde_json::from_value(v.clone()).ok());
    let verify = ctx.params.get("verify").filter(|v| !v.is_null());
    let baseline = ctx.params.get("baseline").filter(|v| !v.is_null());
    let skipped = ctx.params.get("verify_status").and_then(Value::as_str) == Some("skipped");
    let flag = |key: &str| verify.and_then(|v| v.get(key)).and_then(Value::as_bool) == Some(true);
    let preexisting = !skipped && flag("preexisting");
    let ok = !skipped && flag("ok");

    let ws = git::open_workspace(ctx, &env.forge).await?;
    let stats = ws
        .diff_stat(&format!("origin/{base}"))
        .await
        .map_err(|e| crate::workspace::step_failure(ctx, e))?;
    let mut body = String::from("## Changes\n\n");
    if let Some(agent::Outcome::Finished { summary }) = agent.as_ref().map(|r| &r.outcome) {
        let summary = summary.trim();
        if !summary.is_empty() {
            let _ = writeln!(body, "{}\n", one_line(summary, 400));
        }
    }
    for s in &stats {
        let kind = agent
            .as_ref()
            .and_then(|r| r.changes.iter().find(|c| c.path == s.path))
            .map(|c| c.kind);
        let verb = match (kind, s.added, s.removed) {
            (Some(agent::ChangeKind::Created), ..) => "Added",
            (Some(agent::ChangeKind::Deleted), ..) => "Deleted",
            (None, _, 0) if s.new_file => "Added",
            _ => "Modified",
        };
        let _ = writeln!(body, "- {verb} `{}` (+{} −{})", s.path, s.added, s.removed);
    }
    if stats.is_empty() {
        body.push_str("- No file changed\n");
    }
    body.push('\n');
    match verify {
        Some(v) => {
            let md = v.get("markdown").and_then(Value::as_str).unwrap_or("");
            body.push_str(md.trim_end());
            body.push('\n');
        }
        None => body.push_str("## Verification\n\n⚠️ Not verified\n"),
    }
    if preexisting {
        body.push_str("\n❗ Every failing test above also failed before this change.\n");
    }
    if skipped {
        body.push_str(
            "\n⚠️ Verification did not pass and a person skipped verification to open this PR.\n",
        );
    }
    if let Some(b) = baseline {
        let before = b.get("line").and_then(Value::as_str).unwrap_or("unknown");
        let after = verify
            .and_then(|v| v.get("line"))
            .and_then(Value::as_str)
            .unwrap_or("not run");
        let _ = writeln!(body, "\nBefore this change: {before}. After: {after}.");
    }
    if !ok {
        body.push_str("\n> [!WARNING]\n> Verification did not pass: this pull request is a draft for a person to finish.\n");
    }
    if let Some(r) = &agent {
        let _ = writeln!(body, "\n<sub>{}</sub>", usage_line(r, None));
    }
    if let Some(link) = run_link(env.public_url.as_deref(), &ctx.run_id) {
        let _ = writeln!(body, "\n<sub>baton run: {link}</sub>");
    }
    let _ = write!(body, "\nFixes #{number}\n");
    let prefix = if ok { "" } else { "[failing] " };
    Ok(json!({
        "title": format!("{prefix}{}", one_line(title, 100)),
        "body": body,
        "draft": !ok,
        "summary": format!("Described {} changed file(s)", stats.len()),
    }))
}

/// What failed, in words for a headline: "tests failing", "lint failing", or "verification
/// skipped" when a person skipped it.
fn failing_words(ctx: &ActionContext) -> String {
    let Some(verify) = ctx.params.get("verify").filter(|v| !v.is_null()) else {
        return "verification skipped".to_string();
    };
    let failed: Vec<&str> = verify
        .get("checks")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|c| {
            matches!(
                c.get("status").and_then(Value::as_str),
                Some("failed" | "error")
            )
        })
        .filter_map(|c| c.get("kind").and_then(Value::as_str))
        .collect();
    match failed.first() {
        None => "checks failing".to_string(),
        Some(kind) => format!("{kind} failing"),
    }
}

/// For a run whose checks still fail: the model's suggested fixes (marked as the model's, not
/// measured), or, without a model, how to configure one. A model that fails says so; it never
/// fails the summary.
async fn suggested_fixes(ctx: &ActionContext, env: &Env) -> String {
    const HEADING: &str = "### 🤖 Model's suggested fixes, not measured";
    if !agent::ask::has_model(&env.agent) {
        return "No model is configured to suggest fixes: set `[agent] backend = \"openai\"` \
                (or `\"anthropic\"`) and `[agent] model`, with `OPENAI_API_KEY` (or \
                `ANTHROPIC_API_KEY`) in the daemon's environment.\n"
            .to_string();
    }
    let failure = ctx
        .params
        .get("verify")
        .and_then(|v| v.get("failure"))
        .and_then(Value::as_str)
        .unwrap_or("the checks failed; no output was kept");
    let asked = agent::ask::ask(
        &env.agent,
        &agent::ProviderEnv::from_process(),
        "These checks still fail after a change made for an issue. Suggest up to five concrete \
         fixes as `- ` bullets, each naming the file (and line when you can) and what to \
         change. Say `No suggestions.` if you have none.",
        failure,
        &ctx.cancel,
    )
    .await;
    match asked {
        Ok(Some(text)) => format!("{HEADING}\n\n{text}\n"),
        Ok(None) => String::new(),
        // The provider's own words stay out of the comment: they may name hosts.
        Err(_) => format!(
            "{HEADING}\n\n_Missing: the model could not be asked (see run `{}`)._\n",
            ctx.run_id
        ),
    }
}

// 8c. Publish the measured verification as a check on the commit pushed.

async fn publish_check(ctx: &ActionContext, env: &Env) -> Result<Value, ActionError> {
    let forge = crate::actions::forge::forge_of(ctx, &env.forge)?;
    let repo = repo_param(ctx)?;
    let sha = ctx.param_str("sha")?.to_string();
    let verify = ctx
        .params
        .get("verify")
        .filter(|v| !v.is_null() && ctx.params.get("verify_status") == Some(&json!("completed")));
    let root = crate::workspace::clone_dir(ctx)?;
    let check = verification_check(verify, &sha, &root.to_string_lossy(), env, &ctx.run_id);
    ctx.progress.say(format!(
        "Publishing `{}` ({}) on {}...",
        check.name,
        check.conclusion,
        git::short(&sha)
    ));
    let published = forge
        .publish_check(&repo, &check)
        .await
        .map_err(|e| forge_error(ctx, e))?;
    Ok(json!({
        "id": published.id,
        "name": published.name,
        "sha": published.head_sha,
        "conclusion": check.conclusion,
        "annotations": check.annotations.len(),
        "summary": format!(
            "Published `{}` on {}: {}",
            check.name,
            git::short(&sha),
            check.title
        ),
    }))
}

/// baton's check for the verify step's `output` (`None`: a person skipped verification): its
/// measured lines as the summary, its verdict as the conclusion, and the failing checks'
/// findings on lines of the commit as annotations.
fn verification_check(
    output: Option<&Value>,
    sha: &str,
    root: &str,
    env: &Env,
    run_id: &str,
) -> crate::forge::NewCheck {
    use crate::forge::checks::{Conclusion, BATON_CHECK};
    let details_url = run_link(env.public_url.as_deref(), run_id);
    let mut check = crate::forge::NewCheck {
        name: BATON_CHECK.to_string(),
        head_sha: sha.to_string(),
        conclusion: Conclusion::Neutral,
        title: String::new(),
        summary: String::new(),
        details_url,
        log: None,
        annotations: Vec::new(),
    };
    let Some(output) = output else {
        check.title = "Not verified: a person skipped verification".into();
        check.summary = "baton did not verify this commit: a person skipped verification.".into();
        return check;
    };
    let markdown = output.get("markdown").and_then(Value::as_str).unwrap_or("");
    check.summary = markdown.trim().to_string();
    if output.get("outcome").and_then(Value::as_str) == Some("no_checks") {
        check.title = "Not verified: no checks found".into();
        return check;
    }
    let Ok(report) = serde_json::from_value::<verify::Report>(output.clone()) else {
        check.title = "Not verified: the verification report could not be read".into();
        return check;
    };
    check.title = if report.ok {
        tests_line(&report)
    } else {
        failed_line(&report)
    };
    check.conclusion = if report.ok {
        Conclusion::Success
    } else {
        Conclusion::Failure
    };
    for c in &report.checks {
        if matches!(c.status, Status::Failed | Status::Error) {
            check
                .annotations
                .extend(verify::annotations::parse(&c.output_tail, root));
        }
    }
    check
        .annotations
        .truncate(crate::forge::checks::MAX_ANNOTATIONS);
    check
}

// 8d. Run the repository's own CI command (`[ci] command`) on the pushed commit.

/// The check `[ci] command` is published as.
pub const LOCAL_CI_CHECK: &str = "ci";

async fn local_ci(ctx: &ActionContext, env: &Env) -> Result<Value, ActionError> {
    let forge = crate::actions::forge::forge_of(ctx, &env.forge)?;
    let repo = repo_param(ctx)?;
    let sha = ctx.param_str("sha")?.to_string();
    let command = ctx.param_str("command")?.to_string();
    let dir = crate::workspace::clone_dir(ctx)?;
    let ws = git::open_workspace(ctx, &env.forge).await?;
    // The clone must be at the commit pushed: the check is published on that sha.
    let head = ws
        .head()
        .await
        .map_err(|e| ActionError::fatal(format!("step `{}`: {e}", ctx.step_id)))?;
    if head != sha {
        return Err(ActionError::fatal(format!(
            "step `{}`: the clone is at {}, not at the pushed commit {}",
            ctx.step_id,
            git::short(&head),
            git::short(&sha)
        )));
    }
    let opts = VerifyOptions {
        // Repository code: where `[sandbox]` puts code of this run's trust, as verify does.
        run_in: verify::RunIn::Decide(crate::sandbox::Trust::from_params(&ctx.params)),
        cache: Some(crate::sandbox::run_cache_dir(&dir)),
        checks: vec![verify::CheckSpec {
            kind: Kind::Custom,
            command: command.clone(),
            critical: true,
            timeout: None,
        }],
        only_these: true,
        // Enough of the log for the excerpt to find the failure in.
        tail_bytes: crate::ci::MAX_EXCERPT_BYTES * 4,
        ..VerifyOptions::default()
    };
    ctx.progress.say(format!(
        "Running CI (`{}`) on {}...",
        one_line(&command, 60),
        git::short(&sha)
    ));
    let report = verify::in_clone(ctx, &env.verify_slots, &ws, &dir, &opts)
        .await?
        .map_err(|e| ActionError::fatal(format!("step `{}`: {e}", ctx.step_id)))?;
    let check = local_ci_check(&report, &sha);
    let published = forge
        .publish_check(&repo, &check)
        .await
        .map_err(|e| forge_error(ctx, e))?;
    Ok(json!({
        "id": published.id,
        "name": LOCAL_CI_CHECK,
        "sha": sha,
        "conclusion": check.conclusion,
        "summary": format!("CI `{}` on {}: {}", one_line(&command, 60), git::short(&sha), check.title),
    }))
}

/// The check `ci` for the report of `[ci] command`: success when it passed, else failure with
/// its output cut to the failure as the log.
fn local_ci_check(report: &verify::Report, sha: &str) -> crate::forge::NewCheck {
    use crate::forge::checks::Conclusion;
    let result = report.checks.first();
    let log = result.map_or_else(String::new, |c| {
        let mut log = c.output_tail.clone();
        if let Some(error) = &c.error {
            log.push_str(&format!("\n{error}"));
        }
        log
    });
    // The command is in the step's summary and the check's text; the title says how it ended.
    let title = match result {
        Some(c) if c.status == Status::Passed => "passed".to_string(),
        Some(c) => match (c.exit_code, &c.error) {
            (_, Some(error)) => format!("failed: {}", one_line(error, 100)),
            (Some(code), None) => format!("exited {code}"),
            (None, None) => "failed".to_string(),
        },
        None => "not run".to_string(),
    };
    crate::forge::NewCheck {
        name: LOCAL_CI_CHECK.to_string(),
        head_sha: sha.to_string(),
        conclusion: if report.ok {
            Conclusion::Success
        } else {
            Conclusion::Failure
        },
        title,
        summary: report.markdown.trim().to_string(),
        details_url: None,
        log: (!log.trim().is_empty()).then(|| crate::ci::excerpt(&log)),
        annotations: Vec::new(),
    }
}

// 8e. Wait for the repository's CI on the pushed commit; hand a failure to a fix round.

/// How often the checks are read without news: `ci_poll` when set; else the local forge is a
/// directory, GitHub a rate-limited API.
fn ci_poll(configured: Option<Dur>, forge_kind: &str) -> std::time::Duration {
    if let Some(poll) = configured {
        poll.0
    } else if forge_kind == "local" {
        std::time::Duration::from_millis(500)
    } else {
        std::time::Duration::from_secs(30)
    }
}

async fn ci_wait(ctx: &ActionContext, env: &Env) -> Result<Value, ActionError> {
    let forge = crate::actions::forge::forge_of(ctx, &env.forge)?;
    let repo = repo_param(ctx)?;
    let sha = ctx.param_str("sha")?.to_string();
    let mut required: Vec<String> = ctx
        .params
        .get("required")
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .unwrap_or_default();
    if required.is_empty() {
        // Unset: what the base branch's protection requires, else every check.
        let base = ctx.param_str("base")?;
        required = forge
            .required_checks(&repo, base)
            .await
            .map_err(|e| forge_error(ctx, e))?;
    }
    let timeout: Dur = ctx
        .param_str("timeout")?
        .parse()
        .map_err(|e| ActionError::fatal(format!("step `{}`: ci_timeout: {e}", ctx.step_id)))?;
    let max_rounds = number_of(ctx.params.get("max_rounds")).unwrap_or(2);
    // What earlier passes through this step decided, kept in its output (the run's record):
    // the rounds started, the commits already given one, the rounds allowed (a person's
    // retry after the limit allows one more).
    let previous = ctx.params.get("previous").filter(|v| v.is_object());
    let mut rounds = previous
        .and_then(|p| number_of(p.get("rounds")))
        .unwrap_or(0);
    let mut fixed: Vec<String> = previous
        .and_then(|p| p.get("fixed"))
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .unwrap_or_default();
    if let Some(p) = previous.filter(|p| p.get("fix") == Some(&json!(true))) {
        rounds += 1;
        if let Some(s) = p.get("sha").and_then(Value::as_str) {
            fixed.push(s.to_string());
        }
    }
    let mut allowed = previous
        .and_then(|p| number_of(p.get("allowed")))
        .unwrap_or(max_rounds);
    let person_retried = previous.and_then(|p| p.get("waiting_for_person")) == Some(&json!(true));
    if person_retried {
        allowed += 1;
    }
    let poll = ci_poll(env.settings.ci_poll, forge.kind());
    let deadline = std::time::Instant::now() + timeout.0;
    let mut said = String::new();
    // Watched before the first read, so news that lands during it is not lost. A wake only
    // brings the next read forward: the decision below is made from the checks read and the
    // record, never from the news itself.
    let watch = env.ci_wakes.watch(&sha);
    let verdict = loop {
        // A read that fails (the forge briefly away) is tried again at the next poll.
        let checks = match forge.checks_for(&repo, &sha).await {
            Ok(checks) => checks,
            Err(e) if e.is_retryable() => Vec::new(),
            Err(e) => return Err(forge_error(ctx, e)),
        };
        match crate::ci::verdict(&checks, &required) {
            crate::ci::Verdict::Pending { done, total } => {
                let line = crate::ci::waiting_line(&sha, done, total);
                if line != said {
                    ctx.progress.say(&line);
                    said = line;
                }
            }
            done => break done,
        }
        if std::time::Instant::now() >= deadline {
            return Err(ActionError::fatal(format!(
                "CI on `{}` did not finish within {timeout} ({said}); retry to wait again, \
                 skip to go on without it, or abort",
                git::short(&sha)
            ))
            .with_output(json!({
                "sha": sha, "rounds": rounds, "fixed": fixed, "allowed": allowed,
                "waiting_for_person": false, "passed": false, "fix": false,
                "summary": format!("CI on `{}` timed out", git::short(&sha)),
            })));
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        tokio::select! {
            _ = tokio::time::sleep(poll.min(left)) => {}
            _ = watch.woken() => {}
            _ = ctx.cancel.cancelled() => {
                return Err(ActionError::fatal("cancelled while waiting for CI"));
            }
        }
    };
    drop(watch);
    let (failing, names) = match verdict {
        crate::ci::Verdict::Passed { names } => {
            return Ok(json!({
                "sha": sha, "rounds": rounds, "fixed": fixed, "allowed": allowed,
                "passed": true, "fix": false, "checks": names,
                "summary": format!(
                    "CI passed on `{}`: {}",
                    git::short(&sha),
                    names.join(", ")
                ),
            }));
        }
        crate::ci::Verdict::Failed { failing, names } => (failing, names),
        crate::ci::Verdict::Pending { .. } => unreachable!("the loop ends on a verdict"),
    };
    let failing_names: Vec<&str> = failing.iter().map(|c| c.name.as_str()).collect();
    let mut failure = format!(
        "The repository's CI failed on commit {sha}: {}.\n",
        failing_names.join(", ")
    );
    for check in &failing {
        // The job's full log where the forge keeps one (GitHub Actions), else the check's own
        // log, else its summary. A log that cannot be read costs only its detail.
        let job_log = match check.log.as_deref().filter(|l| !l.trim().is_empty()) {
            Some(_) => None,
            None => match forge.check_log(&repo, check).await {
                Ok(log) => log,
                Err(e) => {
                    tracing::warn!(check = %check.name, error = %e, "the CI job's log could not be read");
                    None
                }
            },
        };
        let log = job_log
            .as_deref()
            .or(check.log.as_deref())
            .filter(|l| !l.trim().is_empty())
            .unwrap_or(&check.summary);
        let _ = write!(
            failure,
            "\n## {} ({})\n\n{}\n",
            check.name,
            check.conclusion.map_or("failed", |c| c.as_str()),
            if check.title.is_empty() {
                ""
            } else {
                &check.title
            }
        );
        if !log.trim().is_empty() {
            let _ = write!(failure, "\n```\n{}\n```\n", crate::ci::excerpt(log));
        }
    }
    // One fix round per failing commit, however often its failure is read; and a bounded
    // number in all.
    let again = fixed.iter().any(|s| s == &sha) && !person_retried;
    if !again && rounds < allowed {
        return Ok(json!({
            "sha": sha, "rounds": rounds, "fixed": fixed, "allowed": allowed,
            "passed": false, "fix": true, "checks": names, "failing": failing_names,
            "failure": failure,
            "summary": format!(
                "CI failed on `{}`: {}; fix round {} of {allowed}",
                git::short(&sha),
                failing_names.join(", "),
                rounds + 1
            ),
        }));
    }
    let why = if again {
        "the fix round for this commit changed nothing that was pushed".to_string()
    } else {
        format!("{rounds} fix round(s) done, the most `max_ci_fix_rounds` allows")
    };
    Err(ActionError::fatal(format!(
        "CI still fails on `{}` ({why}): {}; retry for one more fix round, skip to go on \
         without it, or abort",
        git::short(&sha),
        failing_names.join(", ")
    ))
    .with_output(json!({
        "sha": sha, "rounds": rounds, "fixed": fixed, "allowed": allowed,
        "waiting_for_person": true, "passed": false, "fix": false,
        "checks": names, "failing": failing_names, "failure": failure,
        "summary": format!("CI still fails on `{}`: {}", git::short(&sha), failing_names.join(", ")),
    })))
}

/// A count in a step parameter, written as a number or its text.
fn number_of(value: Option<&Value>) -> Option<u32> {
    match value? {
        Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

// 9. Post the summary on the issue: the PR, the measured verification and what the run cost.

async fn summary(ctx: &ActionContext, env: &Env) -> Result<Value, ActionError> {
    let forge = crate::actions::forge::forge_of(ctx, &env.forge)?;
    let repo = repo_param(ctx)?;
    let number = number_param(ctx, "issue")?;
    let pr = ctx.params.get("pr").cloned().unwrap_or(Value::Null);
    let pr_number = pr.get("number").and_then(Value::as_u64).unwrap_or(0);
    let pr_url = pr.get("url").and_then(Value::as_str).unwrap_or("");
    let draft = pr.get("draft").and_then(Value::as_bool).unwrap_or(false);
    let agent: Option<Report> = ctx
        .params
        .get("agent")
        .filter(|v| !v.is_null())
        .and_then(|v| serde_json::from_value(v.clone()).ok());
    let started = env.engine.head(&ctx.run_id).ok().and_then(|h| h.started_at);
    let wall = started.map(|s| baton_actors::now_ms().saturating_sub(s) as f64 / 1000.0);
    let mut body = String::new();
    if draft {
        let _ = writeln!(
            body,
            "⚠️ Opened draft PR #{pr_number}: verification did not pass. {pr_url}\n"
        );
    } else {
        let _ = writeln!(body, "✅ Opened PR #{pr_number}: {pr_url}\n");
    }
    if let Some(b) = ctx.params.get("baseline").filter(|v| !v.is_null()) {
        let before = b.get("line").and_then(Value::as_str).unwrap_or("unknown");
        let _ = writeln!(body, "Tests before the change: {before}\n");
    }
    match ctx.params.get("verify").filter(|v| !v.is_null()) {
        Some(v) => {
            let md = v.get("markdown").and_then(Value::as_str).unwrap_or("");
            body.push_str(md.trim_end());
            body.push('\n');
        }
        None => body.push_str("Verification was skipped by a person.\n"),
    }
    body.push('\n');
    if let Some(ci) = ctx
        .params
        .get("ci")
        .filter(|v| v.get("passed") == Some(&json!(true)))
    {
        let names: Vec<&str> = ci
            .get("checks")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let sha = ci.get("sha").and_then(Value::as_str).unwrap_or("");
        let _ = writeln!(
            body,
            "✅ CI passed on `{}`: {}\n",
            git::short(sha),
            names.join(", ")
        );
    }
    if ctx.params.get("outcome").and_then(Value::as_str) == Some("unverified") {
        body.push_str(&suggested_fixes(ctx, env).await);
        body.push('\n');
    }
    match &agent {
        Some(r) => {
            let _ = writeln!(body, "Cost: {}", usage_line(r, wall));
        }
        None => {
            if let Some(w) = wall {
                let _ = writeln!(body, "Cost: {w:.0} s wall time");
            }
        }
    }
    if let Ok(spent) = crate::spending::measure(&env.engine, &env.limits) {
        if let Some(line) = spent.summary_line(&repo.to_string(), env.limits.on_cap) {
            let _ = writeln!(body, "\n{line}");
        }
    }
    if let Some(link) = run_link(env.public_url.as_deref(), &ctx.run_id) {
        let _ = writeln!(body, "\nRun: {link}");
    }
    let comment = forge
        .upsert_comment(&repo, number, &ctx.run_id, Some("summary"), &body)
        .await
        .map_err(|e| forge_error(ctx, e))?;
    // The run's headline: what a person needs from it in one line.
    // Verified, the pull request step's own line stands ("Created PR #N").
    let result = match ctx.params.get("outcome").and_then(Value::as_str) {
        Some("unverified") => format!("Draft PR #{pr_number} opened: {}", failing_words(ctx)),
        Some("no_checks") => format!("Draft PR #{pr_number} opened: no checks to verify it"),
        _ => String::new(),
    };
    Ok(json!({
        "comment": comment.id,
        "url": comment.url,
        "result": result,
        "summary": format!("Posted the summary on issue #{number}"),
    }))
}

/// "1,234 tokens in, 567 out, $0.02, 3 turns, 41 s": what the agent used (dollars only when
/// the model is priced), and the run's wall time when known.
pub(crate) fn usage_line(r: &Report, wall_secs: Option<f64>) -> String {
    let u = &r.total_usage;
    let mut parts = vec![format!("agent `{}`", r.backend)];
    if u.input_tokens > 0 || u.output_tokens > 0 {
        parts.push(format!(
            "{} tokens in, {} out",
            u.input_tokens, u.output_tokens
        ));
        if u.cost_usd > 0.0 {
            parts.push(format!("${:.2}", u.cost_usd));
        }
        parts.push(format!("{} turn(s)", u.turns));
    } else {
        parts.push("no model tokens".into());
    }
    if let Some(w) = wall_secs {
        parts.push(format!("{w:.0} s wall time"));
    }
    parts.join(", ")
}

// Shared helpers.

/// The `issue` parameter (`{number, title, body, labels}`) as the agent takes it.
fn issue_param(ctx: &ActionContext) -> Result<IssueInput, ActionError> {
    let issue = ctx.params.get("issue").ok_or_else(|| {
        ActionError::fatal(format!("step `{}`: missing parameter `issue`", ctx.step_id))
    })?;
    serde_json::from_value::<IssueInput>(json!({
        "number": issue.get("number"),
        "title": issue.get("title").and_then(Value::as_str).unwrap_or(""),
        "body": issue.get("body").and_then(Value::as_str).unwrap_or(""),
        "labels": issue.get("labels").cloned().unwrap_or(json!([])),
    }))
    .map_err(|e| ActionError::fatal(format!("step `{}`: parameter `issue`: {e}", ctx.step_id)))
}

/// The first line of `text`, cut at `max` characters.
pub(crate) fn one_line(text: &str, max: usize) -> String {
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    if line.chars().count() <= max {
        line.to_string()
    } else {
        let cut: String = line.chars().take(max.saturating_sub(1)).collect();
        format!("{cut}…")
    }
}

fn list_or(items: &[String], empty: &str) -> String {
    if items.is_empty() {
        empty.to_string()
    } else {
        items
            .iter()
            .map(|f| format!("`{f}`"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_definition_is_valid_with_this_binarys_actions() {
        let wf = baton_actors::Workflow::new(definition(), "built-in", &crate::workflows::known)
            .expect("valid");
        assert_eq!(wf.id(), ID);
        assert!(wf.def.progress);
    }

    #[test]
    fn diff_paths_cover_create_modify_delete() {
        let diff = "--- a/src/lib.rs\n+++ b/src/lib.rs\n@@ -1 +1 @@\n-a\n+b\n\
                    --- /dev/null\n+++ b/new.txt\n@@ -0,0 +1 @@\n+x\n\
                    --- a/old.txt\n+++ /dev/null\n@@ -1 +0,0 @@\n-y\n";
        assert_eq!(diff_paths(diff), vec!["src/lib.rs", "new.txt", "old.txt"]);
    }

    #[test]
    fn requirements_skip_code_and_criteria() {
        let body = "Do this:\n\n- parse dates\n- [ ] handles leap years\n\n```\n- not this\n```\n";
        let r = requirements(body, &["handles leap years".to_string()]);
        assert_eq!(r, vec!["parse dates"]);
        assert_eq!(
            requirements("Just a sentence.\n\nMore.", &[]),
            vec!["Just a sentence."]
        );
    }

    #[test]
    fn repo_settings_override_key_by_key_and_refuse_typos() {
        let dir = tempfile::tempdir().unwrap();
        let base = Settings::default();
        // No `.baton.toml` and no workflow: no CI to wait for.
        let plain = base.with_repo(dir.path()).unwrap();
        assert_eq!(plain.ci, Some(CiMode::Ignore));
        assert_eq!(Settings { ci: None, ..plain }, base);
        // A GitHub Actions workflow is a CI; `ci` set by the operator wins over detection.
        std::fs::create_dir_all(dir.path().join(".github/workflows")).unwrap();
        std::fs::write(dir.path().join(".github/workflows/ci.yml"), "on: push\n").unwrap();
        assert_eq!(base.with_repo(dir.path()).unwrap().ci, Some(CiMode::Wait));
        let ignoring = Settings {
            ci: Some(CiMode::Ignore),
            ..Settings::default()
        };
        assert_eq!(
            ignoring.with_repo(dir.path()).unwrap().ci,
            Some(CiMode::Ignore)
        );
        std::fs::remove_dir_all(dir.path().join(".github")).unwrap();
        // `[ci]` is a CI too; the repository's CI keys override the operator's.
        std::fs::write(
            dir.path().join(".baton.toml"),
            "[ci]\n[issue_to_pr]\nmax_ci_fix_rounds = 5\nci_timeout = \"20m\"\nrequired_checks = [\"test\"]\n",
        )
        .unwrap();
        let s = base.with_repo(dir.path()).unwrap();
        assert_eq!(s.ci, Some(CiMode::Wait));
        assert_eq!(s.max_ci_fix_rounds, 5);
        assert_eq!(s.ci_timeout.to_string(), "1200s");
        assert_eq!(s.required_checks, ["test"]);
        assert_eq!(s.ci_command, None);
        // `[ci] command`: baton runs the repository's CI itself; empty, or a key `[ci]` does
        // not know, is an error naming it.
        std::fs::write(
            dir.path().join(".baton.toml"),
            "[ci]\ncommand = \"make ci\"\n",
        )
        .unwrap();
        let s = base.with_repo(dir.path()).unwrap();
        assert_eq!(
            (s.ci, s.ci_command.as_deref()),
            (Some(CiMode::Wait), Some("make ci"))
        );
        std::fs::write(dir.path().join(".baton.toml"), "[ci]\ncommand = \" \"\n").unwrap();
        let err = base.with_repo(dir.path()).unwrap_err();
        assert!(err.contains("[ci] command is empty"), "{err}");
        std::fs::write(
            dir.path().join(".baton.toml"),
            "[ci]\ncomand = \"make ci\"\n",
        )
        .unwrap();
        let err = base.with_repo(dir.path()).unwrap_err();
        assert!(err.contains("comand"), "{err}");
        std::fs::write(
            dir.path().join(".baton.toml"),
            "[issue_to_pr]\non_tests_failed = \"wait\"\n",
        )
        .unwrap();
        let s = base.with_repo(dir.path()).unwrap();
        assert_eq!(s.on_tests_failed, OnTestsFailed::Wait);
        assert!(!s.approve_plan);
        std::fs::write(
            dir.path().join(".baton.toml"),
            "[issue_to_pr]\nauto_rebas = true\n",
        )
        .unwrap();
        let err = base.with_repo(dir.path()).unwrap_err();
        assert!(err.contains("auto_rebas"), "{err}");
        // What protects the repository is the operator's: the repository cannot loosen it.
        std::fs::write(
            dir.path().join(".baton.toml"),
            "[issue_to_pr]\noutsider_patches = \"wait\"\n",
        )
        .unwrap();
        let err = base.with_repo(dir.path()).unwrap_err();
        assert!(err.contains("outsider_patches"), "{err}");
    }

    #[test]
    fn outsider_patches_wait_by_default_and_refuse_when_configured() {
        let parse = |text: &str| crate::config::Config::parse(text, "c.toml");
        assert_eq!(
            parse("").unwrap().sandbox.outsider_patches,
            OutsiderPatches::Wait
        );
        let c = parse("[sandbox]\noutsider_patches = \"refuse\"\n").unwrap();
        assert_eq!(c.sandbox.outsider_patches, OutsiderPatches::Refuse);
        let err = parse("[sandbox]\noutsider_patches = \"ignore\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("`ignore`") && err.contains("refuse"), "{err}");
    }
}
