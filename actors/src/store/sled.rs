//! The sled backend: one sled database per data dir, used by one process.
//!
//! Trees (the seed's tables, and what the engine needs beside them):
//! - `workflows`: `id` → latest digest, `id \0 digest` → definition (JSON),
//!   `id \0 digest \0 provenance` → how it was last registered ([`Provenance`], JSON)
//! - `workflow_runs`: run id → head snapshot ([`RunRecord`] without steps)
//! - `run_steps`: run id \0 index (u32 BE) → [`StepRecord`], written with head snapshots only:
//!   a step changed since its run's head is its record plus the events after the head
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
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::{Arc, RwLock, TryLockError};
use std::time::Instant;

use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::oneshot;

use super::{
    encode, off_runtime, Batch, Change, CommitStats, Durable, Job, Op, RunQuery, Store,
    StoredDefinition, TimerEntry,
};
use crate::definition::{Definition, Provenance};
use crate::error::{Error, Result};
use crate::record::{Event, Millis, RunRecord, RunStatus, StepRecord};
use crate::subject::subject_names;

/// The trees, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tree {
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
    /// value is a [`SledStore::next_id`] (big-endian), so a tag's runs list in the order linked.
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
pub(crate) struct Write {
    tree: Tree,
    key: Vec<u8>,
    value: Option<Vec<u8>>,
}

impl Write {
    /// Insert or replace `key` with `value` encoded as JSON.
    #[cfg(test)]
    fn put<T: serde::Serialize + ?Sized>(tree: Tree, key: Vec<u8>, value: &T) -> Write {
        Write {
            tree,
            key,
            value: Some(encode(value)),
        }
    }

    /// Insert raw bytes.
    fn put_raw(tree: Tree, key: Vec<u8>, value: Vec<u8>) -> Write {
        Write {
            tree,
            key,
            value: Some(value),
        }
    }

    /// Remove `key`.
    fn delete(tree: Tree, key: Vec<u8>) -> Write {
        Write {
            tree,
            key,
            value: None,
        }
    }

    /// Bytes this write puts on disk (key and value).
    fn len(&self) -> usize {
        self.key.len() + self.value.as_ref().map_or(0, Vec::len)
    }
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

/// The sled store's handle; cheap to clone.
#[derive(Clone)]
pub struct SledStore {
    inner: Arc<Inner>,
    /// Whether reads wait out a commit in progress (see [`SledStore::for_idle_runs`]).
    gated: bool,
    /// "store at DIR", for messages.
    describe: Arc<str>,
}

impl std::fmt::Debug for SledStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledStore")
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
fn run_key(run: &str, n: u64) -> Vec<u8> {
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
fn timer_key(due: Millis, run: &str, timer: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(run.len() + 17);
    key.extend_from_slice(&due.to_be_bytes());
    key.extend_from_slice(&run_key(run, timer));
    key
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

impl SledStore {
    /// Opens (or creates) the store in `dir`. `cache_bytes` bounds sled's page cache.
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<SledStore> {
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
        let store = SledStore {
            inner,
            gated: true,
            describe: format!("store at {}", dir.display()).into(),
        };
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
    fn run_index_writes(run: &str, workflow: &str, current: RunStatus) -> Vec<Write> {
        let mut out = Vec::with_capacity(2 * RunStatus::ALL.len() + 1);
        for status in RunStatus::ALL {
            for key in [
                status_index_key(status, run),
                index_key(b'x', &wf_status(workflow, status), run),
            ] {
                out.push(if status == current {
                    Write::put_raw(Tree::RunIndex, key, Vec::new())
                } else {
                    Write::delete(Tree::RunIndex, key)
                });
            }
        }
        out.push(Write::put_raw(
            Tree::RunIndex,
            index_key(b'w', workflow, run),
            Vec::new(),
        ));
        out.push(Write::put_raw(
            Tree::RunIndex,
            status_of_key(run),
            current.as_str().as_bytes().to_vec(),
        ));
        out
    }

    /// The index writes that move run `run` of `workflow` from status `before` to `status`,
    /// when the index is known to hold exactly `before` for it (the keys of every other status
    /// absent): the entries of the old status go, those of the new one come. Put them before
    /// the head, as above.
    fn run_index_move(
        run: &str,
        workflow: &str,
        before: RunStatus,
        status: RunStatus,
    ) -> Vec<Write> {
        let keys = |status: RunStatus| {
            [
                status_index_key(status, run),
                index_key(b'x', &wf_status(workflow, status), run),
            ]
        };
        let mut out = Vec::with_capacity(5);
        out.extend(keys(before).map(|key| Write::delete(Tree::RunIndex, key)));
        out.extend(keys(status).map(|key| Write::put_raw(Tree::RunIndex, key, Vec::new())));
        out.push(Write::put_raw(
            Tree::RunIndex,
            status_of_key(run),
            status.as_str().as_bytes().to_vec(),
        ));
        out
    }

    /// The index writes of what a run is about (see [`crate::subject`]): written once, with
    /// its start.
    fn subject_writes(run: &str, subjects: &[String]) -> Vec<Write> {
        subjects
            .iter()
            .map(|name| Write::put_raw(Tree::RunIndex, index_key(b'a', name, run), Vec::new()))
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
            let subjects = subject_names(&rec.input, job.as_ref());
            let writes = SledStore::run_index_writes(&rec.id, &rec.workflow_id, rec.status)
                .into_iter()
                .chain(SledStore::subject_writes(&rec.id, &subjects));
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
    fn tag_key(tag: &str, run: &str) -> Vec<u8> {
        let mut key = Vec::with_capacity(tag.len() + 1 + run.len());
        key.extend_from_slice(tag.as_bytes());
        key.push(0);
        key.extend_from_slice(run.as_bytes());
        key
    }

    /// Ids under `prefix` of the runs tree (whose keys are run ids), newest first.
    fn head_ids(&self, prefix: &[u8], offset: usize, limit: usize) -> Result<Vec<String>> {
        let _gate = self.gate();
        let mut out = Vec::new();
        let keys = self.tree(Tree::Runs).scan_prefix(prefix).keys().rev();
        for key in keys.skip(offset).take(limit) {
            let key = key.map_err(|e| self.sled_err(e))?;
            out.push(String::from_utf8_lossy(&key).into_owned());
        }
        Ok(out)
    }

    /// The index prefix a query reads (`None`: the runs tree itself).
    fn query_prefix(query: &RunQuery) -> Option<Vec<u8>> {
        match query {
            RunQuery::All | RunQuery::IdPrefix(_) => None,
            RunQuery::Status(s) => Some(index_prefix(b's', s.as_str())),
            RunQuery::Workflow(w) => Some(index_prefix(b'w', w)),
            RunQuery::WorkflowStatus(w, s) => Some(index_prefix(b'x', &wf_status(w, *s))),
            RunQuery::About(name) => Some(index_prefix(b'a', name)),
        }
    }

    fn tree(&self, tree: Tree) -> &sled::Tree {
        &self.inner.trees[tree as usize]
    }

    fn gate(&self) -> Option<std::sync::RwLockReadGuard<'_, ()>> {
        if !self.gated {
            return None;
        }
        let gate = &self.inner.gate;
        Some(match gate.try_read() {
            Ok(guard) => guard,
            Err(TryLockError::Poisoned(e)) => e.into_inner(),
            // The committer is applying or flushing: waited out off the runtime's worker.
            Err(TryLockError::WouldBlock) => {
                off_runtime(|| gate.read().unwrap_or_else(|e| e.into_inner()))
            }
        })
    }

    /// Applies `writes` and makes them durable (group commit).
    fn submit(&self, writes: Vec<Write>) -> Durable {
        if writes.is_empty() {
            return Durable::ready(Ok(()));
        }
        self.send(writes)
    }

    /// Hands `writes` (maybe none: a barrier) to the committer.
    fn send(&self, writes: Vec<Write>) -> Durable {
        let (done, wait) = oneshot::channel();
        match self.inner.committer.send(Request { writes, done }) {
            Ok(()) => Durable::waiting(wait, self.describe.clone()),
            Err(_) => Durable::ready(Err(Error::ShuttingDown)),
        }
    }

    fn read<T: DeserializeOwned>(&self, tree: Tree, key: &[u8]) -> Result<Option<T>> {
        let _gate = self.gate();
        let Some(bytes) = self.tree(tree).get(key).map_err(|e| self.sled_err(e))? else {
            return Ok(None);
        };
        decode(tree, key, &bytes).map(Some)
    }

    /// Decoded values under `prefix`; a corrupt value is reported and skipped.
    fn scan<T: DeserializeOwned>(&self, tree: Tree, prefix: &[u8]) -> Result<Vec<(Vec<u8>, T)>> {
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

    /// The writes of one operation, in the order a crash may cut them: whatever prefix
    /// survives leaves the store readable and the run findable.
    fn writes_of(&self, op: Op, out: &mut Vec<Write>) -> Result<()> {
        match op {
            Op::Definition {
                id,
                digest,
                json,
                provenance,
            } => {
                out.push(Write::put_raw(
                    Tree::Workflows,
                    format!("{id}\0{digest}").into_bytes(),
                    json,
                ));
                out.push(Write::put_raw(
                    Tree::Workflows,
                    provenance_key(&id, &digest),
                    provenance,
                ));
                out.push(Write::put_raw(
                    Tree::Workflows,
                    id.into_bytes(),
                    encode(&digest),
                ));
            }
            Op::StartRun {
                head,
                event: (seq, event),
                subjects,
                job,
            } => {
                out.push(Write::put_raw(Tree::Events, run_key(&head.id, seq), event));
                out.extend(SledStore::run_index_writes(
                    &head.id,
                    &head.workflow_id,
                    head.status,
                ));
                out.extend(SledStore::subject_writes(&head.id, &subjects));
                let id = head.id.clone().into_bytes();
                out.push(Write::put_raw(Tree::Runs, id.clone(), head.json));
                out.push(Write::put_raw(Tree::Unfinished, id, Vec::new()));
                if let Some((job_id, json)) = job {
                    out.push(Write::put_raw(Tree::Jobs, job_id.into_bytes(), json));
                }
            }
            Op::Transition(t) => {
                let id = t.run.as_bytes();
                // A crash may keep only a prefix of this batch: the run must be findable at
                // start-up whenever any of its events survived, so the unfinished entry of a
                // reopened run goes first (and again last).
                if t.reopened() {
                    out.push(Write::put_raw(Tree::Unfinished, id.to_vec(), Vec::new()));
                }
                for (seq, json) in &t.events {
                    out.push(Write::put_raw(
                        Tree::Events,
                        run_key(&t.run, *seq),
                        json.clone(),
                    ));
                }
                for (idx, json) in &t.steps {
                    out.push(Write::put_raw(
                        Tree::Steps,
                        run_key(&t.run, *idx),
                        json.clone(),
                    ));
                }
                for (due, timer) in &t.set_timers {
                    let key = timer_key(*due, &t.run, *timer);
                    out.push(Write::put_raw(Tree::Timers, key, Vec::new()));
                }
                for (due, timer) in &t.cleared_timers {
                    out.push(Write::delete(Tree::Timers, timer_key(*due, &t.run, *timer)));
                }
                if let Some(json) = &t.head {
                    if t.before != t.status && t.index_exact {
                        // The run index moves with the status, in the same commit, before
                        // the head: two entries when it is known to be exact.
                        out.extend(SledStore::run_index_move(
                            &t.run,
                            &t.workflow_id,
                            t.before,
                            t.status,
                        ));
                    } else if t.before != t.status {
                        out.extend(SledStore::run_index_writes(
                            &t.run,
                            &t.workflow_id,
                            t.status,
                        ));
                    }
                    out.push(Write::put_raw(Tree::Runs, id.to_vec(), json.clone()));
                }
                if t.finished() {
                    out.push(Write::delete(Tree::Unfinished, id.to_vec()));
                } else if t.reopened() {
                    out.push(Write::put_raw(Tree::Unfinished, id.to_vec(), Vec::new()));
                }
            }
            Op::Change { run, seq, json } => {
                out.push(Write::put_raw(Tree::Changes, run_key(&run, seq), json));
            }
            Op::Job { id, json } => out.push(Write::put_raw(Tree::Jobs, id.into_bytes(), json)),
            Op::Delivery { run, sink, json } => {
                out.push(Write::put_raw(
                    Tree::Deliveries,
                    delivery_key(&run, &sink),
                    json,
                ));
            }
            Op::Tag { tag, run, order } => out.push(Write::put_raw(
                Tree::RunTags,
                SledStore::tag_key(&tag, &run),
                order.to_be_bytes().to_vec(),
            )),
            Op::DeleteRun {
                id,
                workflow_id,
                subjects,
                job_id,
            } => self.delete_writes(&id, &workflow_id, &subjects, job_id, out)?,
            Op::ProcessGroup { key, json } => out.push(match json {
                Some(json) => Write::put_raw(Tree::ProcessGroups, key, json),
                None => Write::delete(Tree::ProcessGroups, key),
            }),
            Op::Slot { .. } => {}
        }
        Ok(())
    }

    /// The writes that delete a run and everything stored for it: events, step records,
    /// change journal, notifier deliveries, its job, its index entries, and the head last (a
    /// head whose events are gone is still a whole snapshot, so a crash midway loses nothing
    /// a later pass cannot finish).
    fn delete_writes(
        &self,
        run: &str,
        workflow_id: &str,
        subjects: &[String],
        job_id: Option<String>,
        out: &mut Vec<Write>,
    ) -> Result<()> {
        let _gate = self.gate();
        let prefix = run_prefix(run);
        for w in SledStore::subject_writes(run, subjects) {
            out.push(Write::delete(w.tree, w.key));
        }
        out.push(Write::delete(Tree::RunIndex, status_of_key(run)));
        // Its tags (`tag \0 run`): the tree holds a few runs per chat, so a scan is cheap.
        for item in self.tree(Tree::RunTags).iter() {
            let (key, _) = item.map_err(|e| self.sled_err(e))?;
            if key.rsplit(|b| *b == 0).next() == Some(run.as_bytes()) {
                out.push(Write::delete(Tree::RunTags, key.to_vec()));
            }
        }
        for tree in [Tree::Events, Tree::Steps, Tree::Changes, Tree::Deliveries] {
            for item in self.tree(tree).scan_prefix(&prefix) {
                let (key, _) = item.map_err(|e| self.sled_err(e))?;
                out.push(Write::delete(tree, key.to_vec()));
            }
        }
        if let Some(job) = job_id {
            out.push(Write::delete(Tree::Jobs, job.into_bytes()));
        }
        out.push(Write::delete(Tree::Unfinished, run.as_bytes().to_vec()));
        for status in RunStatus::ALL {
            out.push(Write::delete(Tree::RunIndex, status_index_key(status, run)));
            let key = index_key(b'x', &wf_status(workflow_id, status), run);
            out.push(Write::delete(Tree::RunIndex, key));
        }
        out.push(Write::delete(
            Tree::RunIndex,
            index_key(b'w', workflow_id, run),
        ));
        out.push(Write::delete(Tree::Runs, run.as_bytes().to_vec()));
        Ok(())
    }
}

fn delivery_key(run: &str, sink: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(run.len() + 1 + sink.len());
    key.extend_from_slice(run.as_bytes());
    key.push(0);
    key.extend_from_slice(sink.as_bytes());
    key
}

impl Store for SledStore {
    fn describe(&self) -> &str {
        &self.describe
    }

    fn dir(&self) -> &Path {
        &self.inner.dir
    }

    fn commit(&self, batch: Batch) -> Durable {
        let mut writes = Vec::with_capacity(batch.ops.len() * 4);
        for op in batch.ops {
            if let Err(e) = self.writes_of(op, &mut writes) {
                return Durable::ready(Err(e));
            }
        }
        self.submit(writes)
    }

    fn barrier(&self) -> Durable {
        // An empty request: answered after the flush of the group it joins, which follows
        // the flush of any group being applied now.
        self.send(Vec::new())
    }

    fn flush_blocking(&self) -> Result<()> {
        self.inner
            .db
            .flush()
            .map(|_| ())
            .map_err(|e| self.sled_err(e))
    }

    fn stats(&self) -> &CommitStats {
        &self.inner.stats
    }

    fn steps_with_heads_only(&self) -> bool {
        true
    }

    fn size(&self) -> u64 {
        self.inner.db.size_on_disk().unwrap_or(0)
    }

    fn for_idle_runs(&self) -> Arc<dyn Store> {
        Arc::new(SledStore {
            inner: self.inner.clone(),
            gated: false,
            describe: self.describe.clone(),
        })
    }

    fn next_id(&self) -> Result<u64> {
        self.inner.db.generate_id().map_err(|e| self.sled_err(e))
    }

    fn definition(&self, id: &str, digest: &str) -> Result<Option<Definition>> {
        self.read(Tree::Workflows, format!("{id}\0{digest}").as_bytes())
    }

    fn latest_digest(&self, id: &str) -> Result<Option<String>> {
        self.read(Tree::Workflows, id.as_bytes())
    }

    fn provenance(&self, id: &str, digest: &str) -> Result<Option<Provenance>> {
        self.read(Tree::Workflows, &provenance_key(id, digest))
    }

    fn latest_definitions(&self) -> Result<Vec<StoredDefinition>> {
        let mut out = Vec::new();
        let latest: Vec<(Vec<u8>, String)> = self
            .scan::<Value>(Tree::Workflows, b"")?
            .into_iter()
            .filter(|(k, _)| !k.contains(&0))
            .filter_map(|(k, v)| Some((k, v.as_str()?.to_string())))
            .collect();
        for (key, digest) in latest {
            let id = String::from_utf8_lossy(&key).to_string();
            if let Some(definition) = self.definition(&id, &digest)? {
                out.push(StoredDefinition {
                    provenance: self.provenance(&id, &digest)?,
                    digest,
                    definition,
                });
            }
        }
        Ok(out)
    }

    fn head(&self, run: &str) -> Result<Option<RunRecord>> {
        self.read(Tree::Runs, run.as_bytes())
    }

    fn heads(&self) -> Result<Vec<RunRecord>> {
        Ok(self
            .scan::<RunRecord>(Tree::Runs, b"")?
            .into_iter()
            .map(|(_, r)| r)
            .collect())
    }

    fn steps(&self, run: &str) -> Result<Vec<(usize, StepRecord)>> {
        Ok(self
            .scan::<StepRecord>(Tree::Steps, &run_prefix(run))?
            .into_iter()
            .map(|(key, step)| {
                let idx = u64::from_be_bytes(key[key.len() - 8..].try_into().unwrap_or_default());
                (idx as usize, step)
            })
            .collect())
    }

    fn events(&self, run: &str, since: u64) -> Result<Vec<Event>> {
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

    fn changes(&self, run: &str) -> Result<Vec<Change>> {
        Ok(self
            .scan(Tree::Changes, &run_prefix(run))?
            .into_iter()
            .map(|(_, c)| c)
            .collect())
    }

    fn job(&self, id: &str) -> Result<Option<Job>> {
        self.read(Tree::Jobs, id.as_bytes())
    }

    fn unfinished(&self) -> Result<Vec<String>> {
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

    fn timers(&self) -> Result<Vec<TimerEntry>> {
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

    fn run_ids(&self, query: &RunQuery, offset: usize, limit: usize) -> Result<Vec<String>> {
        match (query, SledStore::query_prefix(query)) {
            (RunQuery::IdPrefix(p), _) => self.head_ids(p.as_bytes(), offset, limit),
            (_, None) => self.head_ids(b"", offset, limit),
            (_, Some(prefix)) => self.index_page(&prefix, offset, limit),
        }
    }

    fn count(&self, query: &RunQuery) -> Result<usize> {
        let prefix = match (query, SledStore::query_prefix(query)) {
            (RunQuery::IdPrefix(p), _) => {
                let _gate = self.gate();
                return Ok(self.tree(Tree::Runs).scan_prefix(p.as_bytes()).count());
            }
            // Every run has exactly one status entry: counting those is counting runs
            // without reading a head.
            (_, None) => b"t/".to_vec(),
            (_, Some(prefix)) => prefix,
        };
        let _gate = self.gate();
        Ok(self.tree(Tree::RunIndex).scan_prefix(prefix).keys().count())
    }

    fn status_of(&self, run: &str) -> Result<Option<RunStatus>> {
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
            .map_err(|e: crate::record::UnknownStatus| Error::Corrupt {
                tree: Tree::RunIndex.name(),
                key: readable_key(&status_of_key(run)),
                message: e.to_string(),
            })
    }

    fn is_of_workflow(&self, run: &str, workflow: &str) -> Result<bool> {
        let _gate = self.gate();
        self.tree(Tree::RunIndex)
            .contains_key(index_key(b'w', workflow, run))
            .map_err(|e| self.sled_err(e))
    }

    fn is_tagged(&self, tag: &str, run: &str) -> Result<bool> {
        let _gate = self.gate();
        self.tree(Tree::RunTags)
            .contains_key(SledStore::tag_key(tag, run))
            .map_err(|e| self.sled_err(e))
    }

    fn tagged_run_ids(&self, tag: &str) -> Result<Vec<String>> {
        let prefix = SledStore::tag_key(tag, "");
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

    fn delivery(&self, run: &str, sink: &str) -> Result<Option<Value>> {
        self.read(Tree::Deliveries, &delivery_key(run, sink))
    }

    fn deliveries(&self) -> Result<Vec<(String, String, Value)>> {
        let mut out = Vec::new();
        for (key, value) in self.scan::<Value>(Tree::Deliveries, b"")? {
            let Some(split) = key.iter().position(|b| *b == 0) else {
                continue;
            };
            let (run, sink) = (&key[..split], &key[split + 1..]);
            if let (Ok(run), Ok(sink)) = (std::str::from_utf8(run), std::str::from_utf8(sink)) {
                out.push((run.to_string(), sink.to_string(), value));
            }
        }
        Ok(out)
    }

    fn process_groups(&self) -> Result<Vec<(Vec<u8>, Value)>> {
        self.scan(Tree::ProcessGroups, b"")
    }

    fn forget_process_group(&self, key: &[u8]) {
        let _ = self.tree(Tree::ProcessGroups).remove(key);
    }

    fn backup(&self, path: &Path) -> Result<BackupStats> {
        SledStore::backup(self, path)
    }

    #[cfg(feature = "test-hooks")]
    fn corrupt_head_for_test(&self, run: &str) -> Result<()> {
        self.tree(Tree::Runs)
            .insert(run.as_bytes(), b"{not json".as_slice())
            .map_err(|e| self.sled_err(e))?;
        self.tree(Tree::Unfinished)
            .insert(run.as_bytes(), b"".as_slice())
            .map_err(|e| self.sled_err(e))?;
        // And an unfinished entry that is not even a run id.
        self.tree(Tree::Unfinished)
            .insert(b"\xff\xfe".as_slice(), b"".as_slice())
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

/// Where the provenance of definition `id` at `digest` is kept, beside the definition.
fn provenance_key(id: &str, digest: &str) -> Vec<u8> {
    format!("{id}\0{digest}\0provenance").into_bytes()
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
    use super::super::Transition;
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
        let _store = SledStore::open(dir.path(), 1 << 20).unwrap();
        let err = SledStore::open(dir.path(), 1 << 20)
            .unwrap_err()
            .to_string();
        assert!(err.contains("in use by process"), "{err}");
        assert!(err.contains(&std::process::id().to_string()), "{err}");
    }

    /// Holds the committer's side of the gate, as a long flush would, until the returned
    /// sender is dropped.
    fn hold_gate(store: &SledStore) -> (std::sync::mpsc::Sender<()>, std::thread::JoinHandle<()>) {
        let (held_tx, held_rx) = std::sync::mpsc::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let inner = store.inner.clone();
        let holder = std::thread::spawn(move || {
            let _gate = inner.gate.write().unwrap();
            held_tx.send(()).unwrap();
            let _ = release_rx.recv();
        });
        held_rx.recv().unwrap();
        (release_tx, holder)
    }

    /// A read that waits for a commit in progress must not take a runtime worker with it: on
    /// a one-worker runtime, a task beside the waiting reader keeps running meanwhile.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_read_waiting_for_a_commit_does_not_stall_the_runtime() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), 1 << 20).unwrap();
        let (release, committer) = hold_gate(&store);
        let ticks = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let ticker = tokio::spawn({
            let ticks = ticks.clone();
            async move {
                loop {
                    ticks.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
            }
        });
        let reader = tokio::spawn({
            let store = store.clone();
            async move { store.job("j1").unwrap() }
        });
        // The reader is blocked on the gate; the ticker must still get the worker.
        let before = ticks.load(Ordering::SeqCst);
        let deadline = Instant::now() + std::time::Duration::from_secs(10);
        while ticks.load(Ordering::SeqCst) < before + 5 {
            assert!(
                Instant::now() < deadline,
                "the runtime stalled while a read waited for the commit gate"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(
            !reader.is_finished(),
            "the read did not wait for the commit"
        );
        drop(release);
        committer.join().unwrap();
        assert_eq!(reader.await.unwrap(), None);
        ticker.abort();
    }

    /// A barrier resolves only after the commit in progress when it was made is durable.
    #[tokio::test]
    async fn a_barrier_waits_out_the_commit_in_progress() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), 1 << 20).unwrap();
        store.barrier().await.unwrap();
        let (release, flushing) = hold_gate(&store);
        let mut barrier = store.barrier();
        let early = tokio::time::timeout(std::time::Duration::from_millis(200), &mut barrier).await;
        assert!(early.is_err(), "the barrier resolved during the commit");
        drop(release);
        flushing.join().unwrap();
        barrier.await.unwrap();
    }

    #[tokio::test]
    async fn commit_is_visible_and_corrupt_records_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), 1 << 20).unwrap();
        store
            .submit(vec![
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
        store
            .tree(Tree::Runs)
            .insert(b"run_bad", b"{not json".as_slice())
            .unwrap();
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
            let store = SledStore::open(dir.path(), 1 << 20).unwrap();
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
            store.submit(writes).await.unwrap();
            store.tree(Tree::RunIndex).clear().unwrap();
            store.inner.db.flush().unwrap();
        }
        let store = SledStore::open(dir.path(), 1 << 20).unwrap();
        let ids = |q: RunQuery| store.run_ids(&q, 0, usize::MAX).unwrap();
        assert_eq!(ids(RunQuery::Status(RunStatus::Failed)), ["run_3", "run_2"]);
        assert_eq!(ids(RunQuery::Workflow("a".into())), ["run_3", "run_1"]);
        assert_eq!(
            store
                .count(&RunQuery::Status(RunStatus::Completed))
                .unwrap(),
            1
        );
        let a_failed = RunQuery::WorkflowStatus("a".into(), RunStatus::Failed);
        assert_eq!(store.count(&a_failed).unwrap(), 1);
        assert_eq!(
            ids(RunQuery::WorkflowStatus("b".into(), RunStatus::Failed)),
            ["run_2"]
        );
        assert_eq!(ids(RunQuery::All), ["run_3", "run_2", "run_1"]);
        assert_eq!(store.count(&RunQuery::All).unwrap(), 3);
        assert_eq!(store.run_ids(&RunQuery::All, 1, 1).unwrap(), ["run_2"]);
        // What runs are about, from their input or their job.
        assert_eq!(
            ids(RunQuery::About("octo/app#7".into())),
            ["run_2", "run_1"]
        );
        assert_eq!(ids(RunQuery::About("octo/app".into())), ["run_2", "run_1"]);
        assert!(ids(RunQuery::About("octo/app#8".into())).is_empty());
        assert_eq!(ids(RunQuery::IdPrefix("run_2".into())), ["run_2"]);
        assert_eq!(store.status_of("run_3").unwrap(), Some(RunStatus::Failed));
        assert_eq!(store.status_of("run_9").unwrap(), None);
        assert!(store.is_of_workflow("run_3", "a").unwrap());
        assert!(!store.is_of_workflow("run_3", "b").unwrap());
        // A status change moves the run from one status to the other.
        let rec = head("run_3", "a", RunStatus::Running);
        let transition = Transition {
            run: "run_3".into(),
            workflow_id: "a".into(),
            before: RunStatus::Failed,
            status: RunStatus::Running,
            events: Vec::new(),
            steps: Vec::new(),
            set_timers: Vec::new(),
            cleared_timers: Vec::new(),
            head: Some(encode(&rec)),
            index_exact: false,
        };
        store
            .commit(Batch::of(Op::Transition(transition)))
            .await
            .unwrap();
        assert_eq!(ids(RunQuery::Status(RunStatus::Failed)), ["run_2"]);
        assert_eq!(ids(RunQuery::Status(RunStatus::Running)), ["run_3"]);
        assert_eq!(store.status_of("run_3").unwrap(), Some(RunStatus::Running));
        assert_eq!(store.unfinished().unwrap(), ["run_3"], "reopened");
        // A start writes what the run is about in its commit.
        let mut started = head("run_4", "a", RunStatus::Pending);
        started.input.insert("repo".into(), "octo/app".into());
        started.input.insert("pr".into(), 8.into());
        let mut batch = Batch::new();
        let created = Event {
            run: "run_4".into(),
            seq: 1,
            at: 0,
            kind: crate::record::EventKind::RunStarted,
        };
        batch.start_run(&started, &created, None);
        store.commit(batch).await.unwrap();
        assert_eq!(ids(RunQuery::About("octo/app#8".into())), ["run_4"]);
        assert_eq!(
            ids(RunQuery::About("octo/app".into())),
            ["run_4", "run_2", "run_1"]
        );
        assert!(!store.is_of_workflow("run_4", "b").unwrap());
    }
}
