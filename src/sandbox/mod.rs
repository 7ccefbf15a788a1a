//! The one executor for a repository's code: tests, lint, type checks, custom checks,
//! triage reproductions, the agent's `run_command`, the `command` agent backend, dependency
//! fetches and, when asked, operator `shell` steps.
//!
//! On Linux it is bubblewrap ([`profile`]): new user, pid, ipc, uts and (unless the run may
//! use it) network namespaces, every capability dropped, a root file system that holds only
//! the toolchains (read-only), the clone's work tree (read-write), its `.git` (read-only), and a
//! private `/tmp` and `HOME`. The data dir, `admin.token`, other workspaces, the mirrors and the
//! daemon's home are not mounted at all, so there is nothing to hide with permissions. The
//! environment is built from an allowlist; the daemon's is never passed on. Memory, process
//! count and file size are bounded ([`limits`]); when a command ends, the pid namespace's init
//! dies and takes every process the command started with it, `setsid` or not.
//!
//! Whether something runs in the sandbox, on the host, or not at all is decided here, once, by
//! [`place`]: the trust of the code (who wrote it, see [`Trust`]), `[sandbox] mode`, and
//! whether bubblewrap really works on this machine ([`availability`], probed by running a
//! trivial command in the real profile, not by looking for `bwrap` on `PATH`).

pub mod deps;
pub mod integrity;
pub mod limits;
pub mod profile;
pub mod shell;
pub mod tree;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

pub use profile::{Job, Prepared};

/// `[sandbox]` in `config.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Which code runs in the sandbox: `always` (every repository's code, the default),
    /// `untrusted` (only code from someone without write access; trusted code runs on the
    /// host), `off` (nothing does; untrusted code is then never run).
    pub mode: Mode,
    /// Network for sandboxed code: `trusted` (trusted code keeps the host's network,
    /// untrusted code has none; the default) or `none` (no sandboxed code has network).
    /// Untrusted code never has network, whatever this says; its dependencies are fetched
    /// first, in a fetch phase that runs only package managers' download commands.
    pub network: NetworkPolicy,
    /// Memory of one sandboxed command and everything it starts, in MiB.
    pub memory_mb: u64,
    /// Processes (and threads) one sandboxed command may have at once.
    pub processes: u64,
    /// Largest file a sandboxed command may write, in MiB.
    pub file_size_mb: u64,
    /// Wall time of one dependency fetch (checks keep their own timeouts).
    pub fetch_timeout: baton_actors::definition::Dur,
    /// An issue's `diff` (patch backend) or `revise` instructions from someone without write
    /// access: `wait` for someone with write access to approve, or `refuse` them.
    pub outsider_patches: OutsiderPatches,
    /// Run operator `shell` steps in the sandbox too (a step can ask with `sandbox = true`).
    pub shell: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            mode: Mode::Always,
            network: NetworkPolicy::Trusted,
            memory_mb: 4096,
            processes: 1024,
            file_size_mb: 2048,
            fetch_timeout: baton_actors::definition::Dur(Duration::from_secs(10 * 60)),
            outsider_patches: OutsiderPatches::Wait,
            shell: false,
        }
    }
}

/// `[sandbox] mode`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Every repository's code runs in the sandbox.
    #[default]
    Always,
    /// Only untrusted code does; trusted code runs on the host (scrubbed environment).
    Untrusted,
    /// Nothing runs in the sandbox: trusted code runs on the host, untrusted code never runs.
    Off,
}

/// `[sandbox] network`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NetworkPolicy {
    /// No sandboxed command has network (dependencies come from the fetch phase).
    None,
    /// Trusted code has the host's network; untrusted code has none.
    #[default]
    Trusted,
}

/// `[sandbox] outsider_patches`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutsiderPatches {
    /// Wait for someone with write access to approve.
    #[default]
    Wait,
    /// Refuse at once, saying why.
    Refuse,
}

/// Whose code this is. Trusted: written by someone with write access, or the default branch.
/// Untrusted: a pull request from a fork, a branch pushed by someone without write access, an
/// issue's or comment's code from someone without write access.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "trust", rename_all = "snake_case")]
pub enum Trust {
    /// Code from someone with write access.
    Trusted,
    /// Code from anyone else; `reason` says why, for reports ("pull request from a fork").
    Untrusted {
        /// Why it is not trusted.
        reason: String,
    },
}

impl Trust {
    /// Untrusted, for `reason`.
    pub fn untrusted(reason: impl Into<String>) -> Self {
        Trust::Untrusted {
            reason: reason.into(),
        }
    }

    /// Whether the code comes from someone with write access.
    pub fn is_trusted(&self) -> bool {
        matches!(self, Trust::Trusted)
    }

    /// From a step's `trusted` and `trust_reason` parameters; a missing or unreadable
    /// `trusted` is untrusted (a workflow that forgets to say gets the safe side).
    pub fn from_params(params: &serde_json::Value) -> Self {
        let trusted = match params.get("trusted") {
            Some(serde_json::Value::Bool(b)) => *b,
            Some(serde_json::Value::String(s)) => s == "true",
            _ => false,
        };
        if trusted {
            return Trust::Trusted;
        }
        let reason = params
            .get("trust_reason")
            .and_then(serde_json::Value::as_str)
            .filter(|r| !r.is_empty())
            .unwrap_or("the workflow did not say who wrote this code")
            .to_string();
        Trust::Untrusted { reason }
    }
}

/// Where a command runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// In the sandbox, with or without the host's network.
    Sandbox {
        /// Whether the command keeps the host's network.
        network: bool,
    },
    /// Directly on the host, with a scrubbed environment (trusted code with `mode` off or
    /// `untrusted`).
    Host,
    /// Not at all; the reason is for the report.
    Refused(String),
}

/// Whether bubblewrap works here, as found by running a trivial command in the real profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Availability {
    /// A sandboxed `true` ran and exited 0.
    pub works: bool,
    /// `bwrap --version`, or why there is none.
    pub detail: String,
    /// How memory and processes are bounded: `cgroup v2`, `cgroup v1` or `rlimits`.
    pub limits: String,
    /// How long the probe took (one bubblewrap start, cold).
    pub probe_ms: u64,
}

impl Availability {
    /// The line `baton serve` logs at start and `/healthz` shows.
    pub fn line(&self) -> String {
        if self.works {
            format!(
                "sandbox: bubblewrap ({}), limits by {}",
                self.detail, self.limits
            )
        } else {
            format!(
                "sandbox: NOT AVAILABLE ({}); untrusted code will not be run",
                self.detail
            )
        }
    }
}

static SETTINGS: OnceLock<Mutex<Settings>> = OnceLock::new();
static PROTECTED: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
static AVAILABILITY: Mutex<Option<Availability>> = Mutex::new(None);

/// Sets the process's `[sandbox]` settings (the daemon and the CLI, from `config.toml`).
pub fn configure(settings: Settings) {
    let cell = SETTINGS.get_or_init(|| Mutex::new(Settings::default()));
    *cell.lock().unwrap_or_else(|e| e.into_inner()) = settings;
}

/// Paths no sandbox may ever see (the data dir, the config file), on top of the daemon's home:
/// a toolchain directory that holds one of them is not mounted. Call before the first job.
pub fn protect(paths: impl IntoIterator<Item = PathBuf>) {
    let mut p = PROTECTED.lock().unwrap_or_else(|e| e.into_inner());
    for path in paths {
        let path = std::fs::canonicalize(&path).unwrap_or(path);
        if !p.contains(&path) {
            p.push(path);
        }
    }
}

/// What [`protect`] was given, and every file a secret was read from.
pub(crate) fn protected() -> Vec<PathBuf> {
    let mut out = PROTECTED.lock().unwrap_or_else(|e| e.into_inner()).clone();
    for file in crate::secrets::files() {
        if !out.contains(&file) {
            out.push(file);
        }
    }
    out
}

/// The process's `[sandbox]` settings (defaults until [`configure`] is called).
pub fn settings() -> Settings {
    SETTINGS
        .get_or_init(|| Mutex::new(Settings::default()))
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
}

/// Whether the sandbox works, probing once per process (again after [`reprobe`]).
pub fn availability() -> Availability {
    let mut cached = AVAILABILITY.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(a) = cached.as_ref() {
        return a.clone();
    }
    let a = probe();
    *cached = Some(a.clone());
    a
}

/// Forgets the probe's answer, so the next [`availability`] runs it again.
pub fn reprobe() -> Availability {
    *AVAILABILITY.lock().unwrap_or_else(|e| e.into_inner()) = None;
    availability()
}

/// Runs `bwrap … true` in the real profile (every namespace, the toolchain mounts, a scratch
/// work tree, the limits). Blocking; a few milliseconds when it works.
fn probe() -> Availability {
    let started = Instant::now();
    let limits = limits::Mechanism::detect().describe();
    let fail = |detail: String| Availability {
        works: false,
        detail,
        limits: limits.clone(),
        probe_ms: started.elapsed().as_millis() as u64,
    };
    let Some(bwrap) = profile::find_bwrap() else {
        return fail("bwrap is not installed (Debian: apt-get install bubblewrap)".into());
    };
    let version = std::process::Command::new(&bwrap)
        .arg("--version")
        .env_clear()
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let scratch = std::env::temp_dir().join(format!(
        "baton-sandbox-probe-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    if let Err(e) = std::fs::create_dir_all(&scratch) {
        return fail(format!("cannot create {}: {e}", scratch.display()));
    }
    let _cleanup = RemoveOnDrop(scratch.clone());
    let job = Job::new(&scratch, vec!["true".into()]);
    let prepared = match job.prepare_with(&bwrap) {
        Ok(p) => p,
        Err(e) => return fail(e),
    };
    let mut cmd = prepared.std_command();
    let out = cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .output();
    drop(prepared);
    match out {
        Ok(o) if o.status.success() => Availability {
            works: true,
            detail: if version.is_empty() {
                bwrap.display().to_string()
            } else {
                version
            },
            limits,
            probe_ms: started.elapsed().as_millis() as u64,
        },
        Ok(o) => fail(format!(
            "{} cannot start a sandbox here: {}",
            bwrap.display(),
            String::from_utf8_lossy(&o.stderr)
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("exit status not 0")
                .trim()
        )),
        Err(e) => fail(format!("cannot run {}: {e}", bwrap.display())),
    }
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Where code of this trust runs, under the process's settings and this machine's sandbox.
pub fn place(trust: &Trust) -> Placement {
    let settings = settings();
    let placement = place_with(trust, &settings, availability);
    if matches!(placement, Placement::Refused(_)) {
        let reason = if settings.mode == Mode::Off {
            "sandbox_off"
        } else {
            "sandbox_unavailable"
        };
        refused(reason);
    }
    placement
}

/// Counts a refusal in `baton_sandbox_refusals_total`.
pub(crate) fn refused(reason: &str) {
    crate::telemetry::METRICS
        .sandbox_refusals
        .with_label_values(&[reason])
        .inc();
}

/// [`place`] with explicit settings and probe, for `baton verify --sandbox` and tests.
pub fn place_with(
    trust: &Trust,
    settings: &Settings,
    availability: impl FnOnce() -> Availability,
) -> Placement {
    let network_for_trusted = settings.network == NetworkPolicy::Trusted;
    match (trust, settings.mode) {
        (Trust::Trusted, Mode::Off | Mode::Untrusted) => Placement::Host,
        (Trust::Untrusted { reason }, Mode::Off) => Placement::Refused(format!(
            "not run: {reason}, and such code runs only in the sandbox, which is turned off ([sandbox] mode = \"off\")"
        )),
        (trust, Mode::Always | Mode::Untrusted) => {
            let a = availability();
            if !a.works {
                return match trust {
                    Trust::Untrusted { reason } => Placement::Refused(format!(
                        "not run: {reason}, and such code runs only in the sandbox, which is not available here ({})",
                        a.detail
                    )),
                    // Trusted code with the sandbox asked for and none here: refusing would
                    // stop every run on a machine without bubblewrap; the operator chose
                    // `always` where bwrap works, and `baton serve` says loudly that it does not.
                    Trust::Trusted => Placement::Host,
                };
            }
            Placement::Sandbox {
                network: trust.is_trusted() && network_for_trusted,
            }
        }
    }
}

/// The private directory a run's sandboxed commands use for dependency caches (cargo's
/// `CARGO_HOME`, npm's and pip's caches): beside the clone, never inside it (so it is never
/// committed) and never the daemon's shared caches.
pub fn run_cache_dir(work_tree: &Path) -> PathBuf {
    let name = work_tree
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "repo".into());
    work_tree
        .parent()
        .unwrap_or(work_tree)
        .join(format!(".{name}.baton-deps"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn works() -> Availability {
        Availability {
            works: true,
            detail: "bubblewrap 0.8.0".into(),
            limits: "rlimits".into(),
            probe_ms: 1,
        }
    }

    fn missing() -> Availability {
        Availability {
            works: false,
            detail: "bwrap is not installed".into(),
            ..works()
        }
    }

    #[test]
    fn untrusted_code_never_gets_network_nor_the_host() {
        let s = Settings::default();
        let t = Trust::untrusted("pull request from a fork (eve/calc)");
        assert_eq!(
            place_with(&t, &s, works),
            Placement::Sandbox { network: false }
        );
        let Placement::Refused(why) = place_with(&t, &s, missing) else {
            panic!("untrusted code ran without a sandbox")
        };
        assert!(
            why.contains("fork") && why.contains("not installed"),
            "{why}"
        );
        let off = Settings {
            mode: Mode::Off,
            ..Settings::default()
        };
        assert!(matches!(place_with(&t, &off, works), Placement::Refused(_)));
        let untrusted_only = Settings {
            mode: Mode::Untrusted,
            ..Settings::default()
        };
        assert_eq!(
            place_with(&t, &untrusted_only, works),
            Placement::Sandbox { network: false }
        );
    }

    #[test]
    fn trusted_code_follows_the_mode_and_network_settings() {
        let s = Settings::default();
        assert_eq!(
            place_with(&Trust::Trusted, &s, works),
            Placement::Sandbox { network: true }
        );
        let no_net = Settings {
            network: NetworkPolicy::None,
            ..Settings::default()
        };
        assert_eq!(
            place_with(&Trust::Trusted, &no_net, works),
            Placement::Sandbox { network: false }
        );
        let untrusted_only = Settings {
            mode: Mode::Untrusted,
            ..Settings::default()
        };
        assert_eq!(
            place_with(&Trust::Trusted, &untrusted_only, works),
            Placement::Host
        );
    }

    #[test]
    fn trust_from_step_parameters_defaults_to_untrusted() {
        assert_eq!(
            Trust::from_params(&serde_json::json!({"trusted": true})),
            Trust::Trusted
        );
        assert_eq!(
            Trust::from_params(&serde_json::json!({"trusted": "true"})),
            Trust::Trusted
        );
        assert!(!Trust::from_params(&serde_json::json!({})).is_trusted());
        let t = Trust::from_params(
            &serde_json::json!({"trusted": false, "trust_reason": "author @eve has no write access"}),
        );
        assert_eq!(t, Trust::untrusted("author @eve has no write access"));
    }

    #[test]
    fn the_run_cache_lives_beside_the_clone() {
        assert_eq!(
            run_cache_dir(Path::new("/data/workspaces/r1/repo")),
            PathBuf::from("/data/workspaces/r1/.repo.baton-deps")
        );
    }
}
