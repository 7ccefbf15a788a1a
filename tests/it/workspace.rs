//! Workspaces on real repositories with a local bare remote.

use std::os::unix::fs::MetadataExt;

use std::path::Path;
use std::sync::Arc;

use crate::common::{b64, files_containing, git, HttpGit, LogCapture, Remote};
use baton::workspace::{
    self, rollback_hard, rollback_partial, rollback_soft, undo, Change, CloneOptions, Credentials,
    Error, Journal, MemoryJournal, MirrorCache, Workspace,
};

const FILES: &[(&str, &str)] = &[
    ("README.md", "# demo\nline two\n"),
    ("src/lib.txt", "library\n"),
];

struct Fixture {
    dir: tempfile::TempDir,
    remote: Remote,
    cache: MirrorCache,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let remote = Remote::new(dir.path(), FILES);
        let cache = MirrorCache::new(&dir.path().join("data"));
        Fixture { dir, remote, cache }
    }

    fn dest(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join("data/workspaces").join(name)
    }

    async fn clone(&self, name: &str) -> Workspace<Arc<MemoryJournal>> {
        Workspace::clone(
            &self.cache,
            CloneOptions::new(self.remote.url(), self.dest(name)),
            Arc::new(MemoryJournal::default()),
        )
        .await
        .unwrap()
    }
}

fn types(changes: &[Change]) -> Vec<&str> {
    changes.iter().map(|c| c.change_type.as_str()).collect()
}

fn read(ws_root: &Path, rel: &str) -> Option<String> {
    std::fs::read_to_string(ws_root.join(rel)).ok()
}

#[tokio::test]
async fn clones_through_the_mirror_with_origin_set_to_the_remote() {
    let f = Fixture::new();
    let ws = f.clone("run-1").await;
    assert_eq!(read(ws.root(), "README.md").unwrap(), "# demo\nline two\n");
    assert_eq!(ws.base(), "main");
    assert_eq!(
        git(ws.root(), &["remote", "get-url", "origin"]),
        f.remote.url()
    );
    let mirror = f.cache.mirror_path(&f.remote.url());
    assert!(mirror.starts_with(f.dir.path().join("data/mirrors")));
    assert!(mirror.join("HEAD").exists() && mirror.extension().unwrap() == "git");
    // A new commit on the remote reaches the next clone (the mirror is fetched).
    f.remote
        .push_from_other("main", &[("README.md", "# demo v2\n")]);
    // Two runs on the same repository at once.
    let (a, b) = tokio::join!(f.clone("run-2"), f.clone("run-3"));
    for w in [&a, &b] {
        assert_eq!(read(w.root(), "README.md").unwrap(), "# demo v2\n");
        assert_eq!(git(w.root(), &["status", "--porcelain"]), "");
    }
    // Reopening after a restart, with the run's record of the remote and base.
    let reopened = Workspace::open(
        ws.root(),
        &f.remote.url(),
        "main",
        None,
        Default::default(),
        MemoryJournal::default(),
    )
    .await
    .unwrap();
    assert_eq!(reopened.url(), f.remote.url());
    assert_eq!(reopened.base(), "main");
}

#[tokio::test]
async fn spare_checkout_is_taken_and_brought_up_to_date() {
    let f = Fixture::new();
    let cache = f.cache.clone().with_spare(true);
    let opts = |name: &str| CloneOptions::new(f.remote.url(), f.dest(name));
    let first = Workspace::clone(&cache, opts("a"), MemoryJournal::default())
        .await
        .unwrap();
    cache.prepare_spare(&f.remote.url()).await.unwrap();
    let spare = f
        .dir
        .path()
        .join("data/mirrors")
        .read_dir()
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().ends_with(".spare"));
    let spare = spare.expect("a spare checkout was prepared").path();
    let spare_inode = std::fs::metadata(&spare).unwrap().ino();
    f.remote
        .push_from_other("main", &[("README.md", "# after the spare\n")]);
    let second = Workspace::clone(&cache, opts("b"), MemoryJournal::default())
        .await
        .unwrap();
    // Taking the spare renames it into place: the workspace is the very same directory.
    assert_eq!(
        std::fs::metadata(second.root()).unwrap().ino(),
        spare_inode,
        "the second clone did not take the spare checkout"
    );
    assert_eq!(
        read(second.root(), "README.md").unwrap(),
        "# after the spare\n"
    );
    assert_eq!(
        git(second.root(), &["remote", "get-url", "origin"]),
        f.remote.url()
    );
    assert_eq!(git(second.root(), &["status", "--porcelain"]), "");
    assert_eq!(
        git(second.root(), &["rev-parse", "HEAD"]),
        f.remote.sha("main").unwrap()
    );
    assert_eq!(
        read(first.root(), "README.md").unwrap(),
        "# demo\nline two\n"
    );
}

#[tokio::test]
async fn branch_names_follow_the_issue_and_never_reuse_a_taken_name() {
    let f = Fixture::new();
    let ws = f.clone("run").await;
    let bug = ["bug".to_string()];
    assert_eq!(
        ws.create_issue_branch(12, &bug, "Add X").await.unwrap(),
        "fix/issue-12"
    );
    git(ws.root(), &["checkout", "-q", "main"]);
    // Taken locally → -2.
    assert_eq!(
        ws.create_issue_branch(12, &[], "Crash on start")
            .await
            .unwrap(),
        "fix/issue-12-2"
    );
    // Taken on the remote (someone else's) → the next free one.
    f.remote
        .push_from_other("feature/issue-13", &[("x.txt", "theirs\n")]);
    git(ws.root(), &["checkout", "-q", "main"]);
    assert_eq!(
        ws.create_issue_branch(13, &[], "Add dark mode")
            .await
            .unwrap(),
        "feature/issue-13-2"
    );
    let changes = ws.journal().changes();
    assert_eq!(types(&changes), ["branch_create"; 3]);
    assert_eq!(changes[2].change_data["branch"], "feature/issue-13-2");
    assert_eq!(changes[2].change_data["previous_branch"], "main");
    assert!(matches!(
        ws.create_branch("bad..name").await,
        Err(Error::Git { .. })
    ));
}

#[tokio::test]
async fn file_changes_are_recorded_with_their_contents_before() {
    let f = Fixture::new();
    let ws = f.clone("run").await;
    ws.write_file("new/dir/a.txt", b"hello\n").await.unwrap();
    ws.write_file("README.md", b"changed\n").await.unwrap();
    ws.write_file("README.md", b"changed\n").await.unwrap(); // no change, no record
    ws.delete_file("src/lib.txt").await.unwrap();
    ws.write_file("bin.dat", &[0xff, 0x00, 0xfe]).await.unwrap();
    ws.write_file("bin.dat", b"text now").await.unwrap();
    let c = ws.journal().changes();
    assert_eq!(
        types(&c),
        [
            "file_create",
            "file_modify",
            "file_delete",
            "file_create",
            "file_modify"
        ]
    );
    assert_eq!(c[0].change_data["path"], "new/dir/a.txt");
    assert_eq!(
        c[0].change_data["created_dirs"],
        serde_json::json!(["new", "new/dir"])
    );
    assert_eq!(c[1].change_data["before"], "# demo\nline two\n");
    assert_eq!(c[2].change_data["before"], "library\n");
    assert_eq!(c[4].change_data["before_base64"], "/wD+");
    // Undo everything, newest first: the tree is as cloned.
    rollback_partial(&ws, &c).await.unwrap();
    assert_eq!(
        git(
            ws.root(),
            &["status", "--porcelain", "--untracked-files=all"]
        ),
        ""
    );
    assert!(!ws.root().join("new").exists());
}

#[tokio::test]
async fn bad_paths_are_refused_before_anything_is_recorded() {
    let f = Fixture::new();
    let ws = f.clone("run").await;
    std::os::unix::fs::symlink("/tmp", ws.root().join("link")).unwrap();
    for bad in [
        "../escape.txt",
        "/etc/passwd",
        ".git/config",
        "link/x.txt",
        "link",
        "",
        "src",
    ] {
        let err = ws.write_file(bad, b"x").await.unwrap_err();
        assert!(matches!(err, Error::PathOutside { .. }), "{bad}: {err}");
        assert!(
            err.to_string().contains(ws.root().to_str().unwrap()),
            "{err}"
        );
    }
    let err = ws.delete_file("missing.txt").await.unwrap_err();
    assert!(matches!(err, Error::NoSuchFile { .. }), "{err}");
    assert!(err.to_string().contains("missing.txt"));
    assert!(ws.journal().changes().is_empty());
}

struct FailingJournal;

impl Journal for FailingJournal {
    async fn record(&self, _: Change) -> Result<(), baton::journal::Error> {
        Err(baton::journal::Error::Refused("store is read-only".into()))
    }
}

#[tokio::test]
async fn a_journal_error_stops_the_operation_with_nothing_done() {
    let f = Fixture::new();
    let ws = Workspace::clone(
        &f.cache,
        CloneOptions::new(f.remote.url(), f.dest("run")),
        FailingJournal,
    )
    .await
    .unwrap();
    let err = ws.write_file("a.txt", b"x").await.unwrap_err();
    assert!(err.to_string().contains("store is read-only"), "{err}");
    assert!(!ws.root().join("a.txt").exists());
    assert!(ws.create_branch("feature/x").await.is_err());
    assert_eq!(git(ws.root(), &["branch", "--show-current"]), "main");
    std::fs::write(ws.root().join("b.txt"), "x").unwrap();
    let head = git(ws.root(), &["rev-parse", "HEAD"]);
    assert!(ws.commit("msg").await.is_err());
    assert_eq!(git(ws.root(), &["rev-parse", "HEAD"]), head);
}

#[tokio::test]
async fn commit_and_push_record_parents_and_previous_remote_shas() {
    let f = Fixture::new();
    let ws = f.clone("run").await;
    let start = git(ws.root(), &["rev-parse", "HEAD"]);
    ws.create_branch("feature/issue-1").await.unwrap();
    assert!(matches!(
        ws.commit("nothing").await,
        Err(Error::NothingToCommit { .. })
    ));
    ws.write_file("a.txt", b"one\n").await.unwrap();
    let c1 = ws.commit("first").await.unwrap();
    let p1 = ws.push().await.unwrap();
    assert_eq!(
        (p1.previous.as_deref(), p1.pushed.as_str()),
        (None, c1.as_str())
    );
    assert_eq!(f.remote.sha("feature/issue-1").unwrap(), c1);
    assert!(ws.push().await.unwrap().up_to_date);
    ws.write_file("a.txt", b"two\n").await.unwrap();
    let c2 = ws.commit("second").await.unwrap();
    ws.push().await.unwrap();
    assert_eq!(f.remote.sha("feature/issue-1").unwrap(), c2);
    assert_eq!(
        git(ws.root(), &["log", "-1", "--format=%an <%ae> %s"]),
        "baton <baton@localhost> second"
    );
    let c = ws.journal().changes();
    assert_eq!(
        types(&c),
        [
            "branch_create",
            "file_create",
            "commit",
            "push",
            "file_modify",
            "commit",
            "push"
        ]
    );
    assert_eq!(c[2].change_data["parent"], start.as_str());
    assert_eq!(c[2].change_data["sha"], c1.as_str());
    assert_eq!(c[5].change_data["parent"], c1.as_str());
    assert_eq!(c[3].change_data["previous"], serde_json::Value::Null);
    assert_eq!(c[6].change_data["previous"], c1.as_str());
    assert_eq!(c[6].change_data["remote"], f.remote.url());
}

#[tokio::test]
async fn never_force_pushes_over_someone_elses_commits() {
    let f = Fixture::new();
    let ws = f.clone("run").await;
    ws.create_branch("feature/issue-2").await.unwrap();
    ws.write_file("a.txt", b"mine\n").await.unwrap();
    ws.commit("mine").await.unwrap();
    ws.push().await.unwrap();
    let theirs = f
        .remote
        .push_from_other("feature/issue-2", &[("b.txt", "theirs\n")]);
    ws.write_file("a.txt", b"mine again\n").await.unwrap();
    ws.commit("mine again").await.unwrap();
    let err = ws.push().await.unwrap_err();
    assert!(matches!(err, Error::Diverged { .. }), "{err}");
    assert!(err.to_string().contains("feature/issue-2"), "{err}");
    assert_eq!(f.remote.sha("feature/issue-2").unwrap(), theirs);
    // And a hard rollback will not delete their branch either.
    let err = rollback_hard(&ws, &ws.journal().changes())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("someone else pushed"), "{err}");
    assert_eq!(f.remote.sha("feature/issue-2").unwrap(), theirs);
}

#[tokio::test]
async fn rebases_onto_the_updated_base_and_may_force_push_its_own_branch() {
    let f = Fixture::new();
    let ws = f.clone("run").await;
    ws.create_branch("feature/issue-3").await.unwrap();
    ws.write_file("mine.txt", b"mine\n").await.unwrap();
    ws.commit("mine").await.unwrap();
    ws.push().await.unwrap();
    let base = f
        .remote
        .push_from_other("main", &[("theirs.txt", "theirs\n")]);
    let r = ws.fetch_and_rebase().await.unwrap();
    assert!(!r.up_to_date);
    assert_eq!(r.onto, base);
    assert_eq!(git(ws.root(), &["rev-parse", "HEAD~1"]), base);
    assert_eq!(read(ws.root(), "theirs.txt").unwrap(), "theirs\n");
    // The rebased branch replaces what this workspace pushed (a lease on its own sha).
    let p = ws.push().await.unwrap();
    assert_eq!(f.remote.sha("feature/issue-3").unwrap(), p.pushed);
    assert!(ws.fetch_and_rebase().await.unwrap().up_to_date);
    assert!(types(&ws.journal().changes()).contains(&"rebase"));
}

#[tokio::test]
async fn rebase_conflicts_are_reported_and_aborted_cleanly() {
    let f = Fixture::new();
    let ws = f.clone("run").await;
    ws.create_branch("fix/issue-4").await.unwrap();
    ws.write_file("README.md", b"# mine\nline two\n")
        .await
        .unwrap();
    ws.write_file("src/lib.txt", b"mine\n").await.unwrap();
    ws.commit("mine").await.unwrap();
    f.remote.push_from_other(
        "main",
        &[
            ("README.md", "# theirs\nline two\n"),
            ("src/lib.txt", "theirs\n"),
        ],
    );
    let before = git(ws.root(), &["rev-parse", "HEAD"]);
    let err = ws.fetch_and_rebase().await.unwrap_err();
    match &err {
        Error::Conflict {
            files,
            branch,
            onto,
        } => {
            assert_eq!(files, &["README.md", "src/lib.txt"]);
            assert_eq!(
                (branch.as_str(), onto.as_str()),
                ("fix/issue-4", "origin/main")
            );
        }
        other => panic!("expected a conflict, got {other}"),
    }
    assert!(err.to_string().contains("README.md, src/lib.txt"), "{err}");
    assert_eq!(git(ws.root(), &["rev-parse", "HEAD"]), before);
    assert_eq!(git(ws.root(), &["branch", "--show-current"]), "fix/issue-4");
    assert_eq!(git(ws.root(), &["status", "--porcelain"]), "");
    assert!(!ws.root().join(".git/rebase-merge").exists());
    assert!(!ws.root().join(".git/rebase-apply").exists());
    assert_eq!(read(ws.root(), "README.md").unwrap(), "# mine\nline two\n");
    // A dirty tree is refused before anything happens.
    std::fs::write(ws.root().join("README.md"), "dirty").unwrap();
    let err = ws.fetch_and_rebase().await.unwrap_err();
    assert!(
        matches!(err, Error::Dirty { .. }) && err.to_string().contains("README.md"),
        "{err}"
    );
}

#[tokio::test]
async fn hard_rollback_deletes_local_and_remote_branch_and_discards_everything() {
    let f = Fixture::new();
    let ws = f.clone("run").await;
    let start = git(ws.root(), &["rev-parse", "HEAD"]);
    let branch = ws
        .create_issue_branch(5, &["bug".into()], "x")
        .await
        .unwrap();
    ws.write_file("new.txt", b"new\n").await.unwrap();
    ws.write_file("README.md", b"changed\n").await.unwrap();
    ws.commit("work").await.unwrap();
    ws.push().await.unwrap();
    ws.write_file("uncommitted.txt", b"x").await.unwrap();
    std::fs::write(ws.root().join("untracked-by-baton.txt"), "x").unwrap();
    assert!(f.remote.sha(&branch).is_some());
    let report = rollback_hard(&ws, &ws.journal().changes()).await.unwrap();
    assert_eq!(report.undone.len(), 6);
    assert_eq!(f.remote.sha(&branch), None);
    assert_eq!(git(ws.root(), &["branch", "--list", &branch]), "");
    assert_eq!(git(ws.root(), &["branch", "--show-current"]), "main");
    assert_eq!(git(ws.root(), &["rev-parse", "HEAD"]), start);
    assert_eq!(
        git(
            ws.root(),
            &["status", "--porcelain", "--untracked-files=all"]
        ),
        ""
    );
    assert_eq!(read(ws.root(), "README.md").unwrap(), "# demo\nline two\n");
    // Undo is idempotent: doing it again changes nothing and does not fail.
    rollback_hard(&ws, &ws.journal().changes()).await.unwrap();
}

#[tokio::test]
async fn partial_rollback_undoes_the_last_steps_only() {
    let f = Fixture::new();
    let ws = f.clone("run").await;
    ws.create_branch("feature/issue-6").await.unwrap();
    ws.write_file("a.txt", b"step one\n").await.unwrap();
    let c1 = ws.commit("step one").await.unwrap();
    ws.push().await.unwrap();
    let step_one = ws.journal().changes().len();
    ws.write_file("a.txt", b"step two\n").await.unwrap();
    ws.write_file("b.txt", b"step two\n").await.unwrap();
    ws.delete_file("src/lib.txt").await.unwrap();
    ws.commit("step two").await.unwrap();
    ws.push().await.unwrap();
    let all = ws.journal().changes();
    let report = rollback_partial(&ws, &all[step_one..]).await.unwrap();
    assert_eq!(
        types(&report.undone),
        [
            "push",
            "commit",
            "file_delete",
            "file_create",
            "file_modify"
        ]
    );
    assert_eq!(git(ws.root(), &["rev-parse", "HEAD"]), c1);
    assert_eq!(f.remote.sha("feature/issue-6").unwrap(), c1);
    assert_eq!(read(ws.root(), "a.txt").unwrap(), "step one\n");
    assert_eq!(read(ws.root(), "src/lib.txt").unwrap(), "library\n");
    assert!(read(ws.root(), "b.txt").is_none());
    assert_eq!(
        git(
            ws.root(),
            &["status", "--porcelain", "--untracked-files=all"]
        ),
        ""
    );
    assert_eq!(
        git(ws.root(), &["branch", "--show-current"]),
        "feature/issue-6"
    );
}

#[tokio::test]
async fn soft_rollback_keeps_the_branch_and_the_work() {
    let f = Fixture::new();
    let ws = f.clone("run").await;
    ws.create_branch("feature/issue-7").await.unwrap();
    ws.write_file("a.txt", b"work\n").await.unwrap();
    let sha = ws.commit("work").await.unwrap();
    ws.push().await.unwrap();
    ws.write_file("wip.txt", b"wip\n").await.unwrap();
    assert!(rollback_soft(&ws).undone.is_empty());
    assert_eq!(f.remote.sha("feature/issue-7").unwrap(), sha);
    assert_eq!(git(ws.root(), &["rev-parse", "HEAD"]), sha);
    assert_eq!(read(ws.root(), "wip.txt").unwrap(), "wip\n");
}

#[tokio::test]
async fn undo_tolerates_changes_recorded_but_never_carried_out() {
    let f = Fixture::new();
    let ws = f.clone("run").await;
    let head = git(ws.root(), &["rev-parse", "HEAD"]);
    let never = [
        Change {
            change_type: "commit".into(),
            change_data: serde_json::json!({"branch": "main", "parent": head, "sha": "0".repeat(40)}),
        },
        Change {
            change_type: "push".into(),
            change_data: serde_json::json!({"remote": f.remote.url(), "branch": "nope", "previous": null, "pushed": "1".repeat(40)}),
        },
        Change {
            change_type: "branch_create".into(),
            change_data: serde_json::json!({"branch": "never", "start": head, "previous_branch": "main"}),
        },
        Change {
            change_type: "file_create".into(),
            change_data: serde_json::json!({"path": "never.txt", "created_dirs": []}),
        },
    ];
    for c in &never {
        undo(&ws, c).await.unwrap();
    }
    let bad = Change {
        change_type: "teleport".into(),
        change_data: serde_json::json!({}),
    };
    assert!(undo(&ws, &bad)
        .await
        .unwrap_err()
        .to_string()
        .contains("teleport"));
    let escape = Change {
        change_type: "file_modify".into(),
        change_data: serde_json::json!({"path": "../../etc/x", "before": ""}),
    };
    assert!(matches!(
        undo(&ws, &escape).await,
        Err(Error::PathOutside { .. })
    ));
}

#[tokio::test]
async fn bad_urls_and_destinations_give_clear_errors() {
    let f = Fixture::new();
    let missing = f.dir.path().join("no-such-repo.git");
    let err = Workspace::clone(
        &f.cache,
        CloneOptions::new(missing.to_str().unwrap(), f.dest("x")),
        MemoryJournal::default(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::Remote { .. }), "{err}");
    assert!(err.to_string().contains("no-such-repo.git"), "{err}");
    let err = Workspace::clone(
        &f.cache,
        CloneOptions::new("https://bob:hunter2@example.com/r.git", f.dest("y")),
        MemoryJournal::default(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, Error::BadUrl { .. }) && !err.to_string().contains("hunter2"),
        "{err}"
    );
    let dest = f.dest("full");
    std::fs::create_dir_all(&dest).unwrap();
    std::fs::write(dest.join("x"), "x").unwrap();
    let err = Workspace::clone(
        &f.cache,
        CloneOptions::new(f.remote.url(), &dest),
        MemoryJournal::default(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::DestinationExists { .. }), "{err}");
    // Nothing half-made is left in the mirror cache.
    let leftovers: Vec<_> = std::fs::read_dir(f.cache.root())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty());
}

const TOKEN: &str = "ghs_T0kenThatMustNeverLeak1234567890";

#[tokio::test(flavor = "current_thread")]
async fn token_reaches_git_by_environment_only_and_never_shows() {
    let logs = LogCapture::default();
    let _guard = tracing::dispatcher::set_default(&tracing::Dispatch::new(logs.clone()));
    let dir = tempfile::tempdir().unwrap();
    let served = dir.path().join("served");
    std::fs::create_dir_all(&served).unwrap();
    let remote = Remote::new(&served, FILES);
    git(&remote.bare, &["config", "http.receivepack", "true"]);
    let expected = format!(
        "Basic {}",
        b64(format!("x-access-token:{TOKEN}").as_bytes())
    );
    let server = HttpGit::start(&served, expected.clone());
    let url = server.url("remote.git");
    let data = dir.path().join("data");
    let cache = MirrorCache::new(&data);
    let mut errors = Vec::new();

    // Right token: clone, branch, commit, push, rebase all work over HTTP.
    let mut opts = CloneOptions::new(&url, data.join("workspaces/run"));
    opts.credentials = Some(Credentials::token(TOKEN));
    let ws = Workspace::clone(&cache, opts, MemoryJournal::default())
        .await
        .unwrap();
    ws.create_issue_branch(9, &[], "Add a thing").await.unwrap();
    ws.write_file("thing.txt", b"thing\n").await.unwrap();
    ws.commit("thing").await.unwrap();
    ws.push().await.unwrap();
    ws.fetch_and_rebase().await.unwrap();
    assert!(remote.sha("feature/issue-9").is_some());
    assert!(server.seen_auth.lock().unwrap().contains(&expected));
    errors.push(format!("{:?}", ws));
    // Hard rollback deletes the remote branch through the same credentials.
    rollback_hard(&ws, &ws.journal().changes()).await.unwrap();
    assert!(remote.sha("feature/issue-9").is_none());

    // Wrong token: a clear authentication error that shows neither token.
    let mut opts = CloneOptions::new(&url, data.join("workspaces/wrong"));
    let wrong = "ghs_WrongTokenAlsoSecret987";
    opts.credentials = Some(Credentials::token(wrong));
    let cache2 = MirrorCache::new(&dir.path().join("data2"));
    let err = Workspace::clone(&cache2, opts, MemoryJournal::default())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Auth { .. }), "{err}");
    assert!(err.to_string().contains(&url), "{err}");
    errors.push(err.to_string());
    errors.push(format!("{err:?}"));
    assert!(!errors.join("\n").contains(wrong));
    // No token at all: also an authentication error.
    let err = Workspace::clone(
        &cache2,
        CloneOptions::new(&url, data.join("workspaces/none")),
        MemoryJournal::default(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::Auth { .. }), "{err}");
    errors.push(err.to_string());

    // A workspace reopened with the token: its push error text is redacted too.
    let ws = Workspace::open(
        &data.join("workspaces/run"),
        &url,
        "main",
        Some(Credentials::token(TOKEN)),
        Default::default(),
        MemoryJournal::default(),
    )
    .await
    .unwrap();
    errors.push(ws.redact(&format!("echo {TOKEN}")));

    let all_errors = errors.join("\n");
    let encoded = b64(format!("x-access-token:{TOKEN}").as_bytes());
    for needle in [TOKEN, encoded.as_str()] {
        assert!(
            !all_errors.contains(needle),
            "token in errors: {all_errors}"
        );
        let log = logs.text.lock().unwrap().clone();
        assert!(!log.is_empty(), "logs were captured");
        assert!(!log.contains(needle), "token in logs");
        for root in [&data, &dir.path().join("data2"), &served] {
            let hits = files_containing(root, needle.as_bytes());
            assert!(hits.is_empty(), "token found in {hits:?}");
        }
    }
}

#[test]
fn names_are_exported() {
    assert_eq!(
        workspace::branch_base_name(3, &[], "Login fails"),
        "fix/issue-3"
    );
    assert!(workspace::is_bug(&["type: bug".into()], "Add"));
}
