//! The sandbox executor against hostile repository code: real bubblewrap, real git, real
//! processes. What the code tries (read every process's environment, the data dir, the
//! daemon's home; write `.git`; reach a listener on loopback; leave a `setsid` process
//! behind; fork thousands of processes; allocate past the memory limit) must all fail, and
//! the checks must still be measured.

use crate::common;
use crate::common_forge;
use crate::own_process;
use crate::require;

use std::io::Read;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use baton::forge::local::LocalForge;
use baton::forge::{NewPullRequest, Repo};
use baton::sandbox::{self, Trust};
use baton::verify::{verify, Kind, RunIn, Status, VerifyOptions};

use crate::BATON as BIN;

/// The tests that put [`SECRETS`] in this process's environment and set its sandbox limits:
/// changes the other tests in this binary must not see.
const OWN: &str = "sandbox::";

/// Runs the tests that change process-wide state, in a process of their own with [`SECRETS`]
/// in its environment (as the daemon has them).
#[test]
fn in_its_own_process() {
    own_process::run(OWN, SECRETS);
}

/// Values the hostile code hunts for, set in this process's environment (the process that
/// starts the sandbox, as the daemon does).
const SECRETS: &[(&str, &str)] = &[
    ("GITHUB_TOKEN", "ghp_sandboxTestSecret0001"),
    ("BATON_TELEGRAM_TOKEN", "123:telegramSandboxSecret0002"),
    ("BATON_GITHUB_WEBHOOK_SECRET", "hookSandboxSecret0003"),
    ("OPENAI_API_KEY", "sk-sandboxSecret0004"),
];

/// A memory bound small enough to pass in a test, the rest as configured by default.
fn configure() {
    own_process::assert_in_it(OWN);
    sandbox::configure(sandbox::Settings {
        memory_mb: 256,
        processes: 256,
        ..sandbox::Settings::default()
    });
}

fn have_sandbox() -> bool {
    if !require::program("bwrap", require::BWRAP) || !require::pytest() {
        return false;
    }
    let a = sandbox::availability();
    assert!(
        a.works,
        "bubblewrap is installed but cannot start a sandbox here: {}",
        a.detail
    );
    true
}

/// A repository whose test script attacks, then runs two real pytest tests.
fn hostile_repo(
    secret_file: &Path,
    home_file: &Path,
    port: u16,
    marker: &str,
) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let script = format!(
        r#"#!/bin/sh
echo "== environ"
cat /proc/*/environ 2>/dev/null | tr '\0' '\n' | grep -v '^PWD='
echo "== processes: $(ls /proc | grep -c '^[0-9]')"
echo "== data dir"; cat '{secret}' 2>&1
echo "== home"; cat '{home}' 2>&1; ls -a "$(dirname '{home}')" 2>&1
echo "== git"
echo '[core]' >> .git/config 2>&1 && echo "WROTE .git/config"
echo 'fsmonitor = touch /tmp/pwned' >> .git/config 2>&1
echo '#!/bin/sh' > .git/hooks/pre-commit 2>&1 && echo "WROTE a hook"
echo "== net"
python3 -c "import socket; socket.create_connection(('127.0.0.1', {port}), timeout=2); print('CONNECTED')" 2>&1 | tail -1
echo "== setsid"
setsid sleep {marker} >/dev/null 2>&1 &
echo "== fork"
python3 - <<'PY'
import os, time
n = 0
try:
    for _ in range(5000):
        pid = os.fork()
        if pid == 0:
            time.sleep(1)
            os._exit(0)
        n += 1
    print("FORKED ALL", n)
except OSError as e:
    print("fork stopped at", n, e)
# The children hold the processes the limit allows; the rest of the script needs some.
for _ in range(n):
    os.wait()
PY
echo "== memory"
python3 -c "b = bytearray(600 * 1024 * 1024); print('ALLOCATED 600 MiB')" 2>&1 | tail -1
echo "== tests"
python3 -m pytest -q -p no:cacheprovider test_calc.py
"#,
        secret = secret_file.display(),
        home = home_file.display(),
    );
    std::fs::write(dir.path().join("hostile.sh"), script).unwrap();
    std::fs::write(
        dir.path().join("test_calc.py"),
        "def test_add():\n    assert 1 + 1 == 2\n\ndef test_mul():\n    assert 2 * 3 == 6\n",
    )
    .unwrap();
    common::git(dir.path(), &["init", "-q"]);
    common::git(dir.path(), &["add", "-A"]);
    common::git(dir.path(), &["commit", "-qm", "hostile"]);
    dir
}

fn leftover(marker: &str) -> bool {
    common::running(&["sleep", marker])
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "runs in its own process, through sandbox::in_its_own_process"]
async fn untrusted_code_reaches_nothing_and_is_still_measured() {
    configure();
    if !have_sandbox() {
        return;
    }
    // A data dir with an admin token, kept out of every sandbox as the daemon keeps its own,
    // and a file in the daemon's home.
    let data = tempfile::tempdir().unwrap();
    let token = data.path().join("admin.token");
    std::fs::write(&token, "adminTokenSandboxSecret0005").unwrap();
    sandbox::protect([data.path().to_path_buf()]);
    let home = std::env::var("HOME").unwrap();
    let in_home = tempfile::tempdir_in(&home).unwrap();
    let home_file = in_home.path().join("private.txt");
    std::fs::write(&home_file, "homeSandboxSecret0006").unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let marker = format!("3{}", fastrand::u32(100_000..999_999));
    let repo = hostile_repo(&token, &home_file, port, &marker);
    let git_config = std::fs::read(repo.path().join(".git/config")).unwrap();

    let opts = VerifyOptions {
        run_in: RunIn::Decide(Trust::untrusted("pull request from a fork (eve/calc)")),
        checks: vec![baton::verify::CheckSpec {
            kind: Kind::Tests,
            command: "sh hostile.sh".into(),
            critical: true,
            timeout: Some(Duration::from_secs(120)),
        }],
        tail_bytes: 64 * 1024,
        ..VerifyOptions::default()
    };
    let report = verify(repo.path(), &opts).await.unwrap();
    assert_eq!((report.ran_in.as_str(), report.network), ("sandbox", false));
    let check = &report.checks[0];
    let out = &check.output_tail;
    assert!(
        out.contains("== tests"),
        "the script did not run to its end: {check:?}"
    );

    for (_, secret) in SECRETS {
        assert!(!out.contains(secret), "a secret leaked: {out}");
    }
    assert!(!out.contains("adminTokenSandboxSecret0005"), "{out}");
    assert!(!out.contains("homeSandboxSecret0006"), "{out}");
    assert!(!out.contains("WROTE"), "{out}");
    assert_eq!(
        std::fs::read(repo.path().join(".git/config")).unwrap(),
        git_config
    );
    assert!(!repo.path().join(".git/hooks/pre-commit").exists());
    assert!(!out.contains("CONNECTED"), "{out}");
    let mut accepted = listener.accept();
    assert!(accepted.is_err(), "the listener got a connection");
    if let Ok((s, _)) = accepted.as_mut() {
        let mut b = Vec::new();
        let _ = s.read_to_end(&mut b);
    }
    assert!(!out.contains("FORKED ALL"), "{out}");
    assert!(out.contains("fork stopped at"), "{out}");
    assert!(!out.contains("ALLOCATED"), "{out}");
    // Only the sandbox's own processes were visible (bwrap's init, sh, cat, …), never the
    // host's hundreds.
    let seen: usize = out
        .lines()
        .find_map(|l| l.strip_prefix("== processes: "))
        .and_then(|n| n.trim().parse().ok())
        .expect("the process count line");
    assert!(seen < 20, "{seen} processes visible: {out}");
    assert!(!leftover(&marker), "a setsid process outlived its check");
    // The measured counts of the real runner, despite everything above.
    assert_eq!(check.passed, Some(2), "{check:?}");
    assert_eq!(check.failed, Some(0), "{check:?}");
    assert_eq!(check.status, Status::Passed, "{check:?}");
}

/// The fetch phase has network, so nothing of the repository may run in it: not through
/// cargo's or rustup's project config, not through a `venv.py` that `python -m venv` would
/// import from the current directory, not through a requirement pip would build.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "runs in its own process, through sandbox::in_its_own_process"]
async fn the_fetch_phase_runs_no_repository_code() {
    configure();
    if !have_sandbox() || !require::program("cargo", "the Rust toolchain") {
        return;
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path();
    // Each trap leaves a marker in the work tree (read-write in the sandbox) and calls home.
    let trap = |name: &str| {
        format!(
            "import socket, pathlib\npathlib.Path('{}/RAN-{name}').touch()\ntry:\n    socket.create_connection(('127.0.0.1', {port}), timeout=2)\nexcept OSError:\n    pass\n",
            tree.display()
        )
    };
    std::fs::create_dir_all(tree.join(".cargo")).unwrap();
    std::fs::create_dir_all(tree.join("src")).unwrap();
    std::fs::write(
        tree.join("Cargo.toml"),
        "[package]\nname = \"trap\"\nversion = \"0.1.0\"\nedition = \"2021\"\n",
    )
    .unwrap();
    std::fs::write(tree.join("src/lib.rs"), "").unwrap();
    std::fs::write(tree.join("wrap.py"), trap("rustc-wrapper")).unwrap();
    std::fs::write(
        tree.join("wrap.sh"),
        format!(
            "#!/bin/sh\npython3 {}/wrap.py\nexec \"$@\"\n",
            tree.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        tree.join("wrap.sh"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    std::fs::write(
        tree.join(".cargo/config.toml"),
        format!("[build]\nrustc-wrapper = \"{}/wrap.sh\"\n", tree.display()),
    )
    .unwrap();
    std::fs::write(tree.join("venv.py"), trap("venv")).unwrap();
    std::fs::write(tree.join("setup.py"), trap("setup")).unwrap();
    // `pytest` is already installed for the system's Python, so the venv (which sees the
    // system's packages) needs no download; `-e .` would build the project.
    std::fs::write(tree.join("requirements.txt"), "pytest\n-e .\n").unwrap();
    // Only the given check runs: cargo's own checks would run the wrapper, offline, as the
    // repository's code it is.
    std::fs::write(tree.join(".baton.toml"), "[verify]\ndetect = false\n").unwrap();
    common::git(tree, &["init", "-q"]);
    common::git(tree, &["add", "-A"]);
    common::git(tree, &["commit", "-qm", "traps"]);

    let opts = VerifyOptions {
        run_in: RunIn::Decide(Trust::untrusted("pull request from a fork (eve/trap)")),
        checks: vec![baton::verify::CheckSpec {
            kind: Kind::Tests,
            command: "true".into(),
            critical: true,
            timeout: Some(Duration::from_secs(60)),
        }],
        ..VerifyOptions::default()
    };
    let report = verify(tree, &opts).await.unwrap();
    assert!(report.ok, "{report:?}");
    let ran: Vec<String> = std::fs::read_dir(tree)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("RAN-"))
        .collect();
    assert!(
        ran.is_empty(),
        "repository code ran while fetching: {ran:?}"
    );
    assert!(listener.accept().is_err(), "the listener got a connection");
    let notes = report.notes.join("\n");
    assert!(
        notes.contains("1 line(s) of requirements.txt not fetched") && notes.contains("-e ."),
        "{notes}"
    );
    assert!(
        !notes.contains("pip dependencies could not be fetched"),
        "{notes}"
    );
}

/// A run verifies more than once (fix rounds, retries), and its dependency cache outlives
/// each verification. What one verification's checks plant there (a `.pth` file the next
/// fetch's Python would run with network, a symlink where baton writes the vetted
/// requirements) must be gone before the next fetch starts.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "runs in its own process, through sandbox::in_its_own_process"]
async fn one_verification_cannot_poison_the_next_fetch() {
    configure();
    if !have_sandbox() {
        return;
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let outside = tempfile::tempdir().unwrap();
    let victim = outside.path().join("victim_bashrc");
    std::fs::write(&victim, "# the daemon user's shell start-up\n").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("repo");
    std::fs::create_dir_all(&tree).unwrap();
    let marker = outside.path().join("pth-ran");
    std::fs::write(
        tree.join("poison.sh"),
        format!(
            r#"#!/bin/sh
cache="$(dirname "$VIRTUAL_ENV")"
for sp in "$VIRTUAL_ENV"/lib/python3*/site-packages; do
  echo "import socket, os; open('/tmp/pth-ran-in-sandbox', 'w'); socket.create_connection(('127.0.0.1', {port}), timeout=2)" > "$sp/zz_poison.pth"
done
rm -f "$cache/requirements.fetch.txt"
ln -s '{victim}' "$cache/requirements.fetch.txt"
ln -s '{marker}' "$cache/venv-marker"
echo poisoned
"#,
            victim = victim.display(),
            marker = marker.display(),
        ),
    )
    .unwrap();
    std::fs::write(tree.join("requirements.txt"), "pytest\n").unwrap();
    std::fs::write(tree.join(".baton.toml"), "[verify]\ndetect = false\n").unwrap();
    common::git(&tree, &["init", "-q"]);
    common::git(&tree, &["add", "-A"]);
    common::git(&tree, &["commit", "-qm", "poison"]);
    let opts = VerifyOptions {
        run_in: RunIn::Decide(Trust::untrusted("pull request from a fork (eve/poison)")),
        cache: Some(sandbox::run_cache_dir(&tree)),
        checks: vec![baton::verify::CheckSpec {
            kind: Kind::Tests,
            command: "sh poison.sh".into(),
            critical: true,
            timeout: Some(Duration::from_secs(60)),
        }],
        ..VerifyOptions::default()
    };
    let first = verify(&tree, &opts).await.unwrap();
    assert!(
        first.checks[0].output_tail.contains("poisoned"),
        "{:?}",
        first.checks[0]
    );
    let second = verify(&tree, &opts).await.unwrap();
    assert!(second.ok, "{second:?}");
    assert_eq!(
        std::fs::read_to_string(&victim).unwrap(),
        "# the daemon user's shell start-up\n",
        "the daemon wrote through a planted symlink"
    );
    assert!(
        listener.accept().is_err(),
        "a planted .pth ran with network"
    );
    assert!(
        !second
            .notes
            .iter()
            .any(|n| n.contains("could not be fetched")),
        "{:?}",
        second.notes
    );
}

/// `baton verify --sandbox` keeps out what the daemon keeps out: a secret read from a `_FILE`
/// beside a directory on `PATH` (`/opt/app/bin` brings `/opt/app`), the `--config` file and the
/// data dir; and it applies the config's `[sandbox]` limits.
#[test]
fn verify_keeps_secret_files_and_the_config_out_and_applies_its_limits() {
    if !require::program("bwrap", require::BWRAP) || !require::pytest() {
        return;
    }
    // Not under /tmp, which is a private tmpfs inside: like /opt/app, it is mounted for its
    // `bin` on PATH.
    let app = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let (bin, secrets, data) = (
        app.path().join("bin"),
        app.path().join("secrets"),
        app.path().join("data"),
    );
    for d in [&bin, &secrets, &data] {
        std::fs::create_dir_all(d).unwrap();
    }
    let token = secrets.join("github_token");
    std::fs::write(&token, "ghp_secretFromAFile0007\n").unwrap();
    std::fs::write(bin.join("a-tool-on-path"), "").unwrap();
    std::fs::write(data.join("admin.token"), "adminTokenInDataDir0008").unwrap();
    let config = app.path().join("baton.toml");
    std::fs::write(
        &config,
        "# configSecretMarker0009\n[sandbox]\nmemory_mb = 64\n",
    )
    .unwrap();
    let repo = tempfile::tempdir().unwrap();
    std::fs::write(
        repo.path().join(".baton.toml"),
        format!(
            "[verify]\ndetect = false\n[[verify.checks]]\nkind = \"tests\"\ncommand = \"cat {t} {c} {a}; ls -R {root}; python3 -c 'b = bytearray(300 * 1024 * 1024); print(\\\"ALLOCATED\\\")'\"\n",
            t = token.display(),
            c = config.display(),
            a = data.join("admin.token").display(),
            root = app.path().display(),
        ),
    )
    .unwrap();
    common::git(repo.path(), &["init", "-q"]);
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .arg("--data-dir")
        .arg(&data)
        .args(["verify", "--sandbox", "--json"])
        .arg(repo.path())
        .env("PATH", path)
        .env("GITHUB_TOKEN_FILE", &token)
        // Other tests of this file set it in the process's environment.
        .env_remove("GITHUB_TOKEN")
        .env_remove("BATON_DATA_DIR")
        .env_remove("BATON_CONFIG")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {stdout} {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(report["ran_in"], "sandbox", "{report}");
    for secret in [
        "ghp_secretFromAFile0007",
        "adminTokenInDataDir0008",
        "configSecretMarker0009",
    ] {
        assert!(
            !stdout.contains(secret),
            "{secret} reached the check: {stdout}"
        );
    }
    let tail = report["checks"][0]["output_tail"].as_str().unwrap();
    assert!(
        tail.contains("a-tool-on-path"),
        "PATH's directory is not mounted: {tail}"
    );
    assert!(
        !tail.contains("ALLOCATED"),
        "memory_mb = 64 was not applied: {tail}"
    );
}

/// A `.baton.toml` that is a symlink is not followed, and the error quotes nothing of where
/// it points.
#[test]
fn a_symlinked_baton_toml_is_not_read() {
    let secret = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(secret.path(), "[not toml at all adminTokenSymlinkSecret").unwrap();
    let repo = tempfile::tempdir().unwrap();
    common::git(repo.path(), &["init", "-q"]);
    std::os::unix::fs::symlink(secret.path(), repo.path().join(".baton.toml")).unwrap();
    let out = Command::new(BIN)
        .args(["verify", "--sandbox"])
        .arg(repo.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(".baton.toml") && stderr.contains("symbolic link"),
        "{stderr}"
    );
    assert!(!stderr.contains("adminTokenSymlinkSecret"), "{stderr}");
}

#[test]
fn without_bwrap_verify_sandbox_refuses_and_says_why() {
    if !require::program("bwrap", require::BWRAP) {
        return;
    }
    let repo = tempfile::tempdir().unwrap();
    common::git(repo.path(), &["init", "-q"]);
    std::fs::write(
        repo.path().join(".baton.toml"),
        "[[verify.checks]]\nkind = \"tests\"\ncommand = \"touch ran.txt\"\n",
    )
    .unwrap();
    let bin = require::path_without_bwrap();
    let out = Command::new(BIN)
        .args(["verify", "--sandbox"])
        .arg(repo.path())
        .env("PATH", bin.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("sandbox") && stderr.contains("bwrap is not installed"),
        "{stderr}"
    );
    assert!(!repo.path().join("ran.txt").exists(), "the check ran");
    // With bwrap, the same command runs in the sandbox and writes into the work tree.
    let out = Command::new(BIN)
        .args(["verify", "--sandbox", "--json"])
        .arg(repo.path())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ran_in"], "sandbox");
    assert_eq!(report["network"], false);
    assert!(repo.path().join("ran.txt").exists());
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// Every file under `dir`, read whole (the store, the forge, the workspaces, the logs).
fn all_bytes(dir: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(p),
                Ok(t) if t.is_file() => {
                    out.push((p.clone(), std::fs::read(&p).unwrap_or_default()))
                }
                _ => {}
            }
        }
    }
    out
}

/// The red team's attack, end to end: `baton pr-review` (the real binary, with secrets in its
/// environment and in `_FILE` form) on a pull request from a fork whose tests attack. The
/// review still carries the measured counts; nothing of the attack lands.
#[test]
fn a_hostile_pull_request_from_a_fork_is_reviewed_and_reaches_nothing() {
    hostile_fork_review(Via::Cli);
}

/// The same pull request, reviewed because someone with write access commented `/baton
/// review` on it: a signed GitHub webhook delivered to `baton serve`.
#[test]
fn a_signed_baton_review_comment_on_a_hostile_pull_request_reaches_nothing() {
    hostile_fork_review(Via::Webhook);
}

/// How the review of the hostile pull request is asked for.
#[derive(Clone, Copy, PartialEq)]
enum Via {
    /// `baton pr-review OWNER/NAME#N`.
    Cli,
    /// A signed `issue_comment` webhook saying `/baton review`, to `baton serve`.
    Webhook,
}

fn hostile_fork_review(via: Via) {
    if !require::program("bwrap", require::BWRAP) || !require::pytest() {
        return;
    }
    let examples = match via {
        Via::Webhook => Some(
            common_forge::webhook_examples()
                .expect("@octokit/webhooks-examples is required (see tests/require)"),
        ),
        Via::Cli => None,
    };
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let data = root.join("data");
    let config = root.join("config.toml");
    std::fs::write(
        &config,
        "[forge]\nkind = \"local\"\nlogin = \"baton\"\n[sandbox]\nmemory_mb = 256\nprocesses = 256\n",
    )
    .unwrap();
    let project = root.join("project");
    std::fs::create_dir_all(&project).unwrap();
    std::fs::write(
        project.join("test_calc.py"),
        "def test_add():\n    assert 1 + 1 == 2\n\ndef test_mul():\n    assert 2 * 3 == 6\n",
    )
    .unwrap();
    std::fs::write(
        project.join(".baton.toml"),
        "[verify]\ndetect = false\n[[verify.checks]]\nkind = \"tests\"\ncommand = \"python3 -m pytest -q -p no:cacheprovider test_calc.py\"\n",
    )
    .unwrap();
    common::git(&project, &["init", "--quiet", "--initial-branch=main"]);
    common::git(&project, &["add", "--all"]);
    common::git(&project, &["commit", "--quiet", "-m", "calc"]);
    let forge = LocalForge::open(data.join("forge"), "baton").unwrap();
    let repo = Repo::parse("acme/calc").unwrap();
    block_on(forge.create_repo(&repo, "main", &["baton", "alice"])).unwrap();
    let remote = forge.remote(&repo).display().to_string();
    common::git(&project, &["push", "--quiet", &remote, "main"]);

    // The fork's branch: its "tests" attack first, then run the real ones.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let marker = format!("4{}", fastrand::u32(100_000..999_999));
    let pwned = root.join("pwned");
    let home = std::env::var("HOME").unwrap();
    let in_home = tempfile::tempdir_in(&home).unwrap();
    std::fs::write(in_home.path().join("private.txt"), "homeE2eSecret0007").unwrap();
    let attack = format!(
        r#"#!/bin/sh
cat /proc/*/environ 2>/dev/null | tr '\0' '\n'
find '{data}' -type f -exec cat {{}} + 2>&1 | head -c 20000
cat '{home}/private.txt' 2>&1
printf '[core]\n\tfsmonitor = "touch {pwned}"\n' >> .git/config 2>&1
echo 'touch {pwned}' > .git/hooks/post-checkout 2>&1
python3 -c "import socket; socket.create_connection(('127.0.0.1', {port}), timeout=2); print('CONNECTED')" 2>&1 | tail -1
setsid sleep {marker} >/dev/null 2>&1 &
python3 -c "b = bytearray(600 * 1024 * 1024); print('ALLOCATED')" 2>&1 | tail -1
exec python3 -m pytest -q -p no:cacheprovider test_calc.py
"#,
        data = data.display(),
        home = in_home.path().display(),
        pwned = pwned.display(),
    );
    common::git(&project, &["checkout", "--quiet", "-b", "speedup"]);
    std::fs::write(project.join("attack.sh"), attack).unwrap();
    std::fs::write(
        project.join(".baton.toml"),
        "[verify]\ndetect = false\n[[verify.checks]]\nkind = \"tests\"\ncommand = \"sh attack.sh\"\n",
    )
    .unwrap();
    common::git(&project, &["add", "--all"]);
    common::git(&project, &["commit", "--quiet", "-m", "faster tests"]);
    common::git(&project, &["push", "--quiet", &remote, "speedup"]);
    let fork = Repo::parse("mallory/calc").unwrap();
    let pr = block_on(forge.create_pull_request_as(
        &repo,
        "mallory",
        Some(&fork),
        &NewPullRequest {
            title: "Faster tests".into(),
            head: "speedup".into(),
            base: "main".into(),
            body: "please".into(),
            draft: false,
        },
    ))
    .unwrap()
    .number;

    let secrets_dir = tempfile::tempdir().unwrap();
    let webhook_file = secrets_dir.path().join("webhook");
    std::fs::write(&webhook_file, "hookFileE2eSecret0008\n").unwrap();
    let secret_env: [(&str, &std::ffi::OsStr); 4] = [
        ("GITHUB_TOKEN", "ghp_e2eSandboxSecret0001".as_ref()),
        ("BATON_TELEGRAM_TOKEN", "123:e2eTelegramSecret0002".as_ref()),
        ("OPENAI_API_KEY", "sk-e2eSandboxSecret0004".as_ref()),
        ("BATON_GITHUB_WEBHOOK_SECRET_FILE", webhook_file.as_os_str()),
    ];
    let baton = |args: &[&str]| {
        let mut c = Command::new(BIN);
        c.args(args)
            .env("BATON_DATA_DIR", &data)
            .env("BATON_CONFIG", &config)
            .env_remove("OPENAI_BASE_URL")
            .env_remove("BATON_GITHUB_WEBHOOK_SECRET");
        for (k, v) in secret_env {
            c.env(k, v);
        }
        c
    };
    let (stdout, stderr, record) = match via {
        Via::Cli => {
            let out = baton(&["pr-review", &format!("acme/calc#{pr}"), "--json"])
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout).to_string();
            let stderr = String::from_utf8_lossy(&out.stderr).to_string();
            assert_eq!(out.status.code(), Some(0), "{stderr}\n{stdout}");
            let record: serde_json::Value = serde_json::from_str(&stdout).unwrap();
            (stdout, stderr, record)
        }
        Via::Webhook => {
            let log = root.join("serve.log");
            let mut daemon = baton(&["serve", "--bind", "127.0.0.1:0"])
                .env("RUST_LOG", "info")
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .unwrap();
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            let addr = loop {
                if let Ok(a) = std::fs::read_to_string(data.join("baton.addr")) {
                    break a.trim().to_string();
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "the daemon did not start"
                );
                std::thread::sleep(Duration::from_millis(20));
            };
            // A real `issue_comment` payload: alice (write access) asks for a review of the
            // fork's pull request.
            let mut payload =
                common_forge::example(examples.as_ref().unwrap(), "issue_comment", |e| {
                    e["action"] == "created"
                });
            payload["repository"]["full_name"] = "acme/calc".into();
            payload["repository"]["name"] = "calc".into();
            payload["repository"]["owner"]["login"] = "acme".into();
            payload["sender"]["login"] = "alice".into();
            payload["sender"]["type"] = "User".into();
            payload["comment"]["user"]["login"] = "alice".into();
            payload["comment"]["body"] = "/baton review".into();
            payload["issue"]["number"] = pr.into();
            payload["issue"]["pull_request"] = serde_json::json!({
                "url": format!("https://api.github.com/repos/acme/calc/pulls/{pr}")
            });
            let body = serde_json::to_vec(&payload).unwrap();
            let signature = baton::web::webhook::WebhookSecret::new("hookFileE2eSecret0008")
                .unwrap()
                .sign(&body);
            let status = block_on(async {
                reqwest::Client::new()
                    .post(format!("http://{addr}/webhooks/github"))
                    .header("content-type", "application/json")
                    .header("x-github-event", "issue_comment")
                    .header("x-github-delivery", "hostile-review-1")
                    .header("x-hub-signature-256", signature)
                    .body(body)
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            });
            assert!(status == 202 || status == 200, "webhook answered {status}");
            let deadline = std::time::Instant::now() + Duration::from_secs(180);
            let id = loop {
                let out = baton(&["runs", "--json"]).output().unwrap();
                let runs: serde_json::Value =
                    serde_json::from_slice(&out.stdout).unwrap_or_default();
                let done = runs.as_array().into_iter().flatten().find(|r| {
                    r["workflow_id"] == "pr_review"
                        && ["completed", "failed"].contains(&r["status"].as_str().unwrap_or(""))
                });
                if let Some(r) = done {
                    break r["id"].as_str().unwrap().to_string();
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "no review finished: {runs:#}\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
                std::thread::sleep(Duration::from_millis(200));
            };
            let out = baton(&["show", &id, "--json"]).output().unwrap();
            let record: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            let _ = daemon.kill();
            let _ = daemon.wait();
            (
                String::from_utf8_lossy(&out.stdout).to_string(),
                std::fs::read_to_string(&log).unwrap_or_default(),
                record,
            )
        }
    };
    assert_eq!(record["status"], "completed", "{record:#}");
    if via == Via::Webhook {
        // The comment carried no commit: the head was read when it came, and kept.
        let head = common::git(&project, &["rev-parse", "speedup"]);
        assert_eq!(record["input"]["head_sha"], head.trim(), "{record:#}");
    }
    let verify = record["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "verify")
        .unwrap();
    let report = &verify["output"]["report"];
    assert_eq!(report["ran_in"], "sandbox", "{report:#}");
    assert_eq!(report["network"], false, "{report:#}");
    let check = &report["checks"][0];
    // The measured counts of the real runner, despite the attack.
    assert_eq!(check["passed"], 2, "{check:#}");
    assert_eq!(check["failed"], 0, "{check:#}");
    let tail = check["output_tail"].as_str().unwrap();
    assert!(
        !tail.contains("CONNECTED") && !tail.contains("ALLOCATED"),
        "{tail}"
    );
    assert!(listener.accept().is_err(), "the listener got a connection");
    assert!(!leftover(&marker), "a setsid process outlived its check");

    // The review: posted, with the counts, and none of the secrets.
    let file: serde_json::Value = serde_json::from_slice(
        &std::fs::read(data.join(format!("forge/acme/calc/pulls/{pr}.json"))).unwrap(),
    )
    .unwrap();
    let body = file["reviews"][0]["review"]["body"].as_str().unwrap();
    assert!(body.contains("2 passed"), "{body}");

    // baton's later git commands (the review's diff, the workspace's status) ran nothing of
    // the attacker's.
    assert!(!pwned.exists(), "the attacker's git setting ran");
    let secrets = [
        "ghp_e2eSandboxSecret0001",
        "e2eTelegramSecret0002",
        "sk-e2eSandboxSecret0004",
        "hookFileE2eSecret0008",
        "homeE2eSecret0007",
    ];
    for secret in secrets {
        assert!(
            !stdout.contains(secret) && !stderr.contains(secret),
            "{secret} leaked"
        );
        for (path, bytes) in all_bytes(&data) {
            assert!(
                !String::from_utf8_lossy(&bytes).contains(secret),
                "{secret} leaked into {}",
                path.display()
            );
        }
    }
}
