//! PR Review and Bug Triage on the `github` forge: every API call they make goes to Prism
//! serving GitHub's own OpenAPI description (which refuses a wrong method, path, query or
//! body), and git clones a local bare remote that stands in for the `clone_url` the API reports
//! (git's `url.<base>.insteadOf`, given by the operator's `BATON_GIT_CONFIG`). The proxy is the one of
//! `issue_to_pr_github.rs`: it records every answer and drops the `pull_request` field of
//! GitHub's example issue (an example of a PR seen as an issue).

use crate::common;
use crate::common_forge;

use crate::common_forge::proxy::{start_proxy, Call};

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::BATON as BIN;

/// `octocat/Hello-World` (default branch `master`) as a local bare remote holding a Rust crate
/// whose test passes, and `refs/pull/1347/head`, the example PR's head, breaking it.
fn remote(root: &Path) -> std::path::PathBuf {
    let project = root.join("project");
    std::fs::create_dir_all(project.join("src")).unwrap();
    std::fs::write(
        project.join("Cargo.toml"),
        "[package]\nname = \"hello\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[workspace]\n",
    )
    .unwrap();
    std::fs::write(
        project.join("Cargo.lock"),
        "version = 4\n\n[[package]]\nname = \"hello\"\nversion = \"0.1.0\"\n",
    )
    .unwrap();
    std::fs::write(project.join(".gitignore"), "/target\n").unwrap();
    let lib = "pub fn greet() -> &'static str {\n    \"Hello, World!\"\n}\n\n#[test]\nfn greets() {\n    assert_eq!(greet(), \"Hello, World!\");\n}\n";
    std::fs::write(project.join("src/lib.rs"), lib).unwrap();
    std::fs::write(
        project.join(".baton.toml"),
        "[verify]\ndetect = false\n[[verify.checks]]\nkind = \"tests\"\ncommand = \"cargo test --color never\"\n",
    )
    .unwrap();
    common::git(&project, &["init", "--quiet", "--initial-branch=master"]);
    common::git(&project, &["add", "--all"]);
    common::git(&project, &["commit", "--quiet", "-m", "hello"]);
    common::git(&project, &["checkout", "--quiet", "-b", "topic"]);
    std::fs::write(
        project.join("src/lib.rs"),
        lib.replacen("World!\"\n}", "Wrld!\"\n}", 1),
    )
    .unwrap();
    common::git(&project, &["commit", "--quiet", "-am", "typo"]);
    common::git(&project, &["checkout", "--quiet", "master"]);
    let bare = root.join("Hello-World.git");
    common::git(
        root,
        &[
            "clone",
            "--quiet",
            "--bare",
            project.to_str().unwrap(),
            bare.to_str().unwrap(),
        ],
    );
    // A fork's PR: its head is only GitHub's `refs/pull/N/head`.
    common::git(
        &project,
        &[
            "push",
            "--quiet",
            bare.to_str().unwrap(),
            "topic:refs/pull/1347/head",
        ],
    );
    common::git(&bare, &["branch", "-D", "topic"]);
    bare
}

/// Runs `baton ARGS --json` on the github forge behind the proxy; the exit code, the record,
/// stderr and the calls made.
fn run(args: &[&str]) -> Option<(i32, Value, String, Vec<Call>)> {
    // Missing Prism fails the test (under CI always); it returns only when skipping is allowed.
    let prism = common_forge::prism()?;
    let (base, calls) = start_proxy(prism);
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let bare = remote(root);
    let gitconfig = root.join("gitconfig");
    std::fs::write(
        &gitconfig,
        format!(
            "[url \"{}\"]\n\tinsteadOf = https://github.com/octocat/Hello-World.git\n",
            bare.display()
        ),
    )
    .unwrap();
    let config = root.join("config.toml");
    std::fs::write(
        &config,
        format!("[forge]\nkind = \"github\"\n[github]\nbase_url = \"{base}\"\n"),
    )
    .unwrap();
    let mut all = args.to_vec();
    all.push("--json");
    let out = Command::new(BIN)
        .args(&all)
        .env("BATON_DATA_DIR", root.join("data"))
        .env("BATON_CONFIG", &config)
        .env("GITHUB_TOKEN", "ghp_prismcontracttoken")
        .env("BATON_GIT_CONFIG", &gitconfig)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let record: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    assert!(!stderr.contains("ghp_prismcontracttoken"));
    assert!(!record.to_string().contains("ghp_prismcontracttoken"));
    let calls = calls.lock().unwrap().clone();
    Some((out.status.code().unwrap_or(-1), record, stderr, calls))
}

fn assert_calls(calls: &[Call], expected: &[(&str, &str)]) {
    let refused: Vec<_> = calls.iter().filter(|(_, _, s)| *s >= 400).collect();
    assert!(refused.is_empty(), "Prism refused: {refused:#?}");
    for (method, path) in expected {
        assert!(
            calls.iter().any(|(m, p, _)| m == method && p == path),
            "no {method} {path} in {calls:#?}"
        );
    }
}

#[test]
fn pr_review_makes_only_calls_github_accepts() {
    let Some((code, record, stderr, calls)) = run(&["pr-review", "octocat/Hello-World#1347"])
    else {
        return;
    };
    // The head breaks a test: reviewed (completed), unverified, exit 1.
    assert_eq!(code, 1, "{stderr}\ncalls: {calls:#?}");
    assert_eq!(record["status"], "completed", "{stderr}");
    assert_eq!(record["state"]["outcome"], "unverified", "{stderr}");
    // The head came from `refs/pull/1347/head` and breaks the test.
    assert_eq!(
        record["state"]["review"]["verdict"], "request_changes",
        "{record:#}"
    );
    assert_calls(
        &calls,
        &[
            ("GET", "/repos/octocat/Hello-World/pulls/1347"),
            ("GET", "/repos/octocat/Hello-World"),
            ("GET", "/repos/octocat/Hello-World/pulls/1347/reviews"),
        ],
    );
    // Prism's example reviews carry no marker: a review is posted.
    assert_calls(
        &calls,
        &[("POST", "/repos/octocat/Hello-World/pulls/1347/reviews")],
    );
}

#[test]
fn bug_triage_makes_only_calls_github_accepts() {
    let Some((code, record, stderr, calls)) = run(&["triage", "octocat/Hello-World#1347"]) else {
        return;
    };
    assert_eq!(code, 0, "{stderr}\ncalls: {calls:#?}");
    assert_eq!(record["status"], "completed", "{stderr}");
    assert_eq!(
        record["state"]["triage"]["reproduction"]["outcome"], "could_not_try",
        "the example issue gives nothing to run: {record:#}"
    );
    assert_calls(
        &calls,
        &[
            ("GET", "/repos/octocat/Hello-World/issues/1347"),
            ("POST", "/repos/octocat/Hello-World/issues/1347/labels"),
            ("GET", "/repos/octocat/Hello-World/issues/1347/comments"),
            ("POST", "/repos/octocat/Hello-World/issues/1347/comments"),
        ],
    );
}
