//! Compensators: [`undo`] reverses one recorded [`Change`]; the rollbacks are built from it.
//!
//! Every undo is idempotent and tolerates a change that was recorded but never carried out
//! (the process died between the record and the act): it looks at the repository first.
//! An undo that would destroy work it did not make (a branch moved since, a remote branch
//! someone else pushed to) refuses with [`Error::Undo`].

use std::path::Path;

use serde_json::Value;

use super::repo::write_atomic;
use super::secret::base64_decode;
use super::{Change, Error, Journal, Result, Workspace};

/// What a rollback did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RollbackReport {
    /// The changes undone, in the order they were undone (newest first).
    pub undone: Vec<Change>,
}

/// Soft rollback: keeps the branch, the commits and the working tree for a person to finish.
pub fn rollback_soft<J: Journal>(ws: &Workspace<J>) -> RollbackReport {
    tracing::info!(workspace = %ws.root().display(), "soft rollback: keeping everything");
    RollbackReport::default()
}

/// Partial rollback: undoes `changes` (the last N steps' changes, oldest first, as recorded)
/// newest first; files are restored, commits reset, branches deleted, pushes reverted.
pub async fn rollback_partial<J: Journal>(
    ws: &Workspace<J>,
    changes: &[Change],
) -> Result<RollbackReport> {
    let mut report = RollbackReport::default();
    for change in changes.iter().rev() {
        undo(ws, change).await?;
        report.undone.push(change.clone());
    }
    Ok(report)
}

/// Hard rollback: discards every uncommitted change, then undoes all of the run's `changes`
/// newest first, which deletes the branches it created locally and on the remote, and leaves
/// the workspace as it was cloned.
pub async fn rollback_hard<J: Journal>(
    ws: &Workspace<J>,
    changes: &[Change],
) -> Result<RollbackReport> {
    discard(ws).await?;
    let report = rollback_partial(ws, changes).await?;
    discard(ws).await?;
    Ok(report)
}

async fn discard<J: Journal>(ws: &Workspace<J>) -> Result<()> {
    let git = ws.git();
    git.run(&["reset", "--hard", "--quiet"]).await?;
    git.run(&["clean", "-ffdx", "--quiet"]).await?;
    Ok(())
}

fn field<'a>(change: &'a Change, key: &str) -> Result<&'a str> {
    change
        .change_data
        .get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| Error::Undo {
            change_type: change.change_type.clone(),
            reason: format!("change_data has no string `{key}`"),
        })
}

fn opt_field<'a>(change: &'a Change, key: &str) -> Option<&'a str> {
    change.change_data.get(key).and_then(Value::as_str)
}

/// Reverses one change in `ws`.
pub async fn undo<J: Journal>(ws: &Workspace<J>, change: &Change) -> Result<()> {
    tracing::info!(change_type = %change.change_type, "undo");
    let refuse = |reason: String| Error::Undo {
        change_type: change.change_type.clone(),
        reason,
    };
    let git = ws.git();
    match change.change_type.as_str() {
        "file_create" => {
            let rel = Path::new(field(change, "path")?);
            let abs = ws.resolve(rel)?;
            match tokio::fs::remove_file(&abs).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(Error::Io {
                        action: "delete",
                        path: abs,
                        source,
                    })
                }
            }
            let dirs = change
                .change_data
                .get("created_dirs")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for dir in dirs.iter().rev().filter_map(Value::as_str) {
                // Only empty directories go; anything else put there is kept.
                let _ = tokio::fs::remove_dir(ws.resolve(Path::new(dir))?).await;
            }
            Ok(())
        }
        "file_modify" | "file_delete" => {
            let rel = Path::new(field(change, "path")?);
            let abs = ws.resolve(rel)?;
            let before = match (
                opt_field(change, "before"),
                opt_field(change, "before_base64"),
            ) {
                (Some(text), _) => text.as_bytes().to_vec(),
                (None, Some(b64)) => base64_decode(b64)
                    .ok_or_else(|| refuse("before_base64 is not base64".into()))?,
                (None, None) => return Err(refuse("change_data has no `before`".into())),
            };
            let mode = change
                .change_data
                .get("mode")
                .and_then(Value::as_u64)
                .map(|m| m as u32);
            if let Some(parent) = abs.parent() {
                tokio::fs::create_dir_all(parent)
                    .await
                    .map_err(|source| Error::Io {
                        action: "create directory for",
                        path: abs.clone(),
                        source,
                    })?;
            }
            // The mode is set on the new file before it takes the old one's name.
            write_atomic(&abs, &before, mode).await
        }
        "branch_create" => {
            let branch = field(change, "branch")?;
            let start = field(change, "start")?;
            let refname = format!("refs/heads/{branch}");
            if git
                .output(&["rev-parse", "--verify", "--quiet", &refname])
                .await?
                .code
                != 0
            {
                return Ok(());
            }
            if ws.current_branch().await.ok().as_deref() == Some(branch) {
                let target = opt_field(change, "previous_branch").unwrap_or(start);
                git.run(&["checkout", "--quiet", target]).await?;
            }
            git.run(&["branch", "--quiet", "-D", branch]).await?;
            Ok(())
        }
        "commit" | "rebase" => {
            let branch = field(change, "branch")?;
            if change.change_type == "rebase" && ws.rebase_in_progress() {
                // A rebase left stopped at a conflict for a person: end it first.
                git.run(&["rebase", "--abort"]).await?;
            }
            let (done, target) = if change.change_type == "commit" {
                let target = opt_field(change, "parent")
                    .ok_or_else(|| refuse("a root commit cannot be reset".into()))?;
                (field(change, "sha")?, target)
            } else {
                ("", field(change, "before")?)
            };
            let refname = format!("refs/heads/{branch}");
            let out = git
                .output(&["rev-parse", "--verify", "--quiet", &refname])
                .await?;
            if out.code != 0 {
                return Ok(()); // the branch is gone (its creation was undone)
            }
            let now = out.stdout.trim().to_string();
            if now == target {
                return Ok(()); // never happened, or already undone
            }
            if !done.is_empty() && now != done {
                return Err(refuse(format!(
                    "branch {branch} is at {now}, not at the recorded commit {done}; later commits would be lost"
                )));
            }
            if ws.current_branch().await.ok().as_deref() == Some(branch) {
                // Commit: keep the working tree (its files are undone by their own changes).
                // Rebase: the tree was clean; --keep refuses rather than lose local edits.
                let mode = if change.change_type == "commit" {
                    "--mixed"
                } else {
                    "--keep"
                };
                git.run(&["reset", "--quiet", mode, target]).await?;
            } else {
                git.run(&["update-ref", &refname, target, &now]).await?;
            }
            Ok(())
        }
        "push" => {
            let branch = field(change, "branch")?;
            let pushed = field(change, "pushed")?;
            let previous = opt_field(change, "previous");
            let now = ws.remote_sha(branch).await?;
            if now.as_deref() == previous {
                return Ok(()); // never happened, or already undone
            }
            if now.as_deref() != Some(pushed) {
                return Err(refuse(format!(
                    "remote branch {branch} is at {}, not at {pushed} which baton pushed; someone else pushed to it",
                    now.as_deref().unwrap_or("nothing")
                )));
            }
            let lease = format!("--force-with-lease=refs/heads/{branch}:{pushed}");
            let refspec = match previous {
                Some(prev) => format!("{prev}:refs/heads/{branch}"),
                None => format!(":refs/heads/{branch}"),
            };
            git.run(&["push", "--quiet", "--no-verify", &lease, ws.url(), &refspec])
                .await?;
            let key = format!("branch.{branch}.batonPushed");
            match previous {
                Some(prev) => git.run(&["config", &key, prev]).await?,
                None => git
                    .output(&["config", "--unset", &key])
                    .await
                    .map(|_| String::new())?,
            };
            Ok(())
        }
        other => Err(refuse(format!("unknown change type `{other}`"))),
    }
}
