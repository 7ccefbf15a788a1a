//! The repository's own CI, as a run waits for it: which checks on the head commit count, whether
//! they are done, and what of a failing one's log the agent gets. Pure: the waiting step reads
//! the checks from the forge and asks [`verdict`]; nothing here does IO or keeps time.
//!
//! baton's own check (`baton / verify`) is never one of the checks waited for: it is what baton
//! measured, and the CI is what the repository runs.
//!
//! [`wake`] is the one part with state: which commits are waited on, so that news of one wakes
//! its waiter before the next poll.

pub mod wake;

use crate::forge::checks::{CheckRun, BATON_CHECK};

/// The most of one failing check's log handed to the agent: enough for a stack trace and the
/// assertion, little enough for a prompt.
pub const MAX_EXCERPT_BYTES: usize = 6_000;

/// Lines kept before the first line that reads as the failure, for its context.
const CONTEXT_LINES: usize = 10;

/// Where the checks on one commit stand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Not all required checks have finished (or none has appeared yet).
    Pending {
        /// Finished checks among those counted.
        done: usize,
        /// Checks counted: the required ones, or all seen so far.
        total: usize,
    },
    /// Every required check finished and passed.
    Passed {
        /// Their names.
        names: Vec<String>,
    },
    /// Every required check finished, and these did not pass.
    Failed {
        /// The failing checks.
        failing: Vec<CheckRun>,
        /// The names of all counted checks.
        names: Vec<String>,
    },
}

/// The verdict of `checks` (those of one commit) for `required` (empty: every check there,
/// once at least one has appeared). A required check not yet seen is pending.
pub fn verdict(checks: &[CheckRun], required: &[String]) -> Verdict {
    let theirs: Vec<&CheckRun> = checks.iter().filter(|c| c.name != BATON_CHECK).collect();
    let counted: Vec<Option<&CheckRun>> = if required.is_empty() {
        theirs.iter().map(|c| Some(*c)).collect()
    } else {
        required
            .iter()
            .map(|name| theirs.iter().copied().find(|c| &c.name == name))
            .collect()
    };
    let total = counted.len();
    let done = counted
        .iter()
        .filter(|c| c.is_some_and(|c| c.passed() || c.failed()))
        .count();
    if total == 0 || done < total {
        return Verdict::Pending { done, total };
    }
    let names: Vec<String> = counted.iter().flatten().map(|c| c.name.clone()).collect();
    let failing: Vec<CheckRun> = counted
        .into_iter()
        .flatten()
        .filter(|c| c.failed())
        .cloned()
        .collect();
    if failing.is_empty() {
        Verdict::Passed { names }
    } else {
        Verdict::Failed { failing, names }
    }
}

/// "waiting for CI on `abc1234` (3 of 5 checks done)": what every interface shows of a wait.
pub fn waiting_line(sha: &str, done: usize, total: usize) -> String {
    let short = sha.get(..7).unwrap_or(sha);
    if total == 0 {
        format!("waiting for CI on `{short}` (no checks yet)")
    } else {
        format!("waiting for CI on `{short}` ({done} of {total} checks done)")
    }
}

/// A failing check's log cut to its failure: from a few lines before the first line that reads
/// as one (an error, a failure, a panic, a traceback) on, at most [`MAX_EXCERPT_BYTES`]; with no
/// such line, its end. Cut on line boundaries, and says what was left out.
pub fn excerpt(log: &str) -> String {
    let log = log.trim_end();
    if log.len() <= MAX_EXCERPT_BYTES {
        return log.to_string();
    }
    let lines: Vec<&str> = log.lines().collect();
    let first = lines.iter().position(|l| reads_as_failure(l));
    let start = first.map_or(0, |i| i.saturating_sub(CONTEXT_LINES));
    let mut out = String::new();
    if start > 0 {
        out.push_str(&format!("[… {start} earlier lines left out]\n"));
    }
    let mut kept = 0;
    for line in &lines[start..] {
        if out.len() + line.len() + 1 > MAX_EXCERPT_BYTES {
            break;
        }
        out.push_str(line);
        out.push('\n');
        kept += 1;
    }
    if first.is_none() || kept == 0 {
        // No failure line to anchor on: the end is where CI says how it ended.
        let mut tail: Vec<&str> = Vec::new();
        let mut size = 0;
        for line in lines.iter().rev() {
            if size + line.len() + 1 > MAX_EXCERPT_BYTES - 64 {
                break;
            }
            size += line.len() + 1;
            tail.push(line);
        }
        tail.reverse();
        let left = lines.len() - tail.len();
        return format!("[… {left} earlier lines left out]\n{}", tail.join("\n"));
    }
    let left = lines.len() - start - kept;
    if left > 0 {
        out.push_str(&format!("[… {left} later lines left out]"));
    }
    out.trim_end().to_string()
}

/// Whether a log line reads as the failure itself.
fn reads_as_failure(line: &str) -> bool {
    let lower = line.to_ascii_lowercase();
    [
        "error",
        "failed",
        "failure",
        "panicked",
        "traceback",
        "assert",
    ]
    .iter()
    .any(|word| lower.contains(word))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forge::checks::{CheckStatus, Conclusion};

    fn check(name: &str, conclusion: Option<Conclusion>) -> CheckRun {
        CheckRun {
            id: 1,
            name: name.into(),
            head_sha: "a".repeat(40),
            status: if conclusion.is_some() {
                CheckStatus::Completed
            } else {
                CheckStatus::InProgress
            },
            conclusion,
            title: String::new(),
            summary: String::new(),
            details_url: None,
            log: None,
            annotations: vec![],
        }
    }

    #[test]
    fn verdicts_count_the_required_checks_or_all_but_batons_own() {
        use Conclusion::*;
        let ok = Some(Success);
        let bad = Some(Failure);
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        // Nothing yet, or only baton's own check: pending, none counted.
        assert_eq!(verdict(&[], &[]), Verdict::Pending { done: 0, total: 0 });
        assert_eq!(
            verdict(&[check(BATON_CHECK, bad)], &[]),
            Verdict::Pending { done: 0, total: 0 }
        );
        // All checks: one running keeps it pending.
        assert_eq!(
            verdict(&[check("a", ok), check("b", None)], &[]),
            Verdict::Pending { done: 1, total: 2 }
        );
        assert_eq!(
            verdict(&[check("a", ok), check("b", Some(Skipped))], &[]),
            Verdict::Passed {
                names: names(&["a", "b"])
            }
        );
        // Required: an unseen one is pending; others' failures do not count.
        let required = names(&["a", "c"]);
        assert_eq!(
            verdict(&[check("a", ok), check("b", bad)], &required),
            Verdict::Pending { done: 1, total: 2 }
        );
        assert_eq!(
            verdict(
                &[check("a", ok), check("b", bad), check("c", ok)],
                &required
            ),
            Verdict::Passed {
                names: names(&["a", "c"])
            }
        );
        match verdict(&[check("a", Some(TimedOut)), check("c", ok)], &required) {
            Verdict::Failed { failing, names: n } => {
                assert_eq!(failing.len(), 1);
                assert_eq!(failing[0].name, "a");
                assert_eq!(n, names(&["a", "c"]));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_waiting_line_names_the_commit_and_the_count() {
        let sha = "abc1234def".repeat(4);
        assert_eq!(
            waiting_line(&sha, 3, 5),
            "waiting for CI on `abc1234` (3 of 5 checks done)"
        );
        assert_eq!(
            waiting_line(&sha, 0, 0),
            "waiting for CI on `abc1234` (no checks yet)"
        );
    }

    #[test]
    fn excerpts_keep_the_failure_and_stay_bounded() {
        assert_eq!(excerpt("short log\n"), "short log");
        let mut log = String::new();
        for i in 0..2_000 {
            log.push_str(&format!("compiling crate {i}\n"));
        }
        log.push_str("thread 'main' panicked at src/lib.rs:3:5:\nassertion failed\n");
        for i in 0..2_000 {
            log.push_str(&format!("cleanup {i}\n"));
        }
        let cut = excerpt(&log);
        assert!(cut.len() <= MAX_EXCERPT_BYTES + 64, "{}", cut.len());
        assert!(cut.contains("panicked at src/lib.rs:3:5"), "{cut}");
        assert!(cut.contains("compiling crate 1999"), "context before it");
        assert!(cut.starts_with("[… 1990 earlier lines left out]"), "{cut}");
        assert!(cut.ends_with("later lines left out]"), "{cut}");
        // No failure line: the end.
        let plain: String = (0..3_000).map(|i| format!("line {i}\n")).collect();
        let cut = excerpt(&plain);
        assert!(
            cut.ends_with("line 2999") && cut.len() <= MAX_EXCERPT_BYTES,
            "{cut}"
        );
    }
}
