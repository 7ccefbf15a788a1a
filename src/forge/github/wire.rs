//! GitHub's JSON as far as the forge reads it, and its conversion into the forge's own types.
//! Optional where GitHub may send null.

use super::*;

#[derive(Deserialize)]
pub(super) struct GhUser {
    pub(super) login: String,
}

#[derive(Deserialize)]
pub(super) struct GhRepository {
    pub(super) full_name: String,
    pub(super) clone_url: String,
    pub(super) default_branch: String,
    pub(super) html_url: String,
}

#[derive(Deserialize)]
pub(super) struct GhLabel {
    pub(super) name: String,
}

#[derive(Deserialize)]
pub(super) struct GhIssue {
    pub(super) number: u64,
    pub(super) title: String,
    pub(super) body: Option<String>,
    pub(super) state: String,
    pub(super) user: Option<GhUser>,
    #[serde(default)]
    pub(super) labels: Vec<GhLabel>,
    #[serde(default)]
    pub(super) assignees: Option<Vec<GhUser>>,
    pub(super) html_url: String,
    pub(super) pull_request: Option<Value>,
}

impl From<GhIssue> for Issue {
    fn from(i: GhIssue) -> Issue {
        Issue {
            number: i.number,
            title: i.title,
            body: i.body.unwrap_or_default(),
            state: i.state,
            author: i.user.map(|u| u.login).unwrap_or_default(),
            labels: i.labels.into_iter().map(|l| l.name).collect(),
            assignees: i
                .assignees
                .unwrap_or_default()
                .into_iter()
                .map(|u| u.login)
                .collect(),
            url: i.html_url,
            is_pull_request: i.pull_request.is_some(),
        }
    }
}

#[derive(Deserialize)]
pub(super) struct GhComment {
    pub(super) id: u64,
    pub(super) user: Option<GhUser>,
    pub(super) body: Option<String>,
    pub(super) created_at: String,
    pub(super) updated_at: String,
    pub(super) html_url: String,
}

impl From<GhComment> for Comment {
    fn from(c: GhComment) -> Comment {
        Comment {
            id: c.id,
            author: c.user.map(|u| u.login).unwrap_or_default(),
            body: c.body.unwrap_or_default(),
            created_at: c.created_at,
            updated_at: c.updated_at,
            url: c.html_url,
        }
    }
}

#[derive(Deserialize)]
pub(super) struct GhRef {
    #[serde(rename = "ref")]
    pub(super) name: String,
    pub(super) sha: String,
    /// Null when the head's fork was deleted.
    #[serde(default)]
    pub(super) repo: Option<GhRefRepo>,
}

#[derive(Deserialize)]
pub(super) struct GhRefRepo {
    pub(super) full_name: String,
}

#[derive(Deserialize)]
pub(super) struct GhPull {
    pub(super) number: u64,
    pub(super) title: String,
    pub(super) body: Option<String>,
    pub(super) state: String,
    #[serde(default)]
    pub(super) draft: Option<bool>,
    #[serde(default)]
    pub(super) merged: Option<bool>,
    pub(super) merged_at: Option<String>,
    #[serde(default)]
    pub(super) user: Option<GhUser>,
    pub(super) head: GhRef,
    pub(super) base: GhRef,
    pub(super) html_url: String,
}

impl From<GhPull> for PullRequest {
    fn from(p: GhPull) -> PullRequest {
        PullRequest {
            number: p.number,
            title: p.title,
            body: p.body.unwrap_or_default(),
            state: p.state,
            draft: p.draft.unwrap_or(false),
            merged: p.merged.unwrap_or(false) || p.merged_at.is_some(),
            author: p.user.map(|u| u.login).unwrap_or_default(),
            head_repo: p.head.repo.map(|r| r.full_name),
            head: p.head.name,
            head_sha: p.head.sha,
            base: p.base.name,
            url: p.html_url,
        }
    }
}

#[derive(Deserialize)]
pub(super) struct GhReview {
    pub(super) id: u64,
    pub(super) user: Option<GhUser>,
    pub(super) body: Option<String>,
    pub(super) state: String,
    pub(super) html_url: String,
}

impl From<GhReview> for Review {
    fn from(r: GhReview) -> Review {
        Review {
            id: r.id,
            author: r.user.map(|u| u.login).unwrap_or_default(),
            body: r.body.unwrap_or_default(),
            state: r.state,
            url: r.html_url,
        }
    }
}

#[derive(Deserialize)]
pub(super) struct GhReviewComment {
    pub(super) id: u64,
    pub(super) pull_request_review_id: Option<u64>,
    pub(super) user: Option<GhUser>,
    pub(super) path: String,
    pub(super) line: Option<u64>,
    pub(super) body: String,
}

impl From<GhReviewComment> for ReviewComment {
    fn from(c: GhReviewComment) -> ReviewComment {
        ReviewComment {
            id: c.id,
            review_id: c.pull_request_review_id,
            author: c.user.map(|u| u.login).unwrap_or_default(),
            path: c.path,
            line: c.line,
            body: c.body,
        }
    }
}

#[derive(Deserialize)]
pub(super) struct GhTag {
    pub(super) name: String,
    pub(super) commit: GhTagCommit,
}

#[derive(Deserialize)]
pub(super) struct GhTagCommit {
    pub(super) sha: String,
}

#[derive(Deserialize)]
pub(super) struct GhCompare {
    pub(super) total_commits: usize,
    pub(super) commits: Vec<GhCommit>,
}

#[derive(Deserialize)]
pub(super) struct GhCommit {
    pub(super) sha: String,
    pub(super) commit: GhCommitDetail,
    pub(super) author: Option<GhUser>,
}

#[derive(Deserialize)]
pub(super) struct GhCommitDetail {
    pub(super) message: String,
    pub(super) author: Option<GhGitAuthor>,
}

#[derive(Deserialize)]
pub(super) struct GhGitAuthor {
    pub(super) name: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct GhRelease {
    pub(super) id: u64,
    pub(super) tag_name: String,
    pub(super) name: Option<String>,
    pub(super) body: Option<String>,
    pub(super) draft: bool,
    pub(super) prerelease: bool,
    pub(super) html_url: String,
}

impl From<GhRelease> for Release {
    fn from(r: GhRelease) -> Release {
        Release {
            id: r.id,
            tag: r.tag_name,
            name: r.name.unwrap_or_default(),
            body: r.body.unwrap_or_default(),
            draft: r.draft,
            prerelease: r.prerelease,
            url: r.html_url,
        }
    }
}

pub(super) fn release_body(new: &NewRelease) -> Value {
    json!({
        "tag_name": new.tag,
        "name": new.name,
        "body": new.body,
        "draft": new.draft,
        "prerelease": new.prerelease,
    })
}

/// `POST /repos/{o}/{r}/check-runs`: a completed check run with its output. GitHub refuses a
/// summary over 65,535 characters and more than 50 annotations in one request.
pub(super) fn check_run_body(check: &NewCheck) -> Value {
    let annotations: Vec<Value> = check
        .annotations
        .iter()
        .take(checks::MAX_ANNOTATIONS)
        .map(|a| {
            json!({
                "path": a.path,
                "start_line": a.start_line,
                "end_line": a.end_line.max(a.start_line),
                "annotation_level": match a.level {
                    checks::AnnotationLevel::Notice => "notice",
                    checks::AnnotationLevel::Warning => "warning",
                    checks::AnnotationLevel::Failure => "failure",
                },
                "message": checks::cut(&a.message, 64_000),
            })
        })
        .collect();
    let title = if check.title.trim().is_empty() {
        check.name.clone()
    } else {
        checks::cut(&check.title, 1_000)
    };
    let mut body = json!({
        "name": check.name,
        "head_sha": check.head_sha,
        "status": "completed",
        "conclusion": check.conclusion.as_str(),
        "completed_at": crate::timestamp::now_rfc3339_secs(),
        "output": {
            "title": title,
            "summary": checks::cut(&check.summary, checks::MAX_SUMMARY_CHARS),
            "annotations": annotations,
        },
    });
    if let Some(url) = &check.details_url {
        body["details_url"] = json!(url);
    }
    body
}

/// `POST /repos/{o}/{r}/statuses/{sha}`: the check as a commit status (`success` or `failure`,
/// a description of at most 140 characters, the name as its context).
pub(super) fn status_body(check: &NewCheck) -> Value {
    let description = if check.title.trim().is_empty() {
        check.conclusion.as_str().to_string()
    } else {
        check.title.clone()
    };
    let mut body = json!({
        "state": if check.conclusion.passed() { "success" } else { "failure" },
        "description": checks::cut(&description, checks::MAX_STATUS_DESCRIPTION),
        "context": check.name,
    });
    if let Some(url) = &check.details_url {
        body["target_url"] = json!(url);
    }
    body
}

#[derive(Deserialize)]
pub(super) struct GhCheckOutput {
    pub(super) title: Option<String>,
    pub(super) summary: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct GhCheckRun {
    pub(super) id: u64,
    pub(super) name: String,
    pub(super) head_sha: String,
    pub(super) status: String,
    pub(super) conclusion: Option<String>,
    pub(super) details_url: Option<String>,
    pub(super) html_url: Option<String>,
    pub(super) output: Option<GhCheckOutput>,
}

impl From<GhCheckRun> for CheckRun {
    fn from(r: GhCheckRun) -> CheckRun {
        // `queued`, `in_progress`, and the states a run waits in (`waiting`, `requested`,
        // `pending`) are all "not finished yet".
        let status = match r.status.as_str() {
            "completed" => CheckStatus::Completed,
            "queued" => CheckStatus::Queued,
            _ => CheckStatus::InProgress,
        };
        let conclusion = r.conclusion.as_deref().map(|c| {
            c.parse::<Conclusion>()
                // A conclusion GitHub adds later is not a pass baton can vouch for.
                .unwrap_or(Conclusion::Failure)
        });
        let (title, summary) = r
            .output
            .map(|o| (o.title.unwrap_or_default(), o.summary.unwrap_or_default()))
            .unwrap_or_default();
        CheckRun {
            id: r.id,
            name: r.name,
            head_sha: r.head_sha,
            status,
            conclusion: if status == CheckStatus::Completed {
                conclusion
            } else {
                None
            },
            title,
            summary,
            details_url: r.details_url.or(r.html_url),
            log: None,
            annotations: Vec::new(),
        }
    }
}

#[derive(Deserialize)]
pub(super) struct GhCheckRuns {
    pub(super) check_runs: Vec<GhCheckRun>,
}

#[derive(Deserialize)]
pub(super) struct GhStatus {
    pub(super) id: u64,
    pub(super) state: String,
    pub(super) description: Option<String>,
    pub(super) target_url: Option<String>,
    pub(super) context: String,
}

impl GhStatus {
    /// A commit status as a check on `sha`: `pending` is unfinished, `error` a failure.
    pub(super) fn into_check(self, sha: &str) -> CheckRun {
        let (status, conclusion) = match self.state.as_str() {
            "pending" => (CheckStatus::InProgress, None),
            "success" => (CheckStatus::Completed, Some(Conclusion::Success)),
            _ => (CheckStatus::Completed, Some(Conclusion::Failure)),
        };
        CheckRun {
            id: self.id,
            name: self.context,
            head_sha: sha.to_string(),
            status,
            conclusion,
            title: self.description.unwrap_or_default(),
            summary: String::new(),
            details_url: self.target_url,
            log: None,
            annotations: Vec::new(),
        }
    }
}

#[derive(Deserialize)]
pub(super) struct GhCombinedStatus {
    #[serde(default)]
    pub(super) statuses: Vec<GhStatus>,
}
