//! The forge actions: what a workflow does on the code host, over the [`Forge`] trait.
//!
//! - `forge.issue {repo, issue}`: reads an issue.
//! - `forge.comment {repo, issue, body, key?}`: the run's comment on an issue or pull request,
//!   created once and edited after (found by its `<!-- baton:run=ID[:key] -->` marker).
//! - `forge.ensure_pr {repo, head, base, title, body, draft?}`: opens the run's pull request, or
//!   updates the open one of `head`. Compensation: `forge.close_pr`.
//! - `forge.update_pr {repo, pr, title?, body?, state?}`, `forge.labels {repo, issue, labels}`.
//! - `forge.review {repo, pr, body, event?, comments?}`: the workflow's one review of a pull
//!   request (`event`: `comment` (default), `approve`, `request_changes`; `comments`: line
//!   comments `{path, line, side?, body}`), edited in place on later runs through its marker
//!   keyed by the workflow and the PR.
//! - `forge.release {repo, tag, name?, body, draft?, prerelease?}`: creates or updates a release.
//! - `forge.close_pr {repo, pr?}` and `forge.delete_branch {repo, branch}`: compensations (a
//!   compensation finds the PR number in the step's own output when `pr` is not given).
//!
//! Each is idempotent: a retried or resumed attempt finds its own earlier effect (the marker,
//! the PR of the branch, the release of the tag) instead of making a second one. A forge that
//! gave up on 5xx, 429 or a dropped connection fails the step as retryable, so the step's
//! retry policy decides; any other refusal fails it with the forge's own message.

use baton_actors::{ActionContext, ActionError, Engine};
use serde_json::{json, Value};

use crate::forge::{
    self, Forge, ForgeHandle, LineComment, NewPullRequest, NewRelease, NewReview,
    PullRequestUpdate, Repo, ReviewEvent,
};

/// The actions this module registers.
pub(super) const NAMES: [&str; 9] = [
    "forge.issue",
    "forge.review",
    "forge.comment",
    "forge.ensure_pr",
    "forge.update_pr",
    "forge.labels",
    "forge.release",
    "forge.close_pr",
    "forge.delete_branch",
];

/// Registers the forge actions over `forge`.
pub fn register(engine: &Engine, forge: &ForgeHandle) {
    macro_rules! action {
        ($name:literal, $f:ident) => {{
            let forge = forge.clone();
            engine.register_action($name, move |ctx: ActionContext| {
                let forge = forge.clone();
                async move {
                    let f = forge
                        .get()
                        .map_err(|e| ActionError::fatal(format!("step `{}`: {e}", ctx.step_id)))?;
                    $f(&ctx, f.as_ref()).await
                }
            });
        }};
    }
    action!("forge.issue", read_issue);
    action!("forge.comment", comment);
    action!("forge.ensure_pr", ensure_pr);
    action!("forge.update_pr", update_pr);
    action!("forge.labels", labels);
    action!("forge.review", review);
    action!("forge.release", release);
    action!("forge.close_pr", close_pr);
    action!("forge.delete_branch", delete_branch);
}

async fn read_issue(ctx: &ActionContext, forge: &dyn Forge) -> Result<Value, ActionError> {
    let repo = repo_param(ctx)?;
    let number = number_param(ctx, "issue")?;
    let issue = forge
        .issue(&repo, number)
        .await
        .map_err(|e| forge_error(ctx, e))?;
    Ok(json!(issue))
}

async fn comment(ctx: &ActionContext, forge: &dyn Forge) -> Result<Value, ActionError> {
    let repo = repo_param(ctx)?;
    let number = number_param(ctx, "issue")?;
    let body = ctx.param_str("body")?;
    let key = opt_str(ctx, "key")?;
    let comment = forge
        .upsert_comment(&repo, number, &ctx.run_id, key.as_deref(), body)
        .await
        .map_err(|e| forge_error(ctx, e))?;
    Ok(json!({ "id": comment.id, "url": comment.url }))
}

async fn ensure_pr(ctx: &ActionContext, forge: &dyn Forge) -> Result<Value, ActionError> {
    let repo = repo_param(ctx)?;
    let new = NewPullRequest {
        title: ctx.param_str("title")?.to_string(),
        head: ctx.param_str("head")?.to_string(),
        base: ctx.param_str("base")?.to_string(),
        body: ctx.param_str("body")?.to_string(),
        draft: opt_bool(ctx, "draft")?.unwrap_or(false),
    };
    let pr = forge
        .ensure_pull_request(&repo, &ctx.run_id, &new)
        .await
        .map_err(|e| forge_error(ctx, e))?;
    let what = if pr.draft { "draft PR" } else { "PR" };
    Ok(json!({
        "number": pr.number,
        "url": pr.url,
        "head": pr.head,
        "base": pr.base,
        "draft": pr.draft,
        "summary": format!("Created {what} #{}", pr.number),
    }))
}

async fn update_pr(ctx: &ActionContext, forge: &dyn Forge) -> Result<Value, ActionError> {
    let repo = repo_param(ctx)?;
    let number = number_param(ctx, "pr")?;
    let update = PullRequestUpdate {
        title: opt_str(ctx, "title")?,
        body: opt_str(ctx, "body")?,
        base: opt_str(ctx, "base")?,
        state: opt_str(ctx, "state")?,
    };
    let pr = forge
        .update_pull_request(&repo, number, &update)
        .await
        .map_err(|e| forge_error(ctx, e))?;
    Ok(json!(pr))
}

async fn labels(ctx: &ActionContext, forge: &dyn Forge) -> Result<Value, ActionError> {
    let repo = repo_param(ctx)?;
    let number = number_param(ctx, "issue")?;
    let labels = string_list(ctx, "labels")?;
    let all = forge
        .add_labels(&repo, number, &labels)
        .await
        .map_err(|e| forge_error(ctx, e))?;
    Ok(json!({ "labels": all }))
}

async fn review(ctx: &ActionContext, forge: &dyn Forge) -> Result<Value, ActionError> {
    let repo = repo_param(ctx)?;
    let number = number_param(ctx, "pr")?;
    let event = match opt_str(ctx, "event")?.as_deref() {
        None | Some("comment") => ReviewEvent::Comment,
        Some("approve") => ReviewEvent::Approve,
        Some("request_changes") => ReviewEvent::RequestChanges,
        Some(other) => {
            return Err(ActionError::fatal(format!(
                "step `{}`: parameter `event` = `{other}`: expected comment, approve or request_changes",
                ctx.step_id
            )))
        }
    };
    let comments: Vec<LineComment> = match ctx.params.get("comments") {
        None | Some(Value::Null) => Vec::new(),
        Some(items) => {
            let items = items.as_array().cloned().unwrap_or_default();
            items
                .into_iter()
                .map(|mut c| {
                    if c.get("side").is_none() {
                        c["side"] = json!("RIGHT");
                    }
                    serde_json::from_value(c)
                })
                .collect::<Result<_, _>>()
                .map_err(|e| {
                    ActionError::fatal(format!(
                        "step `{}`: parameter `comments` must be a list of {{path, line, side?, body}}: {e}",
                        ctx.step_id
                    ))
                })?
        }
    };
    let new = NewReview {
        body: ctx.param_str("body")?.to_string(),
        event,
        commit_id: opt_str(ctx, "commit")?,
        comments,
    };
    let review = forge
        .upsert_review(&repo, number, &ctx.workflow_id, &new)
        .await
        .map_err(|e| forge_error(ctx, e))?;
    Ok(json!({
        "id": review.id,
        "url": review.url,
        "state": review.state,
        "summary": format!("Reviewed PR #{number}"),
    }))
}

async fn release(ctx: &ActionContext, forge: &dyn Forge) -> Result<Value, ActionError> {
    let repo = repo_param(ctx)?;
    let tag = ctx.param_str("tag")?.to_string();
    let new = NewRelease {
        name: opt_str(ctx, "name")?.unwrap_or_else(|| tag.clone()),
        tag,
        body: ctx.param_str("body")?.to_string(),
        draft: opt_bool(ctx, "draft")?.unwrap_or(false),
        prerelease: opt_bool(ctx, "prerelease")?.unwrap_or(false),
    };
    let release = forge
        .upsert_release(&repo, &new)
        .await
        .map_err(|e| forge_error(ctx, e))?;
    Ok(json!(release))
}

/// A compensation: closes the step's pull request (`pr`, or the `number` of the step's output).
/// A PR that is already closed, or was never opened, is left as it is.
async fn close_pr(ctx: &ActionContext, forge: &dyn Forge) -> Result<Value, ActionError> {
    let repo = repo_param(ctx)?;
    let number = match ctx.params.get("pr") {
        Some(v) if !v.is_null() => Some(number_param(ctx, "pr")?),
        _ => ctx.step_output.get("number").and_then(Value::as_u64),
    };
    let Some(number) = number else {
        return Ok(json!({ "closed": false, "reason": "no pull request was opened" }));
    };
    let pr = forge
        .close_pull_request(&repo, number)
        .await
        .map_err(|e| forge_error(ctx, e))?;
    Ok(json!({ "closed": pr.state == "closed", "number": pr.number }))
}

async fn delete_branch(ctx: &ActionContext, forge: &dyn Forge) -> Result<Value, ActionError> {
    let repo = repo_param(ctx)?;
    let branch = ctx.param_str("branch")?;
    forge
        .delete_branch(&repo, branch)
        .await
        .map_err(|e| forge_error(ctx, e))?;
    Ok(json!({ "deleted": branch }))
}

/// The forge behind `handle`, or a step failure saying why it cannot be built.
pub(crate) fn forge_of(
    ctx: &ActionContext,
    handle: &ForgeHandle,
) -> Result<std::sync::Arc<dyn Forge>, ActionError> {
    handle
        .get()
        .map_err(|e| ActionError::fatal(format!("step `{}`: {e}", ctx.step_id)))
}

/// `repo` as `owner/name`.
pub(crate) fn repo_param(ctx: &ActionContext) -> Result<Repo, ActionError> {
    Repo::parse(ctx.param_str("repo")?)
        .map_err(|e| ActionError::fatal(format!("step `{}`: parameter `repo`: {e}", ctx.step_id)))
}

/// An issue or pull request number: a number, or a string such as `12` or `#12`.
pub(crate) fn number_param(ctx: &ActionContext, name: &str) -> Result<u64, ActionError> {
    baton_actors::subject::number(ctx.params.get(name))
        .filter(|n| *n > 0)
        .ok_or_else(|| {
            ActionError::fatal(format!(
                "step `{}`: parameter `{name}` must be an issue or pull request number",
                ctx.step_id
            ))
        })
}

fn opt_str(ctx: &ActionContext, name: &str) -> Result<Option<String>, ActionError> {
    match ctx.params.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(ActionError::fatal(format!(
            "step `{}`: parameter `{name}` must be a string, got {other}",
            ctx.step_id
        ))),
    }
}

fn opt_bool(ctx: &ActionContext, name: &str) -> Result<Option<bool>, ActionError> {
    match ctx.params.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(Value::String(s)) if s == "true" || s == "false" => Ok(Some(s == "true")),
        Some(other) => Err(ActionError::fatal(format!(
            "step `{}`: parameter `{name}` must be true or false, got {other}",
            ctx.step_id
        ))),
    }
}

fn string_list(ctx: &ActionContext, name: &str) -> Result<Vec<String>, ActionError> {
    match ctx.params.get(name) {
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str().map(str::to_string).ok_or_else(|| {
                    ActionError::fatal(format!(
                        "step `{}`: parameter `{name}` must be a list of strings",
                        ctx.step_id
                    ))
                })
            })
            .collect(),
        Some(Value::String(s)) => Ok(s
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()),
        _ => Err(ActionError::fatal(format!(
            "step `{}`: parameter `{name}` must be a list of strings",
            ctx.step_id
        ))),
    }
}

/// A forge error as a step failure: retryable when the forge gave up on something that may
/// pass later (5xx, 429, transport); otherwise fatal, with the forge's own message.
pub(crate) fn forge_error(ctx: &ActionContext, e: forge::Error) -> ActionError {
    let message = format!("step `{}`: {e}", ctx.step_id);
    if e.is_retryable() {
        ActionError::retryable(message)
    } else {
        ActionError::fatal(message)
    }
}
