//! Secrets against the real binary. `baton serve` given secrets in its environment and as
//! `_FILE`s: none of them is in its `/proc/<pid>/environ` or in what a step sees, another
//! process of its user cannot read that file at all (it is not dumpable), and each secret still works (the admin
//! token on the API, the webhook secret on a signed delivery, the Telegram token at the Bot API).
//! A workflow's `token_env` given as a `_FILE` reaches git. A bad `_FILE` stops baton with a
//! message naming the variable and the path.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::{b64, files_containing, git, HttpGit, Remote};
use crate::common_telegram::TelegramServer;
use baton::web::webhook::WebhookSecret;
use serde_json::{json, Value};

use crate::BATON;

/// Given in the daemon's environment.
const GITHUB_TOKEN: &str = "ghp_FromTheEnvironmentNoStepMaySee";
const OPENAI_KEY: &str = "sk-from-the-environment-no-step-may-see";
const DATABASE_URL: &str = "postgres://baton:db-password-no-step-may-see@127.0.0.1:9/baton";
/// A variable baton knows only by its look (as a workflow's `token_env` would name it).
const DEPLOY_TOKEN: &str = "deploy-token-no-step-may-see";
/// Given as files.
const ADMIN_TOKEN: &str = "admin-token-from-a-file-0123456789abcdef";
const WEBHOOK_SECRET: &str = "webhook-secret-from-a-file";
const TELEGRAM_TOKEN: &str = "987654321:AAH-telegram-token-from-a-file";
const ANTHROPIC_KEY: &str = "sk-ant-from-a-file-no-step-may-see";

/// Every secret value the daemon is given.
const SECRETS: &[&str] = &[
    GITHUB_TOKEN,
    OPENAI_KEY,
    DATABASE_URL,
    "db-password-no-step-may-see",
    DEPLOY_TOKEN,
    ADMIN_TOKEN,
    WEBHOOK_SECRET,
    TELEGRAM_TOKEN,
    ANTHROPIC_KEY,
];

/// The Telegram user (and private chat) the bot obeys.
const ADA: u64 = 1001;

const WAIT: Duration = Duration::from_secs(30);

/// The user without privileges a root test runs processes as.
const NOBODY: libc::uid_t = 65534;

/// A `baton` command with only the environment the test gives it.
fn baton(dir: &Path, env: &[(&str, String)]) -> Command {
    baton_from(Path::new(BATON), dir, env)
}

/// [`baton`], with the binary at `program`.
fn baton_from(program: &Path, dir: &Path, env: &[(&str, String)]) -> Command {
    let mut command = Command::new(program);
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", dir)
        .env("BATON_DATA_DIR", dir.join("data"))
        .env("BATON_CONFIG", dir.join("config.toml"))
        .env("RUST_LOG", "info")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .current_dir(dir)
        .stdin(Stdio::null());
    command
}

/// `baton serve`, killed and reaped on drop.
struct Serve {
    child: Child,
    base: String,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Serve {
    fn start(dir: &Path, env: &[(&str, String)]) -> Serve {
        std::fs::create_dir_all(dir.join("data")).unwrap();
        Serve::spawn(baton(dir, env), dir)
    }

    /// Starts `command` (a [`baton`] for `dir`) as `baton serve` and waits until it listens.
    // The child is owned by `Serve`, whose `Drop` kills and reaps it.
    #[allow(clippy::zombie_processes)]
    fn spawn(mut command: Command, dir: &Path) -> Serve {
        let data = dir.join("data");
        let log = dir.join("serve.log");
        let mut child = command
            .args(["serve", "--bind", "127.0.0.1:0"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(addr) = std::fs::read_to_string(data.join("baton.addr")) {
                return Serve {
                    child,
                    base: format!("http://{}", addr.trim()),
                };
            }
            if let Some(status) = child.try_wait().unwrap() {
                panic!(
                    "the daemon exited ({status}): {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            assert!(Instant::now() < deadline, "the daemon did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// `path` with `text` in it, mode 0600 as a secret file would be.
fn secret_file(dir: &Path, name: &str, text: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path.display().to_string()
}

/// Runs `command` as `nobody` when the test is root, as the test's user otherwise: a user
/// without privileges, whose processes read a dumpable process of their user's
/// `/proc/<pid>/environ` and not a non-dumpable one's. (Root reads both.)
fn unprivileged(command: &mut Command) -> &mut Command {
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        command.pre_exec(|| {
            if libc::geteuid() == 0
                && (libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setgid(NOBODY) != 0
                    || libc::setuid(NOBODY) != 0)
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    }
}

/// Whether an unprivileged `cat` reads `/proc/<pid>/environ`.
fn environ_readable(pid: u32) -> bool {
    unprivileged(Command::new("cat").arg(format!("/proc/{pid}/environ")))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success()
}

#[test]
fn serve_is_not_dumpable() {
    use std::os::unix::fs::PermissionsExt;
    // Everything the daemon needs where `nobody` may read and write it, its binary included
    // (the build's directory may be closed to other users).
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let program = dir.join("baton");
    if std::fs::hard_link(BATON, &program).is_err() {
        std::fs::copy(BATON, &program).unwrap();
    }
    std::fs::write(dir.join("config.toml"), "").unwrap();
    let data = dir.join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o777)).unwrap();
    let env = [("OPENAI_API_KEY", OPENAI_KEY.to_string())];
    let mut command = baton_from(&program, dir, &env);
    unprivileged(&mut command);
    let serve = Serve::spawn(command, dir);

    let mut dumpable = Command::new("sleep");
    let mut dumpable = unprivileged(dumpable.arg("30")).spawn().unwrap();
    let control = environ_readable(dumpable.id());
    let _ = dumpable.kill();
    let _ = dumpable.wait();
    assert!(
        control,
        "a process of the same user could not read a dumpable one's environ"
    );
    assert!(
        !environ_readable(serve.pid()),
        "a process of the daemon's user reads its environ: it is dumpable"
    );
}

fn assert_holds_no_secret(what: &str, text: &str) {
    for secret in SECRETS {
        assert!(!text.contains(secret), "{what} holds {secret:?}:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_holds_its_secrets_in_memory_only_and_each_still_works() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let telegram = TelegramServer::start(TELEGRAM_TOKEN).await;
    std::fs::write(
        dir.join("config.toml"),
        format!(
            "[forge]\nkind = \"local\"\nroot = {:?}\n\n[telegram]\nallowed_users = [{ADA}]\napi_url = {:?}\n",
            dir.join("forge"),
            telegram.url
        ),
    )
    .unwrap();
    let files = dir.join("credentials");
    std::fs::create_dir_all(&files).unwrap();
    let env = [
        ("GITHUB_TOKEN", GITHUB_TOKEN.to_string()),
        ("OPENAI_API_KEY", OPENAI_KEY.to_string()),
        ("BATON_DATABASE_URL", DATABASE_URL.to_string()),
        ("DEPLOY_TOKEN", DEPLOY_TOKEN.to_string()),
        (
            "BATON_ADMIN_TOKEN_FILE",
            secret_file(&files, "admin", &format!("{ADMIN_TOKEN}\n")),
        ),
        (
            "BATON_GITHUB_WEBHOOK_SECRET_FILE",
            secret_file(&files, "webhook", &format!("{WEBHOOK_SECRET}\n")),
        ),
        (
            "BATON_TELEGRAM_TOKEN_FILE",
            secret_file(&files, "telegram", &format!("{TELEGRAM_TOKEN}\n")),
        ),
        (
            "ANTHROPIC_API_KEY_FILE",
            secret_file(&files, "anthropic", ANTHROPIC_KEY),
        ),
    ];
    let serve = Serve::start(dir, &env);
    let pid = serve.pid();

    // The pid is still the daemon's: executing itself again kept it.
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    assert!(cmdline.contains("serve --bind 127.0.0.1:0"), "{cmdline}");

    // Its initial environment, which no `remove_var` changes, holds no secret. Root (this test
    // in a container, a step running as root) reads it although the process is not dumpable.
    match std::fs::read(format!("/proc/{pid}/environ")) {
        Ok(environ) => {
            let environ = String::from_utf8_lossy(&environ).replace('\0', "\n");
            assert!(environ.contains("BATON_DATA_DIR="), "{environ}");
            assert_holds_no_secret("/proc/<daemon>/environ", &environ);
        }
        Err(e) => {
            // Not root: the non-dumpable daemon refuses the read (see `serve_is_not_dumpable`).
            assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied, "{e}");
            // SAFETY: geteuid has no preconditions.
            assert_ne!(unsafe { libc::geteuid() }, 0, "root was refused: {e}");
        }
    }

    // The admin token from BATON_ADMIN_TOKEN_FILE opens the API; another does not.
    let http = reqwest::Client::new();
    let runs = |token: &str| {
        http.get(format!("{}/api/runs", serve.base))
            .bearer_auth(token)
            .send()
    };
    assert_eq!(runs(ADMIN_TOKEN).await.unwrap().status().as_u16(), 200);
    assert_eq!(runs("not-the-token").await.unwrap().status().as_u16(), 401);

    // The webhook secret from its file verifies a signed delivery and refuses another's.
    let body = br#"{"zen": "Keep it logically awesome.", "hook_id": 1}"#;
    let deliver = |signature: String, delivery: &'static str| {
        http.post(format!("{}/webhooks/github", serve.base))
            .header("content-type", "application/json")
            .header("x-github-event", "ping")
            .header("x-github-delivery", delivery)
            .header("x-hub-signature-256", signature)
            .body(body.to_vec())
            .send()
    };
    let signed = WebhookSecret::new(WEBHOOK_SECRET).unwrap().sign(body);
    let answer = deliver(signed, "ping-1").await.unwrap();
    assert_eq!(answer.status().as_u16(), 200);
    assert_eq!(answer.json::<Value>().await.unwrap()["status"], "pong");
    let forged = WebhookSecret::new("another secret").unwrap().sign(body);
    assert_eq!(
        deliver(forged, "ping-2").await.unwrap().status().as_u16(),
        401
    );

    // The Telegram token from its file reaches the Bot API: the bot answers a command.
    telegram.send_text(ADA as i64, ADA, "/help");
    telegram
        .reply_containing(ADA as i64, "/run <workflow>")
        .await;

    // A step reads the daemon's initial environment and its own: no secret in either.
    let step = json!({ "id": "peek", "steps": [ { "id": "peek", "action": "shell", "with": {
        "run": format!("tr '\\0' '\\n' < /proc/{pid}/environ; echo ---; env"),
    } } ] });
    let answer: Value = http
        .post(format!("{}/api/runs?wait=30", serve.base))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({ "workflow": "peek", "definition": step }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let run = answer["id"].as_str().unwrap_or_else(|| panic!("{answer}"));
    let record = wait_for_end(&http, &serve.base, run).await;
    let stdout = record["steps"][0]["output"]["stdout"]
        .as_str()
        .unwrap_or_else(|| panic!("no output: {record}"))
        .to_string();
    assert!(stdout.contains("PATH="), "{stdout}");
    if unsafe { libc::geteuid() } == 0 {
        // As root the step could read the daemon's environ: the check above is not vacuous.
        assert!(
            stdout
                .split("---")
                .next()
                .unwrap()
                .contains("BATON_DATA_DIR="),
            "{stdout}"
        );
    }
    assert_holds_no_secret("a step's output", &stdout);

    // Nothing the daemon wrote holds a secret but admin.token, which holds its own.
    drop(serve);
    let log = std::fs::read_to_string(dir.join("serve.log")).unwrap();
    assert_holds_no_secret("the daemon's log", &log);
    for secret in SECRETS.iter().filter(|s| **s != ADMIN_TOKEN) {
        let hits = files_containing(&dir.join("data"), secret.as_bytes());
        assert!(hits.is_empty(), "{secret:?} found in {hits:?}");
    }
}

/// Polls the run until it is no longer running, then returns its record.
async fn wait_for_end(http: &reqwest::Client, base: &str, run: &str) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let record: Value = http
            .get(format!("{base}/api/runs/{run}"))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        match record["status"].as_str() {
            Some("completed") => return record,
            Some("failed") => panic!("the step failed: {record:#}"),
            _ => {}
        }
        assert!(Instant::now() < deadline, "the run did not end: {record:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn failed_with(out: &Output, needles: &[&str], hidden: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    for needle in needles {
        assert!(stderr.contains(needle), "{needle:?} not in: {stderr}");
    }
    for value in hidden {
        assert!(!stderr.contains(value), "{value:?} shown in: {stderr}");
    }
}

#[test]
fn a_bad_secret_file_stops_baton_naming_the_variable_and_the_path() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::write(dir.join("config.toml"), "").unwrap();
    let missing = dir.join("no-such-file").display().to_string();

    // `baton serve` does not start.
    let out = baton(dir, &[("BATON_ADMIN_TOKEN_FILE", missing.clone())])
        .args(["serve", "--bind", "127.0.0.1:0"])
        .output()
        .unwrap();
    failed_with(
        &out,
        &["BATON_ADMIN_TOKEN_FILE", &missing, "cannot read"],
        &[],
    );
    assert!(!dir.join("data").join("baton.addr").exists());

    // Every command refuses: an empty file, two sources that disagree.
    let empty = secret_file(dir, "empty", "\n");
    let out = baton(dir, &[("OPENAI_API_KEY_FILE", empty.clone())])
        .arg("runs")
        .output()
        .unwrap();
    failed_with(&out, &["OPENAI_API_KEY_FILE", &empty, "is empty"], &[]);
    let other = secret_file(dir, "other", "value-from-the-file\n");
    let out = baton(
        dir,
        &[
            ("GITHUB_TOKEN", "value-from-the-environment".to_string()),
            ("BATON_GITHUB_TOKEN_FILE", other.clone()),
        ],
    )
    .arg("runs")
    .output()
    .unwrap();
    failed_with(
        &out,
        &["GITHUB_TOKEN and BATON_GITHUB_TOKEN_FILE", &other],
        &["value-from-the-file", "value-from-the-environment"],
    );
}

const CLONE: &str = r#"
id = "clone"
[input]
url = { required = true }
[[steps]]
id = "clone"
action = "git.clone"
with = { url = "{{ input.url }}", base = "main", token_env = "E2E_CLONE_CRED" }
"#;

#[test]
fn a_workflow_token_from_a_file_reaches_git_by_header_only() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::write(dir.join("config.toml"), "").unwrap();
    std::fs::write(dir.join("clone.toml"), CLONE).unwrap();
    let served = dir.join("served");
    std::fs::create_dir_all(&served).unwrap();
    let _remote = Remote::new(&served, &[("README.md", "hello\n")]);
    const TOKEN: &str = "ghs_WorkflowTokenFromAFileNeverShown";
    let header = b64(format!("x-access-token:{TOKEN}").as_bytes());
    let server = HttpGit::start(&served, format!("Basic {header}"));
    // A name that does not look secret, given as a file; and a secret in the environment, so
    // that the run happens in the re-executed image, which reads the file when the step asks.
    let env = [
        (
            "E2E_CLONE_CRED_FILE",
            secret_file(dir, "cred", &format!("{TOKEN}\n")),
        ),
        ("GITHUB_TOKEN", GITHUB_TOKEN.to_string()),
    ];
    let out = baton(dir, &env)
        .args(["run", "clone.toml", "--json", "--input"])
        .arg(format!("url={}", server.url("remote.git")))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let record: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(record["status"], "completed", "{record:#}");
    let clone = dir
        .join("data/workspaces")
        .join(record["id"].as_str().unwrap())
        .join("repo");
    assert_eq!(git(&clone, &["show", "HEAD:README.md"]), "hello");
    assert!(
        server
            .seen_auth
            .lock()
            .unwrap()
            .contains(&format!("Basic {header}")),
        "the token did not arrive as a header"
    );
    for needle in [TOKEN, header.as_str(), GITHUB_TOKEN] {
        assert!(!stdout.contains(needle) && !stderr.contains(needle));
        let hits = files_containing(&dir.join("data"), needle.as_bytes());
        assert!(hits.is_empty(), "{needle:?} found in {hits:?}");
    }
}
