//! Issue → PR on the `github` forge: every API call the workflow makes goes to Prism serving
//! GitHub's own OpenAPI description (which refuses a wrong method, path, query or body), and git
//! clones and pushes a local bare remote that stands in for the `clone_url` the API reports
//! (git's own `url.<base>.insteadOf`, given by a global git config).
//!
//! A small proxy on loopback sits between baton and Prism. It forwards every call untouched and
//! records its answer, with one change to one answer: GitHub's example issue carries a
//! `pull_request` field (it is an example of a PR seen as an issue), and baton rightly refuses
//! to turn a pull request into a pull request, so the proxy drops that field.

mod common;
mod common_forge;

use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::IntoResponse;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_baton");

type Calls = Arc<Mutex<Vec<(String, String, u16)>>>;

#[derive(Clone)]
struct Proxy {
    prism: String,
    calls: Calls,
    http: reqwest::Client,
}

async fn forward(
    State(p): State<Proxy>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
    let mut request = p
        .http
        .request(method.clone(), format!("{}{path}", p.prism))
        .body(body.to_vec());
    for name in ["content-type", "accept", "authorization"] {
        if let Some(v) = headers.get(name) {
            request = request.header(name, v.clone());
        }
    }
    let answer = request.send().await.expect("prism answers");
    let status = answer.status().as_u16();
    let mut text = answer.bytes().await.unwrap().to_vec();
    let is_issue = method == Method::GET
        && uri.path().contains("/issues/")
        && uri
            .path()
            .rsplit('/')
            .next()
            .is_some_and(|n| n.parse::<u64>().is_ok());
    if is_issue && status == 200 {
        let mut issue: Value = serde_json::from_slice(&text).unwrap();
        issue.as_object_mut().unwrap().remove("pull_request");
        text = serde_json::to_vec(&issue).unwrap();
    }
    p.calls
        .lock()
        .unwrap()
        .push((method.to_string(), uri.path().to_string(), status));
    (
        StatusCode::from_u16(status).unwrap(),
        [("content-type", "application/json")],
        text,
    )
}

fn start_proxy(prism: String) -> (String, Calls) {
    let calls: Calls = Arc::default();
    let proxy = Proxy {
        prism,
        calls: calls.clone(),
        http: reqwest::Client::new(),
    };
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let app = axum::Router::new().fallback(forward).with_state(proxy);
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    (format!("http://{addr}"), calls)
}

/// The repository Prism's examples describe (`octocat/Hello-World`, default branch `master`),
/// as a local bare remote holding a Rust crate whose tests fail.
fn remote(root: &Path) -> std::path::PathBuf {
    let project = root.join("project");
    std::fs::create_dir_all(project.join("src")).unwrap();
    std::fs::write(
        project.join("Cargo.toml"),
        "[package]\nname = \"hello\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[workspace]\n",
    )
    .unwrap();
    std::fs::write(
        project.join("Cargo.lock"),
        "version = 4\n\n[[package]]\nname = \"hello\"\nversion = \"0.1.0\"\n",
    )
    .unwrap();
    std::fs::write(project.join(".gitignore"), "/target\n").unwrap();
    std::fs::write(
        project.join("src/lib.rs"),
        "pub fn greet() -> &'static str {\n    \"Hello, Wrld!\"\n}\n\n#[test]\nfn greets() {\n    assert_eq!(greet(), \"Hello, World!\");\n}\n",
    )
    .unwrap();
    std::fs::write(
        project.join(".baton.toml"),
        "[verify]\ndetect = false\n[[verify.checks]]\nkind = \"tests\"\ncommand = \"cargo test --color never\"\n",
    )
    .unwrap();
    common::git(&project, &["init", "--quiet", "--initial-branch=master"]);
    common::git(&project, &["add", "--all"]);
    common::git(&project, &["commit", "--quiet", "-m", "hello"]);
    let bare = root.join("Hello-World.git");
    common::git(
        root,
        &[
            "clone",
            "--quiet",
            "--bare",
            project.to_str().unwrap(),
            bare.to_str().unwrap(),
        ],
    );
    bare
}

#[test]
fn issue_to_pr_makes_only_calls_github_accepts() {
    // Missing Prism fails the test (under CI always); it returns only when skipping is allowed.
    let Some(prism) = common_forge::prism() else {
        return;
    };
    let (base, calls) = start_proxy(prism);
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let bare = remote(root);
    let gitconfig = root.join("gitconfig");
    std::fs::write(
        &gitconfig,
        format!(
            "[url \"{}\"]\n\tinsteadOf = https://github.com/octocat/Hello-World.git\n",
            bare.display()
        ),
    )
    .unwrap();
    let fixed = root.join("fixed.rs");
    std::fs::write(
        &fixed,
        "pub fn greet() -> &'static str {\n    \"Hello, World!\"\n}\n\n#[test]\nfn greets() {\n    assert_eq!(greet(), \"Hello, World!\");\n}\n",
    )
    .unwrap();
    let agent = root.join("agent.sh");
    std::fs::write(
        &agent,
        format!(
            "#!/bin/sh\ncp {} src/lib.rs\necho fixed the greeting\n",
            fixed.display()
        ),
    )
    .unwrap();
    let config = root.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[forge]\nkind = \"github\"\n[github]\nbase_url = \"{base}\"\n\
             [agent]\nbackend = \"command\"\ncommand = [\"sh\", \"{}\"]\n",
            agent.display()
        ),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["issue-to-pr", "octocat/Hello-World#1347", "--json"])
        .env("BATON_DATA_DIR", root.join("data"))
        .env("BATON_CONFIG", &config)
        .env("GITHUB_TOKEN", "ghp_prismcontracttoken")
        .env("GIT_CONFIG_GLOBAL", &gitconfig)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let calls = calls.lock().unwrap().clone();
    assert_eq!(out.status.code(), Some(0), "{stderr}\ncalls: {calls:#?}");
    let record: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(record["status"], "completed", "{stderr}");

    // Every call was one GitHub's description accepts.
    let refused: Vec<_> = calls.iter().filter(|(_, _, s)| *s >= 400).collect();
    assert!(refused.is_empty(), "Prism refused: {refused:#?}");
    let made = |method: &str, path: &str| calls.iter().any(|(m, p, _)| m == method && p == path);
    for (method, path) in [
        ("GET", "/repos/octocat/Hello-World/issues/1347"),
        ("GET", "/repos/octocat/Hello-World"),
        ("GET", "/repos/octocat/Hello-World/pulls"),
        ("POST", "/repos/octocat/Hello-World/pulls"),
        ("GET", "/repos/octocat/Hello-World/issues/1347/comments"),
        ("POST", "/repos/octocat/Hello-World/issues/1347/comments"),
    ] {
        assert!(made(method, path), "no {method} {path} in {calls:#?}");
    }
    // git went to the stand-in remote: the branch is there with the fix.
    let branch = record["state"]["branch"].as_str().unwrap();
    assert_eq!(
        branch, "fix/issue-1347",
        "the example issue is labeled `bug`"
    );
    let pushed = common::git(&bare, &["show", &format!("{branch}:src/lib.rs")]);
    assert!(pushed.contains("Hello, World!"), "{pushed}");
    // The token went by header, never into a URL, a log line or the run.
    assert!(!stderr.contains("ghp_prismcontracttoken"));
    assert!(!record.to_string().contains("ghp_prismcontracttoken"));
}
