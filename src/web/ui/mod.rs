//! The admin UI: server-rendered pages over the engine, behind a login with the admin token.
//!
//! - `GET|POST /login` (field `token`), `POST /logout` (with `csrf`);
//! - `GET /`: runs newest first, counts by status, filters, search and paging;
//! - `GET /runs/{id}`: steps, timeline, change journal, events, waiting reason, links, and the
//!   actions that apply as POST forms (`POST /runs/{id}/{verb}` with a hidden `csrf`), which go
//!   through the same [`Command::apply`] as the CLI and the API;
//! - `GET /workflows`: every workflow with its definition and a diagram;
//! - `GET /ui/events`: server-sent events for open pages, from `Engine::subscribe()`, coalesced
//!   into at most one message per [`COALESCE`] (a lone event goes out at once) naming the runs
//!   that changed; the page then
//!   fetches its live part again (`?fragment=1`).
//!
//! Everything a run carries is untrusted: templates escape it (minijinja's HTML auto-escape),
//! and the SVGs are built with [`esc`]. Assets are embedded; pages carry a strict CSP.

pub mod session;
mod svg;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::convert::Infallible;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::extract::rejection::FormRejection;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use baton_actors::record::Millis;
use baton_actors::{
    Engine, Notice, RollbackRequest, RunFilter, RunRecord, RunSearch, RunStatus, Workflow,
};
use minijinja::Environment;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::backend::{Command, Failure};
use crate::view;
use crate::web::throttle::{self, Door, Throttle};
use session::{same, Session, Sessions};

/// Runs per dashboard page.
const PAGE: usize = 50;
/// The least time between two SSE messages to a page: notices in between go out as one.
pub const COALESCE: Duration = Duration::from_millis(100);
/// How long a first notice waits for the rest of its commit before going out.
const GATHER: Duration = Duration::from_millis(10);
/// Past this many changed runs in one message, pages are told to reload all they show.
const MAX_IDS: usize = 200;
/// Events shown on a run page (the newest).
const EVENTS_SHOWN: usize = 200;

const STATUSES: [&str; 6] = [
    "pending",
    "running",
    "waiting",
    "completed",
    "failed",
    "cancelled",
];

const CSS: &str = include_str!("assets/app.css");
const JS: &str = include_str!("assets/app.js");
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

#[derive(Clone)]
struct Ui {
    engine: Engine,
    token: Arc<String>,
    sessions: Sessions,
    secure: bool,
    throttle: Throttle,
}

/// The UI's routes, for `baton serve` to merge next to the API. `token` is the admin token;
/// an `https` `public_url` makes the session cookie `Secure`; `throttle` is shared with the
/// API's token check.
pub fn router(
    engine: Engine,
    token: String,
    public_url: Option<&str>,
    throttle: Throttle,
) -> Router {
    let ui = Ui {
        throttle,
        engine,
        token: Arc::new(token),
        sessions: Sessions::default(),
        secure: public_url.is_some_and(|u| u.trim().to_ascii_lowercase().starts_with("https://")),
    };
    Router::new()
        .route("/", get(dashboard))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/runs/{id}", get(run_page))
        .route("/runs/{id}/{verb}", post(act))
        .route("/workflows", get(workflows_page))
        .route("/ui/events", get(events))
        .route("/ui/app.css", get(|| async { asset("text/css", CSS) }))
        .route("/ui/app.js", get(|| async { asset("text/javascript", JS) }))
        .with_state(ui)
}

fn env() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        for (name, text) in [
            ("base.html", include_str!("templates/base.html")),
            ("login.html", include_str!("templates/login.html")),
            ("message.html", include_str!("templates/message.html")),
            ("runs.html", include_str!("templates/runs.html")),
            ("runs_live.html", include_str!("templates/runs_live.html")),
            ("run.html", include_str!("templates/run.html")),
            ("run_live.html", include_str!("templates/run_live.html")),
            ("workflows.html", include_str!("templates/workflows.html")),
        ] {
            env.add_template(name, text)
                .expect("embedded templates parse");
        }
        env
    })
}

fn asset(kind: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        body,
    )
        .into_response()
}

/// A page: HTML with the headers every page carries.
fn page(status: StatusCode, name: &str, ctx: Value) -> Response {
    let body = match env().get_template(name).and_then(|t| t.render(&ctx)) {
        Ok(body) => body,
        Err(e) => {
            tracing::error!("admin UI template {name}: {e:#}");
            return (StatusCode::INTERNAL_SERVER_ERROR, "template error").into_response();
        }
    };
    let mut resp = (status, body).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    resp
}

fn message(status: StatusCode, title: &str, text: &str, back: &str, csrf: &str) -> Response {
    page(
        status,
        "message.html",
        json!({ "title": title, "text": text, "back": back, "csrf": csrf }),
    )
}

fn see_other(to: &str) -> Response {
    let mut resp = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

impl Ui {
    /// The request's session, or the redirect to `/login`.
    #[allow(clippy::result_large_err)]
    fn session(&self, headers: &HeaderMap) -> Result<Session, Response> {
        self.sessions
            .get(headers)
            .ok_or_else(|| see_other("/login"))
    }
}

// ---- login ----

async fn login_page(State(ui): State<Ui>, headers: HeaderMap) -> Response {
    if ui.sessions.get(&headers).is_some() {
        return see_other("/");
    }
    page(StatusCode::OK, "login.html", json!({}))
}

#[derive(Deserialize)]
struct LoginForm {
    #[serde(default)]
    token: String,
}

async fn login(
    State(ui): State<Ui>,
    extensions: axum::http::Extensions,
    form: Result<Form<LoginForm>, FormRejection>,
) -> Response {
    let client = throttle::client_ip(&extensions);
    if let Some(wait) = ui.throttle.wait(client) {
        let mut resp = page(
            StatusCode::TOO_MANY_REQUESTS,
            "login.html",
            json!({ "error": format!("Too many wrong tokens from this address. Try again in {} seconds.", throttle::retry_after(wait)) }),
        );
        if let Ok(v) = HeaderValue::from_str(&throttle::retry_after(wait)) {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return resp;
    }
    let given = form.map(|Form(f)| f.token).unwrap_or_default();
    if !same(given.trim().as_bytes(), ui.token.as_bytes()) {
        if !given.trim().is_empty() {
            ui.throttle.failed(client, Door::Login);
        }
        return page(
            StatusCode::UNAUTHORIZED,
            "login.html",
            json!({ "error": "That is not the admin token." }),
        );
    }
    ui.throttle.succeeded(client);
    let id = ui.sessions.create();
    let mut resp = see_other("/");
    if let Ok(v) = HeaderValue::from_str(&session::set_cookie(&id, ui.secure)) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

#[derive(Deserialize, Default)]
struct ActionForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    mode: String,
    #[serde(default)]
    steps: String,
}

fn csrf_ok(s: &Session, form: &Result<Form<ActionForm>, FormRejection>) -> bool {
    form.as_ref()
        .is_ok_and(|Form(f)| same(f.csrf.as_bytes(), s.csrf.as_bytes()))
}

fn forbidden(csrf: &str) -> Response {
    message(
        StatusCode::FORBIDDEN,
        "Refused",
        "The form's CSRF token is missing or wrong; nothing was changed. Reload the page and try again.",
        "/",
        csrf,
    )
}

async fn logout(
    State(ui): State<Ui>,
    headers: HeaderMap,
    form: Result<Form<ActionForm>, FormRejection>,
) -> Response {
    let s = match ui.session(&headers) {
        Ok(s) => s,
        Err(r) => return r,
    };
    if !csrf_ok(&s, &form) {
        return forbidden(&s.csrf);
    }
    ui.sessions.remove(&headers);
    let mut resp = see_other("/login");
    if let Ok(v) = HeaderValue::from_str(&session::clear_cookie(ui.secure)) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

// ---- helpers over runs ----

/// `850 ms`, `12.3 s`, `4m 05s`, `2h 03m`.
pub fn duration(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms} ms")
    } else if ms < 60_000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else if ms < 3_600_000 {
        format!("{}m {:02}s", ms / 60_000, ms % 60_000 / 1000)
    } else {
        format!("{}h {:02}m", ms / 3_600_000, ms % 3_600_000 / 60_000)
    }
}

/// `2026-11-30 10:53:21`.
fn when(ms: Option<Millis>) -> String {
    ms.map(|ms| view::rfc3339(ms)[..19].replace('T', " "))
        .unwrap_or_default()
}

fn run_duration(rec: &RunRecord, now: Millis) -> String {
    match rec.started_at {
        Some(start) => duration(rec.completed_at.unwrap_or(now).saturating_sub(start)),
        None => String::new(),
    }
}

/// Percent-encodes a query value.
fn enc(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// What started a run: the job's source and event, who sent it, and the issue or PR.
fn started_by(engine: &Engine, rec: &RunRecord) -> String {
    let job = rec
        .job_id
        .as_deref()
        .and_then(|id| engine.job(id).ok().flatten());
    let mut parts = Vec::new();
    match &job {
        Some(job) => {
            parts.push(job.source.clone());
            if !job.event.is_empty() && job.event != "run" {
                parts.push(job.event.clone());
            }
            if !job.sender.is_empty() {
                parts.push(format!("by {}", job.sender));
            }
        }
        None => {
            if let Some(id) = &rec.job_id {
                parts.push(id.split(':').next().unwrap_or(id).to_string());
            }
        }
    }
    if let Some(subject) = &rec.subject {
        parts.push(subject.to_string());
    }
    parts.join(" · ")
}

// ---- dashboard ----

#[derive(Deserialize, Default)]
struct DashQuery {
    #[serde(default)]
    status: String,
    #[serde(default)]
    workflow: String,
    #[serde(default)]
    q: String,
    /// `verified`, `unverified` or `no_checks`: the runs that ended so.
    #[serde(default)]
    outcome: String,
    #[serde(default)]
    page: Option<String>,
    #[serde(default)]
    fragment: Option<String>,
}

/// The outcomes a run can end with (issue_to_pr, revise, pr_review), for the filter.
const OUTCOMES: [&str; 3] = ["verified", "unverified", "no_checks"];

/// The dashboard's URL with these filters; `filter` is `(status, workflow, outcome)`.
fn dash_url(filter: (&str, &str, &str), q: &str, page: usize) -> String {
    let (status, workflow, outcome) = filter;
    let mut parts = Vec::new();
    if !status.is_empty() {
        parts.push(format!("status={}", enc(status)));
    }
    if !workflow.is_empty() {
        parts.push(format!("workflow={}", enc(workflow)));
    }
    if !outcome.is_empty() {
        parts.push(format!("outcome={}", enc(outcome)));
    }
    if !q.is_empty() {
        parts.push(format!("q={}", enc(q)));
    }
    if page > 1 {
        parts.push(format!("page={page}"));
    }
    if parts.is_empty() {
        "/".into()
    } else {
        format!("/?{}", parts.join("&"))
    }
}

async fn dashboard(
    State(ui): State<Ui>,
    headers: HeaderMap,
    Query(q): Query<DashQuery>,
) -> Response {
    let s = match ui.session(&headers) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let engine = ui.engine.clone();
    let csrf = s.csrf.clone();
    let result = tokio::task::spawn_blocking(move || dashboard_ctx(&engine, &q, &csrf)).await;
    match result {
        Ok(Ok((fragment, ctx))) => page(
            StatusCode::OK,
            if fragment {
                "runs_live.html"
            } else {
                "runs.html"
            },
            ctx,
        ),
        Ok(Err(e)) => message(
            StatusCode::BAD_REQUEST,
            "Cannot list runs",
            &e,
            "/",
            &s.csrf,
        ),
        Err(_) => message(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Cannot list runs",
            "internal error",
            "/",
            &s.csrf,
        ),
    }
}

fn dashboard_ctx(engine: &Engine, q: &DashQuery, csrf: &str) -> Result<(bool, Value), String> {
    let status = match q.status.as_str() {
        "" => None,
        s => Some(s.parse::<RunStatus>().map_err(|e| e.to_string())?),
    };
    let wf = (!q.workflow.is_empty()).then(|| q.workflow.clone());
    let search = q.q.trim();
    let requested = q
        .page
        .as_deref()
        .and_then(|p| p.parse::<usize>().ok())
        .unwrap_or(1)
        .max(1);
    let err = |e: baton_actors::Error| e.to_string();
    let (counts, page_runs, matching, page_no): DashPage = if !q.outcome.is_empty() {
        outcome_page(engine, &q.outcome, status, wf.as_deref(), search, requested)?
    } else if search.is_empty() {
        // The run index: counts and one page, without reading every run.
        let counts: HashMap<RunStatus, usize> = engine
            .run_counts(wf.as_deref())
            .map_err(err)?
            .into_iter()
            .collect();
        let matching = match status {
            Some(s) => counts.get(&s).copied().unwrap_or(0),
            None => counts.values().sum(),
        };
        let page_no = requested.min(matching.div_ceil(PAGE).max(1));
        let filter = RunFilter {
            status,
            workflow: wf,
        };
        let (runs, _) = engine
            .runs_page(&filter, (page_no - 1) * PAGE, PAGE)
            .map_err(err)?;
        (counts, runs, matching, page_no)
    } else {
        // A search goes through the engine's indexes: a run id prefix, or what runs are about.
        let filter = RunFilter {
            status,
            workflow: wf,
        };
        let first = engine
            .search_runs(
                &RunSearch::parse(search),
                &filter,
                (requested - 1) * PAGE,
                PAGE,
            )
            .map_err(err)?;
        let page_no = requested.min(first.matching.div_ceil(PAGE).max(1));
        let found = if page_no == requested {
            first
        } else {
            // Past the last page: show the last one.
            engine
                .search_runs(
                    &RunSearch::parse(search),
                    &filter,
                    (page_no - 1) * PAGE,
                    PAGE,
                )
                .map_err(err)?
        };
        (
            found.counts.into_iter().collect(),
            found.runs,
            found.matching,
            page_no,
        )
    };
    let pages = matching.div_ceil(PAGE).max(1);
    let now = baton_actors::now_ms();
    let mut wf_cache: HashMap<String, Option<Arc<Workflow>>> = HashMap::new();
    let rows: Vec<Value> = page_runs
        .iter()
        .map(|r| {
            let wf = wf_cache
                .entry(r.digest.clone())
                .or_insert_with(|| engine.run_workflow(&r.id).ok());
            let step = wf
                .as_ref()
                .and_then(|w| w.steps().get(r.current_step).map(|s| s.id.clone()))
                .unwrap_or_default();
            json!({
                "id": r.id,
                "status": r.status.as_str(),
                "workflow": r.workflow_id,
                "started_by": started_by(engine, r),
                "started": when(r.started_at.or(Some(r.created_at))),
                "duration": run_duration(r, now),
                "current_step": if r.status == RunStatus::Completed { String::new() } else { step },
                "queued": engine.queued_behind(&r.id).map(|q| q.to_string()),
                // issue_to_pr and revise: whether the change was verified.
                "outcome": r.state.get("outcome").and_then(Value::as_str),
                "waiting": r.waiting_for.as_ref().map(|w| format!("{} `{}`", serde_json::to_value(w.kind).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default(), w.name)),
            })
        })
        .collect();
    let mut workflows: Vec<String> = engine
        .workflows()
        .map(|ws| ws.iter().map(|w| w.id().to_string()).collect())
        .unwrap_or_default();
    workflows.sort();
    workflows.dedup();
    let total: usize = counts.values().sum();
    let counts: Vec<Value> = STATUSES
        .iter()
        .map(|name| {
            let st: RunStatus = name.parse().expect("known status");
            json!({
                "status": name,
                "n": counts.get(&st).copied().unwrap_or(0),
                "href": dash_url((name, &q.workflow, &q.outcome), search, 1),
                "current": q.status == *name,
            })
        })
        .collect();
    Ok((
        q.fragment.is_some(),
        json!({
            "csrf": csrf,
            "live": "dashboard",
            "statuses": STATUSES,
            "workflows": workflows,
            "outcomes": OUTCOMES,
            "filter": { "status": q.status, "workflow": q.workflow, "q": search, "outcome": q.outcome },
            "filtered": status.is_some() || !q.workflow.is_empty() || !search.is_empty() || !q.outcome.is_empty(),
            "counts": counts,
            "total": total,
            "all_href": dash_url(("", &q.workflow, &q.outcome), search, 1),
            "runs": rows,
            "page": page_no,
            "pages": pages,
            "matching": matching,
            "prev": (page_no > 1).then(|| dash_url((&q.status, &q.workflow, &q.outcome), search, page_no - 1)),
            "next": (page_no < pages).then(|| dash_url((&q.status, &q.workflow, &q.outcome), search, page_no + 1)),
        }),
    ))
}

/// One page of the dashboard: counts by status, the page's runs, how many match, the page's
/// number.
type DashPage = (HashMap<RunStatus, usize>, Vec<RunRecord>, usize, usize);

/// The dashboard filtered by outcome: the runs the index lists under it, those that still hold
/// it (a run retried after it ended may have ended again otherwise), by status and workflow.
/// It reads the runs that ended with that outcome, not every run.
fn outcome_page(
    engine: &Engine,
    outcome: &str,
    status: Option<RunStatus>,
    workflow: Option<&str>,
    search: &str,
    requested: usize,
) -> Result<DashPage, String> {
    if !OUTCOMES.contains(&outcome) {
        return Err(format!(
            "outcome `{outcome}`: one of {} expected",
            OUTCOMES.join(", ")
        ));
    }
    if !search.is_empty() {
        return Err(
            "a search and the outcome filter do not combine: clear one of them".to_string(),
        );
    }
    let err = |e: baton_actors::Error| e.to_string();
    let mut counts: HashMap<RunStatus, usize> = HashMap::new();
    let mut matching = Vec::new();
    for id in engine.runs_with_outcome(outcome).map_err(err)? {
        let rec = match engine.run(&id) {
            Ok(rec) => rec,
            // Deleted by retention since.
            Err(baton_actors::Error::UnknownRun(_)) => continue,
            Err(e) => return Err(err(e)),
        };
        let holds = rec.state.get("outcome").and_then(Value::as_str) == Some(outcome);
        if !holds || workflow.is_some_and(|w| w != rec.workflow_id) {
            continue;
        }
        *counts.entry(rec.status).or_default() += 1;
        if status.is_none_or(|s| s == rec.status) {
            matching.push(rec);
        }
    }
    let total = matching.len();
    let page_no = requested.min(total.div_ceil(PAGE).max(1));
    let page: Vec<RunRecord> = matching
        .into_iter()
        .skip((page_no - 1) * PAGE)
        .take(PAGE)
        .collect();
    Ok((counts, page, total, page_no))
}

// ---- a run ----

#[derive(Deserialize, Default)]
struct RunQuery {
    #[serde(default)]
    fragment: Option<String>,
}

async fn run_page(
    State(ui): State<Ui>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
    Query(q): Query<RunQuery>,
) -> Response {
    let s = match ui.session(&headers) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let engine = ui.engine.clone();
    let csrf = s.csrf.clone();
    let result = tokio::task::spawn_blocking(move || run_ctx(&engine, &id, &csrf)).await;
    match result {
        Ok(Ok(ctx)) => page(
            StatusCode::OK,
            if q.fragment.is_some() {
                "run_live.html"
            } else {
                "run.html"
            },
            ctx,
        ),
        Ok(Err((status, text))) => message(status, "Run", &text, "/", &s.csrf),
        Err(_) => message(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Run",
            "internal error",
            "/",
            &s.csrf,
        ),
    }
}

/// Links to the issue, the PR and anything else with a web address in the run's input,
/// state or step outputs (only `http(s)` addresses become links).
fn links(rec: &RunRecord) -> Vec<Value> {
    fn walk(label: &str, v: &Value, depth: usize, out: &mut Vec<(String, String)>) {
        match v {
            Value::Object(map) => {
                for (k, v) in map {
                    if matches!(k.as_str(), "url" | "html_url" | "pr_url" | "issue_url") {
                        if let Some(u) = v.as_str() {
                            if u.starts_with("https://") || u.starts_with("http://") {
                                let name = if k == "url" || k == "html_url" {
                                    label.to_string()
                                } else {
                                    k.trim_end_matches("_url").to_string()
                                };
                                out.push((name, u.to_string()));
                            }
                        }
                    } else if depth < 3 {
                        walk(k, v, depth + 1, out);
                    }
                }
            }
            Value::Array(items) if depth < 3 => {
                for item in items.iter().take(20) {
                    walk(label, item, depth + 1, out);
                }
            }
            _ => {}
        }
    }
    let mut found = Vec::new();
    walk("input", &Value::Object(rec.input.clone()), 0, &mut found);
    walk("state", &Value::Object(rec.state.clone()), 0, &mut found);
    for step in &rec.steps {
        walk(&step.id, &step.output, 1, &mut found);
    }
    let mut seen = BTreeSet::new();
    found
        .into_iter()
        .filter(|(_, u)| seen.insert(u.clone()))
        .map(|(label, url)| json!({ "label": label, "url": url }))
        .collect()
}

fn run_ctx(engine: &Engine, id: &str, csrf: &str) -> Result<Value, (StatusCode, String)> {
    let rec = engine.run(id).map_err(|e| match e {
        baton_actors::Error::UnknownRun(_) => (StatusCode::NOT_FOUND, format!("No run `{id}`.")),
        e => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    })?;
    let wf = engine.run_workflow(id).ok();
    let now = baton_actors::now_ms();
    let steps: Vec<Value> = rec
        .steps
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let def = wf.as_ref().and_then(|w| w.steps().get(i));
            let text = |k: &str| s.output.get(k).and_then(Value::as_str).map(str::to_string);
            let dur = s
                .started_at
                .map(|a| duration(s.finished_at.unwrap_or(now).saturating_sub(a)));
            json!({
                "id": s.id,
                "description": def.and_then(|d| d.description.clone()),
                "kind": def.map(|d| match (&d.action, &d.wait) {
                    (Some(a), _) => a.clone(),
                    (None, Some(w)) => format!("wait for `{}`", w.signal),
                    _ => String::new(),
                }),
                "status": serde_json::to_value(s.status).ok(),
                "attempts": s.attempts,
                "duration": dur,
                "summary": text("summary"),
                "line": text("line"),
                "markdown": text("markdown"),
                "error": s.error,
                "output": match &s.output {
                    Value::Null => None,
                    v => serde_json::to_string_pretty(v).ok(),
                },
                "current": i == rec.current_step && !rec.status.is_terminal(),
            })
        })
        .collect();
    let changes: Vec<Value> = engine
        .changes(id)
        .unwrap_or_default()
        .iter()
        .map(|c| {
            json!({
                "step": rec.steps.get(c.step_index).map(|s| s.id.clone()).unwrap_or_else(|| c.step_index.to_string()),
                "type": c.change_type,
                "data": serde_json::to_string(&c.change_data).unwrap_or_default(),
                "at": when(Some(c.created_at)),
            })
        })
        .collect();
    let events = engine.events(id, 0).unwrap_or_default();
    let skip = events.len().saturating_sub(EVENTS_SHOWN);
    let events: Vec<Value> = events[skip..]
        .iter()
        .rev()
        .map(|e| {
            json!({
                "seq": e.seq,
                "at": when(Some(e.at)),
                "line": view::event_line(e).unwrap_or_default(),
            })
        })
        .collect();
    let actions = actions(&rec);
    let waiting_for = rec.waiting_for.as_ref().map(|w| {
        let kind = serde_json::to_value(w.kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        json!({
            "kind": kind,
            "name": w.name,
            "step": w.step,
            "since": when(Some(w.since)),
            "until": w.until.map(|u| when(Some(u))),
        })
    });
    Ok(json!({
        "csrf": csrf,
        "live": "run",
        "run": {
            "id": rec.id,
            "status": rec.status.as_str(),
            "workflow": rec.workflow_id,
            "version": rec.version,
            "started_by": started_by(engine, &rec),
            "subject": rec.subject.as_ref().map(ToString::to_string),
            "created": when(Some(rec.created_at)),
            "started": when(rec.started_at),
            "completed": when(rec.completed_at),
            "duration": run_duration(&rec, now),
            "error": rec.error_text,
            "rolled_back": rec.rolled_back,
            "waiting_for": waiting_for,
            "to_approve": crate::notify::render::to_approve(&rec),
            "queued": engine.queued_behind(&rec.id).map(|q| json!({
                "reason": q.to_string(),
                "holders": q.holders,
            })),
            "input": serde_json::to_string_pretty(&rec.input).unwrap_or_default(),
            "state": serde_json::to_string_pretty(&rec.state).unwrap_or_default(),
        },
        "steps": steps,
        "timeline": svg::timeline(&rec, now),
        "changes": changes,
        "events": events,
        "events_hidden": skip,
        "links": links(&rec),
        "actions": actions,
    }))
}

// ---- actions ----

/// Which action forms a run's page shows: the ones the engine would take in its state (it
/// still decides; a form that no longer fits gets the engine's reason and changes nothing).
fn actions(rec: &RunRecord) -> Value {
    use baton_actors::record::{StepStatus, WaitKind};
    let kind = rec.waiting_for.as_ref().map(|w| w.kind);
    let waiting = rec.status == RunStatus::Waiting;
    let at_wait = waiting && matches!(kind, Some(WaitKind::Signal | WaitKind::Approval));
    // Paused for a person after a failure, or between a failure and its next attempt.
    let paused = waiting && matches!(kind, Some(WaitKind::Intervention | WaitKind::Retry));
    let hard = rec.rolled_back_hard();
    let failed_step = rec
        .steps
        .get(rec.current_step)
        .is_some_and(|s| s.status == StepStatus::Failed);
    let failed = rec.status == RunStatus::Failed && failed_step && !hard;
    json!({
        "approve": at_wait,
        "retry": paused || failed,
        "abort": paused,
        "rollback": paused || failed || (rec.status == RunStatus::Cancelled && !hard),
        "cancel": matches!(rec.status, RunStatus::Running | RunStatus::Pending) || at_wait,
    })
}

fn command(verb: &str, form: &ActionForm) -> Result<Command, String> {
    Ok(match verb {
        "approve" => Command::Approve,
        "reject" => Command::Reject,
        "retry" => Command::Retry,
        "skip" => Command::Skip,
        "cancel" => Command::Cancel,
        "abort" => Command::Abort { mode: None },
        // The form has a soft/hard choice and an optional number of steps, which wins.
        "rollback" => Command::Rollback(match form.steps.trim() {
            "" => match form.mode.parse::<RollbackRequest>() {
                Err(e) => return Err(e.to_string()),
                Ok(RollbackRequest::Steps(_)) => {
                    return Err(format!(
                        "rollback mode `{}`: choose soft or hard",
                        form.mode
                    ))
                }
                Ok(r) => r,
            },
            n => match n.parse::<u32>() {
                Ok(n) if n > 0 => RollbackRequest::Steps(n),
                _ => return Err(format!("`{n}` is not a number of steps")),
            },
        }),
        other => {
            return Err(format!(
                "unknown action `{other}` (approve, reject, retry, skip, cancel, abort, rollback)"
            ))
        }
    })
}

fn failure_status(f: &Failure) -> StatusCode {
    f.http_status()
}

async fn act(
    State(ui): State<Ui>,
    headers: HeaderMap,
    UrlPath((id, verb)): UrlPath<(String, String)>,
    form: Result<Form<ActionForm>, FormRejection>,
) -> Response {
    let s = match ui.session(&headers) {
        Ok(s) => s,
        Err(r) => return r,
    };
    if !csrf_ok(&s, &form) {
        return forbidden(&s.csrf);
    }
    let back = format!("/runs/{}", enc(&id));
    let form = form.map(|Form(f)| f).unwrap_or_default();
    let cmd = match command(&verb, &form) {
        Ok(c) => c,
        Err(e) => return message(StatusCode::BAD_REQUEST, "Not done", &e, &back, &s.csrf),
    };
    match cmd.apply(&ui.engine, &id, "admin (ui)").await {
        Ok(()) => see_other(&back),
        Err(f) => message(
            failure_status(&f),
            "Not done",
            &format!("Could not {verb} run {id}: {}", f.message),
            &back,
            &s.csrf,
        ),
    }
}

// ---- workflows ----

async fn workflows_page(State(ui): State<Ui>, headers: HeaderMap) -> Response {
    let s = match ui.session(&headers) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let mut list = ui.engine.workflows().unwrap_or_default();
    list.sort_by(|a, b| a.id().cmp(b.id()));
    let items: Vec<Value> = list
        .iter()
        .map(|w| {
            let def = toml::to_string_pretty(&w.def)
                .or_else(|_| serde_json::to_string_pretty(&w.def).map_err(|e| e.to_string()))
                .unwrap_or_default();
            json!({
                "id": w.id(),
                "name": if w.def.name.is_empty() { w.id().to_string() } else { w.def.name.clone() },
                "description": w.def.description,
                "version": w.def.version,
                "digest": w.digest.chars().take(12).collect::<String>(),
                "steps": w.steps().len(),
                "diagram": svg::diagram(w),
                "definition": def,
                "runs_href": dash_url(("", w.id(), ""), "", 1),
                "registered": view::registered(w.provenance.as_ref()),
            })
        })
        .collect();
    page(
        StatusCode::OK,
        "workflows.html",
        json!({ "csrf": s.csrf, "workflows": items }),
    )
}

// ---- live updates ----

/// Server-sent events for open pages: `event: runs`, data `{"runs": [ids], "lagged": bool,
/// "progress": [{"run", "step", "message"}]}`, at most one per [`COALESCE`]. Without a session: 401 and nothing else; the stream ends
/// when its session does.
async fn events(State(ui): State<Ui>, headers: HeaderMap) -> Response {
    if ui.sessions.get(&headers).is_none() {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let sub = ui.engine.subscribe();
    let start = (sub, None::<tokio::time::Instant>);
    let (sessions, headers) = (ui.sessions.clone(), Arc::new(headers));
    let stream = futures_util::stream::unfold(start, move |(mut sub, last)| {
        let (sessions, headers) = (sessions.clone(), headers.clone());
        async move {
            let mut runs = BTreeSet::new();
            let mut lagged = false;
            // In-step progress ("Running tests...", "Fix round 2 of 3"): the latest message per
            // run and step in the window. It is not stored; an open run page shows it live.
            let mut progress: BTreeMap<(String, String), String> = BTreeMap::new();
            let mut add = |n: Notice| match n {
                Notice::Event(e) => {
                    runs.insert(e.run);
                }
                Notice::Lagged { .. } => lagged = true,
                Notice::Progress { run, step, message } => {
                    progress.insert((run, step), message);
                }
            };
            // Wait for a first notice, then gather what else comes until the window ends:
            // [`GATHER`] after it (the rest of its commit), and no sooner than [`COALESCE`] after
            // the last message. A lone notice goes out at once; a burst, once per window.
            add(sub.next().await?);
            let now = tokio::time::Instant::now();
            let end = (now + GATHER).max(last.map_or(now, |l| l + COALESCE));
            let window = tokio::time::sleep_until(end);
            tokio::pin!(window);
            loop {
                tokio::select! {
                    () = &mut window => break,
                    n = sub.next() => match n {
                        Some(n) => add(n),
                        None => break,
                    },
                }
            }
            // A session ended (logout, expiry) while the page was open gets nothing more.
            if !sessions.is_live(&headers) {
                return None;
            }
            if runs.len() > MAX_IDS {
                lagged = true;
                runs.clear();
            }
            let progress: Vec<Value> = progress
                .into_iter()
                .take(MAX_IDS)
                .map(|((run, step), message)| json!({ "run": run, "step": step, "message": message }))
                .collect();
            let event = SseEvent::default()
                .event("runs")
                .json_data(json!({ "runs": runs, "lagged": lagged, "progress": progress }))
                .unwrap_or_default();
            Some((
                Ok::<_, Infallible>(event),
                (sub, Some(tokio::time::Instant::now())),
            ))
        }
    });
    let mut resp = Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_well() {
        assert_eq!(duration(850), "850 ms");
        assert_eq!(duration(12_345), "12.3 s");
        assert_eq!(duration(245_000), "4m 05s");
        assert_eq!(duration(7_380_000), "2h 03m");
    }

    #[test]
    fn templates_escape_what_runs_carry() {
        let out = env()
            .get_template("message.html")
            .unwrap()
            .render(json!({ "title": "t", "text": "<script>alert(1)</script>", "back": "/", "csrf": "" }))
            .unwrap();
        assert!(out.contains("&lt;script&gt;"), "{out}");
        assert!(!out.contains("<script>alert"), "{out}");
    }

    #[test]
    fn rollback_forms_become_commands() {
        let f = |mode: &str, steps: &str| ActionForm {
            csrf: String::new(),
            mode: mode.into(),
            steps: steps.into(),
        };
        assert_eq!(
            command("rollback", &f("hard", "")).unwrap(),
            Command::Rollback(RollbackRequest::Hard)
        );
        assert_eq!(
            command("rollback", &f("soft", "2")).unwrap(),
            Command::Rollback(RollbackRequest::Steps(2))
        );
        assert!(command("rollback", &f("soft", "x")).is_err());
        assert!(command("rollback", &f("soft", "0")).is_err());
        assert!(command("rollback", &f("3", "")).is_err());
        assert!(command("rollback", &f("", "")).is_err());
        assert!(command("explode", &f("", "")).is_err());
    }
}
