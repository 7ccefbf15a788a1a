//! The github forge's rate-limit, retry and authentication behaviour against a scripted loopback
//! server: every answer is chosen by the test, every request is recorded.

use crate::require;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use baton::forge::github::{GithubAuth, GithubConfig, GithubForge, RetryPolicy};
use baton::forge::{Error, Forge, Repo};
use serde_json::json;

/// One request the server saw.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    path: String,
    authorization: String,
    accept: String,
    body: String,
    at: Instant,
}

/// One scripted answer.
struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: String,
    delay: Duration,
}

fn reply(status: u16, body: serde_json::Value) -> Reply {
    Reply {
        status,
        headers: Vec::new(),
        body: body.to_string(),
        delay: Duration::ZERO,
    }
}

fn with_header(mut r: Reply, name: &'static str, value: impl ToString) -> Reply {
    r.headers.push((name, value.to_string()));
    r
}

type Script = Arc<dyn Fn(&Seen, usize) -> Reply + Send + Sync>;

struct Server {
    base: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Server {
    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// Starts a server on 127.0.0.1:0 that answers the n-th request (0-based) with `script`.
async fn serve(script: impl Fn(&Seen, usize) -> Reply + Send + Sync + 'static) -> Server {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let script: Script = Arc::new(script);
    let state = (Arc::clone(&seen), script);
    let app = Router::new().fallback(
        |axum::extract::State((seen, script)): axum::extract::State<(
            Arc<Mutex<Vec<Seen>>>,
            Script,
        )>,
         method: Method,
         uri: Uri,
         headers: HeaderMap,
         body: Bytes| async move {
            let header = |n: &str| {
                headers
                    .get(n)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string()
            };
            let request = Seen {
                method: method.to_string(),
                path: uri
                    .path_and_query()
                    .map(|p| p.as_str().to_string())
                    .unwrap_or_default(),
                authorization: header("authorization"),
                accept: header("accept"),
                body: String::from_utf8_lossy(&body).into_owned(),
                at: Instant::now(),
            };
            let n = {
                let mut seen = seen.lock().unwrap();
                seen.push(request.clone());
                seen.len() - 1
            };
            let r = script(&request, n);
            tokio::time::sleep(r.delay).await;
            let mut response: Response =
                (StatusCode::from_u16(r.status).unwrap(), r.body).into_response();
            for (name, value) in r.headers {
                response.headers_mut().insert(name, value.parse().unwrap());
            }
            response
                .headers_mut()
                .insert("content-type", "application/json".parse().unwrap());
            response
        },
    );
    let app = app.with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Server { base, seen }
}

const TOKEN: &str = "ghp_0123456789abcdefSECRETTOKEN";

fn config(base: &str) -> GithubConfig {
    let mut config = GithubConfig::new(GithubAuth::Token(TOKEN.to_string().into()));
    config.base_url = base.to_string();
    config.retry = RetryPolicy {
        max_attempts: 4,
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(100),
        max_rate_limit_wait: Duration::from_secs(5),
        secondary_rate_limit_wait: Duration::from_millis(200),
    };
    config.request_timeout = Duration::from_secs(5);
    config
}

fn repo() -> Repo {
    Repo::parse("octo/app").unwrap()
}

fn comment_json(id: u64, body: &str) -> serde_json::Value {
    comment_by(id, "baton-bot", body)
}

fn comment_by(id: u64, login: &str, body: &str) -> serde_json::Value {
    json!({
        "id": id, "body": body, "user": {"login": login},
        "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z",
        "html_url": format!("https://github.com/octo/app/issues/1#issuecomment-{id}"),
    })
}

fn epoch() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test]
async fn server_errors_are_retried_then_succeed() {
    let server = serve(|_, n| match n {
        0 => reply(502, json!({"message": "Bad Gateway"})),
        1 => reply(503, json!({"message": "Service Unavailable"})),
        _ => reply(200, comment_json(5, "edited")),
    })
    .await;
    let forge = GithubForge::new(config(&server.base)).unwrap();
    let comment = forge.edit_comment(&repo(), 5, "edited").await.unwrap();
    assert_eq!(comment.body, "edited");
    let seen = server.seen();
    assert_eq!(seen.len(), 3);
    for s in &seen {
        assert_eq!(s.method, "PATCH");
        assert_eq!(s.path, "/repos/octo/app/issues/comments/5");
        assert_eq!(s.body, r#"{"body":"edited"}"#);
        assert_eq!(s.authorization, format!("Bearer {TOKEN}"));
        assert_eq!(s.accept, "application/json");
    }
}

#[tokio::test]
async fn server_errors_give_up_with_githubs_message() {
    let server = serve(|_, _| reply(500, json!({"message": "Something broke"}))).await;
    let forge = GithubForge::new(config(&server.base)).unwrap();
    let err = forge.issue(&repo(), 1).await.unwrap_err();
    assert_eq!(server.seen().len(), 4, "max_attempts");
    assert!(matches!(err, Error::Api { status: 500, .. }), "{err:?}");
    assert!(err.to_string().contains("Something broke"), "{err}");
    assert!(err.is_retryable());
}

#[tokio::test]
async fn client_errors_are_not_retried() {
    let server = serve(|_, n| match n {
        0 => reply(404, json!({"message": "Not Found"})),
        1 => reply(
            422,
            json!({"message": "Validation Failed",
                   "errors": [{"resource": "PullRequest", "code": "custom",
                               "message": "No commits between main and baton/run-1"}]}),
        ),
        _ => reply(
            403,
            json!({"message": "Resource not accessible by personal access token"}),
        ),
    })
    .await;
    let forge = GithubForge::new(config(&server.base)).unwrap();
    let r = repo();
    let not_found = forge.issue(&r, 99).await.unwrap_err();
    assert!(
        not_found.is_not_found() && !not_found.is_retryable(),
        "{not_found:?}"
    );
    assert!(not_found
        .to_string()
        .contains("GET /repos/octo/app/issues/99 answered 404: Not Found"));
    let new = baton::forge::NewPullRequest {
        title: "t".into(),
        head: "baton/run-1".into(),
        base: "main".into(),
        body: String::new(),
        draft: false,
    };
    let invalid = forge.create_pull_request(&r, &new).await.unwrap_err();
    assert!(
        invalid
            .to_string()
            .contains("Validation Failed (No commits between main and baton/run-1)"),
        "{invalid}"
    );
    let forbidden = forge.add_labels(&r, 1, &["x".into()]).await.unwrap_err();
    assert_eq!(forbidden.status(), Some(403));
    assert_eq!(server.seen().len(), 3, "one request each, no retries");
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let server = serve(|_, n| match n {
        0 => with_header(
            reply(429, json!({"message": "Too Many Requests"})),
            "retry-after",
            1,
        ),
        _ => reply(200, json!([])),
    })
    .await;
    let forge = GithubForge::new(config(&server.base)).unwrap();
    let comments = forge.comments(&repo(), 1).await.unwrap();
    assert!(comments.is_empty());
    let seen = server.seen();
    assert_eq!(seen.len(), 2);
    let waited = seen[1].at - seen[0].at;
    assert!(waited >= Duration::from_secs(1), "waited {waited:?}");
    assert!(waited < Duration::from_millis(1500), "waited {waited:?}");
    assert_eq!(
        seen[0].path,
        "/repos/octo/app/issues/1/comments?per_page=100&page=1"
    );
}

#[tokio::test]
async fn primary_limit_waits_for_the_reset() {
    let server = serve(|_, n| match n {
        0 => with_header(
            with_header(
                reply(
                    403,
                    json!({"message": "API rate limit exceeded for user ID 1."}),
                ),
                "x-ratelimit-remaining",
                0,
            ),
            "x-ratelimit-reset",
            epoch() + 1,
        ),
        _ => with_header(
            reply(201, comment_json(7, "hi")),
            "x-ratelimit-remaining",
            4999,
        ),
    })
    .await;
    let forge = GithubForge::new(config(&server.base)).unwrap();
    forge.create_comment(&repo(), 1, "hi").await.unwrap();
    let seen = server.seen();
    assert_eq!(seen.len(), 2);
    let waited = seen[1].at - seen[0].at;
    assert!(waited >= Duration::from_millis(500), "waited {waited:?}");
    assert!(waited < Duration::from_millis(2700), "waited {waited:?}");
}

#[tokio::test]
async fn an_exhausted_budget_delays_the_next_call() {
    // A success that spends the last request: the next call waits for the reset before sending.
    let server = serve(|_, n| match n {
        0 => with_header(
            with_header(reply(200, json!([])), "x-ratelimit-remaining", 0),
            "x-ratelimit-reset",
            epoch() + 1,
        ),
        _ => with_header(reply(200, json!([])), "x-ratelimit-remaining", 4999),
    })
    .await;
    let forge = GithubForge::new(config(&server.base)).unwrap();
    forge.comments(&repo(), 1).await.unwrap();
    forge.comments(&repo(), 2).await.unwrap();
    let seen = server.seen();
    let waited = seen[1].at - seen[0].at;
    assert!(waited >= Duration::from_millis(500), "waited {waited:?}");
    // Budget restored: the third call goes at once.
    let before = Instant::now();
    forge.comments(&repo(), 3).await.unwrap();
    assert!(before.elapsed() < Duration::from_millis(400));
}

#[tokio::test]
async fn secondary_limit_without_headers_backs_off() {
    let server = serve(|_, n| match n {
        0 | 1 => reply(
            403,
            json!({"message": "You have exceeded a secondary rate limit. Please wait a few minutes before you try again."}),
        ),
        _ => reply(200, json!([{"name": "baton"}])),
    })
    .await;
    let forge = GithubForge::new(config(&server.base)).unwrap();
    let labels = forge
        .add_labels(&repo(), 1, &["baton".into()])
        .await
        .unwrap();
    assert_eq!(labels, vec!["baton".to_string()]);
    let seen = server.seen();
    assert_eq!(seen.len(), 3);
    assert!(seen[1].at - seen[0].at >= Duration::from_millis(200));
    assert!(
        seen[2].at - seen[1].at >= Duration::from_millis(400),
        "doubled"
    );
}

#[tokio::test]
async fn a_long_rate_limit_is_returned_not_slept() {
    let server = serve(|_, _| {
        with_header(
            reply(429, json!({"message": "slow down"})),
            "retry-after",
            3600,
        )
    })
    .await;
    let forge = GithubForge::new(config(&server.base)).unwrap();
    let started = Instant::now();
    let err = forge.issue(&repo(), 1).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(2));
    match &err {
        Error::RateLimited { wait, .. } => assert!(*wait >= Duration::from_secs(3600)),
        other => panic!("expected RateLimited, got {other:?}"),
    }
    assert!(err.is_retryable());
    assert_eq!(server.seen().len(), 1);
}

#[tokio::test]
async fn timeouts_are_retried() {
    let server = serve(|_, n| {
        let mut r = reply(200, comment_json(3, "x"));
        if n == 0 {
            r.delay = Duration::from_secs(3);
        }
        r
    })
    .await;
    let mut config = config(&server.base);
    config.request_timeout = Duration::from_millis(300);
    let forge = GithubForge::new(config).unwrap();
    let started = Instant::now();
    forge.edit_comment(&repo(), 3, "x").await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(server.seen().len(), 2);
}

#[tokio::test]
async fn unreachable_server_is_a_transport_error_without_the_token() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let forge = GithubForge::new(config(&format!("http://127.0.0.1:{port}"))).unwrap();
    let err = forge.issue(&repo(), 1).await.unwrap_err();
    match &err {
        Error::Transport { attempts, .. } => assert_eq!(*attempts, 4),
        other => panic!("expected Transport, got {other:?}"),
    }
    assert!(err.is_retryable());
    for shown in [err.to_string(), format!("{err:?}"), format!("{forge:?}")] {
        assert!(!shown.contains("SECRETTOKEN"), "{shown}");
    }
}

#[tokio::test]
async fn enterprise_base_url_keeps_its_path_and_sends_the_token() {
    let server =
        serve(|_, _| reply(200, json!({"permission": "write", "role_name": "maintain"}))).await;
    let forge = GithubForge::new(config(&format!("{}/api/v3/", server.base))).unwrap();
    let permission = forge.permission(&repo(), "alice").await.unwrap();
    assert_eq!(permission, baton::forge::Permission::Maintain);
    let seen = server.seen();
    assert_eq!(
        seen[0].path,
        "/api/v3/repos/octo/app/collaborators/alice/permission"
    );
    assert_eq!(seen[0].authorization, format!("Bearer {TOKEN}"));
}

#[tokio::test]
async fn upsert_comment_edits_its_own_comment() {
    // The second page holds the run's earlier comment: the forge pages and edits it.
    let marker = "<!-- baton:run=run-9:progress -->";
    let server = serve(move |seen, _| {
        if seen.path == "/user" {
            reply(200, json!({"login": "baton-bot"}))
        } else if seen.method == "GET" && seen.path.ends_with("page=1") {
            let page: Vec<_> = (1..=100).map(|i| comment_json(i, "chatter")).collect();
            reply(200, json!(page))
        } else if seen.method == "GET" {
            reply(200, json!([comment_json(500, &format!("old\n\n{marker}"))]))
        } else {
            reply(200, comment_json(500, &format!("new\n\n{marker}")))
        }
    })
    .await;
    let forge = GithubForge::new(config(&server.base)).unwrap();
    let c = forge
        .upsert_comment(&repo(), 4, "run-9", Some("progress"), "new")
        .await
        .unwrap();
    assert_eq!(c.id, 500);
    let seen = server.seen();
    let calls: Vec<String> = seen
        .iter()
        .map(|s| format!("{} {}", s.method, s.path))
        .collect();
    assert_eq!(
        calls,
        [
            "GET /user",
            "GET /repos/octo/app/issues/4/comments?per_page=100&page=1",
            "GET /repos/octo/app/issues/4/comments?per_page=100&page=2",
            "PATCH /repos/octo/app/issues/comments/500",
        ]
    );
    assert_eq!(
        seen[3].body,
        json!({"body": format!("new\n\n{marker}")}).to_string()
    );
}

/// An RSA key for the App test, made by the `openssl` CLI; without it a failure, or `None`
/// when skipping is allowed.
fn app_key() -> Option<String> {
    let out = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
        ])
        .output();
    match out {
        Ok(out) if out.status.success() => Some(String::from_utf8(out.stdout).unwrap()),
        _ => {
            require::missing(
                "the openssl CLI (to make a GitHub App key)",
                "scripts/install-test-deps.sh: apt-get install openssl",
            );
            None
        }
    }
}

fn rfc3339(secs: u64) -> String {
    // Enough for the test: via `date`, which every Unix has.
    let out = std::process::Command::new("date")
        .args(["-u", "-d", &format!("@{secs}"), "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[tokio::test]
async fn github_app_tokens_are_minted_per_owner_and_refreshed_before_expiry() {
    let Some(pem) = app_key() else { return };
    // Tokens expire 20 s after minting: within octocrab's 30 s margin, so each call mints anew.
    let minted = Arc::new(Mutex::new(0u32));
    let counter = Arc::clone(&minted);
    let server = serve(move |seen, _| {
        if seen.path == "/repos/octo/app/installation" {
            reply(200, json!({"id": 42}))
        } else if seen.path == "/app/installations/42/access_tokens" {
            let mut n = counter.lock().unwrap();
            *n += 1;
            reply(
                201,
                json!({"token": format!("ghs_installation{n}"), "expires_at": rfc3339(epoch() + 20),
                       "permissions": {"issues": "write"}}),
            )
        } else {
            reply(200, json!({"permission": "admin", "role_name": "admin"}))
        }
    })
    .await;
    let mut config = config(&server.base);
    config.auth = GithubAuth::App {
        app_id: 7,
        private_key_pem: pem.into(),
        installation_id: None,
    };
    let forge = GithubForge::new(config).unwrap();
    forge.permission(&repo(), "alice").await.unwrap();
    forge.permission(&repo(), "bob").await.unwrap();
    let seen = server.seen();
    let calls: Vec<String> = seen
        .iter()
        .map(|s| format!("{} {}", s.method, s.path))
        .collect();
    assert_eq!(
        calls,
        [
            "GET /repos/octo/app/installation",
            "POST /app/installations/42/access_tokens",
            "GET /repos/octo/app/collaborators/alice/permission",
            "POST /app/installations/42/access_tokens",
            "GET /repos/octo/app/collaborators/bob/permission",
        ]
    );
    assert!(
        seen[0].authorization.starts_with("Bearer ey"),
        "the App's JWT"
    );
    assert_eq!(seen[2].authorization, "Bearer ghs_installation1");
    assert_eq!(seen[4].authorization, "Bearer ghs_installation2");
    assert!(!format!("{forge:?}").contains("PRIVATE KEY"));
}

#[tokio::test]
async fn github_app_tokens_are_reused_while_fresh() {
    let Some(pem) = app_key() else { return };
    let server = serve(move |seen, _| {
        if seen.path == "/app/installations/9/access_tokens" {
            reply(
                201,
                json!({"token": "ghs_fresh", "expires_at": rfc3339(epoch() + 3600),
                       "permissions": {"issues": "write"}}),
            )
        } else {
            reply(200, json!({"permission": "read"}))
        }
    })
    .await;
    let mut config = config(&server.base);
    config.auth = GithubAuth::App {
        app_id: 7,
        private_key_pem: pem.into(),
        installation_id: Some(9),
    };
    let forge = GithubForge::new(config).unwrap();
    for user in ["a", "b", "c"] {
        let p = forge.permission(&repo(), user).await.unwrap();
        assert_eq!(p, baton::forge::Permission::Read);
    }
    let mints = server
        .seen()
        .iter()
        .filter(|s| s.path.ends_with("/access_tokens"))
        .count();
    assert_eq!(mints, 1);
}

#[tokio::test]
async fn a_quoted_marker_in_someone_elses_comment_is_passed_over() {
    // The token could edit anyone's comment (an admin's can): baton still edits only its own.
    let marker = "<!-- baton:run=run-9 -->";
    let server = serve(move |seen, _| match seen.method.as_str() {
        "GET" if seen.path == "/user" => reply(200, json!({"login": "baton-bot"})),
        "GET" => reply(
            200,
            json!([comment_by(8, "mallory", &format!("quoting you: {marker}"))]),
        ),
        "PATCH" => reply(200, comment_by(8, "mallory", "edited by baton")),
        _ => reply(201, comment_json(9, &format!("hello\n\n{marker}"))),
    })
    .await;
    let forge = GithubForge::new(config(&server.base)).unwrap();
    let c = forge
        .upsert_comment(&repo(), 4, "run-9", None, "hello")
        .await
        .unwrap();
    assert_eq!(c.id, 9);
    let calls: Vec<String> = server
        .seen()
        .iter()
        .map(|s| format!("{} {}", s.method, s.path))
        .collect();
    assert_eq!(
        calls,
        [
            "GET /user",
            "GET /repos/octo/app/issues/4/comments?per_page=100&page=1",
            "POST /repos/octo/app/issues/4/comments",
        ]
    );
}

/// A failing Actions job as `checks_for` reads it.
fn actions_check(id: u64) -> baton::forge::CheckRun {
    baton::forge::CheckRun {
        id,
        name: "test".into(),
        head_sha: "a".repeat(40),
        status: baton::forge::checks::CheckStatus::Completed,
        conclusion: Some(baton::forge::checks::Conclusion::Failure),
        title: String::new(),
        summary: "1 failed".into(),
        details_url: Some(format!(
            "https://github.com/octo/app/actions/runs/7/job/{id}"
        )),
        log: None,
        annotations: Vec::new(),
    }
}

#[tokio::test]
async fn an_actions_job_log_follows_githubs_redirect_without_the_token() {
    // The storage host: another origin (`localhost`, not 127.0.0.1), which gets no token.
    let storage = serve(|_, _| Reply {
        status: 200,
        headers: Vec::new(),
        body: "step 1\nCI-LOG: assertion failed in mean_of_many\n".into(),
        delay: Duration::ZERO,
    })
    .await;
    let storage_url = storage.base.replace("127.0.0.1", "localhost") + "/logs/42?sig=SIGNED";
    let location = storage_url.clone();
    let api = serve(move |seen, _| {
        if seen.path.ends_with("/actions/jobs/42/logs") {
            with_header(reply(302, json!({})), "location", &location)
        } else {
            reply(404, json!({"message": "Not Found"}))
        }
    })
    .await;
    // Wrapped as every forge `forge::open` builds is: the wrapper must pass `check_log` on,
    // not answer with the trait's default.
    let forge: std::sync::Arc<dyn baton::forge::Forge> =
        std::sync::Arc::new(baton::forge::Traced::new(std::sync::Arc::new(
            GithubForge::new(config(&api.base)).unwrap(),
        )));
    let log = forge
        .check_log(&repo(), &actions_check(42))
        .await
        .unwrap()
        .expect("a log");
    assert!(log.contains("CI-LOG: assertion failed"), "{log}");
    let asked = api.seen();
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert_eq!(asked[0].path, "/repos/octo/app/actions/jobs/42/logs");
    assert_eq!(asked[0].authorization, format!("Bearer {TOKEN}"));
    let fetched = storage.seen();
    assert_eq!(fetched.len(), 1, "{fetched:?}");
    assert_eq!(fetched[0].path, "/logs/42?sig=SIGNED");
    assert_eq!(
        fetched[0].authorization, "",
        "the token went to the storage host"
    );

    // Expired logs, and checks that are no Actions job, have none; the latter ask nothing.
    assert_eq!(
        forge.check_log(&repo(), &actions_check(43)).await.unwrap(),
        None
    );
    let mut status = actions_check(44);
    status.details_url = Some("https://ci.example.com/build/44".into());
    assert_eq!(forge.check_log(&repo(), &status).await.unwrap(), None);
    assert_eq!(api.seen().len(), 2);
}
