//! `[limits]` through the real `baton serve`: with `max_active_runs = 2`, ten runs whose one
//! shell step records its start and end never overlap more than two at a time, the rest wait
//! as `pending`, and all ten complete; runs parked at a wait hold no slot; runs resumed after
//! `kill -9` are admitted within the limit too; a pending run can be cancelled unstarted;
//! with `max_verifications = 1`, test suites of three runs never overlap; with
//! `per_repo = 1`, one repository's runs never overlap while another repository's run goes
//! ahead of them, and a pending run says what it queues behind in the API and `baton runs`,
//! also after `kill -9`.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::common_daemon::Daemon;
use crate::BATON;

/// The most lines of `start`/`end` pairs open at once, in the order they were written.
fn max_overlap(log: &str) -> (usize, usize) {
    let (mut open, mut max, mut ended) = (0usize, 0usize, 0usize);
    for line in log.lines() {
        match line.split_whitespace().next() {
            Some("start") => {
                open += 1;
                max = max.max(open);
            }
            Some("end") => {
                open -= 1;
                ended += 1;
            }
            _ => panic!("unexpected line {line:?}"),
        }
    }
    (max, ended)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_most_two_of_ten_runs_execute_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let config = tmp.path().join("config.toml");
    std::fs::write(&config, "[limits]\nmax_active_runs = 2\n").unwrap();
    let log = tmp.path().join("steps.log");
    let daemon = Daemon::start(&data, &config);

    // Two runs parked at a wait first: they must not take the two slots.
    let gate = json!({ "id": "gate", "steps": [
        { "id": "w", "wait": { "signal": "approve" } },
        { "id": "x", "action": "noop" }
    ] });
    let mut gates = Vec::new();
    for _ in 0..2 {
        gates.push(daemon.start_run(&gate).await);
    }
    for run in &gates {
        let deadline = Instant::now() + Duration::from_secs(20);
        while daemon.status(run).await != "waiting" {
            assert!(Instant::now() < deadline, "{run} never parked");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    // `>>` of one short line is atomic, so the file's order is the order of the events.
    let script = format!(
        "echo \"start $BATON_RUN_ID\" >> {log}; sleep 0.4; echo \"end $BATON_RUN_ID\" >> {log}",
        log = log.display()
    );
    let work = json!({ "id": "work", "steps": [
        { "id": "s", "action": "shell", "with": { "run": script } }
    ] });
    let mut runs = Vec::new();
    for _ in 0..10 {
        runs.push(daemon.start_run(&work).await);
    }
    // Right after ten starts, most of them are still held back.
    let mut pending = 0;
    for run in &runs {
        if daemon.status(run).await == "pending" {
            pending += 1;
        }
    }
    assert!(
        pending >= 6,
        "only {pending} of 10 runs wait as pending with two slots"
    );

    let deadline = Instant::now() + Duration::from_secs(60);
    for run in &runs {
        loop {
            let status = daemon.status(run).await;
            if status == "completed" {
                break;
            }
            assert_ne!(status, "failed", "{run} failed");
            assert!(Instant::now() < deadline, "{run} is still {status}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let text = std::fs::read_to_string(&log).unwrap();
    let (max, ended) = max_overlap(&text);
    assert_eq!(ended, 10, "{text}");
    assert!(max <= 2, "{max} runs executed at once:\n{text}");
    assert_eq!(max, 2, "two slots were never both used:\n{text}");
    // Starts are admitted in start order: the engine's start times never go backwards.
    // (The log's order is not the proof: two runs admitted together race to write it.)
    let mut started = Vec::new();
    for run in &runs {
        let rec = daemon.get_json(&format!("/api/runs/{run}")).await;
        started.push(rec["started_at"].as_str().unwrap().to_string());
    }
    assert!(
        started.windows(2).all(|w| w[0] <= w[1]),
        "admitted out of order: {started:?}"
    );
    for run in &gates {
        assert_eq!(daemon.status(run).await, "waiting");
    }
}

async fn wait_for(daemon: &Daemon, run: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = daemon.status(run).await;
        if status == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{run} is still {status}, not {want}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_resumed_after_kill_9_are_admitted_within_the_limit() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let config = tmp.path().join("config.toml");
    std::fs::write(&config, "[limits]\nmax_active_runs = 2\n").unwrap();
    let log = tmp.path().join("steps.log");
    let daemon = Daemon::start(&data, &config);
    let script = format!(
        "echo \"start $BATON_RUN_ID\" >> {log}; sleep 0.5; echo \"end $BATON_RUN_ID\" >> {log}",
        log = log.display()
    );
    let work = json!({ "id": "work", "steps": [
        { "id": "s", "action": "shell", "with": { "run": script } }
    ] });
    let mut runs = Vec::new();
    for _ in 0..6 {
        runs.push(daemon.start_run(&work).await);
    }
    wait_for(&daemon, &runs[0], "running").await;
    drop(daemon); // SIGKILL: two runs were executing, four pending.
                  // What the restarted daemon runs comes after this line.
    std::fs::write(&log, "restart\n").unwrap();
    let daemon = Daemon::start(&data, &config);
    for run in &runs {
        wait_for(&daemon, run, "completed").await;
    }
    let text = std::fs::read_to_string(&log).unwrap();
    let after = text.strip_prefix("restart\n").unwrap();
    let (max, ended) = max_overlap(after);
    assert!(
        max <= 2,
        "{max} runs executed at once after the restart:\n{text}"
    );
    assert!(ended >= 4, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_run_is_cancelled_without_ever_starting() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let config = tmp.path().join("config.toml");
    std::fs::write(&config, "[limits]\nmax_active_runs = 1\n").unwrap();
    let log = tmp.path().join("steps.log");
    let daemon = Daemon::start(&data, &config);
    let script = format!(
        "echo \"start $BATON_RUN_ID\" >> {log}; sleep 1",
        log = log.display()
    );
    let work = json!({ "id": "work", "steps": [
        { "id": "s", "action": "shell", "with": { "run": script } }
    ] });
    let first = daemon.start_run(&work).await;
    let second = daemon.start_run(&work).await;
    let third = daemon.start_run(&work).await;
    wait_for(&daemon, &first, "running").await;
    assert_eq!(daemon.status(&second).await, "pending");
    let (code, answer) = daemon
        .post(&format!("/api/runs/{second}/cancel"), json!({}))
        .await;
    assert_eq!(code, 200, "{answer}");
    assert_eq!(daemon.status(&second).await, "cancelled");
    // The slot is still the first run's; the third starts once it ends.
    assert_eq!(daemon.status(&third).await, "pending");
    wait_for(&daemon, &first, "completed").await;
    wait_for(&daemon, &third, "completed").await;
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        !text.contains(&second),
        "the cancelled run executed:\n{text}"
    );
    assert_eq!(text.lines().count(), 2, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_verification_at_a_time_across_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let config = tmp.path().join("config.toml");
    // The checks' script and log live outside the clone: the checks are trusted and run on the
    // host (`[sandbox] mode = "untrusted"`), which is what this test of admission needs.
    std::fs::write(
        &config,
        "[limits]\nmax_verifications = 1\n[sandbox]\nmode = \"untrusted\"\n",
    )
    .unwrap();
    let log = tmp.path().join("checks.log");
    // The repository's own test command logs its start and end (checks run in a scrubbed
    // environment: the clone's path tells the runs apart).
    let script = tmp.path().join("check.sh");
    std::fs::write(
        &script,
        format!(
            "echo \"start $PWD\" >> {log}\nsleep 0.4\necho \"end $PWD\" >> {log}\n",
            log = log.display()
        ),
    )
    .unwrap();
    let setup = format!(
        "mkdir -p repo && cd repo && git init -q && printf '[[verify.checks]]\\nkind = \"tests\"\\ncommand = \"sh {}\"\\n' > .baton.toml && git add . && git -c user.name=t -c user.email=t@t commit -qm init",
        script.display()
    );
    let def = json!({ "id": "checked", "steps": [
        { "id": "clone", "action": "shell", "with": { "run": setup } },
        { "id": "verify", "action": "verify", "with": { "trusted": true } }
    ] });
    let daemon = Daemon::start(&data, &config);
    let mut runs = Vec::new();
    for _ in 0..3 {
        runs.push(daemon.start_run(&def).await);
    }
    for run in &runs {
        wait_for(&daemon, run, "completed").await;
    }
    let text = std::fs::read_to_string(&log).unwrap();
    let (max, ended) = max_overlap(&text);
    assert_eq!(ended, 3, "{text}");
    assert_eq!(max, 1, "test suites overlapped:\n{text}");
}

/// Runs `baton ARGS` against the daemon of `data`; its stdout.
fn baton(data: &std::path::Path, config: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new(BATON)
        .args(args)
        .env("BATON_DATA_DIR", data)
        .env("BATON_CONFIG", config)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_repository_at_a_time_and_the_other_repository_goes_ahead() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let config = tmp.path().join("config.toml");
    std::fs::write(&config, "[limits]\nper_repo = 1\n").unwrap();
    let log = tmp.path().join("steps.log");
    let gate = tmp.path().join("gate");
    let daemon = Daemon::start(&data, &config);
    // A step logs its start, waits for its gate file to exist, and logs its end. B's gate
    // exists from the start; A's opens when the test says so.
    let script = format!(
        "echo \"start $BATON_RUN_ID {{{{ input.repo }}}}\" >> {log}; while [ ! -e {{{{ input.gate }}}} ]; do sleep 0.05; done; echo \"end $BATON_RUN_ID\" >> {log}",
        log = log.display()
    );
    let def = json!({ "id": "work", "steps": [
        { "id": "s", "action": "shell", "with": { "run": script } }
    ] });
    let start = |repo: &str, gate: &std::path::Path| {
        json!({ "workflow": "work", "definition": def, "input": {
            "repo": repo, "gate": gate.display().to_string()
        } })
    };
    let mut a = Vec::new();
    for _ in 0..5 {
        let (code, answer) = daemon.post("/api/runs", start("octo/a", &gate)).await;
        assert_eq!(code, 200, "{answer}");
        a.push(answer["id"].as_str().unwrap().to_string());
    }
    let (code, answer) = daemon.post("/api/runs", start("octo/b", &config)).await;
    assert_eq!(code, 200, "{answer}");
    let b = answer["id"].as_str().unwrap().to_string();

    // B completes while A's first run holds A's one slot and the other four wait.
    wait_for(&daemon, &b, "completed").await;
    wait_for(&daemon, &a[0], "running").await;
    for run in &a[1..] {
        assert_eq!(daemon.status(run).await, "pending", "{run}");
    }
    let rec = daemon.get_json(&format!("/api/runs/{}", a[2])).await;
    let queued = &rec["queued_behind"];
    assert_eq!(queued["limit"], "per_repo", "{rec}");
    assert_eq!(queued["key"], "octo/a");
    assert_eq!(queued["max"], 1);
    assert_eq!(queued["holders"], json!([a[0]]));
    assert_eq!(queued["ahead"], 1);
    let reason = format!(
        "waiting for a slot: 1 of 1 runs of octo/a are running ({}); 1 ahead of it in its queue",
        a[0]
    );
    assert_eq!(queued["reason"], reason.as_str());
    let done = daemon.get_json(&format!("/api/runs/{b}")).await;
    assert!(done["queued_behind"].is_null(), "{done}");

    // `baton runs` and its JSON say the same, through the daemon.
    let lines = baton(&data, &config, &["runs"]);
    let line = lines.lines().find(|l| l.starts_with(&a[2])).unwrap();
    assert!(
        line.contains("pending") && line.contains(&reason),
        "{lines}"
    );
    let listed: serde_json::Value =
        serde_json::from_str(&baton(&data, &config, &["runs", "--json"])).unwrap();
    let entry = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == a[4].as_str())
        .unwrap();
    assert_eq!(entry["queued_behind"]["ahead"], 3, "{entry}");
    assert_eq!(entry["queued_behind"]["limit"], "per_repo");

    std::fs::write(&gate, "").unwrap();
    for run in &a {
        wait_for(&daemon, run, "completed").await;
    }
    let text = std::fs::read_to_string(&log).unwrap();
    let of_a: String = text
        .lines()
        .filter(|l| a.iter().any(|r| l.contains(r.as_str())))
        .map(|l| {
            format!(
                "{}\n",
                l.split_whitespace().take(2).collect::<Vec<_>>().join(" ")
            )
        })
        .collect();
    let (max, ended) = max_overlap(&of_a);
    assert_eq!(ended, 5, "{text}");
    assert_eq!(max, 1, "two runs of octo/a executed at once:\n{text}");
    // B's step started before A's second run's did: the order in the log.
    let first_start = |run: &str| {
        text.lines()
            .position(|l| l.starts_with(&format!("start {run}")))
    };
    assert!(first_start(&b) < first_start(&a[1]), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_repo_holds_after_kill_9_and_pending_runs_still_say_why() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let config = tmp.path().join("config.toml");
    std::fs::write(&config, "[limits]\nper_repo = 1\n").unwrap();
    let log = tmp.path().join("steps.log");
    let gate = tmp.path().join("gate");
    let script = format!(
        "echo \"start $BATON_RUN_ID\" >> {log}; while [ ! -e {gate} ]; do sleep 0.05; done; echo \"end $BATON_RUN_ID\" >> {log}",
        log = log.display(),
        gate = gate.display()
    );
    let def = json!({ "id": "work", "steps": [
        { "id": "s", "action": "shell", "with": { "run": script } }
    ] });
    let daemon = Daemon::start(&data, &config);
    let mut runs = Vec::new();
    for _ in 0..4 {
        let (code, answer) = daemon
            .post(
                "/api/runs",
                json!({ "workflow": "work", "definition": def, "input": { "repo": "octo/a" } }),
            )
            .await;
        assert_eq!(code, 200, "{answer}");
        runs.push(answer["id"].as_str().unwrap().to_string());
    }
    wait_for(&daemon, &runs[0], "running").await;
    drop(daemon); // SIGKILL: one run executing, three pending.

    std::fs::write(&log, "restart\n").unwrap();
    let daemon = Daemon::start(&data, &config);
    // The run that was executing resumes first and holds octo/a's slot again.
    wait_for(&daemon, &runs[0], "running").await;
    for (i, run) in runs.iter().enumerate().skip(1) {
        let rec = daemon.get_json(&format!("/api/runs/{run}")).await;
        assert_eq!(rec["status"], "pending", "{rec}");
        let queued = &rec["queued_behind"];
        assert_eq!(queued["limit"], "per_repo", "{rec}");
        assert_eq!(queued["holders"], json!([runs[0]]), "{rec}");
        assert_eq!(queued["ahead"], i - 1, "{rec}");
    }
    std::fs::write(&gate, "").unwrap();
    for run in &runs {
        wait_for(&daemon, run, "completed").await;
    }
    let text = std::fs::read_to_string(&log).unwrap();
    let (max, ended) = max_overlap(text.strip_prefix("restart\n").unwrap());
    assert_eq!(ended, 4, "{text}");
    assert_eq!(
        max, 1,
        "two runs of octo/a executed at once after the restart:\n{text}"
    );
}

#[test]
fn a_bad_limit_is_a_config_error_naming_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("config.toml");
    std::fs::write(&config, "[limits]\nmax_active_runs = -1\n").unwrap();
    let out = Command::new(BATON)
        .args(["runs"])
        .env("BATON_DATA_DIR", tmp.path().join("data"))
        .env("BATON_CONFIG", &config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("max_active_runs"), "{err}");
}

/// `GET /api/runs` is paged: 100 by default, `limit` up to 1000, a `Link: <…>; rel="next"`
/// while there are more and `X-Total-Count`. Runs started between two pages neither repeat
/// nor hide an older run, and `baton runs` (which talks to the daemon) follows every page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_listings_are_paged_and_every_page_is_followed() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let config = tmp.path().join("config.toml");
    std::fs::write(&config, "").unwrap();
    let daemon = Daemon::start(&data, &config);
    let def = json!({ "id": "tiny", "steps": [ { "id": "a", "action": "noop" } ] });
    let mut started = Vec::new();
    for _ in 0..130 {
        started.push(daemon.start_run(&def).await);
    }
    let get = |path: String| {
        daemon
            .http
            .get(format!("{}{path}", daemon.base))
            .bearer_auth(&daemon.token)
            .send()
    };
    let first = get("/api/runs".into()).await.unwrap();
    assert_eq!(first.headers()["x-total-count"], "130");
    let link = first.headers()["link"].to_str().unwrap().to_string();
    assert!(link.ends_with("; rel=\"next\""), "{link}");
    let mut seen: Vec<String> = first
        .json::<serde_json::Value>()
        .await
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(seen.len(), 100);
    // Newer runs arrive between the pages.
    for _ in 0..7 {
        daemon.start_run(&def).await;
    }
    let mut next = Some(link);
    let mut pages = 1;
    while let Some(link) = next.take() {
        let path = link
            .trim_start_matches('<')
            .split('>')
            .next()
            .unwrap()
            .to_string();
        let resp = get(path).await.unwrap();
        assert_eq!(resp.status(), 200);
        next = resp
            .headers()
            .get("link")
            .map(|l| l.to_str().unwrap().to_string());
        let page: serde_json::Value = resp.json().await.unwrap();
        seen.extend(
            page.as_array()
                .unwrap()
                .iter()
                .map(|r| r["id"].as_str().unwrap().to_string()),
        );
        pages += 1;
    }
    assert_eq!(pages, 2);
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), seen.len(), "a run came twice");
    for id in &started {
        assert!(seen.contains(id), "{id} was never listed");
    }
    for (query, why) in [
        ("?limit=0", "limit"),
        ("?limit=1001", "limit"),
        ("?cursor=zz", "cursor"),
    ] {
        let resp = get(format!("/api/runs{query}")).await.unwrap();
        assert_eq!(resp.status(), 400, "{query}");
        assert!(resp.text().await.unwrap().contains(why));
    }
    // The CLI lists them all, through as many pages as it takes.
    let data_for_cli = data.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(BATON)
            .args(["runs", "--json"])
            .env("BATON_DATA_DIR", &data_for_cli)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 137);
}
