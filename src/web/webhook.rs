//! `POST /webhooks/github`: GitHub's deliveries in, jobs out to a [`JobSink`].
//!
//! The order of checks is the security contract. A request without a well-formed
//! `X-Hub-Signature-256` is 401 before its body is read, and one announcing more than 25 MB is
//! 413. Unauthenticated bodies are read within a shared byte budget ([`BODY_BUDGET`]: a body
//! waits up to [`BODY_WAIT`] for its share, then is 503 with `Retry-After`), within
//! [`BODY_DEADLINE`], and the HMAC-SHA256 is computed while the body streams in; a wrong one is
//! 401 with nothing else done. Only then the headers, the JSON (400 if malformed), `ping`
//! (200), dedup (200 "duplicate", nothing started: on the delivery id, and on the event's own
//! identity from the signed body, so a signed body sent again under a new delivery id is a
//! duplicate too), and the pure
//! [`triggers::classify`](crate::triggers::classify) (202 "ignored" for what baton does not
//! handle). CI news (`check_suite`, `check_run`, `workflow_run`, `status`) goes to none of
//! that: once signed, it wakes a run waiting on its commit ([`CiWakes`]; 202 "woke"). A job is answered 202 at once and handled on a task: the sender's permission is
//! checked through [`Forge::permission`] (write, maintain or admin; cached briefly; a failed
//! lookup denies), then the job goes to the sink, which stores it with its delivery id and
//! starts or steers the run.
//!
//! This module never sees the engine: the daemon implements [`JobSink`] over it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use futures_util::StreamExt;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::Sha256;
use tokio::sync::{Notify, OnceCell, OwnedSemaphorePermit, Semaphore};

use crate::ci::wake::CiWakes;
use crate::forge::{BoxFuture, Forge, Permission, Repo};
use crate::triggers::{
    classify, Classified, EventIdentity, Job, JobAction, Payload, SenderPolicy, Trigger,
};
use crate::web::server::RateLog;

/// The route GitHub posts to.
pub const PATH: &str = "/webhooks/github";

/// GitHub caps payloads at 25 MB; anything larger is not GitHub.
pub const MAX_BODY: usize = 25 * 1024 * 1024;

/// Bytes of not yet authenticated bodies held at once, all requests together (see
/// [`read_signed`]): a 25 MB body fits (one at a time), ordinary deliveries have a share of
/// their own ([`SMALL_BUDGET`]), and a flood of large unsigned bodies costs at most this much
/// memory.
pub const BODY_BUDGET: usize = 40 * 1024 * 1024;

/// Of [`BODY_BUDGET`], what bodies announced at most [`SMALL_BODY`] draw on, as their bytes
/// arrive: large or chunked bodies never hold up GitHub's ordinary deliveries (tens of kB),
/// and announcing a body without sending it holds nothing.
pub const SMALL_BUDGET: usize = 8 * 1024 * 1024;

/// The largest body that draws on [`SMALL_BUDGET`].
pub const SMALL_BODY: usize = 256 * 1024;

/// How long a body waits for its share of the budget before it is answered 503: well inside
/// GitHub's 10 s, so that the answer reaches it.
pub const BODY_WAIT: Duration = Duration::from_secs(3);

/// How long a large body may take to arrive whole once its share is granted.
pub const BODY_DEADLINE: Duration = Duration::from_secs(30);

/// How long a body of at most [`SMALL_BODY`] may take to arrive whole.
pub const SMALL_DEADLINE: Duration = Duration::from_secs(10);

/// The budget's unit: permits are KiB, so a 10 kB delivery holds 10 of them.
const BUDGET_UNIT: usize = 1024;

/// Delivery ids remembered in memory (besides the sink's durable record), so that concurrent or
/// quick redeliveries are caught before the sink has stored the first.
const RECENT_DELIVERIES: usize = 10_000;

/// The webhook secret (`BATON_GITHUB_WEBHOOK_SECRET`). Never printed.
#[derive(Clone)]
pub struct WebhookSecret(Arc<[u8]>);

impl WebhookSecret {
    /// A secret; an empty one is refused (it would make every signature forgeable).
    pub fn new(secret: impl AsRef<[u8]>) -> Result<WebhookSecret, SecretError> {
        let secret = secret.as_ref();
        if secret.is_empty() {
            return Err(SecretError::Empty);
        }
        Ok(WebhookSecret(secret.into()))
    }

    /// From `BATON_GITHUB_WEBHOOK_SECRET`, or the file `BATON_GITHUB_WEBHOOK_SECRET_FILE`
    /// names (through [`crate::secrets`]).
    pub fn from_env() -> Result<WebhookSecret, SecretError> {
        let value = crate::secrets::get("BATON_GITHUB_WEBHOOK_SECRET")
            .map_err(|e| SecretError::Unavailable(e.to_string()))?
            .ok_or(SecretError::NotSet)?;
        WebhookSecret::new(value.trim())
    }

    /// The `X-Hub-Signature-256` header value GitHub sends for `body`: `sha256=<hex>`.
    pub fn sign(&self, body: &[u8]) -> String {
        format!(
            "sha256={}",
            hex::encode(self.mac(body).finalize().into_bytes())
        )
    }

    /// Whether `header` is `sha256=<hex>` of `body`, compared in constant time.
    pub fn verify(&self, header: &str, body: &[u8]) -> bool {
        let Some(signature) = parse_signature(header) else {
            return false;
        };
        self.mac(body).verify_slice(&signature).is_ok()
    }

    fn mac(&self, body: &[u8]) -> Hmac<Sha256> {
        // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(body);
        mac
    }
}

/// The 32 bytes of a `sha256=<64 hex digits>` header; `None` for anything else.
fn parse_signature(header: &str) -> Option<Vec<u8>> {
    let hex_digits = header.strip_prefix("sha256=")?;
    (hex_digits.len() == 64)
        .then(|| hex::decode(hex_digits).ok())
        .flatten()
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret(***)")
    }
}

/// Why there is no webhook secret. The secret itself is never part of the message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// An empty secret would make every signature forgeable.
    #[error("the GitHub webhook secret is empty")]
    Empty,
    /// Neither `BATON_GITHUB_WEBHOOK_SECRET` nor `BATON_GITHUB_WEBHOOK_SECRET_FILE` is set.
    #[error("BATON_GITHUB_WEBHOOK_SECRET is not set")]
    NotSet,
    /// A source is set but unusable (an unreadable file, two values); the message says which.
    #[error("{0}")]
    Unavailable(String),
}

/// Why a sink could not look up or carry out a delivery's job. The delivery is then forgotten,
/// so GitHub's redelivery tries again.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// The engine or its store failed.
    #[error(transparent)]
    Engine(#[from] baton_actors::Error),
    /// A trigger names a workflow that is neither registered nor a file in `workflow_dirs`.
    #[error("workflow `{0}` (named by a trigger) is neither registered nor in workflow_dirs")]
    UnknownWorkflow(String),
    /// A steering command (or the cancel of a stale review) failed for another reason than
    /// the run's state.
    #[error(transparent)]
    Command(#[from] crate::backend::Failure),
    /// A finished run's workspace could not be removed.
    #[error("removing {}: {source}", path.display())]
    RemoveWorkspace {
        /// The workspace directory.
        path: std::path::PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A merged pull request's branch could not be deleted.
    #[error("deleting branch `{branch}`: {source}")]
    DeleteBranch {
        /// The branch.
        branch: String,
        /// The forge's error.
        #[source]
        source: crate::forge::Error,
    },
}

/// What the sink did with a job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum DispatchOutcome {
    /// A run started.
    Started {
        /// Its id.
        run_id: String,
    },
    /// A command reached a run.
    Steered {
        /// Its id.
        run_id: String,
    },
    /// The delivery was already stored with a job: nothing new happened.
    Duplicate,
    /// Nothing to steer (no run for the subject, or the command does not fit its state).
    NoRun {
        /// Why, in words for the log.
        reason: String,
    },
}

/// Where jobs go: the daemon implements it over the engine and its store.
pub trait JobSink: Send + Sync + 'static {
    /// Whether a delivery id is already stored with a job (a redelivery of GitHub's).
    fn seen_delivery<'a>(&'a self, delivery_id: &'a str) -> BoxFuture<'a, Result<bool, JobError>>;

    /// Whether an event with this identity is already stored with a job: a replay of a signed
    /// body under a new delivery id, or the same event delivered twice.
    fn seen_event<'a>(
        &'a self,
        identity: &'a EventIdentity,
    ) -> BoxFuture<'a, Result<bool, JobError>>;

    /// Stores the job with its delivery id (and its identity, when it has one) and starts or
    /// steers the run. Must be idempotent per delivery id and per identity: a second dispatch
    /// of either returns `Duplicate`.
    fn dispatch(&self, job: Job) -> BoxFuture<'_, Result<DispatchOutcome, JobError>>;
}

/// Options of the listener.
#[derive(Clone, Debug)]
pub struct WebhookOptions {
    /// The secret shared with GitHub.
    pub secret: WebhookSecret,
    /// `[[triggers]]`.
    pub triggers: Vec<Trigger>,
    /// `[webhook]`: bots, the bot's login, the reply to senders without permission.
    pub senders: SenderPolicy,
    /// Runs waiting for CI on a commit, woken by `check_suite`, `check_run`, `workflow_run` and
    /// `status` deliveries about it.
    pub ci_wakes: CiWakes,
}

/// The listener: build with [`Webhook::new`], mount [`Webhook::router`]. Cheap to clone.
pub struct Webhook<S> {
    inner: Arc<Inner<S>>,
}

impl<S> Clone for Webhook<S> {
    fn clone(&self) -> Self {
        Webhook {
            inner: Arc::clone(&self.inner),
        }
    }
}

type PermissionCell = Arc<OnceCell<Permission>>;

struct Inner<S> {
    options: WebhookOptions,
    forge: Arc<dyn Forge>,
    sink: Arc<S>,
    recent: Mutex<Recent>,
    permissions: Mutex<HashMap<(Repo, String), (Instant, PermissionCell)>>,
    in_flight: AtomicUsize,
    idle: Notify,
    /// [`BODY_BUDGET`] less [`SMALL_BUDGET`], in [`BUDGET_UNIT`]s.
    bodies: Arc<Semaphore>,
    /// [`SMALL_BUDGET`], in bytes.
    small_bodies: Arc<Semaphore>,
    /// Bodies answered 503 for want of budget, logged at a bounded rate.
    over_budget: Mutex<RateLog>,
}

/// A bounded set of recent delivery ids, oldest evicted first.
#[derive(Default)]
struct Recent {
    ids: HashSet<String>,
    order: VecDeque<String>,
}

impl Recent {
    /// Inserts `id`; false if it was there.
    fn insert(&mut self, id: &str) -> bool {
        if !self.ids.insert(id.to_string()) {
            return false;
        }
        self.order.push_back(id.to_string());
        while self.order.len() > RECENT_DELIVERIES {
            if let Some(old) = self.order.pop_front() {
                self.ids.remove(&old);
            }
        }
        true
    }

    fn contains(&self, id: &str) -> bool {
        self.ids.contains(id)
    }

    fn remove(&mut self, id: &str) {
        if self.ids.remove(id) {
            self.order.retain(|o| o != id);
        }
    }
}

impl<S: JobSink> Webhook<S> {
    /// A listener that checks permissions through `forge` and sends jobs to `sink`.
    pub fn new(options: WebhookOptions, forge: Arc<dyn Forge>, sink: Arc<S>) -> Webhook<S> {
        Webhook {
            inner: Arc::new(Inner {
                options,
                forge,
                sink,
                recent: Mutex::new(Recent::default()),
                permissions: Mutex::new(HashMap::new()),
                in_flight: AtomicUsize::new(0),
                idle: Notify::new(),
                bodies: Arc::new(Semaphore::new((BODY_BUDGET - SMALL_BUDGET) / BUDGET_UNIT)),
                // In bytes: a body is charged exactly what arrived, however it is split.
                small_bodies: Arc::new(Semaphore::new(SMALL_BUDGET)),
                over_budget: Mutex::new(RateLog::default()),
            }),
        }
    }

    /// `POST /webhooks/github`; merge it into the daemon's router. The handler reads the body
    /// itself, within [`MAX_BODY`] and [`BODY_BUDGET`].
    pub fn router(&self) -> Router {
        Router::new()
            .route(PATH, post(receive::<S>))
            .with_state(Arc::clone(&self.inner))
    }

    /// Waits until every accepted delivery has been handled (permission checked, job
    /// dispatched or refused). For shutdown and tests.
    pub async fn wait_idle(&self) {
        loop {
            let notified = self.inner.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.inner.in_flight.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }
}

fn answer(status: StatusCode, body: Value) -> Response {
    (status, Json(body)).into_response()
}

/// Why a body was not read whole.
enum BodyRefused {
    TooLarge,
    Busy,
    Slow(Duration),
    Broken(String),
}

impl BodyRefused {
    fn answer(self) -> Response {
        match self {
            BodyRefused::TooLarge => answer(
                StatusCode::PAYLOAD_TOO_LARGE,
                json!({"error": format!("the body is over {MAX_BODY} bytes")}),
            ),
            BodyRefused::Busy => {
                let mut response = answer(
                    StatusCode::SERVICE_UNAVAILABLE,
                    json!({"error": "too many deliveries being read; redeliver later"}),
                );
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, header::HeaderValue::from_static("30"));
                response
            }
            BodyRefused::Slow(deadline) => answer(
                StatusCode::REQUEST_TIMEOUT,
                json!({"error": format!("the body did not arrive within {}s", deadline.as_secs())}),
            ),
            BodyRefused::Broken(e) => answer(
                StatusCode::BAD_REQUEST,
                json!({"error": format!("the body could not be read: {e}")}),
            ),
        }
    }
}

/// Reads the body within the budget and the deadline, computing the HMAC as it arrives.
///
/// A body announced at most [`SMALL_BODY`] (GitHub's ordinary deliveries) draws on
/// [`SMALL_BUDGET`] chunk by chunk, as its bytes arrive: a connection that announces a body
/// and sends nothing holds nothing, so silent or trickling connections cannot crowd real
/// deliveries out; it also has [`SMALL_DEADLINE`] rather than [`BODY_DEADLINE`]. A larger (or
/// chunked) body claims its announced length from the rest of the budget before it is read:
/// its buffer is allocated once, at that size (charging bytes as they arrive let forty large
/// bodies grow buffers in step and leave the allocator holding what they freed). The permits
/// are returned with the bytes: the budget is freed when they are.
async fn read_signed<S>(
    inner: &Inner<S>,
    headers: &HeaderMap,
    body: Body,
) -> Result<(Vec<u8>, Hmac<Sha256>, Option<OwnedSemaphorePermit>), BodyRefused> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_BODY) {
        return Err(BodyRefused::TooLarge);
    }
    // Without a length (chunked), the body may be as large as allowed.
    let limit = declared.unwrap_or(MAX_BODY);
    let small = limit <= SMALL_BODY;
    let mut held = if small {
        None
    } else {
        Some(charge(inner, &inner.bodies, units_for(limit)).await?)
    };
    let mut mac = inner.options.secret.mac(&[]);
    let mut bytes = Vec::with_capacity(limit.min(64 * 1024));
    let mut stream = body.into_data_stream();
    let reading = async {
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| BodyRefused::Broken(e.to_string()))?;
            if bytes.len() + chunk.len() > limit {
                return Err(BodyRefused::TooLarge);
            }
            if small {
                let bytes_in = u32::try_from(chunk.len()).unwrap_or(u32::MAX);
                let permit = charge(inner, &inner.small_bodies, bytes_in).await?;
                match held.as_mut() {
                    Some(held) => held.merge(permit),
                    None => held = Some(permit),
                }
            } else if bytes.capacity() - bytes.len() < chunk.len() {
                // Grow to what was announced at once rather than by doubling past it.
                bytes.reserve_exact(limit - bytes.len());
            }
            mac.update(&chunk);
            bytes.extend_from_slice(&chunk);
        }
        Ok(())
    };
    let deadline = if small { SMALL_DEADLINE } else { BODY_DEADLINE };
    match tokio::time::timeout(deadline, reading).await {
        Ok(Ok(())) => Ok((bytes, mac, held)),
        Ok(Err(refused)) => Err(refused),
        Err(_) => Err(BodyRefused::Slow(deadline)),
    }
}

fn units_for(bytes: usize) -> u32 {
    u32::try_from(bytes.div_ceil(BUDGET_UNIT).max(1)).unwrap_or(u32::MAX)
}

/// `units` of `pool`, waiting up to [`BODY_WAIT`]; past it, 503 (logged at a bounded rate).
async fn charge<S>(
    inner: &Inner<S>,
    pool: &Arc<Semaphore>,
    units: u32,
) -> Result<OwnedSemaphorePermit, BodyRefused> {
    match tokio::time::timeout(BODY_WAIT, Arc::clone(pool).acquire_many_owned(units)).await {
        Ok(Ok(permit)) => Ok(permit),
        _ => {
            let due = inner
                .over_budget
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .hit_count();
            if let Some(refused) = due {
                tracing::warn!(
                    refused,
                    "webhook bodies over the read budget answered 503 (a flood of unsigned \
                     deliveries?)"
                );
            }
            Err(BodyRefused::Busy)
        }
    }
}

async fn receive<S: JobSink>(
    State(inner): State<Arc<Inner<S>>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let unsigned = || {
        tracing::warn!(
            delivery = text("x-github-delivery").unwrap_or("-"),
            "webhook delivery with a missing or wrong signature refused"
        );
        answer(
            StatusCode::UNAUTHORIZED,
            json!({"error": "missing or invalid X-Hub-Signature-256"}),
        )
    };

    // 1. The signature, before anything else looks at the request: without one the body is
    // not read at all; with one, it is checked as the body streams in.
    let Some(signature) = text("x-hub-signature-256").and_then(parse_signature) else {
        return unsigned();
    };
    let (body, mac, budget) = match read_signed(&inner, &headers, body).await {
        Ok(read) => read,
        Err(refused) => return refused.answer(),
    };
    if mac.verify_slice(&signature).is_err() {
        return unsigned();
    }

    // 2. Headers and body.
    let (Some(event), Some(delivery)) = (text("x-github-event"), text("x-github-delivery")) else {
        return answer(
            StatusCode::BAD_REQUEST,
            json!({"error": "X-GitHub-Event and X-GitHub-Delivery are required"}),
        );
    };
    if text(header::CONTENT_TYPE.as_str())
        .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"))
    {
        return answer(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            json!({"error": "set the webhook's content type to application/json"}),
        );
    }
    // A typed parse reads only what triggers need. If it fails, a full parse tells malformed
    // JSON (400) from a well-formed payload of a shape baton does not know (202, ignored).
    let payload: Payload = match serde_json::from_slice(&body) {
        Ok(payload) if body.trim_ascii_start().starts_with(b"{") => payload,
        parsed => match serde_json::from_slice::<Value>(&body) {
            Ok(Value::Object(_)) => {
                let reason = match parsed {
                    Err(e) => format!("the payload's shape is not understood: {e}"),
                    Ok(_) => "the payload's shape is not understood".to_string(),
                };
                tracing::warn!(delivery, event, %reason, "webhook delivery ignored");
                return answer(
                    StatusCode::ACCEPTED,
                    json!({"status": "ignored", "reason": reason}),
                );
            }
            Ok(_) => {
                return answer(
                    StatusCode::BAD_REQUEST,
                    json!({"error": "the payload is not a JSON object"}),
                )
            }
            Err(e) => {
                return answer(
                    StatusCode::BAD_REQUEST,
                    json!({"error": format!("the payload is not JSON: {e}")}),
                )
            }
        },
    };
    if event == "ping" {
        return answer(StatusCode::OK, json!({"status": "pong"}));
    }
    // CI news starts and steers nothing: it wakes a run waiting on that commit, which reads the
    // checks again itself. Waking twice costs one more read, so it needs no dedup, and news of
    // a commit nobody waits on (an older push) changes nothing.
    if crate::triggers::CI_EVENTS.contains(&event) {
        let Some(sha) = payload.ci_head_sha(event) else {
            return answer(
                StatusCode::ACCEPTED,
                json!({"status": "ignored", "reason": format!("the `{event}` payload names no head commit")}),
            );
        };
        let woke = inner.options.ci_wakes.wake(sha);
        tracing::debug!(delivery, event, sha, woke, "CI news");
        return answer(
            StatusCode::ACCEPTED,
            json!({"status": if woke { "woke" } else { "ignored" }, "sha": sha}),
        );
    }

    // 3. Redeliveries and replays: in memory first (concurrent copies), then the sink's
    // durable record; by delivery id and by the event's own identity.
    let identity = EventIdentity::of(event, &payload, &body);
    let installation = installation_change(event, &body);
    // The bytes are not needed past here; their share of the budget goes back with them.
    drop(body);
    drop(budget);
    let event_key = event_key(&identity);
    let fresh = {
        let mut recent = inner.recent.lock().unwrap_or_else(|e| e.into_inner());
        let fresh = !recent.contains(delivery) && !recent.contains(&event_key);
        if fresh {
            recent.insert(delivery);
            recent.insert(&event_key);
        }
        fresh
    };
    if !fresh {
        tracing::info!(delivery, %identity, "webhook delivery is a duplicate");
        return answer(StatusCode::OK, json!({"status": "duplicate"}));
    }
    let seen = match inner.sink.seen_delivery(delivery).await {
        Ok(false) => inner.sink.seen_event(&identity).await,
        seen => seen,
    };
    match seen {
        Ok(false) => {}
        Ok(true) => {
            tracing::info!(delivery, %identity, "webhook delivery is a duplicate");
            return answer(StatusCode::OK, json!({"status": "duplicate"}));
        }
        Err(e) => {
            forget(&inner, delivery, Some(&identity));
            tracing::error!(delivery, error = %e, "the job store cannot be read");
            return answer(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"error": "the job store is unavailable; redeliver later"}),
            );
        }
    }

    // An App's installations change: nothing to run, but the operator wants to know.
    if let Some(line) = installation {
        tracing::info!(delivery, event, "{line}");
        return answer(StatusCode::OK, json!({"status": "logged"}));
    }

    // 4. What the delivery asks for.
    let job = match classify(
        event,
        delivery,
        &payload,
        &inner.options.triggers,
        &inner.options.senders,
    ) {
        Classified::Ignored(reason) => {
            tracing::debug!(delivery, event, %reason, "webhook delivery ignored");
            return answer(
                StatusCode::ACCEPTED,
                json!({"status": "ignored", "reason": reason}),
            );
        }
        Classified::Job(job) => Job {
            identity: Some(identity),
            ..job
        },
    };

    // 5. Queued: permission and dispatch happen after the answer.
    tracing::info!(delivery, event = %job.event, sender = %job.sender, repo = %job.repo,
        "webhook job queued");
    inner.in_flight.fetch_add(1, Ordering::AcqRel);
    let guard = InFlight(Arc::clone(&inner));
    tokio::spawn(async move {
        let inner = Arc::clone(&guard.0);
        handle_job(&inner, job).await;
        drop(guard);
    });
    answer(StatusCode::ACCEPTED, json!({"status": "queued"}))
}

/// What an `installation` or `installation_repositories` delivery says, in a line for the log
/// (the account, the installation and the repositories added or removed); `None` for other
/// events. Names and numbers only: the payload carries no secret, but nothing else is needed.
fn installation_change(event: &str, body: &[u8]) -> Option<String> {
    if event != "installation" && event != "installation_repositories" {
        return None;
    }
    let payload: Value = serde_json::from_slice(body).ok()?;
    let action = payload["action"].as_str().unwrap_or("?");
    let installation = &payload["installation"];
    let id = installation["id"].as_u64().unwrap_or(0);
    let account = installation["account"]["login"]
        .as_str()
        .or_else(|| installation["account"]["slug"].as_str())
        .unwrap_or("?");
    let names = |key: &str| -> Vec<String> {
        payload[key]
            .as_array()
            .map(|repos| {
                repos
                    .iter()
                    .filter_map(|r| r["full_name"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut line = format!("GitHub App installation {id} of {account}: {event}.{action}");
    for (key, word) in [
        ("repositories", "repositories"),
        ("repositories_added", "added"),
        ("repositories_removed", "removed"),
    ] {
        let list = names(key);
        if !list.is_empty() {
            line.push_str(&format!("; {word}: {}", list.join(", ")));
        }
    }
    Some(line)
}

/// Counts a queued delivery until it is handled, even if its task panics.
struct InFlight<S>(Arc<Inner<S>>);

impl<S> Drop for InFlight<S> {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

async fn handle_job<S: JobSink>(inner: &Inner<S>, job: Job) {
    let permission = match permission(inner, &job.repo, &job.sender).await {
        Ok(permission) => permission,
        Err(e) => {
            tracing::error!(delivery = %job.delivery_id, sender = %job.sender, repo = %job.repo,
                error = %e, "cannot check the sender's permission; nothing run (redeliver to retry)");
            forget_job(inner, &job);
            return;
        }
    };
    if !permission.can_steer() {
        tracing::info!(delivery = %job.delivery_id, sender = %job.sender, repo = %job.repo,
            ?permission, "sender may not start or steer runs; nothing run");
        // Only someone who asked (a label, a `/baton` comment) hears why nothing happened:
        // closing one's own issue or PR, or reviewing a PR, is not a request to baton.
        let asked = !matches!(
            job.action,
            JobAction::IssueClosed | JobAction::PullRequestClosed { .. }
        ) && !job.event.starts_with("pull_request_review");
        if let (true, Some(reply), Some(number)) = (
            asked,
            inner.options.senders.deny_reply.as_deref(),
            job.subject.conversation(),
        ) {
            let reply = format!("@{} {reply}", job.sender);
            if let Err(e) = inner.forge.create_comment(&job.repo, number, &reply).await {
                tracing::warn!(delivery = %job.delivery_id, error = %e, "cannot post the reply");
            }
        }
        return;
    }
    let delivery = job.delivery_id.clone();
    let kept = job.clone();
    match inner.sink.dispatch(job).await {
        Ok(outcome) => tracing::info!(%delivery, ?outcome, "webhook job dispatched"),
        Err(e) => {
            tracing::error!(%delivery, error = %e, "webhook job could not be dispatched (redeliver to retry)");
            forget_job(inner, &kept);
        }
    }
}

/// Lets a redelivery of `delivery` through again: nothing was stored for it, so GitHub's
/// "Redeliver" must not be answered "duplicate".
fn forget<S>(inner: &Inner<S>, delivery: &str, identity: Option<&EventIdentity>) {
    let mut recent = inner.recent.lock().unwrap_or_else(|e| e.into_inner());
    recent.remove(delivery);
    if let Some(identity) = identity {
        recent.remove(&event_key(identity));
    }
}

fn forget_job<S>(inner: &Inner<S>, job: &Job) {
    forget(inner, &job.delivery_id, job.identity.as_ref());
}

/// An event's identity among the delivery ids in [`Recent`].
fn event_key(identity: &EventIdentity) -> String {
    format!("event:{identity}")
}

/// The sender's permission, from the cache or the forge. Concurrent lookups of one
/// (repository, user) share one API call; failures are not cached.
async fn permission<S>(
    inner: &Inner<S>,
    repo: &Repo,
    user: &str,
) -> crate::forge::Result<Permission> {
    let ttl = Duration::from_secs(inner.options.senders.permission_cache_secs);
    let cell = {
        let mut cache = inner.permissions.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if cache.len() > 10_000 {
            cache.retain(|_, (at, _)| now.duration_since(*at) < ttl);
        }
        let key = (repo.clone(), user.to_string());
        match cache.get(&key) {
            Some((at, cell)) if now.duration_since(*at) < ttl => Arc::clone(cell),
            _ => {
                let cell = PermissionCell::default();
                cache.insert(key, (now, Arc::clone(&cell)));
                cell
            }
        }
    };
    cell.get_or_try_init(|| inner.forge.permission(repo, user))
        .await
        .copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures() {
        // GitHub's documented example: secret "It's a Secret to Everybody", body "Hello, World!".
        let secret = WebhookSecret::new("It's a Secret to Everybody").unwrap();
        let expected = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert_eq!(secret.sign(b"Hello, World!"), expected);
        assert!(secret.verify(expected, b"Hello, World!"));
        assert!(!secret.verify(expected, b"Hello, World?"));
        assert!(!secret.verify(&expected.replace("sha256=", "sha1="), b"Hello, World!"));
        assert!(!secret.verify("sha256=zz", b"Hello, World!"));
        assert!(!secret.verify("sha256=", b"Hello, World!"));
        let other = WebhookSecret::new("another").unwrap();
        assert!(!other.verify(expected, b"Hello, World!"));
        assert!(WebhookSecret::new("").is_err());
        assert_eq!(format!("{secret:?}"), "WebhookSecret(***)");
    }

    #[test]
    fn recent_is_bounded() {
        let mut recent = Recent::default();
        assert!(recent.insert("a"));
        assert!(!recent.insert("a"));
        for i in 0..RECENT_DELIVERIES {
            recent.insert(&i.to_string());
        }
        assert!(recent.insert("a"), "the oldest id is evicted");
        assert_eq!(recent.ids.len(), RECENT_DELIVERIES);
        recent.remove("a");
        assert!(recent.insert("a"));
    }
}
