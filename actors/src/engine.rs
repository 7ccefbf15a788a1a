//! The engine facade: the one handle the CLI, the HTTP API, Telegram and the tests hold.
//! No `ActorRef` and no channel crosses this boundary.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use ractor::rpc::CallResult;
use ractor::{Actor, ActorRef};
use serde_json::{Map, Value};
use tokio::sync::broadcast;

use crate::action::{self, Action};
use crate::admission::{Admission, QueuedBehind, RunKeys};
use crate::clock::{now_ms, Millis};
use crate::cluster;
use crate::definition::{Definition, Interface, Provenance, RollbackMode, Workflow};
use crate::error::{Error, Result};
use crate::machine::{Input, RollbackRequest};
use crate::messages::{Refusal, Resume, ResumeReport, SupervisorMsg};
use crate::notice::Notice;
use crate::notifier::{Notifier, NotifierArgs, NotifierHandle, Sink, SHUTDOWN_FLUSH};
use crate::procs::{self, ProcessGroups};
use crate::record::{Event, EventKind, RunRecord, RunStatus};
use crate::shared::{EngineConfig, Latency, Shared};
use crate::shell;
use crate::store::{self, Batch, Change, Job, RunQuery};
use crate::subject::{self, RunSearch, Subject, SubjectKind};
use crate::supervisor::Supervisor;

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
    /// The notifier, once started (one per engine).
    notifier: Arc<Mutex<Option<NotifierHandle>>>,
    /// Serving (from the first resume on): with a shared store, runs of lapsed daemons are
    /// taken over.
    serving: Arc<std::sync::atomic::AtomicBool>,
    /// The hold on its runs, with a shared store.
    lease: Arc<Option<cluster::Lease>>,
}

static RUN_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A new run id: `run_` + creation time, a counter and randomness in Crockford base32, so
/// ids sort by creation (within one millisecond too, in one process) and never collide
/// across processes.
pub fn new_run_id() -> String {
    const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";
    let ms = now_ms();
    // The counter above the random bits: ids made in one millisecond sort in start order.
    let counter = RUN_COUNTER.fetch_add(1, Ordering::Relaxed) & 0xffff;
    let random = (counter << 44) | (fastrand::u64(..) & ((1 << 44) - 1));
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
        let store = store::open(dir, &config.backend, config.cache_bytes)?;
        let reaped = procs::reap_leftovers(&*store).await?;
        if reaped.examined > 0 {
            tracing::warn!(
                "killed {} leftover process(es) of {} process group(s) of a previous run of baton",
                reaped.killed,
                reaped.examined
            );
        }
        if let Some(cluster) = store.cluster() {
            // The reap may take seconds: the lease is renewed before anything else holds it.
            // Lost meanwhile, this daemon does not start; a slow renewal is retried by the
            // lease's task.
            match cluster.renew() {
                Err(e @ Error::LeaseLost { .. }) => return Err(e),
                Err(e) => tracing::warn!("cannot renew this daemon's lease yet: {e}"),
                Ok(()) => {}
            }
        }
        let procs = ProcessGroups::install(store.clone());
        let (bus, _) = broadcast::channel(config.bus_capacity);
        let shared = Arc::new(Shared {
            store,
            bus,
            latency: Latency::new(),
            actions: RwLock::new(HashMap::new()),
            shared_actions: RwLock::new(Vec::new()),
            subject_kinds: RwLock::new(HashMap::new()),
            latest: RwLock::new(HashMap::new()),
            by_digest: RwLock::new(HashMap::new()),
            builtins: RwLock::new(Default::default()),
            jobs: (0..crate::shared::JOB_LOCK_STRIPES)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
            settle_waiters: Mutex::new(HashMap::new()),
            #[cfg(feature = "test-hooks")]
            panics: Mutex::new(HashMap::new()),
            #[cfg(feature = "test-hooks")]
            notifier_panics: std::sync::atomic::AtomicU32::new(0),
            procs,
            admission: Mutex::new(Admission::new(config.limits())),
            config,
        });
        let (supervisor, _) = Actor::spawn(None, Supervisor, shared.clone())
            .await
            .map_err(|e| Error::Io {
                path: dir.to_path_buf(),
                source: std::io::Error::other(format!("cannot start the supervisor: {e}")),
            })?;
        let serving = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let lease = cluster::hold_lease(&shared, &supervisor, serving.clone());
        let engine = Engine {
            shared,
            supervisor,
            notifier: Arc::new(Mutex::new(None)),
            serving,
            lease: Arc::new(lease),
        };
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
    pub fn store(&self) -> &dyn store::Store {
        &*self.shared.store
    }

    /// Records a job that started no run of its own (e.g. a delivery that steered run
    /// `job.run_id`), durably: looking it up by id ([`Engine::job`]) then finds it, so the
    /// same delivery is not acted on twice.
    pub async fn record_job(&self, job: &Job) -> Result<()> {
        let mut batch = Batch::new();
        batch.job(job);
        self.shared.store.commit(batch).await
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
        self.shared.store.size()
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

    /// Makes a bare `number` in the data of a job starting a run of `workflow` name an item
    /// of `kind` (an issue's unless set): the rule by which the engine reads what such a run is
    /// about ([`crate::subject`]).
    pub fn set_subject_kind(&self, workflow: &str, kind: SubjectKind) {
        self.shared
            .subject_kinds
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(workflow.to_string(), kind);
    }

    /// What a run of `workflow` with `input`, started by `job`, is about (see
    /// [`crate::subject`]).
    fn subject_of(
        &self,
        workflow: &str,
        input: &Map<String, Value>,
        job: Option<&Job>,
    ) -> Option<Subject> {
        let bare = self
            .shared
            .subject_kinds
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(workflow)
            .copied()
            .unwrap_or_default();
        Subject::of(input, job, bare)
    }

    /// Hands the output of every completed step that ran `action` to the later steps of its run
    /// and to compensations (in [`crate::ActionContext::shared_outputs`]), so that they can rely
    /// on what the engine recorded rather than on files a step could have changed since. Runs
    /// whose steps run no such action pay nothing for it.
    pub fn share_outputs_of(&self, action: &str) {
        let mut shared = self
            .shared
            .shared_actions
            .write()
            .unwrap_or_else(|e| e.into_inner());
        if !shared.iter().any(|a| a == action) {
            shared.push(action.to_string());
        }
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

    /// Validates and registers a definition given in code ([`Interface::Program`]); see
    /// [`Engine::register_workflow_from`].
    pub async fn register_workflow(&self, def: Definition, origin: &str) -> Result<Arc<Workflow>> {
        self.register_workflow_from(def, Provenance::now(Interface::Program, origin))
            .await
    }

    /// Validates and registers a definition that came in as `provenance` says (its `origin`
    /// names it in errors); it becomes the latest of its id and is stored, with how it came
    /// in, so runs can resume with it after a restart. An id registered as a built-in
    /// ([`Interface::Builtin`]) in this process is refused through every other interface:
    /// built-ins cannot be replaced.
    pub async fn register_workflow_from(
        &self,
        def: Definition,
        provenance: Provenance,
    ) -> Result<Arc<Workflow>> {
        let origin = if provenance.origin.is_empty() {
            format!("workflow {}", def.id)
        } else {
            provenance.origin.clone()
        };
        let builtin = provenance.via == Interface::Builtin;
        if !builtin && self.is_builtin(&def.id) {
            return Err(Error::Definition {
                origin,
                message: format!(
                    "workflow id `{}` is a built-in workflow's, and built-ins cannot be \
                     replaced; give this workflow an id of its own",
                    def.id
                ),
            });
        }
        let mut wf = self.validate(def, &origin)?;
        for warning in wf.warnings() {
            tracing::warn!("{origin}: {warning}");
        }
        let id = wf.id().to_string();
        let stored = self.shared.store.definition(&id, &wf.digest)?.is_some();
        let latest = self.shared.store.latest_digest(&id)?;
        let recorded = match stored {
            true => self.shared.store.provenance(&id, &wf.digest)?,
            false => None,
        };
        // The same content registered again, already the latest, changes nothing and keeps
        // the registration that put it there.
        if !stored || latest.as_deref() != Some(wf.digest.as_str()) || recorded.is_none() {
            self.shared
                .store
                .commit(std::mem::take(Batch::new().definition(
                    &wf.def,
                    &wf.digest,
                    &provenance,
                )))
                .await?;
            wf.provenance = Some(provenance);
        } else {
            wf.provenance = recorded;
        }
        if builtin {
            self.shared
                .builtins
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .insert(id.clone());
        }
        let wf = Arc::new(wf);
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

    /// Whether `id` was registered as a built-in workflow in this process.
    pub fn is_builtin(&self, id: &str) -> bool {
        self.shared
            .builtins
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(id)
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
        for stored in self.shared.store.latest_definitions()? {
            let id = &stored.definition.id;
            match self.shared.workflow_for(id, &stored.digest) {
                // Registered again since it was cached (by another daemon on the database).
                Ok(wf) if wf.provenance != stored.provenance => {
                    let mut wf = (*wf).clone();
                    wf.provenance = stored.provenance;
                    by_id.insert(id.clone(), Arc::new(wf));
                }
                Ok(wf) => {
                    by_id.insert(id.clone(), wf);
                }
                Err(e) => tracing::warn!("stored workflow `{id}`: {e}"),
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
        let _dedup = match &job {
            Some(job) => Some(self.shared.job_lock(&job.id).lock().await),
            None => None,
        };
        if let Some(job) = &job {
            // Looked for first without waiting out a commit in progress, which would block
            // this thread for a flush on every start of a new job. Absent there, it is
            // absent from what is durable too; present, it is read again once durable.
            let maybe_seen = self.shared.store.for_idle_runs().job(&job.id)?.is_some();
            if let Some(seen) = maybe_seen
                .then(|| self.shared.store.job(&job.id))
                .transpose()?
            {
                if let Some(run) = seen.and_then(|seen| seen.run_id) {
                    return Ok((run, false));
                }
            }
        }
        let id = new_run_id();
        let now = now_ms();
        let mut rec = RunRecord::new(id.clone(), wf.steps().iter().map(|s| s.id.clone()), now);
        let subject = self.subject_of(wf.id(), &input, job.as_ref());
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
                subject,
                traceparent: Some(crate::telemetry::new_traceparent()),
            },
        };
        rec.apply(&event);
        let keys = RunKeys::of(wf.id(), &rec.input, job.as_ref());
        let job = job.map(|mut job| {
            job.run_id = Some(id.clone());
            if job.created_at == 0 {
                job.created_at = now;
            }
            job
        });
        let mut batch = Batch::new();
        batch.start_run(&rec, &event, job.as_ref());
        if let Err(e) = self.shared.store.commit(batch).await {
            // Another daemon on the database started this job's run first (its lock is per
            // process): that run is the answer, as for a job seen before.
            let seen = job
                .as_ref()
                .and_then(|j| self.shared.store.job(&j.id).ok().flatten());
            if let Some(run) = seen.and_then(|j| j.run_id).filter(|run| *run != id) {
                return Ok((run, false));
            }
            return Err(e);
        }
        self.shared.publish(event);
        self.supervisor
            .cast(SupervisorMsg::Start {
                run: id.clone(),
                keys,
            })
            .map_err(|_| Error::ShuttingDown)?;
        Ok((id, true))
    }

    async fn command(&self, run: &str, input: Input) -> Result<()> {
        let mut answer = cluster::deliver(&self.supervisor, run.to_string(), input.clone()).await?;
        // Held by another daemon on the database: forwarded to it, and once more if the run
        // moved on meanwhile (its daemon lapsed).
        let mut hops = 0;
        while let (Err(Refusal::Elsewhere(holder)), Some(cluster)) =
            (&answer, self.shared.store.cluster())
        {
            hops += 1;
            if hops > 3 {
                return Err(Error::HeldElsewhere {
                    run: run.to_string(),
                    daemon: holder.clone(),
                });
            }
            let command = serde_json::to_value(&input).map_err(|e| Error::Io {
                path: self.dir().to_path_buf(),
                source: std::io::Error::other(format!(
                    "the command cannot be sent to daemon `{holder}`: {e}"
                )),
            })?;
            answer = Refusal::from_json(&cluster.forward(run, command).await?);
        }
        match answer {
            Ok(()) => Ok(()),
            Err(Refusal::UnknownRun) => Err(Error::UnknownRun(run.to_string())),
            Err(Refusal::WrongState(status, message)) => Err(Error::WrongState {
                run: run.to_string(),
                status: status.to_string(),
                message,
            }),
            Err(Refusal::Failed(message)) => Err(Error::Io {
                path: self.dir().to_path_buf(),
                source: std::io::Error::other(message),
            }),
            Err(Refusal::Elsewhere(daemon)) => Err(Error::HeldElsewhere {
                run: run.to_string(),
                daemon,
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
            for id in store.all_run_ids(&RunQuery::Status(status))? {
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
            let mut batch = Batch::new();
            let mut these = Vec::new();
            for id in chunk {
                let Some(head) = store.head(id)? else {
                    continue;
                };
                if !head.status.is_terminal() {
                    continue;
                }
                // Its job names what the run is about (the index entries to remove).
                let job = match &head.job_id {
                    Some(job) => store.job(job)?,
                    None => None,
                };
                batch.delete_run(&head, job.as_ref());
                these.push(id.clone());
            }
            store.commit(batch).await?;
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
        let op = store::Op::Tag {
            tag: tag.to_string(),
            run: run.to_string(),
            order,
        };
        self.shared.store.commit(Batch::of(op)).await
    }

    /// The runs linked to `tag` by [`Engine::tag_run`], most recently linked first.
    pub fn tagged_runs(&self, tag: &str) -> Result<Vec<String>> {
        self.shared.store.tagged_run_ids(tag)
    }

    /// The runs that ended with `outcome` in their state (`verified`, `unverified`, ...), most
    /// recently ended first, from the index. A run retried after it ended is listed under each
    /// outcome it ended with: callers check the record's current `state.outcome`.
    pub fn runs_with_outcome(&self, outcome: &str) -> Result<Vec<String>> {
        self.tagged_runs(&format!("{}{outcome}", crate::run_actor::OUTCOME_TAG))
    }

    /// A run with its steps, as of its last durable event.
    pub fn run(&self, id: &str) -> Result<RunRecord> {
        Ok(self.shared.load_run(id)?.1)
    }

    /// The definition a run started with.
    pub fn run_workflow(&self, id: &str) -> Result<Arc<Workflow>> {
        Ok(self.shared.load_run(id)?.0)
    }

    /// Runs matching `filter`, newest first (without their steps). Reads every head: a page
    /// ([`Engine::runs_page`]), a search ([`Engine::search_runs`]) or the runs about a subject
    /// ([`Engine::runs_about`]) read the run index instead.
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
            head.fill_subject();
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
            .map(|s| {
                let query = match workflow {
                    Some(w) => RunQuery::WorkflowStatus(w.to_string(), *s),
                    None => RunQuery::Status(*s),
                };
                Ok((*s, store.count(&query)?))
            })
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
        let query = match (filter.status, filter.workflow.clone()) {
            (Some(s), None) => RunQuery::Status(s),
            (None, Some(w)) => RunQuery::Workflow(w),
            (Some(s), Some(w)) => RunQuery::WorkflowStatus(w, s),
            (None, None) => RunQuery::All,
        };
        let store = &self.shared.store;
        let ids = store.run_ids(&query, offset, limit)?;
        let total = store.count(&query)?;
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
            head.fill_subject();
            out.push(head);
        }
        Ok(out)
    }

    /// The newest run of `workflow` about `subject` that has not finished, if any: read
    /// through the index of what runs are about and the index of their statuses (no run is
    /// read but the one found). A second run of a workflow for one issue or pull request is
    /// refused while this finds one.
    pub fn in_flight(&self, workflow: &str, subject: &Subject) -> Result<Option<RunRecord>> {
        let store = &self.shared.store;
        let ids = store.all_run_ids(&RunQuery::About(subject.index_name()))?;
        for id in ids {
            let unfinished = store
                .status_of(&id)?
                .is_some_and(|status| !status.is_terminal());
            if unfinished && store.is_of_workflow(&id, workflow)? {
                // (a run that finished since is still the one in flight a moment ago)
                return Ok(self.current_heads(std::iter::once(&id))?.pop());
            }
        }
        Ok(None)
    }

    /// The runs about `subject` (a repository, or an issue or pull request of it), newest
    /// first (without their steps), however they were started; read through the index of what
    /// runs are about.
    pub fn runs_about(&self, subject: &Subject) -> Result<Vec<RunRecord>> {
        let ids = self
            .shared
            .store
            .all_run_ids(&RunQuery::About(subject.index_name()))?;
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
        let query = match search {
            RunSearch::IdPrefix(prefix) => RunQuery::IdPrefix(prefix.clone()),
            RunSearch::Repo(repo) => RunQuery::About(subject::repo_name(repo)),
            RunSearch::Issue { repo, number } => {
                RunQuery::About(subject::issue_name(repo, *number))
            }
        };
        let ids = store.all_run_ids(&query)?;
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

    /// A run's change journal, read without blocking this thread for a commit in progress:
    /// what was read is answered once it is all durable (a run that settled may already
    /// have moved on and recorded a change that is not). Nothing read, nothing to wait for.
    pub async fn changes_when_durable(&self, run: &str) -> Result<Vec<Change>> {
        let changes = self.shared.store.for_idle_runs().changes(run)?;
        if !changes.is_empty() {
            self.shared.store.barrier().await?;
        }
        Ok(changes)
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
        let watch = self.shared.watch_settle(run);
        let is_settled = |rec: &RunRecord| {
            let retrying = rec
                .waiting_for
                .as_ref()
                .is_some_and(|w| w.kind == crate::WaitKind::Retry);
            !matches!(rec.status, RunStatus::Pending | RunStatus::Running) && !retrying
        };
        loop {
            // Armed before the run is read: an event published meanwhile wakes it.
            let woken = watch.slot.notify.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            // The head and its newest events only: cheap even for a run of 100,000 steps.
            // Read without waiting for a commit in progress: only a hint of where the run
            // is; what is answered is durable (the actor's record offered after its commit,
            // or the run read through the gate).
            let hint = Self::head_from(&*self.shared.store.for_idle_runs(), run)?;
            if is_settled(&hint) {
                let offered = watch
                    .slot
                    .record
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone();
                if let Some(rec) = offered.filter(|r| r.seq == hint.seq) {
                    return Ok(rec);
                }
                let rec = self.run(run)?;
                if is_settled(&rec) {
                    return Ok(rec);
                }
                // It moved on meanwhile: wait for its next settling event.
            }
            // Look again only when an event of this run may have settled it.
            woken.await;
        }
    }

    /// A run's head with its newest events applied, without its steps.
    pub fn head(&self, run: &str) -> Result<RunRecord> {
        Self::head_from(&*self.shared.store, run)
    }

    fn head_from(store: &dyn store::Store, run: &str) -> Result<RunRecord> {
        let mut head = store
            .head(run)?
            .ok_or_else(|| Error::UnknownRun(run.to_string()))?;
        for event in store.events(run, head.seq)? {
            head.apply(&event);
        }
        head.fill_subject();
        Ok(head)
    }

    /// Starts actors for every unfinished run and arms every persisted timer.
    /// With several daemons on one database, those this daemon holds; it then keeps its
    /// lease and takes over the runs of daemons whose lease lapsed (see [`crate::cluster`]).
    pub async fn resume(&self) -> Result<ResumeReport> {
        let report = self.resume_inner(Resume::All).await?;
        self.serving.store(true, Ordering::SeqCst);
        Ok(report)
    }

    /// Starts one unfinished run's actor again.
    pub async fn resume_run(&self, run: &str) -> Result<ResumeReport> {
        self.resume_inner(Resume::Run(run.to_string())).await
    }

    async fn resume_inner(&self, which: Resume) -> Result<ResumeReport> {
        let answer = self
            .supervisor
            .call(|reply| SupervisorMsg::Resume(which, reply), None)
            .await
            .map_err(|_| Error::ShuttingDown)?;
        match answer {
            CallResult::Success(result) => result,
            _ => Err(Error::ShuttingDown),
        }
    }

    /// What a pending run queues behind in this engine (the limit that is full and the runs
    /// holding it), or `None` when it is not waiting for a slot here.
    pub fn queued_behind(&self, run: &str) -> Option<QueuedBehind> {
        self.shared.admission().queued_behind(run)
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
            sinks: sinks.clone(),
            since: None,
        };
        let (actor, join) = Actor::spawn(None, Notifier, args)
            .await
            .map_err(|e| Error::Io {
                path: self.dir().to_path_buf(),
                source: std::io::Error::other(format!("cannot start the notifier: {e}")),
            })?;
        let handle = NotifierHandle::new(actor);
        // Supervised: a notifier that dies (a panic) is started again, and catches up from
        // the store as at start-up.
        tokio::spawn(crate::notifier::supervise(
            handle.clone(),
            join,
            Arc::downgrade(&self.shared),
            sinks,
        ));
        *self.notifier.lock().unwrap_or_else(|e| e.into_inner()) = Some(handle.clone());
        Ok(handle)
    }

    /// Stops the supervisor (and with it every run actor), lets the notifier deliver what is
    /// pending (within [`SHUTDOWN_FLUSH`]), and flushes the store.
    pub async fn shutdown(&self) -> Result<()> {
        let stopped = self
            .supervisor
            .stop_and_wait(None, Some(Duration::from_secs(10)))
            .await
            .is_ok();
        if !stopped {
            // An actor that did not stop may have a step running: it must not outlive this
            // engine's hold on the run (another daemon may take it), nor run unattended.
            self.shared.procs.kill_all();
        }
        if let Some(lease) = &*self.lease {
            lease.stop();
        }
        let notifier = self
            .notifier
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(notifier) = notifier {
            notifier.stop(SHUTDOWN_FLUSH).await;
        }
        if let Some(cluster) = self.shared.store.cluster() {
            // Its runs are free for the other daemons to take now, not after the lease; unless
            // some actor did not stop, whose step may still be running.
            let left = match stopped {
                true => cluster.leave(),
                false => Err(Error::ShuttingDown),
            };
            if let Err(e) = left {
                tracing::warn!(
                    "this daemon's runs stay its own until its lease lapses (not left: {e})"
                );
            }
        }
        self.shared.store.flush_blocking()
    }

    /// Test hook: the notifier panics on the next `n` events it handles.
    #[cfg(feature = "test-hooks")]
    pub fn inject_notifier_panics(&self, n: u32) {
        self.shared
            .notifier_panics
            .store(n, std::sync::atomic::Ordering::Release);
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
        let many: Vec<String> = (0..10_000).map(|_| new_run_id()).collect();
        // Made in a burst, most share a millisecond: they still sort in the order made.
        assert!(many.windows(2).all(|w| w[0] < w[1]), "ids out of order");
        let distinct: std::collections::HashSet<&String> = many.iter().collect();
        assert_eq!(distinct.len(), 10_000);
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
