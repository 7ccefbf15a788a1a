//! The forge: what workflows need from a code host (issues, comments, pull requests, reviews,
//! labels, branches, releases, permissions), behind one object-safe trait, [`Forge`].
//!
//! Two backends implement it: [`github::GithubForge`] (octocrab, GitHub.com or Enterprise) and
//! [`local::LocalForge`] (JSON files and a bare git repository in a directory, the offline
//! default). The types at the boundary are this module's own plain serde types; octocrab's never
//! cross it.
//!
//! Idempotency lives here, once for both backends: [`Forge::upsert_comment`],
//! [`Forge::ensure_pull_request`], [`Forge::upsert_review`] and [`Forge::upsert_release`] look
//! for their own earlier effect (a comment carrying the run's hidden [`marker`], the open pull
//! request of the head branch, the review carrying the workflow's [`review_marker`], the release
//! of the tag) and edit it instead of creating a second one, so a retried or resumed step is
//! harmless.
//!
//! This module must not log or store a credential: no secret is a field of any type here.

pub mod checks;
mod git_credential;
pub mod github;
pub mod local;
mod settings;
mod traced;

use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The forge `settings` name: the local forge in `settings.root`, or GitHub with credentials
/// from the environment. Makes no request; a missing credential or a bad base URL is an error
/// here, before anything runs. Call inside a Tokio runtime.
pub fn open(settings: &Settings) -> Result<std::sync::Arc<dyn Forge>> {
    match settings.kind {
        Kind::Local => {
            let root = &settings.root;
            let forge = local::LocalForge::open(root, settings.login.clone())
                .map_err(|e| Error::Config(format!("forge.root {}: {e}", root.display())))?;
            Ok(Arc::new(traced::Traced::new(Arc::new(forge))))
        }
        Kind::Github => {
            let auth = github::GithubAuth::resolve(settings.github_app_dir.as_deref())?;
            let github = github::GithubConfig {
                base_url: settings.github_base_url.clone(),
                ..github::GithubConfig::new(auth)
            };
            let forge = github::GithubForge::new(github)?;
            Ok(Arc::new(traced::Traced::new(Arc::new(forge))))
        }
    }
}

/// The configured forge, built on first use: a command that never touches the forge (an
/// engine tour, `baton verify`) must not need GitHub credentials.
#[derive(Clone)]
pub struct ForgeHandle {
    inner: Arc<Lazy>,
}

struct Lazy {
    settings: Settings,
    /// Built once; a failure is kept (and shared) so every caller sees the same reason.
    forge: OnceLock<Result<Arc<dyn Forge>, Arc<Error>>>,
}

impl ForgeHandle {
    /// The forge `settings` name, built when first asked for.
    pub fn new(settings: Settings) -> ForgeHandle {
        ForgeHandle {
            inner: Arc::new(Lazy {
                settings,
                forge: OnceLock::new(),
            }),
        }
    }

    /// A handle over a forge that already exists (tests, the demo).
    pub fn of(forge: Arc<dyn Forge>) -> ForgeHandle {
        let cell = OnceLock::new();
        let _ = cell.set(Ok(forge));
        ForgeHandle {
            inner: Arc::new(Lazy {
                settings: Settings::default(),
                forge: cell,
            }),
        }
    }

    /// The forge, or why it cannot be built (a missing credential, a bad base URL).
    pub fn get(&self) -> Result<Arc<dyn Forge>, Arc<Error>> {
        self.inner
            .forge
            .get_or_init(|| open(&self.inner.settings).map_err(Arc::new))
            .clone()
    }
}

pub use checks::{CheckRun, NewCheck};
pub use futures_util::future::BoxFuture;
pub use git_credential::GitUse;
pub use settings::{Kind, Settings};
pub use traced::Traced;

/// `Result` with this module's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong talking to a forge. Messages name the call and carry the forge's own message.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The forge answered with an error status that is not worth retrying (or retries ran out).
    #[error("{method} {path} answered {status}: {message}")]
    Api {
        /// HTTP method of the call.
        method: String,
        /// Path of the call, without host or query secrets.
        path: String,
        /// HTTP status code.
        status: u16,
        /// GitHub's `message` (and field errors), or the body's start.
        message: String,
    },
    /// A rate limit that would take longer than the configured wait to clear.
    #[error("{method} {path} is rate limited by GitHub; try again in {}s", wait.as_secs())]
    RateLimited {
        /// HTTP method of the call.
        method: String,
        /// Path of the call.
        path: String,
        /// How long GitHub asked to wait.
        wait: Duration,
    },
    /// No answer: connection refused or reset, timeout. Retried before it is returned.
    #[error("{method} {path} failed after {attempts} attempt(s): {message}")]
    Transport {
        /// HTTP method of the call.
        method: String,
        /// Path of the call.
        path: String,
        /// How many attempts were made.
        attempts: u32,
        /// What the last attempt saw.
        message: String,
    },
    /// A local-forge object that does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// An argument the forge cannot accept (bad run id, branch name, repository name...).
    #[error("invalid input: {0}")]
    Invalid(String),
    /// A configuration problem (missing token, unreadable key, bad base URL).
    #[error("forge configuration: {0}")]
    Config(String),
    /// A file of the local forge could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A file or response body that is not the JSON expected.
    #[error("{what}: {source}")]
    Json {
        /// The file or the call whose body failed to parse.
        what: String,
        /// The parse error.
        source: serde_json::Error,
    },
    /// A git command of the local forge failed.
    #[error("git {args} failed: {stderr}")]
    Git {
        /// The arguments given to git.
        args: String,
        /// What git printed on stderr.
        stderr: String,
    },
}

impl Error {
    /// Whether trying the same call again later may succeed (rate limits, 5xx, transport).
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Api { status, .. } => *status >= 500 || *status == 429,
            Error::RateLimited { .. } | Error::Transport { .. } => true,
            _ => false,
        }
    }

    /// Whether the object asked for does not exist (GitHub 404 or a missing local object).
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound(_) | Error::Api { status: 404, .. })
    }

    /// The HTTP status of an API error.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// A repository on a forge: `owner/name`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Repo {
    /// The user or organisation.
    pub owner: String,
    /// The repository's name.
    pub name: String,
}

impl Repo {
    /// A repository from its owner and name, checked like GitHub checks them.
    pub fn new(owner: impl Into<String>, name: impl Into<String>) -> Result<Repo> {
        let repo = Repo {
            owner: owner.into(),
            name: name.into(),
        };
        let ok_owner = !repo.owner.is_empty()
            && repo.owner.len() <= 100
            && repo
                .owner
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        let ok_name = !repo.name.is_empty()
            && repo.name.len() <= 100
            && repo.name != "."
            && repo.name != ".."
            && repo
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
        if ok_owner && ok_name {
            Ok(repo)
        } else {
            Err(Error::Invalid(format!(
                "`{}/{}` is not a repository name (owner/name, letters, digits, `-`, `_`, `.`)",
                repo.owner, repo.name
            )))
        }
    }

    /// Parses `owner/name`.
    pub fn parse(full_name: &str) -> Result<Repo> {
        match full_name.split_once('/') {
            Some((owner, name)) => Repo::new(owner, name),
            None => Err(Error::Invalid(format!(
                "`{full_name}` is not a repository name: expected owner/name"
            ))),
        }
    }
}

impl fmt::Display for Repo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.owner, self.name)
    }
}

/// What the forge says about a repository: where to clone it from and its default branch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoInfo {
    /// `owner/name` as the forge spells it.
    pub full_name: String,
    /// The address git clones from: the API's `clone_url` (GitHub Enterprise and test servers
    /// report their own), or the local forge's bare remote. Never carries a credential.
    pub clone_url: String,
    /// The branch pull requests go into unless told otherwise.
    pub default_branch: String,
    /// Web address of the repository.
    pub url: String,
}

/// An issue (on GitHub, pull requests are issues too; `is_pull_request` tells them apart).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Issue {
    /// The issue's number in its repository.
    pub number: u64,
    /// Title.
    pub title: String,
    /// Body (Markdown), empty when there is none.
    pub body: String,
    /// `open` or `closed`.
    pub state: String,
    /// Login of the author.
    pub author: String,
    /// Label names.
    pub labels: Vec<String>,
    /// Logins of the assignees.
    pub assignees: Vec<String>,
    /// Web address of the issue.
    pub url: String,
    /// Whether this issue is a pull request.
    pub is_pull_request: bool,
}

/// Which issues or pull requests a list call returns, by state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StateFilter {
    /// Open ones (GitHub's default).
    #[default]
    Open,
    /// Closed (and merged) ones.
    Closed,
    /// Both.
    All,
}

impl StateFilter {
    /// The name GitHub's `state` query parameter takes.
    pub fn as_str(self) -> &'static str {
        match self {
            StateFilter::Open => "open",
            StateFilter::Closed => "closed",
            StateFilter::All => "all",
        }
    }

    /// Whether an issue or pull request in `state` (`open` or `closed`) passes.
    pub fn matches(self, state: &str) -> bool {
        match self {
            StateFilter::Open => state == "open",
            StateFilter::Closed => state == "closed",
            StateFilter::All => true,
        }
    }
}

impl std::str::FromStr for StateFilter {
    type Err = Error;

    fn from_str(text: &str) -> Result<StateFilter> {
        match text {
            "open" => Ok(StateFilter::Open),
            "closed" => Ok(StateFilter::Closed),
            "all" => Ok(StateFilter::All),
            other => Err(Error::Invalid(format!(
                "state `{other}`: expected open, closed or all"
            ))),
        }
    }
}

impl fmt::Display for StateFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What [`Forge::issues`] lists.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssueFilter {
    /// By state.
    pub state: StateFilter,
    /// Only issues carrying every one of these labels (none: no label filter).
    pub labels: Vec<String>,
}

/// What [`Forge::create_issue`] files.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewIssue {
    /// Title (not empty).
    pub title: String,
    /// Body (Markdown).
    pub body: String,
    /// Labels to put on it.
    pub labels: Vec<String>,
}

/// A tag of a repository, as listed by [`Forge::tags`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tag {
    /// The tag's name (`v1.2.0`).
    pub name: String,
    /// The commit it points at (an annotated tag is peeled to its commit).
    pub sha: String,
}

/// A comment on an issue or a pull request's conversation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Comment {
    /// The comment's id (what [`Forge::edit_comment`] takes).
    pub id: u64,
    /// Login of the author.
    pub author: String,
    /// Body (Markdown).
    pub body: String,
    /// When it was created (RFC 3339).
    pub created_at: String,
    /// When it was last edited (RFC 3339).
    pub updated_at: String,
    /// Web address of the comment.
    pub url: String,
}

/// A pull request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullRequest {
    /// The pull request's number.
    pub number: u64,
    /// Title.
    pub title: String,
    /// Body (Markdown), empty when there is none.
    pub body: String,
    /// `open` or `closed`.
    pub state: String,
    /// Whether it is a draft.
    pub draft: bool,
    /// Whether it was merged.
    pub merged: bool,
    /// Login of the author; empty when the forge does not say (a deleted account).
    #[serde(default)]
    pub author: String,
    /// Head branch name.
    pub head: String,
    /// The repository the head branch lives in (`owner/name`): another one for a pull request
    /// from a fork; `None` when GitHub no longer knows it (a deleted fork).
    #[serde(default)]
    pub head_repo: Option<String>,
    /// Commit the head branch pointed to.
    pub head_sha: String,
    /// Base branch name.
    pub base: String,
    /// Web address.
    pub url: String,
}

/// What [`Forge::create_pull_request`] and [`Forge::ensure_pull_request`] need.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewPullRequest {
    /// Title.
    pub title: String,
    /// Head branch (in the same repository).
    pub head: String,
    /// Base branch.
    pub base: String,
    /// Body (Markdown).
    pub body: String,
    /// Open it as a draft.
    pub draft: bool,
}

/// Fields [`Forge::update_pull_request`] changes; `None` leaves a field as it is.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullRequestUpdate {
    /// New title.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// New body.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// New base branch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
    /// `open` or `closed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
}

/// The verdict a review carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ReviewEvent {
    /// A plain review comment.
    Comment,
    /// Approve the changes.
    Approve,
    /// Ask for changes.
    RequestChanges,
}

/// Which side of a diff a line comment is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum DiffSide {
    /// The old file (deleted lines).
    Left,
    /// The new file (added or unchanged lines).
    Right,
}

/// A comment on one line of a pull request's diff.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineComment {
    /// File path relative to the repository root.
    pub path: String,
    /// Line number in the file on `side`.
    pub line: u64,
    /// Side of the diff.
    pub side: DiffSide,
    /// The comment (Markdown).
    pub body: String,
}

/// A review to post on a pull request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewReview {
    /// The review's summary (Markdown).
    pub body: String,
    /// Its verdict.
    pub event: ReviewEvent,
    /// The commit reviewed; `None` means the head as it is now.
    pub commit_id: Option<String>,
    /// Line comments.
    pub comments: Vec<LineComment>,
}

/// A posted review.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Review {
    /// The review's id.
    pub id: u64,
    /// Login of the reviewer.
    pub author: String,
    /// Summary.
    pub body: String,
    /// `COMMENTED`, `APPROVED`, `CHANGES_REQUESTED`, `PENDING`...
    pub state: String,
    /// Web address.
    pub url: String,
}

/// A comment on one line of a pull request's diff, as [`Forge::review_comments`] lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReviewComment {
    /// The comment's id.
    pub id: u64,
    /// The review it belongs to, when the forge says.
    pub review_id: Option<u64>,
    /// Login of the author.
    pub author: String,
    /// File path relative to the repository root.
    pub path: String,
    /// Line in the file; `None` when the line is gone from the current diff (outdated).
    pub line: Option<u64>,
    /// The comment (Markdown).
    pub body: String,
}

/// A commit, as listed by [`Forge::commits_between`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Commit {
    /// Full SHA.
    pub sha: String,
    /// Full message.
    pub message: String,
    /// Author name.
    pub author_name: String,
    /// Author login on the forge, when known.
    pub author_login: Option<String>,
}

/// A release to create or update.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewRelease {
    /// The tag it is for.
    pub tag: String,
    /// Title.
    pub name: String,
    /// Notes (Markdown).
    pub body: String,
    /// Keep it unpublished.
    pub draft: bool,
    /// Mark it as a pre-release.
    pub prerelease: bool,
}

/// A release.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    /// The release's id.
    pub id: u64,
    /// Its tag.
    pub tag: String,
    /// Title.
    pub name: String,
    /// Notes.
    pub body: String,
    /// Unpublished.
    pub draft: bool,
    /// Pre-release.
    pub prerelease: bool,
    /// Web address.
    pub url: String,
}

/// A user's permission on a repository, weakest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Permission {
    /// No access.
    None,
    /// Read.
    Read,
    /// Triage (manage issues, no push).
    Triage,
    /// Write (push).
    Write,
    /// Maintain.
    Maintain,
    /// Admin.
    Admin,
}

impl Permission {
    /// Whether this permission may start or steer a run: write, maintain or admin.
    pub fn can_steer(self) -> bool {
        self >= Permission::Write
    }

    /// Parses GitHub's names (`role_name` or `permission`); unknown names are `None`.
    pub fn from_name(name: &str) -> Permission {
        match name {
            "admin" => Permission::Admin,
            "maintain" => Permission::Maintain,
            "write" | "push" => Permission::Write,
            "triage" => Permission::Triage,
            "read" | "pull" => Permission::Read,
            _ => Permission::None,
        }
    }
}

/// What every marker baton writes begins with: text that carries it is baton's own.
pub const MARKER_PREFIX: &str = "<!-- baton:";

/// The hidden marker baton puts in comments and pull request bodies:
/// `<!-- baton:run=<run_id> -->` or `<!-- baton:run=<run_id>:<key> -->`.
///
/// Run ids and keys are limited to letters, digits, `.`, `_` and `-` so that a marker can
/// neither be confused with another one nor close the HTML comment early.
pub fn marker(run_id: &str, key: Option<&str>) -> Result<String> {
    fn ok(part: &str) -> bool {
        !part.is_empty()
            && part.len() <= 128
            && part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    }
    if !ok(run_id) {
        return Err(Error::Invalid(format!(
            "run id `{run_id}` cannot go in a marker: use letters, digits, `.`, `_`, `-`"
        )));
    }
    match key {
        None => Ok(format!("<!-- baton:run={run_id} -->")),
        Some(key) if ok(key) => Ok(format!("<!-- baton:run={run_id}:{key} -->")),
        Some(key) => Err(Error::Invalid(format!(
            "marker key `{key}` cannot go in a marker: use letters, digits, `.`, `_`, `-`"
        ))),
    }
}

/// `body` with `marker` on its own last line (once, however often it is applied).
pub fn with_marker(body: &str, marker: &str) -> String {
    if body.contains(marker) {
        return body.to_string();
    }
    let body = body.trim_end();
    if body.is_empty() {
        marker.to_string()
    } else {
        format!("{body}\n\n{marker}")
    }
}

/// The hidden marker of a workflow's one review (or comment) on an issue or pull request:
/// `<!-- baton:review=<workflow>:<number> -->`. Keyed by workflow and number rather than by run,
/// so every run of that workflow on that pull request finds and edits the same review.
pub fn review_marker(workflow: &str, number: u64) -> Result<String> {
    let ok = !workflow.is_empty()
        && workflow.len() <= 128
        && workflow
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(format!("<!-- baton:review={workflow}:{number} -->"))
    } else {
        Err(Error::Invalid(format!(
            "workflow `{workflow}` cannot go in a marker: use letters, digits, `.`, `_`, `-`"
        )))
    }
}

/// The `token_env` that sends git to the forge for its token ([`Forge::git_token`]) instead of
/// to a variable: a GitHub App's installation token is minted, not configured. No variable can
/// be named so (`@` is not allowed in one), so a workflow file cannot mean a variable by it.
pub const FORGE_TOKEN: &str = "@forge";

/// A token handed from the forge to git: `Debug` prints `***`, and it is not `Serialize`.
#[derive(Clone)]
pub struct Secret(pub octocrab::secrecy::SecretString);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// A repository as a workflow clones it: see [`Forge::clone_source`].
#[derive(Debug, Clone, Serialize)]
pub struct CloneSource {
    /// Its clone address and default branch.
    pub repository: RepoInfo,
    /// The variable holding git's token, `""` for none.
    pub token_env: &'static str,
}

/// What workflows need from a code host. Object safe: hold it as `Arc<dyn Forge>`.
///
/// The required methods are one call each to the forge; the provided ones (`upsert_comment`,
/// `ensure_pull_request`, `upsert_review`, `upsert_release`) build idempotent effects out of
/// them. A provided method a backend overrides must also be forwarded by [`Traced`], which
/// wraps every forge `open` builds.
pub trait Forge: Send + Sync + fmt::Debug {
    /// The backend's name (`github`, `local`), for logs.
    fn kind(&self) -> &'static str;

    /// The repository: its clone address and default branch.
    fn repository<'a>(&'a self, repo: &'a Repo) -> BoxFuture<'a, Result<RepoInfo>>;

    /// Which credential git uses with this forge's repositories: the variable holding its
    /// token (the `token_env` of a `git.clone` step), `""` for none. An error says why `use_`
    /// cannot work and what to set. The local forge needs none.
    fn git_token_env(&self, use_: GitUse) -> std::result::Result<&'static str, String> {
        let _ = use_;
        Ok("")
    }

    /// The token git uses for `url` when [`Forge::git_token_env`] names [`FORGE_TOKEN`]: a
    /// GitHub App's installation token, from the same cache its API client uses, valid for a
    /// few minutes more at least. Other forges have none.
    fn git_token<'a>(&'a self, url: &'a str) -> BoxFuture<'a, Result<Option<Secret>>> {
        let _ = url;
        Box::pin(async { Ok(None) })
    }

    /// What a workflow's first step reads so that a later step can clone `repo`: its address
    /// and default branch, and git's credential for `use_`. A push that cannot work is refused
    /// here, before any request and any work.
    fn clone_source<'a>(
        &'a self,
        repo: &'a Repo,
        use_: GitUse,
    ) -> BoxFuture<'a, Result<CloneSource>> {
        Box::pin(async move {
            let token_env = self.git_token_env(use_).map_err(Error::Config)?;
            let repository = self.repository(repo).await?;
            Ok(CloneSource {
                repository,
                token_env,
            })
        })
    }

    /// An issue (or a pull request seen as an issue).
    fn issue<'a>(&'a self, repo: &'a Repo, number: u64) -> BoxFuture<'a, Result<Issue>>;

    /// All comments of an issue or pull request conversation, oldest first.
    fn comments<'a>(&'a self, repo: &'a Repo, number: u64) -> BoxFuture<'a, Result<Vec<Comment>>>;

    /// Adds a comment to an issue or pull request conversation.
    fn create_comment<'a>(
        &'a self,
        repo: &'a Repo,
        number: u64,
        body: &'a str,
    ) -> BoxFuture<'a, Result<Comment>>;

    /// Replaces the body of a comment.
    fn edit_comment<'a>(
        &'a self,
        repo: &'a Repo,
        comment_id: u64,
        body: &'a str,
    ) -> BoxFuture<'a, Result<Comment>>;

    /// Opens a pull request (a draft if asked).
    fn create_pull_request<'a>(
        &'a self,
        repo: &'a Repo,
        new: &'a NewPullRequest,
    ) -> BoxFuture<'a, Result<PullRequest>>;

    /// Changes a pull request's title, body, base or state.
    fn update_pull_request<'a>(
        &'a self,
        repo: &'a Repo,
        number: u64,
        update: &'a PullRequestUpdate,
    ) -> BoxFuture<'a, Result<PullRequest>>;

    /// The open pull request whose head is `branch` (in `repo` itself), if any.
    fn find_open_pull_request<'a>(
        &'a self,
        repo: &'a Repo,
        branch: &'a str,
    ) -> BoxFuture<'a, Result<Option<PullRequest>>>;

    /// Asks users for a review of a pull request.
    fn request_reviewers<'a>(
        &'a self,
        repo: &'a Repo,
        number: u64,
        reviewers: &'a [String],
    ) -> BoxFuture<'a, Result<()>>;

    /// Posts a review with line comments.
    fn create_review<'a>(
        &'a self,
        repo: &'a Repo,
        number: u64,
        review: &'a NewReview,
    ) -> BoxFuture<'a, Result<Review>>;

    /// Adds labels to an issue or pull request; returns all its labels.
    fn add_labels<'a>(
        &'a self,
        repo: &'a Repo,
        number: u64,
        labels: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<String>>>;

    /// Deletes a branch. A branch that is already gone is not an error.
    fn delete_branch<'a>(&'a self, repo: &'a Repo, branch: &'a str) -> BoxFuture<'a, Result<()>>;

    /// Closes a pull request without merging it.
    fn close_pull_request<'a>(
        &'a self,
        repo: &'a Repo,
        number: u64,
    ) -> BoxFuture<'a, Result<PullRequest>>;

    /// Commits reachable from `head` and not from `base`, oldest first.
    fn commits_between<'a>(
        &'a self,
        repo: &'a Repo,
        base: &'a str,
        head: &'a str,
    ) -> BoxFuture<'a, Result<Vec<Commit>>>;

    /// The release of a tag, if there is one.
    fn release_by_tag<'a>(
        &'a self,
        repo: &'a Repo,
        tag: &'a str,
    ) -> BoxFuture<'a, Result<Option<Release>>>;

    /// Creates a release.
    fn create_release<'a>(
        &'a self,
        repo: &'a Repo,
        new: &'a NewRelease,
    ) -> BoxFuture<'a, Result<Release>>;

    /// Updates a release's name, notes, draft and pre-release flags.
    fn update_release<'a>(
        &'a self,
        repo: &'a Repo,
        release_id: u64,
        new: &'a NewRelease,
    ) -> BoxFuture<'a, Result<Release>>;

    /// A user's permission on a repository.
    fn permission<'a>(&'a self, repo: &'a Repo, user: &'a str)
        -> BoxFuture<'a, Result<Permission>>;

    /// Issues (never pull requests) passing `filter`, newest first.
    fn issues<'a>(
        &'a self,
        repo: &'a Repo,
        filter: &'a IssueFilter,
    ) -> BoxFuture<'a, Result<Vec<Issue>>>;

    /// Files an issue, authored by the forge's own login.
    fn create_issue<'a>(
        &'a self,
        repo: &'a Repo,
        new: &'a NewIssue,
    ) -> BoxFuture<'a, Result<Issue>>;

    /// Pull requests in `state`, newest first.
    fn pull_requests<'a>(
        &'a self,
        repo: &'a Repo,
        state: StateFilter,
    ) -> BoxFuture<'a, Result<Vec<PullRequest>>>;

    /// One pull request by number (an issue's number is not found).
    fn pull_request<'a>(
        &'a self,
        repo: &'a Repo,
        number: u64,
    ) -> BoxFuture<'a, Result<PullRequest>>;

    /// The reviews of a pull request, oldest first.
    fn reviews<'a>(&'a self, repo: &'a Repo, number: u64) -> BoxFuture<'a, Result<Vec<Review>>>;

    /// The line comments of a pull request's reviews, oldest first.
    fn review_comments<'a>(
        &'a self,
        repo: &'a Repo,
        number: u64,
    ) -> BoxFuture<'a, Result<Vec<ReviewComment>>>;

    /// Replaces the summary of a review (its verdict and line comments stay).
    fn edit_review<'a>(
        &'a self,
        repo: &'a Repo,
        number: u64,
        review_id: u64,
        body: &'a str,
    ) -> BoxFuture<'a, Result<Review>>;

    /// Removes a label from an issue or pull request. A label it does not carry is not an error.
    fn remove_label<'a>(
        &'a self,
        repo: &'a Repo,
        number: u64,
        label: &'a str,
    ) -> BoxFuture<'a, Result<()>>;

    /// The repository's tags.
    fn tags<'a>(&'a self, repo: &'a Repo) -> BoxFuture<'a, Result<Vec<Tag>>>;

    /// Publishes a finished check on a commit: a check run as a GitHub App, a commit status
    /// with a token, a stored check on the local forge (replacing its earlier one of that name).
    fn publish_check<'a>(
        &'a self,
        repo: &'a Repo,
        check: &'a NewCheck,
    ) -> BoxFuture<'a, Result<CheckRun>>;

    /// The checks on commit `sha`, the latest of each name, in name order: check runs and
    /// commit statuses alike.
    fn checks_for<'a>(
        &'a self,
        repo: &'a Repo,
        sha: &'a str,
    ) -> BoxFuture<'a, Result<Vec<CheckRun>>>;

    /// The full log of a finished check, where the forge keeps more than the check's own text:
    /// a GitHub Actions job's log. `None` where there is none (a commit status, a check of
    /// another app, a log GitHub no longer keeps, the local forge, whose checks carry theirs).
    fn check_log<'a>(
        &'a self,
        repo: &'a Repo,
        check: &'a CheckRun,
    ) -> BoxFuture<'a, Result<Option<String>>> {
        let _ = (repo, check);
        Box::pin(async { Ok(None) })
    }

    /// The checks branch protection requires on `branch` before a merge, empty when it
    /// requires none (no protection, or none this forge knows of).
    fn required_checks<'a>(
        &'a self,
        repo: &'a Repo,
        branch: &'a str,
    ) -> BoxFuture<'a, Result<Vec<String>>>;

    /// The login baton acts as on this forge: what it writes carries it as its author. For a
    /// token, `GET /user`; for a GitHub App, `<slug>[bot]` from `GET /app`; the local forge's
    /// own login.
    fn identity<'a>(&'a self) -> BoxFuture<'a, Result<String>>;

    /// Creates the run's comment (`key` tells several comments of one run apart), or edits the
    /// one it created before, found by its hidden [`marker`] (the latest of baton's own
    /// comments carrying it). A comment by anyone else is never edited, even one that quotes
    /// the marker and even where the credential could (an admin's token edits anyone's). A
    /// comment whose body is already `body` is left alone.
    fn upsert_comment<'a>(
        &'a self,
        repo: &'a Repo,
        number: u64,
        run_id: &'a str,
        key: Option<&'a str>,
        body: &'a str,
    ) -> BoxFuture<'a, Result<Comment>> {
        Box::pin(async move {
            let marker = marker(run_id, key)?;
            let body = with_marker(body, &marker);
            let me = self.identity().await?;
            let comments = self.comments(repo, number).await?;
            match comments
                .into_iter()
                .rev()
                .find(|c| c.author.eq_ignore_ascii_case(&me) && c.body.contains(&marker))
            {
                Some(earlier) if earlier.body == body => Ok(earlier),
                Some(earlier) => match self.edit_comment(repo, earlier.id, &body).await {
                    // Someone else's comment quoting the marker: not ours to edit.
                    Err(e) if e.status() == Some(403) => {
                        self.create_comment(repo, number, &body).await
                    }
                    edited => edited,
                },
                None => self.create_comment(repo, number, &body).await,
            }
        })
    }

    /// baton's open pull request for issue `issue`, if there is one: open, written by baton's
    /// own identity, from a branch of this repository named for the issue (`fix/issue-N` or
    /// `feature/issue-N`, with a `-2`-style suffix or not), its description carrying a run's
    /// marker and `Fixes #N`. What keeps an issue at one open pull request, whichever way a run
    /// is started.
    fn open_pull_request_for_issue<'a>(
        &'a self,
        repo: &'a Repo,
        issue: u64,
    ) -> BoxFuture<'a, Result<Option<PullRequest>>> {
        Box::pin(async move {
            let me = self.identity().await?;
            let open = self.pull_requests(repo, StateFilter::Open).await?;
            Ok(open.into_iter().find(|pr| {
                pr.author.eq_ignore_ascii_case(&me)
                    && pr
                        .head_repo
                        .as_deref()
                        .is_none_or(|head| head.eq_ignore_ascii_case(&repo.to_string()))
                    && crate::workspace::is_issue_branch(&pr.head, issue)
                    && pr.body.contains("<!-- baton:run=")
                    && pr
                        .body
                        .lines()
                        .any(|l| l.trim() == format!("Fixes #{issue}"))
            }))
        })
    }

    /// Opens the run's pull request for `new.head`, or updates the open one that already has
    /// that head branch (title and body; the body carries the run's [`marker`]).
    fn ensure_pull_request<'a>(
        &'a self,
        repo: &'a Repo,
        run_id: &'a str,
        new: &'a NewPullRequest,
    ) -> BoxFuture<'a, Result<PullRequest>> {
        Box::pin(async move {
            let marker = marker(run_id, None)?;
            let body = with_marker(&new.body, &marker);
            match self.find_open_pull_request(repo, &new.head).await? {
                Some(pr) if pr.title == new.title && pr.body == body => Ok(pr),
                Some(pr) => {
                    let update = PullRequestUpdate {
                        title: Some(new.title.clone()),
                        body: Some(body),
                        ..PullRequestUpdate::default()
                    };
                    self.update_pull_request(repo, pr.number, &update).await
                }
                None => {
                    let new = NewPullRequest {
                        body,
                        ..new.clone()
                    };
                    self.create_pull_request(repo, &new).await
                }
            }
        })
    }

    /// Posts the workflow's one review of a pull request, or edits the summary of the one posted
    /// before, found by its [`review_marker`] (`workflow`, `number`): one review per pull
    /// request, never a pile. An edit keeps the earlier review's verdict and line comments
    /// (GitHub cannot change them). Only baton's own reviews are edited: one by anyone else
    /// quoting the marker is passed over.
    fn upsert_review<'a>(
        &'a self,
        repo: &'a Repo,
        number: u64,
        workflow: &'a str,
        new: &'a NewReview,
    ) -> BoxFuture<'a, Result<Review>> {
        Box::pin(async move {
            let marker = review_marker(workflow, number)?;
            let body = with_marker(&new.body, &marker);
            let me = self.identity().await?;
            let reviews = self.reviews(repo, number).await?;
            match reviews
                .into_iter()
                .rev()
                .find(|r| r.author.eq_ignore_ascii_case(&me) && r.body.contains(&marker))
            {
                Some(earlier) if earlier.body == body => Ok(earlier),
                Some(earlier) => match self.edit_review(repo, number, earlier.id, &body).await {
                    Err(e) if e.status() == Some(403) => {
                        let new = NewReview {
                            body,
                            ..new.clone()
                        };
                        self.create_review(repo, number, &new).await
                    }
                    edited => edited,
                },
                None => {
                    let new = NewReview {
                        body,
                        ..new.clone()
                    };
                    self.create_review(repo, number, &new).await
                }
            }
        })
    }

    /// Creates the release of `new.tag`, or updates the one that exists.
    fn upsert_release<'a>(
        &'a self,
        repo: &'a Repo,
        new: &'a NewRelease,
    ) -> BoxFuture<'a, Result<Release>> {
        Box::pin(async move {
            match self.release_by_tag(repo, &new.tag).await? {
                Some(release) => self.update_release(repo, release.id, new).await,
                None => self.create_release(repo, new).await,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_are_exact_and_checked() {
        assert_eq!(marker("r1", None).unwrap(), "<!-- baton:run=r1 -->");
        assert_eq!(
            marker("01HX-a.b_c", Some("progress")).unwrap(),
            "<!-- baton:run=01HX-a.b_c:progress -->"
        );
        for bad in ["", "a b", "a-->", "a:b", "ü"] {
            assert!(marker(bad, None).is_err(), "{bad:?} accepted as run id");
        }
        assert!(marker("r1", Some("x -->")).is_err());
    }

    #[test]
    fn review_markers_are_keyed_by_workflow_and_number() {
        assert_eq!(
            review_marker("pr_review", 42).unwrap(),
            "<!-- baton:review=pr_review:42 -->"
        );
        for bad in ["", "pr review", "x-->", "a:b"] {
            assert!(review_marker(bad, 1).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn state_filters_parse_and_match() {
        assert_eq!("all".parse::<StateFilter>().unwrap(), StateFilter::All);
        assert!("opened".parse::<StateFilter>().is_err());
        assert!(StateFilter::Closed.matches("closed") && !StateFilter::Closed.matches("open"));
        assert!(StateFilter::All.matches("open") && StateFilter::All.matches("closed"));
    }

    #[test]
    fn with_marker_appends_once() {
        let m = marker("r1", None).unwrap();
        let once = with_marker("Hello\n\n", &m);
        assert_eq!(once, "Hello\n\n<!-- baton:run=r1 -->");
        assert_eq!(with_marker(&once, &m), once);
        assert_eq!(with_marker("", &m), m);
    }

    #[test]
    fn repo_names_are_checked() {
        let repo = Repo::parse("octo-cat/hello.world").unwrap();
        assert_eq!(repo.to_string(), "octo-cat/hello.world");
        for bad in ["nobody", "a/..", "a/b/c", "/b", "a/", "a b/c", "a/b?x"] {
            assert!(Repo::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn permissions_order() {
        assert!(Permission::from_name("maintain").can_steer());
        assert!(Permission::from_name("write").can_steer());
        assert!(Permission::from_name("admin").can_steer());
        assert!(!Permission::from_name("triage").can_steer());
        assert!(!Permission::from_name("read").can_steer());
        assert!(!Permission::from_name("nonsense").can_steer());
    }
}
