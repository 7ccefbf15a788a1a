//! `baton serve`: the daemon. It resumes unfinished runs, serves the JSON API, server-sent
//! events and `/metrics` on loopback by default, and writes its address and an admin token
//! (mode 0600) into the data dir so the CLI on this machine can reach it (`BATON_ADMIN_TOKEN`
//! fixes the token). The admin UI (`web::ui`) is merged in next to the API.
//!
//! Every API route calls the same `Engine` methods as the CLI. The API takes the admin
//! token as `Authorization: Bearer`, compared in constant time. `POST /webhooks/github` takes
//! only GitHub's signature: it is mounted when a webhook secret is configured, and answers 503
//! otherwise (an unsigned delivery is never accepted).

use std::convert::Infallible;
use std::future::Future;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Path as UrlPath, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use baton_actors::subject;
use baton_actors::{Engine, Error as EngineError, RunStatus, Subject, SubjectKind};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::backend::{self, Command, Failure, StartRequest, ADDR_FILE, TOKEN_FILE};
use crate::ci::wake::CiWakes;
use crate::forge::Forge;
use crate::view::{RunView, WorkflowView};
use crate::web::jobs::EngineJobs;
use crate::web::throttle::{self, Door, Throttle};
use crate::web::webhook::{self, Webhook, WebhookOptions};

/// How long `serve` waits, at shutdown, for accepted deliveries to reach the engine.
const WEBHOOK_DRAIN: Duration = Duration::from_secs(10);

/// The GitHub webhook listener of `baton serve`.
pub struct WebhookSetup {
    /// Secret, triggers and sender policy.
    pub options: WebhookOptions,
    /// The forge that answers permission checks (and posts the configured denial reply).
    pub forge: Arc<dyn Forge>,
    /// Where a trigger's workflow is found when the store does not know it yet.
    pub workflow_dirs: Vec<PathBuf>,
    /// `[workflows.issue_to_pr] delete_branch_on_merge`.
    pub delete_branch_on_merge: bool,
}

#[derive(Clone)]
struct App {
    engine: Engine,
    token: String,
    /// `[retention]`, for `POST /api/gc` and the daily pass.
    retention: Arc<crate::gc::Retention>,
    /// `[limits]`, for `GET /api/spending`.
    limits: Arc<crate::config::LimitsSection>,
    /// Failed authentications per address, shared with the UI's login.
    throttle: Throttle,
    /// `[server] metrics_auth`: `/metrics` behind the admin token.
    metrics_auth: bool,
    /// Runs waiting for CI, woken by `POST /api/ci/{event}`.
    ci_wakes: CiWakes,
}

/// An API error: 4xx for the caller's mistakes, 5xx for ours, always `{"error": "..."}`.
struct ApiError(StatusCode, String);

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        let status = match &e {
            EngineError::UnknownRun(_) | EngineError::UnknownWorkflow(_) => StatusCode::NOT_FOUND,
            EngineError::WrongState { .. } => StatusCode::CONFLICT,
            e if e.is_usage() => StatusCode::BAD_REQUEST,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError(status, e.to_string())
    }
}

impl From<Failure> for ApiError {
    fn from(f: Failure) -> Self {
        ApiError(f.http_status(), f.message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

type ApiResult<T> = Result<Json<T>, ApiError>;

async fn require_token(State(app): State<App>, req: Request, next: Next) -> Response {
    let client = throttle::client_ip(req.extensions());
    if let Some(wait) = app.throttle.wait(client) {
        let mut resp = ApiError(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "too many failed admin token checks from {client}; try again in {} s",
                throttle::retry_after(wait)
            ),
        )
        .into_response();
        if let Ok(v) = header::HeaderValue::from_str(&throttle::retry_after(wait)) {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return resp;
    }
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if !crate::web::token::same(given.as_bytes(), app.token.as_bytes()) {
        // A request without the header is not a guess (a browser, a scraper not set up yet).
        if req.headers().contains_key(header::AUTHORIZATION) {
            app.throttle.failed(client, Door::Api);
        }
        return ApiError(
            StatusCode::UNAUTHORIZED,
            "missing or wrong admin token (Authorization: Bearer <data dir>/admin.token)".into(),
        )
        .into_response();
    }
    app.throttle.succeeded(client);
    next.run(req).await
}

/// The router, for tests and for `serve`.
fn router(app: App) -> Router {
    let api = Router::new()
        .route("/api/workflows", get(workflows))
        .route("/api/runs", get(list_runs).post(start_run))
        .route("/api/runs/about", get(runs_about))
        .route("/api/runs/in_flight", get(run_in_flight))
        .route("/api/runs/{id}", get(show_run))
        .route("/api/runs/{id}/events", get(run_events))
        .route("/api/runs/{id}/signal/{name}", post(signal_run))
        .route("/api/runs/{id}/{verb}", post(command_run))
        .route("/api/resume", post(resume))
        .route("/api/gc", post(gc))
        .route("/api/backup", post(backup))
        .route("/api/spending", get(spending))
        .route("/api/ci/{event}", post(ci_news))
        .route("/api/events", get(sse));
    // `/metrics` is open on loopback by default, like most exporters; `metrics_auth` puts it
    // behind the token (Prometheus sends it with `authorization: {credentials: …}`).
    let (api, open) = if app.metrics_auth {
        (api.route("/metrics", get(metrics)), Router::new())
    } else {
        (api, Router::new().route("/metrics", get(metrics)))
    };
    let api = api.layer(middleware::from_fn_with_state(app.clone(), require_token));
    open.route("/healthz", get(healthz))
        .merge(api)
        .with_state(app)
}

#[derive(Deserialize)]
struct GcQuery {
    #[serde(default)]
    dry_run: bool,
}

/// `POST /api/gc[?dry_run=true]`: `baton gc` through the daemon that holds the store.
async fn gc(State(app): State<App>, Query(q): Query<GcQuery>) -> Response {
    let dir = app.engine.dir().to_path_buf();
    match crate::gc::collect(&app.engine, &dir, &app.retention, q.dry_run).await {
        Ok(report) => Json(report).into_response(),
        Err(e) => ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BackupRequest {
    /// The file's name under `<data dir>/backups/`.
    name: String,
}

/// `POST /api/backup {"name"}`: `baton backup` through the daemon that holds the store. The
/// file is written under `<data dir>/backups/` (0700, the file 0600), under the store's
/// commit gate (commits wait): a token holder cannot make the daemon write anywhere else.
async fn backup(
    State(app): State<App>,
    body: Result<Json<BackupRequest>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<baton_actors::store::BackupStats> {
    let Json(req) = body.map_err(|e| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("{} (send {{\"name\": \"FILE\"}}: a file name, written under <data dir>/{BACKUP_DIR}/)", e.body_text()),
        )
    })?;
    let name = backup_name(&req.name).map_err(|e| ApiError(StatusCode::BAD_REQUEST, e))?;
    let dir = app.engine.dir().join(BACKUP_DIR);
    baton_actors::store::private_dir(&dir)?;
    Ok(Json(app.engine.backup(&dir.join(name)).await?))
}

/// Where the daemon writes the backups asked of it through the API, under the data dir.
pub const BACKUP_DIR: &str = "backups";

/// `name` when it is a plain file name: letters, digits, `.`, `_`, `-`, not starting with a
/// dot, at most 128 characters.
pub fn backup_name(name: &str) -> Result<&str, String> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(name)
    } else {
        Err(format!(
            "backup name {name:?} is not a plain file name (letters, digits, `.`, `_`, `-`; up to 128; not starting with `.`): the daemon writes backups under <data dir>/{BACKUP_DIR}/ only"
        ))
    }
}

/// `GET /api/spending`: what the agents spent today per repository and this month, with the
/// daemon's caps.
async fn spending(State(app): State<App>) -> ApiResult<crate::spending::Spending> {
    let engine = app.engine.clone();
    let limits = app.limits.clone();
    let spent = tokio::task::spawn_blocking(move || crate::spending::measure(&engine, &limits))
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("spending: {e}")))??;
    Ok(Json(spent))
}

async fn healthz() -> Json<Value> {
    // Probed at start; a later answer is the cached one.
    let sandbox = crate::sandbox::availability();
    // No pid: it helps only someone aiming at the process.
    Json(json!({
        "ok": true,
        "sandbox": {
            "works": sandbox.works,
            "detail": sandbox.detail,
            "limits": sandbox.limits,
            "mode": crate::sandbox::settings().mode,
        },
    }))
}

async fn workflows(State(app): State<App>) -> ApiResult<Vec<WorkflowView>> {
    Ok(Json(
        app.engine
            .workflows()?
            .iter()
            .map(|w| WorkflowView::new(w))
            .collect(),
    ))
}

#[derive(Deserialize)]
struct ListQuery {
    status: Option<String>,
    workflow: Option<String>,
    /// Runs per page: [`DEFAULT_PAGE`] unless given, at most [`MAX_PAGE`].
    limit: Option<String>,
    /// Where the next page starts, from the previous page's `Link: …; rel="next"`.
    cursor: Option<String>,
}

/// Runs per page of `GET /api/runs` unless `limit` says.
pub const DEFAULT_PAGE: usize = 100;
/// The most `limit` may ask for.
pub const MAX_PAGE: usize = 1000;

/// Where a page of `GET /api/runs` starts: how many runs came before it, and how many matched
/// when the first page was read. Runs started since sit above it (newest first), so the
/// offset moves down by as many. Opaque to clients: hex of `offset.total`.
struct Cursor {
    offset: usize,
    total: usize,
}

impl Cursor {
    fn encode(&self) -> String {
        hex::encode(format!("{}.{}", self.offset, self.total))
    }

    fn decode(text: &str) -> Option<Cursor> {
        let raw = String::from_utf8(hex::decode(text).ok()?).ok()?;
        let (offset, total) = raw.split_once('.')?;
        Some(Cursor {
            offset: offset.parse().ok()?,
            total: total.parse().ok()?,
        })
    }
}

/// `GET /api/runs`: one page, newest first, read through the run index. The body is the
/// page's runs; `Link: <…>; rel="next"` names the next page while there is one (as GitHub's
/// API does), and `X-Total-Count` says how many match.
async fn list_runs(
    State(app): State<App>,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let bad = |m: String| ApiError(StatusCode::BAD_REQUEST, m);
    let status = match &q.status {
        Some(s) => Some(s.parse::<RunStatus>().map_err(|e| bad(e.to_string()))?),
        None => None,
    };
    let limit = match q.limit.as_deref() {
        None => DEFAULT_PAGE,
        Some(text) => match text.trim().parse::<usize>() {
            Ok(n) if (1..=MAX_PAGE).contains(&n) => n,
            _ => {
                return Err(bad(format!(
                    "limit {text:?} is not a number from 1 to {MAX_PAGE}"
                )))
            }
        },
    };
    let filter = baton_actors::RunFilter {
        status,
        workflow: q.workflow.clone(),
    };
    let cursor = match q.cursor.as_deref() {
        None => None,
        Some(text) => Some(Cursor::decode(text).ok_or_else(|| {
            bad(format!(
                "cursor {text:?} is not one this API gave; start again without it"
            ))
        })?),
    };
    let engine = app.engine.clone();
    let (runs, total) = {
        let (offset, then) = cursor
            .as_ref()
            .map_or((0, None), |c| (c.offset, Some(c.total)));
        let probe = engine.runs_page(&filter, 0, 0)?.1;
        let offset = offset + then.map_or(0, |t| probe.saturating_sub(t));
        let (runs, total) = engine.runs_page(&filter, offset, limit)?;
        let next = (offset + runs.len() < total).then(|| Cursor {
            offset: offset + runs.len(),
            total,
        });
        ((runs, next), total)
    };
    let (runs, next) = runs;
    let views: Vec<RunView> = runs
        .iter()
        .map(|r| RunView::of(&app.engine, r, Vec::new()))
        .collect();
    let mut resp = Json(views).into_response();
    let headers = resp.headers_mut();
    if let Ok(v) = header::HeaderValue::from_str(&total.to_string()) {
        headers.insert("x-total-count", v);
    }
    if let Some(next) = next {
        let mut query = vec![("limit", limit.to_string()), ("cursor", next.encode())];
        if let Some(s) = &q.status {
            query.push(("status", s.clone()));
        }
        if let Some(w) = &q.workflow {
            query.push(("workflow", w.clone()));
        }
        let mut url = reqwest::Url::parse("http://baton/api/runs").expect("a valid URL");
        url.query_pairs_mut().extend_pairs(&query);
        let query = url.query().unwrap_or_default();
        if let Ok(v) = header::HeaderValue::from_str(&format!("</api/runs?{query}>; rel=\"next\""))
        {
            headers.insert(header::LINK, v);
        }
    }
    Ok(resp)
}

/// The longest `POST /api/runs?wait=SECS` holds a request.
const MAX_START_WAIT: Duration = Duration::from_secs(3600);

#[derive(Deserialize)]
struct StartQuery {
    /// Seconds to wait for the run to settle before answering.
    wait: Option<String>,
}

/// Starts a run. Without `wait`: `{"id"}` at once. With `?wait=SECS`: 200 and the run record
/// once it settles (completed, failed, cancelled or waiting for someone), or 202 and the
/// record as it stands when the time runs out first; so a caller can start and await a run in
/// one request.
async fn start_run(
    State(app): State<App>,
    Query(q): Query<StartQuery>,
    extensions: axum::http::Extensions,
    Json(req): Json<StartRequest>,
) -> Result<Response, ApiError> {
    // The peer as the socket says (a proxy's address behind one; never a header's claim).
    let client = extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(peer)| peer.to_string());
    let wait = match q.wait.as_deref() {
        None => None,
        Some(text) => match text.trim().parse::<f64>() {
            Ok(secs) if secs.is_finite() && secs >= 0.0 => Some(Duration::from_secs_f64(
                // Clamped before the conversion, which panics on values it cannot hold.
                secs.min(MAX_START_WAIT.as_secs_f64()),
            )),
            _ => {
                return Err(ApiError(
                    StatusCode::BAD_REQUEST,
                    format!("wait={text}: expected a number of seconds, e.g. wait=30"),
                ))
            }
        },
    };
    let id =
        backend::start_local(&app.engine, req, "api", &backend::Registrar::api(client)).await?;
    let Some(wait) = wait else {
        return Ok(Json(json!({ "id": id })).into_response());
    };
    let (status, rec, changes) = match tokio::time::timeout(wait, app.engine.settled(&id)).await {
        Ok(settled) => (
            StatusCode::OK,
            settled?,
            app.engine.changes_when_durable(&id).await?,
        ),
        Err(_) => (
            StatusCode::ACCEPTED,
            app.engine.run(&id)?,
            app.engine.changes(&id)?,
        ),
    };
    let view = RunView::of(&app.engine, &rec, changes);
    Ok((status, Json(view)).into_response())
}

/// What `GET /api/runs/about` and `GET /api/runs/in_flight` name: a repository, and an
/// issue or pull request of it (`kind`: `issue`, the default, or `pull_request`).
#[derive(Deserialize)]
struct AboutQuery {
    repo: String,
    #[serde(default)]
    number: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    workflow: Option<String>,
}

impl AboutQuery {
    fn subject(&self) -> Result<Subject, ApiError> {
        let bad = |m: String| ApiError(StatusCode::BAD_REQUEST, m);
        if !self.repo.contains('/') {
            return Err(bad(format!("repo {:?} is not owner/name", self.repo)));
        }
        let kind = match self.kind.as_deref() {
            None => SubjectKind::Issue,
            Some(text) => SubjectKind::parse(text)
                .ok_or_else(|| bad(format!("kind {text:?} is not issue or pull_request")))?,
        };
        Ok(match self.number.as_deref() {
            None => Subject::repository(self.repo.clone()),
            Some(text) => {
                let n = subject::parse_number(text)
                    .ok_or_else(|| bad(format!("number {text:?} is not an issue number")))?;
                Subject::numbered(self.repo.clone(), n, kind)
            }
        })
    }
}

/// The runs about a repository or an issue or pull request of it, newest first (the run
/// index: no scan of every run).
async fn runs_about(
    State(app): State<App>,
    Query(q): Query<AboutQuery>,
) -> ApiResult<Vec<RunView>> {
    let subject = q.subject()?;
    let runs = app.engine.runs_about(&subject)?;
    Ok(Json(
        runs.iter()
            .map(|r| RunView::of(&app.engine, r, Vec::new()))
            .collect(),
    ))
}

/// The newest unfinished run of `workflow` about an issue or pull request, or `null`.
async fn run_in_flight(
    State(app): State<App>,
    Query(q): Query<AboutQuery>,
) -> ApiResult<Option<RunView>> {
    let subject = q.subject()?;
    let Some(workflow) = q.workflow.as_deref() else {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "in_flight needs ?workflow=".into(),
        ));
    };
    let run = app.engine.in_flight(workflow, &subject)?;
    Ok(Json(run.map(|r| RunView::of(&app.engine, &r, Vec::new()))))
}

async fn show_run(State(app): State<App>, UrlPath(id): UrlPath<String>) -> ApiResult<RunView> {
    let rec = app.engine.run(&id)?;
    Ok(Json(RunView::of(
        &app.engine,
        &rec,
        app.engine.changes(&id)?,
    )))
}

#[derive(Deserialize)]
struct EventsQuery {
    #[serde(default)]
    since: u64,
    #[serde(default)]
    wait_ms: u64,
}

async fn run_events(
    State(app): State<App>,
    UrlPath(id): UrlPath<String>,
    Query(q): Query<EventsQuery>,
) -> ApiResult<Vec<baton_actors::Event>> {
    let wait = Duration::from_millis(q.wait_ms.min(30_000));
    Ok(Json(
        backend::events_wait(&app.engine, &id, q.since, wait).await?,
    ))
}

fn user(headers: &axum::http::HeaderMap) -> String {
    headers
        .get("x-baton-user")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() < 100)
        .map(|u| format!("{u} (api)"))
        .unwrap_or_else(|| "api".into())
}

async fn signal_run(
    State(app): State<App>,
    UrlPath((id, name)): UrlPath<(String, String)>,
    headers: axum::http::HeaderMap,
    body: Option<Json<Value>>,
) -> ApiResult<Value> {
    let data = body.map(|Json(v)| v).unwrap_or(Value::Null);
    Command::Signal { name, data }
        .apply(&app.engine, &id, &user(&headers))
        .await?;
    Ok(Json(json!({ "ok": true })))
}

/// `POST /api/ci/{event}`: news of a check on a commit (a `check_run`-shaped body, or any
/// webhook CI event's), from `baton forge check create` after it recorded one on the local
/// forge. Wakes a run waiting on that commit, which reads the checks again itself.
async fn ci_news(
    State(app): State<App>,
    UrlPath(event): UrlPath<String>,
    body: Option<Json<Value>>,
) -> ApiResult<Value> {
    if !crate::triggers::CI_EVENTS.contains(&event.as_str()) {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!(
                "`{event}` is not a CI event: expected one of {}",
                crate::triggers::CI_EVENTS.join(", ")
            ),
        ));
    }
    let body = body.map(|Json(v)| v).unwrap_or(Value::Null);
    let payload: crate::triggers::Payload = serde_json::from_value(body)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("the `{event}` body: {e}")))?;
    let Some(sha) = payload.ci_head_sha(&event) else {
        let field = if event == "status" {
            "sha".to_string()
        } else {
            format!("{event}.head_sha")
        };
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            format!("the `{event}` body needs `{field}`, a commit's full 40-hex-digit sha"),
        ));
    };
    let woke = app.ci_wakes.wake(sha);
    Ok(Json(json!({ "sha": sha, "woke": woke })))
}

async fn command_run(
    State(app): State<App>,
    UrlPath((id, verb)): UrlPath<(String, String)>,
    headers: axum::http::HeaderMap,
    body: Option<Json<Value>>,
) -> ApiResult<Value> {
    let mut body = body.map(|Json(v)| v).unwrap_or_else(|| json!({}));
    if !body.is_object() {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "the body must be a JSON object".into(),
        ));
    }
    body["command"] = Value::String(verb.clone());
    let cmd: Command = serde_json::from_value(body).map_err(|e| {
        ApiError(StatusCode::BAD_REQUEST, format!("`{verb}`: {e} (verbs: approve, reject, retry, skip, cancel, abort, rollback, signal/NAME)"))
    })?;
    cmd.apply(&app.engine, &id, &user(&headers)).await?;
    Ok(Json(json!({ "ok": true })))
}

#[derive(Deserialize)]
struct ResumeBody {
    run: Option<String>,
}

async fn resume(
    State(app): State<App>,
    Json(body): Json<ResumeBody>,
) -> ApiResult<baton_actors::ResumeReport> {
    Ok(Json(match body.run {
        Some(run) => app.engine.resume_run(&run).await?,
        None => app.engine.resume().await?,
    }))
}

async fn sse(
    State(app): State<App>,
) -> Sse<impl futures_util::Stream<Item = Result<SseEvent, Infallible>>> {
    let sub = app.engine.subscribe();
    let stream = futures_util::stream::unfold(sub, |mut sub| async move {
        let notice = sub.next().await?;
        let event = SseEvent::default()
            .event(match &notice {
                baton_actors::Notice::Event(_) => "event",
                baton_actors::Notice::Progress { .. } => "progress",
                baton_actors::Notice::Lagged { .. } => "lagged",
            })
            .json_data(&notice)
            .unwrap_or_default();
        Some((Ok(event), sub))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

async fn metrics(State(app): State<App>) -> impl IntoResponse {
    let stats = app.engine.commit_stats();
    let (p50, count) = app.engine.latency().quantile_ms(0.5);
    let (p99, _) = app.engine.latency().quantile_ms(0.99);
    let live = app.engine.live_runs().await;
    let body = format!(
        "# HELP baton_transitions_total Durable run transitions.\n# TYPE baton_transitions_total counter\nbaton_transitions_total {count}\n\
         # HELP baton_transition_latency_ms Transition latency (input to durable).\n# TYPE baton_transition_latency_ms gauge\nbaton_transition_latency_ms{{quantile=\"0.5\"}} {p50}\nbaton_transition_latency_ms{{quantile=\"0.99\"}} {p99}\n\
         # HELP baton_store_flushes_total Group commits (fsyncs).\n# TYPE baton_store_flushes_total counter\nbaton_store_flushes_total {}\n\
         # HELP baton_store_flush_seconds_total Time spent in group commits' flushes.\n# TYPE baton_store_flush_seconds_total counter\nbaton_store_flush_seconds_total {}\n\
         # HELP baton_store_writes_total Records written.\n# TYPE baton_store_writes_total counter\nbaton_store_writes_total {}\n\
         # HELP baton_live_runs Run actors alive (parked runs hold none).\n# TYPE baton_live_runs gauge\nbaton_live_runs {live}\n",
        stats.flushes.load(Ordering::Relaxed),
        stats.flush_us.load(Ordering::Relaxed) as f64 / 1e6,
        stats.writes.load(Ordering::Relaxed),
    ) + &app.throttle.metrics()
        + &crate::telemetry::render();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}

/// The shortest admin token `BATON_ADMIN_TOKEN` may set: 32 characters (the generated one is
/// 64 hex digits, 256 bits). A short one can be guessed, and it opens everything.
pub const MIN_ADMIN_TOKEN_CHARS: usize = 32;

fn check_admin_token(token: &str) -> Result<(), String> {
    let n = token.chars().count();
    if n < MIN_ADMIN_TOKEN_CHARS {
        return Err(format!(
            "BATON_ADMIN_TOKEN is {n} characters; an admin token must have at least {MIN_ADMIN_TOKEN_CHARS} (make one with `openssl rand -hex 32`, or unset it and baton generates one)"
        ));
    }
    if token
        .chars()
        .all(|c| c == token.chars().next().unwrap_or(' '))
    {
        return Err(
            "BATON_ADMIN_TOKEN repeats one character; use a random token (`openssl rand -hex 32`)"
                .into(),
        );
    }
    Ok(())
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())
}

/// Removes the address file when the daemon stops, so the CLI stops looking for it.
struct AddrFile(PathBuf);

impl Drop for AddrFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `POST /webhooks/github` without a secret: refused, saying how to turn it on.
async fn webhook_not_configured() -> Response {
    ApiError(
        StatusCode::SERVICE_UNAVAILABLE,
        "the GitHub webhook is not configured: set BATON_GITHUB_WEBHOOK_SECRET to the webhook's \
         secret and restart `baton serve`"
            .into(),
    )
    .into_response()
}

/// Serves the API and the admin UI (no webhook) until `shutdown` resolves.
pub async fn serve(
    engine: Engine,
    bind: &str,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Failure> {
    serve_with(engine, bind, Extras::default(), shutdown).await
}

/// What `baton serve` adds to the API and the admin UI, from its configuration.
#[derive(Default)]
pub struct Extras {
    /// The GitHub webhook listener, when a secret is configured.
    pub webhook: Option<WebhookSetup>,
    /// `[server]`: `public_url` (an https one makes the admin UI's session cookie `Secure`),
    /// `metrics_auth`, and the connection limits (`bind` is passed on its own).
    pub server: crate::config::ServerSection,
    /// More routes (the Telegram webhook, when the bot runs in webhook mode).
    pub routes: Option<Router>,
    /// `[retention]`: `baton gc` through `POST /api/gc`, and once a day.
    pub retention: crate::gc::Retention,
    /// `[limits]`: the spending caps `GET /api/spending` reports.
    pub limits: crate::config::LimitsSection,
    /// The commits runs wait on for CI, the one the engine's actions were given:
    /// `POST /api/ci/{event}` wakes them (and the webhook, through its options).
    pub ci_wakes: CiWakes,
}

/// Serves until `shutdown` resolves. The engine must be open; unfinished runs are resumed
/// here, after the listener is bound.
pub async fn serve_with(
    engine: Engine,
    bind: &str,
    extras: Extras,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Failure> {
    let Extras {
        webhook,
        server,
        routes: extra,
        retention,
        limits,
        ci_wakes,
    } = extras;
    // Every series exists from the first scrape, before anything happened to count.
    crate::telemetry::init_metrics();
    // Before the listener: its connections count against the limit.
    let open_files = crate::web::server::raise_open_files();
    let connection_limits = server.limits(open_files);
    let listener = tokio::net::TcpListener::bind(bind)
        .await
        .map_err(|e| Failure::usage(format!("cannot listen on {bind}: {e}")))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Failure::other(e.to_string()))?;
    let dir = engine.dir().to_path_buf();
    // `BATON_ADMIN_TOKEN` fixes the token (behind a proxy, across restarts); else a fresh one.
    let token = match crate::secrets::get("BATON_ADMIN_TOKEN")
        .map_err(|e| Failure::usage(e.to_string()))?
    {
        Some(t) => {
            let t = t.trim().to_string();
            check_admin_token(&t).map_err(Failure::usage)?;
            t
        }
        None => crate::web::token::random_hex()
            .map_err(|e| Failure::other(format!("cannot make an admin token: {e}")))?,
    };
    write_private(&dir.join(TOKEN_FILE), &token)
        .map_err(|e| Failure::other(format!("{}: {e}", dir.join(TOKEN_FILE).display())))?;
    // Written whole, then renamed: a client never reads half an address.
    let partial = dir.join(format!("{ADDR_FILE}.partial"));
    std::fs::write(&partial, addr.to_string())
        .and_then(|()| std::fs::rename(&partial, dir.join(ADDR_FILE)))
        .map_err(|e| Failure::other(format!("{}: {e}", dir.join(ADDR_FILE).display())))?;
    let _addr_file = AddrFile(dir.join(ADDR_FILE));
    let report = engine.resume().await?;
    tracing::info!(
        "baton serving on http://{addr} (data dir {}); resumed {} run(s), {} waiting, {} timer(s)",
        dir.display(),
        report.resumed,
        report.waiting,
        report.timers
    );
    eprintln!("baton serving on http://{addr}");
    // Probed now, in the real profile, so that a machine without a working sandbox says so
    // before the first pull request arrives.
    let sandbox = tokio::task::spawn_blocking(crate::sandbox::availability)
        .await
        .map_err(|e| Failure::other(format!("sandbox probe: {e}")))?;
    if sandbox.works {
        tracing::info!("{} (probe {} ms)", sandbox.line(), sandbox.probe_ms);
    } else {
        tracing::warn!("{}", sandbox.line());
    }
    eprintln!("{}", sandbox.line());
    let throttle = Throttle::default();
    let ui = crate::web::ui::router(
        engine.clone(),
        token.clone(),
        server.public_url.as_deref(),
        throttle.clone(),
    );
    let app = App {
        engine: engine.clone(),
        token,
        retention: Arc::new(retention.clone()),
        limits: Arc::new(limits),
        throttle,
        metrics_auth: server.metrics_auth,
        ci_wakes,
    };
    let daily_gc = tokio::spawn(crate::gc::daily(engine.clone(), retention));
    let listener_webhook = webhook.map(|setup| {
        let sink = EngineJobs::new(engine.clone(), setup.workflow_dirs)
            .with_cleanup(setup.forge.clone(), setup.delete_branch_on_merge);
        Webhook::new(setup.options, setup.forge, Arc::new(sink))
    });
    let routes = match &listener_webhook {
        Some(hook) => router(app).merge(hook.router()),
        None => router(app).route(webhook::PATH, post(webhook_not_configured)),
    }
    .merge(ui)
    .merge(extra.unwrap_or_default());
    tracing::info!(
        max_connections = connection_limits.max_connections,
        open_files,
        header_read_timeout_s = connection_limits.header_read.as_secs(),
        idle_timeout_s = connection_limits.idle.as_secs(),
        "connection limits"
    );
    // Graceful: stop accepting, let requests finish; long-lived streams (SSE) get a few
    // seconds, then their connections are dropped.
    crate::web::server::serve(
        listener,
        routes,
        connection_limits,
        shutdown,
        Duration::from_secs(5),
    )
    .await;
    daily_gc.abort();
    if let Some(hook) = &listener_webhook {
        if tokio::time::timeout(WEBHOOK_DRAIN, hook.wait_idle())
            .await
            .is_err()
        {
            tracing::warn!(
                "webhook deliveries still in flight at shutdown; GitHub can redeliver them"
            );
        }
    }
    engine.shutdown().await?;
    Ok(())
}

/// The webhook listener of `baton serve`, when `BATON_GITHUB_WEBHOOK_SECRET` is set; `None`
/// otherwise (the route then answers 503). The forge is built here, so a bad `[forge]` or a
/// missing GitHub credential stops the daemon at start-up rather than at the first delivery.
pub fn webhook_setup(
    config: &crate::config::Config,
    dir: &Path,
    ci_wakes: &CiWakes,
) -> Result<Option<WebhookSetup>, Failure> {
    use crate::web::webhook::{WebhookOptions, WebhookSecret};

    // The variable (or its `_FILE`), else the secret of the App `baton github app create` kept.
    let value = match crate::secrets::get("BATON_GITHUB_WEBHOOK_SECRET")
        .map_err(|e| Failure::usage(e.to_string()))?
    {
        Some(value) => value,
        None => {
            let app_dir = dir.join(crate::forge::github::app::APP_DIR);
            let stored = crate::forge::github::app::Stored::read(&app_dir)
                .map_err(|e| Failure::usage(e.to_string()))?
                .and_then(|app| app.webhook_secret);
            match stored {
                Some(secret) => {
                    use octocrab::secrecy::ExposeSecret as _;
                    secret.expose_secret().to_string()
                }
                None => {
                    tracing::info!(
                        "BATON_GITHUB_WEBHOOK_SECRET is not set: POST /webhooks/github answers 503"
                    );
                    return Ok(None);
                }
            }
        }
    };
    let secret = WebhookSecret::new(value.trim())
        .map_err(|e| Failure::usage(format!("BATON_GITHUB_WEBHOOK_SECRET: {e}")))?;
    let forge = crate::forge::open(&config.forge_settings(dir))
        .map_err(|e| Failure::usage(e.to_string()))?;
    Ok(Some(WebhookSetup {
        options: WebhookOptions {
            secret,
            triggers: config.triggers.clone(),
            senders: config.webhook.clone(),
            ci_wakes: ci_wakes.clone(),
        },
        forge,
        workflow_dirs: config.workflow_dirs.clone(),
        delete_branch_on_merge: config.workflows.issue_to_pr.delete_branch_on_merge,
    }))
}
