//! The fetch phase: the dependencies of code that will run without network, downloaded first
//! by package managers' download commands that run none of the repository's code.
//!
//! Exactly these run with network, in the sandbox, writing only into the run's private cache
//! (never the shared caches) and, for npm, the work tree's `node_modules`:
//! - Rust (`Cargo.toml`): `cargo fetch` (`--locked` when `Cargo.lock` is committed). It
//!   downloads crates; build scripts and proc macros run only later, offline.
//! - Node (`package.json` with `package-lock.json`): `npm ci --ignore-scripts`, which
//!   installs the locked packages without running any package's or the project's scripts.
//! - Python (`requirements.txt`): a virtualenv in the cache, then `pip install
//!   --only-binary=:all: -r requirements.txt`: wheels only, so no `setup.py` runs. The checks
//!   then use that virtualenv.
//!
//! A project with none of these needs no fetch. Anything else (a `setup.py`, `npm install`
//! without a lock, git dependencies that need credentials) is not fetched; its checks run
//! offline and the report says that they may fail for want of network.

use std::path::{Path, PathBuf};

/// One download command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetch {
    /// The ecosystem, for the report (`cargo`, `npm`, `pip`).
    pub ecosystem: &'static str,
    /// A shell command line run in the work tree, in the sandbox, with network.
    pub script: String,
    /// Variables the checks need afterwards to find what was fetched (offline flags, the
    /// virtualenv), relative to the cache directory given to [`plan`].
    pub env_after: Vec<(String, String)>,
    /// A directory to put first on the checks' `PATH` afterwards.
    pub path_after: Option<String>,
}

/// What to fetch for the project at `work_tree`, caching into `cache`.
pub fn plan(work_tree: &Path, cache: &Path) -> Vec<Fetch> {
    let has = |f: &str| work_tree.join(f).is_file();
    let mut out = Vec::new();
    if has("Cargo.toml") {
        let locked = if has("Cargo.lock") { " --locked" } else { "" };
        out.push(Fetch {
            ecosystem: "cargo",
            script: format!("cargo fetch{locked}"),
            // The checks then never try the network, and say so if a crate is missing.
            env_after: vec![("CARGO_NET_OFFLINE".into(), "true".into())],
            path_after: None,
        });
    }
    if has("package.json") && has("package-lock.json") {
        out.push(Fetch {
            ecosystem: "npm",
            script: "npm ci --ignore-scripts --no-audit --no-fund".into(),
            env_after: vec![("npm_config_offline".into(), "true".into())],
            path_after: None,
        });
    }
    if has("requirements.txt") {
        let venv = cache.join("venv");
        let v = shlex_quote(&venv.display().to_string());
        out.push(Fetch {
            ecosystem: "pip",
            script: format!(
                "python3 -m venv --system-site-packages {v} && {v}/bin/pip install --quiet --disable-pip-version-check --no-input --only-binary=:all: -r requirements.txt"
            ),
            env_after: vec![
                ("VIRTUAL_ENV".into(), venv.display().to_string()),
                ("PIP_NO_INDEX".into(), "1".into()),
            ],
            path_after: Some(venv.join("bin").display().to_string()),
        });
    }
    out
}

/// Cargo's home shared by the daemon's user (`CARGO_HOME` or `~/.cargo`), when it holds a
/// registry: the sandbox mounts its `bin`, `registry` and `git` read-only at the same path,
/// never its config or credentials.
pub fn shared_cargo_home() -> Option<PathBuf> {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))?;
    home.join("registry").is_dir().then_some(home)
}

/// The command that succeeds, offline, only when every crate the Rust project at `work_tree`
/// needs is already in the cache; `None` for a project that is not one.
pub fn cargo_offline_check(work_tree: &Path) -> Option<String> {
    if !work_tree.join("Cargo.toml").is_file() {
        return None;
    }
    let locked = if work_tree.join("Cargo.lock").is_file() {
        " --locked"
    } else {
        ""
    };
    Some(format!("cargo fetch --offline{locked}"))
}

/// Single-quotes `s` for `sh` (paths with spaces).
fn shlex_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_only_download_commands() {
        let dir = std::env::temp_dir().join(format!("baton-deps-{}", fastrand::u64(..)));
        std::fs::create_dir_all(&dir).unwrap();
        assert!(plan(&dir, Path::new("/c")).is_empty());
        std::fs::write(dir.join("Cargo.toml"), "").unwrap();
        std::fs::write(dir.join("Cargo.lock"), "").unwrap();
        std::fs::write(dir.join("package.json"), "{}").unwrap();
        std::fs::write(dir.join("requirements.txt"), "").unwrap();
        let p = plan(&dir, Path::new("/c"));
        let scripts: Vec<&str> = p.iter().map(|f| f.script.as_str()).collect();
        assert_eq!(scripts[0], "cargo fetch --locked");
        // npm without a lock file is not fetched: `npm install` would resolve freely.
        assert_eq!(p.len(), 2);
        assert!(scripts[1].contains("--only-binary=:all:"), "{}", scripts[1]);
        std::fs::write(dir.join("package-lock.json"), "{}").unwrap();
        let p = plan(&dir, Path::new("/c"));
        assert!(p
            .iter()
            .any(|f| f.script.contains("npm ci --ignore-scripts")));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
