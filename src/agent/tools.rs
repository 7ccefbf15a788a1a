//! The tools the model backends offer: list_dir, read_file, search, write_file, edit_file,
//! delete_file, run_command, plan and finish. Paths go through the [`Jail`]; writes go
//! into the change journal before they happen; every failure (bad arguments included) is
//! an error *result* the model sees, so the loop goes on. Only a journal failure or
//! cancellation ends the round.
//!
//! The planning phase gets [`planning_specs`]: the three that only read, and `plan`. Its
//! [`Toolbox`] is `read_only`, so a write or a command is refused even when a model calls a
//! tool it was not offered: planning never changes the clone nor runs its code.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use regex::RegexBuilder;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::agent::changes::{ChangeTracker, Snapshot};
use crate::agent::error::{Error, Result};
use crate::agent::jail::Jail;
use crate::agent::journal::DynJournal;
use crate::agent::plan::Plan;
use crate::agent::process::{self, Exit};
use crate::journal::Change;

/// Lines `read_file` returns when no range is given.
const DEFAULT_READ_LINES: usize = 1000;
/// Bytes of one tool result; the rest is cut with a note.
const MAX_RESULT_BYTES: usize = 64 * 1024;
/// Matches `search` returns.
const MAX_MATCHES: usize = 200;
/// Entries `list_dir` returns.
const MAX_ENTRIES: usize = 1000;

/// A tool as offered to a model: name, description and JSON schema of its arguments.
#[derive(Clone, Debug)]
pub struct ToolSpec {
    /// Tool name.
    pub name: &'static str,
    /// What it does, for the model.
    pub description: &'static str,
    /// JSON schema of the arguments object.
    pub parameters: Value,
}

/// The tools offered to the model backends.
pub fn specs() -> Vec<ToolSpec> {
    let s = |t: &str| json!({ "type": t });
    vec![
        ToolSpec {
            name: "plan",
            description: "Record your implementation plan before changing files. Call it once, before the first write.",
            parameters: json!({"type": "object", "properties": {
                "steps": {"type": "array", "items": s("string"), "description": "what you will do, in order"},
                "files_to_touch": {"type": "array", "items": s("string")},
                "tests_to_add": {"type": "array", "items": s("string")}
            }, "required": ["steps"]}),
        },
        ToolSpec {
            name: "list_dir",
            description: "List a directory of the workspace. Directories end with '/'.",
            parameters: json!({"type": "object", "properties": {"path": {"type": "string", "description": "relative to the workspace root; default ."}}}),
        },
        ToolSpec {
            name: "read_file",
            description: "Read a text file. Each line is prefixed with its number and a tab (the prefix is not part of the file). Use start_line/end_line (1-based, inclusive) for long files.",
            parameters: json!({"type": "object", "properties": {
                "path": s("string"), "start_line": s("integer"), "end_line": s("integer")
            }, "required": ["path"]}),
        },
        ToolSpec {
            name: "search",
            description: "Search file contents with a regular expression (Rust regex syntax); files ignored by .gitignore are skipped. Returns path:line: text.",
            parameters: json!({"type": "object", "properties": {
                "pattern": s("string"), "path": {"type": "string", "description": "only under this directory"},
                "case_insensitive": s("boolean")
            }, "required": ["pattern"]}),
        },
        ToolSpec {
            name: "write_file",
            description: "Create or overwrite a text file with the given content.",
            parameters: json!({"type": "object", "properties": {"path": s("string"), "content": s("string")}, "required": ["path", "content"]}),
        },
        ToolSpec {
            name: "edit_file",
            description: "Replace one snippet of a file. old_text must occur exactly once; include enough surrounding lines to make it unique.",
            parameters: json!({"type": "object", "properties": {
                "path": s("string"), "old_text": s("string"), "new_text": s("string")
            }, "required": ["path", "old_text", "new_text"]}),
        },
        ToolSpec {
            name: "delete_file",
            description: "Delete a file.",
            parameters: json!({"type": "object", "properties": {"path": s("string")}, "required": ["path"]}),
        },
        ToolSpec {
            name: "run_command",
            description: "Run a shell command (sh -c) in the workspace root, without network credentials. Use it to build and run tests. Returns the exit code and the tail of stdout and stderr.",
            parameters: json!({"type": "object", "properties": {
                "command": s("string"), "timeout_secs": s("integer")
            }, "required": ["command"]}),
        },
        ToolSpec {
            name: "finish",
            description: "Stop: the work is done. Give a short summary of what you changed and why.",
            parameters: json!({"type": "object", "properties": {"summary": s("string")}, "required": ["summary"]}),
        },
    ]
}

/// The names of the tools that only read the workspace.
pub const READ_ONLY: [&str; 3] = ["list_dir", "read_file", "search"];

/// The tools offered to the planning phase: the ones that only read, and `plan`, whose
/// schema asks for everything a person approves.
pub fn planning_specs() -> Vec<ToolSpec> {
    let s = |t: &str| json!({ "type": t });
    let strings = |what: &str| json!({"type": "array", "items": s("string"), "description": what});
    let mut tools = vec![ToolSpec {
        name: "plan",
        description: "Give your plan, once you have read enough of the repository. A person may \
                      approve it before anything changes; the implementation follows it.",
        parameters: json!({"type": "object", "properties": {
            "approach": {"type": "string", "description": "how you will make the change, in a few sentences"},
            "files_to_touch": {"type": "array", "description": "the files to create or change, each with why", "items": {
                "type": "object",
                "properties": {"path": s("string"), "why": s("string")},
                "required": ["path", "why"]
            }},
            "steps": strings("what you will do, in order"),
            "tests_to_add": strings("the tests to add, change or run"),
            "risks": strings("what could go wrong or break, and what would show it")
        }, "required": ["approach", "files_to_touch", "steps", "tests_to_add", "risks"]}),
    }];
    tools.extend(specs().into_iter().filter(|t| READ_ONLY.contains(&t.name)));
    tools
}

/// What a tool call led to, besides its text.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Effect {
    None,
    Plan(Plan),
    Finish(String),
}

/// A tool's answer to the model.
#[derive(Debug, Clone)]
pub(crate) struct ToolResult {
    pub content: String,
    pub is_error: bool,
    pub effect: Effect,
}

impl ToolResult {
    fn ok(content: impl Into<String>) -> Self {
        ToolResult {
            content: cap(content.into()),
            is_error: false,
            effect: Effect::None,
        }
    }
    fn err(content: impl ToString) -> Self {
        ToolResult {
            content: cap(content.to_string()),
            is_error: true,
            effect: Effect::None,
        }
    }
}

fn cap(mut s: String) -> String {
    if s.len() > MAX_RESULT_BYTES {
        let mut end = MAX_RESULT_BYTES;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push_str("\n[output cut at 64 KiB; narrow the request]");
    }
    s
}

/// What the tools need from the round.
pub(crate) struct Toolbox<'a> {
    pub jail: &'a Jail,
    pub journal: &'a dyn DynJournal,
    pub tracker: &'a mut ChangeTracker,
    pub exec: &'a process::Exec,
    pub command_timeout: Duration,
    pub cancel: &'a CancellationToken,
    pub plan_given: bool,
    /// The planning phase: only the tools that read answer; `plan` must be complete.
    pub read_only: bool,
}

fn args<T: DeserializeOwned>(tool: &str, raw: &str) -> Result<T, String> {
    let raw = if raw.trim().is_empty() { "{}" } else { raw };
    serde_json::from_str(raw).map_err(|e| {
        format!("invalid arguments for {tool}: {e}; send a JSON object matching the tool's schema")
    })
}

#[derive(Deserialize)]
struct PathArg {
    #[serde(default)]
    path: Option<String>,
}
#[derive(Deserialize)]
struct ReadArgs {
    path: String,
    start_line: Option<usize>,
    end_line: Option<usize>,
}
#[derive(Deserialize)]
struct SearchArgs {
    pattern: String,
    path: Option<String>,
    #[serde(default)]
    case_insensitive: bool,
}
#[derive(Deserialize)]
struct WriteArgs {
    path: String,
    content: String,
}
#[derive(Deserialize)]
struct EditArgs {
    path: String,
    old_text: String,
    new_text: String,
}
#[derive(Deserialize)]
struct CommandArgs {
    command: String,
    timeout_secs: Option<u64>,
}
#[derive(Deserialize)]
struct FinishArgs {
    summary: String,
}

impl Toolbox<'_> {
    /// Runs one tool call. `Err` only for what must end the round (journal, cancellation).
    pub async fn call(
        &mut self,
        name: &str,
        raw_args: &str,
        remaining: Duration,
    ) -> Result<ToolResult> {
        if self.read_only && name != "plan" && !READ_ONLY.contains(&name) {
            return Ok(ToolResult::err(format!(
                "`{name}` is not available while planning: this phase only reads the \
                 repository (list_dir, read_file, search) and ends with `plan`; the change is \
                 made after the plan"
            )));
        }
        let result = match name {
            "plan" => match Plan::from_args(if raw_args.trim().is_empty() {
                "{}"
            } else {
                raw_args
            }) {
                Ok(plan) if plan.steps.is_empty() => {
                    Ok(ToolResult::err("a plan needs at least one step"))
                }
                Ok(plan) => match plan.missing_for_approval().filter(|_| self.read_only) {
                    Some(missing) => Ok(ToolResult::err(format!(
                        "{missing}; call `plan` again with every field"
                    ))),
                    None => {
                        self.plan_given = true;
                        Ok(ToolResult {
                            content: if self.read_only {
                                "Plan recorded.".into()
                            } else {
                                "Plan recorded. Now implement it.".into()
                            },
                            is_error: false,
                            effect: Effect::Plan(plan),
                        })
                    }
                },
                Err(e) => Ok(ToolResult::err(format!(
                    "invalid arguments for plan: {e}; send a JSON object matching the tool's schema"
                ))),
            },
            "list_dir" => Ok(self.list_dir(raw_args)),
            "read_file" => Ok(self.read_file(raw_args)),
            "search" => Ok(self.search(raw_args).await),
            "write_file" => self.write_file(raw_args).await,
            "edit_file" => self.edit_file(raw_args).await,
            "delete_file" => self.delete_file(raw_args).await,
            "run_command" => self.run_command(raw_args, remaining).await,
            "finish" => match args::<FinishArgs>(name, raw_args) {
                Ok(f) => Ok(ToolResult {
                    content: "Finished.".into(),
                    is_error: false,
                    effect: Effect::Finish(f.summary),
                }),
                Err(e) => Ok(ToolResult::err(e)),
            },
            other => Ok(ToolResult::err(format!(
                "unknown tool `{other}`; the tools are: {}",
                specs()
                    .iter()
                    .map(|s| s.name)
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        };
        result
    }

    fn list_dir(&self, raw: &str) -> ToolResult {
        let a: PathArg = match args("list_dir", raw) {
            Ok(a) => a,
            Err(e) => return ToolResult::err(e),
        };
        let path = a.path.unwrap_or_else(|| ".".into());
        let resolved = match self.jail.resolve(&path) {
            Ok(r) => r,
            Err(e) => return ToolResult::err(e),
        };
        let entries = match std::fs::read_dir(&resolved.abs) {
            Ok(e) => e,
            Err(e) => return ToolResult::err(format!("`{path}`: {e}")),
        };
        let mut names: Vec<String> = entries
            .flatten()
            .filter(|e| e.file_name() != ".git")
            .map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                match e.file_type() {
                    Ok(t) if t.is_dir() => format!("{name}/"),
                    Ok(t) if t.is_symlink() => format!("{name}@"),
                    _ => name,
                }
            })
            .collect();
        names.sort();
        let total = names.len();
        names.truncate(MAX_ENTRIES);
        let mut out = names.join("\n");
        if total > MAX_ENTRIES {
            out.push_str(&format!("\n[{} more entries]", total - MAX_ENTRIES));
        }
        if total == 0 {
            out = "(empty directory)".into();
        }
        ToolResult::ok(out)
    }

    fn read_file(&self, raw: &str) -> ToolResult {
        let a: ReadArgs = match args("read_file", raw) {
            Ok(a) => a,
            Err(e) => return ToolResult::err(e),
        };
        let (resolved, text) = match self.jail.read_text(&a.path) {
            Ok(x) => x,
            Err(e) => return ToolResult::err(e),
        };
        let lines: Vec<&str> = text.lines().collect();
        let start = a.start_line.unwrap_or(1).max(1);
        let end = a
            .end_line
            .unwrap_or(start + DEFAULT_READ_LINES - 1)
            .min(lines.len());
        if lines.is_empty() {
            return ToolResult::ok(format!("`{}` is empty", resolved.rel));
        }
        if start > lines.len() || start > end {
            return ToolResult::err(format!(
                "`{}` has {} lines; lines {start}-{end} do not exist",
                resolved.rel,
                lines.len()
            ));
        }
        let mut out = format!("{} lines {start}-{end} of {}\n", resolved.rel, lines.len());
        for (i, line) in lines[start - 1..end].iter().enumerate() {
            out.push_str(&format!("{}\t{line}\n", start + i));
        }
        ToolResult::ok(out)
    }

    async fn search(&self, raw: &str) -> ToolResult {
        let a: SearchArgs = match args("search", raw) {
            Ok(a) => a,
            Err(e) => return ToolResult::err(e),
        };
        let re = match RegexBuilder::new(&a.pattern)
            .case_insensitive(a.case_insensitive)
            .size_limit(1 << 20)
            .build()
        {
            Ok(r) => r,
            Err(e) => return ToolResult::err(format!("invalid regular expression: {e}")),
        };
        let prefix = match &a.path {
            Some(p) => match self.jail.resolve(p) {
                Ok(r) => Some(r.rel),
                Err(e) => return ToolResult::err(e),
            },
            None => None,
        };
        let root = self.jail.root().to_path_buf();
        let files = crate::agent::analyze::list_files(&root).await;
        let found = tokio::task::spawn_blocking(move || {
            search_files(&root, &files, prefix.as_deref(), &re)
        })
        .await
        .unwrap_or_default();
        if found.is_empty() {
            ToolResult::ok("no matches")
        } else {
            ToolResult::ok(found.join("\n"))
        }
    }

    async fn write_file(&mut self, raw: &str) -> Result<ToolResult> {
        let a: WriteArgs = match args("write_file", raw) {
            Ok(a) => a,
            Err(e) => return Ok(ToolResult::err(e)),
        };
        if !self.plan_given {
            return Ok(ToolResult::err(
                "call `plan` with your plan before changing anything",
            ));
        }
        let (resolved, before) = match self.jail.prepare_write(&a.path) {
            Ok(x) => x,
            Err(e) => return Ok(ToolResult::err(e)),
        };
        if a.content.len() as u64 > crate::agent::jail::MAX_FILE_BYTES {
            return Ok(ToolResult::err("content is larger than the 1 MiB limit"));
        }
        let change = match &before {
            Some(b) => Change::file_modify(&resolved.rel, b),
            None => Change::file_create(&resolved.rel),
        };
        self.tracker.record(self.journal, change).await?;
        Ok(match self.jail.write(&resolved, &a.content) {
            Ok(()) => ToolResult::ok(format!(
                "{} `{}` ({} bytes)",
                if before.is_some() {
                    "overwrote"
                } else {
                    "created"
                },
                resolved.rel,
                a.content.len()
            )),
            Err(e) => ToolResult::err(e),
        })
    }

    async fn edit_file(&mut self, raw: &str) -> Result<ToolResult> {
        let a: EditArgs = match args("edit_file", raw) {
            Ok(a) => a,
            Err(e) => return Ok(ToolResult::err(e)),
        };
        if !self.plan_given {
            return Ok(ToolResult::err(
                "call `plan` with your plan before changing anything",
            ));
        }
        let (resolved, before) = match self.jail.prepare_write(&a.path) {
            Ok((r, Some(b))) => (r, b),
            Ok((_, None)) => {
                return Ok(ToolResult::err(format!(
                    "`{}` does not exist; use write_file to create it",
                    a.path
                )))
            }
            Err(e) => return Ok(ToolResult::err(e)),
        };
        if a.old_text.is_empty() {
            return Ok(ToolResult::err(
                "old_text is empty; give the exact text to replace",
            ));
        }
        let at: Vec<usize> = before.match_indices(&a.old_text).map(|(i, _)| i).collect();
        match at.len() {
            0 => {
                return Ok(ToolResult::err(format!(
                    "old_text was not found in `{}`; read the file and copy the text exactly (without line-number prefixes)",
                    resolved.rel
                )))
            }
            1 => {}
            n => {
                let lines: Vec<String> = at.iter().map(|&i| (before[..i].lines().count().max(1)).to_string()).collect();
                return Ok(ToolResult::err(format!(
                    "old_text occurs {n} times in `{}` (near lines {}); include more surrounding text so it is unique",
                    resolved.rel,
                    lines.join(", ")
                )));
            }
        }
        let after = before.replacen(&a.old_text, &a.new_text, 1);
        self.tracker
            .record(self.journal, Change::file_modify(&resolved.rel, &before))
            .await?;
        Ok(match self.jail.write(&resolved, &after) {
            Ok(()) => ToolResult::ok(format!("edited `{}`", resolved.rel)),
            Err(e) => ToolResult::err(e),
        })
    }

    async fn delete_file(&mut self, raw: &str) -> Result<ToolResult> {
        let a: PathArg = match args("delete_file", raw) {
            Ok(a) => a,
            Err(e) => return Ok(ToolResult::err(e)),
        };
        if !self.plan_given {
            return Ok(ToolResult::err(
                "call `plan` with your plan before changing anything",
            ));
        }
        let Some(path) = a.path else {
            return Ok(ToolResult::err(
                "invalid arguments for delete_file: missing field `path`",
            ));
        };
        let (resolved, before) = match self.jail.prepare_write(&path) {
            Ok((r, Some(b))) => (r, b),
            Ok((_, None)) => return Ok(ToolResult::err(format!("`{path}` does not exist"))),
            Err(e) => return Ok(ToolResult::err(e)),
        };
        self.tracker
            .record(self.journal, Change::file_delete(&resolved.rel, &before))
            .await?;
        Ok(match std::fs::remove_file(&resolved.abs) {
            Ok(()) => ToolResult::ok(format!("deleted `{}`", resolved.rel)),
            Err(e) => ToolResult::err(format!("`{}`: {e}", resolved.rel)),
        })
    }

    async fn run_command(&mut self, raw: &str, remaining: Duration) -> Result<ToolResult> {
        let a: CommandArgs = match args("run_command", raw) {
            Ok(a) => a,
            Err(e) => return Ok(ToolResult::err(e)),
        };
        if !self.plan_given {
            return Ok(ToolResult::err(
                "call `plan` with your plan before changing anything",
            ));
        }
        let requested = a
            .timeout_secs
            .map(Duration::from_secs)
            .unwrap_or(self.command_timeout);
        let timeout = requested.min(self.command_timeout).min(remaining);
        let root = self.jail.root().to_path_buf();
        let snapshot = Snapshot::take(&root).await;
        let argv = vec!["sh".to_string(), "-c".to_string(), a.command.clone()];
        let out = process::run(&argv, &root, self.exec, None, timeout, self.cancel).await;
        // Whatever the command changed goes into the journal, even if it failed.
        let changed = match &snapshot {
            Some(s) => s.record_since(&root, self.journal, self.tracker).await?,
            None => Vec::new(),
        };
        let out = match out {
            Ok(o) => o,
            // The clone can no longer be trusted: the run stops.
            Err(e) if e.to_string().contains(process::GIT_CHANGED) => {
                return Err(Error::Command(e.to_string()))
            }
            Err(e) => return Ok(ToolResult::err(format!("could not run the command: {e}"))),
        };
        let mut text = match out.exit {
            Exit::Cancelled => return Err(Error::Cancelled),
            Exit::TimedOut => format!(
                "timed out after {}s; its process group was killed\n",
                timeout.as_secs()
            ),
            Exit::Code(Some(c)) => format!("exit code {c}\n"),
            Exit::Code(None) => "killed by a signal\n".to_string(),
        };
        if !changed.is_empty() {
            text.push_str(&format!(
                "files changed by the command: {}\n",
                changed.join(", ")
            ));
        }
        text.push_str(&format!(
            "--- stdout ---\n{}\n--- stderr ---\n{}",
            process::tail(&out.stdout, 24 * 1024),
            process::tail(&out.stderr, 24 * 1024)
        ));
        Ok(if out.exit == Exit::Code(Some(0)) {
            ToolResult::ok(text)
        } else {
            ToolResult::err(text)
        })
    }
}

fn search_files(
    root: &Path,
    files: &[String],
    prefix: Option<&str>,
    re: &regex::Regex,
) -> Vec<String> {
    let mut found = Vec::new();
    for path in files {
        if let Some(p) = prefix {
            if !p.is_empty() && path != p && !path.starts_with(&format!("{p}/")) {
                continue;
            }
        }
        let abs = root.join(path);
        // Regular files only: a tracked symlink could point anywhere.
        match std::fs::symlink_metadata(&abs) {
            Ok(m)
                if m.is_file()
                    && m.nlink() == 1
                    && m.len() <= crate::agent::jail::MAX_FILE_BYTES => {}
            _ => continue,
        }
        let Ok(bytes) = std::fs::read(&abs) else {
            continue;
        };
        if bytes.contains(&0) {
            continue;
        }
        let text = String::from_utf8_lossy(&bytes);
        for (i, line) in text.lines().enumerate() {
            if re.is_match(line) {
                let shown: String = line.chars().take(300).collect();
                found.push(format!("{path}:{}: {shown}", i + 1));
                if found.len() >= MAX_MATCHES {
                    found.push(format!(
                        "[stopped at {MAX_MATCHES} matches; narrow the pattern or path]"
                    ));
                    return found;
                }
            }
        }
    }
    found
}
