//! The durable store, as the engine sees it: a [`Store`] trait whose operations mean something
//! (start a run, append a transition, record a change, a job, a delivery; list runs through
//! the indexes; find the timers and the unfinished runs), and one implementation per backend:
//! [`sled`] (one process, one data dir) and `postgres` (a database, for teams that run one;
//! built with the `postgres` feature, on by default).
//!
//! **Writes** go in a [`Batch`] of [`Op`]s, made durable together by [`Store::commit`]: each
//! backend commits every batch waiting in one transaction and one fsync (group commit), and
//! answers the callers only then, so nothing outside the store sees a write before it is
//! durable. Records are encoded (JSON) by whoever builds the batch, on its own thread, so the
//! committer does nothing but write.
//!
//! **Reads** are synchronous, as sled's are: a caller on a tokio worker blocks for one read,
//! which on PostgreSQL is a round trip on loopback or the LAN. Making them async would ripple
//! through every caller of the engine for no gain at this size.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::task::{Context, Poll};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::oneshot;

use crate::definition::{Definition, Provenance};
use crate::error::{Error, Result};
use crate::record::{Event, Millis, RunRecord, RunStatus, StepRecord};
use crate::subject::subject_names;

#[cfg(feature = "postgres")]
pub mod postgres;
pub mod sled;

pub use self::sled::{BackupStats, SledStore, FORMAT_VERSION};
pub use crate::job::Job;

/// A change recorded by an action: the seed's `workflow_changes` row.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Change {
    /// `run/seq`.
    pub id: String,
    /// The run.
    pub workflow_run_id: String,
    /// The step that made it.
    pub step_index: usize,
    /// `file_create`, `file_modify`, `branch_create`, `commit`, …
    pub change_type: String,
    /// Path, content before, sha, … as the action chose.
    pub change_data: Value,
    /// When it was recorded.
    pub created_at: Millis,
}

/// A timer as stored.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct TimerEntry {
    /// When it fires.
    pub due: Millis,
    /// The run.
    pub run: String,
    /// The run's timer id.
    pub timer: u64,
}

/// Counters of the committer, for the benchmark and `/metrics`.
#[derive(Debug, Default)]
pub struct CommitStats {
    /// Batches committed.
    pub batches: AtomicU64,
    /// Flushes (fsyncs) done.
    pub flushes: AtomicU64,
    /// Writes applied.
    pub writes: AtomicU64,
    /// Bytes applied (keys and values).
    pub bytes: AtomicU64,
    /// Total time spent in flush, µs.
    pub flush_us: AtomicU64,
}

/// Which runs a listing is about. Every query is answered from an index, newest first (run
/// ids sort by creation time).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunQuery {
    /// Every run.
    All,
    /// Runs with this status.
    Status(RunStatus),
    /// Runs of this workflow.
    Workflow(String),
    /// Runs of this workflow with this status.
    WorkflowStatus(String, RunStatus),
    /// Runs about a subject (an index name from [`crate::subject`]).
    About(String),
    /// Runs whose id starts with this.
    IdPrefix(String),
}

/// A run's head as a backend stores it: the encoded record, and the fields it is indexed by.
#[derive(Debug, Clone)]
pub struct Head {
    /// The run id.
    pub id: String,
    /// Its workflow.
    pub workflow_id: String,
    /// Its status.
    pub status: RunStatus,
    /// The [`RunRecord`] (without steps), JSON.
    pub json: Vec<u8>,
}

impl Head {
    /// Encodes `rec`'s head.
    pub fn of(rec: &RunRecord) -> Head {
        Head {
            id: rec.id.clone(),
            workflow_id: rec.workflow_id.clone(),
            status: rec.status,
            json: encode(rec),
        }
    }
}

/// One transition of a run, as the run actor made it: events first, then what derives from
/// them. Backends write it atomically; a crash keeps all of it or none.
#[derive(Debug, Clone)]
pub struct Transition {
    /// The run.
    pub run: String,
    /// Its workflow (for the indexes).
    pub workflow_id: String,
    /// Its status before and after.
    pub before: RunStatus,
    /// Its status now.
    pub status: RunStatus,
    /// New events: sequence number, JSON.
    pub events: Vec<(u64, Vec<u8>)>,
    /// Step records to write: index, JSON. Those changed by this transition, or where
    /// [`Store::steps_with_heads_only`], those changed since the last head, with a head.
    pub steps: Vec<(u64, Vec<u8>)>,
    /// Timers set: due, timer id.
    pub set_timers: Vec<(Millis, u64)>,
    /// Timers cleared: due, timer id.
    pub cleared_timers: Vec<(Millis, u64)>,
    /// A new head snapshot, when one is due.
    pub head: Option<Vec<u8>>,
    /// Whether the run index is known to hold the run under `before` only (so a backend that
    /// keeps one entry per status may move two entries instead of rewriting them all).
    pub index_exact: bool,
}

impl Transition {
    /// Whether the run reopened (a retry or rollback of a finished run).
    pub fn reopened(&self) -> bool {
        self.before.is_terminal() && !self.status.is_terminal()
    }

    /// Whether the run finished with this transition.
    pub fn finished(&self) -> bool {
        self.status.is_terminal() && !self.before.is_terminal()
    }
}

/// A stored definition, with its digest and how it was registered.
#[derive(Debug, Clone)]
pub struct StoredDefinition {
    /// Its content digest.
    pub digest: String,
    /// The definition.
    pub definition: Definition,
    /// How it was last registered; `None` for one stored before baton recorded it.
    pub provenance: Option<Provenance>,
}

/// One write that means something. Built through [`Batch`]'s methods.
#[derive(Debug, Clone)]
pub enum Op {
    /// A definition, made the latest of its id.
    Definition {
        /// The workflow id.
        id: String,
        /// Its content digest.
        digest: String,
        /// The [`Definition`], JSON.
        json: Vec<u8>,
        /// Its [`Provenance`], JSON: how this registration came in.
        provenance: Vec<u8>,
    },
    /// A new run: its head and first event, what it is about, the job that started it.
    StartRun {
        /// The head.
        head: Head,
        /// Its first event (`run_created`): sequence number, JSON.
        event: (u64, Vec<u8>),
        /// Index names from [`crate::subject`].
        subjects: Vec<String>,
        /// The job, when it is stored with the run.
        job: Option<(String, Vec<u8>)>,
    },
    /// A transition of a run.
    Transition(Transition),
    /// A change recorded in a run's journal.
    Change {
        /// The run.
        run: String,
        /// Its order in the journal (from [`Store::next_id`]).
        seq: u64,
        /// The [`Change`], JSON.
        json: Vec<u8>,
    },
    /// A job, stored or replaced.
    Job {
        /// Its id.
        id: String,
        /// The [`Job`], JSON.
        json: Vec<u8>,
    },
    /// The notifier's record of what a sink showed of a run.
    Delivery {
        /// The run.
        run: String,
        /// The sink's name.
        sink: String,
        /// The record, JSON.
        json: Vec<u8>,
    },
    /// Links a run to a tag of the app's (a chat).
    Tag {
        /// The tag.
        tag: String,
        /// The run.
        run: String,
        /// Order among the tag's runs (from [`Store::next_id`]).
        order: u64,
    },
    /// Deletes a finished run and everything stored for it.
    DeleteRun {
        /// The run id.
        id: String,
        /// Its workflow.
        workflow_id: String,
        /// Index names it was filed under.
        subjects: Vec<String>,
        /// Its job.
        job_id: Option<String>,
    },
    /// A process group a step spawned (`json` set), or its removal.
    ProcessGroup {
        /// `pgid`, start time (see [`crate::procs`]).
        key: Vec<u8>,
        /// The record, JSON; `None` removes it.
        json: Option<Vec<u8>>,
    },
    /// A run holds a slot of its repository across daemons (`repo` set), or frees it. Only a
    /// shared store keeps these: in one process, admission's own counts are the truth.
    Slot {
        /// The run.
        run: String,
        /// Its repository; `None` frees the slot.
        repo: Option<String>,
    },
}

/// Writes made durable together.
#[derive(Debug, Default, Clone)]
pub struct Batch {
    pub(crate) ops: Vec<Op>,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Batch {
        Batch::default()
    }

    /// A batch of one operation.
    pub fn of(op: Op) -> Batch {
        Batch { ops: vec![op] }
    }

    /// True when there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Adds `op`.
    pub fn push(&mut self, op: Op) -> &mut Batch {
        self.ops.push(op);
        self
    }

    /// Stores `def` under `digest`, registered as `provenance` says, and makes it the latest
    /// of its id.
    pub fn definition(
        &mut self,
        def: &Definition,
        digest: &str,
        provenance: &Provenance,
    ) -> &mut Batch {
        self.push(Op::Definition {
            id: def.id.clone(),
            digest: digest.to_string(),
            json: encode(def),
            provenance: encode(provenance),
        })
    }

    /// Starts run `rec` with its first event, filed under what its input and job say it is
    /// about.
    pub fn start_run(&mut self, rec: &RunRecord, event: &Event, job: Option<&Job>) -> &mut Batch {
        self.push(Op::StartRun {
            head: Head::of(rec),
            event: (event.seq, encode(event)),
            subjects: subject_names(&rec.input, job),
            job: job.map(|j| (j.id.clone(), encode(j))),
        })
    }

    /// Records a change in a run's journal.
    pub fn change(&mut self, seq: u64, change: &Change) -> &mut Batch {
        self.push(Op::Change {
            run: change.workflow_run_id.clone(),
            seq,
            json: encode(change),
        })
    }

    /// Stores (or replaces) a job.
    pub fn job(&mut self, job: &Job) -> &mut Batch {
        self.push(Op::Job {
            id: job.id.clone(),
            json: encode(job),
        })
    }

    /// Stores what `sink` showed of `run`.
    pub fn delivery<T: Serialize>(&mut self, run: &str, sink: &str, record: &T) -> &mut Batch {
        self.push(Op::Delivery {
            run: run.to_string(),
            sink: sink.to_string(),
            json: encode(record),
        })
    }

    /// Deletes run `rec` (its job, if any, named by `job`) and all that is stored for it.
    pub fn delete_run(&mut self, rec: &RunRecord, job: Option<&Job>) -> &mut Batch {
        self.push(Op::DeleteRun {
            id: rec.id.clone(),
            workflow_id: rec.workflow_id.clone(),
            subjects: subject_names(&rec.input, job),
            job_id: rec.job_id.clone(),
        })
    }
}

/// JSON of a record the engine itself built: encoding cannot fail for these types.
pub(crate) fn encode<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    // Most records are a few hundred bytes: one allocation instead of a doubling series.
    let mut bytes = Vec::with_capacity(384);
    serde_json::to_writer(&mut bytes, value).expect("records encode as JSON");
    bytes
}

/// A commit in flight: resolves once the batch is durable (or failed).
pub struct Durable {
    state: DurableState,
}

enum DurableState {
    Done(Option<Result<()>>),
    Waiting {
        wait: oneshot::Receiver<std::result::Result<(), String>>,
        store: Arc<str>,
    },
}

impl Durable {
    /// A commit with nothing to wait for.
    pub fn ready(result: Result<()>) -> Durable {
        Durable {
            state: DurableState::Done(Some(result)),
        }
    }

    /// A commit whose committer answers on `wait` (with what the backend said of a failed
    /// one); `store` names the store in errors.
    pub(crate) fn waiting(
        wait: oneshot::Receiver<std::result::Result<(), String>>,
        store: Arc<str>,
    ) -> Durable {
        Durable {
            state: DurableState::Waiting { wait, store },
        }
    }
}

impl Future for Durable {
    type Output = Result<()>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        match &mut self.state {
            DurableState::Done(result) => {
                Poll::Ready(result.take().unwrap_or(Err(Error::ShuttingDown)))
            }
            DurableState::Waiting { wait, store } => match Pin::new(wait).poll(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(Ok(Ok(()))) => Poll::Ready(Ok(())),
                Poll::Ready(Ok(Err(message))) => Poll::Ready(Err(Error::Commit {
                    store: store.to_string(),
                    message,
                })),
                Poll::Ready(Err(_)) => Poll::Ready(Err(Error::ShuttingDown)),
            },
        }
    }
}

/// The engine's durable store. See the module docs.
pub trait Store: Send + Sync + 'static {
    /// What and where it is, for messages (never with a password).
    fn describe(&self) -> &str;

    /// The data directory: this daemon's own files (workspaces, its address file), which
    /// stay local whatever the backend.
    fn dir(&self) -> &Path;

    /// Makes `batch` durable; resolves once it is (group commit).
    fn commit(&self, batch: Batch) -> Durable;

    /// Resolves once every write applied before the call is durable: a read through
    /// [`Store::for_idle_runs`] followed by this shows nothing that a crash could take back,
    /// without blocking a thread for a commit in progress. (PostgreSQL shows a transaction
    /// only once it is durable, so there it is ready at once.)
    fn barrier(&self) -> Durable {
        Durable::ready(Ok(()))
    }

    /// Flushes and blocks; for shutdown paths outside tokio.
    fn flush_blocking(&self) -> Result<()>;

    /// The committer's counters.
    fn stats(&self) -> &CommitStats;

    /// Bytes the store takes (on disk, or in the database).
    fn size(&self) -> u64;

    /// Whether step records need only be written with head snapshots. Between two heads the
    /// events after the older one are the truth, and a load folds them: a step's record is
    /// then written once, not with every transition that touches it (a step's transition
    /// writes two records instead of four). A backend whose rows people read directly keeps
    /// them current.
    fn steps_with_heads_only(&self) -> bool {
        false
    }

    /// A view whose reads do not wait for a commit in progress: on sled they may show writes
    /// not yet durable. Only for records no commit can be writing (runs without a live actor,
    /// which the supervisor loads to wake or resume them), for what is only a hint, for
    /// telling that a record is absent (absent there, it is absent from what is durable), or
    /// followed by [`Store::barrier`] before anything read is shown.
    fn for_idle_runs(&self) -> Arc<dyn Store>;

    /// A number unique in this store and larger than any handed out before, across
    /// restarts (journal and tag order).
    fn next_id(&self) -> Result<u64>;

    /// A stored definition.
    fn definition(&self, id: &str, digest: &str) -> Result<Option<Definition>>;

    /// The digest of the latest registered definition of `id`.
    fn latest_digest(&self, id: &str) -> Result<Option<String>>;

    /// How a stored definition was last registered; `None` for one stored before baton
    /// recorded it.
    fn provenance(&self, id: &str, digest: &str) -> Result<Option<Provenance>>;

    /// The latest definition of every workflow.
    fn latest_definitions(&self) -> Result<Vec<StoredDefinition>>;

    /// A run's head snapshot (without steps and later events).
    fn head(&self, run: &str) -> Result<Option<RunRecord>>;

    /// Every run head, oldest first.
    fn heads(&self) -> Result<Vec<RunRecord>>;

    /// A run's stored step records, by index: as of its head where
    /// [`Store::steps_with_heads_only`], so a reader folds the events after the head
    /// ([`Store::complete_run`]).
    fn steps(&self, run: &str) -> Result<Vec<(usize, StepRecord)>>;

    /// Events of a run with `seq > since`, in order.
    fn events(&self, run: &str, since: u64) -> Result<Vec<Event>>;

    /// The change journal of a run, oldest first.
    fn changes(&self, run: &str) -> Result<Vec<Change>>;

    /// A job.
    fn job(&self, id: &str) -> Result<Option<Job>>;

    /// Ids of the runs that have not finished.
    fn unfinished(&self) -> Result<Vec<String>>;

    /// Every persisted timer, earliest first.
    fn timers(&self) -> Result<Vec<TimerEntry>>;

    /// `limit` run ids matching `query` after skipping `offset`, newest first.
    fn run_ids(&self, query: &RunQuery, offset: usize, limit: usize) -> Result<Vec<String>>;

    /// How many runs match `query`.
    fn count(&self, query: &RunQuery) -> Result<usize>;

    /// A run's current status, by the index (`None` for an unknown run).
    fn status_of(&self, run: &str) -> Result<Option<RunStatus>>;

    /// Whether the run is of `workflow`, by the index.
    fn is_of_workflow(&self, run: &str, workflow: &str) -> Result<bool>;

    /// Whether `run` is linked to `tag`.
    fn is_tagged(&self, tag: &str, run: &str) -> Result<bool>;

    /// Ids of the runs linked to `tag`, most recently linked first.
    fn tagged_run_ids(&self, tag: &str) -> Result<Vec<String>>;

    /// What `sink` last showed of `run` (the notifier's record, JSON).
    fn delivery(&self, run: &str, sink: &str) -> Result<Option<Value>>;

    /// Every delivery record: run, sink, record.
    fn deliveries(&self) -> Result<Vec<(String, String, Value)>>;

    /// Every recorded process group: key, record.
    fn process_groups(&self) -> Result<Vec<(Vec<u8>, Value)>>;

    /// Forgets a process group without waiting for the disk (the next commit makes it
    /// durable; a record that outlives its group is harmless).
    fn forget_process_group(&self, key: &[u8]);

    /// Writes a consistent copy of the store to `path`.
    fn backup(&self, path: &Path) -> Result<BackupStats>;

    /// Writes a damaged head, for tests of corruption handling.
    #[cfg(feature = "test-hooks")]
    fn corrupt_head_for_test(&self, run: &str) -> Result<()>;

    /// The daemons sharing this store, when several can (PostgreSQL); `None` when one
    /// process owns the store (sled) and every run is its own.
    fn cluster(&self) -> Option<&dyn Cluster> {
        None
    }
}

/// A boxed future, for the trait objects' async operations.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Makes a future that resolves on a notification or after a poll interval (see
/// [`Cluster::inbox_wait`]).
pub type Wait = Box<dyn Fn() -> BoxFuture<'static, ()> + Send + Sync>;

/// A [`Wait`] on `bell`, at most `poll` long.
pub fn wait_on(bell: Arc<tokio::sync::Notify>, poll: std::time::Duration) -> Wait {
    Box::new(move || {
        let bell = bell.clone();
        Box::pin(async move {
            tokio::select! {
                _ = bell.notified() => {}
                _ = tokio::time::sleep(poll) => {}
            }
        })
    })
}

/// Several daemons on one store: which daemon holds which run, and commands between them.
///
/// Every unfinished run is held by one daemon, the one that started or last took it; only its
/// holder runs its steps and fires its timers, so a timer fires once. A daemon holds its runs
/// while its lease is renewed; when it lapses (the daemon died, or was cut off), another takes
/// them over. A command sent through a daemon that does not hold the run is forwarded to the
/// one that does.
pub trait Cluster: Send + Sync {
    /// This daemon's name, kept across restarts in its data dir.
    fn daemon(&self) -> &str;

    /// How long a hold outlives its last renewal.
    fn lease(&self) -> std::time::Duration;

    /// Renews this daemon's lease. An error means the lease may have lapsed and other daemons
    /// may be running its runs: the caller must stop at once.
    fn renew(&self) -> Result<()>;

    /// Takes the unfinished runs whose daemon's lease lapsed (or that have none), at most
    /// `limit`; with `own`, this daemon's own too (a restart). Returns their ids, oldest first.
    fn adopt(&self, own: bool, limit: usize) -> Result<Vec<String>>;

    /// Takes `run` for this daemon unless a live one holds it: `None` when this daemon holds
    /// it now (or it does not exist), else the holder's name.
    fn claim(&self, run: &str) -> Result<Option<String>>;

    /// Lets go of `run` (this daemon took it but cannot load it): the next takeover, here or
    /// elsewhere, tries again.
    fn release(&self, run: &str) -> Result<()>;

    /// Which of `runs` this daemon holds or may take (no live daemon holds them).
    fn held(&self, runs: &[String]) -> Result<std::collections::HashSet<String>>;

    /// Sends `command` to the daemon holding `run` and waits for its answer.
    fn forward(&self, run: &str, command: Value) -> BoxFuture<'static, Result<Value>>;

    /// Commands other daemons sent to runs this one holds, each taken once: id, run, command.
    fn inbox(&self) -> Result<Vec<(i64, String, Value)>>;

    /// Answers a command taken from the inbox.
    fn answer(&self, id: i64, reply: Value) -> Result<()>;

    /// A wait that resolves when a command may have arrived, or after `poll` at the latest;
    /// it holds nothing of the store.
    fn inbox_wait(&self, poll: std::time::Duration) -> Wait;

    /// Takes a slot of `repo` for `run` if fewer than `limit` runs hold one across all
    /// daemons; else answers how many other daemons hold. (Freed with [`Op::Slot`].)
    fn take_slot(
        &self,
        repo: &str,
        run: &str,
        limit: usize,
    ) -> Result<std::result::Result<(), usize>>;

    /// A wait that resolves when a slot may have freed on another daemon, or after `poll` at
    /// the latest; it holds nothing of the store.
    fn slots_wait(&self, poll: std::time::Duration) -> Wait;

    /// Leaves the cluster (a clean shutdown): this daemon's runs are free to take at once.
    fn leave(&self) -> Result<()>;
}

impl dyn Store {
    /// A run as of its last durable event: head, steps, and the events after the head.
    pub fn load_run(&self, run: &str, step_ids: &[String]) -> Result<Option<RunRecord>> {
        let Some(head) = self.head(run)? else {
            return Ok(None);
        };
        self.complete_run(head, step_ids).map(Some)
    }

    /// Completes a head read earlier: its steps, and the events after it.
    pub fn complete_run(&self, rec: RunRecord, step_ids: &[String]) -> Result<RunRecord> {
        Ok(self.complete_run_noting(rec, step_ids)?.0)
    }

    /// [`Self::complete_run`], and which steps the events after the head touched: where
    /// step records are written only with heads ([`Store::steps_with_heads_only`]), theirs
    /// are older than the run and go with its next head.
    pub fn complete_run_noting(
        &self,
        mut rec: RunRecord,
        step_ids: &[String],
    ) -> Result<(RunRecord, Vec<usize>)> {
        rec.steps = step_ids
            .iter()
            .map(|id| StepRecord {
                id: id.clone(),
                ..Default::default()
            })
            .collect();
        for (idx, step) in self.steps(&rec.id)? {
            if let Some(slot) = rec.steps.get_mut(idx) {
                *slot = step;
            }
        }
        let mut touched = std::collections::BTreeSet::new();
        for event in self.events(&rec.id, rec.seq)? {
            touched.extend(event.kind.step());
            rec.apply(&event);
        }
        Ok((rec, touched.into_iter().collect()))
    }

    /// Every run id matching `query`, newest first.
    pub fn all_run_ids(&self, query: &RunQuery) -> Result<Vec<String>> {
        self.run_ids(query, 0, usize::MAX)
    }
}

/// Which backend holds the engine's records.
#[derive(Debug, Clone, Default)]
pub enum Backend {
    /// sled in the data dir.
    #[default]
    Sled,
    /// A PostgreSQL database.
    #[cfg(feature = "postgres")]
    Postgres(postgres::PgConfig),
}

/// Opens the store `backend` names, with this daemon's own files in `dir`; `cache_bytes`
/// bounds sled's page cache.
pub fn open(dir: &Path, backend: &Backend, cache_bytes: u64) -> Result<Arc<dyn Store>> {
    private_dir(dir)?;
    match backend {
        Backend::Sled => Ok(Arc::new(SledStore::open(dir, cache_bytes)?)),
        #[cfg(feature = "postgres")]
        Backend::Postgres(config) => Ok(Arc::new(postgres::PgStore::open(dir, config)?)),
    }
}

/// Creates the data dir readable by its owner alone (0700), or makes an existing one so: it
/// holds the store, step output, the admin token and every run's clone. A directory of
/// someone else's is left as it is (and opening the store then says what is wrong).
pub fn private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    let io = |source| Error::Io {
        path: dir.to_path_buf(),
        source,
    };
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io)?;
    }
    let meta = std::fs::metadata(dir).map_err(io)?;
    // SAFETY: geteuid has no failure mode and touches no memory.
    let mine = meta.uid() == unsafe { libc::geteuid() };
    if mine && meta.permissions().mode() & 0o077 != 0 {
        tracing::warn!(
            "data dir {} was readable by others (mode {:o}); made it 0700",
            dir.display(),
            meta.permissions().mode() & 0o777
        );
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io)?;
    }
    Ok(())
}

/// Runs `wait`, which blocks, without taking a worker of a multi-threaded runtime out of
/// service: its other tasks move to another thread meanwhile. The store's reads are
/// synchronous and made from handlers and actors, on a runtime with as many workers as
/// cores: one waiting out a flush or a database round trip in place would stall every task
/// queued behind it.
pub(crate) fn off_runtime<T>(wait: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(rt) if rt.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(wait)
        }
        _ => wait(),
    }
}
