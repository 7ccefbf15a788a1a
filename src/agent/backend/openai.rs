//! The `openai` backend: any OpenAI-compatible chat completions endpoint with tool calling
//! (OpenAI, OpenRouter, vLLM, llama.cpp server, Ollama). `POST {base_url}/chat/completions`
//! with `Authorization: Bearer $OPENAI_API_KEY` when a key is set.

use std::time::Duration;

use reqwest::header::{HeaderMap, AUTHORIZATION};
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

/// Used when neither `OPENAI_BASE_URL` nor `agent.base_url` is set.
pub const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";

/// An OpenAI-compatible chat model.
#[derive(Debug)]
pub struct OpenAi {
    http: Http,
    url: String,
    model: String,
    key: Option<Secret>,
}

impl OpenAi {
    /// A backend for `config.model` at `base_url` (…/v1), with an optional key.
    pub fn new(
        config: &AgentConfig,
        base_url: &str,
        key: Option<Secret>,
        redactor: Redactor,
    ) -> Result<Self> {
        Ok(OpenAi {
            http: Http::new(
                "openai",
                Duration::from_secs(config.request_timeout_secs),
                config.max_retries,
                redactor,
            )?,
            url: format!("{}/chat/completions", base_url.trim_end_matches('/')),
            model: config.model.clone(),
            key,
        })
    }

    fn body(&self, req: &Request<'_>) -> Value {
        let mut messages = vec![json!({"role": "system", "content": req.system})];
        for m in req.messages {
            match m {
                Msg::User(text) => messages.push(json!({"role": "user", "content": text})),
                Msg::Assistant { text, calls } => {
                    let mut msg = json!({"role": "assistant", "content": if text.is_empty() { Value::Null } else { json!(text) }});
                    if !calls.is_empty() {
                        msg["tool_calls"] = calls
                            .iter()
                            .map(|c| json!({"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}))
                            .collect();
                    }
                    messages.push(msg);
                }
                Msg::ToolAnswers(answers) => {
                    for a in answers {
                        let content = if a.is_error {
                            format!("ERROR: {}", a.content)
                        } else {
                            a.content.clone()
                        };
                        messages.push(
                            json!({"role": "tool", "tool_call_id": a.call_id, "content": content}),
                        );
                    }
                }
            }
        }
        let tools: Vec<Value> = req
            .tools
            .iter()
            .map(|t| json!({"type": "function", "function": {"name": t.name, "description": t.description, "parameters": t.parameters}}))
            .collect();
        let mut body = json!({
            "model": self.model,
            "messages": messages,
            "max_tokens": req.max_output_tokens,
        });
        // A question without tools (`agent::ask`): the API refuses `tool_choice` alone.
        if !tools.is_empty() {
            body["tools"] = json!(tools);
            body["tool_choice"] = json!("auto");
        }
        body
    }
}

/// Reads a chat completions response.
fn parse_reply(v: &Value) -> Result<Reply> {
    let protocol = |message: &str| Error::Protocol {
        provider: "openai",
        message: message.to_string(),
    };
    let message = v
        .pointer("/choices/0/message")
        .ok_or_else(|| protocol("no choices[0].message in the response"))?;
    let text = message
        .get("content")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let mut calls = Vec::new();
    for (i, c) in message
        .get("tool_calls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let name = c
            .pointer("/function/name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        // Some servers send the arguments as an object instead of a JSON string.
        let arguments = match c.pointer("/function/arguments") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Null) | None => String::new(),
            Some(other) => other.to_string(),
        };
        let id = c
            .get("id")
            .and_then(Value::as_str)
            .map(String::from)
            .unwrap_or_else(|| format!("call_{i}"));
        calls.push(ToolCall {
            id,
            name,
            arguments,
        });
    }
    let tokens = |p: &str| v.pointer(p).and_then(Value::as_u64).unwrap_or(0);
    Ok(Reply {
        text,
        calls,
        input_tokens: tokens("/usage/prompt_tokens"),
        output_tokens: tokens("/usage/completion_tokens"),
    })
}

impl ChatModel for OpenAi {
    fn complete<'a>(
        &'a self,
        req: Request<'a>,
        notes: &'a mut Vec<String>,
    ) -> BoxFuture<'a, Result<Option<Reply>>> {
        Box::pin(async move {
            let mut headers = HeaderMap::new();
            if let Some(key) = &self.key {
                let bearer = format!("Bearer {}", key.expose());
                headers.insert(AUTHORIZATION, secret_header(&bearer, "OPENAI_API_KEY")?);
            }
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

impl Backend for OpenAi {
    fn name(&self) -> &'static str {
        "openai"
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
