//! The github forge against Prism serving GitHub's own OpenAPI description: a call with a wrong
//! method, path, query or body gets an error from Prism (404/405/422) and fails its test.
//! Prism starts once for this binary (it takes ~15 s to load the description).

use crate::common_forge;

use std::time::Duration;

use baton::forge::github::{GithubAuth, GithubConfig, GithubForge, RetryPolicy};
use baton::forge::{
    DiffSide, Forge, IssueFilter, LineComment, NewIssue, NewPullRequest, NewRelease, NewReview,
    Permission, PullRequestUpdate, Repo, ReviewEvent, StateFilter,
};

/// The forge pointed at Prism, or `None` (reason printed) without the npm peers.
fn forge() -> Option<(GithubForge, Repo)> {
    forge_at(common_forge::prism()?)
}

/// The forge pointed at Prism; without Prism a failure (under `CI=true`, or unless
/// `BATON_ALLOW_SKIP=1`), or `None` after a loud skip.
fn required_forge(test: &str) -> Option<(GithubForge, Repo)> {
    forge_at(common_forge::require_prism(test)?)
}

fn forge_at(base: String) -> Option<(GithubForge, Repo)> {
    let mut config = GithubConfig::new(GithubAuth::Token("ghp_contracttoken".to_string().into()));
    config.base_url = base;
    // One attempt: a contract mismatch must surface, not be retried.
    config.retry = RetryPolicy {
        max_attempts: 1,
        ..RetryPolicy::default()
    };
    config.request_timeout = Duration::from_secs(20);
    let forge = GithubForge::new(config).expect("forge builds");
    Some((forge, Repo::parse("octocat/hello-world").unwrap()))
}

/// The forge at Prism. `common_forge::prism()` fails the test when Prism is missing (always under
/// `CI=true`); it gives `None`, and the test returns, only when `BATON_ALLOW_SKIP=1` asks to skip.
macro_rules! prism_forge {
    () => {
        match forge() {
            Some(f) => f,
            None => return,
        }
    };
}

#[tokio::test]
async fn prism_rejects_wrong_calls() {
    // The negative control: the mock is strict, so the tests below can fail.
    let Some(base) = common_forge::prism() else {
        return;
    };
    let client = reqwest::Client::new();
    let wrong_body = client
        .post(format!("{base}/repos/o/r/issues/1/comments"))
        .header("accept", "application/json")
        .json(&serde_json::json!({"bdy": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_body.status().as_u16(), 422, "a body without `body`");
    let wrong_method = client
        .put(format!("{base}/repos/o/r/issues/comments/1"))
        .header("accept", "application/json")
        .json(&serde_json::json!({"body": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        wrong_method.status().as_u16(),
        405,
        "editing a comment is PATCH"
    );
    let wrong_path = client
        .get(format!("{base}/repos/o/r/issue/1"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_path.status().as_u16(), 404);
    let vnd = client
        .get(format!("{base}/repos/o/r/issues/1"))
        .header("accept", "application/vnd.github.v3+json")
        .send()
        .await
        .unwrap();
    assert_eq!(
        vnd.status().as_u16(),
        406,
        "why the forge sends Accept: application/json"
    );
}

#[tokio::test]
async fn issues_and_comments() {
    let (forge, repo) = prism_forge!();
    let issue = forge.issue(&repo, 1347).await.expect("GET issue");
    assert!(issue.number > 0 && !issue.title.is_empty(), "{issue:?}");
    let comments = forge.comments(&repo, 1347).await.expect("GET comments");
    assert!(!comments.is_empty());
    let created = forge
        .create_comment(&repo, 1347, "hello")
        .await
        .expect("POST comment");
    assert!(created.id > 0);
    let edited = forge
        .edit_comment(&repo, created.id, "hello again")
        .await
        .expect("PATCH comment");
    assert!(edited.id > 0);
    // Prism's example comments carry no marker, so this creates.
    let upserted = forge
        .upsert_comment(&repo, 1347, "run-1", Some("progress"), "working")
        .await
        .expect("upsert comment");
    assert!(upserted.id > 0);
    let labels = forge
        .add_labels(&repo, 1347, &["baton".to_string(), "bug".to_string()])
        .await
        .expect("POST labels");
    assert!(!labels.is_empty());
}

#[tokio::test]
async fn pull_requests() {
    let (forge, repo) = prism_forge!();
    let new = NewPullRequest {
        title: "Fix the widget".into(),
        head: "baton/run-1".into(),
        base: "main".into(),
        body: "Tests: 12 passed".into(),
        draft: true,
    };
    let pr = forge
        .create_pull_request(&repo, &new)
        .await
        .expect("POST pulls");
    assert!(pr.number > 0 && !pr.head.is_empty() && !pr.base.is_empty());
    let update = PullRequestUpdate {
        title: Some("Fix the widget (2)".into()),
        body: Some("Tests: 13 passed".into()),
        ..PullRequestUpdate::default()
    };
    forge
        .update_pull_request(&repo, pr.number, &update)
        .await
        .expect("PATCH pull");
    // Prism's example pull request has another head, so none is found for ours...
    let found = forge
        .find_open_pull_request(&repo, "baton/run-1")
        .await
        .expect("GET pulls?head=");
    assert_eq!(found, None);
    // ...and ensure_pull_request creates one.
    forge
        .ensure_pull_request(&repo, "run-1", &new)
        .await
        .expect("ensure pull request");
    forge
        .request_reviewers(&repo, pr.number, &["octocat".to_string()])
        .await
        .expect("POST requested_reviewers");
    let review = NewReview {
        body: "Two remarks".into(),
        event: ReviewEvent::Comment,
        commit_id: Some("6dcb09b5b57875f334f61aebed695e2e4193db5e".into()),
        comments: vec![LineComment {
            path: "src/lib.rs".into(),
            line: 12,
            side: DiffSide::Right,
            body: "This unwrap can panic.".into(),
        }],
    };
    let posted = forge
        .create_review(&repo, pr.number, &review)
        .await
        .expect("POST reviews");
    assert!(posted.id > 0);
    forge
        .close_pull_request(&repo, pr.number)
        .await
        .expect("PATCH pull state=closed");
}

#[tokio::test]
async fn branches_commits_permissions() {
    let (forge, repo) = prism_forge!();
    forge
        .delete_branch(&repo, "baton/run-1")
        .await
        .expect("DELETE git/refs/heads/...");
    let commits = forge
        .commits_between(&repo, "v1.0.0", "main")
        .await
        .expect("GET compare");
    assert!(!commits.is_empty() && !commits[0].sha.is_empty());
    let permission = forge
        .permission(&repo, "octocat")
        .await
        .expect("GET collaborators/{user}/permission");
    assert_ne!(
        permission,
        Permission::None,
        "Prism's example is a real permission"
    );
}

#[tokio::test]
async fn releases() {
    let (forge, repo) = prism_forge!();
    let found = forge
        .release_by_tag(&repo, "v1.0.0")
        .await
        .expect("GET releases/tags/{tag}")
        .expect("Prism's example release");
    let new = NewRelease {
        tag: "v1.0.0".into(),
        name: "v1.0.0".into(),
        body: "Notes".into(),
        draft: false,
        prerelease: false,
    };
    let created = forge
        .create_release(&repo, &new)
        .await
        .expect("POST releases");
    assert!(created.id > 0);
    forge
        .update_release(&repo, found.id, &new)
        .await
        .expect("PATCH releases/{id}");
    forge
        .upsert_release(&repo, &new)
        .await
        .expect("upsert release");
}

macro_rules! forge_or_fail {
    ($test:literal) => {
        match required_forge($test) {
            Some(f) => f,
            None => return,
        }
    };
}

#[tokio::test]
async fn repository_lists_and_reads() {
    let (forge, repo) = forge_or_fail!("repository_lists_and_reads");
    let info = forge
        .repository(&repo)
        .await
        .expect("GET /repos/{owner}/{repo}");
    assert!(
        !info.clone_url.is_empty() && !info.default_branch.is_empty(),
        "{info:?}"
    );
    let filter = IssueFilter {
        state: StateFilter::All,
        labels: vec!["bug".into(), "ui".into()],
    };
    let issues = forge
        .issues(&repo, &filter)
        .await
        .expect("GET issues?state=all&labels=");
    assert!(issues.iter().all(|i| !i.is_pull_request), "{issues:?}");
    forge
        .issues(&repo, &IssueFilter::default())
        .await
        .expect("GET issues?state=open");
    let bad = IssueFilter {
        state: StateFilter::Open,
        labels: vec!["a,b".into()],
    };
    assert!(
        forge.issues(&repo, &bad).await.is_err(),
        "a comma cannot be sent"
    );
    for state in [StateFilter::Open, StateFilter::Closed, StateFilter::All] {
        let pulls = forge
            .pull_requests(&repo, state)
            .await
            .unwrap_or_else(|e| panic!("GET pulls?state={state}: {e}"));
        assert!(pulls.iter().all(|p| p.number > 0 && !p.head.is_empty()));
    }
    let pr = forge
        .pull_request(&repo, 1347)
        .await
        .expect("GET pulls/{n}");
    assert!(pr.number > 0 && !pr.base.is_empty(), "{pr:?}");
    // Whose pull request it is (`user.login`): what decides whether its code is trusted.
    assert!(!pr.author.is_empty(), "{pr:?}");
    let reviews = forge
        .reviews(&repo, 1347)
        .await
        .expect("GET pulls/{n}/reviews");
    assert!(
        reviews.iter().all(|r| r.id > 0 && !r.state.is_empty()),
        "{reviews:?}"
    );
    assert!(!reviews.is_empty(), "Prism's example lists a review");
    let line_comments = forge
        .review_comments(&repo, 1347)
        .await
        .expect("GET pulls/{n}/comments");
    assert!(
        !line_comments.is_empty()
            && line_comments
                .iter()
                .all(|c| c.id > 0 && !c.path.is_empty() && !c.author.is_empty()),
        "Prism's example lists a review comment with its file: {line_comments:?}"
    );
    let tags = forge.tags(&repo).await.expect("GET tags");
    assert!(
        !tags.is_empty() && tags.iter().all(|t| !t.name.is_empty() && !t.sha.is_empty()),
        "{tags:?}"
    );
}

#[tokio::test]
async fn issues_reviews_and_labels_are_written() {
    let (forge, repo) = forge_or_fail!("issues_reviews_and_labels_are_written");
    let issue = forge
        .create_issue(
            &repo,
            &NewIssue {
                title: "Found a bug".into(),
                body: "It crashes".into(),
                labels: vec!["bug".into()],
            },
        )
        .await
        .expect("POST issues");
    assert!(issue.number > 0, "{issue:?}");
    let edited = forge
        .edit_review(&repo, 1347, 80, "Updated summary")
        .await
        .expect("PUT pulls/{n}/reviews/{id}");
    assert!(edited.id > 0);
    let review = NewReview {
        body: "Looks good".into(),
        event: ReviewEvent::Comment,
        commit_id: None,
        comments: Vec::new(),
    };
    // Prism's example reviews carry no marker, so this posts one.
    let upserted = forge
        .upsert_review(&repo, 1347, "pr_review", &review)
        .await
        .expect("upsert review");
    assert!(upserted.id > 0);
    forge
        .remove_label(&repo, 1347, "needs triage")
        .await
        .expect("DELETE issues/{n}/labels/{name}");
}

/// baton's verification on a commit: a commit status with a token, a check run with its
/// annotations as an App (the only one GitHub lets create check runs), and both read back.
#[tokio::test]
async fn checks_are_published_and_read() {
    use baton::forge::checks::{Annotation, AnnotationLevel, Conclusion, BATON_CHECK};
    let (forge, repo) = prism_forge!();
    let sha = "6dcb09b5b57875f334f61aebed695e2e4193db5e";
    let new = baton::forge::NewCheck {
        name: BATON_CHECK.into(),
        head_sha: sha.into(),
        conclusion: Conclusion::Failure,
        title: "tests: 3 passed, 1 failed".into(),
        summary: "## Verification\n\n- ❌ tests: 3 passed, 1 failed\n".into(),
        details_url: Some("https://baton.example.com/runs/r1".into()),
        log: None,
        annotations: vec![Annotation {
            path: "src/lib.rs".into(),
            start_line: 7,
            end_line: 7,
            level: AnnotationLevel::Failure,
            message: "test `greets` panicked".into(),
        }],
    };
    let status = forge
        .publish_check(&repo, &new)
        .await
        .expect("POST statuses/{sha}");
    assert_eq!(status.head_sha, sha);
    let checks = forge
        .checks_for(&repo, sha)
        .await
        .expect("GET check-runs and status");
    assert!(
        !checks.is_empty(),
        "Prism's examples hold a check run and a status"
    );
    assert!(checks.iter().all(|c| !c.name.is_empty()), "{checks:?}");
    let required = forge
        .required_checks(&repo, "master")
        .await
        .expect("GET required_status_checks");
    assert!(!required.is_empty(), "Prism's example requires checks");
    let bad = forge.checks_for(&repo, "abc1234").await.unwrap_err();
    assert!(bad.to_string().contains("abc1234"), "{bad}");

    let tmp = tempfile::tempdir().unwrap();
    let key = crate::github_app::app_key(tmp.path());
    let mut config = GithubConfig::new(GithubAuth::App {
        app_id: 12345,
        private_key_pem: std::fs::read_to_string(&key).unwrap().into(),
        installation_id: Some(1),
    });
    config.base_url = common_forge::prism().expect("Prism is up");
    config.retry = RetryPolicy {
        max_attempts: 1,
        ..RetryPolicy::default()
    };
    let app = GithubForge::new(config).expect("the App forge builds");
    let run = app
        .publish_check(&repo, &new)
        .await
        .expect("POST check-runs with output and annotations");
    assert!(run.id > 0 && !run.name.is_empty(), "{run:?}");
}

#[tokio::test]
async fn an_actions_job_log_is_asked_for_as_github_describes_it() {
    let Some((forge, repo)) =
        required_forge("an_actions_job_log_is_asked_for_as_github_describes_it")
    else {
        return;
    };
    let check = baton::forge::CheckRun {
        id: 399_444_496,
        name: "test".into(),
        head_sha: "ce587453ced02b1526dfb4cb910479d431683101".into(),
        status: baton::forge::checks::CheckStatus::Completed,
        conclusion: Some(baton::forge::checks::Conclusion::Failure),
        title: String::new(),
        summary: String::new(),
        details_url: Some(
            "https://github.com/octocat/hello-world/actions/runs/29679449/job/399444496".into(),
        ),
        log: None,
        annotations: Vec::new(),
    };
    // Prism answers the call GitHub describes with its example redirect to Actions' log
    // storage, which this machine cannot reach: the error names that host, so the call was
    // valid and the redirect was followed (a wrong call is Prism's 404: no log, no error).
    let err = forge.check_log(&repo, &check).await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("the job log at pipelines.actions.githubusercontent.com"),
        "{text}"
    );
    assert!(
        !text.contains("urlSignature"),
        "the signed address stays out: {text}"
    );
}
