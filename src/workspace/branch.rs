//! Branch names for issues: `fix/issue-{n}` for bugs, `feature/issue-{n}` otherwise.

/// Words in a title that make an issue a bug report.
const BUG_WORDS: &[&str] = &[
    "bug",
    "bugs",
    "fix",
    "fixes",
    "crash",
    "crashes",
    "crashed",
    "error",
    "errors",
    "broken",
    "breaks",
    "fail",
    "fails",
    "failing",
    "failure",
    "regression",
    "panic",
    "panics",
    "exception",
    "wrong",
    "incorrect",
    "hang",
    "hangs",
    "leak",
];

/// Phrases (checked on the lower-cased title) that make an issue a bug report.
const BUG_PHRASES: &[&str] = &[
    "doesn't work",
    "does not work",
    "not working",
    "can't ",
    "cannot ",
];

/// Whether an issue is a bug: a label naming `bug` (`bug`, `type: bug`, `kind/bug`) or a
/// bug-like title ("Crash when…", "Login fails…", "… doesn't work").
pub fn is_bug(labels: &[String], title: &str) -> bool {
    let label_says_bug = labels.iter().any(|l| {
        l.to_lowercase()
            .split(|c: char| !c.is_ascii_alphanumeric())
            .any(|w| w == "bug" || w == "bugfix" || w == "defect")
    });
    if label_says_bug {
        return true;
    }
    let lower = title.to_lowercase();
    lower
        .split(|c: char| !c.is_alphanumeric())
        .any(|w| BUG_WORDS.contains(&w))
        || BUG_PHRASES.iter().any(|p| lower.contains(p))
}

/// The branch name before any suffix: `fix/issue-{n}` or `feature/issue-{n}`.
pub fn branch_base_name(issue: u64, labels: &[String], title: &str) -> String {
    if is_bug(labels, title) {
        format!("fix/issue-{issue}")
    } else {
        format!("feature/issue-{issue}")
    }
}

/// Whether `branch` is one baton names for issue `issue`: `fix/issue-N` or `feature/issue-N`,
/// bare or with a `-2`-style suffix.
pub fn is_issue_branch(branch: &str, issue: u64) -> bool {
    let Some(rest) = branch
        .strip_prefix("fix/")
        .or_else(|| branch.strip_prefix("feature/"))
        .and_then(|b| b.strip_prefix(&format!("issue-{issue}")))
    else {
        return false;
    };
    rest.is_empty()
        || rest
            .strip_prefix('-')
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// The first of `base`, `base-2`, `base-3`, … for which `taken` is false.
pub(crate) fn first_free(base: &str, taken: impl Fn(&str) -> bool) -> String {
    if !taken(base) {
        return base.to_string();
    }
    (2..)
        .map(|n| format!("{base}-{n}"))
        .find(|name| !taken(name))
        .expect("an unbounded range always yields a free name")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_branches_are_recognised_and_no_others() {
        for yes in [
            "fix/issue-7",
            "feature/issue-7",
            "fix/issue-7-2",
            "feature/issue-7-13",
        ] {
            assert!(is_issue_branch(yes, 7), "{yes}");
        }
        for no in [
            "fix/issue-70",
            "fix/issue-7-",
            "fix/issue-7-x",
            "main",
            "fix/issue-8",
            "x/issue-7",
        ] {
            assert!(!is_issue_branch(no, 7), "{no}");
        }
    }

    fn check(labels: &[&str], title: &str, expected: &str) {
        let labels: Vec<String> = labels.iter().map(|s| s.to_string()).collect();
        assert_eq!(
            branch_base_name(7, &labels, title),
            expected,
            "{labels:?} {title:?}"
        );
    }

    #[test]
    fn names_bugs_and_features() {
        check(&["bug"], "Add dark mode", "fix/issue-7");
        check(&["type: bug"], "Add dark mode", "fix/issue-7");
        check(&["kind/bug"], "x", "fix/issue-7");
        check(&["debugging"], "Add dark mode", "feature/issue-7");
        check(&[], "Crash when saving", "fix/issue-7");
        check(&[], "Login fails with SSO", "fix/issue-7");
        check(&[], "Export doesn't work on Windows", "fix/issue-7");
        check(&[], "Add dark mode", "feature/issue-7");
        check(
            &["enhancement"],
            "Support prefix matching",
            "feature/issue-7",
        );
    }

    #[test]
    fn suffixes_taken_names() {
        let taken = ["fix/issue-7", "fix/issue-7-2"];
        assert_eq!(
            first_free("fix/issue-7", |n| taken.contains(&n)),
            "fix/issue-7-3"
        );
        assert_eq!(
            first_free("fix/issue-8", |n| taken.contains(&n)),
            "fix/issue-8"
        );
    }
}
