//! The built-in PR Review, Bug Triage and Release Notes end to end, as a user runs them: the real
//! `baton` binary, the local forge with real git, a real Rust crate whose tests `cargo test`
//! runs on the pull request's head.

use crate::common;
use crate::common_agent;
use crate::require;
use crate::setup::{self, block_on, CALC_CARGO_TOML};

use std::path::PathBuf;

use baton::forge::{Forge, NewPullRequest, Repo};
use serde_json::Value;

const REPO: &str = "acme/calc";

const LIB_RS: &str = "/// The mean of `xs`, rounded toward zero.
pub fn mean(xs: &[i64]) -> Option<i64> {
    // TODO: overflow
    if xs.is_empty() {
        return None;
    }
    let sum: i64 = xs.iter().sum();
    Some(sum / xs.len() as i64)
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
const GOOD: &str = "    Some(sum / xs.len() as i64)";
const BUG: &str = "    Some(sum / (xs.len() as i64 + 1))";

/// The shared setting with `acme/calc`. Its `.baton.toml` runs `cargo test` as the critical
/// check and a non-critical "lint" that reports every `TODO` as `path:line:` and fails when there
/// is one, so findings are real output of a real command.
struct Setup(setup::Setup);

impl std::ops::Deref for Setup {
    type Target = setup::Setup;
    fn deref(&self) -> &setup::Setup {
        &self.0
    }
}

impl Setup {
    /// `extra_config` is appended to the config file.
    fn new(extra_config: &str) -> Setup {
        Setup(setup::Setup::new(
            REPO,
            &[],
            extra_config,
            &[
                ("Cargo.toml", CALC_CARGO_TOML),
                (
                    "Cargo.lock",
                    "version = 4\n\n[[package]]\nname = \"calc\"\nversion = \"0.1.0\"\n",
                ),
                (".gitignore", "/target\n"),
                ("src/lib.rs", LIB_RS),
                (
                    ".baton.toml",
                    "[verify]\ndetect = false\n\
                     [[verify.checks]]\nkind = \"tests\"\ncommand = \"cargo test --color never\"\n\
                     [[verify.checks]]\nkind = \"lint\"\ncritical = false\ncommand = \"! grep -Hn TODO src/lib.rs\"\n",
                ),
            ],
        ))
    }

    /// Commits `lib_rs` on `branch` (created from main when new) and pushes it.
    fn push_branch(&self, branch: &str, lib_rs: &str, message: &str) {
        let exists = !common::git(&self.project, &["branch", "--list", branch]).is_empty();
        if exists {
            common::git(&self.project, &["checkout", "--quiet", branch]);
        } else {
            common::git(
                &self.project,
                &["checkout", "--quiet", "-b", branch, "main"],
            );
        }
        std::fs::write(self.project.join("src/lib.rs"), lib_rs).unwrap();
        common::git(&self.project, &["commit", "--quiet", "-am", message]);
        common::git(&self.project, &["push", "--quiet", &self.remote, branch]);
        common::git(&self.project, &["checkout", "--quiet", "main"]);
    }

    /// Opens a PR of `branch` into main.
    fn open_pr(&self, branch: &str, title: &str) -> u64 {
        let new = NewPullRequest {
            title: title.into(),
            head: branch.into(),
            base: "main".into(),
            body: "please review".into(),
            draft: false,
        };
        block_on(self.forge.create_pull_request(&self.repo, &new))
            .unwrap()
            .number
    }

    /// `baton ARGS --json`: the exit code, the run record and stderr.
    fn run(&self, args: &[&str]) -> (i32, Value, String) {
        self.run_with(args, &[])
    }

    /// [`Setup::run`] with `env` set.
    fn run_with(&self, args: &[&str], env: &[(&str, &str)]) -> (i32, Value, String) {
        let mut args = args.to_vec();
        args.push("--json");
        self.baton_json(&args, env)
    }

    fn pr_review(&self, number: u64) -> (i32, Value, String) {
        self.run(&["pr-review", &format!("{REPO}#{number}")])
    }

    /// The PR's stored file: the pull request and its reviews with their line comments.
    fn pull_file(&self, number: u64) -> Value {
        let path = self
            .data
            .join("forge")
            .join("acme/calc/pulls")
            .join(format!("{number}.json"));
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
    }
}

impl Setup {
    /// Files an issue by `alice`.
    fn bug(&self, title: &str, body: &str, labels: &[&str]) -> u64 {
        let labels: Vec<String> = labels.iter().map(|l| l.to_string()).collect();
        block_on(
            self.forge
                .create_issue_as(&self.repo, "alice", title, body, &labels),
        )
        .unwrap()
        .number
    }

    /// Gives `user` write access (a collaborator's snippets run with their output quoted).
    fn collaborator(&self, user: &str) {
        block_on(
            self.forge
                .set_permission(&self.repo, user, baton::forge::Permission::Write),
        )
        .unwrap();
    }

    fn triage(&self, number: u64) -> (i32, Value, String) {
        self.triage_with(number, &[])
    }

    fn triage_with(&self, number: u64, env: &[(&str, &str)]) -> (i32, Value, String) {
        self.run_with(&["triage", &format!("{REPO}#{number}")], env)
    }

    fn labels(&self, issue: u64) -> Vec<String> {
        block_on(self.forge.issue(&self.repo, issue))
            .unwrap()
            .labels
    }
}

#[test]
fn a_pr_that_breaks_a_test_gets_request_changes_and_a_re_review_edits_it() {
    let s = Setup::new("");
    // The PR breaks `mean` and adds a TODO on a line it changes.
    let broken = LIB_RS.replace(GOOD, &format!("{BUG} // TODO: check"));
    s.push_branch("feature", &broken, "mean: divide differently");
    let pr = s.open_pr("feature", "Divide differently");

    // Reviewed, and its checks fail: completed, outcome unverified, exit 1.
    let (code, record, stderr) = s.pr_review(pr);
    assert_eq!(code, 1, "{stderr}\n{record:#}");
    assert_eq!(record["status"], "completed", "{record:#}");
    assert_eq!(record["state"]["outcome"], "unverified", "{record:#}");
    // baton's own branch, opened by baton, who can write: trusted.
    let read = &record["steps"][0]["output"];
    assert_eq!(read["trusted"], true, "{read}");
    assert_eq!(read["trust_reason"], "author @baton can write");
    assert_eq!(read["head_in_fork"], false);
    assert_eq!(record["state"]["trusted"], true);
    let review = &record["state"]["review"];
    assert_eq!(review["verdict"], "request_changes", "{record:#}");
    assert_eq!(review["line_comments"], 1, "{record:#}");
    assert_eq!(review["findings_elsewhere"], 1, "{record:#}");

    let file = s.pull_file(pr);
    let reviews = file["reviews"].as_array().unwrap();
    assert_eq!(reviews.len(), 1, "{file:#}");
    assert_eq!(reviews[0]["review"]["state"], "CHANGES_REQUESTED");
    let body = reviews[0]["review"]["body"].as_str().unwrap();
    // Measured: `empty` passes, `one` and `several` fail.
    assert!(body.contains("1 passed, 2 failed"), "{body}");
    assert!(body.contains("❌ Lint"), "{body}");
    assert!(body.contains("tests::several"), "{body}");
    assert!(body.contains("1 file(s) changed, +1 −1"), "{body}");
    assert!(
        body.contains("`src/lib.rs:3`"),
        "the untouched TODO is summarised: {body}"
    );
    assert!(body.contains("<!-- baton:review=pr_review:"), "{body}");
    // The TODO on the changed line is a line comment on that line.
    let comments = reviews[0]["request"]["comments"].as_array().unwrap();
    assert_eq!(comments.len(), 1, "{comments:?}");
    assert_eq!(comments[0]["path"], "src/lib.rs");
    assert_eq!(comments[0]["line"], 8);
    assert!(comments[0]["body"]
        .as_str()
        .unwrap()
        .contains("TODO: check"));

    // A new push fixes it: the same review is edited, none is added.
    s.push_branch("feature", LIB_RS, "mean: back to the right count");
    let (code, record, stderr) = s.pr_review(pr);
    assert_eq!(code, 0, "{stderr}\n{record:#}");
    assert_eq!(record["state"]["outcome"], "verified", "{record:#}");
    assert_eq!(
        record["state"]["review"]["verdict"], "comment",
        "{record:#}"
    );
    let file = s.pull_file(pr);
    let reviews = file["reviews"].as_array().unwrap();
    assert_eq!(reviews.len(), 1, "no pile of reviews: {file:#}");
    let body = reviews[0]["review"]["body"].as_str().unwrap();
    assert!(body.contains("3 passed, 0 failed"), "{body}");
    assert!(!body.contains("2 failed"), "{body}");
}

/// A review asked for at one commit (`/baton review` pins the head it was received at) reviews
/// that commit even when more was pushed before the run read the PR; the summary says so.
#[test]
fn a_review_asked_for_at_one_commit_reviews_that_commit() {
    let s = Setup::new("");
    let broken = LIB_RS.replace(GOOD, BUG);
    s.push_branch("feature", &broken, "mean: divide differently");
    let asked = common::git(&s.project, &["rev-parse", "feature"])
        .trim()
        .to_string();
    let pr = s.open_pr("feature", "Divide differently");
    s.push_branch("feature", LIB_RS, "mean: back to the right count");
    let (code, record, stderr) = s.run(&[
        "run",
        "pr_review",
        "--input",
        "repo=acme/calc",
        "--input",
        &format!("pr={pr}"),
        "--input",
        &format!("head_sha={asked}"),
    ]);
    // The commit asked for breaks the tests: unverified, exit 1.
    assert_eq!(code, 1, "{stderr}\n{record:#}");
    let step = |id: &str| {
        record["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|st| st["id"] == id)
            .unwrap()["output"]
            .clone()
    };
    assert_eq!(step("checkout")["head"], asked.as_str(), "{record:#}");
    let summary = step("read")["summary"].as_str().unwrap().to_string();
    assert!(
        summary.contains(&format!("reviewing {}", &asked[..7])),
        "{summary}"
    );
    let file = s.pull_file(pr);
    let body = file["reviews"][0]["review"]["body"].as_str().unwrap();
    assert!(
        body.contains("1 passed, 2 failed"),
        "the pushed fix was reviewed: {body}"
    );
}

#[test]
fn a_passing_pr_gets_a_comment_or_an_approval_when_configured() {
    let s = Setup::new("[workflows.pr_review]\napprove_when_green = false\n");
    let doc = LIB_RS.replace(
        "rounded toward zero.",
        "rounded toward zero (integer division).",
    );
    s.push_branch("docs", &doc, "mean: say how it rounds");
    let pr = s.open_pr("docs", "Say how mean rounds");
    let (code, record, stderr) = s.pr_review(pr);
    assert_eq!(code, 0, "{stderr}\n{record:#}");
    let file = s.pull_file(pr);
    let reviews = file["reviews"].as_array().unwrap();
    assert_eq!(reviews.len(), 1, "{file:#}");
    assert_eq!(reviews[0]["review"]["state"], "COMMENTED");
    let body = reviews[0]["review"]["body"].as_str().unwrap();
    assert!(body.contains("✅ Tests: 3 passed, 0 failed"), "{body}");
    assert!(
        !body.contains("🤖"),
        "no model configured, no model section: {body}"
    );
    assert_eq!(
        reviews[0]["request"]["comments"].as_array().unwrap().len(),
        0
    );

    let s = Setup::new("[workflows.pr_review]\napprove_when_green = true\n");
    s.push_branch("docs", &doc, "mean: say how it rounds");
    let pr = s.open_pr("docs", "Say how mean rounds");
    let (code, record, stderr) = s.pr_review(pr);
    assert_eq!(code, 0, "{stderr}\n{record:#}");
    assert_eq!(record["state"]["review"]["verdict"], "approve");
    assert_eq!(s.pull_file(pr)["reviews"][0]["review"]["state"], "APPROVED");
}

#[test]
fn a_pr_from_a_fork_or_by_someone_without_write_access_is_recorded_untrusted() {
    let s = Setup::new("");
    let doc = LIB_RS.replace("rounded toward zero.", "rounded toward zero, always.");
    s.push_branch("docs", &doc, "mean: say how it rounds");
    s.push_branch("more-docs", &doc, "mean: say how it rounds");
    let open = |branch: &str, fork: Option<&Repo>| {
        let new = NewPullRequest {
            title: "Say how mean rounds".into(),
            head: branch.into(),
            base: "main".into(),
            body: String::new(),
            draft: false,
        };
        block_on(
            s.forge
                .create_pull_request_as(&s.repo, "mallory", fork, &new),
        )
        .unwrap()
        .number
    };
    let fork = Repo::parse("mallory/calc").unwrap();
    let from_fork = open("docs", Some(&fork));
    let from_branch = open("more-docs", None);
    for (pr, reason) in [
        (from_fork, "pull request from a fork (mallory/calc)"),
        (from_branch, "author @mallory has no write access"),
    ] {
        let (code, record, stderr) = s.pr_review(pr);
        assert_eq!(code, 0, "{stderr}\n{record:#}");
        let read = &record["steps"][0]["output"];
        assert_eq!(read["author"], "mallory", "{read}");
        assert_eq!(read["author_can_write"], false);
        assert_eq!(read["head_in_fork"], pr == from_fork);
        assert_eq!(read["trusted"], false);
        assert_eq!(read["trust_reason"], reason);
        assert_eq!(record["state"]["trusted"], false);
    }
}

#[test]
fn a_pr_whose_head_cannot_be_fetched_is_told_so_and_the_run_fails() {
    let s = Setup::new("");
    s.push_branch("gone", &LIB_RS.replace(GOOD, BUG), "break");
    let pr = s.open_pr("gone", "From a branch that disappears");
    // The branch is deleted on the remote and its commit pruned: the head is nowhere the
    // clone can reach, as a fork's head that the forge does not serve.
    block_on(s.forge.delete_branch(&s.repo, "gone")).unwrap();
    let remote = PathBuf::from(&s.remote);
    common::git(&remote, &["reflog", "expire", "--expire=now", "--all"]);
    common::git(&remote, &["gc", "--quiet", "--prune=now"]);
    let (code, record, stderr) = s.pr_review(pr);
    assert_eq!(code, 1, "{stderr}\n{record:#}");
    assert_eq!(record["status"], "failed", "{record:#}");
    let comments = block_on(s.forge.comments(&s.repo, pr)).unwrap();
    assert_eq!(comments.len(), 1, "{comments:?}");
    assert!(
        comments[0].body.contains("Not reviewed") && comments[0].body.contains("cannot be fetched"),
        "{}",
        comments[0].body
    );
    assert!(s.pull_file(pr)["reviews"].as_array().unwrap().is_empty());
}

#[test]
fn bad_pr_references_are_exit_2_with_a_clear_message() {
    let s = Setup::new("");
    let out = s.baton(&["pr-review", "acme/calc#99"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("acme/calc#99") && err.contains("not found"),
        "{err}"
    );
    let out = s.baton(&["pr-review", "acme/calc"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("OWNER/NAME#N"));
    let out = s.baton(&["pr-review", "acme/nope#1"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The triage state of a completed run, after checking the run and its one comment.
fn triaged(s: &Setup, issue: u64) -> (Value, String) {
    let (code, record, stderr) = s.triage(issue);
    assert_eq!(code, 0, "{stderr}\n{record:#}");
    assert_eq!(record["status"], "completed", "{record:#}");
    let comments = s.comments(issue);
    assert_eq!(comments.len(), 1, "{comments:#?}");
    (record["state"]["triage"].clone(), comments[0].clone())
}

#[test]
fn a_reproducible_crash_is_reported_reproduced_with_its_output_prioritised_and_labelled() {
    let s = Setup::new("");
    let body = "Summing big numbers crashes in `src/lib.rs`.\n\n```sh repro\ngrep -n 'TODO: overflow' src/lib.rs && echo 'overflow unhandled' && exit 3\n```\n";
    s.collaborator("alice");
    let issue = s.bug("mean crashes on overflow", body, &["bug"]);
    let (triage, comment) = triaged(&s, issue);
    assert_eq!(triage["priority"], "critical", "{triage:#}");
    assert_eq!(
        triage["reproduction"]["outcome"], "reproduced",
        "{triage:#}"
    );
    assert_eq!(triage["reproduction"]["exit_code"], 3);
    let excerpt = triage["reproduction"]["excerpt"].as_str().unwrap();
    assert!(
        excerpt.contains("overflow unhandled") && excerpt.contains("3:"),
        "{excerpt}"
    );
    let labels = s.labels(issue);
    assert!(
        labels.contains(&"priority: critical".to_string())
            && labels.contains(&"area: lib".to_string()),
        "{labels:?}"
    );
    assert!(comment.contains("✅ Reproduced"), "{comment}");
    assert!(
        comment.contains("grep -n 'TODO: overflow' src/lib.rs"),
        "{comment}"
    );
    assert!(comment.contains("Exit status: 3"), "{comment}");
    assert!(comment.contains("mentions “crashes”"), "{comment}");

    // Triage again: the one comment is edited, not joined by another.
    let (_, again) = triaged(&s, issue);
    assert!(again.contains("✅ Reproduced"), "{again}");
}

#[test]
fn a_named_test_that_passes_is_reported_not_reproduced() {
    // The old key is still accepted (with a warning); where the snippet runs is [sandbox] mode:
    // a collaborator's code runs on the host when only untrusted code is sandboxed.
    let s =
        Setup::new("[workflows.bug_triage]\nsandbox = false\n[sandbox]\nmode = \"untrusted\"\n");
    let body = "I think `tests::several` fails on main.\n";
    s.collaborator("alice");
    let issue = s.bug("several is wrong", body, &["bug"]);
    let (triage, comment) = triaged(&s, issue);
    let r = &triage["reproduction"];
    assert_eq!(r["outcome"], "not_reproduced", "{triage:#}");
    assert_eq!(r["command"], "cargo test --color never tests::several");
    assert_eq!(r["exit_code"], 0);
    assert_eq!(triage["priority"], "medium");
    assert!(comment.contains("❌ Not reproduced"), "{comment}");
    assert!(comment.contains("on the host"), "{comment}");
}

#[test]
fn an_issue_with_nothing_runnable_is_reported_could_not_try() {
    let s = Setup::new("");
    // Someone guessed high before: triage leaves one priority label, its own.
    let issue = s.bug(
        "Typo in the docs of mean",
        "It says “toward” twice.\n",
        &["priority: high", "docs"],
    );
    let (triage, comment) = triaged(&s, issue);
    assert_eq!(
        triage["reproduction"]["outcome"], "could_not_try",
        "{triage:#}"
    );
    assert_eq!(triage["priority"], "low");
    assert!(comment.contains("⚠️ Could not try"), "{comment}");
    let mut labels = s.labels(issue);
    labels.sort();
    assert_eq!(
        labels,
        vec!["docs".to_string(), "priority: low".to_string()]
    );
}

#[test]
fn a_snippet_that_hangs_is_killed_at_its_time_limit() {
    let s = Setup::new("[workflows.bug_triage]\ntimeout = \"2s\"\n");
    let body = "`mean` hangs:\n\n```sh\nsleep 300\n```\n";
    s.collaborator("alice");
    let issue = s.bug("mean hangs", body, &["bug"]);
    let started = std::time::Instant::now();
    let (triage, comment) = triaged(&s, issue);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(60),
        "not killed: {:?}",
        started.elapsed()
    );
    let r = &triage["reproduction"];
    assert_eq!(r["outcome"], "reproduced", "{triage:#}");
    assert!(r["exit_code"].is_null(), "{triage:#}");
    assert!(
        r["reason"]
            .as_str()
            .unwrap()
            .contains("killed at the 2s limit"),
        "{triage:#}"
    );
    assert!(comment.contains("Exit status: none (killed)"), "{comment}");
}

#[test]
fn a_snippet_that_tries_to_leave_the_workspace_stays_contained() {
    if !require::program("bwrap", require::BWRAP) {
        return;
    }
    let s = Setup::new("");
    // Outside the clone and outside /tmp (the sandbox gets a private /tmp): a real path the
    // test user may write to.
    let outside =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("escaped-{}", std::process::id()));
    let _ = std::fs::remove_file(&outside);
    let body = format!("```sh\necho pwned > {}\n```\n", outside.display());
    let issue = s.bug("writes outside", &body, &["bug"]);
    let (triage, comment) = triaged(&s, issue);
    assert!(!outside.exists(), "the snippet wrote outside its clone");
    assert_eq!(triage["reproduction"]["sandboxed"], true, "{triage:#}");
    assert_ne!(triage["reproduction"]["exit_code"], 0, "{triage:#}");
    // alice has no write access: her snippet's output is not quoted (the sandbox can read
    // this host's files, and the comment is public).
    assert_eq!(
        triage["reproduction"]["output_withheld"], true,
        "{triage:#}"
    );
    assert_eq!(triage["reproduction"]["excerpt"], "", "{triage:#}");
    assert!(comment.contains("The output is not quoted"), "{comment}");

    // Without a sandbox (turned off, or bwrap off PATH), her snippet is not run at all, and
    // the comment says why.
    let s = Setup::new("[sandbox]\nmode = \"off\"\n");
    let issue = s.bug("writes outside", &body, &["bug"]);
    let (triage, comment) = triaged(&s, issue);
    assert_eq!(
        triage["reproduction"]["outcome"], "could_not_try",
        "{triage:#}"
    );
    assert!(triage["reproduction"]["command"].is_null(), "{triage:#}");
    assert!(comment.contains("turned off"), "{comment}");
    assert!(!outside.exists(), "the snippet ran");
    let no_bwrap = require::path_without_bwrap();
    let s = Setup::new("");
    let issue = s.bug("writes outside", &body, &["bug"]);
    let (code, record, stderr) =
        s.triage_with(issue, &[("PATH", no_bwrap.path().to_str().unwrap())]);
    assert_eq!(code, 0, "{stderr}\n{record:#}");
    let repro = &record["state"]["triage"]["reproduction"];
    assert_eq!(repro["outcome"], "could_not_try", "{record:#}");
    assert!(
        repro["reason"]
            .as_str()
            .unwrap()
            .contains("bwrap is not installed"),
        "{record:#}"
    );
    assert!(!outside.exists(), "the snippet ran");
}

#[test]
fn bad_issue_references_are_exit_2() {
    let s = Setup::new("");
    let out = s.baton(&["triage", "acme/calc#42"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"));
    s.push_branch("x", &LIB_RS.replace(GOOD, BUG), "x");
    let pr = s.open_pr("x", "x");
    let out = s.baton(&["triage", &format!("{REPO}#{pr}")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("pull request, not an issue"));
}

impl Setup {
    /// Commits a change of `file` on the current branch of the project as `author`.
    fn commit_as(&self, author: &str, file: &str, message: &str) {
        let path = self.project.join(file);
        let mut text = std::fs::read_to_string(&path).unwrap_or_default();
        text.push_str(message);
        text.push('\n');
        std::fs::write(&path, text).unwrap();
        common::git(&self.project, &["add", "--all"]);
        let who = format!("{author} <{}@example.com>", author.to_lowercase());
        common::git(
            &self.project,
            &["commit", "--quiet", "--author", &who, "-m", message],
        );
    }

    /// v1.0.0 on the first commit; then a history mixing conventional and plain commits, a
    /// merge and a breaking change, tagged v1.1.0; both pushed with their tags.
    fn tagged_history(&self) {
        let p = &self.project;
        common::git(p, &["tag", "v1.0.0"]);
        self.commit_as(
            "someone",
            "NOTES.md",
            "feat(mean): accept empty slices (#7)",
        );
        self.commit_as("someone", "NOTES.md", "fix: round toward zero");
        common::git(p, &["checkout", "--quiet", "-b", "topic"]);
        self.commit_as("Carol", "TOPIC.md", "perf: sum once");
        common::git(p, &["checkout", "--quiet", "main"]);
        self.commit_as("someone", "NOTES.md", "Tidy the readme");
        common::git(
            p,
            &[
                "merge",
                "--quiet",
                "--no-ff",
                "topic",
                "-m",
                "Merge pull request #9 from carol/topic",
            ],
        );
        self.commit_as("someone", "NOTES.md", "refactor!: mean returns f64");
        common::git(p, &["tag", "v1.1.0"]);
        common::git(p, &["push", "--quiet", &self.remote, "main", "--tags"]);
    }

    fn releases(&self) -> Vec<Value> {
        let dir = self.data.join("forge/acme/calc/releases");
        let mut all: Vec<Value> = std::fs::read_dir(&dir)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
                    .map(|e| serde_json::from_slice(&std::fs::read(e.path()).unwrap()).unwrap())
                    .collect()
            })
            .unwrap_or_default();
        all.sort_by_key(|r: &Value| r.to_string());
        all
    }
}

#[test]
fn release_notes_group_a_mixed_history_and_running_twice_updates_the_one_release() {
    let s = Setup::new("");
    s.tagged_history();
    let (code, record, stderr) = s.run(&["release-notes", REPO, "--to", "v1.1.0"]);
    assert_eq!(code, 0, "{stderr}\n{record:#}");
    let notes = record["state"]["notes"].as_str().unwrap().to_string();
    let at = |needle: &str| {
        notes
            .find(needle)
            .unwrap_or_else(|| panic!("no `{needle}` in:\n{notes}"))
    };
    // Breaking first, then git-cliff's order, plain commits under Other; the merge is not a line.
    assert!(at("### ⚠ Breaking Changes") < at("### Features"));
    assert!(at("### Features") < at("### Bug Fixes"));
    assert!(at("### Bug Fixes") < at("### Performance"));
    assert!(at("### Performance") < at("### Other"));
    assert!(at("- mean returns f64 (") > at("### ⚠ Breaking Changes"));
    assert!(
        notes.contains("- **mean**: accept empty slices ("),
        "{notes}"
    );
    assert!(notes.contains(") (#7) by someone"), "{notes}");
    assert!(at("- Tidy the readme (") > at("### Other"));
    assert!(!notes.contains("Merge pull request"), "{notes}");
    // The perf commit's subject names no PR: the merge that brought it in does.
    assert!(notes.contains("- sum once ("), "{notes}");
    assert!(notes.contains(") (#9) by Carol"), "{notes}");
    assert!(
        notes.contains("Changes since v1.0.0."),
        "--from is the previous tag: {notes}"
    );
    assert!(
        notes.contains("### New Contributors\n\n- Carol made their first contribution in #9\n"),
        "{notes}"
    );
    assert!(!notes.contains("- someone made"), "{notes}");
    let releases = s.releases();
    assert_eq!(releases.len(), 1, "{releases:#?}");
    assert!(releases[0].to_string().contains("mean returns f64"));

    // Again, with --from given: the same release is updated, not a second one made.
    let (code, _, stderr) = s.run(&["release-notes", REPO, "--from", "v1.0.0", "--to", "v1.1.0"]);
    assert_eq!(code, 0, "{stderr}");
    let again = s.releases();
    assert_eq!(again.len(), 1, "no second release: {again:#?}");

    // --dry-run prints the notes and leaves the release alone.
    let out = s.baton(&["release-notes", REPO, "--to", "v1.1.0", "--dry-run"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("### ⚠ Breaking Changes"));
    assert_eq!(s.releases(), again);
}

#[test]
fn a_first_release_without_from_covers_the_whole_history() {
    let s = Setup::new("");
    s.tagged_history();
    let (code, record, stderr) = s.run(&["release-notes", REPO, "--to", "v1.0.0"]);
    assert_eq!(code, 0, "{stderr}\n{record:#}");
    let notes = record["state"]["notes"].as_str().unwrap().to_string();
    assert!(
        notes.contains("First release: the whole history up to v1.0.0."),
        "{notes}"
    );
    // v1.0.0 is the project's first commit; nothing after it is in these notes.
    let first = common::git(&s.project, &["log", "--format=%s", "v1.0.0"]);
    let first = first.trim();
    assert!(
        !first.is_empty() && notes.contains(first),
        "{first}: {notes}"
    );
    assert!(!notes.contains("accept empty slices"), "{notes}");
    assert!(notes.contains("### New Contributors"), "{notes}");
    let releases = s.releases();
    assert_eq!(releases.len(), 1, "{releases:#?}");
    assert_eq!(releases[0]["tag"], "v1.0.0");
}

#[test]
fn release_notes_refuse_unknown_tags_and_a_range_in_the_wrong_order() {
    let s = Setup::new("");
    s.tagged_history();
    for (args, says) in [
        (vec!["--to", "v9"], "no tag `v9`"),
        (vec!["--from", "v0.1", "--to", "v1.1.0"], "no tag `v0.1`"),
        (vec!["--from", "v1.1.0", "--to", "v1.0.0"], "wrong order"),
    ] {
        let mut all = vec!["release-notes", REPO];
        all.extend(args.iter().copied());
        let out = s.baton(&all);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
    let out = s.baton(&["release-notes", "nope", "--to", "v1"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(s.releases().is_empty());
}

/// The API key the scripted model server is given: it must never show up in what baton posts.
const MODEL_KEY: &str = "sk-test-model-key-never-shown";

#[test]
fn model_parts_are_marked_kept_apart_and_a_model_failure_never_fails_a_workflow() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    use common_agent::{oa_text, ScriptServer, Scripted};
    let server = runtime.block_on(ScriptServer::start(vec![
        // The review's summary and suggestions.
        Scripted::ok(oa_text(
            "The PR documents how `mean` rounds.\n\n- `src/lib.rs:1`: add a doctest for negatives.",
        )),
        // Triage: a readable answer that raises the rules' priority.
        Scripted::ok(oa_text("priority: high: it silently gives wrong numbers")),
        // Triage again: garbage, so the rules' priority stands.
        Scripted::ok(oa_text("This looks important, maybe?")),
        // Release notes: the provider refuses, echoing the key.
        Scripted::status(
            401,
            serde_json::json!({"error": {"message": format!("bad key {MODEL_KEY}")}}),
        ),
    ]));
    let s = Setup::new(&format!(
        "[agent]\nbackend = \"openai\"\nmodel = \"m\"\nbase_url = \"{}/v1\"\nmax_retries = 0\n",
        server.base
    ));
    let env = [("OPENAI_API_KEY", MODEL_KEY)];

    // PR Review: the measured part first, then the model's, under its own heading.
    let doc = LIB_RS.replace(
        "rounded toward zero.",
        "rounded toward zero (integer division).",
    );
    s.push_branch("docs", &doc, "mean: say how it rounds");
    let pr = s.open_pr("docs", "Say how mean rounds");
    let (code, record, stderr) = s.run_with(&["pr-review", &format!("{REPO}#{pr}")], &env);
    assert_eq!(code, 0, "{stderr}\n{record:#}");
    let review = s.pull_file(pr)["reviews"][0]["review"].clone();
    let body = review["body"].as_str().unwrap();
    assert_eq!(review["state"], "COMMENTED", "the verdict stays measured");
    let measured = body.find("✅ Tests: 3 passed, 0 failed").expect(body);
    let model = body
        .find("### 🤖 Model's suggestions, not measured")
        .expect(body);
    assert!(measured < model, "{body}");
    assert!(
        body[model..].contains("add a doctest for negatives"),
        "{body}"
    );
    assert_eq!(record["state"]["review"]["model"]["answered"], true);
    let asked = &server.requests()[0].body;
    let prompt = asked["messages"][1]["content"].as_str().unwrap();
    assert!(
        prompt.contains("<untrusted>") && prompt.contains("integer division"),
        "{prompt}"
    );
    assert!(prompt.len() <= baton::agent::ask::MAX_PROMPT_BYTES + 2048);
    assert!(
        asked.get("tools").is_none(),
        "a question, not an agent: {asked}"
    );

    // Bug Triage: the model raises the rules' priority and says why.
    let issue = s.bug(
        "Typo in the docs of mean",
        "It says “toward” twice.\n",
        &["docs"],
    );
    let (code, record, stderr) = s.triage_with(issue, &env);
    assert_eq!(code, 0, "{stderr}\n{record:#}");
    assert_eq!(record["state"]["triage"]["priority"], "high", "{record:#}");
    assert!(s.labels(issue).contains(&"priority: high".to_string()));
    let comment = s.comments(issue).join("\n");
    assert!(
        comment.contains("🤖 **The model changed the rules' priority** (`low` → `high`)")
            && comment.contains("it silently gives wrong numbers"),
        "{comment}"
    );

    // Garbage from the model: the rules' priority stands and the comment says why.
    let other = s.bug("Typo in the docs of sum", "Spelled “sume”.\n", &["docs"]);
    let (code, record, stderr) = s.triage_with(other, &env);
    assert_eq!(code, 0, "{stderr}\n{record:#}");
    assert_eq!(record["state"]["triage"]["priority"], "low", "{record:#}");
    let comment = s.comments(other).join("\n");
    assert!(
        comment.contains("🤖 The model's view of the priority is missing"),
        "{comment}"
    );

    // Release Notes: the model fails; the notes are posted, saying the highlights are missing.
    s.tagged_history();
    let out = s.baton_with(&["release-notes", REPO, "--to", "v1.1.0", "--json"], &env);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let record: Value = serde_json::from_slice(&out.stdout).unwrap();
    let notes = record["state"]["notes"].as_str().unwrap();
    assert!(
        notes.contains("### Highlights\n\n🤖 _Missing: the model could not be asked"),
        "{notes}"
    );
    assert!(
        notes.find("### Highlights") < notes.find("### ⚠ Breaking Changes"),
        "{notes}"
    );
    assert!(notes.contains("### Features"), "{notes}");
    assert_eq!(s.releases().len(), 1);

    // The key reached the provider and nothing baton wrote.
    assert_eq!(server.left(), 0, "every scripted answer was asked for");
    let everything = format!(
        "{notes}{}{}{}{stderr}",
        s.comments(issue).join(""),
        s.comments(other).join(""),
        s.pull_file(pr)
    );
    assert!(!everything.contains(MODEL_KEY), "the key leaked");
    let listed = s.baton(&["runs", "--json"]);
    assert!(!String::from_utf8_lossy(&listed.stdout).contains(MODEL_KEY));
}

#[test]
fn a_second_review_or_triage_is_refused_while_one_is_in_flight() {
    let s = Setup::new("");
    let doc = LIB_RS.replace("rounded toward zero.", "rounded toward zero, always.");
    s.push_branch("docs", &doc, "docs: say it always rounds");
    let pr = s.open_pr("docs", "Nothing really");
    let issue = s.bug("Typo in the docs of mean", "It says “toward” twice.\n", &[]);
    for (command, target) in [("pr-review", pr), ("triage", issue)] {
        let target = format!("{REPO}#{target}");
        // Started and left to a daemon: in flight in the store.
        let out = s.baton(&[command, &target, "--detach", "--json"]);
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert_eq!(out.status.code(), Some(0), "{stderr}");
        let first: Value = serde_json::from_slice(&out.stdout).unwrap();
        let first = first["id"].as_str().unwrap().to_string();
        let out = s.baton(&[command, &target]);
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert_eq!(out.status.code(), Some(2), "{command}: {stderr}");
        assert!(
            stderr.contains(&first) && stderr.contains("in flight"),
            "{command} names the run in flight: {stderr}"
        );
    }
    // Nothing was posted by the refused starts.
    assert!(s.pull_file(pr)["reviews"]
        .as_array()
        .is_none_or(|r| r.is_empty()));
}
