//! Issue → PR on the `github` forge: every API call the workflow makes goes to Prism serving
//! GitHub's own OpenAPI description (which refuses a wrong method, path, query or body), and git
//! clones and pushes a local bare remote that stands in for the `clone_url` the API reports
//! (git's own `url.<base>.insteadOf`, given by the operator's `BATON_GIT_CONFIG`).
//!
//! A small proxy on loopback sits between baton and Prism. It forwards every call untouched and
//! records its answer, with one change to one answer: GitHub's example issue carries a
//! `pull_request` field (it is an example of a PR seen as an issue), and baton rightly refuses
//! to turn a pull request into a pull request, so the proxy drops that field.

use crate::common;
use crate::common_forge;

use crate::common_forge::proxy::start_proxy;

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::BATON as BIN;

/// The repository Prism's examples describe (`octocat/Hello-World`, default branch `master`),
/// as a local bare remote holding a Rust crate whose tests fail.
pub(crate) fn remote(root: &Path) -> std::path::PathBuf {
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
    std::fs::write(
        project.join("src/lib.rs"),
        "pub fn greet() -> &'static str {\n    \"Hello, Wrld!\"\n}\n\n#[test]\nfn greets() {\n    assert_eq!(greet(), \"Hello, World!\");\n}\n",
    )
    .unwrap();
    std::fs::write(
        project.join(".baton.toml"),
        "[verify]\ndetect = false\n[[verify.checks]]\nkind = \"tests\"\ncommand = \"cargo test --color never\"\n",
    )
    .unwrap();
    common::git(&project, &["init", "--quiet", "--initial-branch=master"]);
    common::git(&project, &["add", "--all"]);
    common::git(&project, &["commit", "--quiet", "-m", "hello"]);
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
    bare
}

/// A coding command (the `command` backend) that fixes the stand-in's greeting.
pub(crate) fn greeting_agent(root: &Path) -> std::path::PathBuf {
    let fixed = root.join("fixed.rs");
    std::fs::write(
        &fixed,
        "pub fn greet() -> &'static str {\n    \"Hello, World!\"\n}\n\n#[test]\nfn greets() {\n    assert_eq!(greet(), \"Hello, World!\");\n}\n",
    )
    .unwrap();
    let agent = root.join("agent.sh");
    std::fs::write(
        &agent,
        format!(
            "#!/bin/sh\ncp {} src/lib.rs\necho fixed the greeting\n",
            fixed.display()
        ),
    )
    .unwrap();
    agent
}

#[test]
fn issue_to_pr_makes_only_calls_github_accepts() {
    // Missing Prism fails the test (under CI always); it returns only when skipping is allowed.
    let Some(prism) = common_forge::prism() else {
        return;
    };
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
    let agent = greeting_agent(root);
    let config = root.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[forge]\nkind = \"github\"\n[github]\nbase_url = \"{base}\"\n\
             [agent]\nbackend = \"command\"\ncommand = [\"sh\", \"{}\"]\n",
            agent.display()
        ),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["issue-to-pr", "octocat/Hello-World#1347", "--json"])
        .env("BATON_DATA_DIR", root.join("data"))
        .env("BATON_CONFIG", &config)
        .env("GITHUB_TOKEN", "ghp_prismcontracttoken")
        .env("BATON_GIT_CONFIG", &gitconfig)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let calls = calls.lock().unwrap().clone();
    // The stand-in's tests still fail after the change: a draft PR, and exit 1 (unverified).
    assert_eq!(out.status.code(), Some(1), "{stderr}\ncalls: {calls:#?}");
    let record: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(record["status"], "completed", "{stderr}");
    assert_eq!(record["state"]["outcome"], "unverified", "{stderr}");

    // Every call was one GitHub's description accepts.
    let refused: Vec<_> = calls.iter().filter(|(_, _, s)| *s >= 400).collect();
    assert!(refused.is_empty(), "Prism refused: {refused:#?}");
    let made = |method: &str, path: &str| calls.iter().any(|(m, p, _)| m == method && p == path);
    for (method, path) in [
        ("GET", "/repos/octocat/Hello-World/issues/1347"),
        ("GET", "/repos/octocat/Hello-World"),
        ("GET", "/repos/octocat/Hello-World/pulls"),
        ("POST", "/repos/octocat/Hello-World/pulls"),
        ("GET", "/repos/octocat/Hello-World/issues/1347/comments"),
        ("POST", "/repos/octocat/Hello-World/issues/1347/comments"),
    ] {
        assert!(made(method, path), "no {method} {path} in {calls:#?}");
    }
    // With a token, baton's verification is a commit status on the commit it pushed.
    let publish = step(&record, "publish_check");
    assert_eq!(publish["status"], "completed", "{publish}");
    assert_eq!(publish["output"]["conclusion"], "failure", "{publish}");
    let sha = publish["output"]["sha"].as_str().unwrap();
    assert!(
        made(
            "POST",
            &format!("/repos/octocat/Hello-World/statuses/{sha}")
        ),
        "no commit status on {sha} in {calls:#?}"
    );
    // git went to the stand-in remote: the branch is there with the fix.
    let branch = record["state"]["branch"].as_str().unwrap();
    assert_eq!(
        branch, "fix/issue-1347",
        "the example issue is labeled `bug`"
    );
    let pushed = common::git(&bare, &["show", &format!("{branch}:src/lib.rs")]);
    assert!(pushed.contains("Hello, World!"), "{pushed}");
    // The status is on the very commit the branch holds.
    assert_eq!(common::git(&bare, &["rev-parse", branch]).trim(), sha);
    // The token went by header, never into a URL, a log line or the run.
    assert!(!stderr.contains("ghp_prismcontracttoken"));
    assert!(!record.to_string().contains("ghp_prismcontracttoken"));
}

/// The step `id` of a run record as `--json` prints it.
pub(crate) fn step<'a>(record: &'a Value, id: &str) -> &'a Value {
    record["steps"]
        .as_array()
        .and_then(|steps| steps.iter().find(|s| s["id"] == id))
        .unwrap_or_else(|| panic!("no step `{id}` in {record}"))
}
