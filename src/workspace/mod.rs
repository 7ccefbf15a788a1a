//! Workspaces: the mirror cache under `<data_dir>/mirrors`, one clone per run, and every change
//! baton makes to a repository (file writes, branches, commits, pushes, rebases).
//!
//! This module owns git: it runs the `git` command line with an environment built from
//! nothing and every setting of the clone that could run a program or redirect traffic
//! overridden (`hardening`), lets each command talk only to the URL its caller passes, hands
//! credentials to git only through that environment (never a URL, argv, log line, error or
//! `.git/config`), and redacts any git output it surfaces. Every mutating operation records a
//! [`Change`] in the run's [`Journal`] before it touches anything, and [`undo`] reverses one;
//! [`rollback_hard`], [`rollback_partial`] and [`rollback_soft`] are built from it.
//! In a run the journal is the engine's `ChangeJournal` (`workflow_changes`), adapted in
//! `journal.rs`; the engine actions that drive a workspace are in `crate::actions`.
//! It must not decide what to change (the agent does) nor talk to a forge's API (the forge does).

mod branch;
pub(crate) mod git;
mod hardening;
pub(crate) mod mirror;
mod repo;
mod secret;
mod step_dir;
mod undo;

use std::path::PathBuf;

pub use crate::journal::{Change, Journal, MemoryJournal};
pub use branch::{branch_base_name, is_bug, is_issue_branch};
pub use hardening::OPERATOR_CONFIG_VAR;
pub use mirror::MirrorCache;
pub use repo::{
    BaseState, CloneOptions, FileStat, PushOutcome, RebaseOutcome, RebaseStop, Workspace,
};
pub use secret::Credentials;
pub use step_dir::{clone_dir, repo_dir, step_failure, DEFAULT_DIR};
pub use undo::{rollback_hard, rollback_partial, rollback_soft, undo, RollbackReport};

/// Result of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong with a workspace; messages name the path, command or URL, never a secret.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A git command exited non-zero.
    #[error("`{command}` failed in {dir} (exit {code}): {stderr}")]
    Git {
        /// The command line (no secrets: credentials never reach argv).
        command: String,
        /// Where it ran.
        dir: PathBuf,
        /// Its exit status (-1 when killed by a signal).
        code: i32,
        /// Its standard error, redacted.
        stderr: String,
    },
    /// A program could not be started at all.
    #[error("cannot run `{command}`: {source} (is git installed and on PATH?)")]
    Spawn {
        /// The program.
        command: String,
        /// Why.
        source: std::io::Error,
    },
    /// The remote refused the credentials (or wanted some and got none).
    #[error("authentication failed for {url}: {detail} (check the token and its access to the repository)")]
    Auth {
        /// The remote, without credentials.
        url: String,
        /// git's first line of complaint, redacted.
        detail: String,
    },
    /// The remote does not exist or cannot be reached.
    #[error("cannot reach repository {url}: {detail}")]
    Remote {
        /// The remote, without credentials.
        url: String,
        /// git's first line of complaint, redacted.
        detail: String,
    },
    /// A clone URL baton refuses to use.
    #[error("bad repository URL {url}: {reason}")]
    BadUrl {
        /// The URL with any user:password part replaced by `***`.
        url: String,
        /// Why it is refused.
        reason: String,
    },
    /// A file system operation failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What baton was doing ("write", "read", "create directory", …).
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A path given for a file operation leaves the workspace, enters `.git` or crosses a symlink.
    #[error("path {path} is not a plain file path inside the workspace {root}: {reason}")]
    PathOutside {
        /// The path as given.
        path: PathBuf,
        /// The workspace root.
        root: PathBuf,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The clone destination already has something in it.
    #[error("destination {path} exists and is not empty")]
    DestinationExists {
        /// The destination.
        path: PathBuf,
    },
    /// A file to modify or delete does not exist.
    #[error("file {path} does not exist in the workspace")]
    NoSuchFile {
        /// Relative to the workspace root.
        path: PathBuf,
    },
    /// `commit` found nothing to commit.
    #[error("nothing to commit in {path}: the working tree matches {head}")]
    NothingToCommit {
        /// The workspace.
        path: PathBuf,
        /// The commit it matches.
        head: String,
    },
    /// An operation that needs a clean working tree found changes.
    #[error("working tree of {path} has uncommitted changes: {files}")]
    Dirty {
        /// The workspace.
        path: PathBuf,
        /// The changed files, comma separated.
        files: String,
    },
    /// HEAD is not on a branch.
    #[error("HEAD of {path} is detached; check out a branch first")]
    Detached {
        /// The workspace.
        path: PathBuf,
    },
    /// Rebasing onto the base branch hit conflicts; the rebase was aborted and the
    /// workspace is as it was before.
    #[error("rebasing {branch} onto {onto} conflicts in {}; the rebase was aborted and the workspace left as it was", files.join(", "))]
    Conflict {
        /// The branch being rebased.
        branch: String,
        /// What it was rebased onto (`origin/<base>`).
        onto: String,
        /// The conflicting files, relative to the workspace root.
        files: Vec<String>,
    },
    /// The remote branch has commits this workspace did not push: baton never force-pushes over them.
    #[error("remote branch {branch} on {url} is at {remote_sha}, which this workspace did not push and which is not an ancestor of {local_sha}; refusing to overwrite it")]
    Diverged {
        /// The branch.
        branch: String,
        /// The remote, without credentials.
        url: String,
        /// Where the remote branch is.
        remote_sha: String,
        /// Where the local branch is.
        local_sha: String,
    },
    /// The journal refused the change; nothing was done.
    #[error("cannot record {change_type} in the change journal: {source}")]
    Journal {
        /// The change that was about to be made.
        change_type: String,
        /// The journal's error.
        #[source]
        source: crate::journal::Error,
    },
    /// A change cannot be undone as recorded.
    #[error("cannot undo {change_type}: {reason}")]
    Undo {
        /// The change's type.
        change_type: String,
        /// Why.
        reason: String,
    },
    /// The repository holds something baton's git cannot neutralize (see `hardening`).
    #[error("refusing to run git in {dir}: {reason}")]
    Refused {
        /// Where.
        dir: PathBuf,
        /// What was found, and how a person can remove it.
        reason: String,
    },
    /// The mirror lock could not be taken.
    #[error("cannot lock mirror {path}: {source}")]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// Who commits: name and e-mail given to git by environment.
#[derive(Clone, Debug, PartialEq)]
pub struct Identity {
    /// `GIT_AUTHOR_NAME` and `GIT_COMMITTER_NAME`.
    pub name: String,
    /// `GIT_AUTHOR_EMAIL` and `GIT_COMMITTER_EMAIL`.
    pub email: String,
}

impl Default for Identity {
    fn default() -> Self {
        Identity {
            name: "baton".into(),
            email: "baton@localhost".into(),
        }
    }
}
