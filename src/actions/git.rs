//! The git and verification actions.
//!
//! The git actions work on one clone per run, `<workspace>/repo` (or the `dir` parameter,
//! relative to the run's workspace), cloned through the mirror cache `<data_dir>/mirrors`.
//! Every change they make is recorded in the run's change journal before it is made, so
//! `git.rollback`, used as a step's `compensate`, can undo the step's changes newest first.
//! A token reaches git only from the environment variable named by `token_env`. Later steps
//! find the clone's URL, base branch and `token_env` in the run's record of the `git.clone`
//! step's output (the engine shares it, see [`register`]), never in the clone's `.git/config`,
//! which the code run in the clone can write.

use std::path::{Path, PathBuf};

use baton_actors::{ActionContext, ActionError, ChangeJournal, Engine};
use serde_json::{json, Value};

use octocrab::secrecy::ExposeSecret;

use crate::forge::ForgeHandle;
use crate::verify::{self, Kind, Slots, VerifyOptions};
use crate::workspace::{self, Change, CloneOptions, Credentials, Identity, MirrorCache, Workspace};

/// The actions this module registers (see [`register`]).
pub(super) const NAMES: [&str; 10] = [
    "git.clone",
    "git.branch",
    "git.write",
    "git.delete",
    "git.commit",
    "git.push",
    "git.rebase",
    "git.rollback",
    "verify",
    "verify.report",
];

/// Where baton before the run's record kept the name of the token's variable: read only for
/// a run whose `git.clone` step finished under such a baton (its output has no `token_env`).
const LEGACY_TOKEN_ENV_KEY: &str = "baton.tokenEnv";

/// Change types the workspace knows how to undo.
const GIT_CHANGES: [&str; 7] = [
    "file_create",
    "file_modify",
    "file_delete",
    "branch_create",
    "commit",
    "push",
    "rebase",
];

/// Registers the git and verification actions with `engine`; later steps of a run receive the
/// outputs of its `git.clone` steps, their record of the clone.
pub fn register(engine: &Engine, slots: &Slots, forge: &ForgeHandle) {
    engine.share_outputs_of("git.clone");
    let forge_of_clone = forge.clone();
    engine.register_action("git.clone", move |ctx: ActionContext| {
        let forge = forge_of_clone.clone();
        async move { git_clone(ctx, &forge).await }
    });
    let forge_of_branch = forge.clone();
    engine.register_action("git.branch", move |ctx: ActionContext| {
        let forge = forge_of_branch.clone();
        async move { git_branch(ctx, &forge).await }
    });
    let forge_of_write = forge.clone();
    engine.register_action("git.write", move |ctx: ActionContext| {
        let forge = forge_of_write.clone();
        async move { git_write(ctx, &forge).await }
    });
    let forge_of_delete = forge.clone();
    engine.register_action("git.delete", move |ctx: ActionContext| {
        let forge = forge_of_delete.clone();
        async move { git_delete(ctx, &forge).await }
    });
    let forge_of_commit = forge.clone();
    engine.register_action("git.commit", move |ctx: ActionContext| {
        let forge = forge_of_commit.clone();
        async move { git_commit(ctx, &forge).await }
    });
    let forge_of_push = forge.clone();
    engine.register_action("git.push", move |ctx: ActionContext| {
        let forge = forge_of_push.clone();
        async move { git_push(ctx, &forge).await }
    });
    let forge_of_rebase = forge.clone();
    engine.register_action("git.rebase", move |ctx: ActionContext| {
        let forge = forge_of_rebase.clone();
        async move { git_rebase(ctx, &forge).await }
    });
    let forge_of_rollback = forge.clone();
    engine.register_action("git.rollback", move |ctx: ActionContext| {
        let forge = forge_of_rollback.clone();
        async move { git_rollback(ctx, &forge).await }
    });
    let verify_slots = slots.clone();
    engine.register_action("verify", move |ctx: ActionContext| {
        let slots = verify_slots.clone();
        async move { run_verify(ctx, &slots, true).await }
    });
    let report_slots = slots.clone();
    engine.register_action("verify.report", move |ctx: ActionContext| {
        let slots = report_slots.clone();
        async move { run_verify(ctx, &slots, false).await }
    });
}

/// `git.clone {url, base?, token_env?, dir?, spare?}`: clones through the mirror cache.
/// Running it again over the same clone (a retried or resumed attempt) reopens it.
async fn git_clone(ctx: ActionContext, forge: &ForgeHandle) -> Result<Value, ActionError> {
    let url = ctx.param_str("url")?.to_string();
    let base = opt_str(&ctx, "base")?;
    let token_env = opt_str(&ctx, "token_env")?;
    let spare = opt_bool(&ctx, "spare")?.unwrap_or(false);
    let dest = workspace::repo_dir(&ctx)?;
    let credentials = credentials(&ctx, token_env.as_deref(), &url, forge).await?;
    let ws = if dest.join(".git").exists() {
        // A retried or resumed attempt, or a second clone step on the same `dir`: the clone's
        // own config is only compared with the parameters here; git talks to `url` alone.
        let (cloned_url, cloned_base) = Workspace::<ChangeJournal>::cloned_from(&dest)
            .await
            .map_err(|e| workspace::step_failure(&ctx, e))?;
        if cloned_url != url {
            return Err(ActionError::fatal(format!(
                "step `{}`: {} is already a clone of another repository",
                ctx.step_id,
                dest.display()
            )));
        }
        let base = base.unwrap_or(cloned_base);
        Workspace::open(
            &dest,
            &url,
            &base,
            credentials,
            Identity::default(),
            ctx.journal.clone(),
        )
        .await
        .map_err(|e| workspace::step_failure(&ctx, e))?
    } else {
        let cache = MirrorCache::new(&data_dir(&ctx)?).with_spare(spare);
        let mut opts = CloneOptions::new(url, &dest);
        opts.base = base;
        opts.credentials = credentials;
        ctx.progress.say(format!("cloning into {}", dest.display()));
        Workspace::clone(&cache, opts, ctx.journal.clone())
            .await
            .map_err(|e| workspace::step_failure(&ctx, e))?
    };
    let head = ws
        .head()
        .await
        .map_err(|e| workspace::step_failure(&ctx, e))?;
    // The record later steps go by: `url` never carries credentials (`check_url` refuses them).
    Ok(json!({
        "dir": ws.root(),
        "url": ws.url(),
        "base": ws.base(),
        "token_env": token_env,
        "head": head,
        "summary": format!("Cloned `{}` at {}", ws.base(), short(&head)),
    }))
}

/// `git.branch {issue, labels?, title?, suffix?}`: creates and checks out `fix/issue-N` or
/// `feature/issue-N` (`suffix` appended after a `-`; a further `-2`, `-3`… when taken). A retried attempt that finds itself already
/// on a branch it made for this issue keeps it.
async fn git_branch(ctx: ActionContext, forge: &ForgeHandle) -> Result<Value, ActionError> {
    let issue = baton_actors::subject::number(ctx.params.get("issue")).ok_or_else(|| {
        ActionError::fatal(format!(
            "step `{}`: parameter `issue` must be an issue number",
            ctx.step_id
        ))
    })?;
    let labels: Vec<String> = match ctx.params.get("labels") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
            .collect(),
        Some(Value::String(s)) => s
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
        Some(other) => {
            return Err(ActionError::fatal(format!(
            "step `{}`: parameter `labels` must be a list or a comma-separated string, got {other}",
            ctx.step_id
        )))
        }
    };
    let title = opt_str(&ctx, "title")?.unwrap_or_default();
    let suffix = opt_str(&ctx, "suffix")?;
    let ws = open_workspace(&ctx, forge).await?;
    let mut wanted = workspace::branch_base_name(issue, &labels, &title);
    if let Some(suffix) = &suffix {
        wanted = format!("{wanted}-{suffix}");
    }
    let current = ws
        .current_branch()
        .await
        .map_err(|e| workspace::step_failure(&ctx, e))?;
    let ours = current == wanted
        || current
            .strip_prefix(&format!("{wanted}-"))
            .is_some_and(|n| n.parse::<u32>().is_ok());
    let branch = if ours && current != ws.base() {
        current
    } else {
        ws.create_branch(&wanted)
            .await
            .map_err(|e| workspace::step_failure(&ctx, e))?
    };
    ctx.progress.say(format!("on branch {branch}"));
    Ok(json!({
        "branch": branch,
        "base": ws.base(),
        "summary": format!("Created branch `{branch}`"),
    }))
}

/// `git.write {path, content}`: creates or replaces a file in the clone.
async fn git_write(ctx: ActionContext, forge: &ForgeHandle) -> Result<Value, ActionError> {
    let path = ctx.param_str("path")?.to_string();
    let content = match ctx.params.get("content") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => {
            return Err(ActionError::fatal(format!(
                "step `{}`: missing parameter `content`",
                ctx.step_id
            )))
        }
        Some(other) => other.to_string(),
    };
    let ws = open_workspace(&ctx, forge).await?;
    ws.write_file(&path, content.as_bytes())
        .await
        .map_err(|e| workspace::step_failure(&ctx, e))?;
    Ok(json!({ "path": path, "bytes": content.len() }))
}

/// `git.delete {path}`: deletes a file in the clone.
async fn git_delete(ctx: ActionContext, forge: &ForgeHandle) -> Result<Value, ActionError> {
    let path = ctx.param_str("path")?.to_string();
    let ws = open_workspace(&ctx, forge).await?;
    ws.delete_file(&path)
        .await
        .map_err(|e| workspace::step_failure(&ctx, e))?;
    Ok(json!({ "path": path, "deleted": true }))
}

/// `git.commit {message}`: commits everything changed in the clone.
async fn git_commit(ctx: ActionContext, forge: &ForgeHandle) -> Result<Value, ActionError> {
    // The trailer names the step, so a step that runs again after a crash (at least once)
    // finds its own commit instead of failing with "nothing to commit".
    let trailer = format!("Baton-Step: {}/{}", ctx.run_id, ctx.step_id);
    let message = format!("{}\n\n{trailer}", ctx.param_str("message")?.trim_end());
    let ws = open_workspace(&ctx, forge).await?;
    let branch = ws
        .current_branch()
        .await
        .map_err(|e| workspace::step_failure(&ctx, e))?;
    match ws.commit(&message).await {
        Ok(sha) => Ok(json!({
            "sha": sha,
            "branch": branch,
            "summary": format!("Committed {} on `{branch}`", short(&sha)),
        })),
        Err(workspace::Error::NothingToCommit { head, .. })
            if head_has(&ws, &head, &trailer).await =>
        {
            Ok(json!({
                "sha": head,
                "branch": branch,
                "reused": true,
                "summary": format!("Committed {} on `{branch}`", short(&head)),
            }))
        }
        Err(e) => Err(workspace::step_failure(&ctx, e)),
    }
}

/// Whether commit `sha`'s message carries `trailer`.
async fn head_has(ws: &Workspace<ChangeJournal>, sha: &str, trailer: &str) -> bool {
    let out = workspace::git::Git::at(ws.root())
        .output(&["log", "-1", "--format=%B", sha])
        .await;
    matches!(out, Ok(o) if o.code == 0 && o.stdout.lines().any(|l| l.trim() == trailer))
}

/// `git.push`: pushes the current branch; never over commits baton did not push.
async fn git_push(ctx: ActionContext, forge: &ForgeHandle) -> Result<Value, ActionError> {
    let ws = open_workspace(&ctx, forge).await?;
    let out = ws
        .push()
        .await
        .map_err(|e| workspace::step_failure(&ctx, e))?;
    ctx.progress.say(format!("pushed {}", out.branch));
    Ok(json!({
        "summary": format!("Pushed `{}`", out.branch),
        "branch": out.branch,
        "previous": out.previous,
        "pushed": out.pushed,
        "up_to_date": out.up_to_date,
    }))
}

/// `git.rebase`: fetches the base branch and rebases onto it; conflicts fail the step with
/// the conflicting files in its output, the clone left as it was.
async fn git_rebase(ctx: ActionContext, forge: &ForgeHandle) -> Result<Value, ActionError> {
    let ws = open_workspace(&ctx, forge).await?;
    match ws.fetch_and_rebase().await {
        Ok(out) => Ok(json!({
            "summary": if out.up_to_date {
                format!("Already up to date with `{}`", ws.base())
            } else {
                format!("Rebased onto `{}` ({})", ws.base(), short(&out.onto))
            },
            "before": out.before,
            "after": out.after,
            "onto": out.onto,
            "up_to_date": out.up_to_date,
        })),
        Err(workspace::Error::Conflict {
            branch,
            onto,
            files,
        }) => {
            let output = json!({ "branch": branch, "onto": onto, "conflicts": files });
            let e = workspace::Error::Conflict {
                branch,
                onto,
                files,
            };
            Err(ActionError::fatal(format!("step `{}`: {e}", ctx.step_id)).with_output(output))
        }
        Err(e) => Err(workspace::step_failure(&ctx, e)),
    }
}

/// `git.rollback`, a compensation: undoes the step's recorded changes newest first (files
/// restored, commits reset, branches deleted locally and on the remote). Changes of other
/// kinds are left to their own compensations and listed as `skipped`.
async fn git_rollback(ctx: ActionContext, forge: &ForgeHandle) -> Result<Value, ActionError> {
    let (ours, others): (Vec<_>, Vec<_>) = ctx
        .changes
        .iter()
        .cloned()
        .partition(|c| GIT_CHANGES.contains(&c.change_type.as_str()));
    let skipped: Vec<String> = others.into_iter().map(|c| c.change_type).collect();
    let dir = workspace::repo_dir(&ctx)?;
    if ours.is_empty() || !dir.join(".git").exists() {
        return Ok(json!({ "undone": [], "skipped": skipped }));
    }
    let changes: Vec<Change> = ours.into_iter().map(Change::from).collect();
    let ws = open_workspace(&ctx, forge).await?;
    let report = workspace::rollback_partial(&ws, &changes)
        .await
        .map_err(|e| workspace::step_failure(&ctx, e))?;
    let undone: Vec<&str> = report
        .undone
        .iter()
        .map(|c| c.change_type.as_str())
        .collect();
    Ok(json!({ "undone": undone, "skipped": skipped }))
}

/// `verify {only?, fail_fast?, dir?}`: runs the clone's checks; returns the report. With
/// `strict` a failing critical check fails the step (not retryable; the report is its output);
/// `verify.report` returns the report either way and lets the workflow decide on `ok`.
async fn run_verify(ctx: ActionContext, slots: &Slots, strict: bool) -> Result<Value, ActionError> {
    let dir = workspace::repo_dir(&ctx)?;
    let only = match ctx.params.get("only") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => {
            Some(parse_kinds(s.split(',')).map_err(|e| bad_param(&ctx, "only", &e.to_string()))?)
        }
        Some(Value::Array(items)) => {
            let words: Vec<&str> = items.iter().filter_map(Value::as_str).collect();
            if words.len() != items.len() {
                return Err(bad_param(&ctx, "only", "a list of strings"));
            }
            Some(
                parse_kinds(words.into_iter())
                    .map_err(|e| bad_param(&ctx, "only", &e.to_string()))?,
            )
        }
        Some(_) => {
            return Err(bad_param(
                &ctx,
                "only",
                "a list such as [\"tests\", \"lint\"]",
            ))
        }
    };
    let opts = VerifyOptions {
        fail_fast: opt_bool(&ctx, "fail_fast")?,
        only,
        // `trusted = true` (with the code's author known to have write access) lets the
        // checks run where `[sandbox]` puts trusted code; without it they are untrusted.
        run_in: verify::RunIn::Decide(crate::sandbox::Trust::from_params(&ctx.params)),
        cache: Some(crate::sandbox::run_cache_dir(&dir)),
        ..VerifyOptions::default()
    };
    ctx.progress.say("verifying");
    let report = verify::for_step(&ctx, slots, &dir, &opts)
        .await?
        .map_err(|e| ActionError::fatal(format!("step `{}`: {e}", ctx.step_id)))?;
    let output = serde_json::to_value(&report).unwrap_or(Value::Null);
    if strict && !report.ok {
        let failing: Vec<String> = report
            .checks
            .iter()
            .filter(|c| {
                c.critical && matches!(c.status, verify::Status::Failed | verify::Status::Error)
            })
            .map(|c| format!("{} (`{}`)", c.kind.as_str(), c.command))
            .collect();
        return Err(ActionError::fatal(format!(
            "step `{}`: verification failed: {}",
            ctx.step_id,
            failing.join(", ")
        ))
        .with_output(output));
    }
    Ok(output)
}

/// Kinds from words such as `tests`, `lint`.
pub fn parse_kinds<'a>(
    words: impl Iterator<Item = &'a str>,
) -> Result<Vec<Kind>, crate::verify::Error> {
    words
        .map(str::trim)
        .filter(|w| !w.is_empty())
        .map(str::parse)
        .collect()
}

/// Opens the run's clone with the URL, base branch and credentials its `git.clone` step
/// recorded (the newest such step that cloned into the same directory).
pub(crate) async fn open_workspace(
    ctx: &ActionContext,
    forge: &ForgeHandle,
) -> Result<Workspace<ChangeJournal>, ActionError> {
    let dir = workspace::clone_dir(ctx)?;
    let record = ctx
        .outputs_of("git.clone")
        .find(|out| {
            out.get("dir")
                .and_then(Value::as_str)
                .is_some_and(|cloned| same_clone(Path::new(cloned), &dir, ctx))
        })
        .ok_or_else(|| {
            ActionError::fatal(format!(
                "step `{}`: no `git.clone` step of this run cloned into {}; \
                 baton takes a clone's URL and credentials only from the run's record",
                ctx.step_id,
                dir.display()
            ))
        })?;
    let recorded = |key: &str| {
        record
            .get(key)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    let (Some(url), Some(base)) = (recorded("url"), recorded("base")) else {
        return Err(ActionError::fatal(format!(
            "step `{}`: the `git.clone` record of {} has no `url` or `base`",
            ctx.step_id,
            dir.display()
        )));
    };
    let token_env = match opt_str(ctx, "token_env")? {
        Some(name) => Some(name),
        None if record.get("token_env").is_some() => recorded("token_env"),
        // Cloned by a baton that kept the name in the clone's config: read it there once more,
        // for the runs that were under way when baton was upgraded. The URL still comes from
        // the record, so the token can only go where the run cloned from.
        None => Workspace::<ChangeJournal>::read_config(&dir, LEGACY_TOKEN_ENV_KEY)
            .await
            .map_err(|e| workspace::step_failure(ctx, e))?,
    };
    let credentials = credentials(ctx, token_env.as_deref(), &url, forge).await?;
    Workspace::open(
        &dir,
        &url,
        &base,
        credentials,
        Identity::default(),
        ctx.journal.clone(),
    )
    .await
    .map_err(|e| workspace::step_failure(ctx, e))
}

/// Whether a `git.clone` record's `dir` is `dir`: the same path, or the same clone of this run
/// in a data dir that has moved since (restored from a backup elsewhere).
fn same_clone(cloned: &Path, dir: &Path, ctx: &ActionContext) -> bool {
    cloned == dir
        || dir
            .strip_prefix(&ctx.workspace)
            .is_ok_and(|rel| cloned.ends_with(Path::new(&ctx.run_id).join(rel)))
}

/// The token git uses with `url`: the secret `name` (the variable, or the file `name_FILE`
/// names; see [`crate::secrets`]), or, for [`crate::forge::FORGE_TOKEN`], the one the forge
/// mints (a GitHub App's installation token). An unset, empty or unreadable one is an error
/// that names the variable (never the value).
async fn credentials(
    ctx: &ActionContext,
    name: Option<&str>,
    url: &str,
    forge: &ForgeHandle,
) -> Result<Option<Credentials>, ActionError> {
    let Some(name) = name else { return Ok(None) };
    if name == crate::forge::FORGE_TOKEN {
        let forge = crate::actions::forge::forge_of(ctx, forge)?;
        return match forge.git_token(url).await {
            Ok(Some(token)) => Ok(Some(Credentials::token(token.0.expose_secret()))),
            Ok(None) => Err(ActionError::fatal(format!(
                "step `{}`: the {} forge mints no token for git; set `token_env` to a variable",
                ctx.step_id,
                forge.kind()
            ))),
            Err(e) => Err(crate::actions::forge::forge_error(ctx, e)),
        };
    }
    match crate::secrets::get(name) {
        Ok(Some(token)) => Ok(Some(Credentials::token(token))),
        Ok(None) => Err(ActionError::fatal(format!(
            "step `{}`: environment variable {name} (from `token_env`) is not set",
            ctx.step_id
        ))),
        Err(e) => Err(ActionError::fatal(format!(
            "step `{}`: {e} (from `token_env`)",
            ctx.step_id
        ))),
    }
}

/// The first 7 characters of a sha, as people read them.
pub(crate) fn short(sha: &str) -> &str {
    sha.get(..7).unwrap_or(sha)
}

/// The data dir: the workspace is `<data_dir>/workspaces/<run>`.
fn data_dir(ctx: &ActionContext) -> Result<PathBuf, ActionError> {
    ctx.workspace
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .ok_or_else(|| {
            ActionError::fatal(format!(
                "workspace {} is not under <data_dir>/workspaces",
                ctx.workspace.display()
            ))
        })
}

fn opt_str(ctx: &ActionContext, name: &str) -> Result<Option<String>, ActionError> {
    match ctx.params.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(bad_param(ctx, name, "a string")),
    }
}

fn opt_bool(ctx: &ActionContext, name: &str) -> Result<Option<bool>, ActionError> {
    match ctx.params.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        // Templates render to strings.
        Some(Value::String(s)) if s == "true" || s == "false" => Ok(Some(s == "true")),
        Some(_) => Err(bad_param(ctx, name, "true or false")),
    }
}

fn bad_param(ctx: &ActionContext, name: &str, expected: &str) -> ActionError {
    ActionError::fatal(format!(
        "step `{}`: parameter `{name}` must be {expected}",
        ctx.step_id
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::known;

    #[test]
    fn names_cover_the_git_and_verify_actions() {
        for name in [
            "shell",
            "git.clone",
            "git.branch",
            "git.write",
            "git.commit",
            "git.push",
            "git.rebase",
            "git.rollback",
            "verify",
        ] {
            assert!(known(name), "{name}");
        }
        assert!(!known("git.force_push"));
    }

    #[test]
    fn kinds_parse_from_words() {
        assert_eq!(
            parse_kinds("tests, lint".split(',')).unwrap(),
            vec![Kind::Tests, Kind::Lint]
        );
        assert!(parse_kinds(["bogus"].into_iter())
            .unwrap_err()
            .to_string()
            .contains("bogus"));
    }
}
