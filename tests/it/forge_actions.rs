//! The `forge.*` actions from a workflow file, on the local forge with real git: each finds its
//! own earlier effect when it runs again (a second run, a partial rollback that runs the steps
//! again), so nothing is posted twice.

use crate::common;

use std::process::Command;

use baton::forge::local::LocalForge;
use baton::forge::{Forge, Repo, StateFilter};
use serde_json::Value;

use crate::BATON as BIN;

const WORKFLOW: &str = r#"
id = "forge-tour"

[input]
repo = { required = true }
issue = { required = true }

[[steps]]
id = "read"
action = "forge.issue"
with = { repo = "{{ input.repo }}", issue = "{{ input.issue }}" }

[[steps]]
id = "comment"
action = "forge.comment"
with = { repo = "{{ input.repo }}", issue = "{{ input.issue }}", body = "Seen: {{ steps.read.output.title }}" }

[[steps]]
id = "labels"
action = "forge.labels"
with = { repo = "{{ input.repo }}", issue = "{{ input.issue }}", labels = ["triaged"] }

[[steps]]
id = "pr"
action = "forge.ensure_pr"
with = { repo = "{{ input.repo }}", head = "topic", base = "main", title = "More hello", body = "For {{ steps.read.output.title }}" }
compensate = { action = "forge.close_pr", with = { repo = "{{ input.repo }}" } }

[[steps]]
id = "review"
action = "forge.review"
with = { repo = "{{ input.repo }}", pr = "{{ steps.pr.output.number }}", body = "Looks fine", event = "comment", comments = [{ path = "README.md", line = 1, body = "a note" }] }

[[steps]]
id = "release"
action = "forge.release"
with = { repo = "{{ input.repo }}", tag = "v1.0.0", body = "First release" }
"#;

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

#[test]
fn forge_actions_never_post_twice() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let data = root.join("data");
    let project = root.join("project");
    std::fs::create_dir_all(&project).unwrap();
    std::fs::write(project.join("README.md"), "hello\n").unwrap();
    common::git(&project, &["init", "--quiet", "--initial-branch=main"]);
    common::git(&project, &["add", "--all"]);
    common::git(&project, &["commit", "--quiet", "-m", "readme"]);
    common::git(&project, &["checkout", "--quiet", "-b", "topic"]);
    std::fs::write(project.join("README.md"), "hello, world\n").unwrap();
    common::git(&project, &["commit", "--quiet", "-am", "more"]);
    common::git(&project, &["checkout", "--quiet", "main"]);
    let forge = LocalForge::open(data.join("forge"), "baton").unwrap();
    let repo = Repo::parse("acme/tour").unwrap();
    block_on(forge.import_repo(&repo, &project)).unwrap();
    let issue =
        block_on(forge.create_issue_as(&repo, "alice", "Crash on start", "It crashes.", &[]))
            .unwrap();
    let file = root.join("tour.toml");
    std::fs::write(&file, WORKFLOW).unwrap();
    let config = root.join("config.toml");
    std::fs::write(&config, "[forge]\nkind = \"local\"\n").unwrap();
    let baton = |args: &[&str]| {
        let out = Command::new(BIN)
            .args(args)
            .env("BATON_DATA_DIR", &data)
            .env("BATON_CONFIG", &config)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "baton {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<Value>(&out.stdout).unwrap_or(Value::Null)
    };
    let inputs = [
        "--input",
        "repo=acme/tour",
        "--input",
        &format!("issue={}", issue.number),
    ];
    let mut args = vec!["run", file.to_str().unwrap(), "--json"];
    args.extend_from_slice(&inputs);
    let first = baton(&args);
    assert_eq!(first["status"], "completed", "{first}");
    let run = first["id"].as_str().unwrap().to_string();
    // The same steps again within the run: the last four are undone and redone.
    let again = baton(&["rollback", &run, "--steps", "4", "--json"]);
    assert_eq!(again["status"], "completed", "{again}");
    // And a second run of the workflow.
    let second = baton(&args);
    assert_eq!(second["status"], "completed", "{second}");

    let comments = block_on(forge.comments(&repo, issue.number)).unwrap();
    assert_eq!(comments.len(), 2, "one comment per run: {comments:#?}");
    assert!(comments
        .iter()
        .all(|c| c.body.starts_with("Seen: Crash on start")));
    let issue_now = block_on(forge.issue(&repo, issue.number)).unwrap();
    assert_eq!(issue_now.labels, vec!["triaged"]);
    // The partial rollback closed the run's PR and its redo opened one again; the second run
    // found that open PR and updated it: one open PR for the branch.
    let prs = block_on(forge.pull_requests(&repo, StateFilter::Open)).unwrap();
    assert_eq!(prs.len(), 1, "one open PR for the branch: {prs:#?}");
    let pr = &prs[0];
    let closed = block_on(forge.pull_requests(&repo, StateFilter::Closed)).unwrap();
    assert_eq!(
        closed.len(),
        1,
        "the one the partial rollback closed: {closed:#?}"
    );
    let reviews = block_on(forge.reviews(&repo, pr.number)).unwrap();
    assert_eq!(
        reviews.len(),
        1,
        "one review per workflow and PR: {reviews:#?}"
    );
    assert!(reviews[0].body.contains("Looks fine"));
    let release = block_on(forge.release_by_tag(&repo, "v1.0.0"))
        .unwrap()
        .unwrap();
    assert_eq!(release.body, "First release");
    // A hard rollback closes the PR its step opened.
    let second_run = second["id"].as_str().unwrap();
    baton(&["rollback", second_run, "--hard", "--json"]);
    let pr = block_on(forge.pull_request(&repo, pr.number)).unwrap();
    assert_eq!(pr.state, "closed");
}
