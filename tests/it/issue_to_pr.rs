//! Issue → PR end to end, as a user runs it: the real `baton` binary, the local forge with real
//! git, a real Rust crate whose tests `cargo test` runs before and after the change.

use crate::common;
use crate::common_agent;
use crate::common_daemon::Daemon;
use crate::common_forge;
use crate::setup::{self, block_on, CALC_CARGO_TOML};

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use baton::forge::{Forge, Permission};
use serde_json::Value;

use crate::BATON as BIN;
pub(crate) const REPO: &str = "acme/calc";

pub(crate) const LIB_RS: &str = "/// The mean of `xs`, rounded toward zero.
pub fn mean(xs: &[i64]) -> Option<i64> {
    if xs.is_empty() {
        return None;
    }
    let sum: i64 = xs.iter().sum();
    Some(sum / (xs.len() as i64 + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty() {
        assert_eq!(mean(&[]), None);
    }

    #[test]
    fn one() {
        assert_eq!(mean(&[7]), Some(7));
    }

    #[test]
    fn several() {
        assert_eq!(mean(&[2, 4, 6]), Some(4));
    }
}
";
pub(crate) const BUG: &str = "    Some(sum / (xs.len() as i64 + 1))";
pub(crate) const FIX: &str = "    Some(sum / xs.len() as i64)";

/// The shared setting with `acme/calc` (alice may write: her diffs are applied at once), the
/// patch agent, and `cargo test` as the repository's one check.
pub(crate) struct Setup(setup::Setup);

impl std::ops::Deref for Setup {
    type Target = setup::Setup;
    fn deref(&self) -> &setup::Setup {
        &self.0
    }
}

impl Setup {
    /// `extra_config` is appended to the config file; `baton_toml` (if any) is committed as the
    /// repository's `.baton.toml` besides the test-only verification it always has.
    pub(crate) fn new(extra_config: &str, baton_toml: &str) -> Setup {
        Setup::build(extra_config, baton_toml, "")
    }

    /// Like [`Setup::new`], with `[verify] fail_fast = true` in the repository's `.baton.toml`.
    fn with_fail_fast(extra_config: &str, baton_toml: &str) -> Setup {
        Setup::build(extra_config, baton_toml, "fail_fast = true\n")
    }

    fn build(extra_config: &str, baton_toml: &str, verify: &str) -> Setup {
        // No .gitignore and no Cargo.lock: what `cargo test` leaves must stay out of the PR.
        // Tests only: clippy and cargo check would add seconds and prove nothing more here.
        let baton_toml = format!("[verify]\ndetect = false\n{verify}[[verify.checks]]\nkind = \"tests\"\ncommand = \"cargo test --color never\"\n{baton_toml}");
        let setup = setup::Setup::new(
            REPO,
            &[],
            &format!("[agent]\nbackend = \"patch\"\n{extra_config}"),
            &[
                ("Cargo.toml", CALC_CARGO_TOML),
                ("src/lib.rs", LIB_RS),
                (".baton.toml", &baton_toml),
            ],
        );
        block_on(
            setup
                .forge
                .set_permission(&setup.repo, "alice", Permission::Write),
        )
        .unwrap();
        Setup(setup)
    }

    /// Files an issue by `alice`; its body carries `diff` (if any) as a fenced diff block.
    pub(crate) fn issue(&self, title: &str, labels: &[&str], diff: Option<&str>) -> u64 {
        self.issue_as("alice", title, labels, diff)
    }

    /// [`Setup::issue`] filed by `author`.
    fn issue_as(&self, author: &str, title: &str, labels: &[&str], diff: Option<&str>) -> u64 {
        let mut body =
            "`mean` divides by the wrong count.\n\n- [ ] every test passes\n".to_string();
        if let Some(diff) = diff {
            body.push_str(&format!("\n```diff\n{diff}```\n"));
        }
        let labels: Vec<String> = labels.iter().map(|l| l.to_string()).collect();
        block_on(
            self.forge
                .create_issue_as(&self.repo, author, title, &body, &labels),
        )
        .unwrap()
        .number
    }

    /// `baton issue-to-pr REPO#N --json`: the exit code and the run record.
    fn issue_to_pr(&self, number: u64, extra: &[&str]) -> (i32, Value, String) {
        let target = format!("{REPO}#{number}");
        let mut args = vec!["issue-to-pr", target.as_str(), "--json"];
        args.extend_from_slice(extra);
        self.baton_json(&args, &[])
    }

    pub(crate) fn pr(&self, number: u64) -> Value {
        let path = self
            .data
            .join("forge")
            .join("acme/calc/pulls")
            .join(format!("{number}.json"));
        let file: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        file["pull"].clone()
    }
}

/// The fix as a diff made by git, so it applies.
fn diff_replacing(from: &str, to: &str) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("src")).unwrap();
    std::fs::write(dir.join("src/lib.rs"), LIB_RS).unwrap();
    common::git(dir, &["init", "--quiet"]);
    common::git(dir, &["add", "--all"]);
    common::git(dir, &["commit", "--quiet", "-m", "x"]);
    std::fs::write(dir.join("src/lib.rs"), LIB_RS.replace(from, to)).unwrap();
    common::git(dir, &["diff", "--no-color"]) + "\n"
}

pub(crate) fn step<'a>(record: &'a Value, id: &str) -> &'a Value {
    record["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .find(|s| s["id"] == id)
        .unwrap_or_else(|| panic!("no step {id} in {record}"))
}

#[test]
fn an_issue_becomes_a_tested_pull_request() {
    let s = Setup::new("", "");
    let n = s.issue(
        "mean divides by the wrong count",
        &["bug"],
        Some(&diff_replacing(BUG, FIX)),
    );
    let (code, record, stderr) = s.issue_to_pr(n, &[]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(record["status"], "completed", "{stderr}");
    assert_eq!(record["state"]["branch"], "fix/issue-1");
    // alice can write: her diff is applied at once, without waiting for anyone.
    let parse = &step(&record, "parse")["output"];
    assert_eq!(parse["trusted"], true, "{parse}");
    assert_eq!(parse["trust_reason"], "author @alice can write");
    assert_eq!(record["state"]["trusted"], true);
    assert_eq!(step(&record, "approve_outsider")["status"], "skipped");
    let pr_number = record["state"]["pr"]["number"]
        .as_u64()
        .expect("state.pr.number");
    assert!(record["state"]["pr"]["url"]
        .as_str()
        .unwrap()
        .contains("/pull/"));
    assert_eq!(
        step(&record, "baseline")["output"]["line"],
        "1 passed, 2 failed"
    );
    assert_eq!(
        step(&record, "verify")["output"]["line"],
        "3 passed, 0 failed"
    );

    let pr = s.pr(pr_number);
    assert_eq!(pr["state"], "open");
    assert_eq!(pr["draft"], false);
    assert_eq!(pr["head"], "fix/issue-1");
    assert_eq!(pr["base"], "main");
    let body = pr["body"].as_str().unwrap();
    for part in [
        "## Changes",
        "- Modified `src/lib.rs` (+1 −1)",
        "## Verification",
        "✅ Tests: 3 passed, 0 failed",
        "Before this change: 1 passed, 2 failed. After: 3 passed, 0 failed.",
        "Fixes #1",
    ] {
        assert!(body.contains(part), "PR body lacks {part:?}:\n{body}");
    }
    // The pushed branch carries the fix; nothing else was pushed.
    assert_eq!(s.remote_branches(), vec!["fix/issue-1", "main"]);
    let remote = s.forge.remote(&s.repo);
    let pushed = common::git(&remote, &["show", "fix/issue-1:src/lib.rs"]);
    assert!(pushed.contains(FIX.trim()), "{pushed}");
    let files = common::git(&remote, &["ls-tree", "-r", "--name-only", "fix/issue-1"]);
    assert_eq!(
        files, ".baton.toml\nCargo.toml\nsrc/lib.rs",
        "nothing the tests left behind"
    );
    assert!(
        !body.contains("Cargo.lock") && !body.contains("target"),
        "{body}"
    );
    // baton's verification is a check on the very commit it pushed, the PR's head.
    let head = common::git(&remote, &["rev-parse", "fix/issue-1"]);
    let checks = block_on(s.forge.checks_for(&s.repo, head.trim())).unwrap();
    assert_eq!(checks.len(), 1, "{checks:?}");
    let check = &checks[0];
    assert_eq!(check.name, "baton / verify");
    assert_eq!(check.head_sha, head.trim());
    assert_eq!(
        check.conclusion,
        Some(baton::forge::checks::Conclusion::Success)
    );
    assert_eq!(check.title, "3 passed, 0 failed");
    assert!(
        check.summary.contains("✅ Tests: 3 passed, 0 failed"),
        "{check:?}"
    );
    assert!(check.annotations.is_empty(), "{check:?}");

    let summaries: Vec<String> = s
        .comments(n)
        .into_iter()
        .filter(|c| c.contains(":summary -->"))
        .collect();
    assert_eq!(summaries.len(), 1, "one summary comment");
    let summary = &summaries[0];
    assert!(
        summary.contains(&format!("Opened PR #{pr_number}")),
        "{summary}"
    );
    assert!(
        summary.contains("Tests before the change: 1 passed, 2 failed"),
        "{summary}"
    );
    assert!(
        summary.contains("✅ Tests: 3 passed, 0 failed"),
        "{summary}"
    );
    assert!(summary.contains("wall time"), "{summary}");
    // And one progress comment: the checklist, edited in place to its final state.
    let progress: Vec<String> = s
        .comments(n)
        .into_iter()
        .filter(|c| c.contains(":progress -->"))
        .collect();
    assert_eq!(progress.len(), 1, "one progress comment");
    let progress = &progress[0];
    for part in [
        &format!("Workflow complete! Created PR #{pr_number}"),
        "- [x] Created branch `fix/issue-1`",
        "- [x] Before the change: 1 passed, 2 failed",
        "- [x] Running tests... 3 passed, 0 failed",
        &format!("- [x] Created PR #{pr_number}"),
    ] {
        assert!(
            progress.contains(part),
            "progress comment lacks {part:?}:\n{progress}"
        );
    }
    assert_eq!(
        s.comments(n).len(),
        2,
        "two comments per run, never a stream"
    );
    // No `[server] public_url`: no link to a run page anywhere.
    for text in s.comments(n).iter().chain([&body.to_string()]) {
        assert!(!text.contains("/runs/run_"), "{text}");
    }

    // A hard rollback closes the PR and deletes the remote and local branch.
    let run = record["id"].as_str().unwrap();
    let out = s.baton(&["rollback", run, "--hard"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(s.pr(pr_number)["state"], "closed");
    assert_eq!(s.remote_branches(), vec!["main"]);
    let clone = s.data.join("workspaces").join(run).join("repo");
    let local = common::git(
        &clone,
        &["for-each-ref", "--format=%(refname:short)", "refs/heads/"],
    );
    assert!(!local.contains("fix/issue-1"), "local branch left: {local}");
}

#[test]
fn bad_input_is_exit_2_and_starts_nothing() {
    let s = Setup::new("", "");
    let n = s.issue("a bug", &["bug"], Some(&diff_replacing(BUG, FIX)));
    for (target, says) in [
        ("acme/nothing#1", "acme/nothing"),
        ("acme/calc#99", "acme/calc#99"),
        ("acme/calc", "OWNER/NAME#N"),
        ("acme/calc#zero", "OWNER/NAME#N"),
    ] {
        let out = s.baton(&["issue-to-pr", target]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{target}: {stderr}");
        assert!(stderr.contains(says), "{target}: {stderr}");
    }
    // A closed issue.
    block_on(s.forge.set_issue_state(&s.repo, n, "closed")).unwrap();
    let out = s.baton(&["issue-to-pr", &format!("{REPO}#{n}")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("closed"), "{stderr}");
    let runs = s.baton(&["runs", "--json"]);
    let runs: Value = serde_json::from_slice(&runs.stdout).unwrap();
    assert_eq!(runs.as_array().map(Vec::len), Some(0), "no run was started");
}

#[test]
fn an_issue_without_a_diff_fails_clearly_and_pushes_nothing() {
    let s = Setup::new("", "");
    let n = s.issue("make it faster", &[], None);
    let (code, record, stderr) = s.issue_to_pr(n, &[]);
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(record["status"], "failed");
    let error = record["error_text"].as_str().unwrap();
    assert!(error.contains("diff"), "{error}");
    assert_eq!(s.remote_branches(), vec!["main"], "nothing pushed");
    // The failure is reported on the issue, in the run's one progress comment.
    let comments = s.comments(n);
    assert_eq!(comments.len(), 1, "{comments:#?}");
    assert!(comments[0].contains(":progress -->"));
    assert!(comments[0].contains("failed"), "{}", comments[0]);
    assert!(comments[0].contains("diff"), "{}", comments[0]);
}

#[test]
fn an_outsiders_diff_waits_for_someone_with_write_access_and_is_applied_once_approved() {
    let s = Setup::new("", "");
    let n = s.issue_as(
        "mallory",
        "mean divides by the wrong count",
        &["bug"],
        Some(&diff_replacing(BUG, FIX)),
    );
    let (code, parked, stderr) = s.issue_to_pr(n, &[]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(parked["status"], "waiting", "{stderr}");
    assert_eq!(parked["waiting_for"]["kind"], "approval");
    assert_eq!(parked["waiting_for"]["step"], "approve_outsider");
    let run = parked["id"].as_str().unwrap();

    // The record says why it waits, and who may approve.
    let parse = &step(&parked, "parse")["output"];
    assert_eq!(parse["author"], "mallory");
    assert_eq!(parse["author_can_write"], false);
    assert_eq!(parse["trusted"], false);
    assert_eq!(parse["trust_reason"], "author @mallory has no write access");
    assert_eq!(parse["needs_approval"], true);
    assert_eq!(
        parse["approval"]["who"],
        "someone with write access to acme/calc"
    );
    let summary = parse["summary"].as_str().unwrap();
    for part in [
        "@mallory",
        "no write access",
        &format!("`baton approve {run}`"),
    ] {
        assert!(summary.contains(part), "summary lacks {part:?}: {summary}");
    }
    assert_eq!(parked["state"]["trusted"], false);
    // The CLI's progress said so too.
    assert!(stderr.contains("no write access"), "{stderr}");

    // Nothing applied, nothing cloned, nothing pushed.
    assert!(
        !s.data.join("workspaces").join(run).join("repo").exists(),
        "cloned before the approval"
    );
    assert_eq!(s.remote_branches(), vec!["main"]);

    // The issue says so plainly, naming who may approve and how. A run started from the CLI
    // is not found by a `/baton approve` comment, so that is not offered.
    let comments = s.comments(n);
    let approval: Vec<&String> = comments
        .iter()
        .filter(|c| c.contains(":approval -->"))
        .collect();
    assert_eq!(approval.len(), 1, "{comments:#?}");
    for part in [
        "@mallory, who has no write access to acme/calc",
        "Someone with write access must approve",
        &format!("`baton approve {run}`"),
        &format!("`baton reject {run}`"),
    ] {
        assert!(
            approval[0].contains(part),
            "lacks {part:?}: {}",
            approval[0]
        );
    }
    assert!(!approval[0].contains("/baton approve"), "{}", approval[0]);
    let progress: Vec<&String> = comments
        .iter()
        .filter(|c| c.contains(":progress -->"))
        .collect();
    assert_eq!(progress.len(), 1, "{comments:#?}");
    assert!(
        progress[0].contains("Waiting for approval"),
        "{}",
        progress[0]
    );
    assert!(progress[0].contains("@mallory"), "{}", progress[0]);

    // Approved: the run goes on, the diff is applied and verified.
    let out = s.baton(&["approve", run, "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let done: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(done["status"], "completed", "{done}");
    assert!(
        step(&done, "approve_outsider")["output"]["data"]["approved_by"].is_string(),
        "{done}"
    );
    assert_eq!(
        step(&done, "verify")["output"]["line"],
        "3 passed, 0 failed"
    );
    let remote = s.forge.remote(&s.repo);
    let pushed = common::git(&remote, &["show", "fix/issue-1:src/lib.rs"]);
    assert!(pushed.contains(FIX.trim()), "{pushed}");
}

#[test]
fn with_refuse_an_outsiders_diff_is_not_applied_and_the_issue_says_why() {
    let s = Setup::new("[sandbox]\noutsider_patches = \"refuse\"\n", "");
    let n = s.issue_as(
        "mallory",
        "a bug",
        &["bug"],
        Some(&diff_replacing(BUG, FIX)),
    );
    let (code, record, stderr) = s.issue_to_pr(n, &[]);
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(record["status"], "failed");
    let error = record["error_text"].as_str().unwrap();
    for part in ["@mallory", "no write access", "does not apply it", "refuse"] {
        assert!(error.contains(part), "error lacks {part:?}: {error}");
    }
    assert_eq!(step(&record, "parse")["output"]["trusted"], false);
    let run = record["id"].as_str().unwrap();
    assert!(!s.data.join("workspaces").join(run).join("repo").exists());
    assert_eq!(s.remote_branches(), vec!["main"], "nothing pushed");
    let comments = s.comments(n);
    let approval = comments
        .iter()
        .find(|c| c.contains(":approval -->"))
        .unwrap_or_else(|| panic!("no comment says why: {comments:#?}"));
    assert!(
        approval
            .contains("@mallory, who has no write access to acme/calc: baton does not apply it"),
        "{approval}"
    );
    let progress = comments
        .iter()
        .find(|c| c.contains(":progress -->"))
        .unwrap();
    assert!(progress.contains("does not apply it"), "{progress}");
}

#[test]
fn one_issue_has_one_run_in_flight_and_one_open_pr_and_force_revises_it() {
    let s = Setup::new("[workflows.issue_to_pr]\napprove_plan = true\n", "");
    let n = s.issue("a bug", &["bug"], Some(&diff_replacing(BUG, FIX)));
    let (code, first, stderr) = s.issue_to_pr(n, &[]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(first["status"], "waiting");
    assert_eq!(first["waiting_for"]["step"], "approve_plan");
    assert_eq!(first["state"]["branch"], "fix/issue-1");
    let first_id = first["id"].as_str().unwrap();

    // In flight: refused, naming the run, with --force too.
    for force in [&[][..], &["--force"][..]] {
        let (code, _, stderr) = s.issue_to_pr(n, force);
        assert_eq!(code, 2, "{force:?}: {stderr}");
        assert!(
            stderr.contains(first_id) && stderr.contains("baton cancel"),
            "names the run in flight and how to start again: {stderr}"
        );
    }

    // Approving the first one finishes it with a pull request.
    let out = s.baton(&["approve", first_id, "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let done: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(done["status"], "completed", "{done}");
    let pr = done["state"]["pr"]["number"].as_u64().unwrap();

    // Its pull request is open: a new start is refused, naming it and `baton revise`.
    let (code, _, stderr) = s.issue_to_pr(n, &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains(&format!("#{pr}")) && stderr.contains("baton revise"),
        "{stderr}"
    );
    // --force revises that pull request, with the issue as the instructions.
    let (_, revision, stderr) = s.issue_to_pr(n, &["--force"]);
    assert_eq!(revision["workflow_id"], "revise", "{stderr}");
    assert_eq!(revision["input"]["pr"], pr, "{revision}");
    assert!(
        revision["input"]["instructions"]
            .as_str()
            .unwrap()
            .starts_with(&format!("Work on issue #{n} (a bug) again")),
        "{revision}"
    );
    // A start that skips the CLI's check (`baton run`, as the API and chat do) ends at parse,
    // naming the pull request.
    let out = s.baton(&[
        "run",
        "issue_to_pr",
        "-i",
        &format!("repo={REPO}"),
        "-i",
        &format!("issue={n}"),
        "--json",
    ]);
    let refused: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{refused} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(refused["status"], "failed", "{refused}");
    assert!(
        refused["error_text"]
            .as_str()
            .unwrap_or_default()
            .contains(&format!("open pull request #{pr}")),
        "{refused}"
    );
    // Still one pull request, and one summary on the issue (the run that opened it).
    let out = s.baton(&["runs", "--json"]);
    let runs: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let opened: Vec<&Value> = runs
        .iter()
        .filter(|r| r["workflow_id"] == "issue_to_pr" && r["status"] == "completed")
        .collect();
    assert_eq!(opened.len(), 1, "{runs:#?}");
    let open_prs = block_on(
        s.forge
            .pull_requests(&s.repo, baton::forge::StateFilter::Open),
    )
    .unwrap()
    .len();
    assert_eq!(open_prs, 1);
    let summaries = s
        .comments(n)
        .into_iter()
        .filter(|c| c.contains(":summary -->"))
        .count();
    assert_eq!(summaries, 1);
}

#[test]
fn failing_tests_open_a_draft_pr_that_says_so() {
    // With `[server] public_url`, the PR and both comments link to the run's page; with a
    // spending cap, the summary reports the spend against it.
    let s = Setup::new(
        "[server]\npublic_url = \"https://baton.example.com/\"\n[limits]\ndaily_cost_usd = 5.0\n",
        "",
    );
    // A "fix" that fixes nothing.
    let n = s.issue(
        "mean is wrong",
        &["bug"],
        Some(&diff_replacing(
            BUG,
            "    Some(sum / (xs.len() as i64 + 2))",
        )),
    );
    // Completed with a draft PR, and a failure all the same: exit 1, outcome unverified.
    let (code, record, stderr) = s.issue_to_pr(n, &[]);
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(record["status"], "completed");
    assert_eq!(record["state"]["outcome"], "unverified", "{record}");
    let pr_number = record["state"]["pr"]["number"].as_u64().unwrap();
    assert_eq!(
        record["state"]["result"],
        format!("Draft PR #{pr_number} opened: tests failing")
    );
    assert!(
        stderr.contains(&format!(
            "completed unverified: Draft PR #{pr_number} opened: tests failing"
        )),
        "{stderr}"
    );
    let pr = s.pr(pr_number);
    assert_eq!(pr["draft"], true);
    assert!(
        pr["title"].as_str().unwrap().starts_with("[failing]"),
        "{pr}"
    );
    let body = pr["body"].as_str().unwrap();
    assert!(body.contains("❌ Tests: 1 passed, 2 failed"), "{body}");
    assert!(
        body.contains("tests::one"),
        "names the failing tests: {body}"
    );
    assert!(body.contains("draft for a person"), "{body}");
    let link = format!(
        "https://baton.example.com/runs/{}",
        record["id"].as_str().unwrap()
    );
    assert!(body.contains(&link), "the PR lacks {link}:\n{body}");
    let comments = s.comments(n);
    for marker in [":progress -->", ":summary -->"] {
        let comment = comments.iter().find(|c| c.contains(marker)).unwrap();
        assert!(comment.contains(&link), "{marker} lacks {link}:\n{comment}");
    }
    let summary = comments
        .iter()
        .find(|c| c.contains(":summary -->"))
        .unwrap();
    assert!(
        summary.contains("Spending: $0.00 of $5.00 today on "),
        "{summary}"
    );
    // The patch backend is no model: the summary says how to get suggested fixes.
    assert!(
        summary.contains("No model is configured to suggest fixes")
            && summary.contains("[agent] backend"),
        "{summary}"
    );
    // The progress comment reads as a failure: no "Workflow complete!", no ticked check that
    // failed, the spec's error update on the verification.
    let progress = comments
        .iter()
        .find(|c| c.contains(":progress -->"))
        .unwrap();
    assert!(
        progress.starts_with(&format!(
            "❌ **Issue to PR**: Draft PR #{pr_number} opened: tests failing"
        )),
        "{progress}"
    );
    assert!(!progress.contains("Workflow complete"), "{progress}");
    assert!(
        progress.contains("- [ ] ❌ Test suite failed: 2 tests failing"),
        "{progress}"
    );
    assert!(!progress.contains("[x] Running tests"), "{progress}");

    // The check on the draft's head fails, links to the run, and puts each failing test's
    // panic beside its line of `src/lib.rs`.
    let head = common::git(&s.forge.remote(&s.repo), &["rev-parse", "fix/issue-1"]);
    let checks = block_on(s.forge.checks_for(&s.repo, head.trim())).unwrap();
    let check = checks
        .iter()
        .find(|c| c.name == "baton / verify")
        .expect("baton's check");
    assert_eq!(
        check.conclusion,
        Some(baton::forge::checks::Conclusion::Failure)
    );
    assert_eq!(check.details_url.as_deref(), Some(link.as_str()));
    assert!(check.title.contains("2 tests failing"), "{check:?}");
    let panics: Vec<_> = check
        .annotations
        .iter()
        .filter(|a| a.path == "src/lib.rs" && a.message.contains("panicked"))
        .collect();
    assert_eq!(panics.len(), 2, "{:#?}", check.annotations);
}

#[test]
fn the_repositorys_fail_fast_is_honoured() {
    // Tests fail, and with fail_fast the check after them is not run.
    let s = Setup::with_fail_fast(
        "",
        // Appended to the fixture's `[verify]` (tests: `cargo test`).
        "[[verify.checks]]\nkind = \"custom\"\ncommand = \"true\"\n",
    );
    let n = s.issue(
        "mean is wrong",
        &["bug"],
        Some(&diff_replacing(
            BUG,
            "    Some(sum / (xs.len() as i64 + 2))",
        )),
    );
    let (code, record, stderr) = s.issue_to_pr(n, &[]);
    assert_eq!(code, 1, "{stderr}");
    let checks = step(&record, "verify")["output"]["checks"].clone();
    assert!(checks.is_array(), "{stderr}\n{record:#}");
    let statuses: Vec<(&str, &str)> = checks
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["kind"].as_str().unwrap(), c["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        statuses,
        [("tests", "failed"), ("custom", "skipped")],
        "{checks:#}"
    );
}

#[test]
fn failing_tests_can_wait_for_a_person_per_repository() {
    let s = Setup::new("", "[issue_to_pr]\non_tests_failed = \"wait\"\n");
    let n = s.issue(
        "mean is wrong",
        &["bug"],
        Some(&diff_replacing(
            BUG,
            "    Some(sum / (xs.len() as i64 + 2))",
        )),
    );
    let (code, record, stderr) = s.issue_to_pr(n, &[]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(record["status"], "waiting");
    assert_eq!(record["waiting_for"]["kind"], "intervention");
    assert_eq!(record["waiting_for"]["step"], "verify");
    // The CLI offers what the engine accepts at an intervention, never `approve`; and the
    // patch backend ran no fix round, so none is claimed.
    assert!(
        stderr.contains("baton retry")
            && stderr.contains("baton skip")
            && !stderr.contains("baton approve"),
        "{stderr}"
    );
    assert!(!stderr.contains("fix round"), "{stderr}");
    assert!(
        s.remote_branches() == vec!["main"],
        "nothing pushed while waiting"
    );
    // Skip: the person takes it from here as a draft.
    // It completes, unverified (the tests still fail): exit 1, and the headline says so.
    let run = record["id"].as_str().unwrap();
    let out = s.baton(&["skip", run, "--json"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let done: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["state"]["outcome"], "unverified", "{done}");
    let pr_number = done["state"]["pr"]["number"].as_u64().unwrap();
    assert_eq!(
        done["state"]["result"],
        format!("Draft PR #{pr_number} opened: tests failing")
    );
    let pr = s.pr(pr_number);
    assert_eq!(pr["draft"], true);
    assert!(pr["body"]
        .as_str()
        .unwrap()
        .contains("skipped verification"));
}

#[test]
fn the_fix_loop_runs_the_agent_again_with_the_failures() {
    // A coding command that gets it wrong first and right when told what failed.
    let s = Setup::new("", "");
    // It runs in the sandbox, which holds only the clone: what it writes comes with it, and
    // the round shows in the file it left last time.
    let script = s.root.join("agent.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nif grep -q 'as i64 + 2' src/lib.rs; then\ncat > src/lib.rs <<'EOF'\n{right}EOF\n\
             else\ncat > src/lib.rs <<'EOF'\n{wrong}EOF\nfi\necho done\n",
            wrong = LIB_RS.replace(BUG, "    Some(sum / (xs.len() as i64 + 2))"),
            right = LIB_RS.replace(BUG, FIX),
        ),
    )
    .unwrap();
    let config = std::fs::read_to_string(&s.config).unwrap().replace(
        "backend = \"patch\"",
        &format!(
            "backend = \"command\"\ncommand = [\"sh\", \"{}\"]\nfix_rounds = 2",
            script.display()
        ),
    );
    std::fs::write(&s.config, config).unwrap();
    let n = s.issue("mean is wrong", &["bug"], None);
    let (code, record, stderr) = s.issue_to_pr(n, &[]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(record["status"], "completed", "{stderr}");
    // One run, one fix round.
    assert_eq!(step(&record, "implement")["status"], "completed");
    assert_eq!(step(&record, "fix")["status"], "completed");
    assert_eq!(
        step(&record, "verify")["output"]["line"],
        "3 passed, 0 failed"
    );
    let pr = s.pr(record["state"]["pr"]["number"].as_u64().unwrap());
    assert_eq!(pr["draft"], false);
}

#[test]
fn a_base_branch_that_moved_into_a_conflict_waits_with_a_rebase_option() {
    let s = Setup::new("[workflows.issue_to_pr]\napprove_plan = true\n", "");
    let n = s.issue("a bug", &["bug"], Some(&diff_replacing(BUG, FIX)));
    let (code, parked, stderr) = s.issue_to_pr(n, &[]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(parked["waiting_for"]["step"], "approve_plan");
    // Meanwhile someone changes the same line on main.
    let other = s.root.join("other");
    let remote = s.forge.remote(&s.repo).display().to_string();
    common::git(&s.root, &["clone", "--quiet", &remote, "other"]);
    let lib = std::fs::read_to_string(other.join("src/lib.rs")).unwrap();
    std::fs::write(
        other.join("src/lib.rs"),
        lib.replace(BUG, "    Some(sum / (xs.len() as i64))"),
    )
    .unwrap();
    common::git(&other, &["commit", "--quiet", "-am", "their fix"]);
    common::git(&other, &["push", "--quiet", "origin", "main"]);

    let run = parked["id"].as_str().unwrap();
    let out = s.baton(&["approve", run, "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let waiting: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(waiting["status"], "waiting", "{waiting}");
    assert_eq!(waiting["waiting_for"]["name"], "rebase");
    let sync = &step(&waiting, "sync")["output"];
    assert_eq!(sync["conflicts"], serde_json::json!(["src/lib.rs"]));
    assert!(s.remote_branches() == vec!["main"], "nothing pushed");

    // Asked to rebase: it conflicts, and the run waits for a person with the conflict left in
    // the clone and the files named.
    let out = s.baton(&["signal", run, "rebase", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let paused: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(paused["status"], "waiting", "{paused}");
    assert_eq!(paused["waiting_for"]["kind"], "intervention");
    assert_eq!(paused["waiting_for"]["step"], "rebase");
    let error = step(&paused, "rebase")["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        error.contains("src/lib.rs") && error.contains("baton retry"),
        "{error}"
    );

    // The person resolves it in the clone and retries: the rebase goes on, the result is
    // verified again, and the PR goes out on top of the new base.
    let clone = s.data.join("workspaces").join(run).join("repo");
    let resolved = LIB_RS.replace(BUG, FIX);
    std::fs::write(clone.join("src/lib.rs"), &resolved).unwrap();
    common::git(&clone, &["add", "src/lib.rs"]);
    let out = s.baton(&["retry", run, "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let done: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(
        step(&done, "verify")["output"]["pass"],
        2,
        "verified again after the rebase"
    );
    let remote = s.forge.remote(&s.repo);
    common::git(
        &remote,
        &["merge-base", "--is-ancestor", "main", "fix/issue-1"],
    );
}

#[test]
fn auto_rebase_onto_a_moved_base_verifies_again_and_hard_rollback_undoes_it() {
    let s = Setup::new(
        "[workflows.issue_to_pr]\napprove_plan = true\n",
        "[issue_to_pr]\nauto_rebase = true\n",
    );
    let n = s.issue("a bug", &["bug"], Some(&diff_replacing(BUG, FIX)));
    let (_, parked, stderr) = s.issue_to_pr(n, &[]);
    assert_eq!(parked["waiting_for"]["step"], "approve_plan", "{stderr}");
    // Someone adds a file on main: no conflict.
    let other = s.root.join("other");
    let remote = s.forge.remote(&s.repo).display().to_string();
    common::git(&s.root, &["clone", "--quiet", &remote, "other"]);
    std::fs::write(other.join("NOTES.md"), "notes\n").unwrap();
    common::git(&other, &["add", "NOTES.md"]);
    common::git(&other, &["commit", "--quiet", "-m", "notes"]);
    common::git(&other, &["push", "--quiet", "origin", "main"]);

    let run = parked["id"].as_str().unwrap();
    let out = s.baton(&["approve", run, "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let done: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(
        step(&done, "verify")["output"]["pass"],
        2,
        "verified again after the rebase"
    );
    let bare = s.forge.remote(&s.repo);
    let files = common::git(&bare, &["ls-tree", "-r", "--name-only", "fix/issue-1"]);
    assert!(
        files.contains("NOTES.md"),
        "rebased onto the new main: {files}"
    );

    let out = s.baton(&["rollback", run, "--hard", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rolled: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        rolled["error_text"].is_null(),
        "rollback incomplete: {rolled}"
    );
    assert_eq!(s.remote_branches(), vec!["main"]);
    let clone = s.data.join("workspaces").join(run).join("repo");
    let local = common::git(
        &clone,
        &["for-each-ref", "--format=%(refname:short)", "refs/heads/"],
    );
    assert!(!local.contains("fix/issue-1"), "local branch left: {local}");
}

#[test]
fn the_demo_runs_offline_and_shows_before_and_after() {
    let tmp = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let out = Command::new(BIN)
        .arg("demo")
        .env("TMPDIR", tmp.path())
        .env_remove("BATON_DATA_DIR")
        .env_remove("BATON_CONFIG")
        .current_dir(tmp.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    for part in [
        "Tests before the change: 1 passed, 2 failed",
        "Tests after the change:  3 passed, 0 failed",
        "CI on the pull request:  CI passed on `",
        "`: ci\n",
        "Pull request #2",
        "branch fix/issue-1 → main",
        "✅ Tests: 3 passed, 0 failed",
        "Fixes #1",
        "Comment on issue #1",
    ] {
        assert!(
            stdout.contains(part),
            "demo output lacks {part:?}:\n{stdout}"
        );
    }
    assert!(stderr.contains("✓ Created PR #2"), "{stderr}");
    assert!(stderr.contains("run completed"), "{stderr}");
    // Without --keep it cleans up after itself.
    let left: Vec<PathBuf> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    eprintln!("demo took {:?}", started.elapsed());
}

pub(crate) fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The secret of the tests' signed webhooks.
pub(crate) const WEBHOOK_SECRET: &str = "the webhook secret of this test";

/// Posts a delivery signed with [`WEBHOOK_SECRET`]; the HTTP status.
fn deliver(daemon: &Daemon, event: &str, delivery: &str, payload: &Value) -> u16 {
    daemon.deliver(WEBHOOK_SECRET, event, delivery, payload).0
}

impl Setup {
    /// `baton issue-to-pr acme/calc#N --detach` (to the daemon serving this data dir): the
    /// run's id, from what it prints.
    pub(crate) fn detach(&self, n: u64) -> String {
        let out = self.baton(&["issue-to-pr", &format!("{REPO}#{n}"), "--detach"]);
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(out.status.success(), "{stderr}");
        stderr
            .split_whitespace()
            .find(|w| w.starts_with("run_"))
            .unwrap_or_else(|| panic!("no run id in {stderr}"))
            .trim_end_matches(['.', ',', ')'])
            .to_string()
    }

    pub(crate) fn serve(&self) -> Daemon {
        Daemon::start(&self.data, &self.config)
    }

    /// `baton serve`, taking webhooks signed with [`WEBHOOK_SECRET`].
    pub(crate) fn serve_webhooks(&self) -> Daemon {
        Daemon::start_with(
            &self.data,
            &self.config,
            &[("BATON_GITHUB_WEBHOOK_SECRET", WEBHOOK_SECRET)],
        )
    }

    pub(crate) fn use_command_agent(&self, script: &str) {
        let path = self.root.join("agent.sh");
        std::fs::write(&path, script).unwrap();
        let config = std::fs::read_to_string(&self.config).unwrap().replace(
            "backend = \"patch\"",
            &format!(
                "backend = \"command\"\ncommand = [\"sh\", \"{}\"]",
                path.display()
            ),
        );
        std::fs::write(&self.config, config).unwrap();
    }
}

#[test]
fn kill_9_in_the_middle_of_implement_still_gives_one_pr_and_one_summary() {
    let s = Setup::new("", "");
    // The coding command writes the fix, then takes its time: the daemon dies meanwhile. It
    // runs in the sandbox, so the test sees it start by its `sleep`, whose length is its mark.
    let mark = format!("2.{}", std::process::id());
    s.use_command_agent(&format!(
        "#!/bin/sh\ncat > src/lib.rs <<'EOF'\n{fixed}EOF\nsleep {mark}\necho done\n",
        fixed = LIB_RS.replace(BUG, FIX),
    ));
    let started = || common::running(&["sleep", &mark]);
    let n = s.issue("mean is wrong", &["bug"], None);
    let mut daemon = s.serve();
    let run = s.detach(n);
    wait_until("the agent to start", Duration::from_secs(60), started);
    assert_eq!(s.show(&run)["status"], "running");
    daemon.kill_9();

    let _daemon = s.serve();
    wait_until(
        "the resumed run to finish",
        Duration::from_secs(120),
        || {
            let status = s.show(&run)["status"].as_str().unwrap_or("").to_string();
            status == "completed" || status == "failed"
        },
    );
    let record = s.show(&run);
    assert_eq!(record["status"], "completed", "{record}");
    let pulls = std::fs::read_dir(s.data.join("forge/acme/calc/pulls"))
        .unwrap()
        .count();
    assert_eq!(pulls, 1, "exactly one pull request");
    let summaries = s
        .comments(n)
        .iter()
        .filter(|c| c.contains(":summary -->"))
        .count();
    assert_eq!(summaries, 1, "exactly one summary comment");
    let progress = s
        .comments(n)
        .iter()
        .filter(|c| c.contains(":progress -->"))
        .count();
    assert_eq!(progress, 1, "exactly one progress comment");
    assert_eq!(s.remote_branches(), vec!["fix/issue-1", "main"]);
}

#[test]
fn the_api_starts_and_awaits_a_run_in_one_request() {
    let s = Setup::new("", "");
    let n = s.issue("a bug", &["bug"], Some(&diff_replacing(BUG, FIX)));
    let n2 = s.issue("another", &["bug"], Some(&diff_replacing(BUG, FIX)));
    let daemon = s.serve();
    block_on(api_start_and_await(&daemon, n, n2));
}

async fn api_start_and_await(daemon: &Daemon, n: u64, n2: u64) {
    let http = reqwest::Client::new();
    let start = |issue: u64, wait: &str| {
        http.post(format!("{}/api/runs?wait={wait}", daemon.base))
            .bearer_auth(&daemon.token)
            .json(&serde_json::json!({
                "workflow": "issue_to_pr",
                "input": { "repo": REPO, "issue": issue },
            }))
            .send()
    };
    let done = start(n, "120").await.unwrap();
    assert_eq!(done.status().as_u16(), 200);
    let record: Value = done.json().await.unwrap();
    assert_eq!(record["status"], "completed", "{record}");
    assert!(
        record["state"]["pr"]["number"].as_u64().is_some(),
        "{record}"
    );
    // The answer carries the run's change journal (read without holding a runtime worker,
    // then awaited durable): the branch, the commit and the push it made.
    let kinds: Vec<&str> = record["changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["change_type"].as_str())
        .collect();
    for kind in ["branch_create", "commit"] {
        assert!(kinds.contains(&kind), "no `{kind}` change in {kinds:?}");
    }

    // The time runs out first: 202 with the record as it stands.
    let early = start(n2, "0").await.unwrap();
    assert_eq!(early.status().as_u16(), 202);
    let record: Value = early.json().await.unwrap();
    assert!(record["id"].as_str().unwrap().starts_with("run_"));
    assert_ne!(record["status"], "completed");

    let bad = start(n2, "soon").await.unwrap();
    assert_eq!(bad.status().as_u16(), 400);
    let error: Value = bad.json().await.unwrap();
    assert!(
        error["error"].as_str().unwrap().contains("wait=soon"),
        "{error}"
    );
}

#[test]
fn a_labeled_issue_delivered_by_github_becomes_a_pull_request() {
    // Missing examples fail the test (under CI always); it returns only when skipping is allowed.
    let Some(examples) = common_forge::webhook_examples() else {
        return;
    };
    let s = Setup::new("", "");
    let n = s.issue(
        "mean is wrong",
        &["bug", "baton"],
        Some(&diff_replacing(BUG, FIX)),
    );
    // GitHub's real `issues.labeled` example, pointed at this repository and issue.
    let mut payload = common_forge::example(&examples, "issues", |e| e["action"] == "labeled");
    payload["label"]["name"] = "baton".into();
    payload["repository"]["full_name"] = REPO.into();
    payload["repository"]["name"] = "calc".into();
    payload["repository"]["owner"]["login"] = "acme".into();
    payload["issue"]["number"] = n.into();
    payload["sender"]["login"] = "alice".into();
    payload["sender"]["type"] = "User".into();
    let daemon = s.serve_webhooks();
    let status = deliver(
        &daemon,
        "issues",
        "0b989ba4-242f-11e5-81e1-c7b6966d2516",
        &payload,
    );
    assert_eq!(status, 202);
    let mut run = Value::Null;
    wait_until("the run to finish", Duration::from_secs(120), || {
        let out = s.baton(&["runs", "--json"]);
        let runs: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        run = runs.get(0).cloned().unwrap_or(Value::Null);
        matches!(run["status"].as_str(), Some("completed" | "failed"))
    });
    assert_eq!(run["workflow_id"], "issue_to_pr");
    let record = s.show(run["id"].as_str().unwrap());
    assert_eq!(record["status"], "completed", "{record}");
    assert_eq!(record["state"]["branch"], format!("fix/issue-{n}"));
    let pr = s.pr(record["state"]["pr"]["number"].as_u64().unwrap());
    assert!(pr["body"]
        .as_str()
        .unwrap()
        .contains(&format!("Fixes #{n}")));
}

#[test]
fn only_a_slash_approve_from_someone_with_write_access_lets_an_outsiders_diff_through() {
    let Some(examples) = common_forge::webhook_examples() else {
        return;
    };
    let s = Setup::new(
        "[webhook]\ndeny_reply = \"only people with write access can.\"\n",
        "",
    );
    let n = s.issue_as(
        "mallory",
        "mean is wrong",
        &["bug", "baton"],
        Some(&diff_replacing(BUG, FIX)),
    );
    let point = |mut payload: Value, sender: &str| {
        payload["repository"]["full_name"] = REPO.into();
        payload["repository"]["name"] = "calc".into();
        payload["repository"]["owner"]["login"] = "acme".into();
        payload["issue"]["number"] = n.into();
        payload["sender"]["login"] = sender.into();
        payload["sender"]["type"] = "User".into();
        payload
    };
    // alice, who can write, labels mallory's issue.
    let mut labeled = common_forge::example(&examples, "issues", |e| e["action"] == "labeled");
    labeled["label"]["name"] = "baton".into();
    let daemon = s.serve_webhooks();
    assert_eq!(
        deliver(&daemon, "issues", "label-1", &point(labeled, "alice")),
        202
    );
    let mut run = String::new();
    wait_until("the run to wait", Duration::from_secs(60), || {
        let out = s.baton(&["runs", "--json"]);
        let runs: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        run = runs[0]["id"].as_str().unwrap_or_default().to_string();
        runs[0]["status"] == "waiting"
    });
    assert_eq!(s.show(&run)["waiting_for"]["step"], "approve_outsider");
    // A run a webhook started is steered by comments: the issue says so.
    let approval = s
        .comments(n)
        .into_iter()
        .find(|c| c.contains(":approval -->"))
        .expect("the issue says why the run waits");
    assert!(
        approval.contains("`/baton approve` in a comment"),
        "{approval}"
    );

    // Each person's comment is a comment of its own (its own id).
    let comment = |sender: &str| {
        let mut c = common_forge::example(&examples, "issue_comment", |e| e["action"] == "created");
        c["comment"]["body"] = "/baton approve".into();
        c["comment"]["id"] = (sender.len() as u64 + 9_000).into();
        point(c, sender)
    };
    // mallory cannot approve her own diff: she is told so, and the run still waits.
    assert_eq!(
        deliver(&daemon, "issue_comment", "approve-1", &comment("mallory")),
        202
    );
    wait_until("the reply to mallory", Duration::from_secs(30), || {
        s.comments(n)
            .iter()
            .any(|c| c.starts_with("@mallory only people with write access can."))
    });
    assert_eq!(s.show(&run)["status"], "waiting");
    assert_eq!(s.remote_branches(), vec!["main"], "nothing pushed");

    // alice can: the diff is applied, verified and opened as a PR.
    assert_eq!(
        deliver(&daemon, "issue_comment", "approve-2", &comment("alice")),
        202
    );
    wait_until("the run to finish", Duration::from_secs(120), || {
        matches!(
            s.show(&run)["status"].as_str(),
            Some("completed" | "failed")
        )
    });
    let record = s.show(&run);
    assert_eq!(record["status"], "completed", "{record}");
    assert_eq!(
        step(&record, "approve_outsider")["output"]["data"]["approved_by"],
        "alice (github)"
    );
    let pushed = common::git(
        &s.forge.remote(&s.repo),
        &["show", &format!("fix/issue-{n}:src/lib.rs")],
    );
    assert!(pushed.contains(FIX.trim()), "{pushed}");
}

#[test]
fn a_fix_round_that_fails_still_ends_in_a_draft_pr() {
    // The coding command gets it wrong, then fails outright when asked to fix it.
    let s = Setup::new("", "");
    s.use_command_agent(&format!(
        "#!/bin/sh\nif grep -q 'as i64 + 2' src/lib.rs; then echo broken >&2; exit 3; fi\n\
         cat > src/lib.rs <<'EOF'\n{wrong}EOF\necho done\n",
        wrong = LIB_RS.replace(BUG, "    Some(sum / (xs.len() as i64 + 2))"),
    ));
    let n = s.issue("mean is wrong", &["bug"], None);
    let (code, record, stderr) = s.issue_to_pr(n, &[]);
    assert_eq!(code, 1, "unverified: {stderr}");
    assert_eq!(record["status"], "completed", "{stderr}");
    assert_eq!(record["state"]["outcome"], "unverified");
    assert_eq!(step(&record, "fix")["status"], "failed");
    let pr = s.pr(record["state"]["pr"]["number"].as_u64().unwrap());
    assert_eq!(pr["draft"], true, "{pr}");
    assert!(pr["body"]
        .as_str()
        .unwrap()
        .contains("❌ Tests: 1 passed, 2 failed"));
}

#[test]
fn tests_that_failed_before_the_change_are_named_as_such() {
    let s = Setup::new("", "");
    // A test that fails whatever the change does.
    let clone = s.root.join("other");
    let remote = s.forge.remote(&s.repo).display().to_string();
    common::git(&s.root, &["clone", "--quiet", &remote, "other"]);
    let lib = std::fs::read_to_string(clone.join("src/lib.rs")).unwrap();
    let lib = lib.replace(
        "    #[test]\n    fn empty()",
        "    #[test]\n    fn flaky_clock() {\n        assert!(false, \"broken before\");\n    }\n\n    #[test]\n    fn empty()",
    );
    std::fs::write(clone.join("src/lib.rs"), &lib).unwrap();
    common::git(&clone, &["commit", "--quiet", "-am", "a broken test"]);
    common::git(&clone, &["push", "--quiet", "origin", "main"]);
    let fixed = lib.replace(BUG, FIX);
    std::fs::write(clone.join("src/lib.rs"), &fixed).unwrap();
    let diff = common::git(&clone, &["diff", "--no-color"]) + "\n";
    let n = s.issue("mean is wrong", &["bug"], Some(&diff));
    let (code, record, stderr) = s.issue_to_pr(n, &[]);
    assert_eq!(code, 1, "a test still fails, so unverified: {stderr}");
    assert_eq!(
        step(&record, "baseline")["output"]["line"],
        "1 passed, 3 failed"
    );
    assert_eq!(
        step(&record, "verify")["output"]["line"],
        "3 passed, 1 failed"
    );
    assert_eq!(step(&record, "verify")["output"]["preexisting"], true);
    // Whether such a test is the issue's or unrelated is not known: it still counts, and the
    // PR says it failed before too.
    let pr = s.pr(record["state"]["pr"]["number"].as_u64().unwrap());
    assert_eq!(pr["draft"], true, "{pr}");
    let body = pr["body"].as_str().unwrap();
    assert!(body.contains("also failed before this change"), "{body}");
    assert!(body.contains("tests::flaky_clock"), "{body}");
}

/// Commits `files` (path, content) to the repository's `main` on the forge.
fn commit_to_main(s: &Setup, files: &[(&str, &str)]) {
    let project = s.root.join("project");
    for (path, content) in files {
        std::fs::write(project.join(path), content).unwrap();
    }
    common::git(&project, &["add", "--all"]);
    common::git(&project, &["commit", "--quiet", "-m", "more files"]);
    let remote = s.forge.remote(&s.repo).display().to_string();
    common::git(&project, &["push", "--quiet", &remote, "main"]);
}

/// The plan comment the plan step posted on issue `n`, when there is one.
fn plan_comment(s: &Setup, n: u64) -> Option<String> {
    s.comments(n).into_iter().find(|c| c.contains(":plan -->"))
}

#[test]
fn without_a_model_the_plan_says_it_is_heuristic_and_names_no_lockfile() {
    let s = Setup::new("[workflows.issue_to_pr]\napprove_plan = true\n", "");
    // Lockfiles that share the issue's words: a word ranking would put them near the top.
    commit_to_main(
        &s,
        &[
            (
                "Cargo.lock",
                "# This file is automatically @generated by Cargo.\n[[package]]\nname = \"mean-count\"\n\
                 version = \"0.1.0\"\n# divides by the wrong count\n",
            ),
            (
                "package-lock.json",
                "{\"name\": \"mean\", \"description\": \"divides by the wrong count\"}\n",
            ),
        ],
    );
    let n = s.issue("mean divides by the wrong count", &["bug"], None);
    let (code, record, stderr) = s.issue_to_pr(n, &[]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(record["waiting_for"]["step"], "approve_plan", "{stderr}");
    let relevant = step(&record, "analyze")["output"]["relevant"].to_string();
    assert!(relevant.contains("src/lib.rs"), "{relevant}");
    assert!(
        !relevant.contains("Cargo.lock") && !relevant.contains("package-lock.json"),
        "{relevant}"
    );
    let plan = &step(&record, "plan")["output"];
    assert_eq!(plan["source"], "heuristic", "{plan}");
    let text = plan["text"].as_str().unwrap();
    assert!(
        text.starts_with("Heuristic plan (no model configured: backend `patch`)."),
        "{text}"
    );
    assert!(text.contains("Change: `src/lib.rs`"), "{text}");
    assert!(
        !text.contains(".lock") && !text.contains("package-lock"),
        "{text}"
    );
    assert!(text.contains("Must hold: every test passes"), "{text}");
    assert!(plan.get("usage").is_none(), "no model, no spending: {plan}");
    // What a person approves: in the run's state, on the issue, and on the terminal.
    assert_eq!(record["state"]["plan"], text);
    let run = record["id"].as_str().unwrap();
    let comment = plan_comment(&s, n).expect("the plan is posted for approval");
    assert!(comment.contains(text.trim_end()), "{comment}");
    assert!(
        comment.contains(&format!("`baton approve {run}`")),
        "{comment}"
    );
    assert!(stderr.contains(text.trim_end()), "{stderr}");
}

#[test]
fn with_a_model_the_plan_is_the_models_and_once_approved_the_implement_step_gets_it() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let plan = serde_json::json!({
        "approach": "Divide the sum by the number of items, not one more.",
        "files_to_touch": [{"path": "src/lib.rs", "why": "mean() divides by len + 1"}],
        "steps": ["divide by xs.len()"],
        "tests_to_add": ["run the existing tests: one and several must pass"],
        "risks": ["an empty slice must still give None"]
    })
    .to_string();
    let edit =
        serde_json::json!({"path": "src/lib.rs", "old_text": BUG, "new_text": FIX}).to_string();
    let server = rt.block_on(common_agent::ScriptServer::start(vec![
        // Planning.
        common_agent::Scripted::ok(common_agent::oa_calls(&[(
            "read_file",
            r#"{"path": "src/lib.rs"}"#,
        )])),
        common_agent::Scripted::ok(common_agent::oa_calls(&[("plan", &plan)])),
        // Implementing, after the approval.
        common_agent::Scripted::ok(common_agent::oa_calls(&[("edit_file", &edit)])),
        common_agent::Scripted::ok(common_agent::oa_calls(&[(
            "finish",
            r#"{"summary": "mean divides by the count"}"#,
        )])),
    ]));
    let s = Setup::new("[workflows.issue_to_pr]\napprove_plan = true\n", "");
    let config = std::fs::read_to_string(&s.config).unwrap().replace(
        "backend = \"patch\"",
        &format!(
            "backend = \"openai\"\nmodel = \"gpt-test\"\nbase_url = \"{}/v1\"\nmax_retries = 0",
            server.base
        ),
    );
    std::fs::write(&s.config, config).unwrap();
    let n = s.issue("mean divides by the wrong count", &["bug"], None);
    let (code, record, stderr) = s.issue_to_pr(n, &[]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(record["waiting_for"]["step"], "approve_plan", "{record}");

    // The plan is the model's, from reading the clone with the read-only tools.
    let requests = server.requests();
    assert_eq!(requests.len(), 2, "planning only, before the approval");
    let tools: Vec<&str> = requests[0].body["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(tools, vec!["plan", "list_dir", "read_file", "search"]);
    let output = &step(&record, "plan")["output"];
    assert_eq!(output["source"], "model", "{output}");
    assert_eq!(output["usage"]["turns"], 2);
    let text = output["text"].as_str().unwrap();
    for part in [
        "Plan by `gpt-test`, from reading the repository:",
        "Approach: Divide the sum by the number of items, not one more.",
        "- `src/lib.rs`: mean() divides by len + 1",
        "Tests to add: run the existing tests: one and several must pass",
        "Risks:\n- an empty slice must still give None",
        "Must hold: every test passes",
        "Verify with: tests (`cargo test --color never`)",
    ] {
        assert!(text.contains(part), "the plan lacks {part:?}:\n{text}");
    }
    assert!(!text.contains("Heuristic"), "{text}");
    assert_eq!(record["state"]["plan"], text);
    let comment = plan_comment(&s, n).expect("the plan is posted for approval");
    assert!(comment.contains(text.trim_end()), "{comment}");
    let progress = s
        .comments(n)
        .into_iter()
        .find(|c| c.contains(":progress -->"))
        .unwrap();
    assert!(
        progress.contains("Planned with `gpt-test`: change `src/lib.rs`"),
        "{progress}"
    );

    // Approved, the implement step's first request carries the plan.
    let run = record["id"].as_str().unwrap();
    let out = s.baton(&["approve", run, "--json"]);
    let done: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    assert_eq!(
        done["status"],
        "completed",
        "{done} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let requests = server.requests();
    assert_eq!(requests.len(), 4, "{}", server.left());
    let prompt = requests[2].body["messages"][1]["content"].as_str().unwrap();
    assert!(
        prompt.contains("a person approved it before you started"),
        "{prompt}"
    );
    assert!(prompt.contains(text.trim_end()), "{prompt}");
    assert_eq!(requests[2].body["tools"].as_array().unwrap().len(), 9);
    // The model wrote at once: the approved plan is its plan. Planning counts in the cost.
    let implement = &step(&done, "implement")["output"];
    assert_eq!(implement["usage"]["turns"], 2);
    assert_eq!(implement["total_usage"]["turns"], 4);
    assert_eq!(
        implement["plan"]["approach"],
        "Divide the sum by the number of items, not one more."
    );
    assert_eq!(
        step(&done, "verify")["output"]["line"],
        "3 passed, 0 failed"
    );
    let summary = s
        .comments(n)
        .into_iter()
        .find(|c| c.contains(":summary -->"))
        .unwrap();
    assert!(summary.contains("4 turn(s)"), "{summary}");
}
