//! The `anthropic` backend: the Messages API with tool use. `POST {base_url}/v1/messages` with
//! `x-api-key: $ANTHROPIC_API_KEY` and `anthropic-version`.

use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue};
use serde_json::{json, Value};

use super::chat::{
    drive, drive_plan, post_for_reply, secret_header, ChatModel, Msg, Reply, Request, ToolCall,
};
use super::{Backend, Outcome, Planned, Round};
use crate::agent::config::{AgentConfig, Secret};
use crate::agent::error::{Error, Result};
use crate::agent::http::Http;
use crate::agent::journal::BoxFuture;
use crate::agent::transcript::Redactor;

/// Used when neither `ANTHROPIC_BASE_URL` nor `agent.base_url` is set.
pub const DEFAULT_BASE_URL: &str = "https://api.anthropic.com";
/// The API version this code speaks.
const API_VERSION: &str = "2023-06-01";

/// An Anthropic model.
#[derive(Debug)]
pub struct Anthropic {
    http: Http,
    url: String,
    model: String,
    key: Secret,
}

impl Anthropic {
    /// A backend for `config.model` at `base_url` (without `/v1`).
    pub fn new(
        config: &AgentConfig,
        base_url: &str,
        key: Secret,
        redactor: Redactor,
    ) -> Result<Self> {
        Ok(Anthropic {
            http: Http::new(
                "anthropic",
                Duration::from_secs(config.request_timeout_secs),
                config.max_retries,
                redactor,
            )?,
            url: format!("{}/v1/messages", base_url.trim_end_matches('/')),
            model: config.model.clone(),
            key,
        })
    }

    fn body(&self, req: &Request<'_>) -> Value {
        let mut messages: Vec<Value> = Vec::new();
        for m in req.messages {
            match m {
                Msg::User(text) => messages
                    .push(json!({"role": "user", "content": [{"type": "text", "text": text}]})),
                Msg::Assistant { text, calls } => {
                    let mut content = Vec::new();
                    if !text.is_empty() {
                        content.push(json!({"type": "text", "text": text}));
                    }
                    for c in calls {
                        let input: Value = serde_json::from_str(&c.arguments)
                            .ok()
                            .filter(Value::is_object)
                            .unwrap_or_else(|| json!({}));
                        content.push(
                            json!({"type": "tool_use", "id": c.id, "name": c.name, "input": input}),
                        );
                    }
                    if content.is_empty() {
                        content.push(json!({"type": "text", "text": "(no text)"}));
                    }
                    messages.push(json!({"role": "assistant", "content": content}));
                }
                Msg::ToolAnswers(answers) => {
                    let content: Vec<Value> = answers
                        .iter()
                        .map(|a| json!({"type": "tool_result", "tool_use_id": a.call_id, "content": a.content, "is_error": a.is_error}))
                        .collect();
                    messages.push(json!({"role": "user", "content": content}));
                }
            }
        }
        let tools: Vec<Value> = req
            .tools
            .iter()
            .map(|t| json!({"name": t.name, "description": t.description, "input_schema": t.parameters}))
            .collect();
        let mut body = json!({
            "model": self.model,
            "max_tokens": req.max_output_tokens,
            "system": req.system,
            "messages": messages,
        });
        if !tools.is_empty() {
            body["tools"] = json!(tools);
        }
        body
    }
}

/// Reads a Messages API response.
fn parse_reply(v: &Value) -> Result<Reply> {
    let content = v
        .get("content")
        .and_then(Value::as_array)
        .ok_or_else(|| Error::Protocol {
            provider: "anthropic",
            message: "no content array in the response".into(),
        })?;
    let mut reply = Reply::default();
    for (i, block) in content.iter().enumerate() {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => {
                if !reply.text.is_empty() {
                    reply.text.push('\n');
                }
                reply
                    .text
                    .push_str(block.get("text").and_then(Value::as_str).unwrap_or(""));
            }
            Some("tool_use") => reply.calls.push(ToolCall {
                id: block
                    .get("id")
                    .and_then(Value::as_str)
                    .map(String::from)
                    .unwrap_or_else(|| format!("toolu_{i}")),
                name: block
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
                arguments: block.get("input").map(Value::to_string).unwrap_or_default(),
            }),
            _ => {}
        }
    }
    let tokens = |p: &str| v.pointer(p).and_then(Value::as_u64).unwrap_or(0);
    reply.input_tokens = tokens("/usage/input_tokens")
        + tokens("/usage/cache_read_input_tokens")
        + tokens("/usage/cache_creation_input_tokens");
    reply.output_tokens = tokens("/usage/output_tokens");
    Ok(reply)
}

impl ChatModel for Anthropic {
    fn complete<'a>(
        &'a self,
        req: Request<'a>,
        notes: &'a mut Vec<String>,
    ) -> BoxFuture<'a, Result<Option<Reply>>> {
        Box::pin(async move {
            let mut headers = HeaderMap::new();
            headers.insert(
                "x-api-key",
                secret_header(self.key.expose(), "ANTHROPIC_API_KEY")?,
            );
            headers.insert("anthropic-version", HeaderValue::from_static(API_VERSION));
            let body = self.body(&req);
            post_for_reply(
                &self.http,
                &self.url,
                headers,
                &body,
                &req,
                notes,
                parse_reply,
            )
            .await
        })
    }
}

impl Backend for Anthropic {
    fn name(&self) -> &'static str {
        "anthropic"
    }
    fn implement<'a, 'b: 'a>(&'a self, round: &'a mut Round<'b>) -> BoxFuture<'a, Result<Outcome>> {
        Box::pin(drive(self, round))
    }
    fn plan<'a, 'b: 'a>(
        &'a self,
        round: &'a mut Round<'b>,
    ) -> Option<BoxFuture<'a, Result<Planned>>> {
        Some(Box::pin(drive_plan(self, round)))
    }
}
