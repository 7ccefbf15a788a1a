//! The local forge as a workflow uses it: through `Arc<dyn Forge>`, with a real bare git remote.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use baton::forge::local::LocalForge;
use baton::forge::{
    DiffSide, Error, Forge, IssueFilter, LineComment, NewIssue, NewPullRequest, NewRelease,
    NewReview, Permission, Repo, ReviewEvent, StateFilter,
};

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "Ada")
        .env("GIT_AUTHOR_EMAIL", "ada@example.com")
        .env("GIT_COMMITTER_NAME", "Ada")
        .env("GIT_COMMITTER_EMAIL", "ada@example.com")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A forge with repository `octo/app`: `main` with one commit, `baton/run-1` two commits ahead.
async fn setup() -> (tempfile::TempDir, Arc<LocalForge>, Repo) {
    let tmp = tempfile::tempdir().unwrap();
    let forge = Arc::new(LocalForge::open(tmp.path().join("forge"), "baton-bot").unwrap());
    let repo = Repo::parse("octo/app").unwrap();
    forge.create_repo(&repo, "main", &["ada"]).await.unwrap();
    let work = tmp.path().join("work");
    std::fs::create_dir(&work).unwrap();
    git(&work, &["init", "--quiet", "--initial-branch=main"]);
    std::fs::write(work.join("README"), "hello\n").unwrap();
    git(&work, &["add", "README"]);
    git(&work, &["commit", "--quiet", "-m", "Initial commit"]);
    let remote = forge.remote(&repo);
    git(
        &work,
        &["push", "--quiet", remote.to_str().unwrap(), "main"],
    );
    git(&work, &["checkout", "--quiet", "-b", "baton/run-1"]);
    std::fs::write(work.join("fix.txt"), "fix\n").unwrap();
    git(&work, &["add", "fix.txt"]);
    git(
        &work,
        &[
            "commit",
            "--quiet",
            "-m",
            "Fix the widget\n\nIt was broken.",
        ],
    );
    std::fs::write(work.join("test.txt"), "test\n").unwrap();
    git(&work, &["add", "test.txt"]);
    git(&work, &["commit", "--quiet", "-m", "Add a test"]);
    git(
        &work,
        &["push", "--quiet", remote.to_str().unwrap(), "baton/run-1"],
    );
    (tmp, forge, repo)
}

fn new_pr(title: &str, body: &str) -> NewPullRequest {
    NewPullRequest {
        title: title.into(),
        head: "baton/run-1".into(),
        base: "main".into(),
        body: body.into(),
        draft: true,
    }
}

#[tokio::test]
async fn comments_are_upserted_by_marker() {
    let (_tmp, local, repo) = setup().await;
    let forge: Arc<dyn Forge> = local.clone();
    let issue = local
        .create_issue_as(&repo, "ada", "Widget broken", "It fails", &["baton".into()])
        .await
        .unwrap();
    assert_eq!(forge.issue(&repo, issue.number).await.unwrap(), issue);

    let first = forge
        .upsert_comment(
            &repo,
            issue.number,
            "run-1",
            Some("progress"),
            "Step 1 of 3",
        )
        .await
        .unwrap();
    assert_eq!(
        first.body,
        "Step 1 of 3\n\n<!-- baton:run=run-1:progress -->"
    );
    // A resumed step: same run and key, new text: the same comment, edited.
    let second = forge
        .upsert_comment(
            &repo,
            issue.number,
            "run-1",
            Some("progress"),
            "Step 2 of 3",
        )
        .await
        .unwrap();
    assert_eq!(second.id, first.id);
    // A person quotes the marker in a later comment: never baton's to edit.
    let quoted = local
        .create_comment_as(
            &repo,
            issue.number,
            "ada",
            "baton said: <!-- baton:run=run-1:progress -->",
        )
        .await
        .unwrap();
    let after_quote = forge
        .upsert_comment(
            &repo,
            issue.number,
            "run-1",
            Some("progress"),
            "Step 2 of 3",
        )
        .await
        .unwrap();
    assert_eq!(after_quote.id, first.id);
    let ada = forge
        .comments(&repo, issue.number)
        .await
        .unwrap()
        .into_iter()
        .find(|c| c.id == quoted.id)
        .unwrap();
    assert_eq!(ada.body, quoted.body, "a person's comment was edited");
    // Same text again: nothing written.
    let third = forge
        .upsert_comment(
            &repo,
            issue.number,
            "run-1",
            Some("progress"),
            "Step 2 of 3",
        )
        .await
        .unwrap();
    assert_eq!(third, second);
    // Another key and another run are other comments.
    forge
        .upsert_comment(&repo, issue.number, "run-1", Some("result"), "Done")
        .await
        .unwrap();
    forge
        .upsert_comment(&repo, issue.number, "run-2", None, "Other run")
        .await
        .unwrap();
    let comments = forge.comments(&repo, issue.number).await.unwrap();
    let bodies: Vec<&str> = comments.iter().map(|c| c.body.as_str()).collect();
    assert_eq!(
        bodies,
        [
            "Step 2 of 3\n\n<!-- baton:run=run-1:progress -->",
            "baton said: <!-- baton:run=run-1:progress -->",
            "Done\n\n<!-- baton:run=run-1:result -->",
            "Other run\n\n<!-- baton:run=run-2 -->",
        ]
    );
    assert!(comments
        .iter()
        .all(|c| c.author == "baton-bot" || c.id == quoted.id));
    let labels = forge
        .add_labels(&repo, issue.number, &["baton".into(), "in-progress".into()])
        .await
        .unwrap();
    assert_eq!(labels, ["baton", "in-progress"]);
    assert!(forge
        .edit_comment(&repo, 999, "x")
        .await
        .unwrap_err()
        .is_not_found());
    assert!(forge.issue(&repo, 999).await.unwrap_err().is_not_found());
}

#[tokio::test]
async fn pull_requests_and_reviews_can_be_made_as_another_user() {
    let (_tmp, local, repo) = setup().await;
    let forge: Arc<dyn Forge> = local.clone();
    let fork = Repo::parse("mallory/app").unwrap();
    let pr = local
        .create_pull_request_as(&repo, "mallory", Some(&fork), &new_pr("Mine", "b"))
        .await
        .unwrap();
    let read = forge.pull_request(&repo, pr.number).await.unwrap();
    assert_eq!(read.author, "mallory");
    assert_eq!(read.head_repo.as_deref(), Some("mallory/app"));
    assert_eq!(
        forge.issue(&repo, pr.number).await.unwrap().author,
        "mallory"
    );
    let review = NewReview {
        body: "Change this.".into(),
        event: ReviewEvent::RequestChanges,
        commit_id: None,
        comments: vec![LineComment {
            path: "README.md".into(),
            line: 1,
            side: DiffSide::Right,
            body: "here".into(),
        }],
    };
    local
        .create_review_as(&repo, pr.number, "mallory", &review)
        .await
        .unwrap();
    let reviews = forge.reviews(&repo, pr.number).await.unwrap();
    assert_eq!(reviews[0].author, "mallory");
    assert_eq!(reviews[0].state, "CHANGES_REQUESTED");
    let comments = forge.review_comments(&repo, pr.number).await.unwrap();
    assert_eq!(comments[0].author, "mallory");
}

#[tokio::test]
async fn pull_requests_are_ensured_by_head_branch() {
    let (_tmp, local, repo) = setup().await;
    let forge: Arc<dyn Forge> = local.clone();
    let issue = local
        .create_issue_as(&repo, "ada", "t", "b", &[])
        .await
        .unwrap();

    let pr = forge
        .ensure_pull_request(&repo, "run-1", &new_pr("Fix the widget", "Tests: 1 passed"))
        .await
        .unwrap();
    assert_eq!(pr.number, issue.number + 1, "issues and PRs share numbers");
    assert!(pr.draft);
    assert_eq!(pr.body, "Tests: 1 passed\n\n<!-- baton:run=run-1 -->");
    assert_eq!(pr.head_sha.len(), 40);
    // Retried step: the same PR, updated.
    let again = forge
        .ensure_pull_request(&repo, "run-1", &new_pr("Fix the widget", "Tests: 2 passed"))
        .await
        .unwrap();
    assert_eq!(again.number, pr.number);
    assert_eq!(again.body, "Tests: 2 passed\n\n<!-- baton:run=run-1 -->");
    assert_eq!(
        forge
            .find_open_pull_request(&repo, "baton/run-1")
            .await
            .unwrap(),
        Some(again.clone())
    );
    // A second create for the same head is refused, as on GitHub.
    let dup = forge
        .create_pull_request(&repo, &new_pr("x", "y"))
        .await
        .unwrap_err();
    assert!(dup.to_string().contains("already exists"), "{dup}");
    // The PR's conversation is an issue.
    let as_issue = forge.issue(&repo, pr.number).await.unwrap();
    assert!(as_issue.is_pull_request);
    assert_eq!(as_issue.body, again.body);
    // Opened by the forge's own login, on a branch of the repository itself.
    assert_eq!(pr.author, "baton-bot");
    assert_eq!(as_issue.author, "baton-bot");
    assert_eq!(pr.head_repo.as_deref(), Some(repo.to_string().as_str()));

    forge
        .request_reviewers(&repo, pr.number, &["ada".into()])
        .await
        .unwrap();
    let review = forge
        .create_review(
            &repo,
            pr.number,
            &NewReview {
                body: "One remark".into(),
                event: ReviewEvent::RequestChanges,
                commit_id: None,
                comments: vec![LineComment {
                    path: "fix.txt".into(),
                    line: 1,
                    side: DiffSide::Right,
                    body: "typo".into(),
                }],
            },
        )
        .await
        .unwrap();
    assert_eq!(review.state, "CHANGES_REQUESTED");

    let closed = forge.close_pull_request(&repo, pr.number).await.unwrap();
    assert_eq!(closed.state, "closed");
    assert_eq!(
        forge
            .find_open_pull_request(&repo, "baton/run-1")
            .await
            .unwrap(),
        None
    );
    let reopened = forge
        .ensure_pull_request(&repo, "run-1", &new_pr("Fix the widget", "Again"))
        .await
        .unwrap();
    assert_ne!(reopened.number, pr.number, "a closed PR is not reused");

    let missing = NewPullRequest {
        head: "nope".into(),
        ..new_pr("t", "b")
    };
    let err = forge
        .create_pull_request(&repo, &missing)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("push it first"), "{err}");
}

#[tokio::test]
async fn branches_and_commits_come_from_the_bare_remote() {
    let (_tmp, local, repo) = setup().await;
    let forge: Arc<dyn Forge> = local.clone();
    let commits = forge
        .commits_between(&repo, "main", "baton/run-1")
        .await
        .unwrap();
    let messages: Vec<&str> = commits.iter().map(|c| c.message.as_str()).collect();
    assert_eq!(messages, ["Fix the widget\n\nIt was broken.", "Add a test"]);
    assert!(commits
        .iter()
        .all(|c| c.author_name == "Ada" && c.sha.len() == 40));
    assert!(forge
        .commits_between(&repo, "main", "main")
        .await
        .unwrap()
        .is_empty());
    assert!(forge.commits_between(&repo, "--all", "main").await.is_err());

    forge.delete_branch(&repo, "baton/run-1").await.unwrap();
    let heads = git(&local.remote(&repo), &["branch", "--list"]);
    assert!(!heads.contains("baton/run-1"), "{heads}");
    // Deleting again is fine; a bad name is not.
    forge.delete_branch(&repo, "baton/run-1").await.unwrap();
    assert!(matches!(
        forge.delete_branch(&repo, "-f").await,
        Err(Error::Invalid(_))
    ));
}

#[tokio::test]
async fn releases_and_permissions() {
    let (_tmp, local, repo) = setup().await;
    let forge: Arc<dyn Forge> = local.clone();
    let new = NewRelease {
        tag: "v1.0.0".into(),
        name: "v1.0.0".into(),
        body: "First".into(),
        draft: true,
        prerelease: false,
    };
    assert_eq!(forge.release_by_tag(&repo, "v1.0.0").await.unwrap(), None);
    let first = forge.upsert_release(&repo, &new).await.unwrap();
    let second = forge
        .upsert_release(
            &repo,
            &NewRelease {
                body: "Second".into(),
                draft: false,
                ..new.clone()
            },
        )
        .await
        .unwrap();
    assert_eq!(second.id, first.id);
    assert_eq!(
        forge
            .release_by_tag(&repo, "v1.0.0")
            .await
            .unwrap()
            .unwrap()
            .body,
        "Second"
    );

    assert_eq!(
        forge.permission(&repo, "ada").await.unwrap(),
        Permission::Admin
    );
    assert_eq!(
        forge.permission(&repo, "eve").await.unwrap(),
        Permission::Read
    );
    local
        .set_permission(&repo, "eve", Permission::Write)
        .await
        .unwrap();
    assert_eq!(
        forge.permission(&repo, "eve").await.unwrap(),
        Permission::Write
    );

    let other = Repo::parse("octo/missing").unwrap();
    let err = forge.issue(&other, 1).await.unwrap_err();
    assert!(
        err.is_not_found() && err.to_string().contains("baton forge repo create"),
        "{err}"
    );
}

fn issue_filter(state: StateFilter, labels: &[&str]) -> IssueFilter {
    IssueFilter {
        state,
        labels: labels.iter().map(|l| l.to_string()).collect(),
    }
}

#[tokio::test]
async fn issues_are_listed_by_state_and_labels_without_pull_requests() {
    let (_tmp, local, repo) = setup().await;
    let forge: Arc<dyn Forge> = local.clone();
    let new = |title: &str, labels: &[&str]| NewIssue {
        title: title.into(),
        body: format!("About {title}"),
        labels: labels.iter().map(|l| l.to_string()).collect(),
    };
    let bug = forge
        .create_issue(&repo, &new("Crash", &["bug", "ui"]))
        .await
        .unwrap();
    assert_eq!(
        bug.author, "baton-bot",
        "the trait files as the forge's login"
    );
    assert_eq!(bug.state, "open");
    let feature = forge
        .create_issue(&repo, &new("Dark mode", &["feature"]))
        .await
        .unwrap();
    let old = local
        .create_issue_as(&repo, "ada", "Old bug", "", &["bug".into()])
        .await
        .unwrap();
    local
        .set_issue_state(&repo, old.number, "closed")
        .await
        .unwrap();
    let pr = forge
        .create_pull_request(&repo, &new_pr("Fix", "b"))
        .await
        .unwrap();
    let numbers = |issues: Vec<baton::forge::Issue>| -> Vec<u64> {
        issues.into_iter().map(|i| i.number).collect()
    };

    let open = forge
        .issues(&repo, &issue_filter(StateFilter::Open, &[]))
        .await
        .unwrap();
    assert_eq!(
        numbers(open),
        [feature.number, bug.number],
        "newest first, no PR"
    );
    let closed = forge
        .issues(&repo, &issue_filter(StateFilter::Closed, &[]))
        .await
        .unwrap();
    assert_eq!(numbers(closed), [old.number]);
    let bugs = forge
        .issues(&repo, &issue_filter(StateFilter::All, &["bug"]))
        .await
        .unwrap();
    assert_eq!(numbers(bugs), [old.number, bug.number]);
    let both = forge
        .issues(&repo, &issue_filter(StateFilter::All, &["bug", "ui"]))
        .await
        .unwrap();
    assert_eq!(numbers(both), [bug.number], "every label must match");
    assert!(forge
        .issues(&repo, &issue_filter(StateFilter::All, &["nope"]))
        .await
        .unwrap()
        .is_empty());
    assert!(forge.issue(&repo, pr.number).await.unwrap().is_pull_request);

    // Labels come off one at a time; one that is not there is no error.
    forge.remove_label(&repo, bug.number, "ui").await.unwrap();
    forge.remove_label(&repo, bug.number, "ui").await.unwrap();
    assert_eq!(
        forge.issue(&repo, bug.number).await.unwrap().labels,
        ["bug"]
    );
    assert!(forge
        .remove_label(&repo, 999, "ui")
        .await
        .unwrap_err()
        .is_not_found());
    let empty_title = forge.create_issue(&repo, &new(" ", &[])).await.unwrap_err();
    assert!(matches!(empty_title, Error::Invalid(_)), "{empty_title}");
}

#[tokio::test]
async fn pull_requests_are_listed_and_reviews_upserted() {
    let (_tmp, local, repo) = setup().await;
    let forge: Arc<dyn Forge> = local.clone();
    let issue = local
        .create_issue_as(&repo, "ada", "t", "", &[])
        .await
        .unwrap();
    let first = forge
        .create_pull_request(&repo, &new_pr("First", "b"))
        .await
        .unwrap();
    forge.close_pull_request(&repo, first.number).await.unwrap();
    let second = forge
        .create_pull_request(&repo, &new_pr("Second", "b"))
        .await
        .unwrap();
    let numbers = |pulls: Vec<baton::forge::PullRequest>| -> Vec<u64> {
        pulls.into_iter().map(|p| p.number).collect()
    };
    assert_eq!(
        numbers(forge.pull_requests(&repo, StateFilter::Open).await.unwrap()),
        [second.number]
    );
    assert_eq!(
        numbers(
            forge
                .pull_requests(&repo, StateFilter::Closed)
                .await
                .unwrap()
        ),
        [first.number]
    );
    assert_eq!(
        numbers(forge.pull_requests(&repo, StateFilter::All).await.unwrap()),
        [second.number, first.number]
    );
    assert_eq!(
        forge.pull_request(&repo, second.number).await.unwrap(),
        second
    );
    assert!(
        forge
            .pull_request(&repo, issue.number)
            .await
            .unwrap_err()
            .is_not_found(),
        "an issue is not a pull request"
    );

    let review = |body: &str, event| NewReview {
        body: body.into(),
        event,
        commit_id: None,
        comments: Vec::new(),
    };
    // Someone else's review first: upsert must leave it alone.
    forge
        .create_review(&repo, second.number, &review("LGTM", ReviewEvent::Approve))
        .await
        .unwrap();
    let posted = forge
        .upsert_review(
            &repo,
            second.number,
            "pr_review",
            &review("Two remarks", ReviewEvent::Comment),
        )
        .await
        .unwrap();
    let marker = format!("<!-- baton:review=pr_review:{} -->", second.number);
    assert_eq!(posted.body, format!("Two remarks\n\n{marker}"));
    let again = forge
        .upsert_review(
            &repo,
            second.number,
            "pr_review",
            &review("One remark left", ReviewEvent::Comment),
        )
        .await
        .unwrap();
    assert_eq!(again.id, posted.id, "edited, not a second review");
    assert_eq!(again.body, format!("One remark left\n\n{marker}"));
    // Same text: nothing changes. Another workflow gets its own review.
    let same = forge
        .upsert_review(
            &repo,
            second.number,
            "pr_review",
            &review("One remark left", ReviewEvent::Comment),
        )
        .await
        .unwrap();
    assert_eq!(same, again);
    forge
        .upsert_review(
            &repo,
            second.number,
            "other",
            &review("x", ReviewEvent::Comment),
        )
        .await
        .unwrap();
    let reviews = forge.reviews(&repo, second.number).await.unwrap();
    let bodies: Vec<&str> = reviews.iter().map(|r| r.body.as_str()).collect();
    assert_eq!(
        bodies,
        [
            "LGTM".to_string(),
            format!("One remark left\n\n{marker}"),
            format!("x\n\n<!-- baton:review=other:{} -->", second.number),
        ]
    );
    let edited = forge
        .edit_review(&repo, second.number, reviews[0].id, "LGTM!")
        .await
        .unwrap();
    assert_eq!(
        (edited.id, edited.state.as_str()),
        (reviews[0].id, "APPROVED")
    );
    assert!(forge
        .edit_review(&repo, second.number, 999, "x")
        .await
        .unwrap_err()
        .is_not_found());
    assert!(forge.reviews(&repo, first.number).await.unwrap().is_empty());
}

#[tokio::test]
async fn tags_are_read_from_the_remote_and_peeled() {
    let (tmp, local, repo) = setup().await;
    let forge: Arc<dyn Forge> = local.clone();
    assert!(forge.tags(&repo).await.unwrap().is_empty());
    let work = tmp.path().join("work");
    let head = git(&work, &["rev-parse", "HEAD"]).trim().to_string();
    let main = git(&work, &["rev-parse", "main"]).trim().to_string();
    git(&work, &["tag", "v0.9.0", "main"]);
    git(&work, &["tag", "-a", "-m", "Release 1.0", "v1.0.0"]);
    git(
        &work,
        &[
            "push",
            "--quiet",
            local.remote(&repo).to_str().unwrap(),
            "--tags",
        ],
    );
    let tags = forge.tags(&repo).await.unwrap();
    let got: Vec<(&str, &str)> = tags
        .iter()
        .map(|t| (t.name.as_str(), t.sha.as_str()))
        .collect();
    assert_eq!(
        got,
        [("v1.0.0", head.as_str()), ("v0.9.0", main.as_str())],
        "an annotated tag is its commit, newest version first"
    );
}

/// A source repository as a user has it: `main` and `dev` branches, a tag, `dev` checked out.
fn source_repo(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    git(dir, &["init", "--quiet", "--initial-branch=main"]);
    std::fs::write(dir.join("README"), "hello\n").unwrap();
    git(dir, &["add", "README"]);
    git(dir, &["commit", "--quiet", "-m", "Initial commit"]);
    git(dir, &["tag", "-a", "-m", "first", "v0.1.0"]);
    git(dir, &["checkout", "--quiet", "-b", "dev"]);
    std::fs::write(dir.join("dev.txt"), "dev\n").unwrap();
    git(dir, &["add", "dev.txt"]);
    git(dir, &["commit", "--quiet", "-m", "Dev work"]);
}

#[tokio::test]
async fn import_repo_pushes_branches_and_tags_and_takes_the_current_branch() {
    let tmp = tempfile::tempdir().unwrap();
    let local = LocalForge::open(tmp.path().join("forge"), "baton-bot").unwrap();
    let src = tmp.path().join("src");
    source_repo(&src);
    let repo = Repo::parse("ada/tool").unwrap();
    let info = local.import_repo(&repo, &src).await.unwrap();
    assert_eq!(info.default_branch, "dev");
    assert_eq!(info, local.repository(&repo).await.unwrap());
    let remote = local.remote(&repo);
    let heads = git(
        &remote,
        &[
            "for-each-ref",
            "--format=%(refname)",
            "refs/heads",
            "refs/tags",
        ],
    );
    assert_eq!(heads, "refs/heads/dev\nrefs/heads/main\nrefs/tags/v0.1.0\n");
    assert_eq!(
        git(&remote, &["rev-parse", "dev"]),
        git(&src, &["rev-parse", "dev"])
    );
    assert_eq!(
        local.permission(&repo, "ada").await.unwrap(),
        Permission::Admin
    );
    // A clone of the remote checks out the default branch.
    let clone = tmp.path().join("clone");
    git(
        tmp.path(),
        &["clone", "--quiet", &info.clone_url, clone.to_str().unwrap()],
    );
    assert!(clone.join("dev.txt").exists());

    let again = local.import_repo(&repo, &src).await.unwrap_err();
    assert!(
        matches!(again, Error::Invalid(_)) && again.to_string().contains("already exists"),
        "{again}"
    );
    let not_git = tmp.path().join("plain");
    std::fs::create_dir(&not_git).unwrap();
    let err = local
        .import_repo(&Repo::parse("ada/plain").unwrap(), &not_git)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("is not a git repository"), "{err}");
    assert!(
        !local.repo_dir(&Repo::parse("ada/plain").unwrap()).exists(),
        "nothing written for bad input"
    );
    git(&src, &["checkout", "--quiet", "--detach"]);
    let err = local
        .import_repo(&Repo::parse("ada/detached").unwrap(), &src)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("detached HEAD"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_forges_on_one_directory_lose_no_write() {
    // Two forges on one directory, as a daemon and a CLI process have: their in-process
    // mutexes are separate, so only the file lock keeps comment ids and conversations whole.
    let (tmp, first, repo) = setup().await;
    let second = Arc::new(LocalForge::open(tmp.path().join("forge"), "baton-cli").unwrap());
    let issue = first
        .create_issue_as(&repo, "ada", "t", "", &[])
        .await
        .unwrap();
    const EACH: usize = 25;
    let mut tasks = Vec::new();
    for (who, forge) in [("a", first.clone()), ("b", second.clone())] {
        for i in 0..EACH {
            let forge = forge.clone();
            let repo = repo.clone();
            tasks.push(tokio::spawn(async move {
                forge
                    .create_comment(&repo, issue.number, &format!("{who}{i}"))
                    .await
                    .unwrap()
            }));
        }
    }
    let mut ids = Vec::new();
    for task in tasks {
        ids.push(task.await.unwrap().id);
    }
    ids.sort();
    assert_eq!(
        ids,
        (1..=2 * EACH as u64).collect::<Vec<_>>(),
        "ids are unique"
    );
    let comments = first.comments(&repo, issue.number).await.unwrap();
    assert_eq!(comments.len(), 2 * EACH, "no comment lost");
}
