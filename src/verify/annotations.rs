//! Findings on lines: what a check's output says about a file and a line, read from the forms
//! the common tools print, so baton's check on the PR can show each failure beside its line.
//!
//! Read, in order of trust: cargo's JSON messages (`--message-format=json`), rustc's own
//! `--> file:line:col` under an `error`/`warning` header, a Rust test's `panicked at
//! file:line:col`, eslint's default ("stylish") listing, and the `file:line[:col]: message`
//! line most other tools print (pytest's tracebacks, mypy, ruff, flake8, eslint's unix format,
//! compilers). Only paths inside the repository are kept (relative, or under its root, made
//! relative): an annotation elsewhere would not land on the diff. Pure: no IO.

use std::sync::OnceLock;

use regex::Regex;
use serde::Deserialize;

use crate::forge::checks::{Annotation, AnnotationLevel};

/// More than this per check is noise beside a diff; GitHub takes 50 per request in all.
pub const MAX_PER_CHECK: usize = 30;

/// The longest message kept for one annotation.
const MAX_MESSAGE_CHARS: usize = 2_000;

/// The findings in `output`, a check's output, for the repository at `root` (an absolute
/// path in the output under it is made relative), first seen first, each place once.
pub fn parse(output: &str, root: &str) -> Vec<Annotation> {
    let lines: Vec<&str> = output.lines().collect();
    let mut found: Vec<Annotation> = Vec::new();
    let push = |found: &mut Vec<Annotation>, a: Option<Annotation>| {
        if let Some(a) = a {
            let seen = found
                .iter()
                .any(|b| b.path == a.path && b.start_line == a.start_line);
            if !seen && found.len() < MAX_PER_CHECK {
                found.push(a);
            }
        }
    };
    // rustc's header (`error[E0308]: mismatched types`) waits for its `-->` line.
    let mut header: Option<(AnnotationLevel, String)> = None;
    // eslint's stylish format names the file on a line of its own, then its findings.
    let mut eslint_file: Option<String> = None;
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i].trim_end();
        i += 1;
        if line.starts_with('{') {
            push(&mut found, cargo_json(line, root));
            continue;
        }
        if let Some(c) =
            re(&RUSTC_HEADER, r"^(error|warning)(\[[A-Z0-9]+\])?: (.+)$").captures(line)
        {
            let level = if &c[1] == "error" {
                AnnotationLevel::Failure
            } else {
                AnnotationLevel::Warning
            };
            header = Some((level, c[3].to_string()));
            continue;
        }
        if let Some(c) = re(&RUSTC_ARROW, r"^\s*--> (.+?):(\d+):(\d+)$").captures(line) {
            if let Some((level, message)) = header.take() {
                push(&mut found, annotation(&c[1], &c[2], level, &message, root));
            }
            continue;
        }
        if let Some(c) = re(
            &PANIC,
            r"^thread '([^']*)'(?: \(\d+\))? panicked at (?:'(.*)', )?(.+?):(\d+):(\d+):?$",
        )
        .captures(line)
        {
            // Since Rust 1.73 the message is on the next line; before, inside quotes. Newer
            // toolchains name the thread's id after its name: `'tests::one' (63)`.
            let said = c.get(2).map(|m| m.as_str().to_string()).or_else(|| {
                lines
                    .get(i)
                    .map(|next| next.trim().to_string())
                    .filter(|n| !n.is_empty() && !n.starts_with("note:"))
            });
            let message = match said {
                Some(said) => format!("test `{}` panicked: {said}", &c[1]),
                None => format!("test `{}` panicked", &c[1]),
            };
            push(
                &mut found,
                annotation(&c[3], &c[4], AnnotationLevel::Failure, &message, root),
            );
            continue;
        }
        if re(
            &ESLINT_FILE,
            r"^(/\S+|\S+/\S+)\.(js|jsx|ts|tsx|mjs|cjs|vue)$",
        )
        .is_match(line)
        {
            eslint_file = Some(line.to_string());
            continue;
        }
        if let Some(file) = &eslint_file {
            if let Some(c) = re(
                &ESLINT_ITEM,
                r"^\s+(\d+):(\d+)\s+(error|warning)\s+(.+?)(\s{2,}\S+)?$",
            )
            .captures(line)
            {
                let level = if &c[3] == "error" {
                    AnnotationLevel::Failure
                } else {
                    AnnotationLevel::Warning
                };
                let message = match c.get(5) {
                    Some(rule) => format!("{} ({})", &c[4], rule.as_str().trim()),
                    None => c[4].to_string(),
                };
                push(&mut found, annotation(file, &c[1], level, &message, root));
                continue;
            }
            if line.trim().is_empty() {
                eslint_file = None;
            }
        }
        if let Some(c) = re(
            &FILE_LINE,
            r"^([A-Za-z0-9_./-]+\.[A-Za-z0-9]+):(\d+)(?::\d+)?:\s*(.+)$",
        )
        .captures(line)
        {
            let message = c[3].trim();
            let level = if message.to_ascii_lowercase().starts_with("warning") {
                AnnotationLevel::Warning
            } else {
                AnnotationLevel::Failure
            };
            push(&mut found, annotation(&c[1], &c[2], level, message, root));
        }
    }
    found
}

static RUSTC_HEADER: OnceLock<Regex> = OnceLock::new();
static RUSTC_ARROW: OnceLock<Regex> = OnceLock::new();
static PANIC: OnceLock<Regex> = OnceLock::new();
static ESLINT_FILE: OnceLock<Regex> = OnceLock::new();
static ESLINT_ITEM: OnceLock<Regex> = OnceLock::new();
static FILE_LINE: OnceLock<Regex> = OnceLock::new();

/// A pattern compiled once (the patterns are constants, tested below).
fn re(cell: &'static OnceLock<Regex>, pattern: &str) -> &'static Regex {
    cell.get_or_init(|| Regex::new(pattern).expect("the annotation patterns compile (tested)"))
}

/// One of cargo's JSON lines: a compiler message with a primary span.
fn cargo_json(line: &str, root: &str) -> Option<Annotation> {
    #[derive(Deserialize)]
    struct Line {
        reason: String,
        message: Option<Message>,
    }
    #[derive(Deserialize)]
    struct Message {
        level: String,
        message: String,
        #[serde(default)]
        spans: Vec<Span>,
    }
    #[derive(Deserialize)]
    struct Span {
        file_name: String,
        line_start: u64,
        line_end: u64,
        is_primary: bool,
    }
    let parsed: Line = serde_json::from_str(line).ok()?;
    if parsed.reason != "compiler-message" {
        return None;
    }
    let message = parsed.message?;
    let level = match message.level.as_str() {
        "error" | "error: internal compiler error" => AnnotationLevel::Failure,
        "warning" => AnnotationLevel::Warning,
        _ => return None,
    };
    let span = message.spans.iter().find(|s| s.is_primary)?;
    let mut a = annotation(
        &span.file_name,
        &span.line_start.to_string(),
        level,
        &message.message,
        root,
    )?;
    a.end_line = span.line_end.max(a.start_line);
    Some(a)
}

/// An annotation on `path` (made relative to `root`; `None` outside it) at `line`.
fn annotation(
    path: &str,
    line: &str,
    level: AnnotationLevel,
    message: &str,
    root: &str,
) -> Option<Annotation> {
    let line: u64 = line.parse().ok().filter(|n| *n > 0)?;
    let path = relative(path, root)?;
    Some(Annotation {
        path,
        start_line: line,
        end_line: line,
        level,
        message: crate::forge::checks::cut(message.trim(), MAX_MESSAGE_CHARS),
    })
}

/// `path` relative to the repository's root, or `None` when it is outside it (`..`, another
/// absolute path, a registry's source).
fn relative(path: &str, root: &str) -> Option<String> {
    let path = path.strip_prefix("./").unwrap_or(path);
    let path = if path.starts_with('/') {
        let root = root.trim_end_matches('/');
        path.strip_prefix(root)?.strip_prefix('/')?
    } else {
        path
    };
    if path.is_empty() || path.split('/').any(|part| part == ".." || part.is_empty()) {
        return None;
    }
    Some(path.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The findings of `output` as `path:line level message` lines.
    fn check(output: &str, expected: &[&str]) {
        let got: Vec<String> = parse(output, "/work/clone")
            .iter()
            .map(|a| format!("{}:{} {:?} {}", a.path, a.start_line, a.level, a.message))
            .collect();
        assert_eq!(got, expected, "from:\n{output}");
    }

    #[test]
    fn cargo_json_messages_with_a_primary_span() {
        check(
            r#"{"reason":"compiler-artifact","package_id":"x"}
{"reason":"compiler-message","message":{"level":"error","message":"mismatched types","spans":[{"file_name":"src/lib.rs","line_start":3,"line_end":4,"is_primary":true}]}}
{"reason":"compiler-message","message":{"level":"warning","message":"unused variable: `x`","spans":[{"file_name":"/root/.cargo/registry/src/dep/lib.rs","line_start":1,"line_end":1,"is_primary":true}]}}
{"reason":"compiler-message","message":{"level":"note","message":"a note","spans":[]}}"#,
            &["src/lib.rs:3 Failure mismatched types"],
        );
    }

    #[test]
    fn rustc_headers_and_their_arrows() {
        check(
            "error[E0308]: mismatched types\n --> src/main.rs:7:13\n  |\nwarning: unused import: `std::fs`\n  --> /work/clone/src/a.rs:1:5\n",
            &[
                "src/main.rs:7 Failure mismatched types",
                "src/a.rs:1 Warning unused import: `std::fs`",
            ],
        );
    }

    #[test]
    fn rust_test_panics_old_and_new() {
        check(
            "---- greets stdout ----\nthread 'greets' panicked at src/lib.rs:7:5:\nassertion `left == right` failed\n  left: \"a\"\nthread 'old' panicked at 'boom', tests/t.rs:2:9\nnote: run with `RUST_BACKTRACE=1`\nthread 'tests::one' (63) panicked at src/lib.rs:21:9:\nassertion failed\n",
            &[
                "src/lib.rs:7 Failure test `greets` panicked: assertion `left == right` failed",
                "tests/t.rs:2 Failure test `old` panicked: boom",
                "src/lib.rs:21 Failure test `tests::one` panicked: assertion failed",
            ],
        );
    }

    #[test]
    fn pytest_tracebacks_and_linters() {
        check(
            "    def test_add():\n>       assert add(1, 2) == 4\nE       assert 3 == 4\n\ntests/test_calc.py:5: AssertionError\nsrc/app.py:12:1: F401 'os' imported but unused\npkg/m.py:3: warning: unused\n",
            &[
                "tests/test_calc.py:5 Failure AssertionError",
                "src/app.py:12 Failure F401 'os' imported but unused",
                "pkg/m.py:3 Warning warning: unused",
            ],
        );
    }

    #[test]
    fn eslint_stylish_listings() {
        check(
            "\n/work/clone/src/index.js\n  1:10  error  'x' is defined but never used  no-unused-vars\n  4:1   warning  Unexpected console statement  no-console\n\n✖ 2 problems\n",
            &[
                "src/index.js:1 Failure 'x' is defined but never used (no-unused-vars)",
                "src/index.js:4 Warning Unexpected console statement (no-console)",
            ],
        );
    }

    #[test]
    fn paths_outside_the_repository_and_repeats_are_dropped() {
        check(
            "../other/a.py:1: boom\n/etc/passwd.txt:1: x\nsrc/a.py:0: zero\nsrc/a.py:2: once\nsrc/a.py:2: twice\n",
            &["src/a.py:2 Failure once"],
        );
    }
}
