//! Running a command for the agent: through the sandbox executor where the code's trust puts
//! it (`crate::sandbox`), in the workspace, in its own process group (killed with all its
//! children on timeout or cancellation), and with only the tail of its output kept. On the
//! host (trusted code, `[sandbox] mode` not `always`) the environment is scrubbed of tokens,
//! keys, passwords and `BATON_*`; in the sandbox it is the sandbox's own allowlist.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use baton_actors::procs;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

use crate::sandbox::{self, integrity::GitState, Placement};

/// Bytes kept from the end of each of stdout and stderr.
pub const OUTPUT_TAIL_BYTES: usize = 16 * 1024;

/// Words that mark an environment variable as a secret, matched case-insensitively anywhere in
/// its name.
const SECRET_NAME_WORDS: &[&str] = &[
    "TOKEN",
    "KEY",
    "SECRET",
    "PASSWORD",
    "PASSWD",
    "CREDENTIAL",
    "AUTH",
    "COOKIE",
    "SESSION",
    "PRIVATE",
];

/// Whether an environment variable must not reach a command the agent runs.
pub fn is_secret_var(name: &str, value: &str, secrets: &[String]) -> bool {
    let upper = name.to_ascii_uppercase();
    upper.starts_with("BATON_")
        || SECRET_NAME_WORDS.iter().any(|w| upper.contains(w))
        || secrets
            .iter()
            .any(|s| !s.is_empty() && value.contains(s.as_str()))
        || value.contains("://") && value.contains('@') // a URL with credentials in it
}

/// The process environment without secrets, plus `extra` names passed through as they are:
/// from the environment, or from [`crate::secrets`], which holds those that look secret.
pub fn scrubbed_env(secrets: &[String], extra: &[String]) -> BTreeMap<String, String> {
    let mut env: BTreeMap<String, String> = std::env::vars()
        .filter(|(k, v)| extra.contains(k) || !is_secret_var(k, v, secrets))
        .collect();
    for name in extra {
        if env.contains_key(name) {
            continue;
        }
        match crate::secrets::get(name) {
            Ok(Some(value)) => {
                env.insert(name.clone(), value);
            }
            Ok(None) => {}
            Err(e) => tracing::warn!("agent.command_env: {e}; the command runs without {name}"),
        }
    }
    env
}

/// Where, and with which variables, the agent's commands run.
#[derive(Debug, Clone)]
pub struct Exec {
    /// On the host: the whole (scrubbed) environment. In the sandbox: only what is added to
    /// the sandbox's own allowlist (the `command` backend's model key).
    pub env: BTreeMap<String, String>,
    /// Host, sandbox (with or without network) or refused.
    pub place: Placement,
    /// In the sandbox: host files mounted read-only (the `command` backend's own script and
    /// task file).
    pub read_only: Vec<std::path::PathBuf>,
}

/// Part of the error of a sandboxed command that changed the clone's `.git`.
pub const GIT_CHANGED: &str = "the command changed the clone's .git";

/// How a command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// It exited with this code (`None`: killed by a signal).
    Code(Option<i32>),
    /// It ran past its timeout and its process group was killed.
    TimedOut,
    /// It was cancelled and its process group was killed.
    Cancelled,
}

/// What a command did.
#[derive(Debug, Clone)]
pub struct CommandOutput {
    /// How it ended.
    pub exit: Exit,
    /// The tail of its standard output.
    pub stdout: String,
    /// The tail of its standard error.
    pub stderr: String,
}

/// Runs `argv` in `dir` where `exec` says, `stdin` written to its standard input. Refused
/// (untrusted code, no sandbox) is an error of kind `PermissionDenied` with the reason.
pub async fn run(
    argv: &[String],
    dir: &Path,
    exec: &Exec,
    stdin: Option<&str>,
    timeout: Duration,
    cancel: &CancellationToken,
) -> std::io::Result<CommandOutput> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "empty command"))?;
    // Kept until the command is over: dropping it kills what is left in its cgroup.
    let mut _confinement: Option<sandbox::Prepared> = None;
    let mut before: Option<GitState> = None;
    let mut cmd = match &exec.place {
        Placement::Refused(reason) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                reason.clone(),
            ))
        }
        Placement::Host => {
            let mut cmd = Command::new(program);
            cmd.args(args).env_clear().envs(&exec.env);
            cmd
        }
        Placement::Sandbox { network } => {
            let mut job = sandbox::Job::new(dir, argv.to_vec());
            job.network = *network;
            job.env = exec
                .env
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            job.read_only = exec.read_only.clone();
            let prepared = job.prepare().map_err(std::io::Error::other)?;
            let cmd = prepared.command();
            _confinement = Some(prepared);
            before = Some(GitState::capture(dir));
            cmd
        }
    };
    cmd.current_dir(dir)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    // The group is recorded before the command runs and killed when `group` is dropped, so no
    // path (panic, cancel, timeout, a crash of the daemon) leaks it.
    let mut group = procs::spawn(cmd, "agent").await?;
    let child = &mut group.child;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        let text = text.to_string();
        tokio::spawn(async move {
            let _ = pipe.write_all(text.as_bytes()).await;
        });
    }
    let out = Arc::new(Mutex::new(Vec::new()));
    let err = Arc::new(Mutex::new(Vec::new()));
    let readers = [
        tokio::spawn(keep_tail(child.stdout.take(), out.clone())),
        tokio::spawn(keep_tail(child.stderr.take(), err.clone())),
    ];
    let exit = tokio::select! {
        status = child.wait() => Exit::Code(status?.code()),
        _ = tokio::time::sleep(timeout) => Exit::TimedOut,
        _ = cancel.cancelled() => Exit::Cancelled,
    };
    group.kill(); // stragglers of a finished command go too
    let _ = group.child.wait().await;
    if let Some(before) = before {
        let changes = before.changes(&GitState::capture(dir));
        if !changes.is_empty() {
            return Err(std::io::Error::other(format!(
                "{GIT_CHANGED}: {}",
                changes.join(", ")
            )));
        }
    }
    for reader in readers {
        // A grandchild that left the group may hold the pipe; do not wait for it forever.
        let _ = tokio::time::timeout(Duration::from_secs(2), reader).await;
    }
    let text = |buf: &Arc<Mutex<Vec<u8>>>| {
        String::from_utf8_lossy(&buf.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    };
    Ok(CommandOutput {
        exit,
        stdout: text(&out),
        stderr: text(&err),
    })
}

async fn keep_tail(pipe: Option<impl AsyncRead + Unpin>, buf: Arc<Mutex<Vec<u8>>>) {
    let Some(mut pipe) = pipe else { return };
    let mut chunk = [0u8; 8192];
    loop {
        match pipe.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let mut b = buf.lock().unwrap_or_else(|e| e.into_inner());
                b.extend_from_slice(&chunk[..n]);
                if b.len() > 2 * OUTPUT_TAIL_BYTES {
                    let cut = b.len() - OUTPUT_TAIL_BYTES;
                    b.drain(..cut);
                }
            }
        }
    }
}

/// Trims `text` to its last `max` bytes (on a character boundary), saying so.
pub fn tail(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    format!("[... {} bytes cut ...]\n{}", start, &text[start..])
}

/// Runs `git` with `args` in `dir` (through the workspace's one way to run git: a fixed
/// environment, no prompts); returns stdout, or the workspace's error for a failed git (its
/// `Git` variant carries git's stderr).
pub async fn git(dir: &Path, args: &[&str]) -> Result<String, crate::workspace::Error> {
    let git = crate::workspace::git::Git::at(dir);
    let out = git.output(args).await?;
    if out.code == 0 {
        Ok(out.stdout)
    } else {
        Err(git.failure(args, out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_variables_are_recognized() {
        let secrets = vec!["sk-live-123".to_string()];
        for (name, value) in [
            ("OPENAI_API_KEY", "x"),
            ("GITHUB_TOKEN", "x"),
            ("BATON_DATA_DIR", "/d"),
            ("db_password", "x"),
            ("SOMETHING", "has sk-live-123 inside"),
            ("DATABASE_URL", "postgres://u:p@h/db"),
        ] {
            assert!(is_secret_var(name, value, &secrets), "{name}");
        }
        for (name, value) in [
            ("PATH", "/usr/bin"),
            ("HOME", "/root"),
            ("CARGO_HOME", "/c"),
        ] {
            assert!(!is_secret_var(name, value, &secrets), "{name}");
        }
    }

    #[test]
    fn tail_cuts_on_char_boundary() {
        assert_eq!(tail("abc", 5), "abc");
        let t = tail("ééé", 3);
        assert!(t.ends_with('é') && t.starts_with("[..."));
    }
}
