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

mod backup;
mod committer;
mod index;
mod keys;
mod owner;
mod writes;

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, RwLock, TryLockError};

use serde::de::DeserializeOwned;
use serde_json::Value;

use self::committer::{committer, Request};
use self::keys::{
    delivery_key, index_key, parse_timer_key, provenance_key, readable_key, run_key, run_prefix,
    status_of_key, tag_key, Tree,
};
use self::owner::{describe_owner, owner_alive, owner_is_me, OWNER_FILE};
use super::{
    off_runtime, Batch, Change, CommitStats, Durable, Job, RunQuery, Store, StoredDefinition,
    TimerEntry,
};
use crate::definition::{Definition, Provenance};
use crate::error::{Error, Result};
use crate::record::{Event, RunRecord, RunStatus, StepRecord};

pub use self::backup::BackupStats;

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

/// Where the store's format version lives (u32 BE, in sled's default tree).
const FORMAT_KEY: &[u8] = b"baton/format_version";
/// The store's layout as this build writes it. An older store is upgraded at open (what
/// changed since is rebuilt, e.g. the run index) and marked; a newer one is refused.
pub const FORMAT_VERSION: u32 = 1;

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
            .contains_key(tag_key(tag, run))
            .map_err(|e| self.sled_err(e))
    }

    fn tagged_run_ids(&self, tag: &str) -> Result<Vec<String>> {
        let prefix = tag_key(tag, "");
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

fn decode<T: DeserializeOwned>(tree: Tree, key: &[u8], bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| Error::Corrupt {
        tree: tree.name(),
        key: readable_key(key),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::time::Instant;

    use super::writes::Write;
    use super::*;

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
}
