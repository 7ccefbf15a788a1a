//! One interface for every command, over either a local engine (the CLI opened the store
//! itself) or a running daemon (reached over its HTTP API on loopback with the admin
//! token from the data dir). Both end in the same `Engine` methods.

use std::path::Path;
use std::time::Duration;

use baton_actors::store::BackupStats;
use baton_actors::{
    Definition, Engine, Error as EngineError, Event, Interface, Provenance, RollbackMode,
    RollbackRequest, RunFilter, RunStatus, Subject,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::view::{RunView, WorkflowView};

/// What kind of failure a command met: it decides the exit code and the HTTP status, so
/// neither is read back from the message's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// Bad usage or bad input: exit 2, HTTP 400.
    Usage,
    /// No such run (from a daemon: whatever it answered 404 for): exit 2, HTTP 404.
    NotFound,
    /// The command does not fit the run's state and nothing was changed: exit 2, HTTP 409.
    WrongState,
    /// A failure of baton or of what it talks to: exit 1, HTTP 500.
    Internal,
}

/// A failure a command reports, in the words the user sees.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    /// What kind: usage kinds exit 2, the rest 1.
    pub kind: FailureKind,
    /// What went wrong.
    pub message: String,
}

impl Failure {
    /// A usage error.
    pub fn usage(message: impl Into<String>) -> Self {
        Failure {
            kind: FailureKind::Usage,
            message: message.into(),
        }
    }
    /// Any other failure.
    pub fn other(message: impl Into<String>) -> Self {
        Failure {
            kind: FailureKind::Internal,
            message: message.into(),
        }
    }
    /// Bad usage or bad input (exit 2), rather than a failure of baton (exit 1).
    pub fn is_usage(&self) -> bool {
        self.kind != FailureKind::Internal
    }
    /// The process's exit code for it: 2 for usage, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        if self.is_usage() {
            2
        } else {
            1
        }
    }
    /// The HTTP status the API and the admin UI answer it with.
    pub fn http_status(&self) -> reqwest::StatusCode {
        match self.kind {
            FailureKind::Usage => reqwest::StatusCode::BAD_REQUEST,
            FailureKind::NotFound => reqwest::StatusCode::NOT_FOUND,
            FailureKind::WrongState => reqwest::StatusCode::CONFLICT,
            FailureKind::Internal => reqwest::StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<EngineError> for Failure {
    fn from(e: EngineError) -> Self {
        let kind = match &e {
            EngineError::UnknownRun(_) => FailureKind::NotFound,
            EngineError::WrongState { .. } => FailureKind::WrongState,
            e if e.is_usage() => FailureKind::Usage,
            _ => FailureKind::Internal,
        };
        Failure {
            kind,
            message: e.to_string(),
        }
    }
}

impl std::error::Error for Failure {}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// A control command, as the CLI, the API and chat send it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Command {
    /// Deliver a named signal.
    Signal {
        /// Name.
        name: String,
        /// Payload.
        #[serde(default)]
        data: Value,
    },
    /// Approve the current wait.
    Approve,
    /// Reject the current wait.
    Reject,
    /// Run the failed step again.
    Retry,
    /// Skip the failed or waiting step.
    Skip,
    /// Cancel the run.
    Cancel,
    /// Abort the run.
    Abort {
        /// What to undo (default: the workflow's `rollback_on_abort`).
        #[serde(default)]
        mode: Option<RollbackMode>,
    },
    /// Roll back: `{"mode": "soft"|"hard"}` or `{"steps": N}`.
    Rollback(RollbackRequest),
}

impl Command {
    /// The verb, as in `POST /api/runs/{id}/{verb}`.
    pub fn verb(&self) -> &'static str {
        match self {
            Command::Signal { .. } => "signal",
            Command::Approve => "approve",
            Command::Reject => "reject",
            Command::Retry => "retry",
            Command::Skip => "skip",
            Command::Cancel => "cancel",
            Command::Abort { .. } => "abort",
            Command::Rollback(_) => "rollback",
        }
    }

    /// Carries the command out on an engine.
    pub async fn apply(&self, engine: &Engine, run: &str, by: &str) -> Result<(), Failure> {
        match self {
            Command::Signal { name, data } => engine.signal(run, name, data.clone()).await?,
            Command::Approve => engine.approve(run, by).await?,
            Command::Reject => engine.reject(run, by).await?,
            Command::Retry => engine.retry(run, by).await?,
            Command::Skip => engine.skip(run, by).await?,
            Command::Cancel => engine.cancel(run, by).await?,
            Command::Abort { mode } => engine.abort(run, *mode, by).await?,
            Command::Rollback(request) => engine.rollback(run, *request, by).await?,
        }
        Ok(())
    }
}

/// What `POST /api/runs` takes.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct StartRequest {
    /// Workflow id (of a registered or stored workflow).
    pub workflow: String,
    /// A definition to register first (what `baton run FILE` sends).
    #[serde(default)]
    pub definition: Option<Definition>,
    /// Where the definition came from, for error messages.
    #[serde(default)]
    pub origin: Option<String>,
    /// Input.
    #[serde(default)]
    pub input: Map<String, Value>,
}

/// How a definition sent with a start came in: the interface, and the client's address for
/// the API. Recorded with the definition ([`baton_actors::Provenance`]).
#[derive(Debug, Clone)]
pub struct Registrar {
    /// The interface.
    pub via: Interface,
    /// The API client's address.
    pub client: Option<String>,
}

impl Registrar {
    /// A workflow file read by this process.
    pub fn file() -> Self {
        Registrar {
            via: Interface::File,
            client: None,
        }
    }

    /// The API, from `client`.
    pub fn api(client: Option<String>) -> Self {
        Registrar {
            via: Interface::Api,
            client,
        }
    }

    fn provenance(&self, origin: &str) -> Provenance {
        let provenance = Provenance::now(self.via, origin);
        match &self.client {
            Some(client) => provenance.from_client(client.clone()),
            None => provenance,
        }
    }
}

/// Starts a run on a local engine: registers the definition if one is given, as having
/// come in through `registrar`.
pub async fn start_local(
    engine: &Engine,
    req: StartRequest,
    source: &str,
    registrar: &Registrar,
) -> Result<String, Failure> {
    let job = baton_actors::Job {
        id: format!("{source}:{}", baton_actors::engine::new_run_id()),
        source: source.to_string(),
        event: "run".into(),
        sender: whoami(),
        ..Default::default()
    };
    start_job(engine, req, job, registrar).await
}

/// Starts a run on a local engine for `job` (who asked, from where): registers the
/// definition if one is given, as having come in through `registrar` (a built-in's id is
/// refused). Every way of starting a run ends here or in the webhook's jobs.
pub async fn start_job(
    engine: &Engine,
    req: StartRequest,
    job: baton_actors::Job,
    registrar: &Registrar,
) -> Result<String, Failure> {
    if let Some(def) = req.definition {
        let origin = req.origin.unwrap_or_else(|| format!("workflow {}", def.id));
        engine
            .register_workflow_from(def, registrar.provenance(&origin))
            .await?;
    }
    Ok(engine.start(&req.workflow, req.input, Some(job)).await?)
}

/// Who is at the keyboard, for "approved by".
pub fn whoami() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "cli".into())
}

/// The daemon's files in the data dir.
pub const ADDR_FILE: &str = "baton.addr";
/// The admin token file (mode 0600).
pub const TOKEN_FILE: &str = "admin.token";

/// A client for a running daemon.
#[derive(Clone)]
pub struct Client {
    base: String,
    token: String,
    http: reqwest::Client,
    /// The data dir the daemon was found through.
    data_dir: std::path::PathBuf,
}

/// An error body from the API.
#[derive(Deserialize)]
struct ApiError {
    error: String,
}

impl Client {
    /// Connects to the daemon serving `data_dir`, if one answers.
    pub async fn discover(data_dir: &Path) -> Option<Client> {
        let addr = std::fs::read_to_string(data_dir.join(ADDR_FILE)).ok()?;
        let token = std::fs::read_to_string(data_dir.join(TOKEN_FILE)).ok()?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .no_proxy()
            .build()
            .ok()?;
        let base = format!("http://{}", addr.trim());
        let ok = http
            .get(format!("{base}/healthz"))
            .timeout(Duration::from_secs(3))
            .send()
            .await
            .ok()?
            .status()
            .is_success();
        ok.then(|| Client {
            base,
            token: token.trim().to_string(),
            http,
            data_dir: data_dir.to_path_buf(),
        })
    }

    async fn send<T: for<'de> Deserialize<'de>>(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<T, Failure> {
        let resp = req
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| Failure::other(format!("daemon at {}: {e}", self.base)))?;
        self.body(resp).await
    }

    /// A response's JSON body, or the API's error as a [`Failure`].
    async fn body<T: for<'de> Deserialize<'de>>(
        &self,
        resp: reqwest::Response,
    ) -> Result<T, Failure> {
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| Failure::other(format!("daemon at {}: {e}", self.base)))?;
        if status.is_success() {
            return serde_json::from_slice(&bytes)
                .map_err(|e| Failure::other(format!("daemon at {}: bad answer: {e}", self.base)));
        }
        let message = serde_json::from_slice::<ApiError>(&bytes)
            .map(|e| e.error)
            .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).into_owned());
        let kind = match status {
            reqwest::StatusCode::NOT_FOUND => FailureKind::NotFound,
            reqwest::StatusCode::CONFLICT => FailureKind::WrongState,
            s if s.is_client_error() => FailureKind::Usage,
            _ => FailureKind::Internal,
        };
        Err(Failure { kind, message })
    }

    fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.http.get(format!("{}{path}", self.base))
    }

    /// `POST /api/ci/{event}`: tells the daemon of CI news (`payload` shaped like GitHub's
    /// delivery of `event`), so a run waiting on that commit reads its checks at once. The
    /// answer says whether one was waiting (`woke`).
    pub async fn ci_news(&self, event: &str, payload: &Value) -> Result<Value, Failure> {
        self.send(self.post(&format!("/api/ci/{event}")).json(payload))
            .await
    }

    fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.http.post(format!("{}{path}", self.base))
    }
}

/// Where commands go.
pub enum Backend {
    /// The store opened in this process.
    Local(Engine),
    /// A running daemon.
    Remote(Client),
}

/// `{id}` answers.
#[derive(Serialize, Deserialize)]
pub struct Created {
    /// The new run's id.
    pub id: String,
}

impl Backend {
    /// Starts a run.
    pub async fn start(&self, req: StartRequest) -> Result<String, Failure> {
        match self {
            Backend::Local(engine) => start_local(engine, req, "cli", &Registrar::file()).await,
            Backend::Remote(c) => Ok(c.send::<Created>(c.post("/api/runs").json(&req)).await?.id),
        }
    }

    /// Applies `[retention]` (`baton gc`): here, or in the daemon that holds the store, which
    /// applies its own `[retention]`.
    pub async fn gc(
        &self,
        retention: &crate::gc::Retention,
        dry_run: bool,
    ) -> Result<crate::gc::Report, Failure> {
        match self {
            Backend::Local(engine) => {
                let dir = engine.dir().to_path_buf();
                crate::gc::collect(engine, &dir, retention, dry_run)
                    .await
                    .map_err(|e| Failure::other(e.to_string()))
            }
            Backend::Remote(c) => c.send(c.post(&format!("/api/gc?dry_run={dry_run}"))).await,
        }
    }

    /// Writes a consistent copy of the store to `file` (`baton backup`): here, or by the
    /// daemon that holds the store, which writes the file on its host (the same one, as the
    /// CLI finds the daemon through the data dir).
    pub async fn backup(&self, file: &Path) -> Result<BackupStats, Failure> {
        match self {
            Backend::Local(engine) => engine.backup(file).await.map_err(Failure::from),
            Backend::Remote(c) => {
                // The daemon writes only under its data dir's `backups/`; the file is then
                // moved where it was asked for (this CLI runs on the daemon's host, as it
                // found the daemon through the data dir).
                let name = format!(
                    "cli-{}-{:08x}.backup",
                    std::process::id(),
                    fastrand::u32(..)
                );
                let body = serde_json::json!({ "name": name });
                let stats: BackupStats = c.send(c.post("/api/backup").json(&body)).await?;
                let written = c.data_dir.join(crate::daemon::BACKUP_DIR).join(&name);
                move_file(&written, file).map_err(|e| {
                    Failure::other(format!(
                        "the daemon wrote the backup to {}, but it cannot be moved to {}: {e}",
                        written.display(),
                        file.display()
                    ))
                })?;
                Ok(stats)
            }
        }
    }

    /// What the agents spent (`baton spending`, under `baton runs`): the daemon's count and
    /// caps when one runs.
    pub async fn spending(
        &self,
        limits: &crate::config::LimitsSection,
    ) -> Result<crate::spending::Spending, Failure> {
        match self {
            Backend::Local(engine) => {
                crate::spending::measure(engine, limits).map_err(Failure::from)
            }
            Backend::Remote(c) => c.send(c.get("/api/spending")).await,
        }
    }

    /// Sends a control command.
    pub async fn command(&self, run: &str, cmd: Command) -> Result<(), Failure> {
        match self {
            Backend::Local(engine) => cmd.apply(engine, run, &whoami()).await,
            Backend::Remote(c) => {
                let path = match &cmd {
                    Command::Signal { name, .. } => format!("/api/runs/{run}/signal/{name}"),
                    other => format!("/api/runs/{run}/{}", other.verb()),
                };
                let body = match &cmd {
                    Command::Signal { data, .. } => data.clone(),
                    other => serde_json::to_value(other).unwrap_or_default(),
                };
                c.send::<Value>(c.post(&path).json(&body).header("x-baton-user", whoami()))
                    .await
                    .map(|_| ())
            }
        }
    }

    /// A run with its steps and changes.
    pub async fn run(&self, id: &str) -> Result<RunView, Failure> {
        match self {
            Backend::Local(engine) => {
                Ok(RunView::of(engine, &engine.run(id)?, engine.changes(id)?))
            }
            Backend::Remote(c) => c.send(c.get(&format!("/api/runs/{id}"))).await,
        }
    }

    /// The runs about `subject` (a repository, or an issue or pull request of it), newest
    /// first: the engine's index, not a scan of every run.
    pub async fn runs_about(&self, subject: &Subject) -> Result<Vec<RunView>, Failure> {
        match self {
            Backend::Local(engine) => Ok(engine
                .runs_about(subject)?
                .iter()
                .map(|r| RunView::of(engine, r, Vec::new()))
                .collect()),
            Backend::Remote(c) => {
                c.send(c.get("/api/runs/about").query(&subject_query(subject)))
                    .await
            }
        }
    }

    /// The newest unfinished run of `workflow` about `subject`, if any (the engine's index).
    /// Every command that refuses a second run in flight asks this.
    pub async fn in_flight(
        &self,
        workflow: &str,
        subject: &Subject,
    ) -> Result<Option<RunView>, Failure> {
        match self {
            Backend::Local(engine) => Ok(engine
                .in_flight(workflow, subject)?
                .map(|r| RunView::of(engine, &r, Vec::new()))),
            Backend::Remote(c) => {
                let mut query = subject_query(subject);
                query.push(("workflow", workflow.to_string()));
                c.send(c.get("/api/runs/in_flight").query(&query)).await
            }
        }
    }

    /// Runs matching the filter, newest first.
    pub async fn runs(
        &self,
        status: Option<RunStatus>,
        workflow: Option<String>,
    ) -> Result<Vec<RunView>, Failure> {
        match self {
            Backend::Local(engine) => {
                let filter = RunFilter { status, workflow };
                Ok(engine
                    .runs(&filter)?
                    .iter()
                    .map(|r| RunView::of(engine, r, Vec::new()))
                    .collect())
            }
            Backend::Remote(c) => {
                let mut query = Vec::new();
                if let Some(s) = status {
                    query.push(("status", s.to_string()));
                }
                if let Some(w) = workflow {
                    query.push(("workflow", w));
                }
                // Every page, of the daemon's default size: callers (the in-flight check,
                // `baton runs`) need every run.
                let mut all: Vec<RunView> = Vec::new();
                let mut url = reqwest::Url::parse(&c.base)
                    .map_err(|e| Failure::other(format!("daemon at {}: {e}", c.base)))?;
                url.query_pairs_mut().extend_pairs(&query);
                let mut next = Some(format!("/api/runs?{}", url.query().unwrap_or_default()));
                while let Some(path) = next.take() {
                    let resp = c
                        .http
                        .get(format!("{}{path}", c.base))
                        .bearer_auth(&c.token)
                        .send()
                        .await
                        .map_err(|e| Failure::other(format!("GET {path}: {e}")))?;
                    next = next_link(resp.headers());
                    all.extend(c.body::<Vec<RunView>>(resp).await?);
                }
                Ok(all)
            }
        }
    }

    /// Events after `since`, waiting up to `wait` for the first one.
    pub async fn events(
        &self,
        run: &str,
        since: u64,
        wait: Duration,
    ) -> Result<Vec<Event>, Failure> {
        match self {
            Backend::Local(engine) => Ok(events_wait(engine, run, since, wait).await?),
            Backend::Remote(c) => {
                let path = format!("/api/runs/{run}/events");
                let query = [("since", since), ("wait_ms", wait.as_millis() as u64)];
                c.send(
                    c.get(&path)
                        .query(&query)
                        .timeout(wait + Duration::from_secs(10)),
                )
                .await
            }
        }
    }

    /// Known workflows.
    pub async fn workflows(&self) -> Result<Vec<WorkflowView>, Failure> {
        match self {
            Backend::Local(engine) => Ok(engine
                .workflows()?
                .iter()
                .map(|w| WorkflowView::new(w))
                .collect()),
            Backend::Remote(c) => c.send(c.get("/api/workflows")).await,
        }
    }

    /// Drives unfinished runs (all, or one).
    pub async fn resume(&self, run: Option<&str>) -> Result<baton_actors::ResumeReport, Failure> {
        match self {
            Backend::Local(engine) => Ok(match run {
                Some(r) => engine.resume_run(r).await?,
                None => engine.resume().await?,
            }),
            Backend::Remote(c) => {
                let body = serde_json::json!({ "run": run });
                c.send(c.post("/api/resume").json(&body)).await
            }
        }
    }
}

/// Events after `since`; if there are none yet, waits up to `wait` for one.
pub async fn events_wait(
    engine: &Engine,
    run: &str,
    since: u64,
    wait: Duration,
) -> Result<Vec<Event>, EngineError> {
    let mut sub = engine.subscribe();
    let events = engine.events(run, since)?;
    if !events.is_empty() || wait.is_zero() {
        return Ok(events);
    }
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, sub.next()).await {
            Ok(Some(n)) if n.run().is_none_or(|r| r == run) => return engine.events(run, since),
            Ok(Some(_)) => continue,
            Ok(None) | Err(_) => return engine.events(run, since),
        }
    }
}

/// The path of a `Link: <…>; rel="next"` header, if the answer has one.
fn next_link(headers: &reqwest::header::HeaderMap) -> Option<String> {
    let link = headers.get(reqwest::header::LINK)?.to_str().ok()?;
    link.split(',').find_map(|part| {
        let (target, params) = part.trim().split_once(';')?;
        let is_next = params
            .split(';')
            .any(|p| p.trim().eq_ignore_ascii_case("rel=\"next\""));
        let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
        // Only a path on this daemon: a header never sends the token elsewhere.
        (is_next && target.starts_with('/') && !target.starts_with("//"))
            .then(|| target.to_string())
    })
}

/// Moves `from` to `to`: a rename, or a copy (owner-only) and a removal across file systems.
fn move_file(from: &Path, to: &Path) -> std::io::Result<()> {
    match std::fs::rename(from, to) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
            use std::os::unix::fs::OpenOptionsExt;
            let mut src = std::fs::File::open(from)?;
            let mut dst = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(to)?;
            std::io::copy(&mut src, &mut dst)?;
            dst.sync_all()?;
            std::fs::remove_file(from)
        }
        Err(e) => Err(e),
    }
}

/// The query naming `subject` in `GET /api/runs/about` and `GET /api/runs/in_flight`.
fn subject_query(subject: &Subject) -> Vec<(&'static str, String)> {
    let mut query = vec![("repo", subject.repo.clone())];
    if let Some(n) = subject.number {
        query.push(("number", n.to_string()));
        query.push(("kind", subject.kind.as_str().to_string()));
    }
    query
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn engine_errors_become_exit_codes_and_statuses_by_variant() {
        let cases = [
            (EngineError::UnknownRun("run_1".into()), 2, 404),
            (
                EngineError::WrongState {
                    run: "run_1".into(),
                    status: "completed".into(),
                    message: "it has ended".into(),
                },
                2,
                409,
            ),
            (EngineError::UnknownWorkflow("wf".into()), 2, 400),
            (
                EngineError::Io {
                    path: "/data".into(),
                    source: std::io::Error::other("disk full"),
                },
                1,
                500,
            ),
        ];
        for (error, exit, status) in cases {
            let words = error.to_string();
            let failure = Failure::from(error);
            assert_eq!(failure.message, words);
            assert_eq!(failure.exit_code(), exit, "{words}");
            assert_eq!(failure.http_status().as_u16(), status, "{words}");
        }
        assert_eq!(Failure::usage("bad flag").exit_code(), 2);
        assert_eq!(Failure::other("daemon gone").http_status().as_u16(), 500);
    }

    #[test]
    fn api_bodies_become_commands() {
        let parse = |v: Value| serde_json::from_value::<Command>(v);
        assert_eq!(
            parse(json!({"command": "rollback", "mode": "hard"})).unwrap(),
            Command::Rollback(RollbackRequest::Hard)
        );
        assert_eq!(
            parse(json!({"command": "rollback", "steps": 2})).unwrap(),
            Command::Rollback(RollbackRequest::Steps(2))
        );
        let both = parse(json!({"command": "rollback", "mode": "hard", "steps": 2}));
        assert!(both.unwrap_err().to_string().contains("not both"));
        assert!(parse(json!({"command": "rollback"})).is_err());
        assert_eq!(
            parse(json!({"command": "abort", "mode": "hard"})).unwrap(),
            Command::Abort {
                mode: Some(RollbackMode::Hard)
            }
        );
        let back = serde_json::to_value(Command::Rollback(RollbackRequest::Steps(3))).unwrap();
        assert_eq!(back, json!({"command": "rollback", "steps": 3}));
    }
}
