//! Telegram chat control end to end: the real `baton serve` with its bot pointed (through
//! `[telegram] api_url`) at a loopback Bot API server, a person typing commands and pressing
//! buttons there, and the engine's runs doing what they asked.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common_telegram::{Shown, TelegramServer};
use serde_json::Value;

use crate::BATON;
/// A token in Telegram's shape; the tests grep for it where it must never be.
const TOKEN: &str = "987654321:AAH-tg-test-SECRET_token_value";
/// The user on `allowed_users`.
const ADA: u64 = 1001;
/// A user who is not.
const EVE: u64 = 6666;
/// Ada's private chat with the bot.
const CHAT: i64 = 1001;
/// The `notify_chats` group.
const GROUP: i64 = -5005;
/// Another chat Ada is in, which started nothing.
const OTHER_CHAT: i64 = 3003;

const WAIT: Duration = Duration::from_secs(30);

/// A build step, a wait for approval, a last step.
const GATE: &str = r#"
id = "gate-check"
description = "Builds, waits for approval, ships"
[[steps]]
id = "build"
description = "Build"
action = "shell"
with = { run = "true" }
[[steps]]
id = "approval"
wait = { signal = "approve" }
[[steps]]
id = "ship"
description = "Ship"
action = "shell"
with = { run = "true" }
"#;

/// A step that fails the first time (leaving a flag file), then passes.
const FLAKY: &str = r#"
id = "flaky"
description = "Fails once, then passes"
[input]
flag = { required = true }
[[steps]]
id = "try"
action = "shell"
with = { run = "test -f '{{ input.flag }}' || { touch '{{ input.flag }}'; exit 3; }" }
on_failure = "pause"
"#;

/// A workflow about an issue: `OWNER/NAME#N` fills its inputs.
const ISSUE_ECHO: &str = r#"
id = "issue_echo"
description = "Says which issue it is about"
[input]
repo = { required = true }
issue = { required = true }
[[steps]]
id = "say"
action = "shell"
with = { run = "echo {{ input.repo }}#{{ input.issue }}" }
"#;

struct Env {
    dir: tempfile::TempDir,
    server: TelegramServer,
    daemon: Option<Child>,
    starts: u32,
}

impl Env {
    async fn new() -> Env {
        Env::with_server(TelegramServer::start(TOKEN).await, "").await
    }

    /// An environment whose config has `extra` appended to its `[telegram]` table.
    async fn with_server(server: TelegramServer, extra: &str) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let workflows = dir.path().join("workflows");
        std::fs::create_dir_all(&workflows).unwrap();
        std::fs::write(workflows.join("gate-check.toml"), GATE).unwrap();
        std::fs::write(workflows.join("flaky.toml"), FLAKY).unwrap();
        std::fs::write(workflows.join("issue_echo.toml"), ISSUE_ECHO).unwrap();
        let config = format!(
            "workflow_dirs = [{workflows:?}]\n\
             [notify]\ntelegram_interval = \"100ms\"\n\
             [telegram]\nallowed_users = [{ADA}]\nnotify_chats = [{GROUP}]\napi_url = {:?}\n{extra}\n",
            server.url
        );
        std::fs::write(dir.path().join("config.toml"), config).unwrap();
        Env {
            dir,
            server,
            daemon: None,
            starts: 0,
        }
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("daemon.log")
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(BATON);
        cmd.args(args)
            .env("BATON_DATA_DIR", self.data())
            .env("BATON_CONFIG", self.dir.path().join("config.toml"))
            .env_remove("TELOXIDE_TOKEN")
            .env_remove("BATON_TELEGRAM_WEBHOOK_SECRET")
            .current_dir(self.dir.path());
        cmd
    }

    /// Starts `baton serve` with the token set, logging to `daemon.log`.
    fn start(&mut self, env: &[(&str, &str)]) -> String {
        let data = self.data();
        std::fs::create_dir_all(&data).unwrap();
        let _ = std::fs::remove_file(data.join("baton.addr"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log())
            .unwrap();
        let mut cmd = self.command(&["serve", "--bind", "127.0.0.1:0"]);
        cmd.env("BATON_TELEGRAM_TOKEN", TOKEN)
            .env("RUST_LOG", "info,baton=debug")
            .stdout(Stdio::null())
            .stderr(log);
        for (k, v) in env {
            cmd.env(k, v);
        }
        self.daemon = Some(cmd.spawn().unwrap());
        self.starts += 1;
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(addr) = std::fs::read_to_string(data.join("baton.addr")) {
                return format!("http://{}", addr.trim());
            }
            assert!(Instant::now() < deadline, "the daemon did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the daemon and waits until its bot polls.
    async fn start_polling(&mut self) -> String {
        let polls = self.server.calls_of("getUpdates").len();
        let base = self.start(&[]);
        self.server
            .wait_for("the bot to poll", WAIT, |s| {
                (s.calls_of("getUpdates").len() > polls).then_some(())
            })
            .await;
        base
    }

    /// Stops the daemon as a service manager does (SIGTERM) and waits for it.
    fn stop(&mut self) {
        if let Some(mut child) = self.daemon.take() {
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + WAIT;
            while child.try_wait().unwrap().is_none() {
                assert!(Instant::now() < deadline, "the daemon did not stop");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// The run ids in the store, through the CLI.
    fn runs(&self) -> Vec<Value> {
        let out = self.command(&["runs", "--json"]).output().unwrap();
        assert!(out.status.success(), "{out:?}");
        serde_json::from_slice::<Vec<Value>>(&out.stdout).unwrap()
    }

    fn run_status(&self, run: &str) -> String {
        let out = self.command(&["show", run, "--json"]).output().unwrap();
        assert!(out.status.success(), "{out:?}");
        let rec: Value = serde_json::from_slice(&out.stdout).unwrap();
        rec["status"].as_str().unwrap().to_string()
    }

    /// Ada types `text` in `chat` and the bot's reply containing `needle` arrives.
    async fn say(&self, chat: i64, text: &str, needle: &str) -> Shown {
        let before = self.server.messages(chat).len();
        self.server.send_text(chat, ADA, text);
        let needle = needle.to_string();
        self.server
            .wait_for(&format!("a reply to {text:?} with {needle:?}"), WAIT, |s| {
                s.messages(chat)
                    .into_iter()
                    .skip(before)
                    .find(|m| m.text.contains(&needle))
            })
            .await
    }

    /// Starts `workflow` from `chat`; returns the run id.
    async fn start_run(&self, chat: i64, text: &str) -> String {
        let reply = self.say(chat, text, "Started run_").await;
        run_id(&reply.text)
    }

    /// The run's status message in `chat` once it offers `label`.
    async fn status_with(&self, chat: i64, run: &str, label: &str) -> Shown {
        let head = format!("· {run}");
        self.server
            .wait_for(
                &format!("{run}'s status message in {chat} with {label}"),
                WAIT,
                |s| {
                    s.messages(chat)
                        .into_iter()
                        .find(|m| m.text.contains(&head) && m.button(label).is_some())
                },
            )
            .await
    }

    /// The run's status messages in `chat` (one is the goal).
    fn status_messages(&self, chat: i64, run: &str) -> Vec<Shown> {
        let head = format!("· {run}");
        self.server
            .messages(chat)
            .into_iter()
            .filter(|m| m.text.contains(&head))
            .collect()
    }

    /// Presses `label` on `message` as `user`, and returns the bot's answer.
    async fn press(&self, message: &Shown, user: u64, label: &str) -> String {
        let data = message.button(label).expect("the button is there");
        self.press_data(message.chat, message.id, user, &data).await
    }

    async fn press_data(&self, chat: i64, message: i64, user: u64, data: &str) -> String {
        let query = self.server.press(chat, user, message, data);
        self.server
            .wait_for(&format!("the answer to {data}"), WAIT, |s| {
                s.answer_to(&query)
            })
            .await
    }

    async fn wait_status(&self, run: &str, status: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            let now = self.run_status(run);
            if now == status {
                return;
            }
            assert!(Instant::now() < deadline, "{run} is {now}, not {status}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(self.log()).unwrap_or_default()
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Some(mut child) = self.daemon.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn run_id(text: &str) -> String {
    let start = text.find("run_").expect("a run id");
    text[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect()
}

/// Files under `dir` whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if std::fs::read(&path)
                .is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle.as_bytes()))
            {
                found.push(path);
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_a_run_approve_it_and_press_again() {
    let mut env = Env::new().await;
    env.start_polling().await;
    // The menu is registered and a stale webhook removed before polling.
    let menu = env.server.calls_of("setMyCommands");
    assert_eq!(menu.len(), 1);
    let names: Vec<&str> = menu[0].body["commands"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["command"].as_str().unwrap())
        .collect();
    for name in ["run", "runs", "status", "approve", "retry", "rollback"] {
        assert!(names.contains(&name), "{names:?}");
    }
    assert_eq!(env.server.calls_of("deleteWebhook").len(), 1);

    env.say(CHAT, "/workflows", "gate-check").await;
    // `-` and `_` are alike in a workflow's name.
    let run = env.start_run(CHAT, "/run gate_check").await;
    let status = env.status_with(CHAT, &run, "Approve").await;
    assert_eq!(status.labels(), ["Approve", "Reject"]);
    assert!(status.text.contains("✅ Build"), "{}", status.text);
    assert!(status.text.contains("approval"), "{}", status.text);
    assert_eq!(env.run_status(&run), "waiting");

    let answer = env.press(&status, ADA, "Approve").await;
    assert_eq!(answer, "Approve: done.");
    env.wait_status(&run, "completed").await;
    // The same message is edited to the end, without buttons.
    let done = env
        .server
        .wait_for("the status message to say complete", WAIT, |s| {
            s.messages(CHAT)
                .into_iter()
                .find(|m| m.id == status.id && m.text.contains("Workflow complete!"))
        })
        .await;
    assert!(done.labels().is_empty(), "{:?}", done.markup);
    assert_eq!(env.status_messages(CHAT, &run).len(), 1);

    // A second press of the same button does nothing and says so.
    let again = env.press(&status, ADA, "Approve").await;
    assert!(again.starts_with("Already approved"), "{again}");
    assert_eq!(env.run_status(&run), "completed");

    // `/runs` lists it, `/status` shows it.
    env.say(CHAT, "/runs", &run).await;
    env.say(CHAT, &format!("/status {run}"), "Workflow complete!")
        .await;
    // The approval is recorded as the Telegram user's.
    let out = env
        .command(&["show", &run, "--events", "--json"])
        .output()
        .unwrap();
    let events = String::from_utf8_lossy(&out.stdout);
    assert!(events.contains("telegram:1001"), "{events}");

    env.stop();
    let leaks = files_containing(env.dir.path(), TOKEN);
    assert!(leaks.is_empty(), "the token is in {leaks:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_a_failure() {
    let mut env = Env::new().await;
    env.start_polling().await;
    let flag = env.dir.path().join("flag");
    let run = env
        .start_run(CHAT, &format!("/run flaky flag={}", flag.display()))
        .await;
    let status = env.status_with(CHAT, &run, "Retry").await;
    assert_eq!(status.labels(), ["Retry", "Skip", "Abort", "Rollback"]);
    assert!(status.text.contains("❌"), "{}", status.text);
    assert_eq!(env.press(&status, ADA, "Retry").await, "Retry: done.");
    env.wait_status(&run, "completed").await;
    env.server
        .wait_for("the message to say complete", WAIT, |s| {
            s.messages(CHAT)
                .into_iter()
                .find(|m| m.id == status.id && m.text.contains("Workflow complete!"))
        })
        .await;
    // The Retry button of the old state is stale now.
    let again = env.press(&status, ADA, "Retry").await;
    assert!(again.starts_with("Already retried"), "{again}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_is_refused_and_not_logged_verbatim() {
    let mut env = Env::new().await;
    env.start_polling().await;
    env.server
        .send_text(CHAT + 1, EVE, "/run gate-check xyzzy_private=plugh");
    env.server.reply_containing(CHAT + 1, "may not use").await;
    // Ada's run: Eve's press on its button is refused too.
    let run = env.start_run(CHAT, "/run gate-check").await;
    let status = env.status_with(CHAT, &run, "Approve").await;
    let answer = env.press(&status, EVE, "Approve").await;
    assert!(answer.contains("may not use"), "{answer}");
    assert_eq!(env.run_status(&run), "waiting");
    let runs = env.runs();
    assert_eq!(runs.len(), 1, "only Ada's run: {runs:?}");
    let log = env.log_text();
    assert!(log.contains("refused a command"), "{log}");
    assert!(log.contains("6666"), "the refusal names the user id: {log}");
    assert!(
        !log.contains("xyzzy_private"),
        "the text is not logged: {log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_short_answer_and_starts_nothing() {
    let mut env = Env::new().await;
    env.start_polling().await;
    env.say(CHAT, "/run no-such-flow", "Unknown workflow `no-such-flow`")
        .await;
    env.say(CHAT, "/run gate-check =oops", "the key must be a name")
        .await;
    env.say(CHAT, "/run gate-check loose", "expected key=value")
        .await;
    env.say(CHAT, "/approve", "no runs yet").await;
    env.say(
        CHAT,
        "/approve run_0000000000nosuchrun000000",
        "unknown run",
    )
    .await;
    env.say(CHAT, "/rollback sideways", "expected soft, hard")
        .await;
    assert!(env.runs().is_empty());

    let run = env.start_run(CHAT, "/run gate-check").await;
    let status = env.status_with(CHAT, &run, "Approve").await;
    // Callback data that does not parse.
    let answer = env.press_data(CHAT, status.id, ADA, "x:y").await;
    assert!(answer.starts_with("Refused"), "{answer}");
    // Another chat's run: its button data pressed elsewhere, and a command naming it.
    let data = status.button("Approve").unwrap();
    let answer = env.press_data(OTHER_CHAT, 1, ADA, &data).await;
    assert!(answer.contains("not one of this chat's runs"), "{answer}");
    env.say(
        OTHER_CHAT,
        &format!("/approve {run}"),
        "not one of this chat's runs",
    )
    .await;
    assert_eq!(env.run_status(&run), "waiting");
    // `/approve` with no run means this chat's latest.
    env.say(CHAT, "/approve", "approve sent").await;
    env.wait_status(&run, "completed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_is_waited_out() {
    let mut env = Env::new().await;
    env.start_polling().await;
    // The status message's first send is refused with retry_after = 2.
    env.server.too_many_requests("sendMessage", 1, 2);
    env.server.send_text(CHAT, ADA, "/run gate-check");
    let reply = env.server.reply_containing(CHAT, "Started run_").await;
    let run = run_id(&reply.text);
    env.status_with(CHAT, &run, "Approve").await;
    // The refused message was sent again once retry_after had passed, not before. A status
    // message goes again as the run stands then (updates coalesce), so its text may have moved
    // on: it is the next send of that run's status.
    let sends = env.server.calls_of("sendMessage");
    let refused = &sends[0];
    let head = format!("· {run}");
    let refused_text = refused.body["text"].as_str().unwrap_or_default();
    let again = sends[1..]
        .iter()
        .find(|c| {
            let text = c.body["text"].as_str().unwrap_or_default();
            if refused_text.contains(&head) {
                text.contains(&head)
            } else {
                text == refused_text
            }
        })
        .expect("the refused message was sent again");
    assert!(
        again.at - refused.at >= Duration::from_millis(1900),
        "sent again {:?} after the 429",
        again.at - refused.at
    );
    assert_eq!(env.status_messages(CHAT, &run).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cli_run_that_waits_shows_in_the_notify_chat() {
    let mut env = Env::new().await;
    env.start_polling().await;
    let out = env
        .command(&["run", "gate-check", "--detach"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let run = run_id(&String::from_utf8_lossy(&out.stderr));
    let status = env.status_with(GROUP, &run, "Approve").await;
    // Ada's private chat started nothing: it hears nothing.
    assert!(env.status_messages(CHAT, &run).is_empty());
    assert_eq!(env.press(&status, ADA, "Approve").await, "Approve: done.");
    env.wait_status(&run, "completed").await;
    env.server
        .wait_for("the group's message to say complete", WAIT, |s| {
            s.messages(GROUP)
                .into_iter()
                .find(|m| m.id == status.id && m.text.contains("Workflow complete!"))
        })
        .await;
    assert_eq!(env.status_messages(GROUP, &run).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_edits_the_same_status_message() {
    let mut env = Env::new().await;
    env.start_polling().await;
    let run = env.start_run(CHAT, "/run gate-check").await;
    let status = env.status_with(CHAT, &run, "Approve").await;
    env.stop();
    env.start_polling().await;
    // The button drawn by the first daemon works with the second.
    assert_eq!(env.press(&status, ADA, "Approve").await, "Approve: done.");
    env.wait_status(&run, "completed").await;
    env.server
        .wait_for("the first message to say complete", WAIT, |s| {
            s.messages(CHAT)
                .into_iter()
                .find(|m| m.id == status.id && m.text.contains("Workflow complete!"))
        })
        .await;
    assert_eq!(env.status_messages(CHAT, &run).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_mode_checks_the_secret() {
    let server = TelegramServer::start(TOKEN).await;
    let mut env = Env::with_server(
        server,
        "mode = \"webhook\"\nwebhook_url = \"https://baton.example/webhooks/telegram\"",
    )
    .await;
    let secret = "hook_Secret-123";
    let base = env.start(&[("BATON_TELEGRAM_WEBHOOK_SECRET", secret)]);
    let set = env
        .server
        .wait_for("setWebhook", WAIT, |s| {
            s.calls_of("setWebhook").into_iter().next()
        })
        .await;
    assert_eq!(set.body["secret_token"], secret);
    assert_eq!(set.body["url"], "https://baton.example/webhooks/telegram");
    assert!(env.server.calls_of("getUpdates").is_empty());

    let update = serde_json::json!({
        "update_id": 1,
        "message": {
            "message_id": 7, "date": 1_700_000_000,
            "chat": { "id": CHAT, "type": "private", "first_name": "Ada" },
            "from": { "id": ADA, "is_bot": false, "first_name": "Ada" },
            "text": "/run gate-check"
        }
    });
    let http = reqwest::Client::new();
    let url = format!("{base}/webhooks/telegram");
    for wrong in [None, Some("hook_Secret-124"), Some("")] {
        let mut req = http.post(&url).json(&update);
        if let Some(wrong) = wrong {
            req = req.header("X-Telegram-Bot-Api-Secret-Token", wrong);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 401, "secret {wrong:?}");
    }
    assert!(env.runs().is_empty(), "nothing ran on a wrong secret");
    let resp = http
        .post(&url)
        .header("X-Telegram-Bot-Api-Secret-Token", secret)
        .json(&update)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let reply = env.server.reply_containing(CHAT, "Started run_").await;
    let run = run_id(&reply.text);
    env.status_with(CHAT, &run, "Approve").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_api_is_retried_and_the_token_stays_out_of_the_log() {
    // Telegram is "down": the port is ours (no other test can take it meanwhile), and every
    // connection is closed at once, until the API comes back on the same listener.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (up_tx, mut up_rx) = tokio::sync::oneshot::channel::<()>();
    let down = tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = &mut up_rx => return listener,
                accepted = listener.accept() => drop(accepted),
            }
        }
    });
    let url = format!("http://{addr}");
    let dir_server = TelegramServer::placeholder(&url);
    let mut env = Env::with_server(dir_server, "").await;
    let base = env.start(&[]);
    // The daemon serves while the bot cannot reach Telegram.
    let deadline = Instant::now() + WAIT;
    while !env.log_text().contains("getMe failed") {
        assert!(
            Instant::now() < deadline,
            "no retry logged: {}",
            env.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let health = reqwest::get(format!("{base}/healthz")).await.unwrap();
    assert!(health.status().is_success());
    let out = env
        .command(&["run", "gate-check", "--detach"])
        .output()
        .unwrap();
    assert!(out.status.success(), "runs go on: {out:?}");

    // Telegram comes back: the bot resumes.
    up_tx.send(()).unwrap();
    let listener = down.await.unwrap();
    env.server = TelegramServer::serve(listener, TOKEN);
    env.server
        .wait_for("the bot to poll", Duration::from_secs(60), |s| {
            s.calls_of("getUpdates").into_iter().next()
        })
        .await;
    env.start_run(CHAT, "/run gate-check").await;
    env.stop();
    let log = env.log_text();
    assert!(log.contains("getMe failed"), "{log}");
    assert!(!log.contains(TOKEN), "the token is in the log: {log}");
    assert!(
        !log.contains("SECRET_token_value"),
        "part of the token is in the log: {log}"
    );
    let leaks = files_containing(env.dir.path(), TOKEN);
    assert!(leaks.is_empty(), "the token is in {leaks:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subject_fills_the_repo_and_issue_inputs() {
    let mut env = Env::new().await;
    env.start_polling().await;
    let run = env.start_run(CHAT, "/run issue-echo octo/hello#12").await;
    env.wait_status(&run, "completed").await;
    let out = env.command(&["show", &run, "--json"]).output().unwrap();
    let rec: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rec["input"]["repo"], "octo/hello");
    assert_eq!(rec["input"]["issue"], 12);
    env.say(CHAT, "/run gate-check octo/hello#12", "takes no repo")
        .await;
    assert_eq!(env.runs().len(), 1);
}
