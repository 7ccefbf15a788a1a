//! The transcript kept with the run (`baton show <RUN> --transcript`): what was asked, what the
//! model answered, which tools ran and what they returned. Everything entering it passes the
//! [`Redactor`], so configured key values and `Authorization`/`x-api-key` headers never appear.

use std::sync::LazyLock;

use regex::Regex;
use serde::{Deserialize, Serialize};

/// Longest text kept in one transcript entry.
const MAX_ENTRY_BYTES: usize = 32 * 1024;

static HEADER_SECRET: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)((?:authorization|proxy-authorization|x-api-key|api-key)\s*[:=]\s*)[^\r\n]+")
        .unwrap()
});
static BEARER: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]+").unwrap());

/// Replaces secrets in text.
#[derive(Clone, Debug, Default)]
pub struct Redactor {
    secrets: Vec<String>,
}

impl Redactor {
    /// A redactor for these secret values (empty ones are ignored).
    pub fn new(secrets: Vec<String>) -> Self {
        let mut secrets: Vec<String> = secrets.into_iter().filter(|s| s.len() >= 4).collect();
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        Redactor { secrets }
    }
    /// The secret values, for scrubbing environments.
    pub fn secrets(&self) -> &[String] {
        &self.secrets
    }
    /// `text` with every secret and credential header replaced by `[REDACTED]`.
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        for s in &self.secrets {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), "[REDACTED]");
            }
        }
        let out = HEADER_SECRET.replace_all(&out, "${1}[REDACTED]");
        BEARER.replace_all(&out, "Bearer [REDACTED]").into_owned()
    }
}

/// One thing that happened.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Entry {
    /// A prompt given to the model (system or user).
    Prompt {
        /// `system` or `user`.
        role: String,
        /// The text.
        text: String,
    },
    /// A model reply.
    Reply {
        /// The model's text, if any.
        text: String,
        /// The tool calls it made: name and raw arguments.
        tool_calls: Vec<(String, String)>,
        /// Input tokens of this request.
        input_tokens: u64,
        /// Output tokens of this reply.
        output_tokens: u64,
    },
    /// A tool ran.
    Tool {
        /// Tool name.
        name: String,
        /// Whether it returned an error to the model.
        is_error: bool,
        /// What the model was told.
        output: String,
    },
    /// Something the agent did or decided (retry, budget, patch applied, command ran).
    Note {
        /// The note.
        text: String,
    },
}

/// The ordered entries, each stamped with milliseconds since the round started.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Transcript {
    /// `(elapsed_ms, entry)`, oldest first.
    pub entries: Vec<(u64, Entry)>,
}

impl Transcript {
    /// Appends an entry, redacted and trimmed.
    pub(crate) fn push(&mut self, elapsed_ms: u64, entry: Entry, redactor: &Redactor) {
        let r = |s: &str| crate::agent::process::tail(&redactor.redact(s), MAX_ENTRY_BYTES);
        let entry = match entry {
            Entry::Prompt { role, text } => Entry::Prompt {
                role,
                text: r(&text),
            },
            Entry::Reply {
                text,
                tool_calls,
                input_tokens,
                output_tokens,
            } => Entry::Reply {
                text: r(&text),
                tool_calls: tool_calls.into_iter().map(|(n, a)| (n, r(&a))).collect(),
                input_tokens,
                output_tokens,
            },
            Entry::Tool {
                name,
                is_error,
                output,
            } => Entry::Tool {
                name,
                is_error,
                output: r(&output),
            },
            Entry::Note { text } => Entry::Note { text: r(&text) },
        };
        self.entries.push((elapsed_ms, entry));
    }

    /// The transcript as text, one block per entry, for `baton show --transcript`.
    pub fn render(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        for (ms, entry) in &self.entries {
            let at = format!("[{:>7.1}s]", *ms as f64 / 1000.0);
            let _ = match entry {
                Entry::Prompt { role, text } => writeln!(out, "{at} {role}:\n{}", indent(text)),
                Entry::Reply {
                    text,
                    tool_calls,
                    input_tokens,
                    output_tokens,
                } => {
                    let _ = writeln!(out, "{at} model ({input_tokens} in, {output_tokens} out):");
                    if !text.is_empty() {
                        let _ = writeln!(out, "{}", indent(text));
                    }
                    tool_calls
                        .iter()
                        .try_for_each(|(name, args)| writeln!(out, "    -> {name} {args}"))
                }
                Entry::Tool {
                    name,
                    is_error,
                    output,
                } => {
                    let status = if *is_error { "error" } else { "ok" };
                    writeln!(out, "{at} tool {name} ({status}):\n{}", indent(output))
                }
                Entry::Note { text } => writeln!(out, "{at} note: {text}"),
            };
        }
        out
    }

    /// Appends another round's entries.
    pub fn extend(&mut self, other: Transcript) {
        self.entries.extend(other.entries);
    }
}

/// `text` indented by four spaces, without a trailing newline.
fn indent(text: &str) -> String {
    text.trim_end()
        .lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_keys_and_headers() {
        let r = Redactor::new(vec!["sk-test-abcdef".into(), "".into()]);
        let cases = [
            ("key sk-test-abcdef here", "key [REDACTED] here"),
            ("Authorization: Bearer abc.def", "Authorization: [REDACTED]"),
            ("x-api-key: whatever", "x-api-key: [REDACTED]"),
            ("use bearer xyz123 now", "use Bearer [REDACTED] now"),
            ("nothing secret", "nothing secret"),
        ];
        for (input, expected) in cases {
            assert_eq!(r.redact(input), expected);
        }
    }

    #[test]
    fn renders_every_entry() {
        let r = Redactor::new(vec!["sk-secret-1".into()]);
        let mut t = Transcript::default();
        t.push(
            0,
            Entry::Prompt {
                role: "user".into(),
                text: "fix it sk-secret-1".into(),
            },
            &r,
        );
        t.push(
            1500,
            Entry::Reply {
                text: "ok".into(),
                tool_calls: vec![("plan".into(), "{}".into())],
                input_tokens: 3,
                output_tokens: 2,
            },
            &r,
        );
        t.push(
            1600,
            Entry::Tool {
                name: "plan".into(),
                is_error: false,
                output: "done".into(),
            },
            &r,
        );
        t.push(1700, Entry::Note { text: "n".into() }, &r);
        let text = t.render();
        assert!(text.contains("user:\n    fix it [REDACTED]"), "{text}");
        assert!(
            text.contains("model (3 in, 2 out):\n    ok\n    -> plan {}"),
            "{text}"
        );
        assert!(
            text.contains("tool plan (ok):\n    done") && text.contains("note: n"),
            "{text}"
        );
        assert!(!text.contains("sk-secret-1"));
    }
}
