//! `shell`: runs `sh -c <run>` in the run's workspace, in a process group of its own.
//!
//! The group is spawned through [`crate::procs`] (recorded before `sh` runs, killed if a
//! crashed daemon left it) and killed with SIGKILL when the attempt is cancelled, times out
//! (its future is dropped) or ends: a step leaves no process behind. Output keeps the last
//! 64 KiB of each stream, so a command printing gigabytes costs 128 KiB.
//!
//! # What the command sees ([`ShellPolicy`], installed by the app)
//!
//! Never the daemon's environment. The command's environment is built, in this order, from:
//! 1. the daemon's variables named by the policy's allowlist ([`DEFAULT_ALLOWLIST`]: `PATH`,
//!    `HOME`, the locale, the toolchains' own variables), none of them a secret;
//! 2. `BATON_RUN_ID`, `BATON_STEP_ID`, `BATON_ATTEMPT`, `BATON_IDEMPOTENCY_KEY`,
//!    `BATON_WORKSPACE`, and the run's input as `BATON_INPUT_<NAME>` ([`input_variables`]):
//!    a script reads `"$BATON_INPUT_OUT"` instead of splicing `{{ input.out }}` into its own
//!    text, where a value such as `x; env > f` would be a command;
//! 3. the variables the step names in `pass_env`, resolved through the policy's lookup (the
//!    app's secrets); one without a value fails the step, naming it;
//! 4. the literal values of `with.env`.
//!
//! A step with `sandbox = true`, or every step when the policy says `sandbox_all`, runs through
//! the app's [`ShellSandbox`] with that same environment; without one it is refused, never run
//! on the host instead.

use std::fmt;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;

use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;

use crate::action::{Action, ActionContext, ActionError};

/// Bytes of stdout and of stderr kept.
pub const OUTPUT_TAIL: usize = 64 * 1024;

/// The daemon's variables a `shell` step gets without naming them: what finds and runs the
/// tools, nothing that authenticates. A trailing `*` matches every name with that prefix.
pub const DEFAULT_ALLOWLIST: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "LANG",
    "LANGUAGE",
    "LC_*",
    "TZ",
    "TMPDIR",
    "CARGO_HOME",
    "RUSTUP_HOME",
    "RUSTUP_TOOLCHAIN",
    "GOPATH",
    "GOROOT",
    "GOCACHE",
    "GOMODCACHE",
    "PYENV_ROOT",
    "PYENV_VERSION",
    "VIRTUAL_ENV",
    "CONDA_PREFIX",
    "NVM_DIR",
    "NVM_BIN",
    "JAVA_HOME",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
];

/// Resolves a variable a step names in `pass_env` to its value; `None` when it has none.
pub type Lookup = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// Runs a `shell` step's script in the sandbox. The app implements it; the engine knows no
/// sandbox of its own.
pub trait ShellSandbox: Send + Sync {
    /// The command that runs `script` with `sh -c` in the sandbox, in `dir` (inside
    /// `workspace`, the run's directory, which the command may write), with exactly `env` (the
    /// sandbox may replace `HOME` and `TMPDIR` with private ones). The caller sets its stdio
    /// and spawns it in a process group of its own, killed whole when the step ends. The guard
    /// is held until then: dropping it releases what bounds the command (its cgroup). An error
    /// says why the sandbox cannot run it; the step then fails with it.
    fn command(
        &self,
        script: &str,
        workspace: &Path,
        dir: &Path,
        env: Vec<(String, String)>,
    ) -> Result<(Command, Box<dyn std::any::Any + Send>), String>;
}

/// How `shell` steps run: which of the daemon's variables they see, where a declared one
/// comes from, and the sandbox.
#[derive(Clone)]
pub struct ShellPolicy {
    /// The daemon's variables every step gets, by name (`LC_*`: by prefix).
    pub allowlist: Vec<String>,
    /// Where the values of `pass_env` come from.
    pub lookup: Lookup,
    /// Every `shell` step runs in the sandbox, whatever it says.
    pub sandbox_all: bool,
    /// The sandbox; `None` refuses every step that must run in it.
    pub sandbox: Option<Arc<dyn ShellSandbox>>,
}

impl Default for ShellPolicy {
    /// The default allowlist, `pass_env` read from this process's environment, no sandbox.
    fn default() -> Self {
        ShellPolicy {
            allowlist: DEFAULT_ALLOWLIST.iter().map(|s| s.to_string()).collect(),
            lookup: Arc::new(|name| std::env::var(name).ok()),
            sandbox_all: false,
            sandbox: None,
        }
    }
}

impl fmt::Debug for ShellPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShellPolicy")
            .field("allowlist", &self.allowlist)
            .field("sandbox_all", &self.sandbox_all)
            .field("sandbox", &self.sandbox.is_some())
            .finish_non_exhaustive()
    }
}

impl ShellPolicy {
    fn allows(&self, name: &str) -> bool {
        self.allowlist
            .iter()
            .any(|entry| match entry.strip_suffix('*') {
                Some(prefix) => name.starts_with(prefix),
                None => name == entry,
            })
    }
}

/// The `shell` action under the default policy ([`ShellPolicy::default`]).
pub fn shell() -> impl Action {
    shell_with(ShellPolicy::default())
}

/// The `shell` action under `policy`; the app registers it as `shell`, replacing the default.
pub fn shell_with(policy: ShellPolicy) -> impl Action {
    let policy = Arc::new(policy);
    move |ctx: ActionContext| {
        let policy = policy.clone();
        async move { run(ctx, &policy).await }
    }
}

/// A value of `pass_env`, kept to take it out of the step's output.
struct Declared {
    name: String,
    value: String,
}

/// Declared values shorter than this (in bytes) are left in the output: too short to be a
/// token, and replacing them would garble it.
const REDACT_MIN: usize = 8;

/// An environment: names and values, each name once.
type Variables = Vec<(String, String)>;

/// The command's environment (see the module's comment), and the declared values.
fn environment(
    ctx: &ActionContext,
    policy: &ShellPolicy,
    daemon: impl Iterator<Item = (String, String)>,
) -> Result<(Variables, Vec<Declared>), ActionError> {
    let mut env: Vec<(String, String)> = daemon.filter(|(k, _)| policy.allows(k)).collect();
    let own = [
        ("BATON_RUN_ID", ctx.run_id.clone()),
        ("BATON_STEP_ID", ctx.step_id.clone()),
        ("BATON_ATTEMPT", ctx.attempt.to_string()),
        ("BATON_IDEMPOTENCY_KEY", ctx.idempotency_key.clone()),
        ("BATON_WORKSPACE", ctx.workspace.display().to_string()),
    ];
    env.extend(own.into_iter().map(|(k, v)| (k.to_string(), v)));
    env.extend(input_variables(&ctx.input));
    let mut declared = Vec::with_capacity(ctx.pass_env.len());
    for name in &ctx.pass_env {
        let value = (policy.lookup)(name).ok_or_else(|| {
            ActionError::fatal(format!(
                "step `{}`: `pass_env` names `{name}`, and baton has no value for it; set \
                 {name} where baton starts, or take it out of the step's `pass_env`",
                ctx.step_id
            ))
        })?;
        env.push((name.clone(), value.clone()));
        declared.push(Declared {
            name: name.clone(),
            value,
        });
    }
    match ctx.params.get("env") {
        None => {}
        Some(Value::Object(literal)) => {
            for (k, v) in literal {
                let value = match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                env.push((k.clone(), value));
            }
        }
        Some(other) => {
            return Err(ActionError::fatal(format!(
                "step `{}`: parameter `env` must be a table of literal values, got {other}",
                ctx.step_id
            )))
        }
    }
    // Later entries win, as `Command::env` would have it.
    let mut seen = std::collections::HashSet::new();
    let mut unique: Variables = env
        .into_iter()
        .rev()
        .filter(|(k, _)| seen.insert(k.clone()))
        .collect();
    unique.reverse();
    Ok((unique, declared))
}

/// The variable that carries the input `name`: `BATON_INPUT_` and the name upper-cased, with
/// anything but an ASCII letter or digit turned into `_`.
pub fn input_variable(name: &str) -> String {
    let key: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("BATON_INPUT_{key}")
}

/// The run's input as variables: `BATON_INPUT_` and the name upper-cased, with anything but
/// an ASCII letter or digit turned into `_`; a string as it is, any other value as JSON text.
/// Two names that come out the same (`a-b`, `a_b`) keep the first, in name order.
pub fn input_variables(input: &serde_json::Map<String, Value>) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::with_capacity(input.len());
    for (name, value) in input {
        let key = input_variable(name);
        if out.iter().any(|(k, _)| *k == key) {
            continue;
        }
        let value = match value {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        // A NUL cannot be in an environment variable; such a value is left out rather than cut.
        if !value.contains('\0') {
            out.push((key, value));
        }
    }
    out
}

/// `text` with every declared value of [`REDACT_MIN`] bytes or more replaced by its name.
fn redact(mut text: String, declared: &[Declared]) -> String {
    for d in declared.iter().filter(|d| d.value.len() >= REDACT_MIN) {
        if text.contains(&d.value) {
            text = text.replace(&d.value, &format!("[{}]", d.name));
        }
    }
    text
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

async fn run(ctx: ActionContext, policy: &ShellPolicy) -> Result<Value, ActionError> {
    let script = ctx.param_str("run")?.to_string();
    let mut dir = ctx.workspace.clone();
    if let Some(sub) = ctx.params.get("dir").and_then(Value::as_str) {
        dir = dir.join(sub);
    }
    let daemon = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)));
    let (env, declared) = environment(&ctx, policy, daemon)?;
    tokio::fs::create_dir_all(&dir).await.map_err(|e| {
        ActionError::fatal(format!("cannot create workspace {}: {e}", dir.display()))
    })?;
    // `_guard` outlives the process group (declared first, dropped last).
    let (mut cmd, label, _guard) = if ctx.sandbox || policy.sandbox_all {
        let why = if ctx.sandbox {
            "this step asks for the sandbox (`sandbox = true`)"
        } else {
            "shell steps run in the sandbox (the daemon's setting)"
        };
        let refused = |reason: &str| {
            ActionError::fatal(format!(
                "step `{}`: {why}, and none is available: {reason}",
                ctx.step_id
            ))
        };
        let sandbox = policy
            .sandbox
            .as_ref()
            .ok_or_else(|| refused("this baton has no sandbox to run it in"))?;
        let (cmd, guard) = sandbox
            .command(&script, &ctx.workspace, &dir, env)
            .map_err(|reason| refused(&reason))?;
        (cmd, "sandbox", Some(guard))
    } else {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(&script)
            .current_dir(&dir)
            .env_clear()
            .envs(env);
        (cmd, "sh", None)
    };
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // The group's guard kills it when dropped: `post_stop` does not run when an actor fails,
    // and a dropped future runs no code, but a guard runs either way.
    let mut group = crate::procs::spawn(cmd, label)
        .await
        .map_err(|e| ActionError::fatal(format!("cannot start {label}: {e}")))?;
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
    let stdout = redact(text(stdout.await.unwrap_or_default()), &declared);
    let stderr = redact(text(stderr.await.unwrap_or_default()), &declared);
    let status = status.map_err(|e| ActionError::retryable(format!("waiting for {label}: {e}")))?;
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
