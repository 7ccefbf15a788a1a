//! Shared test helpers: real git repositories in temporary directories, and a scripted model
//! server on loopback that replays a fixed sequence of responses and records every request.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use baton::agent::{AgentConfig, BackendKind};
use serde_json::{json, Value};

/// One scripted answer.
#[derive(Clone, Debug)]
pub struct Scripted {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Value,
    pub delay: Duration,
}

impl Scripted {
    pub fn ok(body: Value) -> Self {
        Scripted {
            status: 200,
            headers: Vec::new(),
            body,
            delay: Duration::ZERO,
        }
    }
    pub fn status(status: u16, body: Value) -> Self {
        Scripted {
            status,
            ..Scripted::ok(body)
        }
    }
    pub fn header(mut self, name: &'static str, value: &str) -> Self {
        self.headers.push((name, value.to_string()));
        self
    }
    pub fn delayed(mut self, d: Duration) -> Self {
        self.delay = d;
        self
    }
}

/// A request the server received.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub at: Instant,
    pub headers: HeaderMap,
    pub body: Value,
}

#[derive(Clone, Default)]
struct Shared {
    script: Arc<Mutex<VecDeque<Scripted>>>,
    requests: Arc<Mutex<Vec<Recorded>>>,
}

/// A running scripted server.
pub struct ScriptServer {
    pub base: String,
    shared: Shared,
}

impl ScriptServer {
    /// Starts a server answering both `/v1/chat/completions` and `/v1/messages`.
    pub async fn start(script: Vec<Scripted>) -> ScriptServer {
        let shared = Shared::default();
        shared.script.lock().unwrap().extend(script);
        let app = Router::new()
            .route("/v1/chat/completions", post(answer))
            .route("/v1/messages", post(answer))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        ScriptServer {
            base: format!("http://{addr}"),
            shared,
        }
    }
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.requests.lock().unwrap().clone()
    }
    pub fn left(&self) -> usize {
        self.shared.script.lock().unwrap().len()
    }
}

async fn answer(
    State(shared): State<Shared>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    shared.requests.lock().unwrap().push(Recorded {
        at: Instant::now(),
        headers,
        body,
    });
    let next = shared.script.lock().unwrap().pop_front();
    let Some(s) = next else {
        return (StatusCode::BAD_REQUEST, "script exhausted").into_response();
    };
    tokio::time::sleep(s.delay).await;
    let mut resp = (StatusCode::from_u16(s.status).unwrap(), Json(s.body)).into_response();
    for (k, v) in s.headers {
        resp.headers_mut().insert(k, v.parse().unwrap());
    }
    resp
}

/// An OpenAI chat completion that calls tools: `(name, raw arguments)`.
pub fn oa_calls(calls: &[(&str, &str)]) -> Value {
    oa_calls_usage(calls, 10, 5)
}

pub fn oa_calls_usage(calls: &[(&str, &str)], prompt: u64, completion: u64) -> Value {
    let tool_calls: Vec<Value> = calls
        .iter()
        .enumerate()
        .map(|(i, (n, a))| json!({"id": format!("call_{i}_{n}"), "type": "function", "function": {"name": n, "arguments": a}}))
        .collect();
    json!({
        "id": "chatcmpl-1", "object": "chat.completion",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant", "content": null, "tool_calls": tool_calls}}],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    })
}

pub fn oa_text(text: &str) -> Value {
    json!({
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5}
    })
}

/// An Anthropic message with text and tool uses: `(name, input)`.
pub fn an_calls(text: &str, calls: &[(&str, Value)]) -> Value {
    let mut content = Vec::new();
    if !text.is_empty() {
        content.push(json!({"type": "text", "text": text}));
    }
    for (i, (n, input)) in calls.iter().enumerate() {
        content.push(
            json!({"type": "tool_use", "id": format!("toolu_{i}_{n}"), "name": n, "input": input}),
        );
    }
    json!({
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-test",
        "content": content, "stop_reason": "tool_use",
        "usage": {"input_tokens": 20, "output_tokens": 7}
    })
}

/// A git repository with a small Rust-like project, committed.
pub fn git_repo() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("src")).unwrap();
    std::fs::write(
        root.join("src/lib.rs"),
        "pub fn add(a: i32, b: i32) -> i32 {\n    a - b\n}\n",
    )
    .unwrap();
    std::fs::write(
        root.join("src/parser.rs"),
        "pub struct Parser;\n\npub fn parse_number(text: &str) -> Option<i64> {\n    text.parse().ok()\n}\n",
    )
    .unwrap();
    std::fs::write(root.join("README.md"), "# demo\n\nAdds numbers.\n").unwrap();
    std::fs::write(root.join(".gitignore"), "target/\n*.log\n").unwrap();
    git(root, &["init", "-q", "-b", "main"]);
    git(root, &["add", "."]);
    git(
        root,
        &[
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "commit",
            "-q",
            "-m",
            "init",
        ],
    );
    dir
}

pub fn git(root: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(root)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn config(backend: BackendKind, model: &str) -> AgentConfig {
    AgentConfig {
        backend,
        model: model.into(),
        max_retries: 2,
        request_timeout_secs: 10,
        command_timeout_secs: 20,
        ..AgentConfig::default()
    }
}
