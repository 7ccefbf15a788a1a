//! Verification on real projects made in the tests, and every bad input of the issue.

use crate::common;
use crate::own_process;
use crate::require;

use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::git;
use baton::verify::{verify, CheckSpec, Error, Kind, Report, RunIn, Status, VerifyOptions};

/// A git repository holding `files`.
fn project(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    git(dir.path(), &["init", "-q"]);
    for (name, text) in files {
        let p = dir.path().join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    dir
}

/// Whether `program` is on PATH; a failure when it is not, unless skipping is allowed.
fn have(program: &str) -> bool {
    let install = match program {
        "cargo" => "the Rust toolchain, which scripts/test.sh itself runs on",
        "pytest" | "python3" => "scripts/install-test-deps.sh: pip install pytest",
        "node" | "npm" => "scripts/install-test-deps.sh: apt-get install nodejs npm",
        "bwrap" => require::BWRAP,
        _ => "scripts/install-test-deps.sh",
    };
    require::program(program, install)
}

fn only(kinds: &[Kind]) -> VerifyOptions {
    VerifyOptions {
        only: Some(kinds.to_vec()),
        ..VerifyOptions::default()
    }
}

fn custom(command: &str, critical: bool) -> CheckSpec {
    CheckSpec {
        kind: Kind::Custom,
        command: command.into(),
        critical,
        timeout: None,
    }
}

fn with_checks(checks: Vec<CheckSpec>) -> VerifyOptions {
    VerifyOptions {
        checks,
        ..VerifyOptions::default()
    }
}

/// `(status, passed, failed, skipped)` of the one check of `kind`.
fn summary(report: &Report, kind: Kind) -> (Status, Option<u64>, Option<u64>, Option<u64>) {
    let c: Vec<_> = report.checks.iter().filter(|c| c.kind == kind).collect();
    assert_eq!(c.len(), 1, "{report:#?}");
    (c[0].status, c[0].passed, c[0].failed, c[0].skipped)
}

fn rust_crate(integration_expect: i32) -> tempfile::TempDir {
    project(&[
        ("Cargo.toml", "[package]\nname = \"fixture\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[workspace]\n"),
        (
            "src/lib.rs",
            "pub fn add(a: i32, b: i32) -> i32 { a + b }\n\
             #[cfg(test)]\nmod tests {\n    #[test]\n    fn adds() { assert_eq!(super::add(1, 2), 3); }\n\
             #[test]\n    #[ignore = \"fixture: counted as skipped\"]\n    fn slow() {}\n}\n",
        ),
        (
            "tests/it.rs",
            &format!(
                "#[test]\nfn integration() {{ assert_eq!(fixture::add(2, 2), {integration_expect}); }}\n\
                 #[test]\nfn integration_two() {{ assert_eq!(fixture::add(0, 0), 0); }}\n"
            ),
        ),
    ])
}

#[tokio::test]
async fn rust_crate_counts_are_summed_over_test_binaries() {
    if !have("cargo") {
        return;
    }
    let good = rust_crate(4);
    let bad = rust_crate(5);
    let opts = only(&[Kind::Tests]);
    let (g, b) = tokio::join!(verify(good.path(), &opts), verify(bad.path(), &opts));
    let (g, b) = (g.unwrap(), b.unwrap());
    assert!(g.ok, "{g:#?}");
    assert_eq!(
        summary(&g, Kind::Tests),
        (Status::Passed, Some(3), Some(0), Some(1))
    );
    assert!(
        g.markdown
            .contains("✅ Tests: 3 passed, 0 failed, 1 skipped"),
        "{}",
        g.markdown
    );
    assert!(!b.ok);
    assert_eq!(
        summary(&b, Kind::Tests),
        (Status::Failed, Some(2), Some(1), Some(1))
    );
    assert_eq!(b.checks[0].failures, ["integration"]);
    assert!(
        b.markdown
            .contains("❌ Tests: 2 passed, 1 failed, 1 skipped\n  - `integration`"),
        "{}",
        b.markdown
    );
    assert!(
        b.markdown.contains("left: 4"),
        "excerpt quoted: {}",
        b.markdown
    );
}

fn python_package(failing: bool) -> tempfile::TempDir {
    let expected = if failing { 5 } else { 4 };
    project(&[
        (
            "pyproject.toml",
            "[project]\nname = \"calc\"\nversion = \"0.1.0\"\n",
        ),
        ("calc.py", "def add(a, b):\n    return a + b\n"),
        (
            "tests/test_calc.py",
            &format!(
                "import sys, os\nsys.path.insert(0, os.path.dirname(os.path.dirname(__file__)))\n\
                 import pytest\nfrom calc import add\n\n\
                 def test_add():\n    assert add(2, 2) == {expected}\n\n\
                 def test_zero():\n    assert add(0, 0) == 0\n\n\
                 @pytest.mark.skip(reason='later')\ndef test_later():\n    pass\n"
            ),
        ),
    ])
}

#[tokio::test]
async fn python_package_with_pytest() {
    if !have("pytest") {
        return;
    }
    let good = python_package(false);
    let r = verify(good.path(), &VerifyOptions::default())
        .await
        .unwrap();
    assert!(r.ok, "{r:#?}");
    assert_eq!(
        summary(&r, Kind::Tests),
        (Status::Passed, Some(2), Some(0), Some(1))
    );
    let bad = python_package(true);
    let r = verify(bad.path(), &VerifyOptions::default()).await.unwrap();
    assert!(!r.ok);
    assert_eq!(
        summary(&r, Kind::Tests),
        (Status::Failed, Some(1), Some(1), Some(1))
    );
    assert_eq!(r.checks[0].failures, ["tests/test_calc.py::test_add"]);
    assert!(
        r.markdown
            .contains("❌ Tests: 1 passed, 1 failed, 1 skipped"),
        "{}",
        r.markdown
    );
}

fn node_package(failing: bool) -> tempfile::TempDir {
    let expected = if failing { 5 } else { 4 };
    project(&[
        ("package.json", "{\"name\": \"calc\", \"version\": \"1.0.0\", \"scripts\": {\"test\": \"node --test\"}}\n"),
        ("calc.js", "exports.add = (a, b) => a + b;\n"),
        (
            "test/calc.test.js",
            &format!(
                "const test = require('node:test');\nconst assert = require('node:assert');\n\
                 const {{ add }} = require('../calc');\n\
                 test('adds', () => {{ assert.strictEqual(add(2, 2), {expected}); }});\n\
                 test('zero', () => {{ assert.strictEqual(add(0, 0), 0); }});\n\
                 test('later', {{ skip: true }}, () => {{}});\n"
            ),
        ),
    ])
}

#[tokio::test]
async fn node_package_with_the_node_test_runner() {
    if !have("node") || !have("npm") {
        return;
    }
    let good = node_package(false);
    let r = verify(good.path(), &VerifyOptions::default())
        .await
        .unwrap();
    assert!(r.ok, "{r:#?}");
    assert_eq!(
        summary(&r, Kind::Tests),
        (Status::Passed, Some(2), Some(0), Some(1))
    );
    assert_eq!(r.checks[0].command, "npm run --silent test");
    let bad = node_package(true);
    let r = verify(bad.path(), &VerifyOptions::default()).await.unwrap();
    assert!(!r.ok);
    assert_eq!(
        summary(&r, Kind::Tests),
        (Status::Failed, Some(1), Some(1), Some(1))
    );
    assert!(
        r.checks[0].failures.contains(&"adds".to_string()),
        "{:?}",
        r.checks[0].failures
    );
}

#[tokio::test]
async fn bad_paths_and_empty_repositories_are_errors_not_passes() {
    let file = tempfile::NamedTempFile::new().unwrap();
    let err = verify(file.path(), &VerifyOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotADirectory { .. }), "{err}");
    let err = verify(Path::new("/no/such/dir"), &VerifyOptions::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("/no/such/dir"), "{err}");
    let plain = tempfile::tempdir().unwrap();
    std::fs::write(plain.path().join("Cargo.toml"), "").unwrap();
    let err = verify(plain.path(), &VerifyOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotARepository { .. }), "{err}");
    let empty = project(&[("README.md", "nothing to run\n")]);
    let err = verify(empty.path(), &VerifyOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NoChecks { .. }), "{err}");
    assert!(err.to_string().contains("no checks found"), "{err}");
    let only_lint = project(&[("pytest.ini", "")]);
    let err = verify(only_lint.path(), &only(&[Kind::Lint]))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("(only: lint)"), "{err}");
}

#[tokio::test]
async fn baton_toml_with_an_unknown_key_is_an_error_naming_it() {
    let p = project(&[(".baton.toml", "[verify]\nfail_fast = true\n\n[[verify.checks]]\nkind = \"tests\"\ncommand = \"true\"\ntimout = \"5m\"\n")]);
    let err = verify(p.path(), &VerifyOptions::default())
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::Config { .. }), "{msg}");
    assert!(
        msg.contains("timout") && msg.contains(".baton.toml"),
        "{msg}"
    );
}

#[tokio::test]
async fn baton_toml_overrides_detected_checks_of_its_kind() {
    let p = project(&[
        ("Cargo.toml", "[package]\nname = \"x\"\n"),
        (
            ".baton.toml",
            "[verify]\n[[verify.checks]]\nkind = \"tests\"\ncommand = \"echo '5 passed, 1 skipped in 0.01s'\"\n\
             [[verify.checks]]\nkind = \"custom\"\ncommand = \"echo smoke\"\ncritical = false\ntimeout = 30\n",
        ),
    ]);
    let r = verify(p.path(), &only(&[Kind::Tests, Kind::Custom]))
        .await
        .unwrap();
    let commands: Vec<&str> = r.checks.iter().map(|c| c.command.as_str()).collect();
    assert_eq!(
        commands,
        ["echo '5 passed, 1 skipped in 0.01s'", "echo smoke"]
    );
    assert_eq!(
        summary(&r, Kind::Tests),
        (Status::Passed, Some(5), Some(0), Some(1))
    );
    assert!(
        r.markdown.contains("✅ Custom (`echo smoke`): passed"),
        "{}",
        r.markdown
    );
    // detect = false keeps only the file's checks.
    std::fs::write(p.path().join(".baton.toml"), "[verify]\ndetect = false\n").unwrap();
    let err = verify(p.path(), &VerifyOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NoChecks { .. }));
}

#[tokio::test]
async fn a_command_that_is_not_installed_is_an_error_with_the_shells_message() {
    let p = project(&[]);
    let r = verify(
        p.path(),
        &with_checks(vec![custom("definitely-not-installed-xyz --run", true)]),
    )
    .await
    .unwrap();
    let c = &r.checks[0];
    assert_eq!(c.status, Status::Error);
    assert_eq!(c.exit_code, Some(127));
    let e = c.error.as_deref().unwrap();
    assert!(
        e.contains("definitely-not-installed-xyz") && e.contains("not found"),
        "{e}"
    );
    assert!(!r.ok);
    assert!(
        r.markdown
            .contains("❌ Custom (`definitely-not-installed-xyz --run`): could not run"),
        "{}",
        r.markdown
    );
    assert_eq!((c.passed, c.failed, c.skipped), (None, None, None));
}

#[tokio::test]
async fn a_hanging_test_is_timed_out_with_all_its_children_killed() {
    let p = project(&[]);
    let mut check = custom(
        "sleep 60 & echo $! > child.pid; sh -c 'sleep 60' & wait",
        true,
    );
    check.timeout = Some(Duration::from_millis(700));
    let started = Instant::now();
    // On the host, where the child's pid is ours to look up (the sandbox's case is below).
    let host = VerifyOptions {
        run_in: RunIn::Host,
        ..with_checks(vec![check])
    };
    let r = verify(p.path(), &host).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let c = &r.checks[0];
    assert_eq!(c.status, Status::Error);
    assert!(
        c.error
            .as_deref()
            .unwrap()
            .contains("timed out after 700 ms"),
        "{c:?}"
    );
    let pid: i32 = std::fs::read_to_string(p.path().join("child.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // The background child is gone (give the kernel a moment to reap it).
    let mut alive = true;
    for _ in 0..50 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // A zombie (state Z) is dead, waiting for its parent (init) to reap it.
        alive = !stat.is_empty() && !stat.contains(") Z ");
        if !alive {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!alive, "child {pid} survived the timeout");

    // In the sandbox: its pids are its own, so look for the children by their arguments.
    if !have("bwrap") {
        return;
    }
    let secs = 600 + std::process::id() % 1000;
    let mut check = custom(
        &format!("sleep {secs} & setsid sleep {} & wait", secs + 1),
        true,
    );
    check.timeout = Some(Duration::from_millis(700));
    let boxed = VerifyOptions {
        run_in: RunIn::Sandbox { network: false },
        ..with_checks(vec![check])
    };
    let r = verify(p.path(), &boxed).await.unwrap();
    assert_eq!(r.checks[0].status, Status::Error, "{:?}", r.checks[0]);
    let survivors = |secs: u32| common::running(&["sleep", &secs.to_string()]);
    let mut left = true;
    for _ in 0..50 {
        left = survivors(secs) || survivors(secs + 1);
        if !left {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!left, "a sandboxed child survived the timeout");
}

#[tokio::test]
async fn gigantic_output_is_capped_and_the_run_goes_on() {
    let p = project(&[]);
    let line = "x".repeat(199);
    let cmd = format!("yes '{line}' | head -c 300000000; echo; echo '3 passed in 0.01s'");
    let opts = VerifyOptions {
        tail_bytes: 1000,
        checks: vec![custom(&cmd, true), custom("echo after", true)],
        ..VerifyOptions::default()
    };
    let r = verify(p.path(), &opts).await.unwrap();
    let c = &r.checks[0];
    assert_eq!(c.status, Status::Passed, "{:?}", c.error);
    assert!(c.output_bytes >= 300_000_000, "{}", c.output_bytes);
    assert!(c.output_tail.len() <= 1000);
    assert!(
        c.output_tail.ends_with("3 passed in 0.01s\n"),
        "{:?}",
        &c.output_tail
    );
    assert_eq!(c.passed, Some(3));
    assert_eq!(r.checks[1].status, Status::Passed);
    assert!(r.ok);
}

#[tokio::test]
async fn fail_fast_stops_at_the_first_critical_failure_continue_runs_all() {
    let p = project(&[]);
    let checks = vec![
        custom("echo lint-ish; exit 3", false),
        custom("exit 1", true),
        custom("echo third", true),
    ];
    let mut opts = with_checks(checks);
    opts.fail_fast = Some(true);
    let r = verify(p.path(), &opts).await.unwrap();
    let statuses: Vec<Status> = r.checks.iter().map(|c| c.status).collect();
    assert_eq!(statuses, [Status::Failed, Status::Failed, Status::Skipped]);
    assert!(!r.ok);
    assert!(
        r.markdown.contains("(not blocking)") && r.markdown.contains("⏭️"),
        "{}",
        r.markdown
    );
    opts.fail_fast = Some(false);
    let r = verify(p.path(), &opts).await.unwrap();
    let statuses: Vec<Status> = r.checks.iter().map(|c| c.status).collect();
    assert_eq!(statuses, [Status::Failed, Status::Failed, Status::Passed]);
    // The repository's own setting applies when the caller does not say.
    std::fs::write(p.path().join(".baton.toml"), "[verify]\nfail_fast = true\n").unwrap();
    opts.fail_fast = None;
    let r = verify(p.path(), &opts).await.unwrap();
    assert_eq!(r.checks[2].status, Status::Skipped);
    // A non-critical failure alone does not block.
    let r = verify(p.path(), &with_checks(vec![custom("exit 1", false)]))
        .await
        .unwrap();
    assert!(r.ok);
}

/// Secrets in the environment of the process that runs the checks, as the daemon has them.
const LEAKY: &[(&str, &str)] = &[
    ("GITHUB_TOKEN", "ghp_leaky_token_value"),
    ("BATON_TELEGRAM_TOKEN", "tg_leaky"),
    ("OPENAI_API_KEY", "sk-leaky"),
];

#[test]
fn scrubbing_runs_with_secrets_in_its_own_process() {
    own_process::run("verify::checks_run_with_a_scrubbed_environment", LEAKY);
}

#[tokio::test]
#[ignore = "runs in its own process, through verify::scrubbing_runs_with_secrets_in_its_own_process"]
async fn checks_run_with_a_scrubbed_environment() {
    own_process::assert_in_it("verify::checks_run_with_a_scrubbed_environment");
    let p = project(&[]);
    let r = verify(p.path(), &with_checks(vec![custom("env", true)]))
        .await
        .unwrap();
    let out = &r.checks[0].output_tail;
    assert!(out.contains("PATH="), "{out}");
    assert!(out.contains("CI=true"), "{out}");
    for leak in [
        "ghp_leaky",
        "tg_leaky",
        "sk-leaky",
        "BATON_",
        "GITHUB_TOKEN",
    ] {
        assert!(!out.contains(leak), "{leak} leaked into: {out}");
    }
}

#[tokio::test]
async fn bwrap_sandbox_keeps_the_repository_writable_and_the_rest_read_only() {
    if !have("bwrap") || !have("python3") {
        return;
    }
    let p = project(&[]);
    let outside = tempfile::tempdir_in(std::env::var("HOME").unwrap_or("/root".into())).unwrap();
    let probe = outside.path().join("probe");
    // A server on loopback: reachable without the sandbox, not from inside it.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let connect = format!(
        "python3 -c \"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=2)\""
    );
    let checks = vec![
        custom("touch inside.txt && echo ok", true),
        custom(&format!("touch {}", probe.display()), true),
        custom(&connect, true),
    ];
    let host = VerifyOptions {
        run_in: RunIn::Host,
        ..with_checks(checks.clone())
    };
    let direct = verify(p.path(), &host).await.unwrap();
    assert_eq!(direct.ran_in, "host");
    assert_eq!(
        direct.checks[2].status,
        Status::Passed,
        "{:?}",
        direct.checks[2]
    );
    std::fs::remove_file(&probe).unwrap();
    std::fs::remove_file(p.path().join("inside.txt")).unwrap();
    let opts = VerifyOptions {
        run_in: RunIn::Sandbox { network: false },
        checks,
        ..VerifyOptions::default()
    };
    let r = verify(p.path(), &opts).await.unwrap();
    assert!(r.notes.is_empty(), "{:?}", r.notes);
    assert_eq!((r.ran_in.as_str(), r.network), ("sandbox", false));
    assert_eq!(r.checks[0].status, Status::Passed, "{:?}", r.checks[0]);
    assert!(p.path().join("inside.txt").exists());
    assert_eq!(r.checks[1].status, Status::Failed, "{:?}", r.checks[1]);
    assert!(!probe.exists());
    assert_eq!(
        r.checks[2].status,
        Status::Failed,
        "network reached: {:?}",
        r.checks[2]
    );
    drop(listener);
}

#[tokio::test]
async fn the_report_serialises_to_the_issues_json() {
    let p = project(&[]);
    let r = verify(p.path(), &with_checks(vec![custom("echo hi", true)]))
        .await
        .unwrap();
    let v: serde_json::Value = serde_json::to_value(&r).unwrap();
    assert_eq!(v["ok"], true);
    let c = &v["checks"][0];
    assert_eq!(c["kind"], "custom");
    assert_eq!(c["command"], "echo hi");
    assert_eq!(c["status"], "passed");
    assert!(c["passed"].is_null() && c["failed"].is_null() && c["skipped"].is_null());
    assert!(c["duration_ms"].is_u64());
    assert_eq!(c["output_tail"], "hi\n");
    assert!(v["markdown"]
        .as_str()
        .unwrap()
        .starts_with("## Verification\n\n✅ Custom"));
    let back: Report = serde_json::from_value(v).unwrap();
    assert_eq!(back, r);
}
