//! The engine through its facade: real store, real actors, real processes.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use baton_actors::definition::{OnFailure, OnTimeout};
#[cfg(feature = "postgres")]
use baton_actors::store::postgres::PgConfig;
use baton_actors::store::Backend;
use baton_actors::{
    ActionContext, ActionError, Definition, Engine, EngineConfig, RetryPolicy, RollbackRequest,
    RunStatus, StepDef, StepStatus, Subject, SubjectKind, WaitKind,
};
use serde_json::{json, Map, Value};

#[cfg(feature = "postgres")]
use crate::require;

async fn engine(dir: &std::path::Path, backend: &Backend) -> Engine {
    let config = EngineConfig {
        backend: backend.clone(),
        ..EngineConfig::default()
    };
    Engine::open(dir, config).await.unwrap()
}

/// A fresh database on the tests' PostgreSQL server (`BATON_TEST_DATABASE_URL`, which
/// `scripts/test.sh` starts); `None` only when skipping is allowed (see `require`).
#[cfg(feature = "postgres")]
fn postgres() -> Option<Backend> {
    let Ok(admin) = std::env::var("BATON_TEST_DATABASE_URL") else {
        require::missing(
            "a PostgreSQL server (BATON_TEST_DATABASE_URL)",
            "scripts/postgres.sh starts a throwaway cluster",
        );
        return None;
    };
    let url = baton_actors::store::postgres::scratch_database(&admin, "baton_test").unwrap();
    Some(Backend::Postgres(PgConfig {
        url,
        pool_size: 4,
        lease: std::time::Duration::from_secs(15),
    }))
}

/// Each engine test, once on sled and once on PostgreSQL, from one body.
macro_rules! on_both_stores {
    ($(async fn $name:ident($backend:ident) $body:block)*) => {$(
        mod $name {
            use super::*;

            async fn body($backend: Backend) $body

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sled() {
                body(Backend::Sled).await
            }

            #[cfg(feature = "postgres")]
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if let Some(backend) = super::postgres() {
                    body(backend).await
                }
            }
        }
    )*};
}

fn input(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap_or_default()
}

async fn settle(engine: &Engine, run: &str) -> baton_actors::RunRecord {
    tokio::time::timeout(Duration::from_secs(30), engine.settled(run))
        .await
        .expect("run settles in time")
        .unwrap()
}

fn fast_retry(n: u32) -> RetryPolicy {
    RetryPolicy {
        initial: baton_actors::definition::Dur(Duration::from_millis(20)),
        max: baton_actors::definition::Dur(Duration::from_millis(50)),
        ..RetryPolicy::attempts(n)
    }
}

on_both_stores! {
    async fn code_based_workflow_passes_state_between_rust_actions(backend) {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine(dir.path(), &backend).await;
        engine.register_action("double", |ctx: ActionContext| async move {
            let n = ctx.params["n"]
                .as_i64()
                .ok_or_else(|| ActionError::fatal("n must be a number"))?;
            ctx.progress.say(format!("doubling {n}"));
            Ok(json!({ "n": n * 2 }))
        });
        let def = Definition::builder("doubler")
            .required_input("n")
            .step(
                StepDef::action("one", "double")
                    .with("n", "{{ input.n }}")
                    .set("n", "{{ steps.one.output.n }}"),
            )
            .step(
                StepDef::action("two", "double")
                    .with("n", "{{ state.n }}")
                    .set("n", "{{ steps.two.output.n }}"),
            )
            .build();
        engine.register_workflow(def, "test").await.unwrap();
        let run = engine
            .start("doubler", input(json!({"n": 5})), None)
            .await
            .unwrap();
        let rec = settle(&engine, &run).await;
        assert_eq!(rec.status, RunStatus::Completed);
        assert_eq!(rec.state["n"], json!(20));
        let err = engine
            .start("doubler", Map::new(), None)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing required input `n`"), "{err}");
    }
}

on_both_stores! {
    async fn a_panicking_action_is_a_failure_and_its_policy_applies(backend) {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine(dir.path(), &backend).await;
        let calls = Arc::new(AtomicU32::new(0));
        let seen = calls.clone();
        engine.register_action("flaky", move |_ctx: ActionContext| {
            let calls = seen.clone();
            async move {
                if calls.fetch_add(1, Ordering::SeqCst) < 2 {
                    panic!("kaboom");
                }
                Ok(json!("fine"))
            }
        });
        engine.register_action("always-panics", |_ctx: ActionContext| async move {
            if true {
                panic!("always");
            }
            Ok(Value::Null)
        });
        let def = Definition::builder("panicky")
            .step(StepDef::action("a", "flaky").retry(fast_retry(3)))
            .step(
                StepDef::action("b", "always-panics")
                    .retry(fast_retry(2))
                    .on_failure(OnFailure::Skip),
            )
            .step(StepDef::action("c", "always-panics"))
            .build();
        engine.register_workflow(def, "test").await.unwrap();
        let run = engine.start("panicky", Map::new(), None).await.unwrap();
        let rec = settle(&engine, &run).await;
        assert_eq!(rec.steps[0].status, StepStatus::Completed);
        assert_eq!(rec.steps[0].attempts, 3);
        assert_eq!(rec.steps[1].status, StepStatus::Skipped);
        assert_eq!(rec.steps[1].attempts, 2);
        assert_eq!(rec.status, RunStatus::Failed);
        let text = rec.error_text.unwrap();
        assert!(
            text.contains("panicked") && text.contains("always"),
            "{text}"
        );
    }
}

on_both_stores! {
    async fn a_step_timeout_kills_the_shells_children(backend) {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine(dir.path(), &backend).await;
        let pidfile = dir.path().join("child.pid");
        let script = format!("sleep 300 & echo $! > {}; wait", pidfile.display());
        let def = Definition::builder("slow")
            .step(
                StepDef::action("hang", "shell")
                    .with("run", script)
                    .timeout(Duration::from_millis(700)),
            )
            .build();
        engine.register_workflow(def, "test").await.unwrap();
        let run = engine.start("slow", Map::new(), None).await.unwrap();
        let rec = settle(&engine, &run).await;
        assert_eq!(rec.status, RunStatus::Failed);
        assert!(rec.steps[0]
            .error
            .as_deref()
            .unwrap()
            .contains("timed out after 700ms"));
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let mut alive = true;
        for _ in 0..50 {
            // A zombie is dead too: check /proc's state, not only existence.
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            alive = !stat.is_empty() && !stat.contains(") Z ");
            if !alive {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(!alive, "the background child {pid} outlived its step");
    }
}

on_both_stores! {
    async fn shell_output_exit_code_and_environment(backend) {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine(dir.path(), &backend).await;
        let def = Definition::builder("env")
            .step(StepDef::action("show", "shell").with(
                "run",
                "echo $BATON_STEP_ID $BATON_ATTEMPT $BATON_IDEMPOTENCY_KEY; echo oops >&2; exit 3",
            ))
            .build();
        engine.register_workflow(def, "test").await.unwrap();
        let run = engine.start("env", Map::new(), None).await.unwrap();
        let rec = settle(&engine, &run).await;
        let out = &rec.steps[0].output;
        assert_eq!(out["exit_code"], json!(3));
        assert_eq!(out["stdout"], json!(format!("show 1 {run}/show/1\n")));
        assert_eq!(out["stderr"], json!("oops\n"));
        assert!(rec.steps[0]
            .error
            .as_deref()
            .unwrap()
            .contains("exit code 3: oops"));
        assert!(dir.path().join("workspaces").join(&run).is_dir());
    }
}

on_both_stores! {
    async fn waits_signals_early_signals_and_timeouts(backend) {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine(dir.path(), &backend).await;
        let def = Definition::builder("gated")
            .step(StepDef::action("pre", "shell").with("run", "sleep 0.3"))
            .step(StepDef::wait("gate", "go").timeout(Duration::from_secs(3600)))
            .step(StepDef::action("post", "noop"))
            .build();
        engine.register_workflow(def, "test").await.unwrap();

        // Waits, holds no actor, wakes on its signal.
        let run = engine.start("gated", Map::new(), None).await.unwrap();
        let rec = settle(&engine, &run).await;
        assert_eq!(rec.status, RunStatus::Waiting);
        assert_eq!(rec.waiting_for.as_ref().unwrap().kind, WaitKind::Signal);
        for _ in 0..50 {
            if engine.live_runs().await == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(engine.live_runs().await, 0, "a waiting run holds no actor");
        let err = engine.approve(&run, "x").await.map(|_| ());
        assert!(err.is_ok(), "approve satisfies the current wait: {err:?}");
        assert_eq!(settle(&engine, &run).await.status, RunStatus::Completed);

        // A signal sent before the wait is kept and consumed there.
        let run = engine.start("gated", Map::new(), None).await.unwrap();
        engine
            .signal(&run, "go", json!({"by": "ci"}))
            .await
            .unwrap();
        let rec = settle(&engine, &run).await;
        assert_eq!(rec.status, RunStatus::Completed);
        assert_eq!(rec.steps[1].output["data"], json!({"by": "ci"}));

        // A wait timeout, with skip.
        let def = Definition::builder("timeboxed")
            .step(
                StepDef::wait("gate", "go")
                    .timeout(Duration::from_millis(300))
                    .on_timeout(OnTimeout::Skip),
            )
            .step(StepDef::action("post", "noop"))
            .build();
        engine.register_workflow(def, "test").await.unwrap();
        let run = engine.start("timeboxed", Map::new(), None).await.unwrap();
        let rec = settle(&engine, &run).await;
        assert_eq!(rec.status, RunStatus::Waiting);
        let mut sub = engine.subscribe();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while engine.run(&run).unwrap().status != RunStatus::Completed {
            tokio::time::timeout_at(deadline, sub.next())
                .await
                .expect("the timer fires");
        }
        let rec = engine.run(&run).unwrap();
        assert_eq!(rec.steps[0].status, StepStatus::Skipped);
    }
}

on_both_stores! {
    async fn run_actor_panics_restart_from_the_store_then_fail_the_run(backend) {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine(dir.path(), &backend).await;
        let def = Definition::builder("fragile")
            .step(StepDef::action("a", "noop"))
            .step(StepDef::action("b", "noop"))
            .build();
        engine.register_workflow(def, "test").await.unwrap();
        // Two panics fit the budget of three: the run completes.
        engine.inject_run_actor_panics("fragile", 2);
        let run = engine.start("fragile", Map::new(), None).await.unwrap();
        let rec = settle(&engine, &run).await;
        assert_eq!(rec.status, RunStatus::Completed, "{:?}", rec.error_text);
        assert!(rec.steps.iter().all(|s| s.attempts == 1));
        // Ten do not: the run fails with the panic text.
        engine.inject_run_actor_panics("fragile", 10);
        let run = engine.start("fragile", Map::new(), None).await.unwrap();
        let rec = settle(&engine, &run).await;
        assert_eq!(rec.status, RunStatus::Failed);
        let text = rec.error_text.unwrap();
        assert!(
            text.contains("panicked 4 times") && text.contains("injected run actor panic"),
            "{text}"
        );
    }
}

on_both_stores! {
    async fn five_hundred_concurrent_runs_complete(backend) {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine(dir.path(), &backend).await;
        let def = Definition::builder("many")
            .step(StepDef::action("a", "noop"))
            .step(StepDef::action("b", "noop").set("done", "{{ true }}"))
            .build();
        engine.register_workflow(def, "test").await.unwrap();
        let mut handles = Vec::new();
        for _ in 0..500 {
            let engine = engine.clone();
            handles.push(tokio::spawn(async move {
                let run = engine.start("many", Map::new(), None).await.unwrap();
                settle(&engine, &run).await
            }));
        }
        for h in handles {
            let rec = h.await.unwrap();
            assert_eq!(rec.status, RunStatus::Completed);
            assert_eq!(rec.state["done"], json!(true));
        }
        assert_eq!(engine.runs(&Default::default()).unwrap().len(), 500);
    }
}

fn undo_workflow(log: &std::path::Path) -> Definition {
    let mut def = Definition::builder("undo").rollback_on_abort(baton_actors::RollbackMode::Hard);
    for id in ["a", "b", "c"] {
        let undo = json!({ "run": format!("echo undo-{id} >> {}", log.display()) });
        def = def.step(
            StepDef::action(id, "shell")
                .with("run", format!("echo do-{id} >> {}", log.display()))
                .compensate("shell", undo.as_object().cloned().unwrap()),
        );
    }
    def.step(StepDef::wait("gate", "go")).build()
}

on_both_stores! {
    async fn hard_soft_and_partial_rollback(backend) {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine(dir.path(), &backend).await;
        let log = dir.path().join("log");
        engine
            .register_workflow(undo_workflow(&log), "test")
            .await
            .unwrap();
        let read = || std::fs::read_to_string(&log).unwrap_or_default();

        let run = engine.start("undo", Map::new(), None).await.unwrap();
        assert_eq!(settle(&engine, &run).await.status, RunStatus::Waiting);
        engine
            .rollback(&run, RollbackRequest::Steps(2), "t")
            .await
            .unwrap();
        let rec = settle(&engine, &run).await;
        assert_eq!(
            rec.status,
            RunStatus::Waiting,
            "partial rollback resumes and reaches the wait again"
        );
        assert_eq!(read(), "do-a\ndo-b\ndo-c\nundo-c\nundo-b\ndo-b\ndo-c\n");

        std::fs::remove_file(&log).unwrap();
        engine
            .rollback(&run, RollbackRequest::Hard, "t")
            .await
            .unwrap();
        let rec = settle(&engine, &run).await;
        assert_eq!(rec.status, RunStatus::Cancelled);
        assert_eq!(read(), "undo-c\nundo-b\nundo-a\n");
        let err = engine.retry(&run, "t").await.unwrap_err().to_string();
        assert!(err.contains("nothing was changed"), "{err}");

        std::fs::remove_file(&log).unwrap();
        let run = engine.start("undo", Map::new(), None).await.unwrap();
        settle(&engine, &run).await;
        engine
            .rollback(&run, RollbackRequest::Soft, "t")
            .await
            .unwrap();
        let rec = settle(&engine, &run).await;
        assert_eq!(rec.status, RunStatus::Cancelled);
        assert_eq!(read(), "do-a\ndo-b\ndo-c\n", "soft keeps everything");
    }
}

on_both_stores! {
    async fn later_steps_and_compensations_see_the_outputs_of_shared_actions(backend) {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine(dir.path(), &backend).await;
        engine.share_outputs_of("record");
        engine.register_action("record", |ctx: ActionContext| async move {
            Ok(json!({ "made": ctx.params["made"] }))
        });
        engine.register_action("unshared", |_ctx: ActionContext| async move {
            Ok(json!({ "secret": "not shared" }))
        });
        // What a step saw, kept where the test can read it: the newest shared output first.
        let seen = Arc::new(std::sync::Mutex::new(Vec::<Vec<Value>>::new()));
        let kept = seen.clone();
        engine.register_action("look", move |ctx: ActionContext| {
            let kept = kept.clone();
            async move {
                kept.lock()
                    .unwrap()
                    .push(ctx.outputs_of("record").cloned().collect());
                assert!(ctx.shared_outputs.iter().all(|s| s.action == "record"));
                Ok(json!({}))
            }
        });
        let def = Definition::builder("shared")
            .step(StepDef::action("first", "record").with("made", "one"))
            .step(StepDef::action("other", "unshared"))
            .step(StepDef::action("second", "record").with("made", "two"))
            .step(StepDef::action("look", "look").compensate("look", Map::new()))
            .step(StepDef::wait("gate", "go"))
            .build();
        engine.register_workflow(def, "test").await.unwrap();
        let run = engine.start("shared", Map::new(), None).await.unwrap();
        assert_eq!(settle(&engine, &run).await.status, RunStatus::Waiting);
        engine
            .rollback(&run, RollbackRequest::Hard, "t")
            .await
            .unwrap();
        assert_eq!(settle(&engine, &run).await.status, RunStatus::Cancelled);
        let both = vec![json!({ "made": "two" }), json!({ "made": "one" })];
        assert_eq!(
            *seen.lock().unwrap(),
            [both.clone(), both],
            "the step, then its compensation"
        );
    }
}

on_both_stores! {
    async fn runs_survive_a_restart_and_corrupt_records_are_skipped(backend) {
        let dir = tempfile::tempdir().unwrap();
        let run = {
            let engine = engine(dir.path(), &backend).await;
            let def = Definition::builder("later")
                .step(StepDef::wait("gate", "go"))
                .step(StepDef::action("b", "noop"))
                .build();
            engine.register_workflow(def, "test").await.unwrap();
            let run = engine.start("later", Map::new(), None).await.unwrap();
            assert_eq!(settle(&engine, &run).await.status, RunStatus::Waiting);
            engine
                .store()
                .corrupt_head_for_test("run_00000000000000000000000")
                .unwrap();
            engine.shutdown().await.unwrap();
            run
        };
        let engine = engine(dir.path(), &backend).await;
        let report = engine.resume().await.unwrap();
        assert_eq!(report.waiting, 1);
        // The definition comes back from the store, not from this process.
        engine.signal(&run, "go", Value::Null).await.unwrap();
        assert_eq!(settle(&engine, &run).await.status, RunStatus::Completed);
        assert_eq!(
            engine.runs(&Default::default()).unwrap().len(),
            1,
            "the corrupt head is skipped"
        );
        let err = engine.run("run_nope").unwrap_err().to_string();
        assert!(err.contains("unknown run `run_nope`"), "{err}");
    }
}

on_both_stores! {
    async fn a_run_cut_off_between_heads_keeps_every_step_it_ran(backend) {
        // sled writes step records only with head snapshots: a run cut off between two heads
        // resumes from its events, and the steps it ran before the cut must still reach the
        // store with its next head, or a later load would show them unrun.
        let dir = tempfile::tempdir().unwrap();
        let def = Definition::builder("cut")
            .step(StepDef::action("a", "noop"))
            .step(StepDef::action("b", "noop"))
            .step(StepDef::action("c", "hold"))
            .step(StepDef::action("d", "noop"))
            .build();
        let run = {
            let engine = engine(dir.path(), &backend).await;
            // Never returns: the engine is shut down with the step running.
            engine.register_action("hold", |_ctx: ActionContext| async move {
                std::future::pending::<()>().await;
                Ok(json!({}))
            });
            engine.register_workflow(def, "test").await.unwrap();
            let run = engine.start("cut", Map::new(), None).await.unwrap();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while engine.run(&run).unwrap().steps[2].status != StepStatus::Running {
                assert!(tokio::time::Instant::now() < deadline, "step c never started");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            engine.shutdown().await.unwrap();
            run
        };
        {
            let engine = engine(dir.path(), &backend).await;
            engine.register_action("hold", |_ctx: ActionContext| async move {
                Ok(json!({ "held": true }))
            });
            engine.resume().await.unwrap();
            assert_eq!(settle(&engine, &run).await.status, RunStatus::Completed);
            engine.shutdown().await.unwrap();
        }
        // Read back by a third process, from the store alone.
        let engine = engine(dir.path(), &backend).await;
        engine.register_action("hold", |_ctx: ActionContext| async move { Ok(json!({})) });
        let rec = engine.run(&run).unwrap();
        let statuses: Vec<_> = rec.steps.iter().map(|s| (s.id.as_str(), s.status)).collect();
        assert_eq!(
            statuses,
            [
                ("a", StepStatus::Completed),
                ("b", StepStatus::Completed),
                ("c", StepStatus::Completed),
                ("d", StepStatus::Completed),
            ]
        );
        // c ran again after the cut, and its output is the second run's.
        assert_eq!(rec.steps[2].output, json!({ "held": true }));
        assert!(rec.steps.iter().all(|s| s.finished_at.is_some()));
        engine.shutdown().await.unwrap();
    }
}

on_both_stores! {
    async fn timers_survive_a_restart(backend) {
        let dir = tempfile::tempdir().unwrap();
        let def = Definition::builder("timed")
            .step(
                StepDef::wait("gate", "go")
                    .timeout(Duration::from_millis(800))
                    .on_timeout(OnTimeout::Skip),
            )
            .step(StepDef::action("after", "noop"))
            .build();
        let run = {
            let engine = engine(dir.path(), &backend).await;
            engine.register_workflow(def, "test").await.unwrap();
            let run = engine.start("timed", Map::new(), None).await.unwrap();
            assert_eq!(settle(&engine, &run).await.status, RunStatus::Waiting);
            engine.shutdown().await.unwrap();
            run
        };
        // The process is gone when the timer is due; the next one fires it.
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let engine = engine(dir.path(), &backend).await;
        let report = engine.resume().await.unwrap();
        assert_eq!(report.timers, 1);
        let mut sub = engine.subscribe();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while engine.run(&run).unwrap().status != RunStatus::Completed {
            tokio::time::timeout_at(deadline, sub.next())
                .await
                .expect("the stored timer fires");
        }
        assert_eq!(
            engine.run(&run).unwrap().steps[0].status,
            StepStatus::Skipped
        );
    }
}

on_both_stores! {
    async fn the_run_index_counts_and_pages_runs_as_their_status_changes(backend) {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine(dir.path(), &backend).await;
        let ok = Arc::new(AtomicU32::new(0));
        let flag = ok.clone();
        engine.register_action("gate", move |_ctx: ActionContext| {
            let flag = flag.clone();
            async move {
                if flag.load(Ordering::SeqCst) == 1 {
                    Ok(json!({}))
                } else {
                    Err(ActionError::fatal("not yet"))
                }
            }
        });
        let quick = Definition::builder("quick")
            .step(StepDef::action("a", "noop"))
            .build();
        let picky = Definition::builder("picky")
            .step(StepDef::action("g", "gate"))
            .build();
        engine.register_workflow(quick, "test").await.unwrap();
        engine.register_workflow(picky, "test").await.unwrap();
        let mut quick_runs = Vec::new();
        for _ in 0..5 {
            let id = engine.start("quick", Map::new(), None).await.unwrap();
            settle(&engine, &id).await;
            quick_runs.push(id);
        }
        let picky_run = engine.start("picky", Map::new(), None).await.unwrap();
        assert_eq!(settle(&engine, &picky_run).await.status, RunStatus::Failed);

        let count = |counts: &[(RunStatus, usize)], s: RunStatus| {
            counts
                .iter()
                .find(|(st, _)| *st == s)
                .map(|(_, n)| *n)
                .unwrap()
        };
        let counts = engine.run_counts(None).unwrap();
        assert_eq!(count(&counts, RunStatus::Completed), 5);
        assert_eq!(count(&counts, RunStatus::Failed), 1);
        let counts = engine.run_counts(Some("picky")).unwrap();
        assert_eq!(count(&counts, RunStatus::Completed), 0);
        assert_eq!(count(&counts, RunStatus::Failed), 1);

        let all = baton_actors::RunFilter::default();
        let (page, total) = engine.runs_page(&all, 1, 2).unwrap();
        assert_eq!(total, 6);
        let ids: Vec<_> = page.iter().map(|r| r.id.clone()).collect();
        assert_eq!(
            ids,
            [quick_runs[4].clone(), quick_runs[3].clone()],
            "newest first"
        );
        let failed = baton_actors::RunFilter {
            status: Some(RunStatus::Failed),
            workflow: None,
        };
        let (page, total) = engine.runs_page(&failed, 0, 50).unwrap();
        assert_eq!((page.len(), total), (1, 1));
        assert_eq!(page[0].id, picky_run);

        // Retried to completion: the index moves it.
        ok.store(1, Ordering::SeqCst);
        engine.retry(&picky_run, "test").await.unwrap();
        assert_eq!(
            settle(&engine, &picky_run).await.status,
            RunStatus::Completed
        );
        let (page, total) = engine.runs_page(&failed, 0, 50).unwrap();
        assert_eq!((page.len(), total), (0, 0));
        let counts = engine.run_counts(None).unwrap();
        assert_eq!(count(&counts, RunStatus::Completed), 6);
        let both = baton_actors::RunFilter {
            status: Some(RunStatus::Completed),
            workflow: Some("picky".into()),
        };
        let (page, total) = engine.runs_page(&both, 0, 50).unwrap();
        assert_eq!((page.len(), total), (1, 1));
    }
}

on_both_stores! {
    async fn run_tags_list_a_tag_s_runs_newest_first_and_outlive_a_restart(backend) {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine(dir.path(), &backend).await;
        let def = Definition::builder("tagged")
            .step(StepDef::wait("gate", "approve"))
            .build();
        engine.register_workflow(def, "test").await.unwrap();
        let first = engine.start("tagged", Map::new(), None).await.unwrap();
        let second = engine.start("tagged", Map::new(), None).await.unwrap();
        engine.tag_run("chat:1", &first).await.unwrap();
        engine.tag_run("chat:1", &second).await.unwrap();
        engine.tag_run("chat:1", &second).await.unwrap();
        engine.tag_run("chat:10", &first).await.unwrap();
        assert_eq!(
            engine.tagged_runs("chat:1").unwrap(),
            [second.clone(), first.clone()]
        );
        // A tag is not a prefix of another.
        assert_eq!(
            engine.tagged_runs("chat:10").unwrap(),
            std::slice::from_ref(&first)
        );
        assert!(engine.tagged_runs("chat:2").unwrap().is_empty());
        let err = engine.tag_run("chat:1", "run_nope").await.unwrap_err();
        assert!(matches!(err, baton_actors::Error::UnknownRun(_)), "{err}");
        assert!(engine.tag_run("", &first).await.is_err());
        assert!(engine.tag_run("a\0b", &first).await.is_err());
        engine.shutdown().await.unwrap();
        drop(engine);
        let engine = super::engine(dir.path(), &backend).await;
        assert_eq!(engine.tagged_runs("chat:1").unwrap(), [second, first]);
        engine.shutdown().await.unwrap();
    }
}

on_both_stores! {
    async fn runs_are_found_by_issue_repository_and_id_through_the_index(backend) {
        use baton_actors::{Job, RunFilter, RunSearch};
        let dir = tempfile::tempdir().unwrap();
        let engine = engine(dir.path(), &backend).await;
        let ok = Arc::new(AtomicU32::new(0));
        let flag = ok.clone();
        engine.register_action("gate", move |_ctx: ActionContext| {
            let flag = flag.clone();
            async move {
                if flag.load(Ordering::SeqCst) == 1 {
                    Ok(json!({}))
                } else {
                    Err(ActionError::fatal("not yet"))
                }
            }
        });
        for (id, action) in [("quick", "noop"), ("picky", "gate")] {
            let def = Definition::builder(id)
                .step(StepDef::action("a", action))
                .build();
            engine.register_workflow(def, "test").await.unwrap();
        }
        let start = |wf: &'static str, inp: Value, job: Option<Job>| {
            let engine = engine.clone();
            async move {
                let id = engine.start(wf, input(inp), job).await.unwrap();
                settle(&engine, &id).await;
                id
            }
        };
        let a7 = start("quick", json!({"repo": "Octo/App", "issue": 7}), None).await;
        let b7 = start("quick", json!({"repo": "octo/other", "issue": 7}), None).await;
        let a8 = start("quick", json!({"repo": "octo/app", "pr": 8}), None).await;
        // A webhook job names the issue even though the input does not.
        let job = Job {
            id: "github:d1".into(),
            source: "github".into(),
            data: json!({"repo": "octo/app", "subject": {"kind": "issue", "number": 7}}),
            ..Default::default()
        };
        let a7_failed = start("picky", json!({}), Some(job)).await;
        let none = start("quick", json!({}), None).await;

        let ids = |runs: Vec<baton_actors::RunRecord>| -> Vec<String> {
            runs.into_iter().map(|r| r.id).collect()
        };
        assert_eq!(
            ids(engine.runs_about(&Subject::issue("OCTO/app", 7)).unwrap()),
            [a7_failed.clone(), a7.clone()],
            "newest first, names without case"
        );
        assert_eq!(
            ids(engine.runs_about(&Subject::issue("octo/app", 8)).unwrap()),
            vec![a8.clone()]
        );
        assert!(engine.runs_about(&Subject::issue("octo/app", 9)).unwrap().is_empty());

        let all = RunFilter::default();
        let found = engine
            .search_runs(&RunSearch::parse("octo/app"), &all, 0, 50)
            .unwrap();
        assert_eq!(found.matching, 3);
        assert_eq!(ids(found.runs), [a7_failed.clone(), a8.clone(), a7.clone()]);
        let count = |counts: &[(RunStatus, usize)], s: RunStatus| {
            counts.iter().find(|(st, _)| *st == s).unwrap().1
        };
        assert_eq!(count(&found.counts, RunStatus::Completed), 2);
        assert_eq!(count(&found.counts, RunStatus::Failed), 1);

        // The status filter narrows the page; the counts stay those of the search.
        let failed = RunFilter {
            status: Some(RunStatus::Failed),
            workflow: None,
        };
        let found = engine
            .search_runs(&RunSearch::parse("octo/app#7"), &failed, 0, 50)
            .unwrap();
        assert_eq!(
            (found.matching, ids(found.runs)),
            (1, vec![a7_failed.clone()])
        );
        assert_eq!(count(&found.counts, RunStatus::Completed), 1);
        let quick_only = RunFilter {
            status: None,
            workflow: Some("quick".into()),
        };
        let found = engine
            .search_runs(&RunSearch::parse("octo/app#7"), &quick_only, 0, 50)
            .unwrap();
        assert_eq!(ids(found.runs), vec![a7.clone()]);

        // Paging, and a run id prefix.
        let found = engine
            .search_runs(&RunSearch::parse("octo/app"), &all, 1, 1)
            .unwrap();
        assert_eq!((found.matching, ids(found.runs)), (3, vec![a8.clone()]));
        let found = engine
            .search_runs(&RunSearch::parse(&none[..none.len() - 3]), &all, 0, 50)
            .unwrap();
        assert_eq!(ids(found.runs), vec![none.clone()]);
        let found = engine
            .search_runs(&RunSearch::parse("octo/nothing"), &all, 0, 50)
            .unwrap();
        assert_eq!(found.matching, 0);
        assert!(!ids(engine
            .search_runs(&RunSearch::parse("octo/other#7"), &all, 0, 5)
            .unwrap()
            .runs)
        .contains(&a7));
        assert_eq!(
            ids(engine.runs_about(&Subject::issue("octo/other", 7)).unwrap()),
            vec![b7.clone()]
        );

        // A status change moves the run in what a search counts and filters.
        ok.store(1, Ordering::SeqCst);
        engine.retry(&a7_failed, "test").await.unwrap();
        assert_eq!(
            settle(&engine, &a7_failed).await.status,
            RunStatus::Completed
        );
        let found = engine
            .search_runs(&RunSearch::parse("octo/app#7"), &failed, 0, 50)
            .unwrap();
        assert_eq!(found.matching, 0);
        assert_eq!(count(&found.counts, RunStatus::Completed), 2);
        let runs = engine.runs_about(&Subject::issue("octo/app", 7)).unwrap();
        assert!(runs.iter().all(|r| r.status == RunStatus::Completed));
    }
}

on_both_stores! {
    async fn deleting_runs_leaves_nothing_that_finds_them(backend) {
        use baton_actors::{RunFilter, RunSearch};
        let dir = tempfile::tempdir().unwrap();
        let engine = engine(dir.path(), &backend).await;
        let def = Definition::builder("about")
            .step(StepDef::action("a", "noop"))
            .build();
        engine.register_workflow(def, "test").await.unwrap();
        let about = |n: u64| input(json!({ "repo": "octo/app", "issue": n }));
        let old = engine.start("about", about(7), None).await.unwrap();
        let kept = engine.start("about", about(8), None).await.unwrap();
        settle(&engine, &old).await;
        settle(&engine, &kept).await;
        engine.tag_run("chat:1", &old).await.unwrap();
        engine.tag_run("chat:1", &kept).await.unwrap();

        let deleted = engine
            .delete_runs(std::slice::from_ref(&old), 10)
            .await
            .unwrap();
        assert_eq!(deleted, std::slice::from_ref(&old));

        assert!(engine.runs_about(&Subject::issue("octo/app", 7)).unwrap().is_empty());
        assert_eq!(engine.runs_about(&Subject::issue("octo/app", 8)).unwrap().len(), 1);
        assert_eq!(
            engine.tagged_runs("chat:1").unwrap(),
            std::slice::from_ref(&kept)
        );
        let all = RunFilter::default();
        let repo = engine
            .search_runs(&RunSearch::parse("octo/app"), &all, 0, 50)
            .unwrap();
        assert_eq!(repo.matching, 1, "a deleted run is still counted");
        assert_eq!(repo.runs.len(), 1);
        let by_id = engine
            .search_runs(&RunSearch::parse(&old), &all, 0, 50)
            .unwrap();
        assert_eq!(by_id.matching, 0);
        let (page, total) = engine.runs_page(&all, 0, 50).unwrap();
        assert_eq!((page.len(), total), (1, 1));
        engine.shutdown().await.unwrap();
    }
}

on_both_stores! {
    async fn nul_in_a_step_s_output_and_a_reverted_definition_are_stored(backend) {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine(dir.path(), &backend).await;
        let def = |script: &str| {
            Definition::builder("edited")
                .step(StepDef::action("out", "shell").with("run", script))
                .build()
        };
        // `find -print0`, `git ls-files -z`: NUL in a step's output.
        engine
            .register_workflow(def("printf 'a\\0b'"), "test")
            .await
            .unwrap();
        let run = engine.start("edited", Map::new(), None).await.unwrap();
        let rec = settle(&engine, &run).await;
        assert_eq!(rec.status, RunStatus::Completed, "{:?}", rec.error_text);
        let out = rec.steps[0].output["stdout"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(out.starts_with('a') && out.ends_with('b'), "{out:?}");

        // A definition edited, then edited back: the first is the latest again.
        for script in ["echo one", "echo two", "echo one"] {
            engine.register_workflow(def(script), "test").await.unwrap();
        }
        let run = engine.start("edited", Map::new(), None).await.unwrap();
        let rec = settle(&engine, &run).await;
        assert_eq!(rec.steps[0].output["stdout"], json!("one\n"));
        engine.shutdown().await.unwrap();
        drop(engine);
        let engine = super::engine(dir.path(), &backend).await;
        let wf = engine.workflow("edited").unwrap();
        assert!(format!("{:?}", wf.def).contains("echo one"), "{:?}", wf.def);
        engine.shutdown().await.unwrap();
    }
}

fn count_of(engine: &Engine, workflow: Option<&str>, status: RunStatus) -> usize {
    engine
        .run_counts(workflow)
        .unwrap()
        .iter()
        .find(|(s, _)| *s == status)
        .map_or(0, |(_, n)| *n)
}

// The index holds each run under its one status as it parks, wakes, completes, and after a
// restart (where the first status change rewrites every entry of a run read back).
on_both_stores! {
    async fn the_run_index_moves_parked_and_woken_runs_and_after_a_restart(backend) {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine(dir.path(), &backend).await;
        let def = Definition::builder("gated")
            .step(StepDef::action("a", "noop"))
            .step(StepDef::wait("gate", "go"))
            .step(StepDef::action("b", "noop"))
            .build();
        engine.register_workflow(def, "test").await.unwrap();
        let mut runs = Vec::new();
        for _ in 0..3 {
            let id = engine.start("gated", Map::new(), None).await.unwrap();
            assert_eq!(settle(&engine, &id).await.status, RunStatus::Waiting);
            runs.push(id);
        }
        let exact = |engine: &Engine, waiting: usize, completed: usize| {
            for (status, n) in [
                (RunStatus::Pending, 0),
                (RunStatus::Running, 0),
                (RunStatus::Waiting, waiting),
                (RunStatus::Completed, completed),
                (RunStatus::Failed, 0),
                (RunStatus::Cancelled, 0),
            ] {
                assert_eq!(count_of(engine, None, status), n, "{status}");
                assert_eq!(
                    count_of(engine, Some("gated"), status),
                    n,
                    "{status} of gated"
                );
                let filter = baton_actors::RunFilter {
                    status: Some(status),
                    workflow: None,
                };
                assert_eq!(
                    engine.runs_page(&filter, 0, 50).unwrap().1,
                    n,
                    "{status} page"
                );
            }
        };
        exact(&engine, 3, 0);
        engine.signal(&runs[0], "go", Value::Null).await.unwrap();
        assert_eq!(settle(&engine, &runs[0]).await.status, RunStatus::Completed);
        exact(&engine, 2, 1);

        engine.shutdown().await.unwrap();
        drop(engine);
        let engine = super::engine(dir.path(), &backend).await;
        engine.resume().await.unwrap();
        exact(&engine, 2, 1);
        engine.signal(&runs[1], "go", Value::Null).await.unwrap();
        assert_eq!(settle(&engine, &runs[1]).await.status, RunStatus::Completed);
        exact(&engine, 1, 2);
        engine.shutdown().await.unwrap();
    }
}

// Starts of one job wait for each other (one run); starts of different jobs, each its own.
on_both_stores! {
    async fn a_job_started_twice_at_once_makes_one_run_and_other_jobs_their_own(backend) {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine(dir.path(), &backend).await;
        let def = Definition::builder("quick")
            .step(StepDef::action("a", "noop"))
            .build();
        engine.register_workflow(def, "test").await.unwrap();
        let job = |id: &str| baton_actors::Job {
            id: id.to_string(),
            source: "test".into(),
            ..Default::default()
        };
        let mut tasks = Vec::new();
        for i in 0..40 {
            // Jobs 0..20 twice each, at once.
            let engine = engine.clone();
            let job = job(&format!("test:{}", i % 20));
            tasks.push(tokio::spawn(async move {
                engine.start_job("quick", Map::new(), Some(job)).await
            }));
        }
        let mut by_job: std::collections::HashMap<usize, Vec<(String, bool)>> = Default::default();
        for (i, task) in tasks.into_iter().enumerate() {
            by_job
                .entry(i % 20)
                .or_default()
                .push(task.await.unwrap().unwrap());
        }
        let mut all_runs = std::collections::HashSet::new();
        for (job, starts) in &by_job {
            assert_eq!(starts.len(), 2);
            assert_eq!(starts[0].0, starts[1].0, "job {job}: one run");
            assert_eq!(
                starts.iter().filter(|(_, created)| *created).count(),
                1,
                "job {job}: created once"
            );
            all_runs.insert(starts[0].0.clone());
        }
        assert_eq!(all_runs.len(), 20, "each job its own run");
        for run in &all_runs {
            assert_eq!(settle(&engine, run).await.status, RunStatus::Completed);
        }
        assert_eq!(count_of(&engine, None, RunStatus::Completed), 20);
        engine.shutdown().await.unwrap();
    }
}

// Many callers of `settled` at once, each on its own run or on the same one: each gets its
// run as it settled, whether it settled before the call or after.
on_both_stores! {
    async fn settled_answers_every_waiter_with_its_own_run(backend) {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine(dir.path(), &backend).await;
        let quick = Definition::builder("quick")
            .step(StepDef::action("a", "noop"))
            .step(StepDef::action("b", "noop"))
            .build();
        let gated = Definition::builder("gated")
            .step(StepDef::wait("gate", "go"))
            .build();
        engine.register_workflow(quick, "test").await.unwrap();
        engine.register_workflow(gated, "test").await.unwrap();
        let mut waiters = Vec::new();
        for i in 0..30 {
            let engine = engine.clone();
            waiters.push(tokio::spawn(async move {
                let run = engine.start("quick", Map::new(), None).await.unwrap();
                // Two callers on the same run, one of them late.
                let first = settle(&engine, &run).await;
                if i % 3 == 0 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                let second = settle(&engine, &run).await;
                (run, first, second)
            }));
        }
        for w in waiters {
            let (run, first, second) = w.await.unwrap();
            for rec in [first, second] {
                assert_eq!(rec.id, run);
                assert_eq!(rec.status, RunStatus::Completed);
                assert!(rec.steps.iter().all(|s| s.status == StepStatus::Completed));
            }
        }
        // A run that parks settles as waiting; signalled, it settles again, completed.
        let run = engine.start("gated", Map::new(), None).await.unwrap();
        let waiter = {
            let (engine, run) = (engine.clone(), run.clone());
            tokio::spawn(async move { settle(&engine, &run).await })
        };
        assert_eq!(waiter.await.unwrap().status, RunStatus::Waiting);
        let waiter = {
            let (engine, run) = (engine.clone(), run.clone());
            tokio::spawn(async move {
                let rec = settle(&engine, &run).await;
                assert_eq!(rec.status, RunStatus::Waiting);
                // The next settle after the signal.
                engine.signal(&run, "go", Value::Null).await.unwrap();
                settle(&engine, &run).await
            })
        };
        assert_eq!(waiter.await.unwrap().status, RunStatus::Completed);
        engine.shutdown().await.unwrap();
    }
}

on_both_stores! {
    async fn built_ins_cannot_be_replaced_and_each_definition_says_how_it_came_in(backend) {
        use baton_actors::{Interface, Provenance};
        let dir = tempfile::tempdir().unwrap();
        let engine = engine(dir.path(), &backend).await;
        let shipped = |text: &str| {
            Definition::builder("review")
                .step(StepDef::action("say", "log").with("message", text))
                .build()
        };
        engine
            .register_workflow_from(shipped("built in"), Provenance::now(Interface::Builtin, "built-in"))
            .await
            .unwrap();
        assert!(engine.is_builtin("review"));
        // Through every other interface, the same id is refused, naming it: the built-in stays.
        for via in [Interface::Api, Interface::File, Interface::Program] {
            let err = engine
                .register_workflow_from(
                    shipped("replaced"),
                    Provenance::now(via, "evil.toml").from_client("127.0.0.1:9"),
                )
                .await
                .unwrap_err();
            assert!(err.is_usage(), "{err}");
            let text = err.to_string();
            assert!(
                text.starts_with("evil.toml: workflow id `review` is a built-in workflow's"),
                "{text}"
            );
        }
        let latest = engine.workflow("review").unwrap();
        assert_eq!(latest.steps()[0].with["message"], json!("built in"));
        assert_eq!(latest.provenance.as_ref().unwrap().via, Interface::Builtin);
        // A new built-in version is fine.
        engine
            .register_workflow_from(shipped("built in, v2"), Provenance::now(Interface::Builtin, "built-in"))
            .await
            .unwrap();

        let own = Definition::builder("mine")
            .step(StepDef::action("say", "log").with("message", "hi"))
            .build();
        let before = baton_actors::now_ms();
        engine
            .register_workflow_from(
                own.clone(),
                Provenance::now(Interface::Api, "mine.toml").from_client("10.1.2.3:4567"),
            )
            .await
            .unwrap();
        // The same content again, through another interface: nothing changes.
        engine
            .register_workflow_from(own.clone(), Provenance::now(Interface::File, "/etc/mine.toml"))
            .await
            .unwrap();
        let shown = |engine: &Engine, id: &str| -> Provenance {
            engine
                .workflows()
                .unwrap()
                .iter()
                .find(|w| w.id() == id)
                .unwrap_or_else(|| panic!("{id} is listed"))
                .provenance
                .clone()
                .unwrap_or_else(|| panic!("{id} has its provenance"))
        };
        let mine = shown(&engine, "mine");
        assert_eq!(mine.via, Interface::Api);
        assert_eq!(mine.client.as_deref(), Some("10.1.2.3:4567"));
        assert_eq!(mine.origin, "mine.toml");
        assert!(mine.at >= before, "{mine:?}");
        assert_eq!(mine.to_string(), "api from 10.1.2.3:4567 (mine.toml)");

        // Kept in the store: a restarted engine lists the same, before anything registers.
        engine.shutdown().await.unwrap();
        drop(engine);
        let engine = super::engine(dir.path(), &backend).await;
        assert_eq!(shown(&engine, "mine"), mine);
        assert_eq!(shown(&engine, "review").via, Interface::Builtin);
        // Not registered as a built-in in this process (the app registers its built-ins at
        // every start, before it serves): the id is not reserved here.
        assert!(!engine.is_builtin("review"));
        // New content is a new registration.
        let changed = Definition::builder("mine")
            .step(StepDef::action("say", "log").with("message", "changed"))
            .build();
        engine
            .register_workflow_from(changed, Provenance::now(Interface::File, "/etc/mine.toml"))
            .await
            .unwrap();
        let now = shown(&engine, "mine");
        assert_eq!((now.via, now.client, now.origin.as_str()), (Interface::File, None, "/etc/mine.toml"));
        engine.shutdown().await.unwrap();
    }
}

on_both_stores! {
    async fn runs_are_listed_by_the_outcome_they_ended_with(backend) {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine(dir.path(), &backend).await;
        engine.register_action("judge", |ctx: ActionContext| async move {
            Ok(json!({ "outcome": ctx.params["outcome"].clone() }))
        });
        let def = Definition::builder("judged")
            .required_input("outcome")
            .step(
                StepDef::action("judge", "judge")
                    .with("outcome", "{{ input.outcome }}")
                    .set("outcome", "{{ steps.judge.output.outcome }}"),
            )
            .build();
        engine.register_workflow(def, "test").await.unwrap();
        let mut runs = Vec::new();
        for outcome in ["verified", "unverified", "verified", "Not A Word"] {
            let run = engine
                .start("judged", input(json!({ "outcome": outcome })), None)
                .await
                .unwrap();
            assert_eq!(settle(&engine, &run).await.status, RunStatus::Completed);
            runs.push(run);
        }
        assert_eq!(
            engine.runs_with_outcome("verified").unwrap(),
            [runs[2].clone(), runs[0].clone()]
        );
        assert_eq!(
            engine.runs_with_outcome("unverified").unwrap(),
            std::slice::from_ref(&runs[1])
        );
        // Only a plain word is an outcome the index keeps.
        assert!(engine.runs_with_outcome("Not A Word").unwrap().is_empty());
        assert!(engine.runs_with_outcome("no_checks").unwrap().is_empty());
        // The index outlives a restart.
        engine.shutdown().await.unwrap();
        drop(engine);
        let reopened = self::engine(dir.path(), &backend).await;
        assert_eq!(reopened.runs_with_outcome("unverified").unwrap().len(), 1);
        reopened.shutdown().await.unwrap();
    }
}

on_both_stores! {
    async fn runs_know_what_they_are_about_and_the_index_finds_them_in_flight(backend) {
        use baton_actors::Job;
        let dir = tempfile::tempdir().unwrap();
        let engine = engine(dir.path(), &backend).await;
        for id in ["held", "other"] {
            let def = Definition::builder(id)
                .step(StepDef::wait("gate", "go").timeout(Duration::from_secs(3600)))
                .build();
            engine.register_workflow(def, "test").await.unwrap();
        }
        // A bare job number names a pull request for this workflow, an issue for others.
        engine.set_subject_kind("other", SubjectKind::PullRequest);
        let waiting = |engine: Engine, wf: &'static str, inp: Value, job: Option<Job>| async move {
            let id = engine.start(wf, input(inp), job).await.unwrap();
            let rec = engine.settled(&id).await.unwrap();
            assert_eq!(rec.status, RunStatus::Waiting);
            (id, rec)
        };
        let (issue, rec) = waiting(
            engine.clone(),
            "held",
            json!({"repo": "Octo/App", "issue": "#7"}),
            None,
        )
        .await;
        assert_eq!(rec.subject, Some(Subject::issue("Octo/App", 7)));
        assert_eq!(rec.subject.as_ref().unwrap().to_string(), "Octo/App#7");
        let job = |id: &str, data: Value| Job {
            id: id.into(),
            source: "github".into(),
            data,
            ..Default::default()
        };
        let (by_job, rec) = waiting(
            engine.clone(),
            "other",
            json!({}),
            Some(job("github:d1", json!({"repo": "octo/app", "number": 7}))),
        )
        .await;
        assert_eq!(rec.subject, Some(Subject::pull_request("octo/app", 7)));
        let (_, rec) = waiting(
            engine.clone(),
            "held",
            json!({}),
            Some(job(
                "github:d2",
                json!({"repo": "octo/lib", "subject": {"kind": "pull_request", "number": 3}}),
            )),
        )
        .await;
        assert_eq!(rec.subject, Some(Subject::pull_request("octo/lib", 3)));
        assert_eq!(engine.head(&rec.id).unwrap().subject, rec.subject);
        assert_eq!(engine.run(&rec.id).unwrap().subject, rec.subject);

        // In flight: the newest unfinished run of the workflow about the issue.
        let in_flight = |wf: &str, s: Subject| {
            engine.in_flight(wf, &s).unwrap().map(|r| r.id)
        };
        assert_eq!(in_flight("held", Subject::issue("octo/app", 7)), Some(issue.clone()));
        assert_eq!(in_flight("other", Subject::issue("OCTO/APP", 7)), Some(by_job.clone()));
        assert_eq!(in_flight("held", Subject::issue("octo/app", 8)), None);
        assert_eq!(in_flight("held", Subject::issue("octo/other", 7)), None);
        assert_eq!(in_flight("nothing", Subject::issue("octo/app", 7)), None);

        // About a repository: every run about it, newest first.
        let about = |s: Subject| -> Vec<String> {
            engine.runs_about(&s).unwrap().into_iter().map(|r| r.id).collect()
        };
        assert_eq!(about(Subject::repository("octo/APP")), [by_job.clone(), issue.clone()]);
        assert_eq!(about(Subject::issue("octo/app", 7)), [by_job.clone(), issue.clone()]);
        assert!(about(Subject::repository("octo/none")).is_empty());

        // A finished run is no longer in flight, and is still about its issue.
        engine.cancel(&issue, "test").await.unwrap();
        let done = settle(&engine, &issue).await;
        assert!(done.status.is_terminal());
        assert_eq!(done.subject, Some(Subject::issue("Octo/App", 7)));
        assert_eq!(in_flight("held", Subject::issue("octo/app", 7)), None);
        assert_eq!(in_flight("other", Subject::issue("octo/app", 7)), Some(by_job.clone()));
        assert_eq!(about(Subject::issue("octo/app", 7)).len(), 2);
    }
}
