//! Where a step's repository is in its run's workspace: the one rule every action and built-in
//! workflow follows, so that a `dir` parameter never reaches outside the workspace; and what a
//! workspace error means to the step that met it.

use std::path::{Component, Path, PathBuf};

use baton_actors::{ActionContext, ActionError};
use serde_json::Value;

/// Where a run's clone goes when a step names no `dir`.
pub const DEFAULT_DIR: &str = "repo";

/// `<workspace>/<dir>`, `dir` being the step's parameter (default [`DEFAULT_DIR`]). Refused
/// unless `dir` is a relative path of plain names: no root, no `..`, so it stays inside.
pub fn repo_dir(ctx: &ActionContext) -> Result<PathBuf, ActionError> {
    let dir = match ctx.params.get("dir") {
        None | Some(Value::Null) => DEFAULT_DIR,
        Some(_) => ctx.param_str("dir")?,
    };
    let relative = Path::new(dir);
    let inside = !dir.is_empty()
        && relative
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    if !inside {
        return Err(ActionError::fatal(format!(
            "step `{}`: parameter `dir` = `{dir}` must be a relative path inside the run's workspace",
            ctx.step_id
        )));
    }
    Ok(ctx.workspace.join(relative))
}

/// [`repo_dir`], which must hold a clone already: a step that comes after `git.clone`.
pub fn clone_dir(ctx: &ActionContext) -> Result<PathBuf, ActionError> {
    let dir = repo_dir(ctx)?;
    if !dir.join(".git").exists() {
        return Err(ActionError::fatal(format!(
            "step `{}`: no clone at {}; run `git.clone` first (with the same `dir`)",
            ctx.step_id,
            dir.display()
        )));
    }
    Ok(dir)
}

/// A workspace error as a step failure: network trouble and locks may pass on a retry;
/// everything else (auth, conflicts, bad paths, diverged branches) will not.
pub fn step_failure(ctx: &ActionContext, e: super::Error) -> ActionError {
    let message = format!("step `{}`: {e}", ctx.step_id);
    match e {
        super::Error::Remote { .. } | super::Error::Lock { .. } | super::Error::Io { .. } => {
            ActionError::retryable(message)
        }
        _ => ActionError::fatal(message),
    }
}
