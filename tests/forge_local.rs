//! The local forge as a workflow uses it: through `Arc<dyn Forge>`, with a real bare git remote.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use baton::forge::local::LocalForge;
use baton::forge::{
    DiffSide, Error, Forge, LineComment, NewPullRequest, NewRelease, NewReview, Permission, Repo,
    ReviewEvent,
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
        .create_issue(&repo, "ada", "Widget broken", "It fails", &["baton".into()])
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
            "Done\n\n<!-- baton:run=run-1:result -->",
            "Other run\n\n<!-- baton:run=run-2 -->",
        ]
    );
    assert!(comments.iter().all(|c| c.author == "baton-bot"));
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
async fn pull_requests_are_ensured_by_head_branch() {
    let (_tmp, local, repo) = setup().await;
    let forge: Arc<dyn Forge> = local.clone();
    let issue = local
        .create_issue(&repo, "ada", "t", "b", &[])
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
        err.is_not_found() && err.to_string().contains("create_repo"),
        "{err}"
    );
}
