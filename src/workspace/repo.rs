//! A run's workspace: one clone, and the operations that change it, each journaled first.

use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use serde_json::{json, Value};

use super::branch::{branch_base_name, first_free};
use super::git::Git;
use super::mirror::{check_url, MirrorCache};
use super::secret::{base64_encode, redact, Credentials};
use super::{Change, Error, Identity, Journal, Result};

/// Git config key (in the workspace's own `.git/config`) holding the base branch.
const BASE_KEY: &str = "baton.base";

/// What to clone and where.
#[derive(Clone, Debug)]
pub struct CloneOptions {
    /// The remote URL, without credentials.
    pub url: String,
    /// The workspace directory (must not exist or be empty), usually `<data_dir>/workspaces/<run>`.
    pub dest: PathBuf,
    /// The branch to start from and rebase onto; the remote's default branch when `None`.
    pub base: Option<String>,
    /// The token for `url`, handed to git by environment only.
    pub credentials: Option<Credentials>,
    /// Who commits.
    pub identity: Identity,
}

impl CloneOptions {
    /// Clone `url` into `dest` from the default branch, without credentials, as `baton`.
    pub fn new(url: impl Into<String>, dest: impl Into<PathBuf>) -> Self {
        CloneOptions {
            url: url.into(),
            dest: dest.into(),
            base: None,
            credentials: None,
            identity: Identity::default(),
        }
    }
}

/// What [`Workspace::push`] did.
#[derive(Clone, Debug, PartialEq)]
pub struct PushOutcome {
    /// The branch pushed.
    pub branch: String,
    /// Where the remote branch was before (`None`: it did not exist).
    pub previous: Option<String>,
    /// The commit pushed.
    pub pushed: String,
    /// The remote already had this commit; nothing was pushed or recorded.
    pub up_to_date: bool,
}

/// What [`Workspace::fetch_and_rebase`] did.
#[derive(Clone, Debug, PartialEq)]
pub struct RebaseOutcome {
    /// The branch's commit before.
    pub before: String,
    /// The branch's commit after.
    pub after: String,
    /// What it was rebased onto (the fetched `origin/<base>`).
    pub onto: String,
    /// The branch already contained `onto`; nothing was done or recorded.
    pub up_to_date: bool,
}

/// Where [`Workspace::rebase_for_person`] stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RebaseStop {
    /// The branch is rebased; its new head.
    Done {
        /// The new head.
        head: String,
    },
    /// Stopped at a conflict in these files, left in the clone to be resolved.
    Conflicts(Vec<String>),
}

/// How the base branch stands against the current branch (see [`Workspace::base_state`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseState {
    /// Commits on the base that the branch does not have.
    pub behind: u64,
    /// Files that would conflict; empty when the branch merges cleanly.
    pub conflicts: Vec<String>,
}

/// One file of a diff (see [`Workspace::diff_stat`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileStat {
    /// Path in the repository.
    pub path: String,
    /// Lines added.
    pub added: u64,
    /// Lines removed.
    pub removed: u64,
    /// The file is new.
    pub new_file: bool,
}

/// One run's clone of a repository. Every mutating method records a [`Change`] in the journal
/// before it acts; a journal error stops the operation with nothing done.
pub struct Workspace<J> {
    root: PathBuf,
    url: String,
    base: String,
    creds: Option<Credentials>,
    identity: Identity,
    journal: J,
}

impl<J> std::fmt::Debug for Workspace<J> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workspace")
            .field("root", &self.root)
            .field("url", &self.url)
            .field("base", &self.base)
            .field("creds", &self.creds)
            .finish_non_exhaustive()
    }
}

impl<J: Journal> Workspace<J> {
    /// Clones through the mirror cache: the mirror is created or fetched, then `dest` is cloned
    /// from it locally and its `origin` set to the real URL.
    pub async fn clone(cache: &MirrorCache, opts: CloneOptions, journal: J) -> Result<Self> {
        check_url(&opts.url)?;
        cache
            .checkout(
                &opts.url,
                &opts.dest,
                opts.base.as_deref(),
                opts.credentials.as_ref(),
            )
            .await?;
        let git = Git::at(&opts.dest);
        let base = git.run(&["symbolic-ref", "--short", "HEAD"]).await?;
        git.run(&["config", BASE_KEY, &base]).await?;
        Ok(Workspace {
            root: opts.dest,
            url: opts.url,
            base,
            creds: opts.credentials,
            identity: opts.identity,
            journal,
        })
    }

    /// Reopens the workspace at `root` that [`Workspace::clone`] made from `url` with `base`
    /// (after a restart, or in a later step). `url` and `base` come from the caller's record of
    /// the clone, never from the clone's `.git/config`, which code run in the clone can write:
    /// every fetch and push goes to `url`.
    pub async fn open(
        root: &Path,
        url: &str,
        base: &str,
        credentials: Option<Credentials>,
        identity: Identity,
        journal: J,
    ) -> Result<Self> {
        check_url(url)?;
        // A repository at all, and one baton's git will work in (see `hardening`).
        Git::at(root).run(&["rev-parse", "--git-dir"]).await?;
        Ok(Workspace {
            root: root.to_path_buf(),
            url: url.to_string(),
            base: base.to_string(),
            creds: credentials,
            identity,
            journal,
        })
    }

    /// What the clone at `root` says of itself: its `origin` URL and the base branch
    /// [`Workspace::clone`] wrote into its config. For checking a clone against a record, or
    /// reopening one before any of its code ran; never for where git talks to.
    pub async fn cloned_from(root: &Path) -> Result<(String, String)> {
        let git = Git::at(root);
        let url = git.run(&["config", "--get", "remote.origin.url"]).await?;
        let base = git.run(&["config", "--get", BASE_KEY]).await?;
        Ok((url, base))
    }

    /// Reads a key of the clone's own git config at `root` (`None` when unset). Code run in the
    /// clone can write that file: never let what it says choose a URL, a program or a secret.
    pub async fn read_config(root: &Path, key: &str) -> Result<Option<String>> {
        let out = Git::at(root).output(&["config", "--get", key]).await?;
        Ok((out.code == 0).then(|| out.stdout.trim().to_string()))
    }

    /// The workspace directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The remote URL every fetch and push goes to.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The base branch (rebase target).
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The journal changes go to.
    pub fn journal(&self) -> &J {
        &self.journal
    }

    /// Git in the workspace, with identity, credentials and the one URL it may talk to.
    pub(crate) fn git(&self) -> Git<'_> {
        Git {
            dir: self.root.clone(),
            creds: self.creds.as_ref(),
            url: Some(&self.url),
            identity: Some(&self.identity),
        }
    }

    /// Text with the token and any URL credentials replaced by `***`.
    pub fn redact(&self, text: &str) -> String {
        redact(text, self.creds.as_ref())
    }

    /// The checked-out branch.
    pub async fn current_branch(&self) -> Result<String> {
        let out = self
            .git()
            .output(&["symbolic-ref", "--quiet", "--short", "HEAD"])
            .await?;
        if out.code != 0 {
            return Err(Error::Detached {
                path: self.root.clone(),
            });
        }
        Ok(out.stdout.trim_end().to_string())
    }

    /// The sha of `HEAD`.
    pub async fn head(&self) -> Result<String> {
        self.git().run(&["rev-parse", "--verify", "HEAD"]).await
    }

    /// Files with uncommitted changes (including untracked ones), as `git status` names them.
    pub async fn changed_files(&self) -> Result<Vec<String>> {
        let out = self
            .git()
            .run(&["status", "--porcelain=v1", "--untracked-files=all"])
            .await?;
        Ok(out
            .lines()
            .filter(|l| l.len() > 3)
            .map(|l| l[3..].to_string())
            .collect())
    }

    /// Where `branch` is on the remote, if it exists there.
    pub async fn remote_sha(&self, branch: &str) -> Result<Option<String>> {
        let refname = format!("refs/heads/{branch}");
        let out = self
            .git()
            .run(&["ls-remote", "--heads", &self.url, &refname])
            .await?;
        Ok(out
            .lines()
            .find(|l| l.ends_with(&format!("\t{refname}")))
            .and_then(|l| l.split('\t').next())
            .map(str::to_string))
    }

    async fn record(&self, change_type: &str, change_data: Value) -> Result<Change> {
        let change = Change {
            change_type: change_type.to_string(),
            change_data,
        };
        self.journal
            .record(change.clone())
            .await
            .map_err(|source| Error::Journal {
                change_type: change_type.to_string(),
                source,
            })?;
        Ok(change)
    }

    /// Creates and checks out a branch for an issue: `fix/issue-{n}` for bugs,
    /// `feature/issue-{n}` otherwise, with `-2`, `-3`, … when the name exists locally or on
    /// the remote. Returns the name used.
    pub async fn create_issue_branch(
        &self,
        issue: u64,
        labels: &[String],
        title: &str,
    ) -> Result<String> {
        self.create_branch(&branch_base_name(issue, labels, title))
            .await
    }

    /// Creates and checks out `name` (or `name-2`, `name-3`, … if taken locally or on the
    /// remote) at HEAD. Records `branch_create {branch, start, previous_branch}`.
    pub async fn create_branch(&self, name: &str) -> Result<String> {
        let git = self.git();
        git.run(&["check-ref-format", "--branch", name]).await?;
        let local = git
            .run(&["for-each-ref", "--format=%(refname:short)", "refs/heads/"])
            .await?;
        let remote = git.run(&["ls-remote", "--heads", &self.url]).await?;
        let mut taken: Vec<String> = local.lines().map(str::to_string).collect();
        taken.extend(remote.lines().filter_map(|l| {
            l.split('\t')
                .nth(1)
                .and_then(|r| r.strip_prefix("refs/heads/"))
                .map(str::to_string)
        }));
        let branch = first_free(name, |n| taken.iter().any(|t| t == n));
        let start = self.head().await?;
        let previous = self.current_branch().await.ok();
        self.record(
            "branch_create",
            json!({"branch": branch, "start": start, "previous_branch": previous}),
        )
        .await?;
        git.run(&["checkout", "--quiet", "-b", &branch]).await?;
        tracing::info!(branch = %branch, "created branch");
        Ok(branch)
    }

    /// Checks that `rel` is a plain relative path inside the workspace, outside `.git`, with no
    /// symlink on the way; returns the absolute path.
    pub(crate) fn resolve(&self, rel: &Path) -> Result<PathBuf> {
        let outside = |reason| Error::PathOutside {
            path: rel.to_path_buf(),
            root: self.root.clone(),
            reason,
        };
        let mut clean = PathBuf::new();
        for c in rel.components() {
            match c {
                Component::Normal(part) => clean.push(part),
                Component::CurDir => {}
                Component::ParentDir => return Err(outside("it contains `..`")),
                Component::RootDir | Component::Prefix(_) => return Err(outside("it is absolute")),
            }
        }
        let first = clean.components().next();
        match first {
            None => return Err(outside("it is empty")),
            Some(c) if c.as_os_str() == ".git" => return Err(outside("it is inside .git")),
            Some(_) => {}
        }
        let mut at = self.root.clone();
        for c in clean.components() {
            at.push(c);
            if let Ok(meta) = std::fs::symlink_metadata(&at) {
                if meta.file_type().is_symlink() {
                    return Err(outside("it goes through a symlink"));
                }
            }
        }
        Ok(at)
    }

    /// Writes `contents` to `rel` (created with its directories, or replaced). Records
    /// `file_create {path, created_dirs}` or `file_modify {path, before | before_base64, mode}`.
    /// Writing the same contents again changes and records nothing.
    pub async fn write_file(&self, rel: impl AsRef<Path>, contents: &[u8]) -> Result<()> {
        let rel = rel.as_ref();
        let abs = self.resolve(rel)?;
        let io = |action, source| Error::Io {
            action,
            path: abs.clone(),
            source,
        };
        let meta = match tokio::fs::symlink_metadata(&abs).await {
            Ok(m) => Some(m),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io("inspect", e)),
        };
        let path = rel_string(rel);
        match &meta {
            Some(m) if !m.is_file() => {
                return Err(Error::PathOutside {
                    path: rel.to_path_buf(),
                    root: self.root.clone(),
                    reason: "it is not a regular file",
                })
            }
            Some(m) => {
                let before = tokio::fs::read(&abs).await.map_err(|e| io("read", e))?;
                if before == contents {
                    return Ok(());
                }
                let mut data = content_json(&before);
                data["path"] = json!(path);
                data["mode"] = json!(m.permissions().mode() & 0o7777);
                self.record("file_modify", data).await?;
            }
            None => {
                let mut created = Vec::new();
                let mut dir = abs.parent();
                while let Some(d) = dir {
                    if d == self.root || d.exists() {
                        break;
                    }
                    created.push(rel_string(d.strip_prefix(&self.root).unwrap_or(d)));
                    dir = d.parent();
                }
                created.reverse();
                self.record(
                    "file_create",
                    json!({"path": path, "created_dirs": created}),
                )
                .await?;
            }
        }
        if let Some(parent) = abs.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|e| io("create directory for", e))?;
        }
        write_atomic(&abs, contents, meta.map(|m| m.permissions().mode())).await
    }

    /// Deletes the file `rel`. Records `file_delete {path, before | before_base64, mode}`.
    pub async fn delete_file(&self, rel: impl AsRef<Path>) -> Result<()> {
        let rel = rel.as_ref();
        let abs = self.resolve(rel)?;
        let meta = match tokio::fs::symlink_metadata(&abs).await {
            Ok(m) if m.is_file() => m,
            _ => {
                return Err(Error::NoSuchFile {
                    path: rel.to_path_buf(),
                })
            }
        };
        let io = |action, source| Error::Io {
            action,
            path: abs.clone(),
            source,
        };
        let before = tokio::fs::read(&abs).await.map_err(|e| io("read", e))?;
        let mut data = content_json(&before);
        data["path"] = json!(rel_string(rel));
        data["mode"] = json!(meta.permissions().mode() & 0o7777);
        self.record("file_delete", data).await?;
        tokio::fs::remove_file(&abs)
            .await
            .map_err(|e| io("delete", e))
    }

    /// Commits every change in the working tree on the current branch. The commit object is
    /// made first, then `commit {branch, parent, sha, message}` recorded, then the branch moved:
    /// the journal always knows the sha before the branch points at it. Returns the sha.
    pub async fn commit(&self, message: &str) -> Result<String> {
        let git = self.git();
        let branch = self.current_branch().await?;
        let parent = git
            .run(&["rev-parse", "--verify", "--quiet", "HEAD"])
            .await
            .ok();
        git.run(&["add", "--all"]).await?;
        let tree = git.run(&["write-tree"]).await?;
        let mut args = vec!["commit-tree", tree.as_str(), "-m", message];
        if let Some(p) = &parent {
            let parent_tree = git.run(&["rev-parse", &format!("{p}^{{tree}}")]).await?;
            if parent_tree == tree {
                return Err(Error::NothingToCommit {
                    path: self.root.clone(),
                    head: p.clone(),
                });
            }
            args.extend(["-p", p.as_str()]);
        }
        let sha = git.run(&args).await?;
        self.record(
            "commit",
            json!({"branch": branch, "parent": parent, "sha": sha, "message": message}),
        )
        .await?;
        let refname = format!("refs/heads/{branch}");
        let old = parent.clone().unwrap_or_default();
        git.run(&["update-ref", "-m", "baton: commit", &refname, &sha, &old])
            .await?;
        tracing::info!(branch = %branch, sha = %sha, "committed");
        Ok(sha)
    }

    /// Pushes the current branch to the workspace's URL. Never overwrites commits this workspace did not
    /// push: the push carries a lease on the remote sha, and a remote branch that is neither an
    /// ancestor of ours nor what we pushed last is refused with [`Error::Diverged`]. Records
    /// `push {remote, branch, previous, pushed}` before pushing.
    pub async fn push(&self) -> Result<PushOutcome> {
        let git = self.git();
        let branch = self.current_branch().await?;
        let local = self.head().await?;
        let previous = self.remote_sha(&branch).await?;
        let pushed_key = format!("branch.{branch}.batonPushed");
        if let Some(remote) = &previous {
            if *remote == local {
                return Ok(PushOutcome {
                    branch,
                    previous: previous.clone(),
                    pushed: local,
                    up_to_date: true,
                });
            }
            let ours = git.run(&["config", "--get", &pushed_key]).await.ok();
            let fast_forward = git
                .output(&["merge-base", "--is-ancestor", remote, &local])
                .await?
                .code
                == 0;
            if !fast_forward && ours.as_deref() != Some(remote.as_str()) {
                return Err(Error::Diverged {
                    branch,
                    url: self.redact(&self.url),
                    remote_sha: remote.clone(),
                    local_sha: local,
                });
            }
        }
        self.record(
            "push",
            json!({"remote": self.url, "branch": branch, "previous": previous, "pushed": local}),
        )
        .await?;
        let lease = format!(
            "--force-with-lease=refs/heads/{branch}:{}",
            previous.as_deref().unwrap_or("")
        );
        let refspec = format!("{local}:refs/heads/{branch}");
        git.run(&[
            "push",
            "--quiet",
            "--no-verify",
            &lease,
            &self.url,
            &refspec,
        ])
        .await?;
        git.run(&["config", &pushed_key, &local]).await?;
        tracing::info!(branch = %branch, sha = %local, "pushed");
        Ok(PushOutcome {
            branch,
            previous,
            pushed: local,
            up_to_date: false,
        })
    }

    /// Fetches the base branch and says how far it moved past this branch's fork point, and
    /// which files would conflict if the branch were merged into it now (`git merge-tree`; the
    /// work tree is not touched).
    pub async fn base_state(&self) -> Result<BaseState> {
        let git = self.git();
        let refspec = format!("+refs/heads/{0}:refs/remotes/origin/{0}", self.base);
        git.run(&["fetch", "--quiet", &self.url, &refspec]).await?;
        let onto = format!("origin/{}", self.base);
        let behind: u64 = git
            .run(&["rev-list", "--count", &format!("HEAD..{onto}")])
            .await?
            .trim()
            .parse()
            .unwrap_or(0);
        if behind == 0 {
            return Ok(BaseState {
                behind,
                conflicts: Vec::new(),
            });
        }
        let out = git
            .output(&["merge-tree", "--write-tree", "--name-only", "HEAD", &onto])
            .await?;
        let conflicts = match out.code {
            0 => Vec::new(),
            // Exit 1: conflicts. The first line is the tree, then the conflicted files up to
            // an empty line (the informational messages follow it).
            1 => out
                .stdout
                .lines()
                .skip(1)
                .take_while(|l| !l.is_empty())
                .map(str::to_string)
                .collect(),
            _ => return Err(git.failure(&["merge-tree", "--write-tree"], out)),
        };
        Ok(BaseState { behind, conflicts })
    }

    /// Files changed between `base` (a ref) and `HEAD`, with their added and removed lines.
    pub async fn diff_stat(&self, base: &str) -> Result<Vec<FileStat>> {
        let git = self.git();
        let range = format!("{base}...HEAD");
        let numstat = git
            .run(&["diff", "--numstat", "--no-renames", &range])
            .await?;
        let added = git
            .run(&[
                "diff",
                "--name-only",
                "--diff-filter=A",
                "--no-renames",
                &range,
            ])
            .await?;
        let added: Vec<&str> = added.lines().collect();
        Ok(numstat
            .lines()
            .filter_map(|l| {
                let mut parts = l.splitn(3, '\t');
                let a = parts.next()?;
                let r = parts.next()?;
                let path = parts.next()?.to_string();
                Some(FileStat {
                    // Binary files show `-`.
                    added: a.parse().unwrap_or(0),
                    removed: r.parse().unwrap_or(0),
                    new_file: added.contains(&path.as_str()),
                    path,
                })
            })
            .collect())
    }

    /// Whether a rebase stopped at a conflict is waiting in this clone.
    pub fn rebase_in_progress(&self) -> bool {
        let git_dir = self.root.join(".git");
        git_dir.join("rebase-merge").exists() || git_dir.join("rebase-apply").exists()
    }

    /// Rebases the current branch onto the fetched base and, unlike
    /// [`Workspace::fetch_and_rebase`], leaves a conflict in place for a person (or an agent)
    /// to resolve: the files to fix come back in [`RebaseStop::Conflicts`], and
    /// [`Workspace::continue_rebase`] goes on once they are resolved and added. A rebase already
    /// stopped in the clone is continued. Records `rebase {branch, before, onto}` first, so a
    /// rollback puts the branch back (aborting a stopped rebase).
    pub async fn rebase_for_person(&self) -> Result<RebaseStop> {
        if self.rebase_in_progress() {
            return self.continue_rebase().await;
        }
        let git = self.git();
        let branch = self.current_branch().await?;
        let dirty = self.changed_files().await?;
        if !dirty.is_empty() {
            return Err(Error::Dirty {
                path: self.root.clone(),
                files: dirty.join(", "),
            });
        }
        let refspec = format!("+refs/heads/{0}:refs/remotes/origin/{0}", self.base);
        git.run(&["fetch", "--quiet", &self.url, &refspec]).await?;
        let onto = git
            .run(&["rev-parse", "--verify", &format!("origin/{}", self.base)])
            .await?;
        let before = self.head().await?;
        self.record(
            "rebase",
            json!({"branch": branch, "before": before, "onto": onto}),
        )
        .await?;
        let out = git.output(&["rebase", "--no-autostash", &onto]).await?;
        self.rebase_outcome(out.code).await
    }

    /// Goes on with a stopped rebase once its conflicts are resolved and added.
    pub async fn continue_rebase(&self) -> Result<RebaseStop> {
        let unresolved = self.unmerged().await?;
        if !unresolved.is_empty() {
            return Ok(RebaseStop::Conflicts(unresolved));
        }
        let out = self
            .git()
            .output(&["-c", "core.editor=true", "rebase", "--continue"])
            .await?;
        self.rebase_outcome(out.code).await
    }

    async fn rebase_outcome(&self, code: i32) -> Result<RebaseStop> {
        if code == 0 && !self.rebase_in_progress() {
            return Ok(RebaseStop::Done {
                head: self.head().await?,
            });
        }
        let files = self.unmerged().await?;
        if files.is_empty() {
            // Stopped for another reason (an empty commit, a hook): say so rather than guess.
            let _ = self.git().output(&["rebase", "--abort"]).await;
            return Err(Error::Git {
                command: "git rebase".into(),
                dir: self.root.clone(),
                code,
                stderr: "the rebase stopped without a conflict; it was aborted".into(),
            });
        }
        Ok(RebaseStop::Conflicts(files))
    }

    async fn unmerged(&self) -> Result<Vec<String>> {
        let out = self
            .git()
            .run(&["diff", "--name-only", "--diff-filter=U"])
            .await?;
        Ok(out.lines().map(str::to_string).collect())
    }

    /// Files and directories git does not track and does not ignore (a directory once, not
    /// its files).
    pub async fn untracked(&self) -> Result<Vec<String>> {
        let out = self
            .git()
            .run(&["ls-files", "--others", "--exclude-standard", "--directory"])
            .await?;
        Ok(out.lines().map(str::to_string).collect())
    }

    /// Keeps `paths` out of commits through the clone's own `.git/info/exclude`, never a file
    /// of the repository: what running its checks left behind (`target/`, `__pycache__/`).
    pub async fn exclude(&self, paths: &[String]) -> Result<()> {
        if paths.is_empty() {
            return Ok(());
        }
        let file = self.root.join(".git").join("info").join("exclude");
        if let Some(dir) = file.parent() {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(|source| Error::Io {
                    action: "create directory",
                    path: dir.to_path_buf(),
                    source,
                })?;
        }
        let mut text = tokio::fs::read_to_string(&file).await.unwrap_or_default();
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        for p in paths {
            // Anchored, and with git's pattern characters escaped: exactly this path.
            let escaped: String = p
                .chars()
                .flat_map(|c| match c {
                    '*' | '?' | '[' | '\\' | '!' | '#' => vec!['\\', c],
                    c => vec![c],
                })
                .collect();
            text.push_str(&format!("/{escaped}\n"));
        }
        tokio::fs::write(&file, text)
            .await
            .map_err(|source| Error::Io {
                action: "write",
                path: file,
                source,
            })
    }

    /// Fetches the base branch from the workspace's URL and rebases the current branch onto it. The working
    /// tree must be clean. On conflicts the rebase is aborted, the workspace is left as it was,
    /// and [`Error::Conflict`] names the files. Records `rebase {branch, before, onto}` first.
    pub async fn fetch_and_rebase(&self) -> Result<RebaseOutcome> {
        let git = self.git();
        let branch = self.current_branch().await?;
        let dirty = self.changed_files().await?;
        if !dirty.is_empty() {
            return Err(Error::Dirty {
                path: self.root.clone(),
                files: dirty.join(", "),
            });
        }
        let refspec = format!("+refs/heads/{0}:refs/remotes/origin/{0}", self.base);
        git.run(&["fetch", "--quiet", &self.url, &refspec]).await?;
        let onto_ref = format!("origin/{}", self.base);
        let onto = git.run(&["rev-parse", "--verify", &onto_ref]).await?;
        let before = self.head().await?;
        if git
            .output(&["merge-base", "--is-ancestor", &onto, &before])
            .await?
            .code
            == 0
        {
            return Ok(RebaseOutcome {
                after: before.clone(),
                before,
                onto,
                up_to_date: true,
            });
        }
        self.record(
            "rebase",
            json!({"branch": branch, "before": before, "onto": onto}),
        )
        .await?;
        let out = git.output(&["rebase", "--no-autostash", &onto]).await?;
        if out.code != 0 {
            let files = git
                .run(&["diff", "--name-only", "--diff-filter=U"])
                .await
                .unwrap_or_default();
            let abort = git.output(&["rebase", "--abort"]).await?;
            let now = self.head().await?;
            if abort.code != 0 || now != before {
                // Should not happen; put the branch back by hand and say what failed.
                git.run(&["reset", "--hard", "--quiet", &before]).await?;
            }
            let files: Vec<String> = files.lines().map(str::to_string).collect();
            if files.is_empty() {
                return Err(git.failure(&["rebase", &onto], out));
            }
            return Err(Error::Conflict {
                branch,
                onto: onto_ref,
                files,
            });
        }
        let after = self.head().await?;
        Ok(RebaseOutcome {
            before,
            after,
            onto,
            up_to_date: false,
        })
    }

    /// Deletes the workspace directory.
    pub async fn remove(self) -> Result<()> {
        tokio::fs::remove_dir_all(&self.root)
            .await
            .map_err(|source| Error::Io {
                action: "remove workspace",
                path: self.root.clone(),
                source,
            })
    }
}

/// `{"before": text}` for UTF-8 contents, `{"before_base64": …}` otherwise.
fn content_json(bytes: &[u8]) -> Value {
    match std::str::from_utf8(bytes) {
        Ok(text) => json!({ "before": text }),
        Err(_) => json!({ "before_base64": base64_encode(bytes) }),
    }
}

fn rel_string(p: &Path) -> String {
    p.components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Writes through a temporary file in the same directory and a rename, so a crash never leaves
/// half a file; keeps `mode` when given.
pub(crate) async fn write_atomic(path: &Path, contents: &[u8], mode: Option<u32>) -> Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // A fresh name, opened only if nothing is there (no symlink followed): code that ran in
    // the sandbox could have planted a link at any name it can guess.
    let tmp = path.with_file_name(format!(
        ".{name}.baton-tmp-{}-{:016x}",
        std::process::id(),
        fastrand::u64(..)
    ));
    let io = |action, source| Error::Io {
        action,
        path: path.to_path_buf(),
        source,
    };
    let written = async {
        use tokio::io::AsyncWriteExt;
        let mut file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)
            .await?;
        file.write_all(contents).await?;
        if let Some(mode) = mode {
            // On the open file (fchmod): exactly this inode, whatever the umask.
            file.set_permissions(std::fs::Permissions::from_mode(mode))
                .await?;
        }
        file.flush().await
    }
    .await;
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(io("write", e));
    }
    tokio::fs::rename(&tmp, path).await.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io("replace", e)
    })
}
