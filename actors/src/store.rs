//! The durable store: one sled database per data dir, used by one process.
//!
//! Trees (the seed's tables, and what the engine needs beside them):
//! - `workflows`: `id` → latest digest, `id \0 digest` → definition (JSON)
//! - `workflow_runs`: run id → head snapshot ([`RunRecord`] without steps)
//! - `run_steps`: run id \0 index (u32 BE) → [`StepRecord`]
//! - `run_events`: run id \0 seq (u64 BE) → [`Event`] (append-only; the truth)
//! - `workflow_changes`: run id \0 seq (u64 BE) → [`Change`] (the change journal)
//! - `timers`: due (u64 BE) run id \0 timer id (u64 BE) → empty
//! - `unfinished`: run id → empty (runs to resume at start-up)
//! - `jobs`: job id → [`Job`]
//! - `deliveries`: run id \0 sink name → the notifier's delivery record (the message a sink
//!   made for the run, and the event sequence it last showed)
//! - `process_groups`: pgid, start time → live process group of a step ([`crate::procs`])
//!
//! Values are JSON: readable with any tool, and the cost is small beside the fsync.
//!
//! **Group commit.** Every write goes through one committer thread: it takes every batch
//! waiting, applies them in arrival order, calls `flush` (the fsync) once, and only then
//! answers each caller. Readers take a shared gate that the committer holds while it
//! applies and flushes, so nothing outside the store sees a write before it is durable.
//! Within a batch, events come before the step records and heads derived from them: sled
//! recovers a prefix of its log, so a surviving head never runs ahead of its events.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::sync::oneshot;

use crate::definition::Definition;
use crate::error::{Error, Result};
use crate::record::{Event, Millis, RunRecord, RunStatus, StepRecord};
use crate::subject::subject_names;

/// The trees, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tree {
    /// Definitions.
    Workflows,
    /// Run heads.
    Runs,
    /// Step records.
    Steps,
    /// Events.
    Events,
    /// The change journal.
    Changes,
    /// Persisted timers.
    Timers,
    /// Index of runs not yet finished.
    Unfinished,
    /// Jobs.
    Jobs,
    /// Notifier delivery state.
    Deliveries,
    /// Process groups of running commands, to kill after a crash.
    ProcessGroups,
    /// Indexes of runs, for listings that must not read every run: `s/<status>\0<run>`,
    /// `w/<workflow>\0<run>`, `x/<workflow>\0<status>\0<run>`, by what a run is about
    /// `a/<owner/name>\0<run>` and `a/<owner/name#N>\0<run>` (empty values; run ids sort by
    /// creation time), and `t/<run>` → its status. Status entries are written in the same
    /// commit as the head, before it; subject entries with the run's start; all are built
    /// from the heads when a store lacks them.
    RunIndex,
    /// Runs the app has linked to something of its own (a chat), keyed `<tag> \0 <run>`; the
    /// value is a [`Store::next_id`] (big-endian), so a tag's runs list in the order linked.
    RunTags,
}

impl Tree {
    const ALL: [Tree; 12] = [
        Tree::Workflows,
        Tree::Runs,
        Tree::Steps,
        Tree::Events,
        Tree::Changes,
        Tree::Timers,
        Tree::Unfinished,
        Tree::Jobs,
        Tree::Deliveries,
        Tree::ProcessGroups,
        Tree::RunIndex,
        Tree::RunTags,
    ];

    /// The tree's name on disk.
    pub fn name(self) -> &'static str {
        match self {
            Tree::Workflows => "workflows",
            Tree::Runs => "workflow_runs",
            Tree::Steps => "run_steps",
            Tree::Events => "run_events",
            Tree::Changes => "workflow_changes",
            Tree::Timers => "timers",
            Tree::Unfinished => "unfinished",
            Tree::Jobs => "jobs",
            Tree::Deliveries => "deliveries",
            Tree::ProcessGroups => "process_groups",
            Tree::RunIndex => "run_index",
            Tree::RunTags => "run_tags",
        }
    }
}

/// One write in a batch.
#[derive(Debug, Clone)]
pub struct Write {
    tree: Tree,
    key: Vec<u8>,
    value: Option<Vec<u8>>,
}

impl Write {
    /// Insert or replace `key` with `value` encoded as JSON.
    pub fn put<T: Serialize + ?Sized>(tree: Tree, key: Vec<u8>, value: &T) -> Write {
        // Most records are a few hundred bytes: one allocation instead of a doubling series.
        let mut bytes = Vec::with_capacity(384);
        serde_json::to_writer(&mut bytes, value).expect("stored types always serialize");
        Write {
            tree,
            key,
            value: Some(bytes),
        }
    }

    /// Insert raw bytes.
    pub fn put_raw(tree: Tree, key: Vec<u8>, value: Vec<u8>) -> Write {
        Write {
            tree,
            key,
            value: Some(value),
        }
    }

    /// Remove `key`.
    pub fn delete(tree: Tree, key: Vec<u8>) -> Write {
        Write {
            tree,
            key,
            value: None,
        }
    }

    /// Bytes this write puts on disk (key and value).
    pub fn len(&self) -> usize {
        self.key.len() + self.value.as_ref().map_or(0, Vec::len)
    }

    /// True for a write of nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

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

/// What started a run: a webhook delivery, a chat command, a CLI call.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct Job {
    /// Unique id (for a webhook: `github:<delivery id>`, used to drop redeliveries).
    pub id: String,
    /// `cli`, `api`, `github`, `telegram`, …
    pub source: String,
    /// The event or command, e.g. `issues.opened`.
    #[serde(default)]
    pub event: String,
    /// Who asked.
    #[serde(default)]
    pub sender: String,
    /// Anything else worth keeping (repository, issue number, chat id).
    #[serde(default)]
    pub data: Value,
    /// The run it started, once started.
    #[serde(default)]
    pub run_id: Option<String>,
    /// When it arrived.
    #[serde(default)]
    pub created_at: Millis,
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

struct Request {
    writes: Vec<Write>,
    done: oneshot::Sender<std::result::Result<(), String>>,
}

struct Inner {
    dir: PathBuf,
    db: sled::Db,
    trees: Vec<sled::Tree>,
    gate: RwLock<()>,
    committer: mpsc::Sender<Request>,
    stats: Arc<CommitStats>,
}

/// The store handle; cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
    /// Whether reads wait out a commit in progress (see [`Store::for_idle_runs`]).
    gated: bool,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.inner.dir)
            .finish()
    }
}

/// The file beside the database that says which process holds it.
const OWNER_FILE: &str = "baton.pid";
/// Present once the run index holds every run in its current layout (a new layout takes a
/// new marker, so it is built again).
const INDEX_BUILT: &[u8] = b"built/3";
/// Where the store's format version lives (u32 BE, in sled's default tree).
const FORMAT_KEY: &[u8] = b"baton/format_version";
/// The store's layout as this build writes it. An older store is upgraded at open (what
/// changed since is rebuilt, e.g. the run index) and marked; a newer one is refused.
pub const FORMAT_VERSION: u32 = 1;

mod backup;
pub use backup::BackupStats;

fn index_prefix(kind: u8, name: &str) -> Vec<u8> {
    let mut key = vec![kind, b'/'];
    key.extend_from_slice(name.as_bytes());
    key.push(0);
    key
}

fn index_key(kind: u8, name: &str, run: &str) -> Vec<u8> {
    let mut key = index_prefix(kind, name);
    key.extend_from_slice(run.as_bytes());
    key
}

/// The workflow-and-status part of an `x/` key.
fn wf_status(workflow: &str, status: RunStatus) -> String {
    format!("{workflow}\0{}", status.as_str())
}

fn status_index_key(status: RunStatus, run: &str) -> Vec<u8> {
    index_key(b's', status.as_str(), run)
}

/// `t/<run>`: the run's current status, for filtering runs found another way.
fn status_of_key(run: &str) -> Vec<u8> {
    let mut key = b"t/".to_vec();
    key.extend_from_slice(run.as_bytes());
    key
}

/// A key: the run id, a zero byte, then a big-endian number.
pub fn run_key(run: &str, n: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(run.len() + 9);
    key.extend_from_slice(run.as_bytes());
    key.push(0);
    key.extend_from_slice(&n.to_be_bytes());
    key
}

fn run_prefix(run: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(run.len() + 1);
    key.extend_from_slice(run.as_bytes());
    key.push(0);
    key
}

/// A timer's key: due time first, so the tree is ordered by due time.
pub fn timer_key(due: Millis, run: &str, timer: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(run.len() + 17);
    key.extend_from_slice(&due.to_be_bytes());
    key.extend_from_slice(&run_key(run, timer));
    key
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

fn readable_key(key: &[u8]) -> String {
    key.iter()
        .map(|b| {
            if b.is_ascii_graphic() {
                (*b as char).to_string()
            } else {
                format!("\\x{b:02x}")
            }
        })
        .collect()
}

impl Store {
    /// Opens (or creates) the store in `dir`. `cache_bytes` bounds sled's page cache.
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<Store> {
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let open = || {
            sled::Config::new()
                .path(dir.join("db"))
                .cache_capacity(cache_bytes)
                .mode(sled::Mode::HighThroughput)
                .flush_every_ms(None)
                .open()
        };
        let locked = |r: &sled::Result<sled::Db>| matches!(r, Err(sled::Error::Io(io)) if io.to_string().contains("could not acquire lock"));
        let mut db = open();
        // A daemon killed with -9 may leave, for a few milliseconds, children forked but not
        // yet exec'd (waiting at their gate, see `procs`) that share its lock until they die of
        // their parent-death signal: when the last owner is gone, wait that out. The owner may
        // also be this very process, reopening a store it has just shut down while the last
        // of its tasks let go of it: that too is a matter of milliseconds.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let passing = || !owner_alive(dir) || owner_is_me(dir);
        while locked(&db) && passing() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(50));
            db = open();
        }
        let db = db.map_err(|e| match &e {
            sled::Error::Io(io) if io.to_string().contains("could not acquire lock") => {
                Error::InUse {
                    dir: dir.to_path_buf(),
                    holder: describe_owner(dir),
                }
            }
            _ => Error::Store {
                dir: dir.to_path_buf(),
                source: e,
            },
        })?;
        // Before anything is written: a store from a newer baton is never misread.
        let found = backup::stored_version(&db).map_err(|source| Error::Store {
            dir: dir.to_path_buf(),
            source,
        })?;
        if found > FORMAT_VERSION {
            return Err(Error::StoreVersion {
                dir: dir.to_path_buf(),
                found,
                supported: FORMAT_VERSION,
            });
        }
        let owner = format!(
            "{} {}\n",
            std::process::id(),
            std::env::args().collect::<Vec<_>>().join(" ")
        );
        std::fs::write(dir.join(OWNER_FILE), owner).map_err(|source| Error::Io {
            path: dir.join(OWNER_FILE),
            source,
        })?;
        let mut trees = Vec::new();
        for tree in Tree::ALL {
            trees.push(db.open_tree(tree.name()).map_err(|source| Error::Store {
                dir: dir.to_path_buf(),
                source,
            })?);
        }
        let (tx, rx) = mpsc::channel::<Request>();
        let stats = Arc::new(CommitStats::default());
        let inner = Arc::new_cyclic(|weak: &std::sync::Weak<Inner>| {
            let weak = weak.clone();
            std::thread::Builder::new()
                .name("baton-commit".into())
                .spawn(move || committer(weak, rx))
                .expect("spawn the committer thread");
            Inner {
                dir: dir.to_path_buf(),
                db,
                trees,
                gate: RwLock::new(()),
                committer: tx,
                stats,
            }
        });
        let store = Store { inner, gated: true };
        store.build_run_index()?;
        if found < FORMAT_VERSION {
            // New, or upgraded above: from now on it says which layout it has.
            let db = &store.inner.db;
            db.insert(FORMAT_KEY, &FORMAT_VERSION.to_be_bytes())
                .and_then(|_| db.flush())
                .map_err(|e| store.sled_err(e))?;
        }
        Ok(store)
    }

    /// The index writes that go with writing `rec`'s head (put them before the head).
    pub fn run_index_writes(rec: &RunRecord) -> Vec<Write> {
        let mut out = Vec::with_capacity(2 * RunStatus::ALL.len() + 1);
        for status in RunStatus::ALL {
            for key in [
                status_index_key(status, &rec.id),
                index_key(b'x', &wf_status(&rec.workflow_id, status), &rec.id),
            ] {
                out.push(if status == rec.status {
                    Write::put_raw(Tree::RunIndex, key, Vec::new())
                } else {
                    Write::delete(Tree::RunIndex, key)
                });
            }
        }
        out.push(Write::put_raw(
            Tree::RunIndex,
            index_key(b'w', &rec.workflow_id, &rec.id),
            Vec::new(),
        ));
        out.push(Write::put_raw(
            Tree::RunIndex,
            status_of_key(&rec.id),
            rec.status.as_str().as_bytes().to_vec(),
        ));
        out
    }

    /// The index writes that move `rec` from status `before`, when the index is known to hold
    /// exactly `before` for it (the keys of every other status absent): the entries of the
    /// old status go, those of the new one come. Put them before the head, as above.
    pub fn run_index_move(rec: &RunRecord, before: RunStatus) -> Vec<Write> {
        let keys = |status: RunStatus| {
            [
                status_index_key(status, &rec.id),
                index_key(b'x', &wf_status(&rec.workflow_id, status), &rec.id),
            ]
        };
        let mut out = Vec::with_capacity(5);
        out.extend(keys(before).map(|key| Write::delete(Tree::RunIndex, key)));
        out.extend(keys(rec.status).map(|key| Write::put_raw(Tree::RunIndex, key, Vec::new())));
        out.push(Write::put_raw(
            Tree::RunIndex,
            status_of_key(&rec.id),
            rec.status.as_str().as_bytes().to_vec(),
        ));
        out
    }

    /// The index writes of what a run is about (see [`crate::subject`]), from its input and
    /// job: written once, with its start.
    pub fn subject_writes(run: &str, input: &Map<String, Value>, job: Option<&Job>) -> Vec<Write> {
        subject_names(input, job)
            .into_iter()
            .map(|name| Write::put_raw(Tree::RunIndex, index_key(b'a', &name, run), Vec::new()))
            .collect()
    }

    /// Builds the run index from the heads, once (a store written before it existed).
    fn build_run_index(&self) -> Result<()> {
        let index = self.tree(Tree::RunIndex);
        if index
            .contains_key(INDEX_BUILT)
            .map_err(|e| self.sled_err(e))?
        {
            return Ok(());
        }
        let mut batch = sled::Batch::default();
        for (_, rec) in self.scan::<RunRecord>(Tree::Runs, b"")? {
            let job = match &rec.job_id {
                Some(id) => self.job(id).unwrap_or_else(|e| {
                    tracing::error!("{e}; run {} indexed by its input only", rec.id);
                    None
                }),
                None => None,
            };
            let writes = Store::run_index_writes(&rec)
                .into_iter()
                .chain(Store::subject_writes(&rec.id, &rec.input, job.as_ref()));
            for w in writes {
                match w.value {
                    Some(v) => batch.insert(w.key, v),
                    None => batch.remove(w.key),
                }
            }
        }
        batch.insert(INDEX_BUILT, Vec::new());
        index.apply_batch(batch).map_err(|e| self.sled_err(e))?;
        self.inner.db.flush().map_err(|e| self.sled_err(e))?;
        Ok(())
    }

    /// Run ids under an index prefix, newest first.
    fn index_ids(&self, prefix: &[u8]) -> Result<Vec<String>> {
        self.index_page(prefix, 0, usize::MAX)
    }

    /// `limit` run ids under an index prefix after skipping `offset`, newest first: a page
    /// costs its offset in keys, not the whole index.
    fn index_page(&self, prefix: &[u8], offset: usize, limit: usize) -> Result<Vec<String>> {
        let _gate = self.gate();
        let mut out = Vec::new();
        let keys = self.tree(Tree::RunIndex).scan_prefix(prefix).keys().rev();
        for key in keys.skip(offset).take(limit) {
            let key = key.map_err(|e| self.sled_err(e))?;
            out.push(String::from_utf8_lossy(&key[prefix.len()..]).into_owned());
        }
        Ok(out)
    }

    /// The key of `run` under `tag` in [`Tree::RunTags`].
    pub fn tag_key(tag: &str, run: &str) -> Vec<u8> {
        let mut key = Vec::with_capacity(tag.len() + 1 + run.len());
        key.extend_from_slice(tag.as_bytes());
        key.push(0);
        key.extend_from_slice(run.as_bytes());
        key
    }

    /// Whether `run` is linked to `tag`.
    pub fn is_tagged(&self, tag: &str, run: &str) -> Result<bool> {
        let _gate = self.gate();
        self.tree(Tree::RunTags)
            .contains_key(Store::tag_key(tag, run))
            .map_err(|e| self.sled_err(e))
    }

    /// Ids of the runs linked to `tag`, most recently linked first (the values are
    /// [`Store::next_id`]s: run ids order by creation only to the millisecond).
    pub fn tagged_run_ids(&self, tag: &str) -> Result<Vec<String>> {
        let prefix = Store::tag_key(tag, "");
        let _gate = self.gate();
        let mut out = Vec::new();
        for item in self.tree(Tree::RunTags).scan_prefix(&prefix) {
            let (key, value) = item.map_err(|e| self.sled_err(e))?;
            let order = <[u8; 8]>::try_from(value.as_ref()).map_or(0, u64::from_be_bytes);
            out.push((
                order,
                String::from_utf8_lossy(&key[prefix.len()..]).into_owned(),
            ));
        }
        out.sort_by(|a, b| b.cmp(a));
        Ok(out.into_iter().map(|(_, run)| run).collect())
    }

    /// One page of the runs matching `status` and `workflow` (either, both or neither),
    /// newest first, and how many match in all.
    pub fn run_ids_page(
        &self,
        status: Option<RunStatus>,
        workflow: Option<&str>,
        offset: usize,
        limit: usize,
    ) -> Result<(Vec<String>, usize)> {
        let prefix = match (status, workflow) {
            (Some(s), None) => index_prefix(b's', s.as_str()),
            (None, Some(w)) => index_prefix(b'w', w),
            (Some(s), Some(w)) => index_prefix(b'x', &wf_status(w, s)),
            (None, None) => {
                let total = RunStatus::ALL
                    .iter()
                    .map(|s| self.count_by_status(None, *s))
                    .sum::<Result<usize>>()?;
                let _gate = self.gate();
                let mut out = Vec::new();
                let keys = self.tree(Tree::Runs).iter().keys().rev();
                for key in keys.skip(offset).take(limit) {
                    let key = key.map_err(|e| self.sled_err(e))?;
                    out.push(String::from_utf8_lossy(&key).into_owned());
                }
                return Ok((out, total));
            }
        };
        let total = {
            let _gate = self.gate();
            self.tree(Tree::RunIndex)
                .scan_prefix(&prefix)
                .keys()
                .count()
        };
        Ok((self.index_page(&prefix, offset, limit)?, total))
    }

    /// Ids of runs with `status`, newest first.
    pub fn run_ids_by_status(&self, status: RunStatus) -> Result<Vec<String>> {
        self.index_ids(&index_prefix(b's', status.as_str()))
    }

    /// Ids of runs of `workflow`, newest first.
    pub fn run_ids_by_workflow(&self, workflow: &str) -> Result<Vec<String>> {
        self.index_ids(&index_prefix(b'w', workflow))
    }

    /// Ids of runs about `name` (an index name from [`crate::subject`]), newest first.
    pub(crate) fn run_ids_about(&self, name: &str) -> Result<Vec<String>> {
        self.index_ids(&index_prefix(b'a', name))
    }

    /// Ids of runs whose id starts with `prefix`, newest first.
    pub fn run_ids_with_prefix(&self, prefix: &str) -> Result<Vec<String>> {
        let _gate = self.gate();
        let mut out = Vec::new();
        for key in self
            .tree(Tree::Runs)
            .scan_prefix(prefix.as_bytes())
            .keys()
            .rev()
        {
            let key = key.map_err(|e| self.sled_err(e))?;
            out.push(String::from_utf8_lossy(&key).into_owned());
        }
        Ok(out)
    }

    /// A run's current status, by the index (`None` for an unknown run).
    pub fn status_of(&self, run: &str) -> Result<Option<RunStatus>> {
        let _gate = self.gate();
        let Some(bytes) = self
            .tree(Tree::RunIndex)
            .get(status_of_key(run))
            .map_err(|e| self.sled_err(e))?
        else {
            return Ok(None);
        };
        let text = String::from_utf8_lossy(&bytes);
        text.parse()
            .map(Some)
            .map_err(|message: String| Error::Corrupt {
                tree: Tree::RunIndex.name(),
                key: readable_key(&status_of_key(run)),
                message,
            })
    }

    /// Whether the run is of `workflow`, by the index.
    pub fn is_of_workflow(&self, run: &str, workflow: &str) -> Result<bool> {
        let _gate = self.gate();
        self.tree(Tree::RunIndex)
            .contains_key(index_key(b'w', workflow, run))
            .map_err(|e| self.sled_err(e))
    }

    /// Every run id, newest first (the key order of the runs tree).
    pub fn run_ids(&self) -> Result<Vec<String>> {
        let _gate = self.gate();
        let mut out = Vec::new();
        for key in self.tree(Tree::Runs).iter().keys().rev() {
            let key = key.map_err(|e| self.sled_err(e))?;
            out.push(String::from_utf8_lossy(&key).into_owned());
        }
        Ok(out)
    }

    /// Ids of runs of `workflow` with `status`, newest first.
    pub fn run_ids_by_workflow_status(
        &self,
        workflow: &str,
        status: RunStatus,
    ) -> Result<Vec<String>> {
        self.index_ids(&index_prefix(b'x', &wf_status(workflow, status)))
    }

    /// How many runs have `status` (of `workflow`, if given).
    pub fn count_by_status(&self, workflow: Option<&str>, status: RunStatus) -> Result<usize> {
        let _gate = self.gate();
        let prefix = match workflow {
            None => index_prefix(b's', status.as_str()),
            Some(w) => index_prefix(b'x', &wf_status(w, status)),
        };
        Ok(self.tree(Tree::RunIndex).scan_prefix(prefix).keys().count())
    }

    /// Whether the run has `status`, by the index.
    pub fn has_status(&self, run: &str, status: RunStatus) -> Result<bool> {
        self.tree(Tree::RunIndex)
            .contains_key(status_index_key(status, run))
            .map_err(|e| self.sled_err(e))
    }

    /// A view whose reads do not wait for a flush in progress. Only for records no commit
    /// can be writing: runs without a live actor, which the supervisor loads to wake or
    /// resume them. Everything a caller outside the engine reads stays gated.
    pub(crate) fn for_idle_runs(&self) -> Store {
        Store {
            inner: self.inner.clone(),
            gated: false,
        }
    }

    fn gate(&self) -> Option<std::sync::RwLockReadGuard<'_, ()>> {
        self.gated
            .then(|| self.inner.gate.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The committer's counters.
    pub fn stats(&self) -> &CommitStats {
        &self.inner.stats
    }

    /// Bytes the database takes on disk.
    pub fn size_on_disk(&self) -> u64 {
        self.inner.db.size_on_disk().unwrap_or(0)
    }

    pub(crate) fn tree(&self, tree: Tree) -> &sled::Tree {
        &self.inner.trees[tree as usize]
    }

    /// Applies `writes` and makes them durable (group commit). Returns once flushed.
    pub async fn commit(&self, writes: Vec<Write>) -> Result<()> {
        if writes.is_empty() {
            return Ok(());
        }
        let (done, wait) = oneshot::channel();
        self.inner
            .committer
            .send(Request { writes, done })
            .map_err(|_| Error::ShuttingDown)?;
        match wait.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(message)) => Err(Error::Store {
                dir: self.inner.dir.clone(),
                source: sled::Error::Io(std::io::Error::other(message)),
            }),
            Err(_) => Err(Error::ShuttingDown),
        }
    }

    /// Flushes and blocks; for shutdown paths outside tokio.
    pub fn flush_blocking(&self) -> Result<()> {
        self.inner
            .db
            .flush()
            .map(|_| ())
            .map_err(|source| Error::Store {
                dir: self.inner.dir.clone(),
                source,
            })
    }

    fn read<T: DeserializeOwned>(&self, tree: Tree, key: &[u8]) -> Result<Option<T>> {
        let _gate = self.gate();
        let Some(bytes) = self.tree(tree).get(key).map_err(|e| self.sled_err(e))? else {
            return Ok(None);
        };
        decode(tree, key, &bytes).map(Some)
    }

    /// Decoded values under `prefix`; a corrupt value is reported and skipped.
    pub(crate) fn scan<T: DeserializeOwned>(
        &self,
        tree: Tree,
        prefix: &[u8],
    ) -> Result<Vec<(Vec<u8>, T)>> {
        let _gate = self.gate();
        let mut out = Vec::new();
        for item in self.tree(tree).scan_prefix(prefix) {
            let (key, value) = item.map_err(|e| self.sled_err(e))?;
            match decode(tree, &key, &value) {
                Ok(v) => out.push((key.to_vec(), v)),
                Err(e) => tracing::error!("{e}; skipped"),
            }
        }
        Ok(out)
    }

    fn sled_err(&self, source: sled::Error) -> Error {
        Error::Store {
            dir: self.inner.dir.clone(),
            source,
        }
    }

    /// A stored definition.
    pub fn definition(&self, id: &str, digest: &str) -> Result<Option<Definition>> {
        self.read(Tree::Workflows, format!("{id}\0{digest}").as_bytes())
    }

    /// The digest of the latest registered definition of `id`.
    pub fn latest_digest(&self, id: &str) -> Result<Option<String>> {
        self.read(Tree::Workflows, id.as_bytes())
    }

    /// Writes to store a definition and make it the latest of its id.
    pub fn definition_writes(def: &Definition, digest: &str) -> Vec<Write> {
        vec![
            Write::put(
                Tree::Workflows,
                format!("{}\0{digest}", def.id).into_bytes(),
                def,
            ),
            Write::put(Tree::Workflows, def.id.clone().into_bytes(), digest),
        ]
    }

    /// The latest definition of every workflow.
    pub fn latest_definitions(&self) -> Result<Vec<(String, Definition)>> {
        let mut out = Vec::new();
        let latest: Vec<(Vec<u8>, String)> = self
            .scan::<Value>(Tree::Workflows, b"")?
            .into_iter()
            .filter(|(k, _)| !k.contains(&0))
            .filter_map(|(k, v)| Some((k, v.as_str()?.to_string())))
            .collect();
        for (key, digest) in latest {
            let id = String::from_utf8_lossy(&key).to_string();
            if let Some(def) = self.definition(&id, &digest)? {
                out.push((digest, def));
            }
        }
        Ok(out)
    }

    /// A run's head snapshot (without steps and later events).
    pub fn head(&self, run: &str) -> Result<Option<RunRecord>> {
        self.read(Tree::Runs, run.as_bytes())
    }

    /// A run as of its last durable event: head, steps, and the events after the head.
    pub fn load_run(&self, run: &str, step_ids: &[String]) -> Result<Option<RunRecord>> {
        let Some(head) = self.head(run)? else {
            return Ok(None);
        };
        self.complete_run(head, step_ids).map(Some)
    }

    /// Completes a head read earlier: its steps, and the events after it.
    pub fn complete_run(&self, mut rec: RunRecord, step_ids: &[String]) -> Result<RunRecord> {
        let run = rec.id.clone();
        let run = run.as_str();
        rec.steps = step_ids
            .iter()
            .map(|id| StepRecord {
                id: id.clone(),
                ..Default::default()
            })
            .collect();
        for (key, step) in self.scan::<StepRecord>(Tree::Steps, &run_prefix(run))? {
            let idx = u64::from_be_bytes(key[key.len() - 8..].try_into().unwrap_or_default());
            if let Some(slot) = rec.steps.get_mut(idx as usize) {
                *slot = step;
            }
        }
        for event in self.events(run, rec.seq)? {
            rec.apply(&event);
        }
        Ok(rec)
    }

    /// Events of a run with `seq > since`, in order.
    pub fn events(&self, run: &str, since: u64) -> Result<Vec<Event>> {
        let _gate = self.gate();
        let start = run_key(run, since.saturating_add(1));
        let end = run_key(run, u64::MAX);
        let mut out = Vec::new();
        for item in self.tree(Tree::Events).range(start..=end) {
            let (key, value) = item.map_err(|e| self.sled_err(e))?;
            match decode::<Event>(Tree::Events, &key, &value) {
                Ok(ev) => out.push(ev),
                Err(e) => tracing::error!("{e}; skipped"),
            }
        }
        Ok(out)
    }

    /// The change journal of a run, oldest first.
    pub fn changes(&self, run: &str) -> Result<Vec<Change>> {
        Ok(self
            .scan(Tree::Changes, &run_prefix(run))?
            .into_iter()
            .map(|(_, c)| c)
            .collect())
    }

    /// The writes that delete run `rec` and everything stored for it: events, step records,
    /// change journal, notifier deliveries, its job, its index entries, and the head last (a
    /// head whose events are gone is still a whole snapshot, so a crash midway loses nothing
    /// a later pass cannot finish).
    pub fn run_delete_writes(&self, rec: &RunRecord) -> Result<Vec<Write>> {
        // Its job names what the run is about (the index entries to remove); read before the
        // gate below, which `read` takes too.
        let job = match &rec.job_id {
            Some(id) => self.job(id)?,
            None => None,
        };
        let _gate = self.gate();
        let prefix = run_prefix(&rec.id);
        let mut out = Vec::new();
        for w in Store::subject_writes(&rec.id, &rec.input, job.as_ref()) {
            out.push(Write::delete(w.tree, w.key));
        }
        out.push(Write::delete(Tree::RunIndex, status_of_key(&rec.id)));
        // Its tags (`tag \0 run`): the tree holds a few runs per chat, so a scan is cheap.
        for item in self.tree(Tree::RunTags).iter() {
            let (key, _) = item.map_err(|e| self.sled_err(e))?;
            if key.rsplit(|b| *b == 0).next() == Some(rec.id.as_bytes()) {
                out.push(Write::delete(Tree::RunTags, key.to_vec()));
            }
        }
        for tree in [Tree::Events, Tree::Steps, Tree::Changes, Tree::Deliveries] {
            for item in self.tree(tree).scan_prefix(&prefix) {
                let (key, _) = item.map_err(|e| self.sled_err(e))?;
                out.push(Write::delete(tree, key.to_vec()));
            }
        }
        if let Some(job) = &rec.job_id {
            out.push(Write::delete(Tree::Jobs, job.clone().into_bytes()));
        }
        out.push(Write::delete(Tree::Unfinished, rec.id.clone().into_bytes()));
        for status in RunStatus::ALL {
            out.push(Write::delete(
                Tree::RunIndex,
                status_index_key(status, &rec.id),
            ));
            let key = index_key(b'x', &wf_status(&rec.workflow_id, status), &rec.id);
            out.push(Write::delete(Tree::RunIndex, key));
        }
        let key = index_key(b'w', &rec.workflow_id, &rec.id);
        out.push(Write::delete(Tree::RunIndex, key));
        out.push(Write::delete(Tree::Runs, rec.id.clone().into_bytes()));
        Ok(out)
    }

    /// A number unique in this database and larger than any handed out before, across
    /// restarts: change journal keys, so two writers can never collide.
    pub fn next_id(&self) -> Result<u64> {
        self.inner.db.generate_id().map_err(|e| self.sled_err(e))
    }

    /// Ids of the runs that have not finished.
    pub fn unfinished(&self) -> Result<Vec<String>> {
        let _gate = self.gate();
        let mut out = Vec::new();
        for item in self.tree(Tree::Unfinished).iter() {
            let (key, _) = item.map_err(|e| self.sled_err(e))?;
            match std::str::from_utf8(&key) {
                Ok(id) => out.push(id.to_string()),
                Err(_) => tracing::error!(
                    "corrupt record in tree `unfinished` at key {}: not UTF-8; skipped",
                    readable_key(&key)
                ),
            }
        }
        Ok(out)
    }

    /// Every persisted timer, earliest first.
    pub fn timers(&self) -> Result<Vec<TimerEntry>> {
        let _gate = self.gate();
        let mut out = Vec::new();
        for item in self.tree(Tree::Timers).iter() {
            let (key, _) = item.map_err(|e| self.sled_err(e))?;
            match parse_timer_key(&key) {
                Some(t) => out.push(t),
                None => tracing::error!(
                    "corrupt record in tree `timers` at key {}; skipped",
                    readable_key(&key)
                ),
            }
        }
        Ok(out)
    }

    /// Every run head, in id order (ids sort by creation time).
    pub fn heads(&self) -> Result<Vec<RunRecord>> {
        Ok(self
            .scan::<RunRecord>(Tree::Runs, b"")?
            .into_iter()
            .map(|(_, r)| r)
            .collect())
    }

    /// A job.
    pub fn job(&self, id: &str) -> Result<Option<Job>> {
        self.read(Tree::Jobs, id.as_bytes())
    }

    /// Decoded values under `prefix` of any tree, with their keys; corrupt ones are skipped.
    pub(crate) fn scan_json<T: DeserializeOwned>(
        &self,
        tree: Tree,
        prefix: &[u8],
    ) -> Result<Vec<(Vec<u8>, T)>> {
        self.scan(tree, prefix)
    }

    /// A raw value from any tree (for the app's own records, e.g. `deliveries`).
    pub fn get_json<T: DeserializeOwned>(&self, tree: Tree, key: &[u8]) -> Result<Option<T>> {
        self.read(tree, key)
    }

    /// Writes a damaged value, for tests of corruption handling.
    #[cfg(feature = "test-hooks")]
    pub fn corrupt_for_test(&self, tree: Tree, key: &[u8]) -> Result<()> {
        self.tree(tree)
            .insert(key, b"{not json".as_slice())
            .map_err(|e| self.sled_err(e))?;
        self.flush_blocking()
    }
}

fn parse_timer_key(key: &[u8]) -> Option<TimerEntry> {
    if key.len() < 8 + 1 + 8 {
        return None;
    }
    let due = u64::from_be_bytes(key[..8].try_into().ok()?);
    let timer = u64::from_be_bytes(key[key.len() - 8..].try_into().ok()?);
    let run = std::str::from_utf8(&key[8..key.len() - 9])
        .ok()?
        .to_string();
    Some(TimerEntry { due, run, timer })
}

fn decode<T: DeserializeOwned>(tree: Tree, key: &[u8], bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| Error::Corrupt {
        tree: tree.name(),
        key: readable_key(key),
        message: e.to_string(),
    })
}

/// Whether the process recorded as the store's last owner is alive.
fn owner_alive(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join(OWNER_FILE))
        .ok()
        .and_then(|t| t.split_whitespace().next().map(str::to_string))
        .is_some_and(|pid| Path::new("/proc").join(pid).exists())
}

fn owner_is_me(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join(OWNER_FILE))
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse::<u32>().ok())
        == Some(std::process::id())
}

fn describe_owner(dir: &Path) -> String {
    match std::fs::read_to_string(dir.join(OWNER_FILE)) {
        Ok(text) => {
            let text = text.trim();
            let pid = text.split_whitespace().next().unwrap_or("?");
            let alive = Path::new("/proc").join(pid).exists();
            if alive {
                format!("process {pid} (`{}`)", text[pid.len()..].trim())
            } else {
                format!(
                    "another process (last owner was pid {pid}, `{}`)",
                    text[pid.len()..].trim()
                )
            }
        }
        Err(_) => "another process".to_string(),
    }
}

/// The committer thread: drains waiting batches, applies them, flushes once, answers all.
fn committer(inner: std::sync::Weak<Inner>, rx: mpsc::Receiver<Request>) {
    // Batches beyond this many writes wait for the next flush, bounding one flush's latency.
    const MAX_GROUP_WRITES: usize = 20_000;
    while let Ok(first) = rx.recv() {
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let mut group = vec![first];
        let mut count = group[0].writes.len();
        while count < MAX_GROUP_WRITES {
            match rx.try_recv() {
                Ok(req) => {
                    count += req.writes.len();
                    group.push(req);
                }
                Err(_) => break,
            }
        }
        let result = {
            let _gate = inner.gate.write().unwrap_or_else(|e| e.into_inner());
            let mut bytes = 0u64;
            let mut result: std::result::Result<(), String> = Ok(());
            'apply: for req in &group {
                for w in &req.writes {
                    bytes += w.len() as u64;
                    let tree = &inner.trees[w.tree as usize];
                    let r = match &w.value {
                        Some(v) => tree.insert(&w.key, v.as_slice()).map(|_| ()),
                        None => tree.remove(&w.key).map(|_| ()),
                    };
                    if let Err(e) = r {
                        result = Err(e.to_string());
                        break 'apply;
                    }
                }
            }
            if result.is_ok() {
                let started = Instant::now();
                result = inner.db.flush().map(|_| ()).map_err(|e| e.to_string());
                let stats = &inner.stats;
                stats
                    .flush_us
                    .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
                stats.flushes.fetch_add(1, Ordering::Relaxed);
                stats
                    .batches
                    .fetch_add(group.len() as u64, Ordering::Relaxed);
                stats.writes.fetch_add(count as u64, Ordering::Relaxed);
                stats.bytes.fetch_add(bytes, Ordering::Relaxed);
            }
            result
        };
        // Let go of the store before answering, so that a caller who drops its handle after
        // the commit closes the database at once, and can open it again.
        drop(inner);
        for req in group {
            let _ = req.done.send(result.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timer_keys_round_trip_and_sort() {
        let a = timer_key(5, "run_b", 9);
        let b = timer_key(6, "run_a", 1);
        assert!(a < b);
        assert_eq!(
            parse_timer_key(&a),
            Some(TimerEntry {
                due: 5,
                run: "run_b".into(),
                timer: 9
            })
        );
    }

    #[tokio::test]
    async fn second_open_names_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let _store = Store::open(dir.path(), 1 << 20).unwrap();
        let err = Store::open(dir.path(), 1 << 20).unwrap_err().to_string();
        assert!(err.contains("in use by process"), "{err}");
        assert!(err.contains(&std::process::id().to_string()), "{err}");
    }

    #[tokio::test]
    async fn commit_is_visible_and_corrupt_records_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        store
            .commit(vec![
                Write::put_raw(Tree::Unfinished, b"run_1".to_vec(), vec![]),
                Write::put(
                    Tree::Jobs,
                    b"j1".to_vec(),
                    &Job {
                        id: "j1".into(),
                        ..Default::default()
                    },
                ),
            ])
            .await
            .unwrap();
        assert_eq!(store.unfinished().unwrap(), vec!["run_1".to_string()]);
        store.corrupt_for_test(Tree::Runs, b"run_bad").unwrap();
        assert!(store.heads().unwrap().is_empty());
        let err = store.head("run_bad").unwrap_err().to_string();
        assert!(
            err.contains("workflow_runs") && err.contains("run_bad"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn the_run_index_follows_heads_and_is_built_for_an_older_store() {
        let dir = tempfile::tempdir().unwrap();
        let head = |id: &str, wf: &str, status: RunStatus| {
            let mut rec = RunRecord::new(id.into(), std::iter::empty(), 0);
            rec.workflow_id = wf.into();
            rec.status = status;
            rec
        };
        {
            let store = Store::open(dir.path(), 1 << 20).unwrap();
            // Heads written as an older baton did: no index entries.
            let mut writes = Vec::new();
            for (id, wf, st) in [
                ("run_1", "a", RunStatus::Completed),
                ("run_2", "b", RunStatus::Failed),
                ("run_3", "a", RunStatus::Failed),
            ] {
                let mut rec = head(id, wf, st);
                if id == "run_1" {
                    rec.input.insert("repo".into(), "octo/app".into());
                    rec.input.insert("issue".into(), 7.into());
                }
                if id == "run_2" {
                    // Named only by its job.
                    rec.job_id = Some("github:d2".into());
                    writes.push(Write::put(
                        Tree::Jobs,
                        b"github:d2".to_vec(),
                        &Job {
                            id: "github:d2".into(),
                            data: serde_json::json!({"repo": "Octo/App", "subject": {"number": 7}}),
                            ..Default::default()
                        },
                    ));
                }
                writes.push(Write::put(Tree::Runs, id.as_bytes().to_vec(), &rec));
            }
            store.commit(writes).await.unwrap();
            store.tree(Tree::RunIndex).clear().unwrap();
            store.inner.db.flush().unwrap();
        }
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(
            store.run_ids_by_status(RunStatus::Failed).unwrap(),
            ["run_3", "run_2"]
        );
        assert_eq!(store.run_ids_by_workflow("a").unwrap(), ["run_3", "run_1"]);
        assert_eq!(
            store.count_by_status(None, RunStatus::Completed).unwrap(),
            1
        );
        assert_eq!(
            store.count_by_status(Some("a"), RunStatus::Failed).unwrap(),
            1
        );
        assert_eq!(
            store
                .run_ids_by_workflow_status("b", RunStatus::Failed)
                .unwrap(),
            ["run_2"]
        );
        assert_eq!(store.run_ids().unwrap(), ["run_3", "run_2", "run_1"]);
        // What runs are about, from their input or their job.
        assert_eq!(
            store.run_ids_about("octo/app#7").unwrap(),
            ["run_2", "run_1"]
        );
        assert_eq!(store.run_ids_about("octo/app").unwrap(), ["run_2", "run_1"]);
        assert!(store.run_ids_about("octo/app#8").unwrap().is_empty());
        assert_eq!(store.run_ids_with_prefix("run_2").unwrap(), ["run_2"]);
        assert_eq!(store.status_of("run_3").unwrap(), Some(RunStatus::Failed));
        assert_eq!(store.status_of("run_9").unwrap(), None);
        assert!(store.is_of_workflow("run_3", "a").unwrap());
        assert!(!store.is_of_workflow("run_3", "b").unwrap());
        // A status change moves the run from one status to the other.
        let rec = head("run_3", "a", RunStatus::Running);
        let mut writes = Store::run_index_writes(&rec);
        writes.push(Write::put(Tree::Runs, b"run_3".to_vec(), &rec));
        store.commit(writes).await.unwrap();
        assert_eq!(
            store.run_ids_by_status(RunStatus::Failed).unwrap(),
            ["run_2"]
        );
        assert_eq!(
            store.run_ids_by_status(RunStatus::Running).unwrap(),
            ["run_3"]
        );
        assert!(store.has_status("run_3", RunStatus::Running).unwrap());
        assert_eq!(store.status_of("run_3").unwrap(), Some(RunStatus::Running));
        // A start writes what the run is about in its commit.
        let mut started = head("run_4", "a", RunStatus::Pending);
        started.input.insert("repo".into(), "octo/app".into());
        started.input.insert("pr".into(), 8.into());
        let mut writes = Store::run_index_writes(&started);
        writes.extend(Store::subject_writes("run_4", &started.input, None));
        writes.push(Write::put(Tree::Runs, b"run_4".to_vec(), &started));
        store.commit(writes).await.unwrap();
        assert_eq!(store.run_ids_about("octo/app#8").unwrap(), ["run_4"]);
        assert_eq!(
            store.run_ids_about("octo/app").unwrap(),
            ["run_4", "run_2", "run_1"]
        );
        assert!(!store.has_status("run_3", RunStatus::Failed).unwrap());
    }
}
