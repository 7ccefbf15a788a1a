//! The texts of progress updates, from the run as it stands (the spec's update types, with the
//! details the steps reported).
//!
//! Conventions the workflows follow so that these texts say something:
//! - a step's label is its `description`, else its id;
//! - a completed step says what it did in its output's `summary` string ("Created branch
//!   `fix/issue-123`", "Running tests... 42 passed, 0 failed", "Created PR #456");
//! - a running step shows its latest progress message, else "Starting step N: <label>...";
//! - a run that completes may leave a `result` string in its state ("PR #456 created"), shown
//!   after "Workflow complete!";
//! - a completed step whose output says `"checks_failed": true` (checks of the change ran and
//!   failed, the run going on to a draft PR) is marked failed, never ticked;
//! - a run whose state says `outcome = "unverified"` (or `"no_checks"`) completed without its
//!   change being verified: its headline is its `result` alone, marked ❌ (⚠️), never
//!   "Workflow complete!";
//! - a run waiting for approval whose state holds a `plan` text (issue_to_pr's `approve_plan`)
//!   shows that text with the request ([`to_approve`]): a person approves what they read.

use baton_actors::{
    Happening, RunRecord, RunStatus, StepDef, StepRecord, StepStatus, Update, WaitKind,
};
use serde_json::Value;

/// A step's label: its description, else its id.
pub fn label(def: &StepDef) -> &str {
    def.description
        .as_deref()
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .unwrap_or(&def.id)
}

/// The step's `summary` output, when it left one.
fn summary(step: &StepRecord) -> Option<&str> {
    match step.output.get("summary") {
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s.trim()),
        _ => None,
    }
}

/// The first line of an error (errors may carry a command's whole output).
fn first_line(text: &str) -> &str {
    text.lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
}

/// What the run waits for, in words.
fn waiting_text(run: &RunRecord) -> String {
    match &run.waiting_for {
        Some(w) => match w.kind {
            WaitKind::Approval => "Waiting for approval to proceed...".to_string(),
            WaitKind::Signal if w.name == "approve" => {
                "Waiting for approval to proceed...".to_string()
            }
            WaitKind::Signal => format!("Waiting for signal `{}`...", w.name),
            WaitKind::Retry => format!("Step `{}` failed; retrying soon...", w.step),
            WaitKind::Intervention => {
                let error = run
                    .steps
                    .iter()
                    .find(|s| s.id == w.step)
                    .and_then(|s| s.error.as_deref())
                    .map(first_line)
                    .unwrap_or("it failed");
                format!(
                    "Step `{}` failed: {error}. Waiting for someone to retry, skip or abort...",
                    w.step
                )
            }
        },
        None => "Waiting...".to_string(),
    }
}

/// What a run waiting for approval asks a person to approve: its state's `plan` text, when it
/// waits for an approval and has one.
pub fn to_approve(run: &RunRecord) -> Option<&str> {
    let approval = run.waiting_for.as_ref().is_some_and(|w| {
        w.kind == WaitKind::Approval || (w.kind == WaitKind::Signal && w.name == "approve")
    });
    if !approval {
        return None;
    }
    run.state
        .get("plan")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|plan| !plan.is_empty())
}

/// The line of one step (without its checkbox): what it did, does, or waits for.
pub fn step_line(update: &Update, index: usize) -> String {
    let def = &update.workflow.steps()[index];
    let label = label(def);
    let Some(step) = update.run.steps.get(index) else {
        return label.to_string();
    };
    match step.status {
        StepStatus::Completed => summary(step).unwrap_or(label).to_string(),
        StepStatus::Running => match update.progress.get(&step.id) {
            Some(message) => message.clone(),
            None => format!("Starting step {}: {label}...", index + 1),
        },
        StepStatus::Waiting => {
            let waits_here = update
                .run
                .waiting_for
                .as_ref()
                .is_some_and(|w| w.step == step.id);
            if waits_here {
                waiting_text(&update.run)
            } else {
                format!("{label} (waiting)")
            }
        }
        StepStatus::Failed => format!(
            "Step `{}` failed: {}",
            step.id,
            first_line(step.error.as_deref().unwrap_or("no error text"))
        ),
        StepStatus::Skipped => format!("{label} (skipped)"),
        StepStatus::Compensated => format!("{label} (rolled back)"),
        StepStatus::Pending if update.is_final => format!("{label} (not run)"),
        StepStatus::Pending => label.to_string(),
    }
}

/// One line saying where the run is: the spec's update text for what just happened.
pub fn headline(update: &Update) -> String {
    let run = &update.run;
    match run.status {
        RunStatus::Completed => match (run.state.get("result"), outcome(run)) {
            (Some(Value::String(result)), Some("unverified" | "no_checks"))
                if !result.trim().is_empty() =>
            {
                result.trim().to_string()
            }
            (_, Some("unverified")) => "Completed, but the change is not verified".to_string(),
            (_, Some("no_checks")) => "Completed; no checks verified the change".to_string(),
            (Some(Value::String(result)), _) if !result.trim().is_empty() => {
                format!("Workflow complete! {}", result.trim())
            }
            _ => "Workflow complete!".to_string(),
        },
        RunStatus::Failed => match run
            .steps
            .iter()
            .find(|s| s.status == StepStatus::Failed && s.error.is_some())
        {
            Some(step) => format!(
                "Step `{}` failed: {}",
                step.id,
                first_line(step.error.as_deref().unwrap_or_default())
            ),
            None => format!(
                "Workflow failed: {}",
                first_line(run.error_text.as_deref().unwrap_or("no reason given"))
            ),
        },
        RunStatus::Cancelled => format!(
            "Workflow cancelled: {}",
            first_line(run.error_text.as_deref().unwrap_or("no reason given"))
        ),
        RunStatus::Waiting => waiting_text(run),
        RunStatus::Pending => "Starting...".to_string(),
        RunStatus::Running => {
            let running = run
                .steps
                .iter()
                .position(|s| s.status == StepStatus::Running);
            match running {
                Some(i) => step_line(update, i),
                None if run.rollback.is_some() => "Rolling back...".to_string(),
                // Between two steps: what was done last, until the next one starts.
                None => run
                    .steps
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| s.status == StepStatus::Completed)
                    .max_by_key(|(_, s)| s.completion)
                    .map(|(i, _)| step_line(update, i))
                    .unwrap_or_else(|| "Starting...".to_string()),
            }
        }
    }
}

/// The run's `outcome` (issue_to_pr, revise, pr_review): `verified`, `unverified` or
/// `no_checks`.
pub fn outcome(run: &RunRecord) -> Option<&str> {
    run.state.get("outcome").and_then(Value::as_str)
}

/// Whether a completed step reported checks of the change that failed.
pub fn failed_checks(step: &StepRecord) -> bool {
    step.status == StepStatus::Completed
        && step.output.get("checks_failed") == Some(&Value::Bool(true))
}

/// The run's page in the admin UI at `[server] public_url`, when that is set.
pub fn run_link(public_url: Option<&str>, run: &str) -> Option<String> {
    let base = public_url?.trim().trim_end_matches('/');
    (!base.is_empty()).then(|| format!("{base}/runs/{run}"))
}

/// The forge's progress comment: the headline, then a checklist of the steps with their
/// state, and the run's page when `public_url` is set. (The marker that finds it again is
/// added by the forge sink.)
pub fn checklist(update: &Update, public_url: Option<&str>) -> String {
    let name = match update.workflow.def.name.trim() {
        "" => update.workflow.id(),
        name => name,
    };
    let icon = match update.run.status {
        RunStatus::Completed if outcome(&update.run) == Some("unverified") => "❌",
        RunStatus::Completed if outcome(&update.run) == Some("no_checks") => "⚠️",
        RunStatus::Completed => "✅",
        RunStatus::Failed => "❌",
        RunStatus::Cancelled => "⛔",
        RunStatus::Waiting => "⏸️",
        RunStatus::Pending | RunStatus::Running => "⏳",
    };
    let mut body = format!("{icon} **{name}**: {}\n\n", headline(update));
    for (i, step) in update.run.steps.iter().enumerate() {
        let line = step_line(update, i);
        let item = match step.status {
            StepStatus::Completed if failed_checks(step) => format!("- [ ] ❌ {line}"),
            StepStatus::Completed => format!("- [x] {line}"),
            StepStatus::Skipped | StepStatus::Compensated => format!("- [ ] ~~{line}~~"),
            StepStatus::Running | StepStatus::Waiting => format!("- [ ] ⏳ {line}"),
            StepStatus::Failed => format!("- [ ] ❌ {line}"),
            StepStatus::Pending => format!("- [ ] {line}"),
        };
        body.push_str(&item);
        body.push('\n');
    }
    let happened = match update.happened {
        Happening::Started => "started",
        Happening::Progress => "in progress",
        Happening::Waiting => "waiting",
        Happening::Failed => "failed",
        Happening::Completed => "completed",
        Happening::Cancelled => "cancelled",
    };
    let run = match run_link(public_url, &update.run.id) {
        Some(link) => format!("[`{}`]({link})", update.run.id),
        None => format!("`{}`", update.run.id),
    };
    body.push_str(&format!("\n<sub>baton run {run} · {happened}</sub>"));
    body
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use baton_actors::record::{Event, EventKind};
    use baton_actors::{Definition, Workflow};
    use serde_json::{json, Map};

    fn workflow() -> Arc<Workflow> {
        let def = Definition::builder("issue_to_pr")
            .name("Issue to PR")
            .step(StepDef::action("analyze", "noop").description("Analyze the issue"))
            .step(StepDef::action("branch", "noop").description("Create branch"))
            .step(StepDef::action("implement", "noop"))
            .step(StepDef::wait("approve_plan", "approve"))
            .step(StepDef::action("test", "noop").description("Run tests"))
            .build();
        Arc::new(Workflow::new(def, "test", &|_| true).unwrap())
    }

    /// A run of [`workflow`] after `events` (kinds, numbered from 2 after its creation).
    fn update(kinds: Vec<EventKind>, progress: &[(&str, &str)]) -> Update {
        let wf = workflow();
        let ids = wf.steps().iter().map(|s| s.id.clone());
        let mut run = RunRecord::new("run_1".into(), ids, 0);
        let created = EventKind::RunCreated {
            workflow_id: "issue_to_pr".into(),
            version: 1,
            digest: wf.digest.clone(),
            input: Map::new(),
            job_id: None,
            subject: None,
            traceparent: None,
        };
        for (i, kind) in [created, EventKind::RunStarted]
            .into_iter()
            .chain(kinds)
            .enumerate()
        {
            run.apply(&Event {
                run: "run_1".into(),
                seq: i as u64 + 1,
                at: 0,
                kind,
            });
        }
        Update {
            is_final: run.status.is_terminal(),
            run,
            workflow: wf,
            progress: progress
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
            happened: Happening::Progress,
        }
    }

    fn started(step: usize, id: &str) -> EventKind {
        EventKind::StepStarted {
            step,
            id: id.into(),
            attempt: 1,
            entered: true,
        }
    }

    fn completed(step: usize, id: &str, output: Value) -> EventKind {
        EventKind::StepCompleted {
            step,
            id: id.into(),
            attempt: 1,
            output,
            set: Map::new(),
        }
    }

    #[test]
    fn running_steps_say_what_they_do() {
        let u = update(vec![started(0, "analyze")], &[]);
        assert_eq!(headline(&u), "Starting step 1: Analyze the issue...");
        let u = update(
            vec![started(0, "analyze")],
            &[("analyze", "Analyzing issue requirements...")],
        );
        assert_eq!(headline(&u), "Analyzing issue requirements...");
        let u = update(
            vec![
                completed(0, "analyze", json!({})),
                started(1, "branch"),
                completed(
                    1,
                    "branch",
                    json!({"summary": "Created branch `fix/issue-123`"}),
                ),
                started(2, "implement"),
            ],
            &[("implement", "Implementing changes (3 files modified)...")],
        );
        assert_eq!(headline(&u), "Implementing changes (3 files modified)...");
        let body = checklist(&u, None);
        assert!(
            body.starts_with("⏳ **Issue to PR**: Implementing changes (3 files modified)..."),
            "{body}"
        );
        assert!(body.contains("- [x] Analyze the issue\n"), "{body}");
        assert!(
            body.contains("- [x] Created branch `fix/issue-123`\n"),
            "{body}"
        );
        assert!(
            body.contains("- [ ] ⏳ Implementing changes (3 files modified)...\n"),
            "{body}"
        );
        assert!(
            body.contains("- [ ] approve_plan\n- [ ] Run tests\n"),
            "{body}"
        );
        assert!(body.contains("baton run `run_1`"), "{body}");
    }

    #[test]
    fn waits_failures_and_the_end() {
        let u = update(
            vec![EventKind::WaitStarted {
                step: 3,
                id: "approve_plan".into(),
                kind: WaitKind::Signal,
                name: "approve".into(),
                until: None,
            }],
            &[],
        );
        assert_eq!(headline(&u), "Waiting for approval to proceed...");
        assert!(checklist(&u, None).contains("- [ ] ⏳ Waiting for approval to proceed...\n"));
        // The plan a person approves goes with the request, once there is one.
        assert_eq!(to_approve(&u.run), None);
        let mut with_plan = u.clone();
        with_plan.run.state.insert(
            "plan".into(),
            Value::String("Plan (from gpt-4o):\nChange src/lib.rs\n".into()),
        );
        assert_eq!(
            to_approve(&with_plan.run),
            Some("Plan (from gpt-4o):\nChange src/lib.rs")
        );

        let u = update(
            vec![
                started(4, "test"),
                EventKind::StepFailed {
                    step: 4,
                    id: "test".into(),
                    attempt: 1,
                    error: "Test suite failed: 2 tests failing\n(output follows)".into(),
                    retryable: false,
                    output: Value::Null,
                },
                EventKind::RunFailed {
                    error: "step `test` failed".into(),
                },
            ],
            &[],
        );
        assert!(u.is_final);
        assert_eq!(
            headline(&u),
            "Step `test` failed: Test suite failed: 2 tests failing"
        );
        assert!(checklist(&u, None)
            .contains("- [ ] ❌ Step `test` failed: Test suite failed: 2 tests failing\n"));

        let mut u = update(
            vec![
                started(4, "test"),
                completed(
                    4,
                    "test",
                    json!({"summary": "Running tests... 42 passed, 0 failed"}),
                ),
                EventKind::RunCompleted,
            ],
            &[],
        );
        assert_eq!(headline(&u), "Workflow complete!");
        u.run
            .state
            .insert("result".into(), json!("PR #456 created"));
        assert_eq!(headline(&u), "Workflow complete! PR #456 created");
        let body = checklist(&u, None);
        assert!(
            body.starts_with("✅ **Issue to PR**: Workflow complete! PR #456 created"),
            "{body}"
        );
        assert!(
            body.contains("- [x] Running tests... 42 passed, 0 failed\n"),
            "{body}"
        );
        // Steps a finished run never reached are marked as such.
        assert!(
            body.contains("- [ ] Analyze the issue (not run)\n"),
            "{body}"
        );
        // `[server] public_url` makes the run id a link to its page, with or without a slash.
        let id = u.run.id.clone();
        for base in ["https://b.example", "https://b.example/"] {
            let linked = checklist(&u, Some(base));
            let link = format!("[`{id}`](https://b.example/runs/{id})");
            assert!(linked.contains(&link), "{linked}");
        }
        assert!(!body.contains("/runs/"), "{body}");
        assert_eq!(run_link(Some("  "), "r"), None);
    }
}
