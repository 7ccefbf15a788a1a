//! The `patch` backend on real diffs in a real git repository.

use crate::common_agent::*;
use baton::agent::{
    Agent, BackendKind, CancellationToken, ChangeKind, Error, IssueInput, MemoryJournal, Outcome,
    ProviderEnv,
};

fn agent() -> Agent {
    Agent::new(config(BackendKind::Patch, ""), &ProviderEnv::default()).unwrap()
}

fn issue(body: &str) -> IssueInput {
    IssueInput {
        number: Some(3),
        title: "Apply this patch".into(),
        body: body.into(),
        labels: vec![],
    }
}

const FIX_ADD: &str = "diff --git a/src/lib.rs b/src/lib.rs
--- a/src/lib.rs
+++ b/src/lib.rs
@@ -1,3 +1,3 @@
 pub fn add(a: i32, b: i32) -> i32 {
-    a - b
+    a + b
 }
";

const NEW_AND_DELETE: &str = "diff --git a/tests/add.rs b/tests/add.rs
new file mode 100644
--- /dev/null
+++ b/tests/add.rs
@@ -0,0 +1,2 @@
+#[test]
+fn adds() { assert_eq!(demo::add(2, 3), 5); }
diff --git a/README.md b/README.md
deleted file mode 100644
--- a/README.md
+++ /dev/null
@@ -1,3 +0,0 @@
-# demo
-
-Adds numbers.
";

#[tokio::test]
async fn applies_the_issues_diffs_and_journals_them() {
    let repo = git_repo();
    // The second block is plain `diff -u` style (no a/ b/ prefixes), in a ```patch fence,
    // with wrong hunk counts that --recount forgives; CRLF line ends in the issue body.
    let plain = "--- src/parser.rs\t2024-01-01 00:00:00\n+++ src/parser.rs\t2024-01-02 00:00:00\n@@ -3,3 +3,3 @@\n pub fn parse_number(text: &str) -> Option<i64> {\n-    text.parse().ok()\n+    text.trim().parse().ok()\n }\n";
    let body = format!(
        "The sum is wrong.\n\n```diff\n{FIX_ADD}```\n\nAnd:\n\n```patch\n{plain}```\n\n~~~diff\n{NEW_AND_DELETE}~~~\n"
    )
    .replace('\n', "\r\n");
    let journal = MemoryJournal::new();
    let report = agent()
        .run(
            repo.path(),
            &issue(&body),
            &journal,
            &(),
            &CancellationToken::new(),
        )
        .await
        .unwrap();
    match &report.outcome {
        Outcome::Finished { summary } => {
            assert!(summary.starts_with("Applied 3 diff block(s)"), "{summary}")
        }
        other => panic!("{other:?}"),
    }
    assert!(std::fs::read_to_string(repo.path().join("src/lib.rs"))
        .unwrap()
        .contains("a + b"));
    assert!(std::fs::read_to_string(repo.path().join("src/parser.rs"))
        .unwrap()
        .contains("text.trim()"));
    assert!(repo.path().join("tests/add.rs").exists());
    assert!(!repo.path().join("README.md").exists());

    let changes = journal.changes();
    let kinds: Vec<(&str, &str)> = changes
        .iter()
        .map(|c| (c.change_type.as_str(), c.path()))
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("file_modify", "src/lib.rs"),
            ("file_modify", "src/parser.rs"),
            ("file_create", "tests/add.rs"),
            ("file_delete", "README.md")
        ]
    );
    assert_eq!(
        changes[3].change_data["before"],
        "# demo\n\nAdds numbers.\n"
    );
    let changed: Vec<(&str, ChangeKind)> = report
        .changes
        .iter()
        .map(|c| (c.path.as_str(), c.kind))
        .collect();
    assert_eq!(
        changed,
        vec![
            ("README.md", ChangeKind::Deleted),
            ("src/lib.rs", ChangeKind::Modified),
            ("src/parser.rs", ChangeKind::Modified),
            ("tests/add.rs", ChangeKind::Created)
        ]
    );
    let plan = report.plan.unwrap();
    assert_eq!(
        plan.files_to_touch,
        vec!["src/lib.rs", "src/parser.rs", "tests/add.rs", "README.md"]
    );
    assert_eq!(plan.tests_to_add, vec!["tests/add.rs"]);
    let status = git(repo.path(), &["status", "--porcelain"]);
    assert_eq!(
        status,
        " D README.md\n M src/lib.rs\n M src/parser.rs\n?? tests/\n"
    );
}

#[tokio::test]
async fn a_diff_that_does_not_apply_names_the_file_and_hunk() {
    let repo = git_repo();
    let stale = "--- a/src/parser.rs
+++ b/src/parser.rs
@@ -1,2 +1,2 @@
-pub struct Parser;
+pub struct Parser {}
 
@@ -3,3 +3,3 @@
 pub fn parse_number(text: &str) -> Option<i64> {
-    text.parse::<u8>().ok()
+    text.parse::<u16>().ok()
 }
";
    let body = format!("```diff\n{FIX_ADD}```\n```diff\n{stale}```\n");
    let journal = MemoryJournal::new();
    let err = agent()
        .run(
            repo.path(),
            &issue(&body),
            &journal,
            &(),
            &CancellationToken::new(),
        )
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::Patch(_)), "{err:?}");
    assert!(
        text.starts_with("diff block 2 of 2 does not apply: src/parser.rs: hunk 2 of 2 `@@ -3,3 +3,3 @@` does not match"),
        "{text}"
    );
    assert!(text.contains("git apply said"), "{text}");
    // Block 1 stays applied and journaled; block 2 touched nothing.
    assert!(std::fs::read_to_string(repo.path().join("src/lib.rs"))
        .unwrap()
        .contains("a + b"));
    assert_eq!(
        git(repo.path(), &["status", "--porcelain"]),
        " M src/lib.rs\n"
    );
    assert_eq!(journal.changes().len(), 1);
}

#[tokio::test]
async fn a_new_file_that_exists_and_a_missing_file_are_named() {
    let repo = git_repo();
    let exists = "--- /dev/null\n+++ b/README.md\n@@ -0,0 +1 @@\n+again\n";
    let err = agent()
        .run(
            repo.path(),
            &issue(&format!("```diff\n{exists}```")),
            &MemoryJournal::new(),
            &(),
            &CancellationToken::new(),
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("README.md") && err.to_string().contains("already exists"),
        "{err}"
    );

    let missing = "--- a/src/nope.rs\n+++ b/src/nope.rs\n@@ -1 +1 @@\n-a\n+b\n";
    let err = agent()
        .run(
            repo.path(),
            &issue(&format!("```diff\n{missing}```")),
            &MemoryJournal::new(),
            &(),
            &CancellationToken::new(),
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("`src/nope.rs` does not exist"),
        "{err}"
    );
    assert_eq!(git(repo.path(), &["status", "--porcelain"]), "");
}

#[tokio::test]
async fn patches_cannot_escape_the_workspace() {
    let repo = git_repo();
    for (path, fragment) in [
        ("../../etc/x", "`..` is not allowed"),
        (".git/hooks/pre-commit", ".git directory"),
    ] {
        let diff = format!("--- /dev/null\n+++ b/{path}\n@@ -0,0 +1 @@\n+pwned\n");
        let err = agent()
            .run(
                repo.path(),
                &issue(&format!("```diff\n{diff}```")),
                &MemoryJournal::new(),
                &(),
                &CancellationToken::new(),
            )
            .await
            .unwrap_err();
        assert!(err.to_string().contains(fragment), "{path}: {err}");
    }
    assert!(!repo.path().join(".git/hooks/pre-commit").exists());
}

#[tokio::test]
async fn no_diff_and_no_fix() {
    let repo = git_repo();
    let a = agent();
    let err = a
        .run(
            repo.path(),
            &issue("just words"),
            &MemoryJournal::new(),
            &(),
            &CancellationToken::new(),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no fenced ```diff block"), "{err}");
    let report = a
        .run(
            repo.path(),
            &issue(&format!("```diff\n{FIX_ADD}```")),
            &MemoryJournal::new(),
            &(),
            &CancellationToken::new(),
        )
        .await
        .unwrap();
    let err = a
        .fix(
            repo.path(),
            &report,
            "tests failed",
            &MemoryJournal::new(),
            &(),
            &CancellationToken::new(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unsupported(_)), "{err:?}");
}
