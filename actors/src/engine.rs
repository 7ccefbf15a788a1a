//! The engine facade: the one handle the CLI, the HTTP API, Telegram and the tests hold.
//! No `ActorRef` and no channel crosses this boundary.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ractor::rpc::CallResult;
use ractor::{Actor, ActorRef};
use serde::Serialize;
use serde_json::{Map, Value};
use tokio::sync::broadcast;

use crate::action::{self, Action};
use crate::definition::{Definition, RollbackMode, Workflow};
use crate::error::{Error, Result};
use crate::machine::{Input, RollbackRequest};
use crate::notifier::{Notifier, NotifierArgs, NotifierHandle, Sink, SHUTDOWN_FLUSH};
use crate::procs::{self, ProcessGroups};
use crate::record::{Event, EventKind, Millis, RunRecord, RunStatus};
use crate::shell;
use crate::store::{Change, Job, Store, Tree, Write};
use crate::subject::{self, RunSearch};
use crate::supervisor::{Refusal, ResumeReport, Supervisor, SupervisorMsg};

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> Millis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as Millis)
        .unwrap_or(0)
}

/// Engine settings (the `[engine]` section of `config.toml`).
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// sled's page cache, bytes. Bounds the store's memory.
    pub cache_bytes: u64,
    /// Steps one run may enter unless its workflow says otherwise.
    pub max_transitions: u64,
    /// A run's head is snapshotted at least every this many events.
    pub snapshot_every: u64,
    /// Restarts of a panicking run actor allowed within `restart_window`.
    pub restart_budget: u32,
    /// The window of the restart budget.
    pub restart_window: Duration,
    /// Notices kept for slow subscribers before they lag.
    pub bus_capacity: usize,
    /// Runs executing at once; later starts wait as `pending`, in start order, until a
    /// slot frees. A run parked at a wait holds no slot. `0` means no limit.
    pub max_active_runs: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            cache_bytes: 64 * 1024 * 1024,
            max_transitions: 10_000,
            snapshot_every: 32,
            restart_budget: 3,
            restart_window: Duration::from_secs(60),
            bus_capacity: 8192,
            max_active_runs: 0,
        }
    }
}

/// What subscribers see: durable events, and progress messages (not stored).
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "notice", rename_all = "snake_case")]
pub enum Notice {
    /// A durable event.
    Event(Event),
    /// A progress message from a running step.
    Progress {
        /// The run.
        run: String,
        /// The step.
        step: String,
        /// The message.
        message: String,
    },
    /// The subscriber fell behind and missed this many notices (read the store).
    Lagged {
        /// How many.
        missed: u64,
    },
}

impl Notice {
    /// The run the notice is about.
    pub fn run(&self) -> Option<&str> {
        match self {
            Notice::Event(e) => Some(&e.run),
            Notice::Progress { run, .. } => Some(run),
            Notice::Lagged { .. } => None,
        }
    }
}

/// A stream of notices.
pub struct Subscription {
    rx: broadcast::Receiver<Notice>,
}

impl Subscription {
    /// The next notice; `None` once the engine is gone.
    pub async fn next(&mut self) -> Option<Notice> {
        match self.rx.recv().await {
            Ok(n) => Some(n),
            Err(broadcast::error::RecvError::Lagged(missed)) => Some(Notice::Lagged { missed }),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }
}

/// Transition latencies (input received → durable), in log-linear buckets.
pub struct Latency {
    buckets: Vec<AtomicU64>,
}

const SUB_BUCKETS: u64 = 16;

impl Latency {
    fn new() -> Self {
        Latency {
            buckets: (0..64 * SUB_BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn bucket(us: u64) -> usize {
        if us < SUB_BUCKETS {
            return us as usize;
        }
        let exp = 63 - us.leading_zeros() as u64;
        let mantissa = (us >> (exp - 4)) & (SUB_BUCKETS - 1);
        (exp * SUB_BUCKETS + mantissa) as usize
    }

    fn lower_bound(bucket: usize) -> u64 {
        let bucket = bucket as u64;
        if bucket < SUB_BUCKETS {
            return bucket;
        }
        let exp = bucket / SUB_BUCKETS;
        let mantissa = bucket % SUB_BUCKETS;
        (1 << exp) | (mantissa << (exp - 4))
    }

    /// Records one latency.
    pub fn record(&self, elapsed: Duration) {
        let us = elapsed.as_micros().min(u64::MAX as u128) as u64;
        self.buckets[Self::bucket(us)].fetch_add(1, Ordering::Relaxed);
    }

    /// Forgets everything recorded.
    pub fn reset(&self) {
        for b in &self.buckets {
            b.store(0, Ordering::Relaxed);
        }
    }

    /// The latency at quantile `q` (0..=1), in ms, and the count.
    pub fn quantile_ms(&self, q: f64) -> (f64, u64) {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return (0.0, 0);
        }
        let rank = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                let lo = Self::lower_bound(i);
                let hi = Self::lower_bound(i + 1).max(lo + 1);
                return ((lo + hi) as f64 / 2.0 / 1000.0, total);
            }
        }
        (0.0, total)
    }
}

pub(crate) struct Shared {
    pub(crate) store: Store,
    pub(crate) config: EngineConfig,
    pub(crate) bus: broadcast::Sender<Notice>,
    pub(crate) latency: Latency,
    actions: RwLock<HashMap<String, Arc<dyn Action>>>,
    /// Latest definition by workflow id.
    latest: RwLock<HashMap<String, Arc<Workflow>>>,
    /// Every definition a run may refer to, by `id \0 digest`.
    by_digest: RwLock<HashMap<String, Arc<Workflow>>>,
    /// Serialises job dedup (check, then create) so a redelivery starts nothing new.
    jobs: tokio::sync::Mutex<()>,
    /// Test hook: panics to inject into run actors, by workflow id.
    #[cfg(feature = "test-hooks")]
    panics: Mutex<HashMap<String, u32>>,
    /// Where steps record the process groups they spawn.
    pub(crate) procs: Arc<ProcessGroups>,
    /// The notifier, once started (one per engine).
    notifier: Mutex<Option<NotifierHandle>>,
}

impl Shared {
    pub(crate) fn action(&self, name: &str) -> Option<Arc<dyn Action>> {
        self.actions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    pub(crate) fn workspace(&self, run: &str) -> PathBuf {
        self.store.dir().join("workspaces").join(run)
    }

    #[cfg(feature = "test-hooks")]
    pub(crate) fn maybe_inject_panic(&self, workflow: &str) {
        let mut panics = self.panics.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = panics.get_mut(workflow) {
            if *n > 0 {
                *n -= 1;
                drop(panics);
                panic!("injected run actor panic for workflow `{workflow}`");
            }
        }
    }

    fn known_action(&self, name: &str) -> bool {
        self.actions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(name)
    }

    /// The exact definition a run started with.
    pub(crate) fn workflow_for(&self, id: &str, digest: &str) -> Result<Arc<Workflow>> {
        let key = format!("{id}\0{digest}");
        if let Some(wf) = self
            .by_digest
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return Ok(wf.clone());
        }
        let def = self
            .store
            .definition(id, digest)?
            .ok_or_else(|| Error::UnknownWorkflow(format!("{id} (revision {digest})")))?;
        let wf = Arc::new(Workflow::new(def, &format!("workflow {id}"), &|a| {
            self.known_action(a)
        })?);
        self.by_digest
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, wf.clone());
        Ok(wf)
    }

    /// A run as of its last durable event, with its definition.
    pub(crate) fn load_run(&self, run: &str) -> Result<(Arc<Workflow>, RunRecord)> {
        Self::load_from(&self.store, self, run, None)
    }

    /// The same for a run with no live actor (nothing can be writing it), from `head` when
    /// the caller has read it already.
    pub(crate) fn load_idle_run(
        &self,
        run: &str,
        head: Option<RunRecord>,
    ) -> Result<(Arc<Workflow>, RunRecord)> {
        Self::load_from(&self.store.for_idle_runs(), self, run, head)
    }

    fn load_from(
        store: &Store,
        shared: &Shared,
        run: &str,
        head: Option<RunRecord>,
    ) -> Result<(Arc<Workflow>, RunRecord)> {
        let head = match head {
            Some(h) => h,
            None => store
                .head(run)?
                .ok_or_else(|| Error::UnknownRun(run.to_string()))?,
        };
        let wf = shared.workflow_for(&head.workflow_id, &head.digest)?;
        let ids: Vec<String> = wf.steps().iter().map(|s| s.id.clone()).collect();
        Ok((wf, store.complete_run(head, &ids)?))
    }
}

/// Whether an event can leave a run completed, failed, cancelled or parked.
fn settles(kind: &EventKind) -> bool {
    matches!(
        kind,
        EventKind::RunCompleted
            | EventKind::RunFailed { .. }
            | EventKind::RunCancelled { .. }
            | EventKind::WaitStarted { .. }
    )
}

/// Which runs to list.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    /// Only runs with this status.
    pub status: Option<RunStatus>,
    /// Only runs of this workflow.
    pub workflow: Option<String>,
}

/// What [`Engine::search_runs`] found.
#[derive(Debug, Clone, Default)]
pub struct FoundRuns {
    /// The page asked for, newest first (heads, without steps).
    pub runs: Vec<RunRecord>,
    /// How many runs match the search and the filter.
    pub matching: usize,
    /// How many runs of each status match the search and the filter's workflow.
    pub counts: Vec<(RunStatus, usize)>,
}

/// The engine handle; cheap to clone.
#[derive(Clone)]
pub struct Engine {
    shared: Arc<Shared>,
    supervisor: ActorRef<SupervisorMsg>,
}

static RUN_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A new run id: `run_` + creation time and randomness in Crockford base32, so ids sort
/// by creation and never collide across processes.
pub fn new_run_id() -> String {
    const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";
    let ms = now_ms();
    let counter = RUN_COUNTER.fetch_add(1, Ordering::Relaxed) & 0xffff;
    let random = (fastrand::u64(..) & !0xffff) | counter;
    let mut id = String::with_capacity(4 + 10 + 13);
    id.push_str("run_");
    for shift in (0..10).rev() {
        id.push(ALPHABET[((ms >> (shift * 5)) & 31) as usize] as char);
    }
    for shift in (0..13).rev() {
        id.push(ALPHABET[((random >> (shift * 5)) & 31) as usize] as char);
    }
    id
}

impl Engine {
    /// Opens the store in `dir` and starts the supervisor. Runs are not resumed until
    /// [`Engine::resume`] is called, so the app can register its actions first.
    ///
    /// Before anything else, what is left of a crashed previous owner's commands is killed
    /// (see [`crate::procs`]): a step in flight at the crash runs again only once the old copy
    /// is gone.
    pub async fn open(dir: &Path, config: EngineConfig) -> Result<Engine> {
        let store = Store::open(dir, config.cache_bytes)?;
        let reaped = procs::reap_leftovers(&store).await?;
        if reaped.examined > 0 {
            tracing::warn!(
                "killed {} leftover process(es) of {} process group(s) of a previous run of baton",
                reaped.killed,
                reaped.examined
            );
        }
        let procs = ProcessGroups::install(store.clone());
        let (bus, _) = broadcast::channel(config.bus_capacity);
        let shared = Arc::new(Shared {
            store,
            bus,
            latency: Latency::new(),
            actions: RwLock::new(HashMap::new()),
            latest: RwLock::new(HashMap::new()),
            by_digest: RwLock::new(HashMap::new()),
            jobs: tokio::sync::Mutex::new(()),
            #[cfg(feature = "test-hooks")]
            panics: Mutex::new(HashMap::new()),
            procs,
            notifier: Mutex::new(None),
            config,
        });
        let (supervisor, _) = Actor::spawn(None, Supervisor, shared.clone())
            .await
            .map_err(|e| Error::Io {
                path: dir.to_path_buf(),
                source: std::io::Error::other(format!("cannot start the supervisor: {e}")),
            })?;
        let engine = Engine { shared, supervisor };
        engine.register_action("noop", action::noop());
        engine.register_action("log", action::log());
        engine.register_action("shell", shell::shell());
        Ok(engine)
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        self.shared.store.dir()
    }

    /// The store: the engine's own. The app goes through the engine's operations.
    #[cfg(any(test, feature = "test-hooks"))]
    pub fn store(&self) -> &Store {
        &self.shared.store
    }

    /// Records a job that started no run of its own (e.g. a delivery that steered run
    /// `job.run_id`), durably: looking it up by id ([`Engine::job`]) then finds it, so the
    /// same delivery is not acted on twice.
    pub async fn record_job(&self, job: &Job) -> Result<()> {
        self.shared
            .store
            .commit(vec![Write::put(
                Tree::Jobs,
                job.id.clone().into_bytes(),
                job,
            )])
            .await
    }

    /// Writes a consistent copy of the store to `path` (`baton backup`); commits wait while
    /// it is taken.
    pub async fn backup(&self, path: &Path) -> Result<crate::store::BackupStats> {
        let store = self.shared.store.clone();
        let path = path.to_path_buf();
        tokio::task::spawn_blocking(move || store.backup(&path))
            .await
            .map_err(|e| Error::Io {
                path: self.dir().to_path_buf(),
                source: std::io::Error::other(format!("the backup task failed: {e}")),
            })?
    }

    /// The store's group-commit counters (`/metrics`, benchmarks).
    pub fn commit_stats(&self) -> &crate::store::CommitStats {
        self.shared.store.stats()
    }

    /// Bytes the store takes on disk.
    pub fn store_size(&self) -> u64 {
        self.shared.store.size_on_disk()
    }

    /// The registry of the process groups steps run in.
    pub fn process_groups(&self) -> &Arc<ProcessGroups> {
        &self.shared.procs
    }

    /// Transition latencies recorded so far.
    pub fn latency(&self) -> &Latency {
        &self.shared.latency
    }

    /// Registers an action under `name`, replacing any earlier one.
    pub fn register_action(&self, name: &str, action: impl Action) {
        self.shared
            .actions
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string(), Arc::new(action));
    }

    /// The names of the registered actions.
    pub fn actions(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .shared
            .actions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect();
        names.sort();
        names
    }

    /// Validates a definition against the registered actions, writing nothing.
    pub fn validate(&self, def: Definition, origin: &str) -> Result<Workflow> {
        Workflow::new(def, origin, &|a| self.shared.known_action(a))
    }

    /// Validates and registers a definition; it becomes the latest of its id and is stored
    /// so runs can resume with it after a restart.
    pub async fn register_workflow(&self, def: Definition, origin: &str) -> Result<Arc<Workflow>> {
        let wf = Arc::new(self.validate(def, origin)?);
        let id = wf.id().to_string();
        let stored = self.shared.store.definition(&id, &wf.digest)?.is_some();
        let latest = self.shared.store.latest_digest(&id)?;
        if !stored || latest.as_deref() != Some(wf.digest.as_str()) {
            self.shared
                .store
                .commit(Store::definition_writes(&wf.def, &wf.digest))
                .await?;
        }
        self.shared
            .by_digest
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(format!("{id}\0{}", wf.digest), wf.clone());
        self.shared
            .latest
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, wf.clone());
        Ok(wf)
    }

    /// The latest definition of a workflow (registered in this process, or stored).
    pub fn workflow(&self, id: &str) -> Result<Arc<Workflow>> {
        if let Some(wf) = self
            .shared
            .latest
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
        {
            return Ok(wf.clone());
        }
        let digest = self
            .shared
            .store
            .latest_digest(id)?
            .ok_or_else(|| Error::UnknownWorkflow(id.to_string()))?;
        self.shared.workflow_for(id, &digest)
    }

    /// Every known workflow's latest definition, by id.
    pub fn workflows(&self) -> Result<Vec<Arc<Workflow>>> {
        let mut by_id: HashMap<String, Arc<Workflow>> = HashMap::new();
        for (digest, def) in self.shared.store.latest_definitions()? {
            match self.shared.workflow_for(&def.id, &digest) {
                Ok(wf) => {
                    by_id.insert(def.id.clone(), wf);
                }
                Err(e) => tracing::warn!("stored workflow `{}`: {e}", def.id),
            }
        }
        for (id, wf) in self
            .shared
            .latest
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            by_id.insert(id.clone(), wf.clone());
        }
        let mut all: Vec<_> = by_id.into_values().collect();
        all.sort_by(|a, b| a.id().cmp(b.id()));
        Ok(all)
    }

    /// Starts a run of the latest `workflow` with `input`. The run exists durably when this
    /// returns its id.
    pub async fn start(
        &self,
        workflow: &str,
        input: Map<String, Value>,
        job: Option<Job>,
    ) -> Result<String> {
        self.start_job(workflow, input, job).await.map(|(id, _)| id)
    }

    /// Like [`Engine::start`], but a job whose id was seen before starts nothing and
    /// returns the run it started then; the flag says whether a run was created.
    pub async fn start_job(
        &self,
        workflow: &str,
        input: Map<String, Value>,
        job: Option<Job>,
    ) -> Result<(String, bool)> {
        let wf = self.workflow(workflow)?;
        let input = wf.resolve_input(input)?;
        let _dedup = self.shared.jobs.lock().await;
        if let Some(job) = &job {
            if let Some(seen) = self.shared.store.job(&job.id)? {
                if let Some(run) = seen.run_id {
                    return Ok((run, false));
                }
            }
        }
        let id = new_run_id();
        let now = now_ms();
        let mut rec = RunRecord::new(id.clone(), wf.steps().iter().map(|s| s.id.clone()), now);
        let event = Event {
            run: id.clone(),
            seq: 1,
            at: now,
            kind: EventKind::RunCreated {
                workflow_id: wf.id().to_string(),
                version: wf.def.version,
                digest: wf.digest.clone(),
                input,
                job_id: job.as_ref().map(|j| j.id.clone()),
            },
        };
        rec.apply(&event);
        let mut writes = vec![Write::put(
            Tree::Events,
            crate::store::run_key(&id, 1),
            &event,
        )];
        writes.extend(Store::run_index_writes(&rec));
        writes.extend(Store::subject_writes(&id, &rec.input, job.as_ref()));
        writes.push(Write::put(Tree::Runs, id.as_bytes().to_vec(), &rec));
        writes.push(Write::put_raw(
            Tree::Unfinished,
            id.as_bytes().to_vec(),
            Vec::new(),
        ));
        if let Some(mut job) = job {
            job.run_id = Some(id.clone());
            if job.created_at == 0 {
                job.created_at = now;
            }
            writes.push(Write::put(Tree::Jobs, job.id.clone().into_bytes(), &job));
        }
        self.shared.store.commit(writes).await?;
        let _ = self.shared.bus.send(Notice::Event(event));
        self.supervisor
            .cast(SupervisorMsg::Deliver {
                run: id.clone(),
                input: Input::Start,
                reply: None,
            })
            .map_err(|_| Error::ShuttingDown)?;
        Ok((id, true))
    }

    async fn command(&self, run: &str, input: Input) -> Result<()> {
        let answer = self
            .supervisor
            .call(
                |reply| SupervisorMsg::Deliver {
                    run: run.to_string(),
                    input,
                    reply: Some(reply),
                },
                None,
            )
            .await
            .map_err(|_| Error::ShuttingDown)?;
        match answer {
            CallResult::Success(Ok(())) => Ok(()),
            CallResult::Success(Err(Refusal::UnknownRun)) => Err(Error::UnknownRun(run.to_string())),
            CallResult::Success(Err(Refusal::WrongState(status, message))) => Err(Error::WrongState {
                run: run.to_string(),
                status: status.to_string(),
                message,
            }),
            CallResult::Success(Err(Refusal::Failed(message))) => Err(Error::Io {
                path: self.dir().to_path_buf(),
                source: std::io::Error::other(message),
            }),
            // The run's actor crashed before answering; it restarts from the store.
            CallResult::Timeout | CallResult::SenderError => Err(Error::Io {
                path: self.dir().to_path_buf(),
                source: std::io::Error::other(format!(
                    "run {run}: its actor stopped before answering; check `baton show {run}` and try again"
                )),
            }),
        }
    }

    /// Sends a named signal; kept until the run reaches a wait for it.
    pub async fn signal(&self, run: &str, name: &str, data: Value) -> Result<()> {
        self.command(
            run,
            Input::Signal {
                name: name.to_string(),
                data,
            },
        )
        .await
    }

    /// Approves the wait the run is parked at.
    pub async fn approve(&self, run: &str, by: &str) -> Result<()> {
        self.command(run, Input::Approve { by: by.to_string() })
            .await
    }

    /// Rejects the wait the run is parked at (the wait step fails).
    pub async fn reject(&self, run: &str, by: &str) -> Result<()> {
        self.command(run, Input::Reject { by: by.to_string() })
            .await
    }

    /// Runs the failed step again (of a run paused for a person, or a failed run).
    pub async fn retry(&self, run: &str, by: &str) -> Result<()> {
        self.command(run, Input::Retry { by: by.to_string() }).await
    }

    /// Skips the failed or waiting step and goes on.
    pub async fn skip(&self, run: &str, by: &str) -> Result<()> {
        self.command(run, Input::Skip { by: by.to_string() }).await
    }

    /// Finished runs (completed, failed or cancelled) that ended before `cutoff`, oldest first.
    pub fn finished_before(&self, cutoff: Millis) -> Result<Vec<RunRecord>> {
        let store = &self.shared.store;
        let mut out = Vec::new();
        for status in [
            RunStatus::Completed,
            RunStatus::Failed,
            RunStatus::Cancelled,
        ] {
            for id in store.run_ids_by_status(status)? {
                if let Some(head) = store.head(&id)? {
                    let ended = head.completed_at.unwrap_or(head.created_at);
                    if head.status.is_terminal() && ended < cutoff {
                        out.push(head);
                    }
                }
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// Deletes finished runs with everything stored for them (events, step records, change
    /// journals, notifier deliveries, jobs, index entries), `batch` runs per group commit: other
    /// writers' commits go between batches, so the engine never pauses. A run that is no
    /// longer finished (retried meanwhile) is skipped. Returns the ids deleted.
    pub async fn delete_runs(&self, ids: &[String], batch: usize) -> Result<Vec<String>> {
        let store = &self.shared.store;
        let mut deleted = Vec::new();
        for chunk in ids.chunks(batch.max(1)) {
            let mut writes = Vec::new();
            let mut these = Vec::new();
            for id in chunk {
                let Some(head) = store.head(id)? else {
                    continue;
                };
                if !head.status.is_terminal() {
                    continue;
                }
                writes.extend(store.run_delete_writes(&head)?);
                these.push(id.clone());
            }
            if !writes.is_empty() {
                store.commit(writes).await?;
            }
            deleted.extend(these);
        }
        Ok(deleted)
    }

    /// The run's workspace directory (`<data dir>/workspaces/<run>`), which may not exist.
    pub fn workspace_dir(&self, run: &str) -> PathBuf {
        self.shared.workspace(run)
    }

    /// Cancels the run; compensations per its workflow's `rollback_on_abort`.
    pub async fn cancel(&self, run: &str, by: &str) -> Result<()> {
        self.command(run, Input::Cancel { by: by.to_string() })
            .await
    }

    /// Aborts the run (it fails); `mode` says what to undo (default: the workflow's).
    pub async fn abort(&self, run: &str, mode: Option<RollbackMode>, by: &str) -> Result<()> {
        self.command(
            run,
            Input::Abort {
                by: by.to_string(),
                mode,
            },
        )
        .await
    }

    /// Rolls the run back: soft, hard, or its last N completed steps.
    pub async fn rollback(&self, run: &str, request: RollbackRequest, by: &str) -> Result<()> {
        self.command(
            run,
            Input::Rollback {
                by: by.to_string(),
                request,
            },
        )
        .await
    }

    /// Links `run` to `tag`, a name of the app's choosing (a chat, say), durably; linking
    /// twice is a no-op. The engine gives tags no meaning: it only lists them back.
    pub async fn tag_run(&self, tag: &str, run: &str) -> Result<()> {
        if tag.is_empty() || tag.as_bytes().contains(&0) {
            return Err(Error::Io {
                path: self.dir().to_path_buf(),
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("run tag {tag:?}: a tag must be non-empty and hold no NUL byte"),
                ),
            });
        }
        self.shared.load_run(run)?;
        if self.shared.store.is_tagged(tag, run)? {
            return Ok(());
        }
        let order = self.shared.store.next_id()?;
        self.shared
            .store
            .commit(vec![Write::put_raw(
                Tree::RunTags,
                Store::tag_key(tag, run),
                order.to_be_bytes().to_vec(),
            )])
            .await
    }

    /// The runs linked to `tag` by [`Engine::tag_run`], most recently linked first.
    pub fn tagged_runs(&self, tag: &str) -> Result<Vec<String>> {
        self.shared.store.tagged_run_ids(tag)
    }

    /// A run with its steps, as of its last durable event.
    pub fn run(&self, id: &str) -> Result<RunRecord> {
        Ok(self.shared.load_run(id)?.1)
    }

    /// The definition a run started with.
    pub fn run_workflow(&self, id: &str) -> Result<Arc<Workflow>> {
        Ok(self.shared.load_run(id)?.0)
    }

    /// Runs matching `filter`, newest first (without their steps).
    pub fn runs(&self, filter: &RunFilter) -> Result<Vec<RunRecord>> {
        let mut out = Vec::new();
        for mut head in self.shared.store.heads()? {
            if let Some(w) = &filter.workflow {
                if &head.workflow_id != w {
                    continue;
                }
            }
            if !head.status.is_terminal() {
                for event in self.shared.store.events(&head.id, head.seq)? {
                    head.apply(&event);
                }
            }
            // (heads are rewritten on every status change, so a terminal head is current)
            if filter.status.is_some_and(|s| s != head.status) {
                continue;
            }
            out.push(head);
        }
        out.reverse();
        Ok(out)
    }

    /// How many runs have each status (of one workflow, if given), from the run index.
    pub fn run_counts(&self, workflow: Option<&str>) -> Result<Vec<(RunStatus, usize)>> {
        let store = &self.shared.store;
        RunStatus::ALL
            .iter()
            .map(|s| Ok((*s, store.count_by_status(workflow, *s)?)))
            .collect()
    }

    /// One page of the runs matching `filter`, newest first (without their steps), and how
    /// many match in all; read through the run index, not every run.
    pub fn runs_page(
        &self,
        filter: &RunFilter,
        offset: usize,
        limit: usize,
    ) -> Result<(Vec<RunRecord>, usize)> {
        let (ids, total) = self.shared.store.run_ids_page(
            filter.status,
            filter.workflow.as_deref(),
            offset,
            limit,
        )?;
        Ok((self.current_heads(ids.iter())?, total))
    }

    /// The heads of `ids` as of their last durable event (unknown ids are left out).
    fn current_heads<'a>(&self, ids: impl Iterator<Item = &'a String>) -> Result<Vec<RunRecord>> {
        let store = &self.shared.store;
        let mut out = Vec::new();
        for id in ids {
            let Some(mut head) = store.head(id)? else {
                continue;
            };
            // (heads are rewritten on every status change, so a terminal head is current)
            if !head.status.is_terminal() {
                for event in store.events(&head.id, head.seq)? {
                    head.apply(&event);
                }
            }
            out.push(head);
        }
        Ok(out)
    }

    /// The runs about `repo`'s issue or pull request `number`, newest first (without their
    /// steps), however they were started; read through the index of what runs are about.
    pub fn runs_for_issue(&self, repo: &str, number: u64) -> Result<Vec<RunRecord>> {
        let ids = self
            .shared
            .store
            .run_ids_about(&subject::issue_name(repo, number))?;
        self.current_heads(ids.iter())
    }

    /// One page of the runs `search` names that also match `filter`, newest first, with how
    /// many match and how many of each status match `search` and `filter.workflow` (so a page
    /// can show the counts it filters by). Reads the indexes and the page's heads only.
    pub fn search_runs(
        &self,
        search: &RunSearch,
        filter: &RunFilter,
        offset: usize,
        limit: usize,
    ) -> Result<FoundRuns> {
        let store = &self.shared.store;
        let ids = match search {
            RunSearch::IdPrefix(prefix) => store.run_ids_with_prefix(prefix)?,
            RunSearch::Repo(repo) => store.run_ids_about(&subject::repo_name(repo))?,
            RunSearch::Issue { repo, number } => {
                store.run_ids_about(&subject::issue_name(repo, *number))?
            }
        };
        let mut counts: Vec<(RunStatus, usize)> = RunStatus::ALL.iter().map(|s| (*s, 0)).collect();
        let mut chosen = Vec::new();
        for id in ids {
            if let Some(w) = &filter.workflow {
                if !store.is_of_workflow(&id, w)? {
                    continue;
                }
            }
            let Some(status) = store.status_of(&id)? else {
                continue;
            };
            if let Some(slot) = counts.iter_mut().find(|(s, _)| *s == status) {
                slot.1 += 1;
            }
            if filter.status.is_none_or(|s| s == status) {
                chosen.push(id);
            }
        }
        Ok(FoundRuns {
            runs: self.current_heads(chosen.iter().skip(offset).take(limit))?,
            matching: chosen.len(),
            counts,
        })
    }

    /// A run's events with `seq > since`.
    pub fn events(&self, run: &str, since: u64) -> Result<Vec<Event>> {
        if self.shared.store.head(run)?.is_none() {
            return Err(Error::UnknownRun(run.to_string()));
        }
        self.shared.store.events(run, since)
    }

    /// A run's change journal, oldest first.
    pub fn changes(&self, run: &str) -> Result<Vec<Change>> {
        self.shared.store.changes(run)
    }

    /// A job.
    pub fn job(&self, id: &str) -> Result<Option<Job>> {
        self.shared.store.job(id)
    }

    /// Notices from now on. Subscribe before reading the store to miss nothing.
    pub fn subscribe(&self) -> Subscription {
        Subscription {
            rx: self.shared.bus.subscribe(),
        }
    }

    /// Waits until the run needs nobody but the outside world: completed, failed,
    /// cancelled, or waiting for a signal or a person (a retry's backoff is waited out).
    pub async fn settled(&self, run: &str) -> Result<RunRecord> {
        let mut sub = self.subscribe();
        loop {
            // The head and its newest events only: cheap even for a run of 100,000 steps.
            let head = self.head(run)?;
            let retrying = head
                .waiting_for
                .as_ref()
                .is_some_and(|w| w.kind == crate::WaitKind::Retry);
            if !matches!(head.status, RunStatus::Pending | RunStatus::Running) && !retrying {
                return self.run(run);
            }
            // Look again only when an event of this run may have settled it.
            loop {
                match sub.next().await {
                    Some(Notice::Event(e)) if e.run == run && settles(&e.kind) => break,
                    Some(Notice::Lagged { .. }) => break,
                    Some(_) => continue,
                    None => return Err(Error::ShuttingDown),
                }
            }
        }
    }

    /// A run's head with its newest events applied, without its steps.
    pub fn head(&self, run: &str) -> Result<RunRecord> {
        let mut head = self
            .shared
            .store
            .head(run)?
            .ok_or_else(|| Error::UnknownRun(run.to_string()))?;
        for event in self.shared.store.events(run, head.seq)? {
            head.apply(&event);
        }
        Ok(head)
    }

    /// Starts actors for every unfinished run and arms every persisted timer.
    pub async fn resume(&self) -> Result<ResumeReport> {
        self.resume_inner(None).await
    }

    /// Starts one unfinished run's actor again.
    pub async fn resume_run(&self, run: &str) -> Result<ResumeReport> {
        self.resume_inner(Some(run.to_string())).await
    }

    async fn resume_inner(&self, only: Option<String>) -> Result<ResumeReport> {
        let answer = self
            .supervisor
            .call(|reply| SupervisorMsg::Resume(only.clone(), reply), None)
            .await
            .map_err(|_| Error::ShuttingDown)?;
        match answer {
            CallResult::Success(Ok(report)) => Ok(report),
            CallResult::Success(Err(message)) if message.starts_with("unknown run") => {
                Err(Error::UnknownRun(only.unwrap_or_default()))
            }
            CallResult::Success(Err(message)) => Err(Error::Io {
                path: self.dir().to_path_buf(),
                source: std::io::Error::other(message),
            }),
            _ => Err(Error::ShuttingDown),
        }
    }

    /// Run actors alive now (parked runs hold none).
    pub async fn live_runs(&self) -> usize {
        match self.supervisor.call(SupervisorMsg::LiveRuns, None).await {
            Ok(CallResult::Success(n)) => n,
            _ => 0,
        }
    }

    /// Sends the notifier's pending updates now and waits up to `within` for them; `true` when
    /// there is no notifier or everything went out in time. For a command that is about to say
    /// how a run ended, after the progress it showed.
    pub async fn flush_notifier(&self, within: Duration) -> bool {
        let handle = self
            .shared
            .notifier
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        match handle {
            Some(handle) => handle.flush(within).await,
            None => true,
        }
    }

    /// Starts the notifier (one per engine): every run's progress goes to each sink that
    /// reports it, at most once per `interval` per target, failures, waits and completion at
    /// once. Runs whose durable delivery is older than the run are caught up now. Sinks are
    /// asked, in order, whether they report a run; a sink's `name` must be unique.
    pub async fn start_notifier(
        &self,
        sinks: Vec<(Arc<dyn Sink>, Duration)>,
    ) -> Result<NotifierHandle> {
        let mut names = std::collections::HashSet::new();
        for (sink, _) in &sinks {
            if !names.insert(sink.name().to_string()) {
                return Err(Error::Io {
                    path: self.dir().to_path_buf(),
                    source: std::io::Error::other(format!(
                        "two notifier sinks are named `{}`",
                        sink.name()
                    )),
                });
            }
        }
        let earlier = self
            .shared
            .notifier
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(earlier) = earlier {
            // One notifier per engine: the new set of sinks replaces the old one.
            earlier.stop(SHUTDOWN_FLUSH).await;
        }
        let args = NotifierArgs {
            shared: self.shared.clone(),
            sinks,
        };
        let (actor, _) = Actor::spawn(None, Notifier, args)
            .await
            .map_err(|e| Error::Io {
                path: self.dir().to_path_buf(),
                source: std::io::Error::other(format!("cannot start the notifier: {e}")),
            })?;
        let handle = NotifierHandle::new(actor);
        *self
            .shared
            .notifier
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(handle.clone());
        Ok(handle)
    }

    /// Stops the supervisor (and with it every run actor), lets the notifier deliver what is
    /// pending (within [`SHUTDOWN_FLUSH`]), and flushes the store.
    pub async fn shutdown(&self) -> Result<()> {
        let _ = self
            .supervisor
            .stop_and_wait(None, Some(Duration::from_secs(10)))
            .await;
        let notifier = self
            .shared
            .notifier
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(notifier) = notifier {
            notifier.stop(SHUTDOWN_FLUSH).await;
        }
        self.shared.store.flush_blocking()
    }

    /// Test hook: the next `n` inputs to run actors of `workflow` panic.
    #[cfg(feature = "test-hooks")]
    pub fn inject_run_actor_panics(&self, workflow: &str, n: u32) {
        self.shared
            .panics
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(workflow.to_string(), n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_sort_by_time_and_differ() {
        let a = new_run_id();
        std::thread::sleep(Duration::from_millis(2));
        let b = new_run_id();
        assert!(a < b, "{a} {b}");
        assert_eq!(a.len(), 27);
        let many: std::collections::HashSet<String> = (0..10_000).map(|_| new_run_id()).collect();
        assert_eq!(many.len(), 10_000);
    }

    #[test]
    fn latency_quantiles() {
        let l = Latency::new();
        for us in 1..=1000u64 {
            l.record(Duration::from_micros(us));
        }
        let (p50, n) = l.quantile_ms(0.5);
        assert_eq!(n, 1000);
        assert!((0.45..0.56).contains(&p50), "{p50}");
        let (p99, _) = l.quantile_ms(0.99);
        assert!((0.93..1.05).contains(&p99), "{p99}");
    }
}
