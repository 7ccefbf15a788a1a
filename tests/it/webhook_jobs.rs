//! The daemon's `JobSink` over a real engine: a start job becomes a run with the job
//! `github:<delivery>` and the inputs its workflow declares; a redelivery is a duplicate; a
//! `/baton approve` on the same issue steers the newest run for it, by `<sender> (github)`;
//! a command about another issue finds no run.

use baton::forge::Repo;
use baton::triggers::{Command, Job, JobAction, Subject};
use baton::web::jobs::EngineJobs;
use baton::web::webhook::{DispatchOutcome, JobError, JobSink};
use baton_actors::{Definition, Engine, EngineConfig, RunStatus};

const GATED: &str = r#"
id = "gated"

[input]
repo = { required = true }
issue = { required = true }

[[steps]]
id = "hello"
action = "log"
with = { message = "{{ input.repo }}#{{ input.issue }}" }

[[steps]]
id = "gate"
wait = { signal = "approve", timeout = "1h", on_timeout = "fail" }
"#;

fn job(delivery: &str, number: u64, action: JobAction) -> Job {
    Job {
        delivery_id: delivery.into(),
        event: "issues.labeled".into(),
        sender: "alice".into(),
        repo: Repo::parse("acme/widgets").unwrap(),
        subject: Subject::Issue { number },
        action,
        identity: None,
    }
}

fn start(workflow: &str) -> JobAction {
    JobAction::Start {
        workflow: workflow.into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_start_and_steer_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let engine = Engine::open(&tmp.path().join("data"), EngineConfig::default())
        .await
        .unwrap();
    // `gated` comes from workflow_dirs on first use; `plain` is registered and declares no input.
    let workflows = tmp.path().join("workflows");
    std::fs::create_dir_all(&workflows).unwrap();
    std::fs::write(workflows.join("gated.toml"), GATED).unwrap();
    let plain = Definition::from_toml(
        "id = \"plain\"\n[[steps]]\nid = \"s\"\naction = \"noop\"\n",
        "plain.toml",
    )
    .unwrap();
    engine.register_workflow(plain, "test").await.unwrap();
    let sink = EngineJobs::new(engine.clone(), vec![workflows]);

    // A start: one run, the job recorded under the delivery id, the declared inputs.
    assert!(!sink.seen_delivery("d-1").await.unwrap());
    let DispatchOutcome::Started { run_id } =
        sink.dispatch(job("d-1", 7, start("gated"))).await.unwrap()
    else {
        panic!("not started")
    };
    assert!(sink.seen_delivery("d-1").await.unwrap());
    let stored = engine.job("github:d-1").unwrap().unwrap();
    assert_eq!(stored.source, "github");
    assert_eq!(stored.sender, "alice");
    assert_eq!(stored.event, "issues.labeled");
    assert_eq!(stored.run_id.as_deref(), Some(run_id.as_str()));
    assert_eq!(stored.data["repo"], "acme/widgets");
    assert_eq!(stored.data["subject"]["number"], 7);
    let run = engine.settled(&run_id).await.unwrap();
    assert_eq!(run.status, RunStatus::Waiting);
    assert_eq!(run.input["repo"], "acme/widgets");
    assert_eq!(run.input["issue"], 7);

    // A redelivery starts nothing.
    assert_eq!(
        sink.dispatch(job("d-1", 7, start("gated"))).await.unwrap(),
        DispatchOutcome::Duplicate
    );

    // Another start for issue 7 while its run is in flight starts nothing, and says why; so
    // does one for an issue whose run was started another way (the CLI: no webhook job),
    // whatever the case of the repository's name.
    let again = sink.dispatch(job("d-1b", 7, start("gated"))).await.unwrap();
    let DispatchOutcome::NoRun { reason } = again else {
        panic!("a second run started: {again:?}")
    };
    assert!(
        reason.contains(&run_id) && reason.contains("in flight"),
        "{reason}"
    );
    let by_cli = engine
        .start(
            "gated",
            serde_json::json!({"repo": "Acme/Widgets", "issue": 11})
                .as_object()
                .cloned()
                .unwrap(),
            None,
        )
        .await
        .unwrap();
    engine.settled(&by_cli).await.unwrap();
    let again = sink
        .dispatch(job("d-1c", 11, start("gated")))
        .await
        .unwrap();
    let DispatchOutcome::NoRun { reason } = again else {
        panic!("a second run started: {again:?}")
    };
    assert!(reason.contains(&by_cli), "{reason}");
    // A comment command steers only runs a webhook started.
    assert!(matches!(
        sink.dispatch(job(
            "d-1d",
            11,
            JobAction::Steer {
                command: Command::Approve
            }
        ))
        .await
        .unwrap(),
        DispatchOutcome::NoRun { .. }
    ));

    // A workflow that declares no inputs still starts, with every input that applies.
    let DispatchOutcome::Started { run_id: other } =
        sink.dispatch(job("d-2", 8, start("plain"))).await.unwrap()
    else {
        panic!("not started")
    };
    let plain_run = engine.settled(&other).await.unwrap();
    assert_eq!(plain_run.status, RunStatus::Completed);
    assert_eq!(plain_run.input["issue"], 8);

    // `/baton approve` on issue 7 reaches the run for issue 7, once.
    let approve = JobAction::Steer {
        command: Command::Approve,
    };
    assert_eq!(
        sink.dispatch(job("d-3", 7, approve.clone())).await.unwrap(),
        DispatchOutcome::Steered {
            run_id: run_id.clone()
        }
    );
    let run = engine.settled(&run_id).await.unwrap();
    assert_eq!(run.status, RunStatus::Completed);
    let approved_by = engine.events(&run_id, 0).unwrap().iter().any(|e| {
        serde_json::to_string(&e.kind)
            .unwrap()
            .contains("alice (github)")
    });
    assert!(approved_by, "the approval names the sender");
    assert!(sink.seen_delivery("d-3").await.unwrap());
    assert_eq!(
        sink.dispatch(job("d-3", 7, approve.clone())).await.unwrap(),
        DispatchOutcome::Duplicate
    );

    // A command about an issue without a run, or one the run's state refuses, runs nothing.
    assert!(matches!(
        sink.dispatch(job("d-4", 99, approve.clone()))
            .await
            .unwrap(),
        DispatchOutcome::NoRun { .. }
    ));
    assert!(matches!(
        sink.dispatch(job("d-5", 7, approve)).await.unwrap(),
        DispatchOutcome::NoRun { .. }
    ));

    // A trigger naming an unknown workflow is an error that names it.
    let err = sink
        .dispatch(job("d-6", 7, start("missing")))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, JobError::UnknownWorkflow(id) if id == "missing"),
        "{err}"
    );
    assert!(err.to_string().contains("missing"), "{err}");
    engine.shutdown().await.unwrap();
}
