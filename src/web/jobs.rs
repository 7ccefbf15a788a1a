//! The daemon's [`JobSink`]: webhook jobs into the engine.
//!
//! A start becomes `Engine::start_job` with the job `github:<delivery id>`, so the engine's own
//! job record is the durable dedup (a redelivery starts nothing and [`JobSink::seen_delivery`]
//! finds it). A steering command finds the newest webhook-started run about the same repository
//! and issue or pull request number (`Engine::runs_about`, an index, not a scan) and goes
//! through [`backend::Command::apply`], the path the CLI and the API take; the steering delivery
//! is stored as a job too, so it is not applied twice. Each handled job also records its event's
//! identity (`github-event:<kind>/<hash>`, [`event_job_id`]), so that the same signed body sent
//! under a new delivery id starts and steers nothing ([`JobSink::seen_event`]).
//!
//! One run per issue or pull request and workflow: a start while one is in flight starts
//! nothing, except a new push to a pull request (`synchronize`), which cancels the stale review
//! in flight and starts one of the new head.
//!
//! Inputs a started run gets, from the delivery's subject: `repo` (`owner/name`) always;
//! `issue` (an issue); `pr`, `head`, `head_sha` (a pull request); `tag` (a tag or release).
//! A workflow that declares inputs gets only those it declares; one that declares none gets all.

use std::path::PathBuf;
use std::sync::Arc;

use baton_actors::{now_ms, Engine, Error as EngineError, Interface, Provenance, Workflow};
use serde_json::{json, Map, Value};

use crate::backend;
use crate::forge::{BoxFuture, Repo};
use crate::triggers::{self, Job, JobAction, Subject};
use crate::web::webhook::{DispatchOutcome, JobError, JobSink};
use crate::workflows::issue_to_pr;

/// The event of a push to a pull request: it replaces the review in flight instead of waiting.
const NEW_PUSH: &str = "pull_request.synchronize";

/// How long an event's identity keeps a copy of it from starting anything (a day). GitHub's own
/// redeliveries keep their delivery id, which is remembered for good.
const EVENT_MEMORY_MS: u64 = 24 * 60 * 60 * 1000;

/// The `source` of webhook jobs, and the prefix of their ids.
pub const SOURCE: &str = "github";

/// The engine's job id for a delivery.
pub fn job_id(delivery_id: &str) -> String {
    format!("{SOURCE}:{delivery_id}")
}

/// The engine's job id that records an event's identity (the delivery that carried it is in
/// its data): a replay under a new delivery id finds it.
pub fn event_job_id(identity: &triggers::EventIdentity) -> String {
    format!("{SOURCE}-event:{}", identity.key())
}

/// Webhook jobs into an engine. Cheap to clone.
#[derive(Clone)]
pub struct EngineJobs {
    engine: Engine,
    /// Held from "is a run in flight for this issue?" to the start, so two deliveries about one
    /// issue (opened with the label, then labeled; labeled and assigned) start one run.
    starts: Arc<tokio::sync::Mutex<()>>,
    /// Where a trigger's workflow is looked up when the store does not know it yet.
    workflow_dirs: Arc<[PathBuf]>,
    /// What a closed pull request's cleanup needs ([`EngineJobs::with_cleanup`]).
    cleanup: Option<lifecycle::Cleanup>,
}

mod lifecycle;

impl EngineJobs {
    /// A sink over `engine`; workflows the store does not know are registered from
    /// `workflow_dirs` on first use.
    pub fn new(engine: Engine, workflow_dirs: Vec<PathBuf>) -> EngineJobs {
        EngineJobs {
            engine,
            starts: Arc::default(),
            workflow_dirs: workflow_dirs.into(),
            cleanup: None,
        }
    }

    /// Deletes a merged pull request's branch through `forge` when `delete_branch_on_merge`.
    pub fn with_cleanup(
        mut self,
        forge: Arc<dyn crate::forge::Forge>,
        delete_branch_on_merge: bool,
    ) -> EngineJobs {
        self.cleanup = Some(lifecycle::Cleanup {
            forge,
            delete_branch_on_merge,
        });
        self
    }

    /// A `/baton review` comment carries no head commit: the pull request's head is read now,
    /// when the comment is received, and kept with the job, so that the review is of the
    /// commit the maintainer was looking at, not of whatever is pushed before the run reads
    /// the PR. Unread (no forge, a forge error), the review reads the head itself.
    async fn pin_head(&self, job: &mut Job) {
        let (
            Some(cleanup),
            Subject::PullRequest {
                number,
                head,
                head_sha,
            },
        ) = (&self.cleanup, &mut job.subject)
        else {
            return;
        };
        if !head_sha.is_empty() {
            return;
        }
        match cleanup.forge.pull_request(&job.repo, *number).await {
            Ok(pr) => {
                *head = pr.head;
                *head_sha = pr.head_sha;
            }
            Err(e) => tracing::warn!(
                repo = %job.repo,
                pr = number,
                "cannot read the pull request's head when the comment came ({e}); the review reads it when it starts"
            ),
        }
    }

    /// One open pull request per issue: with baton's pull request for the job's issue still
    /// open, an Issue → PR start does not start. A `/baton run` hears why (with a link), a
    /// label or assignment starts nothing quietly, and `/baton run --force` revises that pull
    /// request with the issue as the instructions. `None`: no such pull request, start.
    async fn open_pull_request_instead(
        &self,
        job: &Job,
        force: bool,
    ) -> Result<Option<DispatchOutcome>, JobError> {
        let (Some(cleanup), Subject::Issue { number }) = (&self.cleanup, &job.subject) else {
            return Ok(None);
        };
        let pr = match cleanup
            .forge
            .open_pull_request_for_issue(&job.repo, *number)
            .await
        {
            Ok(Some(pr)) => pr,
            Ok(None) => return Ok(None),
            // The run's own parse step asks again; a failure here does not lose the job.
            Err(e) => {
                tracing::warn!(repo = %job.repo, issue = number, error = %e,
                    "cannot look for baton's open pull request for the issue");
                return Ok(None);
            }
        };
        if force {
            // A run in flight for the issue comes first, --force or not (as on the CLI).
            if let Some(run) = self.in_flight(issue_to_pr::ID, job)? {
                return Ok(Some(DispatchOutcome::NoRun {
                    reason: format!(
                        "run {run} of `{}` is already in flight for {}#{number}",
                        issue_to_pr::ID,
                        job.repo
                    ),
                }));
            }
            let revision = Job {
                subject: Subject::PullRequest {
                    number: pr.number,
                    head: pr.head.clone(),
                    head_sha: pr.head_sha.clone(),
                },
                ..job.clone()
            };
            let title = match cleanup.forge.issue(&job.repo, *number).await {
                Ok(issue) => issue.title,
                Err(_) => String::new(),
            };
            let instructions = issue_to_pr::again_instructions(*number, &title);
            return self.revise(revision, instructions).await.map(Some);
        }
        let reason = format!(
            "baton's pull request #{} for {}#{number} is still open",
            pr.number, job.repo
        );
        if job.event.starts_with("issue_comment") {
            let reply = format!(
                "@{sender} baton's pull request #{pr} for this issue is still open: {url}\n\n\
                 Comment `/baton revise <what to change>` on it, or `/baton run --force` here to \
                 revise it with this issue as the instructions. Close it to start afresh.",
                sender = job.sender,
                pr = pr.number,
                url = pr.url,
            );
            if let Err(e) = cleanup
                .forge
                .create_comment(&job.repo, *number, &reply)
                .await
            {
                tracing::warn!(repo = %job.repo, issue = number, error = %e, "cannot post the reply");
            }
        }
        Ok(Some(DispatchOutcome::NoRun { reason }))
    }

    async fn workflow(&self, id: &str) -> Result<Arc<Workflow>, JobError> {
        match self.engine.workflow(id) {
            Ok(wf) => return Ok(wf),
            Err(EngineError::UnknownWorkflow(_)) => {}
            Err(e) => return Err(e.into()),
        }
        let Some((def, path)) = crate::workflows::files::workflow_files(&self.workflow_dirs)
            .into_iter()
            .find(|(def, _)| def.id == id)
        else {
            return Err(JobError::UnknownWorkflow(id.to_string()));
        };
        let provenance = Provenance::now(Interface::File, path.display().to_string());
        Ok(self.engine.register_workflow_from(def, provenance).await?)
    }

    async fn start(
        &self,
        mut job: Job,
        workflow: &str,
        force: bool,
    ) -> Result<DispatchOutcome, JobError> {
        let wf = self.workflow(workflow).await?;
        if wf.id() == issue_to_pr::ID {
            if let Some(outcome) = self.open_pull_request_instead(&job, force).await? {
                return Ok(outcome);
            }
        }
        self.pin_head(&mut job).await;
        let mut input = subject_input(&job.repo, &job.subject);
        if !wf.def.input.is_empty() {
            input.retain(|k, _| wf.def.input.contains_key(k));
        }
        let _one_at_a_time = self.starts.lock().await;
        if let Some(run) = self.in_flight(wf.id(), &job)? {
            if job.event != NEW_PUSH {
                return Ok(DispatchOutcome::NoRun {
                    reason: format!(
                        "run {run} of `{}` is already in flight for {}#{}",
                        wf.id(),
                        job.repo,
                        job.subject.conversation().unwrap_or_default()
                    ),
                });
            }
            // A new push makes the review in flight stale: it is cancelled and the new head
            // reviewed, as pr-agent and CodeRabbit users expect (the one review is edited).
            let by = format!("{} (github: a new push)", job.sender);
            match backend::Command::Cancel
                .apply(&self.engine, &run, &by)
                .await
            {
                Ok(()) => tracing::info!(%run, "stale review cancelled on a new push"),
                // Finished meanwhile: nothing to cancel.
                Err(failure) if failure.is_usage() => {}
                Err(failure) => return Err(failure.into()),
            }
        }
        let record = engine_job(&job, None);
        let (run_id, created) = self.engine.start_job(wf.id(), input, Some(record)).await?;
        Ok(if created {
            DispatchOutcome::Started { run_id }
        } else {
            DispatchOutcome::Duplicate
        })
    }

    async fn steer(
        &self,
        job: Job,
        command: triggers::Command,
    ) -> Result<DispatchOutcome, JobError> {
        let Some(number) = job.subject.conversation() else {
            return Ok(DispatchOutcome::NoRun {
                reason: "a command needs an issue or pull request".into(),
            });
        };
        let Some(run_id) = self.run_for(&job.repo, number)? else {
            return Ok(DispatchOutcome::NoRun {
                reason: format!("no run for {}#{number}", job.repo),
            });
        };
        // Stored first: a redelivery finds the job and does not steer the run a second time.
        let record = engine_job(&job, Some(run_id.clone()));
        self.engine.record_job(&record).await?;
        let by = format!("{} (github)", job.sender);
        match steering(command).apply(&self.engine, &run_id, &by).await {
            Ok(()) => Ok(DispatchOutcome::Steered { run_id }),
            Err(failure) if failure.is_usage() => Ok(DispatchOutcome::NoRun {
                reason: format!("run {run_id}: {}", failure.message),
            }),
            Err(failure) => Err(failure.into()),
        }
    }

    /// An unfinished run of `workflow` for the job's issue or pull request, however it was
    /// started (the engine's index of runs by issue or PR: no scan of every run).
    fn in_flight(&self, workflow: &str, job: &Job) -> Result<Option<String>, JobError> {
        if job.subject.conversation().is_none() {
            return Ok(None);
        }
        let about = job.subject.about(&job.repo);
        Ok(self.engine.in_flight(workflow, &about)?.map(|r| r.id))
    }

    /// The newest run started by a webhook job about `repo`'s issue or pull request `number`.
    fn run_for(&self, repo: &Repo, number: u64) -> Result<Option<String>, JobError> {
        Ok(self
            .engine
            .runs_about(&baton_actors::Subject::issue(repo.to_string(), number))?
            .into_iter()
            .find(|r| {
                r.job_id
                    .as_deref()
                    .is_some_and(|j| j.starts_with(&format!("{SOURCE}:")))
            })
            .map(|r| r.id))
    }
}

impl JobSink for EngineJobs {
    fn seen_delivery<'a>(&'a self, delivery_id: &'a str) -> BoxFuture<'a, Result<bool, JobError>> {
        Box::pin(async move { Ok(self.engine.job(&job_id(delivery_id))?.is_some()) })
    }

    fn seen_event<'a>(
        &'a self,
        identity: &'a triggers::EventIdentity,
    ) -> BoxFuture<'a, Result<bool, JobError>> {
        Box::pin(async move {
            // A replay comes soon after what it copies; past the window, an event that looks
            // the same is taken as a new one (a tag deleted and pushed again at its commit).
            Ok(self
                .engine
                .job(&event_job_id(identity))?
                .is_some_and(|seen| now_ms().saturating_sub(seen.created_at) < EVENT_MEMORY_MS))
        })
    }

    fn dispatch(&self, job: Job) -> BoxFuture<'_, Result<DispatchOutcome, JobError>> {
        Box::pin(async move {
            if self.seen_delivery(&job.delivery_id).await? {
                return Ok(DispatchOutcome::Duplicate);
            }
            if let Some(identity) = &job.identity {
                if self.seen_event(identity).await? {
                    return Ok(DispatchOutcome::Duplicate);
                }
            }
            let identity = job.identity.clone();
            let record = identity.as_ref().map(|identity| baton_actors::Job {
                id: event_job_id(identity),
                source: SOURCE.into(),
                event: job.event.clone(),
                sender: job.sender.clone(),
                data: json!({ "delivery": job.delivery_id, "identity": identity.to_string() }),
                run_id: None,
                created_at: now_ms(),
            });
            let outcome = match job.action.clone() {
                JobAction::Start { workflow } => self.start(job, &workflow, false).await,
                JobAction::StartOrRevise { workflow } => self.start(job, &workflow, true).await,
                JobAction::Steer { command } => self.steer(job, command).await,
                JobAction::Revise { instructions } => self.revise(job, instructions).await,
                JobAction::FixCi => self.fix_ci(job).await,
                JobAction::IssueClosed => self.issue_closed(job).await,
                JobAction::PullRequestClosed { merged } => {
                    self.pull_request_closed(job, merged).await
                }
            }?;
            // Recorded once handled (a failure above leaves the event free to be redelivered).
            if let Some(mut record) = record {
                record.run_id = match &outcome {
                    DispatchOutcome::Started { run_id } | DispatchOutcome::Steered { run_id } => {
                        Some(run_id.clone())
                    }
                    DispatchOutcome::Duplicate | DispatchOutcome::NoRun { .. } => None,
                };
                self.engine.record_job(&record).await?;
            }
            Ok(outcome)
        })
    }
}

/// The engine's record of a webhook job.
fn engine_job(job: &Job, run_id: Option<String>) -> baton_actors::Job {
    baton_actors::Job {
        id: job_id(&job.delivery_id),
        source: SOURCE.into(),
        event: job.event.clone(),
        sender: job.sender.clone(),
        data: json!({
            "repo": job.repo.to_string(),
            "subject": job.subject,
            "action": job.action,
        }),
        run_id,
        created_at: now_ms(),
    }
}

/// The run inputs a subject provides (see the module documentation).
pub fn subject_input(repo: &Repo, subject: &Subject) -> Map<String, Value> {
    let mut input = Map::new();
    input.insert("repo".into(), repo.to_string().into());
    match subject {
        Subject::Issue { number } => {
            input.insert("issue".into(), (*number).into());
        }
        Subject::PullRequest {
            number,
            head,
            head_sha,
        } => {
            input.insert("pr".into(), (*number).into());
            input.insert("head".into(), head.clone().into());
            input.insert("head_sha".into(), head_sha.clone().into());
        }
        Subject::Tag { name } => {
            input.insert("tag".into(), name.clone().into());
        }
    }
    input
}

/// A comment command as the engine command every other front end sends.
fn steering(command: triggers::Command) -> backend::Command {
    use triggers::Command as C;
    match command {
        C::Approve => backend::Command::Approve,
        C::Retry => backend::Command::Retry,
        C::Skip => backend::Command::Skip,
        C::Abort => backend::Command::Abort { mode: None },
        C::Rollback(request) => backend::Command::Rollback(request),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_from_subjects() {
        let repo = Repo::parse("octo/app").unwrap();
        let check = |subject: Subject, expected: Value| {
            assert_eq!(Value::Object(subject_input(&repo, &subject)), expected);
        };
        check(
            Subject::Issue { number: 7 },
            json!({"repo": "octo/app", "issue": 7}),
        );
        check(
            Subject::PullRequest {
                number: 8,
                head: "fix".into(),
                head_sha: "abc".into(),
            },
            json!({"repo": "octo/app", "pr": 8, "head": "fix", "head_sha": "abc"}),
        );
        check(
            Subject::Tag {
                name: "v1.0.0".into(),
            },
            json!({"repo": "octo/app", "tag": "v1.0.0"}),
        );
    }

    #[test]
    fn commands_map_onto_the_engine_commands() {
        use baton_actors::RollbackRequest;
        use triggers::Command as C;
        assert_eq!(steering(C::Approve), backend::Command::Approve);
        assert_eq!(steering(C::Abort), backend::Command::Abort { mode: None });
        assert_eq!(
            steering(C::Rollback(RollbackRequest::Steps(2))),
            backend::Command::Rollback(RollbackRequest::Steps(2))
        );
        assert_eq!(job_id("abc"), "github:abc");
    }
}
