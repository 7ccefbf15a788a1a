//! Verification: finds out what a repository uses for tests, lint and type checks, applies the
//! repository's `.baton.toml` `[verify]` section, runs the checks and reports measured results.
//!
//! This module owns running a repository's own checks: `sh -c` through the sandbox executor
//! (`crate::sandbox`, where the code's trust and `[sandbox]` decide: in bubblewrap, on the
//! host with an allowlisted environment, or not at all), in its own process group that is
//! killed whole on timeout or when the future is dropped, with output streamed, parsed and
//! capped. Code that will run without network gets its dependencies first, in a fetch phase. Counts come only from the runners' real output
//! (cargo test summed over binaries, pytest, jest, vitest, mocha, node's test runner, go test);
//! output it does not understand gives `null` counts, never a guess. It must not change the
//! repository's files itself, nor know about workflows or the forge: it returns a [`Report`]
//! with the JSON fields and the PR description's Verification section. Steps reach it through
//! [`for_step`] and [`in_clone`] (`step.rs`), which hold a [`Slots`] slot and honour the step's
//! cancellation; `in_clone` keeps what the checks leave behind out of the clone's commit.

pub mod annotations;
mod config;
mod counts;
mod detect;
mod markdown;
mod run;
mod slots;
mod step;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::sandbox::integrity::GitState;
use crate::sandbox::{self, Placement, Trust};

pub(crate) use config::toml_error;
pub use config::BATON_TOML;
pub use counts::{parse_counts, Counts};
pub use slots::Slots;
pub use step::{for_step, in_clone};

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
    /// A sandboxed check changed the clone's `.git` (read-only inside): the clone is no longer
    /// trusted by baton's git.
    #[error("a check changed the clone's .git, which is read-only in the sandbox: {}; the run stops here", changes.join(", "))]
    GitChanged {
        /// What changed.
        changes: Vec<String>,
    },
    /// `baton verify --sandbox` on a machine where the sandbox does not work.
    #[error("the sandbox was asked for but is not available: {0}")]
    NoSandbox(String),
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

/// Where the checks run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RunIn {
    /// Where `[sandbox]` puts code of this trust (the workflows: a pull request from a fork
    /// runs in the sandbox without network, or not at all).
    Decide(Trust),
    /// On the host, with the allowlisted environment (`baton verify` on one's own checkout).
    Host,
    /// In the sandbox, whatever `[sandbox]` says (`baton verify --sandbox`); an error when the
    /// sandbox does not work here.
    Sandbox {
        /// Whether the checks keep the host's network.
        network: bool,
    },
}

impl Default for RunIn {
    /// The safe side: code whose author nobody named is untrusted.
    fn default() -> Self {
        RunIn::Decide(Trust::untrusted(
            "the caller did not say who wrote this code",
        ))
    }
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
    /// Run `checks` alone: neither detected checks nor `.baton.toml`'s (issue_to_pr's local CI,
    /// `[ci] command`, is one command, not a verification).
    pub only_these: bool,
    /// Timeout of a check that sets none.
    pub default_timeout: Duration,
    /// How many bytes of the end of each check's output the report keeps.
    pub tail_bytes: usize,
    /// Where the checks run.
    pub run_in: RunIn,
    /// The run's private dependency cache for sandboxed checks (kept between its
    /// verifications); `None`: a temporary one for this verification.
    pub cache: Option<PathBuf>,
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
            only_these: false,
            default_timeout: Duration::from_secs(20 * 60),
            tail_bytes: 4096,
            run_in: RunIn::default(),
            cache: None,
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
    /// Warnings about how the checks ran (e.g. not run: no sandbox for untrusted code).
    pub notes: Vec<String>,
    /// Where the checks ran: `sandbox` (with `network` saying whether it had any), `host`, or
    /// `not run`.
    #[serde(default)]
    pub ran_in: String,
    /// Whether the sandboxed checks had network.
    #[serde(default)]
    pub network: bool,
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
    let placement = match &opts.run_in {
        RunIn::Host => Placement::Host,
        RunIn::Decide(trust) => {
            let settings = sandbox::settings();
            // The probe runs once per process (a few milliseconds of bwrap), then is cached.
            sandbox::place_with(trust, &settings, sandbox::availability)
        }
        RunIn::Sandbox { network } => {
            let a = sandbox::availability();
            if !a.works {
                return Err(Error::NoSandbox(a.detail));
            }
            Placement::Sandbox { network: *network }
        }
    };
    let work_tree = path
        .ancestors()
        .find(|p| p.join(".git").exists())
        .unwrap_or(path);
    // Absolute: the fetch phase names the tree's files from outside it.
    let work_tree = std::fs::canonicalize(work_tree).unwrap_or_else(|_| work_tree.to_path_buf());
    // A cache for this verification alone when the caller keeps none; removed at the end.
    let scratch_cache = match (&placement, &opts.cache) {
        (Placement::Sandbox { .. }, None) => Some(ScratchDir::new()?),
        _ => None,
    };
    let mut env = match &placement {
        Placement::Host => run::scrubbed_env(&opts.pass_env),
        _ => run::sandbox_env(&run::passed_env(&opts.pass_env)),
    };
    let (place, ran_in, network) = match &placement {
        Placement::Refused(reason) => {
            notes.push(reason.clone());
            let checks: Vec<CheckResult> = specs
                .into_iter()
                .map(|spec| unrun(spec, Status::Error, reason))
                .collect();
            let markdown = markdown::render(&checks);
            return Ok(Report {
                ok: false,
                checks,
                markdown,
                notes,
                ran_in: "not run".into(),
                network: false,
            });
        }
        Placement::Host => (run::Where::Host, "host", false),
        Placement::Sandbox { network } => {
            let cache = opts
                .cache
                .clone()
                .or_else(|| scratch_cache.as_ref().map(|s| s.0.clone()));
            let place = run::Where::Sandbox {
                work_tree: work_tree.clone(),
                network: *network,
                cache: cache.clone(),
                masked: Vec::new(),
            };
            if let Some(cache) = &cache {
                // Emptied first: the checks of an earlier verification of this run (a fix
                // round, a retry) could write into it, and the fetch below runs with network
                // from inside it (a planted `venv/`, `.cargo/config.toml` or `.pth` would run
                // there). Every fetch starts from nothing the repository wrote.
                fresh_dir(cache).map_err(|e| Error::Config {
                    path: cache.clone(),
                    message: format!("cannot empty the run's dependency cache: {e}"),
                })?;
                let shared_cargo = use_shared_cargo_cache(&work_tree, cache, opts, &mut env).await;
                if !network {
                    fetch_dependencies(&work_tree, cache, shared_cargo, opts, &mut env, &mut notes)
                        .await;
                }
            }
            (place, "sandbox", *network)
        }
    };
    let sandboxed = matches!(place, run::Where::Sandbox { .. });
    let mut checks = Vec::with_capacity(specs.len());
    let mut stop = false;
    for spec in specs {
        if stop {
            checks.push(unrun(
                spec,
                Status::Skipped,
                "not run: fail-fast after a critical check failed",
            ));
            continue;
        }
        let started = Instant::now();
        let timeout = spec.timeout.unwrap_or(opts.default_timeout);
        tracing::info!(kind = spec.kind.as_str(), command = %spec.command, ran_in, "running check");
        let before = sandboxed.then(|| GitState::capture(&work_tree));
        let span = run::check_span(spec.kind);
        let outcome = tracing::Instrument::instrument(
            run::run(path, &spec.command, timeout, opts.tail_bytes, &place, &env),
            span.clone(),
        )
        .await;
        if let Some(before) = before {
            let changes = before.changes(&GitState::capture(&work_tree));
            if !changes.is_empty() {
                return Err(Error::GitChanged { changes });
            }
        }
        let result = run::to_result(spec, outcome, started.elapsed());
        run::end_check_span(&span, &result);
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
        ran_in: ran_in.into(),
        network,
    })
}

/// A check that was not run, for `reason`: `Error` (the report is then not ok) or `Skipped`.
fn unrun(spec: CheckSpec, status: Status, reason: &str) -> CheckResult {
    CheckResult {
        kind: spec.kind,
        command: spec.command,
        critical: spec.critical,
        status,
        passed: None,
        failed: None,
        skipped: None,
        duration_ms: 0,
        exit_code: None,
        output_tail: String::new(),
        output_bytes: 0,
        failures: Vec::new(),
        error: Some(reason.to_string()),
    }
}

/// The fetch phase ([`sandbox::deps`]): each download command in the sandbox with network,
/// then the checks' environment told where the downloads are. A failed fetch is a note; the
/// checks still run, offline.
async fn fetch_dependencies(
    work_tree: &Path,
    cache: &Path,
    shared_cargo: bool,
    opts: &VerifyOptions,
    env: &mut Vec<(String, String)>,
    notes: &mut Vec<String>,
) {
    let timeout = sandbox::settings().fetch_timeout.0;
    let plan = sandbox::deps::plan(work_tree, cache);
    notes.extend(plan.notes);
    for fetch in plan.fetches {
        if shared_cargo && fetch.ecosystem == "cargo" {
            continue;
        }
        let written = fetch
            .files
            .iter()
            .try_for_each(|(file, text)| write_new(file, text));
        if let Err(e) = written {
            notes.push(format!(
                "the {} dependencies could not be fetched: cannot write into the cache {}: {e}",
                fetch.ecosystem,
                cache.display()
            ));
            continue;
        }
        // From the cache, outside the work tree: see `sandbox::deps` for why.
        let place = run::Where::Sandbox {
            work_tree: work_tree.to_path_buf(),
            network: true,
            cache: Some(cache.to_path_buf()),
            masked: fetch.masked.clone(),
        };
        tracing::info!(ecosystem = fetch.ecosystem, command = %fetch.script, "fetching dependencies with network");
        let outcome = run::run(cache, &fetch.script, timeout, opts.tail_bytes, &place, env).await;
        let result = run::to_result(
            CheckSpec {
                kind: Kind::Custom,
                command: fetch.script.clone(),
                critical: false,
                timeout: Some(timeout),
            },
            outcome,
            Duration::ZERO,
        );
        if result.status == Status::Passed {
            env.extend(fetch.env_after.iter().cloned());
            if let Some(dir) = &fetch.path_after {
                prepend_path(env, dir);
            }
        } else {
            let why = result.error.clone().unwrap_or_else(|| {
                result
                    .output_tail
                    .lines()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or("no output")
                    .trim()
                    .to_string()
            });
            notes.push(format!(
                "the {} dependencies could not be fetched (`{}`: {why}); the checks ran without network and may fail for want of them",
                fetch.ecosystem, fetch.script
            ));
        }
    }
}

/// Whether cargo's shared cache (mounted read-only in the sandbox) already holds every crate
/// the project at `work_tree` needs: `cargo fetch --offline` against it, in the sandbox without
/// network. Then the checks use it, offline, and nothing is downloaded; otherwise they use the
/// run's own cache (filled by the fetch phase, or by cargo itself where the checks have
/// network).
async fn use_shared_cargo_cache(
    work_tree: &Path,
    cache: &Path,
    opts: &VerifyOptions,
    env: &mut Vec<(String, String)>,
) -> bool {
    let Some(home) = sandbox::deps::shared_cargo_home() else {
        return false;
    };
    let Some(script) = sandbox::deps::cargo_offline_check(work_tree) else {
        return false;
    };
    let mut probe_env = env.clone();
    probe_env.push(("CARGO_HOME".into(), home.display().to_string()));
    probe_env.push(("CARGO_NET_OFFLINE".into(), "true".into()));
    let place = run::Where::Sandbox {
        work_tree: work_tree.to_path_buf(),
        network: false,
        cache: Some(cache.to_path_buf()),
        masked: Vec::new(),
    };
    let timeout = Duration::from_secs(120);
    let outcome = run::run(cache, &script, timeout, opts.tail_bytes, &place, &probe_env).await;
    let passed = run::to_result(
        CheckSpec {
            kind: Kind::Custom,
            command: script,
            critical: false,
            timeout: Some(timeout),
        },
        outcome,
        Duration::ZERO,
    )
    .status
        == Status::Passed;
    if passed {
        *env = probe_env;
    }
    passed
}

/// Removes `dir` and what is in it (without following a symlink inside), then makes it again,
/// owner-only.
fn fresh_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    match std::fs::symlink_metadata(dir) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(dir)?,
        Ok(_) => std::fs::remove_file(dir)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Writes a new file, never through a symlink or over something already there.
fn write_new(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(0o600)
        .open(path)?
        .write_all(text.as_bytes())
}

fn prepend_path(env: &mut Vec<(String, String)>, dir: &str) {
    match env.iter_mut().find(|(k, _)| k == "PATH") {
        Some((_, v)) => *v = format!("{dir}:{v}"),
        None => env.push((
            "PATH".into(),
            format!("{dir}:{}", sandbox::profile::sandbox_path()),
        )),
    }
}

/// A temporary directory removed when dropped.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new() -> Result<Self> {
        let dir = std::env::temp_dir().join(format!(
            "baton-deps-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&dir).map_err(|e| Error::Config {
            path: dir.clone(),
            message: format!("cannot create a dependency cache: {e}"),
        })?;
        Ok(ScratchDir(dir))
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs one command in `path` the way a check runs, where the code's trust puts it (the
/// sandbox without network for untrusted code), in its own process group killed at
/// `timeout`. For what a workflow runs that is not one of the repository's checks, such as a
/// bug report's reproduction. Returns the result and where it ran; `Err` with the reason when
/// it may not run at all (untrusted code and no sandbox).
pub async fn run_command(
    path: &Path,
    command: &str,
    timeout: Duration,
    trust: &Trust,
) -> std::result::Result<(CheckResult, Placement), String> {
    let placement = sandbox::place(trust);
    let place = match &placement {
        Placement::Refused(reason) => return Err(reason.clone()),
        Placement::Host => run::Where::Host,
        Placement::Sandbox { network } => run::Where::Sandbox {
            work_tree: path
                .ancestors()
                .find(|p| p.join(".git").exists())
                .unwrap_or(path)
                .to_path_buf(),
            network: *network,
            cache: None,
            masked: Vec::new(),
        },
    };
    let env = match &placement {
        Placement::Host => run::scrubbed_env(&[]),
        _ => run::sandbox_env(&[]),
    };
    let spec = CheckSpec {
        kind: Kind::Custom,
        command: command.to_string(),
        critical: true,
        timeout: Some(timeout),
    };
    let work_tree = path.to_path_buf();
    let before =
        matches!(placement, Placement::Sandbox { .. }).then(|| GitState::capture(&work_tree));
    let started = Instant::now();
    let outcome = run::run(path, command, timeout, 4096, &place, &env).await;
    if let Some(before) = before {
        let changes = before.changes(&GitState::capture(&work_tree));
        if !changes.is_empty() {
            return Err(Error::GitChanged { changes }.to_string());
        }
    }
    Ok((run::to_result(spec, outcome, started.elapsed()), placement))
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
    if opts.only_these {
        return opts.checks.clone();
    }
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
