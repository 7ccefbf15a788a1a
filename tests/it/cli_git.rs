//! End to end through the real `baton` binary: a workflow that clones a local bare remote,
//! branches, writes, commits and pushes, then a hard rollback that undoes it all (the remote
//! branch gone, the change journal listing every change); and `baton verify --json` on a tiny
//! Python package.

use crate::require;

use std::path::Path;
use std::process::{Command, Output};

use crate::common::{b64, files_containing, git, HttpGit, Remote};
use serde_json::Value;

/// Runs `baton --data-dir <data> <args>`, with no daemon, config or token from the caller.
fn baton(data: &Path, args: &[&str]) -> Output {
    baton_with(data, args, &[])
}

/// [`baton`] with extra environment variables.
fn baton_with(data: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_baton"))
        .envs(env.iter().copied())
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .env_remove("BATON_CONFIG")
        .env_remove("BATON_DATA_DIR")
        .env_remove("GITHUB_TOKEN")
        .env(
            "RUST_LOG",
            env.iter()
                .find(|(k, _)| *k == "RUST_LOG")
                .map_or("warn", |(_, v)| *v),
        )
        .current_dir(data)
        .output()
        .expect("baton runs")
}

fn stdout_json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what}: exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

const WORKFLOW: &str = r#"
id = "git-e2e"
name = "Git end to end"
version = 1

[input]
url = { required = true }

[[steps]]
id = "clone"
action = "git.clone"
with = { url = "{{ input.url }}", base = "main" }
compensate = { action = "git.rollback" }

[[steps]]
id = "branch"
action = "git.branch"
with = { issue = "7", labels = "bug", title = "Crash on empty input" }
compensate = { action = "git.rollback" }

[[steps]]
id = "write"
action = "git.write"
with = { path = "src/fix.txt", content = "fixed\n" }
compensate = { action = "git.rollback" }

[[steps]]
id = "modify"
action = "git.write"
with = { path = "README.md", content = "changed\n" }
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
fn a_git_workflow_runs_and_a_hard_rollback_undoes_it_on_the_remote() {
    let tmp = tempfile::tempdir().unwrap();
    let remote = Remote::new(tmp.path(), &[("README.md", "hello\n")]);
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let flow = tmp.path().join("git-e2e.toml");
    std::fs::write(&flow, WORKFLOW).unwrap();

    let out = baton(
        &data,
        &[
            "run",
            flow.to_str().unwrap(),
            "--input",
            &format!("url={}", remote.url()),
            "--json",
        ],
    );
    ok(&out, "baton run");
    let run = stdout_json(&out);
    assert_eq!(run["status"], "completed", "{run:#}");
    let id = run["id"].as_str().unwrap().to_string();
    assert_eq!(
        run["steps"][1]["output"]["branch"], "fix/issue-7",
        "{run:#}"
    );
    let pushed = remote
        .sha("fix/issue-7")
        .expect("the branch is on the remote");
    assert_eq!(
        git(&remote.bare, &["show", &format!("{pushed}:src/fix.txt")]),
        "fixed"
    );
    let clone = data.join("workspaces").join(&id).join("repo");
    assert!(clone.join("src/fix.txt").exists());
    assert!(
        data.join("mirrors").is_dir(),
        "cloned through the mirror cache"
    );

    let out = baton(&data, &["rollback", &id, "--hard"]);
    ok(&out, "baton rollback --hard");
    assert_eq!(
        remote.sha("fix/issue-7"),
        None,
        "the remote branch is deleted"
    );
    assert!(!clone.join("src/fix.txt").exists(), "the new file is gone");
    assert_eq!(
        std::fs::read_to_string(clone.join("README.md")).unwrap(),
        "hello\n",
        "the modified file is restored"
    );
    assert_eq!(git(&clone, &["symbolic-ref", "--short", "HEAD"]), "main");
    assert_eq!(
        git(&clone, &["branch", "--list", "fix/*"]),
        "",
        "the local branch is deleted"
    );

    let out = baton(&data, &["show", &id, "--json"]);
    ok(&out, "baton show");
    let shown = stdout_json(&out);
    let types: Vec<&str> = shown["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .map(|c| c["change_type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "branch_create",
            "file_create",
            "file_modify",
            "commit",
            "push"
        ],
        "{shown:#}"
    );
    let push = &shown["changes"][4];
    assert_eq!(push["change_data"]["branch"], "fix/issue-7");
    assert_eq!(push["change_data"]["pushed"], pushed.as_str());
}

#[test]
fn a_missing_token_variable_fails_the_clone_naming_the_variable() {
    let tmp = tempfile::tempdir().unwrap();
    let remote = Remote::new(tmp.path(), &[("README.md", "hello\n")]);
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let flow = tmp.path().join("clone.toml");
    std::fs::write(
        &flow,
        r#"
id = "clone-only"
name = "Clone"
version = 1
[input]
url = { required = true }
[[steps]]
id = "clone"
action = "git.clone"
with = { url = "{{ input.url }}", token_env = "BATON_TEST_TOKEN_THAT_IS_NOT_SET" }
"#,
    )
    .unwrap();
    let out = baton(
        &data,
        &[
            "run",
            flow.to_str().unwrap(),
            "--input",
            &format!("url={}", remote.url()),
            "--json",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let run = stdout_json(&out);
    assert_eq!(run["status"], "failed");
    let error = run["steps"][0]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("BATON_TEST_TOKEN_THAT_IS_NOT_SET"),
        "{run:#}"
    );
}

fn python_package(failing: bool) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    git(p, &["init", "-q", "-b", "main"]);
    std::fs::write(p.join("pyproject.toml"), "[tool.pytest.ini_options]\n").unwrap();
    std::fs::create_dir_all(p.join("tests")).unwrap();
    let expected = if failing { 5 } else { 4 };
    std::fs::write(
        p.join("tests/test_add.py"),
        format!(
            "def test_add():\n    assert 2 + 2 == 4\n\ndef test_other():\n    assert 2 + 2 == {expected}\n"
        ),
    )
    .unwrap();
    dir
}

#[test]
fn baton_verify_json_reports_measured_pytest_counts_and_exit_codes() {
    if !require::pytest() {
        return;
    }
    let data = tempfile::tempdir().unwrap();

    let good = python_package(false);
    let out = baton(
        data.path(),
        &[
            "verify",
            good.path().to_str().unwrap(),
            "--json",
            "--only",
            "tests",
        ],
    );
    ok(&out, "baton verify (passing)");
    let report = stdout_json(&out);
    assert_eq!(report["ok"], true, "{report:#}");
    let check = &report["checks"][0];
    assert_eq!(check["kind"], "tests");
    assert_eq!(check["status"], "passed");
    assert_eq!(
        (check["passed"].as_u64(), check["failed"].as_u64()),
        (Some(2), Some(0))
    );
    assert!(
        report["markdown"]
            .as_str()
            .unwrap()
            .contains("✅ Tests: 2 passed, 0 failed"),
        "{report:#}"
    );

    let bad = python_package(true);
    let out = baton(
        data.path(),
        &[
            "verify",
            bad.path().to_str().unwrap(),
            "--json",
            "--fail-fast",
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "a failing critical check exits 1"
    );
    let report = stdout_json(&out);
    assert_eq!(report["ok"], false);
    let check = &report["checks"][0];
    assert_eq!(check["status"], "failed");
    assert_eq!(
        (check["passed"].as_u64(), check["failed"].as_u64()),
        (Some(1), Some(1))
    );
}

#[test]
fn baton_verify_bad_input_exits_2() {
    let data = tempfile::tempdir().unwrap();
    let not_repo = tempfile::tempdir().unwrap();
    let out = baton(
        data.path(),
        &["verify", not_repo.path().to_str().unwrap(), "--json"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a repository"));

    let empty = tempfile::tempdir().unwrap();
    git(empty.path(), &["init", "-q"]);
    let out = baton(data.path(), &["verify", empty.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no checks found"));

    std::fs::write(
        empty.path().join(".baton.toml"),
        "[verify]\nbogus_key = 1\n",
    )
    .unwrap();
    let out = baton(data.path(), &["verify", empty.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bogus_key"));

    let out = baton(
        data.path(),
        &[
            "verify",
            empty.path().to_str().unwrap(),
            "--only",
            "tests,bogus",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn the_verify_action_fails_the_run_on_a_failing_critical_check_with_the_report() {
    if !require::pytest() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let remote = Remote::new(
        tmp.path(),
        &[
            ("pyproject.toml", "[tool.pytest.ini_options]\n"),
            (
                "tests/test_add.py",
                "def test_add():\n    assert 2 + 2 == 4\n\ndef test_bad():\n    assert 2 + 2 == 5\n",
            ),
        ],
    );
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let flow = tmp.path().join("verify.toml");
    std::fs::write(
        &flow,
        r#"
id = "verify-e2e"
name = "Verify"
version = 1
[input]
url = { required = true }
[[steps]]
id = "clone"
action = "git.clone"
with = { url = "{{ input.url }}" }
[[steps]]
id = "verify"
action = "verify"
with = { only = "tests", fail_fast = true }
retry = { max_attempts = 3, initial = "10ms" }
"#,
    )
    .unwrap();
    let out = baton(
        &data,
        &[
            "run",
            flow.to_str().unwrap(),
            "--input",
            &format!("url={}", remote.url()),
            "--json",
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run = stdout_json(&out);
    assert_eq!(run["status"], "failed", "{run:#}");
    let step = &run["steps"][1];
    assert_eq!(step["attempts"], 1, "not retried: {run:#}");
    assert!(
        step["error"]
            .as_str()
            .unwrap_or_default()
            .contains("verification failed"),
        "{run:#}"
    );
    let text = run.to_string();
    assert!(
        text.contains("1 passed, 1 failed"),
        "the report is kept: {run:#}"
    );
}

const TOKEN: &str = "ghs_EndToEndTokenThatMustNeverLeak42";

#[test]
fn a_token_from_token_env_reaches_git_and_never_shows_in_data_or_logs() {
    let tmp = tempfile::tempdir().unwrap();
    let served = tmp.path().join("served");
    std::fs::create_dir_all(&served).unwrap();
    let remote = Remote::new(&served, &[("README.md", "hello\n")]);
    git(&remote.bare, &["config", "http.receivepack", "true"]);
    let header = b64(format!("x-access-token:{TOKEN}").as_bytes());
    let server = HttpGit::start(&served, format!("Basic {header}"));
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let flow = tmp.path().join("token.toml");
    std::fs::write(
        &flow,
        WORKFLOW.replace(r#"base = "main""#, r#"token_env = "BATON_E2E_GIT_TOKEN""#),
    )
    .unwrap();
    let env = [("BATON_E2E_GIT_TOKEN", TOKEN), ("RUST_LOG", "debug")];
    let url = server.url("remote.git");

    let run = baton_with(
        &data,
        &[
            "run",
            flow.to_str().unwrap(),
            "--input",
            &format!("url={url}"),
            "--json",
        ],
        &env,
    );
    ok(&run, "baton run over HTTP with a token");
    let id = stdout_json(&run)["id"].as_str().unwrap().to_string();
    assert!(remote.sha("fix/issue-7").is_some(), "pushed with the token");
    let rollback = baton_with(&data, &["rollback", &id, "--hard"], &env);
    ok(&rollback, "baton rollback --hard over HTTP");
    assert_eq!(remote.sha("fix/issue-7"), None, "deleted with the token");
    let show = baton(&data, &["show", &id, "--json", "--events"]);
    ok(&show, "baton show");

    for needle in [TOKEN, header.as_str()] {
        for out in [&run, &rollback, &show] {
            assert!(
                !String::from_utf8_lossy(&out.stdout).contains(needle),
                "token on stdout"
            );
            assert!(
                !String::from_utf8_lossy(&out.stderr).contains(needle),
                "token in the log"
            );
        }
        let hits = files_containing(&data, needle.as_bytes());
        assert!(hits.is_empty(), "token found in {hits:?}");
    }
}
