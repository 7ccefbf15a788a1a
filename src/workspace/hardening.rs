//! What baton's own git takes from a repository: nothing that runs a program or sends traffic.
//!
//! A clone's `.git` can be written by the code baton checks out and tests (a test, a build
//! script, an agent's command), so every git command baton runs treats it as hostile:
//! - its environment is built from an allowlist ([`Environment`]): never the daemon's, never
//!   the operator's `~/.gitconfig` or the system's config, and `HOME` points nowhere;
//! - the settings that run a program are overridden at git's command-line level ([`FIXED`]),
//!   which wins over any file; they travel in `GIT_CONFIG_PARAMETERS`, which git also hands to
//!   the git processes it starts in other repositories (submodules);
//! - the repository's own config is listed and every setting git lets a repository name freely
//!   (a diff, merge or filter driver, a URL-scoped `http` setting, a pager) is overridden by its
//!   exact name ([`judge`]);
//! - what cannot be overridden (an include, a URL rewrite, a remote named like a URL, object
//!   alternates, a `.git` that is a file or a link) makes baton refuse to run git there.
//!
//! The module must not decide which URL or credential a command uses: the caller passes them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, OnceLock};

use tokio::process::Command;

use super::Error;

/// The operator's own git config file for baton's git (as its global config), if any.
pub const OPERATOR_CONFIG_VAR: &str = "BATON_GIT_CONFIG";

/// The transports git may use.
const ALLOWED_PROTOCOLS: &str = "https:http:ssh:file";

/// Where `HOME` points for git: a path that does not exist, so no `~/.gitconfig`,
/// `~/.config/git/*` or `~/.git-credentials` of the daemon's user is read.
const NO_HOME: &str = "/nonexistent";

/// Variables of the daemon's environment git may see: none holds a secret, all are the
/// operator's (the clone cannot set them).
const PASSED_THROUGH: &[&str] = &[
    "PATH",
    "TZ",
    // Certificate authorities of a forge behind a private CA.
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "GIT_SSL_CAINFO",
    "GIT_SSL_CAPATH",
    // Hosts that bypass the operator's proxy (the proxy itself goes by `http.proxy`, below).
    "NO_PROXY",
    "no_proxy",
];

/// Overrides every git command gets, whatever the repository's config says: each names a
/// setting that runs a program, recurses into submodules or signs with a key. Values are
/// what turns the setting off; an empty program makes git fail rather than run anything.
pub(crate) const FIXED: &[(&str, &str)] = &[
    // Programs git would start.
    ("core.fsmonitor", "false"),
    ("core.hooksPath", "/dev/null"),
    ("core.sshCommand", "ssh"),
    ("core.pager", "cat"),
    ("core.editor", ":"),
    ("sequence.editor", ":"),
    ("core.askPass", ""),
    ("core.alternateRefsCommand", ""),
    ("credential.helper", ""),
    ("diff.external", ""),
    ("interactive.diffFilter", ""),
    ("gpg.program", ""),
    ("gpg.openpgp.program", ""),
    ("gpg.x509.program", ""),
    ("gpg.ssh.program", ""),
    ("gpg.ssh.defaultKeyCommand", ""),
    // Signing and signature checks (they would run gpg.program).
    ("commit.gpgSign", "false"),
    ("tag.gpgSign", "false"),
    ("tag.forceSignAnnotated", "false"),
    ("push.gpgSign", "false"),
    ("log.showSignature", "false"),
    ("merge.verifySignatures", "false"),
    // Attributes only from the repository and `.git/info/attributes` (drivers are overridden).
    ("core.attributesFile", "/dev/null"),
    // Submodules: never entered (each one is a repository with a config of its own).
    ("submodule.recurse", "false"),
    ("fetch.recurseSubmodules", "false"),
    ("push.recurseSubmodules", "no"),
    ("status.submoduleSummary", "false"),
    ("diff.ignoreSubmodules", "all"),
    ("diff.submodule", "short"),
    // Traffic to URLs other than the one baton passes.
    ("fetch.bundleURI", ""),
    ("transfer.bundleURI", "false"),
    ("http.cookieFile", ""),
    ("http.saveCookies", "false"),
    ("http.curloptResolve", ""),
    ("http.followRedirects", "initial"),
];

/// Flags baton adds after some subcommands: external diff programs and text conversions are
/// never run, submodules never looked into, whatever the attributes select.
const SUBCOMMAND_FLAGS: &[(&str, &[&str])] = &[
    (
        "diff",
        &["--no-ext-diff", "--no-textconv", "--ignore-submodules=all"],
    ),
    (
        "log",
        &["--no-ext-diff", "--no-textconv", "--ignore-submodules=all"],
    ),
    (
        "show",
        &["--no-ext-diff", "--no-textconv", "--ignore-submodules=all"],
    ),
    ("status", &["--ignore-submodules=all"]),
    ("fetch", &["--no-recurse-submodules"]),
    ("push", &["--no-recurse-submodules"]),
];

/// `args` with baton's flags after the subcommand (see [`SUBCOMMAND_FLAGS`]); leading `-c`
/// pairs and other options before it are kept where they are.
pub(crate) fn with_flags<'a>(args: &[&'a str]) -> Vec<&'a str> {
    let mut at = 0;
    while at < args.len() && args[at].starts_with('-') {
        at += if args[at] == "-c" || args[at] == "-C" {
            2
        } else {
            1
        };
    }
    let mut out = args.to_vec();
    if let Some(sub) = args.get(at) {
        if let Some((_, flags)) = SUBCOMMAND_FLAGS.iter().find(|(name, _)| name == sub) {
            out.splice(at + 1..at + 1, flags.iter().copied());
        }
    }
    out
}

/// Where a git command runs, as baton found it on disk (never as `.git` says of itself).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Layout {
    /// A work tree with its repository in `<root>/.git`.
    WorkTree {
        /// The work tree.
        root: PathBuf,
        /// `<root>/.git`.
        git_dir: PathBuf,
    },
    /// A bare repository (a mirror, a local forge's repository).
    Bare {
        /// The repository.
        git_dir: PathBuf,
    },
    /// No repository (where `git clone` or `git init` makes one).
    Outside,
}

impl Layout {
    /// Looks at `dir`: refuses a `.git` that is a file or a link (it would point git at
    /// another repository) and a repository that borrows objects from another one.
    pub(crate) fn of(dir: &Path) -> Result<Layout, Error> {
        let refuse = |reason: String| Error::Refused {
            dir: dir.to_path_buf(),
            reason,
        };
        let dot_git = dir.join(".git");
        let layout = match std::fs::symlink_metadata(&dot_git) {
            Ok(meta) if meta.is_dir() => Layout::WorkTree {
                root: dir.to_path_buf(),
                git_dir: dot_git,
            },
            Ok(_) => {
                return Err(refuse(
                    "its `.git` is a file or a link, which could point git at another repository"
                        .into(),
                ))
            }
            Err(_) if dir.join("HEAD").is_file() && dir.join("objects").is_dir() => Layout::Bare {
                git_dir: dir.to_path_buf(),
            },
            Err(_) => Layout::Outside,
        };
        if let Some(git_dir) = layout.git_dir() {
            let alternates = git_dir.join("objects").join("info").join("alternates");
            if std::fs::symlink_metadata(&alternates).is_ok() {
                return Err(refuse(format!(
                    "{} exists: the repository would read objects from other directories",
                    alternates.display()
                )));
            }
        }
        Ok(layout)
    }

    pub(crate) fn git_dir(&self) -> Option<&Path> {
        match self {
            Layout::WorkTree { git_dir, .. } | Layout::Bare { git_dir } => Some(git_dir),
            Layout::Outside => None,
        }
    }
}

/// What baton does about one setting found in a repository's config.
#[derive(Debug, Clone, PartialEq)]
enum Verdict {
    /// Harmless, or already overridden by [`FIXED`] or the environment.
    Keep,
    /// Overridden by the same name with this value.
    Set(Neutral),
    /// Cannot be overridden: baton runs no git in the repository.
    Refuse(&'static str),
}

/// The value that turns a setting off.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Neutral {
    Value(&'static str),
    /// The operator's proxy for the command's URL, or none.
    Proxy,
}

/// Decides about one key as `git config --list --name-only` prints it (section and variable
/// lower-cased, the subsection as written).
fn judge(key: &str) -> Verdict {
    use Neutral::{Proxy, Value};
    use Verdict::{Keep, Refuse, Set};
    let Some((section, rest)) = key.split_once('.') else {
        return Keep;
    };
    let (sub, name) = match rest.rsplit_once('.') {
        Some((sub, name)) => (Some(sub), name),
        None => (None, rest),
    };
    match (section, sub, name) {
        ("include" | "includeif", _, _) => {
            Refuse("it includes another file, which could set anything")
        }
        ("url", Some(_), "insteadof" | "pushinsteadof") => {
            Refuse("it rewrites remote URLs, which would send git's traffic elsewhere")
        }
        ("remote", Some(sub), _) if !is_remote_nick(sub) => Refuse(
            "it defines a remote named like a URL or path, which git would use in place of the URL baton passes",
        ),
        ("remote", Some(_), "uploadpack") => Set(Value("git-upload-pack")),
        ("remote", Some(_), "receivepack") => Set(Value("git-receive-pack")),
        ("remote", Some(_), "proxy") => Set(Proxy),
        ("hook", Some(_), _) => Refuse("it defines a hook in config"),
        ("diff", Some(_), "textconv" | "command") => Set(Value("")),
        ("merge", Some(_), "driver") => Set(Value("")),
        ("filter", Some(_), "clean" | "smudge" | "process") => Set(Value("")),
        ("filter", Some(_), "required") => Set(Value("false")),
        ("pager", None, _) => Set(Value("false")),
        ("credential", Some(_), "helper") => Set(Value("")),
        ("gpg", Some(_), "program") => Set(Value("")),
        ("submodule", Some(_), "update") => Set(Value("none")),
        ("http", _, "proxy") => Set(Proxy),
        ("http", _, "extraheader") => Set(Value("")),
        ("http", _, "cookiefile" | "curloptresolve") => Set(Value("")),
        ("http", _, "savecookies") => Set(Value("false")),
        ("http", _, "sslverify") => Set(Value("true")),
        ("http", _, "followredirects") => Set(Value("initial")),
        (
            "http",
            _,
            "sslcainfo" | "sslcapath" | "sslcert" | "sslkey" | "pinnedpubkey" | "sslbackend"
            | "schannelusesslcainfo" | "proxysslcert" | "proxysslkey" | "proxysslcainfo",
        ) => Refuse("it chooses whom git trusts over TLS"),
        _ => Keep,
    }
}

/// A name git reads as a configured remote rather than as a URL or path (git's own rule:
/// no `/`, not `.` or `..`; baton also counts `:` and `\`, which only URLs and paths have).
fn is_remote_nick(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', ':', '\\'])
}

/// The overrides one repository's config calls for, by name (see [`judge`]).
type Scan = Arc<[(String, Neutral)]>;

/// Scans by the exact bytes of the config files: the same config is listed once.
fn scans() -> &'static Mutex<HashMap<Vec<u8>, Scan>> {
    static SCANS: OnceLock<Mutex<HashMap<Vec<u8>, Scan>>> = OnceLock::new();
    SCANS.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Enough for every clone a busy daemon works on at once; past it the cache starts over.
const MAX_SCANS: usize = 256;

/// The overrides the config files of the repository at `git_dir` call for; an error when one
/// of its settings cannot be overridden.
async fn scan(dir: &Path, git_dir: &Path) -> Result<Scan, Error> {
    let files = [git_dir.join("config"), git_dir.join("config.worktree")];
    let mut key = Vec::new();
    let mut present = Vec::new();
    for file in &files {
        match tokio::fs::read(file).await {
            Ok(bytes) => {
                key.extend_from_slice(&bytes);
                present.push(file);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(Error::Io {
                    action: "read",
                    path: file.clone(),
                    source,
                })
            }
        }
        // A byte no config text holds separates the files.
        key.push(0);
    }
    if let Some(found) = scans().lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
        return Ok(found.clone());
    }
    let mut overrides = Vec::new();
    for file in present {
        for name in list_keys(file).await? {
            match judge(&name) {
                Verdict::Keep => {}
                Verdict::Set(neutral) => {
                    if !overrides.iter().any(|(k, _)| *k == name) {
                        overrides.push((name, neutral));
                    }
                }
                Verdict::Refuse(why) => {
                    return Err(Error::Refused {
                        dir: dir.to_path_buf(),
                        reason: format!(
                            "{} sets `{name}`: {why}, and baton cannot override it; remove it \
                             (`git config --file {} --unset-all '{name}'`)",
                            file.display(),
                            file.display()
                        ),
                    })
                }
            }
        }
    }
    let scan: Scan = overrides.into();
    let mut cache = scans().lock().unwrap_or_else(|e| e.into_inner());
    if cache.len() >= MAX_SCANS {
        cache.clear();
    }
    cache.insert(key, scan.clone());
    Ok(scan)
}

/// The names of the settings in one config file, as git reads them (includes not followed:
/// an include shows as `include.path` and is refused).
async fn list_keys(file: &Path) -> Result<Vec<String>, Error> {
    let file_s = file.to_string_lossy().into_owned();
    let args = [
        "config",
        "--no-includes",
        "--file",
        &file_s,
        "--list",
        "--name-only",
        "-z",
    ];
    let mut cmd = Command::new("git");
    cmd.args(args)
        // Outside any repository: listing a file needs none, and reads no other config.
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    Environment::base().apply(&mut cmd);
    cmd.env("GIT_DIR", NO_HOME);
    let out = baton_actors::procs::output(cmd, "git")
        .await
        .map_err(|source| Error::Spawn {
            command: "git config --list".into(),
            source,
        })?;
    if !out.status.success() {
        return Err(Error::Git {
            command: format!("git {}", args.join(" ")),
            dir: file.parent().map(Path::to_path_buf).unwrap_or_default(),
            code: out.status.code().unwrap_or(-1),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(out
        .stdout
        .split(|b| *b == 0)
        .filter(|k| !k.is_empty())
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .collect())
}

/// The environment of one git command, built from nothing.
pub(crate) struct Environment {
    vars: Vec<(String, String)>,
    /// `GIT_CONFIG_PARAMETERS` entries: [`FIXED`], inherited by git's own child processes.
    fixed: Vec<(String, String)>,
    /// `GIT_CONFIG_COUNT` entries, read before the fixed ones: overrides of the repository's
    /// own settings, then the credential.
    counted: Vec<(String, String)>,
}

impl Environment {
    /// The variables every git command gets, with no repository and no URL.
    fn base() -> Environment {
        let mut vars: Vec<(String, String)> = PASSED_THROUGH
            .iter()
            .filter_map(|name| Some((name.to_string(), std::env::var(name).ok()?)))
            .collect();
        if !vars.iter().any(|(k, _)| k == "PATH") {
            vars.push(("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into()));
        }
        let global = std::env::var(OPERATOR_CONFIG_VAR)
            .ok()
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "/dev/null".into());
        for (k, v) in [
            ("HOME", NO_HOME),
            ("LANG", "C"),
            ("LC_ALL", "C"),
            ("LANGUAGE", "C"),
            ("GIT_TERMINAL_PROMPT", "0"),
            // Wins over every `protocol.*` setting: no `ext::` command, no `git://` (whose
            // core.gitProxy cannot be overridden), no remote helper. Local paths stay: the local
            // forge and the mirrors are paths, and git reaches a path only when baton names it
            // (or the operator's config rewrites to it); no URL the clone names is followed.
            ("GIT_ALLOW_PROTOCOL", ALLOWED_PROTOCOLS),
            ("GIT_CONFIG_NOSYSTEM", "1"),
            ("GIT_CONFIG_GLOBAL", global.as_str()),
            ("GIT_ATTR_NOSYSTEM", "1"),
            // Neither replacement refs nor grafts may change which commits baton sees.
            ("GIT_NO_REPLACE_OBJECTS", "1"),
            ("GIT_GRAFT_FILE", "/dev/null"),
            // A partial clone's missing objects are never fetched from a remote it names.
            ("GIT_NO_LAZY_FETCH", "1"),
            // These win over the repository's core.sshCommand, core.editor, core.pager.
            ("GIT_SSH_COMMAND", "ssh"),
            ("GIT_EDITOR", ":"),
            ("GIT_SEQUENCE_EDITOR", ":"),
            ("GIT_PAGER", "cat"),
            ("PAGER", "cat"),
        ] {
            vars.push((k.into(), v.into()));
        }
        Environment {
            vars,
            fixed: FIXED
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            counted: Vec::new(),
        }
    }

    /// The environment of a git command in `dir` that may talk to `url`.
    pub(crate) async fn for_command(
        dir: &Path,
        layout: &Layout,
        url: Option<&str>,
    ) -> Result<Environment, Error> {
        let mut env = Environment::base();
        if url.map(protocol_of) == Some("ssh") {
            // The ssh agent is the credential of an ssh remote.
            if let Ok(sock) = std::env::var("SSH_AUTH_SOCK") {
                env.vars.push(("SSH_AUTH_SOCK".into(), sock));
            }
        }
        let proxy = url.map(operator_proxy).unwrap_or_default();
        env.fixed.push(("http.proxy".into(), proxy.clone()));
        match layout {
            Layout::WorkTree { root, git_dir } => {
                // Named, so that neither `.git/commondir` nor `core.worktree` can move them.
                env.vars.push(("GIT_DIR".into(), path_string(git_dir)));
                env.vars
                    .push(("GIT_COMMON_DIR".into(), path_string(git_dir)));
                env.vars.push(("GIT_WORK_TREE".into(), path_string(root)));
            }
            Layout::Bare { git_dir } => {
                env.vars.push(("GIT_DIR".into(), path_string(git_dir)));
                env.vars
                    .push(("GIT_COMMON_DIR".into(), path_string(git_dir)));
            }
            Layout::Outside => {
                // Never a repository found above `dir`.
                if let Some(parent) = dir.parent().filter(|p| p.is_absolute()) {
                    env.vars
                        .push(("GIT_CEILING_DIRECTORIES".into(), path_string(parent)));
                }
            }
        }
        if let Some(git_dir) = layout.git_dir() {
            for (key, neutral) in scan(dir, git_dir).await?.iter() {
                let value = match neutral {
                    Neutral::Value(v) => v.to_string(),
                    Neutral::Proxy => proxy.clone(),
                };
                env.counted.push((key.clone(), value));
            }
        }
        Ok(env)
    }

    /// Adds a `GIT_CONFIG_COUNT` entry after the others (the credential's header).
    pub(crate) fn push_config(&mut self, key: String, value: String) {
        self.counted.push((key, value));
    }

    /// Adds a variable (the committer's identity).
    pub(crate) fn push_var(&mut self, key: &str, value: &str) {
        self.vars.push((key.into(), value.into()));
    }

    /// Clears `cmd`'s environment and sets this one.
    pub(crate) fn apply(&self, cmd: &mut Command) {
        cmd.env_clear();
        for (k, v) in &self.vars {
            cmd.env(k, v);
        }
        let params: Vec<String> = self
            .fixed
            .iter()
            .map(|(k, v)| format!("{}={}", sq_quote(k), sq_quote(v)))
            .collect();
        cmd.env("GIT_CONFIG_PARAMETERS", params.join(" "));
        cmd.env("GIT_CONFIG_COUNT", self.counted.len().to_string());
        for (i, (k, v)) in self.counted.iter().enumerate() {
            cmd.env(format!("GIT_CONFIG_KEY_{i}"), k);
            cmd.env(format!("GIT_CONFIG_VALUE_{i}"), v);
        }
    }
}

/// `'text'` for git's `GIT_CONFIG_PARAMETERS`, with each `'` written as `'\''`.
fn sq_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

fn path_string(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// The protocol git uses for `url`, as `GIT_ALLOW_PROTOCOL` names them.
fn protocol_of(url: &str) -> &'static str {
    if let Some((helper, _)) = url.split_once("::") {
        // `<helper>::<address>` names a remote helper (`ext::` runs a command): none allowed.
        if !helper.contains('/') {
            return "none";
        }
    }
    match url.split_once("://") {
        Some(("https", _)) => "https",
        Some(("http", _)) => "http",
        Some(("ssh" | "git+ssh" | "ssh+git", _)) => "ssh",
        Some(("file", _)) => "file",
        // Anything else (`ext::`, `git://`, a remote helper) is allowed nothing.
        Some(_) => "none",
        // git's rule: a `:` before the first `/` makes `host:path`, an ssh remote.
        None => match (url.find(':'), url.find('/')) {
            (Some(colon), Some(slash)) if colon < slash => "ssh",
            (Some(_), None) => "ssh",
            _ => "file",
        },
    }
}

/// The operator's proxy for `url` from the daemon's environment, as curl would pick it;
/// empty for none. Given to git as `http.proxy`, which also replaces a repository's.
fn operator_proxy(url: &str) -> String {
    let names: &[&str] = match protocol_of(url) {
        "https" => &["https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"],
        // curl ignores `HTTP_PROXY` (a CGI could set it from a request header).
        "http" => &["http_proxy", "all_proxy", "ALL_PROXY"],
        _ => &[],
    };
    names
        .iter()
        .find_map(|n| std::env::var(n).ok().filter(|v| !v.is_empty()))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn judges_settings_a_repository_can_name() {
        use Neutral::{Proxy, Value};
        use Verdict::{Keep, Refuse, Set};
        let cases: &[(&str, Verdict)] = &[
            ("core.repositoryformatversion", Keep),
            ("remote.origin.url", Keep),
            ("branch.main.remote", Keep),
            ("baton.base", Keep),
            ("diff.evil.textconv", Set(Value(""))),
            ("diff.Evil.Driver.command", Set(Value(""))),
            ("merge.evil.driver", Set(Value(""))),
            ("filter.lfs.process", Set(Value(""))),
            ("filter.lfs.required", Set(Value("false"))),
            ("pager.log", Set(Value("false"))),
            ("credential.https://github.com.helper", Set(Value(""))),
            ("gpg.future.program", Set(Value(""))),
            ("http.https://evil.example/.proxy", Set(Proxy)),
            ("http.proxy", Set(Proxy)),
            ("http.extraheader", Set(Value(""))),
            (
                "http.https://github.com/o/r.git.extraheader",
                Set(Value("")),
            ),
            ("http.sslverify", Set(Value("true"))),
            ("http.postbuffer", Keep),
            ("remote.origin.uploadpack", Set(Value("git-upload-pack"))),
            ("remote.origin.proxy", Set(Proxy)),
            ("submodule.x.update", Set(Value("none"))),
        ];
        for (key, want) in cases {
            assert_eq!(judge(key), *want, "{key}");
        }
        for key in [
            "include.path",
            "includeif.gitdir:/tmp/.path",
            "url.https://evil.example/.insteadof",
            "url.x.pushinsteadof",
            "remote.https://github.com/o/r.git.url",
            "remote./tmp/forge/r.git.pushurl",
            "http.sslcainfo",
            "http.https://github.com/.sslcert",
            "hook.lint.command",
        ] {
            assert!(matches!(judge(key), Refuse(_)), "{key}");
        }
    }

    #[test]
    fn adds_flags_after_the_subcommand() {
        assert_eq!(
            with_flags(&["diff", "--numstat", "a...b"]),
            [
                "diff",
                "--no-ext-diff",
                "--no-textconv",
                "--ignore-submodules=all",
                "--numstat",
                "a...b"
            ]
        );
        assert_eq!(
            with_flags(&["-c", "user.name=x", "commit", "-m", "m"]),
            ["-c", "user.name=x", "commit", "-m", "m"]
        );
        assert_eq!(
            with_flags(&["-c", "core.editor=true", "push", "url"]),
            [
                "-c",
                "core.editor=true",
                "push",
                "--no-recurse-submodules",
                "url"
            ]
        );
        assert_eq!(with_flags(&["rev-parse", "HEAD"]), ["rev-parse", "HEAD"]);
    }

    #[test]
    fn tells_the_protocol_of_a_url() {
        for (url, want) in [
            ("https://github.com/o/r.git", "https"),
            ("http://127.0.0.1:8080/r.git", "http"),
            ("ssh://git@host/r.git", "ssh"),
            ("git@github.com:o/r.git", "ssh"),
            ("/tmp/forge/r.git", "file"),
            ("file:///tmp/forge/r.git", "file"),
            ("ext::sh -c evil", "none"),
            ("git://host/r.git", "none"),
        ] {
            assert_eq!(protocol_of(url), want, "{url}");
        }
    }

    #[test]
    fn quotes_for_git_config_parameters() {
        assert_eq!(sq_quote("core.editor"), "'core.editor'");
        assert_eq!(sq_quote("it's"), r"'it'\''s'");
    }
}
