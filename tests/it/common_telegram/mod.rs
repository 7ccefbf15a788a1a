//! A loopback Bot API server for the Telegram tests (axum), following the Bot API's documented
//! request and response shapes closely enough for teloxide: getMe with the full user object,
//! getUpdates with `offset` and `timeout` (long polling), sendMessage with inline keyboards,
//! editMessageText (with the 400 "message is not modified"), answerCallbackQuery,
//! setMyCommands, deleteWebhook, setWebhook, getWebhookInfo, and a 429 with
//! `parameters.retry_after` on demand.
//!
//! It records every request so tests can assert on them, keeps the chats' messages as a client
//! would see them, and lets a test inject updates (messages, button presses).
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::sync::Notify;

/// The bot's own user id and username.
pub const BOT_ID: u64 = 4242;
/// The bot's username.
pub const BOT_NAME: &str = "baton_test_bot";

/// One request the server received.
#[derive(Debug, Clone)]
pub struct Call {
    /// The Bot API method (`sendMessage`, …).
    pub method: String,
    /// Its JSON parameters.
    pub body: Value,
    /// When it came, since the server started.
    pub at: Duration,
}

/// A message in a chat, as its members see it now.
#[derive(Debug, Clone)]
pub struct Shown {
    /// The chat.
    pub chat: i64,
    /// The message id.
    pub id: i64,
    /// Its text.
    pub text: String,
    /// Its inline keyboard (`reply_markup`), `Null` when none.
    pub markup: Value,
    /// Times it was edited.
    pub edits: u32,
}

impl Shown {
    /// The callback data of the button labelled `label`.
    pub fn button(&self, label: &str) -> Option<String> {
        self.markup["inline_keyboard"]
            .as_array()?
            .iter()
            .flat_map(|row| row.as_array().cloned().unwrap_or_default())
            .find(|b| b["text"] == label)
            .and_then(|b| b["callback_data"].as_str().map(String::from))
    }

    /// The labels of its buttons.
    pub fn labels(&self) -> Vec<String> {
        self.markup["inline_keyboard"]
            .as_array()
            .map(|rows| {
                rows.iter()
                    .flat_map(|row| row.as_array().cloned().unwrap_or_default())
                    .filter_map(|b| b["text"].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[derive(Default)]
struct Inner {
    calls: Vec<Call>,
    /// Updates not yet confirmed by an offset past them.
    updates: Vec<Value>,
    next_update: u64,
    next_message: i64,
    messages: BTreeMap<(i64, i64), Shown>,
    /// Methods to answer with a 429 (`retry_after` seconds) this many more times.
    too_many: HashMap<String, (u32, u64)>,
}

/// The server; cheap to clone.
#[derive(Clone)]
pub struct TelegramServer {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    token: String,
    inner: Arc<Mutex<Inner>>,
    arrived: Arc<Notify>,
    started: Instant,
}

type Shared = (TelegramServer,);

impl TelegramServer {
    /// Starts on a free loopback port, accepting `token` only.
    pub async fn start(token: &str) -> TelegramServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve(listener, token)
    }

    /// Starts on `listener` (a test may bind the port before the server is up).
    pub fn serve(listener: tokio::net::TcpListener, token: &str) -> TelegramServer {
        let server = TelegramServer {
            url: format!("http://{}", listener.local_addr().unwrap()),
            token: token.to_string(),
            inner: Arc::new(Mutex::new(Inner {
                next_update: 1,
                next_message: 100,
                ..Inner::default()
            })),
            arrived: Arc::new(Notify::new()),
            started: Instant::now(),
        };
        let app = Router::new()
            .route("/{bot}/{method}", post(api).get(api))
            .with_state((server.clone(),));
        tokio::spawn(async move { axum::serve(listener, app).await.ok() });
        server
    }

    /// A server that is not listening at `url` (yet): for a test of an unreachable API.
    pub fn placeholder(url: &str) -> TelegramServer {
        TelegramServer {
            url: url.to_string(),
            token: String::new(),
            inner: Arc::default(),
            arrived: Arc::new(Notify::new()),
            started: Instant::now(),
        }
    }

    /// Every call so far.
    pub fn calls(&self) -> Vec<Call> {
        self.inner.lock().unwrap().calls.clone()
    }

    /// The calls of one method.
    pub fn calls_of(&self, method: &str) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| c.method == method)
            .collect()
    }

    /// The messages of a chat, oldest first.
    pub fn messages(&self, chat: i64) -> Vec<Shown> {
        self.inner
            .lock()
            .unwrap()
            .messages
            .values()
            .filter(|m| m.chat == chat)
            .cloned()
            .collect()
    }

    /// Answers the next `times` calls of `method` with a 429 asking to wait `retry_after` s.
    pub fn too_many_requests(&self, method: &str, times: u32, retry_after: u64) {
        self.inner
            .lock()
            .unwrap()
            .too_many
            .insert(method.to_string(), (times, retry_after));
    }

    fn push(&self, make: impl FnOnce(u64) -> Value) -> u64 {
        let id = {
            let mut inner = self.inner.lock().unwrap();
            let id = inner.next_update;
            inner.next_update += 1;
            let update = make(id);
            inner.updates.push(update);
            id
        };
        self.arrived.notify_waiters();
        id
    }

    /// A user writes `text` in `chat`.
    pub fn send_text(&self, chat: i64, user: u64, text: &str) {
        let message_id = {
            let mut inner = self.inner.lock().unwrap();
            inner.next_message += 1;
            inner.next_message
        };
        self.push(|id| {
            json!({
                "update_id": id,
                "message": {
                    "message_id": message_id,
                    "date": 1_700_000_000,
                    "chat": chat_json(chat),
                    "from": user_json(user),
                    "text": text,
                }
            })
        });
    }

    /// A user presses a button with `data` on message `message` of `chat`; returns the
    /// callback query's id (see [`TelegramServer::answer_to`]).
    pub fn press(&self, chat: i64, user: u64, message: i64, data: &str) -> String {
        let query = format!("cq{}", self.inner.lock().unwrap().next_update);
        let shown = self
            .inner
            .lock()
            .unwrap()
            .messages
            .get(&(chat, message))
            .map(|m| m.text.clone())
            .unwrap_or_default();
        let q = query.clone();
        self.push(|id| {
            json!({
                "update_id": id,
                "callback_query": {
                    "id": q,
                    "from": user_json(user),
                    "chat_instance": format!("ci{chat}"),
                    "data": data,
                    "message": {
                        "message_id": message,
                        "date": 1_700_000_000,
                        "chat": chat_json(chat),
                        "from": bot_json(),
                        "text": shown,
                    }
                }
            })
        });
        query
    }

    /// The text the bot answered callback query `query` with, once it answered.
    pub fn answer_to(&self, query: &str) -> Option<String> {
        self.calls_of("answerCallbackQuery")
            .into_iter()
            .find(|c| c.body["callback_query_id"] == query)
            .map(|c| c.body["text"].as_str().unwrap_or_default().to_string())
    }

    /// Waits up to `within` for `check` to return something.
    pub async fn wait_for<T>(
        &self,
        what: &str,
        within: Duration,
        mut check: impl FnMut(&TelegramServer) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + within;
        loop {
            if let Some(found) = check(self) {
                return found;
            }
            if Instant::now() > deadline {
                let calls: Vec<String> = self
                    .calls()
                    .iter()
                    .filter(|c| c.method != "getUpdates")
                    .map(|c| format!("{} {}", c.method, c.body))
                    .collect();
                panic!("timed out waiting for {what}; calls:\n{}", calls.join("\n"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits for the bot's reply in `chat` containing `needle` (a sendMessage).
    pub async fn reply_containing(&self, chat: i64, needle: &str) -> Shown {
        let needle = needle.to_string();
        self.wait_for(
            &format!("a message in chat {chat} containing {needle:?}"),
            Duration::from_secs(30),
            |s| {
                s.messages(chat)
                    .into_iter()
                    .find(|m| m.text.contains(&needle))
            },
        )
        .await
    }
}

fn chat_json(chat: i64) -> Value {
    if chat > 0 {
        json!({ "id": chat, "type": "private", "first_name": "Ada" })
    } else {
        json!({ "id": chat, "type": "group", "title": "ops" })
    }
}

fn user_json(user: u64) -> Value {
    json!({ "id": user, "is_bot": false, "first_name": "Ada", "username": format!("user{user}") })
}

fn bot_json() -> Value {
    json!({ "id": BOT_ID, "is_bot": true, "first_name": "baton", "username": BOT_NAME })
}

fn ok(result: Value) -> Response {
    Json(json!({ "ok": true, "result": result })).into_response()
}

fn error(status: StatusCode, description: &str, parameters: Option<Value>) -> Response {
    let mut body =
        json!({ "ok": false, "error_code": status.as_u16(), "description": description });
    if let Some(p) = parameters {
        body["parameters"] = p;
    }
    (status, Json(body)).into_response()
}

async fn api(
    State((server,)): State<Shared>,
    Path((bot, method)): Path<(String, String)>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    // Method names are case-insensitive (teloxide sends `GetMe`); recorded as documented.
    let mut method = method;
    if let Some(first) = method.get(..1) {
        method = first.to_ascii_lowercase() + &method[1..];
    }
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let body: Value = if body.is_empty() {
        json!({})
    } else if let Some(boundary) = content_type.split("boundary=").nth(1) {
        multipart_fields(&String::from_utf8_lossy(&body), boundary.trim_matches('"'))
    } else {
        serde_json::from_slice(&body).unwrap_or(json!({}))
    };
    {
        let mut inner = server.inner.lock().unwrap();
        inner.calls.push(Call {
            method: method.clone(),
            body: body.clone(),
            at: server.started.elapsed(),
        });
        if bot != format!("bot{}", server.token) {
            return error(StatusCode::UNAUTHORIZED, "Unauthorized", None);
        }
        if let Some((times, wait)) = inner.too_many.get_mut(&method) {
            if *times > 0 {
                *times -= 1;
                let wait = *wait;
                return error(
                    StatusCode::TOO_MANY_REQUESTS,
                    &format!("Too Many Requests: retry after {wait}"),
                    Some(json!({ "retry_after": wait })),
                );
            }
        }
    }
    match method.as_str() {
        "getMe" => ok(json!({
            "id": BOT_ID,
            "is_bot": true,
            "first_name": "baton",
            "username": BOT_NAME,
            "can_join_groups": true,
            "can_read_all_group_messages": false,
            "supports_inline_queries": false,
            "can_connect_to_business": false,
            "has_main_web_app": false,
        })),
        "getUpdates" => {
            let offset = body["offset"].as_i64().unwrap_or(0);
            let timeout = body["timeout"].as_u64().unwrap_or(0).min(30);
            let deadline = Instant::now() + Duration::from_secs(timeout);
            loop {
                let arrived = server.arrived.notified();
                let pending: Vec<Value> = {
                    let mut inner = server.inner.lock().unwrap();
                    inner
                        .updates
                        .retain(|u| u["update_id"].as_i64().unwrap_or(0) >= offset);
                    inner.updates.clone()
                };
                if !pending.is_empty() || Instant::now() >= deadline {
                    return ok(Value::Array(pending));
                }
                let _ = tokio::time::timeout_at(deadline.into(), arrived).await;
            }
        }
        "sendMessage" => {
            let chat = body["chat_id"].as_i64().unwrap_or(0);
            let mut inner = server.inner.lock().unwrap();
            inner.next_message += 1;
            let id = inner.next_message;
            let shown = Shown {
                chat,
                id,
                text: body["text"].as_str().unwrap_or_default().to_string(),
                markup: body.get("reply_markup").cloned().unwrap_or(Value::Null),
                edits: 0,
            };
            let result = message_json(&shown);
            inner.messages.insert((chat, id), shown);
            ok(result)
        }
        "editMessageText" => {
            let chat = body["chat_id"].as_i64().unwrap_or(0);
            let id = body["message_id"].as_i64().unwrap_or(0);
            let mut inner = server.inner.lock().unwrap();
            let Some(shown) = inner.messages.get_mut(&(chat, id)) else {
                return error(
                    StatusCode::BAD_REQUEST,
                    "Bad Request: message to edit not found",
                    None,
                );
            };
            let text = body["text"].as_str().unwrap_or_default().to_string();
            let markup = body.get("reply_markup").cloned().unwrap_or(Value::Null);
            let same_markup = markup == shown.markup
                || (markup["inline_keyboard"]
                    .as_array()
                    .is_some_and(Vec::is_empty)
                    && shown.markup.is_null());
            if text == shown.text && same_markup {
                return error(
                    StatusCode::BAD_REQUEST,
                    "Bad Request: message is not modified: specified new message content and \
                     reply markup are exactly the same as a current content and reply markup \
                     of the message",
                    None,
                );
            }
            shown.text = text;
            shown.markup = markup;
            shown.edits += 1;
            ok(message_json(shown))
        }
        "answerCallbackQuery" | "setMyCommands" | "deleteWebhook" | "setWebhook" => ok(json!(true)),
        "getWebhookInfo" => ok(json!({
            "url": "",
            "has_custom_certificate": false,
            "pending_update_count": 0,
        })),
        other => error(
            StatusCode::NOT_FOUND,
            &format!("Not Found: method {other} is not served by the test server"),
            None,
        ),
    }
}

fn message_json(shown: &Shown) -> Value {
    let mut message = json!({
        "message_id": shown.id,
        "date": 1_700_000_000,
        "chat": chat_json(shown.chat),
        "from": bot_json(),
        "text": shown.text,
    });
    if shown.edits > 0 {
        message["edit_date"] = json!(1_700_000_001);
    }
    if !shown.markup.is_null() {
        message["reply_markup"] = shown.markup.clone();
    }
    message
}

/// The text fields of a `multipart/form-data` body (teloxide sends setWebhook that way).
fn multipart_fields(body: &str, boundary: &str) -> Value {
    let mut fields = serde_json::Map::new();
    for part in body.split(&format!("--{boundary}")) {
        let Some((head, value)) = part.split_once("\r\n\r\n") else {
            continue;
        };
        let Some(name) = head
            .split("name=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
        else {
            continue;
        };
        let value = value.strip_suffix("\r\n").unwrap_or(value);
        fields.insert(name.to_string(), Value::String(value.to_string()));
    }
    Value::Object(fields)
}
