//! What started a run ([`Job`]): a webhook delivery, a chat command, a CLI call. A leaf below
//! the store (which keeps jobs) and the subject index (which reads what a job is about), so
//! that neither imports the other for it.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::clock::Millis;

/// What started a run: a webhook delivery, a chat command, a CLI call.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct Job {
    /// Unique id (for a webhook: `github:<delivery id>`, used to drop redeliveries).
    pub id: String,
    /// `cli`, `api`, `github`, `telegram`, …
    pub source: String,
    /// The event or command, e.g. `issues.opened`.
    #[serde(default)]
    pub event: String,
    /// Who asked.
    #[serde(default)]
    pub sender: String,
    /// Anything else worth keeping (repository, issue number, chat id).
    #[serde(default)]
    pub data: Value,
    /// The run it started, once started.
    #[serde(default)]
    pub run_id: Option<String>,
    /// When it arrived.
    #[serde(default)]
    pub created_at: Millis,
}
