//! Admission through the engine's facade: `per_repo` keeps one repository's runs apart while
//! another repository's run goes first, a pending run says what it queues behind (and leaves
//! the queue when cancelled), and a restart rebuilds the queue under the limits it is given. The steps block on a gate the
//! test opens, so every "not yet" is a state observed, not a sleep.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use baton_actors::{
    ActionContext, ActionError, Definition, Engine, EngineConfig, Limit, RunStatus, StepDef,
};
use serde_json::{json, Map, Value};
use tokio::sync::Semaphore;

/// `start RUN` and `end RUN` lines, in the order the steps wrote them.
type Log = Arc<Mutex<Vec<String>>>;

/// An engine whose `work` workflow's one step logs its start, waits for a permit of `gate`,
/// and logs its end.
async fn engine(
    dir: &std::path::Path,
    per_repo: usize,
    log: &Log,
    gate: &Arc<Semaphore>,
) -> Engine {
    let config = EngineConfig {
        per_repo,
        ..EngineConfig::default()
    };
    let engine = Engine::open(dir, config).await.unwrap();
    let (log, gate) = (log.clone(), gate.clone());
    engine.register_action("gated", move |ctx: ActionContext| {
        let (log, gate) = (log.clone(), gate.clone());
        async move {
            log.lock().unwrap().push(format!("start {}", ctx.run_id));
            tokio::select! {
                permit = gate.acquire() => permit.expect("gate open").forget(),
                _ = ctx.cancel.cancelled() => return Err(ActionError::fatal("cancelled")),
            }
            log.lock().unwrap().push(format!("end {}", ctx.run_id));
            Ok(Value::Null)
        }
    });
    let def = Definition::builder("work")
        .step(StepDef::action("s", "gated"))
        .build();
    engine.register_workflow(def, "test").await.unwrap();
    engine
}

fn about(repo: &str) -> Map<String, Value> {
    json!({ "repo": repo }).as_object().cloned().unwrap()
}

fn started(log: &Log) -> Vec<String> {
    log.lock()
        .unwrap()
        .iter()
        .filter_map(|l| l.strip_prefix("start ").map(str::to_string))
        .collect()
}

/// Waits until `n` steps have started (a positive condition, polled).
async fn until_started(log: &Log, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let runs = started(log);
        if runs.len() >= n {
            return runs;
        }
        assert!(Instant::now() < deadline, "only {runs:?} started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The most runs of `runs` between their `start` and `end` lines at once.
fn max_overlap(log: &Log, runs: &[String]) -> usize {
    let (mut open, mut max) = (0usize, 0usize);
    for line in log.lock().unwrap().iter() {
        let (what, run) = line.split_once(' ').unwrap();
        if !runs.iter().any(|r| r == run) {
            continue;
        }
        if what == "start" {
            open += 1;
            max = max.max(open);
        } else {
            open -= 1;
        }
    }
    max
}

async fn settle(engine: &Engine, run: &str) -> RunStatus {
    tokio::time::timeout(Duration::from_secs(30), engine.settled(run))
        .await
        .expect("run settles in time")
        .unwrap()
        .status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_run_per_repository_and_the_other_repository_goes_first() {
    let dir = tempfile::tempdir().unwrap();
    let (log, gate) = (Log::default(), Arc::new(Semaphore::new(0)));
    let engine = engine(dir.path(), 1, &log, &gate).await;
    let mut a = Vec::new();
    for _ in 0..5 {
        a.push(engine.start("work", about("Octo/A"), None).await.unwrap());
    }
    let b = engine.start("work", about("octo/b"), None).await.unwrap();

    // A's first run and B's run execute; A's other four wait although nothing of A ended.
    let first = until_started(&log, 2).await;
    assert_eq!(first.len(), 2);
    assert!(first.contains(&a[0]) && first.contains(&b), "{first:?}");
    for run in &a[1..] {
        assert_eq!(engine.run(run).unwrap().status, RunStatus::Pending);
    }
    let why = engine.queued_behind(&a[3]).expect("a pending run says why");
    assert_eq!(why.limit, Limit::PerRepo);
    assert_eq!(why.key.as_deref(), Some("octo/a"));
    assert_eq!(why.holders, [a[0].clone()]);
    assert_eq!(why.ahead, 2);
    assert_eq!(
        why.to_string(),
        format!(
            "waiting for a slot: 1 of 1 runs of octo/a are running ({}); 2 ahead of it in its queue",
            a[0]
        )
    );
    assert!(engine.queued_behind(&b).is_none(), "B's run is not waiting");

    // A run cancelled while queued leaves the queue: the runs behind it move up.
    engine.cancel(&a[1], "test").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while engine.queued_behind(&a[3]).map(|w| w.ahead) != Some(1) {
        assert!(
            Instant::now() < deadline,
            "{:?}",
            engine.queued_behind(&a[3])
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(engine.queued_behind(&a[1]).is_none());

    // Everything may finish now; A's runs still go one at a time.
    gate.add_permits(100);
    assert_eq!(settle(&engine, &b).await, RunStatus::Completed);
    for run in &a {
        let want = if *run == a[1] {
            RunStatus::Cancelled
        } else {
            RunStatus::Completed
        };
        assert_eq!(settle(&engine, run).await, want);
        assert!(engine.queued_behind(run).is_none());
    }
    assert_eq!(max_overlap(&log, &a), 1, "{:?}", log.lock().unwrap());
    assert!(
        !started(&log).contains(&a[1]),
        "the cancelled run never executed"
    );
    assert_eq!(started(&log).len(), 5);
    engine.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_rebuilds_the_queue_under_the_limits_it_is_given() {
    let dir = tempfile::tempdir().unwrap();
    let runs = {
        let (log, gate) = (Log::default(), Arc::new(Semaphore::new(0)));
        let engine = engine(dir.path(), 1, &log, &gate).await;
        let mut runs = Vec::new();
        for _ in 0..4 {
            runs.push(engine.start("work", about("octo/a"), None).await.unwrap());
        }
        until_started(&log, 1).await;
        engine.shutdown().await.unwrap();
        runs
    };

    // The same limit after the restart: the run that was executing goes first, alone.
    let (log, gate) = (Log::default(), Arc::new(Semaphore::new(0)));
    {
        let engine = engine(dir.path(), 1, &log, &gate).await;
        let report = engine.resume().await.unwrap();
        assert_eq!(report.resumed, 4);
        assert_eq!(until_started(&log, 1).await, [runs[0].clone()]);
        let why = engine.queued_behind(&runs[1]).expect("still queued");
        assert_eq!((why.limit, why.running, why.max), (Limit::PerRepo, 1, 1));
        assert_eq!(why.holders, [runs[0].clone()]);
        for run in &runs[1..] {
            assert_eq!(engine.run(run).unwrap().status, RunStatus::Pending);
        }
        engine.shutdown().await.unwrap();
    }

    // A higher limit after another restart: what the pending runs say follows it.
    let (log, gate) = (Log::default(), Arc::new(Semaphore::new(0)));
    let engine = engine(dir.path(), 2, &log, &gate).await;
    engine.resume().await.unwrap();
    let first = until_started(&log, 2).await;
    assert_eq!(first.len(), 2, "{first:?}");
    assert!(first.contains(&runs[0]), "{first:?}");
    let waiting: Vec<_> = runs.iter().filter(|r| !first.contains(r)).collect();
    let why = engine.queued_behind(waiting[0]).expect("queued");
    assert_eq!((why.limit, why.running, why.max), (Limit::PerRepo, 2, 2));
    assert!(why
        .to_string()
        .starts_with("waiting for a slot: 2 of 2 runs of octo/a"));
    gate.add_permits(100);
    for run in &runs {
        assert_eq!(settle(&engine, run).await, RunStatus::Completed);
    }
    assert_eq!(max_overlap(&log, &runs), 2, "{:?}", log.lock().unwrap());
    engine.shutdown().await.unwrap();
}
