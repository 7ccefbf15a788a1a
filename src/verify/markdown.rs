//! The `## Verification` section of a PR description, in the spec's format:
//! `✅ Tests: 42 passed, 0 failed`, `✅ Lint: No issues`, `✅ Types: No errors`, and ❌ with
//! the failing names and a short excerpt of the output when something fails.

use std::fmt::Write;

use super::{CheckResult, Kind, Status};

/// Failing test names listed per check.
const MAX_NAMES: usize = 10;
/// Lines of output quoted under a failing check.
const EXCERPT_LINES: usize = 15;

pub(crate) fn render(checks: &[CheckResult]) -> String {
    let mut out = String::from("## Verification\n\n");
    for c in checks {
        let same_kind = checks.iter().filter(|o| o.kind == c.kind).count();
        let mut label = match c.kind {
            Kind::Tests => "Tests",
            Kind::Lint => "Lint",
            Kind::Types => "Types",
            Kind::Custom => "Custom",
        }
        .to_string();
        if same_kind > 1 || c.kind == Kind::Custom {
            let _ = write!(label, " (`{}`)", c.command);
        }
        let counts = match (c.passed, c.failed) {
            (Some(p), Some(f)) => {
                let mut s = format!("{p} passed, {f} failed");
                if let Some(sk) = c.skipped.filter(|&n| n > 0) {
                    let _ = write!(s, ", {sk} skipped");
                }
                Some(s)
            }
            _ => None,
        };
        let exit = c
            .exit_code
            .map_or_else(|| "no exit status".to_string(), |e| format!("exit {e}"));
        let (icon, text) = match c.status {
            Status::Passed => (
                "✅",
                match (c.kind, counts) {
                    (Kind::Tests, Some(s)) => s,
                    (Kind::Tests, None) => "passed (counts unknown: output not understood)".into(),
                    (Kind::Lint, _) => "No issues".into(),
                    (Kind::Types, _) => "No errors".into(),
                    (Kind::Custom, Some(s)) => s,
                    (Kind::Custom, None) => "passed".into(),
                },
            ),
            Status::Failed => (
                "❌",
                match (c.kind, counts) {
                    (_, Some(s)) => s,
                    (Kind::Tests, None) => format!("failed ({exit}, counts unknown)"),
                    (Kind::Lint, None) => format!("issues found ({exit})"),
                    (Kind::Types, None) => format!("errors found ({exit})"),
                    (Kind::Custom, None) => format!("failed ({exit})"),
                },
            ),
            Status::Error => (
                "❌",
                format!(
                    "could not run: {}",
                    c.error.as_deref().unwrap_or("unknown error")
                ),
            ),
            Status::Skipped => ("⏭️", "skipped (fail-fast stopped after a failure)".into()),
        };
        let blocking = if !c.critical && matches!(c.status, Status::Failed | Status::Error) {
            " (not blocking)"
        } else {
            ""
        };
        let _ = writeln!(out, "{icon} {label}: {text}{blocking}");
        if matches!(c.status, Status::Failed | Status::Error) {
            for name in c.failures.iter().take(MAX_NAMES) {
                let _ = writeln!(out, "  - `{}`", name.replace('`', "'"));
            }
            if c.failures.len() > MAX_NAMES {
                let _ = writeln!(out, "  - … and {} more", c.failures.len() - MAX_NAMES);
            }
            let excerpt = excerpt(&c.output_tail);
            if !excerpt.is_empty() {
                let fence = "`".repeat(longest_backtick_run(&excerpt).max(2) + 1);
                let _ = writeln!(out, "\n{fence}\n{excerpt}\n{fence}\n");
            }
        }
    }
    out
}

fn excerpt(tail: &str) -> String {
    let lines: Vec<&str> = tail.lines().filter(|l| !l.trim().is_empty()).collect();
    let start = lines.len().saturating_sub(EXCERPT_LINES);
    lines[start..]
        .iter()
        .map(|l| {
            if l.chars().count() > 200 {
                let cut: String = l.chars().take(200).collect();
                format!("{cut}…")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn longest_backtick_run(s: &str) -> usize {
    s.split(|c| c != '`').map(str::len).max().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(kind: Kind, status: Status, counts: Option<(u64, u64, u64)>) -> CheckResult {
        CheckResult {
            kind,
            command: "cmd".into(),
            critical: true,
            status,
            passed: counts.map(|c| c.0),
            failed: counts.map(|c| c.1),
            skipped: counts.map(|c| c.2),
            duration_ms: 1,
            exit_code: Some(if status == Status::Passed { 0 } else { 1 }),
            output_tail: "line one\n```\nassert 1 == 2\n".into(),
            output_bytes: 30,
            failures: vec!["tests::it_fails".into()],
            error: None,
        }
    }

    #[test]
    fn renders_the_spec_format() {
        let md = render(&[
            check(Kind::Tests, Status::Passed, Some((42, 0, 0))),
            check(Kind::Lint, Status::Passed, None),
            check(Kind::Types, Status::Passed, None),
        ]);
        assert_eq!(
            md,
            "## Verification\n\n✅ Tests: 42 passed, 0 failed\n✅ Lint: No issues\n✅ Types: No errors\n"
        );
    }

    #[test]
    fn failures_name_tests_and_quote_output() {
        let md = render(&[
            check(Kind::Tests, Status::Failed, Some((40, 2, 1))),
            check(Kind::Lint, Status::Failed, None),
            check(Kind::Types, Status::Skipped, None),
        ]);
        assert!(
            md.contains("❌ Tests: 40 passed, 2 failed, 1 skipped\n  - `tests::it_fails`\n"),
            "{md}"
        );
        assert!(
            md.contains("\n````\nline one\n```\nassert 1 == 2\n````\n"),
            "{md}"
        );
        assert!(md.contains("❌ Lint: issues found (exit 1)"), "{md}");
        assert!(md.contains("⏭️ Types: skipped"), "{md}");
    }
}
