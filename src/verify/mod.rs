//! Verification: finds out what a repository uses for tests, lint and type checks, applies the
//! repository's `.baton.toml` `[verify]` section, runs the checks and reports measured results.
//!
//! This module owns running a repository's own commands: `sh -c` in a scrubbed environment
//! (an allowlist: no tokens, keys or `BATON_*`), in its own process group that is killed whole
//! on timeout or when the future is dropped, with output streamed, parsed and capped, and
//! optionally inside bubblewrap with no network. Counts come only from the runners' real output
//! (cargo test summed over binaries, pytest, jest, vitest, mocha, node's test runner, go test);
//! output it does not understand gives `null` counts, never a guess. It must not change the
//! repository's files itself, nor know about workflows or the forge: it returns a [`Report`]
//! with the JSON fields and the PR description's Verification section.

mod config;
mod counts;
mod detect;
mod markdown;
mod run;
pub mod slots;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

pub use config::BATON_TOML;
pub use counts::{parse_counts, Counts};

/// Result of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why verification could not run at all (a check that fails is a [`Status`], not an error).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The path does not exist or is not a directory.
    #[error("{path} is not a directory")]
    NotADirectory {
        /// The path given.
        path: PathBuf,
    },
    /// The directory is not inside a git work tree.
    #[error("{path} is not a repository (no .git in it or above it)")]
    NotARepository {
        /// The path given.
        path: PathBuf,
    },
    /// `.baton.toml` could not be read or is wrong; the message names the key.
    #[error("{path}: {message}")]
    Config {
        /// The `.baton.toml` file.
        path: PathBuf,
        /// What is wrong, with the key (and line) when known.
        message: String,
    },
    /// Nothing to run: no known project files, no `[verify]` checks (or none left by `only`).
    #[error("no checks found in {path}{filter}: add a [[verify.checks]] entry to .baton.toml or a test command the repository's tools define")]
    NoChecks {
        /// The repository.
        path: PathBuf,
        /// ` (only: tests,lint)` when a filter was given.
        filter: String,
    },
    /// A word that names no [`Kind`].
    #[error("unknown check kind `{0}` (expected tests, lint, types or custom)")]
    UnknownKind(String),
    /// `limits.max_verifications` set twice in one process with different values.
    #[error("limits.max_verifications is already {set} in this process; cannot make it {wanted}")]
    LimitAlreadySet {
        /// The bound in force.
        set: usize,
        /// The bound asked for.
        wanted: usize,
    },
}

/// What a check is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A test suite.
    Tests,
    /// A linter.
    Lint,
    /// A type checker.
    Types,
    /// Anything else the repository or workflow asks for.
    Custom,
}

impl Kind {
    /// `tests`, `lint`, `types`, `custom`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Tests => "tests",
            Kind::Lint => "lint",
            Kind::Types => "types",
            Kind::Custom => "custom",
        }
    }
}

impl std::str::FromStr for Kind {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim() {
            "tests" | "test" => Ok(Kind::Tests),
            "lint" => Ok(Kind::Lint),
            "types" | "type" => Ok(Kind::Types),
            "custom" => Ok(Kind::Custom),
            other => Err(Error::UnknownKind(other.to_string())),
        }
    }
}

/// How a check ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Exit status 0 and no failures counted.
    Passed,
    /// Non-zero exit status (or failures counted).
    Failed,
    /// Could not be run to the end: not installed, not executable, timed out.
    Error,
    /// Not run: fail-fast stopped after an earlier critical failure.
    Skipped,
}

/// One command to run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckSpec {
    /// What it is for.
    pub kind: Kind,
    /// A shell command line, run with `sh -c` in the repository.
    pub command: String,
    /// Whether a failure makes the report not ok (and stops a fail-fast run).
    pub critical: bool,
    /// Its own timeout; the options' default when `None`.
    pub timeout: Option<Duration>,
}

/// Whether checks run inside bubblewrap.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sandbox {
    /// Run directly.
    #[default]
    None,
    /// `bwrap` with the file system read-only except the repository and `/tmp`, and no network;
    /// falls back to running directly (with a warning in the report) when `bwrap` is missing.
    Bwrap,
}

/// How to verify; the workflow's and the CLI's settings. `None` fields defer to `.baton.toml`.
#[derive(Clone, Debug)]
pub struct VerifyOptions {
    /// Stop at the first failing critical check (`Some(true)`), run them all (`Some(false)`),
    /// or do what `.baton.toml` says (default: continue).
    pub fail_fast: Option<bool>,
    /// Run only these kinds.
    pub only: Option<Vec<Kind>>,
    /// Checks the workflow adds; like `.baton.toml` entries, they replace detected checks of
    /// their kind (custom ones add).
    pub checks: Vec<CheckSpec>,
    /// Timeout of a check that sets none.
    pub default_timeout: Duration,
    /// How many bytes of the end of each check's output the report keeps.
    pub tail_bytes: usize,
    /// Sandboxing.
    pub sandbox: Sandbox,
    /// Environment variables passed through beyond the built-in allowlist (never a secret:
    /// names that look like one are dropped anyway).
    pub pass_env: Vec<String>,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        VerifyOptions {
            fail_fast: None,
            only: None,
            checks: Vec::new(),
            default_timeout: Duration::from_secs(20 * 60),
            tail_bytes: 4096,
            sandbox: Sandbox::None,
            pass_env: Vec::new(),
        }
    }
}

/// The result of one check: the JSON object of `checks[]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckResult {
    /// What it was for.
    pub kind: Kind,
    /// The command line.
    pub command: String,
    /// Whether it blocks.
    pub critical: bool,
    /// How it ended.
    pub status: Status,
    /// Tests passed, `null` when the output gave no count.
    pub passed: Option<u64>,
    /// Tests failed, `null` when unknown.
    pub failed: Option<u64>,
    /// Tests skipped (ignored, pending, todo), `null` when unknown.
    pub skipped: Option<u64>,
    /// Wall time of the command.
    pub duration_ms: u64,
    /// The exit code, `null` when it did not exit (killed, not started).
    pub exit_code: Option<i32>,
    /// The last `tail_bytes` of its combined output.
    pub output_tail: String,
    /// Total bytes of output, of which only the tail was kept.
    pub output_bytes: u64,
    /// Names of failing tests, when the runner's output names them (at most 20).
    pub failures: Vec<String>,
    /// Why the check could not run, for status `error` (and why it was skipped).
    pub error: Option<String>,
}

/// The verification report: `{ok, checks, markdown}` plus notes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// No critical check failed or errored.
    pub ok: bool,
    /// Every check, in the order run.
    pub checks: Vec<CheckResult>,
    /// The `## Verification` section for a PR description.
    pub markdown: String,
    /// Warnings about how the checks ran (e.g. bwrap asked for but missing).
    pub notes: Vec<String>,
}

/// Verifies the repository at `path`: detects or reads its checks, runs them and reports.
pub async fn verify(path: &Path, opts: &VerifyOptions) -> Result<Report> {
    let meta = std::fs::metadata(path);
    if !meta.map(|m| m.is_dir()).unwrap_or(false) {
        return Err(Error::NotADirectory {
            path: path.to_path_buf(),
        });
    }
    if !path.ancestors().any(|p| p.join(".git").exists()) {
        return Err(Error::NotARepository {
            path: path.to_path_buf(),
        });
    }
    let repo_config = config::load(path)?;
    let mut specs = checks_of(path, &repo_config, opts);
    if let Some(only) = &opts.only {
        specs.retain(|s| only.contains(&s.kind));
    }
    if specs.is_empty() {
        let filter = opts
            .only
            .as_ref()
            .map(|o| {
                let kinds: Vec<&str> = o.iter().map(|k| k.as_str()).collect();
                format!(" (only: {})", kinds.join(","))
            })
            .unwrap_or_default();
        return Err(Error::NoChecks {
            path: path.to_path_buf(),
            filter,
        });
    }
    let fail_fast = opts.fail_fast.or(repo_config.fail_fast).unwrap_or(false);
    let mut notes = Vec::new();
    let sandbox = match opts.sandbox {
        Sandbox::Bwrap if !run::bwrap_available() => {
            notes.push(
                "sandbox bwrap was asked for but bwrap is not installed; checks ran without it"
                    .to_string(),
            );
            Sandbox::None
        }
        s => s,
    };
    let env = run::scrubbed_env(&opts.pass_env);
    let mut checks = Vec::with_capacity(specs.len());
    let mut stop = false;
    for spec in specs {
        if stop {
            checks.push(CheckResult {
                kind: spec.kind,
                command: spec.command,
                critical: spec.critical,
                status: Status::Skipped,
                passed: None,
                failed: None,
                skipped: None,
                duration_ms: 0,
                exit_code: None,
                output_tail: String::new(),
                output_bytes: 0,
                failures: Vec::new(),
                error: Some("not run: fail-fast after a critical check failed".into()),
            });
            continue;
        }
        let started = Instant::now();
        let timeout = spec.timeout.unwrap_or(opts.default_timeout);
        tracing::info!(kind = spec.kind.as_str(), command = %spec.command, "running check");
        let outcome = run::run(path, &spec.command, timeout, opts.tail_bytes, sandbox, &env).await;
        let result = run::to_result(spec, outcome, started.elapsed());
        if fail_fast && result.critical && matches!(result.status, Status::Failed | Status::Error) {
            stop = true;
        }
        checks.push(result);
    }
    // A skipped check only follows a failed critical one, which already makes this false.
    let ok = checks
        .iter()
        .all(|c| !c.critical || matches!(c.status, Status::Passed | Status::Skipped));
    let markdown = markdown::render(&checks);
    Ok(Report {
        ok,
        checks,
        markdown,
        notes,
    })
}

/// Runs one command in `path` the way a check runs: `sh -c` in the scrubbed environment, in
/// its own process group killed at `timeout`, inside bubblewrap (no network, the file system
/// read-only but for `path` and a private `/tmp`) when `sandbox` asks and bwrap is installed.
/// For what a workflow runs that is not one of the repository's checks, such as a bug
/// report's reproduction. Returns the result and the sandbox it actually ran in.
pub async fn run_command(
    path: &Path,
    command: &str,
    timeout: Duration,
    sandbox: Sandbox,
) -> (CheckResult, Sandbox) {
    let sandbox = match sandbox {
        Sandbox::Bwrap if !run::bwrap_available() => Sandbox::None,
        s => s,
    };
    let spec = CheckSpec {
        kind: Kind::Custom,
        command: command.to_string(),
        critical: true,
        timeout: Some(timeout),
    };
    let env = run::scrubbed_env(&[]);
    let started = Instant::now();
    let outcome = run::run(path, command, timeout, 4096, sandbox, &env).await;
    (run::to_result(spec, outcome, started.elapsed()), sandbox)
}

/// Whether bubblewrap is installed (a `Sandbox::Bwrap` run falls back to none without it).
pub fn bwrap_available() -> bool {
    run::bwrap_available()
}

/// The checks `verify` would run in `path` with default options: detected, then the
/// repository's `.baton.toml` applied. For plans and reports that say what will be checked.
pub fn detect_checks(path: &Path) -> Result<Vec<CheckSpec>> {
    let repo_config = config::load(path)?;
    Ok(checks_of(path, &repo_config, &VerifyOptions::default()))
}

fn checks_of(
    path: &Path,
    repo_config: &config::RepoConfig,
    opts: &VerifyOptions,
) -> Vec<CheckSpec> {
    let mut specs = if repo_config.detect {
        detect::detect(path)
    } else {
        Vec::new()
    };
    apply_overrides(&mut specs, &repo_config.checks);
    apply_overrides(&mut specs, &opts.checks);
    specs
}

/// A check of kind tests/lint/types replaces the detected checks of its kind (the first such
/// override drops them, later ones add); custom checks always add.
fn apply_overrides(specs: &mut Vec<CheckSpec>, overrides: &[CheckSpec]) {
    let mut replaced = Vec::new();
    for o in overrides {
        if o.kind != Kind::Custom && !replaced.contains(&o.kind) {
            specs.retain(|s| s.kind != o.kind);
            replaced.push(o.kind);
        }
        specs.push(o.clone());
    }
}
