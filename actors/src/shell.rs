//! `shell`: runs `sh -c <run>` in the run's workspace, in a process group of its own.
//!
//! The group is spawned through [`crate::procs`] (recorded before `sh` runs, killed if a
//! crashed daemon left it) and killed with SIGKILL when the attempt is cancelled, times out
//! (its future is dropped) or ends: a step leaves no process behind. Output keeps the last
//! 64 KiB of each stream, so a command printing gigabytes costs 128 KiB.

use std::process::Stdio;

use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;

use crate::action::{Action, ActionContext, ActionError};

/// Bytes of stdout and of stderr kept.
pub const OUTPUT_TAIL: usize = 64 * 1024;

/// The `shell` action.
pub fn shell() -> impl Action {
    |ctx: ActionContext| async move { run(ctx).await }
}

async fn read_tail<R: AsyncRead + Unpin>(mut reader: R) -> Vec<u8> {
    let mut kept = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                kept.extend_from_slice(&buf[..n]);
                if kept.len() > 2 * OUTPUT_TAIL {
                    kept.drain(..kept.len() - OUTPUT_TAIL);
                }
            }
        }
    }
    if kept.len() > OUTPUT_TAIL {
        kept.drain(..kept.len() - OUTPUT_TAIL);
    }
    kept
}

fn text(bytes: Vec<u8>) -> String {
    String::from_utf8_lossy(&bytes).into_owned()
}

async fn run(ctx: ActionContext) -> Result<Value, ActionError> {
    let script = ctx.param_str("run")?.to_string();
    let mut dir = ctx.workspace.clone();
    if let Some(sub) = ctx.params.get("dir").and_then(Value::as_str) {
        dir = dir.join(sub);
    }
    tokio::fs::create_dir_all(&dir).await.map_err(|e| {
        ActionError::fatal(format!("cannot create workspace {}: {e}", dir.display()))
    })?;
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(&script)
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("BATON_RUN_ID", &ctx.run_id)
        .env("BATON_STEP_ID", &ctx.step_id)
        .env("BATON_ATTEMPT", ctx.attempt.to_string())
        .env("BATON_IDEMPOTENCY_KEY", &ctx.idempotency_key)
        .env("BATON_WORKSPACE", &ctx.workspace)
        // The store's credentials are the engine's, never a step's.
        .env_remove("BATON_DATABASE_URL");
    if let Some(Value::Object(env)) = ctx.params.get("env") {
        for (k, v) in env {
            let value = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            cmd.env(k, value);
        }
    }
    // The group's guard kills it when dropped: `post_stop` does not run when an actor fails,
    // and a dropped future runs no code, but a guard runs either way.
    let mut group = crate::procs::spawn(cmd, "sh")
        .await
        .map_err(|e| ActionError::fatal(format!("cannot start sh: {e}")))?;
    let stdout = tokio::spawn(read_tail(group.child.stdout.take().expect("piped")));
    let stderr = tokio::spawn(read_tail(group.child.stderr.take().expect("piped")));
    let status = tokio::select! {
        status = group.child.wait() => status,
        _ = ctx.cancel.cancelled() => {
            drop(group);
            return Err(ActionError::fatal("cancelled"));
        }
    };
    // The shell has exited; whatever it left running in its group goes too, which also
    // closes the pipes so the readers finish.
    drop(group);
    let stdout = text(stdout.await.unwrap_or_default());
    let stderr = text(stderr.await.unwrap_or_default());
    let status = status.map_err(|e| ActionError::retryable(format!("waiting for sh: {e}")))?;
    let code = status.code();
    let output = json!({ "exit_code": code, "stdout": stdout, "stderr": stderr });
    if status.success() {
        return Ok(output);
    }
    let last_line = stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
        .to_string();
    let how = match code {
        Some(c) => format!("exit code {c}"),
        None => "killed by a signal".to_string(),
    };
    let message = if last_line.is_empty() {
        format!("command failed with {how}")
    } else {
        format!("command failed with {how}: {last_line}")
    };
    Err(ActionError::retryable(message).with_output(output))
}
