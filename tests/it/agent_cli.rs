//! `baton agent run` as a user runs it: the real binary on a real git repository, offline
//! with the `patch` backend and against a scripted OpenAI-compatible server on loopback.

use std::path::Path;
use std::process::Output;

use crate::common_agent::*;
use serde_json::{json, Value};

const KEY: &str = "sk-cli-test-SECRET456";

const FIX_ADD: &str = "diff --git a/src/lib.rs b/src/lib.rs
--- a/src/lib.rs
+++ b/src/lib.rs
@@ -1,3 +1,3 @@
 pub fn add(a: i32, b: i32) -> i32 {
-    a - b
+    a + b
 }
";

/// Runs `baton` in an empty directory (no `config.toml` there), without provider variables
/// from the outer environment, plus `env`.
async fn baton(args: &[&str], env: &[(&str, &str)]) -> Output {
    let cwd = tempfile::tempdir().unwrap();
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_baton"));
    cmd.args(args)
        .current_dir(cwd.path())
        .env_remove("BATON_CONFIG");
    for var in [
        "OPENAI_API_KEY",
        "OPENAI_BASE_URL",
        "ANTHROPIC_API_KEY",
        "ANTHROPIC_BASE_URL",
    ] {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().copied());
    cmd.output().await.unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn read(repo: &Path, file: &str) -> String {
    std::fs::read_to_string(repo.join(file)).unwrap()
}

#[tokio::test]
async fn patch_backend_applies_the_task_diff_and_prints_json() {
    let repo = git_repo();
    let task = format!("Fix add\n\nThe sum is wrong.\n\n```diff\n{FIX_ADD}```\n");
    let repo_arg = repo.path().display().to_string();
    let out = baton(
        &[
            "agent",
            "run",
            "--repo",
            &repo_arg,
            "--task",
            &task,
            "--backend",
            "patch",
            "--json",
        ],
        &[],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert!(read(repo.path(), "src/lib.rs").contains("a + b"));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["backend"], "patch");
    assert_eq!(report["outcome"]["status"], "finished");
    assert_eq!(report["changes"][0]["path"], "src/lib.rs");
    assert_eq!(report["changes"][0]["kind"], "modified");
    assert!(report["plan"].is_object(), "{report}");
    assert!(report["total_usage"]["turns"].is_u64());
    assert!(report["transcript"]["entries"].is_array());

    // The same from a file, in text form: the diff no longer applies, which is bad input.
    let file = repo.path().join("task.md");
    std::fs::write(&file, &task).unwrap();
    let at_file = format!("@{}", file.display());
    let out = baton(
        &["agent", "run", "--repo", &repo_arg, "--task", &at_file],
        &[],
    )
    .await;
    assert_eq!(out.status.code(), Some(2), "stdout: {}", text(&out.stdout));
    assert!(
        text(&out.stderr).contains("src/lib.rs"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test]
async fn bad_input_exits_2() {
    let repo = git_repo();
    let repo_arg = repo.path().display().to_string();
    let missing = repo.path().join("nope").display().to_string();
    let cases: [(&[&str], &str); 4] = [
        (
            &["agent", "run", "--repo", &missing, "--task", "x"],
            "not a directory",
        ),
        (
            &[
                "agent",
                "run",
                "--repo",
                &repo_arg,
                "--task",
                "@/nonexistent/task.md",
            ],
            "--task @",
        ),
        (
            &[
                "agent",
                "run",
                "--repo",
                &repo_arg,
                "--task",
                "x",
                "--backend",
                "magic",
            ],
            "magic",
        ),
        (
            &[
                "agent",
                "run",
                "--repo",
                &repo_arg,
                "--task",
                "x",
                "--backend",
                "openai",
            ],
            "agent.model",
        ),
    ];
    for (args, expected) in cases {
        let out = baton(args, &[]).await;
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(
            text(&out.stderr).contains(expected),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
}

#[tokio::test]
async fn openai_backend_against_a_scripted_server_never_prints_the_key() {
    let repo = git_repo();
    let plan = json!({"steps": ["fix add"], "files_to_touch": ["src/lib.rs"]}).to_string();
    let server = ScriptServer::start(vec![
        Scripted::ok(oa_calls(&[("plan", &plan)])),
        Scripted::ok(oa_calls(&[(
            "edit_file",
            r#"{"path": "src/lib.rs", "old_text": "a - b", "new_text": "a + b"}"#,
        )])),
        Scripted::ok(oa_calls(&[(
            "run_command",
            &json!({"command": format!("echo {KEY}; env")}).to_string(),
        )])),
        Scripted::ok(oa_calls(&[(
            "finish",
            &json!({"summary": format!("fixed add with {KEY}")}).to_string(),
        )])),
    ])
    .await;
    let base = format!("{}/v1", server.base);
    let repo_arg = repo.path().display().to_string();
    let env = [("OPENAI_BASE_URL", base.as_str()), ("OPENAI_API_KEY", KEY)];
    let args = [
        "agent",
        "run",
        "--repo",
        &repo_arg,
        "--task",
        "add() subtracts",
        "--backend",
        "openai",
        "--model",
        "gpt-test",
    ];
    let out = baton(&args, &env).await;
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    assert!(
        !stdout.contains(KEY) && !stderr.contains(KEY),
        "the key leaked:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("finished: fixed add with [REDACTED]"),
        "{stdout}"
    );
    assert!(stdout.contains("M src/lib.rs"), "{stdout}");
    assert!(read(repo.path(), "src/lib.rs").contains("a + b"));

    // The script is used up: the server refuses the next request, the run fails (exit 1)
    // and the JSON-mode error output does not carry the key either.
    let mut args = args.to_vec();
    args.push("--json");
    let out = baton(&args, &env).await;
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(
        out.status.code(),
        Some(1),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    assert!(
        !stdout.contains(KEY) && !stderr.contains(KEY),
        "the key leaked:\n{stdout}\n{stderr}"
    );

    let requests = server.requests();
    assert_eq!(
        requests.len(),
        5,
        "four scripted answers and one refused request"
    );
    assert_eq!(
        requests[0].headers["authorization"],
        format!("Bearer {KEY}")
    );
    assert_eq!(requests[0].body["model"], "gpt-test");
}

/// A workflow that makes a repository with a `shell` step, implements a task with
/// `agent.implement` (patch backend), then fixes with `agent.fix` given the report; and
/// `baton show --transcript` prints what the steps stored.
#[tokio::test]
async fn agent_steps_in_a_workflow_and_show_transcript() {
    let data = tempfile::tempdir().unwrap();
    let wf = data.path().join("implement.toml");
    std::fs::write(
        &wf,
        r#"id = "implement"
[input]
task = { required = true }

[[steps]]
id = "clone"
action = "shell"
with = { run = "mkdir -p repo/src && cd repo && printf 'pub fn add(a: i32, b: i32) -> i32 {\n    a - b\n}\n' > src/lib.rs && git init -q && git add . && git -c user.name=t -c user.email=t@t commit -qm init" }

[[steps]]
id = "implement"
action = "agent.implement"
with = { task = "{{ input.task }}" }

[[steps]]
id = "fix"
action = "agent.fix"
with = { report = "{{ steps.implement.output }}", failure = "test add ... FAILED", dir = "repo" }
on_failure = "skip"
"#,
    )
    .unwrap();
    let data_dir = data.path().join("data").display().to_string();
    let task = format!("Fix add\n\n```diff\n{FIX_ADD}```\n");
    let input = format!("task={task}");
    let wf_arg = wf.display().to_string();
    let env = [("BATON_DATA_DIR", data_dir.as_str())];
    let out = baton(&["run", &wf_arg, "--input", &input, "--json"], &env).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout: {}\nstderr: {}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let run: Value = serde_json::from_slice(&out.stdout).unwrap();
    let steps = run["steps"].as_array().unwrap();
    let implement = &steps[1]["output"];
    assert_eq!(implement["outcome"]["status"], "finished", "{run}");
    assert_eq!(implement["changes"][0]["path"], "src/lib.rs");
    // The patch backend cannot fix failing tests: the step fails without retries, skipped.
    assert_eq!(steps[2]["status"], "skipped", "{run}");
    assert!(
        steps[2]["error"]
            .as_str()
            .unwrap()
            .contains("patch backend"),
        "{run}"
    );
    // The change was journaled with its content from before.
    let change = run["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["change_type"] == "file_modify")
        .unwrap_or_else(|| panic!("no file_modify change: {run}"));
    assert_eq!(change["change_data"]["path"], "src/lib.rs");
    assert!(change["change_data"]["before"]
        .as_str()
        .unwrap()
        .contains("a - b"));

    let id = run["id"].as_str().unwrap();
    let out = baton(&["show", id, "--transcript"], &env).await;
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        stdout.starts_with("== step implement (completed) =="),
        "{stdout}"
    );
    assert!(stdout.contains("note:"), "{stdout}");
}
