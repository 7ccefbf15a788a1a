//! `baton gc` on a real store, as a user runs it: the real binary, runs made by `baton run`,
//! retention short enough ("5s") that runs finished before a pause are old and runs finished
//! after it are new. Old workspaces go (never a waiting run's; a failed run's only after
//! `failed_workspaces`), then old finished runs with everything stored for them, exactly those.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;

use crate::BATON as BIN;

/// A data dir whose config sets retention, and three shell workflows that each leave 64 KiB in
/// their workspace: one that completes, one that fails, one that waits.
struct Retention {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    data: PathBuf,
    config: PathBuf,
}

impl Retention {
    fn new() -> Retention {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        let write = |name: &str, text: &str| std::fs::write(root.join(name), text).unwrap();
        // Each run leaves 64 KiB in its workspace.
        write(
            "done.toml",
            "id = \"done\"\n[[steps]]\nid = \"work\"\naction = \"shell\"\nwith = { run = \"head -c 65536 /dev/zero > out.bin\" }\n",
        );
        write(
            "broken.toml",
            "id = \"broken\"\n[[steps]]\nid = \"work\"\naction = \"shell\"\nwith = { run = \"head -c 65536 /dev/zero > out.bin; exit 3\" }\n",
        );
        write(
            "waits.toml",
            "id = \"waits\"\n[[steps]]\nid = \"work\"\naction = \"shell\"\nwith = { run = \"head -c 65536 /dev/zero > out.bin\" }\n\
             [[steps]]\nid = \"gate\"\nwait = { signal = \"go\" }\n",
        );
        let s = Retention {
            data: root.join("data"),
            config: root.join("config.toml"),
            root,
            _tmp: tmp,
        };
        s.retention("5s", "1h", "90d");
        s
    }

    fn retention(&self, workspaces: &str, failed: &str, runs: &str) {
        std::fs::write(
            &self.config,
            format!("[retention]\nworkspaces = \"{workspaces}\"\nfailed_workspaces = \"{failed}\"\nruns = \"{runs}\"\n"),
        )
        .unwrap();
    }

    fn baton(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .env("BATON_DATA_DIR", &self.data)
            .env("BATON_CONFIG", &self.config)
            .env("RUST_LOG", "warn")
            .output()
            .expect("baton runs")
    }

    /// `baton run FILE --json`: the run's id and status.
    fn run(&self, file: &str) -> (String, String) {
        let path = self.root.join(file).display().to_string();
        let out = self.baton(&["run", &path, "--json"]);
        let record: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)));
        (
            record["id"].as_str().unwrap().to_string(),
            record["status"].as_str().unwrap().to_string(),
        )
    }

    fn workspace(&self, run: &str) -> PathBuf {
        self.data.join("workspaces").join(run)
    }

    fn run_ids(&self, extra: &[&str]) -> Vec<String> {
        let mut args = vec!["runs", "--json"];
        args.extend_from_slice(extra);
        let out = self.baton(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut ids: Vec<String> = serde_json::from_slice::<Value>(&out.stdout)
            .unwrap()
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_string())
            .collect();
        ids.sort();
        ids
    }
}

fn text(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn sorted(ids: &[&String]) -> Vec<String> {
    let mut v: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

fn exists(p: &Path) -> bool {
    p.is_dir()
}

#[test]
fn gc_removes_exactly_the_old_workspaces_and_runs() {
    let s = Retention::new();
    let (old, status) = s.run("done.toml");
    assert_eq!(status, "completed");
    let (failed, status) = s.run("broken.toml");
    assert_eq!(status, "failed");
    let (waiting, status) = s.run("waits.toml");
    assert_eq!(status, "waiting");
    std::thread::sleep(Duration::from_secs(6));
    let (new, status) = s.run("done.toml");
    assert_eq!(status, "completed");
    for run in [&old, &failed, &waiting, &new] {
        assert!(exists(&s.workspace(run)), "{run} has a workspace");
    }

    // A dry run names the old completed run's workspace and removes nothing.
    let dry = text(&s.baton(&["gc", "--dry-run"]));
    assert!(
        dry.contains(&format!("would remove workspace {old} (64.")),
        "{dry}"
    );
    assert!(dry.contains("1 item(s) would be removed"), "{dry}");
    assert!(exists(&s.workspace(&old)));

    // Workspaces: the old completed one goes; the failed one is kept for `failed_workspaces`,
    // the waiting one always, the new one for `workspaces`.
    let out = text(&s.baton(&["gc"]));
    assert!(
        out.contains(&format!("removed workspace {old} (64.")),
        "{out}"
    );
    assert!(out.contains("1 item(s) removed; 64."), "{out}");
    assert!(!exists(&s.workspace(&old)));
    for run in [&failed, &waiting, &new] {
        assert!(exists(&s.workspace(run)), "{run} kept");
    }
    assert_eq!(
        s.run_ids(&[]),
        sorted(&[&old, &failed, &waiting, &new]),
        "runs are kept for `runs`"
    );

    // Runs: the old finished ones go, with their workspaces; the waiting and the new stay.
    s.retention("5s", "1h", "5s");
    let out = s.baton(&["gc", "--json"]);
    let report: Value = serde_json::from_slice(&text(&out).into_bytes()).unwrap();
    let mut runs: Vec<String> = report["removed"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["kind"] == "run")
        .map(|r| r["name"].as_str().unwrap().to_string())
        .collect();
    runs.sort();
    assert_eq!(runs, sorted(&[&old, &failed]), "{report}");
    assert!(
        !exists(&s.workspace(&failed)),
        "a deleted run's workspace goes with it"
    );
    assert_eq!(s.run_ids(&[]), sorted(&[&waiting, &new]));
    // The index agrees: listings by status see exactly what is left.
    assert_eq!(s.run_ids(&["--status", "completed"]), vec![new.clone()]);
    assert!(s.run_ids(&["--status", "failed"]).is_empty());
    assert_eq!(s.run_ids(&["--status", "waiting"]), vec![waiting.clone()]);
    let gone = s.baton(&["show", &old]);
    assert!(!gone.status.success(), "the old run is gone");
    // The waiting run is whole: still waiting, its workspace there.
    let shown = text(&s.baton(&["show", &waiting, "--json"]));
    let shown: Value = serde_json::from_slice(shown.as_bytes()).unwrap();
    assert_eq!(shown["status"], "waiting", "{shown}");
    assert!(exists(&s.workspace(&waiting)));
}

/// `baton serve` on the setup's data dir; killed and reaped on drop.
struct Daemon(std::process::Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn gc_goes_through_the_daemon_that_holds_the_store() {
    let s = Retention::new();
    s.retention("1ms", "1ms", "90d");
    let addr = s.data.join("baton.addr");
    let daemon = Daemon(
        Command::new(BIN)
            .args(["serve", "--bind", "127.0.0.1:0"])
            .env("BATON_DATA_DIR", &s.data)
            .env("BATON_CONFIG", &s.config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let started = std::time::Instant::now();
    while !addr.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the daemon did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (done, status) = s.run("done.toml");
    assert_eq!(status, "completed");
    let (waiting, status) = s.run("waits.toml");
    assert_eq!(status, "waiting");
    std::thread::sleep(Duration::from_millis(20));
    let out = text(&s.baton(&["gc"]));
    assert!(
        out.contains(&format!("removed workspace {done} (64.")),
        "{out}"
    );
    assert!(!out.contains(&waiting), "{out}");
    assert!(!exists(&s.workspace(&done)));
    assert!(
        exists(&s.workspace(&waiting)),
        "a waiting run's workspace is never removed"
    );
    drop(daemon);
}
