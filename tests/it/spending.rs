//! `[limits] daily_cost_usd` with the real binary and a scripted OpenAI-compatible server on
//! loopback that reports token usage: the first run's agent spends past the cap, the second
//! run on the same repository is stopped before any model request (`on_cap = "fail"`), a run
//! on another repository still goes ahead, and `baton spending` / `baton runs` show what each
//! repository spent.

use std::path::Path;
use std::process::Output;

use crate::common_agent::*;
use serde_json::{json, Value};

const KEY: &str = "sk-spend-test-SECRET789";

const WORKFLOW: &str = r#"id = "implement"
[input]
repo = { required = true }
task = { required = true }

[[steps]]
id = "clone"
action = "shell"
with = { run = "rm -rf repo && mkdir -p repo/src && cd repo && printf 'pub fn add(a: i32, b: i32) -> i32 {\n    a - b\n}\n' > src/lib.rs && git init -q && git add . && git -c user.name=t -c user.email=t@t commit -qm init" }

[[steps]]
id = "implement"
action = "agent.implement"
with = { task = "{{ input.task }}" }
"#;

async fn baton(root: &Path, args: &[&str], base: &str) -> Output {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_baton"));
    cmd.args(args)
        .current_dir(root)
        .env("BATON_CONFIG", root.join("config.toml"))
        .env("BATON_DATA_DIR", root.join("data"))
        .env("OPENAI_BASE_URL", base)
        .env("OPENAI_API_KEY", KEY)
        .env_remove("ANTHROPIC_API_KEY")
        .env_remove("ANTHROPIC_BASE_URL");
    cmd.output().await.unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

async fn run(root: &Path, repo: &str, base: &str) -> Value {
    let wf = root.join("implement.toml").display().to_string();
    let repo = format!("repo={repo}");
    let args = [
        "run",
        &wf,
        "--input",
        &repo,
        "--input",
        "task=add() subtracts",
        "--json",
    ];
    let out = baton(root, &args, base).await;
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}\n{}", text(&out.stdout), text(&out.stderr)))
}

#[tokio::test]
async fn a_daily_cap_stops_the_second_of_two_runs_that_cross_it() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    std::fs::write(root.join("implement.toml"), WORKFLOW).unwrap();
    // $0.10 per prompt token and per completion token: each request (10 + 5 tokens) costs
    // $1.50, and the first run makes three.
    std::fs::write(
        root.join("config.toml"),
        r#"[agent]
backend = "openai"
model = "gpt-test"
[agent.prices.gpt-test]
input_per_mtok = 100000.0
output_per_mtok = 100000.0

[limits]
daily_cost_usd = 2.0
monthly_cost_usd = 100.0
on_cap = "fail"
"#,
    )
    .unwrap();
    let plan = json!({"steps": ["fix add"], "files_to_touch": ["src/lib.rs"]}).to_string();
    let server = ScriptServer::start(vec![
        Scripted::ok(oa_calls(&[("plan", &plan)])),
        Scripted::ok(oa_calls(&[(
            "edit_file",
            r#"{"path": "src/lib.rs", "old_text": "a - b", "new_text": "a + b"}"#,
        )])),
        Scripted::ok(oa_calls(&[(
            "finish",
            &json!({"summary": "fixed add"}).to_string(),
        )])),
    ])
    .await;
    let base = format!("{}/v1", server.base);

    let first = run(root, "octo/a", &base).await;
    assert_eq!(first["status"], "completed", "{first}");
    let spent = first["steps"][1]["output"]["usage"]["cost_usd"]
        .as_f64()
        .unwrap();
    assert!((spent - 4.5).abs() < 1e-9, "{spent}");
    assert_eq!(server.requests().len(), 3);

    // Over the day's cap for octo/a: stopped with the reason, before asking the model.
    let second = run(root, "Octo/A", &base).await;
    assert_eq!(second["status"], "failed", "{second}");
    let error = second["steps"][1]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("spending cap reached")
            && error.contains("$4.50")
            && error.contains("daily_cost_usd $2.00"),
        "{error}"
    );
    assert_eq!(server.requests().len(), 3, "the capped run asked the model");

    // Another repository has its own day: it goes ahead (and meets the exhausted script).
    let third = run(root, "octo/b", &base).await;
    let error = third["steps"][1]["error"].as_str().unwrap_or_default();
    assert!(!error.contains("spending cap"), "{third}");
    assert_eq!(server.requests().len(), 4);

    let out = baton(root, &["spending", "--json"], &base).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let spending: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!((spending["today_by_repo"]["octo/a"].as_f64().unwrap() - 4.5).abs() < 1e-9);
    assert!((spending["month_total"].as_f64().unwrap() - 4.5).abs() < 1e-9);
    assert_eq!(spending["daily_cap"], 2.0);
    let out = baton(root, &["runs"], &base).await;
    let listing = text(&out.stdout);
    assert!(
        listing.contains("spent today on octo/a: $4.50 (cap $2.00)"),
        "{listing}"
    );
    assert!(
        !listing.contains(KEY) && !text(&out.stderr).contains(KEY),
        "the key leaked"
    );
}
