//! The notifier through the engine's facade: a real store, real run actors, and a recording
//! sink (a real `Sink` that keeps every delivery it is asked to make).

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use baton_actors::{
    ActionContext, Definition, DeliveryState, Engine, EngineConfig, Happening, RunRecord,
    RunStatus, Sink, SinkError, SinkFuture, StepDef, StepStatus, Update, Workflow,
};
use serde_json::{json, Map, Value};

/// One delivery the sink accepted.
#[derive(Clone, Debug)]
struct Delivered {
    run: String,
    message: u64,
    /// The message the notifier said it had made before (None: make one).
    previous: Option<u64>,
    happened: Happening,
    is_final: bool,
    status: RunStatus,
    completed_steps: usize,
    progress: Vec<(String, String)>,
}

/// A sink that records deliveries and can be told to fail or hang.
struct Recorder {
    /// Ids of messages it makes start above this, so two recorders never make the same id.
    base: u64,
    target: String,
    made: AtomicU64,
    attempts: AtomicU32,
    delivered: Mutex<Vec<Delivered>>,
    /// Attempt numbers (1-based) that fail with a retryable error.
    fail_attempts: Mutex<Vec<(u32, Option<Duration>)>>,
    /// The first delivery showing a wait fails (retryable, no `retry_after`).
    fail_first_wait: AtomicBool,
    /// Deliveries of a final state never return (a process about to crash).
    hang_on_final: AtomicBool,
    /// Nor does any delivery of a run of this workflow.
    hang_workflow: Mutex<String>,
    /// Runs whose delivery hangs.
    hung: Mutex<Vec<String>>,
}

impl Recorder {
    fn new(base: u64) -> Arc<Recorder> {
        Arc::new(Recorder {
            base,
            target: "chat-1".into(),
            made: AtomicU64::new(0),
            attempts: AtomicU32::new(0),
            delivered: Mutex::new(Vec::new()),
            fail_attempts: Mutex::new(Vec::new()),
            fail_first_wait: AtomicBool::new(false),
            hang_on_final: AtomicBool::new(false),
            hang_workflow: Mutex::new(String::new()),
            hung: Mutex::new(Vec::new()),
        })
    }

    fn of(&self, run: &str) -> Vec<Delivered> {
        self.delivered
            .lock()
            .unwrap()
            .iter()
            .filter(|d| d.run == run)
            .cloned()
            .collect()
    }

    /// Waits (up to 30 s, a bound for a loaded machine, not a measurement) until a delivery
    /// of `run` satisfies `pred`, and returns it.
    async fn wait_for(&self, run: &str, pred: impl Fn(&Delivered) -> bool) -> Delivered {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(d) = self.of(run).into_iter().find(|d| pred(d)) {
                return d;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no matching delivery of {run}; got {:#?}",
                self.of(run)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Sink for Recorder {
    fn name(&self) -> &str {
        "recorder"
    }

    fn target(&self, _run: &RunRecord, _workflow: &Workflow) -> Option<String> {
        Some(self.target.clone())
    }

    fn deliver<'a>(
        &'a self,
        update: &'a Update,
        previous: Option<&'a DeliveryState>,
    ) -> SinkFuture<'a> {
        Box::pin(async move {
            let attempt = self.attempts.fetch_add(1, Ordering::SeqCst) + 1;
            let scripted = self
                .fail_attempts
                .lock()
                .unwrap()
                .iter()
                .find(|(n, _)| *n == attempt)
                .map(|(_, after)| *after);
            if scripted.is_none()
                && update.happened == Happening::Waiting
                && self.fail_first_wait.swap(false, Ordering::SeqCst)
            {
                return Err(SinkError::retryable("502 bad gateway"));
            }
            if let Some(after) = scripted {
                return Err(match after {
                    Some(wait) => SinkError::retry_after("429 too many requests", wait),
                    None => SinkError::retryable("503 unavailable"),
                });
            }
            if (update.is_final && self.hang_on_final.load(Ordering::SeqCst))
                || *self.hang_workflow.lock().unwrap() == update.run.workflow_id
            {
                self.hung.lock().unwrap().push(update.run.id.clone());
                std::future::pending::<()>().await;
            }
            let previous = previous.and_then(|p| p.message_id.as_u64());
            let message = match previous {
                Some(id) => id,
                None => self.base + self.made.fetch_add(1, Ordering::SeqCst) + 1,
            };
            self.delivered.lock().unwrap().push(Delivered {
                run: update.run.id.clone(),
                message,
                previous,
                happened: update.happened,
                is_final: update.is_final,
                status: update.run.status,
                completed_steps: update
                    .run
                    .steps
                    .iter()
                    .filter(|s| s.status == StepStatus::Completed)
                    .count(),
                progress: update
                    .progress
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            });
            Ok(DeliveryState {
                message_id: json!(message),
                ..DeliveryState::default()
            })
        })
    }
}

async fn engine(dir: &std::path::Path) -> Engine {
    Engine::open(dir, EngineConfig::default()).await.unwrap()
}

async fn settle(engine: &Engine, run: &str) -> RunRecord {
    tokio::time::timeout(Duration::from_secs(30), engine.settled(run))
        .await
        .expect("run settles in time")
        .unwrap()
}

fn noop_steps(id: &str, n: usize) -> Definition {
    let mut b = Definition::builder(id);
    for i in 0..n {
        b = b.step(StepDef::action(format!("s{i}"), "noop"));
    }
    b.build()
}

fn gated(id: &str) -> Definition {
    Definition::builder(id)
        .step(StepDef::action("before", "noop"))
        .step(StepDef::wait("gate", "go"))
        .step(StepDef::action("after", "noop"))
        .build()
}

const HOUR: Duration = Duration::from_secs(3600);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_quick_steps_make_a_handful_of_deliveries_and_the_last_is_right() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path()).await;
    let sink = Recorder::new(0);
    engine
        .start_notifier(vec![(sink.clone(), Duration::from_secs(10))])
        .await
        .unwrap();
    engine
        .register_workflow(noop_steps("fifty", 50), "test")
        .await
        .unwrap();
    let run = engine.start("fifty", Map::new(), None).await.unwrap();
    assert_eq!(settle(&engine, &run).await.status, RunStatus::Completed);
    let last = sink.wait_for(&run, |d| d.is_final).await;
    assert_eq!(last.status, RunStatus::Completed);
    assert_eq!(last.happened, Happening::Completed);
    assert_eq!(last.completed_steps, 50);
    let all = sink.of(&run);
    assert!(all.len() <= 4, "{} deliveries: {all:#?}", all.len());
    assert_eq!(sink.made.load(Ordering::SeqCst), 1, "one message, edited");
    assert!(all.iter().all(|d| d.message == all[0].message));
    engine.shutdown().await.unwrap();
    assert_eq!(sink.of(&run).len(), all.len(), "nothing more after the end");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_waits_and_completion_are_not_held_for_the_interval() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path()).await;
    let sink = Recorder::new(0);
    // An hour between deliveries: only what may skip the pace can arrive within the test.
    engine
        .start_notifier(vec![(sink.clone(), HOUR)])
        .await
        .unwrap();
    engine
        .register_workflow(gated("gated"), "test")
        .await
        .unwrap();
    let run = engine.start("gated", Map::new(), None).await.unwrap();
    let waiting = sink
        .wait_for(&run, |d| d.happened == Happening::Waiting)
        .await;
    assert_eq!(waiting.status, RunStatus::Waiting);
    assert!(!waiting.is_final);
    engine.signal(&run, "go", Value::Null).await.unwrap();
    let done = sink.wait_for(&run, |d| d.is_final).await;
    assert_eq!(done.status, RunStatus::Completed);
    assert_eq!(done.completed_steps, 3);
    assert!(sink.of(&run).len() <= 3, "{:#?}", sink.of(&run));

    // A second run on the same target: its start waits out the hour, its failure does not.
    let failing = Definition::builder("failing")
        .step(StepDef::action("boom", "shell").with("run", "exit 3"))
        .build();
    engine.register_workflow(failing, "test").await.unwrap();
    let run2 = engine.start("failing", Map::new(), None).await.unwrap();
    let failed = sink.wait_for(&run2, |d| d.is_final).await;
    assert_eq!(failed.status, RunStatus::Failed);
    assert_eq!(failed.happened, Happening::Failed);
    assert_eq!(sink.of(&run2).len(), 1, "{:#?}", sink.of(&run2));
    engine.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_progress_messages_coalesces_into_the_latest() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path()).await;
    let release = Arc::new(tokio::sync::Notify::new());
    let gate = release.clone();
    engine.register_action("chatty", move |ctx: ActionContext| {
        let gate = gate.clone();
        async move {
            for i in 1..=200 {
                ctx.progress.say(format!("message {i}"));
            }
            gate.notified().await;
            Ok(Value::Null)
        }
    });
    let sink = Recorder::new(0);
    engine
        .start_notifier(vec![(sink.clone(), Duration::from_millis(300))])
        .await
        .unwrap();
    let def = Definition::builder("chatty")
        .step(StepDef::action("talk", "chatty"))
        .build();
    engine.register_workflow(def, "test").await.unwrap();
    let run = engine.start("chatty", Map::new(), None).await.unwrap();
    let latest = sink
        .wait_for(&run, |d| {
            d.progress == vec![("talk".to_string(), "message 200".to_string())]
        })
        .await;
    assert_eq!(latest.status, RunStatus::Running);
    let so_far = sink.of(&run).len();
    assert!(so_far <= 5, "{so_far} deliveries for 200 messages");
    release.notify_one();
    let done = sink.wait_for(&run, |d| d.is_final).await;
    assert!(
        done.progress.is_empty(),
        "a finished step shows no progress"
    );
    engine.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retryable_error_is_retried_without_duplicating_the_message() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path()).await;
    let sink = Recorder::new(0);
    // The first try (making the message) fails, and so does the first showing the wait.
    *sink.fail_attempts.lock().unwrap() = vec![(1, Some(Duration::from_millis(100)))];
    sink.fail_first_wait.store(true, Ordering::SeqCst);
    // An hour's pace: a retry goes when it is due, not when the pace allows.
    engine
        .start_notifier(vec![(sink.clone(), HOUR)])
        .await
        .unwrap();
    engine
        .register_workflow(gated("gated"), "test")
        .await
        .unwrap();
    let run = engine.start("gated", Map::new(), None).await.unwrap();
    sink.wait_for(&run, |d| d.happened == Happening::Waiting)
        .await;
    engine.signal(&run, "go", Value::Null).await.unwrap();
    let done = sink.wait_for(&run, |d| d.is_final).await;
    assert_eq!(done.status, RunStatus::Completed);
    let all = sink.of(&run);
    assert_eq!(sink.made.load(Ordering::SeqCst), 1, "{all:#?}");
    assert!(all.iter().all(|d| d.message == all[0].message), "{all:#?}");
    assert!(all
        .iter()
        .skip(1)
        .all(|d| d.previous == Some(all[0].message)));
    assert_eq!(
        sink.attempts.load(Ordering::SeqCst) as usize,
        all.len() + 2,
        "each failure tried once more, nothing else"
    );
    engine.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_engine_edits_the_message_it_made_before() {
    let dir = tempfile::tempdir().unwrap();
    let run = {
        let engine = engine(dir.path()).await;
        let sink = Recorder::new(100);
        engine
            .start_notifier(vec![(sink.clone(), Duration::from_millis(10))])
            .await
            .unwrap();
        engine
            .register_workflow(gated("gated"), "test")
            .await
            .unwrap();
        let run = engine.start("gated", Map::new(), None).await.unwrap();
        let waiting = sink
            .wait_for(&run, |d| d.happened == Happening::Waiting)
            .await;
        assert_eq!(waiting.message, 101);
        engine.shutdown().await.unwrap();
        run
    };
    let engine = engine(dir.path()).await;
    let sink = Recorder::new(200);
    engine
        .start_notifier(vec![(sink.clone(), Duration::from_millis(10))])
        .await
        .unwrap();
    engine.resume().await.unwrap();
    engine.signal(&run, "go", Value::Null).await.unwrap();
    let done = sink.wait_for(&run, |d| d.is_final).await;
    assert_eq!(done.status, RunStatus::Completed);
    assert_eq!(done.previous, Some(101));
    assert_eq!(done.message, 101);
    assert_eq!(sink.made.load(Ordering::SeqCst), 0, "no second message");
    engine.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_final_state_lost_in_a_crash_goes_out_at_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let (run, ran_without_message) = {
        let engine = engine(dir.path()).await;
        let sink = Recorder::new(100);
        sink.hang_on_final.store(true, Ordering::SeqCst);
        *sink.hang_workflow.lock().unwrap() = "quick".into();
        let notifier = engine
            .start_notifier(vec![(sink.clone(), Duration::from_millis(10))])
            .await
            .unwrap();
        engine
            .register_workflow(gated("gated"), "test")
            .await
            .unwrap();
        engine
            .register_workflow(noop_steps("quick", 2), "test")
            .await
            .unwrap();
        let run = engine.start("gated", Map::new(), None).await.unwrap();
        sink.wait_for(&run, |d| d.happened == Happening::Waiting)
            .await;
        engine.signal(&run, "go", Value::Null).await.unwrap();
        assert_eq!(settle(&engine, &run).await.status, RunStatus::Completed);
        // A run whose first delivery never finishes: it never had a message.
        let quick = engine.start("quick", Map::new(), None).await.unwrap();
        assert_eq!(settle(&engine, &quick).await.status, RunStatus::Completed);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let hung = sink.hung.lock().unwrap().clone();
            if hung.contains(&run) && hung.contains(&quick) {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "deliveries begun: {hung:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // The process dies with both final deliveries in flight.
        notifier.stop(Duration::from_millis(200)).await;
        engine.shutdown().await.unwrap();
        assert!(sink.of(&run).iter().all(|d| !d.is_final));
        assert!(sink.of(&quick).is_empty());
        (run, quick)
    };
    let engine = engine(dir.path()).await;
    let sink = Recorder::new(200);
    engine
        .start_notifier(vec![(sink.clone(), Duration::from_secs(10))])
        .await
        .unwrap();
    let done = sink.wait_for(&run, |d| d.is_final).await;
    assert_eq!(done.status, RunStatus::Completed);
    assert_eq!(done.message, 101, "the message made before the crash");
    let quick = sink.wait_for(&ran_without_message, |d| d.is_final).await;
    assert_eq!(quick.status, RunStatus::Completed);
    assert_eq!(quick.previous, None, "it never had a message: one is made");
    assert_eq!(sink.made.load(Ordering::SeqCst), 1);
    engine.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_that_reports_no_run_gets_nothing() {
    struct Nobody(AtomicU32);
    impl Sink for Nobody {
        fn name(&self) -> &str {
            "nobody"
        }
        fn target(&self, run: &RunRecord, workflow: &Workflow) -> Option<String> {
            // Like the forge sink: only workflows that ask for progress.
            workflow.def.progress.then(|| run.id.clone())
        }
        fn deliver<'a>(&'a self, _: &'a Update, _: Option<&'a DeliveryState>) -> SinkFuture<'a> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Box::pin(async { Ok(DeliveryState::default()) })
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path()).await;
    let recorder = Recorder::new(0);
    let nobody = Arc::new(Nobody(AtomicU32::new(0)));
    let notifier = engine
        .start_notifier(vec![
            (nobody.clone(), Duration::from_millis(1)),
            (recorder.clone(), Duration::from_millis(1)),
        ])
        .await
        .unwrap();
    engine
        .register_workflow(noop_steps("plain", 3), "test")
        .await
        .unwrap();
    let run = engine.start("plain", Map::new(), None).await.unwrap();
    settle(&engine, &run).await;
    recorder.wait_for(&run, |d| d.is_final).await;
    assert!(notifier.flush(Duration::from_secs(10)).await);
    assert_eq!(nobody.0.load(Ordering::SeqCst), 0);
    let two = engine
        .start_notifier(vec![
            (recorder.clone(), Duration::from_millis(1)),
            (recorder.clone(), Duration::from_millis(1)),
        ])
        .await;
    assert!(two
        .err()
        .unwrap()
        .to_string()
        .contains("two notifier sinks"));
    engine.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notifier_that_panics_is_started_again_and_loses_and_repeats_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path()).await;
    let sink = Recorder::new(300);
    let notifier = engine
        .start_notifier(vec![(sink.clone(), Duration::from_millis(10))])
        .await
        .unwrap();
    engine
        .register_workflow(gated("gated"), "test")
        .await
        .unwrap();
    let run = engine.start("gated", Map::new(), None).await.unwrap();
    let waiting = sink
        .wait_for(&run, |d| d.happened == Happening::Waiting)
        .await;
    // The next events the notifier handles make it panic: the run's end among them.
    engine.inject_notifier_panics(2);
    engine.signal(&run, "go", Value::Null).await.unwrap();
    settle(&engine, &run).await;
    let done = sink.wait_for(&run, |d| d.is_final).await;
    assert_eq!(done.status, RunStatus::Completed);
    assert_eq!(done.message, waiting.message, "the same message is edited");
    assert_eq!(sink.made.load(Ordering::SeqCst), 1, "no second message");
    assert_eq!(
        sink.of(&run).iter().filter(|d| d.is_final).count(),
        1,
        "the end is delivered once"
    );
    assert!(notifier.restarts() >= 1, "it was started again");
    // And it goes on reporting runs started after.
    engine
        .register_workflow(noop_steps("after", 2), "test")
        .await
        .unwrap();
    let later = engine.start("after", Map::new(), None).await.unwrap();
    let done = sink.wait_for(&later, |d| d.is_final).await;
    assert_eq!(done.status, RunStatus::Completed);
    engine.shutdown().await.unwrap();
}
