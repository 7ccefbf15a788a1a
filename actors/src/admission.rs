//! Admission: which run gets the next slot, and what a waiting run queues behind.
//!
//! A run executes while it has a live run actor, and an actor is a slot. Limits count slots
//! three ways: all runs (`max_active_runs`), runs about one repository (`per_repo`, read from
//! the run's subject, see [`crate::subject`]) and runs of one workflow (`per_workflow`). A run
//! starts only when all three have room. Waiting runs queue in one lane per repository (runs
//! about no repository share one lane of their own, which `per_repo` does not limit), in start
//! order; lanes take turns (round robin), so a burst on one repository delays a run on
//! another by one turn at most.
//!
//! The supervisor owns this state and changes it; queries (`baton runs`, the API, the UI)
//! read it under the same lock, so what they say is what admission will do, with the limits
//! of this process (never stored: a restart with other limits reports those).
//!
//! Cost: a lane whose first run cannot start leaves the turn order until a slot it needs
//! frees, so choosing the next run never scans the waiting runs; a waiting run's place in its
//! lane (for `baton runs` over thousands of pending runs) is a binary search.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::job::Job;
use crate::subject::subject_names;

/// The concurrency limits; `0` means none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Limits {
    /// Runs executing at once.
    pub max_active_runs: usize,
    /// Runs about one repository executing at once.
    pub per_repo: usize,
    /// Runs of one workflow (by id) executing at once.
    pub per_workflow: BTreeMap<String, usize>,
}

impl Limits {
    /// Whether any limit is set (without one, every run starts at once).
    pub fn any(&self) -> bool {
        self.max_active_runs > 0 || self.per_repo > 0 || self.per_workflow.values().any(|n| *n > 0)
    }

    fn workflow(&self, id: &str) -> usize {
        self.per_workflow.get(id).copied().unwrap_or(0)
    }
}

/// What admission counts a run under.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct RunKeys {
    /// The repository it is about (index name), if any: its lane and its `per_repo` count.
    pub(crate) repo: Option<String>,
    /// Its workflow id.
    pub(crate) workflow: String,
}

impl RunKeys {
    /// The keys of a run from its workflow, input and job. A run about two repositories
    /// (input and job disagree) counts under the first by name.
    pub(crate) fn of(workflow: &str, input: &Map<String, Value>, job: Option<&Job>) -> RunKeys {
        RunKeys {
            repo: subject_names(input, job)
                .into_iter()
                .find(|name| !name.contains('#')),
            workflow: workflow.to_string(),
        }
    }
}

/// How a run waiting for admission gets going once it has a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admit {
    /// A new run: send it `Start`.
    Start,
    /// A run that was executing or pending when the engine stopped: load and resume it.
    Resume,
}

/// Which limit holds a run back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Limit {
    /// `max_active_runs`.
    MaxActiveRuns,
    /// `per_repo`.
    PerRepo,
    /// `per_workflow`.
    PerWorkflow,
}

/// Why a pending run has not started: the limit that is full, and who holds its slots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuedBehind {
    /// The limit that is full.
    pub limit: Limit,
    /// What it counts: the repository or workflow; none for `max_active_runs`.
    pub key: Option<String>,
    /// The limit's value.
    pub max: usize,
    /// Runs executing under it now (a run woken by a command may take it past `max`).
    pub running: usize,
    /// Some of those runs (at most [`QueuedBehind::SHOWN`]), oldest first.
    pub holders: Vec<String>,
    /// How many of them other daemons run (several daemons on one database), not named.
    #[serde(default)]
    pub elsewhere: usize,
    /// Runs of the same lane (repository) queued before it.
    pub ahead: usize,
    /// The first run of its lane, when that run is the one the limit holds (its lane starts
    /// in order, so this run waits for that one).
    pub behind: Option<String>,
}

impl QueuedBehind {
    /// How many holders are named.
    pub const SHOWN: usize = 5;
}

impl fmt::Display for QueuedBehind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = self.key.as_deref().unwrap_or_default();
        let what = match self.limit {
            Limit::MaxActiveRuns => "active runs".to_string(),
            Limit::PerRepo => format!("runs of {key}"),
            Limit::PerWorkflow => format!("runs of workflow `{key}`"),
        };
        write!(
            f,
            "waiting for a slot: {} of {} {what} are running",
            self.running, self.max
        )?;
        let mut who = self.holders.clone();
        let here = self.running - self.elsewhere.min(self.running);
        if here > self.holders.len() {
            who.push(format!("{} more", here - self.holders.len()));
        }
        if self.elsewhere > 0 {
            who.push(format!("{} on other daemons", self.elsewhere));
        }
        if !who.is_empty() {
            write!(f, " ({})", who.join(", "))?;
        }
        if let Some(first) = &self.behind {
            write!(f, "; queued behind {first}")?;
        }
        if self.ahead > 0 {
            write!(f, "; {} ahead of it in its queue", self.ahead)?;
        }
        Ok(())
    }
}

/// A lane: the runs about one repository (or about none).
type Lane = Option<String>;

/// A run waiting for admission.
#[derive(Debug)]
struct Waiting {
    keys: RunKeys,
    admit: Admit,
    /// When it was queued (`baton_admission_wait_seconds`).
    queued_at: std::time::Instant,
    /// Its place in the order of pushes: a lane is sorted by it, so a run's place in its lane
    /// is a binary search.
    seq: u64,
}

impl Waiting {
    /// A run queued now, at `seq` in push order.
    fn new(keys: RunKeys, admit: Admit, seq: u64) -> Waiting {
        Waiting {
            keys,
            admit,
            queued_at: std::time::Instant::now(),
            seq,
        }
    }
}

/// The admission state: limits, waiting runs in lanes, and the live runs' keys.
#[derive(Debug, Default)]
pub(crate) struct Admission {
    limits: Limits,
    /// Waiting runs by lane, in start order. A lane exists only while it has runs, and then
    /// sits in exactly one of `turns`, `repo_full` or `workflow_full`.
    lanes: HashMap<Lane, VecDeque<(u64, String)>>,
    /// Lanes whose first run may start, in turn order.
    turns: VecDeque<Lane>,
    /// Lanes whose first run waits for a slot of its repository (the lane's own).
    repo_full: HashSet<String>,
    /// Lanes whose first run waits for a slot of this workflow.
    workflow_full: HashMap<String, Vec<Lane>>,
    /// Waiting runs.
    waiting: HashMap<String, Waiting>,
    /// The `seq` of the next push.
    pushed: u64,
    /// Live runs (each holds a slot) and their keys.
    live: HashMap<String, RunKeys>,
    live_by_repo: HashMap<String, BTreeSet<String>>,
    live_by_workflow: HashMap<String, BTreeSet<String>>,
    /// Slots of a repository other daemons hold, as last seen when one was refused (several
    /// daemons on one database); forgotten when any may have freed.
    elsewhere: HashMap<String, usize>,
}

impl Admission {
    pub(crate) fn new(limits: Limits) -> Admission {
        Admission {
            limits,
            ..Admission::default()
        }
    }

    pub(crate) fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Live runs.
    #[cfg(test)]
    pub(crate) fn live(&self) -> usize {
        self.live.len()
    }

    /// Queues a run at the end of its lane, unless it is already queued.
    pub(crate) fn push(&mut self, run: &str, keys: RunKeys, admit: Admit) {
        if self.waiting.contains_key(run) {
            return;
        }
        let lane = keys.repo.clone();
        let seq = self.pushed;
        self.pushed += 1;
        self.waiting
            .insert(run.to_string(), Waiting::new(keys, admit, seq));
        let queue = self.lanes.entry(lane.clone()).or_default();
        queue.push_back((seq, run.to_string()));
        if queue.len() == 1 {
            self.turns.push_back(lane.clone());
        }
        self.measure(&lane);
    }

    /// Sets the lane's queue-depth gauge; an empty lane's series is removed, so lanes of
    /// repositories no longer busy do not linger.
    fn measure(&self, lane: &Lane) {
        let label = crate::telemetry::lane_label(lane.as_deref());
        let depth = &crate::telemetry::ENGINE.queue_depth;
        match self.lanes.get(lane).map(VecDeque::len).unwrap_or(0) {
            0 => {
                let _ = depth.remove_label_values(&[label]);
            }
            n => depth.with_label_values(&[label]).set(n as i64),
        }
    }

    /// Takes a run out of the queue (it ended while waiting: cancelled). Rare, so it may
    /// walk its lane.
    pub(crate) fn withdraw(&mut self, run: &str) {
        let Some(Waiting { keys, seq, .. }) = self.waiting.remove(run) else {
            return;
        };
        let lane = keys.repo;
        self.withdraw_from(&lane, seq);
        self.measure(&lane);
    }

    fn withdraw_from(&mut self, lane: &Lane, seq: u64) {
        let lane = lane.clone();
        let queue = self.lanes.get_mut(&lane).expect("a queued run has a lane");
        let was_first = queue.front().is_some_and(|(first, _)| *first == seq);
        queue.retain(|(s, _)| *s != seq);
        if !was_first {
            return;
        }
        // The lane's first run changed: it leaves whatever it waited for and takes a turn.
        let empty = queue.is_empty();
        self.turns.retain(|l| *l != lane);
        if let Some(repo) = &lane {
            self.repo_full.remove(repo);
        }
        self.workflow_full.retain(|_, lanes| {
            lanes.retain(|l| *l != lane);
            !lanes.is_empty()
        });
        if empty {
            self.lanes.remove(&lane);
        } else {
            self.turns.push_back(lane);
        }
    }

    pub(crate) fn is_queued(&self, run: &str) -> bool {
        self.waiting.contains_key(run)
    }

    fn global_full(&self) -> bool {
        self.limits.max_active_runs > 0 && self.live.len() >= self.limits.max_active_runs
    }

    fn repo_full(&self, repo: &str) -> bool {
        self.limits.per_repo > 0
            && self.live_by_repo.get(repo).map_or(0, BTreeSet::len)
                + self.elsewhere.get(repo).copied().unwrap_or(0)
                >= self.limits.per_repo
    }

    /// A run [`Admission::next`] gave out could not start: its repository's slots are held
    /// by other daemons (`elsewhere` of them). It goes back to the front of its lane, which
    /// waits until [`Admission::elsewhere_freed`].
    pub(crate) fn put_back(
        &mut self,
        run: &str,
        keys: RunKeys,
        admit: Admit,
        queued_at: std::time::Instant,
        elsewhere: usize,
    ) {
        let Some(repo) = keys.repo.clone() else {
            return;
        };
        self.elsewhere.insert(repo.clone(), elsewhere.max(1));
        let lane = Some(repo.clone());
        let queue = self.lanes.entry(lane.clone()).or_default();
        // Before the lane's first run, which came after it; in an empty lane, a fresh number.
        let seq = match queue.front() {
            Some((first, _)) => first.saturating_sub(1),
            None => {
                self.pushed += 1;
                self.pushed - 1
            }
        };
        queue.push_front((seq, run.to_string()));
        // Its wait goes on from when it was first queued.
        let mut waiting = Waiting::new(keys, admit, seq);
        waiting.queued_at = queued_at;
        self.waiting.insert(run.to_string(), waiting);
        self.turns.retain(|l| *l != lane);
        self.measure(&lane);
        self.repo_full.insert(repo);
    }

    /// Slots other daemons held may have freed: the lanes waiting for them take turns again.
    pub(crate) fn elsewhere_freed(&mut self) {
        for repo in std::mem::take(&mut self.elsewhere).into_keys() {
            if self.repo_full.remove(&repo) {
                self.turns.push_back(Some(repo));
            }
        }
    }

    fn workflow_full(&self, workflow: &str) -> bool {
        let max = self.limits.workflow(workflow);
        max > 0 && self.live_by_workflow.get(workflow).map_or(0, BTreeSet::len) >= max
    }

    /// The next run to start, if one may: lanes in turn, each lane's first run. A lane whose
    /// first run cannot start steps out of the turns until a slot it needs frees.
    pub(crate) fn next(&mut self) -> Option<(String, RunKeys, Admit, std::time::Instant)> {
        while !self.global_full() {
            let lane = self.turns.pop_front()?;
            let (_, first) = self.lanes[&lane].front().expect("a lane in turns has runs");
            let workflow = &self.waiting[first].keys.workflow;
            if let Some(repo) = lane.as_deref().filter(|r| self.repo_full(r)) {
                self.repo_full.insert(repo.to_string());
                continue;
            }
            if self.workflow_full(workflow) {
                let workflow = workflow.clone();
                self.workflow_full.entry(workflow).or_default().push(lane);
                continue;
            }
            let queue = self.lanes.get_mut(&lane).expect("present");
            let (_, run) = queue.pop_front().expect("present");
            if queue.is_empty() {
                self.lanes.remove(&lane);
            } else {
                self.turns.push_back(lane.clone());
            }
            self.measure(&lane);
            let Waiting {
                keys,
                admit,
                queued_at,
                ..
            } = self.waiting.remove(&run).expect("queued");
            return Some((run, keys, admit, queued_at));
        }
        None
    }

    /// A run's actor is alive: it holds a slot of each of its keys.
    pub(crate) fn started(&mut self, run: &str, keys: RunKeys) {
        self.ended(run);
        if let Some(repo) = &keys.repo {
            self.live_by_repo
                .entry(repo.clone())
                .or_default()
                .insert(run.to_string());
        }
        self.live_by_workflow
            .entry(keys.workflow.clone())
            .or_default()
            .insert(run.to_string());
        self.live.insert(run.to_string(), keys);
    }

    /// A run's actor is gone: its slots free, and lanes waiting for them take turns again.
    pub(crate) fn ended(&mut self, run: &str) {
        if let Some(keys) = self.live.remove(run) {
            self.release(run, &keys);
        }
    }

    fn release(&mut self, run: &str, keys: &RunKeys) {
        if let Some(repo) = &keys.repo {
            if let Some(set) = self.live_by_repo.get_mut(repo) {
                set.remove(run);
                if set.is_empty() {
                    self.live_by_repo.remove(repo);
                }
            }
            if self.repo_full.remove(repo) {
                self.turns.push_back(Some(repo.clone()));
            }
        }
        if let Some(set) = self.live_by_workflow.get_mut(&keys.workflow) {
            set.remove(run);
            if set.is_empty() {
                self.live_by_workflow.remove(&keys.workflow);
            }
        }
        if let Some(lanes) = self.workflow_full.remove(&keys.workflow) {
            self.turns.extend(lanes);
        }
    }

    /// What a waiting run queues behind, or `None` if it is not waiting.
    pub(crate) fn queued_behind(&self, run: &str) -> Option<QueuedBehind> {
        let Waiting { keys, seq, .. } = self.waiting.get(run)?;
        let queue = self.lanes.get(&keys.repo)?;
        let ahead = queue
            .binary_search_by_key(seq, |(s, _)| *s)
            .unwrap_or_default();
        // Its lane starts in order: what holds the lane's first run holds it.
        let first = queue.front().map(|(_, f)| f).filter(|f| *f != run);
        let first_keys = first.and_then(|f| self.waiting.get(f)).map(|w| &w.keys);
        let mut why = self.limit_for(first_keys.unwrap_or(keys));
        if why.is_none() && first_keys.is_some() {
            why = self.limit_for(keys);
        }
        let (limit, key, max, holders) = why?;
        // Runs of other daemons holding its repository's slots, which this one cannot name.
        let elsewhere = match (&limit, &key) {
            (Limit::PerRepo, Some(repo)) => self.elsewhere.get(repo).copied().unwrap_or(0),
            _ => 0,
        };
        Some(QueuedBehind {
            limit,
            key,
            max,
            running: holders.len() + elsewhere,
            holders: holders.iter().take(QueuedBehind::SHOWN).cloned().collect(),
            elsewhere,
            ahead,
            behind: first.filter(|_| limit != Limit::PerRepo).cloned(),
        })
    }

    /// The full limit that holds a run with these keys, with the runs holding it, the most
    /// specific first.
    fn limit_for(&self, keys: &RunKeys) -> Option<(Limit, Option<String>, usize, Vec<String>)> {
        let ids = |set: Option<&BTreeSet<String>>| -> Vec<String> {
            set.map(|s| s.iter().cloned().collect()).unwrap_or_default()
        };
        if let Some(repo) = keys.repo.as_deref().filter(|r| self.repo_full(r)) {
            return Some((
                Limit::PerRepo,
                Some(repo.to_string()),
                self.limits.per_repo,
                ids(self.live_by_repo.get(repo)),
            ));
        }
        if self.workflow_full(&keys.workflow) {
            let holders = ids(self.live_by_workflow.get(&keys.workflow));
            return Some((
                Limit::PerWorkflow,
                Some(keys.workflow.clone()),
                self.limits.workflow(&keys.workflow),
                holders,
            ));
        }
        if self.global_full() {
            let mut holders: Vec<String> = self.live.keys().cloned().collect();
            holders.sort();
            return Some((
                Limit::MaxActiveRuns,
                None,
                self.limits.max_active_runs,
                holders,
            ));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(repo: Option<&str>, workflow: &str) -> RunKeys {
        RunKeys {
            repo: repo.map(str::to_string),
            workflow: workflow.to_string(),
        }
    }

    /// Starts what may start, marking each live, and returns the ids in order.
    fn drain(adm: &mut Admission) -> Vec<String> {
        let mut out = Vec::new();
        while let Some((run, k, _, _)) = adm.next() {
            adm.started(&run, k);
            out.push(run);
        }
        out
    }

    /// Test runs are named `<repo>-<n>` (`none-<n>` for no repository), workflow `wf`.
    fn adm_keys(run: &str) -> RunKeys {
        let repo = run.split('-').next().unwrap();
        keys((repo != "none").then_some(repo), "wf")
    }

    fn push(adm: &mut Admission, run: &str) {
        adm.push(run, adm_keys(run), Admit::Start);
    }

    #[test]
    fn lanes_take_turns_and_each_keeps_start_order() {
        let mut adm = Admission::new(Limits {
            max_active_runs: 1,
            ..Limits::default()
        });
        for run in ["a-1", "a-2", "a-3", "a-4", "b-1", "none-1", "b-2"] {
            push(&mut adm, run);
        }
        let mut order = Vec::new();
        loop {
            let started = drain(&mut adm);
            assert!(started.len() <= 1, "{started:?}");
            let Some(run) = started.first() else { break };
            order.push(run.clone());
            adm.ended(run);
        }
        assert_eq!(
            order,
            ["a-1", "b-1", "none-1", "a-2", "b-2", "a-3", "a-4"],
            "round robin across repositories, start order within one"
        );
        assert_eq!(adm.live(), 0);
        assert!(adm.lanes.is_empty() && adm.turns.is_empty() && adm.waiting.is_empty());
    }

    #[test]
    fn a_busy_repository_does_not_hold_back_another() {
        let mut adm = Admission::new(Limits {
            per_repo: 1,
            ..Limits::default()
        });
        for n in 1..=100 {
            push(&mut adm, &format!("a-{n}"));
        }
        assert_eq!(drain(&mut adm), ["a-1"]);
        push(&mut adm, "b-1");
        push(&mut adm, "none-1");
        push(&mut adm, "none-2");
        // Runs about no repository are not limited by `per_repo`.
        assert_eq!(drain(&mut adm), ["b-1", "none-1", "none-2"]);
        let why = adm.queued_behind("a-3").unwrap();
        assert_eq!(why.limit, Limit::PerRepo);
        assert_eq!(why.key.as_deref(), Some("a"));
        assert_eq!((why.running, why.max, why.ahead), (1, 1, 1));
        assert_eq!(why.holders, ["a-1"]);
        assert_eq!(
            why.to_string(),
            "waiting for a slot: 1 of 1 runs of a are running (a-1); 1 ahead of it in its queue"
        );
        adm.ended("b-1");
        assert_eq!(drain(&mut adm), Vec::<String>::new());
        adm.ended("a-1");
        assert_eq!(drain(&mut adm), ["a-2"]);
        assert!(adm.queued_behind("a-2").is_none(), "started");
        // The blocked lane is out of the turns: a scan would visit it, this does not.
        assert!(adm.turns.is_empty());
        assert!(adm.repo_full.contains("a"));
    }

    #[test]
    fn a_workflow_limit_holds_its_runs_and_the_lane_behind_them() {
        let mut limits = Limits::default();
        limits.per_workflow.insert("slow".into(), 1);
        let mut adm = Admission::new(limits);
        adm.push("a-1", keys(Some("a"), "slow"), Admit::Start);
        adm.push("b-1", keys(Some("b"), "slow"), Admit::Start);
        adm.push("b-2", keys(Some("b"), "fast"), Admit::Start);
        adm.push("c-1", keys(Some("c"), "fast"), Admit::Start);
        let mut started = Vec::new();
        while let Some((run, k, _, _)) = adm.next() {
            adm.started(&run, k);
            started.push(run);
        }
        // b-2 waits behind b-1 (its repository starts in order); c-1 does not.
        assert_eq!(started, ["a-1", "c-1"]);
        let why = adm.queued_behind("b-2").unwrap();
        assert_eq!(why.limit, Limit::PerWorkflow);
        assert_eq!(why.behind.as_deref(), Some("b-1"));
        assert_eq!(
            why.to_string(),
            "waiting for a slot: 1 of 1 runs of workflow `slow` are running (a-1); queued behind b-1; 1 ahead of it in its queue"
        );
        adm.ended("a-1");
        assert_eq!(adm.next().map(|(r, _, _, _)| r).as_deref(), Some("b-1"));
    }

    #[test]
    fn a_run_refused_for_slots_held_elsewhere_waits_first_in_its_lane_until_they_free() {
        let mut adm = Admission::new(Limits {
            per_repo: 2,
            ..Limits::default()
        });
        for run in ["a-1", "a-2", "b-1"] {
            push(&mut adm, run);
        }
        // Another daemon holds both of a's slots: a-1 goes back, and its lane waits.
        let (run, k, how, queued_at) = adm.next().unwrap();
        assert_eq!(run, "a-1");
        adm.put_back(&run, k, how, queued_at, 2);
        assert_eq!(drain(&mut adm), ["b-1"]);
        let why = adm.queued_behind("a-2").unwrap();
        assert_eq!(why.limit, Limit::PerRepo);
        assert_eq!((why.running, why.ahead), (2, 1));
        assert!(why.holders.is_empty(), "{why:?}");
        assert_eq!(
            why.to_string(),
            "waiting for a slot: 2 of 2 runs of a are running (2 on other daemons); 1 ahead of it in its queue"
        );
        // A local run ending does not free the other daemon's slots.
        adm.ended("b-1");
        assert_eq!(adm.next().map(|(r, _, _, _)| r), None);
        // They may have freed: the lane takes its turn again, in its order.
        adm.elsewhere_freed();
        assert_eq!(drain(&mut adm), ["a-1", "a-2"]);
    }

    #[test]
    fn the_global_limit_is_reported_when_nothing_narrower_is_full() {
        let mut adm = Admission::new(Limits {
            max_active_runs: 2,
            per_repo: 2,
            ..Limits::default()
        });
        for run in ["a-1", "b-1", "c-1"] {
            push(&mut adm, run);
        }
        assert_eq!(drain(&mut adm), ["a-1", "b-1"]);
        let why = adm.queued_behind("c-1").unwrap();
        assert_eq!(why.limit, Limit::MaxActiveRuns);
        assert_eq!(why.holders, ["a-1", "b-1"]);
        assert_eq!(
            why.to_string(),
            "waiting for a slot: 2 of 2 active runs are running (a-1, b-1)"
        );
        // A run queued twice is queued once.
        push(&mut adm, "c-1");
        assert_eq!(adm.lanes[&Some("c".to_string())].len(), 1);
    }

    #[test]
    fn a_run_cancelled_while_queued_leaves_its_lane() {
        let mut adm = Admission::new(Limits {
            per_repo: 1,
            ..Limits::default()
        });
        for run in ["a-1", "a-2", "a-3", "a-4"] {
            push(&mut adm, run);
        }
        assert_eq!(drain(&mut adm), ["a-1"]);
        assert_eq!(adm.queued_behind("a-4").unwrap().ahead, 2);
        adm.withdraw("a-3");
        assert_eq!(adm.queued_behind("a-4").unwrap().ahead, 1);
        // The first of a blocked lane: the next one takes its place, still blocked.
        adm.withdraw("a-2");
        assert!(adm.queued_behind("a-2").is_none());
        assert_eq!(adm.queued_behind("a-4").unwrap().ahead, 0);
        assert_eq!(drain(&mut adm), Vec::<String>::new());
        adm.withdraw("a-4");
        assert!(adm.lanes.is_empty() && adm.waiting.is_empty());
        assert!(adm.turns.is_empty() && adm.repo_full.is_empty());
        adm.ended("a-1");
        assert_eq!(drain(&mut adm), Vec::<String>::new());
    }

    #[test]
    fn the_keys_are_the_runs_repository_and_workflow() {
        let input = serde_json::json!({"repo": "Octo/App", "issue": 7});
        let k = RunKeys::of("triage", input.as_object().unwrap(), None);
        assert_eq!(k, keys(Some("octo/app"), "triage"));
        let k = RunKeys::of("x", &Map::new(), None);
        assert_eq!(k, keys(None, "x"));
    }
}
