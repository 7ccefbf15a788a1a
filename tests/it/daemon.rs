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

use crate::BATON;

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

use crate::common_pg as pg;

/// What points a daemon and the CLI at their store: nothing for sled in the data dir; a
/// config file and `BATON_DATABASE_URL` for a fresh PostgreSQL database.
#[derive(Clone, Default)]
struct StoreEnv {
    vars: Vec<(String, String)>,
    /// The database, for `psql`.
    url: Option<String>,
}

impl StoreEnv {
    fn sled() -> StoreEnv {
        StoreEnv::default()
    }

    /// A fresh database; `None` only when skipping is allowed.
    fn postgres(dir: &Path) -> Option<StoreEnv> {
        StoreEnv::postgres_with(dir, "")
    }

    /// A fresh database, with more of `[store]`.
    fn postgres_with(dir: &Path, store: &str) -> Option<StoreEnv> {
        let url = pg::database()?;
        let config = dir.join("postgres.toml");
        std::fs::write(&config, format!("[store]\nbackend = \"postgres\"\n{store}")).unwrap();
        Some(StoreEnv {
            vars: vec![
                ("BATON_CONFIG".into(), config.display().to_string()),
                ("BATON_DATABASE_URL".into(), url.clone()),
            ],
            url: Some(url),
        })
    }

    fn psql(&self, sql: &str) -> String {
        pg::psql(self.url.as_deref().expect("a PostgreSQL store"), sql)
            .trim()
            .to_string()
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

    // A second daemon on the same data dir is refused, naming the first (on PostgreSQL, a
    // second daemon needs a data dir of its own).
    let second = baton(&data, store, &["serve", "--bind", "127.0.0.1:0"]);
    let err = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(2), "{err}");
    let holder = format!("in use by process {}", daemon.child.id());
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
        let done = daemon
            .get_json("/api/runs?status=completed&limit=1000")
            .await;
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
        let done = daemon
            .get_json("/api/runs?status=completed&limit=1000")
            .await;
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

/// Starts a run of `def` through `daemon` and returns its id.
async fn start_run(daemon: &Daemon, def: &Value) -> String {
    start_run_with(daemon, def, json!({})).await
}

async fn start_run_with(daemon: &Daemon, def: &Value, input: Value) -> String {
    let body = json!({ "workflow": def["id"], "definition": def, "input": input });
    let resp: Value = daemon.post("/api/runs", body).await.json().await.unwrap();
    resp["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{resp}"))
        .to_string()
}

/// Waits until `run`, read through `daemon`, has `status`.
async fn wait_for(daemon: &Daemon, run: &str, status: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let rec = daemon.get_json(&format!("/api/runs/{run}")).await;
        if rec["status"] == status {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{run} is {} after {within:?}, not {status}: {rec}",
            rec["status"]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Two daemons on one fresh database, each with its own data dir (`d1`, `d2` under `dir`).
struct Pair {
    store: StoreEnv,
    data1: PathBuf,
    data2: PathBuf,
    d1: Daemon,
    d2: Daemon,
}

impl Pair {
    /// `None` only when skipping is allowed; `config` is more of the file, after `[store]`.
    fn start(dir: &Path, config: &str) -> Option<Pair> {
        let store = StoreEnv::postgres_with(dir, config)?;
        let (data1, data2) = (dir.join("d1"), dir.join("d2"));
        let d1 = start_daemon(&data1, &store);
        let d2 = start_daemon(&data2, &store);
        Some(Pair {
            store,
            data1,
            data2,
            d1,
            d2,
        })
    }
}

fn daemon_name(data: &Path) -> String {
    std::fs::read_to_string(data.join("daemon")).unwrap()
}

/// Two daemons on one database, each with its own data dir: both run the runs started through
/// them; one is killed with `-9` mid-flight, and the other takes its runs over once its lease
/// has lapsed, not before, and completes them; no step recorded completed runs again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_daemons_share_runs_and_one_takes_over_a_killed_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(Pair {
        store,
        data1,
        data2,
        d1,
        d2,
    }) = Pair::start(tmp.path(), "lease = \"6s\"\n")
    else {
        return;
    };
    let log = tmp.path().join("steps.log");
    let def = workflow(&log);
    let mut runs = Vec::new();
    for i in 0..20 {
        let through = if i % 2 == 0 { &d1 } else { &d2 };
        runs.push((start_run(through, &def).await, i % 2 == 0));
    }
    let (name1, name2) = (daemon_name(&data1), daemon_name(&data2));
    assert_ne!(name1, name2);
    assert_eq!(
        store.psql(&format!(
            "SELECT count(*) FROM workflow_runs WHERE owner = '{name1}'"
        )),
        "10"
    );
    // Either daemon lists every run.
    let listed = d2.get_json("/api/runs").await;
    assert_eq!(listed.as_array().unwrap().len(), 20);

    tokio::time::sleep(Duration::from_millis(500 + now_ms() % 700)).await;
    drop(d1); // SIGKILL, then reap
    let killed_at = now_ms();
    for (run, _) in &runs {
        wait_for(&d2, run, "completed", Duration::from_secs(90)).await;
    }
    assert_eq!(
        store.psql("SELECT count(*) FROM workflow_runs WHERE unfinished"),
        "0"
    );
    assert_eq!(
        store.psql(&format!(
            "SELECT count(*) FROM workflow_runs WHERE owner = '{name2}'"
        )),
        "20",
        "the killed daemon's runs were taken over"
    );

    let mut executions: HashMap<(String, String), Vec<u64>> = HashMap::new();
    for line in std::fs::read_to_string(&log).unwrap().lines() {
        let parts: Vec<&str> = line.split_whitespace().collect();
        executions
            .entry((parts[0].into(), parts[1].into()))
            .or_default()
            .push(parts[3].parse().unwrap());
    }
    let mut taken_over = 0;
    for (run, on_first) in &runs {
        let events: Vec<Value> = d2
            .get(&format!("/api/runs/{run}/events"))
            .await
            .json()
            .await
            .unwrap();
        for e in events.iter().filter(|e| e["type"] == "step_completed") {
            let step = e["id"].as_str().unwrap().to_string();
            let starts = &executions[&(run.clone(), step.clone())];
            if e["at"].as_u64().unwrap() < killed_at {
                assert_eq!(
                    starts.len(),
                    1,
                    "{run}/{step} completed before the kill and ran again"
                );
            }
            if !on_first {
                assert_eq!(
                    starts.len(),
                    1,
                    "{run}/{step}: the live daemon's run ran a step twice"
                );
            }
            for &start in starts.iter().filter(|&&t| t >= killed_at) {
                if *on_first {
                    // The lease is 6 s, renewed every second: it lapses 5-6 s after the kill.
                    assert!(
                        start >= killed_at + 4_000,
                        "{run}/{step} was taken over {} ms after the kill, before the lease lapsed",
                        start - killed_at
                    );
                    taken_over += 1;
                }
            }
        }
    }
    assert!(
        taken_over > 0,
        "no step of the killed daemon's runs was left to take over"
    );
    drop_daemon(d2);
}

/// Two daemons on one database: a run parked by one is approved through the other (the CLI
/// and the API both), a wait's timer fires once with both up, and a timer of a daemon killed
/// with `-9` fires once, on the other, after the lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_and_timers_reach_runs_across_daemons() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(Pair {
        store,
        data2,
        d1,
        d2,
        ..
    }) = Pair::start(tmp.path(), "lease = \"6s\"\n")
    else {
        return;
    };
    let log = tmp.path().join("after.log");

    // Parked on d1, approved through d2: the CLI, then the API.
    let gate = json!({ "id": "gate", "steps": [
        { "id": "w", "wait": { "signal": "approve" } },
        { "id": "x", "action": "noop" },
        { "id": "w2", "wait": { "signal": "approve" } },
        { "id": "y", "action": "noop" } ] });
    let run = start_run(&d1, &gate).await;
    wait_for(&d2, &run, "waiting", Duration::from_secs(10)).await;
    let out = baton(&data2, &store, &["approve", &run, "--json"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for(&d1, &run, "waiting", Duration::from_secs(10)).await;
    let approved = d2
        .post(&format!("/api/runs/{run}/approve"), json!({}))
        .await;
    assert!(
        approved.status().is_success(),
        "{:?}",
        approved.text().await
    );
    wait_for(&d1, &run, "completed", Duration::from_secs(10)).await;
    // A command that does not fit comes back from the holder as the same client error.
    let conflict = d2.post(&format!("/api/runs/{run}/retry"), json!({})).await;
    assert_eq!(conflict.status(), 409, "{:?}", conflict.text().await);

    // A wait that times out after 2 s, then a step that leaves a line: started through both.
    let timed = |id: &str, timeout: &str| {
        json!({ "id": id, "steps": [
            { "id": "w", "wait": { "signal": "never", "timeout": timeout, "on_timeout": "skip" } },
            { "id": "after", "action": "shell",
              "with": { "run": format!("echo \"$BATON_RUN_ID\" >> {}", log.display()) } } ] })
    };
    let mut timed_runs = Vec::new();
    for i in 0..4 {
        let through = if i % 2 == 0 { &d1 } else { &d2 };
        timed_runs.push(start_run(through, &timed("timed", "2s")).await);
    }
    for run in &timed_runs {
        wait_for(&d2, run, "completed", Duration::from_secs(20)).await;
    }

    // A timer of d1, which is killed: d2 fires it once the lease lapsed.
    let orphan = start_run(&d1, &timed("timed-orphan", "3s")).await;
    wait_for(&d1, &orphan, "waiting", Duration::from_secs(10)).await;
    drop(d1);
    wait_for(&d2, &orphan, "completed", Duration::from_secs(30)).await;

    let lines = std::fs::read_to_string(&log).unwrap();
    for run in timed_runs.iter().chain([&orphan]) {
        assert_eq!(
            lines.lines().filter(|l| l.trim() == run).count(),
            1,
            "{run}'s step after the timer ran once: {lines}"
        );
        assert_eq!(
            store.psql(&format!(
                "SELECT count(*) FROM run_events WHERE run_id = '{run}' AND type = 'step_skipped'"
            )),
            "1",
            "{run}'s timer fired once"
        );
    }
    drop_daemon(d2);
}

/// `[limits] per_repo = 1` with two daemons on one database: runs about one repository,
/// started through both, never overlap; a run about another repository is not held back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_repository_limit_holds_across_daemons() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(Pair { store, d1, d2, .. }) = Pair::start(tmp.path(), "[limits]\nper_repo = 1\n")
    else {
        return;
    };
    let log = tmp.path().join("spans.log");
    let script = format!(
        "echo \"start $BATON_RUN_ID {{{{ input.repo }}}} $(date +%s%3N)\" >> {log}; sleep 0.4; \
         echo \"end $BATON_RUN_ID {{{{ input.repo }}}} $(date +%s%3N)\" >> {log}",
        log = log.display()
    );
    let def = json!({ "id": "work", "steps": [
        { "id": "s", "action": "shell", "with": { "run": script } } ] });
    let mut a = Vec::new();
    for i in 0..6 {
        let through = if i % 2 == 0 { &d1 } else { &d2 };
        a.push(start_run_with(through, &def, json!({ "repo": "octo/a" })).await);
    }
    let b = start_run_with(&d2, &def, json!({ "repo": "octo/b" })).await;
    // One of octo/a's runs runs; the other daemon's wait shows why.
    wait_for(&d2, &b, "completed", Duration::from_secs(20)).await;
    // The last of octo/a's runs started on d2: while pending, d2 says what it waits for (a
    // moment between leaving the queue and starting shows no reason: read again).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let rec = d2.get_json(&format!("/api/runs/{}", a[5])).await;
        if rec["status"] != "pending" || rec["queued_behind"]["limit"] == "per_repo" {
            break;
        }
        assert!(Instant::now() < deadline, "pending with no reason: {rec}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for run in &a {
        wait_for(&d1, run, "completed", Duration::from_secs(60)).await;
    }

    // From the log: octo/a's spans never overlap; octo/b's ran while octo/a's were waiting.
    let mut spans: HashMap<String, (String, u64, u64)> = HashMap::new();
    for line in std::fs::read_to_string(&log).unwrap().lines() {
        let parts: Vec<&str> = line.split_whitespace().collect();
        let at: u64 = parts[3].parse().unwrap();
        let span = spans
            .entry(parts[1].to_string())
            .or_insert((parts[2].to_string(), 0, 0));
        if parts[0] == "start" {
            span.1 = at;
        } else {
            span.2 = at;
        }
    }
    let mut a_spans: Vec<(u64, u64)> = spans
        .values()
        .filter(|(repo, _, _)| repo == "octo/a")
        .map(|(_, s, e)| (*s, *e))
        .collect();
    assert_eq!(a_spans.len(), 6, "{spans:?}");
    a_spans.sort();
    for pair in a_spans.windows(2) {
        assert!(
            pair[1].0 >= pair[0].1,
            "two runs of octo/a overlapped across daemons: {a_spans:?}"
        );
    }
    let b_span = &spans[&b];
    assert!(
        b_span.2 < a_spans.last().unwrap().0,
        "octo/b waited for octo/a: {spans:?}"
    );
    assert_eq!(
        store.psql("SELECT count(*) FROM slots"),
        "0",
        "every slot freed"
    );
    drop_daemon(d1);
    drop_daemon(d2);
}

/// A daemon cut off from its database (connections refused, its sessions ended) stops with
/// exit code 3 within two thirds of its lease, before another daemon may take its runs, and
/// leaves no process of its steps behind: not even a grandchild of a step's shell.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_cut_off_from_its_database_stops_before_its_lease_lapses() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(store) = StoreEnv::postgres_with(tmp.path(), "lease = \"6s\"\n") else {
        return;
    };
    let data = tmp.path().join("d1");
    let mut daemon = start_daemon(&data, &store);
    let pid_file = tmp.path().join("sleeper.pid");
    let def = json!({ "id": "long", "steps": [ { "id": "s", "action": "shell", "with": {
        "run": format!("sleep 60 & echo $! > {}; wait", pid_file.display()) } } ] });
    let run = start_run(&daemon, &def).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !pid_file.exists()
        || std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .is_empty()
    {
        assert!(Instant::now() < deadline, "the step did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let sleeper: u32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(Path::new(&format!("/proc/{sleeper}")).exists());

    let db = store.psql("SELECT current_database()");
    let admin = pg::server().unwrap();
    pg::psql(
        &admin,
        &format!("ALTER DATABASE {db} ALLOW_CONNECTIONS false"),
    );
    let cut = Instant::now();
    pg::psql(
        &admin,
        &format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{db}' \
             AND pid <> pg_backend_pid()"
        ),
    );
    let status = loop {
        if let Some(status) = daemon.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            cut.elapsed() < Duration::from_secs(10),
            "the daemon kept running, cut off from its database"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let stopped_after = cut.elapsed();
    assert_eq!(status.code(), Some(3), "{status:?}");
    assert!(
        stopped_after < Duration::from_millis(5_900),
        "stopped {stopped_after:?} after the cut, past its 6 s lease"
    );
    // What the step's shell left running went with it.
    let gone = Instant::now() + Duration::from_secs(2);
    while Path::new(&format!("/proc/{sleeper}/stat")).exists()
        && !std::fs::read_to_string(format!("/proc/{sleeper}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
    {
        assert!(
            Instant::now() < gone,
            "the step's `sleep` outlived the daemon"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    pg::psql(
        &admin,
        &format!("ALTER DATABASE {db} ALLOW_CONNECTIONS true"),
    );
    // The run is still there, unfinished, for whoever takes it.
    assert_eq!(
        store.psql(&format!(
            "SELECT status FROM workflow_runs WHERE id = '{run}'"
        )),
        "running"
    );
}
