//! Revise on review, end to end as a user runs it: the real `baton` binary, the local forge
//! with real git, a reviewer's line comments made with `baton forge pr review`, a scripted
//! coding command, and a real crate whose tests `cargo test` runs on the revised branch.

use crate::common;
use crate::setup::{self, block_on, CALC_CARGO_TOML};

use baton::forge::{DiffSide, Forge, LineComment, NewPullRequest, NewReview, ReviewEvent};
use serde_json::Value;

const REPO: &str = "acme/calc";

const LIB_RS: &str = "pub fn mean(xs: &[i64]) -> Option<i64> {
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
const DOC: &str = "/// The mean of `xs`, rounded toward zero.\n";

/// The shared setting with `acme/calc` (ada may write) and an open PR #1 from `fix/issue-9`,
/// and a coding command that records the task it gets and adds the doc line the reviewer asks
/// for.
struct Setup {
    base: setup::Setup,
    /// The PR branch's commit before any revision.
    first: String,
}

impl std::ops::Deref for Setup {
    type Target = setup::Setup;
    fn deref(&self) -> &setup::Setup {
        &self.base
    }
}

impl Setup {
    fn new(extra_config: &str) -> Setup {
        Setup::with_baton_toml(extra_config, "")
    }

    /// As [`Setup::new`], with `extra_baton_toml` appended to the repository's `.baton.toml`.
    fn with_baton_toml(extra_config: &str, extra_baton_toml: &str) -> Setup {
        let baton_toml = format!(
            "[verify]\ndetect = false\n[[verify.checks]]\nkind = \"tests\"\ncommand = \"cargo test --color never\"\n{extra_baton_toml}"
        );
        let base = setup::Setup::new(
            REPO,
            &["ada"],
            extra_config,
            &[
                ("Cargo.toml", CALC_CARGO_TOML),
                ("src/lib.rs", LIB_RS),
                (".baton.toml", &baton_toml),
            ],
        );
        // The command runs in the sandbox, which holds only the clone: it prints the task it
        // got (the run's transcript keeps what it prints) and writes the revision it carries.
        let agent = base.root.join("agent.sh");
        std::fs::write(
            &agent,
            format!("#!/bin/sh\ncat\ncat > src/lib.rs <<'EOF'\n{DOC}{LIB_RS}EOF\necho done\n"),
        )
        .unwrap();
        let mut config = std::fs::read_to_string(&base.config).unwrap();
        config.push_str(&format!(
            "\n[agent]\nbackend = \"command\"\ncommand = [\"sh\", \"{}\"]\n",
            agent.display()
        ));
        std::fs::write(&base.config, config).unwrap();
        // The PR's branch: one commit on main, as Issue → PR leaves it.
        let project = &base.project;
        common::git(project, &["checkout", "--quiet", "-b", "fix/issue-9"]);
        std::fs::write(project.join("NOTES.md"), "mean is fixed\n").unwrap();
        common::git(project, &["add", "--all"]);
        common::git(project, &["commit", "--quiet", "-m", "Fix #9"]);
        common::git(project, &["push", "--quiet", &base.remote, "fix/issue-9"]);
        let first = common::git(project, &["rev-parse", "HEAD"]);
        let new = NewPullRequest {
            title: "[failing] Fix mean".into(),
            head: "fix/issue-9".into(),
            base: "main".into(),
            body: "## Changes\n\n- Added `NOTES.md`\n\n## Verification\n\n❌ Tests: stale\n\nFixes #9\n"
                .into(),
            draft: false,
        };
        let pr = block_on(base.forge.create_pull_request(&base.repo, &new)).unwrap();
        assert_eq!(pr.number, 1);
        Setup { base, first }
    }

    /// `baton revise acme/calc#N --json` with `extra`: exit code, run record, stderr.
    fn revise(&self, number: u64, extra: &[&str]) -> (i32, Value, String) {
        let target = format!("{REPO}#{number}");
        let mut args = vec!["revise", target.as_str(), "--json"];
        args.extend_from_slice(extra);
        self.baton_json(&args, &[])
    }

    fn review_requesting_changes(&self) {
        let out = self.baton(&[
            "forge",
            "pr",
            "review",
            "acme/calc#1",
            "--event",
            "request-changes",
            "--body",
            "Please document how mean rounds.",
            "--comment",
            "src/lib.rs:1:say that it rounds toward zero",
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A review requesting changes by `mallory`, who has no write access.
    fn outsiders_review(&self) {
        let review = NewReview {
            body: "Also print the mean on every call.".into(),
            event: ReviewEvent::RequestChanges,
            commit_id: None,
            comments: vec![LineComment {
                path: "src/lib.rs".into(),
                line: 1,
                side: DiffSide::Right,
                body: "add `println!` here".into(),
            }],
        };
        block_on(
            self.forge
                .create_review_as(&self.repo, 1, "mallory", &review),
        )
        .unwrap();
    }

    fn remote_sha(&self, branch: &str) -> String {
        common::git(&self.forge.remote(&self.repo), &["rev-parse", branch])
    }
}

#[test]
fn a_review_requesting_changes_leads_to_a_verified_commit_on_the_same_branch() {
    let s = Setup::new("");
    s.review_requesting_changes();
    // The review and its line comment are on the forge, as `baton forge pr show` shows them.
    let out = s.baton(&["forge", "pr", "show", "acme/calc#1", "--json"]);
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["reviews"][0]["state"], "CHANGES_REQUESTED");
    assert_eq!(shown["review_comments"][0]["path"], "src/lib.rs");
    assert_eq!(shown["review_comments"][0]["line"], 1);

    let (code, record, stderr) = s.revise(1, &["--instructions", "Keep the doc to one line."]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(record["status"], "completed", "{stderr}");
    assert_eq!(record["state"]["revision"], 1);
    assert_eq!(record["state"]["outcome"], "verified", "{record}");

    // The agent got the review's comment with its file and line, and the instructions.
    let task = agent_output(&record);
    for part in [
        // The task reaches the command as JSON: its newlines are escaped.
        "### `src/lib.rs:1` (baton)\\n\\nsay that it rounds toward zero",
        "Please document how mean rounds.",
        "Keep the doc to one line.",
        "branch `fix/issue-9`",
    ] {
        assert!(task.contains(part), "the task lacks {part:?}:\n{task}");
    }

    // A new commit on the same branch, on top of the old one: never a force-push.
    let remote = s.forge.remote(&s.repo);
    let head = s.remote_sha("fix/issue-9");
    assert_ne!(head, s.first);
    assert_eq!(
        common::git(&remote, &["rev-parse", &format!("{head}^")]),
        s.first,
        "the revision's parent is the PR's previous head"
    );
    let message = common::git(&remote, &["log", "-1", "--format=%s", &head]);
    assert_eq!(message, "Revise #1 (revision 1): Keep the doc to one line.");
    let pushed = common::git(&remote, &["show", "fix/issue-9:src/lib.rs"]);
    assert!(pushed.starts_with(DOC.trim_end()), "{pushed}");
    let files = common::git(&remote, &["ls-tree", "-r", "--name-only", "fix/issue-9"]);
    assert_eq!(
        files, ".baton.toml\nCargo.toml\nNOTES.md\nsrc/lib.rs",
        "nothing the tests left behind"
    );

    // The PR's verification section is the measured one, the rest of the body kept; the
    // failing mark is off the title.
    let pr = block_on(s.forge.pull_request(&s.repo, 1)).unwrap();
    assert_eq!(pr.title, "Fix mean");
    assert!(
        pr.body.contains("✅ Tests: 3 passed, 0 failed"),
        "{}",
        pr.body
    );
    assert!(pr.body.contains("_Revision 1 ("), "{}", pr.body);
    assert!(!pr.body.contains("stale"), "{}", pr.body);
    assert!(pr.body.contains("- Added `NOTES.md`"), "{}", pr.body);
    assert!(pr.body.contains("Fixes #9"), "{}", pr.body);

    // The answer on the PR, with the measured result.
    let comments = block_on(s.forge.comments(&s.repo, 1)).unwrap();
    let answers: Vec<&str> = comments
        .iter()
        .map(|c| c.body.as_str())
        .filter(|b| b.contains(":revision -->"))
        .collect();
    assert_eq!(answers.len(), 1, "{comments:?}");
    assert!(
        answers[0].contains(&format!("Revision 1 of at most 3: pushed {}", &head[..7])),
        "{}",
        answers[0]
    );
    assert!(answers[0].contains("3 passed, 0 failed"), "{}", answers[0]);
    assert!(
        answers[0].contains("addressing 2 review item(s)"),
        "{}",
        answers[0]
    );
}

#[test]
fn revisions_are_bounded_and_bad_targets_are_exit_2() {
    let s = Setup::new("[workflows.issue_to_pr]\nmax_revisions = 1\n");
    // Nothing to revise: no review and no instructions fails the run, and pushes nothing.
    let (code, record, stderr) = s.revise(1, &[]);
    assert_eq!(code, 1, "{stderr}");
    let error = record["error_text"].as_str().unwrap_or("");
    assert!(error.contains("nothing to revise"), "{record}");
    assert_eq!(s.remote_sha("fix/issue-9"), s.first);

    let (code, record, stderr) = s.revise(1, &["--instructions", "Document mean."]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(record["state"]["revision"], 1);
    let after_one = s.remote_sha("fix/issue-9");

    let (code, _, stderr) = s.revise(1, &["--instructions", "Once more."]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("max_revisions = 1"), "{stderr}");
    assert_eq!(s.remote_sha("fix/issue-9"), after_one, "nothing pushed");

    for (target, what) in [
        ("acme/calc#7", "no such pull request"),
        ("acme/calc", "OWNER/NAME#N"),
    ] {
        let out = s.baton(&["revise", target]);
        assert_eq!(out.status.code(), Some(2), "{target}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(what), "{target}: {stderr}");
    }
    let out = s.baton(&[
        "revise",
        "acme/calc#1",
        "--instructions",
        "@/nonexistent/file",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--instructions @/nonexistent/file"));
}

#[test]
fn review_comments_from_someone_without_write_access_wait_for_approval() {
    let s = Setup::new("");
    s.review_requesting_changes();
    s.outsiders_review();
    let (code, parked, stderr) = s.revise(1, &[]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(parked["status"], "waiting", "{stderr}");
    assert_eq!(parked["waiting_for"]["step"], "approve_outsider");
    let run = parked["id"].as_str().unwrap();
    let read = &parked["steps"][0]["output"];
    assert_eq!(read["outsiders"], serde_json::json!(["mallory"]), "{read}");
    assert_eq!(read["needs_approval"], true);
    assert_eq!(read["trusted"], false);
    assert_eq!(
        read["trust_reason"],
        "review comments from @mallory, without write access"
    );
    // The PR itself is baton's, on a branch of the repository.
    assert_eq!(read["author"], "baton");
    assert_eq!(read["author_can_write"], true);
    assert_eq!(read["head_in_fork"], false);
    assert!(
        read["summary"].as_str().unwrap().contains("@mallory"),
        "{read}"
    );

    // The agent has not run and nothing was pushed; the PR says why and how to go on.
    assert!(
        agent_output(&parked).is_empty(),
        "the agent ran before the approval"
    );
    assert_eq!(s.remote_sha("fix/issue-9"), s.first);
    let comments = block_on(s.forge.comments(&s.repo, 1)).unwrap();
    let approval: Vec<&str> = comments
        .iter()
        .map(|c| c.body.as_str())
        .filter(|b| b.contains(":approval -->"))
        .collect();
    assert_eq!(approval.len(), 1, "{comments:?}");
    for part in [
        "comments from @mallory, without write access to acme/calc",
        "Someone with write access must approve",
        &format!("`baton approve {run}`"),
    ] {
        assert!(
            approval[0].contains(part),
            "lacks {part:?}: {}",
            approval[0]
        );
    }

    // Approved: the agent gets every comment, the outsider's included, and the revision goes out.
    let out = s.baton(&["approve", run, "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let done: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(done["status"], "completed", "{done}");
    let task = agent_output(&done);
    assert!(task.contains("add `println!` here"), "{task}");
    assert_ne!(s.remote_sha("fix/issue-9"), s.first);
}

#[test]
fn with_refuse_review_comments_from_someone_without_write_access_are_not_worked_on() {
    let s = Setup::new("[sandbox]\noutsider_patches = \"refuse\"\n");
    s.outsiders_review();
    let (code, record, stderr) = s.revise(1, &["--instructions", "Document mean."]);
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(record["status"], "failed");
    let error = record["error_text"].as_str().unwrap_or("");
    for part in ["@mallory", "without write access", "refuse"] {
        assert!(error.contains(part), "error lacks {part:?}: {error}");
    }
    assert!(agent_output(&record).is_empty(), "the agent ran");
    assert_eq!(s.remote_sha("fix/issue-9"), s.first, "nothing pushed");
    let comments = block_on(s.forge.comments(&s.repo, 1)).unwrap();
    assert!(
        comments
            .iter()
            .any(|c| c.body.contains(":approval -->") && c.body.contains("does not work on them")),
        "{comments:?}"
    );
}

#[test]
fn a_revision_push_waits_for_the_ci_command_and_fixes_its_failure_once() {
    // `[ci] command` on the PR's branch: after its push the revision runs it (the check `ci`)
    // and waits for it, as Issue → PR does. It fails until a fix round has left `ci-fix-1.txt`.
    let s = Setup::with_baton_toml(
        "",
        "[ci]\ncommand = \"test -f ci-fix-1.txt || { echo 'CI-LOG: ci-fix-1.txt is missing'; exit 3; }\"\n",
    );
    // The coding command: the revision writes the doc line; a round told that CI failed
    // writes `ci-fix-1.txt` with the log lines it was given.
    std::fs::write(
        s.root.join("agent.sh"),
        format!(
            "#!/bin/sh\ntask=$(cat)\ncase \"$task\" in\n*\"The repository's CI failed\"*)\n\
             printf '%s\\n' \"$task\" | grep 'CI-LOG' > ci-fix-1.txt || echo none > ci-fix-1.txt\n\
             ;;\n*)\ncat > src/lib.rs <<'EOF'\n{DOC}{LIB_RS}EOF\n;;\nesac\necho done\n"
        ),
    )
    .unwrap();
    s.review_requesting_changes();
    let (code, record, stderr) = s.revise(1, &[]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(record["status"], "completed", "{stderr}\n{record}");
    let settings = &record["state"]["settings"];
    assert_eq!(settings["ci"], "wait", "{settings}");
    let ci = &crate::issue_to_pr::step(&record, "ci_wait")["output"];
    assert_eq!(ci["passed"], true, "{ci}");
    assert_eq!(ci["rounds"], 1, "one fix round: {ci}");
    assert_eq!(ci["checks"], serde_json::json!(["ci"]), "{ci}");

    // Two commits on the branch, on top of the PR's: the revision, whose `ci` failed with the
    // command's output as its log, and the fix, whose `ci` passed and which is the head.
    let remote = s.forge.remote(&s.repo);
    let second = ci["sha"].as_str().unwrap().to_string();
    assert_eq!(s.remote_sha("fix/issue-9"), second);
    let first = common::git(&remote, &["rev-parse", &format!("{second}~1")]);
    assert_eq!(
        common::git(&remote, &["rev-parse", &format!("{second}~2")]),
        s.first,
        "fast-forwards on the PR's previous head"
    );
    let of = |sha: &str| {
        block_on(s.forge.checks_for(&s.repo, sha))
            .unwrap()
            .into_iter()
            .find(|c| c.name == "ci")
            .unwrap_or_else(|| panic!("no `ci` check on {sha}"))
    };
    let failed = of(&first);
    assert!(failed.failed(), "{failed:?}");
    assert!(
        failed
            .log
            .as_deref()
            .unwrap_or_default()
            .contains("CI-LOG: ci-fix-1.txt is missing"),
        "{failed:?}"
    );
    assert!(of(&second).passed(), "{:?}", of(&second));
    // The fix round got the failure from the check's log; the revision's doc line stayed.
    let given = common::git(&remote, &["show", &format!("{second}:ci-fix-1.txt")]);
    assert!(given.contains("CI-LOG: ci-fix-1.txt is missing"), "{given}");
    let pushed = common::git(&remote, &["show", &format!("{second}:src/lib.rs")]);
    assert!(pushed.starts_with(DOC.trim_end()), "{pushed}");
    // baton's own check is on the fix too, and the answer names the commit CI passed on.
    assert!(block_on(s.forge.checks_for(&s.repo, &second))
        .unwrap()
        .iter()
        .any(|c| c.name == "baton / verify"));
    assert_eq!(record["state"]["outcome"], "verified", "{record}");
    let comments = block_on(s.forge.comments(&s.repo, 1)).unwrap();
    let answer = comments
        .iter()
        .map(|c| c.body.as_str())
        .find(|b| b.contains(":revision -->"))
        .expect("the answer on the PR");
    assert!(
        answer.contains(&format!("pushed {}", &second[..7])),
        "{answer}"
    );
}

/// Every string of the `implement` step's output (its transcript keeps what the coding command
/// printed: the task it got); empty when the step has not run.
fn agent_output(record: &Value) -> String {
    fn strings(v: &Value, out: &mut String) {
        match v {
            Value::String(s) => {
                out.push_str(s);
                out.push('\n');
            }
            Value::Array(a) => a.iter().for_each(|v| strings(v, out)),
            Value::Object(o) => o.values().for_each(|v| strings(v, out)),
            _ => {}
        }
    }
    let mut out = String::new();
    if let Some(step) = record["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["id"] == "implement")
    {
        strings(&step["output"], &mut out);
    }
    out
}
