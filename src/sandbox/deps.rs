//! The fetch phase: the dependencies of code that will run without network, downloaded first
//! by package managers' download commands that run none of the repository's code.
//!
//! Exactly these run with network, in the sandbox, writing only into the run's private cache
//! (never the shared caches) and, for npm, the work tree's `node_modules`:
//! - Rust (`Cargo.toml`): `cargo fetch --manifest-path …` (`--locked` when `Cargo.lock` is
//!   committed). It downloads crates; build scripts and proc macros run only later, offline.
//! - Node (`package.json` with `package-lock.json`): `npm ci --ignore-scripts`, which
//!   installs the locked packages without running any package's or the project's scripts.
//! - Python (`requirements.txt`): a virtualenv in the cache, then `pip install
//!   --only-binary=:all:` of the file's plain requirements: wheels only, so no `setup.py`
//!   runs. The checks then use that virtualenv.
//!
//! Each package manager would also obey the project's own configuration, and several of its
//! settings run programs: cargo's `build.rustc-wrapper` (run by `cargo fetch` to ask rustc
//! its version), rustup's `rust-toolchain.toml` (a toolchain `path`), npm's `git` and
//! `script-shell`, pip's `-e .` or `git+` lines (which build, so run `setup.py`), and
//! `python -m` finds a `venv.py` in the current directory first. So every fetch starts in
//! the cache, outside the work tree (cargo and rustup look for their config from the
//! current directory), Python runs isolated (`-I`), npm's `.npmrc` is masked, a lock file
//! with git dependencies is not fetched, and pip gets a copy of the requirements holding
//! only plain `name[extras] version ; marker` lines.
//!
//! A project with none of these needs no fetch. Anything else (a `setup.py`, `npm install`
//! without a lock, git dependencies that need credentials) is not fetched; its checks run
//! offline and the report says that they may fail for want of network.

use std::path::{Path, PathBuf};

use super::tree::{read_regular, NotRead, MAX_MANIFEST_BYTES};

/// One download command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetch {
    /// The ecosystem, for the report (`cargo`, `npm`, `pip`).
    pub ecosystem: &'static str,
    /// A shell command line run in the sandbox, with network, from the cache directory.
    pub script: String,
    /// Files to write into the cache before the command runs (the vetted requirements).
    pub files: Vec<(PathBuf, String)>,
    /// Regular files of the work tree the command must not read: mounted over with an empty
    /// file while it runs.
    pub masked: Vec<PathBuf>,
    /// Variables the checks need afterwards to find what was fetched (offline flags, the
    /// virtualenv).
    pub env_after: Vec<(String, String)>,
    /// A directory to put first on the checks' `PATH` afterwards.
    pub path_after: Option<String>,
}

/// What the fetch phase will run, and what it leaves out and why.
#[derive(Debug, Default)]
pub struct FetchPlan {
    pub fetches: Vec<Fetch>,
    /// One line per ecosystem or file not fetched, for the report.
    pub notes: Vec<String>,
}

/// What to fetch for the project at `work_tree`, caching into `cache`.
pub fn plan(work_tree: &Path, cache: &Path) -> FetchPlan {
    let mut out = FetchPlan::default();
    let has = |f: &str| {
        std::fs::symlink_metadata(work_tree.join(f)).is_ok_and(|m| m.file_type().is_file())
    };
    if has("Cargo.toml") {
        match cargo_sources_ok(work_tree) {
            Ok(()) => {}
            Err(why) => {
                out.notes
                    .push(format!("cargo dependencies not fetched: {why}"));
                return finish(out, work_tree, cache);
            }
        }
        let manifest = quote(&work_tree.join("Cargo.toml").display().to_string());
        let locked = if has("Cargo.lock") { " --locked" } else { "" };
        out.fetches.push(Fetch {
            ecosystem: "cargo",
            script: format!("cargo fetch --manifest-path {manifest}{locked}"),
            files: Vec::new(),
            masked: Vec::new(),
            // The checks then never try the network, and say so if a crate is missing.
            env_after: vec![("CARGO_NET_OFFLINE".into(), "true".into())],
            path_after: None,
        });
    }
    finish(out, work_tree, cache)
}

/// The npm and pip parts of [`plan`].
fn finish(mut out: FetchPlan, work_tree: &Path, cache: &Path) -> FetchPlan {
    let has = |f: &str| {
        std::fs::symlink_metadata(work_tree.join(f)).is_ok_and(|m| m.file_type().is_file())
    };
    if has("package.json") && has("package-lock.json") {
        match npm_fetch(work_tree) {
            Ok(f) => out.fetches.push(f),
            Err(why) => out
                .notes
                .push(format!("npm dependencies not fetched: {why}")),
        }
    }
    if has("requirements.txt") {
        match pip_fetch(work_tree, cache) {
            Ok((f, skipped)) => {
                if let Some(first) = skipped.first() {
                    out.notes.push(format!(
                        "{} line(s) of requirements.txt not fetched, because installing them could run code or pick another source (first: `{first}`); only plain `name version` requirements are fetched",
                        skipped.len()
                    ));
                }
                out.fetches.push(f);
            }
            Err(why) => out
                .notes
                .push(format!("pip dependencies not fetched: {why}")),
        }
    }
    out
}

fn npm_fetch(work_tree: &Path) -> Result<Fetch, String> {
    let lock = read_regular(
        &work_tree.join("package-lock.json"),
        64 * MAX_MANIFEST_BYTES,
    )
    .map_err(|e| format!("package-lock.json {e}"))?;
    // Only packages from the public registry, each with its checksum: a git dependency is
    // cloned and may be built, and any other URL would be fetched from inside this host's
    // network with the answer left in the cache, where the checks could read it.
    let lock_json: serde_json::Value =
        serde_json::from_str(&lock).map_err(|e| format!("package-lock.json is not JSON: {e}"))?;
    if let Some((dep, why)) = foreign_package(&lock_json) {
        return Err(format!("package-lock.json: {dep} {why}"));
    }
    let mut masked = Vec::new();
    let npmrc = work_tree.join(".npmrc");
    match std::fs::symlink_metadata(&npmrc) {
        Ok(m) if m.file_type().is_file() => masked.push(npmrc),
        Ok(_) => return Err(".npmrc is not a regular file".into()),
        Err(_) => {}
    }
    let prefix = quote(&work_tree.display().to_string());
    Ok(Fetch {
        ecosystem: "npm",
        script: format!("npm ci --prefix {prefix} --ignore-scripts --no-audit --no-fund"),
        files: Vec::new(),
        masked,
        env_after: vec![("npm_config_offline".into(), "true".into())],
        path_after: None,
    })
}

/// Where the fetch phase downloads npm packages from: the public registry, over https.
const NPM_REGISTRY: &str = "https://registry.npmjs.org/";

/// The first package of a v2/v3 lock file (`packages`) or a v1 one (`dependencies`) that is
/// not a tarball of [`NPM_REGISTRY`] with an `integrity`, nor a link into the project, and
/// why.
fn foreign_package(lock: &serde_json::Value) -> Option<(String, &'static str)> {
    for key in ["packages", "dependencies"] {
        let Some(map) = lock.get(key).and_then(|p| p.as_object()) else {
            continue;
        };
        for (name, entry) in map {
            if name.is_empty() {
                continue; // the project itself
            }
            let text = |k: &str| entry.get(k).and_then(|v| v.as_str());
            let is_link = entry.get("link").and_then(|v| v.as_bool()) == Some(true);
            let bundled = entry.get("inBundle").and_then(|v| v.as_bool()) == Some(true)
                || entry.get("bundled").and_then(|v| v.as_bool()) == Some(true);
            match text("resolved") {
                Some(r)
                    if is_link
                        && (r.contains(':')
                            || r.starts_with('/')
                            || r.split('/').any(|p| p == "..")) =>
                {
                    return Some((name.clone(), "links outside the project"));
                }
                Some(_) if is_link => {}
                Some(r) if !r.starts_with(NPM_REGISTRY) => {
                    return Some((
                        name.clone(),
                        "does not come from https://registry.npmjs.org/",
                    ));
                }
                Some(_) if text("integrity").is_none() => {
                    return Some((name.clone(), "has no integrity checksum"));
                }
                Some(_) => {}
                // v1 puts a git or URL source in `version`.
                None if text("version").is_some_and(|v| v.contains(':') || v.contains('/')) => {
                    return Some((name.clone(), "does not come from the registry"));
                }
                None if !bundled && !is_link && key == "packages" => {
                    return Some((name.clone(), "names no registry tarball"));
                }
                None => {}
            }
            if let Some(found) = foreign_package(entry) {
                return Some(found);
            }
        }
    }
    None
}

/// Whether `cargo fetch` would download only from crates.io: no `git`, `registry` or
/// `registry-index` key in any manifest of the tree (a dependency from git, or from another
/// registry, is fetched from wherever its URL says, inside this host's network, and stays in
/// the cache where the checks can read it), and, with a lock file, only crates.io sources.
fn cargo_sources_ok(work_tree: &Path) -> Result<(), String> {
    static KEY: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    let key = KEY.get_or_init(|| {
        regex::Regex::new(r#"(?m)(^|[{,\s])(git|registry|registry-index)\s*="#)
            .expect("valid regex")
    });
    for manifest in manifests(work_tree, "Cargo.toml") {
        let text = read_regular(&manifest, MAX_MANIFEST_BYTES).map_err(|e| {
            format!(
                "{} {e}",
                manifest
                    .strip_prefix(work_tree)
                    .unwrap_or(&manifest)
                    .display()
            )
        })?;
        if let Some(m) = key.find(&text) {
            return Err(format!(
                "{} names a dependency source other than crates.io (`{}`)",
                manifest
                    .strip_prefix(work_tree)
                    .unwrap_or(&manifest)
                    .display(),
                m.as_str().trim_start_matches([',', '{']).trim()
            ));
        }
    }
    match read_regular(&work_tree.join("Cargo.lock"), 16 * MAX_MANIFEST_BYTES) {
        Ok(lock) => {
            for line in lock.lines() {
                let Some(source) = line.trim().strip_prefix("source = ") else {
                    continue;
                };
                let source = source.trim().trim_matches('"');
                if source != "registry+https://github.com/rust-lang/crates.io-index"
                    && source != "sparse+https://index.crates.io/"
                {
                    return Err(format!(
                        "Cargo.lock has a source other than crates.io (`{source}`)"
                    ));
                }
            }
            Ok(())
        }
        Err(NotRead::Absent) => Ok(()),
        Err(e) => Err(format!("Cargo.lock {e}")),
    }
}

/// Every regular file called `name` in the tree (not under `.git`, `target` or
/// `node_modules`), at most a few hundred of them.
fn manifests(root: &Path, name: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(kind) = e.file_type() else { continue };
            let file_name = e.file_name();
            if kind.is_dir()
                && ![".git", "target", "node_modules"].contains(&file_name.to_str().unwrap_or(""))
            {
                stack.push(e.path());
            } else if kind.is_file() && file_name == name {
                out.push(e.path());
            }
        }
        if out.len() > 500 || stack.len() > 10_000 {
            break;
        }
    }
    out
}

fn pip_fetch(work_tree: &Path, cache: &Path) -> Result<(Fetch, Vec<String>), String> {
    let text = read_regular(&work_tree.join("requirements.txt"), MAX_MANIFEST_BYTES).map_err(
        |e| match e {
            NotRead::Absent => "requirements.txt is gone".to_string(),
            e => format!("requirements.txt {e}"),
        },
    )?;
    let (kept, skipped) = plain_requirements(&text)?;
    if kept.is_empty() {
        return Err(match skipped.first() {
            Some(first) => format!("requirements.txt has no plain `name version` requirement (first line: `{first}`), and its other lines could run code or pick another source"),
            None => "requirements.txt lists nothing".into(),
        });
    }
    let venv = cache.join("venv");
    let requirements = cache.join("requirements.fetch.txt");
    let v = quote(&venv.display().to_string());
    let r = quote(&requirements.display().to_string());
    Ok((
        Fetch {
            ecosystem: "pip",
            script: format!(
                "python3 -I -m venv --system-site-packages {v} && {v}/bin/python -I -m pip install --quiet --disable-pip-version-check --no-input --only-binary=:all: -r {r}"
            ),
            files: vec![(requirements, kept.join("\n") + "\n")],
            masked: Vec::new(),
            env_after: vec![
                ("VIRTUAL_ENV".into(), venv.display().to_string()),
                ("PIP_NO_INDEX".into(), "1".into()),
            ],
            path_after: Some(venv.join("bin").display().to_string()),
        },
        skipped,
    ))
}

/// The requirement lines that name a package from the index and nothing else (PEP 508 name,
/// extras, version specifiers, an environment marker, `--hash` options), and the lines left
/// out: options (`-e`, `-r`, `--index-url`, …), URLs, paths, archives, `name @ url`, `${VAR}`.
///
/// Lines are split as pip splits them. Python's `splitlines` also breaks at `\r`, `\x0b`,
/// `\x0c`, `\x1c`–`\x1e`, `\x85`, U+2028 and U+2029, so a line that looks plain here could
/// hide an option there: a file holding any of them (outside `\r\n`) is refused whole.
fn plain_requirements(text: &str) -> Result<(Vec<String>, Vec<String>), String> {
    static PLAIN: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    let plain = PLAIN.get_or_init(|| {
        // ASCII classes only, `[ \t]` for blanks; no `-` in a marker (pip reads a word that
        // starts with one as an option).
        regex::Regex::new(
            r#"^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?[ \t]*(\[[A-Za-z0-9._, \t-]*\])?[ \t]*([<>=!~]=?=?[ \t]*[A-Za-z0-9.*+!_-]+[ \t]*(,[ \t]*[<>=!~]=?=?[ \t]*[A-Za-z0-9.*+!_-]+[ \t]*)*)?(;[ \t]*[A-Za-z0-9_.'"<>=!~ \t(),]*)?([ \t]+--hash=[a-z0-9]+:[0-9a-fA-F]+)*[ \t]*$"#,
        )
        .expect("valid regex")
    });
    let text = text.replace("\r\n", "\n");
    if let Some(c) = text.chars().find(|c| {
        matches!(
            c,
            '\r' | '\x0b' | '\x0c' | '\x1c' | '\x1d' | '\x1e' | '\u{85}' | '\u{2028}' | '\u{2029}'
        )
    }) {
        return Err(format!(
            "requirements.txt holds {c:?}, which pip reads as a line break and baton does not; remove it"
        ));
    }
    let mut kept = Vec::new();
    let mut skipped = Vec::new();
    // Backslash-newline continues a line, as pip reads it.
    let joined = text.replace("\\\n", " ");
    for raw in joined.split('\n') {
        // pip's comments start at a `#` at the line's start or after a blank.
        let line = match raw.find(" #").or_else(|| raw.find("\t#")) {
            Some(i) => &raw[..i],
            None if raw.trim_start().starts_with('#') => "",
            None => raw,
        };
        let line = line.trim_matches([' ', '\t']);
        if line.is_empty() {
            continue;
        }
        // A name that ends like an archive is a local file to pip, which it would build.
        let name: String = line
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
            .collect::<String>()
            .to_ascii_lowercase();
        let archive = [
            ".whl", ".zip", ".tar", ".tgz", ".tbz", ".txz", ".tlz", ".gz", ".bz2", ".xz",
        ]
        .iter()
        .any(|ext| name.ends_with(ext) || name.contains(&format!("{ext}.")));
        if plain.is_match(line) && !archive {
            kept.push(line.to_string());
        } else {
            skipped.push(line.chars().take(120).collect());
        }
    }
    Ok((kept, skipped))
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
/// needs is already in the cache; `None` for a project that is not one. Like the fetch, it
/// runs from outside the work tree, so the project's cargo config is not read.
pub fn cargo_offline_check(work_tree: &Path) -> Option<String> {
    let manifest = work_tree.join("Cargo.toml");
    if !std::fs::symlink_metadata(&manifest).is_ok_and(|m| m.file_type().is_file()) {
        return None;
    }
    let locked = if work_tree.join("Cargo.lock").is_file() {
        " --locked"
    } else {
        ""
    };
    Some(format!(
        "cargo fetch --offline --manifest-path {}{locked}",
        quote(&manifest.display().to_string())
    ))
}

/// Single-quotes `s` for `sh` (paths with spaces or quotes).
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("baton-deps-{}", fastrand::u64(..)));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn plans_only_download_commands_run_from_outside_the_tree() {
        let dir = scratch();
        assert!(plan(&dir, Path::new("/c")).fetches.is_empty());
        std::fs::write(dir.join("Cargo.toml"), "").unwrap();
        std::fs::write(dir.join("Cargo.lock"), "").unwrap();
        std::fs::write(dir.join("package.json"), "{}").unwrap();
        std::fs::write(dir.join("requirements.txt"), "requests==2.31\n").unwrap();
        let p = plan(&dir, Path::new("/c"));
        let scripts: Vec<&str> = p.fetches.iter().map(|f| f.script.as_str()).collect();
        assert_eq!(
            scripts[0],
            format!(
                "cargo fetch --manifest-path '{}/Cargo.toml' --locked",
                dir.display()
            )
        );
        // npm without a lock file is not fetched: `npm install` would resolve freely.
        assert_eq!(p.fetches.len(), 2);
        assert!(scripts[1].contains("--only-binary=:all:"), "{}", scripts[1]);
        assert!(
            scripts[1].starts_with("python3 -I -m venv"),
            "{}",
            scripts[1]
        );
        assert_eq!(p.fetches[1].files[0].1, "requests==2.31\n");
        std::fs::write(dir.join("package-lock.json"), "{}").unwrap();
        std::fs::write(dir.join(".npmrc"), "git=./g.sh\n").unwrap();
        let p = plan(&dir, Path::new("/c"));
        let npm = p.fetches.iter().find(|f| f.ecosystem == "npm").unwrap();
        assert!(npm.script.contains("npm ci --prefix"), "{}", npm.script);
        assert_eq!(npm.masked, vec![dir.join(".npmrc")]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_lock_with_git_dependencies_and_odd_npmrc_are_not_fetched() {
        let dir = scratch();
        std::fs::write(dir.join("package.json"), "{}").unwrap();
        std::fs::write(
            dir.join("package-lock.json"),
            r#"{"lockfileVersion":3,"packages":{"":{},"node_modules/x":{"resolved":"git+ssh://git@github.com/a/x.git#abc"}}}"#,
        )
        .unwrap();
        let p = plan(&dir, Path::new("/c"));
        assert!(p.fetches.is_empty());
        assert!(p.notes[0].contains("node_modules/x"), "{:?}", p.notes);
        std::fs::write(dir.join("package-lock.json"), r#"{"packages":{}}"#).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", dir.join(".npmrc")).unwrap();
        let p = plan(&dir, Path::new("/c"));
        assert!(p.fetches.is_empty());
        assert!(p.notes[0].contains(".npmrc"), "{:?}", p.notes);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn only_plain_requirements_are_kept() {
        let text = "# deps\nrequests[socks] >=2.0, <3 ; python_version >= \"3.8\"  # http\nnumpy==1.26.4 \\\n    --hash=sha256:abcdef0123\n-e .\n-r other.txt\n--index-url https://evil.example/simple\nfoo @ https://evil.example/foo.whl\ngit+https://example.com/x.git\n./local/pkg\nbar==${HOME}\nattrs\n";
        let (kept, skipped) = plain_requirements(text).unwrap();
        assert_eq!(
            kept,
            vec![
                "requests[socks] >=2.0, <3 ; python_version >= \"3.8\"",
                "numpy==1.26.4      --hash=sha256:abcdef0123",
                "attrs",
            ]
        );
        assert_eq!(skipped.len(), 7, "{skipped:?}");
    }

    #[test]
    fn line_breaks_pip_sees_and_archives_are_refused() {
        for trick in [
            "evilpkg ; python_version>\"0\"\r--no-binary evilpkg\n",
            "six ; python_version>\"0\"\x0c-e .\n",
            "attrs ; python_version>\"0\"\u{85}-r ..\n",
            "six\u{2028}-e .\n",
        ] {
            let err = plain_requirements(trick).unwrap_err();
            assert!(err.contains("line break"), "{trick:?}: {err}");
        }
        // Windows line ends are fine.
        let (kept, _) = plain_requirements("six==1.16\r\nattrs\r\n").unwrap();
        assert_eq!(kept, ["six==1.16", "attrs"]);
        let (kept, skipped) =
            plain_requirements("evil.tar.gz\nx.whl\nsix ; python_version>'3' -e .\nok\n").unwrap();
        assert_eq!(kept, ["ok"]);
        assert_eq!(skipped.len(), 3, "{skipped:?}");
    }

    #[test]
    fn npm_locks_fetch_only_checksummed_registry_tarballs() {
        let lock = |entry: &str| -> serde_json::Value {
            serde_json::from_str(&format!(
                r#"{{"lockfileVersion":3,"packages":{{"":{{"name":"p"}},"node_modules/a":{entry}}}}}"#
            ))
            .unwrap()
        };
        let ok = r#"{"version":"1.0.0","resolved":"https://registry.npmjs.org/a/-/a-1.0.0.tgz","integrity":"sha512-x"}"#;
        assert_eq!(foreign_package(&lock(ok)), None);
        for (entry, why) in [
            (
                r#"{"resolved":"http://127.0.0.1:18766/latest/meta-data/","integrity":"sha512-x"}"#,
                "registry.npmjs.org",
            ),
            (
                r#"{"resolved":"https://registry.npmjs.org/a/-/a-1.0.0.tgz"}"#,
                "integrity",
            ),
            (
                r#"{"resolved":"GIT+FILE:///tmp/dep#abc"}"#,
                "registry.npmjs.org",
            ),
            (
                r#"{"resolved":"https://registry.npmjs.org.evil.example/a.tgz","integrity":"x"}"#,
                "registry.npmjs.org",
            ),
            (r#"{"link":true,"resolved":"../outside"}"#, "outside"),
            (r#"{"version":"1.0.0"}"#, "no registry tarball"),
        ] {
            let found = foreign_package(&lock(entry));
            assert!(
                found
                    .as_ref()
                    .is_some_and(|(name, w)| name == "node_modules/a" && w.contains(why)),
                "{entry}: {found:?}"
            );
        }
        assert_eq!(
            foreign_package(&lock(r#"{"link":true,"resolved":"packages/a"}"#)),
            None
        );
        // v1: a git source in `version`, nested.
        let v1: serde_json::Value = serde_json::from_str(
            r#"{"lockfileVersion":1,"dependencies":{"b":{"version":"1.0.0","resolved":"https://registry.npmjs.org/b/-/b-1.0.0.tgz","integrity":"sha1-x","dependencies":{"c":{"version":"bitbucket:a/c#sha"}}}}}"#,
        )
        .unwrap();
        assert_eq!(foreign_package(&v1).map(|f| f.0), Some("c".to_string()));
    }

    #[test]
    fn cargo_fetches_only_from_crates_io() {
        let dir = scratch();
        std::fs::create_dir_all(dir.join("member")).unwrap();
        std::fs::write(
            dir.join("Cargo.toml"),
            "[workspace]\nmembers = [\"member\"]\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("member/Cargo.toml"),
            "[package]\nname = \"m\"\n[dependencies]\nserde = \"1\"\n",
        )
        .unwrap();
        assert_eq!(cargo_sources_ok(&dir), Ok(()));
        std::fs::write(
            dir.join("Cargo.lock"),
            "[[package]]\nname = \"serde\"\nsource = \"registry+https://github.com/rust-lang/crates.io-index\"\n",
        )
        .unwrap();
        assert_eq!(cargo_sources_ok(&dir), Ok(()));
        std::fs::write(
            dir.join("member/Cargo.toml"),
            "[package]\nname = \"m\"\n[dependencies]\nx = { git = \"http://127.0.0.1:9/x\" }\n",
        )
        .unwrap();
        let err = cargo_sources_ok(&dir).unwrap_err();
        assert!(
            err.contains("member/Cargo.toml") && err.contains("git ="),
            "{err}"
        );
        let p = plan(&dir, Path::new("/c"));
        assert!(
            p.fetches.is_empty() && p.notes[0].contains("cargo"),
            "{:?}",
            p.notes
        );
        std::fs::write(dir.join("member/Cargo.toml"), "[package]\nname = \"m\"\n").unwrap();
        std::fs::write(
            dir.join("Cargo.lock"),
            "[[package]]\nname = \"x\"\nsource = \"registry+http://169.254.169.254/index\"\n",
        )
        .unwrap();
        assert!(cargo_sources_ok(&dir)
            .unwrap_err()
            .contains("169.254.169.254"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
