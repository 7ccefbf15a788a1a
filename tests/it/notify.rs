//! Progress comments end to end: the engine's Notifier with the app's forge sink, against the
//! real local forge and against the GitHub forge talking HTTP to a loopback server.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch};
use axum::{Json, Router};
use baton::config::Config;
use baton::forge::github::{GithubAuth, GithubConfig, GithubForge, RetryPolicy};
use baton::forge::local::LocalForge;
use baton::forge::{
    BoxFuture, CheckRun, Comment, Commit, Forge, Issue, IssueFilter, NewCheck, NewIssue,
    NewPullRequest, NewRelease, NewReview, Permission, PullRequest, PullRequestUpdate, Release,
    Repo, RepoInfo, Result, Review, StateFilter, Tag,
};
use baton_actors::definition::Dur;
use baton_actors::{Definition, Engine, EngineConfig, RunStatus, StepDef};
use serde_json::{json, Map, Value};

const MARKER: &str = ":progress -->";

/// The local forge, counting the comment calls made through it.
#[derive(Debug)]
struct Counting {
    inner: LocalForge,
    created: AtomicUsize,
    edited: AtomicUsize,
}

impl Forge for Counting {
    fn kind(&self) -> &'static str {
        "local"
    }
    fn identity<'a>(&'a self) -> BoxFuture<'a, Result<String>> {
        self.inner.identity()
    }
    fn repository<'a>(&'a self, repo: &'a Repo) -> BoxFuture<'a, Result<RepoInfo>> {
        self.inner.repository(repo)
    }
    fn issue<'a>(&'a self, repo: &'a Repo, number: u64) -> BoxFuture<'a, Result<Issue>> {
        self.inner.issue(repo, number)
    }
    fn comments<'a>(&'a self, repo: &'a Repo, number: u64) -> BoxFuture<'a, Result<Vec<Comment>>> {
        self.inner.comments(repo, number)
    }
    fn create_comment<'a>(
        &'a self,
        repo: &'a Repo,
        number: u64,
        body: &'a str,
    ) -> BoxFuture<'a, Result<Comment>> {
        self.created.fetch_add(1, Ordering::SeqCst);
        self.inner.create_comment(repo, number, body)
    }
    fn edit_comment<'a>(
        &'a self,
        repo: &'a Repo,
        comment_id: u64,
        body: &'a str,
    ) -> BoxFuture<'a, Result<Comment>> {
        self.edited.fetch_add(1, Ordering::SeqCst);
        self.inner.edit_comment(repo, comment_id, body)
    }
    fn create_pull_request<'a>(
        &'a self,
        repo: &'a Repo,
        new: &'a NewPullRequest,
    ) -> BoxFuture<'a, Result<PullRequest>> {
        self.inner.create_pull_request(repo, new)
    }
    fn update_pull_request<'a>(
        &'a self,
        repo: &'a Repo,
        number: u64,
        update: &'a PullRequestUpdate,
    ) -> BoxFuture<'a, Result<PullRequest>> {
        self.inner.update_pull_request(repo, number, update)
    }
    fn find_open_pull_request<'a>(
        &'a self,
        repo: &'a Repo,
        branch: &'a str,
    ) -> BoxFuture<'a, Result<Option<PullRequest>>> {
        self.inner.find_open_pull_request(repo, branch)
    }
    fn request_reviewers<'a>(
        &'a self,
        repo: &'a Repo,
        number: u64,
        reviewers: &'a [String],
    ) -> BoxFuture<'a, Result<()>> {
        self.inner.request_reviewers(repo, number, reviewers)
    }
    fn create_review<'a>(
        &'a self,
        repo: &'a Repo,
        number: u64,
        review: &'a NewReview,
    ) -> BoxFuture<'a, Result<Review>> {
        self.inner.create_review(repo, number, review)
    }
    fn add_labels<'a>(
        &'a self,
        repo: &'a Repo,
        number: u64,
        labels: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<String>>> {
        self.inner.add_labels(repo, number, labels)
    }
    fn delete_branch<'a>(&'a self, repo: &'a Repo, branch: &'a str) -> BoxFuture<'a, Result<()>> {
        self.inner.delete_branch(repo, branch)
    }
    fn close_pull_request<'a>(
        &'a self,
        repo: &'a Repo,
        number: u64,
    ) -> BoxFuture<'a, Result<PullRequest>> {
        self.inner.close_pull_request(repo, number)
    }
    fn commits_between<'a>(
        &'a self,
        repo: &'a Repo,
        base: &'a str,
        head: &'a str,
    ) -> BoxFuture<'a, Result<Vec<Commit>>> {
        self.inner.commits_between(repo, base, head)
    }
    fn release_by_tag<'a>(
        &'a self,
        repo: &'a Repo,
        tag: &'a str,
    ) -> BoxFuture<'a, Result<Option<Release>>> {
        self.inner.release_by_tag(repo, tag)
    }
    fn create_release<'a>(
        &'a self,
        repo: &'a Repo,
        new: &'a NewRelease,
    ) -> BoxFuture<'a, Result<Release>> {
        self.inner.create_release(repo, new)
    }
    fn update_release<'a>(
        &'a self,
        repo: &'a Repo,
        release_id: u64,
        new: &'a NewRelease,
    ) -> BoxFuture<'a, Result<Release>> {
        self.inner.update_release(repo, release_id, new)
    }
    fn permission<'a>(
        &'a self,
        repo: &'a Repo,
        user: &'a str,
    ) -> BoxFuture<'a, Result<Permission>> {
        self.inner.permission(repo, user)
    }
    fn issues<'a>(
        &'a self,
        repo: &'a Repo,
        filter: &'a IssueFilter,
    ) -> BoxFuture<'a, Result<Vec<Issue>>> {
        self.inner.issues(repo, filter)
    }
    fn create_issue<'a>(
        &'a self,
        repo: &'a Repo,
        new: &'a NewIssue,
    ) -> BoxFuture<'a, Result<Issue>> {
        self.inner.create_issue(repo, new)
    }
    fn pull_requests<'a>(
        &'a self,
        repo: &'a Repo,
        state: StateFilter,
    ) -> BoxFuture<'a, Result<Vec<PullRequest>>> {
        self.inner.pull_requests(repo, state)
    }
    fn pull_request<'a>(
        &'a self,
        repo: &'a Repo,
        number: u64,
    ) -> BoxFuture<'a, Result<PullRequest>> {
        self.inner.pull_request(repo, number)
    }
    fn reviews<'a>(&'a self, repo: &'a Repo, number: u64) -> BoxFuture<'a, Result<Vec<Review>>> {
        self.inner.reviews(repo, number)
    }
    fn review_comments<'a>(
        &'a self,
        repo: &'a Repo,
        number: u64,
    ) -> BoxFuture<'a, Result<Vec<baton::forge::ReviewComment>>> {
        self.inner.review_comments(repo, number)
    }
    fn edit_review<'a>(
        &'a self,
        repo: &'a Repo,
        number: u64,
        review_id: u64,
        body: &'a str,
    ) -> BoxFuture<'a, Result<Review>> {
        self.inner.edit_review(repo, number, review_id, body)
    }
    fn remove_label<'a>(
        &'a self,
        repo: &'a Repo,
        number: u64,
        label: &'a str,
    ) -> BoxFuture<'a, Result<()>> {
        self.inner.remove_label(repo, number, label)
    }
    fn tags<'a>(&'a self, repo: &'a Repo) -> BoxFuture<'a, Result<Vec<Tag>>> {
        self.inner.tags(repo)
    }
    fn publish_check<'a>(
        &'a self,
        repo: &'a Repo,
        check: &'a NewCheck,
    ) -> BoxFuture<'a, Result<CheckRun>> {
        self.inner.publish_check(repo, check)
    }
    fn checks_for<'a>(
        &'a self,
        repo: &'a Repo,
        sha: &'a str,
    ) -> BoxFuture<'a, Result<Vec<CheckRun>>> {
        self.inner.checks_for(repo, sha)
    }
    fn required_checks<'a>(
        &'a self,
        repo: &'a Repo,
        branch: &'a str,
    ) -> BoxFuture<'a, Result<Vec<String>>> {
        self.inner.required_checks(repo, branch)
    }
}

fn input(repo: &str, issue: u64) -> Map<String, Value> {
    json!({ "repo": repo, "issue": issue })
        .as_object()
        .cloned()
        .unwrap()
}

async fn settle(engine: &Engine, run: &str) -> baton_actors::RunRecord {
    tokio::time::timeout(Duration::from_secs(30), engine.settled(run))
        .await
        .expect("run settles in time")
        .unwrap()
}

/// Waits (a bound for a loaded machine, not a measurement) until `check` returns something.
async fn eventually<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_quick_steps_make_one_comment_edited_a_handful_of_times() {
    let dir = tempfile::tempdir().unwrap();
    let local = LocalForge::open(dir.path().join("forge"), "baton").unwrap();
    let repo = Repo::parse("octo/hello").unwrap();
    local.create_repo(&repo, "main", &[]).await.unwrap();
    let issue = local
        .create_issue_as(&repo, "alice", "Fix it", "please", &[])
        .await
        .unwrap()
        .number;
    let quiet = local
        .create_issue_as(&repo, "alice", "Another", "no progress here", &[])
        .await
        .unwrap()
        .number;
    let forge = Arc::new(Counting {
        inner: local,
        created: AtomicUsize::new(0),
        edited: AtomicUsize::new(0),
    });

    let engine = Engine::open(&dir.path().join("data"), EngineConfig::default())
        .await
        .unwrap();
    // The shipped defaults: the comment at most every 10 s.
    let config = Config::default();
    let notifier = baton::notify::start(&engine, &config, Some(forge.clone()), false)
        .await
        .unwrap();
    let mut def = Definition::builder("fifty")
        .name("Fifty steps")
        .progress(true)
        .required_input("repo")
        .required_input("issue");
    for i in 0..50 {
        let mut step = StepDef::action(format!("s{i}"), "noop")
            .description(format!("Step {i}"))
            .with("summary", format!("Did thing {i}"));
        if i == 49 {
            step = step.set("result", "all fifty done");
        }
        def = def.step(step);
    }
    engine.register_workflow(def.build(), "test").await.unwrap();
    let mut silent = Definition::builder("silent");
    for i in 0..5 {
        silent = silent.step(StepDef::action(format!("s{i}"), "noop"));
    }
    engine
        .register_workflow(silent.build(), "test")
        .await
        .unwrap();

    let run = engine
        .start("fifty", input("octo/hello", issue), None)
        .await
        .unwrap();
    let other = engine
        .start("silent", input("octo/hello", quiet), None)
        .await
        .unwrap();
    assert_eq!(settle(&engine, &run).await.status, RunStatus::Completed);
    assert_eq!(settle(&engine, &other).await.status, RunStatus::Completed);

    let body = eventually("the final progress comment", async || {
        let comments = forge.comments(&repo, issue).await.unwrap();
        comments
            .iter()
            .find(|c| c.body.contains("Workflow complete!"))
            .map(|c| c.body.clone())
    })
    .await;
    assert!(notifier.flush(Duration::from_secs(10)).await);
    let comments = forge.comments(&repo, issue).await.unwrap();
    let progress: Vec<_> = comments
        .iter()
        .filter(|c| c.body.contains(MARKER))
        .collect();
    assert_eq!(progress.len(), 1, "{comments:#?}");
    assert_eq!(forge.created.load(Ordering::SeqCst), 1);
    let edits = forge.edited.load(Ordering::SeqCst);
    assert!(edits <= 4, "{edits} edits for 50 steps");
    assert!(
        body.starts_with("✅ **Fifty steps**: Workflow complete! all fifty done"),
        "{body}"
    );
    for i in 0..50 {
        assert!(body.contains(&format!("- [x] Did thing {i}\n")), "{body}");
    }
    assert!(
        body.contains(&format!("<!-- baton:run={run}:progress -->")),
        "{body}"
    );
    // A workflow without `progress = true` gets no comment.
    assert!(forge.comments(&repo, quiet).await.unwrap().is_empty());
    engine.shutdown().await.unwrap();
}

/// A GitHub stand-in for one issue's comments, answering the first edit with 429.
#[derive(Default)]
struct FakeGithub {
    comments: Mutex<Vec<(u64, String)>>,
    posts: AtomicUsize,
    patches: AtomicUsize,
}

fn comment_json(id: u64, body: &str) -> Value {
    json!({
        "id": id,
        "user": { "login": "baton-bot" },
        "body": body,
        "created_at": "2026-01-01T00:00:00Z",
        "updated_at": "2026-01-01T00:00:00Z",
        "html_url": format!("https://github.example/octo/hello/issues/12#issuecomment-{id}"),
    })
}

async fn list(State(gh): State<Arc<FakeGithub>>) -> Json<Value> {
    let comments = gh.comments.lock().unwrap();
    Json(Value::Array(
        comments
            .iter()
            .map(|(id, b)| comment_json(*id, b))
            .collect(),
    ))
}

async fn create(State(gh): State<Arc<FakeGithub>>, Json(req): Json<Value>) -> Response {
    gh.posts.fetch_add(1, Ordering::SeqCst);
    let body = req["body"].as_str().unwrap_or_default().to_string();
    let mut comments = gh.comments.lock().unwrap();
    let id = 1000 + comments.len() as u64;
    comments.push((id, body.clone()));
    (StatusCode::CREATED, Json(comment_json(id, &body))).into_response()
}

async fn edit(
    State(gh): State<Arc<FakeGithub>>,
    Path((_, _, id)): Path<(String, String, u64)>,
    Json(req): Json<Value>,
) -> Response {
    if gh.patches.fetch_add(1, Ordering::SeqCst) == 0 {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", "1")],
            Json(json!({ "message": "You have exceeded a secondary rate limit." })),
        )
            .into_response();
    }
    let body = req["body"].as_str().unwrap_or_default().to_string();
    let mut comments = gh.comments.lock().unwrap();
    match comments.iter_mut().find(|(c, _)| *c == id) {
        Some((_, stored)) => {
            *stored = body.clone();
            Json(comment_json(id, &body)).into_response()
        }
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({ "message": "Not Found" })),
        )
            .into_response(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limited_edit_is_waited_out_and_nothing_is_duplicated() {
    let gh = Arc::new(FakeGithub::default());
    let app = Router::new()
        .route(
            "/repos/{owner}/{repo}/issues/{n}/comments",
            get(list).post(create),
        )
        .route("/repos/{owner}/{repo}/issues/comments/{id}", patch(edit))
        // Who the token is: the author of the comments it may edit.
        .route(
            "/user",
            get(|| async { Json(json!({ "login": "baton-bot" })) }),
        )
        .with_state(gh.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let github = GithubForge::new(GithubConfig {
        base_url: base,
        // The forge hands every rate limit to its caller here, so the notifier's own retry
        // (honouring Retry-After) is what waits it out.
        retry: RetryPolicy {
            max_rate_limit_wait: Duration::ZERO,
            ..RetryPolicy::default()
        },
        ..GithubConfig::new(GithubAuth::Token("test-token-not-secret".into()))
    })
    .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), EngineConfig::default())
        .await
        .unwrap();
    // An hour between edits: the waiting state, the retry after the 429 and the end must all
    // go out without waiting for the pace.
    let mut config = Config::default();
    config.notify.forge_interval = Dur(Duration::from_secs(3600));
    baton::notify::start(&engine, &config, Some(Arc::new(github)), false)
        .await
        .unwrap();
    let def = Definition::builder("gated")
        .progress(true)
        .required_input("repo")
        .required_input("issue")
        .step(StepDef::action("plan", "noop").with("summary", "Planned the change"))
        .step(StepDef::wait("approve_plan", "approve"))
        .step(StepDef::action("ship", "noop").with("summary", "Created PR #456"))
        .build();
    engine.register_workflow(def, "test").await.unwrap();
    let run = engine
        .start("gated", input("octo/hello", 12), None)
        .await
        .unwrap();
    let waiting = eventually("the waiting state on the comment", async || {
        let comments = gh.comments.lock().unwrap();
        comments
            .iter()
            .find(|(_, b)| b.contains("Waiting for approval to proceed..."))
            .map(|(_, b)| b.clone())
    })
    .await;
    assert!(waiting.contains("- [x] Planned the change\n"), "{waiting}");
    engine.signal(&run, "approve", Value::Null).await.unwrap();
    settle(&engine, &run).await;
    let done = eventually("the final state on the comment", async || {
        let comments = gh.comments.lock().unwrap();
        comments
            .iter()
            .find(|(_, b)| b.contains("Workflow complete!"))
            .map(|(_, b)| b.clone())
    })
    .await;
    assert!(done.contains("- [x] Created PR #456\n"), "{done}");
    assert_eq!(gh.posts.load(Ordering::SeqCst), 1, "one comment created");
    // The first edit was answered 429; at least one more edit got through after it.
    assert!(gh.patches.load(Ordering::SeqCst) >= 2);
    assert_eq!(gh.comments.lock().unwrap().len(), 1);
    engine.shutdown().await.unwrap();
}
