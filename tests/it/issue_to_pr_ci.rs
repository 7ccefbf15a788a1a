//! Issue → PR after the PR opens: the run waits for the repository's own CI on the commit it
//! pushed, hands a failure (with its log) to a fix round, pushes, publishes its check, and
//! waits again. The real `baton` binary and the local forge; CI is played by the test through
//! `baton forge check create`, from another process, as a person would.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use baton::forge::Forge;
use serde_json::Value;

use crate::issue_to_pr::{step, Setup, BUG, FIX, LIB_RS, WEBHOOK_SECRET};
use crate::setup::block_on;
use crate::BATON;

/// A coding command: the first round writes the fix; a round that is told CI failed writes
/// `ci-fix-N.txt` holding the log lines it was given (so the commit changes and the test sees
/// what reached it).
fn ci_fixing_agent(s: &Setup) {
    let script = s.root.join("agent.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\ntask=$(cat)\ncase \"$task\" in\n*\"The repository's CI failed\"*)\n\
             n=$(ls ci-fix-*.txt 2>/dev/null | wc -l)\n\
             printf '%s\\n' \"$task\" | grep 'CI-LOG' > ci-fix-$((n + 1)).txt || echo none > ci-fix-$((n + 1)).txt\n\
             ;;\n*)\ncat > src/lib.rs <<'EOF'\n{right}EOF\n;;\nesac\necho done\n",
            right = LIB_RS.replace(BUG, FIX),
        ),
    )
    .unwrap();
    let config = std::fs::read_to_string(&s.config).unwrap().replace(
        "backend = \"patch\"",
        &format!(
            "backend = \"command\"\ncommand = [\"sh\", \"{}\"]",
            script.display()
        ),
    );
    std::fs::write(&s.config, config).unwrap();
}

/// `baton ARGS --json` started in the background (the run waits for CI, so it does not end
/// until the test has played CI).
fn spawn(s: &Setup, args: &[&str]) -> Child {
    Command::new(BATON)
        .args(args)
        .env("BATON_DATA_DIR", &s.data)
        .env("BATON_CONFIG", &s.config)
        .env_remove("GITHUB_TOKEN")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("baton starts")
}

/// The record a backgrounded `--json` command printed, once it ended (within two minutes).
fn finish(child: Child) -> (Value, String) {
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let record = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: exit {:?}\n{stderr}", out.status));
    (record, stderr)
}

/// Waits (two minutes at most) until the PR's branch holds a commit other than `not`, and
/// returns it.
fn head_other_than(s: &Setup, not: &str, child: &mut Child) -> String {
    let started = Instant::now();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let mut stderr = String::new();
            use std::io::Read;
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut stderr)
                .unwrap();
            panic!("baton ended ({status}) before pushing past {not}:\n{stderr}");
        }
        let pr = block_on(async {
            match s.forge.find_open_pull_request(&s.repo, "fix/issue-1").await {
                // Where its branch is now, pushes included.
                Ok(Some(pr)) => s.forge.pull_request(&s.repo, pr.number).await.ok(),
                _ => None,
            }
        });
        if let Some(pr) = pr {
            if pr.head_sha != not {
                return pr.head_sha;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no new push past {not}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Plays CI: `baton forge check create` from another process.
fn post(s: &Setup, sha: &str, name: &str, conclusion: &str, log: Option<&str>) {
    let mut args = vec![
        "forge",
        "check",
        "create",
        "acme/calc",
        "--sha",
        sha,
        "--name",
        name,
        "--conclusion",
        conclusion,
    ];
    let path = s.root.join(format!("{name}-{sha}.log"));
    let path_text = path.to_string_lossy().to_string();
    if let Some(log) = log {
        std::fs::write(&path, log).unwrap();
        args.extend(["--log", path_text.as_str()]);
    }
    let out = s.baton(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CI log whose failure is deep inside it: the excerpt the agent gets must find it.
fn long_failing_log() -> String {
    let mut log = String::new();
    for i in 0..600 {
        log.push_str(&format!("step {i}: compiling and downloading things\n"));
    }
    log.push_str("CI-LOG: integration test `mean_of_many` failed on ubuntu-latest\n");
    for i in 0..300 {
        log.push_str(&format!("teardown {i}\n"));
    }
    log
}

#[test]
fn a_failing_ci_check_is_fixed_pushed_checked_and_waited_for_again() {
    // `[ci]` in the repository's `.baton.toml`: it has a CI, so the run waits for it; both
    // checks are required (with every check counting, a run could read the first one posted
    // as the whole CI).
    let s = Setup::new(
        "",
        "[ci]\n[issue_to_pr]\nrequired_checks = [\"lint\", \"tests\"]\n",
    );
    ci_fixing_agent(&s);
    let n = s.issue("mean divides by the wrong count", &["bug"], None);
    let mut run = spawn(&s, &["issue-to-pr", &format!("acme/calc#{n}"), "--json"]);

    // 1. The PR opens; CI fails on its head, the same failure delivered three times.
    let first = head_other_than(&s, "", &mut run);
    for _ in 0..3 {
        post(&s, &first, "tests", "failure", Some(&long_failing_log()));
    }
    post(&s, &first, "lint", "success", None);

    // 2. baton fixes, pushes and publishes its own check on the new commit.
    let second = head_other_than(&s, &first, &mut run);
    // A failing check for the OLD commit after the push changes nothing.
    post(
        &s,
        &first,
        "tests",
        "failure",
        Some("CI-LOG: stale failure\n"),
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        head_other_than(&s, &first, &mut run),
        second,
        "nothing pushed for the old commit's failure"
    );
    // 3. CI passes on the new commit.
    post(&s, &second, "tests", "success", None);
    post(&s, &second, "lint", "success", None);
    let (record, stderr) = finish(run);
    assert_eq!(record["status"], "completed", "{stderr}");

    // One fix round, with the failure's excerpt, for the failing commit however often it
    // was reported; none for the old commit's late failure.
    let ci = &step(&record, "ci_wait")["output"];
    assert_eq!(ci["passed"], true, "{ci}");
    assert_eq!(ci["sha"], second.as_str());
    assert_eq!(ci["rounds"], 1, "{ci}");
    assert_eq!(ci["checks"], serde_json::json!(["lint", "tests"]));
    let remote = s.forge.remote(&s.repo);
    let files = crate::common::git(&remote, &["ls-tree", "--name-only", &second]);
    assert!(
        files.contains("ci-fix-1.txt") && !files.contains("ci-fix-2.txt"),
        "{files}"
    );
    let given = crate::common::git(&remote, &["show", &format!("{second}:ci-fix-1.txt")]);
    assert!(
        given.contains("integration test `mean_of_many` failed"),
        "the agent got the failure from the log: {given}"
    );
    // baton's check is on the new commit.
    let checks = block_on(s.forge.checks_for(&s.repo, &second)).unwrap();
    assert!(
        checks
            .iter()
            .any(|c| c.name == "baton / verify" && c.passed()),
        "{checks:?}"
    );

    // The issue carries one progress comment throughout, and the summary names the checks.
    let comments = s.comments(n);
    let progress: Vec<&String> = comments
        .iter()
        .filter(|c| c.contains(":progress -->"))
        .collect();
    assert_eq!(progress.len(), 1, "{comments:#?}");
    let summary = comments
        .iter()
        .find(|c| c.contains(":summary -->"))
        .expect("a summary");
    assert!(
        summary.contains(&format!("✅ CI passed on `{}`: lint, tests", &second[..7])),
        "{summary}"
    );
    assert!(
        progress[0].contains("CI passed on"),
        "the progress comment says so: {}",
        progress[0]
    );
}

#[test]
fn after_max_ci_fix_rounds_the_run_waits_for_a_person_and_retry_runs_one_more() {
    let s = Setup::new("", "[ci]\n[issue_to_pr]\nmax_ci_fix_rounds = 1\n");
    ci_fixing_agent(&s);
    let n = s.issue("mean divides by the wrong count", &["bug"], None);
    let mut run = spawn(&s, &["issue-to-pr", &format!("acme/calc#{n}"), "--json"]);
    let first = head_other_than(&s, "", &mut run);
    post(&s, &first, "tests", "failure", Some("CI-LOG: round one\n"));
    let second = head_other_than(&s, &first, &mut run);
    post(&s, &second, "tests", "failure", Some("CI-LOG: round two\n"));

    // The one round is spent: the run waits for a person, saying what still fails.
    let (record, stderr) = finish(run);
    assert_eq!(record["status"], "waiting", "{stderr}");
    assert_eq!(record["waiting_for"]["step"], "ci_wait", "{record}");
    let ci = step(&record, "ci_wait");
    let error = ci["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("CI still fails") && error.contains("tests"),
        "{ci}"
    );
    assert!(
        ci["output"]["failure"]
            .as_str()
            .unwrap()
            .contains("CI-LOG: round two"),
        "{ci}"
    );

    // `retry` starts one more round, which pushes; CI passes on it and the run completes.
    let id = record["id"].as_str().unwrap().to_string();
    let mut retry = spawn(&s, &["retry", &id, "--json"]);
    let third = head_other_than(&s, &second, &mut retry);
    post(&s, &third, "tests", "success", None);
    let (record, stderr) = finish(retry);
    assert_eq!(record["status"], "completed", "{stderr}");
    let ci = &step(&record, "ci_wait")["output"];
    assert_eq!(ci["passed"], true, "{ci}");
    assert_eq!(ci["rounds"], 2, "{ci}");
    let remote = s.forge.remote(&s.repo);
    let given = crate::common::git(&remote, &["show", &format!("{third}:ci-fix-2.txt")]);
    assert!(given.contains("CI-LOG: round two"), "{given}");
}

/// The status of `step` in the run's record, once the run has it.
fn step_status(s: &Setup, run: &str, step_id: &str) -> Option<String> {
    let record = s.show(run);
    let steps = record["steps"].as_array()?;
    let step = steps.iter().rev().find(|x| x["id"] == step_id)?;
    step["status"].as_str().map(str::to_string)
}

/// How long a woken wait may take to act: far below the poll interval the test sets (10 min),
/// above a fix round's verify (cargo test of the calc crate) on a slow machine.
const PROMPTLY: Duration = Duration::from_secs(90);

#[test]
fn ci_news_wakes_a_waiting_run_by_webhook_and_by_forge_check_create() {
    // The run reads the checks every 10 minutes without news: whatever it does within
    // seconds of a check, news woke it.
    let s = Setup::new(
        "[workflows.issue_to_pr]\nci_poll = \"10m\"\n",
        "[ci]\n[issue_to_pr]\nrequired_checks = [\"tests\"]\n",
    );
    ci_fixing_agent(&s);
    let daemon = s.serve_webhooks();
    let n = s.issue("mean divides by the wrong count", &["bug"], None);
    let run = s.detach(n);
    // The daemon drives the run: `head_other_than` watches a stand-in for the process that
    // could end early, one that does not.
    let mut idle = Command::new("sleep").arg("600").spawn().unwrap();
    let first = head_other_than(&s, "", &mut idle);
    crate::issue_to_pr::wait_until("the run to wait for CI", PROMPTLY, || {
        step_status(&s, &run, "ci_wait").as_deref() == Some("running")
    });
    // Past its first read (the local forge answers at once): only news or the poll reads again.
    std::thread::sleep(Duration::from_secs(2));

    // 1. CI's failure recorded where no one is told (the forge itself, as GitHub records a
    // check run): the run does not see it before news.
    let failing = baton::forge::NewCheck {
        name: "tests".into(),
        head_sha: first.clone(),
        conclusion: baton::forge::checks::Conclusion::Failure,
        title: "1 failed".into(),
        summary: String::new(),
        details_url: None,
        log: Some("CI-LOG: woken by a webhook\n".into()),
        annotations: Vec::new(),
    };
    block_on(s.forge.publish_check(&s.repo, &failing)).unwrap();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        step_status(&s, &run, "ci_wait").as_deref(),
        Some("running"),
        "the failure was read without news"
    );
    // News of another commit (the example as GitHub sent it) wakes nothing.
    let examples = crate::common_forge::webhook_examples().expect("webhooks-examples");
    let other =
        crate::common_forge::example(&examples, "check_run", |e| e["action"] == "completed");
    let (status, answer) = daemon.deliver(WEBHOOK_SECRET, "check_run", "ci-1", &other);
    assert_eq!((status, answer["status"].as_str()), (202, Some("ignored")));
    // GitHub's `check_run.completed` about the pushed commit wakes the wait: a fix round, a
    // push, well before the next poll.
    let mut ours = other.clone();
    ours["check_run"]["head_sha"] = first.clone().into();
    let started = Instant::now();
    let (status, answer) = daemon.deliver(WEBHOOK_SECRET, "check_run", "ci-2", &ours);
    assert_eq!(
        (status, answer["status"].as_str()),
        (202, Some("woke")),
        "{answer}"
    );
    let second = head_other_than(&s, &first, &mut idle);
    assert!(started.elapsed() < PROMPTLY, "{:?}", started.elapsed());

    // 2. On the local forge, `baton forge check create` tells the daemon itself.
    crate::issue_to_pr::wait_until("the run to wait for CI again", PROMPTLY, || {
        step_status(&s, &run, "ci_fix").as_deref() == Some("completed")
            && step_status(&s, &run, "ci_wait").as_deref() == Some("running")
    });
    std::thread::sleep(Duration::from_secs(2));
    let started = Instant::now();
    post(&s, &second, "tests", "success", None);
    crate::issue_to_pr::wait_until("the run to complete", PROMPTLY, || {
        s.show(&run)["status"] == "completed"
    });
    assert!(started.elapsed() < PROMPTLY, "{:?}", started.elapsed());
    let record = s.show(&run);
    let ci = &step(&record, "ci_wait")["output"];
    assert_eq!(ci["passed"], true, "{ci}");
    assert_eq!(ci["sha"], second.as_str(), "{ci}");
    assert_eq!(
        ci["rounds"], 1,
        "one round: a wake is no verdict of its own: {ci}"
    );
    let _ = idle.kill();
    let _ = idle.wait();
}

#[test]
fn a_ci_command_runs_on_each_pushed_commit_and_its_failure_is_fixed() {
    // `[ci] command`: baton runs it in the sandbox on each commit it pushes and publishes the
    // check `ci`. This CI fails until a fix round has left `ci-fix-1.txt` (which holds the
    // CI-LOG lines the round was given).
    let s = Setup::new(
        "",
        "[ci]\ncommand = \"test -f ci-fix-1.txt || { echo 'CI-LOG: ci-fix-1.txt is missing'; exit 3; }\"\n",
    );
    ci_fixing_agent(&s);
    let n = s.issue("mean divides by the wrong count", &["bug"], None);
    let run = spawn(&s, &["issue-to-pr", &format!("acme/calc#{n}"), "--json"]);
    let (record, stderr) = finish(run);
    assert_eq!(record["status"], "completed", "{stderr}");
    let ci = &step(&record, "ci_wait")["output"];
    assert_eq!(ci["passed"], true, "{ci}");
    assert_eq!(ci["rounds"], 1, "{ci}");
    assert_eq!(ci["checks"], serde_json::json!(["ci"]), "{ci}");
    let second = ci["sha"].as_str().unwrap().to_string();

    // The failing commit has a failing `ci` with the command's output as its log; the
    // commit that fixed it a passing one.
    let remote = s.forge.remote(&s.repo);
    let first = crate::common::git(&remote, &["rev-parse", &format!("{second}~1")]);
    let first = first.trim();
    let of = |sha: &str| {
        block_on(s.forge.checks_for(&s.repo, sha))
            .unwrap()
            .into_iter()
            .find(|c| c.name == "ci")
            .unwrap_or_else(|| panic!("no `ci` check on {sha}"))
    };
    let failed = of(first);
    assert!(failed.failed(), "{failed:?}");
    assert!(
        failed
            .log
            .as_deref()
            .unwrap_or_default()
            .contains("CI-LOG: ci-fix-1.txt is missing"),
        "{failed:?}"
    );
    assert!(failed.title.contains("exited 3"), "{failed:?}");
    assert!(of(&second).passed(), "{:?}", of(&second));
    // The fix round got the failure from the check's log.
    let given = crate::common::git(&remote, &["show", &format!("{second}:ci-fix-1.txt")]);
    assert!(given.contains("CI-LOG: ci-fix-1.txt is missing"), "{given}");
}

#[test]
fn slash_fix_ci_on_the_pr_runs_one_more_round_for_a_writer_only() {
    let s = Setup::new(
        "[webhook]\ndeny_reply = \"only people with write access can.\"\n",
        "[ci]\n[issue_to_pr]\nmax_ci_fix_rounds = 0\n",
    );
    ci_fixing_agent(&s);
    let examples = crate::common_forge::webhook_examples().expect("webhooks-examples");
    let daemon = s.serve_webhooks();
    let n = s.issue("mean divides by the wrong count", &["bug"], None);
    let run = s.detach(n);
    let mut idle = Command::new("sleep").arg("600").spawn().unwrap();
    let first = head_other_than(&s, "", &mut idle);
    // No round is allowed: CI's failure parks the run at ci_wait for a person.
    post(
        &s,
        &first,
        "tests",
        "failure",
        Some("CI-LOG: fixed by fix-ci\n"),
    );
    crate::issue_to_pr::wait_until("the run to wait at ci_wait", PROMPTLY, || {
        let record = s.show(&run);
        record["status"] == "waiting" && record["waiting_for"]["step"] == "ci_wait"
    });
    let pr = s.show(&run)["state"]["pr"]["number"].as_u64().unwrap();
    let ids = std::sync::atomic::AtomicU64::new(7_000);
    let fix_ci = |sender: &str| {
        let mut c =
            crate::common_forge::example(&examples, "issue_comment", |e| e["action"] == "created");
        c["comment"]["body"] = "Please look again.\n/baton fix-ci".into();
        c["comment"]["id"] = ids
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            .into();
        c["repository"]["full_name"] = "acme/calc".into();
        c["repository"]["name"] = "calc".into();
        c["repository"]["owner"]["login"] = "acme".into();
        c["issue"]["number"] = pr.into();
        c["issue"]["pull_request"] = serde_json::json!({"url": format!("https://api.github.com/repos/acme/calc/pulls/{pr}")});
        c["sender"]["login"] = sender.into();
        c["sender"]["type"] = "User".into();
        c
    };

    // mallory cannot write: the usual reply, and the run still waits with nothing pushed.
    let (status, _) = daemon.deliver(
        WEBHOOK_SECRET,
        "issue_comment",
        "fix-ci-1",
        &fix_ci("mallory"),
    );
    assert_eq!(status, 202);
    crate::issue_to_pr::wait_until("the reply to mallory", PROMPTLY, || {
        s.comments(pr)
            .iter()
            .any(|c| c.starts_with("@mallory only people with write access can."))
    });
    assert_eq!(s.show(&run)["waiting_for"]["step"], "ci_wait");
    assert_eq!(head_other_than(&s, "", &mut idle), first, "nothing pushed");

    // alice can: one more round, given the failure, pushed and waited for again.
    let (status, _) = daemon.deliver(
        WEBHOOK_SECRET,
        "issue_comment",
        "fix-ci-2",
        &fix_ci("alice"),
    );
    assert_eq!(status, 202);
    let second = head_other_than(&s, &first, &mut idle);
    post(&s, &second, "tests", "success", None);
    crate::issue_to_pr::wait_until("the run to complete", PROMPTLY, || {
        s.show(&run)["status"] == "completed"
    });
    let record = s.show(&run);
    let ci = &step(&record, "ci_wait")["output"];
    assert_eq!(
        (ci["passed"].as_bool(), ci["rounds"].as_u64()),
        (Some(true), Some(1)),
        "{ci}"
    );
    let remote = s.forge.remote(&s.repo);
    let given = crate::common::git(&remote, &["show", &format!("{second}:ci-fix-1.txt")]);
    assert!(given.contains("CI-LOG: fixed by fix-ci"), "{given}");

    // On a run no longer at ci_wait it does nothing.
    let (status, _) = daemon.deliver(
        WEBHOOK_SECRET,
        "issue_comment",
        "fix-ci-3",
        &fix_ci("alice"),
    );
    assert_eq!(status, 202);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(s.show(&run)["status"], "completed");
    assert_eq!(head_other_than(&s, "", &mut idle), second, "nothing pushed");
    let _ = idle.kill();
    let _ = idle.wait();
}

#[test]
fn ci_news_over_the_api_needs_the_token_and_says_what_is_wrong() {
    let s = Setup::new("", "");
    let daemon = s.serve();
    let post = |path: &str, token: Option<&str>, body: serde_json::Value| {
        block_on(async {
            let mut req = daemon
                .http
                .post(format!("{}{path}", daemon.base))
                .json(&body);
            if let Some(token) = token {
                req = req.bearer_auth(token);
            }
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            (status, resp.json::<Value>().await.unwrap_or(Value::Null))
        })
    };
    let sha = "ab".repeat(20);
    let news = serde_json::json!({"action": "completed", "check_run": {"head_sha": sha}});
    let token = Some(daemon.token.as_str());
    assert_eq!(post("/api/ci/check_run", None, news.clone()).0, 401);
    let (status, body) = post("/api/ci/deploy", token, news.clone());
    assert_eq!(status, 404, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("`deploy` is not a CI event: expected one of check_suite, check_run"),
        "{body}"
    );
    let (status, body) = post(
        "/api/ci/check_run",
        token,
        serde_json::json!({"check_run": {"head_sha": "abc123"}}),
    );
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("`check_run.head_sha`, a commit's full 40-hex-digit sha"),
        "{body}"
    );
    let (status, body) = post(
        "/api/ci/status",
        token,
        serde_json::json!({"state": "success"}),
    );
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("needs `sha`"),
        "{body}"
    );
    // Well formed, and no run waits on that commit.
    let (status, body) = post("/api/ci/check_run", token, news);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, serde_json::json!({"sha": sha, "woke": false}));
}
