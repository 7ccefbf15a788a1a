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

pub mod retry;

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
use super::{
    BoxFuture, Comment, Commit, Error, Forge, Issue, IssueFilter, NewIssue, NewPullRequest,
    NewRelease, NewReview, Permission, PullRequest, PullRequestUpdate, Release, Repo, RepoInfo,
    Result, Review, ReviewComment, StateFilter, Tag,
};

/// GitHub.com's API address.
pub const GITHUB_API: &str = "https://api.github.com";

/// Page size for list calls: GitHub's maximum.
const PER_PAGE: usize = 100;

/// A bound on pages read by one list call (10,000 items), so a misbehaving server cannot loop us.
const MAX_PAGES: usize = 100;

/// How baton authenticates to GitHub.
#[derive(Clone, Debug)]
pub enum GithubAuth {
    /// A personal access token (`GITHUB_TOKEN`).
    Token(SecretString),
    /// A GitHub App (`BATON_GITHUB_APP_ID` + `BATON_GITHUB_APP_KEY_FILE`).
    App {
        /// The App's id.
        app_id: u64,
        /// The App's private key, PEM.
        private_key_pem: SecretString,
        /// The installation to act as; `None` looks it up per repository owner.
        installation_id: Option<u64>,
    },
}

impl GithubAuth {
    /// From the environment: `GITHUB_TOKEN`, or `BATON_GITHUB_APP_ID` with
    /// `BATON_GITHUB_APP_KEY_FILE` (and optionally `BATON_GITHUB_APP_INSTALLATION_ID`).
    pub fn from_env() -> Result<GithubAuth> {
        if let Ok(id) = std::env::var("BATON_GITHUB_APP_ID") {
            let app_id = id.trim().parse().map_err(|_| {
                Error::Config(format!("BATON_GITHUB_APP_ID is not a number: `{id}`"))
            })?;
            let key_file = std::env::var("BATON_GITHUB_APP_KEY_FILE").map_err(|_| {
                Error::Config(
                    "BATON_GITHUB_APP_ID is set but BATON_GITHUB_APP_KEY_FILE is not".into(),
                )
            })?;
            let pem = std::fs::read_to_string(&key_file).map_err(|source| Error::Io {
                path: key_file.into(),
                source,
            })?;
            let installation_id = match std::env::var("BATON_GITHUB_APP_INSTALLATION_ID") {
                Ok(v) => Some(v.trim().parse().map_err(|_| {
                    Error::Config(format!(
                        "BATON_GITHUB_APP_INSTALLATION_ID is not a number: `{v}`"
                    ))
                })?),
                Err(_) => None,
            };
            return Ok(GithubAuth::App {
                app_id,
                private_key_pem: pem.into(),
                installation_id,
            });
        }
        match std::env::var("GITHUB_TOKEN") {
            Ok(token) if !token.trim().is_empty() => Ok(GithubAuth::Token(token.trim().into())),
            _ => Err(Error::Config(
                "no GitHub credential: set GITHUB_TOKEN, or BATON_GITHUB_APP_ID and \
                 BATON_GITHUB_APP_KEY_FILE"
                    .into(),
            )),
        }
    }
}

/// Options of [`GithubForge`].
#[derive(Clone, Debug)]
pub struct GithubConfig {
    /// API address: `https://api.github.com`, or `https://HOST/api/v3` for GitHub Enterprise.
    pub base_url: String,
    /// The credential.
    pub auth: GithubAuth,
    /// Retries and rate-limit waits.
    pub retry: RetryPolicy,
    /// Longest wait for one answer; a call that takes longer is retried like a 5xx.
    pub request_timeout: Duration,
    /// Longest wait for a connection.
    pub connect_timeout: Duration,
}

impl GithubConfig {
    /// GitHub.com with default retries and timeouts.
    pub fn new(auth: GithubAuth) -> GithubConfig {
        GithubConfig {
            base_url: GITHUB_API.to_string(),
            auth,
            retry: RetryPolicy::default(),
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
        }
    }
}

/// The last rate-limit figures GitHub sent, shared by all calls.
#[derive(Clone, Copy, Debug, Default)]
struct Budget {
    remaining: Option<u64>,
    reset: Option<u64>,
}

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
        })
    }

    /// The client that acts on `repo`: the token client, or the App's installation client.
    async fn client_for(&self, repo: &Repo) -> Result<Arc<Octocrab>> {
        let Some(fixed) = self.app else {
            return Ok(Arc::clone(&self.client));
        };
        // One client per installation: a fixed one serves every owner.
        let key = if fixed.is_some() {
            ""
        } else {
            repo.owner.as_str()
        };
        let mut installations = self.installations.lock().await;
        if let Some(client) = installations.get(key) {
            return Ok(Arc::clone(client));
        }
        let id = match fixed {
            Some(id) => id,
            None => {
                #[derive(Deserialize)]
                struct Installation {
                    id: u64,
                }
                let path = format!("/repos/{}/installation", repo_path(repo));
                let text = self
                    .send_retrying(&self.client, Method::GET, &path, None)
                    .await?;
                parse::<Installation>(&Method::GET, &path, &text)?.id
            }
        };
        let client = Arc::new(
            self.client
                .installation(InstallationId(id))
                .map_err(|e| Error::Config(format!("GitHub App installation {id}: {e}")))?,
        );
        installations.insert(key.to_string(), Arc::clone(&client));
        Ok(client)
    }

    /// Sends one call for `repo` with retries; a non-2xx final answer is an [`Error::Api`].
    async fn call(
        &self,
        repo: &Repo,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<String> {
        let client = self.client_for(repo).await?;
        self.send_retrying(&client, method, path, body).await
    }

    /// [`GithubForge::call`] and parse the JSON answer.
    async fn call_json<T: DeserializeOwned>(
        &self,
        repo: &Repo,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<T> {
        let text = self.call(repo, method.clone(), path, body).await?;
        parse(&method, path, &text)
    }

    /// Reads all pages of a list call (`path` has no query string of its own but `query`).
    async fn call_pages<T: DeserializeOwned>(
        &self,
        repo: &Repo,
        path: &str,
        query: &str,
    ) -> Result<Vec<T>> {
        let mut all = Vec::new();
        for page in 1..=MAX_PAGES {
            let sep = if query.is_empty() { "" } else { "&" };
            let paged = format!("{path}?{query}{sep}per_page={PER_PAGE}&page={page}");
            let items: Vec<T> = self.call_json(repo, Method::GET, &paged, None).await?;
            let last = items.len() < PER_PAGE;
            all.extend(items);
            if last {
                break;
            }
        }
        Ok(all)
    }

    /// Waits while the last answer said the primary rate limit is exhausted.
    async fn wait_for_budget(&self, method: &Method, path: &str) -> Result<()> {
        let budget = *self.budget.lock().unwrap_or_else(|e| e.into_inner());
        if let (Some(0), Some(reset)) = (budget.remaining, budget.reset) {
            let now = now_ms();
            if reset * 1000 > now {
                let wait = retry::until_reset(reset, now);
                if wait > self.policy.max_rate_limit_wait {
                    return Err(Error::RateLimited {
                        method: method.to_string(),
                        path: path.to_string(),
                        wait,
                    });
                }
                tracing::info!(%method, path, wait_ms = wait.as_millis() as u64,
                    "GitHub rate limit exhausted; waiting for its reset");
                tokio::time::sleep(wait).await;
            }
        }
        Ok(())
    }

    fn note_budget(&self, rate: RateHeaders) {
        if rate.remaining.is_some() {
            let mut budget = self.budget.lock().unwrap_or_else(|e| e.into_inner());
            budget.remaining = rate.remaining;
            budget.reset = rate.reset;
        }
    }

    /// The retry loop around one request.
    async fn send_retrying(
        &self,
        client: &Octocrab,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<String> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            self.wait_for_budget(&method, path).await?;
            let sent = tokio::time::timeout(
                self.request_timeout,
                send_once(client, &method, path, body.as_ref()),
            )
            .await;
            let failure = match sent {
                Err(_) => format!("no answer within {:?}", self.request_timeout),
                Ok(Err(Sent::Transport(message))) => message,
                Ok(Err(Sent::Final(error))) => return Err(error),
                Ok(Ok((status, headers, text))) => {
                    let rate = rate_headers(&headers);
                    self.note_budget(rate);
                    let message = github_message(&text);
                    tracing::debug!(%method, path, status, attempt, "GitHub answered");
                    match retry::verdict(
                        status,
                        rate,
                        &message,
                        attempt,
                        now_ms(),
                        &self.policy,
                        retry::jitter(),
                    ) {
                        Verdict::Success => return Ok(text),
                        Verdict::Fail => {
                            return Err(Error::Api {
                                method: method.to_string(),
                                path: path.to_string(),
                                status,
                                message,
                            })
                        }
                        Verdict::RateLimited(wait) => {
                            return Err(Error::RateLimited {
                                method: method.to_string(),
                                path: path.to_string(),
                                wait,
                            })
                        }
                        Verdict::Retry(wait) => {
                            tracing::warn!(%method, path, status, attempt,
                                wait_ms = wait.as_millis() as u64, %message,
                                "GitHub call failed; retrying");
                            tokio::time::sleep(wait).await;
                            continue;
                        }
                    }
                }
            };
            if attempt >= self.policy.max_attempts {
                return Err(Error::Transport {
                    method: method.to_string(),
                    path: path.to_string(),
                    attempts: attempt,
                    message: failure,
                });
            }
            let wait = retry::backoff(&self.policy, attempt, retry::jitter());
            tracing::warn!(%method, path, attempt, wait_ms = wait.as_millis() as u64,
                error = %failure, "GitHub call got no answer; retrying");
            tokio::time::sleep(wait).await;
        }
    }
}

/// Why one send produced no HTTP answer.
enum Sent {
    /// Connection trouble: retried.
    Transport(String),
    /// An error retrying cannot fix (bad App key, bad URL, GitHub refusing the App token).
    Final(Error),
}

async fn send_once(
    client: &Octocrab,
    method: &Method,
    path: &str,
    body: Option<&Value>,
) -> std::result::Result<(u16, HeaderMap, String), Sent> {
    let response = match *method {
        Method::GET => client._get(path).await,
        Method::POST => client._post(path, body).await,
        Method::PATCH => client._patch(path, body).await,
        Method::PUT => client._put(path, body).await,
        Method::DELETE => client._delete(path, body).await,
        _ => {
            return Err(Sent::Final(Error::Invalid(format!(
                "method {method} is not used"
            ))))
        }
    };
    let response = response.map_err(|e| classify(method, path, e))?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = client
        .body_to_string(response)
        .await
        .map_err(|e| Sent::Transport(format!("reading the answer: {e}")))?;
    Ok((status, headers, text))
}

/// Sorts an octocrab error into retryable transport trouble and final errors.
fn classify(method: &Method, path: &str, error: octocrab::Error) -> Sent {
    match error {
        octocrab::Error::GitHub { source, .. } => {
            let status = source.status_code.as_u16();
            let error = Error::Api {
                method: method.to_string(),
                path: path.to_string(),
                status,
                message: format!("authenticating as the GitHub App: {}", source.message),
            };
            if status >= 500 {
                Sent::Transport(error.to_string())
            } else {
                Sent::Final(error)
            }
        }
        octocrab::Error::Service { source, .. } => Sent::Transport(source.to_string()),
        octocrab::Error::Hyper { source, .. } => Sent::Transport(source.to_string()),
        other => Sent::Final(Error::Config(format!("{method} {path}: {other}"))),
    }
}

fn rate_headers(headers: &HeaderMap) -> RateHeaders {
    let number = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    RateHeaders {
        retry_after: number("retry-after"),
        remaining: number("x-ratelimit-remaining"),
        reset: number("x-ratelimit-reset"),
    }
}

/// GitHub's `message` with its field errors, or the start of a body that is not GitHub's JSON.
fn github_message(text: &str) -> String {
    #[derive(Deserialize)]
    struct Body {
        message: Option<String>,
        #[serde(default)]
        errors: Vec<Value>,
    }
    match serde_json::from_str::<Body>(text) {
        Ok(Body {
            message: Some(message),
            errors,
        }) => {
            let details: Vec<String> = errors
                .iter()
                .map(|e| match e {
                    Value::String(s) => s.clone(),
                    Value::Object(o) => {
                        if let Some(Value::String(m)) = o.get("message") {
                            m.clone()
                        } else {
                            let get = |k: &str| o.get(k).and_then(Value::as_str).unwrap_or("");
                            format!("{} {} {}", get("resource"), get("field"), get("code"))
                                .trim()
                                .to_string()
                        }
                    }
                    other => other.to_string(),
                })
                .collect();
            if details.is_empty() {
                message
            } else {
                format!("{message} ({})", details.join("; "))
            }
        }
        _ => {
            let text = text.trim();
            if text.is_empty() {
                "(empty answer)".to_string()
            } else {
                text.chars().take(300).collect()
            }
        }
    }
}

fn parse<T: DeserializeOwned>(method: &Method, path: &str, text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|source| Error::Json {
        what: format!("the answer to {method} {path}"),
        source,
    })
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Percent-encodes one path segment or query value (everything but RFC 3986 unreserved).
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// `owner/name`, encoded for a path.
fn repo_path(repo: &Repo) -> String {
    format!("{}/{}", encode(&repo.owner), encode(&repo.name))
}

// GitHub's JSON, as far as the forge reads it. Optional where GitHub may send null.

#[derive(Deserialize)]
struct GhUser {
    login: String,
}

#[derive(Deserialize)]
struct GhRepository {
    full_name: String,
    clone_url: String,
    default_branch: String,
    html_url: String,
}

#[derive(Deserialize)]
struct GhLabel {
    name: String,
}

#[derive(Deserialize)]
struct GhIssue {
    number: u64,
    title: String,
    body: Option<String>,
    state: String,
    user: Option<GhUser>,
    #[serde(default)]
    labels: Vec<GhLabel>,
    #[serde(default)]
    assignees: Option<Vec<GhUser>>,
    html_url: String,
    pull_request: Option<Value>,
}

impl From<GhIssue> for Issue {
    fn from(i: GhIssue) -> Issue {
        Issue {
            number: i.number,
            title: i.title,
            body: i.body.unwrap_or_default(),
            state: i.state,
            author: i.user.map(|u| u.login).unwrap_or_default(),
            labels: i.labels.into_iter().map(|l| l.name).collect(),
            assignees: i
                .assignees
                .unwrap_or_default()
                .into_iter()
                .map(|u| u.login)
                .collect(),
            url: i.html_url,
            is_pull_request: i.pull_request.is_some(),
        }
    }
}

#[derive(Deserialize)]
struct GhComment {
    id: u64,
    user: Option<GhUser>,
    body: Option<String>,
    created_at: String,
    updated_at: String,
    html_url: String,
}

impl From<GhComment> for Comment {
    fn from(c: GhComment) -> Comment {
        Comment {
            id: c.id,
            author: c.user.map(|u| u.login).unwrap_or_default(),
            body: c.body.unwrap_or_default(),
            created_at: c.created_at,
            updated_at: c.updated_at,
            url: c.html_url,
        }
    }
}

#[derive(Deserialize)]
struct GhRef {
    #[serde(rename = "ref")]
    name: String,
    sha: String,
}

#[derive(Deserialize)]
struct GhPull {
    number: u64,
    title: String,
    body: Option<String>,
    state: String,
    #[serde(default)]
    draft: Option<bool>,
    #[serde(default)]
    merged: Option<bool>,
    merged_at: Option<String>,
    head: GhRef,
    base: GhRef,
    html_url: String,
}

impl From<GhPull> for PullRequest {
    fn from(p: GhPull) -> PullRequest {
        PullRequest {
            number: p.number,
            title: p.title,
            body: p.body.unwrap_or_default(),
            state: p.state,
            draft: p.draft.unwrap_or(false),
            merged: p.merged.unwrap_or(false) || p.merged_at.is_some(),
            head: p.head.name,
            head_sha: p.head.sha,
            base: p.base.name,
            url: p.html_url,
        }
    }
}

#[derive(Deserialize)]
struct GhReview {
    id: u64,
    user: Option<GhUser>,
    body: Option<String>,
    state: String,
    html_url: String,
}

impl From<GhReview> for Review {
    fn from(r: GhReview) -> Review {
        Review {
            id: r.id,
            author: r.user.map(|u| u.login).unwrap_or_default(),
            body: r.body.unwrap_or_default(),
            state: r.state,
            url: r.html_url,
        }
    }
}

#[derive(Deserialize)]
struct GhReviewComment {
    id: u64,
    pull_request_review_id: Option<u64>,
    user: Option<GhUser>,
    path: String,
    line: Option<u64>,
    body: String,
}

impl From<GhReviewComment> for ReviewComment {
    fn from(c: GhReviewComment) -> ReviewComment {
        ReviewComment {
            id: c.id,
            review_id: c.pull_request_review_id,
            author: c.user.map(|u| u.login).unwrap_or_default(),
            path: c.path,
            line: c.line,
            body: c.body,
        }
    }
}

#[derive(Deserialize)]
struct GhTag {
    name: String,
    commit: GhTagCommit,
}

#[derive(Deserialize)]
struct GhTagCommit {
    sha: String,
}

#[derive(Deserialize)]
struct GhCompare {
    total_commits: usize,
    commits: Vec<GhCommit>,
}

#[derive(Deserialize)]
struct GhCommit {
    sha: String,
    commit: GhCommitDetail,
    author: Option<GhUser>,
}

#[derive(Deserialize)]
struct GhCommitDetail {
    message: String,
    author: Option<GhGitAuthor>,
}

#[derive(Deserialize)]
struct GhGitAuthor {
    name: Option<String>,
}

#[derive(Deserialize)]
struct GhRelease {
    id: u64,
    tag_name: String,
    name: Option<String>,
    body: Option<String>,
    draft: bool,
    prerelease: bool,
    html_url: String,
}

impl From<GhRelease> for Release {
    fn from(r: GhRelease) -> Release {
        Release {
            id: r.id,
            tag: r.tag_name,
            name: r.name.unwrap_or_default(),
            body: r.body.unwrap_or_default(),
            draft: r.draft,
            prerelease: r.prerelease,
            url: r.html_url,
        }
    }
}

fn release_body(new: &NewRelease) -> Value {
    json!({
        "tag_name": new.tag,
        "name": new.name,
        "body": new.body,
        "draft": new.draft,
        "prerelease": new.prerelease,
    })
}

impl Forge for GithubForge {
    fn kind(&self) -> &'static str {
        "github"
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_encoded() {
        assert_eq!(encode("a b/c?d#e"), "a%20b%2Fc%3Fd%23e");
        assert_eq!(encode("v1.2.3-rc_1~x"), "v1.2.3-rc_1~x");
    }

    #[test]
    fn messages_carry_field_errors() {
        let body = r#"{"message":"Validation Failed","errors":[{"resource":"PullRequest","field":"head","code":"invalid"},{"message":"A pull request already exists"}]}"#;
        assert_eq!(
            github_message(body),
            "Validation Failed (PullRequest head invalid; A pull request already exists)"
        );
        assert_eq!(github_message(r#"{"message":"Not Found"}"#), "Not Found");
        assert_eq!(
            github_message("<html>bad gateway</html>"),
            "<html>bad gateway</html>"
        );
        assert_eq!(github_message(""), "(empty answer)");
    }

    #[tokio::test]
    async fn debug_never_shows_the_token() {
        let auth = GithubAuth::Token("ghp_supersecret123".to_string().into());
        let forge = GithubForge::new(GithubConfig::new(auth.clone())).unwrap();
        let shown = format!("{forge:?} {auth:?} {:?}", GithubConfig::new(auth.clone()));
        assert!(!shown.contains("supersecret"), "{shown}");
    }
}
