//! Table tests of the state machine: every policy, with time as a value.

use serde_json::{json, Value};

use super::*;
use crate::definition::Definition;
use crate::record::{Event, EventKind, RunRecord, RunStatus, StepStatus, WaitKind};

struct Sim {
    wf: Workflow,
    rec: RunRecord,
    now: Millis,
}

fn sim(toml: &str, input: Value) -> Sim {
    let def = Definition::from_toml(toml, "t.toml").unwrap();
    let wf = Workflow::new(def, "t.toml", &|_| true).unwrap();
    let input = wf
        .resolve_input(input.as_object().cloned().unwrap_or_default())
        .unwrap();
    let mut rec = RunRecord::new("run_t".into(), wf.steps().iter().map(|s| s.id.clone()), 0);
    rec.apply(&Event {
        run: "run_t".into(),
        seq: 1,
        at: 0,
        kind: EventKind::RunCreated {
            workflow_id: wf.id().into(),
            version: 1,
            digest: wf.digest.clone(),
            input,
            job_id: None,
            subject: None,
            traceparent: None,
        },
    });
    Sim {
        wf,
        rec,
        now: 1_000,
    }
}

impl Sim {
    fn feed(&mut self, input: Input) -> Outcome {
        let env = Env {
            now: self.now,
            random: 0.0,
            max_transitions: 100,
        };
        handle(&self.wf, &mut self.rec, input, &env).unwrap()
    }

    fn refuse(&mut self, input: Input) -> String {
        let before = self.rec.clone();
        let env = Env {
            now: self.now,
            random: 0.0,
            max_transitions: 100,
        };
        let err = handle(&self.wf, &mut self.rec, input, &env).unwrap_err().0;
        assert_eq!(self.rec, before, "a refused command changes nothing");
        err
    }

    /// The step the last effect asked to run, with its attempt and params.
    fn running(&self, out: &Outcome) -> (usize, u32, Value) {
        out.effects
            .iter()
            .find_map(|e| match e {
                Effect::RunStep {
                    step,
                    attempt,
                    params,
                    ..
                } => Some((*step, *attempt, params.clone())),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no step started: {out:?}"))
    }

    fn finish(&mut self, result: Result<Value, Failure>) -> Outcome {
        let (step, attempt) = (self.rec.current_step, self.rec.attempt);
        self.feed(Input::StepResult {
            step,
            attempt,
            result,
        })
    }

    fn ok(&mut self, output: Value) -> Outcome {
        self.finish(Ok(output))
    }

    fn fail(&mut self, retryable: bool) -> Outcome {
        self.finish(Err(Failure {
            message: "boom".into(),
            retryable,
            output: Value::Null,
        }))
    }

    fn statuses(&self) -> Vec<(&str, StepStatus)> {
        self.rec
            .steps
            .iter()
            .map(|s| (s.id.as_str(), s.status))
            .collect()
    }

    fn fire_timer(&mut self) -> Outcome {
        let timer = self.rec.timer.clone().expect("a timer");
        self.now = timer.due;
        self.feed(Input::TimerFired { timer: timer.id })
    }
}

const THREE: &str = r#"
id = "t"
[[steps]]
id = "a"
action = "x"
set = { n = "{{ steps.a.output.n }}" }
[[steps]]
id = "b"
action = "x"
with = { twice = "{{ state.n * 2 }}", text = "n={{ state.n }}" }
[[steps]]
id = "c"
action = "x"
"#;

#[test]
fn state_flows_through_set_and_templates() {
    let mut s = sim(THREE, json!({}));
    let out = s.feed(Input::Start);
    assert_eq!(s.running(&out).0, 0);
    let out = s.ok(json!({"n": 21}));
    let (step, attempt, params) = s.running(&out);
    assert_eq!((step, attempt), (1, 1));
    assert_eq!(params, json!({"twice": 42, "text": "n=21"}));
    assert_eq!(s.rec.state["n"], json!(21));
    s.ok(json!(null));
    let out = s.ok(json!(null));
    assert_eq!(s.rec.status, RunStatus::Completed);
    assert!(out.effects.contains(&Effect::Finish));
}

const BRANCHY: &str = r#"
id = "t"
[input]
level = { default = "full" }
[[steps]]
id = "check"
action = "x"
next = [ { when = "steps.check.output.ok == false", goto = "fix" }, { when = "input.level == 'quick'", goto = "end" } ]
[[steps]]
id = "slow"
action = "x"
when = "input.level == 'full'"
[[steps]]
id = "fix"
action = "x"
"#;

#[test]
fn when_and_next_branch() {
    // next: first match wins -> jump to fix, skipping slow.
    let mut s = sim(BRANCHY, json!({}));
    s.feed(Input::Start);
    let out = s.ok(json!({"ok": false}));
    assert_eq!(s.running(&out).0, 2);
    assert_eq!(s.rec.steps[1].status, StepStatus::Pending);

    // goto end finishes at once.
    let mut s = sim(BRANCHY, json!({"level": "quick"}));
    s.feed(Input::Start);
    s.ok(json!({"ok": true}));
    assert_eq!(s.rec.status, RunStatus::Completed);
    assert_eq!(s.rec.steps[1].status, StepStatus::Pending);

    // when false skips; no rule matches -> the next step.
    let mut s = sim(BRANCHY, json!({"level": "other"}));
    s.feed(Input::Start);
    let out = s.ok(json!({"ok": true}));
    assert_eq!(s.running(&out).0, 2);
    assert_eq!(s.rec.steps[1].status, StepStatus::Skipped);
}

fn retrying(on_failure: &str) -> String {
    format!(
        r#"
id = "t"
[[steps]]
id = "a"
action = "x"
retry = {{ max_attempts = 3, initial = "1s", max = "10s", factor = 2.0, jitter = false }}
on_failure = "{on_failure}"
[[steps]]
id = "b"
action = "x"
[[steps]]
id = "c"
action = "x"
"#
    )
}

fn exhaust(s: &mut Sim) {
    s.feed(Input::Start);
    for (attempt, delay) in [(1, 1_000), (2, 2_000)] {
        let now = s.now;
        let out = s.fail(true);
        assert_eq!(s.rec.status, RunStatus::Waiting);
        assert_eq!(s.rec.waiting_for.as_ref().unwrap().kind, WaitKind::Retry);
        let timer = s.rec.timer.clone().unwrap();
        assert_eq!(timer.due, now + delay, "attempt {attempt}: backoff");
        assert!(out.effects.contains(&Effect::SetTimer {
            timer: timer.id,
            due: timer.due
        }));
        assert!(out.effects.contains(&Effect::Park));
        let out = s.fire_timer();
        assert_eq!(s.running(&out).1, attempt + 1);
    }
    s.fail(true);
}

#[test]
fn retry_then_skip_abort_pause_goto() {
    let mut s = sim(&retrying("skip"), json!({}));
    exhaust(&mut s);
    assert_eq!(s.rec.steps[0].attempts, 3);
    assert_eq!(s.rec.steps[0].status, StepStatus::Skipped);
    assert_eq!(s.rec.current_step, 1);
    assert_eq!(s.rec.status, RunStatus::Running);

    let mut s = sim(&retrying("abort"), json!({}));
    exhaust(&mut s);
    assert_eq!(s.rec.status, RunStatus::Failed);
    assert!(s
        .rec
        .error_text
        .as_deref()
        .unwrap()
        .contains("step `a` failed: boom"));

    let mut s = sim(&retrying("pause"), json!({}));
    exhaust(&mut s);
    assert_eq!(s.rec.status, RunStatus::Waiting);
    assert_eq!(
        s.rec.waiting_for.as_ref().unwrap().kind,
        WaitKind::Intervention
    );
    // A person retries: attempt 4 runs despite the spent budget.
    let out = s.feed(Input::Retry { by: "ann".into() });
    assert_eq!(s.running(&out).1, 4);
    s.fail(false);
    assert_eq!(
        s.rec.status,
        RunStatus::Waiting,
        "paused again, no retry for a fatal error"
    );
    let out = s.feed(Input::Skip { by: "ann".into() });
    assert_eq!(s.running(&out).0, 1);

    let mut s = sim(&retrying("goto:c"), json!({}));
    exhaust(&mut s);
    assert_eq!(s.rec.current_step, 2);
    assert_eq!(s.rec.steps[1].status, StepStatus::Pending);
}

#[test]
fn named_retry_policies_retry_as_their_tables_say() {
    // random = 0.0 puts a jittered delay at half its base: 2s doubling is 1s, 2s, 4s.
    for (name, attempts, delays) in [
        ("forge", 4, vec![1_000, 2_000, 4_000]),
        ("git", 3, vec![1_000, 2_000]),
        ("agent", 2, vec![2_500]),
    ] {
        let toml = format!(
            "id = \"t\"\n[[steps]]\nid = \"a\"\naction = \"x\"\nretry = \"{name}\"\non_failure = \"abort\"\n"
        );
        let mut s = sim(&toml, json!({}));
        s.feed(Input::Start);
        for delay in &delays {
            let now = s.now;
            s.fail(true);
            assert_eq!(s.rec.timer.clone().unwrap().due, now + delay, "{name}");
            s.fire_timer();
        }
        s.fail(true);
        assert_eq!(s.rec.status, RunStatus::Failed, "{name}");
        assert_eq!(s.rec.steps[0].attempts, attempts, "{name}");
    }
}

#[test]
fn fatal_errors_are_not_retried() {
    let mut s = sim(&retrying("abort"), json!({}));
    s.feed(Input::Start);
    s.fail(false);
    assert_eq!(s.rec.status, RunStatus::Failed);
    assert_eq!(s.rec.steps[0].attempts, 1);
}

const WAITS: &str = r#"
id = "t"
[[steps]]
id = "build"
action = "x"
[[steps]]
id = "gate"
wait = { signal = "deploy", timeout = "1h", on_timeout = "ON" }
[[steps]]
id = "ship"
action = "x"
"#;

#[test]
fn signals_end_waits_and_early_ones_are_kept() {
    let mut s = sim(&WAITS.replace("ON", "fail"), json!({}));
    s.feed(Input::Start);
    // Arrives while build runs: kept.
    s.feed(Input::Signal {
        name: "deploy".into(),
        data: json!({"v": 2}),
    });
    assert_eq!(s.rec.signals.len(), 1);
    let out = s.ok(json!(null));
    assert_eq!(
        s.running(&out).0,
        2,
        "the kept signal is consumed at the wait"
    );
    assert!(s.rec.signals.is_empty());
    assert_eq!(s.rec.steps[1].output["data"], json!({"v": 2}));

    let mut s = sim(&WAITS.replace("ON", "fail"), json!({}));
    s.feed(Input::Start);
    let out = s.ok(json!(null));
    assert_eq!(s.rec.status, RunStatus::Waiting);
    assert!(out.effects.contains(&Effect::Park));
    assert_eq!(s.rec.timer.as_ref().unwrap().due, s.now + 3_600_000);
    // Another name is kept, not consumed.
    s.feed(Input::Signal {
        name: "other".into(),
        data: json!(1),
    });
    assert_eq!(s.rec.status, RunStatus::Waiting);
    let timer = s.rec.timer.clone().unwrap();
    let out = s.feed(Input::Signal {
        name: "deploy".into(),
        data: json!(null),
    });
    assert_eq!(s.running(&out).0, 2);
    assert!(out.effects.contains(&Effect::ClearTimer {
        timer: timer.id,
        due: timer.due
    }));
    // The old timer firing later changes nothing.
    assert!(s
        .feed(Input::TimerFired { timer: timer.id })
        .events
        .is_empty());
}

#[test]
fn wait_timeouts() {
    for (policy, status, current) in [
        ("fail", RunStatus::Failed, 1),
        ("skip", RunStatus::Running, 2),
        ("goto:build", RunStatus::Running, 0),
    ] {
        let mut s = sim(&WAITS.replace("ON", policy), json!({}));
        s.feed(Input::Start);
        s.ok(json!(null));
        s.fire_timer();
        assert_eq!(s.rec.status, status, "{policy}");
        assert_eq!(s.rec.current_step, current, "{policy}");
        if policy == "fail" {
            assert!(s
                .rec
                .error_text
                .as_deref()
                .unwrap()
                .contains("waiting for signal `deploy`"));
        }
    }
}

#[test]
fn commands_in_the_wrong_state_change_nothing() {
    let mut s = sim(THREE, json!({}));
    s.feed(Input::Start);
    assert!(s
        .refuse(Input::Approve { by: "x".into() })
        .contains("not waiting"));
    assert!(s
        .refuse(Input::Retry { by: "x".into() })
        .contains("waiting or failed"));
    assert!(s
        .refuse(Input::Rollback {
            by: "x".into(),
            request: RollbackRequest::Steps(5)
        })
        .contains("0 completed"));
    s.ok(json!({"n": 1}));
    s.ok(json!(null));
    s.ok(json!(null));
    assert_eq!(s.rec.status, RunStatus::Completed);
    assert!(s
        .refuse(Input::Retry { by: "x".into() })
        .contains("waiting or failed"));
    assert!(s
        .refuse(Input::Cancel { by: "x".into() })
        .contains("already ended"));
    assert!(s
        .refuse(Input::Signal {
            name: "a".into(),
            data: json!(null)
        })
        .contains("finished"));
    assert!(s.refuse(Input::Start).contains("already started"));
}

#[test]
fn approve_and_reject() {
    let wf = r#"
id = "t"
[[steps]]
id = "gate"
wait = { signal = "approve" }
[[steps]]
id = "go"
action = "x"
"#;
    let mut s = sim(wf, json!({}));
    s.feed(Input::Start);
    assert_eq!(s.rec.waiting_for.as_ref().unwrap().kind, WaitKind::Approval);
    let out = s.feed(Input::Approve { by: "ann".into() });
    assert_eq!(s.running(&out).0, 1);
    assert_eq!(s.rec.steps[0].output["data"]["approved_by"], json!("ann"));

    let mut s = sim(wf, json!({}));
    s.feed(Input::Start);
    s.feed(Input::Reject { by: "bob".into() });
    assert_eq!(s.rec.status, RunStatus::Failed);
    assert!(s
        .rec
        .error_text
        .as_deref()
        .unwrap()
        .contains("rejected by bob"));
}

const UNDOABLE: &str = r#"
id = "t"
rollback_on_abort = "hard"
[[steps]]
id = "a"
action = "x"
compensate = { action = "undo", with = { what = "a:{{ steps.a.output.v }}" } }
[[steps]]
id = "b"
action = "x"
[[steps]]
id = "c"
action = "x"
compensate = { action = "undo", with = { what = "c" } }
[[steps]]
id = "d"
action = "x"
"#;

fn compensations(out: &Outcome) -> Vec<(usize, Value)> {
    out.effects
        .iter()
        .filter_map(|e| match e {
            Effect::Compensate { step, params, .. } => Some((*step, params.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn hard_rollback_undoes_newest_first() {
    let mut s = sim(UNDOABLE, json!({}));
    s.feed(Input::Start);
    s.ok(json!({"v": 7}));
    s.ok(json!(null));
    s.ok(json!(null));
    // d fails -> abort -> hard rollback: c, then (b has none) a.
    let out = s.fail(false);
    assert_eq!(compensations(&out), vec![(2, json!({"what": "c"}))]);
    assert_eq!(s.rec.status, RunStatus::Running);
    let out = s.feed(Input::CompensationResult {
        step: 2,
        result: Ok(()),
    });
    assert_eq!(compensations(&out), vec![(0, json!({"what": "a:7"}))]);
    assert_eq!(s.rec.steps[1].status, StepStatus::Compensated);
    s.feed(Input::CompensationResult {
        step: 0,
        result: Ok(()),
    });
    assert_eq!(s.rec.status, RunStatus::Failed);
    assert_eq!(s.rec.rolled_back.as_deref(), Some("hard"));
    assert!(
        s.statuses()
            .iter()
            .filter(|(_, st)| *st == StepStatus::Compensated)
            .count()
            == 3
    );
}

#[test]
fn partial_rollback_of_a_completed_run_reopens_it() {
    let mut s = sim(UNDOABLE, json!({}));
    s.feed(Input::Start);
    for _ in 0..4 {
        s.ok(json!({"v": 1}));
    }
    assert_eq!(s.rec.status, RunStatus::Completed);
    // d (no compensation) is undone at once, then c's compensation runs.
    let out = s.feed(Input::Rollback {
        by: "ann".into(),
        request: RollbackRequest::Steps(2),
    });
    assert_eq!(compensations(&out), vec![(2, json!({"what": "c"}))]);
    assert_eq!(s.rec.status, RunStatus::Running);
    assert_eq!(s.rec.steps[3].status, StepStatus::Compensated);
    let out = s.feed(Input::CompensationResult {
        step: 2,
        result: Ok(()),
    });
    assert_eq!(s.running(&out), (2, 2, json!({})), "the run goes on from c");
    assert_eq!(s.rec.rolled_back.as_deref(), Some("partial"));
}

#[test]
fn partial_rollback_order_and_resume() {
    let mut s = sim(UNDOABLE, json!({}));
    s.feed(Input::Start);
    for _ in 0..3 {
        s.ok(json!({"v": 1}));
    }
    // Rolling back while d runs: d is cancelled, c and b are undone, the run goes on from b.
    let out = s.feed(Input::Rollback {
        by: "ann".into(),
        request: RollbackRequest::Steps(2),
    });
    assert!(out.effects.contains(&Effect::CancelStep));
    assert_eq!(compensations(&out), vec![(2, json!({"what": "c"}))]);
    let out = s.feed(Input::CompensationResult {
        step: 2,
        result: Ok(()),
    });
    let (step, attempt, _) = s.running(&out);
    assert_eq!((step, attempt), (1, 2), "b runs again, as a new attempt");
    assert_eq!(s.rec.steps[0].status, StepStatus::Completed);
}

#[test]
fn soft_rollback_and_cancel_keep_everything() {
    let mut s = sim(UNDOABLE, json!({}));
    s.feed(Input::Start);
    s.ok(json!(null));
    let out = s.feed(Input::Rollback {
        by: "ann".into(),
        request: RollbackRequest::Soft,
    });
    assert!(compensations(&out).is_empty());
    assert!(out.effects.contains(&Effect::CancelStep));
    assert_eq!(s.rec.status, RunStatus::Cancelled);
    assert_eq!(s.rec.steps[0].status, StepStatus::Completed);

    let mut s = sim(UNDOABLE, json!({}));
    s.feed(Input::Start);
    s.ok(json!(null));
    let out = s.feed(Input::Abort {
        by: "ann".into(),
        mode: Some(RollbackMode::None),
    });
    assert!(compensations(&out).is_empty());
    assert_eq!(s.rec.status, RunStatus::Failed);
    assert_eq!(s.rec.error_text.as_deref(), Some("aborted by ann"));
}

#[test]
fn failed_compensation_is_reported() {
    let mut s = sim(UNDOABLE, json!({}));
    s.feed(Input::Start);
    s.ok(json!({"v": 1}));
    s.feed(Input::Cancel { by: "ann".into() });
    s.feed(Input::CompensationResult {
        step: 0,
        result: Err("disk full".into()),
    });
    assert_eq!(s.rec.status, RunStatus::Cancelled);
    let text = s.rec.error_text.clone().unwrap();
    assert!(
        text.contains("rollback incomplete") && text.contains("disk full"),
        "{text}"
    );
}

#[test]
fn goto_loops_hit_the_transition_limit() {
    let wf = r#"
id = "t"
max_transitions = 5
[[steps]]
id = "a"
action = "x"
next = [ { when = "true", goto = "a" } ]
"#;
    let mut s = sim(wf, json!({}));
    s.feed(Input::Start);
    for _ in 0..4 {
        s.ok(json!(null));
        assert_eq!(s.rec.status, RunStatus::Running);
    }
    s.ok(json!(null));
    assert_eq!(s.rec.status, RunStatus::Failed);
    assert!(s
        .rec
        .error_text
        .as_deref()
        .unwrap()
        .contains("transition limit"));
    // Each pass is a new attempt number, so idempotency keys differ.
    assert_eq!(s.rec.steps[0].attempts, 5);
}

#[test]
fn resume_reruns_the_attempt_in_flight_and_late_results_are_dropped() {
    let mut s = sim(THREE, json!({}));
    s.feed(Input::Start);
    let out = s.feed(Input::Resume);
    assert_eq!(
        s.running(&out),
        (0, 1, json!({})),
        "same attempt, same idempotency key"
    );
    assert!(out.events.is_empty(), "nothing new to record");
    // A result for an older attempt is ignored.
    let stale = s.feed(Input::StepResult {
        step: 0,
        attempt: 0,
        result: Ok(json!(null)),
    });
    assert!(stale.events.is_empty());
    // A completed step is never run again: resume goes on after it.
    s.ok(json!({"n": 1}));
    let out = s.feed(Input::Resume);
    assert_eq!(s.running(&out).0, 1);
    // Pending runs start on resume.
    let mut p = sim(THREE, json!({}));
    let out = p.feed(Input::Resume);
    assert_eq!(p.running(&out).0, 0);
}

#[test]
fn template_errors_fail_the_step_without_retry() {
    let wf = r#"
id = "t"
[[steps]]
id = "a"
action = "x"
with = { v = "{{ state.missing }}" }
retry = { max_attempts = 5 }
"#;
    let mut s = sim(wf, json!({}));
    let out = s.feed(Input::Start);
    assert!(!out
        .effects
        .iter()
        .any(|e| matches!(e, Effect::RunStep { .. })));
    assert_eq!(s.rec.status, RunStatus::Failed);
    assert!(s.rec.error_text.as_deref().unwrap().contains("with:"));
}

#[test]
fn replaying_events_rebuilds_the_record() {
    let mut s = sim(UNDOABLE, json!({}));
    let mut events = Vec::new();
    events.extend(s.feed(Input::Start).events);
    events.extend(s.ok(json!({"v": 3})).events);
    events.extend(s.fail(false).events);
    events.extend(
        s.feed(Input::CompensationResult {
            step: 0,
            result: Ok(()),
        })
        .events,
    );
    let mut fresh = sim(UNDOABLE, json!({})).rec;
    for e in &events {
        fresh.apply(e);
    }
    assert_eq!(fresh, s.rec);
}

#[test]
fn a_cancelled_run_can_still_be_undone_and_stays_cancelled() {
    let mut s = sim(
        UNDOABLE
            .replace(
                "rollback_on_abort = \"hard\"",
                "rollback_on_abort = \"soft\"",
            )
            .as_str(),
        json!({}),
    );
    s.feed(Input::Start);
    s.ok(json!({"v": 1}));
    s.feed(Input::Cancel { by: "ann".into() });
    assert_eq!(s.rec.status, RunStatus::Cancelled);
    let out = s.feed(Input::Rollback {
        by: "ann".into(),
        request: RollbackRequest::Hard,
    });
    assert_eq!(compensations(&out), vec![(0, json!({"what": "a:1"}))]);
    s.feed(Input::CompensationResult {
        step: 0,
        result: Ok(()),
    });
    assert_eq!(s.rec.status, RunStatus::Cancelled);
    assert_eq!(s.rec.rolled_back.as_deref(), Some("hard"));
}

#[test]
fn a_signal_kept_while_paused_is_consumed_when_the_wait_is_retried() {
    let wf = r#"
id = "t"
[[steps]]
id = "gate"
wait = { signal = "go", timeout = "1m" }
on_failure = "pause"
[[steps]]
id = "after"
action = "x"
"#;
    let mut s = sim(wf, json!({}));
    s.feed(Input::Start);
    s.fire_timer();
    assert_eq!(
        s.rec.waiting_for.as_ref().unwrap().kind,
        WaitKind::Intervention
    );
    s.feed(Input::Signal {
        name: "go".into(),
        data: json!(1),
    });
    assert_eq!(s.rec.signals.len(), 1);
    let out = s.feed(Input::Retry { by: "ann".into() });
    assert_eq!(
        s.running(&out).0,
        1,
        "the kept signal ends the retried wait"
    );
    assert!(s.rec.signals.is_empty());
}

#[test]
fn huge_timeouts_do_not_overflow() {
    let wf = r#"
id = "t"
[[steps]]
id = "gate"
wait = { signal = "go", timeout = "99999999999999d" }
"#;
    let mut s = sim(wf, json!({}));
    s.now = u64::MAX - 10;
    s.feed(Input::Start);
    assert_eq!(s.rec.timer.as_ref().unwrap().due, u64::MAX);
}

#[test]
fn rollback_requests_on_the_wire_and_as_words() {
    use serde_json::json;
    for (wire, request) in [
        (json!({"mode": "soft"}), RollbackRequest::Soft),
        (json!({"mode": "hard"}), RollbackRequest::Hard),
        (json!({"steps": 3}), RollbackRequest::Steps(3)),
    ] {
        assert_eq!(serde_json::to_value(request).unwrap(), wire);
        assert_eq!(
            serde_json::from_value::<RollbackRequest>(wire).unwrap(),
            request
        );
        assert_eq!(
            request.to_string().parse::<RollbackRequest>().unwrap(),
            request
        );
    }
    for bad in [
        json!({"mode": "hard", "steps": 2}),
        json!({}),
        json!({"mode": "none"}),
        json!({"mode": "sideways"}),
        json!({"stpes": 2}),
    ] {
        assert!(
            serde_json::from_value::<RollbackRequest>(bad.clone()).is_err(),
            "{bad}"
        );
    }
    for bad in ["", "0", "-1", "medium", "2x"] {
        assert!(bad.parse::<RollbackRequest>().is_err(), "{bad:?}");
    }
}
