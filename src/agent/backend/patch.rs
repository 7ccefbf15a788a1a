//! The `patch` backend: no model. It applies the unified diffs in the issue body's fenced
//! `diff` (or `patch`) blocks with `git apply`, block by block, in order. Every file a block
//! touches is checked against the jail and journaled before the block is applied. A block
//! that does not apply stops the run with an error naming the block, the file and the hunk;
//! blocks applied before it stay.

use std::path::Path;
use std::sync::LazyLock;

use regex::Regex;

use super::{Backend, Outcome, Round};
use crate::agent::error::{Error, Result};
use crate::agent::issue::diff_blocks;
use crate::agent::journal::BoxFuture;
use crate::agent::plan::Plan;
use crate::journal::Change;

/// One hunk header of a file patch.
#[derive(Debug, Clone, PartialEq)]
pub struct Hunk {
    /// The `@@ -a,b +c,d @@` line.
    pub header: String,
    /// `a`: where the hunk starts in the old file.
    pub old_start: u64,
}

/// What one diff does to one file. Paths are as `git apply` will see them after stripping.
#[derive(Debug, Clone, PartialEq)]
pub struct FilePatch {
    /// The file before (`None`: created).
    pub old: Option<String>,
    /// The file after (`None`: deleted).
    pub new: Option<String>,
    /// Its hunks, in order.
    pub hunks: Vec<Hunk>,
}

impl FilePatch {
    /// The path to name in messages.
    pub fn path(&self) -> &str {
        self.new.as_deref().or(self.old.as_deref()).unwrap_or("?")
    }
}

static HUNK: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^@@ -(\d+)(?:,\d+)? \+\d+(?:,\d+)? @@").unwrap());
static PATCH_FAILED: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"patch failed: (.+):(\d+)").unwrap());
static FILE_ERROR: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"error: (.+?): (does not exist in index|No such file or directory|already exists in working directory|does not match index|patch does not apply)").unwrap()
});

/// Parses a unified diff; returns its files and whether paths carry `a/`/`b/` prefixes.
pub fn parse_diff(text: &str) -> (Vec<FilePatch>, bool) {
    let lines: Vec<&str> = text.lines().collect();
    let mut files: Vec<FilePatch> = Vec::new();
    let mut raw_paths: Vec<String> = Vec::new();
    let mut i = 0;
    let header_path = |s: &str| -> Option<String> {
        let p = s.split('\t').next().unwrap_or(s).trim();
        (p != "/dev/null").then(|| p.to_string())
    };
    while i < lines.len() {
        let line = lines[i];
        if let Some(rest) = line.strip_prefix("diff --git ") {
            let mut parts = rest.splitn(2, ' ');
            let old = parts.next().map(String::from);
            let new = parts.next().map(String::from);
            raw_paths.extend(old.iter().chain(new.iter()).cloned());
            files.push(FilePatch {
                old,
                new,
                hunks: Vec::new(),
            });
        } else if line.starts_with("--- ")
            && lines.get(i + 1).is_some_and(|n| n.starts_with("+++ "))
        {
            let old = header_path(&line[4..]);
            let new = header_path(&lines[i + 1][4..]);
            raw_paths.extend(old.iter().chain(new.iter()).cloned());
            let starts_new = files.last().is_none_or(|f| !f.hunks.is_empty());
            if starts_new {
                files.push(FilePatch {
                    old,
                    new,
                    hunks: Vec::new(),
                });
            } else if let Some(f) = files.last_mut() {
                f.old = old;
                f.new = new;
            }
            i += 2;
            continue;
        } else if line.starts_with("new file mode") {
            if let Some(f) = files.last_mut() {
                f.old = None;
            }
        } else if line.starts_with("deleted file mode") {
            if let Some(f) = files.last_mut() {
                f.new = None;
            }
        } else if let Some(p) = line.strip_prefix("rename from ") {
            if let Some(f) = files.last_mut() {
                f.old = Some(format!("a/{p}"));
            }
        } else if let Some(p) = line.strip_prefix("rename to ") {
            if let Some(f) = files.last_mut() {
                f.new = Some(format!("b/{p}"));
            }
        } else if let Some(cap) = HUNK.captures(line) {
            if let Some(f) = files.last_mut() {
                f.hunks.push(Hunk {
                    header: line.to_string(),
                    old_start: cap[1].parse().unwrap_or(0),
                });
            }
        }
        i += 1;
    }
    let prefixed = !raw_paths.is_empty()
        && raw_paths
            .iter()
            .all(|p| p.starts_with("a/") || p.starts_with("b/"));
    if prefixed {
        for f in &mut files {
            for p in [&mut f.old, &mut f.new].into_iter().flatten() {
                *p = p[2..].to_string();
            }
        }
    }
    (files, prefixed)
}

/// Turns `git apply --check` output into a message naming the block, file and hunk.
fn explain_failure(block: usize, blocks: usize, files: &[FilePatch], stderr: &str) -> String {
    let what = if let Some(cap) = PATCH_FAILED.captures(stderr) {
        let path = cap[1].to_string();
        let line: u64 = cap[2].parse().unwrap_or(0);
        match files.iter().find(|f| f.path() == path) {
            Some(f) => match f.hunks.iter().position(|h| h.old_start == line) {
                Some(k) => format!(
                    "{path}: hunk {} of {} `{}` does not match the file's current content",
                    k + 1,
                    f.hunks.len(),
                    f.hunks[k].header
                ),
                None => format!(
                    "{path}: the hunk at line {line} does not match the file's current content"
                ),
            },
            None => {
                format!("{path}: the hunk at line {line} does not match the file's current content")
            }
        }
    } else if let Some(cap) = FILE_ERROR.captures(stderr) {
        let path = &cap[1];
        let hunk = files
            .iter()
            .find(|f| f.path() == path)
            .and_then(|f| f.hunks.first())
            .map(|h| format!(", hunk 1 `{}`", h.header))
            .unwrap_or_default();
        format!("{path}{hunk}: {}", &cap[2])
    } else {
        stderr
            .lines()
            .next()
            .unwrap_or("git apply rejected it")
            .trim_start_matches("error: ")
            .to_string()
    };
    format!(
        "diff block {block} of {blocks} does not apply: {what}\ngit apply said:\n{}",
        stderr.trim()
    )
}

/// Applies the issue's diffs.
#[derive(Debug, Clone, Default)]
pub struct PatchBackend;

impl PatchBackend {
    async fn run(&self, round: &mut Round<'_>) -> Result<Outcome> {
        let raw = round
            .raw_issue
            .ok_or_else(|| Error::Unsupported("the patch backend cannot fix failing verification: it only applies the issue's diffs".into()))?;
        let blocks = diff_blocks(&raw.body);
        if blocks.is_empty() {
            return Err(Error::Patch(
                "the issue has no fenced ```diff block to apply, and the patch backend (the default, no model) does nothing else; to work on an ordinary issue, configure a model in config.toml's [agent]: `backend = \"openai\"` (or \"anthropic\", or \"command\" for a coding CLI) and `model`, with OPENAI_API_KEY (or ANTHROPIC_API_KEY) where baton starts"
                    .into(),
            ));
        }
        let parsed: Vec<(Vec<FilePatch>, bool)> = blocks.iter().map(|b| parse_diff(b)).collect();
        let plan = Plan {
            steps: parsed
                .iter()
                .enumerate()
                .map(|(i, (files, _))| {
                    format!(
                        "apply diff block {} ({})",
                        i + 1,
                        files
                            .iter()
                            .map(|f| f.path())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                })
                .collect(),
            files_to_touch: parsed
                .iter()
                .flat_map(|(f, _)| f.iter().map(|f| f.path().to_string()))
                .collect(),
            tests_to_add: parsed
                .iter()
                .flat_map(|(f, _)| {
                    f.iter()
                        .filter(|f| f.old.is_none() && f.path().contains("test"))
                        .map(|f| f.path().to_string())
                })
                .collect(),
            ..Plan::default()
        };
        round.progress.update(&plan.summary());
        round.plan = Some(plan);

        let root = round.jail.root().to_path_buf();
        let total = blocks.len();
        let mut touched = Vec::new();
        for (i, (block, (files, prefixed))) in blocks.iter().zip(&parsed).enumerate() {
            if round.cancel.is_cancelled() {
                return Err(Error::Cancelled);
            }
            let n = i + 1;
            if files.is_empty() {
                return Err(Error::Patch(format!(
                    "diff block {n} of {total} has no file headers (--- / +++ lines)"
                )));
            }
            // Jail every path and read what the journal needs before anything changes.
            let mut changes = Vec::new();
            for f in files {
                match (&f.old, &f.new) {
                    (Some(old), Some(new)) if old != new => {
                        changes.push(self.before(round, n, old, Op::Delete)?);
                        changes.push(self.before(round, n, new, Op::Create)?);
                    }
                    (Some(old), Some(_)) => changes.push(self.before(round, n, old, Op::Modify)?),
                    (Some(old), None) => changes.push(self.before(round, n, old, Op::Delete)?),
                    (None, Some(new)) => changes.push(self.before(round, n, new, Op::Create)?),
                    (None, None) => {}
                }
            }
            let file = std::env::temp_dir().join(format!(
                "baton-patch-{}-{}-{n}.diff",
                std::process::id(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or(0)
            ));
            let mut text = block.clone();
            if !text.ends_with('\n') {
                text.push('\n');
            }
            std::fs::write(&file, text)
                .map_err(|e| Error::io(format!("writing {}", file.display()), e))?;
            let result = async {
                git_apply(&root, &file, *prefixed, true)
                    .await
                    .map_err(|e| Error::Patch(explain_failure(n, total, files, &e)))?;
                for change in changes {
                    round.tracker.record(round.journal, change).await?;
                }
                git_apply(&root, &file, *prefixed, false)
                    .await
                    .map_err(|e| Error::Patch(explain_failure(n, total, files, &e)))
            }
            .await;
            let _ = std::fs::remove_file(&file);
            result?;
            let names: Vec<&str> = files.iter().map(|f| f.path()).collect();
            round.note(format!(
                "applied diff block {n} of {total}: {}",
                names.join(", ")
            ));
            touched.extend(names.into_iter().map(String::from));
        }
        round.progress.update(&format!(
            "Implementing changes ({} files changed)...",
            round.tracker.changes(&root).len()
        ));
        Ok(Outcome::Finished {
            summary: format!(
                "Applied {total} diff block(s) from the issue to {}.",
                touched.join(", ")
            ),
        })
    }

    /// Jails a path of block `n` and returns the journal record for it.
    fn before(&self, round: &Round<'_>, n: usize, path: &str, op: Op) -> Result<Change> {
        let (resolved, before) = round
            .jail
            .prepare_write(path)
            .map_err(|e| Error::Patch(format!("diff block {n}: {e}")))?;
        Ok(match (op, before) {
            (Op::Modify, Some(b)) => Change::file_modify(&resolved.rel, &b),
            (Op::Delete, Some(b)) => Change::file_delete(&resolved.rel, &b),
            (Op::Create, None) => Change::file_create(&resolved.rel),
            (Op::Create, Some(_)) => {
                return Err(Error::Patch(format!(
                "diff block {n}: `{path}` already exists in the workspace but the diff creates it"
            )))
            }
            (_, None) => {
                return Err(Error::Patch(format!(
                    "diff block {n}: `{path}` does not exist in the workspace"
                )))
            }
        })
    }
}

/// What a diff does to one path.
#[derive(Clone, Copy)]
enum Op {
    Create,
    Modify,
    Delete,
}

/// `git apply` (or `git apply --check`) of a patch file in the workspace.
async fn git_apply(root: &Path, file: &Path, prefixed: bool, check: bool) -> Result<(), String> {
    let file_arg = file.display().to_string();
    let mut args = vec![
        "apply",
        "--recount",
        "--whitespace=nowarn",
        if prefixed { "-p1" } else { "-p0" },
    ];
    if check {
        args.push("--check");
    }
    args.push(&file_arg);
    match crate::agent::process::git(root, &args).await {
        Ok(_) => Ok(()),
        // What git said is what `explain_failure` reads.
        Err(crate::workspace::Error::Git { stderr, .. }) => Err(stderr.trim().to_string()),
        Err(other) => Err(other.to_string()),
    }
}

impl Backend for PatchBackend {
    fn name(&self) -> &'static str {
        "patch"
    }
    fn implement<'a, 'b: 'a>(&'a self, round: &'a mut Round<'b>) -> BoxFuture<'a, Result<Outcome>> {
        Box::pin(self.run(round))
    }
    fn can_fix(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_git_and_plain_diffs() {
        let git = "diff --git a/src/a.rs b/src/a.rs\n--- a/src/a.rs\n+++ b/src/a.rs\n@@ -1,2 +1,2 @@\n-x\n+y\n@@ -10 +10 @@\n--- removed line that looks like a header\n+z\n\
                   diff --git a/new.txt b/new.txt\nnew file mode 100644\n--- /dev/null\n+++ b/new.txt\n@@ -0,0 +1 @@\n+hi\n";
        let (files, prefixed) = parse_diff(git);
        assert!(prefixed);
        assert_eq!(files.len(), 2);
        assert_eq!(files[0].old.as_deref(), Some("src/a.rs"));
        assert_eq!(
            files[0]
                .hunks
                .iter()
                .map(|h| h.old_start)
                .collect::<Vec<_>>(),
            vec![1, 10]
        );
        assert_eq!(files[1].old, None);
        assert_eq!(files[1].new.as_deref(), Some("new.txt"));

        let plain = "--- lib.py\t2024-01-01\n+++ lib.py\n@@ -3,1 +3,1 @@\n-a\n+b\n";
        let (files, prefixed) = parse_diff(plain);
        assert!(!prefixed);
        assert_eq!(files[0].path(), "lib.py");
    }

    #[test]
    fn failure_names_file_and_hunk() {
        let (files, _) =
            parse_diff("--- a/x.rs\n+++ b/x.rs\n@@ -1 +1 @@\n-a\n+b\n@@ -7,2 +7,2 @@\n-c\n+d\n");
        let msg = explain_failure(
            1,
            2,
            &files,
            "error: patch failed: x.rs:7\nerror: x.rs: patch does not apply\n",
        );
        assert!(
            msg.starts_with(
                "diff block 1 of 2 does not apply: x.rs: hunk 2 of 2 `@@ -7,2 +7,2 @@`"
            ),
            "{msg}"
        );
    }
}
