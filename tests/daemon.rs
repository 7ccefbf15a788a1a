//! `baton serve` as users run it: the API, the CLI talking to it, and `kill -9` with 200
//! runs in flight, after which every run completes and no step recorded completed before
//! the kill runs again; and `kill -9` with long steps in flight, after which no process of the
//! old daemon's steps is left and each step's effect happens once.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

const BATON: &str = env!("CARGO_BIN_EXE_baton");

struct Daemon {
    child: Child,
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Daemon {
    /// An authorised GET of an API path.
    async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap()
    }

    /// An authorised POST of JSON to an API path.
    async fn post(&self, path: &str, body: Value) -> reqwest::Response {
        self.http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    async fn get_json(&self, path: &str) -> Value {
        self.get(path).await.json().await.unwrap()
    }
}

#[path = "common_pg/mod.rs"]
mod pg;

/// What points a daemon and the CLI at their store: nothing for sled in the data dir; a
/// config file and `BATON_DATABASE_URL` for a fresh PostgreSQL database.
#[derive(Clone, Default)]
struct StoreEnv {
    vars: Vec<(String, String)>,
    postgres: bool,
}

impl StoreEnv {
    fn sled() -> StoreEnv {
        StoreEnv::default()
    }

    /// A fresh database; `None` only when skipping is allowed.
    fn postgres(dir: &Path) -> Option<StoreEnv> {
        let url = pg::database()?;
        let config = dir.join("postgres.toml");
        std::fs::write(&config, "[store]\nbackend = \"postgres\"\n").unwrap();
        Some(StoreEnv {
            vars: vec![
                ("BATON_CONFIG".into(), config.display().to_string()),
                ("BATON_DATABASE_URL".into(), url),
            ],
            postgres: true,
        })
    }
}

// The child is owned by `Daemon`, whose `Drop` kills and reaps it.
#[allow(clippy::zombie_processes)]
fn start_daemon(data: &Path, store: &StoreEnv) -> Daemon {
    let _ = std::fs::remove_file(data.join("baton.addr"));
    let mut child = Command::new(BATON)
        .args(["serve", "--bind", "127.0.0.1:0"])
        .envs(store.vars.iter().cloned())
        .env("BATON_DATA_DIR", data)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(addr) = std::fs::read_to_string(data.join("baton.addr")) {
            let token = std::fs::read_to_string(data.join("admin.token")).unwrap();
            return Daemon {
                child,
                base: format!("http://{}", addr.trim()),
                token: token.trim().to_string(),
                http: reqwest::Client::new(),
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

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn baton(data: &Path, store: &StoreEnv, args: &[&str]) -> std::process::Output {
    Command::new(BATON)
        .args(args)
        .envs(store.vars.iter().cloned())
        .env("BATON_DATA_DIR", data)
        .output()
        .unwrap()
}

fn workflow(log: &Path) -> Value {
    let steps: Vec<Value> = (1..=5)
        .map(|i| {
            json!({
                "id": format!("s{i}"),
                "action": "shell",
                "with": { "run": format!("echo \"$BATON_RUN_ID $BATON_STEP_ID $BATON_ATTEMPT $(date +%s%3N)\" >> {}; sleep 0.{}", log.display(), i + 2) }
            })
        })
        .collect();
    json!({ "id": "crashy", "steps": steps })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_with_200_runs_in_flight_loses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    kill_9_with_200_runs_in_flight(&tmp, &StoreEnv::sled()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_with_200_runs_in_flight_loses_nothing_on_postgres() {
    let tmp = tempfile::tempdir().unwrap();
    if let Some(store) = StoreEnv::postgres(tmp.path()) {
        kill_9_with_200_runs_in_flight(&tmp, &store).await;
    }
}

async fn kill_9_with_200_runs_in_flight(tmp: &tempfile::TempDir, store: &StoreEnv) {
    let data = tmp.path().join("data");
    let log = tmp.path().join("steps.log");
    let daemon = start_daemon(&data, store);
    let http = &daemon.http;

    // The admin token is private, and required.
    let mode = std::fs::metadata(data.join("admin.token"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let denied = http
        .get(format!("{}/api/runs", daemon.base))
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 401);
    let health = http
        .get(format!("{}/healthz", daemon.base))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);

    // A second daemon on the same data dir (or database) is refused, naming the first.
    let second = baton(&data, store, &["serve", "--bind", "127.0.0.1:0"]);
    let err = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(2), "{err}");
    let holder = if store.postgres {
        "is in use by another baton (backend pid ".to_string()
    } else {
        format!("in use by process {}", daemon.child.id())
    };
    assert!(err.contains(&holder), "{err}");

    let def = workflow(&log);
    let mut runs = Vec::new();
    for _ in 0..200 {
        let resp: Value = daemon
            .post(
                "/api/runs",
                json!({ "workflow": "crashy", "definition": def }),
            )
            .await
            .json()
            .await
            .unwrap();
        runs.push(
            resp["id"]
                .as_str()
                .unwrap_or_else(|| panic!("{resp}"))
                .to_string(),
        );
    }
    // The CLI goes through the daemon while it runs.
    let listed = baton(&data, store, &["runs", "--json"]);
    assert_eq!(
        serde_json::from_slice::<Value>(&listed.stdout)
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        200
    );

    // Kill at a moment that varies from run to run of the test.
    let wait = 300 + (now_ms() % 900);
    tokio::time::sleep(Duration::from_millis(wait)).await;
    drop(daemon); // SIGKILL, then reap
    let killed_at = now_ms();
    let lines_before = std::fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .count();
    assert!(
        lines_before < 1000,
        "the kill came after everything finished; nothing was tested"
    );

    // Without a daemon the CLI opens the store itself (the address file is stale).
    let listed = baton(&data, store, &["runs", "--json"]);
    assert_eq!(
        listed.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );

    let daemon = start_daemon(&data, store);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let done = daemon.get_json("/api/runs?status=completed").await;
        if done.as_array().unwrap().len() == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {} of 200 runs completed after the restart",
            done.as_array().unwrap().len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Every execution of every step, from the log: (run, step) -> start times.
    let mut executions: HashMap<(String, String), Vec<u64>> = HashMap::new();
    for line in std::fs::read_to_string(&log).unwrap().lines() {
        let parts: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(parts.len(), 4, "{line}");
        assert_eq!(
            parts[2], "1",
            "no retries are configured, so every attempt is the first: {line}"
        );
        executions
            .entry((parts[0].into(), parts[1].into()))
            .or_default()
            .push(parts[3].parse().unwrap());
    }
    let mut completed_before_kill = 0;
    for run in &runs {
        let events: Vec<Value> = daemon
            .get(&format!("/api/runs/{run}/events"))
            .await
            .json()
            .await
            .unwrap();
        for e in events.iter().filter(|e| e["type"] == "step_completed") {
            let step = e["id"].as_str().unwrap().to_string();
            let runs_of_step = &executions[&(run.clone(), step.clone())];
            if e["at"].as_u64().unwrap() < killed_at {
                completed_before_kill += 1;
                assert_eq!(
                    runs_of_step.len(),
                    1,
                    "{run}/{step} was recorded completed before the kill and ran again"
                );
            }
        }
        assert_eq!(
            events
                .iter()
                .filter(|e| e["type"] == "step_completed")
                .count(),
            5,
            "{run}"
        );
    }
    assert!(
        completed_before_kill > 0,
        "nothing had completed before the kill; nothing was tested"
    );
    drop_daemon(daemon);
}

fn drop_daemon(d: Daemon) {
    drop(d);
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_steers_runs_like_the_cli() {
    let tmp = tempfile::tempdir().unwrap();
    let data: PathBuf = tmp.path().join("data");
    let daemon = start_daemon(&data, &StoreEnv::sled());
    let def = json!({ "id": "gate", "steps": [ { "id": "w", "wait": { "signal": "approve" } }, { "id": "x", "action": "noop" } ] });
    let resp: Value = daemon
        .post(
            "/api/runs",
            json!({ "workflow": "gate", "definition": def }),
        )
        .await
        .json()
        .await
        .unwrap();
    let run = resp["id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let rec = daemon.get_json(&format!("/api/runs/{run}")).await;
        if rec["status"] == "waiting" {
            break;
        }
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Wrong verb and wrong state are client errors; the CLI approves through the daemon.
    let bad = daemon
        .post(&format!("/api/runs/{run}/explode"), json!({}))
        .await;
    assert_eq!(bad.status(), 400);
    let conflict = daemon
        .post(&format!("/api/runs/{run}/retry"), json!({}))
        .await;
    assert_eq!(conflict.status(), 409, "{:?}", conflict.text().await);
    let missing = daemon.get("/api/runs/run_nope").await;
    assert_eq!(missing.status(), 404);
    let out = baton(&data, &StoreEnv::sled(), &["approve", &run, "--json"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rec: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rec["status"], "completed");
    let metrics = daemon.get("/metrics").await.text().await.unwrap();
    assert!(metrics.contains("baton_transitions_total"), "{metrics}");
    drop_daemon(daemon);
}

/// Live (not zombie) processes in process group `pgid`, from `/proc/<pid>/stat`.
fn group_members(pgid: u32) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // Fields after the command name: state (3), ppid (4), pgrp (5).
        let rest: Vec<&str> = stat[stat.rfind(')').unwrap() + 1..]
            .split_whitespace()
            .collect();
        if rest[0] != "Z" && rest[2] == pgid.to_string() {
            found.push(pid);
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_leaves_no_step_process_and_each_effect_happens_once() {
    let tmp = tempfile::tempdir().unwrap();
    kill_9_with_long_steps(&tmp, &StoreEnv::sled()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_leaves_no_step_process_and_each_effect_happens_once_on_postgres() {
    let tmp = tempfile::tempdir().unwrap();
    if let Some(store) = StoreEnv::postgres(tmp.path()) {
        kill_9_with_long_steps(&tmp, &store).await;
    }
}

async fn kill_9_with_long_steps(tmp: &tempfile::TempDir, store: &StoreEnv) {
    let data = tmp.path().join("data");
    let effects = tmp.path().join("effects.log");
    let daemon = start_daemon(&data, store);
    // `$$` is the shell, which leads the step's process group; `sleep` is its child.
    let def = json!({ "id": "long", "steps": [ { "id": "work", "action": "shell", "with": {
        "run": format!("echo \"start $BATON_RUN_ID $$\" >> {0}; sleep 4; echo \"done $BATON_RUN_ID\" >> {0}", effects.display())
    } } ] });
    let mut runs = Vec::new();
    for _ in 0..4 {
        let resp: Value = daemon
            .post(
                "/api/runs",
                json!({ "workflow": "long", "definition": def }),
            )
            .await
            .json()
            .await
            .unwrap();
        runs.push(
            resp["id"]
                .as_str()
                .unwrap_or_else(|| panic!("{resp}"))
                .to_string(),
        );
    }
    let lines = |prefix: &str| -> Vec<String> {
        std::fs::read_to_string(&effects)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with(prefix))
            .map(str::to_string)
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while lines("start ").len() < 4 {
        assert!(
            Instant::now() < deadline,
            "the steps did not start: {:?}",
            lines("")
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let groups: Vec<u32> = lines("start ")
        .iter()
        .map(|l| l.split_whitespace().nth(2).unwrap().parse().unwrap())
        .collect();

    drop(daemon); // SIGKILL, then reap
                  // The steps' `sleep`s outlive the daemon: there is something for the restart to clean up.
    let orphans: usize = groups.iter().map(|&g| group_members(g).len()).sum();
    assert!(
        orphans > 0,
        "nothing of the old steps outlived the kill; nothing was tested"
    );

    // The daemon kills the old groups before it listens, so they are gone once it answers.
    let daemon = start_daemon(&data, store);
    for &g in &groups {
        assert_eq!(
            group_members(g),
            Vec::<u32>::new(),
            "group {g} of the old daemon lives on"
        );
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let done = daemon.get_json("/api/runs?status=completed").await;
        if done.as_array().unwrap().len() == runs.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the runs did not complete: {done}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Every run's step started twice (the first copy was killed) and completed once.
    let done = lines("done ");
    for run in &runs {
        assert_eq!(
            done.iter().filter(|l| l.ends_with(run.as_str())).count(),
            1,
            "{run}: {:?}",
            lines("")
        );
        let starts = lines("start ")
            .iter()
            .filter(|l| l.contains(run.as_str()))
            .count();
        assert_eq!(starts, 2, "{run}: {:?}", lines(""));
    }
    drop_daemon(daemon);
}

/// Starts `baton serve` with its stderr in a file, waits for the start-up line, and returns
/// that file's text.
fn serve_log(extra_env: &[(&str, &str)]) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let log = tmp.path().join("serve.log");
    let mut cmd = Command::new(BATON);
    cmd.args(["serve", "--bind", "127.0.0.1:0"])
        .env("BATON_DATA_DIR", &data)
        .env("RUST_LOG", "info")
        .env_remove("NO_COLOR")
        .env_remove("BATON_LOG_FORMAT")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let text = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("resumed") {
            break text;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("no start-up line in the daemon's log: {text}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = child.kill();
    let _ = child.wait();
    text
}

#[test]
fn a_log_written_to_a_file_has_no_colour_codes() {
    let text = serve_log(&[]);
    assert!(
        !text.contains('\u{1b}'),
        "escape codes in a log file: {text:?}"
    );
    assert!(text.contains("INFO"), "{text}");
}

#[test]
fn the_json_log_format_writes_one_object_per_line() {
    let text = serve_log(&[("BATON_LOG_FORMAT", "json")]);
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with('{')).collect();
    let start = lines
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .find(|v| {
            v["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("resumed"))
        })
        .unwrap_or_else(|| panic!("no JSON start-up line: {text}"));
    assert_eq!(start["level"], "INFO");
    assert!(start["timestamp"].is_string(), "{start}");
    assert!(!text.contains('\u{1b}'));
}

#[test]
fn a_bad_log_format_is_a_usage_error() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(BATON)
        .args(["--log-format", "xml", "runs"])
        .env("BATON_DATA_DIR", tmp.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("xml") && err.contains("json"), "{err}");
}
