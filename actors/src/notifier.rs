//! The Notifier: one actor per engine that reports runs' progress through [`Sink`]s (a forge
//! comment, a terminal display, the log, a chat), paced so that a burst of steps becomes one
//! message edit rather than a stream of them.
//!
//! It reads every durable event (and the steps' progress messages) from the engine's bus and
//! keeps, per run and sink, one *slot*: the message the sink made, what it last delivered, and
//! whether something changed since. A slot delivers:
//! - **coalesced**: whatever happened since its last delivery goes out as one update built
//!   from the run as it stands, never as a queue of stale ones;
//! - **paced**: each sink paces each of its targets (an issue, a chat) with a `governor`
//!   limiter at the sink's minimum interval;
//! - **at once** for a failure, a wait for someone, and the run's end: those are not held for
//!   the interval (they still take one delivery at a time);
//! - **one at a time**: a slot never has two deliveries in flight, so a message is never
//!   edited twice concurrently;
//! - **retried**: a retryable sink error is retried with backoff (or after the `retry_after`
//!   the sink was told), editing the same message, so nothing is duplicated.
//!
//! Slots of durable sinks persist their [`DeliveryState`] in the store's `deliveries` tree
//! (key: run id, a zero byte, the sink's name), written through the group commit. A restarted
//! daemon therefore edits the message it made before, and at start-up every run whose last
//! delivery is older than the run (a final state that never went out before a crash, say)
//! gets the current state. At shutdown, pending updates are flushed within a bounded wait.
//!
//! This module knows nothing of GitHub or Telegram: sinks are the app's.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::future::Future;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::HashMapStateStore;
use governor::{Quota, RateLimiter};
use ractor::rpc::CallResult;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::task::AbortHandle;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::clock::{now_ms, Millis};
use crate::definition::Workflow;
use crate::notice::Notice;
use crate::record::{Event, EventKind, RunRecord, StepStatus};
use crate::shared::Shared;
use crate::store::Batch;

/// What a sink's delivery returns.
pub type SinkFuture<'a> =
    Pin<Box<dyn Future<Output = Result<DeliveryState, SinkError>> + Send + 'a>>;

/// Where progress goes: the app implements it (forge comment, terminal, log, chat).
pub trait Sink: Send + Sync + 'static {
    /// A stable name (`forge`, `terminal`, `log`, `telegram`): part of the stored key, so a
    /// restarted daemon finds the message this sink made.
    fn name(&self) -> &str;

    /// Whether and where this sink reports `run`: e.g. `owner/repo#12` for an issue comment.
    /// `None`: not this run. Asked once, when the notifier first sees the run. Runs with the
    /// same target share its pace.
    fn target(&self, run: &RunRecord, workflow: &Workflow) -> Option<String>;

    /// Sends `update`: makes the run's message when `previous` is `None`, or edits the one
    /// `previous` names. Returns what it needs to edit that message next time.
    fn deliver<'a>(
        &'a self,
        update: &'a Update,
        previous: Option<&'a DeliveryState>,
    ) -> SinkFuture<'a>;

    /// Whether its delivery state outlives the process (kept in the store, caught up at
    /// start-up). A terminal display's is not: its lines mean nothing to the next process.
    fn durable(&self) -> bool {
        true
    }

    /// A slower pace than the sink's for `target`, when the service allows it less (a chat
    /// group gets fewer messages a minute than a private chat). `None`: the sink's pace.
    fn min_interval(&self, _target: &str) -> Option<Duration> {
        None
    }
}

/// What a sink keeps about the message it made for one run. Stored: never put a secret here.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct DeliveryState {
    /// The message's id as the sink's service knows it (a comment id, a chat message id).
    #[serde(default)]
    pub message_id: Value,
    /// The body last sent, so a sink can leave alone a message that would not change.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub body: String,
    /// Anything else the sink needs to edit in place next time.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub extra: Value,
}

/// Why a delivery failed.
#[derive(Debug, Clone, PartialEq)]
pub enum SinkError {
    /// Another try later may succeed (a 429, a 5xx, a dropped connection).
    Retryable {
        /// What went wrong (no secrets: it is logged).
        message: String,
        /// How long the service asked to wait, if it said.
        retry_after: Option<Duration>,
    },
    /// No retry will help (no permission, no such issue): the sink stops reporting this run.
    Fatal {
        /// What went wrong (no secrets: it is logged).
        message: String,
    },
}

impl SinkError {
    /// A failure worth retrying after the notifier's backoff.
    pub fn retryable(message: impl Into<String>) -> Self {
        SinkError::Retryable {
            message: message.into(),
            retry_after: None,
        }
    }

    /// A failure worth retrying after `wait`, as the service asked.
    pub fn retry_after(message: impl Into<String>, wait: Duration) -> Self {
        SinkError::Retryable {
            message: message.into(),
            retry_after: Some(wait),
        }
    }

    /// A failure no retry can fix.
    pub fn fatal(message: impl Into<String>) -> Self {
        SinkError::Fatal {
            message: message.into(),
        }
    }
}

impl fmt::Display for SinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SinkError::Retryable {
                message,
                retry_after: Some(wait),
            } => write!(f, "{message} (retrying in {} ms)", wait.as_millis()),
            SinkError::Retryable { message, .. } => write!(f, "{message} (retrying)"),
            SinkError::Fatal { message } => f.write_str(message),
        }
    }
}

/// What just happened to a run, as far as its reader cares.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Happening {
    /// The run began.
    Started,
    /// A step started, finished, was skipped or retried, or said something.
    Progress,
    /// The run waits for a signal, an approval or a person.
    Waiting,
    /// The run failed.
    Failed,
    /// The run completed.
    Completed,
    /// The run was cancelled.
    Cancelled,
}

impl Happening {
    /// Whether it goes out at once rather than at the target's pace.
    pub fn is_urgent(self) -> bool {
        !matches!(self, Happening::Started | Happening::Progress)
    }

    /// What an event means to a reader; `None` for events that change nothing they see.
    fn of(kind: &EventKind) -> Option<Happening> {
        Some(match kind {
            EventKind::RunCreated { .. } | EventKind::SignalBuffered { .. } => return None,
            EventKind::RunStarted => Happening::Started,
            EventKind::WaitStarted { .. } => Happening::Waiting,
            EventKind::RunFailed { .. } => Happening::Failed,
            EventKind::RunCompleted => Happening::Completed,
            EventKind::RunCancelled { .. } => Happening::Cancelled,
            _ => Happening::Progress,
        })
    }
}

/// One update for a sink: the run as it stands, and what just happened.
#[derive(Debug, Clone)]
pub struct Update {
    /// The run, with its steps, as of its last durable event.
    pub run: RunRecord,
    /// The definition the run started with (step descriptions, `progress`).
    pub workflow: Arc<Workflow>,
    /// The latest progress message of each running step, by step id.
    pub progress: BTreeMap<String, String>,
    /// The latest thing that happened (several may have been coalesced into this update).
    pub happened: Happening,
    /// Whether the run has ended (completed, failed or cancelled): the last update, unless a
    /// person reopens the run.
    pub is_final: bool,
}

/// What is stored per run and durable sink.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
struct DeliveryRecord {
    /// The sink's target when it was delivered.
    target: String,
    /// The sink's own state; `None` until its first delivery succeeds (the record then only
    /// says that a delivery is owed, so a crash before it is caught up at the next start).
    #[serde(default)]
    state: Option<DeliveryState>,
    /// The run's event sequence the delivery showed.
    seq: u64,
    /// Whether it showed the run ended.
    is_final: bool,
    /// When it was delivered.
    at: Millis,
}

/// A sink's first retry waits this long, doubling up to [`RETRY_MAX`].
const RETRY_INITIAL: Duration = Duration::from_secs(1);
/// The longest backoff between retries of one update (a service's `retry_after` may be longer).
const RETRY_MAX: Duration = Duration::from_secs(60);
/// Retries of one update before it is dropped; a later change (or a restart) tries again.
const MAX_RETRIES: u32 = 10;
/// A delivery that takes longer is abandoned and retried: a hung call must not hold a slot.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(120);
/// How long [`Engine::shutdown`](crate::Engine::shutdown) lets pending updates go out.
pub const SHUTDOWN_FLUSH: Duration = Duration::from_secs(10);

type Limiter = RateLimiter<String, HashMapStateStore<String>, DefaultClock>;

/// A sink with its pace.
struct Paced {
    sink: Arc<dyn Sink>,
    interval: Duration,
    limiter: Limiter,
    /// Limiters for targets the sink paces slower ([`Sink::min_interval`]), by interval.
    slower: HashMap<Duration, Limiter>,
}

impl Paced {
    /// The limiter that paces `target`.
    fn limiter_for(&mut self, target: &str) -> &Limiter {
        match self.sink.min_interval(target) {
            Some(slow) if slow > self.interval => self
                .slower
                .entry(slow)
                .or_insert_with(|| RateLimiter::hashmap(quota(slow))),
            _ => &self.limiter,
        }
    }
}

/// A run the notifier follows.
struct Followed {
    wf: Arc<Workflow>,
    rec: RunRecord,
    /// Latest progress message per running step id.
    progress: BTreeMap<String, String>,
    happened: Happening,
    /// One slot per sink that reports this run, by sink index.
    slots: BTreeMap<usize, Slot>,
}

/// One run as one sink reports it.
#[derive(Default)]
struct Slot {
    target: String,
    state: Option<DeliveryState>,
    /// Whether the store has a record of this slot (see [`DeliveryRecord::state`]).
    stored: bool,
    /// Run sequence shown by the last successful delivery, and whether it was final.
    delivered_seq: u64,
    delivered_final: bool,
    /// Something changed that no delivery (done or in flight) shows yet.
    dirty: bool,
    /// That change should go out at once.
    urgent: bool,
    /// The next delivery retries a failed one: it goes when the retry is due, not at the
    /// target's pace (the failed try took the pace's turn).
    retrying: bool,
    /// The delivery in flight.
    in_flight: Option<AbortHandle>,
    /// A pacing or retry timer (`true`: retry, which even a flush waits out).
    timer: Option<(AbortHandle, bool)>,
    retries: u32,
    /// A fatal error: this sink no longer reports this run.
    dead: bool,
}

impl Slot {
    fn busy(&self) -> bool {
        self.in_flight.is_some()
    }

    /// Nothing to send and nothing in flight.
    fn quiet(&self) -> bool {
        self.dead || (!self.dirty && !self.busy())
    }
}

impl Drop for Slot {
    // A stopped notifier leaves no delivery or timer behind (post_stop does not run on panic).
    fn drop(&mut self) {
        if let Some(task) = self.in_flight.take() {
            task.abort();
        }
        if let Some((timer, _)) = self.timer.take() {
            timer.abort();
        }
    }
}

type SlotKey = (String, usize);

/// Messages of the notifier.
pub(crate) enum NotifierMsg {
    /// A notice from the engine's bus.
    Notice(Notice),
    /// A slot's pacing or retry timer fired.
    Due(SlotKey),
    /// A delivery ended.
    Done {
        key: SlotKey,
        seq: u64,
        is_final: bool,
        result: Result<DeliveryState, SinkError>,
    },
    /// Deliver everything pending now, ignoring pace; answers when all is delivered.
    Flush(RpcReplyPort<()>),
}

pub(crate) struct NotifierArgs {
    pub(crate) shared: Arc<Shared>,
    pub(crate) sinks: Vec<(Arc<dyn Sink>, Duration)>,
    /// Set when starting again after dying: runs created since then are looked at too (one may
    /// have started and ended while no notifier was there to see it).
    pub(crate) since: Option<Millis>,
}

pub(crate) struct NotifierState {
    shared: Arc<Shared>,
    sinks: Vec<Paced>,
    runs: HashMap<String, Followed>,
    /// Runs no sink reports (forgotten when they end).
    ignored: HashSet<String>,
    /// Set by a flush: everything goes out at once from now on.
    flushing: bool,
    flush_waiters: Vec<RpcReplyPort<()>>,
    /// See [`NotifierArgs::since`]; used by the first catch-up.
    since: Option<Millis>,
    /// Stops the task that forwards the bus when the notifier goes away.
    _forwarder: DropGuard,
}

pub(crate) struct Notifier;

impl Actor for Notifier {
    type Msg = NotifierMsg;
    type State = NotifierState;
    type Arguments = NotifierArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<NotifierMsg>,
        args: NotifierArgs,
    ) -> Result<NotifierState, ActorProcessingErr> {
        // Subscribe before reading the store, so nothing falls between the two.
        let mut bus = args.shared.bus.subscribe();
        let stop = CancellationToken::new();
        let forward_stop = stop.clone();
        let me = myself.clone();
        tokio::spawn(async move {
            use tokio::sync::broadcast::error::RecvError;
            loop {
                let notice = tokio::select! {
                    _ = forward_stop.cancelled() => return,
                    n = bus.recv() => match n {
                        Ok(n) => n,
                        Err(RecvError::Lagged(missed)) => Notice::Lagged { missed },
                        Err(RecvError::Closed) => return,
                    },
                };
                if me.cast(NotifierMsg::Notice(notice)).is_err() {
                    return;
                }
            }
        });
        let sinks = args
            .sinks
            .into_iter()
            .map(|(sink, interval)| Paced {
                sink,
                interval,
                limiter: RateLimiter::hashmap(quota(interval)),
                slower: HashMap::new(),
            })
            .collect();
        let mut state = NotifierState {
            shared: args.shared,
            sinks,
            runs: HashMap::new(),
            ignored: HashSet::new(),
            flushing: false,
            flush_waiters: Vec::new(),
            since: args.since,
            _forwarder: stop.drop_guard(),
        };
        state.catch_up(&myself);
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<NotifierMsg>,
        msg: NotifierMsg,
        state: &mut NotifierState,
    ) -> Result<(), ActorProcessingErr> {
        #[cfg(feature = "test-hooks")]
        if matches!(msg, NotifierMsg::Notice(Notice::Event(_))) {
            state.shared.maybe_panic_notifier();
        }
        match msg {
            NotifierMsg::Notice(Notice::Event(event)) => state.on_event(&myself, &event),
            NotifierMsg::Notice(Notice::Progress { run, step, message }) => {
                state.on_progress(&myself, &run, step, message)
            }
            NotifierMsg::Notice(Notice::Lagged { missed }) => {
                tracing::warn!("the notifier missed {missed} notices; catching up from the store");
                state.catch_up(&myself);
            }
            NotifierMsg::Due(key) => {
                if let Some(slot) = state.slot_mut(&key) {
                    slot.timer = None;
                }
                state.poke(&myself, &key);
            }
            NotifierMsg::Done {
                key,
                seq,
                is_final,
                result,
            } => state.on_done(&myself, key, seq, is_final, result),
            NotifierMsg::Flush(reply) => {
                state.flushing = true;
                for key in state.keys() {
                    state.poke(&myself, &key);
                }
                state.flush_waiters.push(reply);
            }
        }
        state.answer_flushes();
        Ok(())
    }
}

/// One delivery per `interval` per target, with no burst beyond one.
fn quota(interval: Duration) -> Quota {
    let interval = interval.max(Duration::from_millis(1));
    Quota::with_period(interval)
        .expect("a non-zero period")
        .allow_burst(NonZeroU32::MIN)
}

impl NotifierState {
    fn keys(&self) -> Vec<SlotKey> {
        self.runs
            .iter()
            .flat_map(|(run, f)| f.slots.keys().map(move |i| (run.clone(), *i)))
            .collect()
    }

    fn slot_mut(&mut self, key: &SlotKey) -> Option<&mut Slot> {
        self.runs.get_mut(&key.0)?.slots.get_mut(&key.1)
    }

    /// Follows `run` if some sink reports it: loads it, asks each sink for its target, and
    /// reads what durable sinks delivered before. `false`: no sink reports it.
    fn follow(&mut self, run: &str) -> bool {
        self.follow_from(run, None)
    }

    /// [`Self::follow`], given the event that brought the run here: a run's first event
    /// (`run_created`) is the whole of it, so the record is built from it rather than read
    /// back from the store (a read that would wait out a commit in progress).
    fn follow_from(&mut self, run: &str, event: Option<&Event>) -> bool {
        if self.runs.contains_key(run) {
            return true;
        }
        if self.ignored.contains(run) {
            return false;
        }
        let created = event.and_then(|e| match &e.kind {
            EventKind::RunCreated {
                workflow_id,
                digest,
                ..
            } if e.seq == 1 => self
                .shared
                .workflow_for(workflow_id, digest)
                .ok()
                .map(|wf| {
                    let steps = wf.steps().iter().map(|s| s.id.clone());
                    let mut rec = RunRecord::new(run.to_string(), steps, e.at);
                    rec.apply(e);
                    (wf, rec)
                }),
            _ => None,
        });
        let loaded = match created {
            Some(made) => Ok(made),
            None => self.shared.load_run(run),
        };
        let (wf, rec) = match loaded {
            Ok(loaded) => loaded,
            Err(e) => {
                tracing::warn!("notifier: cannot load run {run}: {e}");
                return false;
            }
        };
        let mut slots = BTreeMap::new();
        for (i, paced) in self.sinks.iter().enumerate() {
            let Some(target) = paced.sink.target(&rec, &wf) else {
                continue;
            };
            let mut slot = Slot::default();
            slot.target = target;
            if paced.sink.durable() {
                let stored = self.shared.store.delivery(run, paced.sink.name());
                let stored = stored.and_then(|v| match v {
                    Some(v) => serde_json::from_value::<DeliveryRecord>(v)
                        .map(Some)
                        .map_err(|e| crate::Error::Corrupt {
                            tree: "deliveries",
                            key: format!("{run}/{}", paced.sink.name()),
                            message: e.to_string(),
                        }),
                    None => Ok(None),
                });
                match stored {
                    Ok(Some(stored)) => {
                        slot.stored = true;
                        slot.state = stored.state;
                        slot.delivered_seq = stored.seq;
                        slot.delivered_final = stored.is_final;
                    }
                    Ok(None) => {}
                    // A corrupt record: start afresh (the sink finds its message by other
                    // means, e.g. the forge's hidden marker).
                    Err(e) => tracing::error!("{e}; delivering afresh"),
                }
            }
            slot.dirty = rec.seq > slot.delivered_seq;
            slot.urgent = slot.dirty && rec.status.is_terminal();
            slots.insert(i, slot);
        }
        if slots.is_empty() {
            self.ignored.insert(run.to_string());
            return false;
        }
        let happened = match rec.status {
            crate::RunStatus::Waiting => Happening::Waiting,
            crate::RunStatus::Failed => Happening::Failed,
            crate::RunStatus::Completed => Happening::Completed,
            crate::RunStatus::Cancelled => Happening::Cancelled,
            crate::RunStatus::Pending | crate::RunStatus::Running => Happening::Progress,
        };
        self.runs.insert(
            run.to_string(),
            Followed {
                wf,
                rec,
                progress: BTreeMap::new(),
                happened,
                slots,
            },
        );
        true
    }

    /// Follows every run that may owe a delivery: those whose durable delivery is older than
    /// the run, and those not finished. Used at start-up and after the bus lagged.
    fn catch_up(&mut self, myself: &ActorRef<NotifierMsg>) {
        let mut candidates: Vec<String> = match self.shared.store.unfinished() {
            Ok(ids) => ids,
            Err(e) => {
                tracing::error!("notifier: cannot list unfinished runs: {e}");
                Vec::new()
            }
        };
        let durable: HashSet<&str> = self
            .sinks
            .iter()
            .filter(|p| p.sink.durable())
            .map(|p| p.sink.name())
            .collect();
        match self.shared.store.deliveries() {
            Ok(records) => {
                for (run, sink, record) in records {
                    let (run, sink) = (run.as_str(), sink.as_str());
                    if !durable.contains(sink) {
                        continue;
                    }
                    let record: DeliveryRecord = match serde_json::from_value(record) {
                        Ok(record) => record,
                        Err(e) => {
                            tracing::error!("notifier: delivery record of run {run} to {sink} cannot be read: {e}; skipped");
                            continue;
                        }
                    };
                    let behind = match self.shared.store.head(run) {
                        Ok(Some(head)) => {
                            // The head may trail its latest events; count those too.
                            let newest = self
                                .shared
                                .store
                                .events(run, head.seq)
                                .ok()
                                .and_then(|e| e.last().map(|e| e.seq))
                                .unwrap_or(head.seq);
                            newest > record.seq
                        }
                        _ => false,
                    };
                    if behind || !record.is_final {
                        candidates.push(run.to_string());
                    }
                }
            }
            Err(e) => tracing::error!("notifier: cannot read deliveries: {e}"),
        }
        // After a lag, reload what we follow: the events we missed are in the store.
        let followed: Vec<String> = self.runs.keys().cloned().collect();
        for run in &followed {
            if let Ok((_, rec)) = self.shared.load_run(run) {
                if let Some(f) = self.runs.get_mut(run) {
                    if rec.seq > f.rec.seq {
                        f.rec = rec;
                        for slot in f.slots.values_mut() {
                            slot.dirty = true;
                            slot.urgent |= f.rec.status.is_terminal();
                        }
                    }
                }
            }
        }
        candidates.sort();
        candidates.dedup();
        // With several daemons on the database, each tells of the runs it holds: two would
        // post the same progress twice.
        if let Some(since) = self.since.take() {
            candidates.extend(self.created_since(since));
        }
        if let Some(cluster) = self.shared.store.cluster() {
            match cluster.held(&candidates) {
                Ok(held) => candidates.retain(|run| held.contains(run)),
                Err(e) => {
                    tracing::error!("notifier: cannot tell which runs this daemon holds: {e}");
                    candidates.clear();
                }
            }
        }
        for run in candidates {
            self.follow(&run);
        }
        for key in self.keys() {
            self.poke(myself, &key);
        }
    }

    /// Runs created at or after `since`, from the run index (newest first, so the walk stops
    /// at the first older one).
    fn created_since(&self, since: Millis) -> Vec<String> {
        const PAGE: usize = 200;
        let store = &self.shared.store;
        let mut found = Vec::new();
        for offset in (0..).step_by(PAGE) {
            let ids = match store.run_ids(&crate::store::RunQuery::All, offset, PAGE) {
                Ok(ids) => ids,
                Err(e) => {
                    tracing::error!("notifier: cannot list recent runs: {e}");
                    return found;
                }
            };
            for id in &ids {
                match store.head(id) {
                    Ok(Some(head)) if head.created_at >= since => found.push(id.clone()),
                    Ok(Some(_)) => return found,
                    _ => {}
                }
            }
            if ids.len() < PAGE {
                return found;
            }
        }
        found
    }

    fn on_event(&mut self, myself: &ActorRef<NotifierMsg>, event: &Event) {
        let run = event.run.as_str();
        let ends = matches!(
            event.kind,
            EventKind::RunCompleted | EventKind::RunFailed { .. } | EventKind::RunCancelled { .. }
        );
        if matches!(event.kind, EventKind::Reopened { .. }) {
            // A reopened run may be reported again.
            self.ignored.remove(run);
        }
        if !self.follow_from(run, Some(event)) {
            if ends {
                self.ignored.remove(run);
            }
            return;
        }

        let Some(happened) = Happening::of(&event.kind) else {
            // Still apply it: the record must not skip an event.
            if let Some(f) = self.runs.get_mut(run) {
                f.rec.apply(event);
            }
            return;
        };
        let Some(f) = self.runs.get_mut(run) else {
            return;
        };
        f.rec.apply(event);
        let running: HashSet<&str> = f
            .rec
            .steps
            .iter()
            .filter(|s| s.status == StepStatus::Running)
            .map(|s| s.id.as_str())
            .collect();
        f.progress.retain(|step, _| running.contains(step.as_str()));
        f.happened = happened;
        let seq = f.rec.seq;
        for (i, slot) in f.slots.iter_mut() {
            if seq > slot.delivered_seq {
                if slot.dirty && !slot.dead {
                    coalesced(self.sinks[*i].sink.name());
                }
                slot.dirty = true;
                slot.urgent |= happened.is_urgent();
            }
        }
        let keys: Vec<SlotKey> = f.slots.keys().map(|i| (run.to_string(), *i)).collect();
        for key in keys {
            self.poke(myself, &key);
        }
        // A run whose sinks all gave up is forgotten when it ends.
        self.forget_if_done(run);
    }

    fn on_progress(
        &mut self,
        myself: &ActorRef<NotifierMsg>,
        run: &str,
        step: String,
        message: String,
    ) {
        if !self.follow(run) {
            return;
        }
        let Some(f) = self.runs.get_mut(run) else {
            return;
        };
        let running = f
            .rec
            .steps
            .iter()
            .any(|s| s.id == step && s.status == StepStatus::Running);
        if !running {
            return;
        }
        f.progress.insert(step, message);
        f.happened = Happening::Progress;
        for (i, slot) in f.slots.iter_mut() {
            if slot.dirty && !slot.dead {
                coalesced(self.sinks[*i].sink.name());
            }
            slot.dirty = true;
        }
        let keys: Vec<SlotKey> = f.slots.keys().map(|i| (run.to_string(), *i)).collect();
        for key in keys {
            self.poke(myself, &key);
        }
    }

    /// Starts the slot's delivery if it has something to send and may send it now; otherwise
    /// arms a timer for when its target's pace allows.
    fn poke(&mut self, myself: &ActorRef<NotifierMsg>, key: &SlotKey) {
        let flushing = self.flushing;
        let Some(f) = self.runs.get_mut(&key.0) else {
            return;
        };
        let Some(paced) = self.sinks.get_mut(key.1) else {
            return;
        };
        let Some(slot) = f.slots.get_mut(&key.1) else {
            return;
        };
        if slot.dead || slot.busy() || !slot.dirty {
            return;
        }
        if let Some((timer, retry)) = &slot.timer {
            // A retry waits as long as the service asked; a pacing timer gives way to an
            // urgent update (or a flush).
            if *retry || !(slot.urgent || slot.retrying || flushing) {
                return;
            }
            timer.abort();
            slot.timer = None;
        }
        let limiter = paced.limiter_for(&slot.target);
        let allowed = limiter.check_key(&slot.target);
        if let Err(not_until) = allowed {
            if !(slot.urgent || slot.retrying || flushing) {
                let wait = not_until.wait_time_from(limiter.clock().now());
                slot.timer = Some((after(myself, wait, key.clone()), false));
                return;
            }
            // Urgent or a retry: it goes out now, over the pace (the next one waits again).
        }
        let update = Update {
            run: f.rec.clone(),
            workflow: f.wf.clone(),
            progress: f.progress.clone(),
            happened: f.happened,
            is_final: f.rec.status.is_terminal(),
        };
        slot.dirty = false;
        slot.urgent = false;
        slot.retrying = false;
        let previous = slot.state.clone();
        let sink = paced.sink.clone();
        let store = sink.durable().then(|| self.shared.store.clone());
        let owe = store.is_some() && !slot.stored;
        slot.stored |= store.is_some();
        let target = slot.target.clone();
        let me = myself.clone();
        let key = key.clone();
        let task = tokio::spawn(async move {
            let mut report = Report {
                me,
                key,
                seq: update.run.seq,
                is_final: update.is_final,
                sent: false,
            };
            if let (true, Some(store)) = (owe, &store) {
                let owed = DeliveryRecord {
                    target: target.clone(),
                    state: None,
                    seq: 0,
                    is_final: false,
                    at: now_ms(),
                };
                let mut batch = Batch::new();
                batch.delivery(&update.run.id, sink.name(), &owed);
                if let Err(e) = store.commit(batch).await {
                    tracing::warn!("notifier: cannot store a delivery record: {e}");
                }
            }
            let result = match tokio::time::timeout(
                DELIVERY_TIMEOUT,
                sink.deliver(&update, previous.as_ref()),
            )
            .await
            {
                Ok(result) => result,
                Err(_) => Err(SinkError::retryable(format!(
                    "no answer within {} s",
                    DELIVERY_TIMEOUT.as_secs()
                ))),
            };
            if let (Ok(state), Some(store)) = (&result, store) {
                let record = DeliveryRecord {
                    target,
                    state: Some(state.clone()),
                    seq: update.run.seq,
                    is_final: update.is_final,
                    at: now_ms(),
                };
                let mut batch = Batch::new();
                batch.delivery(&update.run.id, sink.name(), &record);
                if let Err(e) = store.commit(batch).await {
                    // Delivered, but a restarted daemon may not know it: it will deliver again,
                    // finding the message by the sink's own means.
                    tracing::warn!(
                        "notifier: delivered run {} to {}, but could not store it: {e}",
                        update.run.id,
                        sink.name()
                    );
                }
            }
            report.send(result);
        });
        slot.in_flight = Some(task.abort_handle());
    }

    fn on_done(
        &mut self,
        myself: &ActorRef<NotifierMsg>,
        key: SlotKey,
        seq: u64,
        is_final: bool,
        result: Result<DeliveryState, SinkError>,
    ) {
        let Some(f) = self.runs.get_mut(&key.0) else {
            return;
        };
        let Some(slot) = f.slots.get_mut(&key.1) else {
            return;
        };
        let sink = self.sinks[key.1].sink.name();
        slot.in_flight = None;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(SinkError::Retryable { .. }) => "retryable",
            Err(SinkError::Fatal { .. }) => "fatal",
        };
        crate::telemetry::ENGINE
            .notifier_deliveries
            .with_label_values(&[sink_kind(sink), outcome])
            .inc();
        match result {
            Ok(state) => {
                slot.state = Some(state);
                slot.delivered_seq = slot.delivered_seq.max(seq);
                slot.delivered_final = is_final && seq >= f.rec.seq;
                slot.retries = 0;
            }
            Err(SinkError::Retryable {
                message,
                retry_after,
            }) => {
                slot.dirty = true;
                slot.retrying = true;
                slot.retries += 1;
                if slot.retries > MAX_RETRIES {
                    tracing::warn!(
                        "notifier: {sink} gave up on run {} after {MAX_RETRIES} retries: {message}",
                        key.0
                    );
                    slot.retries = 0;
                    slot.dirty = false;
                    slot.urgent = false;
                    slot.retrying = false;
                } else {
                    let backoff =
                        crate::backoff::delay(RETRY_INITIAL, 2.0, RETRY_MAX, slot.retries, None);
                    let wait = retry_after.unwrap_or(backoff);
                    tracing::info!(
                        "notifier: {sink} could not deliver run {} ({message}); retry {} in {} ms",
                        key.0,
                        slot.retries,
                        wait.as_millis()
                    );
                    slot.timer = Some((after(myself, wait, key.clone()), true));
                }
            }
            Err(SinkError::Fatal { message }) => {
                tracing::warn!("notifier: {sink} stops reporting run {}: {message}", key.0);
                slot.dead = true;
            }
        }
        self.poke(myself, &key);
        self.forget_if_done(&key.0);
    }

    /// Forgets a run that has ended and whose every slot shows that.
    fn forget_if_done(&mut self, run: &str) {
        let Some(f) = self.runs.get(run) else {
            return;
        };
        let done = f.rec.status.is_terminal()
            && f.slots.values().all(|s| {
                s.dead
                    || (s.quiet()
                        && s.timer.is_none()
                        && s.delivered_final
                        && s.delivered_seq >= f.rec.seq)
            });
        if done {
            self.runs.remove(run);
        }
    }

    fn answer_flushes(&mut self) {
        if self.flush_waiters.is_empty() {
            return;
        }
        let quiet = self
            .runs
            .values()
            .all(|f| f.slots.values().all(Slot::quiet));
        if quiet {
            for reply in self.flush_waiters.drain(..) {
                let _ = reply.send(());
            }
        }
    }
}

/// Sends `Due(key)` after `wait`.
fn after(myself: &ActorRef<NotifierMsg>, wait: Duration, key: SlotKey) -> AbortHandle {
    let me = myself.clone();
    tokio::spawn(async move {
        tokio::time::sleep(wait).await;
        let _ = me.cast(NotifierMsg::Due(key));
    })
    .abort_handle()
}

/// Reports a delivery's end to the notifier, also when the delivery panicked.
struct Report {
    me: ActorRef<NotifierMsg>,
    key: SlotKey,
    seq: u64,
    is_final: bool,
    sent: bool,
}

impl Report {
    fn send(&mut self, result: Result<DeliveryState, SinkError>) {
        self.sent = true;
        let _ = self.me.cast(NotifierMsg::Done {
            key: self.key.clone(),
            seq: self.seq,
            is_final: self.is_final,
            result,
        });
    }
}

impl Drop for Report {
    fn drop(&mut self) {
        if !self.sent {
            // A panicking sink: the slot must not stay busy forever. (When the notifier is
            // stopping, nobody receives this, which is fine.)
            self.send(Err(SinkError::fatal("the sink panicked")));
        }
    }
}

/// The running notifier, from [`Engine::start_notifier`](crate::Engine::start_notifier).
/// Cheap to clone. [`Engine::shutdown`](crate::Engine::shutdown) stops it too. It follows the
/// notifier across restarts (see [`supervise`]).
#[derive(Clone)]
pub struct NotifierHandle {
    inner: Arc<HandleInner>,
}

struct HandleInner {
    /// The notifier now running.
    actor: std::sync::Mutex<ActorRef<NotifierMsg>>,
    /// Set by [`NotifierHandle::stop`]: the notifier's end is wanted, not a failure.
    stopping: std::sync::atomic::AtomicBool,
    /// Times it was started again after dying.
    restarts: std::sync::atomic::AtomicU64,
}

impl NotifierHandle {
    pub(crate) fn new(actor: ActorRef<NotifierMsg>) -> Self {
        NotifierHandle {
            inner: Arc::new(HandleInner {
                actor: std::sync::Mutex::new(actor),
                stopping: std::sync::atomic::AtomicBool::new(false),
                restarts: std::sync::atomic::AtomicU64::new(0),
            }),
        }
    }

    fn actor(&self) -> ActorRef<NotifierMsg> {
        self.inner
            .actor
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// How many times the notifier died and was started again.
    pub fn restarts(&self) -> u64 {
        self.inner
            .restarts
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Sends everything pending now, ignoring pace, and waits up to `within` for it to be
    /// delivered. `true` when everything went out in time.
    pub async fn flush(&self, within: Duration) -> bool {
        matches!(
            self.actor().call(NotifierMsg::Flush, Some(within)).await,
            Ok(CallResult::Success(()))
        )
    }

    /// Flushes (waiting up to `within`), then stops the notifier; deliveries still in flight
    /// are abandoned, and durable sinks catch up at the next start.
    pub async fn stop(&self, within: Duration) {
        self.inner
            .stopping
            .store(true, std::sync::atomic::Ordering::Release);
        self.flush(within).await;
        self.actor().stop_and_wait(None, Some(within)).await.ok();
    }
}

/// Watches the notifier and starts it again when it dies without being asked to stop (a
/// panic in its handler): the new one catches up from the store as at start-up, so durable
/// sinks edit the messages they made and nothing owed is lost. Restarts back off from 100 ms
/// to 10 s while they keep coming (reset after a minute of health), so a notifier that cannot
/// live does not spin. Ends with the engine.
pub(crate) async fn supervise(
    handle: NotifierHandle,
    mut join: tokio::task::JoinHandle<()>,
    shared: std::sync::Weak<Shared>,
    sinks: Vec<(Arc<dyn Sink>, Duration)>,
) {
    use std::sync::atomic::Ordering;
    const FIRST: Duration = Duration::from_millis(100);
    let mut delay = FIRST;
    let mut started = tokio::time::Instant::now();
    loop {
        let _ = (&mut join).await;
        // With a margin: a run created just before the end may not have been seen either.
        let since = now_ms().saturating_sub(60_000);
        if handle.inner.stopping.load(Ordering::Acquire) {
            return;
        }
        let Some(shared) = shared.upgrade() else {
            return;
        };
        if started.elapsed() > Duration::from_secs(60) {
            delay = FIRST;
        }
        tracing::error!(
            "the notifier stopped unexpectedly; starting it again in {} ms (it catches up from the store)",
            delay.as_millis()
        );
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(10));
        if handle.inner.stopping.load(Ordering::Acquire) {
            return;
        }
        let args = NotifierArgs {
            shared,
            sinks: sinks.clone(),
            since: Some(since),
        };
        match Actor::spawn(None, Notifier, args).await {
            Ok((actor, next)) => {
                *handle.inner.actor.lock().unwrap_or_else(|e| e.into_inner()) = actor;
                handle.inner.restarts.fetch_add(1, Ordering::AcqRel);
                join = next;
                started = tokio::time::Instant::now();
            }
            Err(e) => {
                tracing::error!("the notifier cannot be started again: {e}");
                return;
            }
        }
    }
}

/// Counts an update folded into the next delivery of `sink` (`baton_notifier_coalesced_total`).
fn coalesced(sink: &str) {
    crate::telemetry::ENGINE
        .notifier_coalesced
        .with_label_values(&[sink_kind(sink)])
        .inc();
}

/// A sink's kind, its name before any `:` (`telegram:<chat id>` is `telegram`): a metric label
/// names no chat, and there are as many series as kinds of sink, not as chats.
fn sink_kind(name: &str) -> &str {
    name.split(':').next().unwrap_or(name)
}
