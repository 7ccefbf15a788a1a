//! Telegram chat control: start, watch and steer runs from a chat (teloxide's Bot API client).
//!
//! - [`commands`]: `/run`, `/approve`, … as text in, a command out (pure);
//! - [`keyboard`]: which buttons a run's state offers, and their short callback data;
//! - [`bot`]: the updates (long polling or the webhook), the allowlist in front of every
//!   handler, and the answers; every action calls the same engine methods as the CLI;
//! - [`sink`]: the Notifier's sink that keeps one status message per run per chat.
//!
//! A chat's runs are remembered as engine run tags `telegram:<chat id>` (the runs it started,
//! and those announced to it through `notify_chats`). The token is the bot's password and
//! teloxide puts it in every request URL: every error that leaves this module goes through
//! [`Api::describe`], which removes it.

pub mod bot;
pub mod commands;
pub mod keyboard;
pub mod sink;

use std::sync::Arc;
use std::time::Duration;

use baton_actors::{Engine, Sink};
use teloxide::{ApiError, Bot, RequestError};

use crate::backend::Failure;
use crate::config::{Config, TelegramMode};

/// The first wait after the Bot API could not be reached; doubles up to [`BACKOFF_MAX`].
pub const BACKOFF_INITIAL: Duration = Duration::from_secs(1);
/// The longest wait between two tries to reach the Bot API.
pub const BACKOFF_MAX: Duration = Duration::from_secs(60);

/// The run tag of a chat's runs.
pub fn chat_tag(chat: i64) -> String {
    format!("telegram:{chat}")
}

/// Why the Bot API client cannot be built. No message holds the token.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// reqwest could not build an HTTP client (TLS set-up).
    #[error("cannot build the Telegram HTTP client: {0}")]
    Client(#[source] reqwest::Error),
    /// `[telegram] api_url` is not a URL.
    #[error("[telegram] api_url `{url}`: {message}")]
    ApiUrl {
        /// The configured value.
        url: String,
        /// Why it does not parse.
        message: String,
    },
}

/// The Bot API client with its token, which it never shows.
pub struct Api {
    /// teloxide's client, pointed at `api_url`.
    pub bot: Bot,
    token: String,
}

impl Api {
    /// A client for `token` at `api_url` (Telegram's own when `None`).
    pub fn new(token: &str, api_url: Option<&str>) -> Result<Api, Error> {
        // A client timeout longer than the long poll's, so a quiet poll is not an error.
        let client = teloxide::net::default_reqwest_settings()
            .timeout(bot::POLL_TIMEOUT + Duration::from_secs(10))
            .build()
            .map_err(|e| Error::Client(e.without_url()))?;
        let mut bot = Bot::with_client(token, client);
        if let Some(url) = api_url {
            let url = reqwest::Url::parse(url).map_err(|e| Error::ApiUrl {
                url: url.to_string(),
                message: e.to_string(),
            })?;
            bot = bot.set_api_url(url);
        }
        Ok(Api {
            bot,
            token: token.to_string(),
        })
    }

    /// An error as words that are safe to log: without the token, also where a URL held it.
    pub fn describe(&self, e: &RequestError) -> String {
        redact(&e.to_string(), &self.token)
    }
}

/// `text` without `token` (raw or percent-encoded).
pub fn redact(text: &str, token: &str) -> String {
    if token.is_empty() {
        return text.to_string();
    }
    text.replace(token, "<token>")
        .replace(&token.replace(':', "%3A"), "<token>")
}

/// Whether an error of the Bot API is worth retrying (the network, a 5xx, a 429).
pub fn is_transient(e: &RequestError) -> bool {
    match e {
        RequestError::Network(_)
        | RequestError::Io(_)
        | RequestError::RetryAfter(_)
        | RequestError::InvalidJson { .. } => true,
        RequestError::Api(ApiError::Unknown(text)) => {
            text.contains("Internal Server Error")
                || text.contains("Bad Gateway")
                || text.contains("Too Many Requests")
        }
        _ => false,
    }
}

/// How the daemon reaches Telegram, from the environment and `[telegram]`.
pub struct Settings {
    /// The bot token (`BATON_TELEGRAM_TOKEN`, else `TELOXIDE_TOKEN`, each also from `_FILE`).
    token: String,
    /// `[telegram]`.
    pub section: crate::config::TelegramSection,
    /// Webhook mode: the secret Telegram sends in `X-Telegram-Bot-Api-Secret-Token`.
    webhook_secret: Option<String>,
    /// Directories searched for workflows the store does not know yet.
    pub workflow_dirs: Vec<std::path::PathBuf>,
    /// The least time between two edits of one chat's message.
    pub interval: Duration,
    /// `[server] public_url`: status messages link to the run's page there.
    pub public_url: Option<String>,
}

impl Settings {
    /// `None` when no token is set (the bot is off). Errors name the key that is wrong.
    pub fn from_env(config: &Config) -> Result<Option<Settings>, Failure> {
        let secret =
            |name: &str| crate::secrets::get(name).map_err(|e| Failure::usage(e.to_string()));
        let token = match secret("BATON_TELEGRAM_TOKEN")? {
            Some(token) => Some(token),
            None => secret("TELOXIDE_TOKEN")?,
        };
        let Some(token) = token else {
            return Ok(None);
        };
        let token = token.trim().to_string();
        let section = config.telegram.clone();
        let webhook_secret = match section.mode {
            TelegramMode::Polling => None,
            TelegramMode::Webhook => {
                if section.webhook_url.as_deref().is_none_or(str::is_empty) {
                    return Err(Failure::usage(
                        "[telegram] mode = \"webhook\" needs webhook_url, the public address \
                         Telegram posts to (ending in /webhooks/telegram)",
                    ));
                }
                let secret = secret("BATON_TELEGRAM_WEBHOOK_SECRET")?
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .ok_or_else(|| {
                        Failure::usage(
                            "[telegram] mode = \"webhook\" needs BATON_TELEGRAM_WEBHOOK_SECRET \
                             (1-256 characters of A-Z, a-z, 0-9, _ and -)",
                        )
                    })?;
                let ok = secret.len() <= 256
                    && secret
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                if !ok {
                    return Err(Failure::usage(
                        "BATON_TELEGRAM_WEBHOOK_SECRET: Telegram allows 1-256 characters of \
                         A-Z, a-z, 0-9, _ and -",
                    ));
                }
                Some(secret)
            }
        };
        if section.allowed_users.is_empty() {
            tracing::warn!(
                "[telegram] allowed_users is empty: the bot refuses everyone; add numeric user ids"
            );
        }
        Ok(Some(Settings {
            token,
            section,
            webhook_secret,
            workflow_dirs: config.workflow_dirs.clone(),
            interval: config.notify.telegram_interval.0,
            public_url: config.server.public_url.clone(),
        }))
    }
}

/// The bot, ready to start: its sinks go to the notifier, its router (webhook mode) to the
/// daemon, and [`Telegram::run`] hears updates until shutdown.
pub struct Telegram {
    bot: Arc<bot::ChatBot>,
}

impl Telegram {
    /// Builds the client and the handlers over `engine`.
    pub fn new(settings: Settings, engine: Engine) -> Result<Telegram, Failure> {
        let api = Api::new(&settings.token, settings.section.api_url.as_deref())
            .map_err(|e| Failure::usage(e.to_string()))?;
        Ok(Telegram {
            bot: Arc::new(bot::ChatBot::new(Arc::new(api), engine, settings)),
        })
    }

    /// The notifier sinks: the chat that started a run, and each of `notify_chats`.
    pub fn sinks(&self) -> Vec<(Arc<dyn Sink>, Duration)> {
        let interval = self.bot.settings.interval;
        let mut sinks: Vec<(Arc<dyn Sink>, Duration)> = vec![(
            Arc::new(sink::ChatSink::starter(
                self.bot.api.clone(),
                self.bot.engine.clone(),
                self.bot.settings.public_url.clone(),
            )),
            interval,
        )];
        for chat in &self.bot.settings.section.notify_chats {
            sinks.push((
                Arc::new(sink::ChatSink::announced(
                    self.bot.api.clone(),
                    self.bot.engine.clone(),
                    *chat,
                    self.bot.settings.public_url.clone(),
                )),
                interval,
            ));
        }
        sinks
    }

    /// Webhook mode: the route `/webhooks/telegram`.
    pub fn router(&self) -> Option<axum::Router> {
        let secret = self.bot.settings.webhook_secret.clone()?;
        Some(bot::webhook_router(self.bot.clone(), secret))
    }

    /// Hears updates until `stop` is cancelled: registers the menu, then long-polls (or, in
    /// webhook mode, registers the webhook). An unreachable API is retried with backoff.
    pub async fn run(self, stop: tokio_util::sync::CancellationToken) {
        bot::run(self.bot, stop).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_removes_the_token_in_both_spellings() {
        let token = "123456:ABC-def";
        let text = "error sending request for url (http://x/bot123456:ABC-def/getMe) or \
                    http://x/bot123456%3AABC-def/getMe";
        let out = redact(text, token);
        assert!(!out.contains("ABC-def"), "{out}");
        assert_eq!(out.matches("<token>").count(), 2);
    }
}
