//! Bug Triage: a bug report comes in; a priority, area labels and a reproduction attempt go out,
//! in one comment on the issue.
//!
//! Read [`DEFINITION`] top to bottom: read the issue, clone the default branch, classify, try
//! to reproduce, label, comment. Everything is measured from the issue and the repository:
//! the priority comes from configured rules (keywords such as crash or data loss, a stack
//! trace, labels, affected paths), the areas from the files the issue names that exist in the
//! repository, and the reproduction from running what the issue gives (a `sh`/`bash`/`console`
//! block, a `python` or `js` snippet, a test it names, a `$ command` line) in the clone through
//! the verification runner: scrubbed environment, its own process group killed at the time
//! limit, and bubblewrap with no network and a read-only file system outside the clone when
//! bwrap is installed. The result is **reproduced**, **not reproduced** or **could not try**,
//! with the exact command, its exit status and an excerpt of its output.
//!
//! The issue's text is data: it is sanitized, only ever quoted, and its snippets run only in
//! the sandboxed clone. The comment's marker is keyed by the workflow and the issue, so
//! triaging again edits the one comment.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use baton_actors::definition::Dur;
use baton_actors::{ActionContext, ActionError, Definition, Engine};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::actions::forge::{forge_error, number_param, repo_param};
use crate::agent::{ask, ProviderEnv};
use crate::forge::ForgeHandle;
use crate::sandbox::{Placement, Trust};
use crate::verify::{self, Status};

/// The workflow's id (and the CLI's `baton triage`).
pub const ID: &str = "bug_triage";

/// The actions this file registers.
pub const ACTIONS: [&str; 5] = [
    "bug_triage.read",
    "bug_triage.classify",
    "bug_triage.reproduce",
    "bug_triage.labels",
    "bug_triage.comment",
];

/// The workflow.
pub const DEFINITION: &str = r#"
id = "bug_triage"
name = "Bug triage"
description = "Sets a bug's priority and areas, tries to reproduce it and reports in one comment"
version = 1
# Nothing to undo: labels and the comment stay.
rollback_on_abort = "none"

[input]
repo = { required = true, description = "the repository, owner/name" }
issue = { required = true, description = "the issue number" }

[[steps]]
id = "read"
description = "Read the issue"
action = "bug_triage.read"
with = { repo = "{{ input.repo }}", issue = "{{ input.issue }}" }
retry = "forge"

[[steps]]
id = "clone"
description = "Clone the default branch"
action = "git.clone"
with = { url = "{{ steps.read.output.repository.clone_url }}", base = "{{ steps.read.output.repository.default_branch }}", token_env = "{{ steps.read.output.token_env }}" }
retry = "git"

[[steps]]
id = "classify"
description = "Set the priority and the areas"
action = "bug_triage.classify"
with = { issue = "{{ steps.read.output.issue }}" }

[[steps]]
id = "reproduce"
description = "Try to reproduce the bug"
action = "bug_triage.reproduce"
with = { issue = "{{ steps.read.output.issue }}", trusted = "{{ steps.read.output.trusted }}" }

[[steps]]
id = "labels"
description = "Label the issue"
action = "bug_triage.labels"
with = { repo = "{{ input.repo }}", issue = "{{ input.issue }}", labels = "{{ steps.classify.output.labels }}", current = "{{ steps.read.output.issue.labels }}" }
retry = "forge"

[[steps]]
id = "comment"
description = "Post the triage comment"
action = "bug_triage.comment"
with = { repo = "{{ input.repo }}", issue = "{{ input.issue }}", classify = "{{ steps.classify.output }}", reproduce = "{{ steps.reproduce.output }}" }
retry = "forge"
set = { triage = "{{ steps.comment.output.triage }}", result = "{{ steps.comment.output.summary }}" }
"#;

/// The workflow as data.
pub fn definition() -> Definition {
    toml::from_str(DEFINITION).expect("the built-in bug_triage definition parses (tested)")
}

/// A priority, highest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    /// Crashes, data loss, security.
    Critical,
    /// Regressions, stack traces.
    High,
    /// The default.
    Medium,
    /// Cosmetic.
    Low,
}

/// One rule: any of its signals present sets its priority. The highest matching rule wins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// The priority it sets.
    pub priority: Priority,
    /// Words or phrases in the title or body (case-insensitive, whole words).
    #[serde(default)]
    pub keywords: Vec<String>,
    /// Labels the issue carries.
    #[serde(default)]
    pub labels: Vec<String>,
    /// Path prefixes of files the issue names that exist in the repository.
    #[serde(default)]
    pub paths: Vec<String>,
    /// The issue carries a stack trace (a panic message, a Python traceback, `at f (file:1:2)`).
    #[serde(default)]
    pub stack_trace: bool,
}

/// The label names of each priority.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PriorityLabels {
    /// Default `priority: critical`.
    pub critical: String,
    /// Default `priority: high`.
    pub high: String,
    /// Default `priority: medium`.
    pub medium: String,
    /// Default `priority: low`.
    pub low: String,
}

impl Default for PriorityLabels {
    fn default() -> Self {
        PriorityLabels {
            critical: "priority: critical".into(),
            high: "priority: high".into(),
            medium: "priority: medium".into(),
            low: "priority: low".into(),
        }
    }
}

impl Priority {
    /// The name the model is asked for and answers with.
    fn name(self) -> &'static str {
        match self {
            Priority::Critical => "critical",
            Priority::High => "high",
            Priority::Medium => "medium",
            Priority::Low => "low",
        }
    }
}

impl PriorityLabels {
    fn of(&self, p: Priority) -> &str {
        match p {
            Priority::Critical => &self.critical,
            Priority::High => &self.high,
            Priority::Medium => &self.medium,
            Priority::Low => &self.low,
        }
    }
}

/// `[workflows.bug_triage]` in `config.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// The reproduction's time limit (`500ms`, `30s`, `5m`).
    pub timeout: Dur,
    /// Deprecated: where reproductions run is `[sandbox] mode` now. Accepted and ignored, with
    /// a warning at start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<bool>,
    /// The priority rules; none matching gives `medium`.
    pub rules: Vec<Rule>,
    /// The priority label names.
    pub labels: PriorityLabels,
    /// Quote the reproduction's output when the issue's author has no write access. Off by
    /// default: the comment is public, and what a stranger's snippet prints is theirs to
    /// choose.
    pub show_untrusted_output: bool,
    /// Area labels by path prefix (`"area: parser" = ["src/parser/"]`). Empty: `area: <dir>`
    /// from the first directory of each named file below `src/` (or the top level).
    pub areas: BTreeMap<String, Vec<String>>,
}

impl Default for Settings {
    fn default() -> Self {
        let words = |w: &[&str]| w.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        Settings {
            timeout: Dur(Duration::from_secs(60)),
            sandbox: None,
            show_untrusted_output: false,
            rules: vec![
                Rule {
                    priority: Priority::Critical,
                    keywords: words(&[
                        "crash",
                        "crashes",
                        "panic",
                        "panics",
                        "segfault",
                        "data loss",
                        "loses data",
                        "corrupt",
                        "corrupts",
                        "corruption",
                        "security",
                        "vulnerability",
                    ]),
                    labels: words(&["security"]),
                    paths: Vec::new(),
                    stack_trace: false,
                },
                Rule {
                    priority: Priority::High,
                    keywords: words(&["regression", "no longer", "used to work", "hang", "hangs"]),
                    labels: words(&["regression"]),
                    paths: Vec::new(),
                    stack_trace: true,
                },
                Rule {
                    priority: Priority::Low,
                    keywords: words(&["typo", "cosmetic", "wording", "misaligned"]),
                    labels: words(&["documentation"]),
                    paths: Vec::new(),
                    stack_trace: false,
                },
            ],
            labels: PriorityLabels::default(),
            areas: BTreeMap::new(),
        }
    }
}

struct Env {
    forge: ForgeHandle,
    settings: Settings,
    /// The model that may refine the priority, when `[agent]` names one.
    agent: crate::agent::AgentConfig,
}

/// Registers this workflow's own actions.
pub fn register_actions(
    engine: &Engine,
    config: &crate::config::Config,
    forge: &ForgeHandle,
    _: &super::Shared,
) {
    let env = Arc::new(Env {
        forge: forge.clone(),
        settings: config.workflows.bug_triage.clone(),
        agent: config.agent.clone(),
    });
    super::action!(engine, env, "bug_triage.read", read);
    super::action!(engine, env, "bug_triage.classify", classify);
    super::action!(engine, env, "bug_triage.reproduce", reproduce);
    super::action!(engine, env, "bug_triage.labels", labels);
    super::action!(engine, env, "bug_triage.comment", comment);
}

// 1. Read the issue.

async fn read(ctx: &ActionContext, env: &Env) -> Result<Value, ActionError> {
    let forge = crate::actions::forge::forge_of(ctx, &env.forge)?;
    let repo = repo_param(ctx)?;
    let number = number_param(ctx, "issue")?;
    let issue = forge
        .issue(&repo, number)
        .await
        .map_err(|e| forge_error(ctx, e))?;
    if issue.is_pull_request {
        return Err(ActionError::fatal(format!(
            "{repo}#{number} is a pull request, not an issue"
        )));
    }
    let crate::forge::CloneSource {
        repository: info,
        token_env,
    } = forge
        .clone_source(&repo, crate::forge::GitUse::Read)
        .await
        .map_err(|e| forge_error(ctx, e))?;
    // Whose code the snippet is decides how it may run (see `reproduce`).
    let can_write = super::trust::can_write(forge.as_ref(), &repo, &issue.author)
        .await
        .map_err(|e| forge_error(ctx, e))?;
    let trust = super::trust::Facts::of_author(&issue.author, can_write);
    Ok(json!({
        "trusted": trust.trusted,
        "trust_reason": trust.trust_reason,
        "author": issue.author,
        "issue": {
            "number": number,
            "title": crate::agent::issue::sanitize(&issue.title).trim(),
            "body": crate::agent::issue::sanitize(&issue.body),
            "labels": issue.labels,
            "url": issue.url,
        },
        "repository": info,
        "token_env": token_env,
        "summary": format!("Read issue #{number}"),
    }))
}

// 2. Classify: the priority from the rules, the areas from the files that exist.

async fn classify(ctx: &ActionContext, env: &Env) -> Result<Value, ActionError> {
    let dir = crate::workspace::clone_dir(ctx)?;
    let issue = ctx.params.get("issue").cloned().unwrap_or(Value::Null);
    let title = issue["title"].as_str().unwrap_or("");
    let body = issue["body"].as_str().unwrap_or("");
    let labels: Vec<String> = issue["labels"]
        .as_array()
        .map(|l| {
            l.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let files: Vec<String> = path_words(&format!("{title}\n{body}"))
        .into_iter()
        .filter(|p| dir.join(p).is_file())
        .collect();
    let mut classified = classify_issue(title, body, &labels, &files, &env.settings);
    if ask::has_model(&env.agent) {
        let rule: Priority =
            serde_json::from_value(classified["priority"].clone()).unwrap_or(Priority::Medium);
        let asked = ask::ask(
            &env.agent,
            &ProviderEnv::from_process(),
            &format!(
                "Rules set this bug report's priority to `{}` because: {}. Judge its \
                 priority yourself. Answer with exactly one line: `priority: P: REASON`, where P \
                 is critical, high, medium or low and REASON is one sentence.",
                rule.name(),
                classified["reasons"]
                    .as_array()
                    .map(|r| r
                        .iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join(", "))
                    .unwrap_or_default()
            ),
            &format!("Title: {title}\n\n{body}"),
            &ctx.cancel,
        )
        .await;
        refine(&mut classified, rule, asked, &env.settings);
    }
    Ok(classified)
}

/// Applies the model's answer to the rule's classification: a readable answer sets the priority
/// (and its label) with the model's reason; an error or an unreadable answer keeps the rule's
/// priority and records why the model's part is missing.
fn refine(
    classified: &mut Value,
    rule: Priority,
    asked: crate::agent::Result<Option<String>>,
    settings: &Settings,
) {
    let model = match asked {
        Ok(None) => return,
        // The provider's own words stay in the run's record: they may name endpoints or hosts.
        Err(e) => json!({"error": e.to_string(), "public": "the model could not be asked"}),
        Ok(Some(text)) => match parse_priority_answer(&text) {
            Some((priority, reason)) => {
                let label = settings.labels.of(priority).to_string();
                if let Some(labels) = classified["labels"].as_array_mut() {
                    labels[0] = json!(label);
                }
                classified["priority"] = json!(priority);
                classified["priority_label"] = json!(label);
                json!({"priority": priority, "reason": reason, "rule_priority": rule})
            }
            None => json!({"error": format!(
                "its answer could not be read as `priority: P: REASON`: {}",
                excerpt(&text, 3)
            )}),
        },
    };
    classified["model"] = model;
}

/// `priority: high: reason` (case-insensitive, `-` or `—` also separating the reason) from
/// the first line of the answer that has it.
fn parse_priority_answer(text: &str) -> Option<(Priority, String)> {
    text.lines().find_map(|line| {
        let line = line.trim().trim_matches('`').trim();
        let prefix = "priority:";
        if !line.get(..prefix.len())?.eq_ignore_ascii_case(prefix) {
            return None;
        }
        let rest = line[prefix.len()..].trim_start();
        let word: String = rest.chars().take_while(char::is_ascii_alphabetic).collect();
        let priority = match word.to_ascii_lowercase().as_str() {
            "critical" => Priority::Critical,
            "high" => Priority::High,
            "medium" => Priority::Medium,
            "low" => Priority::Low,
            _ => return None,
        };
        let reason = rest[word.len()..]
            .trim_start_matches(|c: char| c == ':' || c == '-' || c == '—' || c.is_whitespace())
            .trim();
        (!reason.is_empty()).then(|| (priority, reason.to_string()))
    })
}

fn classify_issue(
    title: &str,
    body: &str,
    labels: &[String],
    files: &[String],
    settings: &Settings,
) -> Value {
    let text = format!("{title}\n{body}").to_lowercase();
    let trace = stack_trace(body);
    let mut priority = Priority::Medium;
    let mut reasons: Vec<String> = Vec::new();
    let mut matched = false;
    let mut rules: Vec<&Rule> = settings.rules.iter().collect();
    rules.sort_by_key(|r| r.priority);
    for rule in rules {
        let mut why = Vec::new();
        for k in &rule.keywords {
            if has_word(&text, &k.to_lowercase()) {
                why.push(format!("mentions “{k}”"));
            }
        }
        for l in &rule.labels {
            if labels.iter().any(|have| have.eq_ignore_ascii_case(l)) {
                why.push(format!("labelled `{l}`"));
            }
        }
        for p in &rule.paths {
            if let Some(f) = files.iter().find(|f| f.starts_with(p.as_str())) {
                why.push(format!("affects `{f}`"));
            }
        }
        if rule.stack_trace {
            if let Some(t) = &trace {
                why.push(format!("carries a stack trace ({t})"));
            }
        }
        if !why.is_empty() {
            priority = rule.priority;
            reasons = why;
            matched = true;
            break;
        }
    }
    if !matched {
        reasons.push("no rule matched: the default".to_string());
    }
    let mut areas: Vec<String> = Vec::new();
    for f in files {
        let found: Vec<String> = if settings.areas.is_empty() {
            derived_area(f).into_iter().collect()
        } else {
            settings
                .areas
                .iter()
                .filter(|(_, prefixes)| prefixes.iter().any(|p| f.starts_with(p.as_str())))
                .map(|(label, _)| label.clone())
                .collect()
        };
        for a in found {
            if !areas.contains(&a) {
                areas.push(a);
            }
        }
    }
    let priority_label = settings.labels.of(priority).to_string();
    let mut new_labels = vec![priority_label.clone()];
    new_labels.extend(areas.iter().cloned());
    json!({
        "priority": priority,
        "priority_label": priority_label,
        "reasons": reasons,
        "areas": areas,
        "files": files,
        "stack_trace": trace,
        "labels": new_labels,
        "summary": format!("Priority {}: {}", priority_label, reasons.join(", ")),
    })
}

/// `area: parser` for `src/parser/mod.rs`, `area: lib` for `src/lib.rs`, `area: docs` for
/// `docs/x.md`.
fn derived_area(path: &str) -> Option<String> {
    let parts: Vec<&str> = path.split('/').collect();
    let name = match parts.as_slice() {
        ["src" | "lib" | "pkg", dir, _, ..] => dir.to_string(),
        ["src" | "lib" | "pkg", file] => file.split('.').next()?.to_string(),
        [dir, _, ..] => dir.to_string(),
        [_] => return None,
        [] => return None,
    };
    (!name.is_empty()).then(|| format!("area: {name}"))
}

/// Whether `word` occurs in `text` with no letter or digit on either side.
fn has_word(text: &str, word: &str) -> bool {
    if word.is_empty() {
        return false;
    }
    text.match_indices(word).any(|(i, _)| {
        let before = text[..i].chars().next_back();
        let after = text[i + word.len()..].chars().next();
        !before.is_some_and(char::is_alphanumeric) && !after.is_some_and(char::is_alphanumeric)
    })
}

/// What kind of stack trace the text carries, if any.
fn stack_trace(text: &str) -> Option<String> {
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    if lines
        .iter()
        .any(|l| l.starts_with("thread '") && l.contains("panicked at"))
    {
        return Some("a Rust panic".into());
    }
    if lines
        .iter()
        .any(|l| l.starts_with("Traceback (most recent call last)"))
    {
        return Some("a Python traceback".into());
    }
    let js_frames = lines
        .iter()
        .filter(|l| l.starts_with("at ") && l.ends_with(')') && l.contains(':'))
        .count();
    if js_frames >= 2 {
        return Some("a JavaScript stack".into());
    }
    if lines
        .iter()
        .any(|l| l.starts_with("goroutine ") && l.ends_with(":"))
    {
        return Some("a Go panic".into());
    }
    None
}

/// Path-like words (`src/lib.rs`, `src/lib.rs:12:5`, `./app/x.py`), without line numbers;
/// whether they exist is the caller's question.
fn path_words(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for raw in text.split(|c: char| c.is_whitespace() || "`'\"()[]<>,;".contains(c)) {
        let w = raw.trim_start_matches("./").trim_end_matches(['.', ':']);
        let w = w.split(':').next().unwrap_or("");
        let plausible = (w.contains('/') || w.contains('.'))
            && !w.contains("://")
            && !w.starts_with('/')
            && !w.split('/').any(|c| c == "..")
            && w.rsplit('.')
                .next()
                .is_some_and(|ext| !ext.is_empty() && ext.len() <= 6 && ext != w);
        if plausible && !out.iter().any(|o| o == w) {
            out.push(w.to_string());
        }
    }
    out
}

// 3. Reproduce.

/// What the issue gives to run, best first.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Attempt {
    /// What it is, for the comment (`the issue's sh block`).
    source: String,
    /// The shell command line run.
    command: String,
}

/// A fenced block: the whole info string and the text.
fn fenced_blocks(body: &str) -> Vec<(String, String)> {
    let mut blocks = Vec::new();
    let mut open: Option<(String, String, String)> = None; // fence, info, text
    for line in body.lines() {
        let t = line.trim_start();
        match &mut open {
            None => {
                for fence in ["```", "~~~"] {
                    if let Some(info) = t.strip_prefix(fence) {
                        let info = info.trim_start_matches(fence.chars().next().unwrap_or('`'));
                        open = Some((fence.to_string(), info.trim().to_lowercase(), String::new()));
                        break;
                    }
                }
            }
            Some((fence, info, text)) => {
                if t.starts_with(fence.as_str())
                    && t.trim_start_matches(fence.chars().next().unwrap_or('`'))
                        .trim()
                        .is_empty()
                {
                    blocks.push((std::mem::take(info), std::mem::take(text)));
                    open = None;
                } else {
                    text.push_str(line);
                    text.push('\n');
                }
            }
        }
    }
    blocks
}

/// A quoted here-document delimiter the snippet does not contain.
fn heredoc(interpreter: &str, code: &str) -> String {
    let mut tag = "BATON_SNIPPET".to_string();
    while code.lines().any(|l| l.trim() == tag) {
        tag.push('_');
    }
    format!("{interpreter} - <<'{tag}'\n{}{tag}\n", ensure_newline(code))
}

fn ensure_newline(s: &str) -> String {
    if s.ends_with('\n') {
        s.to_string()
    } else {
        format!("{s}\n")
    }
}

/// What to run for `issue` in the clone at `dir`: fenced blocks (a block whose info string
/// says `repro` first), then a test the issue names, then a `$ command` line of the prose.
fn attempts(body: &str, dir: &Path) -> Vec<Attempt> {
    let mut found = Vec::new();
    let mut blocks = fenced_blocks(body);
    // A block marked as the reproduction goes first.
    blocks.sort_by_key(|(info, _)| !info.contains("repro"));
    for (info, code) in &blocks {
        let lang = info.split_whitespace().next().unwrap_or("");
        let command = match lang {
            "sh" | "bash" | "shell" | "zsh" => Some(ensure_newline(code)),
            "console" | "shell-session" => {
                // `$ command` lines; the rest is the output the reporter saw.
                let cmds: Vec<&str> = code
                    .lines()
                    .filter_map(|l| l.trim_start().strip_prefix("$ "))
                    .collect();
                (!cmds.is_empty()).then(|| cmds.join("\n") + "\n")
            }
            "python" | "py" | "python3" => Some(heredoc("python3", code)),
            "js" | "javascript" | "node" => Some(heredoc("node", code)),
            _ => None,
        };
        if let Some(command) = command.filter(|c| !c.trim().is_empty()) {
            found.push(Attempt {
                source: format!("the issue's `{lang}` block"),
                command,
            });
        }
    }
    let prose = strip_fences(body);
    for name in named_tests(&prose) {
        let command = if dir.join("Cargo.toml").is_file() {
            format!("cargo test --color never {name}")
        } else if ["pyproject.toml", "setup.py", "pytest.ini", "setup.cfg"]
            .iter()
            .any(|f| dir.join(f).is_file())
        {
            format!("python3 -m pytest -q -k {name}")
        } else {
            continue;
        };
        found.push(Attempt {
            source: format!("the test the issue names (`{name}`)"),
            command,
        });
    }
    for line in prose.lines() {
        if let Some(cmd) = line
            .trim()
            .strip_prefix("$ ")
            .filter(|c| !c.trim().is_empty())
        {
            found.push(Attempt {
                source: "a command in the issue".to_string(),
                command: cmd.trim().to_string(),
            });
        }
    }
    found
}

fn strip_fences(body: &str) -> String {
    let mut out = String::new();
    let mut inside = false;
    for line in body.lines() {
        let t = line.trim_start();
        if t.starts_with("```") || t.starts_with("~~~") {
            inside = !inside;
            continue;
        }
        if !inside {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// Test names in inline code: `tests::several`, `test_parse_empty`. Only names made of
/// identifier characters and `::`, so they are safe on a command line.
fn named_tests(prose: &str) -> Vec<String> {
    let mut names = Vec::new();
    for (i, part) in prose.split('`').enumerate() {
        if i % 2 == 0 {
            continue;
        }
        let p = part.trim();
        let ident = !p.is_empty()
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
            && !p.starts_with(':');
        let testy =
            p.contains("::") && p.split("::").all(|s| !s.is_empty()) || p.starts_with("test_");
        if ident && testy && !names.iter().any(|n| n == p) {
            names.push(p.to_string());
        }
    }
    names
}

async fn reproduce(ctx: &ActionContext, env: &Env) -> Result<Value, ActionError> {
    let dir = crate::workspace::clone_dir(ctx)?;
    let issue = ctx.params.get("issue").cloned().unwrap_or(Value::Null);
    let body = issue["body"].as_str().unwrap_or("");
    let title = issue["title"].as_str().unwrap_or("");
    let Some(attempt) = attempts(body, &dir).into_iter().next() else {
        return Ok(json!({
            "outcome": "could_not_try",
            "reason": "the issue gives nothing to run: no sh/bash/console, python or js block, no test name, no `$ command` line",
            "summary": "Could not try to reproduce: nothing runnable in the issue",
        }));
    };
    let settings = &env.settings;
    // Code from someone without write access runs only inside bubblewrap, and its output is
    // not quoted unless configured: the sandbox can read this host's files.
    let trusted = ctx.params.get("trusted").and_then(Value::as_bool) == Some(true);
    let trust = if trusted {
        Trust::Trusted
    } else {
        Trust::untrusted("the issue's author has no write access")
    };
    ctx.progress
        .say(format!("Trying to reproduce with {}...", attempt.source));
    let ran = tokio::select! {
        r = verify::run_command(&dir, &attempt.command, settings.timeout.0, &trust) => r,
        () = ctx.cancel.cancelled() => return Err(ActionError::fatal("reproduction cancelled")),
    };
    let (result, ran_in) = match ran {
        Ok(ran) => ran,
        Err(reason) => {
            return Ok(json!({
                "outcome": "could_not_try",
                "reason": reason,
                "source": attempt.source,
                "summary": "Could not try to reproduce: untrusted code and no sandbox",
            }))
        }
    };
    let text = format!("{title}\n{body}").to_lowercase();
    let about_a_hang = [
        "hang",
        "hangs",
        "freeze",
        "freezes",
        "stuck",
        "deadlock",
        "never returns",
    ]
    .iter()
    .any(|w| has_word(&text, w));
    let timed_out = result.status == Status::Error
        && result.exit_code.is_none()
        && result
            .error
            .as_deref()
            .is_some_and(|e| e.starts_with("timed out"));
    let not_found = matches!(result.exit_code, Some(126 | 127));
    let (outcome, reason) = if timed_out {
        let limit = settings.timeout.to_string();
        if about_a_hang {
            (
                "reproduced",
                format!("it hung: killed at the {limit} limit, as the issue describes"),
            )
        } else {
            (
                "not_reproduced",
                format!("it did not finish: killed at the {limit} limit"),
            )
        }
    } else if not_found {
        (
            "could_not_try",
            format!(
                "the command could not run here: {}",
                result.error.clone().unwrap_or_default()
            ),
        )
    } else if result.status == Status::Error {
        ("could_not_try", result.error.clone().unwrap_or_default())
    } else if result.exit_code == Some(0) && result.status == Status::Passed {
        ("not_reproduced", "it exited 0".to_string())
    } else {
        (
            "reproduced",
            format!(
                "it failed: exit {}",
                result.exit_code.map_or("?".to_string(), |c| c.to_string())
            ),
        )
    };
    let withheld = !trusted && !settings.show_untrusted_output;
    let excerpt = if withheld {
        String::new()
    } else {
        excerpt(&result.output_tail, 20)
    };
    let sandboxed = matches!(ran_in, Placement::Sandbox { .. });
    let network = matches!(
        ran_in,
        Placement::Sandbox { network: true } | Placement::Host
    );
    let label = match outcome {
        "reproduced" => "Reproduced",
        "not_reproduced" => "Not reproduced",
        _ => "Could not try",
    };
    Ok(json!({
        "outcome": outcome,
        "reason": reason,
        "source": attempt.source,
        "command": attempt.command,
        "exit_code": result.exit_code,
        "duration_ms": result.duration_ms,
        "excerpt": excerpt,
        "sandboxed": sandboxed,
        "network": network,
        "output_withheld": withheld,
        "summary": format!("{label}: {reason}"),
    }))
}

/// The last `n` non-empty lines of `text`.
fn excerpt(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

// 4. Labels: the priority and areas added; another priority label the issue carries removed,
// so a triage that changed its mind leaves one priority.

async fn labels(ctx: &ActionContext, env: &Env) -> Result<Value, ActionError> {
    let forge = crate::actions::forge::forge_of(ctx, &env.forge)?;
    let repo = repo_param(ctx)?;
    let number = number_param(ctx, "issue")?;
    let strings = |name: &str| -> Vec<String> {
        ctx.params
            .get(name)
            .and_then(Value::as_array)
            .map(|l| {
                l.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let wanted = strings("labels");
    let names = &env.settings.labels;
    let priorities = [&names.critical, &names.high, &names.medium, &names.low];
    for stale in strings("current")
        .iter()
        .filter(|l| priorities.contains(l) && !wanted.contains(l))
    {
        forge
            .remove_label(&repo, number, stale)
            .await
            .map_err(|e| forge_error(ctx, e))?;
    }
    let all = forge
        .add_labels(&repo, number, &wanted)
        .await
        .map_err(|e| forge_error(ctx, e))?;
    Ok(json!({ "labels": all, "summary": format!("Labelled #{number}: {}", wanted.join(", ")) }))
}

// 5. The one triage comment.

async fn comment(ctx: &ActionContext, env: &Env) -> Result<Value, ActionError> {
    let forge = crate::actions::forge::forge_of(ctx, &env.forge)?;
    let repo = repo_param(ctx)?;
    let number = number_param(ctx, "issue")?;
    let classify = ctx.params.get("classify").cloned().unwrap_or(Value::Null);
    let repro = ctx.params.get("reproduce").cloned().unwrap_or(Value::Null);
    let body = comment_body(&classify, &repro, env.settings.timeout.0);
    // Keyed by the workflow and the issue, not the run: a later triage edits this comment.
    let key = format!("issue-{number}");
    let posted = forge
        .upsert_comment(&repo, number, ID, Some(&key), &body)
        .await
        .map_err(|e| forge_error(ctx, e))?;
    let triage = json!({
        "priority": classify["priority"],
        "model": classify["model"],
        "labels": classify["labels"],
        "reasons": classify["reasons"],
        "reproduction": {
            "outcome": repro["outcome"],
            "reason": repro["reason"],
            "command": repro["command"],
            "exit_code": repro["exit_code"],
            "excerpt": repro["excerpt"],
            "sandboxed": repro["sandboxed"],
            "output_withheld": repro["output_withheld"],
        },
        "comment": posted.url,
    });
    Ok(json!({
        "triage": triage,
        "summary": format!(
            "Triaged #{number}: {}; {}",
            classify["priority_label"].as_str().unwrap_or("?"),
            repro["summary"].as_str().unwrap_or("")
        ),
    }))
}

fn comment_body(classify: &Value, repro: &Value, timeout: Duration) -> String {
    let mut body = String::from("## baton triage\n\n");
    let _ = writeln!(
        body,
        "**Priority:** `{}`: {}.\n",
        classify["priority_label"].as_str().unwrap_or("?"),
        classify["reasons"]
            .as_array()
            .map(|r| r
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(", "))
            .unwrap_or_default()
    );
    let model = &classify["model"];
    if let Some(reason) = model["reason"].as_str() {
        let from = model["rule_priority"].as_str().unwrap_or("?");
        let to = model["priority"].as_str().unwrap_or("?");
        let verb = if from == to { "kept" } else { "changed" };
        let _ = writeln!(
            body,
            "🤖 **The model {verb} the rules' priority** (`{from}` → `{to}`), not measured: {reason}\n"
        );
    } else if let Some(error) = model["error"].as_str() {
        let why = model["public"].as_str().unwrap_or(error);
        let _ = writeln!(
            body,
            "🤖 The model's view of the priority is missing ({why}; the run's record says why); \
             the rules' priority stands.\n"
        );
    }
    let areas: Vec<&str> = classify["areas"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if !areas.is_empty() {
        let _ = writeln!(
            body,
            "**Areas:** {} (from the files the issue names that exist in the repository).",
            areas
                .iter()
                .map(|a| format!("`{a}`"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let outcome = repro["outcome"].as_str().unwrap_or("could_not_try");
    let title = match outcome {
        "reproduced" => "✅ Reproduced",
        "not_reproduced" => "❌ Not reproduced",
        _ => "⚠️ Could not try",
    };
    let reason = repro["reason"].as_str().unwrap_or("");
    let mut chars = reason.chars();
    let reason: String = chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default();
    let _ = writeln!(body, "\n### Reproduction: {title}\n\n{reason}.");
    if let Some(command) = repro["command"].as_str() {
        let _ = writeln!(
            body,
            "\nRan {} on the default branch{}, time limit {}:\n\n```sh\n{}```\n",
            repro["source"].as_str().unwrap_or("a command"),
            match (
                repro["sandboxed"].as_bool() == Some(true),
                repro["network"].as_bool() == Some(true)
            ) {
                (true, false) => " in a sandbox (no network; only the clone writable)",
                (true, true) => " in a sandbox (only the clone writable)",
                _ => " on the host ([sandbox] mode lets trusted code run there)",
            },
            Dur(timeout),
            ensure_newline(command)
        );
        let exit = repro["exit_code"]
            .as_i64()
            .map_or_else(|| "none (killed)".to_string(), |c| c.to_string());
        let _ = writeln!(
            body,
            "Exit status: {exit}, after {} ms.",
            repro["duration_ms"].as_u64().unwrap_or(0)
        );
        let excerpt = repro["excerpt"].as_str().unwrap_or("");
        if repro["output_withheld"].as_bool() == Some(true) {
            body.push_str("\nThe output is not quoted: the snippet came from someone without write access (`show_untrusted_output` quotes it).\n");
        } else if !excerpt.is_empty() {
            let _ = writeln!(body, "\n<details><summary>Output (last lines)</summary>\n\n```text\n{excerpt}\n```\n</details>");
        }
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_definition_is_valid_with_this_binarys_actions() {
        let wf = baton_actors::Workflow::new(definition(), "built-in", &crate::workflows::known)
            .expect("valid");
        assert_eq!(wf.id(), ID);
        assert!(!wf.def.progress, "the comment is the report");
    }

    #[test]
    fn the_model_refines_the_priority_only_with_a_readable_answer() {
        let settings = Settings::default();
        let base = classify_issue("It is slow", "Saving takes a while.", &[], &[], &settings);
        assert_eq!(base["priority"], "medium", "no rule matches: {base}");
        let check = |asked: crate::agent::Result<Option<String>>| {
            let mut v = base.clone();
            refine(&mut v, Priority::Medium, asked, &settings);
            v
        };
        let v = check(Ok(Some("Priority: HIGH: it loses data on save".into())));
        assert_eq!(v["priority"], "high");
        assert_eq!(v["labels"][0], "priority: high");
        assert_eq!(v["model"]["reason"], "it loses data on save");
        assert_eq!(v["model"]["rule_priority"], "medium");
        for garbage in [
            "I think it is bad",
            "priority: urgent: now",
            "priority: low",
        ] {
            let v = check(Ok(Some(garbage.into())));
            assert_eq!(v["priority"], "medium", "{garbage}");
            assert!(v["model"]["error"]
                .as_str()
                .unwrap()
                .contains("could not be read"));
        }
        let v = check(Err(crate::agent::Error::Config("no key".into())));
        assert_eq!(v["priority"], "medium");
        assert!(v["model"]["error"].as_str().unwrap().contains("no key"));
        assert_eq!(check(Ok(None)), base, "no model: nothing changes");
        assert_eq!(
            parse_priority_answer("Sure.\n`priority: critical — crashes on start`"),
            Some((Priority::Critical, "crashes on start".into()))
        );
    }

    #[test]
    fn priority_follows_the_highest_matching_rule_and_says_why() {
        let s = Settings::default();
        let files = vec!["src/parser/mod.rs".to_string(), "src/lib.rs".to_string()];
        let v = classify_issue("It crashes on empty input", "", &[], &files, &s);
        assert_eq!(v["priority"], "critical");
        assert_eq!(
            v["labels"],
            json!(["priority: critical", "area: parser", "area: lib"])
        );
        assert!(v["reasons"][0].as_str().unwrap().contains("crashes"));
        let trace = "thread 'main' panicked at src/lib.rs:3:5:\nboom";
        let v = classify_issue("Wrong result", trace, &[], &[], &s);
        // "panicked" is not the word "panic": the trace rule decides.
        assert_eq!(v["priority"], "high", "{v}");
        let v = classify_issue("Typo in the help", "", &[], &[], &s);
        assert_eq!(v["priority"], "low");
        let v = classify_issue("Odd result", "", &[], &[], &s);
        assert_eq!(v["priority"], "medium");
        assert_eq!(v["labels"], json!(["priority: medium"]));
    }

    #[test]
    fn runnable_things_are_found_in_order() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("Cargo.toml"), "").unwrap();
        let body = "Run `tests::several`.\n\n```rust\nfn main() {}\n```\n\n```console\n$ echo hi\nhi\n```\n\n```sh repro\nexit 3\n```\n\n$ make check\n";
        let got = attempts(body, tmp.path());
        let commands: Vec<&str> = got.iter().map(|a| a.command.as_str()).collect();
        assert_eq!(
            commands,
            vec![
                "exit 3\n",
                "echo hi\n",
                "cargo test --color never tests::several",
                "make check"
            ]
        );
        let py = attempts("```python\nprint(1)\n```\n", tmp.path());
        assert_eq!(
            py[0].command,
            "python3 - <<'BATON_SNIPPET'\nprint(1)\nBATON_SNIPPET\n"
        );
        assert!(attempts("nothing here", tmp.path()).is_empty());
    }

    #[test]
    fn path_words_drop_line_numbers_and_urls() {
        let got = path_words(
            "see src/lib.rs:12:5 and `./app/x.py`, https://a.b/c.html, /etc/passwd, ../up.rs",
        );
        assert_eq!(got, vec!["src/lib.rs", "app/x.py"]);
    }
}
