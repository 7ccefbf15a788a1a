//! The forge sink: one progress comment per run on its issue, a checklist of the steps edited
//! in place. Only runs of workflows with `progress = true` whose input names the issue
//! (`repo` = "owner/name", `issue` = number) are reported.
//!
//! The comment carries the hidden marker `<!-- baton:run=ID:progress -->`. The notifier keeps
//! its id, so an update is one `edit_comment`; without an id (the first update, or a store that
//! lost it) or when the comment is gone, `Forge::upsert_comment` finds the marked comment or
//! makes it, so a crash between "comment made" and "id stored" never makes a second one.
//! This is the only comment the notifier makes for a run (a workflow posts its own summary).

use std::sync::Arc;

use baton_actors::{
    DeliveryState, RunRecord, Sink, SinkError, SinkFuture, SubjectKind, Update, Workflow,
};
use serde_json::json;

use crate::forge::{marker, with_marker, Error, Forge, Repo};

/// The marker key of the progress comment (`<!-- baton:run=ID:progress -->`).
pub const MARKER_KEY: &str = "progress";

/// Reports runs as a comment on their issue.
pub struct ForgeSink {
    forge: Arc<dyn Forge>,
    /// `[server] public_url`: the comment links to the run's page there.
    public_url: Option<String>,
}

impl ForgeSink {
    /// A sink over `forge`; its comments link to the run's page under `public_url`.
    pub fn new(forge: Arc<dyn Forge>, public_url: Option<String>) -> Self {
        ForgeSink { forge, public_url }
    }
}

/// The repository and issue a run is about, from its subject (progress goes to issues).
fn issue_about(run: &RunRecord) -> Option<(Repo, u64)> {
    let subject = run.subject.as_ref()?;
    if subject.kind != SubjectKind::Issue {
        return None;
    }
    Some((Repo::parse(&subject.repo).ok()?, subject.number?))
}

/// A forge error as the notifier sees it: rate limits and server errors are retried.
fn sink_error(e: Error) -> SinkError {
    match &e {
        Error::RateLimited { wait, .. } => SinkError::retry_after(e.to_string(), *wait),
        _ if e.is_retryable() => SinkError::retryable(e.to_string()),
        _ => SinkError::fatal(e.to_string()),
    }
}

impl Sink for ForgeSink {
    fn name(&self) -> &str {
        "forge"
    }

    fn target(&self, run: &RunRecord, workflow: &Workflow) -> Option<String> {
        if !workflow.def.progress {
            return None;
        }
        let (repo, issue) = issue_about(run)?;
        Some(format!("{repo}#{issue}"))
    }

    fn deliver<'a>(
        &'a self,
        update: &'a Update,
        previous: Option<&'a DeliveryState>,
    ) -> SinkFuture<'a> {
        Box::pin(async move {
            let (repo, issue) = issue_about(&update.run)
                .ok_or_else(|| SinkError::fatal("the run's input names no repo and issue"))?;
            let marker = marker(&update.run.id, Some(MARKER_KEY)).map_err(sink_error)?;
            let body = with_marker(
                &super::render::checklist(update, self.public_url.as_deref()),
                &marker,
            );
            if let Some(previous) = previous {
                if previous.body == body && !previous.message_id.is_null() {
                    return Ok(previous.clone());
                }
            }
            let edited = match previous.and_then(|p| p.message_id.as_u64()) {
                Some(id) => match self.forge.edit_comment(&repo, id, &body).await {
                    Ok(comment) => Some(comment),
                    // Deleted by someone: make it again (upsert finds none, or a copy).
                    Err(e) if e.is_not_found() => None,
                    Err(e) => return Err(sink_error(e)),
                },
                None => None,
            };
            let comment = match edited {
                Some(comment) => comment,
                None => self
                    .forge
                    .upsert_comment(&repo, issue, &update.run.id, Some(MARKER_KEY), &body)
                    .await
                    .map_err(sink_error)?,
            };
            Ok(DeliveryState {
                message_id: json!(comment.id),
                body,
                extra: json!({ "url": comment.url }),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use baton_actors::Subject;
    use std::time::Duration;

    #[test]
    fn the_issue_comes_from_the_subject() {
        let mut run = RunRecord::new("r".into(), std::iter::empty(), 0);
        assert!(issue_about(&run).is_none());
        run.subject = Some(Subject::issue("octo/hello", 12));
        assert_eq!(
            issue_about(&run),
            Some((Repo::parse("octo/hello").unwrap(), 12))
        );
        run.subject = Some(Subject::pull_request("octo/hello", 7));
        assert!(issue_about(&run).is_none(), "progress goes to issues");
        run.subject = Some(Subject::repository("octo/hello"));
        assert!(issue_about(&run).is_none());
        run.subject = Some(Subject::issue("not a repo", 7));
        assert!(issue_about(&run).is_none());
    }

    #[test]
    fn forge_errors_map_to_retries() {
        let limited = Error::RateLimited {
            method: "PATCH".into(),
            path: "/x".into(),
            wait: Duration::from_secs(30),
        };
        assert!(matches!(
            sink_error(limited),
            SinkError::Retryable { retry_after: Some(w), .. } if w == Duration::from_secs(30)
        ));
        let api = |status| Error::Api {
            method: "PATCH".into(),
            path: "/x".into(),
            status,
            message: "m".into(),
        };
        assert!(matches!(
            sink_error(api(502)),
            SinkError::Retryable {
                retry_after: None,
                ..
            }
        ));
        assert!(matches!(sink_error(api(403)), SinkError::Fatal { .. }));
    }
}
