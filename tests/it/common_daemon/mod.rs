//! `baton serve` for tests: started on a free loopback port with a data dir and a config
//! file, killed and reaped on drop, with the few API calls the tests need.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::BATON;

pub struct Daemon {
    child: Child,
    pub base: String,
    pub token: String,
    pub http: reqwest::Client,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Daemon {
    // The child is owned by `Daemon`, whose `Drop` kills and reaps it.
    #[allow(clippy::zombie_processes)]
    pub fn start(data: &Path, config: &Path) -> Daemon {
        Daemon::start_with(data, config, &[])
    }

    /// [`Daemon::start`] with `env` added to the daemon's environment.
    #[allow(clippy::zombie_processes)]
    pub fn start_with(data: &Path, config: &Path, env: &[(&str, &str)]) -> Daemon {
        let _ = std::fs::remove_file(data.join("baton.addr"));
        let mut child = Command::new(BATON)
            .args(["serve", "--bind", "127.0.0.1:0"])
            .env("BATON_DATA_DIR", data)
            .env("BATON_CONFIG", config)
            // A developer's own collector settings must not reach the daemons under test.
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .env_remove("OTEL_SERVICE_NAME")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(addr) = std::fs::read_to_string(data.join("baton.addr")) {
                let token = std::fs::read_to_string(data.join("admin.token")).unwrap();
                return Daemon {
                    child,
                    base: format!("http://{}", addr.trim()),
                    token: token.trim().to_string(),
                    http: reqwest::Client::new(),
                };
            }
            if let Some(status) = child.try_wait().unwrap() {
                panic!("the daemon exited: {status}");
            }
            assert!(Instant::now() < deadline, "the daemon did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the daemon with SIGKILL, as a crash would, and reaps it.
    pub fn kill_9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Posts a GitHub webhook delivery signed with `secret`, as GitHub does: the HTTP status and
    /// the answer (`null` when it is not JSON). For plain tests, not from inside a runtime.
    pub fn deliver(
        &self,
        secret: &str,
        event: &str,
        delivery: &str,
        payload: &Value,
    ) -> (u16, Value) {
        let body = serde_json::to_vec(payload).unwrap();
        let signature = baton::web::webhook::WebhookSecret::new(secret)
            .unwrap()
            .sign(&body);
        crate::setup::block_on(async {
            let resp = self
                .http
                .post(format!("{}/webhooks/github", self.base))
                .header("content-type", "application/json")
                .header("x-github-event", event)
                .header("x-github-delivery", delivery)
                .header("x-hub-signature-256", signature)
                .body(body)
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            (status, resp.json().await.unwrap_or(Value::Null))
        })
    }

    pub async fn start_run(&self, def: &Value) -> String {
        let resp: Value = self
            .http
            .post(format!("{}/api/runs", self.base))
            .bearer_auth(&self.token)
            .json(&json!({ "workflow": def["id"], "definition": def }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        resp["id"]
            .as_str()
            .unwrap_or_else(|| panic!("no run id in {resp}"))
            .to_string()
    }

    /// An authorised POST of JSON to an API path: the status code and the answer.
    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// An authorised GET of an API path, as JSON.
    pub async fn get_json(&self, path: &str) -> Value {
        self.http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    pub async fn status(&self, run: &str) -> String {
        let rec: Value = self
            .http
            .get(format!("{}/api/runs/{run}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        rec["status"].as_str().unwrap_or_default().to_string()
    }
}
