//! `baton forge …`, the real binary as a user runs it: a local forge built from a real git
//! repository, issues, pull requests, releases, bad input and exit codes; and the same commands
//! against the github forge pointed at Prism (GitHub's OpenAPI description).

use crate::common_forge;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use baton::forge::local::LocalForge;
use baton::forge::{Forge, NewRelease, Repo};
use serde_json::Value;

use crate::BATON;

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
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A temporary home: the data dir, an optional config file, and files to import.
struct Env {
    dir: tempfile::TempDir,
    config: Option<PathBuf>,
    vars: Vec<(String, String)>,
}

impl Env {
    fn new() -> Env {
        Env {
            dir: tempfile::tempdir().unwrap(),
            config: None,
            vars: Vec::new(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn data(&self) -> PathBuf {
        self.path("data")
    }

    fn run(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut cmd = Command::new(BATON);
        cmd.args(args)
            .env("BATON_DATA_DIR", self.data())
            .env_remove("BATON_CONFIG")
            .env_remove("GITHUB_TOKEN")
            .env_remove("BATON_GITHUB_APP_ID")
            .current_dir(self.dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(config) = &self.config {
            cmd.env("BATON_CONFIG", config);
        }
        for (k, v) in &self.vars {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        {
            use std::io::Write;
            let mut input = child.stdin.take().unwrap();
            input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
        }
        child.wait_with_output().unwrap()
    }

    /// Runs and expects `code`; returns stdout and stderr.
    fn expect(&self, code: i32, args: &[&str]) -> (String, String) {
        let out = self.run(args, None);
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        );
        assert_eq!(
            out.status.code(),
            Some(code),
            "baton {args:?}\nstdout: {stdout}\nstderr: {stderr}"
        );
        (stdout, stderr)
    }

    fn ok(&self, args: &[&str]) -> String {
        self.expect(0, args).0
    }

    fn json(&self, args: &[&str]) -> Value {
        let stdout = self.ok(args);
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
    }

    /// Exit 2 with a message on stderr containing every one of `needles`.
    fn bad(&self, args: &[&str], needles: &[&str]) {
        let (stdout, stderr) = self.expect(2, args);
        assert!(stdout.is_empty(), "nothing on stdout: {stdout}");
        for needle in needles {
            assert!(stderr.contains(needle), "`{needle}` not in: {stderr}");
        }
    }
}

/// A project as a user has it: `main` (tagged v1.0.0, annotated) and `feature` one commit
/// ahead, with `feature` checked out.
fn project(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    git(dir, &["init", "--quiet", "--initial-branch=main"]);
    std::fs::write(dir.join("README"), "hello\n").unwrap();
    git(dir, &["add", "README"]);
    git(dir, &["commit", "--quiet", "-m", "Initial commit"]);
    git(dir, &["tag", "-a", "-m", "First release", "v1.0.0"]);
    git(dir, &["checkout", "--quiet", "-b", "feature"]);
    std::fs::write(dir.join("feature.txt"), "new\n").unwrap();
    git(dir, &["add", "feature.txt"]);
    git(dir, &["commit", "--quiet", "-m", "Add the feature"]);
}

#[test]
fn repo_create_imports_branches_tags_and_the_current_branch() {
    let mut env = Env::new();
    let src = env.path("src");
    project(&src);
    // A user's environment pointing git elsewhere must not redirect the forge's git.
    env.vars = vec![
        ("GIT_DIR".into(), env.path("nowhere").display().to_string()),
        (
            "GIT_WORK_TREE".into(),
            env.path("nowhere").display().to_string(),
        ),
        (
            "GIT_INDEX_FILE".into(),
            env.path("nowhere/index").display().to_string(),
        ),
    ];
    let info = env.json(&[
        "forge",
        "repo",
        "create",
        "ada/tool",
        "--from",
        src.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(info["full_name"], "ada/tool");
    assert_eq!(info["default_branch"], "feature", "the checked-out branch");
    let remote = PathBuf::from(info["clone_url"].as_str().unwrap());
    assert!(remote.starts_with(env.data().join("forge")), "{remote:?}");
    assert_eq!(
        git(&remote, &["for-each-ref", "--format=%(refname)"]),
        "refs/heads/feature\nrefs/heads/main\nrefs/tags/v1.0.0"
    );
    assert_eq!(
        git(&remote, &["rev-parse", "main"]),
        git(&src, &["rev-parse", "main"])
    );
    assert_eq!(
        git(&remote, &["symbolic-ref", "HEAD"]),
        "refs/heads/feature"
    );
    assert!(!env.path("nowhere").exists());
    env.vars.clear();

    // Again onto the same name: refused, nothing changed.
    env.bad(
        &[
            "forge",
            "repo",
            "create",
            "ada/tool",
            "--from",
            src.to_str().unwrap(),
        ],
        &["ada/tool", "already exists"],
    );
    // Text output names the default branch.
    let other = env.ok(&[
        "forge",
        "repo",
        "create",
        "ada/copy",
        "--from",
        src.to_str().unwrap(),
    ]);
    assert!(
        other.contains("ada/copy") && other.contains("default branch  feature"),
        "{other}"
    );
    env.bad(
        &[
            "forge",
            "repo",
            "create",
            "ada/x",
            "--from",
            env.path("missing").to_str().unwrap(),
        ],
        &["--from", "missing", "no such directory"],
    );
    env.bad(
        &[
            "forge",
            "repo",
            "create",
            "not-a-repo",
            "--from",
            src.to_str().unwrap(),
        ],
        &["not-a-repo", "owner/name"],
    );
    let plain = env.path("plain");
    std::fs::create_dir(&plain).unwrap();
    env.bad(
        &[
            "forge",
            "repo",
            "create",
            "ada/plain",
            "--from",
            plain.to_str().unwrap(),
        ],
        &["is not a git repository"],
    );
}

/// An env with repository `ada/tool` imported from [`project`].
fn with_repo() -> (Env, PathBuf) {
    let env = Env::new();
    let src = env.path("src");
    project(&src);
    env.ok(&[
        "forge",
        "repo",
        "create",
        "ada/tool",
        "--from",
        src.to_str().unwrap(),
    ]);
    (env, src)
}

#[test]
fn issues_are_created_shown_and_listed() {
    let (env, _src) = with_repo();
    let number = env.ok(&[
        "forge",
        "issue",
        "create",
        "ada/tool",
        "--title",
        "Crash on start",
        "--body",
        "It crashes.",
        "--label",
        "bug",
        "--label",
        "ui",
    ]);
    assert_eq!(number, "1\n", "the bare number");
    let body_file = env.path("body.md");
    std::fs::write(&body_file, "## Steps\n\n1. Run it\n").unwrap();
    let second = env.json(&[
        "forge",
        "issue",
        "create",
        "ada/tool",
        "--title",
        "Dark mode",
        "--body-file",
        body_file.to_str().unwrap(),
        "--label",
        "feature",
        "--json",
    ]);
    assert_eq!(second["number"], 2);
    assert_eq!(second["body"], "## Steps\n\n1. Run it\n");
    assert_eq!(second["labels"], serde_json::json!(["feature"]));
    assert_eq!(second["author"], "baton", "the configured forge login");
    let from_stdin = env.run(
        &[
            "forge",
            "issue",
            "create",
            "ada/tool",
            "--title",
            "Old",
            "--body-file",
            "-",
        ],
        Some("from stdin"),
    );
    assert_eq!(String::from_utf8_lossy(&from_stdin.stdout), "3\n");

    // A comment and a closed issue, as the daemon (another process) would leave them.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let repo = Repo::parse("ada/tool").unwrap();
    runtime.block_on(async {
        let forge = LocalForge::open(env.data().join("forge"), "baton").unwrap();
        forge
            .create_comment(&repo, 1, "Working on it")
            .await
            .unwrap();
        forge.set_issue_state(&repo, 3, "closed").await.unwrap();
    });

    let shown = env.json(&["forge", "issue", "show", "ada/tool#1", "--json"]);
    assert_eq!(shown["title"], "Crash on start");
    assert_eq!(shown["body"], "It crashes.");
    assert_eq!(shown["labels"], serde_json::json!(["bug", "ui"]));
    assert_eq!(shown["comments"][0]["body"], "Working on it");
    assert_eq!(shown["comments"].as_array().unwrap().len(), 1);
    let text = env.ok(&["forge", "issue", "show", "ada/tool#3"]);
    assert!(
        text.contains("#3 Old") && text.contains("state: closed") && text.contains("from stdin"),
        "{text}"
    );

    let list = |args: &[&str]| -> Vec<u64> {
        let mut all = vec!["forge", "issue", "list", "ada/tool", "--json"];
        all.extend_from_slice(args);
        env.json(&all)
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["number"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(list(&[]), [2, 1], "open by default, newest first");
    assert_eq!(list(&["--state", "closed"]), [3]);
    assert_eq!(list(&["--state", "all"]), [3, 2, 1]);
    assert_eq!(list(&["--label", "bug"]), [1]);
    assert_eq!(
        list(&["--label", "bug", "--label", "feature"]),
        Vec::<u64>::new()
    );
    let text = env.ok(&["forge", "issue", "list", "ada/tool", "--state", "all"]);
    assert!(
        text.contains("Crash on start  [bug, ui]") && text.contains("closed"),
        "{text}"
    );
    let (_, none) = env.expect(
        0,
        &["forge", "issue", "list", "ada/tool", "--label", "nope"],
    );
    assert!(none.contains("no open issues"), "{none}");

    // Bad input: exit 2, naming what is wrong.
    env.bad(
        &["forge", "issue", "show", "ada/tool#99"],
        &["issue ada/tool#99 does not exist"],
    );
    env.bad(
        &["forge", "issue", "show", "ada/missing#1"],
        &[
            "repository ada/missing does not exist",
            "baton forge repo create",
        ],
    );
    env.bad(
        &["forge", "issue", "list", "ada/missing"],
        &["repository ada/missing does not exist"],
    );
    for malformed in ["ada/tool", "ada/tool#x", "ada/tool#0", "adatool#1"] {
        env.bad(&["forge", "issue", "show", malformed], &[malformed]);
    }
    env.bad(
        &["forge", "issue", "list", "ada/tool", "--state", "opened"],
        &["opened"],
    );
    env.bad(
        &["forge", "issue", "create", "ada/tool", "--title", "No body"],
        &["--body"],
    );
    env.bad(
        &[
            "forge",
            "issue",
            "create",
            "ada/tool",
            "--title",
            "x",
            "--body-file",
            "/no/such/file",
        ],
        &["--body-file /no/such/file"],
    );
    env.bad(
        &[
            "forge", "issue", "create", "ada/tool", "--title", " ", "--body", "x",
        ],
        &["--title is empty"],
    );
    env.bad(
        &[
            "forge",
            "issue",
            "create",
            "ada/missing",
            "--title",
            "t",
            "--body",
            "x",
        ],
        &["repository ada/missing does not exist"],
    );
}

#[test]
fn pull_requests_are_created_listed_and_shown() {
    let (env, _src) = with_repo();
    let number = env.ok(&[
        "forge",
        "pr",
        "create",
        "ada/tool",
        "--head",
        "feature",
        "--base",
        "main",
        "--title",
        "Add the feature",
        "--body",
        "Tests: 3 passed",
        "--draft",
    ]);
    assert_eq!(number, "1\n");
    let shown = env.json(&["forge", "pr", "show", "ada/tool#1", "--json"]);
    assert_eq!(shown["title"], "Add the feature");
    assert_eq!(shown["head"], "feature");
    assert_eq!(shown["base"], "main");
    assert_eq!(shown["draft"], true);
    assert_eq!(shown["reviews"], serde_json::json!([]));

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let repo = Repo::parse("ada/tool").unwrap();
    runtime.block_on(async {
        let forge = LocalForge::open(env.data().join("forge"), "reviewer").unwrap();
        forge
            .upsert_review(
                &repo,
                1,
                "pr_review",
                &baton::forge::NewReview {
                    body: "Looks fine".into(),
                    event: baton::forge::ReviewEvent::Approve,
                    commit_id: None,
                    comments: Vec::new(),
                },
            )
            .await
            .unwrap();
        forge.close_pull_request(&repo, 1).await.unwrap();
    });
    let shown = env.json(&["forge", "pr", "show", "ada/tool#1", "--json"]);
    assert_eq!(shown["state"], "closed");
    assert_eq!(shown["reviews"][0]["state"], "APPROVED");
    assert_eq!(shown["reviews"][0]["author"], "reviewer");
    let text = env.ok(&["forge", "pr", "show", "ada/tool#1"]);
    assert!(text.contains("review 1 by reviewer: APPROVED"), "{text}");

    // --base defaults to the default branch (here `feature`, so another branch is the head).
    git(
        &env.data().join("forge/ada/tool/remote.git"),
        &["branch", "topic", "main"],
    );
    let second = env.json(&[
        "forge", "pr", "create", "ada/tool", "--head", "topic", "--title", "Topic", "--json",
    ]);
    assert_eq!(second["number"], 2);
    assert_eq!(second["base"], "feature");
    let list = |state: &str| -> Vec<u64> {
        env.json(&[
            "forge", "pr", "list", "ada/tool", "--state", state, "--json",
        ])
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["number"].as_u64().unwrap())
        .collect()
    };
    assert_eq!(list("open"), [2]);
    assert_eq!(list("closed"), [1]);
    assert_eq!(list("all"), [2, 1]);
    let text = env.ok(&["forge", "pr", "list", "ada/tool", "--state", "all"]);
    assert!(
        text.contains("topic -> feature  Topic") && text.contains("closed"),
        "{text}"
    );

    env.bad(
        &["forge", "pr", "show", "ada/tool#7"],
        &["pull request ada/tool#7 does not exist"],
    );
    env.bad(
        &[
            "forge", "pr", "create", "ada/tool", "--head", "nope", "--title", "t",
        ],
        &["nope", "does not exist"],
    );
    env.bad(
        &[
            "forge", "pr", "create", "ada/tool", "--head", "topic", "--title", "t",
        ],
        &["already exists"],
    );
    env.bad(
        &["forge", "pr", "list", "ada/missing"],
        &["repository ada/missing does not exist"],
    );
    env.bad(&["forge", "pr", "show", "ada/tool#1#2"], &["ada/tool#1#2"]);
}

#[test]
fn checks_are_recorded_on_a_commit_and_shown_with_its_pull_request() {
    let (env, src) = with_repo();
    env.ok(&[
        "forge",
        "pr",
        "create",
        "ada/tool",
        "--head",
        "feature",
        "--base",
        "main",
        "--title",
        "Add the feature",
    ]);
    let head = git(&src, &["rev-parse", "feature"]);
    let old = git(&src, &["rev-parse", "main"]);
    let empty = env.ok(&["forge", "checks", "list", "ada/tool#1", "--json"]);
    assert_eq!(empty.trim(), "[]");
    let (_, stderr) = env.expect(0, &["forge", "checks", "list", "ada/tool#1"]);
    assert!(
        stderr.contains(&format!("no checks on {}", &head[..7])),
        "{stderr}"
    );

    // CI plays: a failure with its log, then a success of another name, on the PR's head; and
    // a check on an older commit, which is not the PR's.
    std::fs::write(env.path("ci.log"), "test greets ... FAILED\n").unwrap();
    let failed = env.json(&[
        "forge",
        "check",
        "create",
        "ada/tool",
        "--sha",
        &head,
        "--name",
        "tests",
        "--conclusion",
        "failure",
        "--title",
        "1 failed",
        "--log",
        "ci.log",
        "--json",
    ]);
    assert_eq!(failed["conclusion"], "failure");
    assert_eq!(failed["log"], "test greets ... FAILED\n");
    env.ok(&[
        "forge",
        "check",
        "create",
        "ada/tool",
        "--sha",
        &head,
        "--name",
        "lint",
        "--conclusion",
        "success",
    ]);
    env.ok(&[
        "forge",
        "check",
        "create",
        "ada/tool",
        "--sha",
        &old,
        "--name",
        "tests",
        "--conclusion",
        "success",
    ]);
    let names = |checks: &Value| -> Vec<(String, String)> {
        checks
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["name"].as_str().unwrap().to_string(),
                    c["conclusion"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    let listed = env.json(&["forge", "checks", "list", "ada/tool#1", "--json"]);
    assert_eq!(
        names(&listed),
        [
            ("lint".into(), "success".into()),
            ("tests".into(), "failure".into())
        ]
    );
    assert!(listed
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c["head_sha"] == head.as_str()));
    let shown = env.json(&["forge", "pr", "show", "ada/tool#1", "--json"]);
    assert_eq!(shown["checks"], listed);
    let text = env.ok(&["forge", "pr", "show", "ada/tool#1"]);
    assert!(text.contains("failure   tests  1 failed"), "{text}");

    // A check posted again under its name replaces the earlier one, as on GitHub's page.
    env.ok(&[
        "forge",
        "check",
        "create",
        "ada/tool",
        "--sha",
        &head,
        "--name",
        "tests",
        "--conclusion",
        "success",
    ]);
    let listed = env.json(&["forge", "checks", "list", "ada/tool#1", "--json"]);
    assert_eq!(
        names(&listed),
        [
            ("lint".into(), "success".into()),
            ("tests".into(), "success".into())
        ]
    );

    env.bad(
        &[
            "forge",
            "check",
            "create",
            "ada/tool",
            "--sha",
            "abc1234",
            "--name",
            "t",
            "--conclusion",
            "success",
        ],
        &["`abc1234` is not a full commit sha"],
    );
    let absent = "0".repeat(40);
    env.bad(
        &[
            "forge",
            "check",
            "create",
            "ada/tool",
            "--sha",
            &absent,
            "--name",
            "t",
            "--conclusion",
            "success",
        ],
        &[&format!("commit {absent} in ada/tool")],
    );
    env.bad(
        &[
            "forge",
            "check",
            "create",
            "ada/tool",
            "--sha",
            &head,
            "--name",
            "t",
            "--conclusion",
            "passed",
        ],
        &["`passed` is not a check conclusion"],
    );
    env.bad(
        &[
            "forge",
            "check",
            "create",
            "ada/tool",
            "--sha",
            &head,
            "--name",
            "t",
            "--conclusion",
            "success",
            "--log",
            "missing.log",
        ],
        &["missing.log"],
    );
    env.bad(
        &["forge", "checks", "list", "ada/tool#9"],
        &["pull request ada/tool#9 does not exist"],
    );
}

#[test]
fn releases_are_shown_by_tag() {
    let (env, _src) = with_repo();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let repo = Repo::parse("ada/tool").unwrap();
    runtime.block_on(async {
        let forge = LocalForge::open(env.data().join("forge"), "baton").unwrap();
        let tags = forge.tags(&repo).await.unwrap();
        assert_eq!(tags.len(), 1);
        assert_eq!(tags[0].name, "v1.0.0");
        forge
            .upsert_release(
                &repo,
                &NewRelease {
                    tag: "v1.0.0".into(),
                    name: "One".into(),
                    body: "- first".into(),
                    draft: false,
                    prerelease: true,
                },
            )
            .await
            .unwrap();
    });
    let release = env.json(&["forge", "release", "show", "ada/tool", "v1.0.0", "--json"]);
    assert_eq!(release["tag"], "v1.0.0");
    assert_eq!(release["name"], "One");
    assert_eq!(release["prerelease"], true);
    let text = env.ok(&["forge", "release", "show", "ada/tool", "v1.0.0"]);
    assert!(
        text.contains("v1.0.0 One (pre-release)") && text.contains("- first"),
        "{text}"
    );
    env.bad(
        &["forge", "release", "show", "ada/tool", "v9"],
        &["ada/tool has no release for tag `v9`"],
    );
    env.bad(
        &["forge", "release", "show", "ada/missing", "v1.0.0"],
        &["repository ada/missing does not exist"],
    );
}

/// A config naming the github forge at Prism, and the token in the environment.
fn github_env(base: &str) -> Env {
    let mut env = Env::new();
    let config = env.path("config.toml");
    std::fs::write(
        &config,
        format!("[forge]\nkind = \"github\"\n\n[github]\nbase_url = \"{base}\"\n"),
    )
    .unwrap();
    env.config = Some(config);
    env.vars = vec![("GITHUB_TOKEN".into(), "ghp_clitoken".into())];
    env
}

#[test]
fn the_same_commands_work_against_github() {
    let Some(base) = common_forge::require_prism("the_same_commands_work_against_github") else {
        return;
    };
    let env = github_env(&base);
    let issue = env.json(&[
        "forge",
        "issue",
        "show",
        "octocat/hello-world#1347",
        "--json",
    ]);
    assert!(issue["number"].as_u64().is_some_and(|n| n > 0), "{issue}");
    assert!(
        issue["comments"].as_array().is_some_and(|c| !c.is_empty()),
        "{issue}"
    );
    let pulls = env.json(&[
        "forge",
        "pr",
        "list",
        "octocat/hello-world",
        "--state",
        "all",
        "--json",
    ]);
    assert!(pulls.as_array().is_some_and(|p| !p.is_empty()), "{pulls}");
    let pr = env.json(&["forge", "pr", "show", "octocat/hello-world#1347", "--json"]);
    assert!(pr["reviews"].is_array(), "{pr}");
    env.json(&[
        "forge",
        "issue",
        "list",
        "octocat/hello-world",
        "--label",
        "bug",
        "--json",
    ]);
    let created = env.ok(&[
        "forge",
        "issue",
        "create",
        "octocat/hello-world",
        "--title",
        "Found a bug",
        "--body",
        "It crashes",
        "--label",
        "bug",
    ]);
    assert!(created.trim().parse::<u64>().is_ok(), "{created}");
    env.json(&[
        "forge",
        "release",
        "show",
        "octocat/hello-world",
        "v1.0.0",
        "--json",
    ]);
    env.bad(
        &["forge", "repo", "create", "octocat/new", "--from", "."],
        &["local forge only"],
    );

    // Without a token: a configuration error, exit 2, that names what to set.
    let mut no_token = github_env(&base);
    no_token.vars.clear();
    no_token.bad(
        &["forge", "issue", "show", "octocat/hello-world#1"],
        &["GITHUB_TOKEN"],
    );
}

#[test]
fn an_unreachable_github_is_exit_1_and_keeps_the_token_secret() {
    // A port nobody listens on: the forge retries, then gives up; that is trouble, not input.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let env = github_env(&format!("http://127.0.0.1:{port}"));
    let (stdout, stderr) = env.expect(1, &["forge", "pr", "list", "octocat/hello-world"]);
    assert!(stdout.is_empty());
    assert!(stderr.contains("/repos/octocat/hello-world"), "{stderr}");
    assert!(!stderr.contains("ghp_clitoken"), "{stderr}");
}
