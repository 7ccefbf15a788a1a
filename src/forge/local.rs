//! The local backend of [`Forge`]: an offline forge in a directory, the default for the demo and
//! for users without GitHub. Each repository is a folder:
//!
//! ```text
//! <root>/<owner>/<name>/
//!   remote.git/          a bare git repository: the remote workspaces clone from and push to
//!   forge.json           counters (next issue/PR number, comment, review and release ids)
//!   collaborators.json   {"login": "admin" | "maintain" | "write" | "triage" | "read"}
//!   issues/<n>.json      an issue or pull request's conversation: the issue and its comments
//!   pulls/<n>.json       a pull request with its reviews and requested reviewers
//!   releases/<id>.json   a release
//!   checks/<sha>.json    the checks of a commit, the latest of each name
//! ```
//!
//! Issues and pull requests share one number sequence, as on GitHub. Files are written to a
//! temporary name and renamed, so a crash never leaves half a file. A daemon and a CLI process
//! may use one directory at the same time: every call holds an in-process mutex and an advisory
//! `flock` on `<root>/.lock`, so no read-modify-write (a counter, a conversation) loses another
//! process's write. Branches and tags live in `remote.git` and are read with the `git` CLI, run
//! with an environment that cannot point it at another repository. There is no merge.

use std::collections::BTreeMap;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::checks::CheckStatus;
use super::{
    BoxFuture, CheckRun, Comment, Commit, Error, Forge, Issue, IssueFilter, NewCheck, NewIssue,
    NewPullRequest, NewRelease, NewReview, Permission, PullRequest, PullRequestUpdate, Release,
    Repo, RepoInfo, Result, Review, ReviewComment, StateFilter, Tag,
};

/// The counters of one local repository.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Counters {
    /// Last issue or pull request number handed out.
    number: u64,
    /// Last comment id.
    comment: u64,
    /// Last review id.
    review: u64,
    /// Last release id.
    release: u64,
    /// Last check id (absent in a forge made before checks).
    #[serde(default)]
    check: u64,
}

/// An issue's file: the issue and its conversation.
#[derive(Debug, Serialize, Deserialize)]
struct IssueFile {
    issue: Issue,
    comments: Vec<Comment>,
}

/// A pull request's file.
#[derive(Debug, Serialize, Deserialize)]
struct PullFile {
    pull: PullRequest,
    requested_reviewers: Vec<String>,
    reviews: Vec<StoredReview>,
}

/// A review as the local forge keeps it: with its verdict and line comments.
#[derive(Debug, Serialize, Deserialize)]
struct StoredReview {
    review: Review,
    request: NewReview,
}

/// The offline forge. See the module documentation for the layout.
#[derive(Debug)]
pub struct LocalForge {
    root: PathBuf,
    /// The login the forge acts as (authors of comments, PRs, reviews, releases).
    login: String,
    /// Serialises calls in this process; [`LocalForge::lock`] adds the file lock between
    /// processes.
    lock: tokio::sync::Mutex<()>,
}

/// Both locks of one call. Fields drop in order: the file lock is released before the mutex.
struct Locked<'a> {
    _file: std::fs::File,
    _mutex: tokio::sync::MutexGuard<'a, ()>,
}

impl LocalForge {
    /// A forge rooted at `root` (created if missing), acting as `login`.
    pub fn open(root: impl Into<PathBuf>, login: impl Into<String>) -> Result<LocalForge> {
        let root = root.into();
        std::fs::create_dir_all(&root).map_err(|source| Error::Io {
            path: root.clone(),
            source,
        })?;
        Ok(LocalForge {
            root,
            login: login.into(),
            lock: tokio::sync::Mutex::new(()),
        })
    }

    /// The directory of a repository.
    pub fn repo_dir(&self, repo: &Repo) -> PathBuf {
        self.root.join(&repo.owner).join(&repo.name)
    }

    /// The bare git repository that serves as `repo`'s remote (clone and push URL).
    pub fn remote(&self, repo: &Repo) -> PathBuf {
        self.repo_dir(repo).join("remote.git")
    }

    /// Takes the in-process mutex, then an exclusive `flock` on `<root>/.lock` (waited for on a
    /// blocking thread). Another process's forge on the same directory waits for it likewise.
    async fn lock(&self) -> Result<Locked<'_>> {
        let mutex = self.lock.lock().await;
        let path = self.root.join(".lock");
        let file = tokio::task::spawn_blocking(move || {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .map_err(|source| Error::Io {
                    path: path.clone(),
                    source,
                })?;
            loop {
                // SAFETY: flock on a descriptor this function owns; it is released when `file`
                // is closed.
                if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0 {
                    return Ok(file);
                }
                let source = std::io::Error::last_os_error();
                if source.kind() != std::io::ErrorKind::Interrupted {
                    return Err(Error::Io { path, source });
                }
            }
        })
        .await
        .map_err(|e| Error::Io {
            path: self.root.join(".lock"),
            source: std::io::Error::other(e.to_string()),
        })??;
        Ok(Locked {
            _file: file,
            _mutex: mutex,
        })
    }

    /// Creates a repository: its folders and an empty bare git remote whose default branch is
    /// `default_branch`. `admins` get admin permission. Creating an existing repository is a
    /// no-op apart from adding the admins.
    pub async fn create_repo(
        &self,
        repo: &Repo,
        default_branch: &str,
        admins: &[&str],
    ) -> Result<()> {
        let _guard = self.lock().await?;
        self.create_repo_locked(repo, default_branch, admins).await
    }

    async fn create_repo_locked(
        &self,
        repo: &Repo,
        default_branch: &str,
        admins: &[&str],
    ) -> Result<()> {
        check_branch_name(default_branch)?;
        let dir = self.repo_dir(repo);
        for sub in ["issues", "pulls", "releases"] {
            let path = dir.join(sub);
            tokio::fs::create_dir_all(&path)
                .await
                .map_err(|source| Error::Io { path, source })?;
        }
        let remote = self.remote(repo);
        if !remote.join("HEAD").exists() {
            git(
                &dir,
                &[
                    "init",
                    "--quiet",
                    "--bare",
                    &format!("--initial-branch={default_branch}"),
                    "remote.git",
                ],
            )
            .await?;
        }
        let mut collaborators: BTreeMap<String, Permission> =
            read_or_default(&dir.join("collaborators.json")).await?;
        for admin in admins {
            collaborators.insert(admin.to_string(), Permission::Admin);
        }
        write_json(&dir.join("collaborators.json"), &collaborators).await
    }

    /// Imports the git repository at `from` as `repo`'s remote: creates the repository, pushes
    /// every local branch and tag of `from`, and makes `from`'s current branch the default
    /// branch. The owner gets admin permission. A repository that already has branches, tags,
    /// issues or pull requests is refused: importing would mix two histories.
    pub async fn import_repo(&self, repo: &Repo, from: &Path) -> Result<RepoInfo> {
        // Everything about `from` is checked before anything is written.
        let from = std::fs::canonicalize(from).map_err(|source| Error::Io {
            path: from.to_path_buf(),
            source,
        })?;
        if git(&from, &["rev-parse", "--git-dir"]).await.is_err() {
            return Err(Error::Invalid(format!(
                "{} is not a git repository",
                from.display()
            )));
        }
        let Ok(branch) = git(&from, &["symbolic-ref", "--quiet", "--short", "HEAD"]).await else {
            return Err(Error::Invalid(format!(
                "{} has a detached HEAD: check out the branch to make the default branch",
                from.display()
            )));
        };
        let branch = branch.trim().to_string();
        if git(
            &from,
            &["rev-parse", "--verify", "--quiet", "HEAD^{commit}"],
        )
        .await
        .is_err()
        {
            return Err(Error::Invalid(format!(
                "{} has no commit on its current branch `{branch}`",
                from.display()
            )));
        }
        let _guard = self.lock().await?;
        let dir = self.repo_dir(repo);
        let remote = self.remote(repo);
        if remote.join("HEAD").exists() {
            let refs = git(
                &remote,
                &["for-each-ref", "--count=1", "--format=%(refname)"],
            )
            .await?;
            let counters: Counters = read_or_default(&dir.join("forge.json")).await?;
            if !refs.trim().is_empty() || counters.number > 0 || counters.release > 0 {
                return Err(Error::Invalid(format!(
                    "repository {repo} already exists in the local forge at {} and has content; \
                     import into a new name",
                    self.root.display()
                )));
            }
        }
        self.create_repo_locked(repo, &branch, &[repo.owner.as_str()])
            .await?;
        let remote_arg = remote.display().to_string();
        git(
            &from,
            &[
                "push",
                "--quiet",
                "--no-verify",
                &remote_arg,
                "refs/heads/*:refs/heads/*",
                "refs/tags/*:refs/tags/*",
            ],
        )
        .await?;
        git(
            &remote,
            &["symbolic-ref", "HEAD", &format!("refs/heads/{branch}")],
        )
        .await?;
        Ok(RepoInfo {
            full_name: repo.to_string(),
            clone_url: remote_arg,
            default_branch: branch,
            url: format!("local://{repo}"),
        })
    }

    /// Gives `user` a permission on `repo`.
    pub async fn set_permission(
        &self,
        repo: &Repo,
        user: &str,
        permission: Permission,
    ) -> Result<()> {
        let _guard = self.lock().await?;
        let dir = self.existing(repo)?;
        let path = dir.join("collaborators.json");
        let mut collaborators: BTreeMap<String, Permission> = read_or_default(&path).await?;
        collaborators.insert(user.to_string(), permission);
        write_json(&path, &collaborators).await
    }

    /// Comments on an issue or pull request as `author` (a person on GitHub's web page). The
    /// trait's [`Forge::create_comment`] comments as the forge's own login.
    pub async fn create_comment_as(
        &self,
        repo: &Repo,
        number: u64,
        author: &str,
        body: &str,
    ) -> Result<Comment> {
        let _guard = self.lock().await?;
        let dir = self.existing(repo)?;
        let mut file = self.issue_file(&dir, repo, number).await?;
        let id = self.next(&dir, |c| &mut c.comment).await?;
        let now = crate::timestamp::now_rfc3339_secs();
        let comment = Comment {
            id,
            author: author.to_string(),
            body: body.to_string(),
            created_at: now.clone(),
            updated_at: now,
            url: format!("local://{repo}/issues/{number}#comment-{id}"),
        };
        file.comments.push(comment.clone());
        write_json(&issue_path(&dir, number), &file).await?;
        Ok(comment)
    }

    /// Files an issue as `author` (what a user does on GitHub's web page). The trait's
    /// [`Forge::create_issue`] files it as the forge's own login.
    pub async fn create_issue_as(
        &self,
        repo: &Repo,
        author: &str,
        title: &str,
        body: &str,
        labels: &[String],
    ) -> Result<Issue> {
        if title.trim().is_empty() {
            return Err(Error::Invalid("an issue needs a title".into()));
        }
        let _guard = self.lock().await?;
        let dir = self.existing(repo)?;
        let number = self.next(&dir, |c| &mut c.number).await?;
        let mut unique: Vec<String> = Vec::new();
        for label in labels {
            if !unique.contains(label) {
                unique.push(label.clone());
            }
        }
        let issue = Issue {
            number,
            title: title.to_string(),
            body: body.to_string(),
            state: "open".into(),
            author: author.to_string(),
            labels: unique,
            assignees: Vec::new(),
            url: format!("local://{repo}/issues/{number}"),
            is_pull_request: false,
        };
        let file = IssueFile {
            issue: issue.clone(),
            comments: Vec::new(),
        };
        write_json(&issue_path(&dir, number), &file).await?;
        Ok(issue)
    }

    /// Opens a pull request as `author` (what a user does on GitHub's web page). The trait's
    /// [`Forge::create_pull_request`] opens it as the forge's own login. `head_repo` names the
    /// fork its head comes from (`None`: `repo` itself). The local forge holds no forks: the
    /// head branch is pushed to `repo`'s remote either way, and `head_repo` is what the pull
    /// request says about it, as GitHub's does.
    pub async fn create_pull_request_as(
        &self,
        repo: &Repo,
        author: &str,
        head_repo: Option<&Repo>,
        new: &NewPullRequest,
    ) -> Result<PullRequest> {
        let _guard = self.lock().await?;
        let dir = self.existing(repo)?;
        let head_sha = self.branch_sha(repo, &new.head).await?.ok_or_else(|| {
            Error::Invalid(format!(
                "head branch `{}` does not exist in {repo}: push it first",
                new.head
            ))
        })?;
        if self.branch_sha(repo, &new.base).await?.is_none() {
            return Err(Error::Invalid(format!(
                "base branch `{}` does not exist in {repo}",
                new.base
            )));
        }
        if let Some(open) = self
            .all_pulls(&dir)
            .await?
            .into_iter()
            .find(|p| p.pull.head == new.head && p.pull.state == "open")
        {
            // GitHub's answer too: one open pull request per head branch.
            return Err(Error::Invalid(format!(
                "a pull request already exists for {}: #{}",
                new.head, open.pull.number
            )));
        }
        let number = self.next(&dir, |c| &mut c.number).await?;
        let pull = PullRequest {
            number,
            title: new.title.clone(),
            body: new.body.clone(),
            state: "open".into(),
            draft: new.draft,
            merged: false,
            author: author.to_string(),
            head: new.head.clone(),
            head_repo: Some(head_repo.unwrap_or(repo).to_string()),
            head_sha,
            base: new.base.clone(),
            url: format!("local://{repo}/pull/{number}"),
        };
        let issue = IssueFile {
            issue: Issue {
                number,
                title: new.title.clone(),
                body: new.body.clone(),
                state: "open".into(),
                author: author.to_string(),
                labels: Vec::new(),
                assignees: Vec::new(),
                url: pull.url.clone(),
                is_pull_request: true,
            },
            comments: Vec::new(),
        };
        write_json(&issue_path(&dir, number), &issue).await?;
        self.save_pull(
            &dir,
            &PullFile {
                pull: pull.clone(),
                requested_reviewers: Vec::new(),
                reviews: Vec::new(),
            },
        )
        .await?;
        Ok(pull)
    }

    /// Reviews pull request `number` as `author` (what a user does on GitHub's web page). The
    /// trait's [`Forge::create_review`] reviews as the forge's own login.
    pub async fn create_review_as(
        &self,
        repo: &Repo,
        number: u64,
        author: &str,
        review: &NewReview,
    ) -> Result<Review> {
        let _guard = self.lock().await?;
        let dir = self.existing(repo)?;
        let mut file = self.pull_file(&dir, repo, number).await?;
        let id = self.next(&dir, |c| &mut c.review).await?;
        let state = match review.event {
            super::ReviewEvent::Comment => "COMMENTED",
            super::ReviewEvent::Approve => "APPROVED",
            super::ReviewEvent::RequestChanges => "CHANGES_REQUESTED",
        };
        let posted = Review {
            id,
            author: author.to_string(),
            body: review.body.clone(),
            state: state.into(),
            url: format!("local://{repo}/pull/{number}#review-{id}"),
        };
        file.reviews.push(StoredReview {
            review: posted.clone(),
            request: review.clone(),
        });
        self.save_pull(&dir, &file).await?;
        Ok(posted)
    }

    /// Opens or closes an issue (what a user does on GitHub's web page).
    pub async fn set_issue_state(&self, repo: &Repo, number: u64, state: &str) -> Result<Issue> {
        if state != "open" && state != "closed" {
            return Err(Error::Invalid(format!(
                "issue state `{state}`: expected open or closed"
            )));
        }
        let _guard = self.lock().await?;
        let dir = self.existing(repo)?;
        let mut file = self.issue_file(&dir, repo, number).await?;
        if file.issue.is_pull_request {
            return Err(Error::Invalid(format!(
                "{repo}#{number} is a pull request: close it as one"
            )));
        }
        file.issue.state = state.to_string();
        write_json(&issue_path(&dir, number), &file).await?;
        Ok(file.issue)
    }

    /// The directory of a repository that exists, or a NotFound that says how to create it.
    fn existing(&self, repo: &Repo) -> Result<PathBuf> {
        let dir = self.repo_dir(repo);
        if dir.join("remote.git").join("HEAD").exists() {
            Ok(dir)
        } else {
            Err(Error::NotFound(format!(
                "repository {repo} (create it with `baton forge repo create {repo} --from PATH`) in the local forge at {}",
                self.root.display()
            )))
        }
    }

    /// Hands out the next value of one counter.
    async fn next(&self, dir: &Path, which: fn(&mut Counters) -> &mut u64) -> Result<u64> {
        let path = dir.join("forge.json");
        let mut counters: Counters = read_or_default(&path).await?;
        let slot = which(&mut counters);
        *slot += 1;
        let value = *slot;
        write_json(&path, &counters).await?;
        Ok(value)
    }

    async fn issue_file(&self, dir: &Path, repo: &Repo, number: u64) -> Result<IssueFile> {
        read_json(&issue_path(dir, number))
            .await?
            .ok_or_else(|| Error::NotFound(format!("issue {repo}#{number}")))
    }

    async fn pull_file(&self, dir: &Path, repo: &Repo, number: u64) -> Result<PullFile> {
        read_json(&dir.join("pulls").join(format!("{number}.json")))
            .await?
            .ok_or_else(|| Error::NotFound(format!("pull request {repo}#{number}")))
    }

    async fn save_pull(&self, dir: &Path, file: &PullFile) -> Result<()> {
        write_json(
            &dir.join("pulls").join(format!("{}.json", file.pull.number)),
            file,
        )
        .await?;
        // Keep the issue view of the pull request (title, body, state) in step.
        let path = issue_path(dir, file.pull.number);
        if let Some(mut issue) = read_json::<IssueFile>(&path).await? {
            issue.issue.title = file.pull.title.clone();
            issue.issue.body = file.pull.body.clone();
            issue.issue.state = file.pull.state.clone();
            write_json(&path, &issue).await?;
        }
        Ok(())
    }

    async fn all_issues(&self, dir: &Path) -> Result<Vec<IssueFile>> {
        let mut issues = Vec::new();
        let issues_dir = dir.join("issues");
        let mut entries = tokio::fs::read_dir(&issues_dir)
            .await
            .map_err(|source| Error::Io {
                path: issues_dir.clone(),
                source,
            })?;
        while let Some(entry) = entries.next_entry().await.map_err(|source| Error::Io {
            path: issues_dir.clone(),
            source,
        })? {
            if entry.path().extension().is_some_and(|e| e == "json") {
                if let Some(file) = read_json::<IssueFile>(&entry.path()).await? {
                    issues.push(file);
                }
            }
        }
        issues.sort_by_key(|i| i.issue.number);
        Ok(issues)
    }

    async fn all_pulls(&self, dir: &Path) -> Result<Vec<PullFile>> {
        let mut pulls = Vec::new();
        let pulls_dir = dir.join("pulls");
        let mut entries = tokio::fs::read_dir(&pulls_dir)
            .await
            .map_err(|source| Error::Io {
                path: pulls_dir.clone(),
                source,
            })?;
        while let Some(entry) = entries.next_entry().await.map_err(|source| Error::Io {
            path: pulls_dir.clone(),
            source,
        })? {
            if entry.path().extension().is_some_and(|e| e == "json") {
                if let Some(file) = read_json::<PullFile>(&entry.path()).await? {
                    pulls.push(file);
                }
            }
        }
        pulls.sort_by_key(|p| p.pull.number);
        Ok(pulls)
    }

    async fn branch_sha(&self, repo: &Repo, branch: &str) -> Result<Option<String>> {
        check_branch_name(branch)?;
        let remote = self.remote(repo);
        match git(
            &remote,
            &[
                "rev-parse",
                "--verify",
                "--quiet",
                &format!("refs/heads/{branch}^{{commit}}"),
            ],
        )
        .await
        {
            Ok(out) => Ok(Some(out.trim().to_string())),
            Err(Error::Git { stderr, .. }) if stderr.trim().is_empty() => Ok(None),
            Err(e) => Err(e),
        }
    }
}

fn issue_path(dir: &Path, number: u64) -> PathBuf {
    dir.join("issues").join(format!("{number}.json"))
}

/// Refuses branch names git would refuse, and names that could be read as options.
fn check_branch_name(branch: &str) -> Result<()> {
    let bad = branch.is_empty()
        || branch.starts_with('-')
        || branch.starts_with('/')
        || branch.ends_with('/')
        || branch.ends_with('.')
        || branch.ends_with(".lock")
        || branch.contains("..")
        || branch.contains("//")
        || branch.contains("@{")
        || branch
            .chars()
            .any(|c| c.is_control() || matches!(c, ' ' | '~' | '^' | ':' | '?' | '*' | '[' | '\\'));
    if bad {
        Err(Error::Invalid(format!(
            "`{branch}` is not a valid branch name"
        )))
    } else {
        Ok(())
    }
}

/// Runs git in `dir` (a bare repository or its parent) and returns stdout.
/// Runs git in `dir` through the workspace's one way to run it (a fixed environment, the
/// caller's `GIT_DIR` and config dropped, no prompts, a process group of its own).
async fn git(dir: &Path, args: &[&str]) -> Result<String> {
    let out = crate::workspace::git::Git::at(dir)
        .output(args)
        .await
        .map_err(|e| Error::Git {
            args: args.join(" "),
            stderr: e.to_string(),
        })?;
    if out.code == 0 {
        Ok(out.stdout)
    } else {
        Err(Error::Git {
            args: args.join(" "),
            stderr: out.stderr.trim().to_string(),
        })
    }
}

async fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    match tokio::fs::read(path).await {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| Error::Json {
                what: path.display().to_string(),
                source,
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(Error::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

async fn read_or_default<T: DeserializeOwned + Default>(path: &Path) -> Result<T> {
    Ok(read_json(path).await?.unwrap_or_default())
}

/// Writes JSON to a temporary file and renames it over `path`.
async fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(value).map_err(|source| Error::Json {
        what: path.display().to_string(),
        source,
    })?;
    let tmp = path.with_extension("json.tmp");
    tokio::fs::write(&tmp, &bytes)
        .await
        .map_err(|source| Error::Io {
            path: tmp.clone(),
            source,
        })?;
    tokio::fs::rename(&tmp, path)
        .await
        .map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })
}

impl Forge for LocalForge {
    fn kind(&self) -> &'static str {
        "local"
    }

    fn identity<'a>(&'a self) -> BoxFuture<'a, Result<String>> {
        Box::pin(async move { Ok(self.login.clone()) })
    }

    fn repository<'a>(&'a self, repo: &'a Repo) -> BoxFuture<'a, Result<RepoInfo>> {
        Box::pin(async move {
            self.existing(repo)?;
            let remote = self.remote(repo);
            // The bare remote's HEAD names the default branch, as on a real host.
            let head = git(&remote, &["symbolic-ref", "--short", "HEAD"]).await?;
            Ok(RepoInfo {
                full_name: repo.to_string(),
                clone_url: remote.display().to_string(),
                default_branch: head.trim().to_string(),
                url: format!("local://{repo}"),
            })
        })
    }

    fn issue<'a>(&'a self, repo: &'a Repo, number: u64) -> BoxFuture<'a, Result<Issue>> {
        Box::pin(async move {
            let _guard = self.lock().await?;
            let dir = self.existing(repo)?;
            Ok(self.issue_file(&dir, repo, number).await?.issue)
        })
    }

    fn comments<'a>(&'a self, repo: &'a Repo, number: u64) -> BoxFuture<'a, Result<Vec<Comment>>> {
        Box::pin(async move {
            let _guard = self.lock().await?;
            let dir = self.existing(repo)?;
            Ok(self.issue_file(&dir, repo, number).await?.comments)
        })
    }

    fn create_comment<'a>(
        &'a self,
        repo: &'a Repo,
        number: u64,
        body: &'a str,
    ) -> BoxFuture<'a, Result<Comment>> {
        Box::pin(self.create_comment_as(repo, number, &self.login, body))
    }

    fn edit_comment<'a>(
        &'a self,
        repo: &'a Repo,
        comment_id: u64,
        body: &'a str,
    ) -> BoxFuture<'a, Result<Comment>> {
        Box::pin(async move {
            let _guard = self.lock().await?;
            let dir = self.existing(repo)?;
            let issues = dir.join("issues");
            let mut entries = tokio::fs::read_dir(&issues)
                .await
                .map_err(|source| Error::Io {
                    path: issues.clone(),
                    source,
                })?;
            while let Some(entry) = entries.next_entry().await.map_err(|source| Error::Io {
                path: issues.clone(),
                source,
            })? {
                let path = entry.path();
                if path.extension().is_none_or(|e| e != "json") {
                    continue;
                }
                let Some(mut file) = read_json::<IssueFile>(&path).await? else {
                    continue;
                };
                if let Some(comment) = file.comments.iter_mut().find(|c| c.id == comment_id) {
                    comment.body = body.to_string();
                    comment.updated_at = crate::timestamp::now_rfc3339_secs();
                    let comment = comment.clone();
                    write_json(&path, &file).await?;
                    return Ok(comment);
                }
            }
            Err(Error::NotFound(format!("comment {comment_id} in {repo}")))
        })
    }

    fn create_pull_request<'a>(
        &'a self,
        repo: &'a Repo,
        new: &'a NewPullRequest,
    ) -> BoxFuture<'a, Result<PullRequest>> {
        Box::pin(self.create_pull_request_as(repo, &self.login, None, new))
    }

    fn update_pull_request<'a>(
        &'a self,
        repo: &'a Repo,
        number: u64,
        update: &'a PullRequestUpdate,
    ) -> BoxFuture<'a, Result<PullRequest>> {
        Box::pin(async move {
            let _guard = self.lock().await?;
            let dir = self.existing(repo)?;
            let mut file = self.pull_file(&dir, repo, number).await?;
            if let Some(title) = &update.title {
                file.pull.title = title.clone();
            }
            if let Some(body) = &update.body {
                file.pull.body = body.clone();
            }
            if let Some(base) = &update.base {
                if self.branch_sha(repo, base).await?.is_none() {
                    return Err(Error::Invalid(format!(
                        "base branch `{base}` does not exist in {repo}"
                    )));
                }
                file.pull.base = base.clone();
            }
            if let Some(state) = &update.state {
                if state != "open" && state != "closed" {
                    return Err(Error::Invalid(format!(
                        "pull request state `{state}`: expected open or closed"
                    )));
                }
                file.pull.state = state.clone();
            }
            if let Some(sha) = self.branch_sha(repo, &file.pull.head).await? {
                file.pull.head_sha = sha;
            }
            self.save_pull(&dir, &file).await?;
            Ok(file.pull)
        })
    }

    fn find_open_pull_request<'a>(
        &'a self,
        repo: &'a Repo,
        branch: &'a str,
    ) -> BoxFuture<'a, Result<Option<PullRequest>>> {
        Box::pin(async move {
            let _guard = self.lock().await?;
            let dir = self.existing(repo)?;
            Ok(self
                .all_pulls(&dir)
                .await?
                .into_iter()
                .map(|p| p.pull)
                .find(|p| p.head == branch && p.state == "open"))
        })
    }

    fn request_reviewers<'a>(
        &'a self,
        repo: &'a Repo,
        number: u64,
        reviewers: &'a [String],
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let _guard = self.lock().await?;
            let dir = self.existing(repo)?;
            let mut file = self.pull_file(&dir, repo, number).await?;
            for reviewer in reviewers {
                if !file.requested_reviewers.contains(reviewer) {
                    file.requested_reviewers.push(reviewer.clone());
                }
            }
            self.save_pull(&dir, &file).await
        })
    }

    fn create_review<'a>(
        &'a self,
        repo: &'a Repo,
        number: u64,
        review: &'a NewReview,
    ) -> BoxFuture<'a, Result<Review>> {
        Box::pin(self.create_review_as(repo, number, &self.login, review))
    }

    fn add_labels<'a>(
        &'a self,
        repo: &'a Repo,
        number: u64,
        labels: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<String>>> {
        Box::pin(async move {
            let _guard = self.lock().await?;
            let dir = self.existing(repo)?;
            let mut file = self.issue_file(&dir, repo, number).await?;
            for label in labels {
                if !file.issue.labels.contains(label) {
                    file.issue.labels.push(label.clone());
                }
            }
            write_json(&issue_path(&dir, number), &file).await?;
            Ok(file.issue.labels)
        })
    }

    fn delete_branch<'a>(&'a self, repo: &'a Repo, branch: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let _guard = self.lock().await?;
            self.existing(repo)?;
            if self.branch_sha(repo, branch).await?.is_some() {
                git(
                    &self.remote(repo),
                    &["update-ref", "-d", &format!("refs/heads/{branch}")],
                )
                .await?;
            }
            Ok(())
        })
    }

    fn close_pull_request<'a>(
        &'a self,
        repo: &'a Repo,
        number: u64,
    ) -> BoxFuture<'a, Result<PullRequest>> {
        let update = PullRequestUpdate {
            state: Some("closed".into()),
            ..PullRequestUpdate::default()
        };
        Box::pin(async move { self.update_pull_request(repo, number, &update).await })
    }

    fn commits_between<'a>(
        &'a self,
        repo: &'a Repo,
        base: &'a str,
        head: &'a str,
    ) -> BoxFuture<'a, Result<Vec<Commit>>> {
        Box::pin(async move {
            let _guard = self.lock().await?;
            self.existing(repo)?;
            for name in [base, head] {
                if name.starts_with('-') || name.contains("..") {
                    return Err(Error::Invalid(format!("`{name}` is not a ref")));
                }
            }
            let out = git(
                &self.remote(repo),
                &[
                    "log",
                    "--reverse",
                    LOG_FORMAT,
                    &format!("{base}..{head}"),
                    "--",
                ],
            )
            .await?;
            Ok(parse_log(&out))
        })
    }

    fn release_by_tag<'a>(
        &'a self,
        repo: &'a Repo,
        tag: &'a str,
    ) -> BoxFuture<'a, Result<Option<Release>>> {
        Box::pin(async move {
            let _guard = self.lock().await?;
            let dir = self.existing(repo)?;
            let releases = dir.join("releases");
            let mut entries = tokio::fs::read_dir(&releases)
                .await
                .map_err(|source| Error::Io {
                    path: releases.clone(),
                    source,
                })?;
            while let Some(entry) = entries.next_entry().await.map_err(|source| Error::Io {
                path: releases.clone(),
                source,
            })? {
                if entry.path().extension().is_none_or(|e| e != "json") {
                    continue;
                }
                if let Some(release) = read_json::<Release>(&entry.path()).await? {
                    if release.tag == tag {
                        return Ok(Some(release));
                    }
                }
            }
            Ok(None)
        })
    }

    fn create_release<'a>(
        &'a self,
        repo: &'a Repo,
        new: &'a NewRelease,
    ) -> BoxFuture<'a, Result<Release>> {
        Box::pin(async move {
            let _guard = self.lock().await?;
            let dir = self.existing(repo)?;
            let id = self.next(&dir, |c| &mut c.release).await?;
            let release = Release {
                id,
                tag: new.tag.clone(),
                name: new.name.clone(),
                body: new.body.clone(),
                draft: new.draft,
                prerelease: new.prerelease,
                url: format!("local://{repo}/releases/tag/{}", new.tag),
            };
            write_json(&dir.join("releases").join(format!("{id}.json")), &release).await?;
            Ok(release)
        })
    }

    fn update_release<'a>(
        &'a self,
        repo: &'a Repo,
        release_id: u64,
        new: &'a NewRelease,
    ) -> BoxFuture<'a, Result<Release>> {
        Box::pin(async move {
            let _guard = self.lock().await?;
            let dir = self.existing(repo)?;
            let path = dir.join("releases").join(format!("{release_id}.json"));
            let mut release: Release = read_json(&path)
                .await?
                .ok_or_else(|| Error::NotFound(format!("release {release_id} in {repo}")))?;
            release.tag = new.tag.clone();
            release.name = new.name.clone();
            release.body = new.body.clone();
            release.draft = new.draft;
            release.prerelease = new.prerelease;
            write_json(&path, &release).await?;
            Ok(release)
        })
    }

    fn issues<'a>(
        &'a self,
        repo: &'a Repo,
        filter: &'a IssueFilter,
    ) -> BoxFuture<'a, Result<Vec<Issue>>> {
        Box::pin(async move {
            let _guard = self.lock().await?;
            let dir = self.existing(repo)?;
            let mut issues: Vec<Issue> = self
                .all_issues(&dir)
                .await?
                .into_iter()
                .map(|f| f.issue)
                .filter(|i| {
                    !i.is_pull_request
                        && filter.state.matches(&i.state)
                        && filter.labels.iter().all(|l| i.labels.contains(l))
                })
                .collect();
            issues.reverse();
            Ok(issues)
        })
    }

    fn create_issue<'a>(
        &'a self,
        repo: &'a Repo,
        new: &'a NewIssue,
    ) -> BoxFuture<'a, Result<Issue>> {
        Box::pin(async move {
            self.create_issue_as(repo, &self.login, &new.title, &new.body, &new.labels)
                .await
        })
    }

    fn pull_requests<'a>(
        &'a self,
        repo: &'a Repo,
        state: StateFilter,
    ) -> BoxFuture<'a, Result<Vec<PullRequest>>> {
        Box::pin(async move {
            let _guard = self.lock().await?;
            let dir = self.existing(repo)?;
            let mut pulls: Vec<PullRequest> = self
                .all_pulls(&dir)
                .await?
                .into_iter()
                .map(|p| p.pull)
                .filter(|p| state.matches(&p.state))
                .collect();
            pulls.reverse();
            Ok(pulls)
        })
    }

    fn pull_request<'a>(
        &'a self,
        repo: &'a Repo,
        number: u64,
    ) -> BoxFuture<'a, Result<PullRequest>> {
        Box::pin(async move {
            let _guard = self.lock().await?;
            let dir = self.existing(repo)?;
            let mut pull = self.pull_file(&dir, repo, number).await?.pull;
            // Like GitHub: an open PR's head is where its branch is now, pushes included.
            if pull.state == "open" {
                if let Some(sha) = self.branch_sha(repo, &pull.head).await? {
                    pull.head_sha = sha;
                }
            }
            Ok(pull)
        })
    }

    fn reviews<'a>(&'a self, repo: &'a Repo, number: u64) -> BoxFuture<'a, Result<Vec<Review>>> {
        Box::pin(async move {
            let _guard = self.lock().await?;
            let dir = self.existing(repo)?;
            let file = self.pull_file(&dir, repo, number).await?;
            Ok(file.reviews.into_iter().map(|r| r.review).collect())
        })
    }

    fn review_comments<'a>(
        &'a self,
        repo: &'a Repo,
        number: u64,
    ) -> BoxFuture<'a, Result<Vec<ReviewComment>>> {
        Box::pin(async move {
            let _guard = self.lock().await?;
            let dir = self.existing(repo)?;
            let file = self.pull_file(&dir, repo, number).await?;
            // A line comment's id is its review's id times 1000 plus its place: stable, unique.
            Ok(file
                .reviews
                .iter()
                .flat_map(|r| {
                    r.request
                        .comments
                        .iter()
                        .enumerate()
                        .map(|(i, c)| ReviewComment {
                            id: r.review.id * 1000 + i as u64 + 1,
                            review_id: Some(r.review.id),
                            author: r.review.author.clone(),
                            path: c.path.clone(),
                            line: Some(c.line),
                            body: c.body.clone(),
                        })
                })
                .collect())
        })
    }

    fn edit_review<'a>(
        &'a self,
        repo: &'a Repo,
        number: u64,
        review_id: u64,
        body: &'a str,
    ) -> BoxFuture<'a, Result<Review>> {
        Box::pin(async move {
            let _guard = self.lock().await?;
            let dir = self.existing(repo)?;
            let mut file = self.pull_file(&dir, repo, number).await?;
            let stored = file
                .reviews
                .iter_mut()
                .find(|r| r.review.id == review_id)
                .ok_or_else(|| {
                    Error::NotFound(format!(
                        "review {review_id} of pull request {repo}#{number}"
                    ))
                })?;
            stored.review.body = body.to_string();
            stored.request.body = body.to_string();
            let review = stored.review.clone();
            self.save_pull(&dir, &file).await?;
            Ok(review)
        })
    }

    fn remove_label<'a>(
        &'a self,
        repo: &'a Repo,
        number: u64,
        label: &'a str,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let _guard = self.lock().await?;
            let dir = self.existing(repo)?;
            let mut file = self.issue_file(&dir, repo, number).await?;
            let before = file.issue.labels.len();
            file.issue.labels.retain(|l| l != label);
            if file.issue.labels.len() != before {
                write_json(&issue_path(&dir, number), &file).await?;
            }
            Ok(())
        })
    }

    fn tags<'a>(&'a self, repo: &'a Repo) -> BoxFuture<'a, Result<Vec<Tag>>> {
        Box::pin(async move {
            let _guard = self.lock().await?;
            self.existing(repo)?;
            // `%(*objectname)` is the commit an annotated tag points at (empty for a light tag).
            let out = git(
                &self.remote(repo),
                &[
                    "for-each-ref",
                    "--sort=-v:refname",
                    "--format=%(refname:strip=2)%00%(objectname)%00%(*objectname)",
                    "refs/tags",
                ],
            )
            .await?;
            Ok(out
                .lines()
                .filter_map(|line| {
                    let mut fields = line.split('\0');
                    let name = fields.next()?.to_string();
                    let object = fields.next()?;
                    let peeled = fields.next().unwrap_or_default();
                    let sha = if peeled.is_empty() { object } else { peeled };
                    Some(Tag {
                        name,
                        sha: sha.to_string(),
                    })
                })
                .collect())
        })
    }

    fn publish_check<'a>(
        &'a self,
        repo: &'a Repo,
        check: &'a NewCheck,
    ) -> BoxFuture<'a, Result<CheckRun>> {
        Box::pin(async move {
            check.validate()?;
            let _guard = self.lock().await?;
            let dir = self.existing(repo)?;
            let sha = check.head_sha.to_ascii_lowercase();
            // A check on a commit the repository does not have would never be seen.
            let object = format!("{sha}^{{commit}}");
            if git(&self.remote(repo), &["cat-file", "-e", &object])
                .await
                .is_err()
            {
                return Err(Error::NotFound(format!("commit {sha} in {repo}")));
            }
            let id = self.next(&dir, |c| &mut c.check).await?;
            let run = CheckRun {
                id,
                name: check.name.clone(),
                head_sha: sha.clone(),
                status: CheckStatus::Completed,
                conclusion: Some(check.conclusion),
                title: check.title.clone(),
                summary: check.summary.clone(),
                details_url: check.details_url.clone(),
                log: check.log.clone(),
                annotations: check.annotations.clone(),
            };
            let checks_dir = dir.join("checks");
            tokio::fs::create_dir_all(&checks_dir)
                .await
                .map_err(|source| Error::Io {
                    path: checks_dir.clone(),
                    source,
                })?;
            let path = checks_dir.join(format!("{sha}.json"));
            let mut checks: Vec<CheckRun> = read_or_default(&path).await?;
            // The latest of a name is the one that counts, as on GitHub's page.
            checks.retain(|c| c.name != run.name);
            checks.push(run.clone());
            checks.sort_by(|a, b| a.name.cmp(&b.name));
            write_json(&path, &checks).await?;
            Ok(run)
        })
    }

    fn checks_for<'a>(
        &'a self,
        repo: &'a Repo,
        sha: &'a str,
    ) -> BoxFuture<'a, Result<Vec<CheckRun>>> {
        Box::pin(async move {
            if !super::checks::is_full_sha(sha) {
                return Err(Error::Invalid(format!(
                    "`{sha}` is not a full commit sha (40 or 64 hex digits)"
                )));
            }
            let _guard = self.lock().await?;
            let dir = self.existing(repo)?;
            let path = dir
                .join("checks")
                .join(format!("{}.json", sha.to_ascii_lowercase()));
            read_or_default(&path).await
        })
    }

    fn required_checks<'a>(
        &'a self,
        repo: &'a Repo,
        branch: &'a str,
    ) -> BoxFuture<'a, Result<Vec<String>>> {
        Box::pin(async move {
            // The local forge has no branch protection: the repository's `required_checks`
            // setting, else every check, is what counts.
            check_branch_name(branch)?;
            let _guard = self.lock().await?;
            self.existing(repo)?;
            Ok(Vec::new())
        })
    }

    fn permission<'a>(
        &'a self,
        repo: &'a Repo,
        user: &'a str,
    ) -> BoxFuture<'a, Result<Permission>> {
        Box::pin(async move {
            let _guard = self.lock().await?;
            let dir = self.existing(repo)?;
            let collaborators: BTreeMap<String, Permission> =
                read_or_default(&dir.join("collaborators.json")).await?;
            Ok(collaborators.get(user).copied().unwrap_or(Permission::Read))
        })
    }
}

/// The `git log` format [`parse_log`] reads: fields separated by US (0x1f), commits by RS
/// (0x1e), neither of which appears in messages.
pub const LOG_FORMAT: &str = "--format=%H%x1f%an%x1f%B%x1e";

/// Commits from the output of `git log` with [`LOG_FORMAT`], in its order.
pub fn parse_log(out: &str) -> Vec<Commit> {
    out.split('\u{1e}')
        .filter_map(|record| {
            let mut fields = record.trim_start_matches('\n').splitn(3, '\u{1f}');
            let sha = fields.next()?.trim();
            if sha.is_empty() {
                return None;
            }
            Some(Commit {
                sha: sha.to_string(),
                author_name: fields.next().unwrap_or_default().to_string(),
                message: fields.next().unwrap_or_default().trim_end().to_string(),
                author_login: None,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn branch_names() {
        for ok in ["main", "baton/run-1", "feature.x_y"] {
            assert!(check_branch_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-x", "a..b", "a b", "a~1", "x.lock", "a/", "a:b", "@{x"] {
            assert!(check_branch_name(bad).is_err(), "{bad}");
        }
    }
}
