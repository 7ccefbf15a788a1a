//! `POST /webhooks/github` on the real `baton serve`: a real signed `issues.labeled` delivery
//! from `@octokit/webhooks-examples` starts exactly one run of the trigger's workflow, its
//! redelivery starts nothing, a bad signature is 401 and starts nothing; without a secret the
//! route answers 503.

use crate::common_forge;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use baton::forge::local::LocalForge;
use baton::forge::Repo;
use baton::web::webhook::WebhookSecret;
use serde_json::Value;

use crate::BATON;
const SECRET: &str = "a webhook secret for the test";
const REPO: &str = "acme/widgets";
const SENDER: &str = "alice";

/// A running `baton serve`, killed and reaped on drop.
struct Daemon {
    child: Child,
    base: String,
    data: PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// The child is owned by `Daemon`, whose `Drop` kills and reaps it.
#[allow(clippy::zombie_processes)]
fn start_daemon(data: &Path, config: &Path, secret: Option<&str>) -> Daemon {
    let mut command = Command::new(BATON);
    command
        .args(["serve", "--bind", "127.0.0.1:0", "--config"])
        .arg(config)
        .env("BATON_DATA_DIR", data)
        .env_remove("BATON_GITHUB_WEBHOOK_SECRET")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(data.with_extension("log")).unwrap());
    if let Some(secret) = secret {
        command.env("BATON_GITHUB_WEBHOOK_SECRET", secret);
    }
    let mut child = command.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(addr) = std::fs::read_to_string(data.join("baton.addr")) {
            return Daemon {
                child,
                base: format!("http://{}", addr.trim()),
                data: data.to_path_buf(),
            };
        }
        if Instant::now() > deadline || child.try_wait().unwrap().is_some() {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the daemon did not start");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Daemon {
    /// `baton runs --json`, through the daemon as a user would run it.
    fn runs(&self) -> Vec<Value> {
        let out = Command::new(BATON)
            .args(["runs", "--json"])
            .env("BATON_DATA_DIR", &self.data)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "baton runs: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<Value>(&out.stdout)
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    }

    async fn post(
        &self,
        event: &str,
        delivery: &str,
        signature: &str,
        body: &[u8],
    ) -> (u16, Value, Duration) {
        let started = Instant::now();
        let response = reqwest::Client::new()
            .post(format!("{}/webhooks/github", self.base))
            .header("content-type", "application/json")
            .header("x-github-event", event)
            .header("x-github-delivery", delivery)
            .header("x-hub-signature-256", signature)
            .body(body.to_vec())
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let answer = response.json::<Value>().await.unwrap_or(Value::Null);
        (status, answer, started.elapsed())
    }
}

/// A config with one trigger: the label `baton` starts `issue-echo`, on the local forge.
fn setup(root: &Path) -> PathBuf {
    let workflows = root.join("workflows");
    std::fs::create_dir_all(&workflows).unwrap();
    std::fs::write(
        workflows.join("issue-echo.toml"),
        r#"id = "issue-echo"
description = "Logs the issue a webhook delivery names"

[input]
repo = { required = true }
issue = { required = true }

[[steps]]
id = "echo"
action = "log"
with = { message = "issue {{ input.repo }}#{{ input.issue }}" }
"#,
    )
    .unwrap();
    let config = root.join("config.toml");
    std::fs::write(
        &config,
        format!(
            r#"workflow_dirs = ["{workflows}"]

[forge]
kind = "local"
root = "{forge}"

[[triggers]]
on = "issue_labeled"
label = "baton"
workflow = "issue-echo"
"#,
            workflows = workflows.display(),
            forge = root.join("forge").display(),
        ),
    )
    .unwrap();
    config
}

/// GitHub's real `issues.labeled` example, labeled `baton`, in `acme/widgets`, sent by `alice`.
fn labeled_payload(examples: &Value) -> (Vec<u8>, u64) {
    let mut payload = common_forge::example(examples, "issues", |e| e["action"] == "labeled");
    payload["label"]["name"] = "baton".into();
    payload["repository"]["full_name"] = REPO.into();
    payload["repository"]["name"] = "widgets".into();
    payload["repository"]["owner"]["login"] = "acme".into();
    payload["sender"]["login"] = SENDER.into();
    payload["sender"]["type"] = "User".into();
    let number = payload["issue"]["number"].as_u64().unwrap();
    (serde_json::to_vec(&payload).unwrap(), number)
}

/// Polls `baton runs --json` until `done` holds, or panics after `within`.
fn wait_for_runs(daemon: &Daemon, within: Duration, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + within;
    loop {
        let runs = daemon.runs();
        if done(&runs) {
            return runs;
        }
        assert!(Instant::now() < deadline, "runs never matched: {runs:#?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_label_starts_one_run_and_nothing_else_does() {
    let Some(examples) = common_forge::webhook_examples() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let config = setup(tmp.path());
    let forge = LocalForge::open(tmp.path().join("forge"), "baton").unwrap();
    forge
        .create_repo(&Repo::parse(REPO).unwrap(), "main", &[SENDER])
        .await
        .unwrap();
    let data = tmp.path().join("data");
    let daemon = start_daemon(&data, &config, Some(SECRET));
    let secret = WebhookSecret::new(SECRET).unwrap();
    let (body, number) = labeled_payload(&examples);
    let delivery = "72d3162e-cc78-11e3-81ab-4c9367dc0958";

    // A real signed delivery: answered at once, one run of the trigger's workflow.
    let (status, answer, took) = daemon
        .post("issues", delivery, &secret.sign(&body), &body)
        .await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["status"], "queued", "{answer}");
    assert!(took < Duration::from_secs(2), "answered in {took:?}");
    let runs = wait_for_runs(&daemon, Duration::from_secs(30), |runs| {
        runs.len() == 1 && runs[0]["status"] == "completed"
    });
    let run = &runs[0];
    assert_eq!(run["workflow_id"], "issue-echo");
    assert_eq!(run["job_id"], format!("github:{delivery}"));
    assert_eq!(run["input"]["repo"], REPO);
    assert_eq!(run["input"]["issue"], number);

    // GitHub's redelivery of the same delivery starts nothing.
    let (status, answer, _) = daemon
        .post("issues", delivery, &secret.sign(&body), &body)
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["status"], "duplicate", "{answer}");

    // The same signed body under a new delivery id (the header is not signed): a replay of the
    // same event, answered as one and started nothing.
    let (status, answer, _) = daemon
        .post("issues", "a-new-delivery-id", &secret.sign(&body), &body)
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["status"], "duplicate", "{answer}");

    // A wrong signature (another secret) and a tampered body: 401, nothing runs.
    let other = WebhookSecret::new("not the secret").unwrap();
    let (status, _, _) = daemon
        .post("issues", "delivery-forged-1", &other.sign(&body), &body)
        .await;
    assert_eq!(status, 401);
    let mut tampered = body.clone();
    tampered.extend_from_slice(b" ");
    let (status, _, _) = daemon
        .post(
            "issues",
            "delivery-forged-2",
            &secret.sign(&body),
            &tampered,
        )
        .await;
    assert_eq!(status, 401);

    // Nothing else was started by the redelivery or the forgeries. They were answered without
    // being queued; a later genuine delivery, once its run exists, shows the daemon has handled
    // everything before it. Then exactly the two genuine deliveries have runs.
    // The sentinel is the issue labeled again later: another event (its own `updated_at`).
    let sentinel = "sentinel-after-the-forgeries";
    let mut later: Value = serde_json::from_slice(&body).unwrap();
    later["issue"]["updated_at"] = "2030-01-01T00:00:00Z".into();
    let later = serde_json::to_vec(&later).unwrap();
    let (status, answer, _) = daemon
        .post("issues", sentinel, &secret.sign(&later), &later)
        .await;
    assert_eq!(status, 202, "{answer}");
    let runs = wait_for_runs(&daemon, Duration::from_secs(30), |runs| {
        runs.iter()
            .any(|r| r["job_id"] == format!("github:{sentinel}"))
    });
    let mut jobs: Vec<&str> = runs.iter().map(|r| r["job_id"].as_str().unwrap()).collect();
    jobs.sort();
    assert_eq!(
        jobs,
        [format!("github:{delivery}"), format!("github:{sentinel}")],
        "{runs:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_secret_the_webhook_answers_503() {
    let tmp = tempfile::tempdir().unwrap();
    let config = setup(tmp.path());
    let daemon = start_daemon(&tmp.path().join("data"), &config, None);
    let body = br#"{"action":"labeled"}"#;
    let unsigned = WebhookSecret::new("anything").unwrap().sign(body);
    let (status, answer, _) = daemon.post("issues", "d-1", &unsigned, body).await;
    assert_eq!(status, 503, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("BATON_GITHUB_WEBHOOK_SECRET"),
        "{answer}"
    );
    assert!(daemon.runs().is_empty());
}

/// Workflows that wait for a signal, so a run stays in flight: `review-gate` for pull requests,
/// `triage-gate` for issues; the triggers name them, so `/baton review` and `/baton triage` start
/// them as the built-ins would be started.
fn setup_comment_commands(root: &Path) -> PathBuf {
    let workflows = root.join("workflows");
    std::fs::create_dir_all(&workflows).unwrap();
    for (id, key) in [("review-gate", "pr"), ("triage-gate", "issue")] {
        std::fs::write(
            workflows.join(format!("{id}.toml")),
            format!(
                r#"id = "{id}"

[input]
repo = {{ required = true }}
{key} = {{ required = true }}

[[steps]]
id = "gate"
wait = {{ signal = "go", timeout = "1h", on_timeout = "fail" }}
"#
            ),
        )
        .unwrap();
    }
    let config = root.join("config.toml");
    std::fs::write(
        &config,
        format!(
            r#"workflow_dirs = ["{workflows}"]

[forge]
kind = "local"
root = "{forge}"

[[triggers]]
on = "issue_comment"

[[triggers]]
on = "pull_request"
workflow = "review-gate"

[[triggers]]
on = "issue_labeled"
label = "bug"
workflow = "triage-gate"
"#,
            workflows = workflows.display(),
            forge = root.join("forge").display(),
        ),
    )
    .unwrap();
    config
}

/// A real example of `event` (its first with `action`), moved to `acme/widgets` and sent by
/// `sender`; `edit` adjusts the rest.
fn payload_of(
    examples: &Value,
    event: &str,
    action: &str,
    sender: &str,
    edit: impl FnOnce(&mut Value),
) -> Vec<u8> {
    let mut payload = common_forge::example(examples, event, |e| e["action"] == action);
    payload["repository"]["full_name"] = REPO.into();
    payload["repository"]["name"] = "widgets".into();
    payload["repository"]["owner"]["login"] = "acme".into();
    payload["sender"]["login"] = sender.into();
    payload["sender"]["type"] = "User".into();
    edit(&mut payload);
    serde_json::to_vec(&payload).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baton_review_and_triage_comments_start_one_run_and_a_new_push_replaces_the_review() {
    let Some(examples) = common_forge::webhook_examples() else {
        panic!("@octokit/webhooks-examples is required (see tests/require)");
    };
    let tmp = tempfile::tempdir().unwrap();
    let config = setup_comment_commands(tmp.path());
    let forge = LocalForge::open(tmp.path().join("forge"), "baton").unwrap();
    forge
        .create_repo(&Repo::parse(REPO).unwrap(), "main", &[SENDER])
        .await
        .unwrap();
    let daemon = start_daemon(&tmp.path().join("data"), &config, Some(SECRET));
    let secret = WebhookSecret::new(SECRET).unwrap();
    let sync = payload_of(&examples, "pull_request", "synchronize", SENDER, |_| {});
    let pr = serde_json::from_slice::<Value>(&sync).unwrap()["pull_request"]["number"]
        .as_u64()
        .unwrap();
    // GitHub sends a comment on a pull request's conversation as `issue_comment` whose issue
    // carries a `pull_request` object. Each comment is a new one, with an id of its own (the
    // same comment id again would be a replay, answered "duplicate").
    let comment_ids = std::sync::atomic::AtomicU64::new(1);
    let comment = |body: &str, sender: &str, on_pull: bool| {
        payload_of(&examples, "issue_comment", "created", sender, |p| {
            p["comment"]["body"] = body.into();
            p["comment"]["id"] = comment_ids
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                .into();
            if on_pull {
                p["issue"]["number"] = pr.into();
                p["issue"]["pull_request"] = serde_json::json!({"url": format!("https://api.github.com/repos/{REPO}/pulls/{pr}")});
            }
        })
    };
    let post = |event: &'static str, delivery: &'static str, body: Vec<u8>| {
        let daemon = &daemon;
        let signature = secret.sign(&body);
        async move {
            let (status, answer, _) = daemon.post(event, delivery, &signature, &body).await;
            assert!(
                status == 202 || status == 200,
                "{delivery}: {status} {answer}"
            );
        }
    };
    let of = |runs: &[Value], workflow: &str, status: &str| {
        runs.iter()
            .filter(|r| r["workflow_id"] == workflow && r["status"] == status)
            .count()
    };

    // `/baton review` on the pull request: one review run, about that pull request.
    post(
        "issue_comment",
        "review-1",
        comment("/baton review", SENDER, true),
    )
    .await;
    let runs = wait_for_runs(&daemon, Duration::from_secs(30), |r| {
        of(r, "review-gate", "waiting") == 1
    });
    let first = runs
        .iter()
        .find(|r| r["workflow_id"] == "review-gate")
        .unwrap();
    assert_eq!(first["input"]["pr"], pr, "{first:#}");
    assert_eq!(first["input"]["repo"], REPO);

    // `/baton triage` on an issue: the bug label's workflow on that issue.
    let triage = comment("/baton triage", SENDER, false);
    let issue = serde_json::from_slice::<Value>(&triage).unwrap()["issue"]["number"].clone();
    post("issue_comment", "triage-1", triage).await;
    wait_for_runs(&daemon, Duration::from_secs(30), |r| {
        of(r, "triage-gate", "waiting") == 1
    });

    // The same commands again while those are in flight, and one from a sender without write
    // permission: nothing new. A sentinel delivery after them shows they were all handled.
    post(
        "issue_comment",
        "review-2",
        comment("/baton review", SENDER, true),
    )
    .await;
    post(
        "issue_comment",
        "triage-2",
        comment("/baton triage", SENDER, false),
    )
    .await;
    post(
        "issue_comment",
        "review-3",
        comment("/baton review", "mallory", true),
    )
    .await;
    post(
        "issues",
        "sentinel",
        payload_of(&examples, "issues", "labeled", SENDER, |p| {
            p["label"]["name"] = "bug".into();
            p["issue"]["number"] = 4242.into();
        }),
    )
    .await;
    let runs = wait_for_runs(&daemon, Duration::from_secs(30), |r| {
        r.iter().any(|r| r["job_id"] == "github:sentinel")
    });
    assert_eq!(of(&runs, "review-gate", "waiting"), 1, "{runs:#?}");
    assert_eq!(
        runs.iter()
            .filter(|r| r["workflow_id"] == "review-gate")
            .count(),
        1
    );
    let triage_runs: Vec<&Value> = runs
        .iter()
        .filter(|r| r["workflow_id"] == "triage-gate" && r["input"]["issue"] == issue)
        .collect();
    assert_eq!(triage_runs.len(), 1, "{runs:#?}");

    // A new push to the pull request: the stale review is cancelled, the new head reviewed.
    post("pull_request", "push-1", sync).await;
    let runs = wait_for_runs(&daemon, Duration::from_secs(30), |r| {
        of(r, "review-gate", "cancelled") == 1 && of(r, "review-gate", "waiting") == 1
    });
    let cancelled = runs
        .iter()
        .find(|r| r["workflow_id"] == "review-gate" && r["status"] == "cancelled")
        .unwrap();
    assert_eq!(cancelled["id"], first["id"]);
    let fresh = runs
        .iter()
        .find(|r| r["workflow_id"] == "review-gate" && r["status"] == "waiting")
        .unwrap();
    assert_eq!(fresh["job_id"], "github:push-1");
    assert_eq!(fresh["input"]["pr"], pr);
}

/// The daemon's resident memory, in kB.
fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_large_unsigned_bodies_is_read_within_a_bounded_budget() {
    let tmp = tempfile::tempdir().unwrap();
    let config = setup(tmp.path());
    let data = tmp.path().join("data");
    let daemon = start_daemon(&data, &config, Some(SECRET));
    let pid = daemon.child.id();
    let client = reqwest::Client::new();
    let healthz = format!("{}/healthz", daemon.base);
    assert!(client
        .get(&healthz)
        .send()
        .await
        .unwrap()
        .status()
        .is_success());
    let before = rss_kb(pid);

    // Unsigned bodies announced and then not sent: large ones (and one chunked) hold the
    // large bodies' share, small ones hold nothing (they are charged as their bytes arrive).
    // A real signed delivery beside them all is answered at once.
    use std::io::Write as _;
    let addr = daemon.base.trim_start_matches("http://").to_string();
    let trickles: Vec<std::net::TcpStream> = (0..66)
        .map(|i| {
            let mut s = std::net::TcpStream::connect(&addr).unwrap();
            let length = match i {
                0 => "Transfer-Encoding: chunked\r\n\r\n1\r\n{\r\n".to_string(),
                1..6 => format!("Content-Length: {}\r\n\r\n{{", 25 * 1000 * 1000 - i),
                _ => format!("Content-Length: {}\r\n\r\n{{", 250 * 1000 - i),
            };
            write!(
                s,
                "POST /webhooks/github HTTP/1.1\r\nHost: x\r\nX-GitHub-Event: issues\r\n\
                 X-GitHub-Delivery: trickle-{i}\r\nX-Hub-Signature-256: sha256={}\r\n{length}",
                "0".repeat(64)
            )
            .unwrap();
            s
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ping = br#"{"zen":"Keep it logically awesome.","hook_id":1}"#;
    let secret = WebhookSecret::new(SECRET).unwrap();
    let (status, answer, took) = daemon
        .post("ping", "ping-beside-trickles", &secret.sign(ping), ping)
        .await;
    assert_eq!((status, answer["status"].as_str()), (200, Some("pong")));
    assert!(took < Duration::from_secs(1), "answered in {took:?}");
    drop(trickles);

    // Sampled every 10 ms while the flood lasts.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let stop = std::sync::Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut peak = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(rss_kb(pid));
                std::thread::sleep(Duration::from_millis(10));
            }
            peak
        })
    };
    // 40 parallel 24 MB bodies with a well-formed signature that is not the secret's: the
    // daemon has to read each one to find out.
    let body: &'static [u8] = Box::leak(vec![b'x'; 24 * 1024 * 1024].into_boxed_slice());
    let forged = format!("sha256={}", "0".repeat(64));
    let url = format!("{}/webhooks/github", daemon.base);
    let sends = (0..40).map(|i| {
        let (client, url, forged) = (client.clone(), url.clone(), forged.clone());
        tokio::spawn(async move {
            client
                .post(url)
                .header("content-type", "application/json")
                .header("x-github-event", "issues")
                .header("x-github-delivery", format!("flood-{i}"))
                .header("x-hub-signature-256", forged)
                .body(body)
                .send()
                .await
                .map(|r| r.status().as_u16())
        })
    });
    let mut answers = Vec::new();
    for send in sends.collect::<Vec<_>>() {
        answers.push(send.await.unwrap());
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let peak = sampler.join().unwrap();
    // Each is refused: 401 once read, or 503 (with Retry-After) when the budget stayed full for
    // 3 s; a client still sending when the 503 comes may see the connection close instead.
    let read = answers.iter().filter(|a| matches!(a, Ok(401))).count();
    assert!(
        answers
            .iter()
            .all(|a| matches!(a, Ok(401) | Ok(503) | Err(_))),
        "{answers:?}"
    );
    assert!(read >= 1, "no body was read whole: {answers:?}");
    let grew_mb = peak.saturating_sub(before) / 1024;
    assert!(
        grew_mb <= 100,
        "resident memory grew by {grew_mb} MB under the flood ({before} kB before, {peak} kB at peak)"
    );
    // And it is given back.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let after = rss_kb(pid);
    assert!(
        after.abs_diff(before) <= 20 * 1024,
        "10 s after the flood: {after} kB, before it {before} kB"
    );
    eprintln!(
        "flood of 40 x 24 MB unsigned bodies: {before} kB before, peak {peak} kB (+{grew_mb} MB), {after} kB 10 s later; {read} read and refused 401"
    );
    assert!(daemon.runs().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_connections_neither_starve_healthz_nor_stay_open() {
    // 2,000 sockets here, and as many on the daemon's side.
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed to them.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        limit.rlim_cur = limit.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
    }
    assert!(
        limit.rlim_max >= 4500,
        "the hard open-file limit ({}) is too low for 2,000 connections",
        limit.rlim_max
    );
    let tmp = tempfile::tempdir().unwrap();
    let config = setup(tmp.path());
    let mut text = std::fs::read_to_string(&config).unwrap();
    // A cap the 2,000 reach even on a loaded machine, and a timeout that outlasts opening them.
    text.push_str("\n[server]\nmax_connections = 300\nheader_read_timeout_secs = 6\n");
    std::fs::write(&config, text).unwrap();
    let data = tmp.path().join("data");
    let daemon = start_daemon(&data, &config, None);
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", daemon.child.id())).unwrap();
    let open_files: Vec<&str> = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(
        open_files[3], open_files[4],
        "the daemon raised its soft open-file limit to the hard one: {limits}"
    );

    let addr: std::net::SocketAddr = daemon.base.trim_start_matches("http://").parse().unwrap();
    let half_open: Vec<std::net::TcpStream> = (0..2000)
        .map(|_| {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            use std::io::Write;
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
                .unwrap();
            s
        })
        .collect();
    // A fresh client, while they hang: answered within a second, each time.
    for _ in 0..5 {
        let asked = Instant::now();
        let response = reqwest::Client::new()
            .get(format!("{}/healthz", daemon.base))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success());
        let took = asked.elapsed();
        assert!(took < Duration::from_secs(1), "/healthz took {took:?}");
    }
    // The header-read timeout closes every one of them (those replaced at the cap earlier).
    let mut still_open = 0;
    for mut s in half_open.into_iter().step_by(20) {
        use std::io::Read;
        s.set_read_timeout(Some(Duration::from_secs(8))).unwrap();
        let mut buf = [0u8; 256];
        loop {
            match s.read(&mut buf) {
                // A 408 the server may write before closing.
                Ok(n) if n > 0 => continue,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    still_open += 1;
                    break;
                }
                // End of stream or reset: closed.
                _ => break,
            }
        }
    }
    assert_eq!(still_open, 0, "half-open connections outlived the timeout");
    let log = std::fs::read_to_string(data.with_extension("log")).unwrap();
    let cap_lines = log.matches("at the connection cap").count();
    assert!(
        (1..=3).contains(&cap_lines),
        "the cap is logged, at a bounded rate: {cap_lines} lines\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_request_outlives_the_idle_timeout_and_a_stalled_one_does_not() {
    let tmp = tempfile::tempdir().unwrap();
    let config = setup(tmp.path());
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("\n[server]\nidle_timeout_secs = 2\nbody_timeout_secs = 3\n");
    std::fs::write(&config, text).unwrap();
    let data = tmp.path().join("data");
    let daemon = start_daemon(&data, &config, None);
    let token = std::fs::read_to_string(data.join("admin.token")).unwrap();
    // `?wait=` holds the request while the run works: no byte moves for 4 s, and the answer
    // still comes.
    let sleepy = serde_json::json!({ "id": "sleepy", "steps": [
        { "id": "nap", "action": "shell", "with": { "run": "sleep 4" } }
    ] });
    let answer = reqwest::Client::new()
        .post(format!("{}/api/runs?wait=30", daemon.base))
        .bearer_auth(token.trim())
        .json(&serde_json::json!({ "workflow": "sleepy", "definition": sleepy }))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 200);
    let run: Value = answer.json().await.unwrap();
    assert_eq!(run["status"], "completed", "{run}");

    // A login form whose body never comes: the handler reading it gives up at the body
    // deadline and the connection closes, although a handler was busy with it.
    use std::io::{Read, Write};
    let addr = daemon.base.trim_start_matches("http://");
    let mut stalled = std::net::TcpStream::connect(addr).unwrap();
    stalled
        .write_all(
            b"POST /login HTTP/1.1\r\nHost: x\r\n\
              Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\ntok",
        )
        .unwrap();
    stalled
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let started = Instant::now();
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match stalled.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("the stalled request stayed open: {e}"),
        }
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(10),
        "closed after {took:?}: {}",
        String::from_utf8_lossy(&seen)
    );
}
