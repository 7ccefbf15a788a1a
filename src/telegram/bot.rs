//! The bot's updates: long polling (or the webhook route), the allowlist in front of every
//! handler, and the handlers for commands and button presses.
//!
//! Every action calls the same engine methods as the CLI and the API (`backend::start_job`,
//! `Command::apply`). Refusals are logged with the user and chat ids, never the message text.
//! An unreachable Bot API is retried with backoff: the daemon and its runs go on without it.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use baton_actors::{Engine, Error as EngineError, Job, RunRecord};
use serde_json::{json, Map, Value};
use teloxide::payloads::{
    AnswerCallbackQuerySetters, GetUpdatesSetters, SendMessageSetters, SetWebhookSetters,
};
use teloxide::prelude::Requester;
use teloxide::requests::Request;
use teloxide::types::{BotCommand, CallbackQuery, ChatId, Message, Update, UpdateKind, User};
use tokio_util::sync::CancellationToken;

use super::commands::{self, ChatCommand, Subject};
use super::keyboard::{self, Press};
use super::{chat_tag, Api, Settings, BACKOFF_INITIAL, BACKOFF_MAX};
use crate::backend::{self, Failure, FailureKind, StartRequest};

/// How long one getUpdates waits for an update (Telegram's long polling).
pub const POLL_TIMEOUT: Duration = Duration::from_secs(10);

/// The route Telegram posts updates to in webhook mode.
pub const WEBHOOK_PATH: &str = "/webhooks/telegram";

/// The header that carries the webhook's secret.
const SECRET_HEADER: &str = "x-telegram-bot-api-secret-token";

/// Tries of a reply that Telegram answers with 429.
const REPLY_TRIES: u32 = 3;

/// How many of a chat's runs `/runs` lists.
const RUNS_LISTED: usize = 10;

/// The bot's state: the client, the engine, and the settings.
pub struct ChatBot {
    pub(super) api: Arc<Api>,
    pub(super) engine: Engine,
    pub(super) settings: Settings,
    /// The bot's username, once getMe answered (for `/cmd@bot` in groups).
    username: std::sync::OnceLock<String>,
}

impl ChatBot {
    pub(super) fn new(api: Arc<Api>, engine: Engine, settings: Settings) -> Self {
        ChatBot {
            api,
            engine,
            settings,
            username: std::sync::OnceLock::new(),
        }
    }

    /// The allowlist: the one check in front of every handler.
    fn allowed(&self, user: Option<&User>) -> bool {
        user.is_some_and(|u| self.settings.section.allowed_users.contains(&u.id.0))
    }

    /// Handles one update. Errors are logged (without the token), never returned: one bad
    /// update must not stop the others.
    pub async fn handle(&self, update: Update) {
        match update.kind {
            UpdateKind::Message(message) => self.on_message(message).await,
            UpdateKind::CallbackQuery(query) => self.on_press(query).await,
            _ => {}
        }
    }

    async fn reply(&self, chat: ChatId, text: &str) {
        self.send(chat, text, None).await
    }

    /// Sends a reply, waiting out a 429's `retry_after` (a few times) rather than losing it.
    async fn send(
        &self,
        chat: ChatId,
        text: &str,
        markup: Option<teloxide::types::InlineKeyboardMarkup>,
    ) {
        for _ in 0..REPLY_TRIES {
            let mut send = self.api.bot.send_message(chat, text);
            if let Some(markup) = markup.clone() {
                send = send.reply_markup(markup);
            }
            match send.await {
                Ok(_) => return,
                Err(teloxide::RequestError::RetryAfter(wait)) => {
                    tokio::time::sleep(wait.duration()).await
                }
                Err(e) => {
                    tracing::warn!(
                        "telegram: cannot reply in chat {chat}: {}",
                        self.api.describe(&e)
                    );
                    return;
                }
            }
        }
        tracing::warn!("telegram: gave up replying in chat {chat} after {REPLY_TRIES} 429s");
    }

    async fn on_message(&self, message: Message) {
        let Some(text) = message.text() else {
            return;
        };
        let chat = message.chat.id;
        let parsed = commands::parse(text, self.username.get().map(String::as_str));
        if matches!(parsed, Ok(None)) {
            return;
        }
        if !self.allowed(message.from.as_ref()) {
            tracing::warn!(
                user = message.from.as_ref().map(|u| u.id.0),
                chat = chat.0,
                "telegram: refused a command from a user not in [telegram] allowed_users"
            );
            self.reply(chat, "Sorry, you may not use this bot.").await;
            return;
        }
        let user = message.from.as_ref().expect("allowed users are known");
        let answer = match parsed {
            Ok(Some(command)) => self.on_command(chat.0, user, message.id.0, command).await,
            Ok(None) => return,
            Err(e) => Err(e.to_string()),
        };
        match answer {
            Ok((text, markup)) => self.send(chat, &text, markup).await,
            Err(text) => self.reply(chat, &text).await,
        }
    }

    async fn on_command(
        &self,
        chat: i64,
        user: &User,
        message: i32,
        command: ChatCommand,
    ) -> Result<(String, Option<teloxide::types::InlineKeyboardMarkup>), String> {
        let plain = |text: String| Ok((text, None));
        match command {
            ChatCommand::Help => plain(commands::HELP.to_string()),
            ChatCommand::Workflows => {
                let mut lines = Vec::new();
                for (id, description) in self.workflow_list().await? {
                    lines.push(format!("{id}: {description}"));
                }
                if lines.is_empty() {
                    return plain("No workflows are registered.".into());
                }
                plain(lines.join("\n"))
            }
            ChatCommand::Run {
                workflow,
                subject,
                input,
            } => {
                let id = self
                    .start(chat, user, message, &workflow, subject, input)
                    .await?;
                plain(format!("Started {id} ({workflow}). /status {id}"))
            }
            ChatCommand::Runs => {
                let mut lines = Vec::new();
                for id in self.chat_runs(chat)?.into_iter().take(RUNS_LISTED) {
                    if let Ok(run) = self.engine.head(&id) {
                        lines.push(format!("{id} {} {}", run.workflow_id, run.status));
                    }
                }
                if lines.is_empty() {
                    return plain("This chat has no runs yet. Start one with /run.".into());
                }
                plain(lines.join("\n"))
            }
            ChatCommand::Status { run } => {
                let id = self.chat_run(chat, run)?;
                let rec = self.engine.run(&id).map_err(|e| e.to_string())?;
                let workflow = self.engine.run_workflow(&id).map_err(|e| e.to_string())?;
                let update = baton_actors::Update {
                    happened: baton_actors::Happening::Progress,
                    is_final: rec.status.is_terminal(),
                    run: rec,
                    workflow,
                    progress: Default::default(),
                };
                Ok((
                    super::sink::status_text(&update, self.settings.public_url.as_deref()),
                    super::sink::markup(&update.run),
                ))
            }
            ChatCommand::Steer { run, command } => {
                let id = self.chat_run(chat, run)?;
                command
                    .apply(&self.engine, &id, &by(user))
                    .await
                    .map_err(|e| e.message)?;
                plain(format!("{}: {} sent.", id, command.verb()))
            }
        }
    }

    /// Workflow ids and descriptions: the registered ones and those in `workflow_dirs`.
    async fn workflow_list(&self) -> Result<Vec<(String, String)>, String> {
        let mut list: Vec<(String, String)> = self
            .engine
            .workflows()
            .map_err(|e| e.to_string())?
            .iter()
            .map(|w| (w.id().to_string(), w.def.description.clone()))
            .collect();
        for (def, _) in crate::workflows::files::workflow_files(&self.settings.workflow_dirs) {
            if !list.iter().any(|(id, _)| *id == def.id) {
                list.push((def.id.clone(), def.description.clone()));
            }
        }
        list.sort();
        Ok(list)
    }

    /// Starts `workflow` for `user` in `chat`: `-` and `_` match alike; a subject fills `repo`
    /// and the `issue` or `pr` input the workflow declares. The job is keyed by the chat and
    /// the command's message id, so an update Telegram delivers again starts nothing new.
    async fn start(
        &self,
        chat: i64,
        user: &User,
        message: i32,
        workflow: &str,
        subject: Option<Subject>,
        mut input: Map<String, Value>,
    ) -> Result<String, String> {
        let wanted = workflow.replace('-', "_");
        let known = self.workflow_list().await?;
        let Some((id, _)) = known.iter().find(|(id, _)| id.replace('-', "_") == wanted) else {
            return Err(format!(
                "Unknown workflow `{workflow}`. /workflows lists them: {}",
                known
                    .iter()
                    .map(|(id, _)| id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        };
        let definition = match self.engine.workflow(id) {
            Ok(wf) => wf.def.clone(),
            Err(EngineError::UnknownWorkflow(_)) => {
                crate::workflows::files::workflow_files(&self.settings.workflow_dirs)
                    .into_iter()
                    .find(|(def, _)| def.id == *id)
                    .map(|(def, _)| def)
                    .ok_or_else(|| format!("workflow `{id}` is gone from workflow_dirs"))?
            }
            Err(e) => return Err(e.to_string()),
        };
        if let Some(subject) = subject {
            let number_key = ["issue", "pr"]
                .into_iter()
                .find(|k| definition.input.contains_key(*k));
            let (true, Some(number_key)) = (definition.input.contains_key("repo"), number_key)
            else {
                return Err(format!(
                    "`{}/{}#{}`: workflow `{id}` takes no repo and issue or pr input",
                    subject.repo.split('/').next().unwrap_or(""),
                    subject.repo.split('/').nth(1).unwrap_or(""),
                    subject.number
                ));
            };
            input.insert("repo".into(), json!(subject.repo));
            input.insert(number_key.into(), json!(subject.number));
        }
        let registered = self.engine.workflow(id).is_ok();
        let request = StartRequest {
            workflow: id.clone(),
            definition: (!registered).then_some(definition),
            origin: None,
            input,
        };
        let job = Job {
            id: format!("telegram:{chat}:{message}"),
            source: "telegram".into(),
            event: "run".into(),
            sender: by(user),
            data: json!({ "chat": chat, "user": user.id.0 }),
            ..Default::default()
        };
        let run = backend::start_job(&self.engine, request, job, &backend::Registrar::file())
            .await
            .map_err(|Failure { message, .. }| message)?;
        self.engine
            .tag_run(&chat_tag(chat), &run)
            .await
            .map_err(|e| e.to_string())?;
        Ok(run)
    }

    /// The chat's runs, newest first.
    fn chat_runs(&self, chat: i64) -> Result<Vec<String>, String> {
        self.engine
            .tagged_runs(&chat_tag(chat))
            .map_err(|e| e.to_string())
    }

    /// The run a command names, or the chat's latest; refused when it is another chat's.
    fn chat_run(&self, chat: i64, run: Option<String>) -> Result<String, String> {
        let runs = self.chat_runs(chat)?;
        match run {
            None => runs
                .into_iter()
                .next()
                .ok_or_else(|| "This chat has no runs yet. Start one with /run.".to_string()),
            Some(id) => {
                self.engine.head(&id).map_err(|e| e.to_string())?;
                if runs.contains(&id) {
                    Ok(id)
                } else {
                    Err(format!("Run {id} is not one of this chat's runs."))
                }
            }
        }
    }

    async fn answer(&self, query: &CallbackQuery, text: &str) {
        if let Err(e) = self
            .api
            .bot
            .answer_callback_query(query.id.clone())
            .text(text)
            .await
        {
            tracing::warn!(
                "telegram: cannot answer a button press: {}",
                self.api.describe(&e)
            );
        }
    }

    async fn on_press(&self, query: CallbackQuery) {
        if !self.allowed(Some(&query.from)) {
            tracing::warn!(
                user = query.from.id.0,
                "telegram: refused a button press from a user not in [telegram] allowed_users"
            );
            self.answer(&query, "Sorry, you may not use this bot.")
                .await;
            return;
        }
        let answer = self.press(&query).await;
        let text = match &answer {
            Ok(text) | Err(text) => text.as_str(),
        };
        self.answer(&query, text).await;
    }

    /// Acts on a button once; a stale or repeated press says so and does nothing.
    async fn press(&self, query: &CallbackQuery) -> Result<String, String> {
        let press = Press::decode(query.data.as_deref().unwrap_or(""))
            .map_err(|e| format!("Refused: {e}."))?;
        let chat = query
            .message
            .as_ref()
            .map(|m| m.chat().id.0)
            .ok_or("Refused: the button's message is unknown.")?;
        let rec: RunRecord = match self.engine.run(&press.run) {
            Ok(rec) => rec,
            Err(EngineError::UnknownRun(_)) => return Err(format!("Unknown run {}.", press.run)),
            Err(e) => return Err(e.to_string()),
        };
        if !self.chat_runs(chat)?.contains(&press.run) {
            tracing::warn!(
                user = query.from.id.0,
                chat,
                run = %press.run,
                "telegram: refused a button for another chat's run"
            );
            return Err("Refused: not one of this chat's runs.".into());
        }
        if !keyboard::is_current(&press, &rec) {
            return Err(format!(
                "Already {}, or no longer possible: the run is {}.",
                press.action.past(),
                rec.status
            ));
        }
        match press
            .action
            .command()
            .apply(&self.engine, &press.run, &by(&query.from))
            .await
        {
            Ok(()) => Ok(format!("{}: done.", press.action.label())),
            // The run moved between the check and the command: the engine changed nothing.
            Err(f) if f.kind == FailureKind::WrongState => Err(format!(
                "Already {}, or no longer possible.",
                press.action.past()
            )),
            Err(f) => Err(f.message),
        }
    }
}

/// Who acted, for "approved by": the stable numeric id, and the username as a hint.
fn by(user: &User) -> String {
    match &user.username {
        Some(name) => format!("telegram:{} (@{name})", user.id.0),
        None => format!("telegram:{}", user.id.0),
    }
}

/// Repeats `call` with backoff until it succeeds or `stop` is cancelled (then `None`).
async fn with_backoff<T, F, Fut>(
    api: &Api,
    what: &str,
    stop: &CancellationToken,
    mut call: F,
) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, teloxide::RequestError>>,
{
    let mut failures = 0;
    loop {
        let result = tokio::select! {
            _ = stop.cancelled() => return None,
            r = call() => r,
        };
        match result {
            Ok(value) => return Some(value),
            Err(e) => {
                failures += 1;
                let wait_now = match &e {
                    teloxide::RequestError::RetryAfter(s) => s.duration(),
                    _ => baton_actors::backoff::jittered(BACKOFF_INITIAL, BACKOFF_MAX, failures),
                };
                tracing::warn!(
                    "telegram: {what} failed ({}); trying again in {} ms",
                    api.describe(&e),
                    wait_now.as_millis()
                );
                tokio::select! {
                    _ = stop.cancelled() => return None,
                    _ = tokio::time::sleep(wait_now) => {}
                }
            }
        }
    }
}

/// Hears updates until `stop`: getMe, the command menu, then polling or the webhook.
pub(super) async fn run(bot: Arc<ChatBot>, stop: CancellationToken) {
    let api = bot.api.clone();
    let Some(me) = with_backoff(&api, "getMe", &stop, || api.bot.get_me().send()).await else {
        return;
    };
    let _ = bot.username.set(me.username().to_string());
    let menu: Vec<BotCommand> = commands::MENU
        .iter()
        .map(|(command, description)| BotCommand::new(*command, *description))
        .collect();
    if with_backoff(&api, "setMyCommands", &stop, || {
        api.bot.set_my_commands(menu.clone()).send()
    })
    .await
    .is_none()
    {
        return;
    }
    if let (Some(secret), Some(url)) = (
        bot.settings.webhook_secret.clone(),
        bot.settings.section.webhook_url.clone(),
    ) {
        let url = match reqwest::Url::parse(&url) {
            Ok(url) => url,
            Err(e) => {
                tracing::error!("telegram: [telegram] webhook_url `{url}`: {e}; the bot is off");
                return;
            }
        };
        with_backoff(&api, "setWebhook", &stop, || {
            api.bot
                .set_webhook(url.clone())
                .secret_token(secret.clone())
                .send()
        })
        .await;
        tracing::info!("telegram: the bot hears updates at {WEBHOOK_PATH}");
        return;
    }
    // Polling and a webhook exclude each other: drop any webhook left from before.
    if with_backoff(&api, "deleteWebhook", &stop, || {
        api.bot.delete_webhook().send()
    })
    .await
    .is_none()
    {
        return;
    }
    tracing::info!("telegram: the bot polls for updates as @{}", me.username());
    let mut offset: i32 = 0;
    loop {
        let Some(updates) = with_backoff(&api, "getUpdates", &stop, || {
            api.bot
                .get_updates()
                .offset(offset)
                .timeout(POLL_TIMEOUT.as_secs() as u32)
                .send()
        })
        .await
        else {
            return;
        };
        for update in updates {
            offset = offset.max(update.id.0 as i32 + 1);
            bot.handle(update).await;
        }
    }
}

/// `POST /webhooks/telegram`: takes an update when the secret header matches (compared in
/// constant time), 401 otherwise.
pub(super) fn webhook_router(bot: Arc<ChatBot>, secret: String) -> Router {
    Router::new()
        .route(WEBHOOK_PATH, post(webhook))
        .with_state((bot, Arc::<str>::from(secret)))
}

async fn webhook(
    State((bot, secret)): State<(Arc<ChatBot>, Arc<str>)>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> (StatusCode, Json<Value>) {
    let given = headers
        .get(SECRET_HEADER)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    if !crate::web::token::same(given, secret.as_bytes()) {
        tracing::warn!("telegram: refused a webhook delivery with a missing or wrong secret");
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({ "error": "missing or wrong X-Telegram-Bot-Api-Secret-Token" })),
        );
    }
    let update: Update = match serde_json::from_slice(&body) {
        Ok(update) => update,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({ "error": format!("not a Telegram update: {e}") })),
            )
        }
    };
    // Answered at once: Telegram redelivers what is not answered within its timeout.
    tokio::spawn(async move { bot.handle(update).await });
    (StatusCode::OK, Json(json!({ "ok": true })))
}
