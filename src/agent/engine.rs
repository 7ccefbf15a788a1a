//! The agent seen from the engine: the engine's [`ChangeJournal`] is the agent's
//! [`Journal`] and its progress handle is the agent's [`Progress`]. Nothing else of the
//! engine is visible to the agent.

use baton_actors::ChangeJournal;

use crate::agent::journal::{Change, Journal};
use crate::agent::Progress;

/// `ChangeJournal::record` commits to the store before it returns, which is what the
/// agent needs: it writes the file right after.
impl Journal for ChangeJournal {
    async fn record(&self, change: Change) -> Result<(), String> {
        ChangeJournal::record(self, &change.change_type, change.change_data)
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    }
}

impl Progress for baton_actors::Progress {
    fn update(&self, message: &str) {
        self.say(message);
    }
}
