//! Test counts read from runners' real output, line by line as it streams.
//!
//! Understood: cargo test (`test result:` lines, summed over every binary and doc-tests),
//! pytest (the closing `N passed, M failed in Ts` line), jest (`Tests:`), vitest (`Tests  … (N)`),
//! mocha (`N passing` / `N failing` / `N pending`), node's test runner (TAP `# pass N` and the
//! spec reporter's `ℹ pass N`) and go test -v (`--- PASS/FAIL/SKIP:` lines). Summaries of
//! several runs in one output (a Makefile running two suites) are added up. Output with none of
//! these gives `None`: counts are never guessed.

use serde::{Deserialize, Serialize};

/// Pass/fail/skip counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Tests that passed.
    pub passed: u64,
    /// Tests that failed (pytest errors count here).
    pub failed: u64,
    /// Tests skipped, ignored, pending or todo.
    pub skipped: u64,
}

impl Counts {
    fn add(&mut self, other: Counts) {
        self.passed += other.passed;
        self.failed += other.failed;
        self.skipped += other.skipped;
    }
}

/// At most this many failing test names are kept.
const MAX_FAILURES: usize = 20;
/// Lines longer than this are not summaries; skipping them keeps huge outputs cheap.
const MAX_SUMMARY_LINE: usize = 600;

/// Lines shorter than this are not summaries (`# pass 1` is 8); skipping them keeps a flood of
/// tiny lines cheap.
const MIN_SUMMARY_LINE: usize = 6;

/// Counts the whole of `output` at once (for tests and callers that have it all).
pub fn parse_counts(output: &str) -> (Option<Counts>, Vec<String>) {
    let mut p = Parser::default();
    for line in output.lines() {
        p.line(line);
    }
    p.finish()
}

/// Streaming parser: feed lines, then [`Parser::finish`].
#[derive(Default)]
pub(crate) struct Parser {
    total: Option<Counts>,
    /// go test -v counts per `--- X:` line; only used when no other summary was seen.
    go: Option<Counts>,
    /// mocha's three summary lines arrive separately.
    mocha: Option<Counts>,
    /// node's TAP/spec summary lines arrive separately.
    node: Option<Counts>,
    failures: Vec<String>,
    mocha_names: Vec<String>,
}

impl Parser {
    fn summary(&mut self, c: Counts) {
        self.total.get_or_insert_with(Counts::default).add(c);
    }

    fn failure(&mut self, name: &str) {
        let name = name.trim();
        if !name.is_empty()
            && self.failures.len() < MAX_FAILURES
            && !self.failures.iter().any(|f| f == name)
        {
            self.failures.push(name.to_string());
        }
    }

    /// Flushes a group of separately printed summary lines (mocha, node) into the total.
    fn flush_groups(&mut self) {
        if let Some(c) = self.mocha.take() {
            self.summary(c);
        }
        if let Some(c) = self.node.take() {
            self.summary(c);
        }
    }

    /// Feeds one line of output (without its newline).
    pub fn line(&mut self, raw: &str) {
        if raw.len() > MAX_SUMMARY_LINE || raw.len() < MIN_SUMMARY_LINE {
            return;
        }
        let stripped;
        let line = if raw.contains('\x1b') {
            stripped = strip_ansi(raw);
            stripped.as_str()
        } else {
            raw
        };
        let t = line.trim();
        if t.is_empty() {
            return;
        }
        // cargo test
        if let Some(rest) = t.strip_prefix("test result: ") {
            let pairs = number_words(rest.split_once(". ").map_or(rest, |(_, r)| r));
            let mut c = Counts::default();
            for (n, w) in pairs {
                match w {
                    "passed" => c.passed += n,
                    "failed" => c.failed += n,
                    "ignored" => c.skipped += n,
                    _ => {}
                }
            }
            self.summary(c);
            return;
        }
        if let Some(name) = t
            .strip_prefix("test ")
            .and_then(|r| r.strip_suffix(" ... FAILED"))
        {
            self.failure(name);
            return;
        }
        // pytest
        if let Some(name) = t
            .strip_prefix("FAILED ")
            .or_else(|| t.strip_prefix("ERROR "))
        {
            if name.contains("::") || name.ends_with(".py") {
                self.failure(name.split(" - ").next().unwrap_or(name));
                return;
            }
        }
        if let Some(c) = pytest_summary(t) {
            self.summary(c);
            return;
        }
        // jest
        if let Some(rest) = t.strip_prefix("Tests:") {
            let mut c = Counts::default();
            for (n, w) in number_words(rest) {
                match w {
                    "passed" => c.passed += n,
                    "failed" => c.failed += n,
                    "skipped" | "todo" | "pending" => c.skipped += n,
                    _ => {}
                }
            }
            self.summary(c);
            return;
        }
        if let Some(name) = t.strip_prefix("✕ ") {
            self.failure(strip_timing(name));
            return;
        }
        // vitest: "Tests  1 failed | 2 passed (3)"
        if let Some(rest) = t.strip_prefix("Tests ") {
            if rest.trim_end().ends_with(')') && !rest.contains(':') {
                let mut c = Counts::default();
                for (n, w) in number_words(rest.rsplit_once('(').map_or(rest, |(a, _)| a)) {
                    match w {
                        "passed" => c.passed += n,
                        "failed" => c.failed += n,
                        "skipped" | "todo" => c.skipped += n,
                        _ => {}
                    }
                }
                self.summary(c);
                return;
            }
        }
        if let Some(rest) = t.strip_prefix("FAIL ") {
            if rest.contains(" > ") {
                self.failure(rest.trim());
                return;
            }
        }
        // mocha
        for (word, slot) in [("passing", 0), ("failing", 1), ("pending", 2)] {
            if let Some((n, rest)) = leading_number(t) {
                if rest.starts_with(word) {
                    let c = self.mocha.get_or_insert_with(Counts::default);
                    match slot {
                        0 => c.passed = n,
                        1 => c.failed = n,
                        _ => c.skipped = n,
                    }
                    if slot == 1 {
                        // Names listed before the summary belong to this run.
                        for name in std::mem::take(&mut self.mocha_names) {
                            self.failure(&name);
                        }
                    }
                    return;
                }
            }
        }
        if let Some((_, rest)) = leading_number(t) {
            if let Some(name) = rest.strip_prefix(") ") {
                if self.mocha_names.len() < MAX_FAILURES {
                    self.mocha_names
                        .push(name.trim_end_matches(':').to_string());
                }
                return;
            }
        }
        // node's test runner: TAP ("# pass 2") and spec ("ℹ pass 2")
        let node_line = t.strip_prefix("# ").or_else(|| t.strip_prefix("ℹ "));
        if let Some(rest) = node_line {
            let mut words = rest.split_whitespace();
            if let (Some(w), Some(n), None) = (words.next(), words.next(), words.next()) {
                if let Ok(n) = n.parse::<u64>() {
                    let slot = match w {
                        "tests" => {
                            // A new run's summary starts; close the previous one.
                            self.flush_groups();
                            self.node = Some(Counts::default());
                            return;
                        }
                        "pass" => 0,
                        "fail" => 1,
                        "cancelled" => 4,
                        "skipped" | "todo" => 2,
                        _ => 3,
                    };
                    if slot != 3 {
                        let c = self.node.get_or_insert_with(Counts::default);
                        match slot {
                            0 => c.passed = n,
                            1 | 4 => c.failed += n,
                            _ => c.skipped += n,
                        }
                        return;
                    }
                }
            }
        }
        if let Some(rest) = t.strip_prefix("not ok ") {
            if !rest.contains("# SKIP") && !rest.contains("# TODO") {
                let name = rest.split_once(" - ").map_or(rest, |(_, n)| n);
                self.failure(name);
            }
            return;
        }
        if let Some(name) = t.strip_prefix("✖ ") {
            if !name.starts_with("failing tests") {
                self.failure(strip_timing(name));
            }
            return;
        }
        // go test -v
        for (prefix, slot) in [("--- PASS: ", 0), ("--- FAIL: ", 1), ("--- SKIP: ", 2)] {
            if let Some(rest) = t.strip_prefix(prefix) {
                let c = self.go.get_or_insert_with(Counts::default);
                match slot {
                    0 => c.passed += 1,
                    1 => c.failed += 1,
                    _ => c.skipped += 1,
                }
                if slot == 1 {
                    self.failure(strip_timing(rest));
                }
                return;
            }
        }
    }

    /// The counts (`None` when no runner's summary was recognised) and failing test names.
    pub fn finish(mut self) -> (Option<Counts>, Vec<String>) {
        self.flush_groups();
        let counts = match (self.total, self.go) {
            (Some(mut t), Some(g)) => {
                t.add(g);
                Some(t)
            }
            (t, g) => t.or(g),
        };
        (counts, self.failures)
    }
}

/// pytest's closing line, with or without the `=` bars: `1 failed, 2 passed in 0.12s`.
fn pytest_summary(t: &str) -> Option<Counts> {
    let t = t.trim_matches(|c| c == '=' || c == ' ');
    if t.starts_with("no tests ran in ") {
        return Some(Counts::default());
    }
    let (counts, time) = t.rsplit_once(" in ")?;
    let secs = time.split_whitespace().next()?;
    if !secs.ends_with('s') || secs[..secs.len() - 1].parse::<f64>().is_err() {
        return None;
    }
    let pairs = number_words(counts);
    if pairs.is_empty() || counts.split(',').count() != pairs.len() {
        return None;
    }
    let mut c = Counts::default();
    for (n, w) in pairs {
        match w {
            "passed" | "xpassed" => c.passed += n,
            "failed" | "error" | "errors" => c.failed += n,
            "skipped" | "xfailed" => c.skipped += n,
            "deselected" | "warning" | "warnings" | "rerun" => {}
            _ => return None,
        }
    }
    Some(c)
}

/// `"1 failed, 2 passed | 3 skipped"` → `[(1, "failed"), (2, "passed"), (3, "skipped")]`.
fn number_words(text: &str) -> Vec<(u64, &str)> {
    text.split([',', ';', '|'])
        .filter_map(|part| {
            let mut w = part.split_whitespace();
            let n = w.next()?.parse().ok()?;
            let word = w.next()?.trim_end_matches(['.', ',']);
            Some((n, word))
        })
        .collect()
}

fn leading_number(t: &str) -> Option<(u64, &str)> {
    let end = t.find(|c: char| !c.is_ascii_digit())?;
    if end == 0 {
        return None;
    }
    Some((t[..end].parse().ok()?, t[end..].trim_start()))
}

/// `"name (5 ms)"` / `"TestX (0.00s)"` → `"name"`.
fn strip_timing(name: &str) -> &str {
    match name.rsplit_once(" (") {
        Some((head, tail))
            if tail.ends_with(')') && tail.contains(|c: char| c.is_ascii_digit()) =>
        {
            head
        }
        _ => name,
    }
    .trim()
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            if chars.next() == Some('[') {
                for d in chars.by_ref() {
                    if d.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(output: &str, expected: Option<(u64, u64, u64)>, names: &[&str]) {
        let (counts, failures) = parse_counts(output);
        let got = counts.map(|c| (c.passed, c.failed, c.skipped));
        assert_eq!(got, expected, "counts of:\n{output}");
        assert_eq!(failures, names, "names of:\n{output}");
    }

    #[test]
    fn cargo_sums_every_binary() {
        check(
            "running 2 tests\ntest a::ok ... ok\ntest a::bad ... FAILED\n\
             test result: FAILED. 1 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s\n\
             running 3 tests\n\
             test result: ok. 2 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s\n\
             Doc-tests x\n\
             test result: ok. 4 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.20s\n",
            Some((7, 1, 1)),
            &["a::bad"],
        );
    }

    #[test]
    fn pytest_summaries() {
        check(
            "tests/test_a.py .F.s\n=== FAILURES ===\nFAILED tests/test_a.py::test_two - assert 1 == 2\n\
             ========== 1 failed, 2 passed, 1 skipped in 0.12s ==========\n",
            Some((2, 1, 1)),
            &["tests/test_a.py::test_two"],
        );
        check("3 passed, 1 warning in 0.01s\n", Some((3, 0, 0)), &[]);
        check("1 error in 0.03s\n", Some((0, 1, 0)), &[]);
        check("===== no tests ran in 0.01s =====\n", Some((0, 0, 0)), &[]);
        check("built 3 targets in 2s\n", None, &[]);
    }

    #[test]
    fn jest_and_vitest() {
        check(
            "  ✕ adds numbers (5 ms)\n  ✓ subtracts (1 ms)\nTest Suites: 1 failed, 1 total\n\
             Tests:       1 failed, 1 skipped, 2 passed, 4 total\nSnapshots:   0 total\n",
            Some((2, 1, 1)),
            &["adds numbers"],
        );
        check(
            " FAIL  src/a.test.ts > math > adds\n Test Files  1 failed | 1 passed (2)\n      Tests  1 failed | 2 passed | 1 skipped (4)\n   Duration  300ms\n",
            Some((2, 1, 1)),
            &["src/a.test.ts > math > adds"],
        );
    }

    #[test]
    fn mocha() {
        check(
            "  math\n    ✓ adds\n    1) subtracts\n\n  1 passing (5ms)\n  1 failing\n  2 pending\n\n  1) math\n       subtracts:\n",
            Some((1, 1, 2)),
            &["subtracts"],
        );
    }

    #[test]
    fn node_test_runner_tap_and_spec() {
        check(
            "TAP version 13\n# Subtest: adds\nok 1 - adds\nnot ok 2 - subtracts\nok 3 - later # SKIP\n1..3\n\
             # tests 3\n# suites 0\n# pass 1\n# fail 1\n# cancelled 0\n# skipped 1\n# todo 0\n# duration_ms 40\n",
            Some((1, 1, 1)),
            &["subtracts"],
        );
        check(
            "✔ adds (0.5ms)\n✖ subtracts (1.2ms)\nℹ tests 2\nℹ suites 0\nℹ pass 1\nℹ fail 1\nℹ cancelled 0\nℹ skipped 0\nℹ todo 0\n✖ failing tests:\n✖ subtracts (1.2ms)\n",
            Some((1, 1, 0)),
            &["subtracts"],
        );
    }

    #[test]
    fn go_test_verbose() {
        check(
            "=== RUN   TestA\n--- PASS: TestA (0.00s)\n=== RUN   TestB\n--- FAIL: TestB (0.00s)\n    --- SKIP: TestB/sub (0.00s)\nFAIL\nFAIL\tx\t0.01s\n",
            Some((1, 1, 1)),
            &["TestB"],
        );
    }

    #[test]
    fn unknown_output_has_no_counts() {
        check("all good\nDone.\n", None, &[]);
        check("", None, &[]);
    }

    #[test]
    fn two_suites_in_one_output_add_up() {
        check(
            "test result: ok. 2 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out\n5 passed in 0.1s\n",
            Some((7, 0, 0)),
            &[],
        );
    }

    #[test]
    fn colours_are_ignored() {
        check("\x1b[32m3 passed\x1b[0m in 0.01s\n", Some((3, 0, 0)), &[]);
    }
}
