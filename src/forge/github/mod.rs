//! The GitHub backend of [`Forge`]: octocrab for transport and authentication (a personal token,
//! or a GitHub App whose installation tokens octocrab mints and refreshes 30 s before they
//! expire), and this module for everything else: the REST paths, the bodies, rate limits and
//! retries ([`retry`]), and turning GitHub's JSON into the forge's own types.
//!
//! Every call is one `(method, path, body)` sent through one private retry loop, so the paths are
//! in one place and the contract tests (Prism with GitHub's OpenAPI description) see them all.
//! Paths are relative, so octocrab joins them to the configured base URL (GitHub Enterprise:
//! `https://HOST/api/v3`) and attaches the credential; the credential is never formatted into
//! an error, a log line or a `Debug` output.

pub mod app;
mod auth;
pub mod retry;
mod transport;
mod wire;

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::{header, HeaderMap, Method};
use octocrab::models::{AppId, InstallationId};
use octocrab::secrecy::{ExposeSecret, SecretString};
use octocrab::Octocrab;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

pub use self::retry::RetryPolicy;
use self::retry::{RateHeaders, Verdict};
use super::checks::{self, CheckStatus, Conclusion};
use super::{
    BoxFuture, CheckRun, Comment, Commit, Error, Forge, GitUse, Issue, IssueFilter, NewCheck,
    NewIssue, NewPullRequest, NewRelease, NewReview, Permission, PullRequest, PullRequestUpdate,
    Release, Repo, RepoInfo, Result, Review, ReviewComment, StateFilter, Tag,
};

/// GitHub.com's API address.
pub const GITHUB_API: &str = "https://api.github.com";

/// The repository a clone address names: its last two path segments, `.git` dropped
/// (`https://github.com/o/r.git`, `https://HOST/o/r`).
fn repo_of_clone_url(url: &str) -> Option<Repo> {
    let path = url.split_once("://")?.1.split_once('/')?.1;
    let path = path.trim_end_matches('/').trim_end_matches(".git");
    let (owner, name) = path.rsplit_once('/')?;
    let owner = owner.rsplit('/').next()?;
    Repo::parse(&format!("{owner}/{name}")).ok()
}

/// The host of an `http(s)` address, lowercased, without user, port or path.
fn host_of(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    if scheme != "https" && scheme != "http" {
        return None;
    }
    let authority = rest.split(['/', '?', '#']).next()?;
    let host = authority.rsplit('@').next()?;
    let host = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next()?,
        None => host.split(':').next()?,
    };
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

/// Whether the clone address `url` is on the GitHub whose API is `base_url`: the same host
/// (Enterprise, and the tests' loopback stand-in), or the API's host less `api.` (github.com).
fn same_github(base_url: &str, url: &str) -> bool {
    match (host_of(base_url), host_of(url)) {
        (Some(api), Some(git)) => api == git || api.strip_prefix("api.") == Some(git.as_str()),
        _ => false,
    }
}

/// Page size for list calls: GitHub's maximum.
const PER_PAGE: usize = 100;

/// A bound on pages read by one list call (10,000 items), so a misbehaving server cannot loop us.
const MAX_PAGES: usize = 100;
pub use self::auth::{GithubAuth, GithubConfig};
use self::transport::{encode, parse, repo_path, Budget};
use self::wire::*;

/// The GitHub forge. Cheap to share (`Arc<dyn Forge>`); clients are pooled inside octocrab.
pub struct GithubForge {
    /// The token client, or the App client (JWT) when authenticating as an App.
    client: Arc<Octocrab>,
    /// Set when `client` is an App client: the fixed installation, if configured.
    app: Option<Option<u64>>,
    /// Installation clients by repository owner (App only). Shared, never cloned: a clone of
    /// an `Octocrab` copies its token cache, and the copy would mint its own tokens.
    installations: tokio::sync::Mutex<HashMap<String, Arc<Octocrab>>>,
    base_url: String,
    policy: RetryPolicy,
    request_timeout: Duration,
    budget: std::sync::Mutex<Budget>,
    /// [`Forge::identity`], asked once.
    identity: tokio::sync::OnceCell<String>,
}

impl fmt::Debug for GithubForge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GithubForge")
            .field("base_url", &self.base_url)
            .field(
                "auth",
                &match self.app {
                    Some(_) => "app",
                    None => "token",
                },
            )
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl GithubForge {
    /// Builds the forge. Fails on a bad base URL or an unreadable App key; makes no request.
    /// Must be called inside a Tokio runtime (octocrab spawns its request buffer there).
    pub fn new(config: GithubConfig) -> Result<GithubForge> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(Error::Config(
                "GithubForge::new must be called inside a Tokio runtime".into(),
            ));
        }
        let base_url = config.base_url.trim_end_matches('/').to_string();
        let builder = Octocrab::builder()
            .base_uri(base_url.as_str())
            .map_err(|e| Error::Config(format!("base URL `{base_url}`: {e}")))?
            // GitHub answers plain JSON to `application/json`; the mock server of the contract
            // tests refuses the `vnd.github` media types with 406.
            .add_header(header::ACCEPT, "application/json".to_string())
            .set_connect_timeout(Some(config.connect_timeout))
            .set_read_timeout(Some(config.request_timeout))
            .set_write_timeout(Some(config.request_timeout));
        let (builder, app) = match &config.auth {
            GithubAuth::Token(token) => (builder.personal_token(token.clone()), None),
            GithubAuth::App {
                app_id,
                private_key_pem,
                installation_id,
            } => {
                let key =
                    octocrab::EncodingKey::from_rsa_pem(private_key_pem.expose_secret().as_bytes())
                        .map_err(|e| {
                            Error::Config(format!("the GitHub App private key is not RSA PEM: {e}"))
                        })?;
                (builder.app(AppId(*app_id), key), Some(*installation_id))
            }
        };
        let client = builder
            .build()
            .map_err(|e| Error::Config(format!("GitHub client: {e}")))?;
        Ok(GithubForge {
            client: Arc::new(client),
            app,
            installations: tokio::sync::Mutex::new(HashMap::new()),
            base_url,
            policy: config.retry,
            request_timeout: config.request_timeout,
            budget: std::sync::Mutex::new(Budget::default()),
            identity: tokio::sync::OnceCell::new(),
        })
    }
}

/// An installation of the App: an account that installed it (`baton github installations`).
#[derive(Debug, Clone, serde::Serialize, Deserialize)]
pub struct Installation {
    /// The installation's id (`BATON_GITHUB_APP_INSTALLATION_ID` pins one).
    pub id: u64,
    /// The account: a user or an organization.
    pub account: String,
    /// `all` repositories of the account, or `selected` ones.
    pub repository_selection: String,
    /// When it was installed.
    pub created_at: String,
}

impl GithubForge {
    /// The App's installations (`GET /app/installations`, as the App); an error says so when
    /// baton is not authenticated as an App.
    pub async fn installations(&self) -> Result<Vec<Installation>> {
        #[derive(Deserialize)]
        struct Wire {
            id: u64,
            #[serde(default)]
            account: Option<Account>,
            #[serde(default)]
            repository_selection: String,
            #[serde(default)]
            created_at: String,
        }
        #[derive(Deserialize)]
        struct Account {
            #[serde(default)]
            login: Option<String>,
            #[serde(default)]
            slug: Option<String>,
        }
        if self.app.is_none() {
            return Err(Error::Config(
                "installations belong to a GitHub App, and baton is using GITHUB_TOKEN: set \
                 BATON_GITHUB_APP_ID and BATON_GITHUB_APP_KEY_FILE, or run `baton github app \
                 create`"
                    .into(),
            ));
        }
        let mut out = Vec::new();
        for page in 1..=MAX_PAGES {
            let path = format!("/app/installations?per_page={PER_PAGE}&page={page}");
            let text = self
                .send_retrying(&self.client, Method::GET, &path, None)
                .await?;
            let batch: Vec<Wire> = parse(&Method::GET, &path, &text)?;
            let full = batch.len() == PER_PAGE;
            out.extend(batch.into_iter().map(|w| {
                Installation {
                    id: w.id,
                    account: w
                        .account
                        .and_then(|a| a.login.or(a.slug))
                        .unwrap_or_default(),
                    repository_selection: w.repository_selection,
                    created_at: w.created_at,
                }
            }));
            if !full {
                break;
            }
        }
        Ok(out)
    }
}

impl Forge for GithubForge {
    fn kind(&self) -> &'static str {
        "github"
    }

    fn git_token_env(&self, use_: GitUse) -> std::result::Result<&'static str, String> {
        match self.app {
            // An App's installation token, minted and refreshed here, for reads and pushes.
            Some(_) => Ok(super::FORGE_TOKEN),
            None => super::git_credential::github_token_env(use_),
        }
    }

    fn git_token<'a>(&'a self, url: &'a str) -> BoxFuture<'a, Result<Option<super::Secret>>> {
        Box::pin(async move {
            if self.app.is_none() {
                return Ok(None);
            }
            // The token goes to `url`'s host: only to this GitHub's own (github.com beside
            // api.github.com; an Enterprise host beside its /api/v3), whatever a workflow's
            // `git.clone` names.
            if !same_github(&self.base_url, url) {
                return Err(Error::Invalid(format!(
                    "`{url}` is not on the GitHub at {}: its installation token goes nowhere else",
                    self.base_url
                )));
            }
            let repo = repo_of_clone_url(url).ok_or_else(|| {
                Error::Invalid(format!(
                    "`{url}` names no OWNER/NAME repository to ask an installation token for"
                ))
            })?;
            let client = self.client_for(&repo).await?;
            // The installation client's own cache, which its API calls use too: a token that
            // has five minutes left is reused, an older one is minted again.
            let token = client
                .installation_token_with_buffer(chrono::Duration::minutes(5))
                .await
                .map_err(|e| Error::Config(format!("GitHub App installation token: {e}")))?;
            Ok(Some(super::Secret(token)))
        })
    }

    fn identity<'a>(&'a self) -> BoxFuture<'a, Result<String>> {
        Box::pin(async move {
            let login = self
                .identity
                .get_or_try_init(|| async {
                    #[derive(Deserialize)]
                    struct User {
                        login: String,
                    }
                    #[derive(Deserialize)]
                    struct App {
                        slug: String,
                    }
                    // An App acts as `<slug>[bot]`; its JWT client may ask `GET /app`. A
                    // token acts as its user.
                    let path = if self.app.is_some() { "/app" } else { "/user" };
                    let text = self
                        .send_retrying(&self.client, Method::GET, path, None)
                        .await?;
                    Ok::<String, Error>(if self.app.is_some() {
                        format!("{}[bot]", parse::<App>(&Method::GET, path, &text)?.slug)
                    } else {
                        parse::<User>(&Method::GET, path, &text)?.login
                    })
                })
                .await?;
            Ok(login.clone())
        })
    }

    fn repository<'a>(&'a self, repo: &'a Repo) -> BoxFuture<'a, Result<RepoInfo>> {
        Box::pin(async move {
            let path = format!("/repos/{}", repo_path(repo));
            let r: GhRepository = self.call_json(repo, Method::GET, &path, None).await?;
            Ok(RepoInfo {
                full_name: r.full_name,
                clone_url: r.clone_url,
                default_branch: r.default_branch,
                url: r.html_url,
            })
        })
    }

    fn issue<'a>(&'a self, repo: &'a Repo, number: u64) -> BoxFuture<'a, Result<Issue>> {
        Box::pin(async move {
            let path = format!("/repos/{}/issues/{number}", repo_path(repo));
            let issue: GhIssue = self.call_json(repo, Method::GET, &path, None).await?;
            Ok(issue.into())
        })
    }

    fn comments<'a>(&'a self, repo: &'a Repo, number: u64) -> BoxFuture<'a, Result<Vec<Comment>>> {
        Box::pin(async move {
            let path = format!("/repos/{}/issues/{number}/comments", repo_path(repo));
            let comments: Vec<GhComment> = self.call_pages(repo, &path, "").await?;
            Ok(comments.into_iter().map(Comment::from).collect())
        })
    }

    fn create_comment<'a>(
        &'a self,
        repo: &'a Repo,
        number: u64,
        body: &'a str,
    ) -> BoxFuture<'a, Result<Comment>> {
        Box::pin(async move {
            let path = format!("/repos/{}/issues/{number}/comments", repo_path(repo));
            let comment: GhComment = self
                .call_json(repo, Method::POST, &path, Some(json!({ "body": body })))
                .await?;
            Ok(comment.into())
        })
    }

    fn edit_comment<'a>(
        &'a self,
        repo: &'a Repo,
        comment_id: u64,
        body: &'a str,
    ) -> BoxFuture<'a, Result<Comment>> {
        Box::pin(async move {
            let path = format!("/repos/{}/issues/comments/{comment_id}", repo_path(repo));
            let comment: GhComment = self
                .call_json(repo, Method::PATCH, &path, Some(json!({ "body": body })))
                .await?;
            Ok(comment.into())
        })
    }

    fn create_pull_request<'a>(
        &'a self,
        repo: &'a Repo,
        new: &'a NewPullRequest,
    ) -> BoxFuture<'a, Result<PullRequest>> {
        Box::pin(async move {
            let path = format!("/repos/{}/pulls", repo_path(repo));
            let body = json!({
                "title": new.title,
                "head": new.head,
                "base": new.base,
                "body": new.body,
                "draft": new.draft,
            });
            let pr: GhPull = self
                .call_json(repo, Method::POST, &path, Some(body))
                .await?;
            Ok(pr.into())
        })
    }

    fn update_pull_request<'a>(
        &'a self,
        repo: &'a Repo,
        number: u64,
        update: &'a PullRequestUpdate,
    ) -> BoxFuture<'a, Result<PullRequest>> {
        Box::pin(async move {
            let path = format!("/repos/{}/pulls/{number}", repo_path(repo));
            let body = serde_json::to_value(update).map_err(|source| Error::Json {
                what: "a pull request update".into(),
                source,
            })?;
            let pr: GhPull = self
                .call_json(repo, Method::PATCH, &path, Some(body))
                .await?;
            Ok(pr.into())
        })
    }

    fn find_open_pull_request<'a>(
        &'a self,
        repo: &'a Repo,
        branch: &'a str,
    ) -> BoxFuture<'a, Result<Option<PullRequest>>> {
        Box::pin(async move {
            let path = format!("/repos/{}/pulls", repo_path(repo));
            let query = format!(
                "state=open&head={}",
                encode(&format!("{}:{branch}", repo.owner))
            );
            let pulls: Vec<GhPull> = self.call_pages(repo, &path, &query).await?;
            // GitHub filters by `head` already; checking again guards against a server that
            // ignores the filter (a fork's branch of the same name would be someone else's PR).
            Ok(pulls
                .into_iter()
                .map(PullRequest::from)
                .find(|pr| pr.head == branch && pr.state == "open"))
        })
    }

    fn request_reviewers<'a>(
        &'a self,
        repo: &'a Repo,
        number: u64,
        reviewers: &'a [String],
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            if reviewers.is_empty() {
                return Ok(());
            }
            let path = format!(
                "/repos/{}/pulls/{number}/requested_reviewers",
                repo_path(repo)
            );
            self.call(
                repo,
                Method::POST,
                &path,
                Some(json!({ "reviewers": reviewers })),
            )
            .await?;
            Ok(())
        })
    }

    fn create_review<'a>(
        &'a self,
        repo: &'a Repo,
        number: u64,
        review: &'a NewReview,
    ) -> BoxFuture<'a, Result<Review>> {
        Box::pin(async move {
            let path = format!("/repos/{}/pulls/{number}/reviews", repo_path(repo));
            let mut body = json!({
                "body": review.body,
                "event": review.event,
                "comments": review.comments,
            });
            if let Some(sha) = &review.commit_id {
                body["commit_id"] = json!(sha);
            }
            let r: GhReview = self
                .call_json(repo, Method::POST, &path, Some(body))
                .await?;
            Ok(r.into())
        })
    }

    fn add_labels<'a>(
        &'a self,
        repo: &'a Repo,
        number: u64,
        labels: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<String>>> {
        Box::pin(async move {
            let path = format!("/repos/{}/issues/{number}/labels", repo_path(repo));
            let all: Vec<GhLabel> = self
                .call_json(repo, Method::POST, &path, Some(json!({ "labels": labels })))
                .await?;
            Ok(all.into_iter().map(|l| l.name).collect())
        })
    }

    fn delete_branch<'a>(&'a self, repo: &'a Repo, branch: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            // The ref is one path parameter, `heads/<branch>`, encoded whole (as Octokit does;
            // GitHub decodes `%2F`).
            let path = format!(
                "/repos/{}/git/refs/{}",
                repo_path(repo),
                encode(&format!("heads/{branch}"))
            );
            match self.call(repo, Method::DELETE, &path, None).await {
                Ok(_) => Ok(()),
                // Already gone: GitHub answers 422 "Reference does not exist". A 404 means the
                // repository is not there (or not visible): an error.
                Err(Error::Api {
                    status: 422,
                    message,
                    ..
                }) if message.contains("Reference does not exist") => Ok(()),
                Err(e) => Err(e),
            }
        })
    }

    fn close_pull_request<'a>(
        &'a self,
        repo: &'a Repo,
        number: u64,
    ) -> BoxFuture<'a, Result<PullRequest>> {
        Box::pin(async move {
            let path = format!("/repos/{}/pulls/{number}", repo_path(repo));
            let pr: GhPull = self
                .call_json(
                    repo,
                    Method::PATCH,
                    &path,
                    Some(json!({ "state": "closed" })),
                )
                .await?;
            Ok(pr.into())
        })
    }

    fn commits_between<'a>(
        &'a self,
        repo: &'a Repo,
        base: &'a str,
        head: &'a str,
    ) -> BoxFuture<'a, Result<Vec<Commit>>> {
        Box::pin(async move {
            let path = format!(
                "/repos/{}/compare/{}...{}",
                repo_path(repo),
                encode(base),
                encode(head)
            );
            let mut commits = Vec::new();
            for page in 1..=MAX_PAGES {
                let paged = format!("{path}?per_page={PER_PAGE}&page={page}");
                let compare: GhCompare = self.call_json(repo, Method::GET, &paged, None).await?;
                let got = compare.commits.len();
                commits.extend(compare.commits.into_iter().map(|c| Commit {
                    sha: c.sha,
                    message: c.commit.message,
                    author_name: c.commit.author.and_then(|a| a.name).unwrap_or_default(),
                    author_login: c.author.map(|u| u.login),
                }));
                if got < PER_PAGE || commits.len() >= compare.total_commits {
                    break;
                }
            }
            Ok(commits)
        })
    }

    fn release_by_tag<'a>(
        &'a self,
        repo: &'a Repo,
        tag: &'a str,
    ) -> BoxFuture<'a, Result<Option<Release>>> {
        Box::pin(async move {
            let path = format!("/repos/{}/releases/tags/{}", repo_path(repo), encode(tag));
            match self
                .call_json::<GhRelease>(repo, Method::GET, &path, None)
                .await
            {
                Ok(release) => return Ok(Some(release.into())),
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
            // Draft releases are not found by tag: look through the list for our own draft.
            let path = format!("/repos/{}/releases", repo_path(repo));
            let releases: Vec<GhRelease> = self.call_pages(repo, &path, "").await?;
            Ok(releases
                .into_iter()
                .find(|r| r.tag_name == tag)
                .map(Release::from))
        })
    }

    fn create_release<'a>(
        &'a self,
        repo: &'a Repo,
        new: &'a NewRelease,
    ) -> BoxFuture<'a, Result<Release>> {
        Box::pin(async move {
            let path = format!("/repos/{}/releases", repo_path(repo));
            let release: GhRelease = self
                .call_json(repo, Method::POST, &path, Some(release_body(new)))
                .await?;
            Ok(release.into())
        })
    }

    fn update_release<'a>(
        &'a self,
        repo: &'a Repo,
        release_id: u64,
        new: &'a NewRelease,
    ) -> BoxFuture<'a, Result<Release>> {
        Box::pin(async move {
            let path = format!("/repos/{}/releases/{release_id}", repo_path(repo));
            let release: GhRelease = self
                .call_json(repo, Method::PATCH, &path, Some(release_body(new)))
                .await?;
            Ok(release.into())
        })
    }

    fn issues<'a>(
        &'a self,
        repo: &'a Repo,
        filter: &'a IssueFilter,
    ) -> BoxFuture<'a, Result<Vec<Issue>>> {
        Box::pin(async move {
            let mut query = format!("state={}", filter.state.as_str());
            if !filter.labels.is_empty() {
                // GitHub takes the labels as one comma-separated value.
                if let Some(bad) = filter.labels.iter().find(|l| l.contains(',')) {
                    return Err(Error::Invalid(format!(
                        "label `{bad}` cannot be a filter: GitHub separates labels with commas"
                    )));
                }
                query.push_str(&format!("&labels={}", encode(&filter.labels.join(","))));
            }
            let path = format!("/repos/{}/issues", repo_path(repo));
            let issues: Vec<GhIssue> = self.call_pages(repo, &path, &query).await?;
            Ok(issues
                .into_iter()
                .map(Issue::from)
                .filter(|i| !i.is_pull_request)
                .collect())
        })
    }

    fn create_issue<'a>(
        &'a self,
        repo: &'a Repo,
        new: &'a NewIssue,
    ) -> BoxFuture<'a, Result<Issue>> {
        Box::pin(async move {
            let path = format!("/repos/{}/issues", repo_path(repo));
            let body = json!({ "title": new.title, "body": new.body, "labels": new.labels });
            let issue: GhIssue = self
                .call_json(repo, Method::POST, &path, Some(body))
                .await?;
            Ok(issue.into())
        })
    }

    fn pull_requests<'a>(
        &'a self,
        repo: &'a Repo,
        state: StateFilter,
    ) -> BoxFuture<'a, Result<Vec<PullRequest>>> {
        Box::pin(async move {
            let path = format!("/repos/{}/pulls", repo_path(repo));
            let query = format!("state={}", state.as_str());
            let pulls: Vec<GhPull> = self.call_pages(repo, &path, &query).await?;
            Ok(pulls.into_iter().map(PullRequest::from).collect())
        })
    }

    fn pull_request<'a>(
        &'a self,
        repo: &'a Repo,
        number: u64,
    ) -> BoxFuture<'a, Result<PullRequest>> {
        Box::pin(async move {
            let path = format!("/repos/{}/pulls/{number}", repo_path(repo));
            let pr: GhPull = self.call_json(repo, Method::GET, &path, None).await?;
            Ok(pr.into())
        })
    }

    fn reviews<'a>(&'a self, repo: &'a Repo, number: u64) -> BoxFuture<'a, Result<Vec<Review>>> {
        Box::pin(async move {
            let path = format!("/repos/{}/pulls/{number}/reviews", repo_path(repo));
            let reviews: Vec<GhReview> = self.call_pages(repo, &path, "").await?;
            Ok(reviews.into_iter().map(Review::from).collect())
        })
    }

    fn review_comments<'a>(
        &'a self,
        repo: &'a Repo,
        number: u64,
    ) -> BoxFuture<'a, Result<Vec<ReviewComment>>> {
        Box::pin(async move {
            let path = format!("/repos/{}/pulls/{number}/comments", repo_path(repo));
            let comments: Vec<GhReviewComment> = self.call_pages(repo, &path, "").await?;
            Ok(comments.into_iter().map(ReviewComment::from).collect())
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
            let path = format!(
                "/repos/{}/pulls/{number}/reviews/{review_id}",
                repo_path(repo)
            );
            let r: GhReview = self
                .call_json(repo, Method::PUT, &path, Some(json!({ "body": body })))
                .await?;
            Ok(r.into())
        })
    }

    fn remove_label<'a>(
        &'a self,
        repo: &'a Repo,
        number: u64,
        label: &'a str,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let path = format!(
                "/repos/{}/issues/{number}/labels/{}",
                repo_path(repo),
                encode(label)
            );
            match self.call(repo, Method::DELETE, &path, None).await {
                Ok(_) => Ok(()),
                // Not on the issue: GitHub answers 404 "Label does not exist". Any other 404
                // (no such issue or repository) is an error.
                Err(Error::Api {
                    status: 404,
                    message,
                    ..
                }) if message.contains("Label does not exist") => Ok(()),
                Err(e) => Err(e),
            }
        })
    }

    fn tags<'a>(&'a self, repo: &'a Repo) -> BoxFuture<'a, Result<Vec<Tag>>> {
        Box::pin(async move {
            let path = format!("/repos/{}/tags", repo_path(repo));
            let tags: Vec<GhTag> = self.call_pages(repo, &path, "").await?;
            Ok(tags
                .into_iter()
                .map(|t| Tag {
                    name: t.name,
                    sha: t.commit.sha,
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
            if self.app.is_some() {
                // Only a GitHub App may create check runs; they carry the summary and the
                // annotations beside the diff's lines.
                let path = format!("/repos/{}/check-runs", repo_path(repo));
                let run: GhCheckRun = self
                    .call_json(repo, Method::POST, &path, Some(check_run_body(check)))
                    .await?;
                return Ok(run.into());
            }
            // A token's verdict on a commit is a commit status: a state and one line.
            let path = format!(
                "/repos/{}/statuses/{}",
                repo_path(repo),
                encode(&check.head_sha)
            );
            let status: GhStatus = self
                .call_json(repo, Method::POST, &path, Some(status_body(check)))
                .await?;
            Ok(status.into_check(&check.head_sha))
        })
    }

    fn checks_for<'a>(
        &'a self,
        repo: &'a Repo,
        sha: &'a str,
    ) -> BoxFuture<'a, Result<Vec<CheckRun>>> {
        Box::pin(async move {
            if !checks::is_full_sha(sha) {
                return Err(Error::Invalid(format!(
                    "`{sha}` is not a full commit sha (40 or 64 hex digits)"
                )));
            }
            // GitHub's default `filter=latest` gives the latest run of each name.
            let path = format!(
                "/repos/{}/commits/{}/check-runs?per_page=100",
                repo_path(repo),
                encode(sha)
            );
            let runs: GhCheckRuns = self.call_json(repo, Method::GET, &path, None).await?;
            let path = format!(
                "/repos/{}/commits/{}/status?per_page=100",
                repo_path(repo),
                encode(sha)
            );
            let combined: GhCombinedStatus = self.call_json(repo, Method::GET, &path, None).await?;
            let mut all: Vec<CheckRun> = runs.check_runs.into_iter().map(CheckRun::from).collect();
            // The combined status holds the latest status of each context.
            all.extend(combined.statuses.into_iter().map(|s| s.into_check(sha)));
            all.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(all)
        })
    }

    fn check_log<'a>(
        &'a self,
        repo: &'a Repo,
        check: &'a CheckRun,
    ) -> BoxFuture<'a, Result<Option<String>>> {
        Box::pin(async move {
            // An Actions job's check run has the job's id; its page is under `/actions/runs/`.
            // Other apps' checks and commit statuses have no log here.
            let actions = check
                .details_url
                .as_deref()
                .is_some_and(|u| u.contains("/actions/runs/"));
            if !actions || check.id == 0 {
                return Ok(None);
            }
            let path = format!("/repos/{}/actions/jobs/{}/logs", repo_path(repo), check.id);
            let client = self.client_for(repo).await?;
            let (status, headers, text) =
                match transport::send_once(&client, &Method::GET, &path, None).await {
                    Ok(answer) => answer,
                    Err(transport::Sent::Final(e)) => return Err(e),
                    Err(transport::Sent::Transport(message)) => {
                        return Err(Error::Transport {
                            method: "GET".into(),
                            path,
                            attempts: 1,
                            message,
                        })
                    }
                };
            match status {
                200 => Ok(Some(text)),
                // GitHub answers with a short-lived address of the log in its storage.
                301 | 302 | 303 | 307 | 308 => {
                    let location = headers
                        .get(header::LOCATION)
                        .and_then(|v| v.to_str().ok())
                        .ok_or_else(|| Error::Api {
                            method: "GET".into(),
                            path: path.clone(),
                            status,
                            message: "a redirect without a Location".into(),
                        })?;
                    job_log(location).await.map(Some)
                }
                // Expired (GitHub keeps logs for a while) or not an Actions job after all.
                404 | 410 => Ok(None),
                status => Err(Error::Api {
                    method: "GET".into(),
                    path,
                    status,
                    message: transport::github_message(&text),
                }),
            }
        })
    }

    fn required_checks<'a>(
        &'a self,
        repo: &'a Repo,
        branch: &'a str,
    ) -> BoxFuture<'a, Result<Vec<String>>> {
        Box::pin(async move {
            #[derive(Deserialize)]
            struct Check {
                context: String,
            }
            #[derive(Deserialize)]
            struct Required {
                #[serde(default)]
                contexts: Vec<String>,
                #[serde(default)]
                checks: Vec<Check>,
            }
            let path = format!(
                "/repos/{}/branches/{}/protection/required_status_checks",
                repo_path(repo),
                encode(branch)
            );
            match self
                .call_json::<Required>(repo, Method::GET, &path, None)
                .await
            {
                Ok(required) => {
                    let mut names = required.contexts;
                    for check in required.checks {
                        if !names.contains(&check.context) {
                            names.push(check.context);
                        }
                    }
                    Ok(names)
                }
                // No protection, or none that requires checks.
                Err(e) if e.is_not_found() => Ok(Vec::new()),
                // Reading protection needs more than writing code; without it, every check
                // counts, which is the stricter choice.
                Err(e) if e.status() == Some(403) => {
                    tracing::warn!(%repo, branch, error = %e,
                        "cannot read the branch protection; waiting for every check");
                    Ok(Vec::new())
                }
                Err(e) => Err(e),
            }
        })
    }

    fn permission<'a>(
        &'a self,
        repo: &'a Repo,
        user: &'a str,
    ) -> BoxFuture<'a, Result<Permission>> {
        Box::pin(async move {
            #[derive(Deserialize)]
            struct GhPermission {
                permission: String,
                role_name: Option<String>,
            }
            let path = format!(
                "/repos/{}/collaborators/{}/permission",
                repo_path(repo),
                encode(user)
            );
            match self
                .call_json::<GhPermission>(repo, Method::GET, &path, None)
                .await
            {
                Ok(p) => {
                    let by_role = p
                        .role_name
                        .as_deref()
                        .map(Permission::from_name)
                        .unwrap_or(Permission::None);
                    Ok(Permission::from_name(&p.permission).max(by_role))
                }
                // Not a user GitHub knows on this repository.
                Err(e) if e.is_not_found() => Ok(Permission::None),
                Err(e) => Err(e),
            }
        })
    }
}

/// The most of a job's log read: its end is where a failure is reported, and
/// [`crate::ci::excerpt`] keeps a few kB of it.
const MAX_JOB_LOG_BYTES: usize = 4 * 1024 * 1024;

/// Reads a job's log from the storage address GitHub redirected to. A client of its own, so
/// GitHub's credential never goes to the other host: the address is signed and needs none.
/// `https` only, but for a loopback host (tests).
async fn job_log(location: &str) -> Result<String> {
    let url = reqwest::Url::parse(location)
        .map_err(|e| Error::Invalid(format!("the job log's address is not a URL: {e}")))?;
    let loopback = matches!(url.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"));
    if url.scheme() != "https" && !loopback {
        return Err(Error::Invalid(format!(
            "the job log's address is not https ({})",
            url.scheme()
        )));
    }
    // The address carries a signature in its query: errors name the host only.
    let host = url.host_str().unwrap_or("?").to_string();
    let unavailable = |e: reqwest::Error| Error::Transport {
        method: "GET".into(),
        path: format!("the job log at {host}"),
        attempts: 1,
        message: e.without_url().to_string(),
    };
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::limited(3))
        .timeout(Duration::from_secs(60))
        .build()
        .map_err(unavailable)?;
    let mut response = client
        .get(url.clone())
        .send()
        .await
        .map_err(unavailable)?
        .error_for_status()
        .map_err(unavailable)?;
    let mut bytes: Vec<u8> = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(unavailable)? {
        bytes.extend_from_slice(&chunk);
        // Keep the end: drop the oldest half once over the bound.
        if bytes.len() > MAX_JOB_LOG_BYTES {
            bytes.drain(..bytes.len() - MAX_JOB_LOG_BYTES / 2);
        }
    }
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_installation_token_goes_only_to_its_own_github() {
        use super::same_github;
        assert!(same_github(
            "https://api.github.com",
            "https://github.com/o/r.git"
        ));
        assert!(same_github(
            "https://ghe.example.com/api/v3",
            "https://GHE.example.com/o/r.git"
        ));
        assert!(same_github(
            "http://127.0.0.1:4010",
            "http://127.0.0.1:9/o/r.git"
        ));
        for elsewhere in [
            "https://evil.example/o/r.git",
            "https://github.com.evil.example/o/r.git",
            "https://github.com@evil.example/o/r.git",
            "file:///srv/o/r.git",
            "/srv/o/r.git",
        ] {
            assert!(
                !same_github("https://api.github.com", elsewhere),
                "{elsewhere}"
            );
        }
    }

    use super::*;

    #[tokio::test]
    async fn debug_never_shows_the_token() {
        let auth = GithubAuth::Token("ghp_supersecret123".to_string().into());
        let forge = GithubForge::new(GithubConfig::new(auth.clone())).unwrap();
        let shown = format!("{forge:?} {auth:?} {:?}", GithubConfig::new(auth.clone()));
        assert!(!shown.contains("supersecret"), "{shown}");
    }
}
