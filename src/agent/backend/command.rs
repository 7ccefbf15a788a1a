//! The `command` backend: an external coding CLI (for example a headless mode of a coding
//! assistant) run in the workspace. `agent.command` is its argv: `{task}` in an argument is
//! replaced by the task text, `{task_file}` by the path of a file holding it (outside the
//! workspace); with neither, the task goes to its standard input. It runs in its own process
//! group with the scrubbed environment plus `agent.command_env`, under the time budget.
//!
//! Its writes cannot be intercepted, so they are journaled right after it exits, each with
//! its content from before the run (see `changes::Snapshot`).

use std::path::PathBuf;

use super::{Backend, Outcome, Round};
use crate::agent::changes::Snapshot;
use crate::agent::error::{Error, Result};
use crate::agent::journal::BoxFuture;
use crate::agent::process::{self, Exit};

/// An external coding command.
#[derive(Debug, Clone)]
pub struct CommandBackend {
    template: Vec<String>,
}

impl CommandBackend {
    /// A backend running `template` (see the module doc).
    pub fn new(template: Vec<String>) -> Self {
        CommandBackend { template }
    }

    async fn run(&self, round: &mut Round<'_>) -> Result<Outcome> {
        let root = round.jail.root().to_path_buf();
        let task = round.task.clone();
        let mut task_file: Option<TempFile> = None;
        let mut uses_arg = false;
        let mut argv = Vec::with_capacity(self.template.len());
        for arg in &self.template {
            let mut a = arg.clone();
            if a.contains("{task_file}") {
                if task_file.is_none() {
                    task_file = Some(TempFile::write(&task)?);
                }
                let path = task_file
                    .as_ref()
                    .map(|f| f.0.display().to_string())
                    .unwrap_or_default();
                a = a.replace("{task_file}", &path);
                uses_arg = true;
            }
            if a.contains("{task}") {
                a = a.replace("{task}", &task);
                uses_arg = true;
            }
            argv.push(a);
        }
        round.note(format!("running `{}`", self.template.join(" ")));
        round.progress.update("Running the coding command...");
        let snapshot = Snapshot::take(&root).await;
        let timeout = round.budget.remaining_time();
        // In the sandbox the command sees the clone and, read-only, the files its configured
        // arguments name (its script) and the task file: nothing the issue chose.
        let mut exec = round.exec.clone();
        exec.read_only.extend(
            self.template
                .iter()
                .map(std::path::PathBuf::from)
                .filter(|p| p.is_absolute() && p.is_file()),
        );
        exec.read_only
            .extend(task_file.as_ref().map(|f| f.0.clone()));
        let out = process::run(
            &argv,
            &root,
            &exec,
            (!uses_arg).then_some(task.as_str()),
            timeout,
            round.cancel,
        )
        .await;
        if let Some(s) = &snapshot {
            let changed = s
                .record_since(&root, round.journal, &mut round.tracker)
                .await?;
            round.note(format!(
                "the command changed {} files: {}",
                changed.len(),
                changed.join(", ")
            ));
        } else {
            round.note("the workspace is not a git repository: changes were not journaled");
        }
        let out = out.map_err(|e| {
            Error::Command(format!(
                "cannot run `{}`: {e}",
                self.template.first().map(String::as_str).unwrap_or("")
            ))
        })?;
        round.note(format!(
            "stdout:\n{}\nstderr:\n{}",
            process::tail(&out.stdout, 8192),
            process::tail(&out.stderr, 8192)
        ));
        match out.exit {
            Exit::Cancelled => Err(Error::Cancelled),
            Exit::TimedOut => Ok(Outcome::Stopped {
                reason: round.budget.time_exhausted(),
            }),
            Exit::Code(Some(0)) => Ok(Outcome::Finished {
                summary: round
                    .redactor
                    .redact(&process::tail(out.stdout.trim(), 4000)),
            }),
            Exit::Code(code) => Err(Error::Command(format!(
                "`{}` exited with {}: {}",
                self.template.first().map(String::as_str).unwrap_or(""),
                code.map(|c| c.to_string())
                    .unwrap_or_else(|| "a signal".into()),
                round
                    .redactor
                    .redact(&process::tail(out.stderr.trim(), 2000))
            ))),
        }
    }
}

/// A file holding the task, removed when dropped.
struct TempFile(PathBuf);

impl TempFile {
    fn write(text: &str) -> Result<Self> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let path =
            std::env::temp_dir().join(format!("baton-task-{}-{nanos}.md", std::process::id()));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| Error::io(format!("writing the task file {}", path.display()), e))?;
        f.write_all(text.as_bytes())
            .map_err(|e| Error::io(format!("writing the task file {}", path.display()), e))?;
        Ok(TempFile(path))
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl Backend for CommandBackend {
    fn name(&self) -> &'static str {
        "command"
    }
    fn implement<'a, 'b: 'a>(&'a self, round: &'a mut Round<'b>) -> BoxFuture<'a, Result<Outcome>> {
        Box::pin(self.run(round))
    }
}
