//! `baton backup` while `baton serve` runs and runs keep starting, then `baton restore` into
//! new data dirs: the copy under load is consistent (every run started before it is there,
//! every finished run has exactly its events), and a copy of a settled store restores to the
//! same runs, statuses and event counts. A restore refuses a data dir that is not empty.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common_daemon::Daemon;
use crate::BATON;

fn baton(data: &Path, args: &[&str]) -> std::process::Output {
    Command::new(BATON)
        .args(args)
        .env("BATON_DATA_DIR", data)
        .env_remove("BATON_CONFIG")
        .output()
        .unwrap()
}

fn ok_json(out: std::process::Output) -> Value {
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Run id → (status, events) of a data dir without a daemon.
fn runs_of(data: &Path) -> Vec<(String, String, usize)> {
    let runs = ok_json(baton(data, &["runs", "--json"]));
    let mut out: Vec<_> = runs
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let id = r["id"].as_str().unwrap().to_string();
            let shown = ok_json(baton(data, &["show", &id, "--events", "--json"]));
            let events = shown["events"].as_array().unwrap().len();
            (id, r["status"].as_str().unwrap().to_string(), events)
        })
        .collect();
    out.sort();
    out
}

/// The same, asked of the daemon.
async fn runs_of_daemon(daemon: &Daemon) -> Vec<(String, String, usize)> {
    let runs = daemon.get_json("/api/runs").await;
    let mut out = Vec::new();
    for r in runs.as_array().unwrap() {
        let id = r["id"].as_str().unwrap().to_string();
        let events = daemon.get_json(&format!("/api/runs/{id}/events")).await;
        let status = r["status"].as_str().unwrap().to_string();
        out.push((id, status, events.as_array().unwrap().len()));
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_under_load_restores_the_same_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let config = tmp.path().join("config.toml");
    std::fs::write(&config, "").unwrap();
    let daemon = Daemon::start(&data, &config);
    let gate = json!({ "id": "gate", "steps": [
        { "id": "w", "wait": { "signal": "approve" } },
        { "id": "x", "action": "noop" }
    ] });
    let work = json!({ "id": "work", "steps": [
        { "id": "a", "action": "shell", "with": { "run": "sleep 0.05" } },
        { "id": "b", "action": "shell", "with": { "run": "echo b" } },
        { "id": "c", "action": "noop" }
    ] });
    let mut before = Vec::new();
    for _ in 0..3 {
        before.push(daemon.start_run(&gate).await);
        before.push(daemon.start_run(&work).await);
    }

    // Runs keep starting (and stepping) while the backup is taken.
    let load = {
        let (base, token, work) = (daemon.base.clone(), daemon.token.clone(), work.clone());
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut ids = Vec::new();
            for _ in 0..25 {
                let resp: Value = http
                    .post(format!("{base}/api/runs"))
                    .bearer_auth(&token)
                    .json(&json!({ "workflow": "work", "definition": work }))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                ids.push(resp["id"].as_str().unwrap().to_string());
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            ids
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let under_load = tmp.path().join("under-load.bak");
    let file = under_load.to_str().unwrap().to_string();
    let data_for_cli = data.clone();
    let out =
        tokio::task::spawn_blocking(move || baton(&data_for_cli, &["backup", &file, "--json"]))
            .await
            .unwrap();
    let stats = ok_json(out);
    assert!(stats["entries"].as_u64().unwrap() > 0, "{stats}");
    let started_during = load.await.unwrap();
    // The data dir and the backup are the owner's alone; the daemon's copy was moved out.
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&under_load), 0o600);
    assert_eq!(
        std::fs::read_dir(data.join("backups")).unwrap().count(),
        0,
        "the daemon's copy is left behind"
    );
    // Through the API, a backup is a file name under the data dir, never a path.
    let http = reqwest::Client::new();
    for body in [
        json!({ "path": tmp.path().join("anywhere.bak") }),
        json!({ "name": "../escape.bak" }),
        json!({ "name": "/etc/cron.d/x" }),
        json!({ "name": ".hidden" }),
    ] {
        let resp = http
            .post(format!("{}/api/backup", daemon.base))
            .bearer_auth(&daemon.token)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{body}");
        let text = resp.text().await.unwrap();
        assert!(text.contains("backups/"), "{text}");
    }
    assert!(!tmp.path().join("anywhere.bak").exists());
    assert!(!tmp.path().join("escape.bak").exists());

    let first = tmp.path().join("restored-1");
    let restored = ok_json(baton(
        &first,
        &["restore", under_load.to_str().unwrap(), "--json"],
    ));
    assert_eq!(restored["entries"], stats["entries"]);
    let copy = runs_of(&first);
    let ids: Vec<&str> = copy.iter().map(|(id, _, _)| id.as_str()).collect();
    for id in &before {
        assert!(
            ids.contains(&id.as_str()),
            "{id}, started before the backup, is missing"
        );
    }
    for id in &ids {
        assert!(
            before.contains(&id.to_string()) || started_during.contains(&id.to_string()),
            "{id} was never started"
        );
    }
    assert!(
        copy.len() < before.len() + started_during.len(),
        "the backup waited for the load to end: it has all {} runs",
        copy.len()
    );

    // Settle: every work run completes, the gates wait.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now = runs_of_daemon(&daemon).await;
        let busy = now
            .iter()
            .filter(|(_, s, _)| s != "completed" && s != "waiting")
            .count();
        if busy == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{busy} runs never settled");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let live = runs_of_daemon(&daemon).await;
    // A finished run in the copy taken under load has exactly its final events.
    for (id, status, events) in &copy {
        if status == "completed" {
            let (_, _, live_events) = live.iter().find(|(l, _, _)| l == id).unwrap();
            assert_eq!(
                events, live_events,
                "{id} has a partial event log in the copy"
            );
        }
    }

    let settled = tmp.path().join("settled.bak");
    let out = baton(&data, &["backup", settled.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("backed up"));
    drop(daemon);
    let second = tmp.path().join("restored-2");
    let out = baton(&second, &["restore", settled.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(runs_of(&second), live);
    assert_eq!(live.len(), before.len() + started_during.len());

    // Never over a store: the data dir is not empty, exit 2, nothing changed.
    let out = baton(&second, &["restore", under_load.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not empty"), "{err}");
    assert_eq!(runs_of(&second), live);
}

#[test]
fn a_backup_from_a_newer_baton_is_refused_naming_both_versions() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    ok_json(baton(&data, &["runs", "--json"]));
    // A backup of it, with its version bumped past this build's, restored: the store now
    // says it is newer.
    let file = tmp.path().join("s.bak");
    let out = baton(&data, &["backup", file.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[12..16].copy_from_slice(&77u32.to_be_bytes());
    std::fs::write(&file, &bytes).unwrap();
    let fresh = tmp.path().join("fresh");
    let out = baton(&fresh, &["restore", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("version 77") && err.contains("newer"), "{err}");
    assert!(!fresh.join("db").exists());
}
