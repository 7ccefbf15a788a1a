//! Verification as a step runs it: every action and built-in workflow that runs a clone's
//! checks comes through here, so each holds a verification slot and gives up when its step is
//! cancelled.

use std::path::Path;

use baton_actors::{ActionContext, ActionError, ChangeJournal};

use super::{verify, Report, Result, Slots, VerifyOptions};
use crate::workspace::{step_failure, Workspace};

/// Runs the checks in `dir` as a step does: holding one of `[limits] max_verifications`
/// (waited for, saying so), and given up when the step is cancelled (dropping the
/// verification kills the running check's process group).
pub async fn for_step(
    ctx: &ActionContext,
    slots: &Slots,
    dir: &Path,
    opts: &VerifyOptions,
) -> Result<Result<Report>, ActionError> {
    let _slot = tokio::select! {
        slot = slots.acquire(&ctx.progress) => slot,
        () = ctx.cancel.cancelled() => return Err(ActionError::fatal("verification cancelled")),
    };
    Ok(tokio::select! {
        r = verify(dir, opts) => r,
        () = ctx.cancel.cancelled() => return Err(ActionError::fatal("verification cancelled")),
    })
}

/// [`for_step`] in a clone that becomes a commit: what the checks leave behind (`target/`,
/// `__pycache__/`, a lock file a library does not commit) is excluded in the clone's own
/// `.git/info/exclude`, so it never ends up in the commit.
pub async fn in_clone(
    ctx: &ActionContext,
    slots: &Slots,
    ws: &Workspace<ChangeJournal>,
    dir: &Path,
    opts: &VerifyOptions,
) -> Result<Result<Report>, ActionError> {
    let untracked_before = ws.untracked().await.map_err(|e| step_failure(ctx, e))?;
    let report = for_step(ctx, slots, dir, opts).await?;
    let left_behind: Vec<String> = ws
        .untracked()
        .await
        .map_err(|e| step_failure(ctx, e))?
        .into_iter()
        .filter(|p| !untracked_before.contains(p))
        .collect();
    ws.exclude(&left_behind)
        .await
        .map_err(|e| step_failure(ctx, e))?;
    Ok(report)
}
