//! A pull request's life after baton opened it, through the real `baton serve` with signed
//! webhooks: closing the issue cancels a waiting run; `/baton revise` on the PR adds a commit
//! to its branch; merging the PR removes the run's workspace and (when configured) its branch.
//! Payloads are `@octokit/webhooks-examples`' and, where it has none, `tests/fixtures/`.

use crate::common;
use crate::common_daemon::Daemon;
use crate::common_forge;
use crate::setup::{self, block_on};

use std::path::Path;
use std::time::{Duration, Instant};

use baton::forge::Forge;
use serde_json::Value;

const SECRET: &str = "the webhook secret of the pr_life test";
const REPO: &str = "acme/notes";
const SENDER: &str = "alice";

const ISSUE_DIFF: &str = "--- a/notes.txt\n+++ b/notes.txt\n@@ -1 +1 @@\n-broken\n+fixed\n";
const REVISION_DIFF: &str = "--- /dev/null\n+++ b/NOTES.md\n@@ -0,0 +1 @@\n+revised\n";

/// The shared setting with `acme/notes` (alice may write) and issue #1 carrying a diff; the
/// patch agent; a `true` test check, since this is about the PR's life, not verification.
struct Setup(setup::Setup);

impl std::ops::Deref for Setup {
    type Target = setup::Setup;
    fn deref(&self) -> &setup::Setup {
        &self.0
    }
}

impl Setup {
    fn new(extra_config: &str) -> Setup {
        let base = setup::Setup::new(
            REPO,
            &[SENDER],
            &format!("[agent]\nbackend = \"patch\"\n{extra_config}"),
            &[
                ("notes.txt", "broken\n"),
                (
                    ".baton.toml",
                    "[verify]\ndetect = false\n[[verify.checks]]\nkind = \"tests\"\ncommand = \"true\"\n",
                ),
            ],
        );
        let body = format!("The notes are broken.\n\n```diff\n{ISSUE_DIFF}```\n");
        let issue =
            block_on(
                base.forge
                    .create_issue_as(&base.repo, SENDER, "Fix the notes", &body, &[]),
            )
            .unwrap();
        assert_eq!(issue.number, 1);
        Setup(base)
    }

    fn serve(&self) -> Daemon {
        Daemon::start_with(
            &self.data,
            &self.config,
            &[("BATON_GITHUB_WEBHOOK_SECRET", SECRET)],
        )
    }

    fn runs(&self) -> Vec<Value> {
        let out = self.baton(&["runs", "--json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<Value>(&out.stdout)
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    }

    /// A payload with the test's repository and sender.
    fn payload(&self, mut payload: Value) -> Value {
        payload["repository"]["full_name"] = REPO.into();
        payload["repository"]["name"] = "notes".into();
        payload["repository"]["owner"]["login"] = "acme".into();
        payload["sender"]["login"] = SENDER.into();
        payload["sender"]["type"] = "User".into();
        payload
    }
}

/// Posts a delivery signed with [`SECRET`]: the HTTP status and the answer.
fn post(daemon: &Daemon, event: &str, delivery: &str, payload: &Value) -> (u16, Value) {
    daemon.deliver(SECRET, event, delivery, payload)
}

fn fixture(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn closing_the_issue_cancels_its_waiting_run() {
    let s = Setup::new("[workflows.issue_to_pr]\napprove_plan = true\n");
    let _daemon = s.serve();
    let daemon = &_daemon;
    let out = s.baton(&["issue-to-pr", "acme/notes#1", "--detach"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run = s.runs()[0]["id"].as_str().unwrap().to_string();
    wait_until("the run waits for approval", || {
        s.show(&run)["status"] == "waiting"
    });

    let mut closed = s.payload(fixture("issues.closed.json"));
    closed["issue"]["number"] = 1.into();
    let (status, answer) = post(daemon, "issues", "closed-1", &closed);
    assert_eq!(status, 202, "{answer}");
    wait_until("the run is cancelled", || {
        s.show(&run)["status"] == "cancelled"
    });
    // Its redelivery is a duplicate.
    let (status, answer) = post(daemon, "issues", "closed-1", &closed);
    assert_eq!(
        (status, answer["status"].as_str()),
        (200, Some("duplicate"))
    );
}

#[test]
fn a_revise_comment_adds_a_commit_and_merging_removes_workspace_and_branch() {
    let s = Setup::new("[workflows.issue_to_pr]\ndelete_branch_on_merge = true\n");
    let daemon = s.serve();
    let out = s.baton(&["issue-to-pr", "acme/notes#1", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let record: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(record["status"], "completed", "{record}");
    let run = record["id"].as_str().unwrap().to_string();
    let pr = record["state"]["pr"]["number"].as_u64().unwrap();
    let branch = record["state"]["branch"].as_str().unwrap().to_string();
    let workspace = s.data.join("workspaces").join(&run);
    assert!(workspace.is_dir());
    let remote = s.forge.remote(&s.repo);
    let before = common::git(&remote, &["rev-parse", &branch]);

    // `/baton revise <instructions>` on the PR: the instructions carry the change.
    let mut comment = s.payload(fixture("issue_comment.created.on_pull_request.json"));
    comment["issue"]["number"] = pr.into();
    comment["comment"]["body"] =
        format!("/baton revise add the notes file\n\n```diff\n{REVISION_DIFF}```\n").into();
    let (status, answer) = post(&daemon, "issue_comment", "revise-1", &comment);
    assert_eq!(status, 202, "{answer}");
    let mut revision = Value::Null;
    wait_until("the revision completes", || {
        revision = s
            .runs()
            .into_iter()
            .find(|r| r["workflow_id"] == "revise")
            .unwrap_or(Value::Null);
        revision["status"] == "completed" || revision["status"] == "failed"
    });
    assert_eq!(revision["status"], "completed", "{revision}");
    let after = common::git(&remote, &["rev-parse", &branch]);
    assert_eq!(
        common::git(&remote, &["rev-parse", &format!("{after}^")]),
        before
    );
    assert_eq!(
        common::git(&remote, &["show", &format!("{branch}:NOTES.md")]),
        "revised"
    );
    let answers = block_on(s.forge.comments(&s.repo, pr)).unwrap();
    assert!(
        answers
            .iter()
            .any(|c| c.body.contains("Revision 1 of at most 3")),
        "{answers:?}"
    );

    // The PR is merged: the run's workspace and its branch go.
    let mut merged = s.payload(fixture("pull_request.closed.merged.json"));
    merged["number"] = pr.into();
    merged["pull_request"]["number"] = pr.into();
    merged["pull_request"]["head"]["ref"] = branch.clone().into();
    let (status, answer) = post(&daemon, "pull_request", "merged-1", &merged);
    assert_eq!(status, 202, "{answer}");
    wait_until("the workspace is removed", || !workspace.exists());
    wait_until("the branch is deleted", || {
        !s.remote_branches().contains(&branch.to_string())
    });
    assert_eq!(s.remote_branches(), ["main"]);
    assert_eq!(s.show(&run)["status"], "completed", "the run itself stays");
}

#[test]
fn a_review_requesting_changes_revises_and_closing_unmerged_lets_a_new_run_start_over() {
    let Some(examples) = common_forge::webhook_examples() else {
        panic!("unreachable: webhook_examples fails when the peer is missing");
    };
    let s = Setup::new("");
    let daemon = s.serve();
    let out = s.baton(&["issue-to-pr", "acme/notes#1", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let record: Value = serde_json::from_slice(&out.stdout).unwrap();
    let run = record["id"].as_str().unwrap().to_string();
    let pr = record["state"]["pr"]["number"].as_u64().unwrap();
    let branch = record["state"]["branch"].as_str().unwrap().to_string();

    // A reviewer requests changes; the review's body carries them.
    let review = baton::forge::NewReview {
        body: format!("Please add a notes file.\n\n```diff\n{REVISION_DIFF}```\n"),
        event: baton::forge::ReviewEvent::RequestChanges,
        commit_id: None,
        comments: Vec::new(),
    };
    block_on(s.forge.create_review(&s.repo, pr, &review)).unwrap();
    let mut submitted = s.payload(common_forge::example(
        &examples,
        "pull_request_review",
        |e| e["action"] == "submitted",
    ));
    submitted["review"]["state"] = "changes_requested".into();
    submitted["pull_request"]["number"] = pr.into();
    submitted["pull_request"]["head"]["ref"] = branch.clone().into();
    let (status, answer) = post(&daemon, "pull_request_review", "review-1", &submitted);
    assert_eq!(status, 202, "{answer}");
    let mut revision = Value::Null;
    wait_until("the revision completes", || {
        revision = s
            .runs()
            .into_iter()
            .find(|r| r["workflow_id"] == "revise")
            .unwrap_or(Value::Null);
        revision["status"] == "completed" || revision["status"] == "failed"
    });
    assert_eq!(revision["status"], "completed", "{revision}");
    assert_eq!(revision["job_id"], "github:review-1");
    let remote = s.forge.remote(&s.repo);
    assert_eq!(
        common::git(&remote, &["show", &format!("{branch}:NOTES.md")]),
        "revised"
    );

    // While the pull request is open, `/baton run` on the issue starts nothing and says why,
    // with a link; a new label event starts nothing either.
    let mut run_again = s.payload(common_forge::example(&examples, "issue_comment", |e| {
        e["action"] == "created"
    }));
    run_again["issue"]["number"] = 1.into();
    run_again["comment"]["body"] = "/baton run".into();
    run_again["comment"]["id"] = 7_001.into();
    let (status, answer) = post(&daemon, "issue_comment", "run-while-open", &run_again);
    assert_eq!(status, 202, "{answer}");
    wait_until("the reply names the open pull request", || {
        block_on(s.forge.comments(&s.repo, 1))
            .unwrap()
            .iter()
            .any(|c| {
                c.body
                    .contains(&format!("pull request #{pr} for this issue is still open"))
                    && c.body.contains("/baton run --force")
            })
    });
    assert_eq!(
        s.runs()
            .iter()
            .filter(|r| r["workflow_id"] == "issue_to_pr")
            .count(),
        1,
        "no second run while the pull request is open"
    );

    // Closed unmerged: the workspace goes, the branch stays (not merged), the delivery is
    // recorded with the run.
    let workspace = s.data.join("workspaces").join(&run);
    assert!(workspace.is_dir());
    let mut closed = s.payload(common_forge::example(&examples, "pull_request", |e| {
        e["action"] == "closed"
    }));
    closed["number"] = pr.into();
    closed["pull_request"]["number"] = pr.into();
    closed["pull_request"]["merged"] = false.into();
    // Closed on the forge, as GitHub does before it sends the event.
    block_on(s.forge.close_pull_request(&s.repo, pr)).unwrap();
    let (status, answer) = post(&daemon, "pull_request", "closed-1", &closed);
    assert_eq!(status, 202, "{answer}");
    wait_until("the workspace is removed", || !workspace.exists());
    assert!(s.remote_branches().contains(&branch.to_string()));

    // A later `/baton run` on the issue starts over: a new run, its own branch and PR.
    let mut again = s.payload(common_forge::example(&examples, "issue_comment", |e| {
        e["action"] == "created"
    }));
    again["issue"]["number"] = 1.into();
    again["comment"]["body"] = "/baton run".into();
    let (status, answer) = post(&daemon, "issue_comment", "run-again", &again);
    assert_eq!(status, 202, "{answer}");
    let mut second = Value::Null;
    wait_until("the second run completes", || {
        second = s
            .runs()
            .into_iter()
            .find(|r| r["job_id"] == "github:run-again")
            .unwrap_or(Value::Null);
        second["status"] == "completed" || second["status"] == "failed"
    });
    assert_eq!(second["status"], "completed", "{second}");
    let second = s.show(second["id"].as_str().unwrap());
    assert_ne!(second["state"]["pr"]["number"].as_u64(), Some(pr));
}
