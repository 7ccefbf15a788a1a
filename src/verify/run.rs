//! Running one check: `sh -c` in its own process group, stdout and stderr merged into one pipe,
//! read on a blocking thread that parses counts line by line and keeps only the output's tail.
//!
//! Whatever happens (exit, timeout, the future dropped) the whole process group is killed, so
//! no test server or forked child outlives its check; a child that escaped the group and keeps
//! the pipe open does not keep the reader waiting once the check is over.

use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use baton_actors::procs;
use tokio::process::Command;

use super::counts::{Counts, Parser};
use super::{CheckResult, CheckSpec, Kind, Status};
use crate::sandbox;

/// Variables a test run may see. Everything else (tokens, keys, `BATON_*`, proxies with
/// credentials) is dropped: an allowlist, so a new secret variable is safe by default.
const ENV_ALLOWLIST: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "TMPDIR",
    "CARGO_HOME",
    "RUSTUP_HOME",
    "RUSTUP_TOOLCHAIN",
    "GOPATH",
    "GOROOT",
    "GOCACHE",
    "GOMODCACHE",
    "GOFLAGS",
    "PYENV_ROOT",
    "PYENV_VERSION",
    "VIRTUAL_ENV",
    "CONDA_PREFIX",
    "NVM_DIR",
    "JAVA_HOME",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
];

/// Substrings of variable names that mark a secret; such a variable is never passed on.
const SECRET_MARKERS: &[&str] = &[
    "TOKEN",
    "SECRET",
    "KEY",
    "PASSWORD",
    "PASSWD",
    "CREDENTIAL",
    "AUTH",
];

/// Set for every check: non-interactive, no colours (the counts parser reads plain text).
const FIXED_ENV: &[(&str, &str)] = &[
    ("CI", "true"),
    ("NO_COLOR", "1"),
    ("FORCE_COLOR", "0"),
    ("CARGO_TERM_COLOR", "never"),
];

/// Longest partial line buffered while waiting for its newline; longer lines are cut.
const MAX_LINE: usize = 8192;

/// How long the reader waits in `poll` before looking at the stop flag.
const POLL_MS: i32 = 100;

/// The environment for checks: the allowlist (and `extra`) minus anything that looks secret.
pub(crate) fn scrubbed_env(extra: &[String]) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| ENV_ALLOWLIST.contains(&k.as_str()) || extra.iter().any(|e| e == k))
        .filter(|(k, _)| {
            let upper = k.to_ascii_uppercase();
            !upper.starts_with("BATON_") && !SECRET_MARKERS.iter().any(|m| upper.contains(m))
        })
        .collect();
    env.extend(
        FIXED_ENV
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    env
}

/// The `pass_env` variables a caller asked for, when set and not secret-looking.
pub(crate) fn passed_env(names: &[String]) -> Vec<(String, String)> {
    names
        .iter()
        .filter(|k| {
            let upper = k.to_ascii_uppercase();
            !upper.starts_with("BATON_") && !SECRET_MARKERS.iter().any(|m| upper.contains(m))
        })
        .filter_map(|k| std::env::var(k).ok().map(|v| (k.clone(), v)))
        .collect()
}

/// Where one command runs.
#[derive(Debug, Clone)]
pub(crate) enum Where {
    /// `sh -c` on the host, in the scrubbed environment.
    Host,
    /// `sh -c` in the sandbox, with the work tree (the directory holding `.git`) read-write.
    Sandbox {
        work_tree: std::path::PathBuf,
        network: bool,
        cache: Option<std::path::PathBuf>,
        /// Files of the work tree hidden from this command (see `sandbox::deps`).
        masked: Vec<std::path::PathBuf>,
    },
}

/// The variables a sandboxed check gets beyond the sandbox's own: the fixed ones, and those
/// of `env` (the caller's allowlisted ones) the sandbox does not set itself.
pub(crate) fn sandbox_env(extra: &[(String, String)]) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = FIXED_ENV
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    env.extend(extra.iter().cloned());
    env
}

/// How a command ended.
pub(crate) struct Outcome {
    /// Exit code; `None` when killed or never started.
    exit: Option<i32>,
    timed_out: Option<Duration>,
    spawn_error: Option<String>,
    tail: String,
    bytes: u64,
    counts: Option<Counts>,
    failures: Vec<String>,
}

/// Kills the process group when dropped (after a normal exit too: leftover children go).
struct GroupGuard {
    pgid: i32,
    stop: Arc<AtomicBool>,
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if self.pgid > 0 {
            // SAFETY: sends a signal; no memory involved. ESRCH (already gone) is fine.
            unsafe {
                libc::kill(-self.pgid, libc::SIGKILL);
            }
        }
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the array, which we then own.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and are owned by nothing else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Runs `command` in `dir` and collects its outcome; never fails (problems are in the outcome).
pub(crate) async fn run(
    dir: &Path,
    command: &str,
    timeout: Duration,
    tail_bytes: usize,
    place: &Where,
    env: &[(String, String)],
) -> Outcome {
    let fail = |msg: String| Outcome {
        exit: None,
        timed_out: None,
        spawn_error: Some(msg),
        tail: String::new(),
        bytes: 0,
        counts: None,
        failures: Vec::new(),
    };
    let (reader, writer) = match pipe() {
        Ok(p) => p,
        Err(e) => return fail(format!("cannot create a pipe: {e}")),
    };
    let writer2 = match writer.try_clone() {
        Ok(w) => w,
        Err(e) => return fail(format!("cannot duplicate a pipe: {e}")),
    };
    // Kept until the command is over: dropping it kills what is left in its cgroup.
    let mut _confinement: Option<sandbox::Prepared> = None;
    let mut cmd = match place {
        Where::Host => {
            let mut c = Command::new("sh");
            c.arg("-c")
                .arg(command)
                .env_clear()
                .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
            c
        }
        Where::Sandbox {
            work_tree,
            network,
            cache,
            masked,
        } => {
            let mut job = sandbox::Job::shell(work_tree, command);
            job.chdir = Some(dir.to_path_buf());
            job.network = *network;
            job.cache = cache.clone();
            job.masked = masked.clone();
            job.env = env.to_vec();
            let prepared = match job.prepare() {
                Ok(p) => p,
                Err(e) => return fail(format!("cannot start the sandbox: {e}")),
            };
            let c = prepared.command();
            _confinement = Some(prepared);
            c
        }
    };
    cmd.current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::from(writer))
        .stderr(Stdio::from(writer2))
        .kill_on_drop(true);
    // Recorded before it runs (see `baton_actors::procs`). The command, which holds our copies
    // of the pipe's write end, is dropped once spawned, so EOF can come.
    let mut group = match procs::spawn(cmd, "verify").await {
        Ok(g) => g,
        Err(e) => return fail(format!("cannot start `{command}`: {e}")),
    };
    let pgid = group.pgid();
    let child = &mut group.child;
    let stop = Arc::new(AtomicBool::new(false));
    let guard = GroupGuard {
        pgid,
        stop: stop.clone(),
    };
    let read_task = tokio::task::spawn_blocking(move || read_all(reader, tail_bytes, &stop));
    let (exit, timed_out) = match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) => (status.code(), None),
        Ok(Err(e)) => {
            drop(guard);
            let _ = read_task.await;
            return fail(format!("cannot wait for `{command}`: {e}"));
        }
        Err(_) => (None, Some(timeout)),
    };
    // Kills what is left of the group (all of it on timeout) and tells the reader to finish.
    drop(guard);
    if timed_out.is_some() {
        let _ = child.wait().await;
    }
    let collected = read_task.await.unwrap_or_default();
    Outcome {
        exit,
        timed_out,
        spawn_error: None,
        tail: collected.tail,
        bytes: collected.bytes,
        counts: collected.counts,
        failures: collected.failures,
    }
}

#[derive(Default)]
struct Collected {
    tail: String,
    bytes: u64,
    counts: Option<Counts>,
    failures: Vec<String>,
}

/// Reads the pipe until EOF, or until `stop` is set and nothing more is waiting.
fn read_all(fd: OwnedFd, tail_bytes: usize, stop: &AtomicBool) -> Collected {
    let raw = fd.as_raw_fd();
    // SAFETY: fcntl on a descriptor we own.
    unsafe {
        let flags = libc::fcntl(raw, libc::F_GETFL);
        libc::fcntl(raw, libc::F_SETFL, flags | libc::O_NONBLOCK);
    }
    let mut file = std::fs::File::from(fd);
    let mut parser = Parser::default();
    let mut tail: Vec<u8> = Vec::with_capacity(tail_bytes * 2);
    let mut line: Vec<u8> = Vec::new();
    let mut line_cut = false;
    let mut bytes = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                let chunk = &buf[..n];
                bytes += n as u64;
                tail.extend_from_slice(chunk);
                if tail.len() > tail_bytes * 2 + buf.len() {
                    tail.drain(..tail.len() - tail_bytes);
                }
                let mut rest = chunk;
                while let Some(i) = rest.iter().position(|&b| b == b'\n') {
                    if !line_cut && line.len() + i <= MAX_LINE {
                        line.extend_from_slice(&rest[..i]);
                        parser.line(&String::from_utf8_lossy(&line));
                    }
                    line.clear();
                    line_cut = false;
                    rest = &rest[i + 1..];
                }
                if line.len() + rest.len() > MAX_LINE {
                    line.clear();
                    line_cut = true;
                } else if !line_cut {
                    line.extend_from_slice(rest);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let mut pfd = libc::pollfd {
                    fd: raw,
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: poll on one descriptor we own, with a valid pollfd.
                unsafe {
                    libc::poll(&mut pfd, 1, POLL_MS);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    if !line.is_empty() && !line_cut {
        parser.line(&String::from_utf8_lossy(&line));
    }
    let (counts, failures) = parser.finish();
    let start = tail.len().saturating_sub(tail_bytes);
    let mut text = String::from_utf8_lossy(&tail[start..]).into_owned();
    if start > 0 {
        // Begin at a line boundary when one is near, so the tail does not start mid-line.
        if let Some(i) = text.find('\n').filter(|&i| i < 200) {
            text.drain(..=i);
        }
    }
    Collected {
        tail: text,
        bytes,
        counts,
        failures,
    }
}

/// The shell's "not found" / "not executable" statuses.
const EXIT_NOT_EXECUTABLE: i32 = 126;
const EXIT_NOT_FOUND: i32 = 127;

/// The span of one check while traces are exported: its kind, never its output.
pub(crate) fn check_span(kind: Kind) -> tracing::Span {
    if !crate::telemetry::in_traced_run() {
        return tracing::Span::none();
    }
    tracing::info_span!(
        target: "baton::trace",
        "check",
        otel.name = format!("verify {}", kind.as_str()),
        baton.check_kind = kind.as_str(),
        baton.check_status = tracing::field::Empty,
        baton.tests_passed = tracing::field::Empty,
        baton.tests_failed = tracing::field::Empty,
        baton.tests_skipped = tracing::field::Empty,
        baton.duration_ms = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    )
}

/// Records a check's result on its span.
pub(crate) fn end_check_span(span: &tracing::Span, check: &CheckResult) {
    if span.is_disabled() {
        return;
    }
    span.record("baton.check_status", status_label(check.status));
    span.record("baton.duration_ms", check.duration_ms);
    for (field, value) in [
        ("baton.tests_passed", check.passed),
        ("baton.tests_failed", check.failed),
        ("baton.tests_skipped", check.skipped),
    ] {
        if let Some(value) = value {
            span.record(field, value);
        }
    }
    if matches!(check.status, Status::Failed | Status::Error) {
        span.record("otel.status_code", "ERROR");
    }
}

fn status_label(status: Status) -> &'static str {
    match status {
        Status::Passed => "passed",
        Status::Failed => "failed",
        Status::Error => "error",
        Status::Skipped => "skipped",
    }
}

/// Turns an outcome into the report's check (and counts it in `baton_verify_checks_total`).
pub(crate) fn to_result(spec: CheckSpec, o: Outcome, elapsed: Duration) -> CheckResult {
    let result = to_result_uncounted(spec, o, elapsed);
    crate::telemetry::METRICS
        .verify_checks
        .with_label_values(&[result.kind.as_str(), status_label(result.status)])
        .inc();
    result
}

fn to_result_uncounted(spec: CheckSpec, o: Outcome, elapsed: Duration) -> CheckResult {
    let (status, error) = if let Some(e) = o.spawn_error {
        (Status::Error, Some(e))
    } else if let Some(t) = o.timed_out {
        (
            Status::Error,
            Some(format!(
                "timed out after {}; the process group was killed",
                human(t)
            )),
        )
    } else {
        match o.exit {
            Some(0) if o.counts.is_some_and(|c| c.failed > 0) => (Status::Failed, None),
            Some(0) => (Status::Passed, None),
            Some(code @ (EXIT_NOT_FOUND | EXIT_NOT_EXECUTABLE)) => {
                let msg = o
                    .tail
                    .lines()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or("command not found")
                    .trim()
                    .to_string();
                (Status::Error, Some(format!("exit {code}: {msg}")))
            }
            Some(_) => (Status::Failed, None),
            None => (Status::Error, Some("killed by a signal".to_string())),
        }
    };
    let counts = if status == Status::Error {
        None
    } else {
        o.counts
    };
    CheckResult {
        kind: spec.kind,
        command: spec.command,
        critical: spec.critical,
        status,
        passed: counts.map(|c| c.passed),
        failed: counts.map(|c| c.failed),
        skipped: counts.map(|c| c.skipped),
        duration_ms: elapsed.as_millis() as u64,
        exit_code: o.exit,
        output_tail: o.tail,
        output_bytes: o.bytes,
        failures: o.failures,
        error,
    }
}

pub(crate) fn human(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms} ms")
    } else if ms % 1000 == 0 {
        format!("{} s", ms / 1000)
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrubs_secrets_from_the_environment() {
        std::env::set_var("BATON_GITHUB_WEBHOOK_SECRET", "x");
        std::env::set_var("MY_API_KEY", "x");
        let env = scrubbed_env(&["MY_API_KEY".into(), "EXTRA_OK".into()]);
        assert!(env
            .iter()
            .all(|(k, _)| !k.starts_with("BATON_") && k != "MY_API_KEY"));
        assert!(env.iter().any(|(k, v)| k == "CI" && v == "true"));
        assert!(env.iter().all(|(k, _)| k != "GITHUB_TOKEN"));
    }
}
