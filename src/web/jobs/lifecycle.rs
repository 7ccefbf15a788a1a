//! Jobs about a pull request's life after baton opened it: a revision on review, the issue
//! closed, the pull request merged or closed. Each delivery is stored as a job before it acts
//! (with the run it concerns), so a redelivery does nothing twice; that stored job is also the
//! record that a pull request was closed unmerged.

use std::sync::Arc;

use baton_actors::{RunRecord, Subject};
use serde_json::{json, Map, Value};

use super::{engine_job, EngineJobs};
use crate::forge::{Forge, Repo};
use crate::triggers::Job;
use crate::web::webhook::{DispatchOutcome, JobError};
use crate::workflows::{issue_to_pr, revise};

/// What a closed pull request's cleanup needs besides the engine.
#[derive(Clone)]
pub(super) struct Cleanup {
    pub(super) forge: Arc<dyn Forge>,
    pub(super) delete_branch_on_merge: bool,
}

impl EngineJobs {
    /// Starts a revision of baton's pull request; a pull request no baton run opened, or one
    /// with a revision in flight, gets none.
    pub(super) async fn revise(
        &self,
        job: Job,
        instructions: String,
    ) -> Result<DispatchOutcome, JobError> {
        let Some(number) = job.subject.conversation() else {
            return no_run("a revision needs a pull request");
        };
        let _one_at_a_time = self.starts.lock().await;
        if self.opened_by(&job.repo, number)?.is_none() {
            return no_run(&format!(
                "{}#{number} was not opened by a baton run: not revised",
                job.repo
            ));
        }
        let about = Subject::pull_request(job.repo.to_string(), number);
        let in_flight = self.engine.in_flight(revise::ID, &about)?;
        if let Some(run) = in_flight {
            return no_run(&format!(
                "revision {} of {}#{number} is already in flight",
                run.id, job.repo
            ));
        }
        let mut input = Map::new();
        input.insert("repo".into(), json!(job.repo.to_string()));
        input.insert("pr".into(), json!(number));
        input.insert("instructions".into(), json!(instructions));
        let (run_id, created) = self
            .engine
            .start_job(revise::ID, input, Some(engine_job(&job, None)))
            .await?;
        Ok(if created {
            DispatchOutcome::Started { run_id }
        } else {
            DispatchOutcome::Duplicate
        })
    }

    /// Cancels every run in flight for the closed issue (its workflow's rollback applies).
    pub(super) async fn issue_closed(&self, job: Job) -> Result<DispatchOutcome, JobError> {
        let Some(number) = job.subject.conversation() else {
            return no_run("no issue");
        };
        let runs: Vec<RunRecord> = self
            .engine
            .runs_about(&Subject::issue(job.repo.to_string(), number))?
            .into_iter()
            .filter(|r| !r.status.is_terminal())
            .collect();
        let Some(first) = runs.first() else {
            return no_run(&format!("no run in flight for {}#{number}", job.repo));
        };
        self.store_job(&job, &first.id).await?;
        let by = format!("{} (github: issue closed)", job.sender);
        for run in &runs {
            // A run that finished meanwhile has nothing left to cancel.
            if let Err(e) = self.engine.cancel(&run.id, &by).await {
                tracing::info!(run = %run.id, error = %e, "not cancelled on issue close");
            }
        }
        Ok(DispatchOutcome::Steered {
            run_id: first.id.clone(),
        })
    }

    /// A pull request baton opened was merged or closed: a run still in flight is cancelled,
    /// the workspace of a finished one removed, and a merged branch deleted when configured.
    /// The stored job records what happened; a later `/baton run` on the issue starts over.
    pub(super) async fn pull_request_closed(
        &self,
        job: Job,
        merged: bool,
    ) -> Result<DispatchOutcome, JobError> {
        let Some(number) = job.subject.conversation() else {
            return no_run("no pull request");
        };
        let Some(run) = self.opened_by(&job.repo, number)? else {
            return no_run(&format!(
                "{}#{number} was not opened by a baton run",
                job.repo
            ));
        };
        // Every step below may run again (a redelivery after a failure): the job that makes a
        // redelivery a duplicate is stored once they all succeeded.
        let what = if merged { "merged" } else { "closed unmerged" };
        if run.status.is_terminal() {
            // A waiting run is never terminal, so its workspace is never removed here.
            let dir = self.engine.workspace_dir(&run.id);
            match tokio::fs::remove_dir_all(&dir).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(JobError::RemoveWorkspace { path: dir, source });
                }
            }
        } else {
            // Its workspace goes with retention once the cancellation's rollback is done.
            let by = format!("{} (github: pull request {what})", job.sender);
            if let Err(e) = self.engine.cancel(&run.id, &by).await {
                tracing::info!(run = %run.id, error = %e, "not cancelled on pull request close");
            }
        }
        let branch = run.state.get("branch").and_then(Value::as_str);
        if let (true, Some(cleanup), Some(branch)) = (merged, &self.cleanup, branch) {
            if cleanup.delete_branch_on_merge {
                match cleanup.forge.delete_branch(&job.repo, branch).await {
                    Ok(()) => {}
                    Err(e) if e.is_not_found() => {}
                    Err(source) => {
                        return Err(JobError::DeleteBranch {
                            branch: branch.to_string(),
                            source,
                        });
                    }
                }
            }
        }
        self.store_job(&job, &run.id).await?;
        tracing::info!(run = %run.id, pr = number, "pull request {what}; run cleaned up");
        Ok(DispatchOutcome::Steered { run_id: run.id })
    }

    /// `/baton fix-ci`: one more CI fix round for the run that opened the pull request, when
    /// it waits for a person at `ci_wait` (CI failed past `max_ci_fix_rounds`, or timed out).
    /// It is `retry` there, through the same `Command::apply` as every way of steering; a run
    /// anywhere else is left alone, saying where it is.
    pub(super) async fn fix_ci(&self, job: Job) -> Result<DispatchOutcome, JobError> {
        let Some(number) = job.subject.conversation() else {
            return no_run("`/baton fix-ci` needs a pull request");
        };
        let Some(run) = self.opened_by(&job.repo, number)? else {
            return no_run(&format!(
                "{}#{number} was not opened by a baton run: no CI fix round",
                job.repo
            ));
        };
        let at_ci_wait = run.status == baton_actors::RunStatus::Waiting
            && run
                .waiting_for
                .as_ref()
                .is_some_and(|w| w.step == "ci_wait");
        if !at_ci_wait {
            let where_ = run.waiting_for.as_ref().map_or_else(
                || run.status.to_string(),
                |w| format!("waiting at `{}`", w.step),
            );
            return no_run(&format!(
                "run {} is not waiting for a person at ci_wait ({where_}): `/baton fix-ci` starts \
                 a round once CI has failed past max_ci_fix_rounds or timed out",
                run.id
            ));
        }
        // Stored first: a redelivery finds the job and starts no second round.
        self.store_job(&job, &run.id).await?;
        let by = format!("{} (github)", job.sender);
        match crate::backend::Command::Retry
            .apply(&self.engine, &run.id, &by)
            .await
        {
            Ok(()) => Ok(DispatchOutcome::Steered { run_id: run.id }),
            Err(failure) if failure.is_usage() => {
                no_run(&format!("run {}: {}", run.id, failure.message))
            }
            Err(failure) => Err(failure.into()),
        }
    }

    /// The newest `issue_to_pr` run whose pull request is `repo`'s `number`.
    fn opened_by(&self, repo: &Repo, number: u64) -> Result<Option<RunRecord>, JobError> {
        // The runs about the repository (the engine's index, newest first): one opened it.
        let about = Subject::repository(repo.to_string());
        Ok(self.engine.runs_about(&about)?.into_iter().find(|r| {
            r.workflow_id == issue_to_pr::ID
                && r.state
                    .get("pr")
                    .and_then(|pr| pr.get("number"))
                    .and_then(Value::as_u64)
                    == Some(number)
        }))
    }

    /// Stores the delivery as a job naming `run`, before acting: a redelivery is a duplicate.
    async fn store_job(&self, job: &Job, run: &str) -> Result<(), JobError> {
        let record = engine_job(job, Some(run.to_string()));
        Ok(self.engine.record_job(&record).await?)
    }
}

fn no_run(reason: &str) -> Result<DispatchOutcome, JobError> {
    Ok(DispatchOutcome::NoRun {
        reason: reason.to_string(),
    })
}
