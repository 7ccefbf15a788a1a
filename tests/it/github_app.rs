//! baton as a GitHub App, against the GitHub stand-in (Prism serving GitHub's OpenAPI
//! description, behind the recording proxy, which refuses a call GitHub would not accept):
//!
//! - the manifest names the permissions and events baton needs;
//! - the manifest flow's code is traded for the App, kept in the data dir (0600), never printed,
//!   and its webhook secret is what the daemon then checks deliveries with;
//! - `installation` events are accepted and logged, and `baton github installations` lists the
//!   App's installations;
//! - with App credentials alone, Issue → PR clones and pushes through a loopback git server that
//!   accepts only the installation token the stand-in minted (by header), comments and opens
//!   the PR, and the token appears in no output, file or event.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::common_daemon::Daemon;
use crate::common_forge::{self, git_http, proxy::start_proxy_with};
use crate::BATON;

/// A fresh RSA key, PKCS#1 PEM as GitHub hands out, for the App's JWTs.
pub(crate) fn app_key(root: &Path) -> PathBuf {
    let key = root.join("app-key.pem");
    let out = Command::new("openssl")
        .args(["genrsa", "-traditional", "-out"])
        .arg(&key)
        .arg("2048")
        .output()
        .expect("openssl is installed");
    assert!(out.status.success(), "{out:?}");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    key
}

/// The installation token the stand-in mints (GitHub's example answer).
fn minted_token(prism: &str) -> String {
    crate::setup::block_on(async {
        let answer: Value = reqwest::Client::new()
            .post(format!("{prism}/app/installations/1/access_tokens"))
            .header("authorization", "Bearer a.jwt.here")
            .header("accept", "application/json")
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        answer["token"].as_str().expect("a token").to_string()
    })
}

fn config(root: &Path, base: &str, extra: &str) -> PathBuf {
    let path = root.join("config.toml");
    std::fs::write(
        &path,
        format!("[forge]\nkind = \"github\"\n[github]\nbase_url = \"{base}\"\n{extra}"),
    )
    .unwrap();
    path
}

#[test]
fn the_manifest_asks_for_what_baton_does() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(BATON)
        .args([
            "github",
            "app",
            "manifest",
            "--url",
            "https://baton.example.com",
        ])
        .env("BATON_DATA_DIR", tmp.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let manifest: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        manifest["hook_attributes"]["url"],
        "https://baton.example.com/webhooks/github"
    );
    for (permission, level) in [
        ("contents", "write"),
        ("pull_requests", "write"),
        ("issues", "write"),
        ("checks", "write"),
    ] {
        assert_eq!(manifest["default_permissions"][permission], level);
    }
    let events: Vec<&str> = manifest["default_events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for event in ["issues", "issue_comment", "pull_request", "check_suite"] {
        assert!(events.contains(&event), "{events:?}");
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("baton github app create --code"),
        "{stderr}"
    );

    let html = Command::new(BATON)
        .args(["github", "app", "manifest", "--html", "--org", "acme"])
        .env("BATON_DATA_DIR", tmp.path())
        .output()
        .unwrap();
    let page = String::from_utf8_lossy(&html.stdout);
    assert!(
        page.contains("action=\"https://github.com/organizations/acme/settings/apps/new\""),
        "{page}"
    );
    assert!(page.contains("name=\"manifest\""), "{page}");
}

#[test]
fn a_manifest_code_becomes_a_kept_app_whose_secret_guards_the_webhook() {
    let Some(prism) = common_forge::prism() else {
        return;
    };
    let Some(examples) = common_forge::webhook_examples() else {
        return;
    };
    let (base, calls) = start_proxy_with(prism.clone(), None);
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let data = root.join("data");
    let config = config(root, &base, "");

    // A code that could change the URL's path is refused before any request.
    let bad = Command::new(BATON)
        .args(["github", "app", "create", "--code", "../../user"])
        .env("BATON_DATA_DIR", &data)
        .env("BATON_CONFIG", &config)
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2), "{bad:?}");
    assert!(String::from_utf8_lossy(&bad.stderr).contains("is not a manifest code"));
    assert!(calls.lock().unwrap().is_empty());

    let out = Command::new(BATON)
        .args(["github", "app", "create", "--code", "a1b2c3", "--json"])
        .env("BATON_DATA_DIR", &data)
        .env("BATON_CONFIG", &config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let calls = calls.lock().unwrap().clone();
    assert_eq!(
        calls,
        vec![(
            "POST".to_string(),
            "/app-manifests/a1b2c3/conversions".to_string(),
            201
        )]
    );
    let app: Value = serde_json::from_slice(&out.stdout).unwrap();
    let example: Value = crate::setup::block_on(async {
        reqwest::Client::new()
            .post(format!("{prism}/app-manifests/x/conversions"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    });
    assert_eq!(app["id"], example["id"]);
    let dir = data.join("github-app");
    assert_eq!(
        std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
        0o700
    );
    for file in ["app-id", "private-key.pem", "webhook-secret", "app.json"] {
        let mode = std::fs::metadata(dir.join(file))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{file}");
    }
    let pem = example["pem"].as_str().unwrap();
    let secret = example["webhook_secret"].as_str().unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.join("private-key.pem")).unwrap(),
        pem
    );
    for (what, text) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
        let text = String::from_utf8_lossy(text);
        assert!(
            !text.contains(pem) && !text.contains(secret),
            "{what}: {text}"
        );
    }
    assert!(crate::common::files_containing(&dir, secret.as_bytes())
        .iter()
        .all(|f| f.ends_with("webhook-secret")));

    // The daemon checks deliveries with the kept secret, and logs installation changes.
    let local = root.join("local.toml");
    std::fs::write(&local, "[forge]\nkind = \"local\"\n").unwrap();
    let daemon = Daemon::start(&data, &local);
    for (n, event) in ["installation", "installation_repositories"]
        .into_iter()
        .enumerate()
    {
        let payload = common_forge::example(&examples, event, |_| true);
        let (status, answer) = daemon.deliver(secret, event, &format!("install-{n}"), &payload);
        assert_eq!(
            (status, &answer["status"]),
            (200, &Value::from("logged")),
            "{event}"
        );
        let (status, _) = daemon.deliver("not the secret", event, &format!("forged-{n}"), &payload);
        assert_eq!(status, 401, "{event} signed with another secret");
    }
}

#[test]
fn installations_are_listed_as_the_app() {
    let Some(prism) = common_forge::prism() else {
        return;
    };
    let (base, calls) = start_proxy_with(prism, None);
    let tmp = tempfile::tempdir().unwrap();
    let key = app_key(tmp.path());
    let config = config(tmp.path(), &base, "");
    let out = Command::new(BATON)
        .args(["github", "installations", "--json"])
        .env("BATON_DATA_DIR", tmp.path().join("data"))
        .env("BATON_CONFIG", &config)
        .env("BATON_GITHUB_APP_ID", "12345")
        .env("BATON_GITHUB_APP_KEY_FILE", &key)
        .env_remove("GITHUB_TOKEN")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    let first = &list[0];
    assert!(first["id"].as_u64().is_some(), "{list}");
    assert!(!first["account"].as_str().unwrap().is_empty(), "{list}");
    assert!(calls
        .lock()
        .unwrap()
        .iter()
        .any(|(m, p, s)| m == "GET" && p == "/app/installations" && *s == 200));

    // With a personal token there are no installations to list: it says what to set.
    let out = Command::new(BATON)
        .args(["github", "installations"])
        .env("BATON_DATA_DIR", tmp.path().join("data"))
        .env("BATON_CONFIG", &config)
        .env("GITHUB_TOKEN", "ghp_notanapp")
        .env_remove("BATON_GITHUB_APP_ID")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("BATON_GITHUB_APP_ID"));
}

#[test]
fn an_app_alone_clones_pushes_and_opens_the_pr_with_its_installation_token() {
    let Some(prism) = common_forge::prism() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    // Served as `/octocat/Hello-World.git`, like GitHub's addresses.
    let git_root = root.join("git");
    std::fs::create_dir_all(git_root.join("octocat")).unwrap();
    let bare = git_root.join("octocat/Hello-World.git");
    std::fs::rename(crate::issue_to_pr_github::remote(root), &bare).unwrap();
    let token = minted_token(&prism);
    let (git_base, seen) = git_http::start(git_root, &token);
    let clone_url = format!("{git_base}/octocat/Hello-World.git");
    // The git server checks: without the token, nothing.
    let anonymous = Command::new("git")
        .args(["ls-remote", &clone_url])
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()
        .unwrap();
    assert!(!anonymous.status.success());
    assert!(seen
        .lock()
        .unwrap()
        .iter()
        .any(|(_, _, status)| *status == 401));

    let (base, calls) = start_proxy_with(prism, Some(clone_url));
    let key = app_key(root);
    let agent = crate::issue_to_pr_github::greeting_agent(root);
    let config = config(
        root,
        &base,
        &format!(
            "[agent]\nbackend = \"command\"\ncommand = [\"sh\", \"{}\"]\n",
            agent.display()
        ),
    );
    let data = root.join("data");
    let out = Command::new(BATON)
        .args(["issue-to-pr", "octocat/Hello-World#1347", "--json"])
        .env("BATON_DATA_DIR", &data)
        .env("BATON_CONFIG", &config)
        .env("BATON_GITHUB_APP_ID", "12345")
        .env("BATON_GITHUB_APP_KEY_FILE", &key)
        .env_remove("GITHUB_TOKEN")
        .env_remove("BATON_GITHUB_APP_INSTALLATION_ID")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let calls = calls.lock().unwrap().clone();
    let record: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {stderr}\ncalls: {calls:#?}"));
    assert_eq!(record["status"], "completed", "{stderr}\ncalls: {calls:#?}");

    // Every call was one GitHub's description accepts, the App's own among them.
    let refused: Vec<_> = calls.iter().filter(|(_, _, s)| *s >= 400).collect();
    assert!(refused.is_empty(), "Prism refused: {refused:#?}");
    let made = |method: &str, path: &str| calls.iter().any(|(m, p, _)| m == method && p == path);
    for (method, path) in [
        ("GET", "/repos/octocat/Hello-World/installation"),
        ("POST", "/app/installations/1/access_tokens"),
        ("POST", "/repos/octocat/Hello-World/pulls"),
        ("POST", "/repos/octocat/Hello-World/issues/1347/comments"),
        // As an App, baton's verification is a check run on the commit it pushed.
        ("POST", "/repos/octocat/Hello-World/check-runs"),
    ] {
        assert!(made(method, path), "no {method} {path} in {calls:#?}");
    }
    let publish = crate::issue_to_pr_github::step(&record, "publish_check");
    assert_eq!(publish["status"], "completed", "{publish}");

    // git cloned and pushed with the installation token, by header.
    let seen = seen.lock().unwrap().clone();
    let pushed_with_token = seen.iter().any(|(path, right, status)| {
        path.ends_with("/git-receive-pack") && *right && *status == 200
    });
    assert!(pushed_with_token, "{seen:#?}");
    let branch = record["state"]["branch"].as_str().unwrap();
    let pushed = crate::common::git(&bare, &["show", &format!("{branch}:src/lib.rs")]);
    assert!(pushed.contains("Hello, World!"), "{pushed}");

    // The token went by header only: in no output, file (store, clone, logs) or event.
    assert!(!stderr.contains(&token), "{stderr}");
    assert!(!record.to_string().contains(&token));
    let leaked = crate::common::files_containing(&data, token.as_bytes());
    assert!(leaked.is_empty(), "the token is in {leaked:?}");
    let events = Command::new(BATON)
        .args(["show", record["id"].as_str().unwrap(), "--events", "--json"])
        .env("BATON_DATA_DIR", &data)
        .env("BATON_CONFIG", &config)
        .output()
        .unwrap();
    assert!(events.status.success(), "{events:?}");
    assert!(!String::from_utf8_lossy(&events.stdout).contains(&token));
}
