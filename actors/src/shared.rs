//! What the engine's actors share: the settings, the latency figures and [`Shared`], the state
//! every actor holds (the store, the bus, the registered actions, the process groups, the
//! admission queue). The engine facade, the supervisor, the run and step actors and the
//! notifier all depend on this module; it depends on none of them. It sits above what it holds
//! (`store`, `action`, `procs`, `admission`), none of which imports it: the clock and the bus's
//! `Notice` they share with it are leaves of their own (`clock`, `notice`).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use tokio::sync::broadcast;

use crate::action::Action;
use crate::admission::{Admission, Limits};
use crate::definition::Workflow;
use crate::error::{Error, Result};
use crate::notice::Notice;
use crate::procs::ProcessGroups;
use crate::record::{Event, EventKind, RunRecord};
use crate::store::{Backend, Store};

/// Engine settings (the `[engine]` section of `config.toml`).
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Which store holds the engine's records (`[store]`).
    pub backend: Backend,
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
    /// Runs executing at once; later starts wait as `pending` until a slot frees. A run
    /// parked at a wait holds no slot. `0` means no limit.
    pub max_active_runs: usize,
    /// Runs about one repository (see [`crate::subject`]) executing at once; `0` means no
    /// limit. Runs about no repository are not counted.
    pub per_repo: usize,
    /// Runs of one workflow (by id) executing at once; absent or `0` means no limit.
    pub per_workflow: BTreeMap<String, usize>,
}

impl EngineConfig {
    pub(crate) fn limits(&self) -> Limits {
        Limits {
            max_active_runs: self.max_active_runs,
            per_repo: self.per_repo,
            per_workflow: self.per_workflow.clone(),
        }
    }
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            backend: Backend::default(),
            cache_bytes: 64 * 1024 * 1024,
            max_transitions: 10_000,
            snapshot_every: 32,
            restart_budget: 3,
            restart_window: Duration::from_secs(60),
            bus_capacity: 8192,
            max_active_runs: 0,
            per_repo: 0,
            per_workflow: BTreeMap::new(),
        }
    }
}

/// Transition latencies (input received → durable), in log-linear buckets.
pub struct Latency {
    buckets: Vec<AtomicU64>,
}

const SUB_BUCKETS: u64 = 16;

impl Latency {
    pub(crate) fn new() -> Self {
        Latency {
            buckets: (0..64 * SUB_BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    pub(crate) fn bucket(us: u64) -> usize {
        if us < SUB_BUCKETS {
            return us as usize;
        }
        let exp = 63 - us.leading_zeros() as u64;
        let mantissa = (us >> (exp - 4)) & (SUB_BUCKETS - 1);
        (exp * SUB_BUCKETS + mantissa) as usize
    }

    pub(crate) fn lower_bound(bucket: usize) -> u64 {
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
    pub(crate) store: Arc<dyn Store>,
    pub(crate) config: EngineConfig,
    pub(crate) bus: broadcast::Sender<Notice>,
    pub(crate) latency: Latency,
    pub(crate) actions: RwLock<HashMap<String, Arc<dyn Action>>>,
    /// Actions whose outputs the later steps of a run receive (`Engine::share_outputs_of`).
    pub(crate) shared_actions: RwLock<Vec<String>>,
    /// The kind of a bare job `number`, by workflow (`Engine::set_subject_kind`).
    pub(crate) subject_kinds: RwLock<HashMap<String, crate::subject::SubjectKind>>,
    /// Latest definition by workflow id.
    pub(crate) latest: RwLock<HashMap<String, Arc<Workflow>>>,
    /// Every definition a run may refer to, by `id \0 digest`.
    pub(crate) by_digest: RwLock<HashMap<String, Arc<Workflow>>>,
    /// Ids registered as built-ins ([`crate::definition::Interface::Builtin`]) in this
    /// process: no other interface may register them.
    pub(crate) builtins: RwLock<std::collections::HashSet<String>>,
    /// Serialises job dedup (check, then create) so a redelivery starts nothing new: one
    /// lock per stripe of job ids, so starts of different jobs do not wait for each other's
    /// commit (a start with no job takes none).
    pub(crate) jobs: Vec<tokio::sync::Mutex<()>>,
    /// Callers of `Engine::settled`, by run: woken when an event that may settle the run is
    /// published, so a waiter is not woken for every event of every other run.
    pub(crate) settle_waiters: std::sync::Mutex<HashMap<String, Arc<SettleSlot>>>,
    /// Test hook: panics to inject into run actors, by workflow id.
    #[cfg(feature = "test-hooks")]
    pub(crate) panics: std::sync::Mutex<HashMap<String, u32>>,
    /// Test hook: events the notifier panics on, next.
    #[cfg(feature = "test-hooks")]
    pub(crate) notifier_panics: std::sync::atomic::AtomicU32,
    /// Where steps record the process groups they spawn.
    pub(crate) procs: Arc<ProcessGroups>,
    /// Live and waiting runs by admission key: the supervisor changes it, queries read it.
    pub(crate) admission: Mutex<Admission>,
}

/// Stripes of [`Shared::jobs`].
pub(crate) const JOB_LOCK_STRIPES: usize = 64;

/// Whether an event can leave a run completed, failed, cancelled or parked.
pub(crate) fn settles(kind: &EventKind) -> bool {
    matches!(
        kind,
        EventKind::RunCompleted
            | EventKind::RunFailed { .. }
            | EventKind::RunCancelled { .. }
            | EventKind::WaitStarted { .. }
    )
}

/// What the callers of `Engine::settled` for one run share.
#[derive(Default)]
pub(crate) struct SettleSlot {
    /// Woken when an event that may settle the run is published.
    pub(crate) notify: tokio::sync::Notify,
    /// The run as its actor made it durable with its last settling event: a waiter woken by
    /// it answers from memory instead of reading the run back (a read that would wait out
    /// the commit in progress on a runtime thread).
    pub(crate) record: std::sync::Mutex<Option<RunRecord>>,
}

/// A caller's interest in one run settling (see [`Shared::watch_settle`]); dropping it
/// forgets the run once nobody else waits for it.
pub(crate) struct SettleWatch<'a> {
    shared: &'a Shared,
    run: String,
    pub(crate) slot: Arc<SettleSlot>,
}

impl Drop for SettleWatch<'_> {
    fn drop(&mut self) {
        let mut waiters = self
            .shared
            .settle_waiters
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        // The map's reference and ours: nobody else is waiting.
        if Arc::strong_count(&self.slot) <= 2 {
            waiters.remove(&self.run);
        }
    }
}

impl Shared {
    pub(crate) fn admission(&self) -> MutexGuard<'_, Admission> {
        self.admission.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Publishes a durable event to subscribers, and wakes the run's `settled` callers when
    /// it may have settled it.
    pub(crate) fn publish(&self, event: Event) {
        let wake = settles(&event.kind).then(|| event.run.clone());
        let _ = self.bus.send(Notice::Event(event));
        if let Some(run) = wake {
            let waiters = self
                .settle_waiters
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if let Some(slot) = waiters.get(&run) {
                slot.notify.notify_waiters();
            }
        }
    }

    /// Hands a durable record that an event of this transition may have settled to the
    /// run's `settled` callers, if any; call before publishing the events.
    pub(crate) fn offer_settled(&self, rec: &RunRecord, events: &[Event]) {
        if !events.iter().any(|e| settles(&e.kind)) {
            return;
        }
        let waiters = self
            .settle_waiters
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = waiters.get(&rec.id) {
            *slot.record.lock().unwrap_or_else(|e| e.into_inner()) = Some(rec.clone());
        }
    }

    /// Registers interest in `run` settling; enable a `notified()` of it before reading the
    /// run, so an event published in between is not missed.
    pub(crate) fn watch_settle(&self, run: &str) -> SettleWatch<'_> {
        let slot = self
            .settle_waiters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(run.to_string())
            .or_default()
            .clone();
        SettleWatch {
            shared: self,
            run: run.to_string(),
            slot,
        }
    }

    /// The lock that serialises starts of job `id` (and of the ids that share its stripe).
    pub(crate) fn job_lock(&self, id: &str) -> &tokio::sync::Mutex<()> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        id.hash(&mut h);
        &self.jobs[h.finish() as usize % self.jobs.len()]
    }

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
    pub(crate) fn maybe_panic_notifier(&self) {
        use std::sync::atomic::Ordering;
        let left = self
            .notifier_panics
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
        if left.is_ok() {
            panic!("injected notifier panic");
        }
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

    pub(crate) fn known_action(&self, name: &str) -> bool {
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
        let mut wf = Workflow::new(def, &format!("workflow {id}"), &|a| self.known_action(a))?;
        wf.provenance = self.store.provenance(id, digest)?;
        let wf = Arc::new(wf);
        self.by_digest
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, wf.clone());
        Ok(wf)
    }

    /// A run as of its last durable event, with its definition.
    pub(crate) fn load_run(&self, run: &str) -> Result<(Arc<Workflow>, RunRecord)> {
        Self::load_from(&*self.store, self, run, None).map(|(wf, rec, _)| (wf, rec))
    }

    /// The same for a run with no live actor (nothing can be writing it), from `head` when
    /// the caller has read it already; with the steps whose stored records are older than
    /// the run ([`crate::store::Store::steps_with_heads_only`]).
    pub(crate) fn load_idle_run(
        &self,
        run: &str,
        head: Option<RunRecord>,
    ) -> Result<(Arc<Workflow>, RunRecord, Vec<usize>)> {
        Self::load_from(&*self.store.for_idle_runs(), self, run, head)
    }

    pub(crate) fn load_from(
        store: &dyn Store,
        shared: &Shared,
        run: &str,
        head: Option<RunRecord>,
    ) -> Result<(Arc<Workflow>, RunRecord, Vec<usize>)> {
        let head = match head {
            Some(h) => h,
            None => store
                .head(run)?
                .ok_or_else(|| Error::UnknownRun(run.to_string()))?,
        };
        let wf = shared.workflow_for(&head.workflow_id, &head.digest)?;
        let ids: Vec<String> = wf.steps().iter().map(|s| s.id.clone()).collect();
        let (mut rec, mut stale) = store.complete_run_noting(head, &ids)?;
        rec.fill_subject();
        if !store.steps_with_heads_only() {
            stale.clear();
        }
        Ok((wf, rec, stale))
    }
}
