//! The admin UI of `baton serve`, over loopback as a browser talks to it: login and the
//! session cookie, redirects without a session, CSRF refusals that change nothing, the
//! actions (through the same engine commands as the API), escaping of run data, the
//! dashboard's filters, counts and paging, and the live event stream.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use reqwest::redirect::Policy;
use serde_json::{json, Value};

use crate::BATON;

struct Daemon {
    child: Child,
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// The child is owned by `Daemon`, whose `Drop` kills and reaps it.
#[allow(clippy::zombie_processes)]
fn start(data: &Path, env: &[(&str, &str)], config: Option<&Path>) -> Daemon {
    let _ = std::fs::remove_file(data.join("baton.addr"));
    let mut cmd = Command::new(BATON);
    if let Some(c) = config {
        cmd.arg("--config").arg(c);
    }
    cmd.args(["serve", "--bind", "127.0.0.1:0"])
        .env("BATON_DATA_DIR", data)
        .env_remove("BATON_ADMIN_TOKEN")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(addr) = std::fs::read_to_string(data.join("baton.addr")) {
            let token = std::fs::read_to_string(data.join("admin.token")).unwrap();
            return Daemon {
                child,
                base: format!("http://{}", addr.trim()),
                token: token.trim().to_string(),
                http: reqwest::Client::builder()
                    .redirect(Policy::none())
                    .build()
                    .unwrap(),
            };
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the daemon did not start");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A logged-in browser: its session cookie and the page's CSRF token.
struct Browser {
    cookie: String,
    csrf: String,
}

impl Daemon {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn api_post(&self, path: &str, body: Value) -> Value {
        let resp = self
            .http
            .post(self.url(path))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "{path}: {}", resp.status());
        resp.json().await.unwrap()
    }

    async fn api_run(&self, id: &str) -> Value {
        self.http
            .get(self.url(&format!("/api/runs/{id}")))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn start_run(&self, def: Value, input: Value) -> String {
        let wf = def["id"].as_str().unwrap().to_string();
        let resp = self
            .api_post(
                "/api/runs",
                json!({ "workflow": wf, "definition": def, "input": input }),
            )
            .await;
        resp["id"].as_str().unwrap().to_string()
    }

    /// Waits (bounded) until the run has `status`.
    async fn until_status(&self, id: &str, status: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let rec = self.api_run(id).await;
            if rec["status"] == status {
                return rec;
            }
            assert!(
                Instant::now() < deadline,
                "run {id} never became {status}: {rec}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn login_with(&self, token: &str) -> reqwest::Response {
        self.http
            .post(self.url("/login"))
            .form(&[("token", token)])
            .send()
            .await
            .unwrap()
    }

    async fn login(&self) -> Browser {
        let resp = self.login_with(&self.token).await;
        assert_eq!(resp.status(), 303);
        let set = resp.headers()[SET_COOKIE].to_str().unwrap().to_string();
        let cookie = set.split(';').next().unwrap().to_string();
        let page = self.get("/", Some(&cookie)).await;
        assert_eq!(page.status(), 200);
        let html = page.text().await.unwrap();
        let csrf = csrf_of(&html).expect("the page carries a csrf field");
        Browser { cookie, csrf }
    }

    async fn get(&self, path: &str, cookie: Option<&str>) -> reqwest::Response {
        let mut req = self.http.get(self.url(path));
        if let Some(c) = cookie {
            req = req.header(COOKIE, c);
        }
        req.send().await.unwrap()
    }

    async fn page(&self, path: &str, b: &Browser) -> String {
        let resp = self.get(path, Some(&b.cookie)).await;
        assert_eq!(resp.status(), 200, "{path}");
        resp.text().await.unwrap()
    }

    async fn post_form(
        &self,
        path: &str,
        cookie: Option<&str>,
        form: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut req = self.http.post(self.url(path)).form(form);
        if let Some(c) = cookie {
            req = req.header(COOKIE, c);
        }
        req.send().await.unwrap()
    }
}

fn csrf_of(html: &str) -> Option<String> {
    let at = html.find(r#"name="csrf" value=""#)? + r#"name="csrf" value=""#.len();
    Some(html[at..].split('"').next()?.to_string())
}

fn gate() -> Value {
    json!({ "id": "gate", "steps": [
        { "id": "w", "wait": { "signal": "approve" } },
        { "id": "x", "action": "noop" }
    ] })
}

#[tokio::test]
async fn pages_without_a_session_redirect_to_login_and_show_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let d = start(&tmp.path().join("data"), &[], None);
    let run = d
        .start_run(gate(), json!({ "title": "secret-title-7" }))
        .await;
    d.until_status(&run, "waiting").await;
    for cookie in [None, Some("baton_session=forged")] {
        for path in [
            "/".to_string(),
            format!("/runs/{run}"),
            format!("/runs/{run}?fragment=1"),
            "/?fragment=1".into(),
            "/workflows".into(),
        ] {
            let resp = d.get(&path, cookie).await;
            assert_eq!(resp.status(), 303, "{path}");
            assert_eq!(resp.headers()[LOCATION], "/login", "{path}");
            let body = resp.text().await.unwrap();
            assert!(!body.contains(&run) && !body.contains("secret-title-7"));
        }
        let events = d.get("/ui/events", cookie).await;
        assert_eq!(events.status(), 401);
        // An action without a session is sent to the login and changes nothing.
        let resp = d
            .post_form(&format!("/runs/{run}/approve"), cookie, &[("csrf", "x")])
            .await;
        assert_eq!(resp.status(), 303);
        assert_eq!(resp.headers()[LOCATION], "/login");
    }
    assert_eq!(d.api_run(&run).await["status"], "waiting");
    // The login page itself and the embedded assets need no session.
    let login = d.get("/login", None).await;
    assert_eq!(login.status(), 200);
    let html = login.text().await.unwrap();
    assert!(html.contains(r#"name="token""#), "{html}");
    assert!(!html.contains(&d.token));
    assert_eq!(d.get("/ui/app.js", None).await.status(), 200);
    assert_eq!(d.get("/ui/app.css", None).await.status(), 200);
}

#[tokio::test]
async fn login_refuses_a_wrong_token_and_sets_a_strict_httponly_cookie() {
    let tmp = tempfile::tempdir().unwrap();
    let d = start(&tmp.path().join("data"), &[], None);
    let wrong = d.login_with("not-the-token").await;
    assert_eq!(wrong.status(), 401);
    assert!(wrong.headers().get(SET_COOKIE).is_none());
    let html = wrong.text().await.unwrap();
    assert!(html.contains("not the admin token"), "{html}");
    assert!(html.contains(r#"name="token""#));
    assert!(
        !html.contains("not-the-token"),
        "the page repeats what was typed"
    );
    let empty = d.post_form("/login", None, &[]).await;
    assert_eq!(empty.status(), 401);

    let ok = d.login_with(&d.token).await;
    assert_eq!(ok.status(), 303);
    assert_eq!(ok.headers()[LOCATION], "/");
    let set = ok.headers()[SET_COOKIE].to_str().unwrap().to_string();
    assert!(set.starts_with("baton_session="), "{set}");
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    assert!(
        !set.contains("Secure"),
        "plain http has no Secure cookie: {set}"
    );
    assert!(!set.contains(&d.token), "the cookie is not the token");
    let cookie = set.split(';').next().unwrap();
    let again = d.get("/login", Some(cookie)).await;
    assert_eq!(again.status(), 303);
    let page = d.get("/", Some(cookie)).await;
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    let html = page.text().await.unwrap();
    assert!(!html.contains(&d.token), "no secret in a page");
}

#[tokio::test]
async fn https_public_url_makes_the_cookie_secure_and_the_env_token_is_the_login() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("config.toml");
    std::fs::write(
        &config,
        "[server]\npublic_url = \"https://baton.example.com\"\n",
    )
    .unwrap();
    let d = start(
        &tmp.path().join("data"),
        &[("BATON_ADMIN_TOKEN", "fixed-token-for-tests-0123456789")],
        Some(&config),
    );
    assert_eq!(d.token, "fixed-token-for-tests-0123456789");
    let ok = d.login_with("fixed-token-for-tests-0123456789").await;
    assert_eq!(ok.status(), 303);
    let set = ok.headers()[SET_COOKIE].to_str().unwrap();
    assert!(set.contains("; Secure"), "{set}");
}

#[tokio::test]
async fn actions_need_the_csrf_token_and_go_through_the_engine() {
    let tmp = tempfile::tempdir().unwrap();
    let d = start(&tmp.path().join("data"), &[], None);
    let b = d.login().await;
    let other = d.login().await;
    assert_ne!(b.csrf, other.csrf, "the CSRF token is tied to the session");
    let run = d.start_run(gate(), json!({})).await;
    let before = d.until_status(&run, "waiting").await;
    let html = d.page(&format!("/runs/{run}"), &b).await;
    for label in [">Approve</button>", ">Reject</button>", ">Cancel</button>"] {
        assert!(html.contains(label), "{label} in {html}");
    }
    assert!(!html.contains(">Retry</button>"));
    assert!(html.contains("Waiting for approval"), "{html}");

    // Without the token, with a wrong one, with another session's: 403 and no change.
    let path = format!("/runs/{run}/approve");
    for form in [
        vec![],
        vec![("csrf", "")],
        vec![("csrf", "0000")],
        vec![("csrf", other.csrf.as_str())],
    ] {
        let resp = d.post_form(&path, Some(&b.cookie), &form).await;
        assert_eq!(resp.status(), 403, "{form:?}");
    }
    let json_body = d
        .http
        .post(d.url(&path))
        .header(COOKIE, &b.cookie)
        .json(&json!({ "csrf": b.csrf }))
        .send()
        .await
        .unwrap();
    assert_eq!(json_body.status(), 403, "only a form carries the token");
    let after = d.api_run(&run).await;
    assert_eq!(after, before, "a refused POST changed the run");

    // With it: the engine approves, and the page says so.
    let resp = d
        .post_form(&path, Some(&b.cookie), &[("csrf", &b.csrf)])
        .await;
    assert_eq!(resp.status(), 303);
    assert_eq!(resp.headers()[LOCATION], format!("/runs/{run}"));
    d.until_status(&run, "completed").await;
    let html = d.page(&format!("/runs/{run}"), &b).await;
    assert!(html.contains(r#"data-status="completed""#), "{html}");
    assert!(html.contains("approve"), "the events say who approved");
    assert!(!html.contains(">Approve</button>"));

    // A command that does not fit is refused with the engine's reason.
    let resp = d
        .post_form(&path, Some(&b.cookie), &[("csrf", &b.csrf)])
        .await;
    assert_eq!(resp.status(), 409);
    let unknown = d
        .post_form(
            &format!("/runs/{run}/explode"),
            Some(&b.cookie),
            &[("csrf", &b.csrf)],
        )
        .await;
    assert_eq!(unknown.status(), 400);

    // Logging out needs the token too, and ends the session.
    let resp = d.post_form("/logout", Some(&b.cookie), &[]).await;
    assert_eq!(resp.status(), 403);
    assert_eq!(d.get("/", Some(&b.cookie)).await.status(), 200);
    let resp = d
        .post_form("/logout", Some(&b.cookie), &[("csrf", &b.csrf)])
        .await;
    assert_eq!(resp.status(), 303);
    assert!(resp.headers()[SET_COOKIE]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
    assert_eq!(d.get("/", Some(&b.cookie)).await.status(), 303);
    assert_eq!(d.get("/", Some(&other.cookie)).await.status(), 200);
}

#[tokio::test]
async fn a_failed_run_is_retried_and_rolled_back_from_its_page() {
    let tmp = tempfile::tempdir().unwrap();
    let d = start(&tmp.path().join("data"), &[], None);
    let b = d.login().await;
    let flag = tmp.path().join("flag");
    let def = json!({ "id": "flaky", "steps": [
        { "id": "first", "action": "noop" },
        { "id": "check", "action": "shell", "with": { "run": format!("test -f '{}'", flag.display()) } }
    ] });
    let run = d.start_run(def.clone(), json!({})).await;
    d.until_status(&run, "failed").await;
    let html = d.page(&format!("/runs/{run}"), &b).await;
    for label in [">Retry</button>", ">Skip</button>", ">Rollback</button>"] {
        assert!(html.contains(label), "{label} in {html}");
    }
    assert!(
        !html.contains(">Abort</button>"),
        "a failed run has ended: no Abort"
    );
    assert!(!html.contains(">Approve</button>") && !html.contains(">Cancel</button>"));
    assert!(html.contains(r#"name="mode""#) && html.contains(r#"name="steps""#));
    assert!(
        html.contains("<svg class=\"timeline\""),
        "a timeline picture"
    );
    std::fs::write(&flag, "").unwrap();
    let resp = d
        .post_form(
            &format!("/runs/{run}/retry"),
            Some(&b.cookie),
            &[("csrf", &b.csrf)],
        )
        .await;
    assert_eq!(resp.status(), 303);
    d.until_status(&run, "completed").await;

    // Paused for a person after a failure: all four, and Abort goes through the engine.
    let paused = json!({ "id": "paused", "steps": [
        { "id": "check", "action": "shell", "on_failure": "pause",
          "with": { "run": format!("test -f '{}'", tmp.path().join("never").display()) } }
    ] });
    let run = d.start_run(paused, json!({})).await;
    d.until_status(&run, "waiting").await;
    let html = d.page(&format!("/runs/{run}"), &b).await;
    for label in [
        ">Retry</button>",
        ">Skip</button>",
        ">Abort</button>",
        ">Rollback</button>",
    ] {
        assert!(html.contains(label), "{label} in {html}");
    }
    assert!(html.contains("Waiting for intervention"), "{html}");
    let resp = d
        .post_form(
            &format!("/runs/{run}/abort"),
            Some(&b.cookie),
            &[("csrf", &b.csrf)],
        )
        .await;
    assert_eq!(resp.status(), 303);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !["failed", "cancelled"].contains(&d.api_run(&run).await["status"].as_str().unwrap()) {
        assert!(Instant::now() < deadline, "the abort never finished");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The rollback form: a bad N is refused, hard is taken.
    std::fs::remove_file(&flag).unwrap();
    let run = d.start_run(def, json!({})).await;
    d.until_status(&run, "failed").await;
    let path = format!("/runs/{run}/rollback");
    let bad = d
        .post_form(
            &path,
            Some(&b.cookie),
            &[("csrf", &b.csrf), ("mode", "soft"), ("steps", "x")],
        )
        .await;
    assert_eq!(bad.status(), 400);
    let resp = d
        .post_form(
            &path,
            Some(&b.cookie),
            &[("csrf", &b.csrf), ("mode", "hard"), ("steps", "")],
        )
        .await;
    assert_eq!(resp.status(), 303, "{:?}", resp.text().await);
    let deadline = Instant::now() + Duration::from_secs(20);
    while d.api_run(&run).await["rolled_back"] != "hard" {
        assert!(
            Instant::now() < deadline,
            "the hard rollback never finished"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn run_data_is_escaped_on_every_page() {
    let tmp = tempfile::tempdir().unwrap();
    let d = start(&tmp.path().join("data"), &[], None);
    let b = d.login().await;
    let evil = r#"<script>alert("x")</script><img src=x onerror=alert(1)>"#;
    let def = json!({ "id": "evil", "description": evil, "steps": [
        { "id": "say", "action": "shell", "with": { "run": format!("printf '%s' '{evil}'") } },
        { "id": "w", "wait": { "signal": "approve" } }
    ] });
    let run = d
        .start_run(def, json!({ "repo": evil, "issue": 7, "title": evil }))
        .await;
    d.until_status(&run, "waiting").await;
    // Where a definition came from is the API client's word, shown on the workflows page.
    let from = json!({ "id": "evil-origin", "steps": [ { "id": "a", "action": "noop" } ] });
    d.api_post(
        "/api/runs",
        json!({ "workflow": "evil-origin", "definition": from, "origin": evil, "input": {} }),
    )
    .await;
    // A search for that repository, echoed back in the search box.
    let search: String = evil
        .bytes()
        .map(|b| format!("%{b:02X}"))
        .collect::<Vec<_>>()
        .concat();
    let search = format!("/?q={search}");
    for path in [
        "/".to_string(),
        search.clone(),
        format!("/runs/{run}"),
        format!("/runs/{run}?fragment=1"),
        "/workflows".into(),
    ] {
        let html = d.page(&path, &b).await;
        assert!(!html.contains("<script>alert"), "{path}: {html}");
        assert!(!html.contains("<img src=x"), "{path}: {html}");
        assert!(html.contains("&lt;script&gt;"), "{path}: {html}");
    }
    // The search found it by its repository (exactly, not a part of its name).
    let html = d.page(&search, &b).await;
    assert!(html.contains(&run), "{html}");
    let html = d.page("/?q=script", &b).await;
    assert!(!html.contains(&run), "{html}");
}

#[tokio::test]
async fn the_dashboard_counts_filters_searches_and_pages() {
    let tmp = tempfile::tempdir().unwrap();
    let d = start(&tmp.path().join("data"), &[], None);
    let b = d.login().await;
    let quick = json!({ "id": "quick", "steps": [ { "id": "only", "action": "noop" } ] });
    let mut runs = Vec::new();
    for i in 0..52 {
        runs.push(
            d.start_run(quick.clone(), json!({ "repo": "octo/app", "issue": i }))
                .await,
        );
    }
    let waiting = d
        .start_run(gate(), json!({ "repo": "octo/other", "issue": 99 }))
        .await;
    for r in &runs {
        d.until_status(r, "completed").await;
    }
    d.until_status(&waiting, "waiting").await;

    let html = d.page("/", &b).await;
    // Newest first, counts by status, the workflow and what started it.
    let first = html.find(&waiting).unwrap();
    assert!(html[first..].contains(&runs[51]));
    assert!(
        html.contains(r#"data-count="completed">completed <b>52</b>"#),
        "{html}"
    );
    assert!(html.contains(r#"data-count="waiting">waiting <b>1</b>"#));
    assert!(html.contains("api · by ") || html.contains("api"), "{html}");
    assert!(html.contains("other#99"), "what started it: the issue");
    assert!(html.contains("page 1 of 2"), "{html}");
    assert!(!html.contains(&runs[0]), "the oldest is on page 2");
    let page2 = d.page("/?page=2", &b).await;
    assert!(page2.contains(&runs[0]) && page2.contains("page 2 of 2"));

    let only_waiting = d.page("/?status=waiting", &b).await;
    assert!(only_waiting.contains(&waiting) && !only_waiting.contains(&runs[5]));
    let by_wf = d.page("/?workflow=gate", &b).await;
    assert!(by_wf.contains(&waiting) && !by_wf.contains(&runs[5]));
    let by_issue = d.page("/?q=octo/other", &b).await;
    assert!(by_issue.contains(&waiting) && !by_issue.contains(&runs[5]));
    let by_id = d.page(&format!("/?q={}", runs[7]), &b).await;
    assert!(by_id.contains(&runs[7]) && !by_id.contains(&waiting));
    // An issue (`#` encoded), found through the index, with the counts of what it found.
    let by_issue = d.page("/?q=Octo/App%2317", &b).await;
    assert!(by_issue.contains(&runs[17]) && !by_issue.contains(&runs[7]));
    assert!(
        by_issue.contains(r#"data-count="completed">completed <b>1</b>"#),
        "{by_issue}"
    );
    // A search with a status filter and paging: 52 completed runs of octo/app, 2 pages.
    let repo_done = d.page("/?q=octo/app&status=completed&page=2", &b).await;
    assert!(repo_done.contains("page 2 of 2") && repo_done.contains(&runs[0]));
    assert!(!repo_done.contains(&waiting));
    let none = d.page("/?q=octo/nothing", &b).await;
    assert!(
        !none.contains(&runs[0]) && none.contains("page 1 of 1"),
        "{none}"
    );
    let bad = d.get("/?status=exploded", Some(&b.cookie)).await;
    assert_eq!(bad.status(), 400);

    let wf = d.page("/workflows", &b).await;
    assert!(wf.contains("<svg class=\"diagram\""), "{wf}");
    assert!(wf.contains("wait for `approve`"), "{wf}");
    // How each definition came in: the built-ins shipped, the others through the API.
    assert!(wf.contains("Registered: built in"), "{wf}");
    assert!(wf.contains("Registered: api from 127.0.0.1:"), "{wf}");
}

#[tokio::test]
async fn the_event_stream_names_runs_as_they_change() {
    let tmp = tempfile::tempdir().unwrap();
    let d = start(&tmp.path().join("data"), &[], None);
    let b = d.login().await;
    let mut stream = d.get("/ui/events", Some(&b.cookie)).await;
    assert_eq!(stream.status(), 200);
    assert!(stream.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let run = d.start_run(gate(), json!({})).await;
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !(seen.contains("event: runs") && seen.contains(&run)) {
        let left = deadline.saturating_duration_since(Instant::now());
        let chunk = tokio::time::timeout(left, stream.chunk())
            .await
            .expect("an event within 20 s")
            .unwrap()
            .expect("the stream stays open");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(
        !seen.contains("\"input\""),
        "the stream carries ids, not run data"
    );

    // A burst is coalesced: 100 runs (some 400 events) arrive as a few messages, at most one
    // per 100 ms window, each naming the runs that changed.
    let quick = json!({ "id": "quick", "steps": [ { "id": "a", "action": "noop" }, { "id": "b", "action": "noop" } ] });
    let started = Instant::now();
    let mut ids = Vec::new();
    for _ in 0..100 {
        ids.push(d.start_run(quick.clone(), json!({})).await);
    }
    for id in &ids {
        d.until_status(id, "completed").await;
    }
    let elapsed = started.elapsed();
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ids.iter().all(|id| seen.contains(id.as_str())) {
        let left = deadline.saturating_duration_since(Instant::now());
        let chunk = tokio::time::timeout(left, stream.chunk())
            .await
            .expect("every run named within 20 s")
            .unwrap()
            .expect("the stream stays open");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    let messages = seen.matches("event: runs").count();
    let windows = (started.elapsed().as_millis() / 100) as usize + 2;
    assert!(
        messages <= windows,
        "{messages} messages for 100 runs in {elapsed:?}: not coalesced"
    );
    assert!(messages < 100, "{messages} messages for 100 runs");
}

#[tokio::test]
async fn in_step_progress_reaches_an_open_run_page() {
    let tmp = tempfile::tempdir().unwrap();
    let d = start(&tmp.path().join("data"), &[], None);
    let b = d.login().await;
    let mut stream = d.get("/ui/events", Some(&b.cookie)).await;
    // A clone with one check that takes a moment; the `verify` action says "verifying" as it
    // starts it.
    let prep = "git init -q repo && cd repo && \
        printf '[verify]\\ndetect = false\\n[[verify.checks]]\\nkind = \"custom\"\\ncommand = \"sleep 3\"\\n' > .baton.toml && \
        git add -A && git -c user.email=t@example.com -c user.name=t commit -qm x";
    let def = json!({ "id": "checked", "steps": [
        { "id": "prep", "action": "shell", "with": { "run": prep } },
        { "id": "check", "action": "verify.report", "with": { "dir": "repo" } }
    ] });
    let run = d.start_run(def, json!({})).await;
    let expected = format!(r#"{{"message":"verifying","run":"{run}","step":"check"}}"#);
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !seen.contains(&expected) {
        let left = deadline.saturating_duration_since(Instant::now());
        let chunk = tokio::time::timeout(left, stream.chunk())
            .await
            .unwrap_or_else(|_| panic!("no progress within 30 s: {seen}"))
            .unwrap()
            .expect("the stream stays open");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    // The run page has a line for it under the running step (app.js fills it in), and none
    // once the step is done.
    let page = d.page(&format!("/runs/{run}"), &b).await;
    assert!(
        page.contains(r#"data-progress-step="check""#),
        "the running step has its live line: {page}"
    );
    d.until_status(&run, "completed").await;
    let page = d.page(&format!("/runs/{run}"), &b).await;
    assert!(
        !page.contains("data-progress-step"),
        "no running step, no live line: {page}"
    );
}

#[tokio::test]
async fn logging_out_ends_an_open_event_stream() {
    let tmp = tempfile::tempdir().unwrap();
    let d = start(&tmp.path().join("data"), &[], None);
    let b = d.login().await;
    let mut stream = d.get("/ui/events", Some(&b.cookie)).await;
    assert_eq!(stream.status(), 200);
    let resp = d
        .post_form("/logout", Some(&b.cookie), &[("csrf", &b.csrf)])
        .await;
    assert_eq!(resp.status(), 303);
    // The next change would be named to a session that no longer exists: the stream ends
    // instead, having named nothing.
    let run = d.start_run(gate(), json!({})).await;
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let chunk = tokio::time::timeout(left, stream.chunk())
            .await
            .expect("the stream ends within 20 s of the next change");
        match chunk {
            Ok(Some(bytes)) => seen.push_str(&String::from_utf8_lossy(&bytes)),
            Ok(None) | Err(_) => break,
        }
    }
    assert!(!seen.contains(&run), "{seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runs_outcome_shows_in_the_list() {
    let tmp = tempfile::tempdir().unwrap();
    let d = start(&tmp.path().join("data"), &[], None);
    let b = d.login().await;
    // What issue_to_pr and revise record: a completed run whose change is not verified.
    let def = json!({ "id": "drafty", "steps": [
        { "id": "open", "action": "log", "with": { "message": "draft" },
          "set": { "outcome": "unverified" } }
    ] });
    let run = d.start_run(def, json!({})).await;
    d.until_status(&run, "completed").await;
    let list = d.page("/", &b).await;
    assert!(
        list.contains(
            "<small class=\"outcome unverified\" data-outcome=\"unverified\">unverified</small>"
        ),
        "{list}"
    );
    // The filter lists the runs that ended so, from the index.
    let verified = json!({ "id": "green", "steps": [
        { "id": "open", "action": "log", "with": { "message": "ok" },
          "set": { "outcome": "verified" } }
    ] });
    let green = d.start_run(verified, json!({})).await;
    d.until_status(&green, "completed").await;
    let only = d.page("/?outcome=unverified", &b).await;
    assert!(only.contains(&run) && !only.contains(&green), "{only}");
    assert!(
        only.contains("<option value=\"unverified\" selected>"),
        "{only}"
    );
    let only = d.page("/?outcome=verified&status=completed", &b).await;
    assert!(only.contains(&green) && !only.contains(&run), "{only}");
    let none = d.page("/?outcome=no_checks", &b).await;
    assert!(!none.contains(&green) && !none.contains(&run), "{none}");
    let bad = d.get("/?outcome=green", Some(&b.cookie)).await;
    assert_eq!(bad.status(), 400);
    let bad = bad.text().await.unwrap();
    assert!(bad.contains("verified, unverified, no_checks"), "{bad}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_run_shows_what_it_queues_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let config = tmp.path().join("config.toml");
    std::fs::write(&config, "[limits]\nper_repo = 1\n").unwrap();
    let d = start(&data, &[], Some(&config));
    let b = d.login().await;
    // The first run holds octo/app's one slot until the second is cancelled.
    let def = json!({ "id": "held", "steps": [
        { "id": "w", "action": "shell", "with": { "run": "while true; do sleep 0.05; done" } }
    ] });
    let first = d
        .start_run(def.clone(), json!({ "repo": "octo/app" }))
        .await;
    let second = d.start_run(def, json!({ "repo": "octo/app" })).await;
    d.until_status(&first, "running").await;
    assert_eq!(d.api_run(&second).await["status"], "pending");
    let reason = format!("waiting for a slot: 1 of 1 runs of octo/app are running ({first})");

    // Templates escape `/` in text as `&#x2f;`. The supervisor queues the run a moment after
    // its record says pending, so the page is asked again until it says why (10 s at most).
    let deadline = Instant::now() + Duration::from_secs(10);
    let page = loop {
        let page = d
            .page(&format!("/runs/{second}"), &b)
            .await
            .replace("&#x2f;", "/");
        if page.contains(&reason) || Instant::now() > deadline {
            break page;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(page.contains(&reason), "{page}");
    assert!(
        page.contains(&format!("<a href=\"/runs/{first}\">{first}</a>")),
        "the holder is a link: {page}"
    );
    let list = d.page("/", &b).await.replace("&#x2f;", "/");
    assert!(list.contains(&reason), "{list}");
    // The running run says nothing of the sort.
    let page = d.page(&format!("/runs/{first}"), &b).await;
    assert!(!page.contains("waiting for a slot"), "{page}");

    for run in [&second, &first] {
        let rec = d
            .api_post(&format!("/api/runs/{run}/cancel"), json!({}))
            .await;
        assert!(rec.is_object(), "{rec}");
        d.until_status(run, "cancelled").await;
    }
}

/// The doors under guessing: a weak `BATON_ADMIN_TOKEN` is refused at start; wrong bearer
/// tokens and logins from one address are slowed down (shared between the API and the UI),
/// logged with the address and never the guess, and counted in `/metrics`, which
/// `metrics_auth` puts behind the token; `/healthz` does not give the pid away.
#[tokio::test]
async fn weak_tokens_are_refused_and_guessing_is_slowed_logged_and_counted() {
    let tmp = tempfile::tempdir().unwrap();
    for weak in ["a", "short-token-0123456789", &"x".repeat(40)] {
        let out = Command::new(BATON)
            .args(["serve", "--bind", "127.0.0.1:0"])
            .env("BATON_DATA_DIR", tmp.path().join("weak"))
            .env("BATON_ADMIN_TOKEN", weak)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{weak}: {stderr}");
        assert!(stderr.contains("BATON_ADMIN_TOKEN"), "{stderr}");
        assert!(
            weak.len() < 3 || !stderr.contains(weak),
            "the token is echoed: {stderr}"
        );
    }

    let data = tmp.path().join("data");
    let config = tmp.path().join("config.toml");
    std::fs::write(&config, "[server]\nmetrics_auth = true\n").unwrap();
    let log = tmp.path().join("serve.log");
    std::fs::create_dir_all(&data).unwrap();
    let child = Command::new(BATON)
        .arg("--config")
        .arg(&config)
        .args(["serve", "--bind", "127.0.0.1:0"])
        .env("BATON_DATA_DIR", &data)
        .env_remove("BATON_ADMIN_TOKEN")
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let addr = loop {
        if let Ok(a) = std::fs::read_to_string(data.join("baton.addr")) {
            break a;
        }
        assert!(Instant::now() < deadline, "the daemon did not start");
        std::thread::sleep(Duration::from_millis(20));
    };
    // Owned by `Daemon` from here: its drop kills and reaps it.
    let d = Daemon {
        child,
        base: format!("http://{}", addr.trim()),
        token: std::fs::read_to_string(data.join("admin.token"))
            .unwrap()
            .trim()
            .to_string(),
        http: reqwest::Client::builder()
            .redirect(Policy::none())
            .build()
            .unwrap(),
    };

    let health: Value = d
        .http
        .get(d.url("/healthz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["ok"], true);
    assert!(health.get("pid").is_none(), "{health}");
    let open_metrics = d.http.get(d.url("/metrics")).send().await.unwrap();
    assert_eq!(
        open_metrics.status(),
        401,
        "metrics_auth leaves /metrics open"
    );

    let guess = "guessedTokenThatMustNotBeLogged";
    let api = |token: &str| {
        d.http
            .get(d.url("/api/runs"))
            .bearer_auth(token.to_string())
            .send()
    };
    // Three free mistakes, then each failure makes the address wait.
    for _ in 0..3 {
        assert_eq!(api(guess).await.unwrap().status(), 401);
    }
    assert_eq!(d.login_with(guess).await.status(), 401);
    let refused = api(&d.token).await.unwrap();
    assert_eq!(refused.status(), 429, "the right token during the wait");
    let retry: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry), "{retry}");
    // The login form shares the address's budget.
    let login = d.login_with(&d.token).await;
    assert_eq!(login.status(), 429);
    assert!(login.text().await.unwrap().contains("Try again in"));
    tokio::time::sleep(Duration::from_secs(retry)).await;
    let metrics = d
        .http
        .get(d.url("/metrics"))
        .bearer_auth(&d.token)
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status(), 200);
    let metrics = metrics.text().await.unwrap();
    assert!(
        metrics.contains("baton_auth_failures_total{door=\"api\"} 3")
            && metrics.contains("baton_auth_failures_total{door=\"login\"} 1")
            && metrics.contains("baton_auth_throttled_total 2"),
        "{metrics}"
    );
    // A success cleared the address: a typo now is free again.
    assert_eq!(api(guess).await.unwrap().status(), 401);
    assert_eq!(api(&d.token).await.unwrap().status(), 200);
    drop(d);
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(
        log.contains("failed admin authentication") && log.contains("127.0.0.1"),
        "{log}"
    );
    assert!(!log.contains(guess), "a guess was logged: {log}");
}

impl Daemon {
    async fn api_get(&self, path: &str) -> (reqwest::StatusCode, Value) {
        let resp = self
            .http
            .get(self.url(path))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        let status = resp.status();
        (status, resp.json().await.unwrap_or(Value::Null))
    }
}

#[tokio::test]
async fn the_api_finds_runs_by_what_they_are_about_through_the_index() {
    let tmp = tempfile::tempdir().unwrap();
    let d = start(&tmp.path().join("data"), &[], None);
    let held =
        |id: &str| json!({ "id": id, "steps": [ { "id": "w", "wait": { "signal": "go" } } ] });
    let issue = d
        .start_run(held("held"), json!({ "repo": "Octo/App", "issue": "#7" }))
        .await;
    d.until_status(&issue, "waiting").await;
    let pr = d
        .start_run(held("held"), json!({ "repo": "octo/app", "pr": 8 }))
        .await;
    d.until_status(&pr, "waiting").await;
    let other = d
        .start_run(held("held"), json!({ "repo": "octo/other", "issue": 7 }))
        .await;
    d.until_status(&other, "waiting").await;
    let ids = |runs: &Value| -> Vec<String> {
        runs.as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_string())
            .collect()
    };

    // A run's record says what it is about.
    let rec = d.api_run(&issue).await;
    assert_eq!(
        rec["subject"],
        json!({ "repo": "Octo/App", "number": 7, "kind": "issue" })
    );
    // About a repository (without case), newest first; about an issue or pull request.
    let (status, runs) = d.api_get("/api/runs/about?repo=OCTO/app").await;
    assert!(status.is_success(), "{status}: {runs}");
    assert_eq!(ids(&runs), [pr.clone(), issue.clone()]);
    assert_eq!(runs[0]["subject"]["kind"], "pull_request");
    let (_, runs) = d.api_get("/api/runs/about?repo=octo/app&number=%237").await;
    assert_eq!(ids(&runs), vec![issue.clone()]);
    let (_, runs) = d.api_get("/api/runs/about?repo=octo/none").await;
    assert!(ids(&runs).is_empty());

    // In flight: the newest unfinished run of a workflow about an issue, or null.
    let in_flight = "/api/runs/in_flight?workflow=held&repo=octo/app&number=7";
    let (status, run) = d.api_get(in_flight).await;
    assert!(status.is_success(), "{status}: {run}");
    assert_eq!(run["id"], issue.as_str());
    let (_, run) = d
        .api_get("/api/runs/in_flight?workflow=held&repo=octo/app&number=8&kind=pull_request")
        .await;
    assert_eq!(run["id"], pr.as_str());
    let (_, run) = d
        .api_get("/api/runs/in_flight?workflow=other&repo=octo/app&number=7")
        .await;
    assert_eq!(run, Value::Null);
    d.api_post(&format!("/api/runs/{issue}/cancel"), json!({}))
        .await;
    d.until_status(&issue, "cancelled").await;
    let (status, run) = d.api_get(in_flight).await;
    assert!(status.is_success());
    assert_eq!(run, Value::Null);

    // What the API cannot read is a bad request.
    for path in [
        "/api/runs/about?repo=octo",
        "/api/runs/about?repo=octo/app&number=x",
        "/api/runs/about?repo=octo/app&number=7&kind=tag",
        "/api/runs/in_flight?repo=octo/app&number=7",
    ] {
        let (status, body) = d.api_get(path).await;
        assert_eq!(status, reqwest::StatusCode::BAD_REQUEST, "{path}: {body}");
    }
}
