//! The bubblewrap profile: what a sandboxed command can see and do.
//!
//! The sandbox's root is an empty tmpfs. Only what is listed here is mounted into it, so
//! anything not listed (the data dir, `admin.token`, other workspaces, the mirrors, the
//! daemon's home and config, `/proc` of the host) does not exist inside. Flatpak and the GNOME
//! and Firefox sandboxes build theirs the same way: a fresh root, the runtime read-only, the
//! app's own data read-write, everything else absent.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use super::limits::{Confinement, Limits};

/// Files of `/etc` that toolchains read (name lookups, TLS roots, the dynamic linker, time
/// zones, Debian's alternatives and Python's and Java's site configuration). Nothing else of
/// `/etc` is mounted: it can hold the daemon's config, machine secrets and credentials.
const ETC_FILES: &[&str] = &[
    "passwd",
    "group",
    "hosts",
    "resolv.conf",
    "nsswitch.conf",
    "host.conf",
    "gai.conf",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "localtime",
    "timezone",
    "ca-certificates",
    "ca-certificates.conf",
    "alternatives",
    "mime.types",
    "protocols",
    "services",
    "os-release",
    "debian_version",
];

/// TLS roots and OpenSSL's config, deeper in `/etc`: never `/etc/ssl` or `/etc/pki` whole,
/// which hold the machine's private keys (`/etc/ssl/private`, `/etc/pki/tls/private`).
const ETC_NESTED: &[&str] = &[
    "ssl/certs",
    "ssl/cert.pem",
    "ssl/openssl.cnf",
    "pki/tls/certs",
    "pki/tls/cert.pem",
    "pki/tls/openssl.cnf",
    "pki/ca-trust/extracted",
    "pki/java",
];

/// Prefixes of `/etc` entries mounted too (versioned directories: `python3.11`, `java-17-openjdk`).
const ETC_PREFIXES: &[&str] = &["python3", "java-"];

/// The top-level directories of the host's system; each is a directory (mounted read-only) or,
/// on merged-`/usr` systems, a symlink into `/usr` (recreated as one).
const SYSTEM_DIRS: &[&str] = &[
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32",
];

/// Files inside toolchain directories that hold credentials or registry tokens; mounted over
/// with an empty file so that they cannot be read even where their directory is visible.
const CREDENTIAL_FILES: &[&str] = &[
    "credentials.toml",
    "credentials",
    "config.toml",
    "config",
    ".npmrc",
    ".pypirc",
    ".netrc",
    ".git-credentials",
];

/// `HOME` inside: a private tmpfs, empty at every start.
pub const SANDBOX_HOME: &str = "/home/sandbox";

/// Variables the sandbox passes on from the daemon, when set: locale and time zone, which
/// affect output but hold nothing secret. Everything else is set here or by the caller.
const PASSED_VARS: &[&str] = &[
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "RUSTUP_TOOLCHAIN",
    "PYENV_VERSION",
];

/// One command to run in the sandbox.
#[derive(Debug, Clone)]
pub struct Job {
    /// The clone's work tree: mounted read-write at its own path; its `.git` read-only.
    pub work_tree: PathBuf,
    /// Where the command starts: the work tree unless set; must be inside it or inside the
    /// cache (the fetch phase starts outside the tree, so that package managers do not read
    /// the project's own configuration).
    pub chdir: Option<PathBuf>,
    /// The program and its arguments.
    pub argv: Vec<String>,
    /// Whether the command keeps the host's network (otherwise: a network namespace with only
    /// a loopback of its own).
    pub network: bool,
    /// The run's private dependency cache (read-write); `None` gives a tmpfs-backed one.
    pub cache: Option<PathBuf>,
    /// Variables beyond the sandbox's own (never a secret; the caller's allowlist).
    pub env: Vec<(String, String)>,
    /// Files or directories of the host mounted read-only at their own paths: what the
    /// operator's configuration names (the `command` backend's script), never a path from a
    /// repository or an issue.
    pub read_only: Vec<PathBuf>,
    /// Regular files of the work tree mounted over with an empty file for this command.
    pub masked: Vec<PathBuf>,
    /// Memory, processes, file size.
    pub limits: Limits,
}

impl Job {
    /// A job with the process's `[sandbox]` limits, no network and no cache.
    pub fn new(work_tree: &Path, argv: Vec<String>) -> Self {
        Job {
            work_tree: work_tree.to_path_buf(),
            chdir: None,
            argv,
            network: false,
            cache: None,
            env: Vec::new(),
            read_only: Vec::new(),
            masked: Vec::new(),
            limits: Limits::from_settings(&super::settings()),
        }
    }

    /// `sh -c <script>` in the sandbox.
    pub fn shell(work_tree: &Path, script: &str) -> Self {
        Self::new(work_tree, vec!["sh".into(), "-c".into(), script.into()])
    }

    /// The bubblewrap command line and its confinement; fails when bwrap is missing or a
    /// limit cannot be set up.
    pub fn prepare(&self) -> Result<Prepared, String> {
        let bwrap = find_bwrap().ok_or_else(|| {
            "bwrap is not installed (Debian: apt-get install bubblewrap)".to_string()
        })?;
        let prepared = self.prepare_with(&bwrap);
        if prepared.is_err() {
            super::refused("cannot_prepare");
        }
        prepared
    }

    /// [`Job::prepare`] with a given `bwrap`.
    pub(crate) fn prepare_with(&self, bwrap: &Path) -> Result<Prepared, String> {
        if self.argv.is_empty() {
            return Err("empty command".into());
        }
        let work_tree = absolute(&self.work_tree)?;
        let cache = match &self.cache {
            Some(cache) => {
                std::fs::create_dir_all(cache)
                    .map_err(|e| format!("cannot create {}: {e}", cache.display()))?;
                Some(absolute(cache)?)
            }
            None => None,
        };
        let chdir = match &self.chdir {
            Some(d) => {
                let d = absolute(d)?;
                let in_cache = cache.as_ref().is_some_and(|c| d.starts_with(c));
                if !d.starts_with(&work_tree) && !in_cache {
                    return Err(format!(
                        "{} is outside the work tree {}",
                        d.display(),
                        work_tree.display()
                    ));
                }
                d
            }
            None => work_tree.clone(),
        };
        let tc = toolchain();
        let mut a: Vec<OsString> = Vec::with_capacity(128);
        fn push(a: &mut Vec<OsString>, items: &[&str]) {
            a.extend(items.iter().map(OsString::from));
        }
        push(
            &mut a,
            &[
                "--unshare-user",
                "--unshare-pid",
                "--unshare-ipc",
                "--unshare-uts",
                "--unshare-cgroup-try",
            ],
        );
        if !self.network {
            push(&mut a, &["--unshare-net"]);
        }
        push(
            &mut a,
            &[
                "--die-with-parent",
                "--new-session",
                "--cap-drop",
                "ALL",
                "--hostname",
                "baton-sandbox",
                "--clearenv",
            ],
        );
        if tc.disable_userns {
            push(&mut a, &["--disable-userns"]);
        }
        // The private /tmp first: a toolchain or a PATH directory that lives under the host's
        // /tmp (a checkout or a CI workspace there) is then mounted on top of it, not hidden.
        push(
            &mut a,
            &["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"],
        );
        for m in &tc.mounts {
            m.args(&mut a);
        }
        // Computed per job: a secret file or config read after the first job is masked too.
        let home = std::env::var_os("HOME").map(PathBuf::from);
        for m in masks(
            &tc.mounts,
            &tc.covered,
            &forbidden_paths(home.as_deref()),
            tc.cargo_home.as_deref(),
        ) {
            m.args(&mut a);
        }
        push(&mut a, &["--tmpfs", SANDBOX_HOME]);
        // A cache that lives on a tmpfs when the caller gave none: still private, still gone
        // when the command ends.
        let cache_dest = match cache {
            Some(cache) => {
                Mount::Bind(cache.clone(), cache.clone()).args(&mut a);
                cache
            }
            None => PathBuf::from("/tmp/baton-deps"),
        };
        for path in &self.read_only {
            let path = absolute(path)?;
            if super::protected().iter().any(|p| p.starts_with(&path)) {
                return Err(format!(
                    "{} holds baton's data dir; it is never mounted in the sandbox",
                    path.display()
                ));
            }
            Mount::ReadOnly(path.clone(), path).args(&mut a);
        }
        // The work tree must not hold what the sandbox keeps out (a workspace is inside the
        // data dir, never the other way round).
        if super::protected().iter().any(|p| p.starts_with(&work_tree)) {
            return Err(format!(
                "{} holds baton's data dir; it is never mounted in the sandbox",
                work_tree.display()
            ));
        }
        Mount::Bind(work_tree.clone(), work_tree.clone()).args(&mut a);
        let git = work_tree.join(".git");
        if git.exists() {
            Mount::ReadOnly(git.clone(), git).args(&mut a);
        }
        for file in &self.masked {
            // Only a regular file inside the tree: a symlink would be followed by the mount.
            let regular = std::fs::symlink_metadata(file).is_ok_and(|m| m.file_type().is_file());
            if !file.starts_with(&self.work_tree) || !regular {
                return Err(format!(
                    "{} is not a regular file of the work tree; it cannot be masked",
                    file.display()
                ));
            }
            let inside = work_tree.join(file.strip_prefix(&self.work_tree).unwrap_or(file));
            Mount::Hide(inside).args(&mut a);
        }
        a.push("--chdir".into());
        a.push(chdir.into_os_string());
        // Variables go through bwrap's --setenv (after --clearenv), so nothing of the
        // daemon's environment reaches even bwrap's own child by accident.
        for (k, v) in self.environment(tc, &cache_dest) {
            a.push("--setenv".into());
            a.push(k.into());
            a.push(v.into());
        }
        a.push("--".into());
        a.extend(self.argv.iter().map(OsString::from));
        let confinement = Confinement::new(&self.limits)?;
        Ok(Prepared {
            program: bwrap.to_path_buf(),
            args: a,
            confinement,
        })
    }

    fn environment(&self, tc: &Toolchain, cache: &Path) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = vec![
            ("PATH".into(), tc.path.clone()),
            ("HOME".into(), SANDBOX_HOME.into()),
            ("USER".into(), "sandbox".into()),
            ("LOGNAME".into(), "sandbox".into()),
            ("SHELL".into(), "/bin/sh".into()),
            ("TMPDIR".into(), "/tmp".into()),
            ("CI".into(), "true".into()),
            (
                "CARGO_HOME".into(),
                cache.join("cargo").display().to_string(),
            ),
            (
                "npm_config_cache".into(),
                cache.join("npm").display().to_string(),
            ),
            (
                "PIP_CACHE_DIR".into(),
                cache.join("pip").display().to_string(),
            ),
            ("GOPATH".into(), cache.join("go").display().to_string()),
            (
                "GOCACHE".into(),
                cache.join("go-build").display().to_string(),
            ),
        ];
        env.extend(tc.env.iter().cloned());
        for name in PASSED_VARS {
            if let Ok(v) = std::env::var(name) {
                env.push((name.to_string(), v));
            }
        }
        if !env.iter().any(|(k, _)| k == "LANG") {
            env.push(("LANG".into(), "C.UTF-8".into()));
        }
        for (k, v) in &self.env {
            env.retain(|(name, _)| name != k);
            env.push((k.clone(), v.clone()));
        }
        env
    }
}

/// A job ready to start: the command line and the limits applied to the child before exec.
pub struct Prepared {
    program: PathBuf,
    args: Vec<OsString>,
    confinement: Confinement,
}

impl Prepared {
    /// The command for tokio (stdin, stdout, stderr and the process group are the caller's).
    pub fn command(&self) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(&self.program);
        cmd.args(&self.args).env_clear();
        let hook = self.confinement.hook();
        // SAFETY: the hook only makes async-signal-safe system calls (setrlimit, write to
        // descriptors opened before the fork) and allocates nothing.
        unsafe {
            cmd.pre_exec(move || hook.apply());
        }
        cmd
    }

    /// The same, for blocking callers.
    pub fn std_command(&self) -> std::process::Command {
        use std::os::unix::process::CommandExt;
        let mut cmd = std::process::Command::new(&self.program);
        cmd.args(&self.args).env_clear();
        let hook = self.confinement.hook();
        // SAFETY: as in `command`.
        unsafe {
            cmd.pre_exec(move || hook.apply());
        }
        cmd
    }

    /// How processes and memory are bounded for this job (`cgroup v1`, `rlimits`, …).
    pub fn limits_by(&self) -> &'static str {
        self.confinement.mechanism()
    }

    /// The bubblewrap arguments (for tests and `--explain`).
    pub fn args(&self) -> &[OsString] {
        &self.args
    }
}

/// One mount of the profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Mount {
    ReadOnly(PathBuf, PathBuf),
    Bind(PathBuf, PathBuf),
    Symlink(PathBuf, PathBuf),
    /// An empty file over a credential file.
    Hide(PathBuf),
    /// An empty directory over one that a mounted directory holds but the sandbox must not
    /// see (a data dir or a cargo home under `/usr/local`).
    Mask(PathBuf),
}

impl Mount {
    fn args(&self, a: &mut Vec<OsString>) {
        let (flag, x, y): (&str, &Path, &Path) = match self {
            Mount::ReadOnly(s, d) => ("--ro-bind", s, d),
            Mount::Bind(s, d) => ("--bind", s, d),
            Mount::Symlink(target, link) => ("--symlink", target, link),
            Mount::Hide(path) => ("--ro-bind", Path::new("/dev/null"), path),
            Mount::Mask(path) => {
                a.push("--tmpfs".into());
                a.push(path.as_os_str().to_owned());
                return;
            }
        };
        a.push(flag.into());
        a.push(x.as_os_str().to_owned());
        a.push(y.as_os_str().to_owned());
    }
}

/// What every job mounts from the host, and the toolchain variables: computed once.
pub(crate) struct Toolchain {
    pub mounts: Vec<Mount>,
    pub env: Vec<(String, String)>,
    /// The daemon's `PATH`, without entries that are not mounted inside.
    pub path: String,
    /// The directories mounted read-only from the host.
    covered: Vec<PathBuf>,
    /// Cargo's home, whose credentials are masked wherever it is mounted.
    cargo_home: Option<PathBuf>,
    disable_userns: bool,
}

fn toolchain() -> &'static Toolchain {
    static TC: OnceLock<Toolchain> = OnceLock::new();
    TC.get_or_init(|| {
        let home = std::env::var_os("HOME").map(PathBuf::from);
        let forbidden = forbidden_paths(home.as_deref());
        toolchain_for(
            std::env::var_os("PATH").unwrap_or_default(),
            home.as_deref(),
            &|name| std::env::var_os(name).map(PathBuf::from),
            &forbidden,
            &SYSTEM_DIRS.iter().map(PathBuf::from).collect::<Vec<_>>(),
            bwrap_supports("--disable-userns"),
        )
    })
}

/// Paths the sandbox must never contain: the data dir (with `admin.token`, the store, every
/// workspace and the mirrors), the daemon's home and its config directory.
fn forbidden_paths(home: Option<&Path>) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    if let Some(h) = home {
        out.push(h.to_path_buf());
    }
    for var in [
        "BATON_DATA_DIR",
        "BATON_CONFIG",
        "XDG_DATA_HOME",
        "XDG_CONFIG_HOME",
    ] {
        if let Some(p) = std::env::var_os(var) {
            out.push(PathBuf::from(p));
        }
    }
    out.extend(super::protected());
    out
}

pub(crate) fn toolchain_for(
    path_var: OsString,
    home: Option<&Path>,
    var: &dyn Fn(&str) -> Option<PathBuf>,
    forbidden: &[PathBuf],
    system_dirs: &[PathBuf],
    disable_userns: bool,
) -> Toolchain {
    let mut mounts: Vec<Mount> = Vec::new();
    let mut covered: Vec<PathBuf> = Vec::new();
    for p in system_dirs {
        let p = p.as_path();
        match std::fs::symlink_metadata(p) {
            Ok(m) if m.file_type().is_symlink() => {
                if let Ok(target) = std::fs::read_link(p) {
                    mounts.push(Mount::Symlink(target, p.to_path_buf()));
                }
            }
            Ok(m) if m.is_dir() => {
                mounts.push(Mount::ReadOnly(p.to_path_buf(), p.to_path_buf()));
                covered.push(p.to_path_buf());
            }
            _ => {}
        }
    }
    if let Ok(entries) = std::fs::read_dir("/etc") {
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| {
                ETC_FILES.contains(&n.as_str()) || ETC_PREFIXES.iter().any(|p| n.starts_with(p))
            })
            .collect();
        names.sort();
        names.extend(
            ETC_NESTED
                .iter()
                .filter(|n| Path::new("/etc").join(n).exists())
                .map(|n| n.to_string()),
        );
        for n in names {
            let p = Path::new("/etc").join(n);
            mounts.push(Mount::ReadOnly(p.clone(), p));
        }
    }
    let is_safe = |p: &Path| {
        p.is_absolute()
            && p != Path::new("/")
            && p.exists()
            // A directory that holds the data dir or the daemon's home would bring them in.
            && !forbidden.iter().any(|f| f.starts_with(p))
    };
    let add = |p: PathBuf, mounts: &mut Vec<Mount>, covered: &mut Vec<PathBuf>| {
        if !is_safe(&p) || covered.iter().any(|c| p.starts_with(c)) {
            return;
        }
        // Mounted at its own path (scripts and shims name it), from wherever it resolves.
        let source = std::fs::canonicalize(&p).unwrap_or_else(|_| p.clone());
        covered.retain(|c| !c.starts_with(&p));
        mounts.retain(|m| !matches!(m, Mount::ReadOnly(_, d) if d.starts_with(&p) && d != &p));
        mounts.push(Mount::ReadOnly(source, p.clone()));
        covered.push(p);
    };
    let home_dir = |sub: &str| home.map(|h| h.join(sub));
    // Toolchain roots, whole: rustup's toolchains, pyenv's versions and shims, nvm's nodes, a
    // virtualenv, a JDK, Go. Each must be whole because its binaries load from beside them.
    let mut roots: Vec<PathBuf> = Vec::new();
    roots.extend(var("RUSTUP_HOME").or_else(|| home_dir(".rustup")));
    roots.extend(var("PYENV_ROOT").or_else(|| home_dir(".pyenv")));
    roots.extend(var("NVM_DIR").or_else(|| home_dir(".nvm")));
    roots.extend(var("VIRTUAL_ENV"));
    roots.extend(var("CONDA_PREFIX"));
    roots.extend(var("JAVA_HOME"));
    roots.extend(var("GOROOT"));
    // Of cargo's home only the proxies and the shared download caches (read-only): its
    // config and credentials stay out.
    let cargo_home = var("CARGO_HOME").or_else(|| home_dir(".cargo"));
    if let Some(c) = &cargo_home {
        for sub in ["bin", "registry", "git"] {
            roots.push(c.join(sub));
        }
    }
    // The shared npm and pip caches, read-only where present.
    roots.extend(home_dir(".npm"));
    roots.extend(home_dir(".cache/pip"));
    for r in roots {
        add(r, &mut mounts, &mut covered);
    }
    // Every directory on PATH, and for `…/bin` the directory above (its `lib` is next to it).
    let mut path_out: Vec<PathBuf> = Vec::new();
    for entry in std::env::split_paths(&path_var) {
        if !is_safe(&entry) {
            continue;
        }
        // Not under the home: `~/.cargo/bin` brings only itself, never `~/.cargo`.
        let parent = entry
            .parent()
            .filter(|_| entry.file_name().is_some_and(|n| n == "bin"))
            .map(Path::to_path_buf)
            .filter(|p| is_safe(p) && !home.is_some_and(|h| p.starts_with(h)));
        match parent {
            Some(p) => add(p, &mut mounts, &mut covered),
            None => add(entry.clone(), &mut mounts, &mut covered),
        }
        if covered.iter().any(|c| entry.starts_with(c)) && !path_out.contains(&entry) {
            path_out.push(entry);
        }
    }
    let mut env: Vec<(String, String)> = Vec::new();
    let mut set = |k: &str, v: Option<PathBuf>| {
        if let Some(v) = v.filter(|v| v.exists()) {
            env.push((k.to_string(), v.display().to_string()));
        }
    };
    set(
        "RUSTUP_HOME",
        var("RUSTUP_HOME").or_else(|| home_dir(".rustup")),
    );
    set(
        "PYENV_ROOT",
        var("PYENV_ROOT").or_else(|| home_dir(".pyenv")),
    );
    set("NVM_DIR", var("NVM_DIR").or_else(|| home_dir(".nvm")));
    set("VIRTUAL_ENV", var("VIRTUAL_ENV"));
    set("JAVA_HOME", var("JAVA_HOME"));
    set("GOROOT", var("GOROOT"));
    let path = std::env::join_paths(&path_out)
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into());
    Toolchain {
        mounts,
        covered,
        cargo_home,
        env,
        path: if path.is_empty() {
            "/usr/local/bin:/usr/bin:/bin".into()
        } else {
            path
        },
        disable_userns,
    }
}

/// What must stay unreadable even where a mounted directory holds it: the data dir, the
/// daemon's home and config, cargo's credentials and config (the official Rust images put
/// `CARGO_HOME` under `/usr/local`, which comes in with `/usr`), and credential files that sit
/// in a mounted toolchain directory. Each is masked at its own path and, for a symlink, at
/// the path it resolves to.
fn masks(
    mounts: &[Mount],
    covered: &[PathBuf],
    forbidden: &[PathBuf],
    cargo_home: Option<&Path>,
) -> Vec<Mount> {
    let dests: Vec<&Path> = mounts
        .iter()
        .filter_map(|m| match m {
            Mount::ReadOnly(_, d) | Mount::Bind(_, d) => Some(d.as_path()),
            _ => None,
        })
        .collect();
    let mut sensitive: Vec<PathBuf> = forbidden.to_vec();
    if let Some(c) = cargo_home {
        for f in ["credentials.toml", "credentials", "config.toml", "config"] {
            sensitive.push(c.join(f));
        }
    }
    for c in covered {
        sensitive.extend(CREDENTIAL_FILES.iter().map(|f| c.join(f)));
    }
    let mut out: Vec<Mount> = Vec::new();
    for p in sensitive {
        let Ok(meta) = std::fs::metadata(&p) else {
            continue;
        };
        let mut at = vec![p.clone()];
        if let Ok(real) = std::fs::canonicalize(&p) {
            if real != p {
                at.push(real);
            }
        }
        // A symlink is masked where it resolves: a mount at the link's own path would follow
        // it anyway.
        if std::fs::symlink_metadata(&p).is_ok_and(|m| m.file_type().is_symlink()) {
            at.remove(0);
        }
        for path in at {
            let inside = dests.iter().any(|d| path.starts_with(d) && path != *d);
            let mask = if meta.is_dir() {
                Mount::Mask(path)
            } else {
                Mount::Hide(path)
            };
            if inside && !out.contains(&mask) {
                out.push(mask);
            }
        }
    }
    out
}

/// `PATH` inside the sandbox: the daemon's, less what is not mounted.
pub fn sandbox_path() -> String {
    toolchain().path.clone()
}

/// `bwrap` on the daemon's `PATH` (or its usual place).
pub(crate) fn find_bwrap() -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("bwrap"))
            .find(|p| p.is_file())
    })
}

/// Whether this bwrap knows `flag` (0.8 added `--disable-userns`).
fn bwrap_supports(flag: &str) -> bool {
    let Some(bwrap) = find_bwrap() else {
        return false;
    };
    std::process::Command::new(bwrap)
        .arg("--help")
        .env_clear()
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout).contains(flag)
                || String::from_utf8_lossy(&o.stderr).contains(flag)
        })
        .unwrap_or(false)
}

fn absolute(p: &Path) -> Result<PathBuf, String> {
    std::fs::canonicalize(p).map_err(|e| format!("cannot resolve {}: {e}", p.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_data_dir_and_home_are_never_mounted_even_when_on_path() {
        let root = std::env::temp_dir().join(format!("baton-profile-{}", fastrand::u64(..)));
        let home = root.join("home");
        let data = home.join(".local/share/baton");
        let cargo_bin = home.join(".cargo/bin");
        for d in [&data, &cargo_bin, &home.join(".rustup")] {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(home.join(".cargo/credentials.toml"), "token = \"x\"").unwrap();
        let path = std::env::join_paths([home.clone(), data.clone(), cargo_bin.clone()]).unwrap();
        let tc = toolchain_for(
            path,
            Some(&home),
            &|_| None,
            &[home.clone(), data.clone()],
            &[],
            false,
        );
        let dests: Vec<&Path> = tc
            .mounts
            .iter()
            .filter_map(|m| match m {
                Mount::ReadOnly(_, d) | Mount::Bind(_, d) => Some(d.as_path()),
                _ => None,
            })
            .collect();
        assert!(!dests.contains(&home.as_path()), "{dests:?}");
        assert!(!dests.iter().any(|d| data.starts_with(d)), "{dests:?}");
        assert!(dests.contains(&home.join(".rustup").as_path()), "{dests:?}");
        // cargo's proxies, but not its home (where credentials.toml lives).
        assert!(dests.contains(&cargo_bin.as_path()), "{dests:?}");
        assert!(!dests.contains(&home.join(".cargo").as_path()), "{dests:?}");
        assert_eq!(tc.path, cargo_bin.display().to_string());
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn what_a_system_dir_holds_of_the_data_dir_and_cargo_credentials_is_masked() {
        let root = std::env::temp_dir().join(format!("baton-masks-{}", fastrand::u64(..)));
        let usr = root.join("usr");
        let data = usr.join("local/baton");
        let cargo = usr.join("local/cargo");
        std::fs::create_dir_all(&data).unwrap();
        std::fs::create_dir_all(cargo.join("registry")).unwrap();
        std::fs::write(cargo.join("credentials.toml"), "token = \"x\"").unwrap();
        std::fs::write(usr.join("elsewhere"), "token").unwrap();
        std::os::unix::fs::symlink(usr.join("elsewhere"), cargo.join("config.toml")).unwrap();
        let tc = toolchain_for(
            OsString::new(),
            None,
            &|name| (name == "CARGO_HOME").then(|| cargo.clone()),
            std::slice::from_ref(&data),
            std::slice::from_ref(&usr),
            false,
        );
        assert!(tc
            .mounts
            .contains(&Mount::ReadOnly(usr.clone(), usr.clone())));
        // A secret file read later (a `_FILE`) is masked in the next job.
        let secret = usr.join("local/app/token");
        std::fs::create_dir_all(secret.parent().unwrap()).unwrap();
        std::fs::write(&secret, "t").unwrap();
        let masks = masks(
            &tc.mounts,
            &tc.covered,
            &[data.clone(), secret.clone()],
            tc.cargo_home.as_deref(),
        );
        assert!(masks.contains(&Mount::Mask(data.clone())), "{masks:?}");
        assert!(masks.contains(&Mount::Hide(secret.clone())), "{masks:?}");
        assert!(masks.contains(&Mount::Hide(cargo.join("credentials.toml"))));
        // The symlink is masked where it leads.
        assert!(masks.contains(&Mount::Hide(usr.join("elsewhere"))));
        std::fs::remove_dir_all(&root).unwrap();
    }
}
