//! The Notifier's Telegram sink: one status message per run per chat, edited in place as the
//! run goes (steps with their state, the PR link, the test line), with the buttons its state
//! offers. The notifier paces each chat and keeps the message id in the store, so a restarted
//! daemon edits the message it made before.
//!
//! Two kinds: the *starter* sink reports a run to the chat that started it (its job says which),
//! and one *announced* sink per `notify_chats` chat reports runs started elsewhere once they
//! reach a wait for a person, a failure or their end (then links the run to the chat, so it
//! may be steered from there).

use std::sync::Arc;
use std::time::Duration;

use baton_actors::{
    DeliveryState, Engine, RunRecord, RunStatus, Sink, SinkError, SinkFuture, StepStatus, Update,
    WaitKind, Workflow,
};
use serde_json::{json, Value};
use teloxide::payloads::{EditMessageTextSetters, SendMessageSetters};
use teloxide::prelude::Requester;
use teloxide::types::{ChatId, InlineKeyboardButton, InlineKeyboardMarkup, MessageId};
use teloxide::{ApiError, RequestError};

use super::{chat_tag, keyboard, Api};

/// Telegram's limit on a message's text, in characters.
const MAX_TEXT: usize = 4096;

/// Where a [`ChatSink`] reports.
enum Chats {
    /// The chat whose `/run` started the run.
    Starter,
    /// A `notify_chats` chat, for runs started anywhere else.
    Announced(i64),
}

/// Reports runs as a status message in a chat.
/// The least time between two updates of one group chat.
pub const GROUP_INTERVAL: Duration = Duration::from_secs(3);

pub struct ChatSink {
    api: Arc<Api>,
    engine: Engine,
    chats: Chats,
    /// `telegram` or `telegram:<chat>`: part of the stored delivery key.
    name: String,
    /// `[server] public_url`: the message links to the run's page there.
    public_url: Option<String>,
}

impl ChatSink {
    /// Reports each run to the chat that started it.
    pub fn starter(api: Arc<Api>, engine: Engine, public_url: Option<String>) -> Self {
        ChatSink {
            api,
            engine,
            chats: Chats::Starter,
            name: "telegram".into(),
            public_url,
        }
    }

    /// Reports runs started elsewhere to `chat`, from their first wait, failure or end.
    pub fn announced(api: Arc<Api>, engine: Engine, chat: i64, public_url: Option<String>) -> Self {
        ChatSink {
            api,
            engine,
            chats: Chats::Announced(chat),
            name: format!("telegram:{chat}"),
            public_url,
        }
    }

    /// The chat a run was started from, if a chat started it.
    fn starter_chat(&self, run: &RunRecord) -> Option<i64> {
        let job = self.engine.job(run.job_id.as_deref()?).ok()??;
        if job.source != "telegram" {
            return None;
        }
        job.data.get("chat")?.as_i64()
    }

    fn chat_of(&self, run: &RunRecord) -> Option<i64> {
        match self.chats {
            Chats::Starter => self.starter_chat(run),
            Chats::Announced(chat) => (self.starter_chat(run) != Some(chat)).then_some(chat),
        }
    }
}

/// Whether a run started elsewhere is worth announcing: it needs a person, failed or ended.
fn worth_announcing(run: &RunRecord) -> bool {
    match run.status {
        RunStatus::Waiting => run
            .waiting_for
            .as_ref()
            .is_some_and(|w| w.kind != WaitKind::Retry),
        status => status.is_terminal(),
    }
}

/// The status message's text: the run, its steps with their state, and where it stands;
/// the run's page when `public_url` is set.
pub fn status_text(update: &Update, public_url: Option<&str>) -> String {
    use crate::notify::render;
    let run = &update.run;
    let mut text = format!("{} · {}\n", run.workflow_id, run.id);
    for (index, step) in run.steps.iter().enumerate() {
        let mark = match step.status {
            StepStatus::Completed => "✅",
            StepStatus::Running => "⏳",
            StepStatus::Waiting => "⏸",
            StepStatus::Failed => "❌",
            StepStatus::Skipped => "⏭",
            StepStatus::Compensated => "↩",
            StepStatus::Pending => "▫",
        };
        text.push_str(&format!("{mark} {}\n", render::step_line(update, index)));
    }
    // The pull request the run opened (`issue_to_pr` keeps it in its state).
    if let Some(url) = run
        .state
        .get("pr")
        .and_then(|pr| pr.get("url"))
        .and_then(Value::as_str)
        .filter(|url| !url.is_empty())
    {
        text.push_str(&format!("PR: {url}\n"));
    }
    if let Some(link) = render::run_link(public_url, &run.id) {
        text.push_str(&format!("Run: {link}\n"));
    }
    text.push('\n');
    text.push_str(&render::headline(update));
    if let Some(plan) = render::to_approve(run) {
        // What the Approve button approves; cut below with the rest when it is long.
        text.push_str(&format!("\n\nThe plan:\n{plan}"));
    }
    if text.chars().count() > MAX_TEXT {
        text = text.chars().take(MAX_TEXT - 1).collect::<String>() + "…";
    }
    text
}

/// The inline keyboard of a run's state (one row), or none.
pub fn markup(run: &RunRecord) -> Option<InlineKeyboardMarkup> {
    let row: Vec<InlineKeyboardButton> = keyboard::buttons(run)
        .into_iter()
        .map(|(label, data)| InlineKeyboardButton::callback(label, data))
        .collect();
    (!row.is_empty()).then(|| InlineKeyboardMarkup::new([row]))
}

/// A Bot API error as the notifier sees it: a 429 waits as asked, the network and 5xx retry.
fn sink_error(api: &Api, e: &RequestError) -> SinkError {
    let message = format!("telegram: {}", api.describe(e));
    match e {
        RequestError::RetryAfter(wait) => SinkError::retry_after(message, wait.duration()),
        e if super::is_transient(e) => SinkError::retryable(message),
        _ => SinkError::fatal(message),
    }
}

impl Sink for ChatSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn target(&self, run: &RunRecord, _workflow: &Workflow) -> Option<String> {
        self.chat_of(run).map(|chat| chat.to_string())
    }

    /// Telegram allows a bot about 20 messages a minute in a group (ids below zero), against
    /// about one a second in a private chat. (A 429 that slips through is still waited out.)
    fn min_interval(&self, target: &str) -> Option<Duration> {
        target
            .parse::<i64>()
            .is_ok_and(|chat| chat < 0)
            .then_some(GROUP_INTERVAL)
    }

    fn deliver<'a>(
        &'a self,
        update: &'a Update,
        previous: Option<&'a DeliveryState>,
    ) -> SinkFuture<'a> {
        Box::pin(async move {
            let run = &update.run;
            let chat = self
                .chat_of(run)
                .ok_or_else(|| SinkError::fatal("telegram: the run has no chat"))?;
            let message_id = previous.and_then(|p| p.message_id.as_i64());
            if message_id.is_none() {
                if let Chats::Announced(_) = self.chats {
                    if !worth_announcing(run) {
                        // Nothing for this chat yet; the next update asks again.
                        return Ok(DeliveryState::default());
                    }
                    self.engine
                        .tag_run(&chat_tag(chat), &run.id)
                        .await
                        .map_err(|e| SinkError::retryable(e.to_string()))?;
                }
            }
            let text = status_text(update, self.public_url.as_deref());
            let markup = markup(run);
            // What the message shows: the text and the buttons' data.
            let body = format!(
                "{text}\n{}",
                serde_json::to_string(&markup).unwrap_or_default()
            );
            if let (Some(previous), Some(_)) = (previous, message_id) {
                if previous.body == body {
                    return Ok(previous.clone());
                }
            }
            let chat_id = ChatId(chat);
            if let Some(id) = message_id {
                let mut edit = self
                    .api
                    .bot
                    .edit_message_text(chat_id, MessageId(id as i32), &text);
                // An edit without a keyboard removes the old one.
                edit = edit.reply_markup(markup.clone().unwrap_or_default());
                match edit.await {
                    Ok(_) | Err(RequestError::Api(ApiError::MessageNotModified)) => {
                        return Ok(DeliveryState {
                            message_id: json!(id),
                            body,
                            extra: json!({ "chat": chat }),
                        });
                    }
                    // Deleted by someone: send it again below.
                    Err(RequestError::Api(
                        ApiError::MessageToEditNotFound | ApiError::MessageIdInvalid,
                    )) => {}
                    Err(e) => return Err(sink_error(&self.api, &e)),
                }
            }
            let mut send = self.api.bot.send_message(chat_id, &text);
            if let Some(markup) = markup {
                send = send.reply_markup(markup);
            }
            let sent = send.await.map_err(|e| sink_error(&self.api, &e))?;
            Ok(DeliveryState {
                message_id: json!(sent.id.0),
                body,
                extra: json!({ "chat": chat }),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use teloxide::types::Seconds;

    #[test]
    fn bot_api_errors_map_to_retries() {
        let api = Api::new("1:secret-token", Some("http://127.0.0.1:9")).unwrap();
        let limited = RequestError::RetryAfter(Seconds::from_seconds(7));
        assert!(matches!(
            sink_error(&api, &limited),
            SinkError::Retryable { retry_after: Some(w), .. } if w == Duration::from_secs(7)
        ));
        let server = RequestError::Api(ApiError::Unknown("Bad Gateway".into()));
        assert!(matches!(
            sink_error(&api, &server),
            SinkError::Retryable {
                retry_after: None,
                ..
            }
        ));
        let gone = RequestError::Api(ApiError::ChatNotFound);
        assert!(matches!(sink_error(&api, &gone), SinkError::Fatal { .. }));
    }

    #[test]
    fn announced_runs_are_those_that_need_someone_or_ended() {
        let mut run = RunRecord::new("run_1".into(), std::iter::empty(), 0);
        run.status = RunStatus::Running;
        assert!(!worth_announcing(&run));
        run.status = RunStatus::Waiting;
        run.waiting_for = Some(baton_actors::WaitingFor {
            kind: WaitKind::Retry,
            name: "s".into(),
            step: "s".into(),
            since: 0,
            until: None,
        });
        assert!(!worth_announcing(&run), "a retry's backoff needs nobody");
        run.waiting_for.as_mut().unwrap().kind = WaitKind::Approval;
        assert!(worth_announcing(&run));
        run.waiting_for = None;
        for status in [
            RunStatus::Failed,
            RunStatus::Completed,
            RunStatus::Cancelled,
        ] {
            run.status = status;
            assert!(worth_announcing(&run), "{status:?}");
        }
    }

    #[test]
    fn groups_are_paced_slower_than_private_chats() {
        let api = Arc::new(Api::new("1:secret-token", Some("http://127.0.0.1:9")).unwrap());
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let engine = rt
            .block_on(Engine::open(dir.path(), Default::default()))
            .unwrap();
        let sink = ChatSink::starter(api, engine.clone(), None);
        assert_eq!(sink.min_interval("42"), None);
        assert_eq!(sink.min_interval("-1001234567890"), Some(GROUP_INTERVAL));
        rt.block_on(engine.shutdown()).unwrap();
    }
}
