//! Shared by the forge and webhook tests: where the npm peers are (`$BATON_PEERS_DIR`, default
//! `.peers/` at the repository root, filled by `scripts/install-test-deps-npm.sh`), real webhook
//! payloads, and Prism started once per test binary.
#![allow(dead_code)]

use crate::require;

pub mod git_http;
pub mod proxy;

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Where `scripts/install-test-deps-npm.sh` put the npm peers.
pub fn peers_dir() -> PathBuf {
    std::env::var_os("BATON_PEERS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".peers"))
}

/// `@octokit/webhooks-examples`' index; if it is not installed, a failure, or `None` when
/// skipping is allowed (see `require`).
pub fn webhook_examples() -> Option<serde_json::Value> {
    let path =
        peers_dir().join("node_modules/@octokit/webhooks-examples/api.github.com/index.json");
    match std::fs::read(&path) {
        Ok(bytes) => Some(serde_json::from_slice(&bytes).expect("webhooks-examples index is JSON")),
        Err(_) => {
            require::missing(
                &format!("@octokit/webhooks-examples ({})", path.display()),
                require::NPM_PEERS,
            );
            None
        }
    }
}

/// Serves `app` on a loopback port from a thread of its own (for the life of the test binary);
/// its base URL, `http://127.0.0.1:P`.
pub fn serve_on_loopback(app: axum::Router) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    format!("http://{addr}")
}

/// A real example payload of `event` with `action` (the first one GitHub documents), whose
/// `pick` returns true.
pub fn example(
    examples: &serde_json::Value,
    event: &str,
    pick: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    examples
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["name"] == event)
        .and_then(|w| w["examples"].as_array().unwrap().iter().find(|e| pick(e)))
        .unwrap_or_else(|| panic!("no {event} example matches"))
        .clone()
}

/// Prism's base URL, started once for this test binary; if the peers are not installed, a
/// failure, or `None` when skipping is allowed (see `require`). Prism dies with the test binary: a shell watchdog kills it when
/// this process is gone.
pub fn prism() -> Option<String> {
    static PRISM: OnceLock<Option<String>> = OnceLock::new();
    PRISM.get_or_init(start_prism).clone()
}

fn start_prism() -> Option<String> {
    // GitHub's description as installed, with example refs fixed by scripts/prism-spec.js.
    prism_serving("api.github.com.prism.json", "the GitHub description", false)
}

/// A Prism of its own serving `spec` (a file in the peers directory), with `--errors` when
/// `errors` (a violation of the description, the response's included, is an error answer).
/// Its base URL, or (when skipping is allowed) `None`; under `CI=true` a missing peer fails the
/// test, naming it.
pub fn prism_serving(spec: &str, what: &str, errors: bool) -> Option<String> {
    let peers = peers_dir();
    let bin = peers.join("node_modules/.bin/prism");
    let spec = peers.join(spec);
    if !bin.exists() || !spec.exists() {
        require::missing(
            &format!("Prism or {what} ({} or {})", bin.display(), spec.display()),
            require::NPM_PEERS,
        );
        return None;
    }
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let log = std::env::temp_dir().join(format!("baton-forge-prism-{port}.log"));
    let script = format!(
        "'{bin}' mock{errors} --host 127.0.0.1 --port {port} '{spec}' > '{log}' 2>&1 & child=$!; \
         trap 'kill $child 2>/dev/null' EXIT; \
         while kill -0 {parent} 2>/dev/null && kill -0 $child 2>/dev/null; do sleep 0.5; done",
        bin = bin.display(),
        spec = spec.display(),
        log = log.display(),
        parent = std::process::id(),
        errors = if errors { " --errors" } else { "" },
    );
    // Not waited for: the watchdog shell must outlive every test and ends with this process.
    #[allow(clippy::zombie_processes)]
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sh runs");
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(120) {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            eprintln!("Prism ready on port {port} after {:?}", started.elapsed());
            return Some(format!("http://127.0.0.1:{port}"));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    panic!(
        "Prism did not listen within 120 s; its log: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
}

/// Prism's base URL for a test that needs it. Without Prism: under `CI=true` the test fails
/// naming what is missing; elsewhere it fails too unless `BATON_ALLOW_SKIP=1`, which skips it
/// loudly (`None`).
pub fn require_prism(test: &str) -> Option<String> {
    if let Some(base) = prism() {
        return Some(base);
    }
    let missing = format!(
        "{test}: Prism and GitHub's OpenAPI description are missing from {}; \
         run scripts/install-test-deps-npm.sh",
        peers_dir().display()
    );
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("CI=true: {missing}");
    }
    if std::env::var("BATON_ALLOW_SKIP").is_ok_and(|v| v == "1") {
        eprintln!("SKIPPED (BATON_ALLOW_SKIP=1): {missing}");
        return None;
    }
    panic!("{missing} (or set BATON_ALLOW_SKIP=1 to skip)");
}
